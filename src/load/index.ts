import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import type { Diagnostic } from "../diagnostics.js";
import { cacheKey, readCached, writeCached } from "./cache.js";
import { readPolicyText } from "./text.js";
import { SourceMap } from "./source-map.js";

export type { Position, SourceMap } from "./source-map.js";

/** Policy files are found by these endings; the default place is policies/. */
const POLICY_EXTENSIONS = [".ts", ".yaml", ".yml"];
export const DEFAULT_POLICY_DIR = "policies";

/** A policy file read into plain data, before validation. */
export interface LoadedPolicy {
  file: string;
  value: unknown;
  sourceMap: SourceMap;
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
  const { files, diagnostics } = await expandPaths(paths.length > 0 ? paths : [DEFAULT_POLICY_DIR]);
  const policies: LoadedPolicy[] = [];
  for (const file of files) {
    const read = await readPolicyText(file);
    if ("error" in read) {
      diagnostics.push(read.error);
      continue;
    }
    const loaded = file.endsWith(".ts") ? await loadTypeScript(file, read.text) : (await import("./yaml.js")).loadYamlPolicy(file, read.text);
    diagnostics.push(...loaded.diagnostics);
    if (loaded.diagnostics.length > 0) continue;
    if (loaded.value === null || loaded.value === undefined) {
      diagnostics.push({ file, line: 1, column: 1, message: "policy file is empty" });
      continue;
    }
    policies.push({ file, value: loaded.value, sourceMap: loaded.sourceMap });
  }
  return { policies, diagnostics };
}

/** A TS policy from the cache, or read with ts-morph (imported only then: it is slow to load). */
async function loadTypeScript(file: string, text: string) {
  const key = await cacheKey(text);
  const cached = await readCached(key);
  if (cached) return { value: cached.value, sourceMap: new SourceMap(cached.locations), diagnostics: [] };
  const { loadTypeScriptPolicy } = await import("./typescript.js");
  const loaded = loadTypeScriptPolicy(file, text);
  if (loaded.diagnostics.length === 0) await writeCached(key, { value: loaded.value, locations: loaded.sourceMap.toEntries() });
  return loaded;
}

async function expandPaths(paths: string[]): Promise<{ files: string[]; diagnostics: Diagnostic[] }> {
  const files: string[] = [];
  const diagnostics: Diagnostic[] = [];
  for (const given of paths) {
    const file = displayPath(given);
    try {
      if ((await stat(given)).isDirectory()) files.push(...(await policyFilesIn(given)));
      else files.push(file);
    } catch {
      diagnostics.push({ file, line: 1, column: 1, message: "no such policy file or folder" });
    }
  }
  return { files: [...new Set(files)].sort(), diagnostics };
}

async function policyFilesIn(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile() && POLICY_EXTENSIONS.includes(path.extname(entry.name)))
    .map((entry) => displayPath(path.join(entry.parentPath ?? entry.path, entry.name)));
}

/** Paths as the user would type them: relative to the working directory when inside it. */
function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), path.resolve(file));
  return relative.startsWith("..") ? path.resolve(file) : relative;
}
