/**
 * A flow record as watch prints it and the agent logs it: its rule named,
 * its link named, its time on the wall clock. One aligned line on a
 * terminal; one JSON object per line under --json.
 */
import type { FlowReason, FlowVerdict } from "../model/bpf-abi.js";
import { outputHeader } from "../model/output-format.js";
import type { Endpoint, FlowRecord } from "./record.js";
import type { RuleDirectory } from "./rules.js";

export interface FlowView {
  time: string;
  /** The `ip netns` name, or null for the current namespace. */
  namespace: string | null;
  link: string | null;
  policy: string | null;
  rule: string;
  /** The rule's slot (its `rule.<policy>[slot]` address), or null for a record of no rule. */
  slot: number | null;
  location: string | null;
  verdict: FlowVerdict;
  reason: FlowReason;
  protocol: "tcp" | "udp";
  family: "ipv4" | "ipv6";
  source: Endpoint | null;
  /** Where the client meant to go. */
  destination: Endpoint | null;
  /** Where it went instead (the proxy), or where the proxy was looked for. */
  target: Endpoint | null;
  task: FlowRecord["task"];
}

/** What a namespace's records are read against: its name, its links by ifindex, its rules. */
export interface FlowContext {
  namespace: string | null;
  links: Map<number, string>;
  rules: RuleDirectory;
}

/** @record as watch shows it; @nowNs and @nowMs (one instant, two clocks) date it. */
export function viewRecord(
  record: FlowRecord,
  context: FlowContext,
  clock: { monotonicNs: bigint; epochMs: number } = clockNow(),
): FlowView {
  const rule = context.rules.recordRule(record.version, record.slot);
  const ageMs = Number(clock.monotonicNs - record.monotonicNs) / 1e6;
  return {
    time: isoTime(clock.epochMs - ageMs),
    namespace: context.namespace,
    link: record.ifindex === null ? null : (context.links.get(record.ifindex) ?? `ifindex ${record.ifindex}`),
    policy: rule.policy,
    rule: rule.slot === null ? (rule.policy ?? "") : rule.label,
    slot: rule.slot,
    location: rule.location,
    verdict: record.verdict,
    reason: record.reason,
    protocol: record.protocol,
    family: record.family,
    source: record.source,
    destination: record.destination,
    target: record.target,
    task: record.task,
  };
}

/** The last whole second isoTime wrote, and its text up to the seconds ("2026-12-07T10:15:42"). */
let isoSecond = Number.NaN;
let isoPrefix = "";

/**
 * @epochMs as new Date(epochMs).toISOString() writes it. The second's text
 * is kept: the records of a batch fall within a few seconds, and a Date
 * and its ISO text cost a record more than the rest of its view.
 */
export function isoTime(epochMs: number): string {
  const ms = Math.trunc(epochMs);
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    const text = new Date(second * 1000).toISOString();
    if (text.length !== 24) return new Date(ms).toISOString(); // a year past 9999, or before 0
    isoSecond = second;
    isoPrefix = text.slice(0, 19);
  }
  const millis = ms - second * 1000;
  return `${isoPrefix}.${millis < 10 ? "00" : millis < 100 ? "0" : ""}${millis}Z`;
}

/** The two clocks at one instant, which date a record (viewRecord): read once for a batch of records. */
export function clockNow(): { monotonicNs: bigint; epochMs: number } {
  // process.hrtime is CLOCK_MONOTONIC on Linux, the clock of bpf_ktime_get_ns.
  return { monotonicNs: process.hrtime.bigint(), epochMs: Date.now() };
}

/** `{"formatVersion":…,"kind":"flow",`: what every --json line starts with. */
const JSON_HEADER = `${JSON.stringify(outputHeader("flow")).slice(0, -1)},`;

/**
 * The JSON line of --json (without its newline): the output header, then
 * @view's fields, as JSON.stringify({ ...header, ...view }) writes them
 * (a unit test holds the two equal). Written field by field: V8 takes some
 * 20 µs to make that object, and JSON.stringify of the view about 1.5 µs,
 * a third of a watch's work for a record; watch writes one a connection
 * (outbound: three).
 */
export function flowJson(view: FlowView): string {
  return (
    `${JSON_HEADER}"time":"${view.time}","namespace":${quoted(view.namespace)},"link":${quoted(view.link)}` +
    `,"policy":${quoted(view.policy)},"rule":${quoted(view.rule)},"slot":${view.slot}` +
    `,"location":${quoted(view.location)},"verdict":"${view.verdict}","reason":"${view.reason}"` +
    `,"protocol":"${view.protocol}","family":"${view.family}","source":${endpointJson(view.source)}` +
    `,"destination":${endpointJson(view.destination)},"target":${endpointJson(view.target)}` +
    `,"task":${taskJson(view.task)}}`
  );
}

/** A string as JSON, or null: the names a user chose may hold anything JSON escapes. */
function quoted(text: string | null): string {
  return text === null ? "null" : JSON.stringify(text);
}

/** An endpoint as JSON: its address is one intercept printed (digits, dots, hex and colons). */
function endpointJson(endpoint: Endpoint | null): string {
  return endpoint === null ? "null" : `{"address":"${endpoint.address}","port":${endpoint.port}}`;
}

function taskJson(task: FlowRecord["task"]): string {
  if (task === null) return "null";
  return `{"pid":${task.pid},"uid":${task.uid},"command":${JSON.stringify(task.command)},"cgroupId":"${task.cgroupId}"}`;
}

/** One aligned line: time, namespace, link, verdict (reason), rule, addresses, task. */
export function flowLine(view: FlowView): string {
  const verdict = view.reason === "none" ? view.verdict : `${view.verdict} (${view.reason})`;
  const where = [view.namespace, view.link].filter(Boolean).join("/") || "-";
  const path = `${endpointText(view.source)} -> ${endpointText(view.destination)}${view.target ? ` => ${endpointText(view.target)}` : ""}`;
  const task = view.task ? `  pid ${view.task.pid} (${view.task.command}) uid ${view.task.uid}` : "";
  const location = view.location ? ` ${view.location}` : "";
  return `${view.time.slice(11, 23)}  ${where.padEnd(16)} ${verdict.padEnd(30)} ${view.rule.padEnd(12)} ${view.protocol} ${path}${task}${location}`;
}

function endpointText(endpoint: Endpoint | null): string {
  if (!endpoint) return "*";
  return endpoint.address.includes(":")
    ? `[${endpoint.address}]:${endpoint.port}`
    : `${endpoint.address}:${endpoint.port}`;
}
