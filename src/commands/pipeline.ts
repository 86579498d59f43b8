import type { ObjectsByHash } from "../apply/index.js";
import { buildPolicy, contentHash } from "../build/index.js";
import { compilePolicies, type CompiledPolicy } from "../compile/index.js";
import { InterceptError, PolicyError } from "../errors.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { loadPolicies } from "../load/index.js";
import { readLiveState, type LiveState } from "../live/index.js";
import { makePlan, type DesiredPolicy, type Plan } from "../plan/index.js";
import { liveFingerprint, readSavedPlan } from "../plan/saved.js";
import { validatePolicies, type ValidPolicy } from "../validate/index.js";

/** load → validate: the policies, or a PolicyError carrying every located problem. */
export async function validPolicies(paths: string[]): Promise<ValidPolicy[]> {
  const loaded = await loadPolicies(paths);
  const { policies, diagnostics } = validatePolicies(loaded.policies);
  const all = [...loaded.diagnostics, ...diagnostics];
  if (all.length > 0) throw new PolicyError(all);
  return policies;
}

/** load → validate → compile. */
export async function compiledPolicies(paths: string[]): Promise<CompiledPolicy[]> {
  return compilePolicies(await validPolicies(paths));
}

export interface PlannedRun {
  plan: Plan;
  live: LiveState;
  compiled: CompiledPolicy[];
  desired: DesiredPolicy[];
}

/** … → read live state → plan. `policies: null` plans to remove everything (destroy). */
export async function planFor(paths: string[] | null, netns: NetworkNamespace): Promise<PlannedRun> {
  return planCompiled(paths === null ? [] : await compiledPolicies(paths), netns);
}

/** read live state → plan, for policies already compiled (the agent keeps the last good ones). */
export async function planCompiled(compiled: CompiledPolicy[], netns: NetworkNamespace): Promise<PlannedRun> {
  const desired = await desiredState(compiled);
  const live = await readLiveState(netns);
  return { plan: makePlan(desired, live), live, compiled, desired };
}

/** Builds only the programs the plan loads; unchanged policies never reach clang. */
export async function buildObjects(run: PlannedRun): Promise<ObjectsByHash> {
  const wanted = new Set(run.plan.changes.flatMap((c) => (c.resource === "program" && c.contentHash ? [c.contentHash] : [])));
  const objects: ObjectsByHash = new Map();
  for (const [index, entry] of run.compiled.entries()) {
    const { contentHash: hash } = run.desired[index]!;
    if (wanted.has(hash)) objects.set(hash, (await buildPolicy(entry)).objectPath);
  }
  return objects;
}

async function desiredState(compiled: CompiledPolicy[]): Promise<DesiredPolicy[]> {
  return Promise.all(compiled.map(async (entry) => ({ policy: entry.policy, contentHash: await contentHash(entry) })));
}

/**
 * A saved plan, ready to apply exactly as it was made: refused when the
 * live state moved since, or when this machine would build different
 * programs from its policies (other templates or clang).
 */
export async function savedPlanRun(file: string, netns: NetworkNamespace): Promise<PlannedRun> {
  const saved = await readSavedPlan(file);
  if (netns.name !== undefined && netns.name !== saved.plan.netns.name) {
    throw new InterceptError("saved-plan-stale", `${file} was made for ${saved.plan.netns.name ? `network namespace "${saved.plan.netns.name}"` : "the current network namespace"}, not "${netns.name}"`);
  }
  const live = await readLiveState(saved.plan.netns);
  if (liveFingerprint(live) !== saved.liveFingerprint) {
    throw new InterceptError("saved-plan-stale", `the kernel changed since ${file} was made (${saved.createdAt}): run \`intercept plan\` again`);
  }
  const compiled = compilePolicies(saved.policies);
  const desired = await desiredState(compiled);
  for (const change of saved.plan.changes) {
    if (change.resource === "program" && change.contentHash && !desired.some((d) => d.contentHash === change.contentHash)) {
      throw new InterceptError("saved-plan-stale", `${file}: ${change.address} would not build the same program here (templates or clang differ): run \`intercept plan\` again`);
    }
  }
  return { plan: saved.plan, live, compiled, desired };
}
