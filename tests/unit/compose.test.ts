/** Policies that select the same links compose into one program per link (issue 20), over the fake datapath. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { compileComposition, compilePolicies, likelyCompositions } from "../../src/compile/index.js";
import { loadPolicies } from "../../src/load/index.js";
import { compositionName, isCompositionName, isProgramName, membersOf } from "../../src/model/composition.js";
import { isPolicyName } from "../../src/model/policy-name.js";
import { composedRules, composedSlots } from "../../src/model/rule-slots.js";
import { PinLayout } from "../../src/kernel/pins.js";
import { describeWarning, summarise, type Plan } from "../../src/plan/index.js";
import {
  composeDesired,
  executePlan,
  planRun,
  type DesiredPolicy,
  type DesiredProgram,
} from "../../src/reconcile/index.js";
import { RuleDirectory } from "../../src/flows/rules.js";
import { validatePolicies } from "../../src/validate/index.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { statusJson } from "../../src/commands/status.js";
import { desired, desiredOutbound, desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";
import { testPolicy } from "../support/bpf.js";
import { assertGolden } from "../support/golden.js";

const noObjects = { objectFor: () => ({ objectPath: "any.bpf.o", prefixes: [] }) };
const addresses = (plan: Plan) => plan.changes.map((c) => `${c.type} ${c.address}`);
const both = { include: ["eth0", "eth1"], exclude: [] };
const eth1 = { include: ["eth1"], exclude: [] };

const web = (port = 9000, enabled = true) =>
  desiredPolicy(
    "web",
    [
      { originalPort: 8000, port },
      { originalPort: 8443, port: 9443, enabled },
    ],
    both,
  );
const db = (enabled = true) => desiredPolicy("db", [{ originalPort: 5432, port: 15432, enabled }], eth1);

async function kernel(): Promise<FakeDatapath> {
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  fake.addLink("eth1");
  return fake;
}

async function apply(fake: FakeDatapath, ...desired: DesiredPolicy[]): Promise<Plan> {
  const run = await planRun(desired, fake);
  await executePlan(run.plan, fake, noObjects);
  assert.deepEqual(addresses((await planRun(desired, fake)).plan), [], "converged");
  return run.plan;
}

async function running(fake: FakeDatapath, link: string): Promise<string | undefined> {
  const observed = await fake.observe();
  const id = observed.links.find((l) => l.name === link)!.filters.ingress;
  return observed.programs.find((p) => p.programIds.ingress === id)?.ref.policy;
}

test("composition names: one policy is itself; several join sorted; long ones keep a prefix and a hash", () => {
  assert.equal(compositionName(["web"]), "web");
  assert.equal(compositionName(["web", "db"]), "db+web");
  assert.ok(isCompositionName("db+web") && !isCompositionName("web+db") && !isCompositionName("web"));
  assert.deepEqual(membersOf("db+web"), ["db", "web"]);
  const long = compositionName(Array.from({ length: 9 }, (_, i) => `policy_number_${i}`));
  assert.ok(long.length <= 64 && isCompositionName(long) && isProgramName(long), long);
  assert.equal(membersOf(long), undefined);
  assert.ok(!isPolicyName("db+web"), "the joiner is never in a policy name");
  const pins = new PinLayout("ns1", "/sys/fs/bpf/intercept");
  assert.match(pins.policy("db+web"), /\/ns1\/db\+web$/);
  for (const name of ["web+db", "db++web", "../x", "db+web/..", "a+"])
    assert.throws(() => pins.policy(name), { code: "pin-path-refused" }, name);
});

test("two policies on one link compose: eth0 runs web's own program, eth1 db+web", async () => {
  const fake = await kernel();
  const plan = await apply(fake, web(), db());
  assert.deepEqual(addresses(plan), [
    "program.create program.web",
    "program.create program.db+web",
    "attachment.create attachment.eth0",
    "attachment.create attachment.eth1",
  ]);
  const composed = plan.changes.find((c) => c.address === "program.db+web")!;
  assert.match(composed.reason, /composition of db, web, 3 rules; shared by db and web, which all select eth1/);
  assert.equal(await running(fake, "eth0"), "web");
  assert.equal(await running(fake, "eth1"), "db+web");
  const observed = await fake.observe();
  // db's block first (name order), then web's.
  assert.deepEqual(observed.programs.find((p) => p.ref.policy === "db+web")!.enabled, [true, true, true]);
});

test("editing one policy replaces the program of each composition holding it, and names who shares it", async () => {
  const fake = await kernel();
  await apply(fake, web(), db());
  const plan = await apply(fake, web(), desiredPolicy("db", [{ originalPort: 5433, port: 15432 }], eth1));
  assert.deepEqual(addresses(plan), ["program.replace program.db+web", "attachment.update attachment.eth1"]);
  assert.match(plan.changes[0]!.reason, /program changed .*; shared by db and web, which all select eth1/);
  assert.equal(await running(fake, "eth0"), "web", "web's own link is not touched");
});

test("disabling one rule is a live edit at its slot in every program holding it", async () => {
  const fake = await kernel();
  await apply(fake, web(), db());
  const plan = await apply(fake, web(9000, false), db());
  assert.deepEqual(addresses(plan), ["rule.update rule.web[1]", "rule.update rule.web[1]"]);
  const slots = plan.changes.map((c) => (c.type === "rule.update" ? `${c.program.policy}:${c.index}` : ""));
  assert.deepEqual(slots.sort(), ["db+web:2", "web:1"]);
  assert.match(
    plan.changes.find((c) => c.type === "rule.update" && c.program.policy === "db+web")!.reason,
    / in db\+web /,
  );
  const dbOff = await apply(fake, web(9000, false), db(false));
  assert.deepEqual(addresses(dbOff), ["rule.update rule.db[0]"], "db's rule lives in one program only");
});

test("removing one policy leaves the other's program, rules and counters; a link's program goes with its last policy", async () => {
  const fake = await kernel();
  await apply(fake, web(9000, false), db());
  const before = (await fake.observe()).programs.find((p) => p.ref.policy === "web")!;
  fake.count(before.ref, 0, "steered", { packets: 7, bytes: 420 });
  const plan = await apply(fake, web(9000, false));
  assert.deepEqual(addresses(plan), ["program.delete program.db+web", "attachment.update attachment.eth1"]);
  assert.match(plan.changes[0]!.reason, /no link runs db and web together any more/);
  const after = (await fake.observe()).programs.find((p) => p.ref.policy === "web")!;
  assert.deepEqual(after.programIds, before.programIds, "web's program stays loaded as it was");
  assert.deepEqual(after.enabled, [true, false]);
  assert.deepEqual((await fake.readCounters(after.ref, 2))[0]!.steered, { packets: 7, bytes: 420 });
  assert.equal(await running(fake, "eth1"), "web");
  const gone = await apply(fake);
  assert.deepEqual(addresses(gone), [
    "program.delete program.web",
    "attachment.delete attachment.eth0",
    "attachment.delete attachment.eth1",
  ]);
});

test("a policy joining a link its neighbour runs alone: the link switches to the composition", async () => {
  const fake = await kernel();
  await apply(fake, web());
  const plan = await apply(fake, web(), db());
  assert.deepEqual(addresses(plan), ["program.create program.db+web", "attachment.update attachment.eth1"]);
  assert.match(plan.changes[1]!.reason, /switch from web@\w+ to db\+web@\w+/);
});

async function validateFiles(files: Record<string, string>) {
  const dir = await mkdtemp(path.join(tmpdir(), "intercept-compose-"));
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  const loaded = await loadPolicies([dir]);
  return { dir, ...validatePolicies(loaded.policies) };
}

test("conflicts across files are located in both files, with the packet and a fix", async () => {
  const { dir, diagnostics } = await validateFiles({
    "db.yaml": "interfaces: { include: [eth1] }\ninterceptors:\n  - { originalPort: 5432, port: 15432 }\n",
    "web.yaml":
      "interceptors:\n  - { originalPort: 8000, port: 9000 }\n  - { originalPorts: [5000-6000], port: 9001 }\n",
  });
  assert.equal(diagnostics.length, 1, JSON.stringify(diagnostics));
  const [problem] = diagnostics;
  assert.equal(problem!.code, "rule/overlap");
  assert.equal(problem!.file, path.join(dir, "web.yaml"));
  assert.deepEqual([problem!.line, problem!.column], [3, 7]);
  assert.equal(
    problem!.message,
    "web: interceptors[1] overlaps db: interceptors[0]: a tcp packet to port 5432 would match both; both policies select eth1, where their rules run in one program: narrow one rule (exceptPorts, exceptSources), or the policies' interfaces or namespaces",
  );
  assert.deepEqual(
    problem!.notes?.map((note) => [note.file, note.line, note.column, note.message]),
    [[path.join(dir, "db.yaml"), 3, 7, "db: interceptors[0] matches it here"]],
  );
});

test("policies on provably different links, or namespaces, reuse ports freely", async () => {
  const rule = "interceptors: [{ originalPort: 8000, port: 9000 }]\n";
  const apart = await validateFiles({
    "a.yaml": `interfaces: { include: [eth0] }\nnamespaces: [y-*]\n${rule}`,
    "b.yaml": `interfaces: { include: ["v*"] }\nnamespaces: [y-*]\n${rule}`,
    "c.yaml": `interfaces: { exclude: [eth1] }\nnamespaces: [x-*]\n${rule}`,
    "d.yaml": `interfaces: { include: [eth1] }\nnamespaces: [x-*]\n${rule}`,
  });
  assert.deepEqual(apart.diagnostics, []);
  const meeting = await validateFiles({ "a.yaml": rule, "b.yaml": `interfaces: { include: [eth1] }\n${rule}` });
  assert.deepEqual(
    meeting.diagnostics.map((d) => d.code),
    ["rule/duplicate-original-port"],
  );
});

/** The matching block of a generated program, between its markers. */
function matchSection(source: string): string {
  const start = source.indexOf(": matching ==");
  const end = source.indexOf("/* ===================== end of policy");
  assert.ok(start > 0 && end > start);
  return source.slice(source.indexOf("\n", start), end);
}

test("golden: a composed pair's matching code is that of one policy holding the same rules", async () => {
  const a = testPolicy("api", [
    { originalPort: 8000, port: 9000 },
    { originalPort: 8443, port: 9443, sources: ["198.18.0.0/16"] },
  ]);
  const b = testPolicy("metrics", [{ originalPort: 9100, port: 19100, protocol: "udp" }]);
  const one = testPolicy("api_metrics", [
    { originalPort: 8000, port: 9000 },
    { originalPort: 8443, port: 9443, sources: ["198.18.0.0/16"] },
    { originalPort: 9100, port: 19100, protocol: "udp" },
  ]);
  const composed = compileComposition([b, a]);
  const [single] = compilePolicies([one]);
  assert.equal(composed.policy.name, "api+metrics");
  assert.equal(composed.sourcePath, path.join("generated", "api+metrics.bpf.c"));
  assert.equal(matchSection(composed.source), matchSection(single!.source));
  await assertGolden("tests/golden/compose/api+metrics.bpf.c", composed.source);
  await assertGolden("tests/golden/compose/api_metrics.bpf.c", single!.source);
  for (const strategy of ["table", "switch"] as const) {
    assert.equal(
      matchSection(compileComposition([a, b], strategy).source),
      matchSection(compilePolicies([one], strategy)[0]!.source),
      strategy,
    );
  }
  // A composition of one is the policy's own program: same name, same C.
  assert.equal(compileComposition([a]).source, compilePolicies([a])[0]!.source);
});

test("selectors that match nothing here are warned about, exactly, with what exists and a did-you-mean", async () => {
  const fake = new FakeDatapath({ name: "edge" });
  fake.addLink("eth0");
  fake.addLink("v1");
  const typo = desiredPolicy("web", [{ originalPort: 8000, port: 9000 }], { include: ["eht0", "v1"], exclude: [] });
  const prod = desired({ ...testPolicy("prod", [{ originalPort: 7000, port: 7100 }]), namespaces: ["edgy"] });
  const plan = (await planRun([typo, prod], fake)).plan;
  assert.deepEqual(
    plan.warnings.map((warning) => describeWarning(warning, plan.netns)),
    [
      `policy prod (prod.yaml): namespaces ["edgy"] match no name of the namespace planned ("edge"): the policy is left out here; did you mean "edge"?`,
      `policy web (web.yaml): interfaces.include "eht0" matches no link in network namespace "edge" (links here: eth0, v1): nothing is attached for it; did you mean "eth0"?`,
    ],
  );
  const far = desiredPolicy("far", [{ originalPort: 8000, port: 9000 }], { include: ["wlan*"], exclude: [] });
  const host = new FakeDatapath({});
  host.addLink("eth0");
  const elsewhere = desired({ ...testPolicy("prod", [{ originalPort: 7000, port: 7100 }]), namespaces: ["prod-*"] });
  const hostPlan = (await planRun([far, elsewhere], host)).plan;
  assert.deepEqual(
    hostPlan.warnings.map((warning) => describeWarning(warning, hostPlan.netns)),
    [
      `policy prod (prod.yaml): namespaces ["prod-*"] match no name of the namespace planned (the host's namespace, which has no name): the policy is left out here`,
      `policy far (far.yaml): interfaces.include "wlan*" matches no link in the current network namespace (links here: eth0): nothing is attached for it`,
    ],
  );
  // Warnings are not changes: --detailed-exitcode counts changes only.
  assert.deepEqual(addresses(hostPlan), ["program.create program.far"]);
  assert.equal(summarise(hostPlan).add, 1);
});

test("status names each rule of a composed program by its policy, index and file, and groups by link", async () => {
  const fake = await kernel();
  await apply(fake, web(), db());
  fake.leaveEmptyPolicyDirectory("gone"); // drift, as an interrupted unload leaves it
  const report = await inspect(fake, [web(), db()]);
  const composed = report.programs.find((p) => p.program.ref.policy === "db+web")!;
  assert.deepEqual(
    composed.rules.map(
      (rule) => rule.owner && `${rule.index}:${rule.owner.policy}[${rule.owner.index}] ${rule.owner.file}`,
    ),
    ["0:db[0] db.yaml", "1:web[0] web.yaml", "2:web[1] web.yaml"],
  );
  const json = statusJson(report, undefined);
  assert.deepEqual(
    json.programs.find((p) => p.policy === "db+web")!.rules.map((rule) => rule.address),
    ["rule.db[0]", "rule.web[0]", "rule.web[1]"],
  );
  assert.deepEqual(
    json.links.map((link) => `${link.link} ${link.policy}`),
    ["eth0 web", "eth1 db+web"],
  );
  assert.deepEqual(
    report.drift.map((d) => d.kind),
    ["empty-pins"],
  );
  assert.deepEqual(report.drift, (await planRun([web(), db()], fake)).plan.drift, "status shows the plan's drift");
});

test("prebuilt objects: the compositions links are likely to make, one object each", () => {
  const on = (name: string, include: string[] | null, exclude: string[] = [], namespaces?: string[]) => ({
    ...testPolicy(name, [{ originalPort: 1000 + name.length, port: 2000 }]),
    interfaces: { include, exclude },
    ...(namespaces && { namespaces }),
  });
  const sets = likelyCompositions([
    on("web", ["eth0", "eth1"]),
    on("db", ["eth1"]),
    on("mesh", null, ["eth0", "eth1"]),
    on("edge", ["veth*"], [], ["edge-*"]),
  ]);
  assert.deepEqual(
    sets.map((members) => members.map((member) => member.name).join("+")),
    ["db+web", "edge+mesh"],
  );
});

test("across files: a shared rewrite target and a rewrite chain are conflicts too, each in both files", async () => {
  const { dir, diagnostics } = await validateFiles({
    "a.yaml": "interceptors:\n  - { originalPort: 5000, port: 6000, protocol: udp }\n",
    "b.yaml":
      "interceptors:\n  - { originalPort: 5001, port: 6000, protocol: udp }\n  - { originalPort: 7000, port: 5000, protocol: udp }\n",
  });
  assert.deepEqual(
    diagnostics.map(
      (d) =>
        `${path.basename(d.file)}:${d.line} ${d.code} → ${d.notes?.map((n) => `${path.basename(n.file)}:${n.line}`)}`,
    ),
    ["b.yaml:2 rule/duplicate-target-port → a.yaml:2", "b.yaml:3 rule/chain → a.yaml:2"],
  );
  assert.match(diagnostics[0]!.message, /udp port 6000 is already the target of rewrite rule a: interceptors\[0\]/);
  assert.ok(dir);
});

test("slots of a composed program: every interceptor first, policy by policy, then every outbound rule", () => {
  const a = { rules: ["a0"], outbound: { rules: ["a-out0"] } };
  const b = { rules: ["b0", "b1"], outbound: { rules: ["b-out0"] } };
  assert.deepEqual(composedSlots([a, b]), [
    [0, 3],
    [1, 2, 4],
  ]);
  assert.deepEqual(composedRules([a, b]), ["a0", "b0", "b1", "a-out0", "b-out0"]);
  assert.deepEqual(composedRules([b]), ["b0", "b1", "b-out0"], "one policy: its own numbering");
});

test("flow records of a composed program name each rule by its policy and index", async () => {
  const scratch = await mkdtemp(path.join(tmpdir(), "intercept-compose-flows-"));
  try {
    const pins = new PinLayout("ns1", path.join(scratch, "bpf"));
    const [program] = await composeDesired([web(), db()], [["db", "web"]]);
    await mkdir(pins.version(program!.program), { recursive: true });
    const rules = await RuleDirectory.read(pins, [web(), db()]);
    const version = program!.program.version;
    assert.deepEqual(
      [0, 1, 2].map((slot) => rules.resolve(version, slot).label),
      ["db[0]", "web[0]", "web[1]"],
    );
    assert.equal(rules.resolve(version, 2).policy, "web");
    assert.equal(rules.slots(version), 3);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
});

test("across files, rules whose written ports meet are compared exactly: an excepted port is free, one inside a wide range is not", async () => {
  const { diagnostics } = await validateFiles({
    "a.yaml": "interceptors:\n  - { originalPorts: [1000-2000], exceptPorts: [1800], port: 9000 }\n",
    "b.yaml": "interceptors:\n  - { originalPort: 1800, port: 9002 }\n  - { originalPort: 1100, port: 9001 }\n",
    "c.yaml": "interceptors:\n  - { originalPort: 2500, port: 9003 }\n  - { originalPort: 1500, port: 9004 }\n",
  });
  assert.deepEqual(
    diagnostics.map(
      (d) => `${path.basename(d.file)}:${d.line} ${d.code} ${d.message.split(":").slice(0, 2).join(":")}`,
    ),
    ["b.yaml:3 rule/overlap b: interceptors[1] overlaps a", "c.yaml:3 rule/overlap c: interceptors[1] overlaps a"],
  );
});

test("composed programs are rendered once per content but `enabled`: a flip reuses the program, any other change renders anew", async () => {
  // Ports no other test composes, so the module's cache holds none of these yet.
  const team = (port: number, enabled = true) => desiredPolicy("team", [{ originalPort: 7100, port, enabled }], eth1);
  const ops = (enabled = true) =>
    desiredOutbound(
      "ops",
      {
        cgroups: ["ops.slice"],
        exempt: { cgroups: ["ops_proxy.slice"] },
        rules: [{ originalPort: 7300, port: 17300, enabled }],
      },
      [{ originalPort: 7200, port: 17200, enabled }],
    );
  const compose = async (...members: DesiredPolicy[]) =>
    (await composeDesired(members, [members.map((want) => want.policy.name)]))[0]!;
  const first = await compose(team(17100), ops());
  assert.equal(first.compiled.sourceHash, createHash("sha256").update(first.compiled.source).digest("hex"));
  const again = await compose(team(17100), ops());
  assert.equal(again.compiled, first.compiled, "same content, new objects: from the cache");
  const flipped = await compose(team(17100, false), ops(false));
  assert.equal(
    flipped.compiled,
    first.compiled,
    "enabled (interceptors and outbound rules) is not part of the program",
  );
  assert.equal(flipped.contentHash, first.contentHash);
  const moved = await compose(team(17101), ops());
  assert.notEqual(moved.compiled, first.compiled);
  assert.notEqual(moved.contentHash, first.contentHash);
  assert.notEqual(moved.compiled.sourceHash, first.compiled.sourceHash);
});

test("a composition whose policies changed anything but `enabled` is rendered anew, by the same name", async () => {
  // Ports no other test composes, so the module's cache holds none of these yet.
  const web = (port = 17500, exclude: string[] = []) =>
    desiredPolicy("web", [{ originalPort: 7500, port }], { include: ["eth1"], exclude });
  const ops = (port = 17700) =>
    desiredOutbound(
      "ops",
      { cgroups: ["ops.slice"], exempt: { cgroups: ["ops_proxy.slice"] }, rules: [{ originalPort: 7700, port }] },
      [{ originalPort: 7600, port: 17600 }],
    );
  const compose = async (...members: DesiredPolicy[]) =>
    (await composeDesired(members, [members.map((want) => want.policy.name)]))[0]!;
  const changes: Record<string, () => Promise<DesiredProgram>> = {
    "an interceptor's port": () => compose(web(17501), ops()),
    "an outbound rule's port": () => compose(web(), ops(17701)),
    "the interfaces a policy excludes": () => compose(web(17500, ["eth9"]), ops()),
  };
  for (const [what, changed] of Object.entries(changes)) {
    const before = await compose(web(), ops());
    assert.equal((await compose(web(), ops())).compiled, before.compiled, `before ${what}: from the cache`);
    const composed = await changed();
    assert.equal(composed.name, before.name);
    assert.notEqual(composed.compiled, before.compiled, what);
    assert.equal(composed.compiled.members[0], composed.members[0], `${what}: rendered from the policies given`);
    assert.equal((await changed()).compiled, composed.compiled, `${what}: the last rendered is served again`);
  }
});
