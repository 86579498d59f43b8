import { statSync, watch, type FSWatcher } from "node:fs";
import path from "node:path";
import type { CgroupEvents, Watch } from "./types.js";

/**
 * Follows cgroup paths with Node's fs.watch: plain inotify, which cgroup2
 * (kernfs) serves for mkdir and rmdir like any file system. A cgroup is
 * made and removed in its parent, so each path is followed by watching
 * every one of its ancestors that exists (the mount included): an event
 * naming the next segment of a followed path means it, or a parent of it,
 * was made or removed; a followed cgroup found with a new inode then was
 * made (again). After every event the watches are armed again, by
 * inode, so an ancestor made again is followed anew and one made late is
 * followed once it exists. Not chokidar or @parcel/watcher: a handful of
 * directories, each event only a wake-up for a reconcile that reads the
 * kernel, needs neither their polling fallbacks nor a native addon.
 */
export class CgroupWatch implements Watch {
  /** Watched directory → its watcher and inode. */
  private readonly watching = new Map<string, { watcher: FSWatcher; inode: number }>();
  /** Watched directory → the child names that lie on a followed path. */
  private readonly interesting = new Map<string, Set<string>>();
  /** Each followed cgroup's directory → its inode when last looked at (undefined: not there). */
  private readonly followed = new Map<string, number | undefined>();
  private stopped = false;

  constructor(
    root: string,
    paths: readonly string[],
    private readonly events: CgroupEvents,
  ) {
    for (const relative of paths) this.followed.set(path.join(root, relative), inodeOf(path.join(root, relative)));
    for (const relative of paths) {
      const segments = relative.split("/");
      for (let depth = 0; depth < segments.length; depth++) {
        const dir = path.join(root, ...segments.slice(0, depth));
        this.interesting.set(dir, (this.interesting.get(dir) ?? new Set()).add(segments[depth]!));
      }
    }
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    for (const { watcher } of this.watching.values()) watcher.close();
    this.watching.clear();
  }

  /** Watches every ancestor that exists now (again, if it was made again); forgets those gone. */
  private arm(): void {
    for (const [dir, names] of this.interesting) {
      const found = this.stopped ? undefined : statSync(dir, { throwIfNoEntry: false });
      const current = this.watching.get(dir);
      if (current && current.inode === found?.ino) continue;
      current?.watcher.close();
      this.watching.delete(dir);
      if (!found?.isDirectory()) continue;
      try {
        const watcher = watch(dir, (_event, name) => {
          if (name === null || names.has(String(name))) this.changed();
        });
        // A removed directory can end its watcher with an error: its parent's event arms it again.
        watcher.on("error", () => {
          watcher.close();
          if (this.watching.get(dir)?.watcher === watcher) this.watching.delete(dir);
        });
        this.watching.set(dir, { watcher, inode: found.ino });
      } catch (error) {
        // Removed between the stat and the watch: its parent's event arms it again when it is back.
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
    }
  }

  /**
   * Something moved on a followed path: tells only when a followed cgroup
   * was made (again), a new inode. A removal alone has nothing to repair:
   * the programs went with the cgroup, and a reconcile now would only
   * find it missing; a removal and a remake (a restarted service, a pod)
   * is then one reconcile, not two.
   */
  private changed(): void {
    if (this.stopped) return;
    let made = false;
    try {
      this.arm();
      for (const [dir, inode] of this.followed) {
        const now = inodeOf(dir);
        if (now !== undefined && now !== inode) made = true;
        this.followed.set(dir, now);
      }
    } catch (error) {
      this.events.failed(error);
      return;
    }
    if (made) this.events.changed();
  }
}

/** The inode of directory @dir; undefined when it is not there. */
function inodeOf(dir: string): number | undefined {
  const found = statSync(dir, { throwIfNoEntry: false });
  return found?.isDirectory() ? found.ino : undefined;
}
