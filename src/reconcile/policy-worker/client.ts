import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads";
import { diagnosticAt, startOf, type Diagnostic } from "../../diagnostics.js";
import { unreachable } from "../../errors.js";
import type { PolicyFile } from "../../load/files.js";
import { POLICY_DEADLINE_MS, POLICY_HEAP_MB } from "../../load/limits.js";
import type { ReadPhase } from "../../load/read.js";
import { DEFAULT_POLICY_DIR, type LoadResult } from "../../load/index.js";
import {
  fromData,
  monotonicMs,
  PlaceRegister,
  placeFiles,
  type LoadedPolicyData,
  type PlaceState,
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
    const gathered: Gathered = { files: [], found: [], reads: new Map(), policies: [], stopped: [] };
    const result = (validation: Validation): WorkerResult => ({
      policies: gathered.policies,
      // In the order of the files, whichever worker read each: as if one had read them all.
      diagnostics: [
        ...gathered.found,
        ...gathered.files.flatMap((file) => gathered.reads.get(file.file) ?? []),
        ...gathered.stopped,
      ],
      validation,
    });
    for (let next: ReadTarget | undefined = target; ; ) {
      const outcome = await this.attempt(next, deadlineMs, gathered);
      if (outcome.kind === "done") return result(outcome.validation);
      next = rest(outcome.at, outcome.diagnostic, gathered);
      if (!next) return result({ policies: [], diagnostics: [] });
    }
  }

  /**
   * One worker's part of a read: until it is done, or a bound stops it (at
   * `at`). Where the worker is, it writes to a PlaceRegister; what it has
   * read waits on a port of its own; both are looked at only when the read
   * ends or the deadline may be due, so the main thread's JavaScript runs
   * once per read (and per deadline allowance), not for each file.
   */
  private attempt(target: ReadTarget, deadlineMs: number, gathered: Gathered): Promise<Outcome> {
    const worker = (this.worker ??= this.startWorker());
    const id = ++this.nextId;
    const steps = new MessageChannel();
    const register = PlaceRegister.create({
      phase: target.kind === "paths" ? "finding" : "reading",
      index: target.kind === "paths" ? -1 : target.carried.length,
      // The clock starts with the worker's first step: starting a worker is not the files' doing.
      allowance: { running: false, leftMs: deadlineMs },
    });
    let timer: NodeJS.Timeout | undefined;
    return new Promise<Outcome>((resolve, reject) => {
      const take = (step: Step) => {
        switch (step.type) {
          case "found":
            gathered.files = step.files;
            gathered.found.push(...step.diagnostics);
            return;
          case "read":
            for (const read of step.reads) {
              gathered.reads.set(read.file, read.diagnostics);
              gathered.policies.push(...read.policies);
            }
            return;
          default:
            unreachable(step);
        }
      };
      /** Takes what the worker has posted since the last look. */
      const catchUp = () => {
        for (let received = receiveMessageOnPort(steps.port1); received; received = receiveMessageOnPort(steps.port1))
          take(received.message as Step);
      };
      /** Where the worker is now (or was when it stopped), by name: while finding, the first path given. */
      const placeOf = (state: PlaceState): Place => {
        const firstPath = target.kind === "paths" ? target.paths[0] : undefined;
        const file = state.phase === "finding" ? firstPath : placeFiles(target, gathered.files)[state.index];
        return { phase: state.phase, file: file ?? "." };
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
      const bounded = (at: Place, diagnostic: Diagnostic) => {
        stopWorker();
        resolve({ kind: "bounded", diagnostic, at });
      };
      /** Looks at where the worker is when its step's allowance may be used up (no sooner: it has not). */
      const check = () => {
        catchUp();
        const state = register.read();
        const now = monotonicMs();
        const { allowance } = state;
        if (allowance.running && now >= allowance.until) {
          const at = placeOf(state);
          bounded(at, tooSlow(at, deadlineMs));
        } else {
          // A paused allowance cannot resume before now; one used up is looked at again soon, not spun on.
          timer = setTimeout(
            check,
            allowance.running ? allowance.until - now : Math.max(allowance.leftMs, MIN_PAUSED_WAIT_MS),
          );
        }
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
        const at = placeOf(register.read());
        if (error.code === "ERR_WORKER_OUT_OF_MEMORY") bounded(at, tooLarge(at));
        else fail(error);
      };
      const onExit = (code: number) => {
        catchUp();
        const at = placeOf(register.read());
        fail(new Error(`the policy worker exited (code ${code}) while ${at.phase} ${at.file}`));
      };
      worker.on("message", onMessage).on("error", onError).on("exit", onExit);
      this.abandon = fail;
      timer = setTimeout(check, deadlineMs);
      worker.ref();
      worker.postMessage(
        { id, target, deadlineMs, place: register.buffer, steps: steps.port2 } satisfies WorkerRequest,
        [steps.port2],
      );
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

/** How often a paused allowance that is used up is looked at again (it runs out as soon as it resumes). */
const MIN_PAUSED_WAIT_MS = 10;

/** What a read has gathered so far, over the workers it took. */
interface Gathered {
  /** The policy files found, and the problems finding them. */
  files: PolicyFile[];
  found: Diagnostic[];
  /** The problems of each file done with: read, or stopped at by a bound. */
  reads: Map<string, Diagnostic[]>;
  /** The policies read, in the order of their files. */
  policies: LoadedPolicyData[];
  /** A bound crossed while finding the files or validating (which ends the read). */
  stopped: Diagnostic[];
}

type Outcome = { kind: "done"; validation: Validation } | { kind: "bounded"; diagnostic: Diagnostic; at: Place };

/**
 * What is left to read after a bound stopped a worker at @at (with
 * @diagnostic, kept as that file's): the files other than those read and
 * posted, and that one, with the policies read before (which are validated
 * with theirs). Nothing, when it stopped while finding the files or
 * validating.
 */
function rest(at: Place, diagnostic: Diagnostic, gathered: Gathered): ReadTarget | undefined {
  if (at.phase === "finding" || at.phase === "validating") {
    gathered.stopped.push(diagnostic);
    return undefined;
  }
  gathered.reads.set(at.file, [diagnostic]);
  return {
    kind: "rest",
    files: gathered.files.filter((file) => !gathered.reads.has(file.file)),
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
