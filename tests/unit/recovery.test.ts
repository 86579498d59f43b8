/**
 * Crash consistency over the fake datapath: the process is killed after
 * every single kernel operation of a multi-step apply; whatever that
 * leaves, status names what is wrong or plan what is left to do, and the
 * next apply ends exactly where an uninterrupted one would.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { HOOKS, type Hook } from "../../src/model/hooks.js";
import { describeDrift, findDrift } from "../../src/reconcile/drift.js";
import { executePlan, makePlan, namedCgroups, type DesiredPolicy } from "../../src/reconcile/index.js";
import { desiredOutbound, desiredPolicy } from "../support/desired.js";
import { FakeDatapath, type FakeKernelState } from "../support/fake-datapath.js";

const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };

function observe(fake: FakeDatapath, desired: DesiredPolicy[]) {
  return fake.observe({ cgroups: namedCgroups(desired) });
}

async function apply(fake: FakeDatapath, desired: DesiredPolicy[]) {
  return executePlan(makePlan(desired, await observe(fake, desired)), fake, objects);
}

/**
 * A kernel running one policy on three links and an outbound policy on two
 * cgroups (beside another tool's program), and a desired state that changes
 * all of it: replaces both programs, switches, adds and removes links and
 * cgroups, and flips a rule of each kind.
 */
async function busyKernel(): Promise<{ fake: FakeDatapath; desired: DesiredPolicy[] }> {
  const fake = new FakeDatapath();
  for (const link of ["eth0", "eth1", "eth2", "eth3"]) fake.addLink(link);
  for (const path of ["app.slice", "old.slice", "new.slice", "proxy.slice"]) fake.addCgroup(path);
  fake.attachForeign("app.slice", "connect4", "theirs");
  const exempt = { uids: [1337], cgroups: ["proxy.slice"] };
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
      rules: [
        { originalPort: 5432, port: 15001 },
        { originalPort: 80, port: 15001 },
      ],
    }),
  ]);
  const desired = [
    desiredPolicy(
      "demo",
      [
        { originalPort: 8000, port: 9000, strategy: "rewrite", enabled: false },
        { originalPort: 8443, port: 9443, strategy: "rewrite" },
        { originalPort: 7000, port: 7100, strategy: "rewrite" },
      ],
      { include: ["eth0", "eth1"], exclude: [] },
    ),
    desiredPolicy("edge", [{ originalPort: 53, port: 5353, protocol: "udp" }], { include: ["eth2"], exclude: [] }),
    desiredOutbound("out", {
      cgroups: ["app.slice", "new.slice"],
      exempt,
      rules: [
        { originalPort: 5432, port: 15001, enabled: false },
        { originalPort: 80, port: 15001 },
        { originalPort: 443, port: 15002 },
      ],
    }),
  ];
  return { fake, desired };
}

/** The kernel's state with program ids replaced by the versions they belong to: comparable across runs. */
function shape(state: FakeKernelState) {
  const versionOf = (id: number | undefined) =>
    state.versions.find(
      (v) => id !== undefined && [...Object.values(v.programIds), ...Object.values(v.cgroupProgramIds)].includes(id),
    )?.ref.version ?? (id === undefined ? undefined : "unknown");
  return {
    versions: state.versions.map((v) => ({
      ref: v.ref,
      contentHash: v.contentHash,
      enabled: v.enabled,
      exemptCgroups: v.exemptCgroups,
      hooks: [...Object.keys(v.programIds), ...Object.keys(v.cgroupProgramIds)].sort(),
    })),
    links: state.links.map((l) => ({
      name: l.name,
      clsact: l.clsact,
      filters: Object.fromEntries(HOOKS.map((hook: Hook) => [hook, versionOf(l.filters[hook])])),
    })),
    ownedQdiscs: state.ownedQdiscs,
    cgroups: state.cgroups.map((c) => ({
      path: c.path,
      attached: c.attached.map(
        (a) => `${a.hook} ${versionOf(a.programId) === "unknown" ? a.name : versionOf(a.programId)}`,
      ),
    })),
  };
}

test("killed after any kernel operation: drift or pending changes are shown, and the next apply repairs it all", async () => {
  const { fake: reference, desired } = await busyKernel();
  const start = reference.mutationCount;
  await apply(reference, desired);
  const expected = shape(reference.snapshot());
  const operations = reference.mutationCount - start;
  assert.ok(operations >= 10, `a multi-step apply (${operations} kernel operations)`);

  const seen = new Set<string>();
  for (let killedAfter = 1; killedAfter < operations; killedAfter++) {
    const { fake } = await busyKernel();
    fake.crashAfter(fake.mutationCount + killedAfter);
    await assert.rejects(apply(fake, desired), /the process was killed/);
    fake.restart(); // a new process, on whatever the killed one left

    const observed = await observe(fake, desired);
    const drift = findDrift(observed);
    const pending = makePlan(desired, observed);
    for (const found of drift) seen.add(found.kind);
    if (JSON.stringify(shape(fake.snapshot())) !== JSON.stringify(expected)) {
      assert.ok(
        drift.length > 0 || pending.changes.length > 0,
        `killed after operation ${killedAfter}: something is shown as left to do`,
      );
    }
    for (const found of drift) assert.match(describeDrift(found), /: plan /, "each drift says what plan does about it");

    await apply(fake, desired);
    const repaired = await observe(fake, desired);
    assert.deepEqual(findDrift(repaired), [], `killed after operation ${killedAfter}: no drift after the next apply`);
    assert.deepEqual(makePlan(desired, repaired).changes, [], `killed after operation ${killedAfter}: converged`);
    assert.deepEqual(
      shape(fake.snapshot()),
      expected,
      `killed after operation ${killedAfter}: the same kernel as an uninterrupted apply`,
    );
  }
  assert.ok(seen.has("half-switched"), "some kill points fell between a link's two hooks");
  assert.ok(seen.has("incomplete-version"), "some kill points fell inside a program load");
  assert.ok(seen.has("cgroup-half-switched"), "some kill points fell between a cgroup's programs");
});

test("a half-switched link is named in status and switched whole by plan", async () => {
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  const old = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }]);
  const next = desiredPolicy("demo", [
    { originalPort: 8000, port: 9000, strategy: "rewrite" },
    { originalPort: 8443, port: 9443, strategy: "rewrite" },
  ]);
  await apply(fake, [old]);
  await fake.loadProgram({
    ref: next.program,
    contentHash: next.contentHash,
    objectPath: "x.o",
    hooks: next.hooks,
    enabled: [true, true],
    prefixes: [],
  });
  await fake.attachFilters({ ifindex: 2, name: "eth0" }, next.program, ["egress"]); // then the process died
  const observed = await fake.observe();
  const [drift] = findDrift(observed);
  assert.ok(drift);
  assert.match(
    describeDrift(drift),
    new RegExp(
      `link eth0 is half-switched \\(ingress demo@${old.program.version.slice(0, 8)}, egress demo@${next.program.version.slice(0, 8)}\\)`,
    ),
  );
  const plan = makePlan([next], observed);
  assert.deepEqual(
    plan.changes.map((c) => `${c.type} ${c.address}`),
    ["program.delete program.demo", "attachment.update attachment.eth0"],
  );
  assert.match(plan.changes[1]!.reason, /half-switched by an interrupted apply/, "not `switch from demo@x to demo@x`");
});
