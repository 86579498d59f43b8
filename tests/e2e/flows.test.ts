/**
 * `intercept watch` against the real kernel, in namespaces and cgroups
 * this test creates and removes: every verdict the datapath records is
 * produced by a real connection and read back from `watch --json` with
 * its fields (the outbound task's pid and command too). Waits on the
 * records themselves, never on time.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";
import { AgentProcess } from "../../lab/agent-process.js";
import { LabCgroup, OUTBOUND_HELPER } from "../../lab/cgroup.js";
import { probe } from "../../lab/echo-client.js";
import { CLIENT_ADDRESS, intercept, Lab, SERVER_ADDRESS } from "../../lab/network.js";

const CLI = fileURLToPath(new URL("../../../bin/intercept.js", import.meta.url));
const OUTBOUND_PROXY = 15001;

let lab: Lab;
let cgroup: LabCgroup;
let scratch: string;
let policyFile: string;
let watch: ResultPromise | undefined;
const records: Flow[] = [];
let arrived: () => void = () => undefined;

interface Flow {
  kind: string;
  namespace: string;
  link: string | null;
  policy: string | null;
  rule: string;
  slot: number | null;
  location: string | null;
  verdict: string;
  reason: string;
  source: { address: string; port: number } | null;
  destination: { address: string; port: number } | null;
  target: { address: string; port: number } | null;
  task: { pid: number; uid: number; command: string; cgroupId: string } | null;
}

before(async () => {
  lab = await Lab.create();
  cgroup = await LabCgroup.create(["app", "app/sidecar", "other"]);
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-flows-"));
  await lab.startInServer(["node", "dist/lab/echo.js", "serve", "--tag", "backend", "8002", "8004"], /ready/);
  await lab.startInServer(["node", "dist/lab/echo.js", "serve", "--tag", "proxy", "9000"], /ready/);
  await cgroup.start(undefined, lab.clientNs, ["python3", OUTBOUND_HELPER, "server", "--port", "8080"], /server ready/);
  await cgroup.start(
    "app/sidecar",
    lab.serverNs,
    ["python3", OUTBOUND_HELPER, "proxy", "--port", String(OUTBOUND_PROXY)],
    /proxy ready/,
  );
  policyFile = path.join(scratch, "flows.yaml");
  await writeFile(
    policyFile,
    [
      "name: flows",
      "interceptors:",
      "  - { originalPort: 8000, port: 9000 }",
      "  - { originalPort: 8001, port: 9900, onProxyDown: drop }",
      "  - { originalPort: 8002, port: 9900, onProxyDown: pass }",
      "  - { originalPort: 8003, port: 8004, strategy: rewrite }",
      "outbound:",
      `  cgroups: ["${cgroup.path("app")}"]`,
      `  exempt: { cgroups: ["${cgroup.path("app/sidecar")}"] }`,
      "  rules:",
      `    - { originalPort: 8080, port: ${OUTBOUND_PROXY} }`,
      "",
    ].join("\n"),
  );
  const applied = await intercept("apply", policyFile, "--netns", lab.serverNs, "--yes", "--no-color");
  assert.equal(applied.exitCode, 0, applied.stderr + applied.stdout);
  await startWatch();
});

after(async () => {
  watch?.kill("SIGTERM");
  await watch;
  await lab?.destroy();
  await cgroup?.destroy();
  await rm(scratch, { recursive: true, force: true });
  assert.ok(!(await execa("ip", ["netns", "list"])).stdout.includes(lab.id), "the lab's namespaces are gone");
  assert.ok(!existsSync(cgroup.directory()), "the test's cgroup is gone");
});

/** Starts `watch --enable --json` and resolves once it reads (its stderr says so). */
async function startWatch(): Promise<void> {
  watch = execa("node", [CLI, "watch", policyFile, "--netns", lab.serverNs, "--enable", "--json"], {
    reject: false,
    stdin: "ignore",
  });
  createInterface({ input: watch.stdout! }).on("line", (line) => {
    records.push(JSON.parse(line) as Flow);
    arrived();
  });
  await new Promise<void>((resolve, reject) => {
    watch!.stderr!.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("watching")) resolve();
    });
    void watch!.then((ended) => reject(new Error(`watch ended: ${String(ended.stderr)}`)));
  });
}

/** The first record @wanted accepts, as soon as watch prints it (failing after 15 s: a lost record). */
async function record(what: string, wanted: (flow: Flow) => boolean): Promise<Flow> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const found = records.find(wanted);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no ${what} record; watch printed ${JSON.stringify(records, null, 1)}`);
    await new Promise<void>((resolve) => {
      arrived = resolve;
      setTimeout(resolve, 1000).unref();
    });
  }
}

const to = (port: number) => (flow: Flow) => flow.destination?.port === port;

test("a steered connection: the rule, its file:line, the link, the 4-tuple and the proxy", async () => {
  const [reply] = await probe(lab, SERVER_ADDRESS, 8000);
  assert.ok(reply && "tag" in reply && reply.tag === "proxy", JSON.stringify(reply));
  const flow = await record("steered", (f) => f.verdict === "steered" && to(8000)(f));
  assert.equal(flow.kind, "flow");
  assert.equal(flow.namespace, lab.serverNs);
  assert.equal(flow.link, lab.serverLink);
  assert.equal(flow.policy, "flows");
  assert.equal(flow.rule, "flows[0]");
  assert.equal(flow.location, `${policyFile}:3`);
  assert.equal(flow.reason, "none");
  assert.equal(flow.source?.address, CLIENT_ADDRESS);
  assert.deepEqual(flow.destination, { address: SERVER_ADDRESS, port: 8000 });
  assert.deepEqual(flow.target, { address: SERVER_ADDRESS, port: 9000 });
  assert.equal(flow.task, null);
});

test("proxy down: dropped when the rule fails closed, passed when it fails open", async () => {
  const [dropped] = await probe(lab, SERVER_ADDRESS, 8001, 1, 1000);
  assert.ok(dropped && "error" in dropped, JSON.stringify(dropped));
  const drop = await record("proxy-down dropped", (f) => f.verdict === "proxy-down" && to(8001)(f));
  assert.equal(drop.reason, "dropped");
  assert.equal(drop.rule, "flows[1]");
  assert.deepEqual(drop.target, { address: SERVER_ADDRESS, port: 9900 });
  const [passed] = await probe(lab, SERVER_ADDRESS, 8002);
  assert.ok(passed && "tag" in passed && passed.tag === "backend", JSON.stringify(passed));
  const pass = await record("proxy-down passed", (f) => f.verdict === "proxy-down" && to(8002)(f));
  assert.equal(pass.reason, "passed");
  assert.equal(pass.rule, "flows[2]");
});

test("a rewritten connection is recorded once, at its SYN", async () => {
  const [reply] = await probe(lab, SERVER_ADDRESS, 8003);
  assert.ok(reply && "tag" in reply && reply.tag === "backend", JSON.stringify(reply));
  const flow = await record("rewritten", (f) => f.verdict === "rewritten" && to(8003)(f));
  assert.equal(flow.rule, "flows[3]");
  assert.deepEqual(flow.target, { address: SERVER_ADDRESS, port: 8004 });
  assert.equal(records.filter((f) => f.verdict === "rewritten").length, 1, "one record per connection");
});

test("outbound: redirected with the task, the proxy's exempt connect and its SO_ORIGINAL_DST", async () => {
  const client = await cgroup.run("app", lab.serverNs, ["python3", OUTBOUND_HELPER, "client", CLIENT_ADDRESS, "8080"]);
  assert.equal(client.exitCode, 0, client.stderr);
  const redirected = await record("redirected", (f) => f.verdict === "redirected");
  assert.equal(redirected.rule, "flows[4]", "the outbound rule's slot follows the interceptors'");
  assert.deepEqual(redirected.destination, { address: CLIENT_ADDRESS, port: 8080 });
  assert.deepEqual(redirected.target, { address: "127.0.0.1", port: OUTBOUND_PROXY });
  assert.ok(redirected.task, "the task that connected");
  assert.equal(redirected.task.command, "python3");
  assert.ok(redirected.task.pid > 1);
  assert.equal(redirected.task.uid, 0);
  const answered = await record("original-dst answered", (f) => f.verdict === "original-dst");
  assert.equal(answered.reason, "answered");
  assert.deepEqual(answered.destination, { address: CLIENT_ADDRESS, port: 8080 });
  assert.equal(answered.target?.port, OUTBOUND_PROXY);
  const exempt = await record("exempt", (f) => f.verdict === "exempt");
  assert.equal(exempt.reason, "exempt-cgroup");
  assert.equal(exempt.task?.command, "python3");
  assert.notEqual(exempt.task?.pid, redirected.task.pid, "the proxy's own connect, not the application's");
});

test("SO_ORIGINAL_DST for a connection nobody captured: not found, a record of no rule", async () => {
  const direct = await cgroup.run("other", lab.serverNs, [
    "python3",
    OUTBOUND_HELPER,
    "client",
    "127.0.0.1",
    String(OUTBOUND_PROXY),
  ]);
  assert.ok(direct.exitCode !== undefined);
  const flow = await record("original-dst not found", (f) => f.verdict === "original-dst" && f.reason === "not-found");
  assert.equal(flow.slot, null);
  assert.equal(flow.policy, "flows");
  assert.equal(flow.destination, null);
});

test("--verdict and --port filter; on SIGTERM watch exits 0 and puts the switches back", async () => {
  // A ring buffer has one consumer position: two readers would share the records between them.
  watch!.kill("SIGTERM");
  assert.equal((await watch!).exitCode, 0);
  watch = undefined;
  assert.deepEqual(await switches(), [false, false, false, false, false, false], "as before the first watch");
  const filtered = execa(
    "node",
    [CLI, "watch", "--netns", lab.serverNs, "--enable", "--verdict", "proxy-down", "--port", "8002", "--json"],
    { reject: false, stdin: "ignore" },
  );
  const lines: string[] = [];
  const seen = new Promise<void>((resolve) =>
    createInterface({ input: filtered.stdout! }).on("line", (line) => {
      lines.push(line);
      resolve();
    }),
  );
  await new Promise<void>((resolve) =>
    filtered.stderr!.on("data", (chunk: Buffer) => chunk.toString().includes("watching") && resolve()),
  );
  assert.deepEqual(await switches(), [true, true, true, true, true, true]);
  // A second reader would take part of the records: it is refused, told who reads them.
  const second = await intercept("watch", "--netns", lab.serverNs, "--json");
  assert.equal(second.exitCode, 1, second.stderr);
  assert.match(
    second.stderr,
    new RegExp(`read by pid ${filtered.pid} \\(intercept watch\\): a ring buffer has one reader`),
  );
  await probe(lab, SERVER_ADDRESS, 8000);
  await probe(lab, SERVER_ADDRESS, 8002);
  await seen;
  filtered.kill("SIGTERM");
  const ended = await filtered;
  assert.equal(ended.exitCode, 0, String(ended.stderr));
  assert.deepEqual(
    lines.map((line) => (JSON.parse(line) as Flow).verdict),
    ["proxy-down"],
  );
  assert.deepEqual(await switches(), [false, false, false, false, false, false]);
});

/** The live version's rule_events switches, slot by slot (the last: records of no rule). */
async function switches(): Promise<boolean[]> {
  const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
  const { policy, version } = status.programs[0];
  const pin = path.join("/sys/fs/bpf/intercept", lab.pinKey, policy, version, "maps/rule_events");
  const dump = JSON.parse((await execa("bpftool", ["-j", "map", "dump", "pinned", pin])).stdout);
  return (dump as { formatted: { value: number } }[]).map((entry) => entry.formatted.value !== 0);
}

test("agent --flows: switches records on, logs each one and counts them by verdict and reason", async () => {
  const destroyed = await intercept("destroy", "--netns", lab.serverNs, "--yes", "--no-color");
  assert.equal(destroyed.exitCode, 0, destroyed.stderr);
  const agent = new AgentProcess([policyFile, "--netns", lab.serverNs, "--flows", "--metrics", "127.0.0.1:0"]);
  try {
    const started = await agent.waitFor((line) => line.event === "agent started");
    await agent.waitFor((line) => line.event === "flows on");
    await probe(lab, SERVER_ADDRESS, 8002);
    const flow = await agent.waitFor((line) => line.event === "flow" && line.verdict === "proxy-down");
    assert.ok(flow, "a flow line");
    assert.equal(flow.reason, "passed");
    assert.equal(flow.rule, "flows[2]");
    assert.equal(flow.policy, "flows");
    const metrics = await (await fetch(`http://${String(started.metrics)}/metrics`)).text();
    assert.match(
      metrics,
      new RegExp(
        `intercept_flows_total\\{namespace="${lab.serverNs}",policy="flows",verdict="proxy-down",reason="passed"\\} [1-9]`,
      ),
    );
  } finally {
    await agent.stop();
  }
});

test("beside agent --flows: watch reads every record through the agent, and status shows each rule's last ones", async () => {
  const agent = new AgentProcess([policyFile, "--netns", lab.serverNs, "--flows"]);
  let beside: ResultPromise | undefined;
  try {
    await agent.waitFor((line) => line.event === "flows on");
    beside = execa("node", [CLI, "watch", policyFile, "--netns", lab.serverNs, "--json"], {
      reject: false,
      stdin: "ignore",
    });
    const seen: Flow[] = [];
    let wake: () => void = () => undefined;
    createInterface({ input: beside.stdout! }).on("line", (line) => {
      // One record a line; the error document that ends it (--json) spans lines.
      if (!line.startsWith('{"')) return;
      seen.push(JSON.parse(line) as Flow);
      wake();
    });
    const watching = await new Promise<string>((resolve, reject) => {
      beside!.stderr!.on("data", (chunk: Buffer) => chunk.toString().includes("watching") && resolve(chunk.toString()));
      void beside!.then((ended) => reject(new Error(`watch ended: ${String(ended.stderr)}`)));
    });
    assert.match(watching, /from the agent run with --flows/);
    const from = agent.lines.length;
    await probe(lab, SERVER_ADDRESS, 8002);
    await probe(lab, SERVER_ADDRESS, 8000);
    // Both readers get both records: the agent reads the ring buffer, watch its relay.
    await agent.waitFor((line) => line.event === "flow" && line.verdict === "proxy-down", from);
    await agent.waitFor((line) => line.event === "flow" && line.verdict === "steered", from);
    const deadline = Date.now() + 15_000;
    while (!(seen.some(to(8002)) && seen.some(to(8000)))) {
      if (Date.now() > deadline) throw new Error(`watch beside the agent printed ${JSON.stringify(seen)}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 1000).unref();
      });
    }
    assert.equal(seen.find(to(8002))?.location, `${policyFile}:5`, "watch names the rule from its own policies");

    // status: the agent publishes within 250 ms of a record; waited for, by what status says.
    let status = await statusJson();
    for (const until = Date.now() + 15_000; !lastEvents(status, 2).some(to(8002)); status = await statusJson()) {
      if (Date.now() > until) throw new Error(`status never listed the record: ${JSON.stringify(status)}`);
    }
    assert.deepEqual(status.flows, { state: "kept", agentPid: agent.pid, note: status.flows.note });
    const passed = lastEvents(status, 2).find(to(8002))!;
    assert.equal(passed.verdict, "proxy-down");
    assert.equal(passed.reason, "passed");
    assert.equal(passed.source?.address, CLIENT_ADDRESS);
    assert.ok(lastEvents(status, 0).some((flow) => flow.verdict === "steered" && flow.target?.port === 9000));
    assert.ok(!lastEvents(status, 0).some(to(8002)), "under its own rule only");
    assert.deepEqual(lastEvents(status, 3), []);
    const text = await intercept("status", policyFile, "--netns", lab.serverNs);
    assert.match(
      text.stdout,
      /last events:\n\s+\d\d:\d\d:\d\d proxy-down \(passed\) tcp 198\.18\.\S+ → 198\.18\.0\.\d+:8002/,
    );
  } finally {
    await agent.stop();
    // Its relay closed with the agent: watch ends by itself (killed only if it hangs on).
    setTimeout(() => beside?.kill("SIGTERM"), 15_000).unref();
  }
  const ended = await beside!;
  assert.equal(ended.exitCode, 1);
  assert.match(String(ended.stderr), /the agent that relayed the flow records stopped/);
  assert.match(String(ended.stdout), /"code": "flows-unavailable"/);
  const afterwards = await statusJson();
  assert.notEqual(afterwards.flows.state, "kept", "the agent's file went with it");
  assert.equal(afterwards.programs[0]?.rules[0]?.lastEvents ?? null, null);
  assert.ok(!existsSync(path.join("/run/intercept/flows", `${lab.pinKey}.json`)));
});

interface StatusDocument {
  flows: { state: string; agentPid: number | null; note: string };
  programs: { rules: { lastEvents: Flow[] | null }[] }[];
}

async function statusJson(): Promise<StatusDocument> {
  const status = await intercept("status", "--netns", lab.serverNs, "--json");
  assert.equal(status.exitCode, 0, status.stderr);
  return JSON.parse(status.stdout) as StatusDocument;
}

function lastEvents(status: StatusDocument, slot: number): Flow[] {
  return status.programs[0]?.rules[slot]?.lastEvents ?? [];
}
