import { isDeepStrictEqual } from "node:util";
import type { Datapath } from "../datapath/types.js";
import type { ProgramBuilder } from "../toolchain/index.js";
import { quoted, reportableDiagnostics } from "../diagnostics.js";
import { InterceptError, PolicyError } from "../errors.js";
import { describeNamespace, type NetworkNamespace } from "../model/namespace.js";
import { policyFromData, type LoadedPolicy } from "../load/index.js";
import type { ValidPolicy } from "../validate/index.js";
import type { Change } from "../plan/model.js";
import { readSavedPlan, savedNamespace, savePlan, type SavedPolicy } from "../plan/saved-plan-file.js";
import { observedSnapshot, snapshotDifferences } from "../plan/snapshot.js";
import { desiredState, validated } from "./desired.js";
import { planRun, type PlannedRun } from "./index.js";

/**
 * The saved policies, validated exactly like policy files; a problem is one
 * line naming the plan. Every text the file holds (a policy's source, what
 * a message quotes from its definition) is printed quoted or made
 * printable, like text from a policy file: a saved plan cannot write to
 * the terminal.
 */
function validatedPolicies(file: string, loaded: LoadedPolicy[]): ValidPolicy[] {
  try {
    return validated(loaded);
  } catch (error) {
    if (!(error instanceof PolicyError)) throw error;
    const [first] = reportableDiagnostics(error.diagnostics);
    const more = error.diagnostics.length > 1 ? ` (and ${error.diagnostics.length - 1} more)` : "";
    throw new InterceptError(
      "saved-plan-invalid",
      `${file}: policy ${quoted(first!.file, 80)}: ${first!.message}${more}`,
    );
  }
}

/** Saves @run for a later `apply --plan FILE`: the changes, the policies they follow from, the kernel's fingerprint. */
export async function saveRun(file: string, run: PlannedRun): Promise<void> {
  const policies: SavedPolicy[] = run.desired.map((d) => ({
    source: d.policy.file,
    definition: { ...(d.definition as Record<string, unknown>), name: d.policy.name },
  }));
  await savePlan(file, run.plan, run.observed, policies);
}

/** The namespace a saved plan is for, checked against --netns when one was given. */
export async function savedPlanNamespace(
  file: string,
  requested: NetworkNamespace | undefined,
): Promise<NetworkNamespace> {
  const netns = savedNamespace(await readSavedPlan(file));
  if (requested && requested.name !== netns.name) {
    throw new InterceptError(
      "saved-plan-stale",
      `${file} was made for ${describeNamespace(netns)}, not ${describeNamespace(requested)}`,
    );
  }
  return netns;
}

/**
 * A saved plan, ready to apply exactly as it was made. Nothing in it is
 * trusted: its policies are validated like policy files, and the plan is
 * computed again from them and the kernel. It is refused when the kernel
 * moved since (another apply, a hand edit, a link that came or went), and
 * when the recomputed changes differ from the saved ones (the file was
 * edited, or this machine builds other programs: other templates or clang).
 */
export async function savedPlanRun(
  file: string,
  datapath: Datapath & { namespaceKey: string },
  builder: ProgramBuilder,
): Promise<PlannedRun> {
  const saved = await readSavedPlan(file);
  const loaded = saved.policies.map((entry) => policyFromData(entry.source, entry.definition));
  const desired = await desiredState(loaded, validatedPolicies(file, loaded), builder);
  if (datapath.namespaceKey !== saved.namespaceKey) {
    throw new InterceptError(
      "saved-plan-stale",
      `${describeNamespace(datapath.netns)} is not the namespace ${file} was made for (it was recreated since): run \`intercept plan\` again`,
    );
  }
  const run = await planRun(desired, datapath);
  if (saved.changes.length === 0 && run.plan.changes.length > 0) {
    const count = `${run.plan.changes.length} change${run.plan.changes.length === 1 ? "" : "s"}`;
    throw new InterceptError(
      "saved-plan-stale",
      `${file} holds no changes, but its policies give ${count} here: run \`intercept plan\` again`,
    );
  }
  const moved = snapshotDifferences(saved.observed, observedSnapshot(run.observed));
  if (moved.length > 0) {
    throw new InterceptError(
      "saved-plan-stale",
      `the kernel changed since ${file} was made (${quoted(saved.createdAt)}): ${moved.join("; ")}: run \`intercept plan\` again`,
    );
  }
  if (!isDeepStrictEqual(run.plan.changes.map(decision), saved.changes.map(decision))) {
    throw new InterceptError(
      "saved-plan-stale",
      `${file}: its changes are not what its policies give here (the file was edited, or templates or clang differ): run \`intercept plan\` again`,
    );
  }
  return run;
}

/**
 * A change as a decision: everything but its reason text, which is for
 * display. Its reasonCode is compared: rewording a reason does not make
 * saved plans stale, a different cause does.
 */
function decision(change: Change): Omit<Change, "reason"> {
  const { reason: _reason, ...rest } = change;
  return rest;
}
