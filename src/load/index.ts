import type { Diagnostic } from "../diagnostics.js";
import { findPolicyFiles } from "./files.js";
import { readPolicyFile, readSource } from "./read.js";
import { SourceMap, SourceText } from "./source-map.js";

export type { Span, SourceMap } from "./source-map.js";
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
 * Stage 1, in the calling thread: reads every policy named by @paths
 * (files, or folders searched for policy files), never running any of
 * them. Problems in one file do not stop the others from being read, so
 * every error is reported at once. Nothing bounds its time or memory but
 * the limits in limits.ts: intercept's commands and agent read policies in
 * the policy worker (src/reconcile/policy-worker), which does.
 */
export async function loadPolicies(paths: string[]): Promise<LoadResult> {
  const { files, diagnostics } = await findPolicyFiles(paths.length > 0 ? paths : [DEFAULT_POLICY_DIR]);
  const policies: LoadedPolicy[] = [];
  for (const file of files) {
    const one = await readPolicyFile(file, ignoreProgress);
    diagnostics.push(...one.diagnostics);
    policies.push(...one.policies);
  }
  return { policies, diagnostics };
}

/**
 * Loads one policy given as text, exactly as a file of that name would be
 * read, without the cache (init's scaffold, which may be written anywhere).
 */
export async function loadPolicySource(file: string, text: string): Promise<LoadResult> {
  return readSource(new SourceText(file, text), { cache: false }, ignoreProgress);
}

/** A policy that arrives as data, not as a file (a saved plan's): validated like one, located at its label. */
export function policyFromData(file: string, value: unknown): LoadedPolicy {
  return {
    file,
    value,
    sourceMap: new SourceMap(new SourceText(file, "")),
    clean: true,
    holes: [],
    openObjects: [],
    typeErrors: [],
  };
}

/** In this thread nothing watches the time each step takes. */
function ignoreProgress(): void {
  // Progress is for the policy worker's deadline (src/reconcile/policy-worker).
}
