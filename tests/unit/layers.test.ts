/**
 * The folders of src/ are layers, each importing only from those below it:
 *
 *   model ← base ← kernel ← datapath ← host ← stages ← reconcile ← front ← cli
 *
 * model:     src/model/ — the shared vocabulary; imports nothing of ours
 * base:      the top-level files everything may use: errors.ts, diagnostics.ts
 *            (errors carry diagnostics), glob.ts, cgroup-path.ts, cache-dir.ts,
 *            and api.ts (the policy language's types, which validate reads)
 * kernel:    src/kernel/ — the tools (bpftool, tc, ip), pins, namespaces
 * datapath:  src/datapath/ — the Datapath port and its kernel implementation
 * host:      src/host/ — the Host port (a datapath per namespace, namespace,
 *            link and cgroup events, the namespace lock, pins, privileges,
 *            signals) and its kernel implementation
 * stages:    src/load/, src/validate/, src/compile/, src/toolchain/ — the pipeline's
 *            stages
 * reconcile: src/reconcile/, src/plan/ — plans and their execution; src/cni/, the
 *            CNI plugin's node side (node programs, node table, install)
 * front:     src/commands/, src/agent/ — what the CLI runs; src/demo/, the demo's
 *            sandbox, which commands/demo.ts runs
 * cli:       src/cli.ts
 *
 * Within a layer, folders may import each other, but never in a circle;
 * commands and agent are siblings that share nothing but what lies below.
 * Commands take the machine (kernel tools, KernelDatapath, KernelHost, the
 * lock) from the Host port only, never by importing it.
 * The imports are read with TypeScript's own pre-processor (import, export
 * … from, import(), import type), never by a regular expression.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { ts } from "ts-morph";
import { LAYERS } from "../support/layers.js";

const SRC = path.resolve(fileURLToPath(new URL("../../../src", import.meta.url)));

const LAYER_OF = new Map(LAYERS.flatMap((units, layer) => units.map((unit) => [unit, layer] as const)));

/** The unit a path below src/ belongs to: its first segment. */
function unitOf(relative: string): string {
  return relative.split(path.sep)[0]!;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith(".ts") ? [full] : [];
  });
}

interface Import {
  from: string;
  to: string;
}

/** Every import of ours in src/, file to file (relative to src/). */
function imports(): Import[] {
  return sourceFiles(SRC).flatMap((file) => {
    const info = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
    return info.importedFiles
      .map((imported) => imported.fileName)
      .filter((specifier) => specifier.startsWith("."))
      .map((specifier) => ({
        from: path.relative(SRC, file),
        to: path.relative(SRC, path.resolve(path.dirname(file), specifier.replace(/\.js$/, ".ts"))),
      }));
  });
}

const ALL = imports();

test("the import reader sees the imports it must judge", () => {
  // A reader that saw nothing would pass every check below.
  assert.ok(ALL.length > 200, `${ALL.length} imports`);
  assert.ok(ALL.some((i) => i.from === "cli.ts" && i.to === path.join("agent", "index.ts")));
  assert.ok(ALL.some((i) => i.from === path.join("datapath", "kernel.ts") && i.to.startsWith(`kernel${path.sep}`)));
});

test("every unit of src/ has a layer", () => {
  assert.deepEqual(
    readdirSync(SRC).filter((unit) => !LAYER_OF.has(unit)),
    [],
  );
});

test("no import points up a layer", () => {
  const upward = ALL.filter(({ from, to }) => LAYER_OF.get(unitOf(to))! > LAYER_OF.get(unitOf(from))!).map(
    ({ from, to }) => `${from} → ${to}`,
  );
  assert.deepEqual(upward, []);
});

test("src/model imports nothing of ours", () => {
  const outside = ALL.filter(({ from, to }) => unitOf(from) === "model" && unitOf(to) !== "model").map(
    ({ from, to }) => `${from} → ${to}`,
  );
  assert.deepEqual(outside, []);
});

test("commands and agent import nothing of each other", () => {
  const across = ALL.filter(({ from, to }) => [unitOf(from), unitOf(to)].sort().join() === "agent,commands").map(
    ({ from, to }) => `${from} → ${to}`,
  );
  assert.deepEqual(across, []);
});

/**
 * The machine as commands may not reach it: the kernel's tools, the
 * kernel implementations of the ports, and the lock. A command takes all
 * of that from the Host its CommandContext carries, which src/cli.ts
 * assembles (KernelHost) in one place, as it assembles the agent's.
 */
function reachesTheMachine(to: string): boolean {
  return (
    unitOf(to) === "kernel" ||
    [path.join("datapath", "kernel.ts"), path.join("host", "kernel.ts"), path.join("host", "lock.ts")].includes(to)
  );
}

test("commands take the machine from the Host port only", () => {
  const direct = ALL.filter(({ from, to }) => unitOf(from) === "commands" && reachesTheMachine(to));
  assert.deepEqual(
    direct.map(({ from, to }) => `${from} → ${to}`),
    [],
  );
  // The check sees what it judges: the one place that assembles the machine does import it.
  assert.ok(ALL.some(({ from, to }) => from === "cli.ts" && to === path.join("host", "kernel.ts")));
});

test("no two units import each other, directly or through others", () => {
  const edges = new Map<string, Set<string>>();
  for (const { from, to } of ALL) {
    const [a, b] = [unitOf(from), unitOf(to)];
    if (a !== b) edges.set(a, (edges.get(a) ?? new Set()).add(b));
  }
  assert.deepEqual(cycles(edges), []);
});

/** Each circle in @edges, once, as "a → b → a" (found by depth-first search from every unit). */
function cycles(edges: Map<string, Set<string>>): string[] {
  const found = new Set<string>();
  const visit = (unit: string, trail: string[]) => {
    const start = trail.indexOf(unit);
    if (start !== -1) {
      const circle = trail.slice(start);
      const first = circle.indexOf([...circle].sort()[0]!);
      const turned = [...circle.slice(first), ...circle.slice(0, first)];
      found.add([...turned, turned[0]].join(" → "));
      return;
    }
    for (const next of edges.get(unit) ?? []) visit(next, [...trail, unit]);
  };
  for (const unit of edges.keys()) visit(unit, []);
  return [...found].sort();
}

test("the circle finder finds circles", () => {
  const edges = new Map([
    ["a", new Set(["b"])],
    ["b", new Set(["c"])],
    ["c", new Set(["a"])],
    ["d", new Set(["a"])],
  ]);
  assert.deepEqual(cycles(edges), ["a → b → c → a"]);
  assert.deepEqual(cycles(new Map([["a", new Set(["b"])]])), []);
});
