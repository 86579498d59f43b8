/**
 * What an interrupted destroy or unload leaves, and the registry's records
 * of qdiscs that are gone, over the fake datapath: status shows each as
 * drift, plan removes it, and the next reconcile collects records even
 * when it changes nothing else. Then destroy killed after every one of its
 * kernel operations: whatever is left, status shows it and destroy removes it.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { renderPlan } from "../../src/plan/index.js";
import { describeDrift, findDrift } from "../../src/reconcile/drift.js";
import {
  applyRun,
  executePlan,
  makePlan,
  namedCgroups,
  planRun,
  type DesiredPolicy,
} from "../../src/reconcile/index.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { desiredOutbound, desiredPolicy } from "../support/desired.js";
import { FakeDatapath, type FakeKernelState } from "../support/fake-datapath.js";

const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
const builder = { identify: async () => "", object: async (_: unknown, contentHash: string) => `${contentHash}.bpf.o` };
const demo = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }]);

async function apply(fake: FakeDatapath, desired: DesiredPolicy[]) {
  return executePlan(makePlan(desired, await fake.observe({ cgroups: namedCgroups(desired) })), fake, objects);
}

/** `intercept destroy`, as the CLI runs it. */
async function destroy(fake: FakeDatapath) {
  return applyRun(await planRun([], fake), fake, { builder });
}

/** Nothing of intercept's anywhere: no version, qdisc, record, pin, filter, or cgroup program of ours. */
function clean(state: FakeKernelState): boolean {
  const ours = (name: string) => name !== "theirs";
  return (
    state.versions.length === 0 &&
    state.ownedQdiscs.length === 0 &&
    !state.pins.namespaceDir &&
    !state.pins.registry &&
    state.pins.policyDirs.length === 0 &&
    state.links.every((link) => !link.clsact && Object.keys(link.filters).length === 0) &&
    state.cgroups.every((cgroup) => !cgroup.attached.some((a) => ours(a.name)))
  );
}

describe("leftovers of an interrupted run", () => {
  test("an empty registry (destroy killed before its tidy): status shows it, destroy removes it", async () => {
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    await apply(fake, [demo]);
    fake.crashAfter(fake.mutationCount + 3); // detach ingress, detach egress, remove the qdisc (its record goes): killed before the unload
    await assert.rejects(destroy(fake), /the process was killed/);
    fake.restart();
    await fake.unloadProgram(demo.program); // and, another time, killed after the unload, before the tidy
    assert.deepEqual(fake.snapshot().pins, { namespaceDir: true, registry: true, policyDirs: [] });
    const report = await inspect(fake, []);
    assert.deepEqual(report.programs, []);
    assert.deepEqual(report.drift.map(describeDrift), [
      "the qdisc registry is left empty (an interrupted run): plan removes or reuses it",
    ]);
    const plan = (await planRun([], fake)).plan;
    assert.equal(
      renderPlan(plan, { colour: false }),
      [
        `intercept will perform the following actions in network namespace "fake":`,
        "",
        "    - pins.empty  destroy: left empty by an interrupted run: the qdisc registry",
        "",
        "Plan: 0 to add, 0 to change, 1 to destroy.",
        "",
      ].join("\n"),
    );
    await destroy(fake);
    assert.ok(clean(fake.snapshot()), JSON.stringify(fake.snapshot().pins));
    assert.deepEqual((await planRun([], fake)).plan.changes, [], "then: No changes");
  });

  test("an empty policy directory and an empty namespace directory are shown and removed; a load into one reuses it", async () => {
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    fake.leaveEmptyPolicyDirectory("demo");
    fake.leaveEmptyPolicyDirectory("old");
    assert.deepEqual(findDrift(await fake.observe()).map(describeDrift), [
      "policy demo's directory, policy old's directory are left empty (an interrupted run): plan removes or reuses them",
    ]);
    const plan = makePlan([demo], await fake.observe());
    assert.deepEqual(
      plan.changes.at(-1),
      {
        type: "pins.delete",
        address: "pins.empty",
        pins: [{ kind: "policy", policy: "old" }],
        reasonCode: "empty-pins",
        reason: "left empty by an interrupted run: policy old's directory",
      },
      "demo's is reused by the load",
    );
    await executePlan(plan, fake, objects);
    assert.deepEqual(fake.snapshot().pins, { namespaceDir: true, registry: true, policyDirs: ["demo"] });
    assert.deepEqual(findDrift(await fake.observe()), []);
    await destroy(fake);
    assert.ok(clean(fake.snapshot()));
  });

  test("records of links that are gone are collected by the next reconcile, even one with no other change", async () => {
    const fake = new FakeDatapath();
    for (const link of ["eth0", "eth1", "eth2"]) fake.addLink(link);
    await apply(fake, [demo]);
    fake.removeLink("eth1");
    fake.removeLink("eth2");
    assert.deepEqual(findDrift(await fake.observe()), [], "a link that goes is no drift");
    const plan = makePlan([demo], await fake.observe());
    assert.deepEqual(plan.changes, [
      {
        type: "registry.update",
        address: "registry.qdiscs",
        forget: [3, 4],
        reasonCode: "qdisc-gone",
        reason:
          "forget the records of qdiscs that are gone: ifindex 3 (the link is gone), ifindex 4 (the link is gone)",
      },
    ]);
    assert.match(
      renderPlan(plan, { colour: false }),
      /\n {4}~ registry.qdiscs {2}update in place: forget the records of qdiscs that are gone: ifindex 3 \(the link is gone\), ifindex 4 \(the link is gone\)\n\nPlan: 0 to add, 1 to change, 0 to destroy\.\n/,
    );
    await executePlan(plan, fake, objects);
    assert.deepEqual(fake.snapshot().ownedQdiscs, [2]);
    assert.deepEqual(makePlan([demo], await fake.observe()).changes, []);
  });

  test("a record of a qdisc that is gone from a link that is still there (a removal killed half-way) is drift, and forgotten", async () => {
    const fake = new FakeDatapath();
    const eth0 = fake.addLink("eth0");
    fake.leaveQdiscRecord(eth0);
    assert.deepEqual(findDrift(await fake.observe()).map(describeDrift), [
      "link eth0 has no clsact qdisc, but intercept's registry still records one there (an interrupted run): plan forgets it",
    ]);
    const plan = makePlan([], await fake.observe());
    assert.deepEqual(plan.changes, [
      {
        type: "registry.update",
        address: "registry.qdiscs",
        forget: [eth0.ifindex],
        reasonCode: "qdisc-gone",
        reason: "forget the records of qdiscs that are gone: eth0 (its qdisc is gone)",
      },
    ]);
    await destroy(fake);
    assert.ok(clean(fake.snapshot()), "the record, then the registry left empty, are gone");
  });

  test("a record the plan writes again (the link gets a new qdisc of ours) is not forgotten", async () => {
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    fake.leaveQdiscRecord({ ifindex: 2, name: "eth0" });
    const plan = makePlan([demo], await fake.observe());
    assert.deepEqual(
      plan.changes.map((change) => change.type),
      ["program.create", "attachment.create"],
    );
  });
});

describe("destroy killed after each of its kernel operations", () => {
  /** A namespace running a tc policy on two links and an outbound policy on a cgroup beside another tool's program. */
  async function busy(): Promise<FakeDatapath> {
    const fake = new FakeDatapath();
    for (const link of ["eth0", "eth1"]) fake.addLink(link);
    for (const path of ["app.slice", "proxy.slice"]) fake.addCgroup(path);
    fake.attachForeign("app.slice", "connect4", "theirs");
    await apply(fake, [
      demo,
      desiredOutbound("out", {
        cgroups: ["app.slice"],
        exempt: { cgroups: ["proxy.slice"] },
        rules: [{ originalPort: 5432, port: 15001 }],
      }),
    ]);
    return fake;
  }

  test("whatever is left, the next status shows it and destroy removes it", async () => {
    const reference = await busy();
    const start = reference.mutationCount;
    await destroy(reference);
    const operations = reference.mutationCount - start;
    assert.ok(clean(reference.snapshot()), "an uninterrupted destroy leaves nothing");
    assert.ok(operations >= 10, `a multi-step destroy (${operations} kernel operations)`);
    const kinds = new Set<string>();
    for (let killedAfter = 0; killedAfter < operations; killedAfter++) {
      const fake = await busy();
      fake.crashAfter(fake.mutationCount + killedAfter);
      await assert.rejects(destroy(fake), /the process was killed/);
      fake.restart();
      const left = fake.snapshot();
      assert.ok(!clean(left), `killed after operation ${killedAfter}: something is left`);
      const report = await inspect(fake, []);
      for (const drift of report.drift) kinds.add(drift.kind);
      const shown =
        report.programs.length +
        report.links.length +
        report.cgroups.filter((c) => c.programs.length > 0).length +
        report.drift.length;
      assert.ok(
        shown > 0,
        `killed after operation ${killedAfter}: status shows what is left (${JSON.stringify(left.pins)})`,
      );
      assert.ok(
        (await planRun([], fake)).plan.changes.length > 0,
        `killed after operation ${killedAfter}: destroy has something to do`,
      );
      await destroy(fake);
      assert.ok(
        clean(fake.snapshot()),
        `killed after operation ${killedAfter}: destroy removed it all: ${JSON.stringify(fake.snapshot())}`,
      );
      assert.deepEqual((await inspect(fake, [])).drift, []);
    }
    assert.ok(kinds.has("empty-pins"), "some kill points left empty pins");
  });
});
