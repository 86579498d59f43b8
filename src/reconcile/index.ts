import type { ProgramBuilder } from "../toolchain/index.js";
import type { Datapath, ObservedState } from "../datapath/types.js";
import { InterceptError } from "../errors.js";
import type { Plan, PlanSummary } from "../plan/model.js";
import { executePlan, leftToTidy, type ApplyEvent } from "./apply.js";
import { composeDesired, ownProgram, type DesiredPolicy, type DesiredProgram } from "./desired.js";
import type { LoadSource } from "./order.js";
import { compositionsNeeded, makePlan } from "./make-plan.js";
import { namedCgroups } from "./make-plan-cgroups.js";
import { needsListeners } from "./warnings.js";

export { ApplyError, doneWord, executePlan, leftToTidy, type ApplyEvent } from "./apply.js";
export {
  compiledPolicies,
  desiredFrom,
  desiredState,
  loadDesired,
  validated,
  validPolicies,
  composeDesired,
  ownProgram,
  type DesiredPolicy,
  type DesiredProgram,
} from "./desired.js";
export { compositionsNeeded, makePlan } from "./make-plan.js";
export { selects } from "../validate/namespaces.js";
export { namedCgroups } from "./make-plan-cgroups.js";
export { orderSteps, PHASES, type Step } from "./order.js";

/**
 * Reconcile: desired state (validated, compiled, identified policies) and
 * observed state (what the datapath reports) give a plan; executing the
 * plan makes the kernel match. Every command that touches the kernel and
 * the agent go through here; commands only parse, call and print.
 */
export interface PlannedRun {
  desired: DesiredPolicy[];
  observed: ObservedState;
  /** The programs of policies that share links (compositions of two or more), compiled for this plan. */
  composed: DesiredProgram[];
  plan: Plan;
}

/**
 * observe → compose (the programs of policies that share a link) → plan. With @options.warnings, the namespace's listeners are
 * observed too (one more process, when a policy has a steer rule that
 * drops or an outbound rule), and the plan warns about proxies that are
 * not listening or not served; the agent, which nobody reads a plan of,
 * does without.
 */
export async function planRun(
  desired: DesiredPolicy[],
  datapath: Datapath,
  options: { warnings?: boolean } = {},
): Promise<PlannedRun> {
  const listeners = options.warnings === true && needsListeners(desired.map((want) => want.policy));
  const observed = await datapath.observe({ cgroups: namedCgroups(desired), ...(listeners && { listeners }) });
  const composed = await composeDesired(desired, compositionsNeeded(desired, observed));
  return { desired, observed, composed, plan: makePlan(desired, observed, composed) };
}

export interface ApplyRunOptions {
  /** Where the objects of the versions to load come from: clang's cache, or prebuilt objects. */
  builder: ProgramBuilder;
  onEvent?: (event: ApplyEvent) => void;
  interrupt?: AbortSignal;
}

/**
 * The program of @run that builds into @contentHash: the one named @name
 * first (a policy's own program is rendered only when read: desired.ts),
 * then any.
 */
function programLoadedBy(run: PlannedRun, name: string, contentHash: string): DesiredProgram | undefined {
  const own = run.desired.filter((want) => want.policy.name === name).map(ownProgram);
  const named = [...run.composed.filter((program) => program.name === name), ...own];
  const builds = (program: DesiredProgram) => program.contentHash === contentHash;
  return named.find(builds) ?? [...run.desired.map(ownProgram), ...run.composed].find(builds);
}

/** build (only what the plan loads: unchanged policies never reach clang) → execute (→ tidy, when something is left to). */
export async function applyRun(run: PlannedRun, datapath: Datapath, options: ApplyRunOptions): Promise<PlanSummary> {
  const objects = new Map<string, LoadSource>();
  for (const change of run.plan.changes) {
    if (change.type !== "program.create" && change.type !== "program.replace") continue;
    if (objects.has(change.contentHash)) continue;
    const desired = programLoadedBy(run, change.program.policy, change.contentHash);
    if (!desired) continue; // objectFor says so, when the load asks for it
    objects.set(change.contentHash, {
      objectPath: await options.builder.object(desired.compiled, desired.contentHash),
      prefixes: desired.compiled.prefixes,
    });
  }
  const objectFor = (contentHash: string) => {
    const object = objects.get(contentHash);
    if (!object)
      throw new InterceptError(
        "saved-plan-stale",
        `the plan loads a program (${contentHash.slice(0, 12)}) that none of its policies builds`,
      );
    return object;
  };
  return executePlan(run.plan, datapath, {
    objectFor,
    tidy: leftToTidy(run.plan),
    ...(options.onEvent && { onEvent: options.onEvent }),
    ...(options.interrupt && { interrupt: options.interrupt }),
  });
}
