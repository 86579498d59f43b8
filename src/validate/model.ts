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
  rules: Rule[];
}
