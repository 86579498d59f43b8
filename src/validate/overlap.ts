/**
 * Overlapping rules: two rules of one protocol that can match the same
 * packet, which the datapath could not tell apart. Found exactly, on the
 * sets the selectors match (ports, then per family sources and
 * destinations), and described by the first packet both would match.
 */
import { addressText, type Family } from "./addresses.js";
import { intersect, type IntervalSet } from "./intervals.js";
import type { Rule } from "./model.js";
import { ruleFamilies, selectedDestinations, selectedPortSet, selectedSources } from "./selectors.js";

export interface Overlap {
  earlier: Rule;
  later: Rule;
  /** "a tcp packet from 10.0.0.0 to port 8080". */
  packet: string;
  /** Set when both rules select just this one port and no addresses: the classic duplicate originalPort. */
  samePort: number | undefined;
}

const FAMILY_NAME: Record<Family, string> = { ipv4: "IPv4", ipv6: "IPv6" };

/**
 * For each rule that overlaps an earlier one, the overlap with the first
 * such rule. Rules are paired by a sweep over the span of their ports, so
 * thousands of single-port rules cost no pairwise comparison.
 */
export function findOverlaps(rules: readonly Rule[]): Overlap[] {
  const found = new Map<Rule, Overlap>();
  for (const protocol of ["tcp", "udp"] as const) {
    const spans = rules
      .filter((rule) => rule.protocol === protocol)
      .map((rule) => ({ rule, ports: selectedPortSet(rule) }))
      .filter((entry) => entry.ports.length > 0)
      .sort((a, b) => Number(a.ports[0]!.first - b.ports[0]!.first) || a.rule.index - b.rule.index);
    let open: typeof spans = [];
    for (const entry of spans) {
      const first = entry.ports[0]!.first;
      open = open.filter((other) => other.ports[other.ports.length - 1]!.last >= first);
      for (const other of open) {
        const [earlier, later] = other.rule.index < entry.rule.index ? [other, entry] : [entry, other];
        const known = found.get(later.rule);
        if (known && known.earlier.index < earlier.rule.index) continue;
        const overlap = describeOverlap(earlier.rule, earlier.ports, later.rule, later.ports);
        if (overlap) found.set(later.rule, overlap);
      }
      open.push(entry);
    }
  }
  return [...found.values()].sort((a, b) => a.later.index - b.later.index);
}

function describeOverlap(
  earlier: Rule,
  earlierPorts: IntervalSet,
  later: Rule,
  laterPorts: IntervalSet,
): Overlap | undefined {
  const ports = intersect(earlierPorts, laterPorts);
  if (ports.length === 0) return undefined;
  const port = Number(ports[0]!.first);
  const families = ruleFamilies(earlier).filter((family) => ruleFamilies(later).includes(family));
  for (const family of families) {
    const sources = intersect(selectedSources(earlier, family), selectedSources(later, family));
    const destinations = intersect(selectedDestinations(earlier, family), selectedDestinations(later, family));
    if (sources.length === 0 || destinations.length === 0) continue;
    const bySource = [earlier, later].some((rule) => rule.sources.length + rule.exceptSources.length > 0);
    const byDestination = [earlier, later].some((rule) => rule.destinations.length > 0);
    const byFamily = [earlier, later].some((rule) => rule.family !== "any");
    const parts = [
      !bySource && !byDestination && byFamily
        ? `an ${FAMILY_NAME[family]} ${later.protocol} packet`
        : `a ${later.protocol} packet`,
    ];
    if (bySource) parts.push(`from ${addressText(family, sources[0]!.first)}`);
    parts.push(byDestination ? `to ${addressText(family, destinations[0]!.first)} port ${port}` : `to port ${port}`);
    const single = (set: IntervalSet) => set.length === 1 && set[0]!.first === set[0]!.last;
    const samePort = single(earlierPorts) && single(laterPorts) && !bySource && !byDestination ? port : undefined;
    return { earlier, later, packet: parts.join(" "), samePort };
  }
  return undefined;
}
