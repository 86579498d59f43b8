import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Handlebars from "handlebars";
import type { Rule, ValidPolicy } from "../validate/index.js";

export const TEMPLATE_DIR = fileURLToPath(new URL("../../../templates/bpf/", import.meta.url));

/**
 * Policies up to this many rules match with a switch (constant compares);
 * larger ones with constant lookup tables. Measured side by side (`npm run
 * bench:datapath`, crossover table): per packet the two are within noise at
 * every size from 4 to 512 rules, but the switch grows ~8 instructions a
 * rule, so from 64 rules on it takes 1.2–1.6× (64) to 5–7× (512) as long
 * to compile and load, while tables stay at 259 instructions. At 32 and below
 * the switch costs no more and keeps small policies free of memory loads.
 * (Past a few thousand rules a switch would not load at all: its jumps
 * outgrow BPF's 16-bit offsets.)
 */
export const SWITCH_LIMIT = 32;

/** How a program matches ports: compare-and-branch on case labels, or constant lookup tables. */
export type MatchStrategy = "switch" | "table";

export function matchStrategy(ruleCount: number): MatchStrategy {
  return ruleCount > SWITCH_LIMIT ? "table" : "switch";
}

/** One `case` of a match switch: a port, and the rules that own it per protocol/family. */
interface MatchCase {
  port: number;
  rules: { rule: number; newPort: number; condition: string }[];
}

const handlebars = Handlebars.create();
handlebars.registerHelper("include", (file: string) => readFileSync(path.join(TEMPLATE_DIR, file), "utf8"));
for (const partial of ["match_cases", "match_switch", "match_table"]) {
  handlebars.registerPartial(partial, readFileSync(path.join(TEMPLATE_DIR, `${partial}.hbs`), "utf8"));
}
const renderPolicy = handlebars.compile(readFileSync(path.join(TEMPLATE_DIR, "policy.bpf.c.hbs"), "utf8"), {
  noEscape: true,
  strict: true,
});

/**
 * Renders the C source of one policy. Only what changes the program is in
 * it (ports, protocols, families, rule order): `enabled` lives in a map and
 * descriptions in the policy, so flipping or documenting a rule keeps the
 * same program. @strategy is chosen by size; benchmarks force one to compare.
 */
export function renderPolicySource(policy: ValidPolicy, strategy = matchStrategy(policy.rules.length)): string {
  const table = strategy === "table";
  return renderPolicy({
    name: policy.name,
    slots: Math.max(1, policy.rules.length),
    switchLimit: SWITCH_LIMIT,
    table,
    rules: policy.rules.map((rule) => ({ ...rule, familyConstant: FAMILY_CONSTANT[rule.family] })),
    ...(table
      ? { ingressTable: tableEntries(policy.rules, (rule) => rule.originalPort), egressTable: tableEntries(policy.rules, (rule) => rule.port) }
      : { ingress: matchCases(policy.rules, (rule) => [rule.originalPort, rule.port]), egress: matchCases(policy.rules, (rule) => [rule.port, rule.originalPort]) }),
  });
}

/** Groups rules by the port a direction matches on, sorted so output is deterministic. */
function matchCases(rules: Rule[], ports: (rule: Rule) => [match: number, rewriteTo: number]): MatchCase[] {
  const cases = new Map<number, MatchCase>();
  for (const rule of rules) {
    const [match, newPort] = ports(rule);
    const entry = cases.get(match) ?? { port: match, rules: [] };
    entry.rules.push({ rule: rule.index, newPort, condition: matchCondition(rule) });
    cases.set(match, entry);
  }
  return [...cases.values()].sort((a, b) => a.port - b.port);
}

const FAMILY_CONSTANT = { any: "FAMILY_ANY", ipv4: "FAMILY_IPV4", ipv6: "FAMILY_IPV6" } as const;

/** Table initialisers `[slot][port] = rule + 1`, sorted so output is deterministic. */
function tableEntries(rules: Rule[], portOf: (rule: Rule) => number) {
  return rules
    .map((rule) => ({ slot: rule.protocol === "udp" ? 1 : 0, port: portOf(rule), value: rule.index + 1 }))
    .sort((a, b) => a.slot - b.slot || a.port - b.port);
}

function matchCondition(rule: Rule): string {
  const protocol = `pkt->protocol == ${rule.protocol === "tcp" ? "IPPROTO_TCP" : "IPPROTO_UDP"}`;
  if (rule.family === "any") return protocol;
  return `${protocol} && pkt->family == ${rule.family === "ipv4" ? "FAMILY_IPV4" : "FAMILY_IPV6"}`;
}
