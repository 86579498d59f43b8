import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Located } from "./source-map.js";

/**
 * Evaluated TypeScript policies, cached by content: reading a TS policy
 * means starting the TypeScript compiler (ts-morph) and type-checking,
 * about a second; an unchanged file is served from here instead. The key
 * covers the file, the policy API it is checked against, and the loader's
 * own code, so any of them changing is a miss. Only valid files are cached.
 */
const CACHE_DIR = path.join("build", "cache", "policies");
const LOADER_FILES = ["./typescript.js", "../api.d.ts"].map((file) => fileURLToPath(new URL(file, import.meta.url)));

export interface CachedPolicy {
  value: unknown;
  locations: [string, Located][];
}

export async function cacheKey(text: string): Promise<string> {
  const hash = createHash("sha256").update(text);
  for (const file of LOADER_FILES) hash.update("\0").update(await readFile(file));
  return hash.digest("hex");
}

export async function readCached(key: string): Promise<CachedPolicy | undefined> {
  try {
    return JSON.parse(await readFile(path.join(CACHE_DIR, `${key}.json`), "utf8"));
  } catch {
    return undefined;
  }
}

export async function writeCached(key: string, entry: CachedPolicy): Promise<void> {
  await mkdir(CACHE_DIR, { recursive: true });
  const file = path.join(CACHE_DIR, `${key}.json`);
  const partial = `${file}.${process.pid}.tmp`;
  await writeFile(partial, JSON.stringify(entry));
  await rename(partial, file);
}
