import { diagnosticAt, startOf, type Diagnostic } from "../diagnostics.js";
import { cacheKey, readCached, writeCached } from "./cache.js";
import { findPolicyFiles } from "./files.js";
import { SourceMap, SourceText } from "./source-map.js";
import { readPolicyText } from "./text.js";

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
 * Stage 1: reads every policy named by @paths (files, or folders searched
 * for policy files), never running any of them. Problems in one file do not
 * stop the others from being read, so every error is reported at once.
 */
export async function loadPolicies(paths: string[]): Promise<LoadResult> {
  const { files, diagnostics } = await findPolicyFiles(paths.length > 0 ? paths : [DEFAULT_POLICY_DIR]);
  const policies: LoadedPolicy[] = [];
  for (const { file, openPath } of files) {
    const read = await readPolicyText(file, openPath);
    if ("error" in read) {
      diagnostics.push(read.error);
      continue;
    }
    const one = await loadSource(read.source, { cache: true });
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
  return loadSource(new SourceText(file, text), { cache: false });
}

/** A policy that arrives as data, not as a file (a saved plan's): validated like one, located at its label. */
export function policyFromData(file: string, value: unknown): LoadedPolicy {
  return { file, value, sourceMap: new SourceMap(new SourceText(file, "")), clean: true, holes: [], openObjects: [], typeErrors: [] };
}

async function loadSource(source: SourceText, options: { cache: boolean }): Promise<LoadResult> {
  const file = source.file;
  const loaded = file.endsWith(".ts") ? await loadTypeScript(source, options) : await loadYaml(source);
  if (loaded.value === undefined || loaded.value === null) {
    const empty = loaded.diagnostics.length === 0 ? [diagnosticAt("load/empty", startOf(file), "policy file is empty")] : [];
    return { policies: [], diagnostics: [...loaded.diagnostics, ...empty] };
  }
  const { value, sourceMap, holes, openObjects, typeErrors } = loaded;
  return { policies: [{ file, value, sourceMap, clean: loaded.diagnostics.length === 0, holes, openObjects, typeErrors }], diagnostics: loaded.diagnostics };
}

type Loaded = Pick<LoadedPolicy, "value" | "sourceMap" | "holes" | "openObjects" | "typeErrors"> & { diagnostics: Diagnostic[] };

/** yaml is imported only when a YAML file is read, ts-morph only for a TS file not in the cache: both are slow to load. */
async function loadYaml(source: SourceText): Promise<Loaded> {
  const { loadYamlPolicy } = await import("./yaml.js");
  return { ...loadYamlPolicy(source), holes: [], openObjects: [], typeErrors: [] };
}

async function loadTypeScript(source: SourceText, options: { cache: boolean }): Promise<Loaded> {
  const key = await cacheKey(source.text);
  const cached = options.cache ? await readCached(key) : undefined;
  if (cached) {
    return { value: cached.value, sourceMap: new SourceMap(source, cached.locations), diagnostics: [], holes: [], openObjects: [], typeErrors: [] };
  }
  const { loadTypeScriptPolicy } = await import("./typescript.js");
  const loaded = loadTypeScriptPolicy(source);
  if (options.cache && loaded.diagnostics.length === 0 && loaded.typeErrors.length === 0 && loaded.value !== undefined) {
    await writeCached(key, { value: loaded.value, locations: loaded.sourceMap.toEntries() });
  }
  return loaded;
}
