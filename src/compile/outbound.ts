/**
 * What the outbound templates receive (templates/bpf/outbound_policy.hbs):
 * numbers only. Ports, uids and marks become case labels; each destination
 * network becomes the 32-bit words its prefix covers, as host-order
 * constants with their masks. Cgroup paths never reach the C: the programs
 * know exempt cgroups by the ids apply writes into exempt_cgroups.
 */
import type { MappedCidr, OutboundPolicy, OutboundRule } from "../validate/index.js";

/** One destination network: the words (0–3) of the 16-byte address its prefix covers. */
interface Network {
  words: { word: number; network: number; mask: number }[];
}

/** One `case` of match_outbound: a port, and its rules in policy order (disjoint networks). */
interface OutboundCase {
  port: number;
  rules: { rule: number; proxyPort: number; networks: Network[] }[];
}

export interface OutboundContext {
  rules: { index: number; originalPort: number; port: number; cidrs: string[] }[];
  uids: number[];
  marks: number[];
  exemptCgroups: number;
  cases: OutboundCase[];
  /** Some rule is limited by cidrs: match_outbound compares addresses (lib/networks.h). */
  matchesNetworks: boolean;
}

export function outboundContext(outbound: OutboundPolicy): OutboundContext {
  return {
    rules: outbound.rules.map(({ index, originalPort, port, cidrs }) => ({
      index,
      originalPort,
      port,
      cidrs: cidrs.map((cidr) => cidr.text),
    })),
    uids: [...new Set(outbound.exempt.uids)].sort((a, b) => a - b),
    marks: [...new Set(outbound.exempt.marks)].sort((a, b) => a - b),
    exemptCgroups: outbound.exempt.cgroups.length,
    cases: outboundCases(outbound.rules),
    matchesNetworks: outbound.rules.some((rule) => rule.cidrs.length > 0),
  };
}

function outboundCases(rules: OutboundRule[]): OutboundCase[] {
  const cases = new Map<number, OutboundCase>();
  for (const rule of rules) {
    const entry = cases.get(rule.originalPort) ?? { port: rule.originalPort, rules: [] };
    entry.rules.push({ rule: rule.index, proxyPort: rule.port, networks: rule.cidrs.map(network) });
    cases.set(rule.originalPort, entry);
  }
  return [...cases.values()].sort((a, b) => a.port - b.port);
}

/** The words a network's prefix covers, each with its mask; a /0 covers none (matches all). */
function network(cidr: MappedCidr): Network {
  const words: Network["words"] = [];
  for (let word = 0; word < 4; word++) {
    const bits = Math.max(0, Math.min(32, cidr.prefix - word * 32));
    if (bits === 0) break;
    const mask = bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    const value = cidr.bytes.slice(word * 4, word * 4 + 4).reduce((sum, byte) => sum * 256 + byte, 0);
    words.push({ word, network: (value & mask) >>> 0, mask });
  }
  return { words };
}
