import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { ValidPolicy } from "../validate/index.js";
import { renderPolicySource } from "./render.js";

export const GENERATED_DIR = "generated";

/** A policy rendered to C: what build compiles and what the golden tests pin. */
export interface CompiledPolicy {
  policy: ValidPolicy;
  /** generated/<name>.bpf.c */
  sourcePath: string;
  source: string;
  /** sha256 of the source: together with the clang version, the program's identity. */
  sourceHash: string;
}

/** Stage 3: renders each policy's specialised C. Pure: writes nothing. */
export function compilePolicies(policies: ValidPolicy[]): CompiledPolicy[] {
  return policies.map((policy) => {
    const source = renderPolicySource(policy);
    return {
      policy,
      sourcePath: path.join(GENERATED_DIR, `${policy.name}.bpf.c`),
      source,
      sourceHash: createHash("sha256").update(source).digest("hex"),
    };
  });
}

/** Writes generated/<name>.bpf.c for each compiled policy; returns the paths it changed. */
export async function writeGenerated(compiled: CompiledPolicy[]): Promise<string[]> {
  const changed = await findDrift(compiled);
  await mkdir(GENERATED_DIR, { recursive: true });
  for (const entry of compiled) {
    if (changed.includes(entry.sourcePath)) await writeFile(entry.sourcePath, entry.source);
  }
  return changed;
}

/** The generated files that differ from what compile would write (drift). */
export async function findDrift(compiled: CompiledPolicy[]): Promise<string[]> {
  const drifted: string[] = [];
  for (const entry of compiled) {
    const current = await readFile(entry.sourcePath, "utf8").catch(() => undefined);
    if (current !== entry.source) drifted.push(entry.sourcePath);
  }
  return drifted;
}
