import { diagnosticAt, quoted, startOf, type Diagnostic, type DiagnosticCode } from "../diagnostics.js";
import type { Interceptor } from "../api.js";
import type { LoadedPolicy } from "../load/index.js";
import type { Rule, ValidPolicy } from "./model.js";
import { findOverlaps } from "./overlap.js";
import { portRangeText, readSelector, selectedPorts, selectedPortSet, type SelectorProblem } from "./selectors.js";
import { overlaps } from "./intervals.js";
import { attachesToLinks } from "./outbound.js";
import { mayShareNamespace, sharedLink } from "./namespaces.js";

/** Appended to a rewrite-only restriction on a TCP rule: steer has no such restriction. */
const TRY_STEER = ` (a tcp rule may use strategy: "steer", which has no such restriction)`;

/** Steer is the default where it exists (TCP); UDP rewrites. */
const DEFAULT_STRATEGY = { tcp: "steer", udp: "rewrite" } as const;

/**
 * One rule, read: its normal form, or the problems that keep it from having
 * one, and the problems of the rule on its own (a strategy its protocol
 * lacks, a rewrite of many ports). Problems are at fields of the rule.
 */
export function readRule(
  interceptor: Interceptor,
  index: number,
): { rule: Rule | undefined; problems: SelectorProblem[] } {
  const { selector, problems } = readSelector(interceptor, index);
  const protocol = interceptor.protocol ?? "tcp";
  const strategy = interceptor.strategy ?? DEFAULT_STRATEGY[protocol];
  problems.push(...strategyProblems(protocol, strategy, interceptor.onProxyDown));
  if (!selector) return { rule: undefined, problems };
  const rule: Rule = {
    index,
    ...selector,
    port: interceptor.port,
    protocol,
    strategy,
    // Kept on a rewrite rule when written, so the strategy check can refuse it there.
    ...((strategy === "steer" || interceptor.onProxyDown !== undefined) && {
      onProxyDown: interceptor.onProxyDown ?? "drop",
    }),
    enabled: interceptor.enabled ?? true,
    ...(interceptor.description !== undefined && { description: interceptor.description }),
  };
  problems.push(...rewriteProblems(rule, interceptor.originalPorts !== undefined));
  return { rule, problems };
}

/** The normal form of an interceptor that validated (or, in tests, is known good); throws otherwise. */
export function toRule(interceptor: Interceptor, index: number): Rule {
  const { rule, problems } = readRule(interceptor, index);
  if (!rule)
    throw new Error(
      `interceptors[${index}] is not a valid rule: ${problems.map((problem) => problem.message).join("; ")}`,
    );
  return rule;
}

/** Steer is TCP only; onProxyDown has a meaning only where a proxy is looked up (steer). */
function strategyProblems(
  protocol: Rule["protocol"],
  strategy: Rule["strategy"],
  onProxyDown: Interceptor["onProxyDown"],
): SelectorProblem[] {
  const problems: SelectorProblem[] = [];
  if (strategy === "steer" && protocol !== "tcp") {
    problems.push({
      field: "strategy",
      part: "key",
      code: "rule/steer-not-tcp",
      message: `strategy "steer" is for tcp rules only: a ${protocol} rule rewrites (remove strategy, or set it to "rewrite")`,
    });
  }
  if (strategy === "rewrite" && onProxyDown !== undefined) {
    problems.push({
      field: "onProxyDown",
      part: "key",
      code: "rule/proxy-down-on-rewrite",
      message: `onProxyDown applies to steer rules only: a rewrite rule looks up no proxy that could be down${protocol === "tcp" ? ` (remove it, or set strategy: "steer")` : ""}`,
    });
  }
  return problems;
}

/**
 * A rewrite rule gives replies leaving from its port the port the client
 * asked for; with several ports selected it could not know which.
 */
function rewriteProblems(rule: Rule, writtenAsList: boolean): SelectorProblem[] {
  if (rule.strategy !== "rewrite") return [];
  const ports = selectedPorts(rule);
  const count = ports.reduce((sum, range) => sum + range.last - range.first + 1, 0);
  if (count <= 1) return [];
  const shown =
    ports.length > 3 ? `${ports.slice(0, 3).map(portRangeText).join(", ")}, …` : ports.map(portRangeText).join(", ");
  return [
    {
      field: writtenAsList ? "originalPorts" : "originalPort",
      part: "key",
      code: "rule/rewrite-many-ports",
      message: `a rewrite rule must select one port, and this one selects ${count} (${shown}): replies leaving from port ${rule.port} could not be given back the port each client asked for${rule.protocol === "tcp" ? TRY_STEER : " (write one udp rule per port)"}`,
    },
  ];
}

type At = (
  code: DiagnosticCode,
  rule: Rule,
  field: string,
  message: string,
  note?: { rule: Rule; field: string; message: string },
) => void;

/**
 * Checks between the rules of one policy. @rules are the policy's rules
 * that were read without problems; each problem points at the later rule,
 * with a note at the earlier one.
 *
 * A packet may match one rule only (findOverlaps: the message names a
 * packet both would match).
 *
 * Rewrite rules must be reversible, so the egress rewrite knows which
 * originalPort a reply belongs to: no two rewrite rules share a target
 * port, and a rewrite rule's port is none of another rule's ports (no
 * chains; with a steer rule there, the rewrite of replies leaving from
 * that port would also hit the steered connections, whose local port it
 * is).
 *
 * Steer rules rewrite nothing, so they may share a target (many-to-one:
 * 8000, 8001, 8443 → 9000). A steer rule's port may also be another
 * rule's originalPort: steering is not transitive. A SYN is looked at once,
 * by its own destination port, and keeps that port, so with 8000 → 9000
 * and 9000 → 9100 (both steer) a connection to 8000 reaches the listener
 * on 9000, and only connections made to 9000 itself reach 9100.
 */
export function checkRules(loaded: LoadedPolicy, rules: Rule[]): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const place = (rule: Rule, field: string) =>
    loaded.sourceMap.locate(
      `/interceptors/${rule.index}/${field === "ports" ? portsField(loaded, rule) : field}`,
      "key",
    );
  const at: At = (code, rule, field, message, note) =>
    diagnostics.push(
      diagnosticAt(
        code,
        place(rule, field),
        message,
        note ? { notes: [{ ...place(note.rule, note.field), message: note.message }] } : {},
      ),
    );
  for (const overlap of findOverlaps(rules)) {
    const { earlier, later } = overlap;
    if (overlap.samePort !== undefined) {
      at(
        "rule/duplicate-original-port",
        later,
        "ports",
        `${later.protocol} originalPort ${overlap.samePort} is already intercepted by interceptors[${earlier.index}]`,
        { rule: earlier, field: "ports", message: `first intercepted here, by interceptors[${earlier.index}]` },
      );
    } else {
      at(
        "rule/overlap",
        later,
        "ports",
        `interceptors[${later.index}] overlaps interceptors[${earlier.index}]: ${overlap.packet} would match both; a packet may match one rule only (leave it out of one of them: exceptPorts, exceptSources)`,
        { rule: earlier, field: "ports", message: `interceptors[${earlier.index}] matches it here` },
      );
    }
  }
  const rewriteByTarget = new Map<string, Rule>();
  for (const rule of rules.filter((r) => r.strategy === "rewrite")) {
    const target = `${rule.protocol}/${rule.port}`;
    const sharing = rewriteByTarget.get(target);
    if (sharing) {
      at(
        "rule/duplicate-target-port",
        rule,
        "port",
        `${rule.protocol} port ${rule.port} is already the target of rewrite rule interceptors[${sharing.index}]: their replies could not be told apart${rule.protocol === "tcp" ? TRY_STEER : ""}`,
        { rule: sharing, field: "port", message: `interceptors[${sharing.index}] sends to it here` },
      );
    } else {
      rewriteByTarget.set(target, rule);
    }
    const port = [{ first: BigInt(rule.port), last: BigInt(rule.port) }];
    const chained = rules.find(
      (other) => other !== rule && other.protocol === rule.protocol && overlaps(selectedPortSet(other), port),
    );
    if (chained) {
      const single = portsField(loaded, chained) === "originalPort";
      const whose = single
        ? `the originalPort of interceptors[${chained.index}]`
        : `one of the ports of interceptors[${chained.index}]`;
      at(
        "rule/chain",
        rule,
        "port",
        `${rule.protocol} port ${rule.port} is ${whose}: a rewrite rule may not chain${rule.protocol === "tcp" ? TRY_STEER : ""}`,
        { rule: chained, field: "ports", message: `interceptors[${chained.index}] intercepts it here` },
      );
    }
  }
  return diagnostics;
}

/** Where a rule's ports are written: originalPort, or originalPorts. */
function portsField(loaded: LoadedPolicy, rule: Rule): "originalPort" | "originalPorts" {
  const interceptors = (loaded.value as { interceptors?: Partial<Interceptor>[] }).interceptors;
  return interceptors?.[rule.index]?.originalPorts !== undefined ? "originalPorts" : "originalPort";
}

/**
 * The name the kernel gives every namespace's loopback device. A loopback
 * renamed by hand is still never attached to, and naming it is refused
 * when the plan sees the link's type.
 */
const LOOPBACK = "lo";

/**
 * Loopback is never intercepted, and naming it is an error rather than a
 * selection that attaches nothing: a proxy's own upstream connection to
 * 127.0.0.1:originalPort crosses loopback, so a steer or rewrite rule
 * there would send it back into the proxy (a loop). A pattern that merely
 * matches "lo" (`*`, `l*`) selects the other links it matches, as before.
 * @include are the entries that passed the schema, by index.
 */
export function checkInterfaces(loaded: LoadedPolicy, include: Map<number, string>): Diagnostic[] {
  return [...include]
    .filter(([, name]) => name === LOOPBACK)
    .map(([index]) =>
      diagnosticAt(
        "policy/loopback-interface",
        loaded.sourceMap.locate(`/interfaces/include/${index}`),
        `interface "${LOOPBACK}" is loopback, which intercept never attaches to: the proxy's own connection to 127.0.0.1:originalPort crosses it and would be sent back into the proxy (a loop); local clients are captured where they connect, by outbound rules`,
      ),
    );
}

export interface CheckedPolicy {
  loaded: LoadedPolicy;
  policy: ValidPolicy;
}

/**
 * Checks across policies: names must not collide, and the rules of two
 * policies that may select the same link (namespaces that may meet,
 * interface selections that may meet) are checked against each other as
 * the rules of one policy are (checkRules): their programs compose into one
 * on such a link. Policies on provably different links reuse ports freely.
 */
export function checkPolicies(checked: CheckedPolicy[]): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const byName = new Map<string, CheckedPolicy>();
  for (const entry of checked) {
    const { policy } = entry;
    const other = byName.get(policy.name);
    if (other) {
      diagnostics.push(
        diagnosticAt(
          "policy/duplicate-name",
          nameLocation(entry),
          `policy name ${quoted(policy.name)} is also used by ${other.policy.file}`,
          {
            notes: [{ ...nameLocation(other), message: "the other policy of that name" }],
          },
        ),
      );
    } else {
      byName.set(policy.name, entry);
    }
  }
  const onLinks = checked.filter((entry) => attachesToLinks(entry.policy) && entry.policy.rules.length > 0);
  const suspects = suspectPolicies(onLinks);
  onLinks.forEach((earlier, i) => {
    for (const later of onLinks.slice(i + 1)) {
      if (!suspects.has(earlier) && !suspects.has(later)) continue;
      if (!mayShareNamespace(earlier.policy, later.policy)) continue;
      const link = sharedLink(earlier.policy.interfaces, later.policy.interfaces);
      if (link !== undefined) diagnostics.push(...checkRulesAcross(earlier, later, link));
    }
  });
  return diagnostics;
}

/**
 * The policies whose rules may meet another policy's, found in one pass
 * over every rule rather than pair by pair (a repository of many files
 * mostly has none): a rule that overlaps an earlier one, wherever that
 * is (findOverlaps reports only the first, so its policy is checked
 * against every other), and every policy with a rewrite rule whose port
 * another policy's rule shares. Only pairs with one of them are checked
 * in full (checkRulesAcross).
 */
function suspectPolicies(onLinks: CheckedPolicy[]): Set<CheckedPolicy> {
  if (onLinks.length < 2) return new Set();
  const all = onLinks.flatMap((entry) => entry.policy.rules);
  const candidates = mayOverlap(all);
  const rewrites = all.filter((rule) => rule.strategy === "rewrite");
  // The common case, rules on ports of their own: no rule is copied, no owner looked up.
  if (candidates.length === 0 && rewrites.length === 0) return new Set();
  // Keyed by the rule object: no two policies share one (a policy a file, read on its own; a TS policy imports nothing
  // but definePolicy), so a rule's owner is unambiguous.
  const owners = new Map(onLinks.flatMap((entry) => entry.policy.rules.map((rule) => [rule, entry] as const)));
  // findOverlaps tells rules apart (and earlier from later) by index: numbered anew, in the order of `all`.
  const numbered = candidates.map((rule, index) => ({ ...rule, index }));
  const suspects = new Set(findOverlaps(numbered).map((overlap) => owners.get(candidates[overlap.later.index]!)!));
  for (const rule of rewrites) {
    const port = [{ first: BigInt(rule.port), last: BigInt(rule.port) }];
    const meeting = all.filter(
      (other) =>
        owners.get(other) !== owners.get(rule) &&
        other.protocol === rule.protocol &&
        ((other.strategy === "rewrite" && other.port === rule.port) || overlaps(selectedPortSet(other), port)),
    );
    if (meeting.length > 0) suspects.add(owners.get(rule)!);
  }
  return suspects;
}

/**
 * The rules among @rules that may overlap another: those whose ports as
 * written (from the first of originalPorts to the last, before exceptions)
 * meet another rule's. findOverlaps then works out their exact sets, which
 * costs far more than this sweep; a rule it leaves out overlaps nothing, and
 * every rule a kept one may overlap is kept, so what it finds is the same.
 */
function mayOverlap(rules: Rule[]): Rule[] {
  const spans = rules
    .map((rule) => ({ rule, first: rule.originalPorts[0]!.first, last: rule.originalPorts.at(-1)!.last }))
    .sort((a, b) => a.first - b.first);
  const meeting = new Set<Rule>();
  // Of the spans before, the one reaching furthest: a span starting before its end meets it.
  let furthest: (typeof spans)[number] | undefined;
  for (const span of spans) {
    if (furthest && furthest.last >= span.first) meeting.add(furthest.rule).add(span.rule);
    if (!furthest || span.last > furthest.last) furthest = span;
  }
  return rules.filter((rule) => meeting.has(rule));
}

/**
 * The rules of @later against those of @earlier, which may run in one
 * composed program on @link (a name, or a glob both select): each problem
 * at @later's rule, with a note at @earlier's, in its own file.
 */
function checkRulesAcross(earlier: CheckedPolicy, later: CheckedPolicy, link: string): Diagnostic[] {
  const offset = earlier.policy.rules.length;
  const shifted = later.policy.rules.map((rule) => ({ ...rule, index: rule.index + offset }));
  const owner = (rule: Rule) => (rule.index < offset ? earlier : later);
  const original = (rule: Rule) => (rule.index < offset ? rule : later.policy.rules[rule.index - offset]!);
  const name = (rule: Rule) => `${owner(rule).policy.name}: interceptors[${original(rule).index}]`;
  const place = (rule: Rule, field: string) => {
    const { loaded } = owner(rule);
    const own = original(rule);
    return loaded.sourceMap.locate(
      `/interceptors/${own.index}/${field === "ports" ? portsField(loaded, own) : field}`,
      "key",
    );
  };
  // The files are the diagnostic's location and its note's (esbuild's related location); messages stay short.
  const where = `both policies select ${link}, where their rules run in one program`;
  const fix = "narrow one rule (exceptPorts, exceptSources), or the policies' interfaces or namespaces";
  const diagnostics: Diagnostic[] = [];
  const at = (
    code: DiagnosticCode,
    rule: Rule,
    field: string,
    message: string,
    note: { rule: Rule; field: string; message: string },
  ) =>
    diagnostics.push(
      diagnosticAt(code, place(rule, field), message, {
        notes: [{ ...place(note.rule, note.field), message: note.message }],
      }),
    );
  for (const overlap of findOverlaps([...earlier.policy.rules, ...shifted])) {
    if (owner(overlap.earlier) === owner(overlap.later)) continue; // each policy's own checks report it
    at(
      overlap.samePort !== undefined ? "rule/duplicate-original-port" : "rule/overlap",
      overlap.later,
      "ports",
      `${name(overlap.later)} overlaps ${name(overlap.earlier)}: ${overlap.packet} would match both; ${where}: ${fix}`,
      { rule: overlap.earlier, field: "ports", message: `${name(overlap.earlier)} matches it here` },
    );
  }
  for (const rule of shifted.filter((r) => r.strategy === "rewrite")) {
    const sharing = earlier.policy.rules.find(
      (other) => other.strategy === "rewrite" && other.protocol === rule.protocol && other.port === rule.port,
    );
    if (sharing) {
      at(
        "rule/duplicate-target-port",
        rule,
        "port",
        `${rule.protocol} port ${rule.port} is already the target of rewrite rule ${name(sharing)}: their replies could not be told apart; ${where}: send one of them to another port`,
        { rule: sharing, field: "port", message: `${name(sharing)} sends to it here` },
      );
    }
  }
  // A chain either way: a rewrite rule of one policy whose port the other's rule intercepts.
  for (const [rewrites, others] of [
    [earlier.policy.rules, shifted],
    [shifted, earlier.policy.rules],
  ] as const) {
    for (const rule of rewrites.filter((r) => r.strategy === "rewrite")) {
      const port = [{ first: BigInt(rule.port), last: BigInt(rule.port) }];
      const chained = others.find(
        (other) => other.protocol === rule.protocol && overlaps(selectedPortSet(other), port),
      );
      if (chained) {
        at(
          "rule/chain",
          rule,
          "port",
          `${rule.protocol} port ${rule.port} is one of the ports of ${name(chained)}: a rewrite rule may not chain; ${where}: send it to another port`,
          { rule: chained, field: "ports", message: `${name(chained)} intercepts it here` },
        );
      }
    }
  }
  return diagnostics;
}

/** Where a policy's name is written, or the file's start when it comes from the file name. */
function nameLocation({ loaded }: CheckedPolicy) {
  const value = loaded.value as { name?: unknown };
  return value.name === undefined ? startOf(loaded.file) : loaded.sourceMap.locate("/name");
}
