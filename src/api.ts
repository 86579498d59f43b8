/**
 * The policy language's public types: what `import { definePolicy } from "intercept"`
 * gives a policy file. Mirrors schemas/policy.schema.json exactly (a test compares
 * them). Policy files are read statically and never executed, so definePolicy
 * exists only to give editors the type.
 */

/** A TCP/UDP port, 1–65535. */
export type Port = number;

export interface Interceptor {
  /** The port clients connect to. */
  originalPort: Port;
  /** The port the traffic is delivered to instead (e.g. a local proxy). */
  port: Port;
  /** Transport protocol. Default: tcp. */
  protocol?: "tcp" | "udp";
  /** IP family. Default: any. */
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
  /** The rules: traffic for originalPort goes to port. */
  interceptors: readonly Interceptor[];
}

/**
 * Identity at run time; gives a policy file its type in an editor. Not
 * generic on purpose: a plain parameter type makes TypeScript reject
 * misspelt fields (excess property checks).
 */
export function definePolicy(policy: Policy): Policy {
  return policy;
}
