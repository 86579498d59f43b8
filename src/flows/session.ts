/**
 * Watching one namespace: its ring buffer read, each record decoded and
 * named (rule, link, time). The ring buffer is any pinned version's
 * flow_events: every version of the namespace shares the one map.
 */
import type { LoadedPolicy } from "../load/index.js";
import { InterceptError } from "../errors.js";
import { listLinks } from "../kernel/links.js";
import { describeNamespace, namespaceKey } from "../kernel/namespace.js";
import { PinLayout } from "../kernel/pins.js";
import { FLOW_EVENTS } from "../model/bpf-abi.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { DesiredPolicy } from "../reconcile/desired.js";
import { readFlows, type FlowStream } from "./reader.js";
import { decodeRecord } from "./record.js";
import { RuleDirectory } from "./rules.js";
import { switchOn, versionsWithEvents } from "./switch.js";
import { viewRecord, type FlowContext, type FlowView } from "./view.js";

export interface WatchOptions {
  /** The policies that name the rules, as validated and loaded (for file:line). */
  desired?: DesiredPolicy[];
  loaded?: LoadedPolicy[];
  /** Turn every record on while watching, and put the switches back after. */
  enable?: boolean;
}

/** A namespace being watched: its views as they come, until stop(). */
export interface FlowWatch {
  ready: Promise<void>;
  views: AsyncIterable<FlowView>;
  stop(): Promise<void>;
}

export async function watchNamespace(netns: NetworkNamespace, options: WatchOptions = {}): Promise<FlowWatch> {
  const pins = new PinLayout(await namespaceKey(netns));
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
  const restore = options.enable ? await switchOn(pins, versions) : undefined;
  let stream: FlowStream;
  try {
    stream = await readFlows(pins.map(versions[0]!, FLOW_EVENTS.name));
  } catch (error) {
    await restore?.();
    throw error;
  }
  async function* views(): AsyncGenerator<FlowView> {
    for await (const bytes of stream.records) {
      const record = decodeRecord(bytes);
      // A version loaded since the start (the agent replaced a program), or a link made since.
      if (!context.rules.policies.has(record.version))
        context.rules = await RuleDirectory.read(pins, options.desired, options.loaded);
      if (record.ifindex !== null && !context.links.has(record.ifindex)) context.links = await linkNames(netns);
      yield viewRecord(record, context);
    }
  }
  return {
    ready: stream.ready,
    views: views(),
    async stop() {
      await stream.stop();
      await restore?.();
    },
  };
}

async function linkNames(netns: NetworkNamespace): Promise<Map<number, string>> {
  return new Map((await listLinks(netns)).map((link) => [link.ifindex, link.name]));
}
