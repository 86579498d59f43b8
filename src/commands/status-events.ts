/**
 * `status`'s flow records: the last few of each rule, as the agent run
 * with `--flows` publishes them (src/flows/recent.ts), since status cannot
 * read the ring buffer beside it (one reader). Where none are kept, status
 * says why: records off, or no agent with --flows reading them.
 */
import { recordsOn } from "../flows/switch.js";
import { processExists } from "../host/processes.js";
import type { Host } from "../host/types.js";
import type { RecentEndpoint, RecentFlow, RecentFlowsDocument } from "../model/recent-flows.js";
import { messageOf } from "../errors.js";

/** Whether anyone keeps the last records, and what status says about it. */
export type FlowsState =
  /** An agent run with --flows reads and keeps them: each rule shows its last ones. */
  | "kept"
  /** Records are on (a `watch --enable`, or an agent gone), but nobody keeps them. */
  | "not-kept"
  /** Every rule's records are off. */
  | "off"
  /** No program here records flows (nothing loaded, or programs older than records). */
  | "unavailable";

export interface StatusFlows {
  state: FlowsState;
  /** The agent that keeps them (kept), or the one that wrote a file and is gone. */
  agentPid: number | null;
  note: string;
  /** Each rule's last records, by `version/slot`, when kept. */
  rules: Map<string, RecentFlow[]>;
}

export type StatusFlowsPort = Pick<Host, "readRecentFlows">;

/** What the flow records of the namespace @key (`ns<inode>`) are, as status shows them. */
export async function statusFlows(
  key: string,
  host: StatusFlowsPort,
  alive: (pid: number) => boolean = processExists,
): Promise<StatusFlows> {
  const document = await host.readRecentFlows(key);
  if (document && alive(document.pid)) return kept(document);
  const gone = document ? ` (the agent that kept them, pid ${document.pid}, is gone)` : "";
  const agentPid = document?.pid ?? null;
  const none = new Map<string, RecentFlow[]>();
  let on: boolean | undefined;
  try {
    on = await recordsOn(key);
  } catch (error) {
    const why = `their switches are unreadable: ${messageOf(error)}`;
    return { state: "not-kept", agentPid, note: `no agent run with --flows keeps them${gone}; ${why}`, rules: none };
  }
  if (on === undefined) return { state: "unavailable", agentPid, note: "no program here records flows", rules: none };
  return on
    ? {
        state: "not-kept",
        agentPid,
        note: `on, but no agent run with --flows keeps the last ones${gone}: \`intercept watch\` shows them as they come`,
        rules: none,
      }
    : {
        state: "off",
        agentPid,
        note: `off${gone}: \`intercept agent --flows\` turns them on and keeps each rule's last ones for status`,
        rules: none,
      };
}

function kept(document: RecentFlowsDocument): StatusFlows {
  return {
    state: "kept",
    agentPid: document.pid,
    note: `kept by the agent (pid ${document.pid}): each rule's last ${document.perRule}`,
    rules: new Map(document.rules.map((rule) => [ruleId(rule.version, rule.slot), rule.flows])),
  };
}

export function ruleId(version: string, slot: number): string {
  return `${version}/${slot}`;
}

/** The last records of rule @slot of @version, when kept; null when nobody keeps them. */
export function lastEvents(flows: StatusFlows, version: string, slot: number): RecentFlow[] | null {
  if (flows.state !== "kept") return null;
  return flows.rules.get(ruleId(version, slot)) ?? [];
}

/** The lines under a rule: "last events: none yet", or one line per record, newest last. */
export function describeLastEvents(flows: StatusFlows, version: string, slot: number, indent: string): string[] {
  const events = lastEvents(flows, version, slot);
  if (events === null) return [];
  if (events.length === 0) return [`${indent}last events: none yet`];
  return [`${indent}last events:`, ...events.map((flow) => `${indent}  ${eventLine(flow)}`)];
}

/** "03:41:07 steered 198.18.0.2:41234 → 198.18.0.1:8000 → 198.18.0.1:9000 (eth0)" */
export function eventLine(flow: RecentFlow): string {
  const verdict = flow.reason === "none" ? flow.verdict : `${flow.verdict} (${flow.reason})`;
  const path = [flow.source, flow.destination, flow.target]
    .filter((endpoint, i) => i < 2 || endpoint)
    .map(endpointText);
  const task = flow.task ? `  pid ${flow.task.pid} (${flow.task.command}) uid ${flow.task.uid}` : "";
  const link = flow.link ? `  ${flow.link}` : "";
  return `${flow.time.slice(11, 19)} ${verdict} ${flow.protocol} ${path.join(" → ")}${task}${link}`;
}

function endpointText(endpoint: RecentEndpoint | null): string {
  if (!endpoint) return "*";
  return endpoint.address.includes(":")
    ? `[${endpoint.address}]:${endpoint.port}`
    : `${endpoint.address}:${endpoint.port}`;
}
