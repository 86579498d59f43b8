import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { InterceptError } from "../errors.js";
import { namespaceKey } from "../kernel/namespace.js";
import { listEntries, PIN_ROOT, PinLayout, removeIfEmpty, removePins } from "../kernel/pins.js";
import { FLEET_LOCK_HOLDER, readLockRecord } from "../model/lock-holder.js";
import { isNamespaceKey, NETNS_DIR } from "../model/namespace.js";
import { LOCK_DIR, lockFile, lockNamespace, type NamespaceLock } from "../reconcile/lock.js";
import type { Logger } from "./log.js";
import { identifyNamespaceFile, type NamespaceFile } from "./netns-directory.js";

export { FLEET_LOCK_HOLDER } from "../model/lock-holder.js";

export interface OrphanSearch {
  pinRoot?: string;
  lockDir?: string;
  netnsDir?: string;
  identify?: (file: string) => Promise<NamespaceFile>;
  /** The key of the namespace the agent runs in (never an orphan). */
  ownKey?: string;
}

/**
 * Removes the pins of namespaces that were deleted while no agent ran
 * (between an agent's --keep exit and its successor's start, an upgrade):
 * nothing else would, since no namespace can be named to reach them. A pin
 * directory is an orphan when all of these hold: its key is no namespace
 * under /var/run/netns (by any name) nor the agent's own; the last holder of
 * its lock was an agent serving namespaces by --netns-match (so it served a
 * named namespace, not the own namespace of some process elsewhere); and its
 * lock is free — held while the pins go, so nothing can load new ones
 * there meanwhile. Returns the keys removed.
 */
export async function collectOrphans(log: Logger, search: OrphanSearch = {}): Promise<string[]> {
  const pinRoot = search.pinRoot ?? PIN_ROOT;
  const lockDir = search.lockDir ?? LOCK_DIR;
  const live = await liveKeys(search.netnsDir ?? NETNS_DIR, search.identify ?? identifyNamespaceFile);
  live.add(search.ownKey ?? (await namespaceKey({})));
  const removed: string[] = [];
  for (const key of (await listEntries(pinRoot, "directories")).filter(
    (name) => isNamespaceKey(name) && !live.has(name),
  )) {
    if ((await lastHolder(lockFile(key, lockDir))) !== FLEET_LOCK_HOLDER) continue;
    let lock: NamespaceLock;
    try {
      lock = await lockNamespace(key, { holder: FLEET_LOCK_HOLDER, timeoutMs: 0, dir: lockDir });
    } catch (error) {
      if (error instanceof InterceptError && error.code === "lock-held") continue; // someone is working there: not an orphan
      throw error;
    }
    try {
      await removePins(new PinLayout(key, pinRoot).namespaceDir);
    } finally {
      await lock.release();
    }
    removed.push(key);
    log("namespace gone", `${key}: a namespace deleted while no agent served it; its pins are removed`, { key });
  }
  await removeIfEmpty(pinRoot);
  return removed;
}

/** The keys of every namespace named in @dir, whatever the name. */
async function liveKeys(dir: string, identify: (file: string) => Promise<NamespaceFile>): Promise<Set<string>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Set();
    throw error;
  }
  const files = await Promise.all(names.map((name) => identify(path.join(dir, name))));
  return new Set(files.flatMap((file) => (file.kind === "namespace" ? [file.key] : [])));
}

/** Who last held a lock, as it wrote itself into the file; undefined when there is none or it cannot be read. */
async function lastHolder(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return undefined; // no lock file (or none we may read): not known to be an agent's
  }
  return readLockRecord(text)?.holder; // none when a holder never finished writing it
}
