import type { Diagnostic } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import type { Rule, ValidPolicy } from "./model.js";

/**
 * Checks the schema cannot express, within one policy: every rule must be
 * reversible, so the egress rewrite knows which originalPort a reply
 * belongs to.
 */
export function checkRules(loaded: LoadedPolicy, rules: Rule[]): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const at = (rule: Rule, field: string, message: string) =>
    diagnostics.push({ file: loaded.file, ...loaded.sourceMap.locate(`/interceptors/${rule.index}/${field}`, "key"), message });
  const byOriginal = new Map<string, Rule>();
  const byTarget = new Map<string, Rule>();
  for (const rule of rules) {
    if (rule.port === rule.originalPort) at(rule, "port", `port ${rule.port} is the same as originalPort: the rule would do nothing`);
    const original = `${rule.protocol}/${rule.originalPort}`;
    const target = `${rule.protocol}/${rule.port}`;
    const earlier = byOriginal.get(original);
    if (earlier) at(rule, "originalPort", `${rule.protocol} originalPort ${rule.originalPort} is already intercepted by interceptors[${earlier.index}]`);
    else byOriginal.set(original, rule);
    const sharing = byTarget.get(target);
    if (sharing) at(rule, "port", `${rule.protocol} port ${rule.port} is already the target of interceptors[${sharing.index}]: replies could not be told apart`);
    else byTarget.set(target, rule);
  }
  for (const rule of rules) {
    const chained = byOriginal.get(`${rule.protocol}/${rule.port}`);
    if (chained && chained !== rule) {
      at(rule, "port", `${rule.protocol} port ${rule.port} is the originalPort of interceptors[${chained.index}]: rules may not chain`);
    }
  }
  return diagnostics;
}

/** Checks across policies: names and interface selections must not collide. */
export function checkPolicies(policies: ValidPolicy[]): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const byName = new Map<string, ValidPolicy>();
  const selectingAll: ValidPolicy[] = [];
  for (const policy of policies) {
    const other = byName.get(policy.name);
    if (other) diagnostics.push(atTop(policy, `policy name "${policy.name}" is also used by ${other.file}`));
    else byName.set(policy.name, policy);
    if (policy.interfaces.include === null && policy.interfaces.exclude.length === 0) selectingAll.push(policy);
  }
  if (selectingAll.length > 0 && policies.length > 1) {
    for (const policy of selectingAll) {
      diagnostics.push(atTop(policy, `policy "${policy.name}" selects every interface, so it overlaps the other policies: give each policy an interfaces selector`));
    }
  }
  return diagnostics;
}

function atTop(policy: ValidPolicy, message: string): Diagnostic {
  return { file: policy.file, line: 1, column: 1, message };
}
