/**
 * Apply over the fake datapath, without root: every change type executes
 * and converges, a failure at any step rolls back to the exact prior
 * state, a replace never leaves a link without a filter, and a restarted
 * run adopts what is live.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Hook } from "../../src/model/hooks.js";
import {
  ApplyError,
  applyRun,
  executePlan,
  leftToTidy,
  makePlan,
  namedCgroups,
  orderSteps,
  planRun,
  type ApplyEvent,
  type DesiredPolicy,
} from "../../src/reconcile/index.js";
import { findDrift } from "../../src/reconcile/drift.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { desiredOutbound, desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
const demo = desiredPolicy("demo", [
  { originalPort: 8000, port: 9000, strategy: "rewrite" },
  { originalPort: 8443, port: 9443, strategy: "rewrite" },
]);
const grown = desiredPolicy("demo", [
  { originalPort: 8000, port: 9000, strategy: "rewrite" },
  { originalPort: 8443, port: 9443, strategy: "rewrite" },
  { originalPort: 7000, port: 7100, strategy: "rewrite" },
]);
const disabled = desiredPolicy("demo", [
  { originalPort: 8000, port: 9000, strategy: "rewrite", enabled: false },
  { originalPort: 8443, port: 9443, strategy: "rewrite" },
]);
const edge = desiredPolicy("edge", [{ originalPort: 53, port: 5353, protocol: "udp" }], {
  include: ["eth2"],
  exclude: [],
});
const web = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }], {
  include: ["eth0", "eth1"],
  exclude: [],
});

function fakeWith(...links: string[]): FakeDatapath {
  const fake = new FakeDatapath();
  for (const link of links) fake.addLink(link);
  return fake;
}

/** What plan and apply observe: the kernel, and the cgroups the policies name. */
function observed(fake: FakeDatapath, desired: DesiredPolicy[]) {
  return fake.observe({ cgroups: namedCgroups(desired) });
}

async function apply(fake: FakeDatapath, desired: DesiredPolicy[], onEvent?: (event: ApplyEvent) => void) {
  return executePlan(makePlan(desired, await observed(fake, desired)), fake, {
    ...objects,
    ...(onEvent && { onEvent }),
  });
}

async function converged(fake: FakeDatapath, desired: DesiredPolicy[]): Promise<void> {
  assert.deepEqual(makePlan(desired, await observed(fake, desired)).changes, [], "a second plan has nothing to do");
}

describe("every change type executes and converges", () => {
  test("program.create and attachment.create (with the qdisc), reported step by step and change by change, the reversible steps together", async () => {
    const fake = fakeWith("eth0", "eth1");
    const events: string[] = [];
    const summary = await apply(fake, [demo], (event) => {
      if (event.type === "step-started") events.push(`${event.step}/${event.steps} ${event.operation.op}`);
      if (event.type === "change-done") events.push(`done ${event.change.address}`);
      if (event.type === "complete") events.push("complete");
    });
    assert.deepEqual(summary, { add: 3, change: 0, destroy: 0 });
    // The reversible steps go to the datapath as one run (a kernel loads and records in one bpftool, attaches in one tc).
    assert.deepEqual(events, [
      "1/5 loadProgram",
      "2/5 addQdisc",
      "3/5 attachFilters",
      "4/5 addQdisc",
      "5/5 attachFilters",
      "done program.demo",
      "done attachment.eth0",
      "done attachment.eth1",
      "complete",
    ]);
    await converged(fake, [demo]);
    assert.deepEqual(fake.snapshot().ownedQdiscs, [2, 3]);
  });

  test("rule.update is a live edit: the same program ids", async () => {
    const fake = fakeWith("eth0");
    await apply(fake, [demo]);
    const ids = fake.snapshot().versions[0]!.programIds;
    await apply(fake, [disabled]);
    await converged(fake, [disabled]);
    assert.deepEqual(
      fake.snapshot().versions.map((v) => v.programIds),
      [ids],
    );
    assert.deepEqual(fake.snapshot().versions[0]!.enabled, [false, true]);
  });

  test("program.replace and attachment.update: new ids, the old version unpinned last", async () => {
    const fake = fakeWith("eth0", "eth1");
    await apply(fake, [demo]);
    await apply(fake, [grown]);
    await converged(fake, [grown]);
    const { versions } = fake.snapshot();
    assert.deepEqual(
      versions.map((v) => v.ref.version),
      [grown.program.version],
    );
    const last = fake.history.at(-2)!.operation; // before tidy
    assert.deepEqual(last, { op: "unloadProgram", ref: demo.program });
  });

  test("program.delete, attachment.delete and the qdisc: nothing left", async () => {
    const fake = fakeWith("eth0", "eth1");
    await apply(fake, [demo]);
    await apply(fake, []);
    await converged(fake, []);
    assert.deepEqual(fake.snapshot(), {
      links: fake.snapshot().links.map((l) => ({ ...l, clsact: false, filters: {} })),
      versions: [],
      ownedQdiscs: [],
      cgroups: [],
      pins: { namespaceDir: false, registry: false, policyDirs: [] },
    });
  });

  test("qdisc.delete: a qdisc of ours holding nothing (an interrupted run's) is removed", async () => {
    const fake = fakeWith("eth0");
    await fake.addQdisc({ ifindex: 2, name: "eth0" });
    const plan = makePlan([], await fake.observe());
    assert.deepEqual(
      plan.changes.map((c) => c.type),
      ["qdisc.delete"],
    );
    await executePlan(plan, fake, objects);
    await converged(fake, []);
    assert.equal(fake.snapshot().links[0]!.clsact, false);
  });

  test("two policies on their own links, and a link that moves from one to the other", async () => {
    const fake = fakeWith("eth0", "eth1", "eth2");
    await apply(fake, [web, edge]);
    await converged(fake, [web, edge]);
    const moved = desiredPolicy("edge", [{ originalPort: 53, port: 5353, protocol: "udp" }], {
      include: ["eth1", "eth2"],
      exclude: [],
    });
    const webOnly = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }], {
      include: ["eth0"],
      exclude: [],
    });
    const plan = makePlan([webOnly, moved], await fake.observe());
    // Interfaces are not part of a program: the link simply switches programs.
    assert.deepEqual(
      plan.changes.map((c) => `${c.type} ${c.address}`),
      ["attachment.update attachment.eth1"],
    );
    await executePlan(plan, fake, objects);
    await converged(fake, [webOnly, moved]);
  });
});

describe("outbound: cgroup programs", () => {
  const exempt = { uids: [1337], cgroups: ["proxy.slice"] };
  const outbound = desiredOutbound("out", {
    cgroups: ["app.slice"],
    exempt,
    rules: [
      { originalPort: 5432, port: 15001 },
      { originalPort: 80, port: 15001, cidrs: ["10.0.0.0/8"] },
    ],
  });
  const outboundGrown = desiredOutbound("out", {
    cgroups: ["app.slice"],
    exempt,
    rules: [
      { originalPort: 5432, port: 15001 },
      { originalPort: 80, port: 15001, cidrs: ["10.0.0.0/8"] },
      { originalPort: 443, port: 15002 },
    ],
  });
  const outboundOff = desiredOutbound("out", {
    cgroups: ["app.slice"],
    exempt,
    rules: [
      { originalPort: 5432, port: 15001, enabled: false },
      { originalPort: 80, port: 15001, cidrs: ["10.0.0.0/8"] },
    ],
  });

  function fakeWithCgroups(...paths: string[]): FakeDatapath {
    const fake = fakeWith("eth0");
    for (const path of paths) fake.addCgroup(path);
    return fake;
  }

  /** Our programs on @path as "hook version" strings, in attach order. */
  function running(fake: FakeDatapath, path: string): string[] {
    const { cgroups, versions } = fake.snapshot();
    return (cgroups.find((c) => c.path === path)?.attached ?? []).map((a) => {
      const version = versions.find((v) => Object.values(v.cgroupProgramIds).includes(a.programId));
      return `${a.hook} ${version?.ref.version.slice(0, 8) ?? a.name}`;
    });
  }

  test("program.create and cgroup.create: all four programs on the captured cgroup, getsockopt on the exempt one, no link touched", async () => {
    const fake = fakeWithCgroups("app.slice", "proxy.slice", "other.slice");
    assert.deepEqual(outbound.hooks, [], "an outbound-only policy has no tc program");
    const events: string[] = [];
    await apply(fake, [outbound], (event) => event.type === "change-done" && events.push(event.change.address));
    assert.deepEqual(events, ["program.out", "cgroup.app.slice", "cgroup.proxy.slice"]);
    await converged(fake, [outbound]);
    const v = outbound.program.version.slice(0, 8);
    assert.deepEqual(running(fake, "app.slice"), [
      `sock_ops ${v}`,
      `getsockopt ${v}`,
      `connect4 ${v}`,
      `connect6 ${v}`,
    ]);
    assert.deepEqual(running(fake, "proxy.slice"), [`getsockopt ${v}`]);
    assert.deepEqual(running(fake, "other.slice"), []);
    assert.deepEqual(fake.snapshot().links[0]!.filters, {}, "no tc filter");
    const [version] = fake.snapshot().versions;
    assert.deepEqual(version!.exemptCgroups, [
      { id: fake.snapshot().cgroups.find((c) => c.path === "proxy.slice")!.id, level: 1 },
    ]);
    assert.deepEqual(version!.enabled, [true, true]);
  });

  test("rule.update on an outbound rule is a live edit: same program ids, nothing attached or detached", async () => {
    const fake = fakeWithCgroups("app.slice", "proxy.slice");
    await apply(fake, [outbound]);
    const before = fake.snapshot();
    const plan = makePlan([outboundOff], await observed(fake, [outboundOff]));
    assert.deepEqual(
      plan.changes.map((c) => `${c.type} ${c.address}`),
      ["rule.update rule.out[0]"],
    );
    assert.match(plan.changes[0]!.reason, /^outbound tcp 5432 → proxy 15001: disable \(live edit, no reload\)$/);
    await executePlan(plan, fake, objects);
    await converged(fake, [outboundOff]);
    assert.deepEqual(fake.snapshot().cgroups, before.cgroups);
    assert.deepEqual(fake.snapshot().versions[0]!.enabled, [false, true]);
  });

  test("program.replace and cgroup.update: each hook gets the new program beside the old before any old one leaves", async () => {
    const fake = fakeWithCgroups("app.slice", "proxy.slice");
    await apply(fake, [outbound]);
    const from = fake.history.length;
    const plan = makePlan([outboundGrown], await observed(fake, [outboundGrown]));
    assert.deepEqual(
      plan.changes.map((c) => `${c.type} ${c.address}`),
      ["program.replace program.out", "cgroup.update cgroup.app.slice", "cgroup.update cgroup.proxy.slice"],
    );
    await executePlan(plan, fake, objects);
    await converged(fake, [outboundGrown]);
    const [oldV, newV] = [outbound.program.version.slice(0, 8), outboundGrown.program.version.slice(0, 8)];
    assert.deepEqual(running(fake, "app.slice"), [
      `sock_ops ${newV}`,
      `getsockopt ${newV}`,
      `connect4 ${newV}`,
      `connect6 ${newV}`,
    ]);
    // At no moment did a hook of the captured cgroup run nothing of ours.
    for (const { operation, after } of fake.history.slice(from)) {
      const attached = after.cgroups.find((c) => c.path === "app.slice")!.attached;
      for (const hook of ["sock_ops", "getsockopt", "connect4", "connect6"]) {
        assert.ok(
          attached.some((a) => a.hook === hook),
          `app.slice ${hook} runs a program after ${operation.op}`,
        );
      }
    }
    const ops = fake.history
      .slice(from)
      .map(({ operation: o }) =>
        o.op === "attachCgroupProgram" || o.op === "detachCgroupProgram"
          ? `${o.op === "attachCgroupProgram" ? "+" : "-"}${o.cgroup.path} ${o.hook} ${o.program.version.slice(0, 8)}`
          : o.op,
      );
    assert.deepEqual(ops, [
      "loadProgram",
      "loadProgram",
      `+app.slice sock_ops ${newV}`,
      `+app.slice getsockopt ${newV}`,
      `+app.slice connect4 ${newV}`,
      `+app.slice connect6 ${newV}`,
      `+proxy.slice getsockopt ${newV}`,
      `-app.slice connect6 ${oldV}`,
      `-app.slice connect4 ${oldV}`,
      `-app.slice getsockopt ${oldV}`,
      `-app.slice sock_ops ${oldV}`,
      `-proxy.slice getsockopt ${oldV}`,
      "unloadProgram",
      "tidy",
    ]);
  });

  test("cgroup.delete: our programs leave, a foreign program on the same cgroup stays where it was", async () => {
    const fake = fakeWithCgroups("app.slice", "proxy.slice");
    const foreign = fake.attachForeign("app.slice", "connect4", "theirs");
    await apply(fake, [outbound]);
    const plan = makePlan([], await observed(fake, []));
    assert.deepEqual(
      plan.changes.map((c) => `${c.type} ${c.address}`),
      ["program.delete program.out", "cgroup.delete cgroup.app.slice", "cgroup.delete cgroup.proxy.slice"],
    );
    await executePlan(plan, fake, objects);
    await converged(fake, []);
    assert.deepEqual(
      fake.snapshot().cgroups.map((c) => [c.path, c.attached.map((a) => a.programId)]),
      [
        ["app.slice", [foreign]],
        ["proxy.slice", []],
      ],
    );
    assert.deepEqual(fake.snapshot().versions, []);
  });

  test("exemption.update: an exempt cgroup made again (a new id) is a live edit of the running version", async () => {
    const fake = fakeWithCgroups("app.slice", "proxy.slice");
    await apply(fake, [outbound]);
    const ids = fake.snapshot().versions[0]!.programIds;
    fake.removeCgroup("proxy.slice"); // the proxy's service restarted: systemd made its cgroup again
    const again = fake.addCgroup("proxy.slice");
    const plan = makePlan([outbound], await observed(fake, [outbound]));
    assert.deepEqual(
      plan.changes.map((c) => `${c.type} ${c.address}`),
      ["cgroup.create cgroup.proxy.slice", "exemption.update exemption.out"],
    );
    await executePlan(plan, fake, objects);
    await converged(fake, [outbound]);
    assert.deepEqual(fake.snapshot().versions[0]!.exemptCgroups, [{ id: again.id, level: 1 }]);
    assert.deepEqual(fake.snapshot().versions[0]!.programIds, ids);
  });

  test("a cgroup the policy names and the kernel lacks: one line naming it, nothing done", async () => {
    const fake = fakeWithCgroups("proxy.slice");
    await assert.rejects(
      observed(fake, [outbound]).then((state) => makePlan([outbound], state)),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, "cgroup-not-found");
        assert.equal(
          error.message,
          `policy "out": cgroup "app.slice" does not exist under the cgroup2 mount /fake/cgroup2`,
        );
        return true;
      },
    );
    assert.equal(fake.mutationCount, 0);
  });

  test("interceptors and outbound in one policy: one version, on links and cgroups", async () => {
    const both = desiredOutbound(
      "both",
      { cgroups: ["app.slice"], exempt: { uids: [1337] }, rules: [{ originalPort: 443, port: 15001 }] },
      [{ originalPort: 8000, port: 9000 }],
    );
    const fake = fakeWithCgroups("app.slice");
    await apply(fake, [both]);
    await converged(fake, [both]);
    assert.deepEqual(Object.keys(fake.snapshot().links[0]!.filters), ["ingress"]);
    assert.equal(running(fake, "app.slice").length, 4);
    assert.deepEqual(
      fake.snapshot().versions[0]!.enabled,
      [true, true],
      "the interceptor's flag, then the outbound rule's",
    );
  });

  test("a cgroup half-attached or running two versions (an interrupted apply) is drift, and plan makes it whole", async () => {
    const fake = fakeWithCgroups("app.slice", "proxy.slice");
    await apply(fake, [outbound]);
    await fake.loadProgram({
      ref: outboundGrown.program,
      contentHash: outboundGrown.contentHash,
      objectPath: "x.o",
      hooks: [],
      cgroupHooks: outboundGrown.cgroupHooks,
      enabled: [true, true, true],
      exemptCgroups: [],
      prefixes: [],
    });
    await fake.attachCgroupProgram(
      { path: "app.slice", id: fake.snapshot().cgroups[0]!.id },
      "sock_ops",
      outboundGrown.program,
    ); // then the process died
    const state = await observed(fake, [outboundGrown]);
    assert.deepEqual(
      findDrift(state).map((d) => d.kind),
      ["cgroup-half-switched"],
    );
    const plan = makePlan([outboundGrown], state);
    const update = plan.changes.find((c) => c.address === "cgroup.app.slice");
    assert.ok(update?.type === "cgroup.update");
    assert.deepEqual(update.attach, ["getsockopt", "connect4", "connect6"], "sock_ops already runs the new version");
    assert.match(update.reason, /left by an interrupted apply/);
    await executePlan(plan, fake, objects);
    await converged(fake, [outboundGrown]);
    assert.deepEqual(findDrift(await observed(fake, [outboundGrown])), []);
  });
});

describe("strategies", () => {
  const steer = desiredPolicy("demo", [
    { originalPort: 8000, port: 9000 },
    { originalPort: 8443, port: 9443 },
  ]);

  test("a steer-only policy has an ingress program only, and only ingress is attached", async () => {
    assert.deepEqual(steer.hooks, ["ingress"]);
    const fake = fakeWith("eth0");
    await apply(fake, [steer]);
    await converged(fake, [steer]);
    assert.deepEqual(Object.keys(fake.snapshot().links[0]!.filters), ["ingress"]);
  });

  test("rewrite → steer: ingress is swapped, then egress detached; back again attaches egress first", async () => {
    const fake = fakeWith("eth0");
    await apply(fake, [demo]);
    let from = fake.history.length;
    const plan = makePlan([steer], await fake.observe());
    const update = plan.changes.find((c) => c.type === "attachment.update");
    assert.ok(update?.type === "attachment.update" && update.detach.join() === "egress");
    await executePlan(plan, fake, objects);
    await converged(fake, [steer]);
    assert.deepEqual(
      fake.history
        .slice(from)
        .map((h) => (h.operation.op === "attachFilters" ? `attach ${h.operation.hooks}` : h.operation.op)),
      ["loadProgram", "loadProgram", "attach ingress", "detachFilter", "unloadProgram", "tidy"],
    );
    from = fake.history.length;
    await apply(fake, [demo]);
    await converged(fake, [demo]);
    assert.deepEqual(
      fake.history
        .slice(from)
        .filter((h) => h.operation.op === "attachFilters")
        .map((h) => h.operation.op === "attachFilters" && h.operation.hooks.join()),
      ["egress", "ingress"],
    );
  });
});

describe("failures roll back", () => {
  /**
   * An apply that does everything at once: a replace, a new policy, a live
   * edit, a removed link; and on the outbound side a replace, a cgroup
   * switched, one added, one removed, beside another tool's program.
   */
  async function busyKernel(): Promise<{ fake: FakeDatapath; desired: DesiredPolicy[] }> {
    const fake = fakeWith("eth0", "eth1", "eth2", "eth3");
    for (const path of ["app.slice", "old.slice", "new.slice", "proxy.slice"]) fake.addCgroup(path);
    fake.attachForeign("app.slice", "connect4", "theirs");
    const exempt = { cgroups: ["proxy.slice"] };
    await apply(fake, [
      desiredPolicy(
        "demo",
        [
          { originalPort: 8000, port: 9000, strategy: "rewrite" },
          { originalPort: 8443, port: 9443, strategy: "rewrite" },
        ],
        { include: ["eth0", "eth1", "eth3"], exclude: [] },
      ),
      desiredOutbound("out", {
        cgroups: ["app.slice", "old.slice"],
        exempt,
        rules: [{ originalPort: 5432, port: 15001 }],
      }),
    ]);
    const desired = [
      desiredPolicy(
        "demo",
        [
          { originalPort: 8000, port: 9000, strategy: "rewrite" },
          { originalPort: 8443, port: 9443, strategy: "rewrite" },
          { originalPort: 7000, port: 7100, strategy: "rewrite" },
        ],
        { include: ["eth0", "eth1"], exclude: [] },
      ),
      edge,
      desiredOutbound("out", {
        cgroups: ["app.slice", "new.slice"],
        exempt,
        rules: [
          { originalPort: 5432, port: 15001 },
          { originalPort: 443, port: 15002 },
        ],
      }),
    ];
    return { fake, desired };
  }

  test("a failure injected at every step leaves the kernel exactly as it was", async () => {
    const { fake: probe, desired } = await busyKernel();
    const plan = makePlan(desired, await observed(probe, desired));
    const reversible = orderSteps(plan.changes, objects.objectFor).filter((step) => step.phase !== "commit").length;
    assert.ok(reversible >= 8, `a multi-step apply (${reversible} steps)`);
    const kinds = new Set(orderSteps(plan.changes, objects.objectFor).map((step) => step.change.type));
    for (const kind of ["cgroup.create", "cgroup.update", "cgroup.delete"])
      assert.ok(kinds.has(kind as never), `the busy apply has a ${kind}`);
    for (let failing = 1; failing <= reversible; failing++) {
      const { fake } = await busyKernel();
      const before = fake.snapshot();
      fake.failAt(fake.mutationCount + failing);
      const failed = await executePlan(makePlan(desired, await observed(fake, desired)), fake, objects).then(
        () => undefined,
        (error: unknown) => error,
      );
      assert.ok(failed instanceof ApplyError, `step ${failing} failed the apply`);
      assert.equal(failed.code, "apply-failed");
      assert.equal(failed.rolledBack, true, failed.message);
      assert.match(
        failed.message,
        /injected failure at operation \d+ \(\w+\)\nRolled back: the kernel is as it was before this apply\.$/,
      );
      assert.deepEqual(fake.snapshot(), before, `after a failure at step ${failing}`);
    }
  });

  test("an interrupt between steps: the step in flight finishes, then all is undone", async () => {
    const { fake, desired } = await busyKernel();
    const before = fake.snapshot();
    const controller = new AbortController();
    const plan = makePlan(desired, await observed(fake, desired));
    let seen = 0;
    const failed = await executePlan(plan, fake, {
      ...objects,
      interrupt: controller.signal,
      onEvent: (event) => {
        if (event.type === "change-done" && ++seen === 2) controller.abort(new Error("interrupted by SIGINT"));
      },
    }).then(
      () => undefined,
      (error: unknown) => error,
    );
    assert.ok(failed instanceof ApplyError);
    assert.equal(failed.code, "apply-interrupted");
    assert.match(failed.message, /^interrupted by SIGINT after \d+ of \d+ steps\nRolled back/);
    assert.deepEqual(fake.snapshot(), before);
  });

  test("a rollback step that fails too is reported, not hidden", async () => {
    const { fake, desired } = await busyKernel();
    const plan = makePlan(desired, await observed(fake, desired));
    fake.failAt(fake.mutationCount + 3);
    const original = fake.unloadProgram.bind(fake);
    fake.unloadProgram = async () => {
      throw new Error("bpffs went away");
    };
    const failed = await executePlan(plan, fake, objects).then(
      () => undefined,
      (error: unknown) => error,
    );
    fake.unloadProgram = original;
    assert.ok(failed instanceof ApplyError);
    assert.equal(failed.rolledBack, false);
    assert.match(
      failed.message,
      /Rollback failed \(program\.\w+: bpffs went away.*\): run `intercept plan` to see the state\.$/,
    );
  });
});

describe("ordering", () => {
  test("a replace never leaves a link without a filter on any hook, at any moment", async () => {
    const fake = fakeWith("eth0", "eth1");
    await apply(fake, [demo]);
    const from = fake.history.length;
    await apply(fake, [grown]);
    const hooks: Hook[] = ["ingress", "egress"];
    for (const { operation, after } of fake.history.slice(from)) {
      for (const link of after.links) {
        for (const hook of hooks)
          assert.ok(link.filters[hook] !== undefined, `${link.name} ${hook} has a filter after ${operation.op}`);
      }
    }
  });

  test("new programs load before links point at them; nothing is unpinned before every link left it", () => {
    const plan = { netns: {}, changes: makePlanChanges(), warnings: [] };
    const order = orderSteps(plan.changes, objects.objectFor).map((step) => `${step.phase}:${step.operation.op}`);
    assert.deepEqual(order, [
      "load:loadProgram",
      "attach:attachFilters",
      "rules:setRule",
      "detach:detachFilter",
      "detach:detachFilter",
      "detach:removeQdisc",
      "commit:unloadProgram",
    ]);
  });

  test("cgroup programs: attached after the load (records tied and answered before connects are captured), detached capture first, before any unpin", () => {
    const app = { path: "app.slice", id: 7 };
    const old = { policy: "out", version: "1".repeat(16) };
    const next = { policy: "out", version: "2".repeat(16) };
    const changes = [
      {
        type: "program.replace" as const,
        address: "program.out",
        reasonCode: "policy-changed" as const,
        reason: "",
        program: next,
        replaces: old,
        contentHash: "2".repeat(64),
        hooks: [],
        enabled: [true],
        cgroupHooks: ["sock_ops" as const, "getsockopt" as const, "connect4" as const, "connect6" as const],
        exemptCgroups: [],
      },
      {
        type: "cgroup.update" as const,
        address: "cgroup.app.slice",
        reasonCode: "program-switched" as const,
        reason: "",
        cgroup: app,
        program: next,
        attach: ["connect6" as const, "sock_ops" as const, "connect4" as const, "getsockopt" as const],
        detach: (["sock_ops", "getsockopt", "connect4", "connect6"] as const).map((hook) => ({ hook, program: old })),
      },
      {
        type: "exemption.update" as const,
        address: "exemption.out",
        reasonCode: "cgroup-recreated" as const,
        reason: "",
        program: next,
        cgroups: [{ id: 9, level: 1 }],
        from: [],
      },
    ];
    const order = orderSteps(changes, objects.objectFor).map(
      ({ phase, operation: o }) =>
        `${phase}:${o.op}${"hook" in o ? ` ${o.hook}` : ""}${"program" in o && o.op !== "setExemptCgroups" ? ` ${o.program.version[0]}` : ""}`,
    );
    assert.deepEqual(order, [
      "load:loadProgram",
      "attach:attachCgroupProgram sock_ops 2",
      "attach:attachCgroupProgram getsockopt 2",
      "attach:attachCgroupProgram connect4 2",
      "attach:attachCgroupProgram connect6 2",
      "rules:setExemptCgroups",
      "detach:detachCgroupProgram connect6 1",
      "detach:detachCgroupProgram connect4 1",
      "detach:detachCgroupProgram getsockopt 1",
      "detach:detachCgroupProgram sock_ops 1",
      "commit:unloadProgram",
    ]);
  });

  function makePlanChanges() {
    const eth0 = { ifindex: 2, name: "eth0" };
    const eth1 = { ifindex: 3, name: "eth1" };
    return [
      {
        type: "program.delete" as const,
        address: "program.old",
        reasonCode: "policy-removed" as const,
        reason: "",
        program: { policy: "old", version: "0".repeat(16) },
      },
      {
        type: "attachment.delete" as const,
        address: "attachment.eth1",
        reasonCode: "link-unselected" as const,
        reason: "",
        link: eth1,
        from: { ingress: null, egress: null },
        removeQdisc: true,
      },
      {
        type: "rule.update" as const,
        address: "rule.demo[0]",
        reasonCode: "rule-toggled" as const,
        reason: "",
        program: demo.program,
        index: 0,
        enabled: false,
      },
      {
        type: "attachment.create" as const,
        address: "attachment.eth0",
        reasonCode: "link-selected" as const,
        reason: "",
        link: eth0,
        program: demo.program,
        hooks: demo.hooks,
        addQdisc: false,
      },
      {
        type: "program.create" as const,
        address: "program.demo",
        reasonCode: "policy-added" as const,
        reason: "",
        program: demo.program,
        contentHash: demo.contentHash,
        hooks: demo.hooks,
        enabled: [true, true],
      },
    ];
  }
});

describe("tidy", () => {
  const builder = {
    identify: async () => "",
    object: async (_: unknown, contentHash: string) => `${contentHash}.bpf.o`,
  };
  /** applyRun as the CLI and the agent call it; whether it ended with a tidy. */
  const appliedWithTidy = async (fake: FakeDatapath, desired: DesiredPolicy[]): Promise<boolean> => {
    const run = await planRun(desired, fake);
    await applyRun(run, fake, { builder });
    const tidied = fake.history.at(-1)?.operation.op === "tidy";
    assert.equal(tidied, leftToTidy(run.plan), "applyRun tidies exactly when leftToTidy says");
    return tidied;
  };

  test("an apply that only adds, to a namespace with nothing to tidy, skips it", async () => {
    const fake = fakeWith("eth0", "eth1");
    assert.equal(await appliedWithTidy(fake, [demo]), false, "a new namespace");
    assert.equal(await appliedWithTidy(fake, [disabled]), false, "a rule turned off in place");
    await converged(fake, [disabled]);
  });

  test("a removal, a replaced version, or the record of a link that is gone is tidied", async () => {
    const fake = fakeWith("eth0", "eth1");
    await appliedWithTidy(fake, [demo]);
    assert.equal(await appliedWithTidy(fake, [grown]), true, "the old version's pins go");
    fake.removeLink("eth1");
    assert.equal(await appliedWithTidy(fake, [grown]), true, "eth1's record is left");
    const eth0 = fake.snapshot().links.find((link) => link.name === "eth0")!.ifindex;
    assert.deepEqual(fake.snapshot().ownedQdiscs, [eth0], "eth1's record forgotten");
    assert.equal(await appliedWithTidy(fake, []), true, "a removal");
    assert.deepEqual(fake.snapshot().ownedQdiscs, []);
  });

  test("a failed apply that skips the tidy still tidies in its rollback", async () => {
    const fake = fakeWith("eth0", "eth1");
    const run = await planRun([demo], fake);
    assert.equal(leftToTidy(run.plan), false);
    fake.failAt(3); // load, then eth0's qdisc, then eth0's filters fail
    await assert.rejects(applyRun(run, fake, { builder }), ApplyError);
    assert.equal(fake.history.at(-1)!.operation.op, "tidy");
    assert.deepEqual(fake.snapshot().ownedQdiscs, []);
  });
});

describe("adoption", () => {
  test("a restarted run (the agent's --keep) adopts the live datapath and changes nothing", async () => {
    const fake = fakeWith("eth0", "eth1");
    await apply(fake, [demo]);
    const mutations = fake.mutationCount;
    const restarted = makePlan([demo], await fake.observe());
    assert.deepEqual(restarted.changes, []);
    await executePlan(restarted, fake, objects);
    assert.equal(fake.mutationCount, mutations + 1, "only the tidy-up ran");
  });
});

describe("status", () => {
  test("counters that cannot be read are reported as such, never as zeros", async () => {
    const fake = fakeWith("eth0");
    await apply(fake, [demo]);
    fake.count(demo.program, 0, "steered", { packets: 5, bytes: 300 });
    const report = await inspect(fake, [demo]);
    assert.deepEqual(report.programs[0]!.rules[0]!.counters?.steered, { packets: 5, bytes: 300 });
    assert.deepEqual(
      report.programs[0]!.rules[0]!.rule?.originalPorts,
      [{ first: 8000, last: 8000 }],
      "named from the policy with the same content hash",
    );
    fake.countersUnreadable = "bpftool: map dump failed";
    const unreadable = await inspect(fake, [demo]);
    assert.equal(unreadable.programs[0]!.countersError, "bpftool: map dump failed");
    assert.equal(unreadable.programs[0]!.rules[0]!.counters, undefined);
  });
});
