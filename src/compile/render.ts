import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Handlebars, { type HelperOptions } from "handlebars";
import { cidrText, type Rule, type ValidPolicy } from "../validate/index.js";
import type { Family } from "../validate/addresses.js";
import { selectedPorts } from "../validate/selectors.js";
import { attachesToLinks } from "../validate/outbound.js";
import { outboundContext } from "./outbound.js";
import {
  chooseMatchLayout,
  PREFIX_CONSTANT_LIMIT,
  ruleEnums,
  selectsAddresses,
  SWITCH_LIMIT,
  type Direction,
  type MatchStrategy,
  type PrefixEntry,
} from "./match.js";
import { assertRenderable } from "./renderable.js";
import { slotCount } from "../model/rule-slots.js";
import { namespaceCapacity } from "../model/counters.js";

export const TEMPLATE_DIR = fileURLToPath(new URL("../../../templates/bpf/", import.meta.url));

export { matchStrategy, SWITCH_LIMIT, PREFIX_CONSTANT_LIMIT, type MatchStrategy } from "./match.js";

/*
 * What the templates receive: numbers, the policy's own enum values, and
 * CIDRs as text for comments, never C text. The templates spell the C;
 * the helpers below only pick the name of a constant or function for an
 * enum value, and print a number in hex.
 */

const PROTOCOL_CONSTANT: Record<Rule["protocol"], string> = { tcp: "IPPROTO_TCP", udp: "IPPROTO_UDP" };
const FAMILY_CONSTANT: Record<Rule["family"], string> = { any: "FAMILY_ANY", ipv4: "FAMILY_IPV4", ipv6: "FAMILY_IPV6" };
/** What match_ingress returns for a rule of each strategy. */
const MATCH_CONSTANT: Record<Rule["strategy"], string> = { rewrite: "MATCH_REWRITE", steer: "MATCH_STEER" };
const PROXY_DOWN_CONSTANT: Record<NonNullable<Rule["onProxyDown"]>, string> = {
  drop: "PROXY_DOWN_DROP",
  pass: "PROXY_DOWN_PASS",
};
const DIRECTION_CONSTANT: Record<Direction, string> = { request: "PACKET_REQUEST", reply: "PACKET_REPLY" };
/** The masked compare of one prefix, and the lookup of a prefix list, per family (lib/address.h, lib/prefixes.h). */
const PREFIX_HELPER: Record<Family, string> = { ipv4: "ipv4_in_prefix", ipv6: "ipv6_in_prefix" };
const PREFIX_LIST_HELPER: Record<Family, string> = { ipv4: "ipv4_in_prefix_list", ipv6: "ipv6_in_prefix_list" };

/** The C constant for @value of one of the policy's enums; anything else is a bug upstream. */
function constantFor<T extends string>(table: Record<T, string>, kind: string) {
  return (value: T): string => {
    if (!Object.hasOwn(table, value)) throw new Error(`no C constant for ${kind} ${JSON.stringify(value)}`);
    return table[value];
  };
}

/** A 32-bit word as a C hex literal; anything else is a bug upstream. */
function hex32(value: unknown): string {
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 0xffffffff)
    throw new Error(`not a 32-bit word: ${String(value)}`);
  return `0x${(value as number).toString(16).padStart(8, "0")}`;
}

const handlebars = Handlebars.create();
handlebars.registerHelper("protocolConstant", constantFor(PROTOCOL_CONSTANT, "protocol"));
handlebars.registerHelper("familyConstant", constantFor(FAMILY_CONSTANT, "family"));
handlebars.registerHelper("matchConstant", constantFor(MATCH_CONSTANT, "strategy"));
handlebars.registerHelper("proxyDownConstant", constantFor(PROXY_DOWN_CONSTANT, "onProxyDown"));
handlebars.registerHelper("directionConstant", constantFor(DIRECTION_CONSTANT, "direction"));
handlebars.registerHelper("prefixHelper", constantFor(PREFIX_HELPER, "family"));
handlebars.registerHelper("prefixListHelper", constantFor(PREFIX_LIST_HELPER, "family"));
handlebars.registerHelper("hex32", hex32);
handlebars.registerHelper("eq", (a: unknown, b: unknown) => a === b);
handlebars.registerHelper("include", (file: string, options: HelperOptions) =>
  inlineHeader(file, options.data.inlined),
);
for (const partial of [
  "match_cases",
  "match_candidates",
  "match_switch",
  "match_table",
  "rule_selects",
  "outbound_policy",
]) {
  handlebars.registerPartial(partial, readFileSync(path.join(TEMPLATE_DIR, `${partial}.hbs`), "utf8"));
}
const compileTemplate = (file: string) =>
  handlebars.compile(readFileSync(path.join(TEMPLATE_DIR, file), "utf8"), { noEscape: true, strict: true });
const policyTemplate = compileTemplate("policy.bpf.c.hbs");
/** A policy with an outbound section and no interceptors: its cgroup programs alone, no tc program. */
const outboundOnlyTemplate = compileTemplate("outbound.bpf.c.hbs");

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
  const body = text.replace(LOCAL_INCLUDE, (_, name: string) =>
    inlineHeader(path.posix.join(path.posix.dirname(file), name), inlined),
  );
  return `/* ---- ${file} ---- */\n${body.trimEnd()}`;
}

/** Address list entries shown in a rule's comment before the rest is counted. */
const COMMENT_CIDRS = 6;

/**
 * Renders the C source of one policy, and what its prefix tries hold. Only
 * what changes the program is in it (selectors, protocols, families, rule
 * order, and a digest of the tries' contents): `enabled` lives in a map and
 * descriptions in the policy, so flipping or documenting a rule keeps the
 * same program. @strategy and @prefixLimit are chosen by size; benchmarks
 * force them to compare. Refuses (InterceptError "render-refused") any value the C must
 * not carry.
 */
export function renderPolicy(
  policy: ValidPolicy,
  strategy?: MatchStrategy,
  prefixLimit = PREFIX_CONSTANT_LIMIT,
): { source: string; prefixes: PrefixEntry[] } {
  assertRenderable(policy);
  const layout = chooseMatchLayout(policy.rules, strategy, prefixLimit);
  const addresses = policy.rules.some(selectsAddresses);
  const count = (family: Family) => layout.prefixes.filter((entry) => entry.family === family).length;
  const constants = (family: Family) =>
    (layout.switch?.addressChecks ?? []).some((check) =>
      check.families.some(
        (selection) => selection.family === family && selection.clauses.some((clause) => clause.kind !== "list"),
      ),
    );
  const context = {
    name: policy.name,
    // rule_state and rule_counters hold the interceptors, then the outbound rules.
    slots: Math.max(1, slotCount(policy)),
    counterNamespaces: namespaceCapacity(Math.max(1, slotCount(policy))),
    outbound: policy.outbound ? outboundContext(policy.outbound) : false,
    switchLimit: SWITCH_LIMIT,
    prefixLimit,
    portSegments: layout.portSegments,
    table: layout.strategy === "table",
    rewrites: policy.rules.some((rule) => rule.strategy === "rewrite"),
    steers: policy.rules.some((rule) => rule.strategy === "steer"),
    addresses,
    tries: layout.prefixes.length > 0,
    prefixEntries: layout.prefixes.length,
    constantsV4: constants("ipv4"),
    constantsV6: constants("ipv6"),
    prefixesV4: count("ipv4"),
    prefixesV6: count("ipv6"),
    prefixesDigest: layout.prefixesDigest.slice(0, 16),
    rules: policy.rules.map(ruleContext),
    ...(layout.switch && {
      ingress: layout.switch.ingress,
      egress: layout.switch.egress,
      addressChecks: layout.switch.addressChecks,
    }),
    ...(layout.table && {
      ingressTable: layout.table.ingress,
      egressTable: layout.table.egress,
      groups: layout.table.groups,
      groupCount: Math.max(1, layout.table.groups.length),
      candidatesPerGroup: layout.table.candidatesPerGroup,
      prefixLists: layout.table.prefixLists ?? [],
    }),
  };
  const template = attachesToLinks(policy) ? policyTemplate : outboundOnlyTemplate;
  return { source: template(context, { data: { inlined: new Set<string>() } }), prefixes: layout.prefixes };
}

/** A rule as its comment and the tables show it. */
function ruleContext(rule: Rule) {
  const ports = selectedPorts(rule);
  const lines = [
    ["destinations", rule.destinations],
    ["sources", rule.sources],
    ["except sources", rule.exceptSources],
  ] as const;
  return {
    index: rule.index,
    ...ruleEnums(rule),
    port: rule.port,
    ports,
    replyPort: ports[0]?.first ?? 0,
    addressLines: lines
      .filter(([, cidrs]) => cidrs.length > 0)
      .map(([label, cidrs]) => ({
        label: `${label}:`,
        cidrs: cidrs.slice(0, COMMENT_CIDRS).map(cidrText),
        more: Math.max(0, cidrs.length - COMMENT_CIDRS),
      })),
  };
}
