/**
 * `npm run bench:fleet`: one agent with --netns-match serving namespaces
 * created in a burst, as pods arrive on a node. Measures the time from the
 * last namespace's creation (the namespace and its veth pair exist) to the
 * last attach (the agent's `policies applied` line for it, checked against
 * tc afterwards), each namespace's own creation → attach latency, and the
 * agent's resident memory before, with all of them, and after they are
 * removed. Prints a table and writes bench/results/fleet.json.
 *   BENCH_FLEET_NAMESPACES (50): how many namespaces.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { AgentProcess } from "../lab/agent-process.js";
import { LINKS, NamespaceSet } from "../lab/namespaces.js";
import { table } from "./table.js";

const COUNT = Number(process.env.BENCH_FLEET_NAMESPACES ?? 50);
/** Targets from issue 16. */
const TARGET_LAST_ATTACH_MS = 2_000;
const TARGET_MEMORY_RETURN = 0.1;
/** How long the agent is left alone before its memory is read: in-flight work and timers settle. */
const SETTLE_MS = 2_000;

/** Resident memory of process @pid, in MiB (VmRSS). */
async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]) / 1024;
}

/** Resident memory of @pid's children (the agent's link watchers), in MiB. */
async function childrenRssMiB(pid: number): Promise<{ count: number; mib: number }> {
  const listed = await execa("pgrep", ["-P", String(pid)], { reject: false });
  const pids = String(listed.stdout).split("\n").filter(Boolean).map(Number);
  let mib = 0;
  for (const child of pids) mib += await rssMiB(child).catch(() => 0); // exited since listed
  return { count: pids.length, mib };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
const round = (value: number, digits = 1) => Number(value.toFixed(digits));

async function main(): Promise<void> {
  const scratch = await mkdtemp(path.join(tmpdir(), "intercept-bench-fleet-"));
  const namespaces = NamespaceSet.unique("bf");
  const keys = new Set<string>();
  let agent: AgentProcess | undefined;
  try {
    const policies = path.join(scratch, "policies");
    await mkdir(policies);
    await writeFile(path.join(policies, "demo.yaml"), "interceptors:\n  - { port: 9000, originalPort: 8000 }\n");
    agent = new AgentProcess([policies, "--netns-match", `${namespaces.prefix}*`, "--metrics", "127.0.0.1:0"]);
    const started = await agent.waitFor((l) => l.event === "agent started" && typeof l.metrics === "string");
    await agent.waitFor((l) => l.event === "agent started" && Array.isArray(l.namespaces));
    const healthz = `http://${started.metrics}/healthz`;
    await settle();
    const before = await rssMiB(agent.pid);

    const from = agent.lines.length;
    const created = new Map<string, number>();
    const burstStart = performance.now();
    for (let i = 0; i < COUNT; i++) {
      const name = namespaces.name(i);
      created.set(name, await namespaces.create(name));
      keys.add(await namespaces.key(name));
    }
    const lastCreated = Math.max(...created.values());
    const applied = new Map<string, number>();
    for (const name of created.keys()) {
      const line = await agent.waitFor((l) => l.event === "applied" && l.namespace === name && /policies applied/.test(String(l.message)), from, 60_000);
      applied.set(name, line.receivedAt as number);
    }
    const lastAttached = Math.max(...applied.values());
    const unattached = (await Promise.all([...created.keys()].flatMap((name) => LINKS.map(async (link) => ((await namespaces.attached(name, link)) ? [] : [`${name}/${link}`]))))).flat();
    if (unattached.length > 0) throw new Error(`not attached: ${unattached.join(", ")}`);
    const ready = await (await fetch(healthz)).text();
    if (!ready.startsWith(`ready: ${COUNT} `)) throw new Error(`/healthz: ${ready}`);
    const errors = agent.lines.slice(from).filter((l) => l.event === "error");
    await settle();
    const serving = await rssMiB(agent.pid);
    const watchers = await childrenRssMiB(agent.pid);

    const removing = agent.lines.length;
    const removeStart = performance.now();
    for (const name of created.keys()) await namespaces.delete(name);
    for (const name of created.keys()) await agent.waitFor((l) => l.event === "namespace gone" && l.namespace === name, removing, 30_000);
    const removed = performance.now() - removeStart;
    const leftPins = [...keys].filter((key) => existsPin(key));
    if (leftPins.length > 0) throw new Error(`pins left: ${leftPins.join(", ")}`);
    errors.push(...agent.lines.slice(removing).filter((l) => l.event === "error"));
    await settle();
    const after = await rssMiB(agent.pid);
    const watchersAfter = await childrenRssMiB(agent.pid);
    if ((await agent.stop()) !== 0) throw new Error("the agent did not stop cleanly");

    const latencies = [...created].map(([name, at]) => applied.get(name)! - at).sort((a, b) => a - b);
    const results = {
      measuredAt: new Date().toISOString(),
      namespaces: COUNT,
      burstMs: round(lastCreated - burstStart),
      lastCreationToLastAttachMs: round(lastAttached - lastCreated),
      targetMs: TARGET_LAST_ATTACH_MS,
      creationToAttachMs: { p50: round(latencies[Math.floor(latencies.length / 2)]!), max: round(latencies.at(-1)!) },
      removalMs: round(removed),
      agentRssMiB: { before: round(before), serving: round(serving), after: round(after), afterVsBefore: round(after / before - 1, 3) },
      linkWatchers: { serving: watchers.count, servingRssMiB: round(watchers.mib), after: watchersAfter.count },
      errorLines: errors.length,
    };
    process.stdout.write(`${table(["measure", "value", "target"], [
      ["namespaces created in a burst", `${COUNT} in ${results.burstMs} ms`, ""],
      ["last creation → last attach", `${results.lastCreationToLastAttachMs} ms`, `≤ ${TARGET_LAST_ATTACH_MS} ms`],
      ["creation → attach, per namespace", `p50 ${results.creationToAttachMs.p50} ms, max ${results.creationToAttachMs.max} ms`, ""],
      ["all removed → all forgotten", `${results.removalMs} ms`, ""],
      ["agent RSS before", `${results.agentRssMiB.before} MiB`, ""],
      [`agent RSS serving ${COUNT}`, `${results.agentRssMiB.serving} MiB`, ""],
      ["agent RSS after removal", `${results.agentRssMiB.after} MiB (${(results.agentRssMiB.afterVsBefore * 100).toFixed(1)}%)`, `within ${TARGET_MEMORY_RETURN * 100}% of before`],
      [`link watchers (ip monitor) serving ${COUNT}`, `${watchers.count}, ${results.linkWatchers.servingRssMiB} MiB in all`, ""],
      ["link watchers after removal", String(watchersAfter.count), "0"],
      ["error lines", String(errors.length), "0"],
    ])}\n`);
    await mkdir("bench/results", { recursive: true });
    await writeFile("bench/results/fleet.json", `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    agent?.kill();
    await namespaces.remove(keys);
    await rm(scratch, { recursive: true, force: true });
  }
}

function existsPin(key: string): boolean {
  return existsSync(`/sys/fs/bpf/intercept/${key}`);
}

await main();
