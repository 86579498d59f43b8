/**
 * Reasons: every change a plan makes carries a stable code from the
 * model's list (src/model/reasons.ts) beside its text, and the schemas list
 * the same codes. Decisions read the code, never the text.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { DRIFT_CODES, REASON_CODES, type DriftCode } from "../../src/model/reasons.js";
import type { Change, ChangeType, Drift } from "../../src/plan/model.js";
import { composeDesired, executePlan, makePlan, namedCgroups, type DesiredPolicy } from "../../src/reconcile/index.js";
import { findDrift } from "../../src/reconcile/drift.js";
import { desiredOutbound, desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
const demo = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }]);
const grown = desiredPolicy("demo", [
  { originalPort: 8000, port: 9000, strategy: "rewrite" },
  { originalPort: 7000, port: 7100, strategy: "rewrite" },
]);
const off = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite", enabled: false }]);
const other = desiredPolicy("other", [{ originalPort: 53, port: 5353, protocol: "udp" }], {
  include: ["eth1"],
  exclude: [],
});
const outbound = desiredOutbound("out", {
  cgroups: ["app.slice"],
  exempt: { cgroups: ["proxy.slice"] },
  rules: [{ originalPort: 5432, port: 15001 }],
});
const outboundGrown = desiredOutbound("out", {
  cgroups: ["app.slice"],
  exempt: { cgroups: ["proxy.slice"] },
  rules: [
    { originalPort: 5432, port: 15001 },
    { originalPort: 443, port: 15002 },
  ],
});

function fake(): FakeDatapath {
  const datapath = new FakeDatapath();
  datapath.addLink("eth0");
  datapath.addLink("eth1");
  datapath.addCgroup("app.slice");
  datapath.addCgroup("proxy.slice");
  return datapath;
}

async function planOver(datapath: FakeDatapath, desired: DesiredPolicy[]): Promise<Change[]> {
  return makePlan(desired, await datapath.observe({ cgroups: namedCgroups(desired) })).changes;
}

async function applied(desired: DesiredPolicy[]): Promise<FakeDatapath> {
  const datapath = fake();
  await executePlan(makePlan(desired, await datapath.observe({ cgroups: namedCgroups(desired) })), datapath, objects);
  return datapath;
}

/** For each change type, a plan that makes one, and the code that change carries. */
const scenarios: Record<ChangeType, { code: string; plan: () => Promise<Change[]> }> = {
  "program.create": { code: "policy-added", plan: async () => planOver(fake(), [demo]) },
  "program.replace": { code: "policy-changed", plan: async () => planOver(await applied([demo]), [grown]) },
  "program.delete": { code: "policy-removed", plan: async () => planOver(await applied([other]), []) },
  "attachment.create": { code: "link-selected", plan: async () => planOver(fake(), [demo]) },
  "attachment.update": { code: "program-switched", plan: async () => planOver(await applied([demo]), [grown]) },
  "attachment.delete": { code: "link-unselected", plan: async () => planOver(await applied([demo]), []) },
  "rule.update": { code: "rule-toggled", plan: async () => planOver(await applied([demo]), [off]) },
  "qdisc.delete": {
    code: "empty-qdisc",
    plan: async () => {
      const datapath = fake();
      await datapath.addQdisc({ ifindex: 2, name: "eth0" });
      return planOver(datapath, []);
    },
  },
  "registry.update": {
    code: "qdisc-gone",
    plan: async () => {
      const datapath = fake();
      datapath.leaveQdiscRecord({ ifindex: 2, name: "eth0" });
      await datapath.addQdisc({ ifindex: 2, name: "eth0" });
      datapath.removeLink("eth0");
      return planOver(datapath, []);
    },
  },
  "pins.delete": {
    code: "empty-pins",
    plan: async () => {
      const datapath = fake();
      datapath.leaveEmptyPolicyDirectory("old");
      return planOver(datapath, []);
    },
  },
  "cgroup.create": { code: "cgroup-named", plan: async () => planOver(fake(), [outbound]) },
  "cgroup.update": {
    code: "program-switched",
    plan: async () => planOver(await applied([outbound]), [outboundGrown]),
  },
  "cgroup.delete": { code: "cgroup-unnamed", plan: async () => planOver(await applied([outbound]), []) },
  "exemption.update": {
    code: "cgroup-recreated",
    plan: async () => {
      const datapath = await applied([outbound]);
      datapath.removeCgroup("proxy.slice");
      datapath.addCgroup("proxy.slice");
      return planOver(datapath, [outbound]);
    },
  },
};

describe("every change a plan makes carries a code from the model's list", () => {
  for (const [type, { code, plan }] of Object.entries(scenarios)) {
    test(`${type}: ${code}`, async () => {
      const changes = await plan();
      for (const change of changes) {
        assert.ok(REASON_CODES.includes(change.reasonCode), `${change.address}: ${change.reasonCode}`);
        assert.ok(change.reason.length > 0, `${change.address} has a reason in words`);
      }
      const made = changes.find((change) => change.type === type);
      assert.ok(made, `the scenario makes a ${type}: ${changes.map((c) => c.type).join(", ")}`);
      assert.equal(made.reasonCode, code);
    });
  }

  test("causes that differ get codes that differ, the same change type notwithstanding", async () => {
    const composedA = desiredPolicy("a", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }]);
    const composedB = desiredPolicy("b", [{ originalPort: 8001, port: 9001, strategy: "rewrite" }]);
    const both = [composedA, composedB];
    const datapath = fake();
    const observed = await datapath.observe();
    const composed = makePlan(both, observed, await composeDesired(both, [["a", "b"]])).changes;
    assert.equal(composed.find((c) => c.type === "program.create")?.reasonCode, "composition-added");
    datapath.leaveIncompleteVersion(grown.program);
    const repaired = await planOver(datapath, [demo]);
    assert.deepEqual(
      repaired.filter((c) => c.type.startsWith("program.")).map((c) => `${c.type} ${c.reasonCode}`),
      ["program.create interrupted-load", "program.delete interrupted-load"],
    );
  });

  test("the schemas list exactly the model's codes", () => {
    const schema = (name: string) => JSON.parse(readFileSync(`schemas/${name}.schema.json`, "utf8"));
    assert.deepEqual(schema("plan-output").$defs.change.properties.reasonCode.enum, [...REASON_CODES]);
    assert.deepEqual(schema("saved-plan").properties.changes.items.properties.reasonCode.enum, [...REASON_CODES]);
    assert.ok(schema("plan-output").$defs.change.required.includes("reasonCode"));
  });

  test("a drift entry's kind is its code, from the model's list", async () => {
    // Both ways at compile time: every code is a kind, every kind a code.
    const kinds: readonly Drift["kind"][] = DRIFT_CODES;
    const codes = (kind: Drift["kind"]): DriftCode => kind;
    assert.deepEqual(kinds.map(codes), [...DRIFT_CODES]);
    const datapath = fake();
    datapath.leaveIncompleteVersion(demo.program);
    datapath.leaveEmptyPolicyDirectory("old");
    for (const drift of findDrift(await datapath.observe()))
      assert.ok((DRIFT_CODES as readonly string[]).includes(drift.kind), drift.kind);
  });
});
