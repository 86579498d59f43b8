import { watch, type Dirent, type FSWatcher, type Stats } from "node:fs";
import { readdir, readlink, realpath, stat } from "node:fs/promises";
import path from "node:path";

/**
 * A folder to watch (not recursively), as it is now: its identity
 * (device and inode) tells a folder replaced since it was watched. @only,
 * for a parent of a watched path, limits its events to the entries on the
 * way down (a busy /tmp wakes no one for its other files).
 */
export interface WatchPoint {
  folder: string;
  identity: string;
  only: Set<string> | undefined;
}

/**
 * The folders whose events can mean the policies changed, for the policy
 * paths (and `--objects DIR`) as they are on disk right now:
 * - every parent of a path (and of what it resolves to) up to its mount
 *   point, for the entry on the way down (a folder removed and created
 *   again, a folder that is a symlink swapped for another, a parent renamed);
 * - the folder itself, its subfolders, and the folder of each file a
 *   symlink in it leads to (a ConfigMap's `..data` swapped, a file edited
 *   in place behind `..data`);
 * - for a file, its own folder and the folder of what it resolves to.
 * Computed again after every read: what the paths resolve to moves with
 * every `..data` swap and every folder made anew.
 */
export async function watchPoints(targets: string[]): Promise<WatchPoint[]> {
  const points = new Map<string, { only: Set<string> | undefined }>();
  const add = (folder: string, only?: string) => {
    const point = points.get(folder);
    if (!point) points.set(folder, { only: only === undefined ? undefined : new Set([only]) });
    else if (only === undefined) point.only = undefined;
    else point.only?.add(only);
  };
  for (const target of targets.map((given) => path.resolve(given))) {
    await addParents(target, add);
    const real = await realpathOrNone(target); // not there (yet): its parent sees it come
    if (real === undefined) {
      // A symlink to what is not there (yet): the folder it names sees it come.
      const named = await readlink(target).then(
        (link) => path.resolve(path.dirname(target), link),
        () => undefined,
      );
      if (named !== undefined) await addParents(named, add);
      continue;
    }
    if (real !== target) await addParents(real, add); // what a symlink leads to can be removed and made again too
    if (await isFolder(real)) {
      await addFolder(real, add);
    } else {
      add(path.dirname(target));
      add(path.dirname(real));
    }
  }
  const identified = await Promise.all(
    [...points].map(async ([folder, { only }]) => {
      const identity = await identityOf(folder);
      return identity === undefined ? undefined : { folder, identity, only };
    }),
  );
  return identified.filter((point) => point !== undefined);
}

/** The parents of @target up to and including its mount point, each for the entry toward @target. */
async function addParents(target: string, add: (folder: string, only?: string) => void): Promise<void> {
  let child = target;
  for (let folder = path.dirname(target); ; child = folder, folder = path.dirname(folder)) {
    add(folder, path.basename(child));
    if (folder === path.dirname(folder)) return; // the root
    const [here, above] = await Promise.all([statOrNone(folder), statOrNone(path.dirname(folder))]);
    if (here && above && here.dev !== above.dev) return; // a mount point: what is above it is another file system
  }
}

/** A policy folder: itself, its subfolders, and the folders its symlinked files resolve to; entries starting with "." are the loader's to skip. */
async function addFolder(folder: string, add: (folder: string, only?: string) => void): Promise<void> {
  add(folder);
  let entries: Dirent[];
  try {
    entries = await readdir(folder, { withFileTypes: true });
  } catch {
    return; // removed or unreadable since: the read that follows says so, and its parent's watch wakes us when it returns
  }
  for (const entry of entries) {
    if (entry.name.startsWith(".")) continue;
    const entryPath = path.join(folder, entry.name);
    if (entry.isDirectory()) await addFolder(entryPath, add);
    else if (entry.isSymbolicLink()) {
      const real = await realpathOrNone(entryPath); // dangling: the loader reports it
      if (real !== undefined && !(await isFolder(real))) add(path.dirname(real));
    }
  }
}

async function isFolder(file: string): Promise<boolean> {
  return (await statOrNone(file))?.isDirectory() ?? false;
}

/*
 * Watch points follow what can be seen now. Whatever cannot be (gone,
 * dangling, unreadable) is not watched: the policy read that follows
 * reports it, located, and a parent's watch wakes the agent when it returns.
 */
async function statOrNone(file: string): Promise<Stats | undefined> {
  try {
    return await stat(file);
  } catch {
    return undefined;
  }
}

async function realpathOrNone(file: string): Promise<string | undefined> {
  try {
    return await realpath(file);
  } catch {
    return undefined;
  }
}

/**
 * A folder's identity: device, inode, and birth time, since a folder
 * removed and made again at once often gets the freed inode back.
 */
async function identityOf(folder: string): Promise<string | undefined> {
  const info = await statOrNone(folder);
  return info?.isDirectory() ? `${info.dev}:${info.ino}:${info.birthtimeMs}` : undefined;
}

/**
 * inotify watches (fs.watch, one per folder, never recursive) on a set of
 * watch points, re-armed cheaply: a folder still there with the same
 * identity keeps its watch; a folder replaced (another inode) is watched
 * anew, because a watch on the old inode never hears of the new one; a
 * folder no longer wanted is let go. Every event only wakes: @woken reads
 * the policies again and re-arms.
 */
export class WatchSet {
  private readonly watches = new Map<
    string,
    { watcher: FSWatcher; identity: string; filter: { only: Set<string> | undefined; dead: boolean } }
  >();

  constructor(
    private readonly woken: () => void,
    private readonly failed: (folder: string, error: NodeJS.ErrnoException) => void,
  ) {}

  /** How many folders are watched. */
  get size(): number {
    return this.watches.size;
  }

  /**
   * Watches @points, and only them. Returns how many watches were opened:
   * a watch opened now did not hear what happened before it, so whoever
   * arms reads once more after opening any.
   */
  arm(points: WatchPoint[]): number {
    const wanted = new Map(points.map((point) => [point.folder, point]));
    for (const [folder, watch] of this.watches) {
      const point = wanted.get(folder);
      if (point?.identity === watch.identity && !watch.filter.dead) {
        watch.filter.only = point.only;
        continue;
      }
      watch.watcher.close();
      this.watches.delete(folder);
    }
    let opened = 0;
    for (const point of points) {
      if (!this.watches.has(point.folder)) {
        this.open(point);
        opened++;
      }
    }
    return opened;
  }

  close(): void {
    for (const { watcher } of this.watches.values()) watcher.close();
    this.watches.clear();
  }

  /**
   * Its identity was taken before the watch is opened: a folder replaced in
   * between is watched under an older identity, so the next arm replaces the
   * watch once more, rather than keeping a watch on a folder that is gone.
   */
  private open(point: WatchPoint): void {
    const filter = { only: point.only, dead: false };
    const own = path.basename(point.folder);
    let watcher: FSWatcher;
    try {
      watcher = watch(point.folder, (_event, name) => {
        // The folder itself removed or moved (inotify's DELETE_SELF, MOVE_SELF, reported under its own name): this watch hears nothing more.
        if (name === own) filter.dead = true;
        if (filter.dead || filter.only === undefined || name === null || filter.only.has(String(name))) this.woken();
      });
    } catch (error) {
      // Gone since it was listed (ENOENT), or out of inotify watches (ENOSPC): said, and read again.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR") this.failed(point.folder, error as NodeJS.ErrnoException);
      this.woken();
      return;
    }
    // A watched folder that is removed ends its watch (with an error, on some kernels): forget it and look again.
    watcher.on("error", (error: NodeJS.ErrnoException) => {
      watcher.close();
      if (this.watches.get(point.folder)?.watcher === watcher) this.watches.delete(point.folder);
      if (error.code !== "ENOENT" && error.code !== "EPERM") this.failed(point.folder, error);
      this.woken();
    });
    this.watches.set(point.folder, { watcher, identity: point.identity, filter });
  }
}
