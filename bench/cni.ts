/**
 * `npm run bench:cni`: how long a CNI ADD of intercept-cni takes, as a
 * container runtime sees it (exec to exit), into fresh pod namespaces:
 * each ADD makes the pod link's clsact qdisc, records it, and attaches the
 * node's program. The node's side is set up by the agent's own CNI module
 * (src/agent/cni.ts) in a folder of this run. Side by side, in the same
 * loop: the floor of a plugin written in Node (a Node process that reads
 * the configuration and prints prevResult, doing nothing else), and
 * `intercept version` (the CLI's start), and the machine's floor for any
 * plugin: a static binary that does nothing (busybox true), whose time is
 * fork, exec and the scheduler under whatever load the machine has. Timed
 * by bash around each exec
 * ($EPOCHREALTIME), as a runtime's fork and exec would. The load average
 * is written with the results: on a busy machine every row grows with the
 * exec floor. Prints a table and
 * writes bench/results/cni.json.
 *   BENCH_CNI_ADDS (200): how many ADDs, each into a namespace of its own.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { LINKS, NamespaceSet } from "../lab/namespaces.js";
import { CniMode } from "../src/agent/cni.js";
import type { Logger } from "../src/agent/log.js";
import { readPolicySet } from "../src/agent/policy-watcher.js";
import { PIN_ROOT } from "../src/kernel/pins.js";
import { table } from "./table.js";

const COUNT = Number(process.env.BENCH_CNI_ADDS ?? 200);
/** The target of issue 22. */
const TARGET_P99_MS = 10;
const PREV_RESULT = { cniVersion: "1.0.0", interfaces: [{ name: LINKS[0] }], ips: [] };

/** Milliseconds of each exec of @command (a bash word list) with @input on stdin, once per namespace of @names. */
async function timeExecs(command: string, input: string, names: string[], env: Record<string, string>) {
  const script = [
    'for name in "$@"; do',
    "  start=$EPOCHREALTIME",
    `  CNI_NETNS=/var/run/netns/$name ${command} < "$INPUT" > /dev/null || echo "failed $name" >&2`,
    "  end=$EPOCHREALTIME",
    '  echo "$start $end"',
    "done",
  ].join("\n");
  const { stdout, stderr } = await execa("bash", ["-c", script, "bash", ...names], {
    env: { ...env, INPUT: input },
  });
  if (stderr.trim()) throw new Error(`an exec failed: ${stderr.split("\n")[0]}`);
  return stdout
    .trim()
    .split("\n")
    .map((line) => {
      const [start, end] = line.split(" ").map(Number);
      return (end! - start!) * 1000;
    });
}

function percentiles(values: number[]) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  const round = (ms: number) => Math.round(ms * 100) / 100;
  return { p50: round(at(0.5)), p99: round(at(0.99)), max: round(sorted[sorted.length - 1]!) };
}

async function main(): Promise<void> {
  const namespaces = NamespaceSet.unique("cb");
  const scratch = await mkdtemp(path.join(tmpdir(), `${namespaces.prefix}bench-`));
  const binDir = path.join(scratch, "bin");
  const confDir = path.join(scratch, "net.d");
  await mkdir(confDir, { recursive: true });
  await writeFile(
    path.join(confDir, "10-pods.conflist"),
    JSON.stringify({ cniVersion: "1.0.0", name: "pods", plugins: [] }),
  );
  const policy = path.join(scratch, "proxy.yaml");
  await writeFile(policy, "interceptors:\n  - { originalPort: 8000, port: 9000 }\n");
  const lines: string[] = [];
  const log: Logger = (event, message) => lines.push(`${event}: ${message}`);
  const nodeTable = path.join(scratch, "node-table.json");
  const cni = new CniMode({ binDir, confDir, failurePolicy: "closed", nodeTable }, [`${namespaces.prefix}*`], log);
  const names = Array.from({ length: COUNT }, (_, i) => namespaces.name(i));
  try {
    await cni.start(await readPolicySet([policy], undefined));
    for (const name of names) await namespaces.create(name);
    const input = path.join(scratch, "add.json");
    const config = { cniVersion: "1.0.0", name: "pods", type: "intercept-cni", nodeTable, prevResult: PREV_RESULT };
    await writeFile(input, JSON.stringify(config));
    const env = { CNI_COMMAND: "ADD", CNI_IFNAME: LINKS[0], CNI_CONTAINERID: "bench", CNI_PATH: binDir };
    const plugin = percentiles(await timeExecs(path.join(binDir, "intercept-cni"), input, names, env));
    for (const name of names.slice(0, 3)) {
      if (!(await namespaces.attached(name, LINKS[0]))) throw new Error(`${name}: the ADD attached nothing`);
    }
    const nodeFloorScript = path.join(scratch, "node-plugin.mjs");
    await writeFile(
      nodeFloorScript,
      'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => process.stdout.write(JSON.stringify(JSON.parse(s).prevResult)));\n',
    );
    const sample = names.slice(0, Math.min(COUNT, 100));
    const execFloor = percentiles(await timeExecs("/usr/bin/busybox true", input, names, env));
    const nodeFloor = percentiles(await timeExecs(`node ${nodeFloorScript}`, input, sample, env));
    const cliStart = percentiles(
      await timeExecs(`node ${path.resolve("bin/intercept.js")} version`, input, sample.slice(0, 30), env),
    );
    const results = {
      adds: COUNT,
      pluginAddMs: plugin,
      execFloorMs: execFloor,
      nodePluginFloorMs: nodeFloor,
      interceptCliStartMs: cliStart,
      targetP99Ms: TARGET_P99_MS,
      // The machine's load when the run ended (1, 5, 15 min): every figure here is fork, exec and the scheduler first.
      loadAverage: loadavg().map((load) => Math.round(load * 100) / 100),
      withinTarget: plugin.p99 <= TARGET_P99_MS,
    };
    const row = (what: string, p: { p50: number; p99: number; max: number }, target: string) => [
      what,
      `p50 ${p.p50} ms, p99 ${p.p99} ms, max ${p.max} ms`,
      target,
    ];
    process.stdout.write(
      `${table(
        ["measure", "value", "target"],
        [
          row(`intercept-cni ADD (C, static), ${COUNT} fresh pods`, plugin, `p99 ≤ ${TARGET_P99_MS} ms`),
          row(`exec floor: a static binary doing nothing, ${COUNT} runs`, execFloor, ""),
          row(`a Node plugin's floor (read stdin, print), ${sample.length} runs`, nodeFloor, ""),
          row(`intercept version (the CLI's start), ${Math.min(30, sample.length)} runs`, cliStart, ""),
        ],
      )}\n`,
    );
    await mkdir("bench/results", { recursive: true });
    await writeFile("bench/results/cni.json", `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    await cni.stop(false);
    for (const name of namespaces.made) {
      const key = await namespaces.key(name).catch(() => undefined); // never created: nothing pinned
      if (key) await rm(path.join(PIN_ROOT, key), { recursive: true, force: true });
      await execa("ip", ["netns", "del", name], { reject: false });
    }
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
