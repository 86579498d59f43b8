/**
 * `npm run bench:tc-attach` (as root): what attaching a namespace's links
 * costs the agent, side by side in one run: the qdiscs and filters made by
 * rtnetlink in this process (attachSteps, as the agent does) against one
 * `nsenter tc -batch` process making the same (as it did before). Per
 * round, in shuffled order, each variant attaches clsact and the demo
 * policy's filters to both links (a, b) of a namespace of its own making;
 * measured: this process's CPU (user + system) and the wall time. The
 * process is first grown to about the agent's size (~130 MiB RSS), since a
 * spawn's cost grows with it. Prints the median of the per-round ratios
 * (tc -batch / in-process) and their spread; the machine's load is printed
 * too (others may share it). The namespace and its pins are removed, on
 * failure too.
 *   BENCH_TC_ROUNDS (30): rounds.
 */
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { LINKS, NamespaceSet } from "../lab/namespaces.js";
import { attachSteps, deleteClsact, type TcStep } from "../src/kernel/tc.js";
import { PinLayout } from "../src/kernel/pins.js";
import { loadAverage, median, shuffle, spread } from "./stats.js";

const ROUNDS = Number(process.env.BENCH_TC_ROUNDS ?? 30);
const HOOKS = ["egress", "ingress"] as const;
const CLI = new URL("../../bin/intercept.js", import.meta.url).pathname;

interface Cost {
  cpu: number;
  wall: number;
}

async function measure(attach: () => unknown): Promise<Cost> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await attach();
  const used = process.cpuUsage(cpu);
  return { cpu: (used.user + used.system) / 1000, wall: performance.now() - started };
}

const set = NamespaceSet.unique("tca");
const scratch = await mkdtemp(path.join(tmpdir(), "intercept-bench-tc-"));
let key: string | undefined;
try {
  const name = set.name(0);
  await set.create(name);
  key = await set.key(name);
  // The demo policy applied once: its programs pinned, as the agent's are.
  const policy = path.join(scratch, "demo.yaml");
  await writeFile(policy, "interceptors:\n  - { port: 9000, originalPort: 8000 }\n");
  await execa("node", [CLI, "apply", "--yes", policy, "--netns", name], { stdin: "ignore" });
  const pins = new PinLayout(key);
  const { stdout } = await execa("ls", [pins.policy("demo")]);
  const ref = { policy: "demo", version: stdout.trim().split("\n")[0]! };
  const hooks = HOOKS.filter((hook) => existsSync(pins.program(ref, hook))); // the demo's: ingress
  const steps: TcStep[] = LINKS.flatMap((link): TcStep[] => [
    { op: "clsact", link },
    { op: "filters", link, filters: hooks.map((hook) => ({ hook, programPin: pins.program(ref, hook) })) },
  ]);
  const batch = steps
    .flatMap((step) =>
      step.op === "clsact"
        ? [`qdisc add dev ${step.link} clsact`]
        : step.filters.map(
            (f) =>
              `filter replace dev ${step.link} ${f.hook} pref 18755 handle 0x1 bpf direct-action object-pinned ${f.programPin}`,
          ),
    )
    .join("\n");
  const netns = { name };
  const clear = async () => {
    for (const link of LINKS) await deleteClsact(netns, link);
  };
  const variants: Record<string, () => unknown> = {
    "in-process": () => {
      const { error } = attachSteps(netns, steps);
      if (error) throw error;
    },
    "tc -batch": () => execa("nsenter", [`--net=/var/run/netns/${name}`, "tc", "-batch", "-"], { input: `${batch}\n` }),
  };
  const grown = Buffer.alloc(62 * 1024 * 1024, 1); // resident: as the agent's heap and code are
  const costs: Record<string, Cost[]> = { "in-process": [], "tc -batch": [] };
  for (let round = 0; round < ROUNDS; round++)
    for (const variant of shuffle(Object.keys(variants))) {
      await clear();
      costs[variant]!.push(await measure(variants[variant]!));
    }
  const rss = Math.round(process.memoryUsage().rss / 2 ** 20);
  grown.fill(0);
  const ratio = (what: keyof Cost) =>
    costs["tc -batch"]!.map((cost, round) => cost[what] / costs["in-process"]![round]![what]);
  const show = (values: number[]) => {
    const { min, max } = spread(values);
    return `${median(values).toFixed(2)} (${min.toFixed(2)}–${max.toFixed(2)})`;
  };
  console.log(
    `attach of ${LINKS.length} links (clsact, ${hooks.join(" and ")} filter each), ${ROUNDS} rounds, RSS ${rss} MiB`,
  );
  for (const variant of Object.keys(costs)) {
    const of = (what: keyof Cost) => show(costs[variant]!.map((cost) => cost[what]));
    console.log(`  ${variant.padEnd(11)} CPU ms ${of("cpu")}   wall ms ${of("wall")}`);
  }
  console.log(
    `  ratio tc -batch / in-process, median of rounds (spread): CPU ${show(ratio("cpu"))}, wall ${show(ratio("wall"))}`,
  );
  console.log(`  load average: ${loadAverage().join(" ")} (a shared machine)`);
} finally {
  await set.remove(key ? [key] : []);
  await rm(scratch, { recursive: true, force: true });
}
