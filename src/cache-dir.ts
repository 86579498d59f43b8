import { constants } from "node:fs";
import { access, lstat, mkdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

/**
 * A directory for one of intercept's caches (`cacheDir("policies")`), made
 * if missing: `$INTERCEPT_CACHE_DIR`, else `$XDG_CACHE_HOME/intercept`, else
 * `~/.cache/intercept`; when that cannot be used (a read-only or foreign
 * home, as for a service user), `<tmpdir>/intercept-cache-<uid>`.
 *
 * A cache's entries are trusted as if they were computed here, so a
 * directory is used only when it belongs to this user and nobody else can
 * write to it (a shared /tmp is where someone else could have made it first).
 *
 * Returns undefined when no directory qualifies. That is not an error: a
 * cache only saves time, so without one every lookup misses and the work is
 * done again; validate and build must work for any user in a read-only
 * checkout.
 */
export async function cacheDir(...parts: string[]): Promise<string | undefined> {
  for (const base of cacheRoots()) {
    const dir = path.join(base, ...parts);
    if ((await isPrivateDirectory(base, dir)) && (await isPrivateDirectory(dir, dir))) return dir;
  }
  return undefined;
}

function cacheRoots(): string[] {
  const { INTERCEPT_CACHE_DIR, XDG_CACHE_HOME } = process.env;
  // The XDG base directory spec: a relative XDG_CACHE_HOME is invalid and ignored.
  const preferred = INTERCEPT_CACHE_DIR
    ? path.resolve(INTERCEPT_CACHE_DIR)
    : XDG_CACHE_HOME && path.isAbsolute(XDG_CACHE_HOME)
      ? path.join(XDG_CACHE_HOME, "intercept")
      : path.join(os.homedir(), ".cache", "intercept");
  return [preferred, path.join(os.tmpdir(), `intercept-cache-${process.getuid?.() ?? "user"}`)];
}

/** @dir exists (made from @create if missing), is a real directory of ours, and only we can write to it. */
async function isPrivateDirectory(dir: string, create: string): Promise<boolean> {
  try {
    await mkdir(create, { recursive: true, mode: 0o700 });
    const info = await lstat(dir);
    const ours = process.getuid === undefined || info.uid === process.getuid();
    const othersCanWrite = (info.mode & 0o022) !== 0;
    if (!info.isDirectory() || !ours || othersCanWrite) return false;
    await access(dir, constants.W_OK);
    return true;
  } catch {
    // Not made, not there or not writable: this place cannot hold the cache, and the next one is tried.
    return false;
  }
}
