/** The plan as a pure function of desired and observed state. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { FORMAT_VERSION } from "../../src/model/output-format.js";
import { planJson, renderPlan, summarise, type Plan } from "../../src/plan/index.js";
import { executePlan, makePlan, selects } from "../../src/reconcile/index.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const demo = desiredPolicy("demo", [
  { originalPort: 8000, port: 9000, strategy: "rewrite" },
  { originalPort: 8443, port: 9443, strategy: "rewrite", enabled: false },
]);
const noObjects = { objectFor: () => ({ objectPath: "demo.bpf.o", prefixes: [] }) };

async function kernel(...links: string[]): Promise<FakeDatapath> {
  const fake = new FakeDatapath();
  for (const link of links) fake.addLink(link);
  return fake;
}

/** The fake with @policies applied, as the kernel would be after `apply`. */
async function applied(fake: FakeDatapath, ...policies: (typeof demo)[]): Promise<FakeDatapath> {
  await executePlan(makePlan(policies, await fake.observe()), fake, noObjects);
  return fake;
}

const addresses = (plan: Plan) => plan.changes.map((c) => `${c.type} ${c.address}`);

test("from nothing: create the program, attach every Ethernet link, never loopback", async () => {
  const plan = makePlan([demo], await (await kernel("eth0", "eth1")).observe());
  assert.deepEqual(addresses(plan), [
    "program.create program.demo",
    "attachment.create attachment.eth0",
    "attachment.create attachment.eth1",
  ]);
  assert.deepEqual(summarise(plan), { add: 3, change: 0, destroy: 0 });
});

test("when the kernel matches, the plan is empty", async () => {
  const fake = await applied(await kernel("eth0", "eth1"), demo);
  const plan = makePlan([demo], await fake.observe());
  assert.deepEqual(plan.changes, []);
  assert.match(renderPlan(plan, { colour: false }), /^No changes\./);
});

test("flipping enabled is an in-place rule update, nothing else", async () => {
  const fake = await applied(await kernel("eth0", "eth1"), demo);
  const flipped = desiredPolicy("demo", [
    { originalPort: 8000, port: 9000, strategy: "rewrite" },
    { originalPort: 8443, port: 9443, strategy: "rewrite", enabled: true },
  ]);
  assert.equal(flipped.contentHash, demo.contentHash, "enabled is not part of the program");
  assert.deepEqual(addresses(makePlan([flipped], await fake.observe())), ["rule.update rule.demo[1]"]);
});

test("new content replaces the program and switches each link to it", async () => {
  const fake = await applied(await kernel("eth0", "eth1"), demo);
  const changed = desiredPolicy("demo", [{ originalPort: 8000, port: 9001, strategy: "rewrite" }]);
  const plan = makePlan([changed], await fake.observe());
  assert.deepEqual(addresses(plan), [
    "program.replace program.demo",
    "attachment.update attachment.eth0",
    "attachment.update attachment.eth1",
  ]);
  assert.deepEqual(summarise(plan), { add: 1, change: 2, destroy: 1 });
  const replace = plan.changes[0]!;
  assert.ok(replace.type === "program.replace" && replace.replaces.version === demo.program.version);
  assert.match(
    renderPlan(plan, { colour: false }),
    /attachment\.eth0 {2}update in place: switch from demo@\w{8} to demo@\w{8}/,
  );
});

test("destroy (no desired policies) removes attachments, the qdiscs intercept made, and programs", async () => {
  const fake = await applied(await kernel("eth0"), demo);
  const plan = makePlan([], await fake.observe());
  assert.deepEqual(addresses(plan), ["program.delete program.demo", "attachment.delete attachment.eth0"]);
  const detach = plan.changes[1]!;
  assert.ok(detach.type === "attachment.delete" && detach.removeQdisc, "the qdisc intercept created goes too");
  assert.match(renderPlan(plan, { colour: false }), /Plan: 0 to add, 0 to change, 2 to destroy\./);
});

test("a qdisc intercept did not create stays when our filters leave", async () => {
  const fake = await kernel();
  fake.addLink("eth0", { clsact: true });
  await applied(fake, demo);
  const plan = makePlan([], await fake.observe());
  const detach = plan.changes.find((c) => c.type === "attachment.delete");
  assert.ok(detach?.type === "attachment.delete" && !detach.removeQdisc);
});

test("a link with only one of our hooks is repaired", async () => {
  const fake = await applied(await kernel("eth0", "eth1"), demo);
  await fake.detachFilter({ ifindex: 2, name: "eth0" }, "egress");
  const plan = makePlan([demo], await fake.observe());
  assert.deepEqual(addresses(plan), ["attachment.update attachment.eth0"]);
  assert.match(plan.changes[0]!.reason, /ingress demo@\w+, egress nothing \(half-switched by an interrupted apply\)/);
});

test("interface selectors: include and exclude globs", async () => {
  const selected = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }], {
    include: ["eth*"],
    exclude: ["eth1"],
  });
  assert.deepEqual(addresses(makePlan([selected], await (await kernel("eth0", "eth1")).observe())), [
    "program.create program.demo",
    "attachment.create attachment.eth0",
  ]);
  assert.equal(selects({ include: ["veth?"], exclude: [] }, "veth1"), true);
  assert.equal(selects({ include: ["veth?"], exclude: [] }, "veth12"), false);
});

test("a link that is not Ethernet: skipped by globs, an error when named", async () => {
  const fake = await kernel("eth0");
  fake.addLink("wg0", { linkType: "none" });
  assert.deepEqual(addresses(makePlan([demo], await fake.observe())), [
    "program.create program.demo",
    "attachment.create attachment.eth0",
  ]);
  const named = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }], {
    include: ["wg0"],
    exclude: [],
  });
  await assert.rejects(async () => makePlan([named], await fake.observe()), {
    code: "plan-conflict",
    message: /names interface wg0, a none link/,
  });
});

test("a foreign filter in intercept's slot stops the plan", async () => {
  const fake = await kernel();
  fake.addLink("eth0", {
    clsact: true,
    foreign: [{ hook: "ingress", pref: 18755, handle: "0x1", kind: "bpf", programName: "theirs", inOurSlot: true }],
  });
  await assert.rejects(async () => makePlan([demo], await fake.observe()), {
    code: "plan-conflict",
    message: /held by a filter intercept did not create \(bpf theirs\)/,
  });
});

test("plan --json: camelCase, a format version, the action of every change", async () => {
  const json = planJson(makePlan([demo], await (await kernel("eth0")).observe()));
  assert.equal(json.formatVersion, FORMAT_VERSION);
  assert.equal(json.kind, "plan");
  assert.deepEqual(
    json.changes.map((c) => c.action),
    ["create", "create"],
  );
  assert.deepEqual(Object.keys(json.changes[1]!).sort(), [
    "action",
    "addQdisc",
    "address",
    "hooks",
    "link",
    "program",
    "reason",
    "reasonCode",
    "type",
  ]);
  const snake = JSON.stringify(json).match(/"[a-z]+_[a-z_]+":/g);
  assert.equal(snake, null, "no snake_case keys");
});
