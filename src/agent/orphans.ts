import { InterceptError } from "../errors.js";
import type { Host, NamespaceLock } from "../host/types.js";
import { FLEET_LOCK_HOLDER } from "../model/lock-holder.js";
import type { Logger } from "./log.js";

/**
 * Removes the pins of namespaces that were deleted while no agent ran
 * (between an agent's --keep exit and its successor's start, an upgrade):
 * nothing else would, since no namespace can be named to reach them. A pin
 * directory is an orphan when all of these hold: its key is no named
 * namespace (by any name) nor the agent's own; the last holder of its lock
 * was an agent serving namespaces by --netns-match (so it served a named
 * namespace, not the own namespace of some process elsewhere); and its lock
 * is free — held while the pins go, so nothing can load new ones there
 * meanwhile. Returns the keys removed.
 */
export async function collectOrphans(host: Host, log: Logger): Promise<string[]> {
  const live = new Set((await host.listNamespaces()).values());
  live.add(await host.ownNamespaceKey());
  const removed: string[] = [];
  for (const key of (await host.pinnedNamespaces()).filter((key) => !live.has(key))) {
    if ((await host.lastLockHolder(key)) !== FLEET_LOCK_HOLDER) continue;
    let lock: NamespaceLock;
    try {
      lock = await host.lockNamespace(key, { holder: FLEET_LOCK_HOLDER, timeoutMs: 0 });
    } catch (error) {
      if (error instanceof InterceptError && error.code === "lock-held") continue; // someone is working there: not an orphan
      throw error;
    }
    try {
      await host.removeNamespacePins(key);
    } finally {
      await lock.release();
    }
    removed.push(key);
    log("namespace gone", `${key}: a namespace deleted while no agent served it; its pins are removed`, { key });
  }
  return removed;
}
