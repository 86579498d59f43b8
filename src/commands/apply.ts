import { InterceptError } from "../errors.js";
import type { NetworkNamespace } from "../model/namespace.js";
import { isSavedPlan } from "../plan/saved-plan-file.js";
import { loadDesired, planRun } from "../reconcile/index.js";
import { savedPlanNamespace, savedPlanRun } from "../reconcile/saved-plan-run.js";
import type { CommandContext } from "./context.js";
import { executeRun, locked, type LockWait } from "./execute.js";

export interface ApplyOptions extends LockWait {
  /** The namespace to act in; undefined when --netns was not given (a saved plan then names it). */
  netns: NetworkNamespace | undefined;
  colour: boolean;
  yes: boolean;
  /** A saved plan to apply (`--plan FILE`). */
  plan?: string;
  /** Apply even when no policy is given, removing everything (that is destroy's job otherwise). */
  allowEmpty?: boolean;
  /** Prebuilt objects (`--objects DIR`). */
  objects?: string;
}

/**
 * `intercept apply [PATH…]`: plan, confirm, then execute exactly that plan.
 * `apply --plan FILE`, or `apply FILE` where FILE is a saved plan (decided
 * by reading it), executes a saved plan; a directory is always policies.
 */
export async function applyCommand(context: CommandContext, paths: string[], options: ApplyOptions): Promise<number> {
  const builder = await context.programBuilder(options.objects);
  const planFile = options.plan ?? (paths.length === 1 && (await isSavedPlan(paths[0]!)) ? paths[0] : undefined);
  if (planFile !== undefined) {
    if (options.plan !== undefined && paths.length > 0)
      throw new InterceptError("usage", "apply takes policies or --plan FILE, not both");
    const netns = await savedPlanNamespace(planFile, options.netns);
    const datapath = await context.host.openDatapath(netns, "apply");
    // A saved plan was reviewed when it was made: applied without a question, as Terraform applies one.
    return locked(context, datapath, "intercept apply", options, async () =>
      executeRun(context, await savedPlanRun(planFile, datapath, builder), datapath, builder, {
        colour: options.colour,
        yes: true,
        verb: "apply",
      }),
    );
  }
  const desired = await loadDesired(paths, builder);
  if (desired.length === 0 && !options.allowEmpty) {
    throw new InterceptError(
      "no-policies",
      "no policies given: applying none would remove everything (use `intercept destroy`, or --allow-empty)",
    );
  }
  const datapath = await context.host.openDatapath(options.netns ?? {}, "apply");
  return locked(context, datapath, "intercept apply", options, async () =>
    executeRun(context, await planRun(desired, datapath, { warnings: true }), datapath, builder, {
      ...options,
      verb: "apply",
    }),
  );
}
