import type { ObservedState } from "../datapath/types.js";
import type { NetworkNamespace } from "../model/namespace.js";
import { planJson, renderPlan } from "../plan/render.js";
import { loadDesired, planRun } from "../reconcile/index.js";
import { saveRun } from "../reconcile/saved-plan-run.js";
import type { CommandContext, Output } from "./context.js";
import { printJson } from "./output.js";
import { counted } from "./words.js";

export interface PlanOptions {
  netns: NetworkNamespace;
  json: boolean;
  colour: boolean;
  detailedExitcode: boolean;
  /** Save the plan here for a later `apply --plan FILE`. */
  out?: string;
  /** Prebuilt objects (`--objects DIR`). */
  objects?: string;
}

/** `intercept plan`: what apply would do. With --detailed-exitcode: 0 none, 2 changes. */
export async function planCommand(context: CommandContext, paths: string[], options: PlanOptions): Promise<number> {
  const { host, stdout, stderr } = context;
  const desired = await loadDesired(paths, await context.programBuilder(options.objects));
  const run = await planRun(desired, await host.openDatapath(options.netns, "plan"), { warnings: true });
  sayWhenHost(run.observed, stderr);
  if (options.json) printJson(planJson(run.plan), stdout);
  else stdout.write(renderPlan(run.plan, options));
  if (options.out) {
    await saveRun(options.out, run);
    if (!options.json)
      stdout.write(
        `Saved the plan to ${options.out}: apply exactly it with \`intercept apply --plan ${options.out}\`.\n`,
      );
  }
  return options.detailedExitcode && run.plan.changes.length > 0 ? 2 : 0;
}

/**
 * Without --netns, intercept acts on the namespace it runs in: on a node,
 * the host's own links. Said before the plan, with the links, so that no
 * one changes the host by accident (stderr: stdout stays the plan).
 */
export function sayWhenHost(observed: ObservedState, stderr: Output): void {
  if (observed.netns.name !== undefined) return;
  const links = observed.links.map((link) => link.name);
  stderr.write(
    `No --netns: acting on the host's own network namespace, ${links.length === 0 ? "which has no links" : `${counted(links.length, "link")}: ${links.join(", ")}`}.\n`,
  );
}
