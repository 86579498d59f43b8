import type { ProgramBuilder } from "../toolchain/index.js";
import { compileComposition, compilePolicies, type CompiledPolicy } from "../compile/index.js";
import { versionOf, type VersionRef } from "../model/version.js";
import { type CgroupHook, type Hook } from "../model/hooks.js";
import type { Diagnostic } from "../diagnostics.js";
import { compositionMembers } from "../model/composition.js";
import { PolicyError } from "../errors.js";
import type { LoadedPolicy } from "../load/index.js";
import { validatePolicies, type ValidPolicy } from "../validate/index.js";
import { loadAndValidate, type ReadOptions } from "./policy-worker/client.js";

/**
 * One policy as it should be live, carried as one record through plan and
 * apply: the policy as loaded and as validated, the C of its own program
 * (the composition of it alone, src/model/composition.ts), and the identity
 * of the program that C builds into (content hash of the source and
 * compiler). Where policies share a link, plan composes their programs
 * (composeDesired) with @identify.
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
  /** How a program holding this policy is identified: the builder's identify (clang's, or prebuilt objects'). */
  identify: (compiled: CompiledPolicy) => Promise<string>;
}

/**
 * One program as it should be live: a composition's (the policies that
 * select one link, src/model/composition.ts), or one policy's own.
 */
export interface DesiredProgram {
  /** The composition's name: program.policy. */
  name: string;
  /** Its policies, in composition order. */
  members: ValidPolicy[];
  compiled: CompiledPolicy;
  contentHash: string;
  program: VersionRef;
  hooks: Hook[];
  cgroupHooks: CgroupHook[];
}

/** A policy's own program: the composition of it alone. */
export function ownProgram(want: DesiredPolicy): DesiredProgram {
  return {
    name: want.policy.name,
    members: [want.policy],
    compiled: want.compiled,
    contentHash: want.contentHash,
    program: want.program,
    hooks: want.hooks,
    cgroupHooks: want.cgroupHooks,
  };
}

/**
 * Composed programs already compiled and identified, by their policies'
 * identities: the agent plans the same sets again and again. What the
 * program is depends on the rules' selectors only, never on `enabled`.
 */
const composedCache = new Map<string, Promise<{ compiled: CompiledPolicy; contentHash: string }>>();
const COMPOSED_CACHE_LIMIT = 256;

/**
 * The programs of @sets (each two or more policy names of @desired):
 * compiled and identified, holding @desired's policies as they are now.
 */
export async function composeDesired(
  desired: readonly DesiredPolicy[],
  sets: readonly string[][],
): Promise<DesiredProgram[]> {
  const byName = new Map(desired.map((want) => [want.policy.name, want]));
  return Promise.all(
    sets.map(async (set) => {
      const members = compositionMembers(set).map((name) => {
        const want = byName.get(name);
        if (!want) throw new Error(`composition of ${set.join(", ")}: no desired policy ${name}`);
        return want;
      });
      const key = members.map((want) => `${want.policy.name}@${want.contentHash}`).join(",");
      let built = composedCache.get(key);
      if (!built) {
        built = composeProgram(members);
        if (composedCache.size >= COMPOSED_CACHE_LIMIT) composedCache.delete(composedCache.keys().next().value!);
        composedCache.set(key, built);
      }
      try {
        const { compiled, contentHash } = await built;
        return {
          name: compiled.policy.name,
          members: members.map((want) => want.policy),
          compiled,
          contentHash,
          program: { policy: compiled.policy.name, version: versionOf(contentHash) },
          hooks: compiled.hooks,
          cgroupHooks: compiled.cgroupHooks,
        };
      } catch (error) {
        composedCache.delete(key); // not kept: the next plan tries again
        throw error;
      }
    }),
  );
}

async function composeProgram(members: DesiredPolicy[]): Promise<{ compiled: CompiledPolicy; contentHash: string }> {
  const compiled = compileComposition(members.map((want) => want.policy));
  return { compiled, contentHash: await members[0]!.identify(compiled) };
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
    identify: (program) => builder.identify(program),
  };
}
