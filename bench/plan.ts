/**
 * `npm run bench:plan`: the control plane with many policy files (issue
 * 20). Twenty policy files of ten rules each, all selecting one link (so
 * they compose into one program), against one file holding the same two
 * hundred rules: `plan` (load → validate → compile → identify → observe →
 * compose → plan) and `apply` (the same, then executing the plan) over the
 * fake datapath, so what is measured is intercept's own work, not the
 * kernel's or clang's (identification hashes the C with clang's version,
 * as on a node). Every measurement reads policies no earlier one read
 * (their ports shifted), so nothing is served from what this process
 * rendered before: each is what a `plan` of changed policies costs, the
 * agent's cache of composed programs left out.
 *
 * Code that runs once a file runs twenty times a plan on one side, so the
 * ratio depends on how far V8 has optimised the process; three regimes are
 * measured, each side by side:
 *   - cold: a new process for each measurement, as `intercept plan` and
 *     `apply` run from the command line (timed from the pipeline's start;
 *     Node's own start and module loading are left out, the same on both
 *     sides);
 *   - first plans: the first rounds of one process (one warm-up each);
 *   - warm: the same process after BENCH_PLAN_WARM_ROUNDS more rounds, as
 *     the agent plans after every policy change it has seen.
 * Each round runs the four (variant, command) pairs in a shuffled order;
 * the ratio is taken per round, and the median of the rounds' ratios is
 * reported with their spread (min–max), and the load averages at the start
 * and the end (other work on the machine widens the spread). Beside the
 * wall-clock ratio (the target's), the ratio of the CPU time the process
 * spent (all its threads: the main one and the policy worker), which
 * waiting for a core on a busy machine does not stretch. Prints a table and
 * writes bench/results/plan.json.
 *   BENCH_PLAN_ROUNDS (21): measured rounds of each regime.
 *   BENCH_PLAN_WARM_ROUNDS (100): rounds run, unmeasured, between the first
 *   plans and the warm ones.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { clangBuilder } from "../src/toolchain/index.js";
import { executePlan, loadDesired, planRun } from "../src/reconcile/index.js";
import { FakeDatapath } from "../tests/support/fake-datapath.js";
import { loadAverage, median, shuffle, spread } from "./stats.js";
import { table } from "./table.js";

const ROUNDS = Number(process.env.BENCH_PLAN_ROUNDS ?? 21);
const WARM_ROUNDS = Number(process.env.BENCH_PLAN_WARM_ROUNDS ?? 100);
const FILES = 20;
const RULES = 10;
const TARGET = 1.2;

type Variant = "files" | "one";
type Command = "plan" | "apply";
type Regime = "cold" | "first plans" | "warm";

/** The argument that makes this file measure one (command, folder) and print it: a cold measurement. */
const ONE_MEASUREMENT = "--one-measurement";

/** A rule's ports, shifted by @shift (each measurement's own policies). */
function rule(file: number, index: number, shift: number): string {
  const offset = shift + file * RULES + index;
  return `  - { originalPort: ${10_000 + offset}, port: ${30_000 + offset} }\n`;
}

/** The two variants of the same rules, in a new folder under @root for measurement number @shift. */
async function writePolicies(root: string, shift: number): Promise<Record<Variant, string>> {
  const files = path.join(root, `files-${shift}`);
  const one = path.join(root, `one-${shift}`);
  await mkdir(files);
  await mkdir(one);
  let all = "interfaces: { include: [eth0] }\ninterceptors:\n";
  for (let file = 0; file < FILES; file++) {
    let text = "interfaces: { include: [eth0] }\ninterceptors:\n";
    for (let index = 0; index < RULES; index++) text += rule(file, index, shift);
    all += text.slice(text.indexOf("\n", text.indexOf("interceptors:")) + 1);
    await writeFile(path.join(files, `team_${String(file).padStart(2, "0")}.yaml`), text);
  }
  await writeFile(path.join(one, "all.yaml"), all);
  return { files, one };
}

const noObjects = { objectFor: () => ({ objectPath: "unused.bpf.o", prefixes: [] }) };

/** What one measurement took, in ms: wall-clock time, and CPU time of the process (every thread's). */
interface Took {
  ms: number;
  cpuMs: number;
}

/** One `plan` or `apply` of the policies in @dir against a namespace with one link, fresh each time. */
async function measure(dir: string, command: Command): Promise<Took> {
  const fake = new FakeDatapath({ name: "bench" });
  fake.addLink("eth0");
  const start = performance.now();
  const cpuAtStart = process.cpuUsage();
  const run = await planRun(await loadDesired([dir], clangBuilder), fake, { warnings: true });
  if (command === "apply") await executePlan(run.plan, fake, noObjects);
  const cpu = process.cpuUsage(cpuAtStart);
  const elapsed = { ms: performance.now() - start, cpuMs: (cpu.user + cpu.system) / 1000 };
  const expected = command === "plan" ? 2 : 0;
  const left = command === "plan" ? run.plan.changes.length : (await planRun(run.desired, fake)).plan.changes.length;
  if (left !== expected) throw new Error(`${command} of ${dir}: ${left} changes, expected ${expected}`);
  return elapsed;
}

/** @command on @dir in a new process (this file with ONE_MEASUREMENT): what the command line pays. */
async function measureCold(dir: string, command: Command): Promise<Took> {
  const { stdout } = await execa(process.execPath, [fileURLToPath(import.meta.url), ONE_MEASUREMENT, dir, command]);
  return JSON.parse(stdout) as Took;
}

interface Row {
  regime: Regime;
  command: Command;
  filesMs: number;
  oneMs: number;
  ratio: number;
  spread: { min: number; max: number };
  cpuRatio: number;
  cpuSpread: { min: number; max: number };
}

/**
 * Runs @rounds rounds of the four (variant, command) pairs in a shuffled
 * order, each on policies written for it alone, measured by @measureOne;
 * the rows of @regime when it is measured, nothing for a warm-up.
 */
async function runRounds(
  root: string,
  regime: Regime,
  rounds: number,
  measureOne: (dir: string, command: Command) => Promise<Took>,
): Promise<Row[]> {
  const commands: Command[] = ["plan", "apply"];
  const took = new Map<string, Took[]>();
  for (let round = 0; round < rounds; round++) {
    const pairs = shuffle(commands.flatMap((command) => VARIANTS.map((variant) => ({ command, variant }))));
    for (const { command, variant } of pairs) {
      const dirs = await writePolicies(root, written++);
      const key = `${command}|${variant}`;
      took.set(key, [...(took.get(key) ?? []), await measureOne(dirs[variant], command)]);
      await Promise.all(Object.values(dirs).map((dir) => rm(dir, { recursive: true, force: true })));
    }
  }
  return commands.map((command) => {
    const files = took.get(`${command}|files`) ?? [];
    const one = took.get(`${command}|one`) ?? [];
    const ratios = files.map((each, round) => each.ms / one[round]!.ms);
    const cpuRatios = files.map((each, round) => each.cpuMs / one[round]!.cpuMs);
    return {
      regime,
      command,
      filesMs: median(files.map((each) => each.ms)),
      oneMs: median(one.map((each) => each.ms)),
      ratio: median(ratios),
      spread: spread(ratios),
      cpuRatio: median(cpuRatios),
      cpuSpread: spread(cpuRatios),
    };
  });
}

const VARIANTS = ["files", "one"] as const;
/** Measurements so far in this process: each writes its policies under its own number. */
let written = 0;

async function main() {
  const root = await mkdtemp(path.join(tmpdir(), "intercept-bench-plan-"));
  const loadAtStart = loadAverage();
  console.log(`load average at start: ${loadAtStart.join(" ")}`);
  try {
    const cold = await runRounds(root, "cold", ROUNDS, measureCold);
    await runRounds(root, "first plans", 1, measure); // warm-up: each pair once
    const first = await runRounds(root, "first plans", ROUNDS, measure);
    await runRounds(root, "warm", WARM_ROUNDS, measure);
    const warm = await runRounds(root, "warm", ROUNDS, measure);
    const rows = [...cold, ...first, ...warm];
    const loadAtEnd = loadAverage();
    console.log(`load average at end: ${loadAtEnd.join(" ")}`);
    console.log(
      `control plane: ${FILES} policy files × ${RULES} rules on one link vs one file of the same ${FILES * RULES} rules, over the fake datapath (median of ${ROUNDS} per-round ratios, shuffled order; CPU: the process's CPU time, all threads; warm: after ${WARM_ROUNDS} more rounds):`,
    );
    console.log(
      table(
        [
          "regime",
          "command",
          `${FILES} files ms`,
          "one file ms",
          "files/one",
          "spread (min–max)",
          "CPU files/one",
          "CPU spread",
          "target",
        ],
        rows.map((r) => [
          r.regime,
          r.command,
          r.filesMs.toFixed(1),
          r.oneMs.toFixed(1),
          r.ratio.toFixed(3),
          `${r.spread.min.toFixed(3)}–${r.spread.max.toFixed(3)}`,
          r.cpuRatio.toFixed(3),
          `${r.cpuSpread.min.toFixed(3)}–${r.cpuSpread.max.toFixed(3)}`,
          `≤ ${TARGET}`,
        ]),
      ),
    );
    await mkdir("bench/results", { recursive: true });
    const result = {
      measuredAt: new Date().toISOString(),
      rounds: ROUNDS,
      warmRounds: WARM_ROUNDS,
      files: FILES,
      rules: RULES,
      loadAverage: { start: loadAtStart, end: loadAtEnd },
      rows,
    };
    await writeFile("bench/results/plan.json", `${JSON.stringify(result, null, 2)}\n`);
    console.log("\nwritten: bench/results/plan.json");
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

if (process.argv[2] === ONE_MEASUREMENT) {
  const [dir, command] = process.argv.slice(3) as [string, Command];
  console.log(JSON.stringify(await measure(dir, command)));
} else {
  await main();
}
