import type { Diagnostic } from "../../diagnostics.js";
import type { PolicyFile } from "../../load/files.js";
import type { LoadedPolicy } from "../../load/index.js";
import type { ReadPhase } from "../../load/read.js";
import { SourceMap, SourceText, type PackedLocations } from "../../load/source-map.js";
import type { MessagePort } from "node:worker_threads";
import type { ValidPolicy } from "../../validate/model.js";

/**
 * The messages between a process and its policy worker (worker.ts).
 * Everything crosses as structured-cloneable data: a SourceMap travels as
 * its file's text and its entries, and is built again on arrival. Where the
 * worker is (for the deadline) is not a message: it is written to a
 * PlaceRegister both threads share.
 */

/**
 * What to read: files and folders, or the rest of a read whose worker was
 * stopped at a file (`files` still to read, and the policies read before,
 * to be validated with them).
 */
export type ReadTarget =
  | { kind: "paths"; paths: string[] }
  | { kind: "rest"; files: PolicyFile[]; carried: LoadedPolicyData[] };

export interface WorkerRequest {
  id: number;
  target: ReadTarget;
  /** Each file's allowance, and each policy's validation's (ms). */
  deadlineMs: number;
  /** The shared memory of the request's PlaceRegister, where the worker says where it is. */
  place: SharedArrayBuffer;
  /**
   * Where the worker posts what it has found and read (Step): a port the
   * main thread never starts, so that no JavaScript runs there for each
   * message; it takes them (receiveMessageOnPort) when it needs them, at
   * the end of a read or when a deadline may be due.
   */
  steps: MessagePort;
}

export interface Validation {
  /** The valid policies: none unless every file read and validated without a problem. */
  policies: ValidPolicy[];
  /** Validation's own diagnostics (the loader's are in the LoadResult). */
  diagnostics: Diagnostic[];
}

export interface WorkerResult {
  policies: LoadedPolicyData[];
  diagnostics: Diagnostic[];
  validation: Validation;
}

/** One file's part of a read: its policies and its problems. */
export interface FileRead {
  file: string;
  policies: LoadedPolicyData[];
  diagnostics: Diagnostic[];
}

/**
 * What the worker posts on the request's steps port: the files found (and
 * the problems finding them), then the files read, a batch at a time (all
 * before validation begins), so that what comes before a file that crosses
 * a bound is kept; a file read but not yet posted when its worker is
 * stopped is read again by the next one.
 */
export type Step =
  | { type: "found"; files: PolicyFile[]; diagnostics: Diagnostic[] }
  | { type: "read"; reads: FileRead[] };

/** What the worker posts to the main thread's listener: the read's end (after its last Step). */
export type WorkerMessage =
  | { id: number; type: "done"; validation: Validation }
  /** A failure that is not the files' (a bug): passed on as an internal error. */
  | { id: number; type: "failed"; error: { message: string; stack?: string } };

export type LoadedPolicyData = Omit<LoadedPolicy, "sourceMap"> & {
  source: { file: string; text: string };
  locations: PackedLocations;
};

export function toData(policy: LoadedPolicy): LoadedPolicyData {
  const { sourceMap, ...rest } = policy;
  return {
    ...rest,
    source: { file: sourceMap.source.file, text: sourceMap.source.text },
    locations: sourceMap.pack(),
  };
}

export function fromData(data: LoadedPolicyData): LoadedPolicy {
  const { source, locations, ...rest } = data;
  return { ...rest, sourceMap: SourceMap.unpack(new SourceText(source.file, source.text), locations) };
}

/** Milliseconds on the monotonic clock, the same in every thread of the process (unlike performance.now()). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * The files a worker's places are numbered by, the same in both threads:
 * the carried policies' (validated again), then those it reads. A place
 * "finding" is named by the first path given instead.
 */
export function placeFiles(target: ReadTarget, found: readonly PolicyFile[]): string[] {
  return target.kind === "paths"
    ? found.map((entry) => entry.file)
    : [...target.carried.map((policy) => policy.file), ...target.files.map((entry) => entry.file)];
}

/** Where a worker is, as the register holds it: a phase, a file (placeFiles' index), and its allowance. */
export interface PlaceState {
  phase: ReadPhase;
  index: number;
  /**
   * Running: until when (monotonicMs) the step may run. Paused (not begun,
   * or intercept loading its own code): how much of its allowance is left.
   */
  allowance: { running: true; until: number } | { running: false; leftMs: number };
}

/** The phases by number, for the register. */
const PHASE_CODES: readonly ReadPhase[] = [
  "finding",
  "reading",
  "loading the YAML parser for",
  "loading the TypeScript compiler for",
  "evaluating",
  "type-checking",
  "validating",
];

/** The register's cells (Int32, each read and written with Atomics). */
const CELL = {
  /** Odd while a write is under way (a sequence lock: a read that overlaps one is taken again). */
  sequence: 0,
  phase: 1,
  index: 2,
  /** 1: running, until `value`; 0: paused, with `value` left. */
  running: 3,
  /** Whole ms: a running step's end, after the register's origin; or a paused one's allowance left. */
  value: 4,
  /** The register's origin: the monotonicMs it was made at, in whole ms, as two halves. */
  originHigh: 5,
  originLow: 6,
} as const;
const CELLS = 7;
/** The largest value a cell holds (about 24 days of ms): a longer allowance is as good as none. */
const MAX_CELL = 2 ** 31 - 1;

/**
 * Where the policy worker is, and until when its step may run, in memory
 * both threads share: the worker writes it at each step (a few stores, not
 * a message, as a file is a few steps and the files of a large repository
 * many), and the main thread reads it only when a deadline may be due or
 * the worker has stopped. Times are kept in whole ms (rounded towards the
 * later deadline), after the register's origin, so that every cell fits an
 * Int32 that Atomics reads and writes whole.
 */
export class PlaceRegister {
  private readonly cells: Int32Array;
  private readonly origin: number;

  private constructor(readonly buffer: SharedArrayBuffer) {
    this.cells = new Int32Array(buffer);
    this.origin = Atomics.load(this.cells, CELL.originHigh) * 2 ** 31 + Atomics.load(this.cells, CELL.originLow);
  }

  /** A new register (the main thread's, before the request), holding @initial. */
  static create(initial: PlaceState): PlaceRegister {
    const buffer = new SharedArrayBuffer(CELLS * Int32Array.BYTES_PER_ELEMENT);
    const cells = new Int32Array(buffer);
    const origin = Math.floor(monotonicMs());
    Atomics.store(cells, CELL.originHigh, Math.floor(origin / 2 ** 31));
    Atomics.store(cells, CELL.originLow, origin % 2 ** 31);
    const register = new PlaceRegister(buffer);
    register.write(initial);
    return register;
  }

  /** The register in @buffer (the worker's, from the request). */
  static attach(buffer: SharedArrayBuffer): PlaceRegister {
    return new PlaceRegister(buffer);
  }

  write(state: PlaceState): void {
    const { cells } = this;
    const value = Math.min(
      MAX_CELL,
      Math.ceil(state.allowance.running ? state.allowance.until - this.origin : state.allowance.leftMs),
    );
    Atomics.add(cells, CELL.sequence, 1);
    Atomics.store(cells, CELL.phase, PHASE_CODES.indexOf(state.phase));
    Atomics.store(cells, CELL.index, state.index);
    Atomics.store(cells, CELL.running, state.allowance.running ? 1 : 0);
    Atomics.store(cells, CELL.value, value);
    Atomics.add(cells, CELL.sequence, 1);
  }

  /**
   * The last state written whole. A write takes a few stores with nothing
   * between them that could stop the worker, so a read overlapping one
   * finds it done when it looks again.
   */
  read(): PlaceState {
    const { cells } = this;
    for (;;) {
      const before = Atomics.load(cells, CELL.sequence);
      const phase = PHASE_CODES[Atomics.load(cells, CELL.phase)]!;
      const index = Atomics.load(cells, CELL.index);
      const running = Atomics.load(cells, CELL.running) === 1;
      const value = Atomics.load(cells, CELL.value);
      if (before % 2 === 0 && Atomics.load(cells, CELL.sequence) === before) {
        return {
          phase,
          index,
          allowance: running ? { running, until: this.origin + value } : { running, leftMs: value },
        };
      }
    }
  }
}
