import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { CGROUP_HOOKS, type CgroupHook, type Hook } from "../model/hooks.js";
import type { ValidPolicy } from "../validate/index.js";
import { attachesToLinks } from "../validate/outbound.js";
import type { PrefixEntry } from "./match.js";
import { composePolicies } from "./compose.js";
import { renderPolicy, type MatchStrategy } from "./render.js";

export { composePolicies, likelyCompositions } from "./compose.js";

export const GENERATED_DIR = "generated";

/** A policy rendered to C: what build compiles and what the golden tests pin. */
export interface CompiledPolicy {
  /** What was rendered: a policy, or the policies of a composition as one (compose.ts). */
  policy: ValidPolicy;
  /** The policies the program holds, in composition order: [policy] for a policy's own program. */
  members: ValidPolicy[];
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
  /** The oldest kernel the program loads on: what it uses (sk_assign 5.7, kfuncs in the rewrite 6.2). */
  minimumKernel: string;
  /** What the program's prefix tries hold, filled at load (a digest of it is in the source). */
  prefixes: PrefixEntry[];
  /** The cgroup programs the object holds: all of them for a policy with an outbound section, else none. */
  cgroupHooks: CgroupHook[];
}

/**
 * Stage 3: renders each policy's specialised C. Pure: writes nothing.
 * @strategy and @prefixLimit (where address lists become tries) by size
 * unless forced.
 */
export function compilePolicies(
  policies: ValidPolicy[],
  strategy?: MatchStrategy,
  prefixLimit?: number,
): CompiledPolicy[] {
  return policies.map((policy) => compiledProgram(policy, [policy], strategy, prefixLimit));
}

/** The program of the composition of @members (src/model/composition.ts): one program for their rules together. */
export function compileComposition(
  members: readonly ValidPolicy[],
  strategy?: MatchStrategy,
  prefixLimit?: number,
): CompiledPolicy {
  const composed = composePolicies(members);
  return compiledProgram(composed.policy, composed.members, strategy, prefixLimit);
}

function compiledProgram(
  policy: ValidPolicy,
  members: ValidPolicy[],
  strategy: MatchStrategy | undefined,
  prefixLimit: number | undefined,
): CompiledPolicy {
  const { source, prefixes } = renderPolicy(policy, strategy, prefixLimit);
  let sourceHash: string | undefined;
  return {
    policy,
    members,
    sourcePath: path.join(GENERATED_DIR, `${policy.name}.bpf.c`),
    source,
    // Hashed when first read (build and prebuilt objects read it; plan does not):
    // identification hashes the source again with the compiler's version.
    get sourceHash() {
      return (sourceHash ??= createHash("sha256").update(source).digest("hex"));
    },
    hooks: programHooks(policy),
    minimumKernel: minimumKernel(policy),
    prefixes,
    cgroupHooks: programCgroupHooks(policy),
  };
}

/**
 * The oldest kernel @policy's programs load on, from what they use: the
 * rewrite reads ip_summed through the bpf_cast_to_kern_ctx kfunc (6.2);
 * steering assigns with bpf_sk_assign (5.7) and reads a TIME_WAIT socket
 * with bpf_skc_to_tcp_timewait_sock (5.9); outbound capture reads cgroup
 * ids in connect programs (5.7).
 */
export function minimumKernel(policy: ValidPolicy): string {
  const needs = [
    ...(policy.rules.some((rule) => rule.strategy === "rewrite") ? ["6.2"] : []),
    ...(policy.rules.some((rule) => rule.strategy === "steer") ? ["5.9"] : []),
    ...(policy.outbound ? ["5.7"] : []),
  ];
  return needs.sort((a, b) => b.localeCompare(a, undefined, { numeric: true }))[0] ?? "5.7";
}

/**
 * The hooks @policy's program has: the template compiles intercept_egress only
 * under POLICY_REWRITES, and an outbound-only policy has no tc program at all.
 */
export function programHooks(policy: ValidPolicy): Hook[] {
  if (!attachesToLinks(policy)) return [];
  return policy.rules.some((rule) => rule.strategy === "rewrite") ? ["ingress", "egress"] : ["ingress"];
}

/** The cgroup programs @policy's object holds: all of them for a policy with an outbound section, else none. */
export function programCgroupHooks(policy: ValidPolicy): CgroupHook[] {
  return policy.outbound ? [...CGROUP_HOOKS] : [];
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
    const current = await ifExists(() => readFile(entry.sourcePath, "utf8"));
    if (current !== entry.source) drifted.push(entry.sourcePath);
  }
  if (complete) {
    const present = (await ifExists(() => readdir(GENERATED_DIR))) ?? [];
    const stale = present
      .filter((name) => name.endsWith(".bpf.c"))
      .map((name) => path.join(GENERATED_DIR, name))
      .filter((file) => !compiled.some((c) => c.sourcePath === file));
    drifted.push(...stale);
  }
  return drifted.sort();
}

/** @read's result, or undefined when the file or folder does not exist (not yet compiled); other errors surface. */
async function ifExists<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}
