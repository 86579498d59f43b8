/**
 * What the agent run with `--flows` shares with the other commands, per
 * network namespace, under FLOWS_RUN_DIR: the last few flow records of each
 * rule (`<key>.json`, which `status` shows), the ring buffer's reader lock
 * (`<key>.lock`: a ring buffer has one consumer) and the socket the agent
 * relays every record on (`<key>.sock`, which `watch` reads beside it).
 */
import path from "node:path";

/** tmpfs, gone at reboot like the pins the files describe. */
export const FLOWS_RUN_DIR = "/run/intercept/flows";

/** How many records per rule the agent keeps for `status`. */
export const RECENT_PER_RULE = 5;

/** The agent writes its file at most this often. */
export const RECENT_PUBLISH_INTERVAL_MS = 250;

export const RECENT_FLOWS_FORMAT = 1;

/** One record as `status` shows it under its rule. */
export interface RecentFlow {
  /** ISO 8601, wall clock. */
  time: string;
  link: string | null;
  verdict: string;
  reason: string;
  protocol: "tcp" | "udp";
  source: RecentEndpoint | null;
  destination: RecentEndpoint | null;
  target: RecentEndpoint | null;
  task: { pid: number; uid: number; command: string } | null;
}

export interface RecentEndpoint {
  address: string;
  port: number;
}

/** A rule of a loaded version, by its slot, with its last records (oldest first). */
export interface RecentRule {
  version: string;
  slot: number;
  flows: RecentFlow[];
}

/** The file of one namespace: written whole (temp and rename), so it is read whole or not at all. */
export interface RecentFlowsDocument {
  format: typeof RECENT_FLOWS_FORMAT;
  /** The agent that writes it: a file whose writer is gone is stale. */
  pid: number;
  updatedAt: string;
  perRule: number;
  rules: RecentRule[];
}

/** The files of the namespace @key under @dir. */
export function flowsFiles(key: string, dir = FLOWS_RUN_DIR): { recent: string; lock: string; socket: string } {
  return {
    recent: path.join(dir, `${key}.json`),
    lock: path.join(dir, `${key}.lock`),
    socket: path.join(dir, `${key}.sock`),
  };
}

/** @value, when it is a document of this format; undefined otherwise (another version's, a torn or foreign file). */
export function asRecentFlowsDocument(value: unknown): RecentFlowsDocument | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const document = value as Partial<RecentFlowsDocument>;
  if (document.format !== RECENT_FLOWS_FORMAT || typeof document.pid !== "number") return undefined;
  if (!Array.isArray(document.rules)) return undefined;
  const rulesValid = document.rules.every(
    (rule) =>
      typeof rule?.version === "string" &&
      Number.isInteger(rule.slot) &&
      Array.isArray(rule.flows) &&
      rule.flows.every((flow) => typeof flow?.time === "string" && typeof flow.verdict === "string"),
  );
  return rulesValid ? (document as RecentFlowsDocument) : undefined;
}
