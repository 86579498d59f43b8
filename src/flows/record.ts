/**
 * A flow record as the datapath wrote it (struct flow_event,
 * templates/bpf/lib/events.h), decoded by the mirror's layout
 * (FLOW_EVENT in src/model/bpf-abi.ts): nothing here knows an offset.
 */
import { isIP } from "node:net";
import { endianness } from "node:os";
import {
  cString,
  FLOW_EVENT,
  FLOW_REASONS,
  FLOW_VERDICTS,
  type FlowReason,
  type FlowVerdict,
} from "../model/bpf-abi.js";

export interface FlowRecord {
  /** CLOCK_MONOTONIC nanoseconds, as bpf_ktime_get_ns gave them. */
  monotonicNs: bigint;
  /** The program's version: the name of its pin directory. */
  version: string;
  /** The rule's slot in the program's rule maps; the slot after the last for a record of no rule. */
  slot: number;
  /** The namespace slot the tc program ran in (src/model/namespace-slot.ts); 0 for an outbound program. */
  namespaceSlot: number;
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
  // Read in place, by offset: a copy of each field cost more than the rest of the decoding.
  const host = (name: Field) => hostNumber(bytes, FLOW_EVENT.fields[name]);
  const family = host("family") === 6 ? "ipv6" : "ipv4";
  const pid = host("pid");
  return {
    monotonicNs: hostBig(bytes, FLOW_EVENT.fields.time_ns),
    version: text(bytes, FLOW_EVENT.fields.version),
    slot: host("rule"),
    namespaceSlot: host("namespace_slot"),
    verdict: FLOW_VERDICTS[host("verdict") as keyof typeof FLOW_VERDICTS] ?? "steered",
    reason: FLOW_REASONS[host("reason") as keyof typeof FLOW_REASONS] ?? "none",
    family,
    protocol: PROTOCOLS[host("protocol")] ?? "tcp",
    source: endpoint(bytes, "source", "source_port", family),
    destination: endpoint(bytes, "destination", "destination_port", family),
    target: endpoint(bytes, "target", "target_port", family),
    ifindex: host("ifindex") || null,
    task:
      pid === 0
        ? null
        : {
            pid,
            uid: host("uid"),
            command: text(bytes, FLOW_EVENT.fields.comm),
            cgroupId: hostBig(bytes, FLOW_EVENT.fields.cgroup_id).toString(),
          },
  };
}

interface Span {
  offset: number;
  size: number;
}

const LITTLE = endianness() === "LE";

function hostNumber(bytes: Buffer, { offset, size }: Span): number {
  return LITTLE ? bytes.readUIntLE(offset, size) : bytes.readUIntBE(offset, size);
}

function hostBig(bytes: Buffer, { offset }: Span): bigint {
  return LITTLE ? bytes.readBigUInt64LE(offset) : bytes.readBigUInt64BE(offset);
}

/** A NUL-terminated char array (read in place: subarray does not copy). */
function text(bytes: Buffer, { offset, size }: Span): string {
  return cString(bytes.subarray(offset, offset + size));
}

/** An address (IPv6, or IPv4-mapped) and a port, both in network order; null when the port is 0 (not known). */
function endpoint(bytes: Buffer, address: Field, port: Field, family: FlowRecord["family"]): Endpoint | null {
  const number = bytes.readUInt16BE(FLOW_EVENT.fields[port].offset);
  if (number === 0) return null;
  const at = FLOW_EVENT.fields[address].offset;
  return {
    address:
      family === "ipv4"
        ? `${bytes[at + 12]}.${bytes[at + 13]}.${bytes[at + 14]}.${bytes[at + 15]}`
        : ipv6Text(bytes, at),
    port: number,
  };
}

function ipv6Text(bytes: Buffer, at: number): string {
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(at + i * 2).toString(16));
  const full = groups.join(":");
  // The longest run of zero groups, written ::, as RFC 5952 prints it.
  const runs = [...full.matchAll(/(?:^|:)0(?::0)+(?::|$)/g)].sort((a, b) => b[0].length - a[0].length);
  const shortest = runs[0] ? full.replace(runs[0][0], "::") : full;
  return isIP(shortest) === 6 ? shortest : full;
}
