import { diagnosticAt, quoted, startOf, type Diagnostic, type DiagnosticCode } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import type { Rule, ValidPolicy } from "./model.js";

/**
 * Checks the schema cannot express, within one policy: every rule must be
 * reversible, so the egress rewrite knows which originalPort a reply
 * belongs to. @rules are the policy's rules that passed the schema; each
 * problem points at the later rule, with a note at the earlier one.
 */
export function checkRules(loaded: LoadedPolicy, rules: Rule[]): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const place = (rule: Rule, field: string) => loaded.sourceMap.locate(`/interceptors/${rule.index}/${field}`, "key");
  const at = (code: DiagnosticCode, rule: Rule, field: string, message: string, note?: { rule: Rule; field: string; message: string }) =>
    diagnostics.push(diagnosticAt(code, place(rule, field), message, note ? { notes: [{ ...place(note.rule, note.field), message: note.message }] } : {}));
  const byOriginal = new Map<string, Rule>();
  const byTarget = new Map<string, Rule>();
  for (const rule of rules) {
    if (rule.port === rule.originalPort) {
      at("rule/same-port", rule, "port", `port ${rule.port} is the same as originalPort: the rule would do nothing`);
    }
    const original = `${rule.protocol}/${rule.originalPort}`;
    const target = `${rule.protocol}/${rule.port}`;
    const earlier = byOriginal.get(original);
    if (earlier) {
      at("rule/duplicate-original-port", rule, "originalPort", `${rule.protocol} originalPort ${rule.originalPort} is already intercepted by interceptors[${earlier.index}]`,
        { rule: earlier, field: "originalPort", message: `first intercepted here, by interceptors[${earlier.index}]` });
    } else {
      byOriginal.set(original, rule);
    }
    const sharing = byTarget.get(target);
    if (sharing) {
      at("rule/duplicate-target-port", rule, "port", `${rule.protocol} port ${rule.port} is already the target of interceptors[${sharing.index}]: replies could not be told apart`,
        { rule: sharing, field: "port", message: `interceptors[${sharing.index}] sends to it here` });
    } else {
      byTarget.set(target, rule);
    }
  }
  for (const rule of rules) {
    const chained = byOriginal.get(`${rule.protocol}/${rule.port}`);
    if (chained && chained !== rule) {
      at("rule/chain", rule, "port", `${rule.protocol} port ${rule.port} is the originalPort of interceptors[${chained.index}]: rules may not chain`,
        { rule: chained, field: "originalPort", message: `interceptors[${chained.index}] intercepts it here` });
    }
  }
  return diagnostics;
}

export interface CheckedPolicy {
  loaded: LoadedPolicy;
  policy: ValidPolicy;
}

/** Checks across policies: names and interface selections must not collide. */
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
  if (selectingAll.length > 0 && checked.length > 1) {
    for (const policy of selectingAll) {
      diagnostics.push(diagnosticAt("policy/overlapping-interfaces", startOf(policy.file),
        `policy ${quoted(policy.name)} selects every interface, so it overlaps the other policies: give each policy an interfaces selector`));
    }
  }
  return diagnostics;
}

/** Where a policy's name is written, or the file's start when it comes from the file name. */
function nameLocation({ loaded }: CheckedPolicy) {
  const value = loaded.value as { name?: unknown };
  return value.name === undefined ? startOf(loaded.file) : loaded.sourceMap.locate("/name");
}
