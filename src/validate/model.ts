/** An inclusive range of ports, 1 ≤ first ≤ last ≤ 65535. */
export interface PortRange {
  first: number;
  last: number;
}

/** An IP network: its address with every host bit zero, and its prefix length. */
export interface Cidr {
  family: "ipv4" | "ipv6";
  /** The network address in its canonical text form (RFC 5952 for IPv6). */
  address: string;
  /** 0–32 (IPv4) or 0–128 (IPv6). */
  prefixLength: number;
}

/**
 * A policy after validation, with every default filled in. A rule's
 * selector is kept as it was written, normalised: lists sorted and merged
 * (overlapping and adjacent ranges joined, CIDRs that another contains
 * dropped, sibling CIDRs joined), so two spellings of one selector are the
 * same Rule. What a rule matches is computed from it (src/validate/selectors.ts).
 */
export interface Rule {
  /** Position in the policy; the key of the rule's map entries. */
  index: number;
  /**
   * Destination ports the rule selects: `originalPort: 8000` is [8000–8000],
   * `originalPorts: "*"` is [1–65535]. Never empty.
   */
  originalPorts: PortRange[];
  /** Ports left out of originalPorts. The rule's own `port` is always left out too, listed here or not. */
  exceptPorts: PortRange[];
  /** Client addresses the rule selects; empty: any. */
  sources: Cidr[];
  /** Client addresses left out of sources. */
  exceptSources: Cidr[];
  /** Addresses the client asked for (the packet's destination) the rule selects; empty: any. */
  destinations: Cidr[];
  port: number;
  protocol: "tcp" | "udp";
  /** The families the rule can match: as written, narrowed by its address lists (IPv4 CIDRs only: ipv4). */
  family: "ipv4" | "ipv6" | "any";
  /** Steer (new TCP connections to port's listener) or rewrite (ports of every packet). */
  strategy: "steer" | "rewrite";
  /** Set on steer rules (default "drop"); on a rewrite rule only when written, which validation refuses. */
  onProxyDown?: "drop" | "pass";
  enabled: boolean;
  description?: string;
}

export interface InterfaceSelection {
  /** Glob patterns; null selects every non-loopback interface. */
  include: readonly string[] | null;
  exclude: readonly string[];
}

export interface ValidPolicy {
  name: string;
  /** The file it was read from, as given. */
  file: string;
  interfaces: InterfaceSelection;
  /** Glob patterns of the network namespace names the policy applies in; absent: every one. */
  namespaces?: readonly string[];
  rules: Rule[];
  /** Outbound capture (src/validate/outbound.ts); absent when the policy has none. */
  outbound?: OutboundPolicy;
}

/** A policy's outbound section, validated, with defaults filled in. */
export interface OutboundPolicy {
  /** cgroup2 paths relative to the mount, whose connections are captured. */
  cgroups: string[];
  exempt: OutboundExemption;
  rules: OutboundRule[];
}

export interface OutboundExemption {
  uids: number[];
  /** The proxy's cgroups: never captured, and where its SO_ORIGINAL_DST is answered. */
  cgroups: string[];
  marks: number[];
}

export interface OutboundRule {
  /** Key of the rule's map entries (rule_state, rule_counters): after the interceptors'. */
  index: number;
  /** Position in outbound.rules. */
  position: number;
  originalPort: number;
  /** The local proxy's port. */
  port: number;
  /** Destination networks; empty: every destination. */
  cidrs: MappedCidr[];
  enabled: boolean;
  description?: string;
}

/**
 * A destination network as the datapath compares it: 16 bytes, an IPv4
 * network in its IPv4-mapped IPv6 form (::ffff:a.b.c.d, prefix + 96), so
 * one comparison serves both families.
 */
export interface MappedCidr {
  family: "ipv4" | "ipv6";
  bytes: number[];
  /** Prefix length over the 16 bytes (an IPv4 /8 is 104). */
  prefix: number;
  /** As written in canonical form ("10.0.0.0/8"). */
  text: string;
}
