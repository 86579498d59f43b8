/**
 * Flow records under BPF_PROG_TEST_RUN: off by default, on as a live
 * switch, and a full ring buffer that drops and counts while the program
 * goes on deciding as before. The program shares a tiny ring buffer made
 * beforehand (one page: 30 records), as a version loaded beside another
 * shares the namespace's (src/datapath/kernel.ts, sharedMaps).
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { execa } from "execa";
import { buildPolicy } from "../../src/toolchain/index.js";
import { compilePolicies } from "../../src/compile/index.js";
import { loadVersion, readVersionCounters } from "../../src/datapath/kernel.js";
import { readFlows } from "../../src/flows/reader.js";
import { decodeRecord, type FlowRecord } from "../../src/flows/record.js";
import { droppedRecords, readSwitches, writeSwitches } from "../../src/flows/switch.js";
import { ensureBpffs, PIN_ROOT, PinLayout } from "../../src/kernel/pins.js";
import { FLOW_EVENT, FLOW_EVENTS, MAPS } from "../../src/model/bpf-abi.js";
import type { VersionRef } from "../../src/model/version.js";
import { testRun } from "../../lab/bpf.js";
import { buildPacket } from "../../lab/packets.js";
import { testPolicy } from "../support/bpf.js";

const TC_ACT_SHOT = 2;
const PAGE = 4096;
/** What one page holds: each record behind its 8-byte ring buffer header. */
const CAPACITY = Math.floor(PAGE / (FLOW_EVENT.size + 8));

const root = path.join(PIN_ROOT, `test-flows-${randomBytes(4).toString("hex")}`);
const pins = new PinLayout("ns0", root);
/** A version directory holding only the tiny shared maps, as an earlier version would. */
const earlier: VersionRef = { policy: "earlier", version: "0".repeat(16) };
let ref: VersionRef;

const syn = buildPacket({ family: "ipv4", protocol: "tcp", sport: 40000, dport: 8000, tcpFlags: ["syn"] });

before(async () => {
  await ensureBpffs();
  await makeTinyMaps();
  const policy = testPolicy("tiny", [{ originalPort: 8000, port: 9000 }]);
  const [compiled] = compilePolicies([policy]);
  const built = await buildPolicy(compiled!);
  ref = { policy: policy.name, version: built.contentHash.slice(0, 16) };
  await loadVersion(pins, {
    ref,
    contentHash: built.contentHash,
    objectPath: built.objectPath,
    hooks: compiled!.hooks,
    enabled: [true],
    prefixes: [],
  });
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** One page of ring buffer and a drop counter, pinned where a version's shared maps are. */
async function makeTinyMaps(): Promise<void> {
  await mkdir(path.join(pins.version(earlier), "maps"), { recursive: true });
  const ring = ["type", "ringbuf", "key", "0", "value", "0", "entries", String(PAGE), "name", "flow_events"];
  await bpftool("map", "create", pins.map(earlier, FLOW_EVENTS.name), ...ring);
  const drops = ["type", "percpu_array", "key", "4", "value", "8", "entries", "1", "name", "flow_event_drop"];
  await bpftool("map", "create", pins.map(earlier, MAPS.flow_event_drops.name), ...drops);
}

async function bpftool(...args: string[]): Promise<string> {
  return (await execa("bpftool", args)).stdout;
}

async function mapId(pin: string): Promise<number> {
  return (JSON.parse(await bpftool("-j", "map", "show", "pinned", pin)) as { id: number }).id;
}

async function proxyDown(): Promise<number> {
  return (await readVersionCounters(pins, ref, 1))[0]!.proxyDown.packets;
}

test("a version loaded beside another shares its ring buffer and drop counter", async () => {
  for (const name of [FLOW_EVENTS.name, MAPS.flow_event_drops.name] as const)
    assert.equal(await mapId(pins.map(ref, name)), await mapId(pins.map(earlier, name)), name);
});

test("records are off by default: a SYN reserves nothing", async () => {
  assert.deepEqual(await readSwitches(pins, ref), [false, false], "the rule's slot and the no-rule slot");
  const result = await testRun(pins.program(ref, "ingress"), syn, 100);
  assert.equal(result.returnValue, TC_ACT_SHOT);
  assert.equal(await droppedRecords(pins, [ref]), 0);
});

test("a full ring buffer drops and counts; the datapath decides as before; records flow again once read", {
  timeout: 60_000,
}, async () => {
  await writeSwitches(pins, ref, true);
  const counted = await proxyDown();
  const burst = 100;
  const result = await testRun(pins.program(ref, "ingress"), syn, burst);
  assert.equal(result.returnValue, TC_ACT_SHOT, "the verdict does not depend on the buffer");
  assert.equal(await proxyDown(), counted + burst, "every SYN counted");
  const dropped = await droppedRecords(pins, [ref]);
  const kept = burst - dropped;
  assert.ok(kept > 0 && kept <= CAPACITY, `a page holds at most ${CAPACITY} records; ${kept} kept`);

  const stream = await readFlows(pins.map(ref, FLOW_EVENTS.name));
  const read: FlowRecord[] = [];
  try {
    await stream.ready;
    for await (const batch of stream.batches) {
      read.push(...batch.map(decodeRecord));
      if (read.length === kept) await testRun(pins.program(ref, "ingress"), syn, 1);
      if (read.length === kept + 1) break;
    }
  } finally {
    await stream.stop();
  }
  assert.equal(await droppedRecords(pins, [ref]), dropped, "the one after the drain found room");
  const [first] = read;
  assert.equal(first!.verdict, "proxy-down");
  assert.equal(first!.reason, "dropped");
  assert.equal(first!.version, ref.version);
  assert.equal(first!.slot, 0);
  assert.deepEqual(first!.destination, { address: "198.18.0.1", port: 8000 });
  assert.deepEqual(first!.target, { address: "198.18.0.1", port: 9000 });
  assert.ok(read.every((record) => record.monotonicNs >= first!.monotonicNs));
});
