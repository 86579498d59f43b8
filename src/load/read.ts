import { diagnosticAt, startOf, type Diagnostic } from "../diagnostics.js";
import { cacheKey, readCached, writeCached } from "./cache.js";
import type { PolicyFile } from "./files.js";
import type { LoadedPolicy, LoadResult } from "./index.js";
import { SourceMap, type SourceText } from "./source-map.js";
import { readPolicyTextSync } from "./text.js";
/**
 * What the reader is doing, reported before each step so that a step that
 * never ends can be named: the file (or the path being searched), and
 * "finding" the files, "reading" one (opening, decoding), "evaluating",
 * "type-checking" or "validating" it. Loading a parser or the compiler is
 * intercept's own code, not the file's doing: not under the deadline.
 */
export type ReadPhase = "finding" | "reading" | LoadingPhase | "evaluating" | "type-checking" | "validating";
export type LoadingPhase = "loading the YAML parser for" | "loading the TypeScript compiler for";
export const LOADING_PHASES: readonly ReadPhase[] = [
  "loading the YAML parser for",
  "loading the TypeScript compiler for",
] satisfies LoadingPhase[];

export type Progress = (file: string, phase: ReadPhase) => void;

/**
 * Stage 1 for one file found by findPolicyFiles, in the calling thread (the
 * policy worker's: the file is read with blocking calls, readPolicyTextSync):
 * its text read, then evaluated, never run. A problem is a diagnostic,
 * never an exception.
 */
export async function readPolicyFile({ file, openPath }: PolicyFile, progress: Progress): Promise<LoadResult> {
  progress(file, "reading");
  const read = readPolicyTextSync(file, openPath);
  if ("error" in read) return { policies: [], diagnostics: [read.error] };
  return readSource(read.source, { cache: true }, progress);
}

/** One policy's text, read as a file of its name would be; @options.cache: whether TS evaluations are cached. */
export async function readSource(
  source: SourceText,
  options: { cache: boolean },
  progress: Progress,
): Promise<LoadResult> {
  const file = source.file;
  const loaded = file.endsWith(".ts")
    ? await loadTypeScript(source, options, progress)
    : await loadYaml(source, progress);
  if (loaded.value === undefined || loaded.value === null) {
    const empty =
      loaded.diagnostics.length === 0 ? [diagnosticAt("load/empty", startOf(file), "policy file is empty")] : [];
    return { policies: [], diagnostics: [...loaded.diagnostics, ...empty] };
  }
  const { value, sourceMap, holes, openObjects, typeErrors } = loaded;
  return {
    policies: [{ file, value, sourceMap, clean: loaded.diagnostics.length === 0, holes, openObjects, typeErrors }],
    diagnostics: loaded.diagnostics,
  };
}

type Loaded = Pick<LoadedPolicy, "value" | "sourceMap" | "holes" | "openObjects" | "typeErrors"> & {
  diagnostics: Diagnostic[];
};

/** The YAML loader, once imported: each file after the first is evaluated without a round of progress and import. */
let yamlLoader: typeof import("./yaml.js") | undefined;

/** yaml is imported only when a YAML file is read, ts-morph only for a TS file not in the cache: both are slow to load. */
async function loadYaml(source: SourceText, progress: Progress): Promise<Loaded> {
  if (!yamlLoader) {
    progress(source.file, "loading the YAML parser for");
    yamlLoader = await import("./yaml.js");
  }
  progress(source.file, "evaluating");
  return { ...yamlLoader.loadYamlPolicy(source), holes: [], openObjects: [], typeErrors: [] };
}

async function loadTypeScript(source: SourceText, options: { cache: boolean }, progress: Progress): Promise<Loaded> {
  const key = await cacheKey(source.text);
  const cached = options.cache ? await readCached(key) : undefined;
  if (cached) {
    return {
      value: cached.value,
      sourceMap: new SourceMap(source, cached.locations),
      diagnostics: [],
      holes: [],
      openObjects: [],
      typeErrors: [],
    };
  }
  progress(source.file, "loading the TypeScript compiler for");
  const { loadTypeScriptPolicy } = await import("./typescript.js");
  const loaded = loadTypeScriptPolicy(source, (phase) => progress(source.file, phase));
  if (
    options.cache &&
    loaded.diagnostics.length === 0 &&
    loaded.typeErrors.length === 0 &&
    loaded.value !== undefined
  ) {
    await writeCached(key, { value: loaded.value, locations: loaded.sourceMap.toEntries() });
  }
  return loaded;
}
