/**
 * tc's attach by rtnetlink in the agent's process (src/kernel/tc.ts over
 * src/kernel/netlink.ts): the requests against the bytes tc 6.1 sends for
 * the same commands (captured on this machine with strace), and the
 * kernel's refusal with its extended ack, as it answered tc. The real
 * kernel's side is in tests/e2e (reconcile, steer, agent).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeAcknowledgement, decodeMessages, encodeLinkRequest } from "../../src/kernel/netlink.js";
import { classidOfSlot, slotOfClassid } from "../../src/model/namespace-slot.js";
import {
  decodeFilter,
  encodeAddClsact,
  encodeDump,
  RTM_GETQDISC,
  RTM_GETTFILTER,
  RTM_NEWQDISC,
  RTM_NEWTFILTER,
  encodeDeleteClsact,
  encodeDeleteFilter,
  encodeReplaceFilter,
  describeStep,
} from "../../src/kernel/tc.js";

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ""), "hex");

test("`tc qdisc add dev v0 clsact`: RTM_NEWQDISC, exclusive, handle ffff:, parent clsact", () => {
  assert.deepEqual(
    encodeAddClsact(0x6b16e2c5, 3),
    hex(`30000000 2400 0506 c5e2166b 00000000
         00000000 03000000 0000ffff f1ffffff 00000000
         0b00 0100 636c7361637400 00`),
  );
});

test("`tc filter replace dev a ingress pref 18755 handle 0x1 bpf da object-pinned …/intercept_ingress`", () => {
  // tc's request (tc.strace), its program descriptor 4, on the link of index 2.
  assert.deepEqual(
    encodeReplaceFilter(9, 2, "ingress", 4, "/sys/fs/bpf/intercept/ns1/v1/progs/intercept_ingress"),
    hex(`60000000 2c00 0504 09000000 00000000
         00000000 02000000 01000000 f2ffffff 00034349
         0800 0100 62706600
         3400 0200
           0800 0600 04000000
           1f00 0700 696e746572636570745f696e67726573733a5b2a66736f626a5d00 00
           0800 0800 01000000`),
  );
  const egress = encodeReplaceFilter(9, 2, "egress", 4, "/x/intercept_egress");
  assert.equal(egress.readUInt32LE(NLMSG_AND_TCMSG_PARENT), 0xfffffff3, "egress: parent ffff:fff3");
});

const NLMSG_AND_TCMSG_PARENT = 16 + 12;

test("`tc filter replace … bpf da object-pinned …/intercept_ingress classid 1:5`: a namespace slot's filter", () => {
  // tc's request (strace), its program descriptor 4, on the link of index 3: TCA_BPF_CLASSID first.
  assert.deepEqual(
    encodeReplaceFilter(9, 3, "ingress", 4, "/sys/fs/bpf/x/progs/intercept_ingress", classidOfSlot(5)),
    hex(`68000000 2c00 0504 09000000 00000000
         00000000 03000000 01000000 f2ffffff 00034349
         0800 0100 62706600
         3c00 0200
           0800 0300 05000100
           0800 0600 04000000
           1f00 0700 696e746572636570745f696e67726573733a5b2a66736f626a5d00 00
           0800 0800 01000000`),
  );
  assert.deepEqual(
    encodeReplaceFilter(9, 3, "ingress", 4, "/x/intercept_ingress", classidOfSlot(0)),
    encodeReplaceFilter(9, 3, "ingress", 4, "/x/intercept_ingress"),
    "the loader's slot: no classid, the request of old",
  );
  assert.equal(classidOfSlot(127), 0x1_007f);
  assert.throws(() => classidOfSlot(128), RangeError, "past the last slot");
});

test("deletions: RTM_DELQDISC of clsact, RTM_DELTFILTER of our slot on any protocol", () => {
  assert.deepEqual(
    encodeDeleteClsact(1, 3),
    hex(`30000000 2500 0500 01000000 00000000
         00000000 03000000 0000ffff f1ffffff 00000000
         0b00 0100 636c7361637400 00`),
  );
  assert.deepEqual(
    encodeDeleteFilter(2, 3, "egress"),
    hex(`2c000000 2d00 0500 02000000 00000000
         00000000 03000000 01000000 f3ffffff 00004349
         0800 0100 62706600`),
  );
});

test("RTM_GETLINK by name, its statistics left out", () => {
  assert.deepEqual(
    encodeLinkRequest(5, "v0"),
    hex(`30000000 1200 0100 05000000 00000000
         00000000 00000000 00000000 00000000
         0700 0300 763000 00
         0800 1d00 08000000`),
  );
});

test("the kernel's refusal, with the request copied whole (tc sets no NETLINK_CAP_ACK): its errno and message", () => {
  // As the kernel answered tc's second `qdisc add dev v0 clsact`.
  const [refusal] = decodeMessages(
    hex(`6c000000 0200 0002 c5e2166b 2e350000
         efffffff 30000000 24000506 c5e2166b
         00000000 00000000 03000000 0000ffff
         f1ffffff 00000000 0b000100 636c7361
         63740000 27000100 4578636c 75736976
         69747920 666c6167 206f6e2c 2063616e
         6e6f7420 6d6f6469 66790000`),
  );
  assert.deepEqual(decodeAcknowledgement(refusal!), { errno: 17, extack: "Exclusivity flag on, cannot modify" });
});

test("a refusal with the request's header only (NETLINK_CAP_ACK), and an ack without a message", () => {
  const message = Buffer.from("Exclusivity flag on, cannot modify\0");
  const attribute = Buffer.alloc(4 + Math.ceil(message.length / 4) * 4);
  attribute.writeUInt16LE(4 + message.length, 0);
  attribute.writeUInt16LE(1, 2);
  message.copy(attribute, 4);
  const capped = Buffer.concat([
    hex("00000000 0200 0003 07000000 00000000 efffffff 30000000 2400 0506 07000000 00000000"),
    attribute,
  ]);
  capped.writeUInt32LE(capped.length, 0);
  const [refusal] = decodeMessages(capped);
  assert.deepEqual(decodeAcknowledgement(refusal!), { errno: 17, extack: "Exclusivity flag on, cannot modify" });
  const [ack] = decodeMessages(
    hex("24000000 0200 0001 07000000 00000000 00000000 30000000 2400 0506 07000000 00000000"),
  );
  assert.deepEqual(decodeAcknowledgement(ack!), { errno: 0 });
});

test("a step names itself as the tc command it replaces", () => {
  assert.equal(describeStep({ op: "clsact", link: "v0" }), "tc qdisc add dev v0 clsact");
  const filters = [
    { hook: "egress" as const, programPin: "/p/intercept_egress" },
    { hook: "ingress" as const, programPin: "/p/intercept_ingress" },
  ];
  assert.equal(describeStep({ op: "filters", link: "v0", filters }), "tc filter replace dev v0 egress,ingress");
});

test("`tc filter show dev va ingress` by dump: the filter, not the priority's own entry; the program by id", () => {
  // The kernel's answer to RTM_GETTFILTER on this machine for a bpf filter at pref 7, handle 1
  // (program id 122377): first the entry of the priority (handle 0, no options), then the filter.
  const dumped = [
    "000000000300000000000000f2ffffff00030700080001006270660008000b0000000000",
    "000000000300000001000000f2ffffff00030700080001006270660008000b00000000003c00020012000700" +
      "70726f673a5b2a66736f626a5d00000008000b0009de01000c000a00bc3a2ab52619ab05080008000100000008000900" +
      "08000000",
  ].map((payload) => ({ type: RTM_NEWTFILTER, flags: 2, seq: 1, payload: hex(payload) }));
  assert.deepEqual(dumped.flatMap(decodeFilter), [{ pref: 7, kind: "bpf", handle: "0x1", programId: 122377 }]);
  assert.deepEqual(decodeFilter({ ...dumped[1]!, type: RTM_NEWQDISC }), [], "not a filter");
  const truncated = { ...dumped[1]!, payload: dumped[1]!.payload.subarray(0, 30) };
  assert.deepEqual(decodeFilter(truncated), [], "an attribute cut short: no options to read");
});

test("a dumped bpf filter's classid (`tc filter show` prints it as flowid 1:5), and the slot it gives", () => {
  // The kernel's answer on this machine for the filter attached above (program id 1157).
  const payload = hex(`00000000 03000000 01000000 f2ffffff 00034349
    08000100 62706600  08000b00 00000000
    50000200
      08000300 05000100
      1f000700 696e746572636570745f696e67726573733a5b2a66736f626a5d00 00
      08000b00 85040000
      0c000a00 f03f3c89 3109830e
      08000800 01000000
      08000900 08000000`);
  const [filter] = decodeFilter({ type: RTM_NEWTFILTER, flags: 2, seq: 1, payload });
  assert.deepEqual(filter, { pref: 18755, kind: "bpf", handle: "0x1", programId: 1157, classid: 0x10005 });
  assert.equal(slotOfClassid(filter!.classid), 5);
  assert.equal(slotOfClassid(undefined), 0, "a filter without classid: the loader's slot");
  assert.equal(slotOfClassid(0x1_00ff), 0, "a minor no slot has: the loader's slot, as the program bounds it");
});

test("filter and qdisc dump requests: every qdisc; the filters of one link's hook", () => {
  assert.deepEqual(
    encodeDump(RTM_GETQDISC, 5, 0, 0),
    hex(`24000000 2600 0103 05000000 00000000
         00000000 00000000 00000000 00000000 00000000`),
  );
  assert.deepEqual(
    encodeDump(RTM_GETTFILTER, 6, 3, 0xfffffff3),
    hex(`24000000 2e00 0103 06000000 00000000
         00000000 03000000 00000000 f3ffffff 00000000`),
  );
});
