import { existsSync, statSync, watch, type FSWatcher } from "node:fs";
import path from "node:path";
import { formatDiagnosticLine, reportableDiagnostics } from "../diagnostics.js";
import { InterceptError, messageOf, PolicyError } from "../errors.js";
import type { ProgramBuilder } from "../build/index.js";
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

export interface PolicyWatcherEvents {
  /** A valid set of policies was read (the first at start included). */
  valid(desired: DesiredPolicy[]): void;
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
  /** The recursive watcher of each folder target, while the folder exists. */
  private readonly folders = new Map<string, FSWatcher>();
  private readonly parents: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;
  private invalidReport: NodeJS.Timeout | undefined;
  /** Counts reads, so a slow read never overrides a newer one. */
  private reads = 0;
  private stopped = false;

  constructor(
    paths: string[],
    private readonly builder: ProgramBuilder,
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
    for (const watcher of [...this.parents, ...this.folders.values()]) watcher.close();
    this.folders.clear();
  }

  /** Watches what is inside a folder target, once it exists; a file target is seen through its parent. */
  private watchFolder(target: string): void {
    if (this.stopped || this.folders.has(target) || !existsSync(target) || !statSync(target).isDirectory()) return;
    const watcher = watch(target, { recursive: true }, () => this.changed());
    // A removed folder ends its watcher (an error on some kernels): forget it, its parent sees it return.
    const forget = () => {
      watcher.close();
      if (this.folders.get(target) === watcher) this.folders.delete(target);
    };
    watcher.on("error", forget);
    watcher.on("close", forget);
    this.folders.set(target, watcher);
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
      const desired = await loadDesired(this.targets, this.builder);
      if (this.stopped || read !== this.reads) return; // stop decides the final state; a newer read wins
      clearTimeout(this.invalidReport);
      this.events.valid(desired);
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

/** The agent's log lines for invalid policies: each located problem, then what it means. */
export function logInvalid(log: Logger, error: PolicyError): void {
  for (const diagnostic of reportableDiagnostics(error.diagnostics)) {
    log("error", formatDiagnosticLine(diagnostic), { file: diagnostic.file, line: diagnostic.line, column: diagnostic.column, code: diagnostic.code });
  }
  log("error", `${error.message}: keeping the last good policies`);
}
