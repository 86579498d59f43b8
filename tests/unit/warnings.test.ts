/**
 * Plan and status warn about proxies from the namespace's listeners (over
 * the fake datapath): a steer rule that drops with nothing listening, an
 * outbound rule with no proxy, and an outbound proxy outside every
 * captured and exempt cgroup. Warnings are data: they change no decision.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseListeners } from "../../src/kernel/sockets.js";
import { planJson, renderPlan } from "../../src/plan/index.js";
import { executePlan, planRun } from "../../src/reconcile/index.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { desiredOutbound, desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
const steer = desiredPolicy("demo", [
  { originalPort: 8000, port: 9000, strategy: "steer" },
  { originalPorts: [8443, "9443-9444"], port: 9001, strategy: "steer", onProxyDown: "pass" },
]);
const out = desiredOutbound("out", {
  cgroups: ["app.slice"],
  exempt: { cgroups: ["proxy.slice"] },
  rules: [{ originalPort: 5432, port: 15001 }],
});

function namespace(): FakeDatapath {
  const fake = new FakeDatapath({ name: "blue" });
  fake.addLink("eth0");
  fake.addLink("eth1");
  for (const cgroup of ["app.slice", "proxy.slice", "proxy.slice/envoy", "other.slice"]) fake.addCgroup(cgroup);
  return fake;
}

describe("a steer rule that drops, with nothing listening on its port", () => {
  test("plan warns, in text and JSON, on the links it would run on; the changes are the same", async () => {
    const fake = namespace();
    const { plan } = await planRun([steer], fake, { warnings: true });
    const text =
      'policy demo rule 0 steers port 8000 to tcp port 9000, where nothing listens in network namespace "blue": applying now would drop new connections to port 8000 on eth0, eth1 (onProxyDown: drop); start the proxy first, or set onProxyDown: pass';
    assert.deepEqual(plan.warnings, [
      {
        kind: "proxy-not-listening",
        policy: "demo",
        rule: 0,
        port: 9000,
        originalPorts: "8000",
        links: ["eth0", "eth1"],
      },
    ]);
    assert.ok(
      renderPlan(plan, { colour: false }).endsWith(`Plan: 3 to add, 0 to change, 0 to destroy.\n\nWarning: ${text}\n`),
    );
    assert.deepEqual(planJson(plan).warnings, [{ ...plan.warnings[0]!, message: text }]);
    assert.deepEqual(plan.changes, (await planRun([steer], fake)).plan.changes, "warnings decide nothing");
    assert.deepEqual(
      (await planRun([steer], fake)).plan.warnings,
      [],
      "without asking (the agent), no listeners are read",
    );
  });

  test("once the proxy listens, or with no change left to make, it says so only while true", async () => {
    const fake = namespace();
    await executePlan((await planRun([steer], fake)).plan, fake, objects);
    const applied = (await planRun([steer], fake, { warnings: true })).plan;
    assert.deepEqual(applied.changes, [], "no changes: --detailed-exitcode still says 0");
    assert.equal(applied.warnings.length, 1, "the proxy is still down");
    assert.match(
      renderPlan(applied, { colour: false }),
      /^No changes\. The kernel in network namespace "blue" matches the policies\.\n\nWarning: policy demo rule 0 steers/,
    );
    fake.listen(9000, "proxy.slice");
    assert.deepEqual((await planRun([steer], fake, { warnings: true })).plan.warnings, []);
  });

  test("a disabled rule, onProxyDown: pass, and a policy on no link warn of nothing", async () => {
    const fake = namespace();
    const quiet = [
      desiredPolicy("off", [{ originalPort: 8000, port: 9000, strategy: "steer", enabled: false }]),
      desiredPolicy("passing", [{ originalPort: 8001, port: 9001, strategy: "steer", onProxyDown: "pass" }], {
        include: ["eth0"],
        exclude: [],
      }),
      desiredPolicy("nowhere", [{ originalPort: 8002, port: 9002, strategy: "steer" }], {
        include: ["eth9"],
        exclude: [],
      }),
    ];
    assert.deepEqual((await planRun(quiet.slice(0, 1), fake, { warnings: true })).plan.warnings, []);
    // "nowhere" selects no link here: warned about as a selector (tests/unit/compose.test.ts), not as a proxy.
    const kinds = (await planRun(quiet.slice(1), fake, { warnings: true })).plan.warnings.map((w) => w.kind);
    assert.deepEqual(kinds, ["interfaces-match-nothing"]);
  });
});

describe("outbound rules", () => {
  test("no proxy listening: plan warns that connections would be refused", async () => {
    const { plan } = await planRun([out], namespace(), { warnings: true });
    assert.deepEqual(
      plan.warnings.map((warning) => planJson({ ...plan, warnings: [warning] }).warnings[0]!.message),
      [
        'policy out outbound rule 0 sends connections to port 5432 to tcp port 15001, where nothing listens in network namespace "blue": applying now would refuse new connections to port 5432 from app.slice; start the proxy first',
      ],
    );
  });

  test("a proxy outside every captured and exempt cgroup: plan and status warn of ENOENT; inside one (or below it), nothing", async () => {
    const fake = namespace();
    fake.listen(15001, "other.slice");
    fake.listen(15001, "");
    const text =
      "policy out outbound rule 0: tcp port 15001 is listened on in cgroup /, other.slice, outside every captured and exempt cgroup: its SO_ORIGINAL_DST queries will fail with ENOENT; run the proxy in a cgroup of exempt.cgroups";
    const { plan } = await planRun([out], fake, { warnings: true });
    assert.deepEqual(
      planJson(plan).warnings.map((warning) => warning.message),
      [text],
    );
    await executePlan(plan, fake, objects);
    const status = await inspect(fake, [out]);
    assert.deepEqual(status.warnings, [
      { kind: "outbound-proxy-uncaptured", policy: "out", rule: 0, port: 15001, listenerCgroups: ["", "other.slice"] },
    ]);
    for (const served of ["proxy.slice/envoy", "app.slice"]) {
      const inside = namespace();
      inside.listen(15001, served);
      assert.deepEqual((await planRun([out], inside, { warnings: true })).plan.warnings, [], served);
      assert.deepEqual((await inspect(inside, [out])).warnings, [], served);
    }
    const unknown = namespace();
    unknown.listen(15001, undefined); // ss did not say
    assert.deepEqual((await planRun([out], unknown, { warnings: true })).plan.warnings, []);
  });
});

test("listeners from `ss -H -l -t -n -e`, with their cgroups", () => {
  const output = [
    "LISTEN 0      128          0.0.0.0:9000       0.0.0.0:* ino:93984 sk:1276 cgroup:/clk6733.slice <->",
    "LISTEN 0      4096            [::]:15001         [::]:* ino:1088 sk:570 cgroup:/ v6only:1 <->",
    "LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:* uid:101 ino:20 sk:5 cgroup:/system.slice/systemd-resolved.service <->",
    "tcp   LISTEN 0 128 *:8080 *:* ino:1 sk:2 <->",
    "garbage",
  ].join("\n");
  assert.deepEqual(parseListeners(output), [
    { protocol: "tcp", address: "0.0.0.0", port: 9000, cgroup: "clk6733.slice" },
    { protocol: "tcp", address: "[::]", port: 15001, cgroup: "" },
    { protocol: "tcp", address: "127.0.0.53%lo", port: 53, cgroup: "system.slice/systemd-resolved.service" },
    { protocol: "tcp", address: "*", port: 8080, cgroup: undefined },
  ]);
});
