import { contentHash } from "../build/index.js";
import { compilePolicies, type CompiledPolicy } from "../compile/index.js";
import { UserError } from "../diagnostics.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { loadPolicies } from "../load/index.js";
import { readLiveState, type LiveState } from "../live/index.js";
import { makePlan, type DesiredPolicy, type Plan } from "../plan/index.js";
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
  const desired = await Promise.all(compiled.map(async (entry) => ({ policy: entry.policy, contentHash: await contentHash(entry) })));
  const live = await readLiveState(netns);
  return { plan: makePlan(desired, live), live, compiled, desired };
}
