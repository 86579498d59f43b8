import type { Diagnostic } from "../diagnostics.js";
import type { ValidPolicy } from "../validate/model.js";
import type { PolicyFile } from "./files.js";
import type { LoadedPolicy, LoadResult } from "./index.js";
import { SourceMap, SourceText, type Located } from "./source-map.js";

/**
 * The messages between a process and its policy worker (src/load/worker.ts).
 * Everything crosses as structured-cloneable data: a SourceMap travels as
 * its file's text and its entries, and is built again on arrival.
 */

/**
 * What the reader is doing, reported before each step so that a step that
 * never ends can be named: the file (or the path being searched), and
 * "finding" the files, "reading" one (opening, decoding), "evaluating",
 * "type-checking" or "validating" it. Loading a parser or the compiler is
 * intercept's own code, not the file's doing: not under the deadline.
 */
export type ReadPhase = "finding" | "reading" | LoadingPhase | "evaluating" | "type-checking" | "validating";
export type LoadingPhase = "loading the YAML parser for" | "loading the TypeScript compiler for";
export const LOADING_PHASES: readonly ReadPhase[] = ["loading the YAML parser for", "loading the TypeScript compiler for"] satisfies LoadingPhase[];

/**
 * What to read: files and folders; one text read as if it were the file
 * @file; or the rest of a read whose worker was stopped at a file (`files`
 * still to read, and the policies read before, to be validated with them).
 */
export type ReadTarget =
  | { kind: "paths"; paths: string[] }
  | { kind: "source"; file: string; text: string }
  | { kind: "rest"; files: PolicyFile[]; carried: LoadedPolicyData[] };

export interface WorkerRequest {
  id: number;
  target: ReadTarget;
  /** Whether to validate what was read, there (validate → the verdict in `validation`). */
  validate: boolean;
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
  validation?: Validation;
}

/**
 * Results are sent as they are reached, so that those before a file that
 * crosses a bound are kept: the files found (and the problems finding
 * them), each file's policies and problems, then validation's verdict.
 */
export type WorkerMessage =
  | { id: number; type: "progress"; file: string; phase: ReadPhase }
  | { id: number; type: "found"; files: PolicyFile[]; diagnostics: Diagnostic[] }
  | { id: number; type: "read"; file: string; policies: LoadedPolicyData[]; diagnostics: Diagnostic[] }
  | { id: number; type: "done"; validation?: Validation }
  /** A failure that is not the files' (a bug): passed on as an internal error. */
  | { id: number; type: "failed"; error: { message: string; stack?: string } };

export type LoadedPolicyData = Omit<LoadedPolicy, "sourceMap"> & { source: { file: string; text: string }; locations: [string, Located][] };

export function toData(policy: LoadedPolicy): LoadedPolicyData {
  const { sourceMap, ...rest } = policy;
  return { ...rest, source: { file: sourceMap.source.file, text: sourceMap.source.text }, locations: sourceMap.toEntries() };
}

export function fromData(data: LoadedPolicyData): LoadedPolicy {
  const { source, locations, ...rest } = data;
  return { ...rest, sourceMap: new SourceMap(new SourceText(source.file, source.text), locations) };
}

export function loadResultFrom(result: WorkerResult): LoadResult {
  return { policies: result.policies.map(fromData), diagnostics: result.diagnostics };
}
