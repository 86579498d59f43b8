import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Handlebars, { type HelperOptions } from "handlebars";
import type { Rule, ValidPolicy } from "../validate/index.js";
import { attachesToLinks } from "../validate/outbound.js";
import { outboundContext } from "./outbound.js";
import { assertRenderable } from "./renderable.js";

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

/*
 * What the templates receive: numbers and the policy's own enum values,
 * never C text. The templates spell the C; the helpers below only pick the
 * name of a constant for an enum value.
 */

/** One `case` of a match switch: a port, and the rules that own it per protocol/family. */
interface MatchCase {
  port: number;
  rules: {
    rule: number;
    protocol: Rule["protocol"];
    family: Rule["family"];
    strategy: Rule["strategy"];
    onProxyDown: Rule["onProxyDown"] | null;
    newPort: number;
  }[];
}

/** One initialiser of a lookup table: [protocol][port] = rule + 1. */
interface TableEntry {
  protocol: Rule["protocol"];
  port: number;
  value: number;
}

const PROTOCOL_CONSTANT: Record<Rule["protocol"], string> = { tcp: "IPPROTO_TCP", udp: "IPPROTO_UDP" };
const FAMILY_CONSTANT: Record<Rule["family"], string> = { any: "FAMILY_ANY", ipv4: "FAMILY_IPV4", ipv6: "FAMILY_IPV6" };
/** What match_ingress returns for a rule of each strategy. */
const MATCH_CONSTANT: Record<Rule["strategy"], string> = { rewrite: "MATCH_REWRITE", steer: "MATCH_STEER" };
const PROXY_DOWN_CONSTANT: Record<NonNullable<Rule["onProxyDown"]>, string> = { drop: "PROXY_DOWN_DROP", pass: "PROXY_DOWN_PASS" };

/** The C constant for @value of one of the policy's enums; anything else is a bug upstream. */
function constantFor<T extends string>(table: Record<T, string>, kind: string) {
  return (value: T): string => {
    if (!Object.hasOwn(table, value)) throw new Error(`no C constant for ${kind} ${JSON.stringify(value)}`);
    return table[value];
  };
}

const handlebars = Handlebars.create();
handlebars.registerHelper("protocolConstant", constantFor(PROTOCOL_CONSTANT, "protocol"));
handlebars.registerHelper("familyConstant", constantFor(FAMILY_CONSTANT, "family"));
handlebars.registerHelper("matchConstant", constantFor(MATCH_CONSTANT, "strategy"));
handlebars.registerHelper("proxyDownConstant", constantFor(PROXY_DOWN_CONSTANT, "onProxyDown"));
handlebars.registerHelper("eq", (a: unknown, b: unknown) => a === b);
handlebars.registerHelper("hex32", (value: unknown) => {
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 0xffffffff) throw new Error(`not a 32-bit constant: ${JSON.stringify(value)}`);
  return `0x${(value as number).toString(16).padStart(8, "0")}`;
});
handlebars.registerHelper("include", (file: string, options: HelperOptions) => inlineHeader(file, options.data.inlined));
for (const partial of ["match_cases", "match_switch", "match_table", "outbound_policy"]) {
  handlebars.registerPartial(partial, readFileSync(path.join(TEMPLATE_DIR, `${partial}.hbs`), "utf8"));
}
const compileTemplate = (file: string) => handlebars.compile(readFileSync(path.join(TEMPLATE_DIR, file), "utf8"), { noEscape: true, strict: true });
const renderPolicy = compileTemplate("policy.bpf.c.hbs");
/** A policy with an outbound section and no interceptors: its cgroup programs alone, no tc program. */
const renderOutboundOnly = compileTemplate("outbound.bpf.c.hbs");

/** `#include "x.h"` of a sibling lib header: resolved by inlineHeader, never left to clang. */
const LOCAL_INCLUDE = /^#include "([^"]+)"$/gm;
const headers = new Map<string, string>();

/**
 * A lib header's text for the generated file, with its local includes
 * inlined where they first appear and marked as such after that (their
 * guards would make a repeat harmless, but not short). System includes
 * (<linux/…>, <bpf/…>) stay as they are. @inlined is per render.
 */
function inlineHeader(file: string, inlined: Set<string>): string {
  if (inlined.has(file)) return `/* ${file}: inlined above */`;
  inlined.add(file);
  let text = headers.get(file);
  if (text === undefined) {
    text = readFileSync(path.join(TEMPLATE_DIR, file), "utf8");
    headers.set(file, text);
  }
  const body = text.replace(LOCAL_INCLUDE, (_, name: string) => inlineHeader(path.posix.join(path.posix.dirname(file), name), inlined));
  return `/* ---- ${file} ---- */\n${body.trimEnd()}`;
}

/**
 * Renders the C source of one policy. Only what changes the program is in
 * it (ports, protocols, families, rule order): `enabled` lives in a map and
 * descriptions in the policy, so flipping or documenting a rule keeps the
 * same program. @strategy is chosen by size; benchmarks force one to compare.
 * Refuses (InterceptError "render-refused") any value the C must not carry.
 */
export function renderPolicySource(policy: ValidPolicy, strategy?: MatchStrategy): string {
  assertRenderable(policy);
  const table = (strategy ?? matchStrategy(policy.rules.length)) === "table";
  const rewriting = policy.rules.filter((rule) => rule.strategy === "rewrite");
  const outbound = policy.outbound ? outboundContext(policy.outbound) : false;
  const context = {
    name: policy.name,
    // rule_state and rule_counters hold the interceptors, then the outbound rules.
    slots: Math.max(1, policy.rules.length + (policy.outbound?.rules.length ?? 0)),
    outbound,
    switchLimit: SWITCH_LIMIT,
    table,
    rewrites: rewriting.length > 0,
    steers: policy.rules.some((rule) => rule.strategy === "steer"),
    rules: policy.rules.map(({ index, protocol, family, strategy, onProxyDown, originalPort, port }) =>
      ({ index, protocol, family, strategy, onProxyDown: onProxyDown ?? null, originalPort, port })),
    // Ingress matches every rule by originalPort; egress only rewrite rules, by port (their replies).
    ...(table
      ? { ingressTable: tableEntries(policy.rules, (rule) => rule.originalPort), egressTable: tableEntries(rewriting, (rule) => rule.port) }
      : { ingress: matchCases(policy.rules, (rule) => [rule.originalPort, rule.port]), egress: matchCases(rewriting, (rule) => [rule.port, rule.originalPort]) }),
  };
  const render = attachesToLinks(policy) ? renderPolicy : renderOutboundOnly;
  return render(context, { data: { inlined: new Set<string>() } });
}

/** Groups rules by the port a direction matches on, sorted so output is deterministic. */
function matchCases(rules: Rule[], ports: (rule: Rule) => [match: number, target: number]): MatchCase[] {
  const cases = new Map<number, MatchCase>();
  for (const rule of rules) {
    const [match, newPort] = ports(rule);
    const entry = cases.get(match) ?? { port: match, rules: [] };
    entry.rules.push({ rule: rule.index, protocol: rule.protocol, family: rule.family, strategy: rule.strategy, onProxyDown: rule.onProxyDown ?? null, newPort });
    cases.set(match, entry);
  }
  return [...cases.values()].sort((a, b) => a.port - b.port);
}

/** Table initialisers, TCP before UDP and by port, so output is deterministic. */
function tableEntries(rules: Rule[], portOf: (rule: Rule) => number): TableEntry[] {
  return rules
    .map((rule) => ({ protocol: rule.protocol, port: portOf(rule), value: rule.index + 1 }))
    .sort((a, b) => a.protocol.localeCompare(b.protocol) || a.port - b.port);
}
