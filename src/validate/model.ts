/** A policy after validation, with every default filled in. */
export interface Rule {
  /** Position in the policy; the key of the rule's map entries. */
  index: number;
  originalPort: number;
  port: number;
  protocol: "tcp" | "udp";
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
  cidrs: Cidr[];
  enabled: boolean;
  description?: string;
}

/**
 * A destination network as the datapath compares it: 16 bytes, an IPv4
 * network in its IPv4-mapped IPv6 form (::ffff:a.b.c.d, prefix + 96), so
 * one comparison serves both families.
 */
export interface Cidr {
  family: "ipv4" | "ipv6";
  bytes: number[];
  /** Prefix length over the 16 bytes (an IPv4 /8 is 104). */
  prefix: number;
  /** As written in canonical form ("10.0.0.0/8"). */
  text: string;
}
