import { perform, performAll, type Datapath, type DatapathOperation } from "../datapath/types.js";
import { InterceptError, messageOf } from "../errors.js";
import { actionOf, summarise, type Change, type ChangeType, type Plan, type PlanSummary } from "../plan/model.js";
import { orderSteps, type ObjectFor, type Step } from "./order.js";

/** What apply reports as it goes: the CLI prints these, the agent logs and counts them. */
export type ApplyEvent =
  | { type: "step-started"; change: Change; operation: DatapathOperation; step: number; steps: number }
  | { type: "change-done"; change: Change }
  | { type: "step-failed"; change: Change; operation: DatapathOperation; error: string }
  | { type: "rolled-back"; complete: boolean; failures: string[] }
  | { type: "complete"; summary: PlanSummary };

export interface ApplyOptions {
  objectFor: ObjectFor;
  onEvent?: (event: ApplyEvent) => void;
  /** Honoured between steps (and between the processes of steps the datapath runs together): what is in flight finishes, then everything done is undone. */
  interrupt?: AbortSignal;
  /** Whether to tidy once the plan is executed (by default; see leftToTidy). A rollback always tidies. */
  tidy?: boolean;
}

/**
 * Which changes can leave something for tidy: a version unpinned (its
 * directories may be left empty), a qdisc removed (the registry may be
 * left empty). A new change type without an entry here does not compile.
 */
const UNTIDY: Record<ChangeType, boolean> = {
  "program.create": false,
  "program.replace": true,
  "program.delete": true,
  "attachment.create": false,
  "attachment.update": false,
  "attachment.delete": true,
  "rule.update": false,
  "qdisc.delete": true,
  "cgroup.create": false,
  "cgroup.update": false,
  "cgroup.delete": false,
  "exemption.update": false,
  // Forgetting records may leave the registry empty; removing empty pins is itself the tidy.
  "registry.update": true,
  "pins.delete": false,
};

/**
 * Whether executing @plan leaves the datapath something to tidy: a change
 * that removes pins or records. An apply that only adds, to a namespace
 * with nothing to tidy, skips it (two processes per new namespace). Records
 * of links that are gone, and pins left empty, are changes of the plan
 * (registry.update, pins.delete), so the next reconcile collects them
 * whatever else it does; a plan ending with pins.delete tidies as its last
 * step.
 */
export function leftToTidy(plan: Plan): boolean {
  return plan.changes.some((change) => UNTIDY[change.type]) && plan.changes.at(-1)?.type !== "pins.delete";
}

/** An apply that stopped: every step done before was undone, unless @rolledBack says otherwise. */
export class ApplyError extends InterceptError {
  constructor(
    code: "apply-failed" | "apply-interrupted",
    message: string,
    readonly rolledBack: boolean,
  ) {
    super(code, message);
  }
}

/**
 * Stage 7: executes exactly the plan's changes, in the order orderSteps
 * gives (never a link without a filter). If a step fails, or
 * @interrupt fires, every step done so far is undone in reverse, so the
 * kernel is left as it was before the apply.
 */
export async function executePlan(plan: Plan, datapath: Datapath, options: ApplyOptions): Promise<PlanSummary> {
  const emit = options.onEvent ?? (() => {});
  const steps = orderSteps(plan.changes, options.objectFor);
  const committing = steps.findIndex((step) => step.phase === "commit");
  const reversible = committing === -1 ? steps : steps.slice(0, committing);
  const done: Step[] = [];
  // The reversible steps go to the datapath together: it may make them in fewer processes
  // (a kernel loads a version and records its qdiscs in one bpftool, makes every link's in one tc).
  reversible.forEach((step, index) =>
    emit({
      type: "step-started",
      change: step.change,
      operation: step.operation,
      step: index + 1,
      steps: steps.length,
    }),
  );
  const result = await performAll(
    datapath,
    reversible.map((step) => step.operation),
    options.interrupt,
  );
  for (const step of reversible.slice(0, result.done)) {
    done.push(step);
    if (step.completes) emit({ type: "change-done", change: step.change });
  }
  if (result.done < reversible.length)
    throw await stepFailed(
      reversible[result.done]!,
      result.error,
      done,
      steps.length,
      datapath,
      emit,
      options.interrupt,
    );
  try {
    options.interrupt?.throwIfAborted(); // the last moment to stop: nothing is committed yet
  } catch (error) {
    throw await rollBack(
      done,
      datapath,
      emit,
      "apply-interrupted",
      `${messageOf(error)} after ${done.length} of ${steps.length} steps`,
    );
  }
  // Past this point no link runs the versions being unpinned: the kernel matches the plan.
  for (const [index, step] of steps.slice(reversible.length).entries()) {
    try {
      emit({
        type: "step-started",
        change: step.change,
        operation: step.operation,
        step: reversible.length + index + 1,
        steps: steps.length,
      });
      await perform(datapath, step.operation);
    } catch (error) {
      emit({ type: "step-failed", change: step.change, operation: step.operation, error: messageOf(error) });
      throw new ApplyError(
        "apply-failed",
        `${step.change.address}: ${messageOf(error)}\nThe links run the new programs; an old version is still pinned: \`intercept apply\` again removes it.`,
        false,
      );
    }
    if (step.completes) emit({ type: "change-done", change: step.change });
  }
  if (options.tidy ?? true) await tidyApplied(datapath);
  const summary = summarise(plan);
  emit({ type: "complete", summary });
  return summary;
}

/**
 * The tidy after every change is made: a failure there has nothing to undo
 * (the kernel matches the plan, only empty pins or records of links gone
 * are left), so it is said as such, with apply's code, whatever it was.
 */
async function tidyApplied(datapath: Datapath): Promise<void> {
  try {
    await datapath.tidy();
  } catch (error) {
    throw new ApplyError(
      "apply-failed",
      `tidy: ${messageOf(error)}\nThe kernel matches the plan; empty pins are left: \`intercept apply\` again removes them.`,
      false,
    );
  }
}

/** @step failed with @error (or @interrupt stopped the apply before it): everything @done is undone, and the step too when it may be half done. */
async function stepFailed(
  step: Step,
  error: unknown,
  done: Step[],
  steps: number,
  datapath: Datapath,
  emit: (event: ApplyEvent) => void,
  interrupt: AbortSignal | undefined,
): Promise<ApplyError> {
  const interrupted = interrupt?.aborted === true && error === interrupt.reason;
  if (!interrupted)
    emit({ type: "step-failed", change: step.change, operation: step.operation, error: messageOf(error) });
  const why = interrupted
    ? `${messageOf(error)} after ${done.length} of ${steps} steps`
    : `${step.change.address}: ${messageOf(error)}`;
  const undo = step.undoOnFailure && !interrupted ? [...done, step] : done;
  return rollBack(undo, datapath, emit, interrupted ? "apply-interrupted" : "apply-failed", why);
}

/** Undoes @done in reverse; every undo is tried even after one fails, and each failure is reported. */
async function rollBack(
  done: Step[],
  datapath: Datapath,
  emit: (event: ApplyEvent) => void,
  code: "apply-failed" | "apply-interrupted",
  why: string,
): Promise<ApplyError> {
  const failures: string[] = [];
  for (const step of [...done].reverse()) {
    if (!step.undo) {
      failures.push(`${step.change.address}: cannot be undone (${step.operation.op})`);
      continue;
    }
    try {
      for (const operation of step.undo) await perform(datapath, operation);
    } catch (error) {
      failures.push(`${step.change.address}: ${messageOf(error)}`);
    }
  }
  try {
    await datapath.tidy();
  } catch (error) {
    failures.push(`tidy: ${messageOf(error)}`);
  }
  const complete = failures.length === 0;
  emit({ type: "rolled-back", complete, failures });
  const outcome = complete
    ? "Rolled back: the kernel is as it was before this apply."
    : `Rollback failed (${failures.join("; ")}): run \`intercept plan\` to see the state.`;
  return new ApplyError(code, `${why}\n${outcome}`, complete);
}

/** The past tense of a change, as apply reports it: "created", "disabled", … */
export function doneWord(change: Change): string {
  if (change.type === "rule.update") return change.enabled ? "enabled" : "disabled";
  return { create: "created", update: "updated", replace: "replaced", delete: "destroyed" }[actionOf(change)];
}
