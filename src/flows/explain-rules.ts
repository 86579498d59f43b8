/**
 * What a policy's rules say about one connection, computed from the
 * validated policy alone (pure): the rule that selects it, and the rules
 * that came close, each with the one reason it did not match. `explain`
 * pairs this with what the live program does with the same packet.
 */
import ipaddr from "ipaddr.js";
import { isIP } from "node:net";
import { cidrText } from "../validate/addresses.js";
import type { Family } from "../validate/addresses.js";
import type { IntervalSet } from "../validate/intervals.js";
import type { Cidr, InterfaceSelection, OutboundPolicy, OutboundRule, Rule, ValidPolicy } from "../validate/model.js";
import { portRangeText, selectedDestinations, selectedPortSet, selectedSources } from "../validate/selectors.js";
import { appliesIn } from "../validate/namespaces.js";
import { globMatch } from "../glob.js";

/** An address and a port, as `--to`/`--from` give them. */
export interface Endpoint {
  family: Family;
  address: string;
  port: number;
}

/** The connection asked about, inbound: what its first packet carries. */
export interface InboundConnection {
  protocol: "tcp" | "udp";
  source: Endpoint;
  destination: Endpoint;
}

/** How one rule of a policy relates to a connection. */
export interface RuleMatch {
  rule: Rule;
  /** Why it does not select the connection; empty: it does. */
  misses: string[];
}

/** The rule of @policy that selects @connection (first by index), and those one check away. */
export function inboundMatches(
  rules: readonly Rule[],
  connection: InboundConnection,
  enabled: (rule: Rule) => boolean = (rule) => rule.enabled,
): { selected: Rule | undefined; selectedEnabled: boolean; nearMisses: RuleMatch[] } {
  const matches = rules.map((rule) => ({ rule, misses: inboundMisses(rule, connection) }));
  const selected = matches.find((match) => match.misses.length === 0)?.rule;
  // A rule that does not list the port at all did not come close, whatever else it selects.
  const listed = (rule: Rule) =>
    rule.originalPorts.some(
      (range) => range.first <= connection.destination.port && connection.destination.port <= range.last,
    );
  const nearMisses = matches.filter((match) => match.misses.length === 1 && listed(match.rule));
  return { selected, selectedEnabled: selected !== undefined && enabled(selected), nearMisses };
}

/** Every reason @rule does not select @connection, in the datapath's order of checks. */
export function inboundMisses(rule: Rule, connection: InboundConnection): string[] {
  const { protocol, source, destination } = connection;
  const family = destination.family;
  const misses: string[] = [];
  if (rule.protocol !== protocol) misses.push(`it is a ${rule.protocol} rule, the connection is ${protocol}`);
  if (rule.family !== "any" && rule.family !== family)
    misses.push(`it matches ${familyName(rule.family)} only, the connection is ${familyName(family)}`);
  const portMiss = portMissText(rule, destination.port);
  if (portMiss) misses.push(portMiss);
  if (rule.family === "any" || rule.family === family) {
    const sourceMiss = addressMiss("source", source, rule.sources, rule.exceptSources, selectedSources(rule, family));
    if (sourceMiss) misses.push(sourceMiss);
    const destinationMiss = addressMiss(
      "destination",
      destination,
      rule.destinations,
      [],
      selectedDestinations(rule, family),
    );
    if (destinationMiss) misses.push(destinationMiss);
  }
  return misses;
}

/** "selects 8000-8080 except 8042"; "selects 8000, not 8001"; undefined when @port is selected. */
export function portMissText(
  rule: Pick<Rule, "originalPorts" | "exceptPorts" | "port">,
  port: number,
): string | undefined {
  if (contains(selectedPortSet(rule), BigInt(port))) return undefined;
  const selects = rule.originalPorts.map(portRangeText).join(",");
  if (port === rule.port) return `port ${port} is its own proxy port, never intercepted`;
  if (!rule.originalPorts.some((range) => range.first <= port && port <= range.last))
    return `it selects ${selects}, not ${port}`;
  return `it selects ${selects} except ${rule.exceptPorts.map(portRangeText).join(",")}`;
}

function addressMiss(
  which: "source" | "destination",
  endpoint: Endpoint,
  included: readonly Cidr[],
  excepted: readonly Cidr[],
  selected: IntervalSet,
): string | undefined {
  const value = addressValue(endpoint.address);
  if (contains(selected, value)) return undefined;
  const inside = (cidr: Cidr) => cidr.family === endpoint.family && cidrHolds(cidr, value);
  const exception = excepted.find(inside);
  if (exception)
    return `${which} ${endpoint.address} is in ${which === "source" ? "exceptSources" : "the exceptions"} (${cidrText(exception)})`;
  const list = included.map(cidrText);
  const field = which === "source" ? "sources" : "destinations";
  return `${which} ${endpoint.address} is not in ${field} (${list.length > 4 ? `${list.slice(0, 3).join(", ")}, …` : list.join(", ")})`;
}

/*
 * Links: why a link has no program of a policy.
 */

/** Why @policy puts no program on @link in @namespace; undefined when it would. */
export function noProgramReason(
  policy: Pick<ValidPolicy, "name" | "interfaces" | "namespaces" | "rules">,
  link: { name: string; loopback: boolean; linkType: string },
  namespace: string | undefined,
): string {
  const name = policy.name;
  if (!appliesIn(policy, namespace)) {
    const where = namespace === undefined ? "the host's own namespace" : `"${namespace}"`;
    return `policy ${name} applies in namespaces ${globList(policy.namespaces ?? [])} only, not in ${where}`;
  }
  if (policy.rules.length === 0) return `policy ${name} has no interceptors, only outbound capture`;
  if (link.loopback || link.linkType !== "ether")
    return `${link.name} is a ${link.loopback ? "loopback" : link.linkType} link: programs attach to Ethernet links only`;
  const selection: InterfaceSelection = policy.interfaces;
  if (selection.include !== null && !selection.include.some((glob) => globMatch(glob, link.name)))
    return `policy ${name}'s interfaces ${globList(selection.include)} do not match ${link.name}`;
  const excluding = selection.exclude.find((glob) => globMatch(glob, link.name));
  if (excluding !== undefined) return `policy ${name} excludes ${link.name} by "${excluding}"`;
  return `policy ${name} selects ${link.name}, but is not applied here (see \`intercept plan\`)`;
}

function globList(globs: readonly string[]): string {
  return globs.map((glob) => `"${glob}"`).join(", ");
}

/*
 * Outbound: the connect() of a task in a cgroup, as a uid.
 */

export interface OutboundConnection {
  /** The task's cgroup, relative to the cgroup2 mount ("" for the root). */
  cgroup: string;
  uid: number;
  destination: Endpoint;
}

export type OutboundVerdict =
  | { verdict: "not-captured"; reason: string }
  | { verdict: "no-rule"; reason: string; nearMisses: { rule: OutboundRule; miss: string }[] }
  | { verdict: "disabled"; rule: OutboundRule; reason: string }
  | { verdict: "exempt"; rule: OutboundRule; reason: string }
  | { verdict: "redirected"; rule: OutboundRule; reason: string };

/**
 * What @outbound's programs do with a TCP connect(): as the datapath
 * decides, the cgroup first (its programs run for the captured cgroups and
 * those below), then the rule, its switch, then the exemptions (uid, then
 * cgroup; a socket's mark is not known here).
 */
export function outboundVerdict(
  outbound: OutboundPolicy,
  connection: OutboundConnection,
  enabled: (rule: OutboundRule) => boolean = (rule) => rule.enabled,
): OutboundVerdict {
  const captured = outbound.cgroups.find((cgroup) => within(connection.cgroup, cgroup));
  if (captured === undefined)
    return {
      verdict: "not-captured",
      reason: `cgroup ${cgroupText(connection.cgroup)} is not in or below a captured cgroup (${outbound.cgroups.map(cgroupText).join(", ")})`,
    };
  const { destination } = connection;
  const misses = outbound.rules.map((rule) => ({ rule, miss: outboundMiss(rule, destination) }));
  const selected = misses.find((entry) => entry.miss === undefined)?.rule;
  if (!selected) {
    const shown = `${destination.family === "ipv6" ? `[${destination.address}]` : destination.address}:${destination.port}`;
    return {
      verdict: "no-rule",
      reason: `no outbound rule selects ${shown}`,
      nearMisses: misses.filter((entry) => entry.miss !== undefined) as { rule: OutboundRule; miss: string }[],
    };
  }
  if (!enabled(selected))
    return { verdict: "disabled", rule: selected, reason: `the rule is disabled: the connection goes out as asked` };
  if (outbound.exempt.uids.includes(connection.uid))
    return { verdict: "exempt", rule: selected, reason: `uid ${connection.uid} is in exempt.uids` };
  const exemptCgroup = outbound.exempt.cgroups.find((cgroup) => within(connection.cgroup, cgroup));
  if (exemptCgroup !== undefined)
    return {
      verdict: "exempt",
      rule: selected,
      reason: `cgroup ${cgroupText(connection.cgroup)} is ${exemptCgroup === connection.cgroup ? "" : "below "}exempt cgroup ${cgroupText(exemptCgroup)}`,
    };
  return {
    verdict: "redirected",
    rule: selected,
    reason: `to the local proxy on port ${selected.port}${outbound.exempt.marks.length > 0 ? ` (unless the socket carries an exempt mark: ${outbound.exempt.marks.join(", ")})` : ""}`,
  };
}

function outboundMiss(rule: OutboundRule, destination: Endpoint): string | undefined {
  if (rule.originalPort !== destination.port) return `it selects port ${rule.originalPort}, not ${destination.port}`;
  if (rule.cidrs.length === 0) return undefined;
  const mapped = mappedValue(destination.address);
  const inside = rule.cidrs.some((cidr) => {
    const network = cidr.bytes.reduce((sum, byte) => (sum << 8n) | BigInt(byte), 0n);
    const shift = BigInt(128 - cidr.prefix);
    return mapped >> shift === network >> shift;
  });
  return inside
    ? undefined
    : `destination ${destination.address} is not in ${rule.cidrs.map((cidr) => cidr.text).join(", ")}`;
}

/** Whether cgroup @path is @ancestor or below it ("" is the root). */
function within(path: string, ancestor: string): boolean {
  const clean = (text: string) => text.replace(/^\/+|\/+$/g, "");
  const [inner, outer] = [clean(path), clean(ancestor)];
  return outer === "" || inner === outer || inner.startsWith(`${outer}/`);
}

function cgroupText(path: string): string {
  return `/${path.replace(/^\/+/, "")}`;
}

/*
 * Addresses.
 */

/** Reads "198.18.0.1:8000", "[fd00::1]:8000", or (@portOptional) an address alone. */
export function parseEndpoint(text: string, portOptional = false): Endpoint | string {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const plain = /^([^:]+)(?::(\d+))?$/.exec(text);
  const bare = isIP(text) === 6 ? [text, text, undefined] : undefined;
  const parts = bracketed ?? plain ?? bare;
  if (!parts) return `"${text}" is not ADDRESS:PORT (an IPv6 address in brackets: [fd00::1]:8000)`;
  const [, address, portText] = parts as [string, string, string | undefined];
  const version = isIP(address);
  if (version === 0) return `"${address}" is not an IPv4 or IPv6 address`;
  if (portText === undefined && !portOptional) return `"${text}" has no port`;
  const port = portText === undefined ? 0 : Number(portText);
  if (portText !== undefined && !(port >= 1 && port <= 65535)) return `port ${portText} is not 1–65535`;
  return { family: version === 4 ? "ipv4" : "ipv6", address: ipaddr.parse(address).toString(), port };
}

function familyName(family: Family): string {
  return family === "ipv4" ? "IPv4" : "IPv6";
}

function addressValue(address: string): bigint {
  return ipaddr
    .parse(address)
    .toByteArray()
    .reduce((sum, byte) => (sum << 8n) | BigInt(byte), 0n);
}

/** The address as the outbound datapath compares it: IPv4 mapped into IPv6. */
function mappedValue(address: string): bigint {
  const parsed = ipaddr.parse(address);
  const v6 = parsed.kind() === "ipv4" ? (parsed as ipaddr.IPv4).toIPv4MappedAddress() : parsed;
  return v6.toByteArray().reduce((sum, byte) => (sum << 8n) | BigInt(byte), 0n);
}

function cidrHolds(cidr: Cidr, value: bigint): boolean {
  const bits = BigInt(cidr.family === "ipv4" ? 32 : 128);
  const shift = bits - BigInt(cidr.prefixLength);
  return value >> shift === addressValue(cidr.address) >> shift;
}

function contains(set: IntervalSet, value: bigint): boolean {
  return set.some((interval) => interval.first <= value && value <= interval.last);
}
