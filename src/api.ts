/**
 * The policy language's public types: what `import { definePolicy } from "intercept-bpf"`
 * gives a policy file. Mirrors schemas/policy.schema.json exactly (a test compares
 * them). Policy files are read statically and never executed, so definePolicy
 * exists only to give editors the type.
 */

/** A TCP/UDP port, 1–65535. */
export type Port = number;

/** An inclusive range of ports, "FIRST-LAST": "9000-9100". */
export type PortRange = `${number}-${number}`;

/** A port or a range of ports. */
export type PortItem = Port | PortRange;

/** Every port ("*"), or a list of ports and ranges. */
export type PortSelector = "*" | readonly PortItem[];

/** An IPv4 or IPv6 network in CIDR notation ("10.0.0.0/8", "fd00::/8"), or one address. */
export type Cidr = string;

export interface Interceptor {
  /** The port clients connect to. Give this or originalPorts. */
  originalPort?: Port;
  /** The ports clients connect to: ports and ranges ([8000, "9000-9100"]), or "*" for every port. Give this or originalPort. */
  originalPorts?: PortSelector;
  /** Ports and ranges left out of originalPorts. The rule's own port is always left out. */
  exceptPorts?: readonly PortItem[];
  /** Only traffic from these client networks. Default: from anywhere. */
  sources?: readonly Cidr[];
  /** Traffic from these client networks is left alone. */
  exceptSources?: readonly Cidr[];
  /** Only traffic addressed to these networks (the address the client asked for). Default: any. */
  destinations?: readonly Cidr[];
  /** The port the traffic is delivered to instead (e.g. a local proxy). */
  port: Port;
  /** Transport protocol. Default: tcp. */
  protocol?: "tcp" | "udp";
  /** IP family. Default: any, or the one family of the rule's sources and destinations. */
  family?: "ipv4" | "ipv6" | "any";
  /**
   * How traffic for originalPort reaches port. "steer": each new connection is
   * handed to the socket listening on port, and no packet is rewritten (TCP
   * only). "rewrite": the destination port of every packet and the source port
   * of every reply are rewritten. Default: steer for tcp, rewrite for udp.
   */
  strategy?: "steer" | "rewrite";
  /**
   * What a steer rule does with a new connection when nothing listens on port:
   * "drop" it (fail closed), or "pass" it on to originalPort. Steer rules only.
   * Default: drop.
   */
  onProxyDown?: "drop" | "pass";
  /** Whether the rule is active. Flipping it is a live edit (no reload). Default: true. */
  enabled?: boolean;
  /** Free text for reviewers. */
  description?: string;
}

export interface InterfaceSelector {
  /** Glob patterns (*, ?) of interface names to select. */
  include?: readonly string[];
  /** Glob patterns (*, ?) of interface names to leave alone. */
  exclude?: readonly string[];
}

export interface Policy {
  /** Path or URL of the schema, for editor completion. Ignored by intercept. */
  $schema?: string;
  /** Policy name, used in C identifiers and pin paths. Defaults to the file name. */
  name?: string;
  /** Which interfaces get the filters. Default: every non-loopback interface. */
  interfaces?: InterfaceSelector;
  /**
   * Glob patterns (*, ?) of the network namespaces (as `ip netns` names them)
   * this policy applies in. Default: every namespace the agent or command manages.
   */
  namespaces?: readonly string[];
  /** The rules: traffic for originalPort goes to port. Required unless outbound is given. */
  interceptors?: readonly Interceptor[];
  /**
   * Outbound capture: connections that applications in the given cgroups make are
   * sent to a local proxy, which reads the original destination with getsockopt
   * SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6), as behind iptables REDIRECT.
   */
  outbound?: Outbound;
}

/** A cgroup2 path relative to the cgroup2 mount, e.g. "system.slice/app.service". */
export type CgroupPath = string;

export interface Outbound {
  /**
   * cgroup2 paths, relative to the cgroup2 mount (e.g. "system.slice/app.service"),
   * whose processes' connections are captured, their descendants' included.
   */
  cgroups: readonly CgroupPath[];
  exempt: OutboundExemption;
  /** Which connections go to which local proxy port. At most 256. */
  rules: readonly OutboundRule[];
}

/**
 * Whose connections are never captured, so the proxy's own connections to the
 * original destinations do not loop back into it. At least one of uids, cgroups, marks.
 */
export interface OutboundExemption {
  /** The proxy's user ids: connect() calls made by processes running as these are left alone. */
  uids?: readonly number[];
  /**
   * The proxy's cgroups (relative to the cgroup2 mount): connect() calls made from
   * them (or their descendants) are left alone, and the proxy's SO_ORIGINAL_DST is
   * answered there.
   */
  cgroups?: readonly CgroupPath[];
  /** Socket marks (SO_MARK) the proxy sets on its upstream sockets: sockets carrying one are left alone. */
  marks?: readonly number[];
}

export interface OutboundRule {
  /** The destination port applications connect to. */
  originalPort: Port;
  /** The local proxy's port: the connection goes to 127.0.0.1 (IPv4) or ::1 (IPv6) on this port instead. */
  port: Port;
  /**
   * Destination networks (IPv4 and IPv6 CIDRs, e.g. "10.0.0.0/8", "fd00::/8") the
   * rule is limited to. Default: every destination.
   */
  cidrs?: readonly string[];
  /** Whether the rule is active. Flipping it is a live edit (no reload). Default: true. */
  enabled?: boolean;
  /** Free text for reviewers. */
  description?: string;
}

/**
 * Identity at run time; gives a policy file its type in an editor. Not
 * generic on purpose: a plain parameter type makes TypeScript reject
 * misspelt fields (excess property checks).
 */
export function definePolicy(policy: Policy): Policy {
  return policy;
}
