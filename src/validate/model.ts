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
  /** Glob patterns of the network namespace names the policy applies in; absent: every one. */
  namespaces?: readonly string[];
  rules: Rule[];
}
