/**
 * How a policy's program matches packets, worked out before anything is
 * rendered: plain data the templates spell as C.
 *
 * Ports first, since every packet has them parsed already: the port space
 * is cut into segments with the same candidate rules (rules may share a
 * port when their addresses or families differ), each segment a case
 * label or range (switch) or a run of table entries (tables). Addresses
 * only once a port matched, per rule and family: constant masked compares
 * for short lists, a lookup in an LPM trie filled at load for long ones.
 */
import { createHash } from "node:crypto";
import {
  ADDRESS_BITS,
  addressBytes,
  addressSet,
  addressText,
  cidrInterval,
  cidrsOf,
  cidrText,
  everyAddress,
  prefixMask,
  type Family,
} from "../validate/addresses.js";
import { covers, intersect, normalSet, subtract } from "../validate/intervals.js";
import type { Cidr, PortRange, Rule } from "../validate/model.js";
import { ruleFamilies, selectedPorts } from "../validate/selectors.js";
import type { PrefixEntry } from "../model/bpf-abi.js";

/**
 * Policies with up to this many port segments (case labels) match with a switch
 * (constant compares); larger ones with constant lookup tables. Measured
 * side by side (`npm run bench:datapath`, crossover table): per packet the
 * two are within noise at every size from 4 to 512 rules, but the switch
 * grows ~8 instructions a label, so from 64 on it takes 1.2–1.6× (64) to
 * 5–7× (512) as long to compile and load, while tables stay at ~260
 * instructions. At 32 and below the switch costs no more and keeps small
 * policies free of memory loads. (Past a few thousand labels a switch
 * would not load at all: its jumps outgrow BPF's 16-bit offsets.)
 */
export const SWITCH_LIMIT = 32;

/**
 * An address list (one rule's sources with their exceptions, or its
 * destinations, of one family) of up to this many CIDRs is matched with
 * constant masked compares, a longer one by a lookup in an LPM trie.
 * Measured side by side (`npm run bench:datapath`, constants vs trie
 * table, lists of mixed prefix lengths): per packet the constants are
 * cheaper up to a few hundred CIDRs (clang folds compares sharing a mask
 * into a compare tree; a trie lookup is a helper call costing 10–70 ns),
 * and IPv4 lists of 1,024 are cheaper in the trie (miss 96 vs 233 ns).
 * Building is what decides first: the trie's compile and load stay at
 * ~110–140 ms whatever its size, while the constants take 1.1–1.4× that
 * up to 128 CIDRs, 2–3× at 256, 9–14× at 1,024, and past a few thousand
 * tens of seconds (4,096 IPv6 prefixes no longer load at all).
 */
export const PREFIX_CONSTANT_LIMIT = 128;

/** An include list of at least this many CIDRs is first checked against the network they all lie in. */
const GUARD_MINIMUM = 3;

/** How a program matches ports: compare-and-branch on case labels, or constant lookup tables. */
export type MatchStrategy = "switch" | "table";

export function matchStrategy(portSegments: number): MatchStrategy {
  return portSegments > SWITCH_LIMIT ? "table" : "switch";
}

/** A rule as one port segment offers it: what the match code checks and fills in. */
export interface Candidate {
  rule: number;
  protocol: Rule["protocol"];
  family: Rule["family"];
  strategy: Rule["strategy"];
  onProxyDown: Rule["onProxyDown"] | null;
  /** The port a rewrite writes (ingress: port; egress: the original port), or the proxy's (steer). */
  newPort: number;
  /** The rule selects addresses: rule_<n>_selects is asked too. */
  selects: boolean;
  direction: Direction;
}

/** Which way a packet goes: requests arrive (ingress), replies to them leave (egress). */
export type Direction = "request" | "reply";

/** One case of a port switch: its labels, and the rules it offers (none: a gap in the default's ports). */
export interface PortCase {
  ranges: PortRange[];
  candidates: Candidate[];
}

export interface PortSwitch {
  /** Labels in host byte order (any range present); otherwise network order, saving the swap. */
  hostOrder: boolean;
  cases: PortCase[];
  /** The rules for every port no case names: the largest group, when that saves labels (`*` rules). */
  fallback: Candidate[];
  labels: number;
}

/** A run of table entries: [protocol][first … last] = group + 1. */
export interface TableEntry {
  protocol: Rule["protocol"];
  first: number;
  last: number;
  value: number;
}

/** A prefix as constants: its text (for a comment) and the words a masked compare needs. */
export interface PrefixConstant {
  cidr: string;
  /** IPv4: net, mask. IPv6: net0, mask0, … net3, mask3 (host-order words). */
  words: number[];
}

/** What one step of a rule's address check does. */
export type AddressClause =
  | { kind: "include" | "exclude"; address: "client" | "server"; prefixes: PrefixConstant[] }
  | { kind: "list"; address: "client" | "server"; list: number };

export interface AddressCheck {
  rule: number;
  /** Families of the rule that name no address: any address of them will do. */
  anyAddress: Family[];
  families: { family: Family; clauses: AddressClause[] }[];
}

/** An entry of a prefix list's LPM trie: part of the BPF ABI (src/model/bpf-abi.ts). */
export type { PrefixEntry } from "../model/bpf-abi.js";

/** Per rule, in table programs: the prefix list ids its addresses must be in (0: any). */
export interface RulePrefixLists {
  clientV4: number;
  serverV4: number;
  clientV6: number;
  serverV6: number;
}

export interface MatchLayout {
  strategy: MatchStrategy;
  /** Runs of ports with the same candidate rules (ingress): what the strategy is chosen by. */
  portSegments: number;
  switch?: { ingress: PortSwitch; egress: PortSwitch; addressChecks: AddressCheck[] };
  table?: {
    ingress: TableEntry[];
    egress: TableEntry[];
    /** Rule numbers + 1 of each group's candidates. */
    groups: number[][];
    candidatesPerGroup: number;
    prefixLists: RulePrefixLists[] | null;
  };
  /** The contents of the LPM tries, filled at load. */
  prefixes: PrefixEntry[];
  /** sha256 of the prefixes: printed in the C, so the program's identity covers them. */
  prefixesDigest: string;
}

/**
 * Works out how @rules are matched. @strategy is chosen by size unless
 * forced, and @prefixLimit is PREFIX_CONSTANT_LIMIT unless forced: the
 * benchmark builds one policy both ways to compare.
 */
export function chooseMatchLayout(
  rules: Rule[],
  strategy?: MatchStrategy,
  prefixLimit = PREFIX_CONSTANT_LIMIT,
): MatchLayout {
  const rewriting = rules.filter((rule) => rule.strategy === "rewrite");
  const ingressPorts = rules.map((rule) => ({ rule, ports: selectedPorts(rule), direction: "request" as const }));
  const egressPorts = rewriting.map((rule) => ({
    rule,
    ports: [{ first: rule.port, last: rule.port }],
    direction: "reply" as const,
  }));
  const ingressSegments = segments(ingressPorts);
  const portSegments = ingressSegments.length;
  const chosen = strategy ?? matchStrategy(portSegments);
  const lists = new PrefixLists();
  if (chosen === "switch") {
    const addressChecks = rules.filter(selectsAddresses).map((rule) => addressCheck(rule, lists, prefixLimit));
    const plan = {
      ingress: portSwitch(ingressSegments, ingressPorts),
      egress: portSwitch(segments(egressPorts), egressPorts),
      addressChecks,
    };
    return { strategy: chosen, portSegments, switch: plan, ...lists.contents() };
  }
  // A group is a list of candidate rules; a table entry holds its number + 1.
  const groups = new Map<string, { value: number; rules: number[] }>();
  const tableEntries = (entries: PortEntries) =>
    (["tcp", "udp"] as const).flatMap((protocol) =>
      segments(entries.filter((entry) => entry.rule.protocol === protocol)).map((segment) => {
        const key = segment.rules.join(",");
        const group = groups.get(key) ?? { value: groups.size + 1, rules: segment.rules.map((rule) => rule + 1) };
        groups.set(key, group);
        return { protocol, first: segment.range.first, last: segment.range.last, value: group.value };
      }),
    );
  const ingress = tableEntries(ingressPorts);
  const egress = tableEntries(egressPorts);
  const groupList = [...groups.values()].map((group) => group.rules);
  const prefixLists = rules.some(selectsAddresses) ? rules.map((rule) => rulePrefixLists(rule, lists)) : null;
  return {
    strategy: chosen,
    portSegments,
    table: {
      ingress,
      egress,
      groups: groupList,
      candidatesPerGroup: groupList.reduce((most, group) => Math.max(most, group.length), 1),
      prefixLists,
    },
    ...lists.contents(),
  };
}

export function selectsAddresses(rule: Rule): boolean {
  return rule.sources.length + rule.exceptSources.length + rule.destinations.length > 0;
}

/*
 * Ports.
 */

type PortEntries = { rule: Rule; ports: PortRange[]; direction: Direction }[];

interface Segment {
  range: PortRange;
  /** Rule numbers, ascending. */
  rules: number[];
}

/** The port space cut where the set of rules selecting a port changes; ports no rule selects are left out. */
function segments(entries: PortEntries): Segment[] {
  const changes = new Map<number, { add: number[]; remove: number[] }>();
  const at = (port: number) => changes.get(port) ?? (changes.set(port, { add: [], remove: [] }), changes.get(port)!);
  for (const { rule, ports } of entries) {
    for (const range of ports) {
      at(range.first).add.push(rule.index);
      at(range.last + 1).remove.push(rule.index);
    }
  }
  const points = [...changes.keys()].sort((a, b) => a - b);
  const active = new Set<number>();
  const result: Segment[] = [];
  points.forEach((point, i) => {
    const change = changes.get(point)!;
    for (const rule of change.remove) active.delete(rule);
    for (const rule of change.add) active.add(rule);
    const next = points[i + 1];
    if (active.size === 0 || next === undefined) return;
    const rules = [...active].sort((a, b) => a - b);
    const previous = result[result.length - 1];
    if (previous && previous.range.last === point - 1 && previous.rules.join() === rules.join())
      previous.range.last = next - 1;
    else result.push({ range: { first: point, last: next - 1 }, rules });
  });
  return result;
}

/**
 * Segments as switch cases, one case per group of rules. When one group's
 * segments outnumber the ports no rule selects (a `*` rule and its
 * exceptions), that group becomes the default and the gaps its cases.
 */
function portSwitch(segmentList: Segment[], entries: PortEntries): PortSwitch {
  const byRule = new Map(entries.map((entry) => [entry.rule.index, entry]));
  const candidatesOf = (rules: number[]) => rules.map((index) => candidate(byRule.get(index)!));
  const groups = new Map<string, PortCase>();
  for (const segment of segmentList) {
    const key = segment.rules.join();
    const group = groups.get(key) ?? { ranges: [], candidates: candidatesOf(segment.rules) };
    group.ranges.push(segment.range);
    groups.set(key, group);
  }
  const gaps = subtract(
    [{ first: 1n, last: 65535n }],
    normalSet(segmentList.map(({ range }) => ({ first: BigInt(range.first), last: BigInt(range.last) }))),
  ).map(({ first, last }) => ({ first: Number(first), last: Number(last) }));
  const largest = [...groups.values()].sort((a, b) => b.ranges.length - a.ranges.length)[0];
  let cases = [...groups.values()];
  let fallback: Candidate[] = [];
  if (largest && largest.ranges.length > gaps.length) {
    cases = cases.filter((group) => group !== largest);
    if (gaps.length > 0) cases.push({ ranges: gaps, candidates: [] });
    fallback = largest.candidates;
  }
  cases.sort((a, b) => a.ranges[0]!.first - b.ranges[0]!.first);
  const labels = cases.reduce((sum, group) => sum + group.ranges.length, 0);
  const hostOrder = cases.some((group) => group.ranges.some((range) => range.first !== range.last));
  return { hostOrder, cases, fallback, labels };
}

/** What the C needs of every rule it names: the enums it turns into constants. */
export function ruleEnums(rule: Rule): Pick<Candidate, "protocol" | "family" | "strategy" | "onProxyDown"> {
  return {
    protocol: rule.protocol,
    family: rule.family,
    strategy: rule.strategy,
    onProxyDown: rule.onProxyDown ?? null,
  };
}

function candidate({ rule, direction }: PortEntries[number]): Candidate {
  const reply = direction === "reply";
  return {
    rule: rule.index,
    ...ruleEnums(rule),
    newPort: reply ? selectedPorts(rule)[0]!.first : rule.port,
    selects: selectsAddresses(rule),
    direction,
  };
}

/*
 * Addresses.
 */

/** The prefix lists of one program, numbered from 1 (0 means: any address). */
class PrefixLists {
  private readonly entries: PrefixEntry[] = [];
  private count = 0;

  /** A list holding @included (every address when empty) less @excluded, all of @family. */
  add(family: Family, included: Cidr[], excluded: Cidr[]): number {
    const list = ++this.count;
    this.entries.push(...trieEntries(family, list, included, excluded));
    return list;
  }

  contents(): { prefixes: PrefixEntry[]; prefixesDigest: string } {
    const digest = createHash("sha256").update(JSON.stringify(this.entries)).digest("hex");
    return { prefixes: this.entries, prefixesDigest: digest };
  }
}

/**
 * An LPM trie answers with the longest matching prefix, so a list is
 * stored as its included networks (selected) and, nested inside them, its
 * exceptions (left out). Exceptions that cover a whole included network
 * take it out instead; any that lie outside every network are dropped.
 */
function trieEntries(family: Family, list: number, included: Cidr[], excluded: Cidr[]): PrefixEntry[] {
  const includedSet = included.length === 0 ? everyAddress(family) : addressSet(included, family);
  const excludedSet = addressSet(excluded, family);
  const kept = cidrsOf(includedSet, family).filter((cidr) => !covers(excludedSet, [cidrInterval(cidr)]));
  const keptSet = normalSet(kept.map(cidrInterval));
  const holes = cidrsOf(intersect(excludedSet, keptSet), family);
  const entry = (cidr: Cidr, selected: boolean): PrefixEntry => ({
    family,
    list,
    prefixLength: cidr.prefixLength,
    address: addressBytes(cidr),
    selected,
  });
  return [...kept.map((cidr) => entry(cidr, true)), ...holes.map((cidr) => entry(cidr, false))];
}

/** A switch program's address check of @rule: constants for short lists, a prefix list for long ones. */
function addressCheck(rule: Rule, lists: PrefixLists, prefixLimit: number): AddressCheck {
  const families = ruleFamilies(rule).map((family) => {
    const of = (cidrs: Cidr[]) => cidrs.filter((cidr) => cidr.family === family);
    const clauses = [
      ...clausesFor("server", of(rule.destinations), [], family, lists, prefixLimit),
      ...clausesFor("client", of(rule.sources), of(rule.exceptSources), family, lists, prefixLimit),
    ];
    // Cheap and selective first: constants by size, exclusions after inclusions, trie lookups last.
    const cost = (clause: AddressClause) =>
      clause.kind === "list" ? 1e9 : clause.prefixes.length + (clause.kind === "exclude" ? 1e6 : 0);
    return { family, clauses: clauses.sort((a, b) => cost(a) - cost(b)) };
  });
  return {
    rule: rule.index,
    anyAddress: families.filter((entry) => entry.clauses.length === 0).map((entry) => entry.family),
    families: families.filter((entry) => entry.clauses.length > 0),
  };
}

function clausesFor(
  address: "client" | "server",
  included: Cidr[],
  excluded: Cidr[],
  family: Family,
  lists: PrefixLists,
  prefixLimit: number,
): AddressClause[] {
  if (included.length + excluded.length === 0) return [];
  if (included.length + excluded.length > prefixLimit)
    return [{ kind: "list", address, list: lists.add(family, included, excluded) }];
  const clauses: AddressClause[] = [];
  const guard = commonNetwork(included, family);
  if (guard) clauses.push({ kind: "include", address, prefixes: [prefixConstant(guard)] });
  if (included.length > 0) clauses.push({ kind: "include", address, prefixes: included.map(prefixConstant) });
  if (excluded.length > 0) clauses.push({ kind: "exclude", address, prefixes: excluded.map(prefixConstant) });
  return clauses;
}

/**
 * The longest network every one of @cidrs lies in, when there are enough
 * of them for one compare to be worth it and it is narrower than them all
 * together would suggest (not /0): a packet outside it leaves at once.
 */
function commonNetwork(cidrs: Cidr[], family: Family): Cidr | undefined {
  if (cidrs.length < GUARD_MINIMUM) return undefined;
  const set = addressSet(cidrs, family);
  const first = set[0]!.first;
  const last = set[set.length - 1]!.last;
  let length = Math.min(...cidrs.map((cidr) => cidr.prefixLength));
  while (length > 0 && (first & prefixMask(family, length)) !== (last & prefixMask(family, length))) length--;
  if (length === 0) return undefined;
  return { family, address: addressText(family, first & prefixMask(family, length)), prefixLength: length };
}

function prefixConstant(cidr: Cidr): PrefixConstant {
  const bytes = addressBytes(cidr);
  const mask = prefixMask(cidr.family, cidr.prefixLength);
  const words: number[] = [];
  for (let word = 0; word < ADDRESS_BITS[cidr.family] / 32; word++) {
    const net = bytes.slice(word * 4, word * 4 + 4).reduce((value, byte) => value * 256 + byte, 0);
    const shift = BigInt(ADDRESS_BITS[cidr.family] - 32 * (word + 1));
    words.push(net, Number((mask >> shift) & 0xffffffffn));
  }
  return { cidr: cidrText(cidr), words };
}

/** A table program's prefix lists of @rule: every address list goes to a trie (data, like the tables). */
function rulePrefixLists(rule: Rule, lists: PrefixLists): RulePrefixLists {
  const listFor = (address: "client" | "server", family: Family) => {
    if (!ruleFamilies(rule).includes(family)) return 0;
    const of = (cidrs: Cidr[]) => cidrs.filter((cidr) => cidr.family === family);
    const [included, excluded] =
      address === "client" ? [of(rule.sources), of(rule.exceptSources)] : [of(rule.destinations), []];
    return included.length + excluded.length === 0 ? 0 : lists.add(family, included, excluded);
  };
  return {
    clientV4: listFor("client", "ipv4"),
    serverV4: listFor("server", "ipv4"),
    clientV6: listFor("client", "ipv6"),
    serverV6: listFor("server", "ipv6"),
  };
}
