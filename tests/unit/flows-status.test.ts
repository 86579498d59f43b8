/**
 * Each rule's last flow records, without a kernel: what the agent keeps
 * (the last few per rule, by version and slot) and publishes through the
 * Host port (throttled, serialised, removed when nobody keeps it up to
 * date); the files themselves in a folder of the test's; status's section
 * (text and JSON, against schemas/status-output.schema.json) and what it
 * says when none are kept; the ring buffer's reader lock; and the agent's
 * relay of every record to a `watch`, over a unix socket of the test's.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, mock, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { eventLine, statusFlows, type StatusFlows } from "../../src/commands/status-events.js";
import { renderStatus, statusJson, withFlowsJson } from "../../src/commands/status.js";
import { RecentFlows } from "../../src/flows/recent.js";
import type { FlowRecord } from "../../src/flows/record.js";
import { connectRelay, FlowRelay } from "../../src/flows/relay.js";
import type { FlowView } from "../../src/flows/view.js";
import { KernelHost } from "../../src/host/kernel.js";
import { InterceptError } from "../../src/errors.js";
import { namespaceKey } from "../../src/kernel/namespace.js";
import { flowsFiles, RECENT_FLOWS_FORMAT, type RecentFlowsDocument } from "../../src/model/recent-flows.js";
import { executePlan, makePlan } from "../../src/reconcile/index.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";
import { FakeHost } from "../support/fake-host.js";

let scratch: string;
before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-flows-status-"));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A record of rule @slot of @version, client port @port, and its view. */
function entry(version: string, slot: number, port: number): { record: FlowRecord; view: FlowView } {
  const source = { address: "198.18.0.2", port };
  const destination = { address: "198.18.0.1", port: 8000 };
  const target = { address: "198.18.0.1", port: 9000 };
  const record: FlowRecord = {
    monotonicNs: 0n,
    version,
    slot,
    namespaceSlot: 0,
    verdict: "steered",
    reason: "none",
    family: "ipv4",
    protocol: "tcp",
    source,
    destination,
    target,
    ifindex: 2,
    task: null,
  };
  const view: FlowView = {
    time: `2026-12-07T03:41:${String(port % 60).padStart(2, "0")}.123Z`,
    namespace: "edge",
    link: "eth0",
    policy: "web",
    rule: `web[${slot}]`,
    slot,
    location: null,
    verdict: "steered",
    reason: "none",
    protocol: "tcp",
    family: "ipv4",
    source,
    destination,
    target,
    task: null,
  };
  return { record, view };
}

const ports = (document: RecentFlowsDocument | undefined, version: string, slot: number) =>
  document?.rules
    .find((rule) => rule.version === version && rule.slot === slot)
    ?.flows.map((flow) => flow.source?.port);

test("the agent keeps each rule's last 5 records, and a burst writes the file once per interval", async () => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  try {
    const host = new FakeHost();
    const failures: unknown[] = [];
    const recent = new RecentFlows(host, "ns100", { failed: (error) => failures.push(error) });
    for (let port = 40001; port <= 40012; port++) recent.add(...tuple(entry("aaaa", 0, port)));
    recent.add(...tuple(entry("aaaa", 1, 41000)));
    recent.add(...tuple(entry("bbbb", 0, 42000)));
    await settle();
    // The first record writes at once; the burst after it waits for the interval.
    assert.equal(host.recentWrites.get("ns100"), 1);
    assert.deepEqual(ports(host.recentFlows.get("ns100"), "aaaa", 0), [40001]);
    mock.timers.tick(249);
    await settle();
    assert.equal(host.recentWrites.get("ns100"), 1, "not before 250 ms");
    mock.timers.tick(1);
    await settle();
    assert.equal(host.recentWrites.get("ns100"), 2);
    const document = host.recentFlows.get("ns100")!;
    assert.equal(document.format, RECENT_FLOWS_FORMAT);
    assert.equal(document.pid, process.pid);
    assert.equal(document.perRule, 5);
    assert.deepEqual(ports(document, "aaaa", 0), [40008, 40009, 40010, 40011, 40012], "the last five, oldest first");
    assert.deepEqual(ports(document, "aaaa", 1), [41000]);
    assert.deepEqual(ports(document, "bbbb", 0), [42000]);
    // Nothing new: no write.
    mock.timers.tick(1000);
    await settle();
    assert.equal(host.recentWrites.get("ns100"), 2);
    // A version unloaded: its rules leave the file.
    recent.retain(new Set(["aaaa"]));
    await settle();
    assert.equal(host.recentWrites.get("ns100"), 3);
    assert.equal(ports(host.recentFlows.get("ns100"), "bbbb", 0), undefined);
    assert.deepEqual(failures, []);
    await recent.close();
    assert.equal(host.recentFlows.has("ns100"), false, "removed: nobody keeps it up to date any more");
    recent.add(...tuple(entry("aaaa", 0, 40100)));
    mock.timers.tick(1000);
    await settle();
    assert.equal(host.recentFlows.has("ns100"), false, "a record after close writes nothing");
  } finally {
    mock.timers.reset();
  }
});

test("a write that fails is said, and the next record writes the file again", async () => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  try {
    const host = new FakeHost();
    const failures: string[] = [];
    const recent = new RecentFlows(host, "ns100", { failed: (error) => failures.push(String(error)) });
    host.failNext("publishRecentFlows", new InterceptError("file-access", "cannot write ns100.json: ENOSPC"));
    recent.add(...tuple(entry("aaaa", 0, 40001)));
    await settle();
    assert.equal(failures.length, 1);
    assert.match(failures[0]!, /ENOSPC/);
    assert.equal(host.recentFlows.has("ns100"), false);
    recent.add(...tuple(entry("aaaa", 0, 40002)));
    mock.timers.tick(250);
    await settle();
    assert.deepEqual(ports(host.recentFlows.get("ns100"), "aaaa", 0), [40001, 40002]);
  } finally {
    mock.timers.reset();
  }
});

test("the files: written whole and read back, a foreign or torn file read as none, removed", async () => {
  const dir = path.join(scratch, "files");
  const host = new KernelHost({ flowsDir: dir });
  const key = "ns4026531840";
  assert.equal(await host.readRecentFlows(key), undefined, "no agent publishes here");
  const document: RecentFlowsDocument = {
    format: RECENT_FLOWS_FORMAT,
    pid: 4242,
    updatedAt: "2026-12-07T03:41:07.000Z",
    perRule: 5,
    rules: [{ version: "aaaa", slot: 0, flows: [recentOf(entry("aaaa", 0, 40001).view)] }],
  };
  await host.publishRecentFlows(key, document);
  assert.deepEqual(await host.readRecentFlows(key), document);
  const file = flowsFiles(key, dir).recent;
  assert.deepEqual(JSON.parse(await readFile(file, "utf8")), document);
  await writeFile(file, "{ half");
  assert.equal(await host.readRecentFlows(key), undefined);
  await writeFile(file, JSON.stringify({ ...document, format: 99 }));
  assert.equal(await host.readRecentFlows(key), undefined, "another format's file");
  await host.removeRecentFlows(key);
  await host.removeRecentFlows(key);
  assert.equal(await host.readRecentFlows(key), undefined);
  host.close();
});

test("the ring buffer has one reader: a second is refused, told who reads it", async () => {
  const host = new KernelHost({ flowsDir: path.join(scratch, "locks") });
  const first = await host.lockFlowReader("ns4026531840", "intercept agent --flows");
  await assert.rejects(host.lockFlowReader("ns4026531840", "intercept watch"), (error: unknown) => {
    assert.ok(error instanceof InterceptError);
    assert.equal(error.code, "lock-held");
    assert.match(
      error.message,
      new RegExp(`read by pid ${process.pid} \\(intercept agent --flows\\): a ring buffer has one reader`),
    );
    return true;
  });
  await first.release();
  const second = await host.lockFlowReader("ns4026531840", "intercept watch");
  await second.release();
  host.close();
  const fake = new FakeHost();
  const held = await fake.lockFlowReader("ns100", "intercept watch");
  await assert.rejects(fake.lockFlowReader("ns100", "intercept agent --flows"), /lock/);
  await held.release();
});

test("status: each rule's last records under it, in text and JSON (against the schema)", async () => {
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  const web = desiredPolicy("web", [
    { originalPort: 8000, port: 9000 },
    { originalPort: 8443, port: 9443 },
  ]);
  const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
  await executePlan(makePlan([web], await fake.observe()), fake, objects);
  const report = await inspect(fake, [web]);
  const version = report.programs[0]!.program.ref.version;
  const host = new FakeHost();
  const key = await namespaceKey({});
  const recent = new RecentFlows(host, key, { failed: (error) => assert.fail(String(error)) });
  recent.add(...tuple(entry(version, 0, 41234)));
  recent.add(...tuple(entry(version, 0, 41235)));
  await recent.publish();
  const flows = await statusFlows(key, host, (pid) => pid === process.pid);
  assert.equal(flows.state, "kept");
  const text = renderStatus(report, undefined, flows);
  const lines = text.split("\n");
  const first = lines.findIndex((line) => line.includes("rule.web[0]"));
  assert.match(lines[first + 1]!, /^ {6}last events:$/);
  assert.equal(
    lines[first + 2]!.trim(),
    "03:41:14 steered tcp 198.18.0.2:41234 → 198.18.0.1:8000 → 198.18.0.1:9000  eth0",
  );
  assert.match(lines[first + 3]!, /41235/);
  const second = lines.findIndex((line) => line.includes("rule.web[1]"));
  assert.equal(lines[second + 1]!.trim(), "last events: none yet");
  assert.match(text, new RegExp(`flow records: kept by the agent \\(pid ${process.pid}\\): each rule's last 5`));

  const json = withFlowsJson(statusJson(report, undefined), flows);
  (await statusSchema())(json);
  assert.deepEqual(json.flows, { state: "kept", agentPid: process.pid, note: flows.note });
  assert.deepEqual(
    json.programs[0]!.rules[0]!.lastEvents?.map((flow) => flow.source?.port),
    [41234, 41235],
  );
  assert.deepEqual(json.programs[0]!.rules[1]!.lastEvents, []);
});

test("status without an agent keeping records: null under each rule, and why (its writer gone)", async () => {
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  const web = desiredPolicy("web", [{ originalPort: 8000, port: 9000 }]);
  const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
  await executePlan(makePlan([web], await fake.observe()), fake, objects);
  const report = await inspect(fake, [web]);
  const host = new FakeHost();
  const key = await namespaceKey({});
  await host.publishRecentFlows(key, {
    format: RECENT_FLOWS_FORMAT,
    pid: 999_999_999,
    updatedAt: "2026-12-07T03:41:07.000Z",
    perRule: 5,
    rules: [],
  });
  // No pins here (no kernel): no program records flows; the gone writer is named.
  const flows: StatusFlows = await statusFlows(key, host, () => false);
  assert.notEqual(flows.state, "kept");
  assert.equal(flows.agentPid, 999_999_999);
  const json = withFlowsJson(statusJson(report, undefined), flows);
  (await statusSchema())(json);
  assert.equal(json.programs[0]!.rules[0]!.lastEvents, null);
  const text = renderStatus(report, undefined, flows);
  assert.match(text, /flow records: /);
  assert.doesNotMatch(text, /last events/);
});

test("an event line: verdict (reason), the path, the task of an outbound record", () => {
  const view = entry("aaaa", 0, 41234).view;
  const outbound = {
    ...recentOf(view),
    verdict: "redirected",
    source: null,
    destination: { address: "fd00::2", port: 8080 },
    target: { address: "127.0.0.1", port: 15001 },
    task: { pid: 25881, uid: 0, command: "python3" },
    link: null,
  };
  assert.equal(
    eventLine(outbound),
    "03:41:14 redirected tcp * → [fd00::2]:8080 → 127.0.0.1:15001  pid 25881 (python3) uid 0",
  );
  assert.equal(
    eventLine({ ...recentOf(view), verdict: "proxy-down", reason: "passed", target: null }),
    "03:41:14 proxy-down (passed) tcp 198.18.0.2:41234 → 198.18.0.1:8000  eth0",
  );
});

test("the relay: a watcher gets every record in order; the agent's end is said; no agent is none", async () => {
  const socket = path.join(scratch, "ns1.sock");
  assert.equal(await connectRelay(socket), undefined, "no socket");
  await writeFile(socket, "");
  const stale = await FlowRelay.listen(socket); // replaces a file left behind
  await stale.close();
  assert.equal(await connectRelay(socket), undefined, "removed on close");
  const relay = await FlowRelay.listen(socket);
  const stream = (await connectRelay(socket))!;
  await stream.ready;
  assert.equal(relay.watchers, 1);
  const sent = Array.from({ length: 200 }, (_, i) => Buffer.alloc(128, i));
  // Batches of 1, 2, 3, … records: each one write, read back in order whatever the chunks.
  for (let from = 0, size = 1; from < sent.length; from += size, size++) relay.send(sent.slice(from, from + size));
  const received: Buffer[] = [];
  const reading = (async () => {
    for await (const batch of stream.batches) received.push(...batch);
  })();
  const ended = assert.rejects(reading, /the agent that relayed the flow records stopped/);
  await relay.close();
  await ended;
  assert.deepEqual(received, sent);

  const again = await FlowRelay.listen(socket);
  const watcher = (await connectRelay(socket))!;
  await watcher.ready;
  again.send([Buffer.alloc(128, 7)]);
  const got: Buffer[] = [];
  for await (const batch of watcher.batches) {
    got.push(...batch);
    await watcher.stop(); // a watch stopped by SIGTERM ends quietly
  }
  assert.equal(got.length, 1);
  await again.close();
});

function tuple(value: { record: FlowRecord; view: FlowView }): [FlowRecord, FlowView] {
  return [value.record, value.view];
}

function recentOf(view: FlowView) {
  return {
    time: view.time,
    link: view.link,
    verdict: view.verdict as string,
    reason: view.reason as string,
    protocol: view.protocol,
    source: view.source,
    destination: view.destination,
    target: view.target,
    task: null,
  };
}

/** Lets the promises the timers started run to their end. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

async function statusSchema() {
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  for (const name of ["validate-output", "plan-output", "status-output"])
    ajv.addSchema(JSON.parse(await readFile(`schemas/${name}.schema.json`, "utf8")));
  const validate = ajv.getSchema("urn:intercept:status-output")!;
  return (document: unknown) =>
    assert.ok(validate(document), `${ajv.errorsText(validate.errors)}\n${JSON.stringify(document).slice(0, 1500)}`);
}
