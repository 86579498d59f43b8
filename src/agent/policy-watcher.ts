import { formatDiagnosticLine, reportableDiagnostics } from "../diagnostics.js";
import { InterceptError, messageOf, PolicyError } from "../errors.js";
import { programBuilder, type ProgramBuilder } from "../toolchain/index.js";
import { DEFAULT_POLICY_DIR } from "../load/index.js";
import { loadDesired, type DesiredPolicy } from "../reconcile/index.js";
import type { Logger } from "./log.js";
import { fingerprintPolicies } from "./policy-fingerprint.js";
import { watchPoints, WatchSet } from "./watch-points.js";

/** How long file events settle before a read: editors and kubelet write in bursts. */
const DEBOUNCE_MS = 50;
/** The longest a stream of events holds a read back: an agent follows a long burst as it goes. */
const MAX_DELAY_MS = 500;
/**
 * How long a policy set must stay invalid, unchanged, before it is reported:
 * a file caught half-written (a shell redirect, writeFile, an editor that
 * truncates first) is read again after this, not reported as the new state.
 */
const SETTLE_MS = 500;
/** Reads in a row that may meet files vanishing under them before it is said (the files keep moving, or a bug). */
const MAX_RACES = 20;
/** The periodic resync: the files are read (and the namespaces reconciled) this often, whatever the events said. */
export const DEFAULT_RESYNC_MS = 30_000;

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

/** What one read of the files found. */
export interface PolicyRead {
  /** The content hash of the files as read (fingerprintPolicies). */
  fingerprint: string;
  /** When (ms since the epoch) the read ended. */
  at: number;
  /**
   * valid: the files are valid; invalid: invalid, and unchanged for the
   * settle time (reported); settling: invalid or moving, read again shortly;
   * error: unreadable for a reason that is not in the files.
   */
  outcome: "valid" | "invalid" | "settling" | "error";
}

export interface PolicyWatcherEvents<T> {
  /** The files hold a valid policy set other than the one in force (or SIGHUP asked): it is now in force. */
  valid(policies: T, fingerprint: string): void;
  /** The files have stayed invalid, unchanged, for the settle time; the policies in force stay. */
  invalid(error: PolicyError, fingerprint: string): void;
  /** Every read, whatever it found (metrics: when the files were last read, and what they hold). */
  read?(read: PolicyRead): void;
  /** A periodic resync put nothing new in force: the kernel is to be checked against the policies in force anyway. */
  resynced?(): void;
  /** Reading failed for a reason that is not the files' (a bug): the agent cannot go on. */
  fatal(error: unknown): void;
}

export interface PolicyWatcherOptions<T> {
  /** The policy files and folders (none: ./policies). */
  paths: string[];
  /** `--objects DIR`: part of the policy set (its content is hashed and watched with it). */
  objects?: string | undefined;
  /** Reads the policy set; throws a PolicyError when the files are invalid. */
  read: (paths: string[], objects: string | undefined) => Promise<T>;
  log: Logger;
  /** Milliseconds; 0 turns the periodic resync off. */
  resyncMs?: number;
  debounceMs?: number;
  settleMs?: number;
  /** The clock of PolicyRead.at. */
  now?: () => number;
  /**
   * Whether a set holds no policy at all. A set that becomes empty while
   * policies are in force settles first, like an invalid one: a folder
   * being made again (rm -rf, mkdir, then its files) is empty for a moment,
   * and putting that in force would remove every program and put it back.
   */
  isEmpty?: (policies: T) => boolean;
}

/**
 * Keeps the policies in force equal to what the files hold, driven by
 * content, not by events. An event under any watched path (watch-points.ts:
 * the folder, its parents up to the mount, `..data`, the targets of the
 * files' symlinks, a symlinked folder itself) only wakes the watcher: a
 * debounced read of the whole policy set follows, whose content hash is
 * compared with the last read's. An unchanged hash does nothing; a changed
 * one is read, validated, compiled and put in force. A periodic resync
 * reads anyway, as kubelet's and Prometheus's config loaders do, so an
 * edit whose event was lost is still applied within one interval.
 *
 * fs.watch (plain inotify, one watch per folder) is enough because it only
 * has to wake us: correctness comes from the hash and the resync, and its
 * watches are re-armed after every read, by comparing the folders'
 * identities (device, inode, birth time), since a watch on a folder that was
 * replaced (a rename-save of a folder, `mv -T ..data_tmp ..data`, rm -rf and
 * mkdir, a symlink swap of the folder) hears nothing more; a folder watched
 * anew is read once more, as its watch missed what came before it. (chokidar 4 is fs.watch underneath with its own
 * throttling of quick successive changes; @parcel/watcher is a native addon
 * whose recursive watch of a root that is replaced is no better. Neither
 * removes the need to compare content, which is the part that matters.)
 *
 * A set read as invalid is not reported at once: it is read again after the
 * settle time, and reported only if it is still the same content then (a
 * file caught half-written is not the new state). Reads never overlap, and
 * a read whose files changed while it ran is not used: it is read again.
 */
export class PolicyWatcher<T = PolicySet> {
  private readonly targets: string[];
  private readonly watches: WatchSet;
  private readonly now: () => number;
  private debounce: NodeJS.Timeout | undefined;
  private firstPending: number | undefined;
  private settle: NodeJS.Timeout | undefined;
  private resync: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  /** What the next read must do beyond comparing hashes. */
  private wanted: { again: boolean; forced: boolean; resync: boolean } = { again: false, forced: false, resync: false };
  /** The fingerprint of the policy set in force. */
  private inForce: string | undefined;
  /** The last read's fingerprint and what it found. */
  private last:
    | {
        fingerprint: string;
        outcome: "valid" | "invalid" | "emptied" | "error";
        error?: PolicyError;
        policies?: T;
        since: number;
        reported: boolean;
        message?: string;
      }
    | undefined;
  /** Whether the policies in force hold any policy (an emptied set settles before it is put in force). */
  private inForceEmpty = false;
  private stopped = false;
  /** Reads in a row that met a file vanishing under them. */
  private races = 0;
  /** How many times policies were put in force. */
  private puts = 0;

  constructor(
    private readonly options: PolicyWatcherOptions<T>,
    private readonly events: PolicyWatcherEvents<T>,
  ) {
    this.targets = [
      ...(options.paths.length > 0 ? options.paths : [DEFAULT_POLICY_DIR]),
      ...(options.objects === undefined ? [] : [options.objects]),
    ];
    this.now = options.now ?? Date.now;
    this.watches = new WatchSet(
      () => this.changed(),
      (folder, error) => {
        options.log(
          "error",
          `watching ${folder}: ${error.code ?? messageOf(error)}; the periodic resync still reads the policies`,
        );
      },
    );
  }

  /** The fingerprint of the policy set in force. */
  get fingerprint(): string | undefined {
    return this.inForce;
  }

  /**
   * Watches, then reads the policies for the first time and puts them in
   * force; rejects (a PolicyError when they are invalid) with the watches
   * let go. Watching first: an edit during this read is not missed.
   */
  async start(): Promise<T> {
    try {
      await this.rearm();
      const fingerprint = await fingerprintPolicies(this.options.paths, this.options.objects);
      const policies = await this.options.read(this.options.paths, this.options.objects);
      // A change during this read was seen by the watches: it is read again, and differs from this fingerprint.
      this.inForce = fingerprint;
      this.inForceEmpty = this.options.isEmpty?.(policies) ?? false;
      this.last = { fingerprint, outcome: "valid", since: this.now(), reported: true };
      this.events.read?.({ fingerprint, at: this.now(), outcome: "valid" });
      this.scheduleResync();
      return policies;
    } catch (error) {
      this.stop();
      throw error;
    }
  }

  /** Reads the policies again now (SIGHUP), and puts them in force even when unchanged. */
  reload(): void {
    this.wanted.forced = true;
    this.readSoon(0);
  }

  stop(): void {
    this.stopped = true;
    for (const timer of [this.debounce, this.settle, this.resync]) clearTimeout(timer);
    this.watches.close();
  }

  /** Settles once any read in progress ended (tests, and a clean stop). */
  async idle(): Promise<void> {
    while (this.reading) await this.reading;
  }

  /** An event: a read follows once events pause for the debounce, and at most MAX_DELAY_MS after the first. */
  private changed(): void {
    if (this.stopped) return;
    const now = this.now();
    this.firstPending ??= now;
    const debounceMs = this.options.debounceMs ?? DEBOUNCE_MS;
    this.readSoon(Math.max(0, Math.min(debounceMs, this.firstPending + Math.max(MAX_DELAY_MS, debounceMs) - now)));
  }

  private readSoon(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.startRead(), delayMs);
  }

  private scheduleResync(): void {
    const resyncMs = this.options.resyncMs ?? DEFAULT_RESYNC_MS;
    if (this.stopped || resyncMs <= 0) return;
    clearTimeout(this.resync);
    this.resync = setTimeout(() => {
      this.wanted.resync = true;
      this.startRead();
      this.scheduleResync();
    }, resyncMs);
  }

  /** One read at a time: a read asked for during another runs right after it. */
  private startRead(): void {
    if (this.stopped) return;
    this.firstPending = undefined;
    if (this.reading) {
      this.wanted.again = true;
      return;
    }
    this.reading = (async () => {
      do {
        const wanted = this.wanted;
        this.wanted = { again: false, forced: false, resync: false };
        try {
          const puts = this.puts;
          await this.readOnce(wanted.forced);
          // A resync checks the kernel against the policies in force, unless this read put new ones in force (which does).
          if (wanted.resync && this.puts === puts && !this.stopped) this.events.resynced?.();
        } catch (error) {
          if (!this.stopped) this.events.fatal(error);
          return;
        } finally {
          // A folder watched anew missed what happened before its watch: its hash is looked at once more.
          if (!this.stopped && (await this.rearm()) > 0) this.wanted.again = true;
        }
      } while (this.wanted.again && !this.stopped);
    })().finally(() => (this.reading = undefined));
  }

  /**
   * One read. A file or folder that vanishes between two steps of a read
   * (a folder swapped while it is listed) is the files moving, not a bug:
   * they are read again once they settle.
   */
  private async readOnce(forced: boolean): Promise<void> {
    try {
      await this.compareAndRead(forced);
      this.races = 0;
    } catch (error) {
      if (!isFileRace(error)) throw error;
      this.raced(error);
    }
  }

  /** Read again after the settle time; said once when it keeps happening (the events and the resync still read). */
  private raced(error: NodeJS.ErrnoException): void {
    this.noteRead(this.last?.fingerprint ?? "", "settling");
    if (++this.races <= MAX_RACES) {
      clearTimeout(this.settle);
      this.settle = setTimeout(() => this.startRead(), this.options.settleMs ?? SETTLE_MS);
    } else if (this.races === MAX_RACES + 1) {
      this.options.log(
        "error",
        `reading the policies: ${messageOf(error)}, ${MAX_RACES} times in a row; keeping the last good policies`,
      );
    }
  }

  private async compareAndRead(forced: boolean): Promise<void> {
    const fingerprint = await fingerprintPolicies(this.options.paths, this.options.objects);
    if (this.stopped) return;
    const last = this.last;
    if (!forced && last?.fingerprint === fingerprint && last.outcome !== "error") {
      // Unchanged since the last read: no parse, no reconcile; an invalid or emptied set is reported once it has settled.
      const settling = !last.reported && !this.reportIfSettled(last);
      this.noteRead(fingerprint, settling ? "settling" : last.outcome === "emptied" ? "valid" : last.outcome);
      return;
    }
    let policies: T | undefined;
    let failure: unknown;
    try {
      policies = await this.options.read(this.options.paths, this.options.objects);
    } catch (error) {
      failure = error;
    }
    if (this.stopped) return;
    if ((await fingerprintPolicies(this.options.paths, this.options.objects)) !== fingerprint) {
      // The files moved while they were read: what was read may be half of each, and a failure may be the
      // move's (a file gone between two steps of the loader, in its worker where the error's code is lost).
      this.noteRead(fingerprint, "settling");
      this.changed();
      return;
    }
    if (isFileRace(failure)) throw failure;
    if (failure === undefined && !forced && !this.inForceEmpty && (this.options.isEmpty?.(policies as T) ?? false)) {
      this.last = { fingerprint, outcome: "emptied", policies: policies as T, since: this.now(), reported: false };
      this.noteRead(fingerprint, this.reportIfSettled(this.last) ? "valid" : "settling");
    } else if (failure === undefined) {
      this.last = { fingerprint, outcome: "valid", since: this.now(), reported: true };
      this.noteRead(fingerprint, "valid");
      if (forced || fingerprint !== this.inForce) this.putInForce(policies as T, fingerprint);
    } else if (failure instanceof PolicyError) {
      this.last = { fingerprint, outcome: "invalid", error: failure, since: this.now(), reported: false };
      this.noteRead(fingerprint, this.reportIfSettled(this.last) ? "invalid" : "settling");
    } else if (failure instanceof InterceptError) {
      // Not the files' fault (objects that do not match, a tool that failed): said once per content, tried again at each read.
      const message = messageOf(failure);
      if (last?.fingerprint !== fingerprint || last.message !== message) {
        this.options.log(
          "error",
          `reading the policies: ${message.replaceAll("\n", " ")}; keeping the last good policies`,
        );
      }
      this.last = { fingerprint, outcome: "error", since: this.now(), reported: true, message };
      this.noteRead(fingerprint, "error");
    } else {
      throw failure;
    }
  }

  private putInForce(policies: T, fingerprint: string): void {
    this.puts++;
    this.inForce = fingerprint;
    this.inForceEmpty = this.options.isEmpty?.(policies) ?? false;
    this.events.valid(policies, fingerprint);
  }

  /**
   * An invalid set unchanged for the settle time is reported (once), an
   * emptied one put in force, and true is returned; before that, a read is
   * scheduled for when it will have settled.
   */
  private reportIfSettled(invalid: NonNullable<PolicyWatcher<T>["last"]>): boolean {
    const settleMs = this.options.settleMs ?? SETTLE_MS;
    const waited = this.now() - invalid.since;
    if (waited >= settleMs) {
      invalid.reported = true;
      if (invalid.outcome === "emptied") this.putInForce(invalid.policies!, invalid.fingerprint);
      else this.events.invalid(invalid.error!, invalid.fingerprint);
      return true;
    }
    clearTimeout(this.settle);
    this.settle = setTimeout(() => this.startRead(), settleMs - waited);
    return false;
  }

  private noteRead(fingerprint: string, outcome: PolicyRead["outcome"]): void {
    this.events.read?.({ fingerprint, at: this.now(), outcome });
  }

  /** Watches what the paths resolve to now; says how many watches were opened. */
  private async rearm(): Promise<number> {
    const points = await watchPoints(this.targets);
    return this.stopped ? 0 : this.watches.arm(points);
  }
}

/** An error of the file system that a read of files changing under it can meet (not an InterceptError: nothing reported it). */
function isFileRace(error: unknown): error is NodeJS.ErrnoException {
  if (error instanceof InterceptError || !(error instanceof Error)) return false;
  const { code, syscall } = error as NodeJS.ErrnoException;
  // EINVAL from readlink: a symlink found by one call was a plain file by the next.
  return (
    ["ENOENT", "ENOTDIR", "ELOOP", "ESTALE"].includes(String(code)) || (code === "EINVAL" && syscall === "readlink")
  );
}

/** The agent's log lines for invalid policies: each located problem, then what it means. */
export function logInvalid(log: Logger, error: PolicyError): void {
  for (const diagnostic of reportableDiagnostics(error.diagnostics)) {
    log("error", formatDiagnosticLine(diagnostic), {
      file: diagnostic.file,
      line: diagnostic.line,
      column: diagnostic.column,
      code: diagnostic.code,
    });
  }
  log("error", `${error.message}: keeping the last good policies`);
}
