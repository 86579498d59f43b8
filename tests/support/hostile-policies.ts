/**
 * Hostile policies too large to commit, or whose outcome depends on the
 * machine (which of two bounds a file reaches first): built by the tests
 * that need them.
 */

/**
 * A type whose checking grows without end: a binary tree of instantiations
 * 24 levels deep, then a union of its leaves. tsc gives up on neither
 * before minutes and gigabytes; the worker's deadline (or heap) stops it.
 */
export const RECURSIVE_TYPE = [
  'import { definePolicy } from "intercept-bpf";',
  'type Tree<N extends unknown[]> = N["length"] extends 24 ? { leaf: N } : { left: Tree<[...N, 0]>; right: Tree<[...N, 1]> };',
  "type Leaves<T> = T extends { leaf: infer L } ? L : T extends { left: infer A; right: infer B } ? Leaves<A> | Leaves<B> : never;",
  "const leaves: Leaves<Tree<[]>> = [];",
  "export default definePolicy({ interceptors: [] });",
  "",
].join("\n");

/** A string literal of @megabytes MB in a TS policy: far past the file size bound. */
export function hugeStringPolicy(megabytes: number): string {
  return `import { definePolicy } from "intercept-bpf";\nexport default definePolicy({ name: "${"x".repeat(megabytes * 1024 * 1024)}", interceptors: [] });\n`;
}

/** A valid YAML policy just under the file size bound (about 14,000 rules): slow to read, though not hostile. */
export function largeYamlPolicy(): string {
  const lines = ["interceptors:"];
  for (let index = 0; lines.length < 14_000; index += 1) {
    lines.push(
      `  - { originalPort: ${1000 + index}, port: ${30_000 + index}, sources: [198.18.${index >> 8}.${index & 255}/32] }`,
    );
  }
  return `${lines.join("\n")}\n`;
}
