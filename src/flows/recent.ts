/**
 * The last few flow records of each rule, kept by the agent run with
 * `--flows` for one namespace and published through the Host port, for
 * `status` (which cannot read the ring buffer itself: it has one reader).
 * A rule is a version's slot, as the record carries it: a composed
 * program's slots are its own, whatever policy each rule comes from.
 * Writes are throttled (a burst of connections writes the file once per
 * interval, with the last records) and serialised.
 */
import type { Host } from "../host/types.js";
import {
  RECENT_FLOWS_FORMAT,
  RECENT_PER_RULE,
  RECENT_PUBLISH_INTERVAL_MS,
  type RecentFlow,
  type RecentFlowsDocument,
  type RecentRule,
} from "../model/recent-flows.js";
import type { FlowRecord } from "./record.js";
import type { FlowView } from "./view.js";

export type RecentFlowsPort = Pick<Host, "publishRecentFlows" | "removeRecentFlows">;

export interface RecentFlowsOptions {
  perRule?: number;
  intervalMs?: number;
  /** A write that failed (the next record writes again). */
  failed: (error: unknown) => void;
}

export class RecentFlows {
  private readonly rules = new Map<string, RecentRule>();
  private readonly perRule: number;
  private readonly intervalMs: number;
  private lastWriteAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  private writing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly port: RecentFlowsPort,
    /** The namespace's key (`ns<inode>`): its file's name. */
    private readonly key: string,
    private readonly options: RecentFlowsOptions,
  ) {
    this.perRule = options.perRule ?? RECENT_PER_RULE;
    this.intervalMs = options.intervalMs ?? RECENT_PUBLISH_INTERVAL_MS;
  }

  /** Keeps @view as its rule's latest record, dropping the oldest past perRule; the file follows within the interval. */
  add(record: FlowRecord, view: FlowView): void {
    if (this.closed) return;
    const id = `${record.version}/${record.slot}`;
    const rule = this.rules.get(id) ?? { version: record.version, slot: record.slot, flows: [] };
    this.rules.set(id, rule);
    rule.flows.push(recentFlow(view));
    if (rule.flows.length > this.perRule) rule.flows.splice(0, rule.flows.length - this.perRule);
    this.dirty = true;
    this.schedule();
  }

  /** Forgets the rules of versions not in @versions (unloaded): the file holds loaded programs' rules only. */
  retain(versions: ReadonlySet<string>): void {
    for (const [id, rule] of this.rules) {
      if (versions.has(rule.version)) continue;
      this.rules.delete(id);
      this.dirty = true;
    }
    if (this.dirty) this.schedule();
  }

  /** What the file holds now. */
  document(): RecentFlowsDocument {
    return {
      format: RECENT_FLOWS_FORMAT,
      pid: process.pid,
      updatedAt: new Date().toISOString(),
      perRule: this.perRule,
      rules: [...this.rules.values()]
        .sort((a, b) => a.version.localeCompare(b.version) || a.slot - b.slot)
        .map((rule) => ({ ...rule, flows: [...rule.flows] })),
    };
  }

  /** Writes the file now (an empty one too: status then says no record has come yet). */
  publish(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.dirty = false;
    this.lastWriteAt = Date.now();
    const document = this.document();
    this.writing = this.writing
      .then(() => (this.closed ? undefined : this.port.publishRecentFlows(this.key, document)))
      .catch((error: unknown) => {
        this.dirty = true; // written again with the next record
        this.options.failed(error);
      });
    return this.writing;
  }

  /** Stops writing and removes the file: nobody keeps it up to date any more. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.writing;
    await this.port.removeRecentFlows(this.key);
  }

  private schedule(): void {
    if (this.timer !== undefined || this.closed) return;
    const wait = this.lastWriteAt + this.intervalMs - Date.now();
    if (wait <= 0) {
      void this.publish();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.dirty) void this.publish();
    }, wait);
  }
}

/** A view as status shows it under its rule. */
export function recentFlow(view: FlowView): RecentFlow {
  return {
    time: view.time,
    link: view.link,
    verdict: view.verdict,
    reason: view.reason,
    protocol: view.protocol,
    source: view.source,
    destination: view.destination,
    target: view.target,
    task: view.task && { pid: view.task.pid, uid: view.task.uid, command: view.task.command },
  };
}
