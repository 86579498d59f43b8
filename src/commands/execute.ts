import { createInterface } from "node:readline";
import { InterceptError } from "../errors.js";
import type { LockHolder, NamespaceDatapath } from "../host/types.js";
import { describeNamespace, type NetworkNamespace } from "../model/namespace.js";
import { renderPlan } from "../plan/render.js";
import { applyRun, doneWord, type ApplyEvent, type PlannedRun } from "../reconcile/index.js";
import type { ProgramBuilder } from "../toolchain/index.js";
import type { CommandContext, Output } from "./context.js";
import { sayWhenHost } from "./plan.js";
import { startProgress } from "./progress.js";

/** What apply and destroy share: how long to wait for the namespace's lock, and for whom. */
export interface LockWait {
  /** How long to wait for another intercept process's lock on the namespace. */
  lockTimeoutMs: number;
  /** Wait for an agent's lock too, rather than refusing at once (--wait-for-agent). */
  waitForAgent?: boolean;
}

/** Which command runs a plan: its words in the question, the refusal and the last line. */
export type Verb = "apply" | "destroy";

/**
 * Runs @work holding the namespace's lock: the plan is made from a kernel
 * no other intercept process is changing, and executed before anyone else
 * plans (Terraform's state lock).
 */
export async function locked<T>(
  context: CommandContext,
  datapath: NamespaceDatapath,
  holder: string,
  options: LockWait,
  work: () => Promise<T>,
): Promise<T> {
  const lock = await context.host.lockNamespace(datapath.namespaceKey, {
    holder,
    timeoutMs: options.lockTimeoutMs,
    onWait: (heldBy) => {
      if (heldBy.agent && !options.waitForAgent) throw agentManages(heldBy, datapath.netns);
      if (options.lockTimeoutMs > 0) context.stderr.write(`waiting for the lock held by ${heldBy.description}\n`);
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

/** Shows @run's plan, asks (unless @options.yes), then executes exactly it; 1 when the answer was no. */
export async function executeRun(
  context: CommandContext,
  run: PlannedRun,
  datapath: NamespaceDatapath,
  builder: ProgramBuilder,
  options: { colour: boolean; yes: boolean; verb: Verb },
): Promise<number> {
  const { stdout, stderr } = context;
  const verb = options.verb;
  sayWhenHost(run.observed, stderr);
  stdout.write(renderPlan(run.plan, options));
  if (run.plan.changes.length === 0) return 0;
  if (!options.yes && !(await approved(verb))) {
    stderr.write(`${verb === "apply" ? "Apply" : "Destroy"} cancelled.\n`);
    return 1;
  }
  const interrupt = interruptOnSignal(context);
  const steps = stepProgress(stderr);
  try {
    await applyRun(run, datapath, {
      builder,
      onEvent: (event) => {
        steps.onEvent(event);
        printEvent(event, verb, stdout);
      },
      interrupt: interrupt.signal,
    });
  } finally {
    steps.stop();
    interrupt.release();
  }
  return 0;
}

/** Announces an apply step that takes more than a second (a load, a big batch), on a terminal only. */
function stepProgress(stderr: Output): { onEvent(event: ApplyEvent): void; stop(): void } {
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
          stderr,
        );
    },
    stop,
  };
}

function printEvent(event: ApplyEvent, verb: Verb, stdout: Output): void {
  if (event.type === "change-done") stdout.write(`${event.change.address}: ${doneWord(event.change)}\n`);
  if (event.type === "complete") {
    const { add, change, destroy } = event.summary;
    stdout.write(
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
function interruptOnSignal({ host, stderr }: CommandContext): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController();
  const release = host.onTerminationSignals((name) => {
    if (controller.signal.aborted) {
      stderr.write(`${name} received again: exiting without rolling back; run \`intercept plan\` to see the state.\n`);
      process.exit(1);
    }
    stderr.write(`${name} received: stopping after the current step and rolling back.\n`);
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
