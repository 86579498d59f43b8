/**
 * The TypeScript side of the BPF ABI: what the objects built from
 * templates/bpf define, as userspace names and writes it — the maps (by
 * the names bpftool pins them under), their key and value layouts with
 * each field's byte order, and the programs with their SEC() names.
 * tests/unit/bpf-abi.test.ts compiles the templates and checks the
 * object's BTF and sections against this module (the counters' layout is
 * src/model/counters.ts, checked by tests/unit/counters.test.ts).
 */
import type { CgroupHook, Hook } from "./hooks.js";
import { hostU32, hostU64, readHostU32, readHostU64 } from "./host-order.js";

/** How a field's bytes are ordered: as the host's integers (__u32), or as in packets (__be32). */
export type ByteOrder = "host" | "network" | "bytes";

export interface FieldLayout {
  offset: number;
  size: number;
  order: ByteOrder;
}

/** A key or value type: a C struct with its fields, or a bare integer (no fields). */
export interface TypeLayout {
  /** The C type: "struct rule_state", "__u32", … */
  type: string;
  size: number;
  fields: Record<string, FieldLayout>;
}

/** The kernel's map types the objects use (enum bpf_map_type). */
export const MAP_TYPES = { hash: 1, array: 2, percpuArray: 6, lruHash: 9, lpmTrie: 11, ringbuf: 27 } as const;

export interface MapAbi {
  name: string;
  type: keyof typeof MAP_TYPES;
  key: TypeLayout;
  value: TypeLayout;
}

const u8: TypeLayout = { type: "__u8", size: 1, fields: {} };
const u32: TypeLayout = { type: "__u32", size: 4, fields: {} };
const u64: TypeLayout = { type: "__u64", size: 8, fields: {} };
const field = (offset: number, size: number, order: ByteOrder = "host"): FieldLayout => ({ offset, size, order });
const struct = (name: string, size: number, fields: Record<string, FieldLayout>): TypeLayout => ({
  type: `struct ${name}`,
  size,
  fields,
});

/** What a captured connect() asked for (outbound_maps.h); an address is IPv6 or IPv4-mapped, in network order. */
const originalDestination = struct("original_destination", 24, {
  addr: field(0, 16, "network"),
  port: field(16, 2, "network"),
  family: field(18, 1),
  pad: field(19, 1),
  rule: field(20, 4),
});

/** Every map a policy's object may define, by pinned name (templates/bpf/lib/maps.h, prefixes.h, outbound_maps.h). */
export const MAPS = {
  rule_state: {
    name: "rule_state",
    type: "array",
    key: u32,
    value: struct("rule_state", 4, { enabled: field(0, 4) }),
  },
  rule_counters: {
    name: "rule_counters",
    type: "percpuArray",
    key: u32,
    value: struct("rule_counter", 16, { packets: field(0, 8), bytes: field(8, 8) }),
  },
  policy_meta: {
    name: "policy_meta",
    type: "array",
    key: u32,
    value: struct("policy_meta", 64, { content_hash: field(0, 64, "bytes") }),
  },
  prefixes_v4: {
    name: "prefixes_v4",
    type: "lpmTrie",
    value: u8,
    key: struct("prefix_key_v4", 12, { prefixlen: field(0, 4), list: field(4, 4), addr: field(8, 4, "network") }),
  },
  prefixes_v6: {
    name: "prefixes_v6",
    type: "lpmTrie",
    value: u8,
    key: struct("prefix_key_v6", 24, { prefixlen: field(0, 4), list: field(4, 4), addr: field(8, 16, "network") }),
  },
  exempt_cgroups: {
    name: "exempt_cgroups",
    type: "array",
    key: u32,
    value: struct("exempt_cgroup", 16, { id: field(0, 8), level: field(8, 4), pad: field(12, 4) }),
  },
  orig_by_cookie: { name: "orig_by_cookie", type: "lruHash", key: u64, value: originalDestination },
  orig_by_conn: {
    name: "orig_by_conn",
    type: "lruHash",
    value: originalDestination,
    key: struct("connection_key", 36, {
      client: field(0, 16, "network"),
      proxy: field(16, 16, "network"),
      client_port: field(32, 2, "network"),
      proxy_port: field(34, 2, "network"),
    }),
  },
  rule_events: { name: "rule_events", type: "array", key: u32, value: u32 },
  /**
   * The namespace slots claimed in an object with tc programs
   * (templates/bpf/lib/tc_slot.h), NAMESPACE_SLOTS entries at most: by
   * slot, the inode of the network namespace holding it. Only userspace
   * reads and writes it; a claim is an insert with BPF_NOEXIST.
   */
  namespace_slots: { name: "namespace_slots", type: "hash", key: u32, value: u64 },
  flow_event_drops: { name: "flow_event_drops", type: "percpuArray", key: u32, value: u64 },
} as const satisfies Record<string, MapAbi>;

export type MapName = keyof typeof MAPS | typeof FLOW_EVENTS.name;

/*
 * Events (templates/bpf/lib/events.h): one ring buffer per namespace,
 * shared by every version there like the outbound records; each rule's
 * switch in rule_events, whose last slot switches the records of no rule;
 * drops counted in flow_event_drops.
 */

/** The ring buffer of records, with its size in bytes (FLOW_EVENT_BUFFER). */
export const FLOW_EVENTS = { name: "flow_events", type: "ringbuf", bytes: 256 * 1024 } as const;

/** The maps every version of a namespace shares, by name: the first version loaded makes them. */
export const FLOW_EVENT_MAPS = [FLOW_EVENTS.name, MAPS.flow_event_drops.name] as const;

/** struct flow_event: one record. Addresses are IPv6 or IPv4-mapped; `rule` is the slot. */
export const FLOW_EVENT = struct("flow_event", 128, {
  time_ns: field(0, 8),
  cgroup_id: field(8, 8),
  version: field(16, 16, "bytes"),
  source: field(32, 16, "network"),
  destination: field(48, 16, "network"),
  target: field(64, 16, "network"),
  source_port: field(80, 2, "network"),
  destination_port: field(82, 2, "network"),
  target_port: field(84, 2, "network"),
  family: field(86, 1),
  protocol: field(87, 1),
  verdict: field(88, 1),
  reason: field(89, 1),
  pad: field(90, 2),
  rule: field(92, 4),
  ifindex: field(96, 4),
  pid: field(100, 4),
  uid: field(104, 4),
  comm: field(108, 16, "bytes"),
  /** Where a tc program ran (src/model/namespace-slot.ts); 0 for an outbound program. */
  namespace_slot: field(124, 4),
});

/** enum flow_verdict, by value: what the datapath did with a connection. */
export const FLOW_VERDICTS = {
  1: "steered",
  2: "proxy-down",
  3: "time-wait",
  4: "redirected",
  5: "exempt",
  6: "original-dst",
  7: "rewritten",
} as const;

/** enum flow_reason, by value. */
export const FLOW_REASONS = {
  0: "none",
  1: "dropped",
  2: "passed",
  3: "time-wait-recycled",
  4: "exempt-uid",
  5: "exempt-mark",
  6: "exempt-cgroup",
  7: "answered",
  8: "not-found",
} as const;

export type FlowVerdict = (typeof FLOW_VERDICTS)[keyof typeof FLOW_VERDICTS];
export type FlowReason = (typeof FLOW_REASONS)[keyof typeof FLOW_REASONS];

/** The C enumerators of FLOW_VERDICTS and FLOW_REASONS, as the agreement test finds them in BTF. */
export const FLOW_ENUMS = {
  flow_verdict: {
    VERDICT_STEERED: 1,
    VERDICT_PROXY_DOWN: 2,
    VERDICT_TIME_WAIT: 3,
    VERDICT_REDIRECTED: 4,
    VERDICT_EXEMPT: 5,
    VERDICT_ORIGINAL_DST: 6,
    VERDICT_REWRITTEN: 7,
  },
  flow_reason: {
    REASON_NONE: 0,
    REASON_DROPPED: 1,
    REASON_PASSED: 2,
    REASON_TIME_WAIT_RECYCLED: 3,
    REASON_EXEMPT_UID: 4,
    REASON_EXEMPT_MARK: 5,
    REASON_EXEMPT_CGROUP: 6,
    REASON_ANSWERED: 7,
    REASON_NOT_FOUND: 8,
  },
} as const;

/** The rule_events slot of records that belong to no rule, after a program's @slots rule slots. */
export function noRuleEventSlot(slots: number): number {
  return slots;
}

/** A rule_events value: the switch. */
export function ruleEventsValue(enabled: boolean): number[] {
  return hostU32(enabled ? 1 : 0);
}

/** Maps only the programs use (timewait.h's time_wait_tries): userspace never names, reads or writes them. */
export const PROGRAM_PRIVATE_MAPS: readonly string[] = ["time_wait_tries"];

/** The maps of original destinations, shared by every version in a namespace (outbound_maps.h). */
export type OutboundRecordMap = "orig_by_cookie" | "orig_by_conn";
export const OUTBOUND_RECORD_MAPS: readonly OutboundRecordMap[] = ["orig_by_cookie", "orig_by_conn"];

/**
 * The map intercept makes itself (not in any object), one per namespace:
 * the clsact qdiscs it created, by ifindex (a __u32 key, a __u32 value 1).
 */
export const QDISC_REGISTRY = { name: "intercept_qdisc", key: u32, value: u32 } as const;

export interface ProgramAbi {
  /** The C function's name: the program's name in the kernel, and its pin's. */
  name: string;
  /** Its SEC(): the section bpftool reads the program type from. */
  section: string;
}

/** The tc programs, one per hook (templates/bpf/lib/programs.h). */
export const TC_PROGRAMS: Record<Hook, ProgramAbi> = {
  ingress: { name: "intercept_ingress", section: "tc" },
  egress: { name: "intercept_egress", section: "tc" },
};

/**
 * Every tc program's name starts so: how a filter running one of ours is
 * told apart (tc shows names cut to 15 characters).
 */
export const TC_PROGRAM_PREFIX = "intercept_";

/** The outbound programs, one per cgroup hook (templates/bpf/lib/outbound.h). */
export const CGROUP_PROGRAMS: Record<CgroupHook, ProgramAbi> = {
  connect4: { name: "out_connect4", section: "cgroup/connect4" },
  connect6: { name: "out_connect6", section: "cgroup/connect6" },
  sock_ops: { name: "out_sockops", section: "sockops" },
  getsockopt: { name: "out_getsockopt", section: "cgroup/getsockopt" },
};

/*
 * Encoders: a key or value as the bytes of its layout above.
 */

/** The key of every array map (rule_state, rule_counters, policy_meta, exempt_cgroups): the slot. */
export function arrayKey(slot: number): number[] {
  return hostU32(slot);
}

/** struct rule_state: the rule's switch. */
export function ruleStateValue(enabled: boolean): number[] {
  return hostU32(enabled ? 1 : 0);
}

/*
 * Decoders: a value's bytes as its layout above says (host order).
 */

/** struct rule_state's switch. */
export function ruleEnabled(value: Buffer): boolean {
  return readHostU32(value, MAPS.rule_state.value.fields.enabled.offset) === 1;
}

/** struct exempt_cgroup: id 0 is an unused slot. */
export function exemptCgroupOf(value: Buffer): { id: number; level: number } {
  const { id, level } = MAPS.exempt_cgroups.value.fields;
  return { id: readHostU64(value, id.offset), level: readHostU32(value, level.offset) };
}

/** A char array's text (policy_meta's content hash, a flow record's names): up to its first NUL. */
export function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.toString("latin1", 0, end === -1 ? bytes.length : end);
}

/** struct policy_meta: the content hash, NUL-padded to its 64 characters. */
export function policyMetaValue(contentHash: string): number[] {
  const size = MAPS.policy_meta.value.fields.content_hash.size;
  return [...Buffer.from(contentHash.padEnd(size, "\0").slice(0, size))];
}

/** struct exempt_cgroup: a cgroup's id and its level (the padding zero). */
export function exemptCgroupValue(id: number, level: number): number[] {
  return [...hostU64(id), ...hostU32(level), ...hostU32(0)];
}

/** The qdisc registry's key (an ifindex) and value (1: ours). */
export function qdiscRecord(ifindex: number): { key: number[]; value: number[] } {
  return { key: hostU32(ifindex), value: hostU32(1) };
}

/*
 * The prefix tries: the C side is struct prefix_key_v4/_v6 in
 * templates/bpf/lib/prefixes.h. A key is the prefix length counting the
 * list number's bits too, the list number, then the address; both numbers
 * in host byte order, the address in network order. The value is one byte,
 * enum prefix_verdict.
 */

/** An entry of a prefix list's LPM trie. */
export interface PrefixEntry {
  family: "ipv4" | "ipv6";
  list: number;
  prefixLength: number;
  /** Network order, 4 or 16 bytes. */
  address: number[];
  /** Selected (1), or left out by an exception (0). */
  selected: boolean;
}

/** The list number's bits at the start of every key (PREFIX_LIST_BITS). */
export const PREFIX_LIST_BITS = 32;

/** The map an entry goes into. */
export function prefixMap(entry: PrefixEntry): "prefixes_v4" | "prefixes_v6" {
  return entry.family === "ipv4" ? "prefixes_v4" : "prefixes_v6";
}

/** An entry's key and value, as bytes. */
export function prefixBytes(entry: PrefixEntry): { key: number[]; value: number[] } {
  return {
    key: [...hostU32(PREFIX_LIST_BITS + entry.prefixLength), ...hostU32(entry.list), ...entry.address],
    value: [entry.selected ? 1 : 0],
  };
}
