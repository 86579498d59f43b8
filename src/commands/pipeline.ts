import { contentHash } from "../build/index.js";
import { compilePolicies, type CompiledPolicy } from "../compile/index.js";
import { UserError } from "../diagnostics.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { loadPolicies } from "../load/index.js";
import { readLiveState, type LiveState } from "../live/index.js";
import { makePlan, type DesiredPolicy, type Plan } from "../plan/index.js";
import { liveFingerprint, readSavedPlan } from "../plan/saved.js";
import { validatePolicies, type ValidPolicy } from "../validate/index.js";

/** load → validate: the policies, or a UserError carrying every located problem. */
export async function validPolicies(paths: string[]): Promise<ValidPolicy[]> {
  const loaded = await loadPolicies(paths);
  const { policies, diagnostics } = validatePolicies(loaded.policies);
  const all = [...loaded.diagnostics, ...diagnostics];
  if (all.length > 0) throw new UserError(`${all.length} error${all.length === 1 ? "" : "s"} in the policies`, all);
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
  const compiled = paths === null ? [] : await compiledPolicies(paths);
  const desired = await desiredState(compiled);
  const live = await readLiveState(netns);
  return { plan: makePlan(desired, live), live, compiled, desired };
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
    throw new UserError(`${file} was made for ${saved.plan.netns.name ? `network namespace "${saved.plan.netns.name}"` : "the current network namespace"}, not "${netns.name}"`);
  }
  const live = await readLiveState(saved.plan.netns);
  if (liveFingerprint(live) !== saved.liveFingerprint) {
    throw new UserError(`the kernel changed since ${file} was made (${saved.createdAt}): run \`intercept plan\` again`);
  }
  const compiled = compilePolicies(saved.policies);
  const desired = await desiredState(compiled);
  for (const change of saved.plan.changes) {
    if (change.resource === "program" && change.contentHash && !desired.some((d) => d.contentHash === change.contentHash)) {
      throw new UserError(`${file}: ${change.address} would not build the same program here (templates or clang differ): run \`intercept plan\` again`);
    }
  }
  return { plan: saved.plan, live, compiled, desired };
}
