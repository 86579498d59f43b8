import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { CGROUP_HOOKS, type CgroupHook, type Hook } from "../datapath/types.js";
import type { ValidPolicy } from "../validate/index.js";
import { attachesToLinks } from "../validate/outbound.js";
import { renderPolicySource, type MatchStrategy } from "./render.js";

export const GENERATED_DIR = "generated";

/** A policy rendered to C: what build compiles and what the golden tests pin. */
export interface CompiledPolicy {
  policy: ValidPolicy;
  /** generated/<name>.bpf.c */
  sourcePath: string;
  source: string;
  /** sha256 of the source: together with the clang version, the program's identity. */
  sourceHash: string;
  /**
   * The programs the object holds, one per hook to attach: always ingress;
   * egress only when some rule rewrites (steer needs no reply rewrite).
   */
  hooks: Hook[];
  /** The cgroup programs the object holds: all of them for a policy with an outbound section, else none. */
  cgroupHooks: CgroupHook[];
}

/** Stage 3: renders each policy's specialised C. Pure: writes nothing. @strategy: by size unless forced. */
export function compilePolicies(policies: ValidPolicy[], strategy?: MatchStrategy): CompiledPolicy[] {
  return policies.map((policy) => {
    const source = renderPolicySource(policy, strategy);
    return {
      policy,
      sourcePath: path.join(GENERATED_DIR, `${policy.name}.bpf.c`),
      source,
      sourceHash: createHash("sha256").update(source).digest("hex"),
      hooks: programHooks(policy),
      cgroupHooks: policy.outbound ? [...CGROUP_HOOKS] : [],
    };
  });
}

/**
 * The hooks @policy's program has: the template compiles intercept_egress only
 * under POLICY_REWRITES, and an outbound-only policy has no tc program at all.
 */
export function programHooks(policy: ValidPolicy): Hook[] {
  if (!attachesToLinks(policy)) return [];
  return policy.rules.some((rule) => rule.strategy === "rewrite") ? ["ingress", "egress"] : ["ingress"];
}

/**
 * Writes generated/<name>.bpf.c for each compiled policy; with @complete (all
 * the policies, as from policies/), also removes files no policy produces.
 * Returns the paths it changed.
 */
export async function writeGenerated(compiled: CompiledPolicy[], complete = false): Promise<string[]> {
  const changed = await findDrift(compiled, complete);
  await mkdir(GENERATED_DIR, { recursive: true });
  for (const file of changed) {
    const entry = compiled.find((c) => c.sourcePath === file);
    if (entry) await writeFile(file, entry.source);
    else await rm(file);
  }
  return changed;
}

/**
 * The generated files that differ from what compile would write (drift);
 * with @complete, also those no policy produces any more.
 */
export async function findDrift(compiled: CompiledPolicy[], complete = false): Promise<string[]> {
  const drifted: string[] = [];
  for (const entry of compiled) {
    const current = await readFile(entry.sourcePath, "utf8").catch(() => undefined);
    if (current !== entry.source) drifted.push(entry.sourcePath);
  }
  if (complete) {
    const present = await readdir(GENERATED_DIR).catch(() => []);
    const stale = present.filter((name) => name.endsWith(".bpf.c")).map((name) => path.join(GENERATED_DIR, name))
      .filter((file) => !compiled.some((c) => c.sourcePath === file));
    drifted.push(...stale);
  }
  return drifted.sort();
}
