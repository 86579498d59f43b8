/**
 * Apply over the fake datapath, without root: every change type executes
 * and converges, a failure at any step rolls back to the exact prior
 * state, a replace never leaves a link without a filter, and a restarted
 * run adopts what is live.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Hook } from "../../src/datapath/types.js";
import { ApplyError, executePlan, makePlan, orderSteps, type ApplyEvent, type DesiredPolicy } from "../../src/reconcile/index.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
const demo = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }, { originalPort: 8443, port: 9443, strategy: "rewrite" }]);
const grown = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }, { originalPort: 8443, port: 9443, strategy: "rewrite" }, { originalPort: 7000, port: 7100, strategy: "rewrite" }]);
const disabled = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite", enabled: false }, { originalPort: 8443, port: 9443, strategy: "rewrite" }]);
const edge = desiredPolicy("edge", [{ originalPort: 53, port: 5353, protocol: "udp" }], { include: ["eth2"], exclude: [] });
const web = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }], { include: ["eth0", "eth1"], exclude: [] });

function fakeWith(...links: string[]): FakeDatapath {
  const fake = new FakeDatapath();
  for (const link of links) fake.addLink(link);
  return fake;
}

async function apply(fake: FakeDatapath, desired: DesiredPolicy[], onEvent?: (event: ApplyEvent) => void) {
  return executePlan(makePlan(desired, await fake.observe()), fake, { ...objects, ...(onEvent && { onEvent }) });
}

async function converged(fake: FakeDatapath, desired: DesiredPolicy[]): Promise<void> {
  assert.deepEqual(makePlan(desired, await fake.observe()).changes, [], "a second plan has nothing to do");
}

describe("every change type executes and converges", () => {
  test("program.create and attachment.create (with the qdisc), reported step by step and change by change", async () => {
    const fake = fakeWith("eth0", "eth1");
    const events: string[] = [];
    const summary = await apply(fake, [demo], (event) => {
      if (event.type === "step-started") events.push(`${event.step}/${event.steps} ${event.operation.op}`);
      if (event.type === "change-done") events.push(`done ${event.change.address}`);
      if (event.type === "complete") events.push("complete");
    });
    assert.deepEqual(summary, { add: 3, change: 0, destroy: 0 });
    assert.deepEqual(events, [
      "1/5 loadProgram", "done program.demo",
      "2/5 addQdisc", "3/5 attachFilters", "done attachment.eth0",
      "4/5 addQdisc", "5/5 attachFilters", "done attachment.eth1",
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
    assert.deepEqual(fake.snapshot().versions.map((v) => v.programIds), [ids]);
    assert.deepEqual(fake.snapshot().versions[0]!.enabled, [false, true]);
  });

  test("program.replace and attachment.update: new ids, the old version unpinned last", async () => {
    const fake = fakeWith("eth0", "eth1");
    await apply(fake, [demo]);
    await apply(fake, [grown]);
    await converged(fake, [grown]);
    const { versions } = fake.snapshot();
    assert.deepEqual(versions.map((v) => v.ref.version), [grown.program.version]);
    const last = fake.history.at(-2)!.operation; // before tidy
    assert.deepEqual(last, { op: "unloadProgram", ref: demo.program });
  });

  test("program.delete, attachment.delete and the qdisc: nothing left", async () => {
    const fake = fakeWith("eth0", "eth1");
    await apply(fake, [demo]);
    await apply(fake, []);
    await converged(fake, []);
    assert.deepEqual(fake.snapshot(), { links: fake.snapshot().links.map((l) => ({ ...l, clsact: false, filters: {} })), versions: [], ownedQdiscs: [] });
  });

  test("qdisc.delete: a qdisc of ours holding nothing (an interrupted run's) is removed", async () => {
    const fake = fakeWith("eth0");
    await fake.addQdisc({ ifindex: 2, name: "eth0" });
    const plan = makePlan([], await fake.observe());
    assert.deepEqual(plan.changes.map((c) => c.type), ["qdisc.delete"]);
    await executePlan(plan, fake, objects);
    await converged(fake, []);
    assert.equal(fake.snapshot().links[0]!.clsact, false);
  });

  test("two policies on their own links, and a link that moves from one to the other", async () => {
    const fake = fakeWith("eth0", "eth1", "eth2");
    await apply(fake, [web, edge]);
    await converged(fake, [web, edge]);
    const moved = desiredPolicy("edge", [{ originalPort: 53, port: 5353, protocol: "udp" }], { include: ["eth1", "eth2"], exclude: [] });
    const webOnly = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }], { include: ["eth0"], exclude: [] });
    const plan = makePlan([webOnly, moved], await fake.observe());
    // Interfaces are not part of a program: the link simply switches programs.
    assert.deepEqual(plan.changes.map((c) => `${c.type} ${c.address}`), ["attachment.update attachment.eth1"]);
    await executePlan(plan, fake, objects);
    await converged(fake, [webOnly, moved]);
  });
});

describe("strategies", () => {
  const steer = desiredPolicy("demo", [{ originalPort: 8000, port: 9000 }, { originalPort: 8443, port: 9443 }]);

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
    assert.deepEqual(fake.history.slice(from).map((h) => h.operation.op === "attachFilters" ? `attach ${h.operation.hooks}` : h.operation.op), ["loadProgram", "loadProgram", "attach ingress", "detachFilter", "unloadProgram", "tidy"]);
    from = fake.history.length;
    await apply(fake, [demo]);
    await converged(fake, [demo]);
    assert.deepEqual(fake.history.slice(from).filter((h) => h.operation.op === "attachFilters").map((h) => h.operation.op === "attachFilters" && h.operation.hooks.join()), ["egress", "ingress"]);
  });
});

describe("failures roll back", () => {
  /** An apply that does everything at once: a replace, a new policy, a live edit, a removed link. */
  async function busyKernel(): Promise<{ fake: FakeDatapath; desired: DesiredPolicy[] }> {
    const fake = fakeWith("eth0", "eth1", "eth2", "eth3");
    await apply(fake, [desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }, { originalPort: 8443, port: 9443, strategy: "rewrite" }], { include: ["eth0", "eth1", "eth3"], exclude: [] })]);
    const desired = [
      desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }, { originalPort: 8443, port: 9443, strategy: "rewrite" }, { originalPort: 7000, port: 7100, strategy: "rewrite" }], { include: ["eth0", "eth1"], exclude: [] }),
      edge,
    ];
    return { fake, desired };
  }

  test("a failure injected at every step leaves the kernel exactly as it was", async () => {
    const { fake: probe, desired } = await busyKernel();
    const plan = makePlan(desired, await probe.observe());
    const reversible = orderSteps(plan.changes, objects.objectFor).filter((step) => step.phase !== "commit").length;
    assert.ok(reversible >= 8, `a multi-step apply (${reversible} steps)`);
    for (let failing = 1; failing <= reversible; failing++) {
      const { fake } = await busyKernel();
      const before = fake.snapshot();
      fake.failAt(fake.mutationCount + failing);
      const failed = await executePlan(makePlan(desired, await fake.observe()), fake, objects).then(() => undefined, (error: unknown) => error);
      assert.ok(failed instanceof ApplyError, `step ${failing} failed the apply`);
      assert.equal(failed.code, "apply-failed");
      assert.equal(failed.rolledBack, true, failed.message);
      assert.match(failed.message, /injected failure at operation \d+ \(\w+\)\nRolled back: the kernel is as it was before this apply\.$/);
      assert.deepEqual(fake.snapshot(), before, `after a failure at step ${failing}`);
    }
  });

  test("an interrupt between steps: the step in flight finishes, then all is undone", async () => {
    const { fake, desired } = await busyKernel();
    const before = fake.snapshot();
    const controller = new AbortController();
    const plan = makePlan(desired, await fake.observe());
    let seen = 0;
    const failed = await executePlan(plan, fake, { ...objects, interrupt: controller.signal, onEvent: (event) => {
      if (event.type === "change-done" && ++seen === 2) controller.abort(new Error("interrupted by SIGINT"));
    } }).then(() => undefined, (error: unknown) => error);
    assert.ok(failed instanceof ApplyError);
    assert.equal(failed.code, "apply-interrupted");
    assert.match(failed.message, /^interrupted by SIGINT after \d+ of \d+ steps\nRolled back/);
    assert.deepEqual(fake.snapshot(), before);
  });

  test("a rollback step that fails too is reported, not hidden", async () => {
    const { fake, desired } = await busyKernel();
    const plan = makePlan(desired, await fake.observe());
    fake.failAt(fake.mutationCount + 3);
    const original = fake.unloadProgram.bind(fake);
    fake.unloadProgram = async () => {
      throw new Error("bpffs went away");
    };
    const failed = await executePlan(plan, fake, objects).then(() => undefined, (error: unknown) => error);
    fake.unloadProgram = original;
    assert.ok(failed instanceof ApplyError);
    assert.equal(failed.rolledBack, false);
    assert.match(failed.message, /Rollback failed \(program\.\w+: bpffs went away.*\): run `intercept plan` to see the state\.$/);
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
        for (const hook of hooks) assert.ok(link.filters[hook] !== undefined, `${link.name} ${hook} has a filter after ${operation.op}`);
      }
    }
  });

  test("new programs load before links point at them; nothing is unpinned before every link left it", () => {
    const plan = { netns: {}, changes: makePlanChanges() };
    const order = orderSteps(plan.changes, objects.objectFor).map((step) => `${step.phase}:${step.operation.op}`);
    assert.deepEqual(order, [
      "load:loadProgram",
      "attach:attachFilters",
      "rules:setRule",
      "detach:detachFilter", "detach:detachFilter", "detach:removeQdisc",
      "commit:unloadProgram",
    ]);
  });

  function makePlanChanges() {
    const eth0 = { ifindex: 2, name: "eth0" };
    const eth1 = { ifindex: 3, name: "eth1" };
    return [
      { type: "program.delete" as const, address: "program.old", reason: "", program: { policy: "old", version: "0".repeat(16) } },
      { type: "attachment.delete" as const, address: "attachment.eth1", reason: "", link: eth1, from: { ingress: null, egress: null }, removeQdisc: true },
      { type: "rule.update" as const, address: "rule.demo[0]", reason: "", program: demo.program, index: 0, enabled: false },
      { type: "attachment.create" as const, address: "attachment.eth0", reason: "", link: eth0, program: demo.program, hooks: demo.hooks, addQdisc: false },
      { type: "program.create" as const, address: "program.demo", reason: "", program: demo.program, contentHash: demo.contentHash, hooks: demo.hooks, enabled: [true, true] },
    ];
  }
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
    assert.deepEqual(report.programs[0]!.rules[0]!.rule?.originalPorts, [{ first: 8000, last: 8000 }], "named from the policy with the same content hash");
    fake.countersUnreadable = "bpftool: map dump failed";
    const unreadable = await inspect(fake, [demo]);
    assert.equal(unreadable.programs[0]!.countersError, "bpftool: map dump failed");
    assert.equal(unreadable.programs[0]!.rules[0]!.counters, undefined);
  });
});
