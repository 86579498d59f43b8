/**
 * The policy worker's entry (a worker_threads worker; see client.ts):
 * loads and validates policies off the main thread, under a heap limit,
 * writing which file and phase it is on, and until when that may run, to
 * the request's PlaceRegister, and posting what it has read on the
 * request's steps port (which the main thread reads lazily), so that a
 * deadline or the limit can be reported at the file it stopped, and what
 * came before it kept. One request at a time.
 */
import { parentPort } from "node:worker_threads";
import { findPolicyFiles, type PolicyFile } from "../../load/files.js";
import type { LoadedPolicy } from "../../load/index.js";
import { readPolicyFile, type ReadPhase } from "../../load/read.js";
import { validatePolicies } from "../../validate/index.js";
import { StepClock } from "./clock.js";
import {
  fromData,
  monotonicMs,
  PlaceRegister,
  placeFiles,
  toData,
  type FileRead,
  type Step,
  type WorkerMessage,
  type WorkerRequest,
} from "./protocol.js";

const port = parentPort;
if (!port) throw new Error("policy-worker/worker.ts runs only as a worker thread");

/**
 * How much reading (ms) may go unposted. Posting each file as it is read
 * would cost a message per file (a repository of many small files pays it
 * many times); what is not posted when a bound stops the worker is read
 * again by the next one, which this keeps to a fraction of a second.
 */
const POST_READS_AFTER_MS = 100;

port.on("message", (request: WorkerRequest) => {
  void answer(request);
});

async function answer({ id, target, deadlineMs, place, steps }: WorkerRequest): Promise<void> {
  const send = (message: WorkerMessage) => port!.postMessage(message);
  try {
    const reader = new Reader(target, deadlineMs, PlaceRegister.attach(place), (step) => steps.postMessage(step));
    send({ id, type: "done", validation: await reader.run() });
  } catch (error) {
    // Not the files' fault (they end in diagnostics): the main thread reports it as an internal error.
    const failure =
      error instanceof Error
        ? { message: error.message, ...(error.stack !== undefined && { stack: error.stack }) }
        : { message: String(error) };
    send({ id, type: "failed", error: failure });
  }
}

/** One request's read: find, read and validate, saying where it is as it goes. */
class Reader {
  private readonly clock: StepClock;
  /** The files places are numbered by (placeFiles), by name. */
  private numbers = new Map<string, number>();
  /** Files read and not yet posted, and since when the reading they took began (the last post). */
  private unposted: FileRead[] = [];
  private lastPost = monotonicMs();

  constructor(
    private readonly target: WorkerRequest["target"],
    deadlineMs: number,
    private readonly register: PlaceRegister,
    private readonly post: (step: Step) => void,
  ) {
    const start = target.kind === "paths" ? -1 : target.carried.length;
    this.clock = new StepClock(deadlineMs, { phase: target.kind === "paths" ? "finding" : "reading", index: start });
  }

  async run() {
    const { target } = this;
    const policies: LoadedPolicy[] = target.kind === "rest" ? target.carried.map(fromData) : [];
    let files: PolicyFile[] = target.kind === "rest" ? target.files : [];
    if (target.kind === "paths") {
      this.progress("finding", -1);
      const found = await findPolicyFiles(target.paths);
      this.post({ type: "found", ...found });
      files = found.files;
    }
    this.numbers = new Map(placeFiles(target, files).map((file, index) => [file, index]));
    const progress = (file: string, phase: ReadPhase) => this.progress(phase, this.numberOf(file));
    for (const file of files) {
      const result = await readPolicyFile(file, progress);
      this.keep({ file: file.file, policies: result.policies.map(toData), diagnostics: result.diagnostics });
      policies.push(...result.policies);
    }
    // Everything read is posted before validation: a bound crossed there ends the read, with what was read.
    this.postReads();
    return validatePolicies(policies, (file) => progress(file, "validating"));
  }

  private progress(phase: ReadPhase, index: number): void {
    this.register.write(this.clock.step(phase, index, monotonicMs()));
  }

  private numberOf(file: string): number {
    const number = this.numbers.get(file);
    if (number === undefined) throw new Error(`policy worker: ${file} is not among the files of this read`);
    return number;
  }

  /** Keeps @read to post, and posts what is kept once it took long enough to read that reading it again would show. */
  private keep(read: FileRead): void {
    this.unposted.push(read);
    if (monotonicMs() - this.lastPost >= POST_READS_AFTER_MS) this.postReads();
  }

  private postReads(): void {
    this.lastPost = monotonicMs();
    if (this.unposted.length === 0) return;
    this.post({ type: "read", reads: this.unposted });
    this.unposted = [];
  }
}
