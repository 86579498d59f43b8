/** Policies that capture the same cgroup compose into one set of cgroup programs (issue 20), over the fake datapath. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Outbound } from "../../src/api.js";
import type { Plan } from "../../src/plan/index.js";
import { executePlan, planRun, type DesiredPolicy } from "../../src/reconcile/index.js";
import { desiredOutbound } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const noObjects = { objectFor: () => ({ objectPath: "any.bpf.o", prefixes: [] }) };
const addresses = (plan: Plan) => plan.changes.map((c) => `${c.type} ${c.address}`);

/** "mesh" captures app.slice (and, when @alone, solo.slice too); its proxy runs in mesh_proxy.slice. */
const mesh = (port = 15001, alone = false) =>
  desiredOutbound("mesh", {
    cgroups: ["app.slice", ...(alone ? ["solo.slice"] : [])],
    exempt: { cgroups: ["mesh_proxy.slice"] },
    rules: [{ originalPort: 5432, port }],
  } satisfies Outbound);
/** "team" captures app.slice for another port; its proxy runs in team_proxy.slice. */
const team = (enabled = true, originalPort = 6379) =>
  desiredOutbound("team", {
    cgroups: ["app.slice"],
    exempt: { cgroups: ["team_proxy.slice"] },
    rules: [
      { originalPort: 80, port: 15002 },
      { originalPort, port: 15002, enabled },
    ],
  });

function kernel(): FakeDatapath {
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  for (const path of ["app.slice", "solo.slice", "mesh_proxy.slice", "team_proxy.slice"]) fake.addCgroup(path);
  return fake;
}

async function apply(fake: FakeDatapath, ...desired: DesiredPolicy[]): Promise<Plan> {
  const run = await planRun(desired, fake);
  await executePlan(run.plan, fake, noObjects);
  assert.deepEqual(addresses((await planRun(desired, fake)).plan), [], "converged");
  return run.plan;
}

/** The programs of ours on @path, as "hook program" (the program's policy or composition name), sorted. */
function running(fake: FakeDatapath, path: string): string[] {
  const { cgroups, versions } = fake.snapshot();
  return (cgroups.find((c) => c.path === path)?.attached ?? [])
    .map((a) => {
      const version = versions.find((v) => Object.values(v.cgroupProgramIds).includes(a.programId));
      return `${a.hook} ${version?.ref.policy ?? a.name}`;
    })
    .sort();
}

const all = (program: string) => [
  `connect4 ${program}`,
  `connect6 ${program}`,
  `getsockopt ${program}`,
  `sock_ops ${program}`,
];
const idOf = (fake: FakeDatapath, path: string) => fake.snapshot().cgroups.find((c) => c.path === path)!.id;

test("two policies capturing one cgroup compose: its programs and both proxies' getsockopt are the composition's", async () => {
  const fake = kernel();
  const plan = await apply(fake, mesh(), team());
  assert.deepEqual(addresses(plan), [
    "program.create program.mesh+team",
    "cgroup.create cgroup.app.slice",
    "cgroup.create cgroup.mesh_proxy.slice",
    "cgroup.create cgroup.team_proxy.slice",
  ]);
  assert.match(
    plan.changes[0]!.reason,
    /^composition of mesh, team, 3 rules; shared by mesh and team, which all capture cgroup app\.slice:/,
  );
  assert.equal(plan.changes[1]!.reason, "attach mesh+team (capture)");
  assert.deepEqual(running(fake, "app.slice"), all("mesh+team"));
  assert.deepEqual(running(fake, "mesh_proxy.slice"), ["getsockopt mesh+team"]);
  assert.deepEqual(running(fake, "team_proxy.slice"), ["getsockopt mesh+team"]);
  assert.deepEqual(running(fake, "solo.slice"), []);
  const [version, ...others] = fake.snapshot().versions;
  assert.deepEqual(others, [], "no policy's own program is loaded: none runs anywhere");
  assert.deepEqual(
    version!.exemptCgroups.map((c) => c.id),
    [idOf(fake, "mesh_proxy.slice"), idOf(fake, "team_proxy.slice")],
    "every member's exemptions are the composition's",
  );
  assert.deepEqual(version!.enabled, [true, true, true]);
});

test("editing one policy replaces the composition's cgroup programs, and names who shares them", async () => {
  const fake = kernel();
  await apply(fake, mesh(), team());
  const plan = await apply(fake, mesh(15003), team());
  assert.deepEqual(addresses(plan), [
    "program.replace program.mesh+team",
    "cgroup.update cgroup.app.slice",
    "cgroup.update cgroup.mesh_proxy.slice",
    "cgroup.update cgroup.team_proxy.slice",
  ]);
  assert.match(
    plan.changes[0]!.reason,
    /^program changed .*; shared by mesh and team, which all capture cgroup app\.slice:/,
  );
  assert.deepEqual(running(fake, "app.slice"), all("mesh+team"));
  assert.equal(fake.snapshot().versions.length, 1, "the old version is gone");
});

test("disabling one policy's outbound rule is a live edit at its slot in the composition", async () => {
  const fake = kernel();
  await apply(fake, mesh(), team());
  const ids = fake.snapshot().versions[0]!.cgroupProgramIds;
  const plan = await apply(fake, mesh(), team(false));
  assert.deepEqual(addresses(plan), ["rule.update rule.team[1]"]);
  const change = plan.changes[0]!;
  assert.ok(change.type === "rule.update");
  assert.equal(change.program.policy, "mesh+team");
  assert.equal(change.index, 2, "mesh's rule first, then team's two");
  assert.match(change.reason, /^outbound tcp 6379 → proxy 15002: disable in mesh\+team \(live edit, no reload\)$/);
  const [version] = fake.snapshot().versions;
  assert.deepEqual(version!.enabled, [true, true, false]);
  assert.deepEqual(version!.cgroupProgramIds, ids, "same programs");
});

test("removing one policy leaves the other's capture: the cgroup switches to its own program", async () => {
  const fake = kernel();
  await apply(fake, mesh(), team());
  const plan = await apply(fake, mesh());
  assert.deepEqual(addresses(plan), [
    "program.create program.mesh",
    "program.delete program.mesh+team",
    "cgroup.update cgroup.app.slice",
    "cgroup.update cgroup.mesh_proxy.slice",
    "cgroup.delete cgroup.team_proxy.slice",
  ]);
  assert.deepEqual(running(fake, "app.slice"), all("mesh"));
  assert.deepEqual(running(fake, "mesh_proxy.slice"), ["getsockopt mesh"]);
  assert.deepEqual(running(fake, "team_proxy.slice"), []);
  const versions = fake.snapshot().versions;
  assert.deepEqual(
    versions.map((v) => v.ref.policy),
    ["mesh"],
  );
  assert.deepEqual(
    versions[0]!.exemptCgroups.map((c) => c.id),
    [idOf(fake, "mesh_proxy.slice")],
  );
  await apply(fake);
  assert.deepEqual(fake.snapshot().versions, []);
  for (const path of ["app.slice", "mesh_proxy.slice"]) assert.deepEqual(running(fake, path), [], path);
});

test("one distinct set per cgroup: a cgroup one policy captures alone runs its own program beside the composition", async () => {
  const fake = kernel();
  const plan = await apply(fake, mesh(15001, true), team());
  assert.deepEqual(
    addresses(plan).filter((a) => a.startsWith("program.")),
    ["program.create program.mesh", "program.create program.mesh+team"],
  );
  assert.deepEqual(running(fake, "solo.slice"), all("mesh"));
  assert.deepEqual(running(fake, "app.slice"), all("mesh+team"));
  // The proxy's cgroup runs one getsockopt: the first capturing program (by name) exempting it.
  assert.deepEqual(running(fake, "mesh_proxy.slice"), ["getsockopt mesh"]);
  assert.deepEqual(running(fake, "team_proxy.slice"), ["getsockopt mesh+team"]);
  // mesh's rule is edited live in both programs holding it.
  const off = await planRun(
    [
      desiredOutbound("mesh", {
        cgroups: ["app.slice", "solo.slice"],
        exempt: { cgroups: ["mesh_proxy.slice"] },
        rules: [{ originalPort: 5432, port: 15001, enabled: false }],
      }),
      team(),
    ],
    fake,
  );
  assert.deepEqual(
    off.plan.changes.map((c) => (c.type === "rule.update" ? `${c.address} ${c.program.policy}:${c.index}` : c.type)),
    ["rule.mesh[0] mesh:0", "rule.mesh[0] mesh+team:0"],
  );
});

test("a cgroup one policy captures and another exempts is refused at plan time, naming both", async () => {
  const fake = kernel();
  const proxyCaptured = desiredOutbound("team", {
    cgroups: ["mesh_proxy.slice"],
    exempt: { uids: [1337] },
    rules: [{ originalPort: 80, port: 15002 }],
  });
  await assert.rejects(planRun([mesh(), proxyCaptured], fake), {
    code: "plan-conflict",
    message: 'cgroup "mesh_proxy.slice" is exempt in policy mesh and captured by team',
  });
});
