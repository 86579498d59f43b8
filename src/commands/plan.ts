import { createInterface } from "node:readline/promises";
import { applyPlan } from "../apply/index.js";
import { onTerminationSignals, type NetworkNamespace } from "../kernel/exec.js";
import { ensureBpffs } from "../kernel/pins.js";
import { renderPlan, summarise, type Plan } from "../plan/index.js";
import { isSavedPlanPath, savePlan } from "../plan/saved.js";
import { buildObjects, planFor, savedPlanRun, type PlannedRun } from "./pipeline.js";

export interface PlanOptions {
  netns: NetworkNamespace;
  json: boolean;
  colour: boolean;
  detailedExitcode: boolean;
  /** Save the plan here for a later `apply FILE`. */
  out?: string;
}

/** `intercept plan`: what apply would do. With --detailed-exitcode: 0 none, 2 changes. */
export async function planCommand(paths: string[], options: PlanOptions): Promise<number> {
  await ensureBpffs();
  const { plan, live, desired } = await planFor(paths, options.netns);
  process.stdout.write(options.json ? `${JSON.stringify(planJson(plan), null, 2)}\n` : renderPlan(plan, options));
  if (options.out) {
    await savePlan(options.out, plan, live, desired.map((d) => d.policy));
    if (!options.json) process.stdout.write(`Saved the plan to ${options.out}: apply exactly it with \`intercept apply ${options.out}\`.\n`);
  }
  return options.detailedExitcode && plan.changes.length > 0 ? 2 : 0;
}

export interface ApplyOptions {
  netns: NetworkNamespace;
  colour: boolean;
  yes: boolean;
}

/** `intercept apply [PATH…]`: plan, confirm, then execute exactly that plan; `apply FILE` executes a saved one. */
export async function applyCommand(paths: string[], options: ApplyOptions): Promise<number> {
  await ensureBpffs();
  const saved = paths.length === 1 && isSavedPlanPath(paths[0]!);
  return executeRun(saved ? await savedPlanRun(paths[0]!, options.netns) : await planFor(paths, options.netns), options);
}

/** `intercept destroy`: the plan that removes everything intercept made in the namespace. */
export async function destroyCommand(options: ApplyOptions): Promise<number> {
  await ensureBpffs();
  return executeRun(await planFor(null, options.netns), options);
}

async function executeRun(run: PlannedRun, options: ApplyOptions): Promise<number> {
  process.stdout.write(renderPlan(run.plan, options));
  if (run.plan.changes.length === 0) return 0;
  if (!(await confirmed(options.yes))) {
    process.stderr.write("Apply cancelled.\n");
    return 1;
  }
  const interrupt = interruptOnSignal();
  try {
    await applyPlan(run.plan, run.live, await buildObjects(run), (line) => process.stdout.write(`${line}\n`), interrupt.signal);
  } finally {
    interrupt.release();
  }
  return 0;
}

/**
 * SIGINT/SIGTERM during an apply do not kill it half-way: the step in
 * flight finishes, then the apply rolls back (Terraform, too, stops
 * gracefully on the first interrupt). A second one exits at once.
 */
function interruptOnSignal(): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController();
  const release = onTerminationSignals((name) => {
    if (controller.signal.aborted) {
      process.stderr.write(`${name} received again: exiting without rolling back; run \`intercept plan\` to see the state.\n`);
      process.exit(1);
    }
    process.stderr.write(`${name} received: stopping after the current step and rolling back.\n`);
    controller.abort(new Error(`interrupted by ${name}`));
  });
  return { signal: controller.signal, release };
}

/** Asks only on a terminal; --yes or a pipe means yes (Terraform's -auto-approve). */
async function confirmed(yes: boolean): Promise<boolean> {
  if (yes || !process.stdin.isTTY) return true;
  const prompt = createInterface({ input: process.stdin, output: process.stdout });
  const answer = await prompt.question("Do you want to perform these actions? Only 'yes' will be accepted: ");
  prompt.close();
  return answer.trim() === "yes";
}

/** The documented JSON form of a plan (docs in README). */
export function planJson(plan: Plan) {
  return {
    format_version: 1,
    namespace: plan.netns.name ?? null,
    changes: plan.changes,
    summary: summarise(plan),
  };
}

