/**
 * Flow records in userspace, without a kernel: a record decoded from bytes
 * laid out by hand as events.h declares them; the one place a slot becomes
 * a rule (policy, label, file:line, no rule, a version gone); the line and
 * JSON watch print (the JSON against schemas/flow-output.schema.json); and
 * watch's filters.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { selected } from "../../src/commands/watch.js";
import { decodeRecord, type FlowRecord } from "../../src/flows/record.js";
import { RuleDirectory } from "../../src/flows/rules.js";
import { NamespaceSlots } from "../../src/flows/session.js";
import { flowJson, flowLine, isoTime, viewRecord, type FlowContext } from "../../src/flows/view.js";
import { controlFrame, FRAME_KINDS, READY, RecordBatches, recordFrames } from "../../src/flows/frames.js";
import { PinLayout } from "../../src/kernel/pins.js";
import { outputHeader } from "../../src/model/output-format.js";
import { compilePolicies } from "../../src/compile/index.js";
import { validPolicies, type DesiredPolicy } from "../../src/reconcile/index.js";
import type { LoadedPolicy } from "../../src/load/index.js";

const VERSION = "0123456789abcdef";

/** struct flow_event, byte by byte as templates/bpf/lib/events.h lays it out (little-endian host). */
function recordBytes(fields: {
  verdict: number;
  reason: number;
  rule: number;
  family?: 4 | 6;
  source?: number[];
  destination?: number[];
  ports?: [number, number, number];
  pid?: number;
  comm?: string;
  ifindex?: number;
  namespaceSlot?: number;
}): Buffer {
  const bytes = Buffer.alloc(128);
  bytes.writeBigUInt64LE(1_000_000_000n, 0); // time_ns
  bytes.writeBigUInt64LE(4242n, 8); // cgroup_id
  bytes.write(VERSION, 16, "latin1");
  const mapped = (v4: number[]) => [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4];
  Buffer.from(fields.source ?? mapped([198, 18, 0, 2])).copy(bytes, 32);
  Buffer.from(fields.destination ?? mapped([198, 18, 0, 1])).copy(bytes, 48);
  Buffer.from(fields.destination ?? mapped([198, 18, 0, 1])).copy(bytes, 64);
  const [sport, dport, tport] = fields.ports ?? [40000, 8000, 9000];
  bytes.writeUInt16BE(sport, 80);
  bytes.writeUInt16BE(dport, 82);
  bytes.writeUInt16BE(tport, 84);
  bytes[86] = fields.family ?? 4;
  bytes[87] = 6; // IPPROTO_TCP
  bytes[88] = fields.verdict;
  bytes[89] = fields.reason;
  bytes.writeUInt32LE(fields.rule, 92);
  bytes.writeUInt32LE(fields.ifindex ?? 2, 96);
  bytes.writeUInt32LE(fields.pid ?? 0, 100);
  bytes.writeUInt32LE(1000, 104); // uid
  if (fields.comm) bytes.write(fields.comm, 108, "latin1");
  bytes.writeUInt32LE(fields.namespaceSlot ?? 0, 124);
  return bytes;
}

let scratch: string;
let pins: PinLayout;
let directory: RuleDirectory;
let policyFile: string;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-flows-unit-"));
  policyFile = path.join(scratch, "web.yaml");
  await writeFile(
    policyFile,
    [
      "interceptors:",
      "  - { originalPort: 8000, port: 9000 }",
      '  - originalPorts: ["8001-8080"]',
      "    exceptPorts: [8042]",
      "    port: 9100",
      "outbound:",
      '  cgroups: ["app"]',
      "  exempt: { uids: [1337] }",
      "  rules:",
      "    - { originalPort: 443, port: 15001 }",
      "",
    ].join("\n"),
  );
  const { loaded, policies } = await validPolicies([policyFile]);
  const [compiled] = compilePolicies(policies);
  const desired: DesiredPolicy = {
    definition: loaded[0]!.value,
    policy: policies[0]!,
    compiled: compiled!,
    contentHash: `${VERSION}${"0".repeat(48)}`,
    program: { policy: "web", version: VERSION },
    hooks: compiled!.hooks,
    cgroupHooks: compiled!.cgroupHooks,
    identify: async () => `${VERSION}${"0".repeat(48)}`,
  };
  pins = new PinLayout("ns4026531840", path.join(scratch, "bpf"));
  await mkdir(pins.version({ policy: "web", version: VERSION }), { recursive: true });
  await mkdir(pins.version({ policy: "other", version: "fedcba9876543210" }), { recursive: true });
  directory = await RuleDirectory.read(pins, [desired], loaded as LoadedPolicy[]);
});

after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

test("a record decodes field by field: verdict, reason, slot, namespace slot, addresses, ports, link", () => {
  const record = decodeRecord(recordBytes({ verdict: 2, reason: 1, rule: 1, namespaceSlot: 5 }));
  assert.deepEqual(record, {
    monotonicNs: 1_000_000_000n,
    version: VERSION,
    slot: 1,
    namespaceSlot: 5,
    verdict: "proxy-down",
    reason: "dropped",
    family: "ipv4",
    protocol: "tcp",
    source: { address: "198.18.0.2", port: 40000 },
    destination: { address: "198.18.0.1", port: 8000 },
    target: { address: "198.18.0.1", port: 9000 },
    ifindex: 2,
    task: null,
  } satisfies FlowRecord);
});

test("an outbound record carries its task; IPv6 addresses are printed as RFC 5952 writes them", () => {
  const v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
  const record = decodeRecord(
    recordBytes({ verdict: 4, reason: 0, rule: 2, family: 6, destination: v6, pid: 77, comm: "curl", ifindex: 0 }),
  );
  assert.equal(record.verdict, "redirected");
  assert.deepEqual(record.destination, { address: "fd00::2", port: 8000 });
  assert.deepEqual(record.task, { pid: 77, uid: 1000, command: "curl", cgroupId: "4242" });
  assert.equal(record.ifindex, null);
  assert.throws(() => decodeRecord(Buffer.alloc(64)), /64 bytes, not 128/);
});

test("a slot resolves to its policy, rule label, file:line and summary; interceptors first, outbound after", () => {
  assert.deepEqual(directory.resolve(VERSION, 0), {
    policy: "web",
    slot: 0,
    label: "web[0]",
    location: `${policyFile}:2`,
    summary: directory.resolve(VERSION, 0).summary,
  });
  assert.match(directory.resolve(VERSION, 0).summary ?? "", /8000/);
  assert.equal(directory.resolve(VERSION, 1).location, `${policyFile}:3`);
  assert.match(directory.resolve(VERSION, 1).summary ?? "", /8042/, "the except is in the summary");
  const outbound = directory.resolve(VERSION, 2);
  assert.equal(outbound.label, "web[2]");
  assert.equal(outbound.location, `${policyFile}:10`);
  assert.match(outbound.summary ?? "", /^outbound tcp any destination port 443 -> local 15001$/);
  assert.equal(directory.slots(VERSION), 3);
});

test("without its policy a version's slots are labelled by index; an unknown version by its name", () => {
  assert.deepEqual(directory.resolve("fedcba9876543210", 4), {
    policy: "other",
    slot: 4,
    label: "other[4]",
    location: null,
    summary: null,
  });
  assert.equal(directory.resolve("ffffffffffffffff", 0).policy, null);
  assert.equal(directory.resolve("ffffffffffffffff", 0).label, "version ffffffffffffffff[0]");
});

function context(): FlowContext {
  return { namespace: "edge", links: new Map([[2, "eth0"]]), rules: directory };
}

const clock = { monotonicNs: 3_000_000_000n, epochMs: Date.parse("2026-12-07T00:00:10.000Z") };

test("a view: wall-clock time, link name, the rule; the slot after the last is a record of no rule", () => {
  const view = viewRecord(decodeRecord(recordBytes({ verdict: 1, reason: 0, rule: 0 })), context(), clock);
  assert.equal(view.time, "2026-12-07T00:00:08.000Z", "two seconds before the clock's now");
  assert.equal(view.link, "eth0");
  assert.equal(view.rule, "web[0]");
  assert.equal(view.slot, 0);
  const none = viewRecord(decodeRecord(recordBytes({ verdict: 6, reason: 8, rule: 3 })), context(), clock);
  assert.equal(none.slot, null);
  assert.equal(none.rule, "web");
  assert.equal(none.verdict, "original-dst");
  assert.equal(none.reason, "not-found");
});

test("the line shows verdict (reason), rule, the path and the rule's file:line", () => {
  const view = viewRecord(decodeRecord(recordBytes({ verdict: 2, reason: 2, rule: 1 })), context(), clock);
  const line = flowLine(view);
  assert.match(
    line,
    /^00:00:08\.000 {2}edge\/eth0 +proxy-down \(passed\) +web\[1\] +tcp 198\.18\.0\.2:40000 -> 198\.18\.0\.1:8000 => 198\.18\.0\.1:9000 /,
  );
  assert.ok(line.endsWith(`${policyFile}:3`), line);
});

test("watch --json lines match schemas/flow-output.schema.json", async () => {
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  for (const name of ["validate-output", "flow-output"])
    ajv.addSchema(JSON.parse(await readFile(`schemas/${name}.schema.json`, "utf8")));
  const validate = ajv.getSchema("urn:intercept:flow-output")!;
  for (const bytes of [
    recordBytes({ verdict: 1, reason: 3, rule: 0 }),
    recordBytes({ verdict: 5, reason: 6, rule: 2, pid: 9, comm: "proxy", ifindex: 0 }),
    recordBytes({ verdict: 6, reason: 8, rule: 3 }),
  ]) {
    const view = viewRecord(decodeRecord(bytes), context(), clock);
    const line = flowJson(view);
    assert.equal(line, JSON.stringify({ ...outputHeader("flow"), ...view }), "the header, then the view's fields");
    assert.ok(validate(JSON.parse(line)), ajv.errorsText(validate.errors));
  }
  assert.ok(!validate({ ...outputHeader("flow"), verdict: "maybe" }), "a wrong document fails");
});

test("watch --json escapes what a user named: a namespace, a link and a command with quotes and backslashes", () => {
  const named: FlowContext = { ...context(), namespace: 'edge "a"\\b', links: new Map([[2, "eth\u0001"]]) };
  const bytes = recordBytes({ verdict: 4, reason: 0, rule: 2, pid: 9, comm: 'pro"xy\\' });
  const view = viewRecord(decodeRecord(bytes), named, clock);
  assert.equal(view.task?.command, 'pro"xy\\');
  const line = flowJson(view);
  assert.equal(line, JSON.stringify({ ...outputHeader("flow"), ...view }));
  assert.deepEqual(JSON.parse(line), { ...outputHeader("flow"), ...view });
});

test("a record's wall-clock time reads as Date's toISOString, across seconds, milliseconds and fractions", () => {
  const base = Date.parse("2026-12-07T10:15:41.000Z");
  const times = [0, 0.4, 1, 9, 10, 99, 100, 999, 999.9, 1000, 1000.5, 61_001, -1, -999.5, 86_400_000];
  for (const offset of times) {
    const epochMs = base + offset;
    assert.equal(isoTime(epochMs), new Date(epochMs).toISOString(), `${offset} ms after`);
  }
  assert.equal(isoTime(-1), new Date(-1).toISOString(), "before 1970");
  assert.equal(isoTime(Date.parse("+010000-01-01T00:00:00Z")), "+010000-01-01T00:00:00.000Z");
});

test("watch's filters: policy, verdict, and a port asked for or steered to", () => {
  const view = viewRecord(decodeRecord(recordBytes({ verdict: 1, reason: 0, rule: 0 })), context(), clock);
  const none = { policies: [], verdicts: [] };
  assert.ok(selected(view, none));
  assert.ok(selected(view, { ...none, policies: ["web"] }));
  assert.ok(!selected(view, { ...none, policies: ["other"] }));
  assert.ok(selected(view, { ...none, verdicts: ["steered"] }));
  assert.ok(!selected(view, { ...none, verdicts: ["proxy-down"] }));
  assert.ok(selected(view, { ...none, port: 8000 }));
  assert.ok(selected(view, { ...none, port: 9000 }));
  assert.ok(!selected(view, { ...none, port: 8001 }));
});

test("flow_reader.c and frames.ts agree on the frames: kinds, header, the ready word", async () => {
  const source = await readFile("templates/observe/flow_reader.c", "utf8");
  for (const [name, value] of Object.entries(FRAME_KINDS))
    assert.match(source, new RegExp(`\\b${name}\\s*=\\s*${value},`), name);
  assert.match(source, /struct frame_header \{\s*uint16_t kind;[^}]*uint16_t size;\s*\}/);
  assert.match(source, new RegExp(`#define READY_WORD "${READY}"`));
});

test("the reader's frame protocol: records in order, a batch per chunk, whatever the chunks cut; control words said", async () => {
  const records = Array.from({ length: 50 }, (_, i) => recordBytes({ verdict: 1, reason: 0, rule: i }));
  const bytes = Buffer.concat([
    controlFrame("ready"),
    recordFrames(records.slice(0, 20)),
    recordFrames(records.slice(20)),
    controlFrame("overrun"),
  ]);
  assert.equal(bytes.length, 4 + 5 + 50 * (4 + 128) + 4 + 7, "a 4-byte header a frame");
  for (const cut of [1, 3, 7, 132, 1000, bytes.length]) {
    const frames = new RecordBatches();
    const said: string[] = [];
    const batches: number[] = [];
    frames.on("control", (word: string) => said.push(`${word}@${batches.reduce((sum, n) => sum + n, 0)}`));
    const read: Buffer[] = [];
    const reading = (async () => {
      for await (const batch of frames) {
        batches.push((batch as Buffer[]).length);
        read.push(...(batch as Buffer[]));
      }
    })();
    for (let at = 0; at < bytes.length; at += cut) frames.write(bytes.subarray(at, at + cut));
    frames.end();
    await reading;
    assert.deepEqual(read, records, `chunks of ${cut} bytes`);
    assert.equal(said[0], "ready@0", "ready before any record");
    assert.equal(said[1]?.startsWith("overrun"), true);
    if (cut === bytes.length) assert.deepEqual(batches, [50], "one chunk, one batch");
  }
  const cutShort = new RecordBatches();
  const tail: Buffer[][] = [];
  cutShort.on("data", (batch: Buffer[]) => tail.push(batch));
  cutShort.end(recordFrames(records.slice(0, 2)).subarray(0, 4 + 128 + 50)); // a writer that died mid-frame
  await new Promise((resolve) => cutShort.on("end", resolve));
  assert.deepEqual(tail, [[records[0]]], "the whole frame read, the part dropped");
  const stranger = new RecordBatches();
  stranger.resume();
  const failed = new Promise<Error>((resolve) => stranger.on("error", resolve));
  stranger.end(Buffer.from("ready\n"));
  assert.match((await failed).message, /kind 25970: the reader speaks another protocol/);
});

test("a ring buffer shared by namespaces: a watch keeps the records of its own slot in the versions pinned here", async () => {
  const root = await mkdtemp(path.join(scratch, "pins-"));
  const here = new PinLayout("ns77", root);
  // A version pinned here that this namespace loaded itself (no claims map: slot 0).
  await mkdir(path.join(here.version({ policy: "web", version: VERSION }), "maps"), { recursive: true });
  await writeFile(here.map({ policy: "web", version: VERSION }, "rule_events"), "");
  const slots = new NamespaceSlots(here);
  const entry = (namespaceSlot: number, version = VERSION) => {
    const bytes = recordBytes({ verdict: 1, reason: 0, rule: 0, namespaceSlot });
    if (version !== VERSION) bytes.write(version, 16, "latin1");
    return { bytes, record: decodeRecord(bytes) };
  };
  const mine = entry(0);
  const kept = await slots.ours([mine, entry(3), entry(0, "fedcba9876543210")]);
  assert.deepEqual(kept, [mine], "another namespace's slot, and a version not pinned here, are not this namespace's");
});
