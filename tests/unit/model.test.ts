/** src/model: the names, keys and encodings every room shares, and the schemas that repeat them. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { endianness } from "node:os";
import { test } from "node:test";
import { formatAddress, parseAddress, type ResourceAddress } from "../../src/model/addresses.js";
import {
  arrayKey,
  exemptCgroupValue,
  MAPS,
  policyMetaValue,
  prefixBytes,
  qdiscRecord,
  ruleStateValue,
} from "../../src/model/bpf-abi.js";
import { hostOrder, hostU32, hostU64 } from "../../src/model/host-order.js";
import {
  AGENT_LOCK_HOLDER,
  FLEET_LOCK_HOLDER,
  isAgentHolder,
  lockRecordText,
  readLockRecord,
} from "../../src/model/lock-holder.js";
import { isNamespaceKey, NAMESPACE_KEY, namespaceKeyOf, NETNS_GLOB, NETNS_NAME } from "../../src/model/namespace.js";
import { isObjectFileName, isPolicyName, objectFileName, POLICY_NAME } from "../../src/model/policy-name.js";
import { outboundSlot, ruleSlots, slotCount, slottedRules } from "../../src/model/rule-slots.js";
import type { Change } from "../../src/plan/model.js";
import { executePlan, makePlan } from "../../src/reconcile/index.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const schema = (name: string) => JSON.parse(readFileSync(new URL(`../../../schemas/${name}`, import.meta.url), "utf8"));

test("the policy schema's name pattern is the model's", () => {
  assert.equal(schema("policy.schema.json").properties.name.pattern, POLICY_NAME.source);
});

test("the saved-plan schema's namespace key pattern is the model's", () => {
  assert.equal(schema("saved-plan.schema.json").properties.namespaceKey.pattern, NAMESPACE_KEY.source);
});

test("the schemas' namespace names and globs are the model's", () => {
  assert.equal(schema("saved-plan.schema.json").properties.namespace.pattern, NETNS_NAME.source);
  const globs = schema("policy.schema.json").properties.namespaces.items;
  const inSchema = (glob: string) =>
    new RegExp(globs.pattern).test(glob) && glob.length >= globs.minLength && glob.length <= globs.maxLength;
  for (const glob of [
    "cni-*",
    "a",
    "?x",
    "web.1_2-3",
    "*",
    "-x",
    ".x",
    "a/b",
    "a b",
    "",
    "x".repeat(255),
    "x".repeat(256),
  ]) {
    assert.equal(NETNS_GLOB.test(glob), inSchema(glob), glob);
  }
});

test("policy names: a C identifier of lower case, digits and _, up to 32 characters", () => {
  for (const name of ["web", "a", "my_policy_2", "a".repeat(32)]) assert.ok(isPolicyName(name), name);
  for (const name of ["", "Web", "2web", "_web", "my-policy", "a".repeat(33), "web/../x", "web\n"])
    assert.ok(!isPolicyName(name), JSON.stringify(name));
  assert.equal(objectFileName("web"), "web.bpf.o");
  assert.ok(isObjectFileName("web.bpf.o"));
  for (const name of ["web.bpf.c", "Web.bpf.o", "../web.bpf.o", ".bpf.o", "web.bpf.o.x"])
    assert.ok(!isObjectFileName(name), name);
});

test("namespace keys: built from an inode and recognised, nothing else accepted", () => {
  assert.equal(namespaceKeyOf(4026532345), "ns4026532345");
  assert.equal(namespaceKeyOf(18446744073709551615n), "ns18446744073709551615");
  assert.ok(isNamespaceKey(namespaceKeyOf(18446744073709551615n)));
  assert.ok(isNamespaceKey(namespaceKeyOf(7)));
  for (const name of ["ns", "ns-1", "ns1a", "NS1", "ns1/..", "x ns1", `ns${"1".repeat(21)}`])
    assert.ok(!isNamespaceKey(name), name);
});

test("addresses: every kind formats and parses back to itself", () => {
  const all: ResourceAddress[] = [
    { kind: "program", policy: "web" },
    { kind: "attachment", link: "eth0.100" },
    { kind: "rule", policy: "web", index: 0 },
    { kind: "rule", policy: "web", index: 12 },
    { kind: "qdisc", link: "veth-a1" },
    { kind: "cgroup", path: "system.slice/app.service" },
    { kind: "exemption", policy: "egress_proxy" },
  ];
  assert.deepEqual(all.map(formatAddress), [
    "program.web",
    "attachment.eth0.100",
    "rule.web[0]",
    "rule.web[12]",
    "qdisc.veth-a1",
    "cgroup.system.slice/app.service",
    "exemption.egress_proxy",
  ]);
  for (const address of all) assert.deepEqual(parseAddress(formatAddress(address)), address);
});

test("addresses: what formatAddress never makes does not parse", () => {
  for (const text of [
    "",
    "program",
    "program.",
    "program.Web",
    "rule.web",
    "rule.web[]",
    "rule.web[01]",
    "rule.web[-1]",
    "rule.Web[0]",
    "attachment.a b",
    "qdisc.a/b",
    "link.eth0",
    "exemption.x-y",
  ]) {
    assert.equal(parseAddress(text), undefined, text);
  }
});

/** The address a change's own fields say it has. */
function addressOf(change: Change): ResourceAddress {
  switch (change.type) {
    case "program.create":
    case "program.replace":
    case "program.delete":
      return { kind: "program", policy: change.program.policy };
    case "attachment.create":
    case "attachment.update":
    case "attachment.delete":
      return { kind: "attachment", link: change.link.name };
    case "qdisc.delete":
      return { kind: "qdisc", link: change.link.name };
    case "registry.update":
      return { kind: "registry" };
    case "pins.delete":
      return { kind: "pins" };
    case "rule.update":
      return { kind: "rule", policy: change.program.policy, index: change.index };
    case "cgroup.create":
    case "cgroup.update":
    case "cgroup.delete":
      return { kind: "cgroup", path: change.cgroup.path };
    case "exemption.update":
      return { kind: "exemption", policy: change.program.policy };
  }
}

test("the addresses of a plan parse to what each change acts on", async () => {
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  fake.addLink("eth1.7");
  const web = desiredPolicy("web", [
    { originalPort: 8000, port: 9000, strategy: "rewrite" },
    { originalPort: 8443, port: 9443 },
  ]);
  const created = makePlan([web], await fake.observe());
  await executePlan(created, fake, { objectFor: () => ({ objectPath: "web.bpf.o", prefixes: [] }) });
  const flipped = desiredPolicy("web", [
    { originalPort: 8000, port: 9000, strategy: "rewrite", enabled: false },
    { originalPort: 8443, port: 9443 },
  ]);
  const changes = [
    ...created.changes,
    ...makePlan([flipped], await fake.observe()).changes,
    ...makePlan([], await fake.observe()).changes,
  ];
  assert.deepEqual(
    new Set(changes.map((change) => change.type)),
    new Set(["program.create", "attachment.create", "rule.update", "program.delete", "attachment.delete"]),
  );
  for (const change of changes) assert.deepEqual(parseAddress(change.address), addressOf(change), change.address);
});

test("rule slots: interceptors first, then outbound rules", () => {
  const policy = { rules: ["i0", "i1"], outbound: { rules: ["o0", "o1", "o2"] } };
  assert.deepEqual(
    ruleSlots(policy).map(({ slot, kind }) => `${slot}:${kind}`),
    ["0:interceptor", "1:interceptor", "2:outbound", "3:outbound", "4:outbound"],
  );
  assert.deepEqual(slottedRules(policy), ["i0", "i1", "o0", "o1", "o2"]);
  assert.equal(slotCount(policy), 5);
  assert.equal(slotCount({ rules: [] }), 0);
  assert.equal(outboundSlot(2, 1), 3);
});

test("host byte order: as this machine's integers are laid out", () => {
  const little = endianness() === "LE";
  assert.deepEqual(hostU32(0x01020304), little ? [4, 3, 2, 1] : [1, 2, 3, 4]);
  assert.deepEqual(hostOrder(0x0102, 2), little ? [2, 1] : [1, 2]);
  assert.deepEqual(hostOrder(0xff, 1), [0xff]);
  assert.deepEqual(hostU64(2n ** 40n + 1n), little ? [1, 0, 0, 0, 0, 1, 0, 0] : [0, 0, 1, 0, 0, 0, 0, 1]);
  assert.deepEqual(Buffer.from(hostU32(0xdeadbeef)).readUInt32LE(0) === 0xdeadbeef, little);
});

test("the encoders fill their layouts exactly", () => {
  assert.equal(arrayKey(3).length, MAPS.rule_state.key.size);
  assert.equal(ruleStateValue(true).length, MAPS.rule_state.value.size);
  assert.deepEqual(ruleStateValue(true), hostU32(1));
  assert.deepEqual(ruleStateValue(false), hostU32(0));
  const hash = "ab".repeat(32);
  assert.deepEqual(Buffer.from(policyMetaValue(hash)).toString("latin1"), hash);
  assert.deepEqual(policyMetaValue("abc").slice(3), Array(61).fill(0));
  const exempt = exemptCgroupValue(4242, 3);
  const fields = MAPS.exempt_cgroups.value.fields;
  assert.equal(exempt.length, MAPS.exempt_cgroups.value.size);
  assert.deepEqual(exempt.slice(fields.id.offset, fields.id.offset + fields.id.size), hostU64(4242));
  assert.deepEqual(exempt.slice(fields.level.offset, fields.level.offset + fields.level.size), hostU32(3));
  assert.deepEqual(qdiscRecord(7), { key: hostU32(7), value: hostU32(1) });
  const v4 = prefixBytes({ family: "ipv4", list: 2, prefixLength: 24, address: [198, 18, 0, 0], selected: true });
  assert.equal(v4.key.length, MAPS.prefixes_v4.key.size);
  assert.deepEqual(v4, { key: [...hostU32(56), ...hostU32(2), 198, 18, 0, 0], value: [1] });
  const v6 = prefixBytes({
    family: "ipv6",
    list: 1,
    prefixLength: 8,
    address: [0xfd, ...Array(15).fill(0)],
    selected: false,
  });
  assert.equal(v6.key.length, MAPS.prefixes_v6.key.size);
  assert.deepEqual(v6.value, [0]);
});

test("lock records: written, read back, and an agent recognised however it serves", () => {
  const text = lockRecordText("intercept apply", 4242, new Date("2026-01-02T03:04:05Z"));
  assert.deepEqual(JSON.parse(text), { pid: 4242, holder: "intercept apply", since: "2026-01-02T03:04:05.000Z" });
  assert.deepEqual(readLockRecord(text), { pid: 4242, holder: "intercept apply" });
  const withNamespace = lockRecordText("intercept apply", 4242, new Date(), "pid:[4026531836]");
  assert.equal(readLockRecord(withNamespace)?.pidNamespace, "pid:[4026531836]", "whose pids the record's pid is");
  assert.deepEqual(readLockRecord(JSON.stringify({ pid: "x", holder: "h".repeat(100) })), {
    pid: undefined,
    holder: "h".repeat(64),
  });
  for (const broken of ["", '{"pid": 42', "null", "3"]) assert.equal(readLockRecord(broken), undefined, broken);
  assert.ok(isAgentHolder(AGENT_LOCK_HOLDER));
  assert.ok(isAgentHolder(FLEET_LOCK_HOLDER));
  assert.ok(!isAgentHolder("intercept apply"));
  assert.ok(!isAgentHolder(undefined));
});
