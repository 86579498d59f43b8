import { createInterface } from "node:readline";
import type { ProgramBuilder } from "../toolchain/index.js";
import type { ObservedState } from "../datapath/types.js";
import { KernelDatapath } from "../datapath/kernel.js";
import { InterceptError } from "../errors.js";
import { onTerminationSignals } from "../kernel/exec.js";
import { type NetworkNamespace } from "../model/namespace.js";
import { planJson, renderPlan } from "../plan/render.js";
import { isSavedPlan } from "../plan/saved-plan-file.js";
import { applyRun, doneWord, loadDesired, planRun, type ApplyEvent, type PlannedRun } from "../reconcile/index.js";
import { describeNamespace } from "../kernel/namespace.js";
import { lockNamespace, type LockHolder } from "../reconcile/lock.js";
import { savedPlanNamespace, savedPlanRun, saveRun } from "../reconcile/saved-plan-run.js";
import { programBuilder } from "./objects.js";
import { printJson } from "./output.js";
import { startProgress } from "./progress.js";
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
export async function planCommand(paths: string[], options: PlanOptions): Promise<number> {
  const desired = await loadDesired(paths, await programBuilder(options.objects));
  const run = await planRun(desired, await KernelDatapath.open(options.netns, "plan"), { warnings: true });
  sayWhenHost(run.observed);
  if (options.json) printJson(planJson(run.plan));
  else process.stdout.write(renderPlan(run.plan, options));
  if (options.out) {
    await saveRun(options.out, run);
    if (!options.json)
      process.stdout.write(
        `Saved the plan to ${options.out}: apply exactly it with \`intercept apply --plan ${options.out}\`.\n`,
      );
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
  /** Wait for an agent's lock too, rather than refusing at once (--wait-for-agent). */
  waitForAgent?: boolean;
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
    if (options.plan !== undefined && paths.length > 0)
      throw new InterceptError("usage", "apply takes policies or --plan FILE, not both");
    const datapath = await KernelDatapath.open(await savedPlanNamespace(planFile, options.netns), "apply");
    // A saved plan was reviewed when it was made: applied without a question, as Terraform applies one.
    return locked(datapath, "intercept apply", options, async () =>
      executeRun(await savedPlanRun(planFile, datapath, builder), datapath, builder, { ...options, yes: true }),
    );
  }
  const desired = await loadDesired(paths, builder);
  if (desired.length === 0 && !options.allowEmpty) {
    throw new InterceptError(
      "no-policies",
      "no policies given: applying none would remove everything (use `intercept destroy`, or --allow-empty)",
    );
  }
  const datapath = await KernelDatapath.open(options.netns ?? {}, "apply");
  return locked(datapath, "intercept apply", options, async () =>
    executeRun(await planRun(desired, datapath, { warnings: true }), datapath, builder, { ...options, verb: "apply" }),
  );
}

/** `intercept destroy`: the plan that removes everything intercept made in the namespace. */
export async function destroyCommand(options: ApplyOptions): Promise<number> {
  const datapath = await KernelDatapath.open(options.netns ?? {}, "destroy");
  const builder = await programBuilder(undefined); // never used: destroying loads nothing
  return locked(datapath, "intercept destroy", options, async () =>
    executeRun(await planRun([], datapath), datapath, builder, { ...options, verb: "destroy" }),
  );
}

/**
 * Runs @work holding the namespace's lock: the plan is made from a kernel
 * no other intercept process is changing, and executed before anyone else
 * plans (Terraform's state lock).
 */
async function locked<T>(
  datapath: KernelDatapath,
  holder: string,
  options: { lockTimeoutMs: number; waitForAgent?: boolean },
  work: () => Promise<T>,
): Promise<T> {
  const lock = await lockNamespace(datapath.namespaceKey, {
    holder,
    timeoutMs: options.lockTimeoutMs,
    onWait: (heldBy) => {
      if (heldBy.agent && !options.waitForAgent) throw agentManages(heldBy, datapath.netns);
      if (options.lockTimeoutMs > 0) process.stderr.write(`waiting for the lock held by ${heldBy.description}\n`);
    },
  });
  try {
    return await work();
  } finally {
    // The lock file stays while the namespace holds pins (its record says who last changed them).
    await lock.release({ keepRecord: datapath.holdsPins() });
  }
}

/** An agent holds the namespace for as long as it runs: waiting for it is almost never what was meant. */
function agentManages(heldBy: LockHolder, netns: NetworkNamespace): InterceptError {
  return new InterceptError(
    "lock-held",
    `an agent (pid ${heldBy.pid ?? "?"}) manages ${describeNamespace(netns)}: change the policies it reads and it applies them, or stop it first (--wait-for-agent waits up to --lock-timeout for it to exit)`,
  );
}

/** Which command runs a plan: its words in the question, the refusal and the last line. */
type Verb = "apply" | "destroy";

async function executeRun(
  run: PlannedRun,
  datapath: KernelDatapath,
  builder: ProgramBuilder,
  options: { colour: boolean; yes: boolean; verb?: Verb },
): Promise<number> {
  const verb = options.verb ?? "apply";
  sayWhenHost(run.observed);
  process.stdout.write(renderPlan(run.plan, options));
  if (run.plan.changes.length === 0) return 0;
  if (!options.yes && !(await approved(verb))) {
    process.stderr.write(`${verb === "apply" ? "Apply" : "Destroy"} cancelled.\n`);
    return 1;
  }
  const interrupt = interruptOnSignal();
  const steps = stepProgress();
  try {
    await applyRun(run, datapath, {
      builder,
      onEvent: (event) => {
        steps.onEvent(event);
        printEvent(event, verb);
      },
      interrupt: interrupt.signal,
    });
  } finally {
    steps.stop();
    interrupt.release();
  }
  return 0;
}

/**
 * Without --netns, intercept acts on the namespace it runs in: on a node,
 * the host's own links. Said before the plan, with the links, so that no
 * one changes the host by accident (stderr: stdout stays the plan).
 */
function sayWhenHost(observed: ObservedState): void {
  if (observed.netns.name !== undefined) return;
  const links = observed.links.map((link) => link.name);
  process.stderr.write(
    `No --netns: acting on the host's own network namespace, ${links.length === 0 ? "which has no links" : `${counted(links.length, "link")}: ${links.join(", ")}`}.\n`,
  );
}

/** Announces an apply step that takes more than a second (a load, a big batch), on a terminal only. */
function stepProgress(): { onEvent(event: ApplyEvent): void; stop(): void } {
  let current: { done(): void } | undefined;
  const stop = () => {
    current?.done();
    current = undefined;
  };
  return {
    onEvent(event) {
      stop();
      if (event.type === "step-started")
        current = startProgress(
          `${event.change.address}: ${event.operation.op} (step ${event.step} of ${event.steps})`,
        );
    },
    stop,
  };
}

function printEvent(event: ApplyEvent, verb: Verb): void {
  if (event.type === "change-done") process.stdout.write(`${event.change.address}: ${doneWord(event.change)}\n`);
  if (event.type === "complete") {
    const { add, change, destroy } = event.summary;
    process.stdout.write(
      verb === "destroy"
        ? `Destroy complete! Resources: ${destroy} destroyed.\n`
        : `Apply complete! Resources: ${add} added, ${change} changed, ${destroy} destroyed.\n`,
    );
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
      process.stderr.write(
        `${name} received again: exiting without rolling back; run \`intercept plan\` to see the state.\n`,
      );
      process.exit(1);
    }
    process.stderr.write(`${name} received: stopping after the current step and rolling back.\n`);
    controller.abort(new Error(`interrupted by ${name}`));
  });
  return { signal: controller.signal, release };
}

/**
 * Terraform's approval: only "yes" approves. Without a terminal to ask on
 * (CI, a pipe, </dev/null) the command refuses instead of guessing, unless
 * --yes was given. Ctrl-C or Ctrl-D at the question is a "no".
 */
async function approved(verb: Verb): Promise<boolean> {
  if (!process.stdin.isTTY) {
    throw new InterceptError(
      "approval-required",
      `${verb}: no terminal to ask for approval on: pass --yes (or --auto-approve) to ${verb} without a question`,
    );
  }
  const question =
    verb === "destroy"
      ? "Do you really want to destroy everything intercept made here? Only 'yes' will be accepted: "
      : "Do you want to perform these actions? Only 'yes' will be accepted: ";
  const answer = await ask(question);
  if (answer === undefined) process.stderr.write("\n"); // after the ^C or ^D the terminal echoed
  return answer?.trim() === "yes";
}

/** The answer to @question on the terminal; undefined for Ctrl-C (readline's SIGINT) or Ctrl-D (end of input). */
async function ask(question: string): Promise<string | undefined> {
  const prompt = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  try {
    return await new Promise<string | undefined>((resolve) => {
      prompt.on("SIGINT", () => resolve(undefined));
      prompt.on("close", () => resolve(undefined));
      prompt.question(question, resolve);
    });
  } finally {
    prompt.close();
  }
}
