import { createInterface } from "node:readline/promises";
import { clangBuilder, type ProgramBuilder } from "../build/index.js";
import { KernelDatapath } from "../datapath/kernel.js";
import { InterceptError } from "../errors.js";
import { onTerminationSignals, type NetworkNamespace } from "../kernel/exec.js";
import { planJson, renderPlan } from "../plan/render.js";
import { isSavedPlan } from "../plan/saved.js";
import { applyRun, doneWord, loadDesired, planRun, type ApplyEvent, type PlannedRun } from "../reconcile/index.js";
import { lockNamespace } from "../reconcile/lock.js";
import { savedPlanNamespace, savedPlanRun, saveRun } from "../reconcile/saved.js";
import { programBuilder } from "./objects.js";

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
export async function planCommand(paths: string[], options: PlanOptions): Promise<number> {
  const desired = await loadDesired(paths, await programBuilder(options.objects));
  const run = await planRun(desired, await KernelDatapath.open(options.netns, "plan"));
  process.stdout.write(options.json ? `${JSON.stringify(planJson(run.plan), null, 2)}\n` : renderPlan(run.plan, options));
  if (options.out) {
    await saveRun(options.out, run);
    if (!options.json) process.stdout.write(`Saved the plan to ${options.out}: apply exactly it with \`intercept apply --plan ${options.out}\`.\n`);
  }
  return options.detailedExitcode && run.plan.changes.length > 0 ? 2 : 0;
}

export interface ApplyOptions {
  /** The namespace to act in; undefined when --netns was not given (a saved plan then names it). */
  netns: NetworkNamespace | undefined;
  colour: boolean;
  yes: boolean;
  /** A saved plan to apply (`--plan FILE`). */
  plan?: string;
  /** Apply even when no policy is given, removing everything (that is destroy's job otherwise). */
  allowEmpty?: boolean;
  /** How long to wait for another intercept process's lock on the namespace. */
  lockTimeoutMs: number;
  /** Prebuilt objects (`--objects DIR`). */
  objects?: string;
}

/**
 * `intercept apply [PATH…]`: plan, confirm, then execute exactly that plan.
 * `apply --plan FILE`, or `apply FILE` where FILE is a saved plan (decided
 * by reading it), executes a saved plan; a directory is always policies.
 */
export async function applyCommand(paths: string[], options: ApplyOptions): Promise<number> {
  const builder = await programBuilder(options.objects);
  const planFile = options.plan ?? (paths.length === 1 && (await isSavedPlan(paths[0]!)) ? paths[0] : undefined);
  if (planFile !== undefined) {
    if (options.plan !== undefined && paths.length > 0) throw new InterceptError("usage", "apply takes policies or --plan FILE, not both");
    const datapath = await KernelDatapath.open(await savedPlanNamespace(planFile, options.netns), "apply");
    return locked(datapath, "intercept apply", options, async () => executeRun(await savedPlanRun(planFile, datapath, builder), datapath, builder, options));
  }
  const desired = await loadDesired(paths, builder);
  if (desired.length === 0 && !options.allowEmpty) {
    throw new InterceptError("no-policies", "no policies given: applying none would remove everything (use `intercept destroy`, or --allow-empty)");
  }
  const datapath = await KernelDatapath.open(options.netns ?? {}, "apply");
  return locked(datapath, "intercept apply", options, async () => executeRun(await planRun(desired, datapath), datapath, builder, options));
}

/** `intercept destroy`: the plan that removes everything intercept made in the namespace. */
export async function destroyCommand(options: ApplyOptions): Promise<number> {
  const datapath = await KernelDatapath.open(options.netns ?? {}, "destroy");
  return locked(datapath, "intercept destroy", options, async () => executeRun(await planRun([], datapath), datapath, clangBuilder, options));
}

/**
 * Runs @work holding the namespace's lock: the plan is made from a kernel
 * no other intercept process is changing, and executed before anyone else
 * plans (Terraform's state lock).
 */
async function locked<T>(datapath: KernelDatapath, holder: string, options: { lockTimeoutMs: number }, work: () => Promise<T>): Promise<T> {
  const lock = await lockNamespace(datapath.namespaceKey, {
    holder,
    timeoutMs: options.lockTimeoutMs,
    onWait: (heldBy) => process.stderr.write(`waiting for the lock held by ${heldBy.description}\n`),
  });
  try {
    return await work();
  } finally {
    await lock.release();
  }
}

async function executeRun(run: PlannedRun, datapath: KernelDatapath, builder: ProgramBuilder, options: ApplyOptions): Promise<number> {
  process.stdout.write(renderPlan(run.plan, options));
  if (run.plan.changes.length === 0) return 0;
  if (!(await confirmed(options.yes))) {
    process.stderr.write("Apply cancelled.\n");
    return 1;
  }
  const interrupt = interruptOnSignal();
  try {
    await applyRun(run, datapath, { builder, onEvent: printEvent, interrupt: interrupt.signal });
  } finally {
    interrupt.release();
  }
  return 0;
}

function printEvent(event: ApplyEvent): void {
  if (event.type === "change-done") process.stdout.write(`${event.change.address}: ${doneWord(event.change)}\n`);
  if (event.type === "complete") {
    const { add, change, destroy } = event.summary;
    process.stdout.write(`Apply complete! Resources: ${add} added, ${change} changed, ${destroy} destroyed.\n`);
  }
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
