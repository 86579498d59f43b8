import type { ProgramBuilder } from "../toolchain/index.js";
import {
  compileComposition,
  compilePolicies,
  programCgroupHooks,
  programHooks,
  type CompiledPolicy,
} from "../compile/index.js";
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

/**
 * A policy's own program: the composition of it alone. What it reads of
 * @want is read when asked for, so that a policy running only composed
 * with others is never rendered on its own (desiredState).
 */
export function ownProgram(want: DesiredPolicy): DesiredProgram {
  return {
    name: want.policy.name,
    members: [want.policy],
    get compiled() {
      return want.compiled;
    },
    get contentHash() {
      return want.contentHash;
    },
    get program() {
      return want.program;
    },
    hooks: want.hooks,
    cgroupHooks: want.cgroupHooks,
  };
}

/**
 * Composed programs already rendered, by their policies' names: the agent plans
 * the same sets again and again. An entry serves a plan whose policies hold
 * what its members held, but for `enabled` (a map entry, never part of the
 * program; render.ts). Looked up by name and compared member by member
 * rather than keyed by a digest of every rule: a changed policy (what a
 * `plan` of edited files meets) differs within its first rules, so a miss
 * costs next to nothing instead of a serialisation of every rule. One entry
 * per name (the last rendered), the oldest names dropped past the limit.
 * Identified on every use, as the builder may differ.
 */
const composedCache = new Map<string, CompiledPolicy>();
const COMPOSED_CACHE_LIMIT = 256;

/** Whether @a and @b build the same program: equal but for their rules' `enabled`. */
function sameProgram(a: ValidPolicy, b: ValidPolicy): boolean {
  if (a === b) return true;
  const sameRules = (left: readonly object[], right: readonly object[]) =>
    left.length === right.length && left.every((rule, i) => sameData(rule, right[i], "enabled"));
  return (
    sameData(a, b, "rules", "outbound") &&
    sameRules(a.rules, b.rules) &&
    sameData(a.outbound, b.outbound, "rules") &&
    sameRules(a.outbound?.rules ?? [], b.outbound?.rules ?? [])
  );
}

/**
 * Whether plain data @a and @b are equal as JSON would write them (an
 * undefined property is as good as none), but for the properties named
 * @skipped of the two values themselves (not of what they hold).
 */
function sameData(a: unknown, b: unknown, ...skipped: string[]): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((item, i) => sameData(item, b[i]));
  }
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  const keys = (value: Record<string, unknown>) =>
    Object.keys(value).filter((key) => value[key] !== undefined && !skipped.includes(key));
  const leftKeys = keys(left);
  return (
    leftKeys.length === keys(right).length &&
    leftKeys.every((key) => Object.hasOwn(right, key) && sameData(left[key], right[key]))
  );
}

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
      const compiled = composedProgram(members);
      const contentHash = await members[0]!.identify(compiled);
      return {
        name: compiled.policy.name,
        members: members.map((want) => want.policy),
        compiled,
        contentHash,
        program: { policy: compiled.policy.name, version: versionOf(contentHash) },
        hooks: compiled.hooks,
        cgroupHooks: compiled.cgroupHooks,
      };
    }),
  );
}

/** The composition of @members (in composition order), rendered or from the cache. */
function composedProgram(members: DesiredPolicy[]): CompiledPolicy {
  const policies = members.map((want) => want.policy);
  // Its members' names in composition order (no policy name holds a space):
  // its composition's name, without hashing a long one.
  const name = policies.map((policy) => policy.name).join(" ");
  const cached = composedCache.get(name);
  const same = (held: ValidPolicy[]) =>
    held.length === policies.length && held.every((member, i) => sameProgram(member, policies[i]!));
  if (cached && same(cached.members)) return cached;
  const compiled = compileComposition(policies);
  // Deleted first, so that the name counts as the newest (a Map keeps insertion order).
  composedCache.delete(name);
  if (composedCache.size >= COMPOSED_CACHE_LIMIT) composedCache.delete(composedCache.keys().next().value!);
  composedCache.set(name, compiled);
  return compiled;
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

/**
 * compile → identify, for validated @policies; each is paired with its
 * loaded form by file. With a builder that identifies as a plain function
 * (clang's), each policy's own program is rendered and identified when
 * first read: plan reads it only where the policy runs alone (or nowhere),
 * and a policy that only runs composed with others costs no render of its
 * own. Otherwise, all up front.
 */
export async function desiredState(
  loaded: LoadedPolicy[],
  policies: ValidPolicy[],
  builder: ProgramBuilder,
): Promise<DesiredPolicy[]> {
  const definitions = new Map(loaded.map((entry) => [entry.file, entry.value]));
  const identifier = await builder.identifier?.();
  if (identifier) {
    return policies.map((policy) => lazyDesired(policy, definitions.get(policy.file), builder, identifier));
  }
  return Promise.all(
    compilePolicies(policies).map((compiled) => desiredFrom(compiled, definitions.get(compiled.policy.file), builder)),
  );
}

/** @policy as desired, its own program rendered and identified (with @identifier) when first read. */
function lazyDesired(
  policy: ValidPolicy,
  definition: unknown,
  builder: ProgramBuilder,
  identifier: (compiled: CompiledPolicy) => string,
): DesiredPolicy {
  let compiled: CompiledPolicy | undefined;
  let contentHash: string | undefined;
  let program: VersionRef | undefined;
  return {
    definition,
    policy,
    get compiled() {
      return (compiled ??= compilePolicies([policy])[0]!);
    },
    get contentHash() {
      return (contentHash ??= identifier(this.compiled));
    },
    get program() {
      return (program ??= { policy: policy.name, version: versionOf(this.contentHash) });
    },
    hooks: programHooks(policy),
    cgroupHooks: programCgroupHooks(policy),
    identify: (program) => builder.identify(program),
  };
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
