/**
 * A flow record as the datapath wrote it (struct flow_event,
 * templates/bpf/lib/events.h), decoded by the mirror's layout
 * (FLOW_EVENT in src/model/bpf-abi.ts): nothing here knows an offset.
 */
import { isIP } from "node:net";
import { endianness } from "node:os";
import { FLOW_EVENT, FLOW_REASONS, FLOW_VERDICTS, type FlowReason, type FlowVerdict } from "../model/bpf-abi.js";

export interface FlowRecord {
  /** CLOCK_MONOTONIC nanoseconds, as bpf_ktime_get_ns gave them. */
  monotonicNs: bigint;
  /** The program's version: the name of its pin directory. */
  version: string;
  /** The rule's slot in the program's rule maps; the slot after the last for a record of no rule. */
  slot: number;
  verdict: FlowVerdict;
  reason: FlowReason;
  family: "ipv4" | "ipv6";
  protocol: "tcp" | "udp";
  source: Endpoint | null;
  destination: Endpoint | null;
  target: Endpoint | null;
  ifindex: number | null;
  /** The task (outbound programs only). */
  task: { pid: number; uid: number; command: string; cgroupId: string } | null;
}

export interface Endpoint {
  address: string;
  port: number;
}

type Field = keyof typeof FLOW_EVENT.fields;

const PROTOCOLS: Record<number, FlowRecord["protocol"]> = { 6: "tcp", 17: "udp" };

/** Decodes one record; throws on a record of another size (a reader of another ABI). */
export function decodeRecord(bytes: Buffer): FlowRecord {
  if (bytes.length !== FLOW_EVENT.size)
    throw new Error(
      `a flow record of ${bytes.length} bytes, not ${FLOW_EVENT.size}: intercept and its programs differ`,
    );
  const at = (name: Field) =>
    bytes.subarray(FLOW_EVENT.fields[name].offset, FLOW_EVENT.fields[name].offset + FLOW_EVENT.fields[name].size);
  const host = (name: Field) => hostNumber(at(name));
  const family = host("family") === 6 ? "ipv6" : "ipv4";
  const version = text(at("version"));
  const pid = host("pid");
  return {
    monotonicNs: hostBig(at("time_ns")),
    version,
    slot: host("rule"),
    verdict: FLOW_VERDICTS[host("verdict") as keyof typeof FLOW_VERDICTS] ?? "steered",
    reason: FLOW_REASONS[host("reason") as keyof typeof FLOW_REASONS] ?? "none",
    family,
    protocol: PROTOCOLS[host("protocol")] ?? "tcp",
    source: endpoint(at("source"), at("source_port"), family),
    destination: endpoint(at("destination"), at("destination_port"), family),
    target: endpoint(at("target"), at("target_port"), family),
    ifindex: host("ifindex") || null,
    task:
      pid === 0
        ? null
        : { pid, uid: host("uid"), command: text(at("comm")), cgroupId: hostBig(at("cgroup_id")).toString() },
  };
}

const LITTLE = endianness() === "LE";

function hostNumber(bytes: Buffer): number {
  return LITTLE ? bytes.readUIntLE(0, bytes.length) : bytes.readUIntBE(0, bytes.length);
}

function hostBig(bytes: Buffer): bigint {
  return LITTLE ? bytes.readBigUInt64LE(0) : bytes.readBigUInt64BE(0);
}

/** A NUL-terminated char array. */
function text(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString("latin1");
}

/** An address (IPv6, or IPv4-mapped) and a port, both in network order; null when the port is 0 (not known). */
function endpoint(address: Buffer, port: Buffer, family: FlowRecord["family"]): Endpoint | null {
  const number = port.readUInt16BE(0);
  if (number === 0) return null;
  return { address: family === "ipv4" ? address.subarray(12).join(".") : ipv6Text(address), port: number };
}

function ipv6Text(bytes: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
  const full = groups.join(":");
  // The longest run of zero groups, written ::, as RFC 5952 prints it.
  const runs = [...full.matchAll(/(?:^|:)0(?::0)+(?::|$)/g)].sort((a, b) => b[0].length - a[0].length);
  const shortest = runs[0] ? full.replace(runs[0][0], "::") : full;
  return isIP(shortest) === 6 ? shortest : full;
}
