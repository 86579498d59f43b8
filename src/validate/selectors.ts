/**
 * Rule selectors: which packets a rule is about. Reading one as written
 * (originalPort or originalPorts with exceptPorts, sources with
 * exceptSources, destinations, family) into the normal form a Rule holds,
 * with every problem it has located at the item that has it; and what a
 * normal selector matches, as sets (src/validate/intervals.ts), for the
 * overlap check and the compiler.
 */
import type { DiagnosticCode } from "../diagnostics.js";
import type { Interceptor, PortItem } from "../api.js";
import {
  addressSet,
  cidrText,
  everyAddress,
  FAMILIES,
  familiesOf,
  normalCidrs,
  readCidr,
  type Family,
} from "./addresses.js";
import { covers, normalSet, overlaps, subtract, type IntervalSet } from "./intervals.js";
import type { Cidr, PortRange, Rule } from "./model.js";

/** Every port a rule can name. */
export const EVERY_PORT: PortRange = { first: 1, last: 65535 };

/** The part of a Rule its selector fields give. */
export type RuleSelector = Pick<
  Rule,
  "originalPorts" | "exceptPorts" | "sources" | "exceptSources" | "destinations" | "family"
>;

/** A problem with a selector, at a field of the rule (a JSON pointer below it: "originalPorts/1"). */
export interface SelectorProblem {
  field: string;
  part: "key" | "value";
  code: DiagnosticCode;
  message: string;
  suggestion?: string;
}

const FAMILY_NAME: Record<Family, string> = { ipv4: "IPv4", ipv6: "IPv6" };

/**
 * Reads @interceptor's selector (it passed the schema). Returns the normal
 * form, or the problems that keep it from having one; @index names the
 * rule in messages.
 */
export function readSelector(
  interceptor: Interceptor,
  index: number,
): { selector: RuleSelector | undefined; problems: SelectorProblem[] } {
  const problems: SelectorProblem[] = [];
  const rule = `interceptors[${index}]`;
  const problem = (field: string, part: "key" | "value", code: DiagnosticCode, message: string, suggestion?: string) =>
    problems.push({ field, part, code, message, ...(suggestion !== undefined && { suggestion }) });

  // Ports and addresses are read, then checked, each on their own: a problem in one hides none in the other.
  const written = writtenPorts(interceptor, rule, problem);
  const exceptPorts = readPortItems(interceptor.exceptPorts ?? [], "exceptPorts", rule, problem);
  const portProblems = problems.length;
  const sources = readCidrs(interceptor.sources ?? [], "sources", rule, problem);
  const exceptSources = readCidrs(interceptor.exceptSources ?? [], "exceptSources", rule, problem);
  const destinations = readCidrs(interceptor.destinations ?? [], "destinations", rule, problem);
  const portsRead = portProblems === 0;
  const addressesRead = problems.length === portProblems;

  if (written && portsRead && !checkOwnPort(interceptor, written, rule, problem))
    checkPortExceptions(interceptor, written, exceptPorts, rule, problem);
  const family = addressesRead
    ? checkFamilies(interceptor, { sources, exceptSources, destinations }, rule, problem)
    : undefined;
  if (family) checkSourceExceptions(sources, exceptSources, family, rule, problem);
  if (problems.length > 0 || !written || !family) return { selector: undefined, problems };
  return {
    selector: {
      originalPorts: portRanges(normalSet(written.items.map((item) => toInterval(item.range)))),
      exceptPorts: portRanges(normalSet(exceptPorts.map((item) => toInterval(item.range)))),
      sources: normalCidrs(sources.map((item) => item.cidr)),
      exceptSources: normalCidrs(exceptSources.map((item) => item.cidr)),
      destinations: normalCidrs(destinations.map((item) => item.cidr)),
      family: family.length === 2 ? "any" : family[0]!,
    },
    problems,
  };
}

/*
 * What a normal selector matches.
 */

/** The destination ports @rule acts on: originalPorts, less exceptPorts and the rule's own port. */
export function selectedPorts(rule: Pick<Rule, "originalPorts" | "exceptPorts" | "port">): PortRange[] {
  return portRanges(selectedPortSet(rule));
}

/** Same as selectedPorts, as a set. */
export function selectedPortSet(rule: Pick<Rule, "originalPorts" | "exceptPorts" | "port">): IntervalSet {
  const left = normalSet([...rule.exceptPorts.map(toInterval), toInterval({ first: rule.port, last: rule.port })]);
  return subtract(rule.originalPorts.map(toInterval), left);
}

/** The port of a rule written (or writable) as `originalPort`: one port, no exceptions; else undefined. */
export function singleOriginalPort(rule: Pick<Rule, "originalPorts" | "exceptPorts">): number | undefined {
  const [only] = rule.originalPorts;
  return rule.originalPorts.length === 1 && only!.first === only!.last && rule.exceptPorts.length === 0
    ? only!.first
    : undefined;
}

/** The families @rule matches. */
export function ruleFamilies(rule: Pick<Rule, "family">): Family[] {
  return rule.family === "any" ? [...FAMILIES] : [rule.family];
}

/** The client addresses of @family @rule selects: its sources (or every address), less exceptSources. */
export function selectedSources(rule: Pick<Rule, "sources" | "exceptSources">, family: Family): IntervalSet {
  const included = rule.sources.length === 0 ? everyAddress(family) : addressSet(rule.sources, family);
  return subtract(included, addressSet(rule.exceptSources, family));
}

/** The destination addresses of @family @rule selects: its destinations, or every address. */
export function selectedDestinations(rule: Pick<Rule, "destinations">, family: Family): IntervalSet {
  return rule.destinations.length === 0 ? everyAddress(family) : addressSet(rule.destinations, family);
}

export function toInterval(range: PortRange): { first: bigint; last: bigint } {
  return { first: BigInt(range.first), last: BigInt(range.last) };
}

export function portRanges(set: IntervalSet): PortRange[] {
  return set.map(({ first, last }) => ({ first: Number(first), last: Number(last) }));
}

/** "8000", "9000-9100". */
export function portRangeText(range: PortRange): string {
  return range.first === range.last ? String(range.first) : `${range.first}-${range.last}`;
}

/*
 * Reading, item by item.
 */

type Problem = (
  field: string,
  part: "key" | "value",
  code: DiagnosticCode,
  message: string,
  suggestion?: string,
) => void;

interface PortEntry {
  field: string;
  range: PortRange;
}
interface CidrEntry {
  field: string;
  cidr: Cidr;
}

/** originalPort or originalPorts, exactly one of them, as entries. */
function writtenPorts(
  interceptor: Interceptor,
  rule: string,
  problem: Problem,
): { field: string; items: PortEntry[] } | undefined {
  const { originalPort, originalPorts } = interceptor;
  if (originalPort !== undefined && originalPorts !== undefined) {
    problem(
      "originalPorts",
      "key",
      "rule/original-port-twice",
      `${rule} gives both originalPort and originalPorts: give one (originalPorts: [${originalPort}, …] for several)`,
    );
    return undefined;
  }
  if (originalPort !== undefined)
    return {
      field: "originalPort",
      items: [{ field: "originalPort", range: { first: originalPort, last: originalPort } }],
    };
  if (originalPorts === undefined) {
    problem(
      "",
      "value",
      "rule/no-original-port",
      `${rule} selects no port: give originalPort (one port) or originalPorts (ports, ranges "FIRST-LAST", or "*" for every port)`,
    );
    return undefined;
  }
  if (originalPorts === "*") return { field: "originalPorts", items: [{ field: "originalPorts", range: EVERY_PORT }] };
  const items = readPortItems(originalPorts, "originalPorts", rule, problem);
  return items.length === originalPorts.length ? { field: "originalPorts", items } : undefined;
}

/** Ports and "FIRST-LAST" ranges; a range out of bounds or backwards is a problem, not an entry. */
function readPortItems(items: readonly PortItem[], field: string, rule: string, problem: Problem): PortEntry[] {
  const entries: PortEntry[] = [];
  items.forEach((item, position) => {
    const at = `${field}/${position}`;
    if (typeof item === "number") {
      entries.push({ field: at, range: { first: item, last: item } });
      return;
    }
    const [first, last] = item.split("-").map(Number) as [number, number];
    const itemSubject = subject(rule, at);
    if (first < EVERY_PORT.first || last > EVERY_PORT.last || first > EVERY_PORT.last || last < EVERY_PORT.first) {
      problem(
        at,
        "value",
        "schema/range",
        `${itemSubject} must be a range of ports between 1 and 65535, got "${item}"`,
      );
    } else if (first > last) {
      problem(
        at,
        "value",
        "rule/backwards-range",
        `${itemSubject} "${item}" runs backwards: a range is "FIRST-LAST"`,
        `"${last}-${first}"`,
      );
    } else {
      entries.push({ field: at, range: { first, last } });
    }
  });
  return entries;
}

/** CIDRs in their network form; an unreadable one, or one with host bits set, is a problem. */
function readCidrs(items: readonly string[], field: string, rule: string, problem: Problem): CidrEntry[] {
  const entries: CidrEntry[] = [];
  items.forEach((item, position) => {
    const at = `${field}/${position}`;
    const itemSubject = subject(rule, at);
    const reading = readCidr(item);
    if (!reading.ok) {
      problem(
        at,
        "value",
        "rule/invalid-cidr",
        `${itemSubject} is not an address or CIDR ("10.0.0.0/8", "fd00::/8"): ${reading.reason}`,
      );
    } else if (reading.hostBits) {
      problem(
        at,
        "value",
        "rule/cidr-host-bits",
        `${itemSubject} "${item}" has host bits set: the network of a /${reading.cidr.prefixLength} is ${cidrText(reading.cidr)}`,
        `"${cidrText(reading.cidr)}"`,
      );
    } else {
      entries.push({ field: at, cidr: reading.cidr });
    }
  });
  return entries;
}

/** "interceptors[0].originalPorts[1]" for the field "originalPorts/1". */
function subject(rule: string, field: string): string {
  return `${rule}.${field.replace(/\/(\d+)$/, "[$1]")}`;
}

/**
 * Naming the rule's own port among originalPorts captures nothing: traffic
 * for it already goes there. Returns whether it was named.
 */
function checkOwnPort(
  interceptor: Interceptor,
  written: { items: PortEntry[] },
  rule: string,
  problem: Problem,
): boolean {
  const own = written.items.filter(({ range }) => range.first === interceptor.port && range.last === interceptor.port);
  for (const { field } of own) {
    if (field === "originalPort") {
      problem(
        "port",
        "key",
        "rule/same-port",
        `port ${interceptor.port} is the same as originalPort: the rule would do nothing`,
      );
    } else {
      problem(
        field,
        "value",
        "rule/captures-own-port",
        `${subject(rule, field)} is ${interceptor.port}, the rule's own port: its traffic is already there (remove it; a range or "*" leaves the rule's own port out by itself)`,
      );
    }
  }
  return own.length > 0;
}

/**
 * Every exceptPorts item must leave out something originalPorts selects,
 * and together with the rule's own port they must leave something: an item
 * wholly outside, or exceptions that take a whole item or everything, are
 * mistakes.
 */
function checkPortExceptions(
  interceptor: Interceptor,
  written: { field: string; items: PortEntry[] },
  excepts: PortEntry[],
  rule: string,
  problem: Problem,
): void {
  const included = normalSet(written.items.map((item) => toInterval(item.range)));
  for (const { field, range } of excepts) {
    if (!overlaps([toInterval(range)], included)) {
      problem(
        field,
        "value",
        "rule/except-outside",
        `${subject(rule, field)} (${portRangeText(range)}) is not among the ports ${written.field} selects: it leaves out nothing`,
      );
    }
  }
  if (excepts.length === 0) return;
  const exceptions = normalSet(excepts.map((item) => toInterval(item.range)));
  const left = normalSet([...exceptions, toInterval({ first: interceptor.port, last: interceptor.port })]);
  const withOwnPort = (set: IntervalSet) =>
    covers(exceptions, set) ? "" : ` (with the rule's own port ${interceptor.port})`;
  if (covers(left, included)) {
    problem(
      "exceptPorts",
      "key",
      "rule/except-swallows",
      `${rule}.exceptPorts leaves out every port ${written.field} selects${withOwnPort(included)}: the rule would match nothing`,
    );
    return;
  }
  for (const { field, range } of written.items) {
    const set = [toInterval(range)];
    if (covers(left, set))
      problem(
        field,
        "value",
        "rule/except-swallows",
        `${subject(rule, field)} (${portRangeText(range)}) is left out entirely by exceptPorts${withOwnPort(set)}: it selects nothing`,
      );
  }
}

/**
 * The families a rule matches: its family, narrowed by each address list
 * given (sources of IPv4 networks only make an IPv4 rule). An entry of a
 * family the rule cannot match, or lists that leave no family, are problems.
 */
function checkFamilies(
  interceptor: Interceptor,
  lists: Record<"sources" | "exceptSources" | "destinations", CidrEntry[]>,
  rule: string,
  problem: Problem,
): Family[] | undefined {
  const chosen = interceptor.family === undefined || interceptor.family === "any" ? undefined : interceptor.family;
  let families: Family[] = chosen ? [chosen] : [...FAMILIES];
  let narrowedBy = chosen ? `its family is ${chosen}` : "";
  for (const field of ["destinations", "sources"] as const) {
    if (lists[field].length === 0) continue;
    const listFamilies = familiesOf(lists[field].map((entry) => entry.cidr));
    const left = families.filter((family) => listFamilies.includes(family));
    if (left.length === 0) {
      problem(
        field,
        "key",
        "rule/family-conflict",
        `${rule}.${field} holds only ${listFamilies.map((f) => FAMILY_NAME[f]).join(" and ")} networks, but ${narrowedBy}: the rule could never match`,
      );
      return undefined;
    }
    if (left.length < families.length) narrowedBy = `its ${field} are ${FAMILY_NAME[left[0]!]}`;
    families = left;
  }
  for (const field of ["sources", "destinations", "exceptSources"] as const) {
    for (const { field: at, cidr } of lists[field]) {
      if (families.includes(cidr.family)) continue;
      const excepting = field === "exceptSources";
      problem(
        at,
        "value",
        excepting ? "rule/except-outside" : "rule/family-conflict",
        `${subject(rule, at)} (${cidrText(cidr)}) is ${FAMILY_NAME[cidr.family]}, but the rule matches ${FAMILY_NAME[families[0]!]} only (${narrowedBy}): it ${excepting ? "leaves out" : "selects"} nothing`,
      );
    }
  }
  return families;
}

/** exceptSources items must lie within sources (of the rule's families), and leave some of them. */
function checkSourceExceptions(
  sources: CidrEntry[],
  excepts: CidrEntry[],
  families: Family[],
  rule: string,
  problem: Problem,
): void {
  if (excepts.length === 0) return;
  const included = (family: Family) =>
    sources.length === 0
      ? everyAddress(family)
      : addressSet(
          sources.map((entry) => entry.cidr),
          family,
        );
  const left = (family: Family) =>
    addressSet(
      excepts.map((entry) => entry.cidr),
      family,
    );
  for (const { field, cidr } of excepts) {
    if (families.includes(cidr.family) && !overlaps(addressSet([cidr], cidr.family), included(cidr.family))) {
      problem(
        field,
        "value",
        "rule/except-outside",
        `${subject(rule, field)} (${cidrText(cidr)}) is not among the addresses sources selects: it leaves out nothing`,
      );
    }
  }
  if (families.every((family) => covers(left(family), included(family)))) {
    problem(
      "exceptSources",
      "key",
      "rule/except-swallows",
      `${rule}.exceptSources leaves out every ${sources.length === 0 ? "source address" : "address sources selects"}: the rule would match nothing`,
    );
    return;
  }
  for (const { field, cidr } of sources) {
    if (families.includes(cidr.family) && covers(left(cidr.family), addressSet([cidr], cidr.family))) {
      problem(
        field,
        "value",
        "rule/except-swallows",
        `${subject(rule, field)} (${cidrText(cidr)}) is left out entirely by exceptSources: it selects nothing`,
      );
    }
  }
}
