import { statSync, watch, type FSWatcher, type Stats } from "node:fs";
import path from "node:path";
import { formatDiagnosticLine, reportableDiagnostics } from "../diagnostics.js";
import { InterceptError, messageOf, PolicyError } from "../errors.js";
import { programBuilder, type ProgramBuilder } from "../build/index.js";
import { DEFAULT_POLICY_DIR } from "../load/index.js";
import { loadDesired, type DesiredPolicy } from "../reconcile/index.js";
import type { Logger } from "./log.js";

/** How long file events settle before a reload: editors write in bursts. */
const FILE_DEBOUNCE_MS = 10;
/**
 * How long policy files must stay invalid before the errors are logged: a
 * writer that truncates in place (shell redirect, writeFile) leaves an empty
 * file for a moment, which is not the user's mistake. Valid reads apply at once.
 */
const INVALID_SETTLE_MS = 500;

/** The policies in force, and where their programs come from. */
export interface PolicySet {
  desired: DesiredPolicy[];
  builder: ProgramBuilder;
}

/**
 * load → validate → compile → identify, with the objects of `--objects DIR`
 * read afresh: objects mounted from a ConfigMap beside the policies change
 * with them, in the same `..data` swap.
 */
export async function readPolicySet(paths: string[], objects: string | undefined): Promise<PolicySet> {
  const builder = await programBuilder(objects);
  return { desired: await loadDesired(paths, builder), builder };
}

export interface PolicyWatcherEvents {
  /** A valid set of policies was read (the first at start included). */
  valid(policies: PolicySet): void;
  /** The files have stayed invalid for INVALID_SETTLE_MS; the last good policies stay in force. */
  invalid(error: PolicyError): void;
  /** Reading failed for a reason that is not the files' (a bug): the agent cannot go on. */
  fatal(error: unknown): void;
}

/**
 * Follows the policy files and folders with Node's fs.watch (inotify). Not
 * chokidar: it drops a change that follows another on the same path within
 * 50 ms, losing the final state of quick successive saves. Each target is
 * watched through its parent folder as well, so a file saved by rename, a
 * folder removed and created again, and a Kubernetes ConfigMap's `..data`
 * symlink swap are all seen.
 */
export class PolicyWatcher {
  private readonly targets: string[];
  /** The recursive watcher of each folder target, and the folder (inode) it watches, while it exists. */
  private readonly folders = new Map<string, { watcher: FSWatcher; inode: number }>();
  private readonly parents: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;
  private invalidReport: NodeJS.Timeout | undefined;
  /** Counts reads, so a slow read never overrides a newer one. */
  private reads = 0;
  private stopped = false;

  constructor(
    paths: string[],
    private readonly objects: string | undefined,
    private readonly log: Logger,
    private readonly events: PolicyWatcherEvents,
  ) {
    this.targets = paths.length > 0 ? paths : [DEFAULT_POLICY_DIR];
  }

  start(): void {
    for (const target of this.targets) {
      const name = path.basename(path.resolve(target));
      const parent = watch(path.dirname(path.resolve(target)), (_event, changed) => {
        if (changed !== name) return;
        this.watchFolder(target); // the folder may be new: follow what is inside it again
        this.changed();
      });
      parent.on("error", (error) => this.log("error", `watching ${path.dirname(target)}: ${messageOf(error)}`));
      this.parents.push(parent);
      this.watchFolder(target);
    }
  }

  /** Reads the policies again now (SIGHUP), as a file change would. */
  reload(): void {
    this.changed();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.debounce);
    clearTimeout(this.invalidReport);
    for (const watcher of [...this.parents, ...[...this.folders.values()].map((f) => f.watcher)]) watcher.close();
    this.folders.clear();
  }

  /**
   * Watches what is inside a folder target, once it exists; a file target
   * is seen through its parent. A folder removed and made again is another
   * inode, which the old watcher does not see (and may not say so): it is
   * replaced.
   */
  private watchFolder(target: string): void {
    const folder = this.stopped ? undefined : statIfFolder(target);
    const current = this.folders.get(target);
    if (current && current.inode === folder?.ino) return;
    current?.watcher.close();
    this.folders.delete(target);
    if (!folder) return;
    const watcher = watch(target, { recursive: true }, () => this.changed());
    // A removed folder can end its watcher with an error: forget it; its parent sees the folder return.
    watcher.on("error", () => {
      watcher.close();
      if (this.folders.get(target)?.watcher === watcher) this.folders.delete(target);
    });
    this.folders.set(target, { watcher, inode: folder.ino });
  }

  private changed(): void {
    if (this.stopped) return;
    clearTimeout(this.invalidReport); // the files are still moving
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.read(), FILE_DEBOUNCE_MS);
  }

  /**
   * A valid read is passed on at once. An invalid one is reported once the
   * files have settled (INVALID_SETTLE_MS); the last good policies stay.
   */
  private async read(): Promise<void> {
    const read = ++this.reads;
    for (const target of this.targets) this.watchFolder(target); // a folder that came back between events
    try {
      const policies = await readPolicySet(this.targets, this.objects);
      if (this.stopped || read !== this.reads) return; // stop decides the final state; a newer read wins
      clearTimeout(this.invalidReport);
      this.events.valid(policies);
    } catch (error) {
      if (this.stopped || read !== this.reads) return;
      if (error instanceof PolicyError) {
        clearTimeout(this.invalidReport);
        this.invalidReport = setTimeout(() => this.events.invalid(error), INVALID_SETTLE_MS);
      } else if (error instanceof InterceptError) {
        this.log("error", `reading the policies: ${messageOf(error)}; keeping the last good policies`);
      } else {
        this.events.fatal(error);
      }
    }
  }
}

/** @target's stat when it is a folder; undefined when it is a file or is not there (yet). */
function statIfFolder(target: string): Stats | undefined {
  const stats = statSync(target, { throwIfNoEntry: false });
  return stats?.isDirectory() ? stats : undefined;
}

/** The agent's log lines for invalid policies: each located problem, then what it means. */
export function logInvalid(log: Logger, error: PolicyError): void {
  for (const diagnostic of reportableDiagnostics(error.diagnostics)) {
    log("error", formatDiagnosticLine(diagnostic), { file: diagnostic.file, line: diagnostic.line, column: diagnostic.column, code: diagnostic.code });
  }
  log("error", `${error.message}: keeping the last good policies`);
}
