import type { ProgramBuilder } from "../build/index.js";
import { compilePolicies, type CompiledPolicy } from "../compile/index.js";
import { versionOf, type CgroupHook, type Hook, type VersionRef } from "../datapath/types.js";
import type { Diagnostic } from "../diagnostics.js";
import { PolicyError } from "../errors.js";
import type { LoadedPolicy } from "../load/index.js";
import { validatePolicies, type ValidPolicy } from "../validate/index.js";
import { loadAndValidate, type ReadOptions } from "./policy-worker/client.js";

/**
 * One policy as it should be live, carried as one record through plan and
 * apply: the policy as loaded and as validated, its C, and the identity of
 * the program that C builds into (content hash of the source and compiler).
 */
export interface DesiredPolicy {
  /** The policy as read from its file, plain data: what a saved plan stores. */
  definition: unknown;
  policy: ValidPolicy;
  compiled: CompiledPolicy;
  contentHash: string;
  /** The pinned version this policy's program is, or will be, loaded as. */
  program: VersionRef;
  hooks: Hook[];
  /** The cgroup hooks of its outbound programs; none without an outbound section. */
  cgroupHooks: CgroupHook[];
}

/**
 * load → validate, both in the policy worker (policy-worker/client.ts): the
 * policies with what they were read as, or a PolicyError with every
 * problem of every file (a file too slow or too large to read among them).
 */
export async function validPolicies(
  paths: string[],
  options: ReadOptions = {},
): Promise<{ loaded: LoadedPolicy[]; policies: ValidPolicy[] }> {
  const { policies, diagnostics, validation } = await loadAndValidate(paths, options);
  const all = [...diagnostics, ...validation.diagnostics];
  if (all.length > 0) throw new PolicyError(all);
  return { loaded: policies, policies: validation.policies };
}

/**
 * validate, in this thread, after a load that found @loadProblems (reported
 * together with validation's own): for policies that are not read from
 * files, a saved plan's and init's scaffold.
 */
export function validated(loaded: LoadedPolicy[], loadProblems: Diagnostic[] = []): ValidPolicy[] {
  const { policies, diagnostics } = validatePolicies(loaded);
  const all = [...loadProblems, ...diagnostics];
  if (all.length > 0) throw new PolicyError(all);
  return policies;
}

/** load → validate → compile. */
export async function compiledPolicies(paths: string[], options: ReadOptions = {}): Promise<CompiledPolicy[]> {
  return compilePolicies((await validPolicies(paths, options)).policies);
}

/** load → validate → compile → identify: what the kernel should run for the policies at @paths. */
export async function loadDesired(
  paths: string[],
  builder: ProgramBuilder,
  options: ReadOptions = {},
): Promise<DesiredPolicy[]> {
  const { loaded, policies } = await validPolicies(paths, options);
  return desiredState(loaded, policies, builder);
}

/** compile → identify, for validated @policies; each is paired with its loaded form by file. */
export async function desiredState(
  loaded: LoadedPolicy[],
  policies: ValidPolicy[],
  builder: ProgramBuilder,
): Promise<DesiredPolicy[]> {
  const definitions = new Map(loaded.map((entry) => [entry.file, entry.value]));
  return Promise.all(
    compilePolicies(policies).map((compiled) => desiredFrom(compiled, definitions.get(compiled.policy.file), builder)),
  );
}

export async function desiredFrom(
  compiled: CompiledPolicy,
  definition: unknown,
  builder: ProgramBuilder,
): Promise<DesiredPolicy> {
  const hash = await builder.identify(compiled);
  return {
    definition,
    policy: compiled.policy,
    compiled,
    contentHash: hash,
    program: { policy: compiled.policy.name, version: versionOf(hash) },
    hooks: compiled.hooks,
    cgroupHooks: compiled.cgroupHooks,
  };
}
