/**
 * Watching one namespace: its ring buffer read, each record decoded and
 * named (rule, link, time). The ring buffer is any pinned version's
 * flow_events: every version of the namespace shares the one map. It has
 * one reader at a time (a lock says who): beside an agent run with
 * `--flows`, `watch` reads the agent's relay of every record instead
 * (./relay.ts).
 */
import type { LoadedPolicy } from "../load/index.js";
import { InterceptError } from "../errors.js";
import { listLinks } from "../kernel/survey.js";
import { namespaceKey } from "../kernel/namespace.js";
import { performance } from "node:perf_hooks";
import { PinLayout } from "../kernel/pins.js";
import { slotOf } from "../kernel/slot-claims.js";
import { FLOW_EVENTS } from "../model/bpf-abi.js";
import { describeNamespace, type NetworkNamespace } from "../model/namespace.js";
import { flowsFiles } from "../model/recent-flows.js";
import type { NamespaceLock } from "../host/types.js";
import type { DesiredPolicy } from "../reconcile/desired.js";
import { readFlows } from "./reader.js";
import { decodeRecord, type FlowRecord } from "./record.js";
import { connectRelay } from "./relay.js";
import { RuleDirectory } from "./rules.js";
import { switchOn, versionsWithEvents } from "./switch.js";
import { clockNow, viewRecord, type FlowContext, type FlowView } from "./view.js";

export interface WatchOptions {
  /** The policies that name the rules, as validated and loaded (for file:line). */
  desired?: DesiredPolicy[];
  loaded?: LoadedPolicy[];
  /** Turn every record on while watching, and put the switches back after (not when the agent relays them: it keeps them on). */
  enable?: boolean;
  /** Read the agent's relay when one serves the namespace (watch), rather than the ring buffer. */
  relay?: boolean;
  /** Takes the ring buffer's reader lock of the namespace @key (refused, saying who reads it, when held). */
  lockReader?: (key: string) => Promise<NamespaceLock>;
}

/** A record, and how it reads. */
export interface FlowEntry {
  record: FlowRecord;
  view: FlowView;
  /** The bytes as the datapath wrote them (what the agent relays). */
  bytes: Buffer;
}

/** A namespace being watched: its records as they come, until stop(). */
export interface FlowWatch {
  /** The namespace's key (`ns<inode>`). */
  key: string;
  /** Where the records come from: the ring buffer itself, or the agent's relay. */
  source: "ring buffer" | "agent";
  ready: Promise<void>;
  /** The records as they come, a batch at a time (what one read of the ring buffer brought). */
  entries: AsyncIterable<FlowEntry[]>;
  stop(): Promise<void>;
}

export async function watchNamespace(netns: NetworkNamespace, options: WatchOptions = {}): Promise<FlowWatch> {
  const key = await namespaceKey(netns);
  const pins = new PinLayout(key);
  const versions = await versionsWithEvents(pins);
  if (versions.length === 0)
    throw new InterceptError(
      "flows-unavailable",
      `${describeNamespace(netns)} has no program of intercept's that records flows: apply a policy first`,
    );
  const context: FlowContext = {
    namespace: netns.name ?? null,
    links: await linkNames(netns),
    rules: await RuleDirectory.read(pins, options.desired, options.loaded),
  };
  const relayPath = flowsFiles(key).socket;
  let stream = options.relay ? await connectRelay(relayPath) : undefined;
  const source = stream ? "agent" : "ring buffer";
  let lock: NamespaceLock | undefined;
  let restore: (() => Promise<void>) | undefined;
  if (!stream) {
    try {
      lock = await options.lockReader?.(key);
    } catch (error) {
      // An agent that took the ring buffer since we looked: its relay is up once it reads.
      stream = options.relay && isLockHeld(error) ? await connectRelay(relayPath) : undefined;
      if (!stream) throw error;
    }
  }
  if (!stream) {
    try {
      restore = options.enable ? await switchOn(pins, versions) : undefined;
      stream = await readFlows(pins.map(versions[0]!, FLOW_EVENTS.name));
    } catch (error) {
      await restore?.();
      await lock?.release();
      throw error;
    }
  }
  const records = stream;
  const slots = new NamespaceSlots(pins);
  async function* entries(): AsyncGenerator<FlowEntry[]> {
    for await (const read of records.batches) {
      // A ring buffer of a shared program holds the records of every namespace sharing it.
      const ours = await slots.ours(read.map((bytes) => ({ bytes, record: decodeRecord(bytes) })));
      if (ours.length === 0) continue;
      const batch = ours.map((entry) => entry.bytes);
      const decoded = ours.map((entry) => entry.record);
      // A version loaded since the start (the agent replaced a program), or a link made since.
      if (decoded.some((record) => !context.rules.has(record.version)))
        context.rules = await RuleDirectory.read(pins, options.desired, options.loaded);
      if (decoded.some((record) => record.ifindex !== null && !context.links.has(record.ifindex)))
        context.links = await linkNames(netns);
      const clock = clockNow();
      yield decoded.map((record, i) => ({ record, view: viewRecord(record, context, clock), bytes: batch[i]! }));
    }
  }
  return {
    key,
    source,
    ready: records.ready,
    entries: entries(),
    async stop() {
      await records.stop();
      await restore?.();
      await lock?.release();
    },
  };
}

function isLockHeld(error: unknown): boolean {
  return error instanceof InterceptError && error.code === "lock-held";
}

async function linkNames(netns: NetworkNamespace): Promise<Map<number, string>> {
  return new Map((await listLinks(netns)).map((link) => [link.ifindex, link.name]));
}

/**
 * This namespace's slot in each version pinned here (src/kernel/slot-claims.ts):
 * a program loaded once for many namespaces writes every one's records into
 * one ring buffer, each record with the slot of its namespace
 * (src/datapath/shared-versions.ts). A version is looked up when its first
 * record comes (again at most once a second while it is not pinned here);
 * one no longer pinned keeps the slot it had.
 */
export class NamespaceSlots {
  private readonly slots = new Map<string, number>();
  /** Versions a record named that were not pinned here, and when that was last found. */
  private readonly absent = new Map<string, number>();

  constructor(private readonly pins: PinLayout) {}

  /** The records of @batch written for this namespace. */
  async ours<T extends { record: FlowRecord }>(batch: T[]): Promise<T[]> {
    const now = performance.now();
    const unknown = [...new Set(batch.map(({ record }) => record.version))].filter((v) => !this.slots.has(v));
    if (unknown.some((version) => now - (this.absent.get(version) ?? -Infinity) > RELEARN_MS)) {
      await this.learn();
      for (const version of unknown) if (!this.slots.has(version)) this.absent.set(version, now);
    }
    return batch.filter(({ record }) => this.slots.get(record.version) === record.namespaceSlot);
  }

  private async learn(): Promise<void> {
    for (const ref of await versionsWithEvents(this.pins))
      if (!this.slots.has(ref.version)) this.slots.set(ref.version, slotOf(this.pins, ref));
  }
}

/** How often versions not pinned here (another namespace's, in a shared ring buffer) are looked for again. */
const RELEARN_MS = 1_000;
