import { diagnosticAt, quoted, startOf, type Diagnostic, type DiagnosticCode } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import type { Rule, ValidPolicy } from "./model.js";
import { mayShareNamespace } from "./namespaces.js";

/** Appended to a rewrite-only restriction on a TCP rule: steer has no such restriction. */
const TRY_STEER = ` (a tcp rule may use strategy: "steer", which has no such restriction)`;

type At = (code: DiagnosticCode, rule: Rule, field: string, message: string, note?: { rule: Rule; field: string; message: string }) => void;

/**
 * Checks the schema cannot express, within one policy. @rules are the
 * policy's rules that passed the schema; each problem points at the later
 * rule, with a note at the earlier one.
 *
 * Strategies: steer is TCP only, and onProxyDown belongs to steer rules.
 *
 * Rewrite rules must be reversible, so the egress rewrite knows which
 * originalPort a reply belongs to: no two rewrite rules share a target
 * port, and a rewrite rule's port is no other rule's originalPort (no
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
  const place = (rule: Rule, field: string) => loaded.sourceMap.locate(`/interceptors/${rule.index}/${field}`, "key");
  const at: At = (code, rule, field, message, note) =>
    diagnostics.push(diagnosticAt(code, place(rule, field), message, note ? { notes: [{ ...place(note.rule, note.field), message: note.message }] } : {}));
  const byOriginal = new Map<string, Rule>();
  const rewriteByTarget = new Map<string, Rule>();
  for (const rule of rules) {
    checkStrategy(rule, at);
    if (rule.port === rule.originalPort) {
      at("rule/same-port", rule, "port", `port ${rule.port} is the same as originalPort: the rule would do nothing`);
    }
    const original = `${rule.protocol}/${rule.originalPort}`;
    const earlier = byOriginal.get(original);
    if (earlier) {
      at("rule/duplicate-original-port", rule, "originalPort", `${rule.protocol} originalPort ${rule.originalPort} is already intercepted by interceptors[${earlier.index}]`,
        { rule: earlier, field: "originalPort", message: `first intercepted here, by interceptors[${earlier.index}]` });
    } else {
      byOriginal.set(original, rule);
    }
    if (rule.strategy !== "rewrite") continue;
    const target = `${rule.protocol}/${rule.port}`;
    const sharing = rewriteByTarget.get(target);
    if (sharing) {
      at("rule/duplicate-target-port", rule, "port", `${rule.protocol} port ${rule.port} is already the target of rewrite rule interceptors[${sharing.index}]: their replies could not be told apart${rule.protocol === "tcp" ? TRY_STEER : ""}`,
        { rule: sharing, field: "port", message: `interceptors[${sharing.index}] sends to it here` });
    } else {
      rewriteByTarget.set(target, rule);
    }
  }
  for (const rule of rules) {
    if (rule.strategy !== "rewrite") continue;
    const chained = byOriginal.get(`${rule.protocol}/${rule.port}`);
    if (chained && chained !== rule) {
      at("rule/chain", rule, "port", `${rule.protocol} port ${rule.port} is the originalPort of interceptors[${chained.index}]: a rewrite rule may not chain${rule.protocol === "tcp" ? TRY_STEER : ""}`,
        { rule: chained, field: "originalPort", message: `interceptors[${chained.index}] intercepts it here` });
    }
  }
  return diagnostics;
}

/** Steer is TCP only; onProxyDown has a meaning only where a proxy is looked up (steer). */
function checkStrategy(rule: Rule, at: At): void {
  if (rule.strategy === "steer" && rule.protocol !== "tcp") {
    at("rule/steer-not-tcp", rule, "strategy", `strategy "steer" is for tcp rules only: a ${rule.protocol} rule rewrites (remove strategy, or set it to "rewrite")`);
  }
  if (rule.strategy === "rewrite" && rule.onProxyDown !== undefined) {
    at("rule/proxy-down-on-rewrite", rule, "onProxyDown", `onProxyDown applies to steer rules only: a rewrite rule looks up no proxy that could be down${rule.protocol === "tcp" ? ` (remove it, or set strategy: "steer")` : ""}`);
  }
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
  return [...include].filter(([, name]) => name === LOOPBACK).map(([index]) =>
    diagnosticAt("policy/loopback-interface", loaded.sourceMap.locate(`/interfaces/include/${index}`),
      `interface "${LOOPBACK}" is loopback, which intercept never attaches to: the proxy's own connection to 127.0.0.1:originalPort crosses it and would be sent back into the proxy (a loop); local clients are captured where they connect, by outbound rules`));
}

export interface CheckedPolicy {
  loaded: LoadedPolicy;
  policy: ValidPolicy;
}

/** Checks across policies: names and interface selections (of policies that may share a namespace) must not collide. */
export function checkPolicies(checked: CheckedPolicy[]): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const byName = new Map<string, CheckedPolicy>();
  const selectingAll: ValidPolicy[] = [];
  for (const entry of checked) {
    const { policy } = entry;
    const other = byName.get(policy.name);
    if (other) {
      diagnostics.push(diagnosticAt("policy/duplicate-name", nameLocation(entry), `policy name ${quoted(policy.name)} is also used by ${other.policy.file}`, {
        notes: [{ ...nameLocation(other), message: "the other policy of that name" }],
      }));
    } else {
      byName.set(policy.name, entry);
    }
    if (policy.interfaces.include === null && policy.interfaces.exclude.length === 0) selectingAll.push(policy);
  }
  for (const policy of selectingAll) {
    // Policies for namespaces no name can match both never meet on one interface.
    if (checked.some((other) => other.policy !== policy && mayShareNamespace(policy, other.policy))) {
      diagnostics.push(diagnosticAt("policy/overlapping-interfaces", startOf(policy.file),
        `policy ${quoted(policy.name)} selects every interface, so it overlaps the other policies: give each policy an interfaces selector (or namespaces no name matches both)`));
    }
  }
  return diagnostics;
}

/** Where a policy's name is written, or the file's start when it comes from the file name. */
function nameLocation({ loaded }: CheckedPolicy) {
  const value = loaded.value as { name?: unknown };
  return value.name === undefined ? startOf(loaded.file) : loaded.sourceMap.locate("/name");
}
