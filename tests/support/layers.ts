/**
 * The layers of src/, lowest first: what tests/unit/layers.test.ts checks
 * every import against, and what the README's folder map must draw
 * (tests/unit/docs.test.ts). One list, so the two cannot disagree.
 * Each layer's units: a folder of src/, or a top-level file.
 */
export const LAYERS: readonly (readonly string[])[] = [
  ["model"],
  ["errors.ts", "diagnostics.ts", "glob.ts", "cgroup-path.ts", "cache-dir.ts", "api.ts"],
  ["kernel"],
  ["datapath"],
  ["host"],
  ["load", "validate", "compile", "toolchain"],
  ["reconcile", "plan", "flows", "cni"],
  ["commands", "agent", "demo"],
  ["cli.ts"],
];
