/**
 * One loaded program in two network namespaces, told apart by namespace
 * slot (src/model/namespace-slot.ts): the same pinned ingress program is
 * attached on a link in each, its filter carrying slot 3 in one and slot 5
 * in the other as its classid, and real connections in both directions
 * are steered, real datagrams rewritten. Each namespace's packets count in its own slot only,
 * the loader's slot 0 in none, and each flow record names its slot.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { execa, type ResultPromise } from "execa";
import { compilePolicies } from "../../src/compile/index.js";
import { loadVersion, readVersionCounters } from "../../src/datapath/kernel.js";
import { readFlows } from "../../src/flows/reader.js";
import { decodeRecord, type FlowRecord } from "../../src/flows/record.js";
import { writeSwitches } from "../../src/flows/switch.js";
import { ensureBpffs, PIN_ROOT, PinLayout } from "../../src/kernel/pins.js";
import { addClsact, listLinkStates, replaceFilters } from "../../src/kernel/tc.js";
import { FLOW_EVENTS } from "../../src/model/bpf-abi.js";
import { classidOfSlot, LOADER_SLOT } from "../../src/model/namespace-slot.js";
import type { VersionRef } from "../../src/model/version.js";
import { buildPolicy } from "../../src/toolchain/index.js";
import { testPolicy } from "../support/bpf.js";

const ORIGINAL_PORT = 8000;
const PROXY_PORT = 9000;
/** A rewrite rule's ports, for datagrams nothing needs to answer. */
const DATAGRAM_PORT = 7000;
const REWRITTEN_PORT = 7001;

/** The two ends: a namespace each, one link of a veth pair, an address, and the slot its filter carries. */
const id = `hs${randomBytes(3).toString("hex")}`;
const ENDS = {
  a: { netns: `${id}-a`, link: `${id}a`, address: "198.18.7.1", slot: 3 },
  b: { netns: `${id}-b`, link: `${id}b`, address: "198.18.7.2", slot: 5 },
} as const;
/** Connections each end opens to the other's original port. */
const CONNECTIONS = { a: 2, b: 3 } as const;
/** Datagrams each end sends to the other's DATAGRAM_PORT. */
const DATAGRAMS = { a: 4, b: 1 } as const;
/** The program's rule slots (its RULE_COUNT): the stride of a namespace slot's counters. */
const RULES = 2;

const root = path.join(PIN_ROOT, `test-${id}`);
const pins = new PinLayout("ns0", root);
const servers: ResultPromise[] = [];
let ref: VersionRef;

before(async () => {
  await ensureBpffs();
  const policy = testPolicy("slots", [
    { originalPort: ORIGINAL_PORT, port: PROXY_PORT, strategy: "steer" },
    { originalPort: DATAGRAM_PORT, port: REWRITTEN_PORT, protocol: "udp" },
  ]);
  const [compiled] = compilePolicies([policy]);
  const built = await buildPolicy(compiled!);
  ref = { policy: policy.name, version: built.contentHash.slice(0, 16) };
  await loadVersion(pins, {
    ref,
    contentHash: built.contentHash,
    objectPath: built.objectPath,
    hooks: compiled!.hooks,
    enabled: [true, true],
    prefixes: [],
  });
  await writeSwitches(pins, ref, true);
  await ip("netns", "add", ENDS.a.netns);
  await ip("netns", "add", ENDS.b.netns);
  await ip(
    "link",
    "add",
    ENDS.a.link,
    "netns",
    ENDS.a.netns,
    "type",
    "veth",
    "peer",
    "name",
    ENDS.b.link,
    "netns",
    ENDS.b.netns,
  );
  for (const end of Object.values(ENDS)) {
    await ip("-n", end.netns, "link", "set", "lo", "up");
    await ip("-n", end.netns, "addr", "add", `${end.address}/24`, "dev", end.link);
    await ip("-n", end.netns, "link", "set", end.link, "up");
    const netns = { name: end.netns };
    await addClsact(netns, end.link);
    await replaceFilters(netns, end.link, [
      { hook: "ingress", programPin: pins.program(ref, "ingress"), namespaceSlot: end.slot },
    ]);
    await startProxy(end.netns);
  }
});

after(async () => {
  for (const server of servers) server.kill("SIGKILL");
  await Promise.allSettled(servers);
  for (const end of Object.values(ENDS)) await execa("ip", ["netns", "del", end.netns], { reject: false });
  await rm(root, { recursive: true, force: true });
});

async function ip(...args: string[]): Promise<void> {
  await execa("ip", args);
}

/** The proxy's listener on PROXY_PORT in @netns (lab/echo.js); resolves once it listens. */
async function startProxy(netns: string): Promise<void> {
  const server = execa(
    "nsenter",
    [`--net=/var/run/netns/${netns}`, "node", "dist/lab/echo.js", "serve", "--tag", netns, String(PROXY_PORT)],
    {
      reject: false,
      buffer: false,
    },
  );
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.stdout?.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("ready")) resolve();
    });
    void server.then(() => reject(new Error(`the proxy in ${netns} ended before it listened`)));
  });
}

/** @count connections from @from's namespace to the other end's original port, each answered by its proxy. */
async function connect(from: keyof typeof ENDS, count: number): Promise<void> {
  const to = from === "a" ? ENDS.b : ENDS.a;
  const probe = await execa("nsenter", [
    `--net=/var/run/netns/${ENDS[from].netns}`,
    "node",
    "dist/lab/echo.js",
    "probe",
    to.address,
    String(ORIGINAL_PORT),
    String(count),
  ]);
  const replies = JSON.parse(probe.stdout) as { tag?: string; localPort?: number; error?: string }[];
  assert.deepEqual(
    replies.map((reply) => reply.tag ?? reply.error),
    Array.from({ length: count }, () => to.netns),
    "every connection steered to the proxy of the namespace it went to",
  );
}

/** @count datagrams from @from's namespace to the other end's DATAGRAM_PORT, one after another. */
async function send(from: keyof typeof ENDS, count: number): Promise<void> {
  const to = from === "a" ? ENDS.b : ENDS.a;
  const script = `const socket = require("node:dgram").createSocket("udp4");
    let sent = 0;
    const next = () => (sent++ < ${count} ? socket.send("x", ${DATAGRAM_PORT}, "${to.address}", next) : socket.close());
    next();`;
  await execa("nsenter", [`--net=/var/run/netns/${ENDS[from].netns}`, "node", "-e", script]);
}

/** The steered SYNs and rewritten datagrams counted in @namespaceSlot. */
async function counted(namespaceSlot: number): Promise<{ steered: number; rewritten: number }> {
  const [steer, rewrite] = await readVersionCounters(pins, ref, RULES, namespaceSlot);
  return { steered: steer!.steered.packets, rewritten: rewrite!.rewrittenIngress.packets };
}

/** The next @count flow records of the version's ring buffer. */
async function records(count: number): Promise<FlowRecord[]> {
  const stream = await readFlows(pins.map(ref, FLOW_EVENTS.name));
  const read: FlowRecord[] = [];
  try {
    await stream.ready;
    for await (const batch of stream.batches) {
      read.push(...batch.map(decodeRecord));
      if (read.length >= count) break;
    }
  } finally {
    await stream.stop();
  }
  return read;
}

test("each filter carries its namespace's slot as its classid", async () => {
  for (const end of Object.values(ENDS)) {
    const state = (await listLinkStates({ name: end.netns }, [end.link])).get(end.link)!;
    assert.deepEqual(
      state.filters.ingress.map((filter) => filter.classid),
      [classidOfSlot(end.slot)],
    );
  }
});

test("one program in two namespaces counts each namespace's packets in its own slot", { timeout: 60_000 }, async () => {
  await connect("a", CONNECTIONS.a);
  await connect("b", CONNECTIONS.b);
  await send("a", DATAGRAMS.a);
  await send("b", DATAGRAMS.b);
  // Each end's packets arrive at the other's ingress, and count in the slot there.
  assert.deepEqual(await counted(ENDS.b.slot), { steered: CONNECTIONS.a, rewritten: DATAGRAMS.a }, "b's slot");
  assert.deepEqual(await counted(ENDS.a.slot), { steered: CONNECTIONS.b, rewritten: DATAGRAMS.b }, "a's slot");
  assert.deepEqual(await counted(LOADER_SLOT), { steered: 0, rewritten: 0 }, "the loader's slot: no filter of it");

  const seen = await records(CONNECTIONS.a + CONNECTIONS.b);
  assert.ok(seen.every((record) => record.verdict === "steered"));
  const slotOf = (address: string) => Object.values(ENDS).find((end) => end.address === address)!.slot;
  for (const record of seen)
    assert.equal(record.namespaceSlot, slotOf(record.destination!.address), "the slot where the SYN arrived");
  assert.deepEqual(
    [ENDS.a.slot, ENDS.b.slot].map((slot) => seen.filter((record) => record.namespaceSlot === slot).length),
    [CONNECTIONS.b, CONNECTIONS.a],
  );
});
