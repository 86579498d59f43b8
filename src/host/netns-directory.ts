import { statSync, watch, type FSWatcher } from "node:fs";
import { readdir, stat, statfs } from "node:fs/promises";
import path from "node:path";
import { InterceptError, messageOf } from "../errors.js";
import { namespaceKeyOf, NETNS_DIR } from "../model/namespace.js";
import type { NamespaceEvents, NamespaceFile, NamespaceWatch } from "./types.js";

/** statfs(2)'s f_type of a namespace file (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;
/** A file not yet bind-mounted is looked at again after 2 ms, doubling up to 1 s while it stays so. */
const PENDING_FIRST_MS = 2;
const PENDING_MAX_MS = 1_000;

/** A namespace file by statfs (nsfs, or not yet) and stat (its inode: the namespace's identity). */
export async function identifyNamespaceFile(file: string): Promise<NamespaceFile> {
  try {
    if ((await statfs(file)).type !== NSFS_MAGIC) return { kind: "pending" };
    return { kind: "namespace", key: namespaceKeyOf((await stat(file)).ino) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { kind: "gone" };
    throw error;
  }
}

export interface NamespaceDirectoryOptions {
  /** Which names to follow. */
  matches(name: string): boolean;
  /** Default: /var/run/netns, where `ip netns` and CNI plugins put them. */
  dir?: string;
  /** Default: identifyNamespaceFile (tests pass their own, for a directory of plain files). */
  identify?(file: string): Promise<NamespaceFile>;
}

export type NamespaceDirectoryEvents = NamespaceEvents;

/**
 * Follows the network namespaces named in /var/run/netns with Node's
 * fs.watch (inotify on the directory). A namespace appears in two steps,
 * the second of which makes no inotify event: the file is created (an
 * event), then the namespace is bind-mounted on it (none). Removal is an
 * unmount (none) and an unlink (an event). So every event leads to a
 * rescan of the directory's listing, never to an update from the event
 * alone; in it the files events named (every file, when an event names
 * none: a watcher replaced, a queue that overflowed), names not seen before
 * and files not yet namespaces are looked at, the others keep their key. A
 * file that is there but not a namespace yet is looked at again with a
 * short back-off until it is one or is gone. The directory itself is also
 * watched through its parent: the first `ip netns add` of a host creates it.
 */
export class NamespaceDirectory implements NamespaceWatch {
  private readonly dir: string;
  private readonly identify: (file: string) => Promise<NamespaceFile>;
  private directory: { watcher: FSWatcher; inode: number } | undefined;
  private parent: FSWatcher | undefined;
  private current = new Map<string, string>();
  private scanning: Promise<void> | undefined;
  private again = false;
  private recheck: NodeJS.Timeout | undefined;
  /** Each pending file's next back-off, by name. */
  private readonly pending = new Map<string, number>();
  /** Files named by events since the last scan; all of them when an event named none. */
  private readonly dirty = new Set<string>();
  private allDirty = true;
  private stopped = false;

  constructor(
    private readonly options: NamespaceDirectoryOptions,
    private readonly events: NamespaceDirectoryEvents,
  ) {
    this.dir = options.dir ?? NETNS_DIR;
    this.identify = options.identify ?? identifyNamespaceFile;
  }

  /** Starts watching, then scans; resolves with the namespaces found (also passed to changed()). */
  async start(): Promise<ReadonlyMap<string, string>> {
    const name = path.basename(this.dir);
    this.parent = watch(path.dirname(this.dir), (_event, changed) => {
      if (changed !== name) return;
      this.allDirty = true;
      this.rescan();
    });
    this.parent.on("error", (error) => this.events.failed(error));
    this.watchDirectory();
    await this.scan();
    return this.current;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.recheck);
    this.parent?.close();
    this.directory?.watcher.close();
  }

  /** Scans now, or right after the scan in progress. */
  rescan(): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.again = true;
      return;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        try {
          await this.scan();
        } catch (error) {
          this.events.failed(error);
          return;
        }
      } while (this.again && !this.stopped);
    })().finally(() => (this.scanning = undefined));
  }

  /** Watches the directory once it exists; one removed and made again is another inode, watched anew. */
  private watchDirectory(): void {
    const found = this.stopped ? undefined : statSync(this.dir, { throwIfNoEntry: false });
    if (this.directory && this.directory.inode === found?.ino) return;
    this.directory?.watcher.close();
    this.directory = undefined;
    if (!found?.isDirectory()) return;
    this.allDirty = true; // what happened before this watcher listened is unknown
    const watcher = watch(this.dir, (_event, file) => {
      if (file) this.dirty.add(String(file));
      else this.allDirty = true;
      this.rescan();
    });
    // A removed directory can end its watcher with an error: its parent sees it come back.
    watcher.on("error", () => {
      watcher.close();
      if (this.directory?.watcher === watcher) this.directory = undefined;
    });
    this.directory = { watcher, inode: found.ino };
  }

  private async scan(): Promise<void> {
    this.watchDirectory();
    const [all, dirty] = [this.allDirty, new Set(this.dirty)];
    this.allDirty = false;
    this.dirty.clear();
    const names = (await this.names()).filter((name) => this.options.matches(name)).sort();
    const found = new Map<string, string>();
    const pending: string[] = [];
    const unsure = names.filter((name) => all || dirty.has(name) || !this.current.has(name));
    for (const name of names)
      if (this.current.has(name) && !unsure.includes(name)) found.set(name, this.current.get(name)!);
    const files = await Promise.all(unsure.map((name) => this.identify(path.join(this.dir, name))));
    unsure.forEach((name, index) => {
      const file = files[index]!;
      if (file.kind === "namespace") found.set(name, file.key);
      else if (file.kind === "pending") pending.push(name);
    });
    if (this.stopped) return;
    this.lookAgainAt(pending);
    if (!sameEntries(found, this.current)) {
      this.current = found;
      this.events.changed(found);
    }
  }

  private async names(): Promise<string[]> {
    try {
      return await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return []; // not made yet: no namespaces
      throw new InterceptError(
        "file-access",
        `cannot read ${this.dir}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`,
      );
    }
  }

  /** Schedules a rescan for files that are not namespaces yet, each with its own back-off. */
  private lookAgainAt(names: string[]): void {
    for (const name of [...this.pending.keys()]) if (!names.includes(name)) this.pending.delete(name);
    clearTimeout(this.recheck);
    if (names.length === 0) return;
    const delays = names.map((name) => this.pending.get(name) ?? PENDING_FIRST_MS);
    for (const [index, name] of names.entries()) this.pending.set(name, Math.min(PENDING_MAX_MS, delays[index]! * 2));
    this.recheck = setTimeout(() => this.rescan(), Math.min(...delays));
  }
}

function sameEntries(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  return a.size === b.size && [...a].every(([name, key]) => b.get(name) === key);
}
