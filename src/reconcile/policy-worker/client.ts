import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads";
import { diagnosticAt, startOf, type Diagnostic } from "../../diagnostics.js";
import { unreachable } from "../../errors.js";
import type { PolicyFile } from "../../load/files.js";
import { POLICY_DEADLINE_MS, POLICY_HEAP_MB } from "../../load/limits.js";
import { LOADING_PHASES, type ReadPhase } from "../../load/read.js";
import { DEFAULT_POLICY_DIR, type LoadResult } from "../../load/index.js";
import {
  fromData,
  monotonicMs,
  type LoadedPolicyData,
  type ReadTarget,
  type Step,
  type Validation,
  type WorkerMessage,
  type WorkerRequest,
  type WorkerResult,
} from "./protocol.js";

/** How reading policies is bounded; callers may tighten (or loosen) the deadline. */
export interface ReadOptions {
  /**
   * How long each file may take to be read and evaluated, and each policy
   * to be validated, in milliseconds (default POLICY_DEADLINE_MS). Starting
   * the worker, the YAML parser or the TypeScript compiler (intercept's own
   * code) is not counted.
   */
  deadlineMs?: number;
}

/**
 * Policies are read, evaluated and validated in a worker thread, never on
 * the main one: a file that would take minutes or gigabytes (a recursive
 * type, an expansion a bound missed) is stopped there, with one located
 * `policy/too-slow` or `policy/too-large` diagnostic at the file it was
 * on, and the files after it are read in a new worker; meanwhile the main
 * thread (the agent's event loop, its /healthz, link events and signals)
 * carries on. One worker per process, started when this module is imported
 * and reused (the TypeScript compiler stays loaded in it, and only in it);
 * a stopped worker is replaced at the next read. Reads run one at a time.
 */
class PolicyWorker {
  private worker: Worker | undefined;
  private nextId = 0;
  private queue: Promise<unknown> = Promise.resolve();
  /** Counts closes: reads queued before one are dropped. */
  private closes = 0;
  /** Ends the read in flight, if any, with an error (close). */
  private abandon: ((error: Error) => void) | undefined;

  /** Starts the worker ahead of the first read (idle, it does not keep the process alive). */
  prestart(): void {
    this.worker ??= this.startWorker();
  }

  read(paths: string[], options: ReadOptions): Promise<WorkerResult> {
    const closes = this.closes;
    const run = this.queue.then(() => {
      // Queued before a close: the process is ending, and this read must not start a worker again.
      if (this.closes !== closes) throw stopped();
      return this.readNow({ kind: "paths", paths }, options.deadlineMs ?? POLICY_DEADLINE_MS);
    });
    // The next read waits for this one to end, however it ends; its caller sees how.
    this.queue = run.then(settled, settled);
    return run;
  }

  /** Stops the worker (the read in flight and those queued fail): the process is ending, and must not wait for them. */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    this.closes += 1;
    this.abandon?.(stopped());
    await worker?.terminate();
  }

  /**
   * One read, in as many workers as it takes: when a file crosses a bound,
   * its worker is stopped and the files after it are read in a new one, with
   * what was read before (for validation). A bound crossed while finding the
   * files or validating ends the read.
   */
  private async readNow(target: ReadTarget, deadlineMs: number): Promise<WorkerResult> {
    const gathered: Gathered = { files: [], done: new Set(), policies: [], diagnostics: [] };
    const result = (validation: Validation): WorkerResult => ({
      policies: gathered.policies,
      diagnostics: gathered.diagnostics,
      validation,
    });
    for (let next: ReadTarget | undefined = target; ; ) {
      const outcome = await this.attempt(next, deadlineMs, gathered);
      if (outcome.kind === "done") return result(outcome.validation);
      gathered.diagnostics.push(outcome.diagnostic);
      next = rest(outcome.at, gathered);
      if (!next) return result({ policies: [], diagnostics: [] });
    }
  }

  /**
   * One worker's part of a read: until it is done, or a bound stops it (at
   * `at`). The worker's steps and results wait on a port of their own,
   * taken only when the read ends or the deadline may be due, so the main
   * thread's JavaScript runs once per read (and per deadline allowance)
   * rather than about four times per file.
   */
  private attempt(target: ReadTarget, deadlineMs: number, gathered: Gathered): Promise<Outcome> {
    const worker = (this.worker ??= this.startWorker());
    const id = ++this.nextId;
    const steps = new MessageChannel();
    const clock = new StepClock(
      deadlineMs,
      target.kind === "paths"
        ? { file: target.paths[0] ?? ".", phase: "finding" }
        : { file: target.files[0]?.file ?? ".", phase: "reading" },
    );
    let timer: NodeJS.Timeout | undefined;
    return new Promise<Outcome>((resolve, reject) => {
      const take = (step: Step) => {
        switch (step.type) {
          case "progress":
            clock.step({ file: step.file, phase: step.phase }, step.at);
            return;
          case "found":
            gathered.files = step.files;
            gathered.diagnostics.push(...step.diagnostics);
            return;
          case "read":
            gathered.done.add(step.file);
            gathered.policies.push(...step.policies);
            gathered.diagnostics.push(...step.diagnostics);
            return;
          default:
            unreachable(step);
        }
      };
      /** Takes what the worker has posted since the last look: the results gathered, the clock brought up to date. */
      const catchUp = () => {
        for (let received = receiveMessageOnPort(steps.port1); received; received = receiveMessageOnPort(steps.port1))
          take(received.message as Step);
      };
      const finish = () => {
        clearTimeout(timer);
        steps.port1.close();
        worker.off("message", onMessage).off("error", onError).off("exit", onExit);
        this.abandon = undefined;
        // Idle, the worker does not keep the process alive; a read in flight does.
        worker.unref();
      };
      const stopWorker = () => {
        finish();
        if (this.worker === worker) this.worker = undefined;
        // terminate() resolves (with the exit code) once the thread has stopped; it does not reject.
        void worker.terminate();
      };
      const fail = (error: Error) => {
        stopWorker();
        reject(error);
      };
      // A bound crossed is the files' problem: one located diagnostic, as the loader's own are.
      const bounded = (diagnostic: Diagnostic) => {
        stopWorker();
        resolve({ kind: "bounded", diagnostic, at: clock.place });
      };
      /** Looks at the worker's steps when the current one's allowance may be used up (no sooner: it has not). */
      const check = () => {
        catchUp();
        const now = monotonicMs();
        if (clock.expired(now)) bounded(tooSlow(clock.place, deadlineMs));
        else timer = setTimeout(check, clock.wait(now));
      };
      const onMessage = (message: WorkerMessage) => {
        if (message.id !== id) return;
        switch (message.type) {
          case "done":
            catchUp();
            finish();
            resolve({ kind: "done", validation: message.validation });
            return;
          case "failed":
            finish();
            reject(
              Object.assign(
                new Error(message.error.message),
                message.error.stack === undefined ? {} : { stack: message.error.stack },
              ),
            );
            return;
          default:
            unreachable(message);
        }
      };
      const onError = (error: Error & { code?: string }) => {
        catchUp();
        if (error.code === "ERR_WORKER_OUT_OF_MEMORY") bounded(tooLarge(clock.place));
        else fail(error);
      };
      const onExit = (code: number) => {
        catchUp();
        const at = clock.place;
        fail(new Error(`the policy worker exited (code ${code}) while ${at.phase} ${at.file}`));
      };
      worker.on("message", onMessage).on("error", onError).on("exit", onExit);
      this.abandon = fail;
      // The clock starts with the worker's first step: starting a worker is not the files' doing either.
      timer = setTimeout(check, clock.wait(monotonicMs()));
      worker.ref();
      worker.postMessage({ id, target, steps: steps.port2 } satisfies WorkerRequest, [steps.port2]);
    });
  }

  private startWorker(): Worker {
    const worker = new Worker(new URL("./worker.js", import.meta.url), {
      resourceLimits: { maxOldGenerationSizeMb: POLICY_HEAP_MB },
      // Not the parent's flags (a test runner's, a profiler's): the worker is part of intercept, not of its caller.
      execArgv: [],
    });
    // A read in flight handles its worker's end itself; an idle worker that fails is replaced at the next read.
    const forget = () => {
      if (this.worker === worker) this.worker = undefined;
    };
    worker.on("error", forget).on("exit", forget);
    worker.unref();
    return worker;
  }
}

/**
 * Each step's time allowance, replayed from the worker's steps and when
 * each began: each file has its own (and so has each policy's validation),
 * from its first step on, paused while intercept loads its own parser or
 * compiler (not the file's doing, and on a busy machine it can take seconds).
 */
class StepClock {
  private left: number;
  /** Since when the allowance has been running (undefined: not started, or paused). */
  private since: number | undefined;

  constructor(
    private readonly allowanceMs: number,
    /** Where the worker is: its last step. */
    public place: Place,
  ) {
    this.left = allowanceMs;
  }

  /** The worker began @place at @at (ms, monotonicMs). */
  step(place: Place, at: number): void {
    if (place.file !== this.place.file || (place.phase === "validating") !== (this.place.phase === "validating")) {
      this.left = this.allowanceMs;
      this.since = undefined;
    }
    this.place = place;
    if (!LOADING_PHASES.includes(place.phase)) this.since ??= at;
    else if (this.since !== undefined) {
      this.left = Math.max(0, this.left - (at - this.since));
      this.since = undefined;
    }
  }

  expired(now: number): boolean {
    return this.since !== undefined && this.left - (now - this.since) <= 0;
  }

  /**
   * How long the allowance cannot run out in, from @now: what is left of it
   * (a paused one cannot resume before now; at least a few ms, so that a
   * pause that used it up is looked at again, not spun on).
   */
  wait(now: number): number {
    const left = this.since === undefined ? this.left : this.left - (now - this.since);
    return Math.max(left, this.since === undefined ? MIN_PAUSED_WAIT_MS : 0);
  }
}

/** How often a paused allowance that is used up is looked at again (it runs out as soon as it resumes). */
const MIN_PAUSED_WAIT_MS = 10;

/** What a read has gathered so far, over the workers it took. */
interface Gathered {
  /** The policy files found. */
  files: PolicyFile[];
  /** Those read to the end. */
  done: Set<string>;
  policies: LoadedPolicyData[];
  diagnostics: Diagnostic[];
}

type Outcome = { kind: "done"; validation: Validation } | { kind: "bounded"; diagnostic: Diagnostic; at: Place };

/**
 * What is left to read after a bound stopped a worker at @at: the files
 * after the one it was reading, with the policies read before (which are
 * validated with theirs). Nothing, when it stopped while finding the files
 * or validating.
 */
function rest(at: Place, gathered: Gathered): ReadTarget | undefined {
  if (at.phase === "finding" || at.phase === "validating") return undefined;
  gathered.done.add(at.file);
  return {
    kind: "rest",
    files: gathered.files.filter((file) => !gathered.done.has(file.file)),
    carried: gathered.policies,
  };
}

/** Where the worker is: the file (a path given, before the first file is found) and what it is doing. */
interface Place {
  file: string;
  phase: ReadPhase;
}

function stopped(): Error {
  return new Error("policy reading stopped: the process is ending");
}

function settled(): void {
  // The queue only orders reads; each read's own caller handles how it ended.
}

function tooSlow(at: Place, deadlineMs: number): Diagnostic {
  const hint = at.phase === "type-checking" ? " (a recursive type?)" : "";
  return diagnosticAt(
    "policy/too-slow",
    startOf(at.file),
    `${doing(at)} took longer than ${seconds(deadlineMs)}: a policy needs a fraction of that${hint}`,
  );
}

function tooLarge(at: Place): Diagnostic {
  return diagnosticAt(
    "policy/too-large",
    startOf(at.file),
    `${doing(at)} needed more than ${POLICY_HEAP_MB} MB of memory: a policy needs a fraction of that`,
  );
}

function doing(at: Place): string {
  return at.phase === "finding" ? `finding the policy files in ${at.file}` : `${at.phase} this policy`;
}

function seconds(ms: number): string {
  return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
}

const shared = new PolicyWorker();
/**
 * Started when this module is first imported, so that the worker's start
 * and its own imports (the validator and the loader: a few hundred ms)
 * run on another core while the command loads the rest of its code, rather
 * than after it. Most commands that import it read policies; one that
 * does not (destroy, init) pays for a thread started on another core, off
 * its own path, and ended with the process.
 */
shared.prestart();

/**
 * load → validate for the policy files at @paths (files, or folders
 * searched; none: policies/), in this process's policy worker: what was loaded, the loader's
 * diagnostics (a file too slow or too large among them), and validation's
 * verdict. LoadedPolicy's source maps are built again here.
 */
export async function loadAndValidate(paths: string[], options: ReadOptions = {}): Promise<CheckedLoad> {
  const result = await shared.read(paths.length > 0 ? paths : [DEFAULT_POLICY_DIR], options);
  return { policies: result.policies.map(fromData), diagnostics: result.diagnostics, validation: result.validation };
}

/** What loadAndValidate returns: the policies as loaded, with the loader's diagnostics, and validation's verdict on them. */
export interface CheckedLoad extends LoadResult {
  validation: Validation;
}

/**
 * Stops this process's policy worker, failing a read in flight and those
 * queued: for a process that is ending (the agent on SIGTERM) and must not
 * wait out a deadline. A later read starts a new worker.
 */
export function closePolicyWorker(): Promise<void> {
  return shared.close();
}
