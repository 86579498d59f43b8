/**
 * `npm run bench:e2e`: intercept's two strategies (steer, rewrite) against
 * the iptables REDIRECT rule service meshes use and against the server
 * asked directly, end to end with wrk, plus the control plane's latencies.
 * Every variant gets a fresh pair of namespaces each round (reused pairs
 * collapse under Connection: close, their ports stuck in TIME_WAIT), and
 * the variants take turns, so all share the machine's state. Prints tables
 * and writes bench/results/e2e.json.
 *   BENCH_E2E_ROUNDS (3) rounds of BENCH_E2E_SECONDS (5) per variant and mode;
 *   BENCH_E2E_ONLY=events measures only the flow records' cost;
 *   BENCH_E2E_EVENTS_FLOOR=1 adds its parts: the bare reader, and the switches alone;
 *   BENCH_E2E_EVENTS_WARMUP (1) seconds of load precede each of its runs.
 *
 * The outbound row: wrk as an application in a cgroup, connecting out to
 * a remote server through the same local proxy (lab/outbound.py, which
 * reads SO_ORIGINAL_DST), captured either by intercept's cgroup programs
 * or by iptables `-t nat OUTPUT REDIRECT` (the proxy's uid exempt in both).
 */
import { randomInt } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { table } from "./table.js";
import { median, shuffle } from "./stats.js";
import { intercept, Lab, SERVER_ADDRESS } from "../lab/network.js";
import { AgentProcess } from "../lab/agent-process.js";
import { parseWrk, runWrk, type WrkResult } from "../lab/wrk.js";
import { LabCgroup, OUTBOUND_HELPER } from "../lab/cgroup.js";
import { CLIENT_ADDRESS } from "../lab/network.js";
import { flowReader } from "../src/flows/reader.js";
import { droppedRecords, switchOn, versionsWithEvents } from "../src/flows/switch.js";
import { namespaceKey } from "../src/kernel/namespace.js";
import { PinLayout } from "../src/kernel/pins.js";
import { FLOW_EVENTS } from "../src/model/bpf-abi.js";

const SECONDS = Number(process.env.BENCH_E2E_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_E2E_ROUNDS ?? 3);
const CONNECTIONS = 50;
const ORIGINAL_PORT = 8000;
const TARGET_PORT = 9000;

type Strategy = "steer" | "rewrite";
type Variant = "direct" | Strategy | "iptables";
type Mode = "keep-alive" | "close";
const VARIANTS: Variant[] = ["direct", "rewrite", "steer", "iptables"];
const STRATEGIES: Strategy[] = ["steer", "rewrite"];

interface Measurement extends WrkResult {
  /** CPU time of the whole machine per request (µs): server, client and kernel alike. */
  cpuMicrosecondsPerRequest: number;
  /** Events on: CPU seconds of the records' consumer (watch and its flow_reader) while wrk ran. */
  consumerCpuSeconds?: number;
  /** Events on: records the full ring buffer dropped (flow_event_drops). */
  droppedRecords?: number;
  /**
   * Steer only: SYNs whose 4-tuple the server still held in TIME_WAIT (wrk's
   * client reusing a port within a minute of a connection the server
   * closed): reopened and steered, or (fallback) dropped (docs/steering.md).
   */
  timeWait?: { reopened: number; fallback: number };
}

let scratch: string;
/** One policy per strategy, the same rule: 8000 → 9000. */
const policies = {} as Record<Strategy, string>;

/** Busy CPU time of the machine, in seconds, from /proc/stat. */
async function busySeconds(): Promise<number> {
  const fields = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields as number[];
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100; // USER_HZ
}

async function measure(variant: Variant, mode: Mode, events?: Consumer, warmupSeconds = 0): Promise<Measurement> {
  const lab = await Lab.create();
  let watch: RecordsConsumer | undefined;
  try {
    await lab.runInClient(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"]);
    await lab.startInServer(["node", "dist/bench/http-server.js", String(TARGET_PORT)], /ready/);
    if (variant === "steer" || variant === "rewrite") {
      const applied = await intercept("apply", policies[variant], "--netns", lab.serverNs, "--yes");
      if (applied.exitCode !== 0) throw new Error(applied.stderr);
      if (events) watch = await startConsumer(events, lab.serverNs);
    } else if (variant === "iptables") {
      await execa("ip", [
        "netns",
        "exec",
        lab.serverNs,
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "--dport",
        String(ORIGINAL_PORT),
        "-j",
        "REDIRECT",
        "--to-ports",
        String(TARGET_PORT),
      ]);
    }
    const port = variant === "direct" ? TARGET_PORT : ORIGINAL_PORT;
    const url = `http://${SERVER_ADDRESS}:${port}/`;
    const run = (seconds: number) =>
      runWrk(lab.clientNs, url, { seconds, connections: CONNECTIONS, close: mode === "close" });
    if (warmupSeconds > 0) await run(warmupSeconds);
    const busy = await busySeconds();
    const consumer = await watch?.cpuSeconds();
    const result = await run(SECONDS);
    const consumerCpuSeconds =
      consumer === undefined
        ? {}
        : { consumerCpuSeconds: (await watch!.cpuSeconds()) - consumer, droppedRecords: await watch!.dropped() };
    const cpu = (await busySeconds()) - busy;
    if (result.requests === 0) throw new Error(`${variant}/${mode}: no request succeeded`);
    // Not for the flow records' runs, which compare rates only.
    const timeWait = variant === "steer" && !events ? { timeWait: await timeWaitSyns(lab) } : {};
    return { ...result, cpuMicrosecondsPerRequest: (cpu * 1e6) / result.requests, ...consumerCpuSeconds, ...timeWait };
  } finally {
    await watch?.stop();
    await lab.destroy();
  }
}

/**
 * Who reads the records in an events-on run: `intercept watch --enable
 * --json`, its output thrown away (what a user runs; the agent's --flows
 * does the same work); with BENCH_E2E_EVENTS_FLOOR also the bare
 * flow_reader, its output thrown away (the reader's part), and nobody, the
 * switches on (the datapath's part: the ring fills, then each record is
 * dropped and counted).
 */
type Consumer = "watch" | "reader" | "switch";
const CONSUMERS: Consumer[] = process.env.BENCH_E2E_EVENTS_FLOOR ? ["watch", "reader", "switch"] : ["watch"];
/** Seconds of load before each flow records run is measured (BENCH_E2E_EVENTS_WARMUP; 0: none). */
const EVENTS_WARMUP = Number(process.env.BENCH_E2E_EVENTS_WARMUP ?? 1);

/** A running consumer of a namespace's records, with the switches on. */
interface RecordsConsumer {
  /** CPU seconds (user and system) the consumer and its children have used so far. */
  cpuSeconds(): Promise<number>;
  /** Records dropped so far because the ring buffer was full. */
  dropped(): Promise<number>;
  stop(): Promise<void>;
}

/** CPU seconds of @root and every process below it, from /proc (USER_HZ ticks). */
async function treeCpuSeconds(root: number): Promise<number> {
  const stats = new Map<number, { parent: number; ticks: number }>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => ""); // a process gone meanwhile
    // After the command's closing parenthesis: state, ppid, … utime (14th field), stime (15th).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields.length < 13) continue;
    stats.set(Number(entry), { parent: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
  }
  let ticks = 0;
  for (const [pid, stat] of stats) {
    for (let at: number | undefined = pid; at !== undefined && at > 1; at = stats.get(at)?.parent) {
      if (at !== root) continue;
      ticks += stat.ticks;
      break;
    }
  }
  return ticks / 100;
}

async function startConsumer(consumer: Consumer, netns: string): Promise<RecordsConsumer> {
  const pins = new PinLayout(await namespaceKey({ name: netns }));
  const versions = await versionsWithEvents(pins);
  const dropped = () => droppedRecords(pins, versions);
  if (consumer === "watch") return { ...(await startWatch(netns)), dropped };
  await switchOn(pins, versions); // left on: the lab goes with them
  if (consumer === "switch") return { cpuSeconds: async () => 0, dropped, stop: async () => undefined };
  const child = execa(await flowReader(), [pins.map(versions[0]!, FLOW_EVENTS.name)], {
    reject: false,
    stdin: "ignore",
    stdout: "ignore", // what it reads is printed to /dev/null; the ring keeps what comes before it reads
  });
  return {
    cpuSeconds: () => treeCpuSeconds(child.pid!),
    dropped,
    async stop() {
      child.kill("SIGTERM");
      await child;
    },
  };
}

async function startWatch(netns: string): Promise<Omit<RecordsConsumer, "dropped">> {
  const child = execa("node", ["bin/intercept.js", "watch", "--netns", netns, "--enable", "--json"], {
    reject: false,
    stdin: "ignore",
    stdout: "ignore",
  });
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (chunk: Buffer) => chunk.toString().includes("watching") && resolve());
    void child.then((ended) => reject(new Error(`watch ended: ${String(ended.stderr)}`)));
  });
  return {
    cpuSeconds: () => treeCpuSeconds(child.pid!),
    async stop() {
      child.kill("SIGTERM");
      await child;
    },
  };
}

/** The steer rule's TIME_WAIT counters, from `status --json`. */
async function timeWaitSyns(lab: Lab): Promise<{ reopened: number; fallback: number }> {
  const status = await intercept("status", "--netns", lab.serverNs, "--json");
  if (status.exitCode !== 0) throw new Error(status.stderr);
  const program = JSON.parse(status.stdout).programs[0];
  if (!program) throw new Error(`status shows no program in ${lab.serverNs}: ${status.stdout}`);
  const { timeWaitRecycled, timeWait } = program.rules[0].counters;
  return { reopened: timeWaitRecycled.packets, fallback: timeWait.packets };
}

/** Outbound capture: the proxy's port and the uid it runs as (exempt from capture in both variants). */
const PROXY_PORT = 15001;
const PROXY_UID = 1337;
type OutboundVariant = "intercept" | "iptables";
const OUTBOUND_VARIANTS: OutboundVariant[] = ["intercept", "iptables"];

/**
 * One outbound run: the lab's server namespace is the host (wrk in a cgroup
 * of its own, the proxy beside it as uid PROXY_UID), its client namespace
 * the remote network with the HTTP server on ORIGINAL_PORT.
 */
async function measureOutbound(
  variant: OutboundVariant,
  mode: Mode,
  events?: Consumer,
  warmupSeconds = 0,
): Promise<Measurement> {
  const lab = await Lab.create();
  const cgroup = await LabCgroup.create(["app"], "intercept-bench");
  let watch: RecordsConsumer | undefined;
  try {
    const host = lab.serverNs;
    await lab.runInServer(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"]);
    await cgroup.start(undefined, lab.clientNs, ["node", "dist/bench/http-server.js", String(ORIGINAL_PORT)], /ready/);
    await cgroup.start(
      "app",
      host,
      ["python3", OUTBOUND_HELPER, "proxy", "--port", String(PROXY_PORT), "--uid", String(PROXY_UID), "--no-tag"],
      /proxy ready/,
    );
    if (variant === "intercept") {
      const file = path.join(scratch, `outbound-${lab.id}.yaml`);
      await writeFile(
        file,
        `outbound:
  cgroups: ["${cgroup.path("app")}"]
  exempt: { uids: [${PROXY_UID}] }
  rules:
    - { originalPort: ${ORIGINAL_PORT}, port: ${PROXY_PORT} }
`,
      );
      const applied = await intercept("apply", file, "--netns", host, "--yes");
      if (applied.exitCode !== 0) throw new Error(applied.stderr);
      if (events) watch = await startConsumer(events, host);
    } else {
      await execa("ip", [
        "netns",
        "exec",
        host,
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        CLIENT_ADDRESS,
        "--dport",
        String(ORIGINAL_PORT),
        "-m",
        "owner",
        "!",
        "--uid-owner",
        String(PROXY_UID),
        "-j",
        "REDIRECT",
        "--to-ports",
        String(PROXY_PORT),
      ]);
    }
    const run = (seconds: number) =>
      cgroup.run("app", host, [
        "wrk",
        "-t1",
        `-c${CONNECTIONS}`,
        `-d${seconds}s`,
        "--latency",
        ...(mode === "close" ? ["-H", "Connection: close"] : []),
        `http://${CLIENT_ADDRESS}:${ORIGINAL_PORT}/`,
      ]);
    if (warmupSeconds > 0) await run(warmupSeconds);
    const busy = await busySeconds();
    const consumer = await watch?.cpuSeconds();
    const wrk = await run(SECONDS);
    const consumerCpuSeconds =
      consumer === undefined
        ? {}
        : { consumerCpuSeconds: (await watch!.cpuSeconds()) - consumer, droppedRecords: await watch!.dropped() };
    const cpu = (await busySeconds()) - busy;
    const result = parseWrk(wrk.stdout);
    if (result.requests === 0) throw new Error(`outbound ${variant}/${mode}: no request succeeded: ${wrk.stderr}`);
    return { ...result, cpuMicrosecondsPerRequest: (cpu * 1e6) / result.requests, ...consumerCpuSeconds };
  } finally {
    await watch?.stop();
    await lab.destroy(); // intercept destroy first: our programs leave the cgroup
    await cgroup.destroy();
  }
}

interface Summary {
  requestsPerSecond: number;
  requestsPerSecondRange: number[];
  p99Ms: number;
  cpuMicrosecondsPerRequest: number;
  socketErrors: number;
  non2xx: number;
  /** Steer only: TIME_WAIT tuples reopened and steered, and those dropped (fallback). */
  timeWait: { reopened: number; fallback: number } | null;
}

/**
 * ROUNDS rounds of every variant in both modes, the variants taking turns
 * (each round starts with the next one); medians per variant and mode.
 */
async function rounds<V extends string>(
  label: string,
  variants: readonly V[],
  run: (variant: V, mode: Mode) => Promise<Measurement>,
): Promise<Record<Mode, Record<V, Summary>>> {
  const samples = new Map<string, Measurement[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of ["keep-alive", "close"] as Mode[]) {
      for (let i = 0; i < variants.length; i++) {
        const variant = variants[(i + round) % variants.length]!;
        const result = await run(variant, mode);
        process.stderr.write(
          `round ${round + 1}/${ROUNDS} ${label}${mode} ${variant}: ${result.requestsPerSecond.toFixed(0)} req/s, p99 ${result.p99Ms} ms\n`,
        );
        samples.set(`${variant}|${mode}`, [...(samples.get(`${variant}|${mode}`) ?? []), result]);
      }
    }
  }
  const summary = (variant: V, mode: Mode): Summary => {
    const runs = samples.get(`${variant}|${mode}`)!;
    return {
      requestsPerSecond: median(runs.map((r) => r.requestsPerSecond)),
      requestsPerSecondRange: [
        Math.min(...runs.map((r) => r.requestsPerSecond)),
        Math.max(...runs.map((r) => r.requestsPerSecond)),
      ],
      p99Ms: median(runs.map((r) => r.p99Ms)),
      cpuMicrosecondsPerRequest: median(runs.map((r) => r.cpuMicrosecondsPerRequest)),
      socketErrors: runs.reduce((sum, r) => sum + r.socketErrors, 0),
      non2xx: runs.reduce((sum, r) => sum + r.non2xx, 0),
      timeWait: runs.some((r) => r.timeWait)
        ? runs.reduce(
            (sum, r) => ({
              reopened: sum.reopened + (r.timeWait?.reopened ?? 0),
              fallback: sum.fallback + (r.timeWait?.fallback ?? 0),
            }),
            { reopened: 0, fallback: 0 },
          )
        : null,
    };
  };
  return Object.fromEntries(
    (["keep-alive", "close"] as Mode[]).map((mode) => [
      mode,
      Object.fromEntries(variants.map((v) => [v, summary(v, mode)])),
    ]),
  ) as Record<Mode, Record<V, Summary>>;
}

const dataPlane = () => rounds("", VARIANTS, (variant, mode) => measure(variant, mode));

type EventsKind = "steer" | "outbound";

/** One consumer's runs against the runs with records off. */
interface ConsumerSummary {
  /** New connections per second, median over rounds. */
  perSecond: number;
  /** Median of the per-round ratios to records off, and their spread. */
  ratio: number;
  ratioRange: number[];
  /** The consumer's CPU (watch and flow_reader) per connection, in µs, median over rounds. */
  consumerMicrosecondsPerConnection: number;
  /** Records the full ring buffer dropped, over all rounds. */
  droppedRecords: number;
}

interface EventsSummary {
  /** New connections per second, median over rounds, records off and on (watch). */
  offPerSecond: number;
  onPerSecond: number;
  /** Median of the per-round ratios on/off, and their spread. */
  ratio: number;
  ratioRange: number[];
  consumerMicrosecondsPerConnection: number;
  droppedRecords: number;
  /** Every consumer measured (BENCH_E2E_EVENTS_FLOOR: the bare reader and the switch alone too). */
  consumers: Partial<Record<Consumer, ConsumerSummary>>;
}

/**
 * Flow records on against off, new connections (Connection: close), for
 * steer and for outbound: every arm in every round, in an order shuffled
 * each round; the ratio is taken within a round, so all share its machine.
 * "On" has every rule's records on and `intercept watch --json` reading them.
 * Each run is measured after EVENTS_WARMUP seconds of the same load, in
 * every arm: records on is a lasting state (the agent's --flows, a watch
 * left running), so its cost is the steady one, not the ~0.2 s of CPU a
 * new watch spends while V8 compiles its code (nor the server's own).
 */
async function eventsCost(): Promise<Record<EventsKind, EventsSummary>> {
  const run = (kind: EventsKind, consumer: Consumer | undefined) =>
    kind === "steer"
      ? measure("steer", "close", consumer, EVENTS_WARMUP)
      : measureOutbound("intercept", "close", consumer, EVENTS_WARMUP);
  const result = {} as Record<EventsKind, EventsSummary>;
  for (const kind of ["steer", "outbound"] as EventsKind[]) {
    const arms: (Consumer | undefined)[] = [undefined, ...CONSUMERS];
    const runs = new Map<Consumer | undefined, Measurement[]>(arms.map((arm) => [arm, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const arm of shuffle([...arms])) {
        const measured = await run(kind, arm);
        runs.get(arm)!.push(measured);
        const perConnection = ((measured.consumerCpuSeconds ?? 0) * 1e6) / measured.requests;
        const consumed = arm
          ? `, consumer ${perConnection.toFixed(1)} µs CPU/conn, ${measured.droppedRecords} dropped`
          : "";
        process.stderr.write(
          `round ${round + 1}/${ROUNDS} events ${kind} ${arm ?? "off"}: ${measured.requestsPerSecond.toFixed(0)} conn/s${consumed}\n`,
        );
      }
    }
    const off = runs.get(undefined)!;
    const consumers: Partial<Record<Consumer, ConsumerSummary>> = {};
    for (const consumer of CONSUMERS) {
      const on = runs.get(consumer)!;
      const ratios = on.map((measured, i) => measured.requestsPerSecond / off[i]!.requestsPerSecond);
      consumers[consumer] = {
        perSecond: median(on.map((measured) => measured.requestsPerSecond)),
        ratio: median(ratios),
        ratioRange: [Math.min(...ratios), Math.max(...ratios)],
        consumerMicrosecondsPerConnection: median(
          on.map((measured) => ((measured.consumerCpuSeconds ?? 0) * 1e6) / measured.requests),
        ),
        droppedRecords: on.reduce((sum, measured) => sum + (measured.droppedRecords ?? 0), 0),
      };
    }
    const watch = consumers.watch!;
    result[kind] = {
      offPerSecond: median(off.map((measured) => measured.requestsPerSecond)),
      onPerSecond: watch.perSecond,
      ratio: watch.ratio,
      ratioRange: watch.ratioRange,
      consumerMicrosecondsPerConnection: watch.consumerMicrosecondsPerConnection,
      droppedRecords: watch.droppedRecords,
      consumers,
    };
  }
  return result;
}

const CONSUMER_LABELS: Record<Consumer, string> = {
  watch: "on: watch --json",
  reader: "on: flow_reader alone",
  switch: "on: nobody reads",
};

function printEvents(events: Record<EventsKind, EventsSummary>): void {
  console.log(
    `\nflow records on vs off, new connections (Connection: close), after ${EVENTS_WARMUP} s of warm-up, per-round ratios (target ≥ 0.97):`,
  );
  console.log(
    table(
      [
        "rule",
        "records",
        "conn/s off (median)",
        "conn/s on (median)",
        "on/off (median of rounds)",
        "on/off (min–max)",
        "consumer CPU µs/conn",
        "records dropped",
      ],
      (["steer", "outbound"] as EventsKind[]).flatMap((kind) =>
        CONSUMERS.map((consumer) => {
          const arm = events[kind].consumers[consumer]!;
          return [
            kind,
            CONSUMER_LABELS[consumer],
            events[kind].offPerSecond.toFixed(0),
            arm.perSecond.toFixed(0),
            arm.ratio.toFixed(3),
            arm.ratioRange.map((n) => n.toFixed(3)).join("–"),
            arm.consumerMicrosecondsPerConnection.toFixed(1),
            arm.droppedRecords,
          ];
        }),
      ),
    ),
  );
}
const outbound = () => rounds("outbound ", OUTBOUND_VARIANTS, measureOutbound);

/** Wall time of one CLI run. */
async function timed(...args: string[]): Promise<number> {
  const start = performance.now();
  const result = await intercept(...args);
  if (result.exitCode !== 0) throw new Error(`intercept ${args.join(" ")}: ${result.stderr}`);
  return performance.now() - start;
}

async function controlPlane() {
  const lab = await Lab.create();
  try {
    // plan with nothing to change: cold (no policy cache) and warm.
    await timed("apply", "--yes", "policies/demo.ts", "--netns", lab.serverNs);
    await rm("build/cache/policies", { recursive: true, force: true });
    const planCold = await timed("plan", "policies/demo.ts", "--netns", lab.serverNs);
    const planWarm = median(await sequence(5, () => timed("plan", "policies/demo.ts", "--netns", lab.serverNs)));
    await timed("destroy", "--yes", "--netns", lab.serverNs);

    // apply with a compile-cache miss (ports never seen before) and a hit (the same again).
    const fresh = path.join(scratch, "fresh.yaml");
    const port = randomInt(20_000, 29_000);
    await writeFile(fresh, `interceptors:\n  - { port: ${port + 10_000}, originalPort: ${port} }\n`);
    const applyMiss = await timed("apply", "--yes", fresh, "--netns", lab.serverNs);
    await timed("destroy", "--yes", "--netns", lab.serverNs);
    const applyHit = await timed("apply", "--yes", fresh, "--netns", lab.serverNs);
    await timed("destroy", "--yes", "--netns", lab.serverNs);
    return {
      planColdMs: planCold,
      planWarmMs: planWarm,
      applyCompileMissMs: applyMiss,
      applyCompileHitMs: applyHit,
      ...(await agentLatencies(lab)),
    };
  } finally {
    await lab.destroy();
  }
}

/** The agent's reaction times, from the moment of the change to its log line saying it is done. */
async function agentLatencies(lab: Lab) {
  const file = path.join(scratch, "agent.yaml");
  const rules = (enabled: boolean) =>
    `interceptors:\n  - { port: ${TARGET_PORT}, originalPort: ${ORIGINAL_PORT} }\n  - { port: 9443, originalPort: 8443, enabled: ${enabled} }\n`;
  await writeFile(file, rules(true));
  const agent = new AgentProcess([file, "--netns", lab.serverNs]);
  try {
    await agent.waitFor((l) => /policies applied/.test(String(l.message)));
    const edits: number[] = [];
    for (let i = 0; i < 10; i++) {
      const from = agent.lines.length;
      const enabled = i % 2 === 1;
      const start = performance.now();
      await writeFile(file, rules(enabled));
      const line = await agent.waitFor((l) => l.message === `rule.agent[1]: ${enabled ? "enabled" : "disabled"}`, from);
      edits.push((line.receivedAt as number) - start);
    }
    const links: number[] = [];
    for (let i = 0; i < 5; i++) {
      const from = agent.lines.length;
      const link = `${lab.id}l${i}`;
      const start = performance.now();
      await lab.runInServer(["ip", "link", "add", link, "type", "veth", "peer", "name", `${link}p`]);
      const line = await agent.waitFor((l) => l.message === `attachment.${link}: created`, from);
      links.push((line.receivedAt as number) - start);
    }
    return {
      agentEditToDatapathMs: median(edits),
      agentEditSamplesMs: edits,
      agentLinkToAttachedMs: median(links),
      agentLinkSamplesMs: links,
    };
  } finally {
    await agent.stop();
  }
}

async function sequence<T>(count: number, run: () => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < count; i++) results.push(await run());
  return results;
}

async function main() {
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-bench-e2e-"));
  try {
    for (const strategy of STRATEGIES) {
      policies[strategy] = path.join(scratch, `bench_${strategy}.yaml`);
      await writeFile(
        policies[strategy],
        `interceptors:\n  - { port: ${TARGET_PORT}, originalPort: ${ORIGINAL_PORT}, strategy: ${strategy} }\n`,
      );
      await execa("node", ["bin/intercept.js", "build", policies[strategy]]); // so applies in the loop never compile
    }
    console.log(
      `end-to-end benchmark: ${ROUNDS} rounds × ${SECONDS} s per variant and mode, wrk -t1 -c${CONNECTIONS}, single-threaded Node server`,
    );
    console.log(
      `variants: direct (wrk to ${TARGET_PORT}), rewrite and steer (intercept, ${ORIGINAL_PORT} → ${TARGET_PORT}), iptables (nat PREROUTING REDIRECT)\n`,
    );
    if (process.env.BENCH_E2E_ONLY === "events") {
      // The flow records' cost alone: the other sections take a quarter of an hour.
      const before = loadavg();
      const events = await eventsCost();
      printEvents(events);
      const after = loadavg();
      console.log(
        `load average ${before.map((n) => n.toFixed(2)).join(" ")} before, ${after.map((n) => n.toFixed(2)).join(" ")} after (a shared machine: compare the per-round ratios)`,
      );
      await mkdir("bench/results", { recursive: true });
      await writeFile(
        "bench/results/e2e-events.json",
        `${JSON.stringify({ measuredAt: new Date().toISOString(), seconds: SECONDS, warmupSeconds: EVENTS_WARMUP, rounds: ROUNDS, events }, null, 2)}\n`,
      );
      console.log("\nwritten: bench/results/e2e-events.json");
      return;
    }
    const data = await dataPlane();
    const f = (n: number, d = 0) => n.toFixed(d);
    for (const mode of ["keep-alive", "close"] as Mode[]) {
      const r = data[mode];
      console.log(`\n${mode === "close" ? "new connections (Connection: close)" : "keep-alive"}:`);
      console.log(
        table(
          [
            "variant",
            "req/s (median)",
            "req/s (min–max)",
            "p99 ms",
            "CPU µs/req",
            "vs rewrite",
            "vs iptables",
            "vs direct",
            "socket errors",
            "non-2xx",
            "TIME_WAIT reopened / dropped",
          ],
          VARIANTS.map((v) => [
            v,
            f(r[v].requestsPerSecond),
            r[v].requestsPerSecondRange.map((n) => f(n)).join("–"),
            f(r[v].p99Ms, 2),
            f(r[v].cpuMicrosecondsPerRequest, 1),
            f(r[v].requestsPerSecond / r.rewrite.requestsPerSecond, 3),
            f(r[v].requestsPerSecond / r.iptables.requestsPerSecond, 3),
            f(r[v].requestsPerSecond / r.direct.requestsPerSecond, 3),
            r[v].socketErrors,
            r[v].non2xx,
            r[v].timeWait ? `${r[v].timeWait.reopened} / ${r[v].timeWait.fallback}` : "",
          ]),
        ),
      );
    }
    const out = await outbound();
    console.log(
      "\noutbound, through the local proxy (lab/outbound.py), intercept's cgroup capture vs iptables -t nat OUTPUT REDIRECT:",
    );
    console.log(
      table(
        [
          "mode",
          "capture",
          "req/s (median)",
          "req/s (min–max)",
          "p99 ms",
          "CPU µs/req",
          "vs iptables",
          "socket errors",
          "non-2xx",
        ],
        (["close", "keep-alive"] as Mode[]).flatMap((mode) =>
          OUTBOUND_VARIANTS.map((v) => {
            const r = out[mode][v];
            return [
              mode === "close" ? "connections/s (Connection: close)" : "keep-alive requests/s",
              v,
              f(r.requestsPerSecond),
              r.requestsPerSecondRange.map((n) => f(n)).join("–"),
              f(r.p99Ms, 2),
              f(r.cpuMicrosecondsPerRequest, 1),
              f(r.requestsPerSecond / out[mode].iptables.requestsPerSecond, 3),
              r.socketErrors,
              r.non2xx,
            ];
          }),
        ),
      ),
    );
    const events = await eventsCost();
    printEvents(events);
    const control = await controlPlane();
    console.log("\ncontrol plane:");
    console.log(
      table(
        ["measure", "ms", "target"],
        [
          ["plan, nothing to change, cold (no policy cache)", f(control.planColdMs), ""],
          ["plan, nothing to change, warm (policy cache)", f(control.planWarmMs), "≤ 500"],
          ["apply, compile cache miss", f(control.applyCompileMissMs), ""],
          ["apply, compile cache hit", f(control.applyCompileHitMs), ""],
          ["agent: policy edit → datapath (live edit)", f(control.agentEditToDatapathMs), "≤ 50"],
          ["agent: link created → filters attached", f(control.agentLinkToAttachedMs), "≤ 200"],
        ],
      ),
    );
    await mkdir("bench/results", { recursive: true });
    await writeFile(
      "bench/results/e2e.json",
      `${JSON.stringify({ measuredAt: new Date().toISOString(), seconds: SECONDS, rounds: ROUNDS, connections: CONNECTIONS, dataPlane: data, outbound: out, events, controlPlane: control }, null, 2)}\n`,
    );
    console.log("\nwritten: bench/results/e2e.json");
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
