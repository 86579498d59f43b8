import type { Diagnostic } from "../diagnostics.js";
import { readInWorker, type ReadOptions } from "./evaluation.js";
import { SourceMap, SourceText } from "./source-map.js";
import { loadResultFrom, type Validation } from "./worker-protocol.js";

export type { Span, SourceMap } from "./source-map.js";
export type { ReadOptions } from "./evaluation.js";
export type { Validation } from "./worker-protocol.js";
export { closePolicyWorker } from "./evaluation.js";
export { POLICY_EXTENSIONS } from "./files.js";

export const DEFAULT_POLICY_DIR = "policies";

/** A policy file read into plain data, before validation. */
export interface LoadedPolicy {
  file: string;
  value: unknown;
  sourceMap: SourceMap;
  /**
   * False when the loader reported problems in this file (in LoadResult's
   * diagnostics). Such a policy is still validated, so that all its
   * problems are reported in one run, but never accepted.
   */
  clean: boolean;
  /** JSON pointers whose value could not be read (code where data must be): already reported, so not checked again. */
  holes: string[];
  /** Objects and lists with members that could not be read: a "missing" property there may not be. */
  openObjects: string[];
  /** The type checker's errors (TS only): validation reports them, except where its own say the same. */
  typeErrors: Diagnostic[];
}

export interface LoadResult {
  policies: LoadedPolicy[];
  diagnostics: Diagnostic[];
}

/**
 * Stage 1: reads every policy named by @paths (files, or folders searched
 * for policy files), never running any of them. Problems in one file do not
 * stop the others from being read, so every error is reported at once. The
 * reading happens in the policy worker (evaluation.ts), bounded in time and
 * memory: a file that crosses a bound ends the read with one located
 * `policy/too-slow` or `policy/too-large` diagnostic.
 */
export async function loadPolicies(paths: string[], options: ReadOptions = {}): Promise<LoadResult> {
  return loadResultFrom(await readInWorker({ kind: "paths", paths: orDefault(paths) }, false, options));
}

/**
 * Loads one policy given as text, exactly as a file of that name would be
 * read, without the cache (init's scaffold, which may be written anywhere).
 */
export async function loadPolicySource(file: string, text: string, options: ReadOptions = {}): Promise<LoadResult> {
  return loadResultFrom(await readInWorker({ kind: "source", file, text }, false, options));
}

/** What loadAndValidate returns: the policies as loaded, with the loader's diagnostics, and validation's verdict on them. */
export interface CheckedLoad extends LoadResult {
  validation: Validation;
}

/**
 * Stages 1 and 2 together, both in the policy worker: loadPolicies, then
 * validatePolicies (src/validate) on what was loaded, so that no policy can
 * keep the calling thread busy, however its rules compare.
 */
export async function loadAndValidate(paths: string[], options: ReadOptions = {}): Promise<CheckedLoad> {
  const result = await readInWorker({ kind: "paths", paths: orDefault(paths) }, true, options);
  if (!result.validation) throw new Error("the policy worker returned no validation for a request to validate");
  return { ...loadResultFrom(result), validation: result.validation };
}

/** A policy that arrives as data, not as a file (a saved plan's): validated like one, located at its label. */
export function policyFromData(file: string, value: unknown): LoadedPolicy {
  return { file, value, sourceMap: new SourceMap(new SourceText(file, "")), clean: true, holes: [], openObjects: [], typeErrors: [] };
}

function orDefault(paths: string[]): string[] {
  return paths.length > 0 ? paths : [DEFAULT_POLICY_DIR];
}
