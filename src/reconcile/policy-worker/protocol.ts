import type { Diagnostic } from "../../diagnostics.js";
import type { PolicyFile } from "../../load/files.js";
import type { LoadedPolicy } from "../../load/index.js";
import type { ReadPhase } from "../../load/read.js";
import { SourceMap, SourceText, type Located } from "../../load/source-map.js";
import type { MessagePort } from "node:worker_threads";
import type { ValidPolicy } from "../../validate/model.js";

/**
 * The messages between a process and its policy worker (worker.ts).
 * Everything crosses as structured-cloneable data: a SourceMap travels as
 * its file's text and its entries, and is built again on arrival.
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
  /**
   * Where the worker posts its steps and results (Step): a port the main
   * thread never starts, so that no JavaScript runs there for each of them;
   * it takes them (receiveMessageOnPort) when it needs them, at the end of
   * a read or when a deadline may be due.
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

/**
 * What the worker posts on the request's steps port, as it is reached, so
 * that what comes before a file that crosses a bound is kept: each step
 * (file and phase, with when it began, `at`, in ms of the monotonic clock,
 * monotonicMs), the files found (and the problems finding them), and each
 * file's policies and problems.
 */
export type Step =
  | { type: "progress"; file: string; phase: ReadPhase; at: number }
  | { type: "found"; files: PolicyFile[]; diagnostics: Diagnostic[] }
  | { type: "read"; file: string; policies: LoadedPolicyData[]; diagnostics: Diagnostic[] };

/** What the worker posts to the main thread's listener: the read's end (after its last Step). */
export type WorkerMessage =
  | { id: number; type: "done"; validation: Validation }
  /** A failure that is not the files' (a bug): passed on as an internal error. */
  | { id: number; type: "failed"; error: { message: string; stack?: string } };

export type LoadedPolicyData = Omit<LoadedPolicy, "sourceMap"> & {
  source: { file: string; text: string };
  locations: [string, Located][];
};

export function toData(policy: LoadedPolicy): LoadedPolicyData {
  const { sourceMap, ...rest } = policy;
  return {
    ...rest,
    source: { file: sourceMap.source.file, text: sourceMap.source.text },
    locations: sourceMap.toEntries(),
  };
}

export function fromData(data: LoadedPolicyData): LoadedPolicy {
  const { source, locations, ...rest } = data;
  return { ...rest, sourceMap: new SourceMap(new SourceText(source.file, source.text), locations) };
}

/** Milliseconds on the monotonic clock, the same in every thread of the process (unlike performance.now()). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
