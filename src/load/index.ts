import { diagnosticAt, startOf, type Diagnostic } from "../diagnostics.js";
import { cacheKey, readCached, writeCached } from "./cache.js";
import { findPolicyFiles } from "./files.js";
import { SourceMap, type SourceText } from "./source-map.js";
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
    const loaded = file.endsWith(".ts") ? await loadTypeScript(read.source) : await loadYaml(read.source);
    diagnostics.push(...loaded.diagnostics);
    if (loaded.value === undefined || loaded.value === null) {
      if (loaded.diagnostics.length === 0) diagnostics.push(diagnosticAt("load/empty", startOf(file), "policy file is empty"));
      continue;
    }
    const { value, sourceMap, holes, openObjects, typeErrors } = loaded;
    policies.push({ file, value, sourceMap, clean: loaded.diagnostics.length === 0, holes, openObjects, typeErrors });
  }
  return { policies, diagnostics };
}

type Loaded = Pick<LoadedPolicy, "value" | "sourceMap" | "holes" | "openObjects" | "typeErrors"> & { diagnostics: Diagnostic[] };

/** yaml is imported only when a YAML file is read, ts-morph only for a TS file not in the cache: both are slow to load. */
async function loadYaml(source: SourceText): Promise<Loaded> {
  const { loadYamlPolicy } = await import("./yaml.js");
  return { ...loadYamlPolicy(source), holes: [], openObjects: [], typeErrors: [] };
}

async function loadTypeScript(source: SourceText): Promise<Loaded> {
  const key = await cacheKey(source.text);
  const cached = await readCached(key);
  if (cached) {
    return { value: cached.value, sourceMap: new SourceMap(source, cached.locations), diagnostics: [], holes: [], openObjects: [], typeErrors: [] };
  }
  const { loadTypeScriptPolicy } = await import("./typescript.js");
  const loaded = loadTypeScriptPolicy(source);
  if (loaded.diagnostics.length === 0 && loaded.typeErrors.length === 0 && loaded.value !== undefined) {
    await writeCached(key, { value: loaded.value, locations: loaded.sourceMap.toEntries() });
  }
  return loaded;
}
