import type { ObservedLink } from "../datapath/types.js";
import { InterceptError, messageOf } from "../errors.js";
import type { Host, NamespaceDatapath, NamespaceLock, Watch } from "../host/types.js";
import { describeNamespace } from "../model/namespace.js";
import type { ProgramBuilder } from "../toolchain/index.js";
import {
  applyRun,
  doneWord,
  planRun,
  type ApplyEvent,
  type DesiredPolicy,
  type PlannedRun,
} from "../reconcile/index.js";
import { isAgentHolder } from "../model/lock-holder.js";
import type { Logger } from "./log.js";
import type { NamespaceMetrics } from "./metrics.js";

/** After a failed reconcile, try again in 1 s, doubling while it keeps failing, up to 30 s. */
const RETRY_MS = 1_000;
const RETRY_MAX_MS = 30_000;

/** How long to wait before trying again after @failures failures in a row. */
export function retryDelay(failures: number): number {
  return Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** failures);
}

export interface NamespaceAgentOptions {
  /** The namespace's lock and link events. */
  host: Pick<Host, "lockNamespace" | "watchLinks">;
  keep: boolean;
  lockTimeoutMs: number;
  /** What the agent writes into the namespace's lock: "intercept agent", with how it serves namespaces. */
  lockHolder: string;
  /** Where programs come from, as of the policies in force (it changes with them: a ConfigMap of objects). */
  builder: () => ProgramBuilder;
  /** Called once if the namespace disappears: its links went with it; stop() then removes its pins. */
  onGone: () => void;
  /** The content hash of the policies desired() returns now: what a reconcile is recorded as having applied. */
  version?: () => string | undefined;
}

/** How the last reconcile in a namespace ended. */
export interface ReconcileResult {
  ok: boolean;
  /** When it ended (ms since the epoch). */
  at: number;
  /** The content hash of the policies it reconciled to (NamespaceAgentOptions.version). */
  version: string | undefined;
  /** Why it failed, in one line. */
  error?: string;
}

/**
 * The agent's work in one network namespace: it holds the namespace's lock
 * (one writer), follows its links, and reconciles whenever the policies or
 * the links change. Every change goes through the same plan → apply as
 * `intercept apply`; reconciles are serialised, events that arrive during
 * one are folded into the next, and a failed one is retried with back-off.
 *
 * A namespace can disappear at any moment, a reconcile's included. Whatever
 * fails then is not an error of ours: the failure is held back until the
 * namespace is known to be still there, and dropped (onGone) when it is not.
 */
export class NamespaceAgent {
  private links = new Map<number, string>();
  private starting: Promise<void> | undefined;
  private reconciling: Promise<void> | undefined;
  private again = false;
  private stopping = false;
  private stopped: Promise<boolean> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private failures = 0;
  private lock: NamespaceLock | undefined;
  private gone = false;
  private reconciled = false;
  private result: ReconcileResult | undefined;
  /** Aborted by stop(): an apply in flight stops at its next step and rolls back; a wait for the lock ends. */
  private readonly interrupt = new AbortController();
  /** Its links, followed from after the lock is taken until the agent stops. */
  private linkWatch: Watch | undefined;

  constructor(
    private readonly datapath: NamespaceDatapath,
    private readonly desired: () => DesiredPolicy[],
    private readonly options: NamespaceAgentOptions,
    private readonly log: Logger,
    private readonly metrics: NamespaceMetrics,
  ) {}

  /** Whether a reconcile has succeeded since start: the kernel has matched the policies once. */
  get ready(): boolean {
    return this.reconciled;
  }

  /** How the last reconcile ended; undefined before the first. */
  get lastReconcile(): ReconcileResult | undefined {
    return this.result;
  }

  /**
   * Takes the lock (another agent there is refused at once), follows links,
   * and reconciles. If it fails, whatever it took is let go again.
   */
  start(): Promise<void> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    const where = describeNamespace(this.datapath.netns);
    try {
      // A stop while waiting for the lock does not wait for it (the interrupt).
      this.lock = await this.options.host
        .lockNamespace(this.datapath.namespaceKey, {
          holder: this.options.lockHolder,
          timeoutMs: this.options.lockTimeoutMs,
          signal: this.interrupt.signal,
          onWait: (heldBy) => {
            // Held by this very agent: the member of a namespace that is gone, whose inode (our key) the kernel
            // gave to this one; it lets go as it leaves, so this waits, quietly, instead of refusing itself.
            if (heldBy.pid === process.pid) return;
            if (isAgentHolder(heldBy.holder))
              throw new InterceptError("lock-held", `another agent (pid ${heldBy.pid}) already manages ${where}`);
            this.log("waiting", `for the lock on ${where} held by ${heldBy.description}`);
          },
        })
        .catch((error: unknown) => {
          if (this.interrupt.signal.aborted)
            throw new InterceptError("apply-interrupted", `stopped while waiting for the lock on ${where}`);
          throw error;
        });
      if (this.stopping) return; // stop() lets the lock go, after removing what is there unless --keep
      const links = await this.options.host.watchLinks(this.datapath.netns, {
        changed: () => void this.reconcile(),
        failed: (reason, delayMs) =>
          void this.unlessGone(() => this.log("error", `${reason}; restarting it in ${delayMs} ms`)),
        restarted: () => this.log("link watcher", "restarted: following link changes again"),
      });
      if (this.stopping) links.stop();
      else this.linkWatch = links;
    } catch (error) {
      this.linkWatch?.stop();
      await this.lock?.release();
      this.lock = undefined;
      throw error;
    }
    await this.reconcile();
  }

  /**
   * Stops following events; unless --keep (or @keep), removes everything
   * intercept made; a namespace that is gone has its pins removed instead.
   * Then lets go of the lock. Called again, it waits for the first call.
   * Resolves with whether it held the namespace (its lock) at all: an agent
   * refused by another never removed anything.
   */
  stop(keep = this.options.keep): Promise<boolean> {
    this.stopped ??= this.stopOnce(keep);
    return this.stopped;
  }

  /** The namespace is gone (its file in /var/run/netns says so): forget it, quietly. */
  vanished(): Promise<boolean> {
    this.gone = true;
    return this.stop();
  }

  private async stopOnce(keep: boolean): Promise<boolean> {
    this.stopping = true;
    // An apply in flight stops at its next step and rolls back (apply's interrupt): the stop need not wait for it to finish.
    this.interrupt.abort(new InterceptError("apply-interrupted", "the agent is stopping"));
    clearTimeout(this.retry);
    await Promise.allSettled([this.starting]); // its failure was the caller's to report
    this.linkWatch?.stop();
    await this.reconciling;
    const held = this.lock !== undefined;
    try {
      if (!this.gone && this.lock && !keep) await this.reconcileOnce([]);
      if (this.gone) await this.datapath.forgetNamespace();
    } finally {
      // Its record stays while pins stay (--keep): orphan collection reads who last held it.
      await this.lock?.release({ keepRecord: keep && !this.gone });
      this.lock = undefined;
    }
    return held;
  }

  /** Runs a reconcile now, or right after the one in progress; none once stopping. */
  reconcile(): Promise<void> {
    if (this.stopping) return this.reconciling ?? Promise.resolve();
    if (this.reconciling) {
      this.again = true;
      return this.reconciling;
    }
    clearTimeout(this.retry);
    this.reconciling = (async () => {
      let succeeded = true;
      do {
        this.again = false;
        succeeded = await this.reconcileOnce(this.desired());
      } while (this.again && !this.stopping);
      this.reconciling = undefined;
      if (!succeeded) this.retryLater();
    })();
    return this.reconciling;
  }

  private retryLater(): void {
    if (this.stopping) return;
    this.retry = setTimeout(() => void this.reconcile(), retryDelay(this.failures++));
  }

  /** One observe → plan → apply; failures are logged and counted, and say whether it succeeded. */
  private async reconcileOnce(desired: DesiredPolicy[]): Promise<boolean> {
    const heldBack: (() => void)[] = []; // this run's failure lines, logged once the namespace is known to be there
    const version = this.options.version?.();
    const removing = this.stopping; // stop()'s own run, which no interrupt may cut short
    try {
      const run = await planRun(desired, this.datapath);
      this.noteLinks(run.observed.links);
      if (run.plan.changes.length > 0) await this.apply(run, heldBack, removing ? undefined : this.interrupt.signal);
      this.metrics.succeeded();
      this.failures = 0;
      this.reconciled = true;
      this.result = { ok: true, at: Date.now(), version };
      return true;
    } catch (error) {
      const failure = () => {
        for (const line of heldBack) line();
        this.metrics.failed();
        this.result = { ok: false, at: Date.now(), version, error: messageOf(error).split("\n")[0]! };
        this.log("error", messageOf(error).replaceAll("\n", " "));
      };
      if (!removing && this.interrupt.signal.aborted) {
        // The rollback: cut short by stop(), which is no failure. Cut short because the namespace
        // vanished, it is not even reported: what failed (tidy, say) failed for want of a namespace.
        if (!this.gone) for (const line of heldBack) line();
        return false;
      }
      return !(await this.unlessGone(failure)); // gone: nothing left to reconcile, not a failure to retry
    }
  }

  /**
   * Runs @failure (logging it) if the namespace still exists; otherwise
   * marks it gone, stops following it and tells onGone. Says whether it ran.
   * When existence cannot be told, the failure is reported as it is (the
   * next reconcile looks again).
   */
  private async unlessGone(failure: () => void): Promise<boolean> {
    const there = this.gone ? false : await this.datapath.exists().catch(() => true);
    if (there) {
      failure();
      return true;
    }
    this.namespaceGone();
    return false;
  }

  private namespaceGone(): void {
    if (this.gone) return;
    this.gone = true;
    this.stopping = true;
    clearTimeout(this.retry);
    this.linkWatch?.stop();
    this.options.onGone();
  }

  private async apply(run: PlannedRun, heldBack: (() => void)[], interrupt: AbortSignal | undefined): Promise<void> {
    await applyRun(run, this.datapath, {
      builder: this.options.builder(),
      onEvent: (event) => this.logEvent(event, heldBack),
      ...(interrupt && { interrupt }),
    });
    this.metrics.applied();
  }

  /** Progress is logged as it happens; a failed step and its rollback are held back with the failure. */
  private logEvent(event: ApplyEvent, heldBack: (() => void)[]): void {
    switch (event.type) {
      case "change-done":
        this.log("applied", `${event.change.address}: ${doneWord(event.change)}`, {
          change: event.change.address,
          type: event.change.type,
        });
        break;
      case "complete": {
        const { add, change, destroy } = event.summary;
        this.log("applied", `policies applied: ${add} added, ${change} changed, ${destroy} destroyed`, {
          add,
          change,
          destroy,
        });
        break;
      }
      case "step-failed":
        heldBack.push(() =>
          this.log("error", `${event.change.address}: ${event.operation.op} failed: ${event.error}`, {
            change: event.change.address,
          }),
        );
        break;
      case "rolled-back":
        heldBack.push(() => {
          if (event.complete) this.log("rolled back", "the kernel is as it was before this apply");
          else this.log("error", `rollback incomplete: ${event.failures.join("; ")}`);
        });
        break;
    }
  }

  /** Logs links that appeared or went away since the last reconcile. */
  private noteLinks(links: ObservedLink[]): void {
    const current = new Map(links.filter((l) => !l.loopback).map((l) => [l.ifindex, l.name]));
    for (const [ifindex, name] of current) {
      if (this.links.get(ifindex) !== name)
        this.log("link seen", `${name} (ifindex ${ifindex})`, { link: name, ifindex });
    }
    for (const [ifindex, name] of this.links) {
      if (!current.has(ifindex)) this.log("link gone", `${name} (ifindex ${ifindex})`, { link: name, ifindex });
    }
    this.links = current;
  }
}
