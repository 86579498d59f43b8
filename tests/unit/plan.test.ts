import assert from "node:assert/strict";
import { test } from "node:test";
import type { LiveState } from "../../src/live/index.js";
import { makePlan, renderPlan, selects, summarise, type DesiredPolicy } from "../../src/plan/index.js";
import { testPolicy } from "../support/bpf.js";

const eth0 = { ifindex: 2, name: "eth0", loopback: false };
const eth1 = { ifindex: 3, name: "eth1", loopback: false };
const lo = { ifindex: 1, name: "lo", loopback: true };

function live(overrides: Partial<LiveState> = {}): LiveState {
  return { netns: { name: "t" }, namespaceKey: "ns1", links: [lo, eth0, eth1], programs: [], attachments: [], ownedQdiscs: [], ...overrides };
}

const demo: DesiredPolicy = {
  policy: testPolicy("demo", [{ originalPort: 8000, port: 9000 }, { originalPort: 8443, port: 9443, enabled: false }]),
  contentHash: "a".repeat(64),
};
const loadedDemo = { policy: "demo", contentHash: "a".repeat(64), dir: "/pins/demo/a", programIds: { ingress: 10, egress: 11 }, enabled: [true, false] };
const attached = (link: typeof eth0, ids = { ingress: 10, egress: 11 }) => ({ link, programIds: ids, foreign: { ingress: [], egress: [] } });

const addresses = (plan: ReturnType<typeof makePlan>) => plan.changes.map((c) => `${c.action} ${c.address}`);

test("from nothing: create the program, attach every non-loopback link", () => {
  const plan = makePlan([demo], live());
  assert.deepEqual(addresses(plan), ["create program.demo", "create attachment.eth0", "create attachment.eth1"]);
  assert.deepEqual(summarise(plan), { add: 3, change: 0, destroy: 0 });
});

test("when the kernel matches, the plan is empty", () => {
  const plan = makePlan([demo], live({ programs: [loadedDemo], attachments: [attached(eth0), attached(eth1)] }));
  assert.deepEqual(plan.changes, []);
  assert.match(renderPlan(plan, { colour: false }), /^No changes\./);
});

test("flipping enabled is an in-place rule update, nothing else", () => {
  const flipped = { ...demo, policy: { ...demo.policy, rules: demo.policy.rules.map((r) => ({ ...r, enabled: true })) } };
  const plan = makePlan([flipped], live({ programs: [loadedDemo], attachments: [attached(eth0), attached(eth1)] }));
  assert.deepEqual(addresses(plan), ["update rule.demo[1]"]);
});

test("new content replaces the program and switches each link to it", () => {
  const changed = { ...demo, contentHash: "b".repeat(64) };
  const plan = makePlan([changed], live({ programs: [loadedDemo], attachments: [attached(eth0), attached(eth1)] }));
  assert.deepEqual(addresses(plan), ["replace program.demo", "update attachment.eth0", "update attachment.eth1"]);
  assert.deepEqual(summarise(plan), { add: 1, change: 2, destroy: 1 });
  assert.equal(plan.changes[0]!.resource === "program" && plan.changes[0]!.oldDir, "/pins/demo/a");
});

test("destroy (no desired policies) removes attachments and programs", () => {
  const plan = makePlan([], live({ programs: [loadedDemo], attachments: [attached(eth0)] }));
  assert.deepEqual(addresses(plan), ["delete program.demo", "delete attachment.eth0"]);
  assert.match(renderPlan(plan, { colour: false }), /Plan: 0 to add, 0 to change, 2 to destroy\./);
});

test("a link with only one of our hooks is repaired", () => {
  const plan = makePlan([demo], live({ programs: [loadedDemo], attachments: [attached(eth0, { ingress: 10 } as never), attached(eth1)] }));
  assert.deepEqual(addresses(plan), ["update attachment.eth0"]);
});

test("interface selectors: include and exclude globs, loopback never", () => {
  const selected = { ...demo, policy: { ...demo.policy, interfaces: { include: ["eth*"], exclude: ["eth1"] } } };
  assert.deepEqual(addresses(makePlan([selected], live())), ["create program.demo", "create attachment.eth0"]);
  assert.equal(selects({ include: ["veth?"], exclude: [] }, "veth1"), true);
  assert.equal(selects({ include: ["veth?"], exclude: [] }, "veth12"), false);
});

test("two policies selecting one link is an error naming both", () => {
  const other = { policy: { ...testPolicy("other", []), interfaces: { include: ["eth0"], exclude: [] } }, contentHash: "c".repeat(64) };
  assert.throws(() => makePlan([demo, other], live()), /interface eth0 .* more than one policy: demo, other/);
});
