import { createHash } from "node:crypto";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cacheDir } from "../cache-dir.js";
import type { Located } from "./source-map.js";

/**
 * Evaluated TypeScript policies, cached by content: reading a TS policy
 * means starting the TypeScript compiler (ts-morph) and type-checking,
 * about a second; an unchanged file is served from here instead. The key
 * covers the file, the policy API it is checked against, and the loader's
 * own code, so any of them changing is a miss. Only files the loader read
 * without a problem (no syntax, type or not-data error) are cached. The
 * cache lives in the user's cache directory (src/cache-dir.ts), never in the
 * checkout, and is optional: when there is none, or an entry cannot be read
 * or written, the file is simply read again.
 */
const LOADER_FILES = ["./typescript.js", "./source-map.js", "./limits.js", "../api.d.ts"].map((file) =>
  fileURLToPath(new URL(file, import.meta.url)),
);

let directory: Promise<string | undefined> | undefined;
const policyCache = () => (directory ??= cacheDir("policies"));

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
  const dir = await policyCache();
  if (!dir) return undefined;
  try {
    const entry = JSON.parse(await readFile(path.join(dir, `${key}.json`), "utf8")) as Partial<CachedPolicy>;
    return Array.isArray(entry.locations) && "value" in entry ? (entry as CachedPolicy) : undefined;
  } catch {
    // Missing (the usual miss), half-written or unreadable: the policy is read from its file instead.
    return undefined;
  }
}

export async function writeCached(key: string, entry: CachedPolicy): Promise<void> {
  const dir = await policyCache();
  if (!dir) return;
  const file = path.join(dir, `${key}.json`);
  const partial = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(partial, JSON.stringify(entry), { mode: 0o600 });
    await rename(partial, file);
  } catch {
    // A full or read-only disk costs the next run a second; this run has its policy.
    try {
      await rm(partial, { force: true });
    } catch {
      // The partial file stays behind; the next write of this key replaces it.
    }
  }
}
