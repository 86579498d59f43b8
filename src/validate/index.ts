import path from "node:path";
import { diagnosticAt, startOf, type Diagnostic } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import { isWithin } from "../load/source-map.js";
import type { Policy } from "../api.js";
import { isPolicyName } from "../model/policy-name.js";
import type { Rule, ValidPolicy } from "./model.js";
import { checkSchema, type SchemaProblem } from "./schema.js";
import { checkOutbound, checkOutboundAcrossPolicies, normaliseOutbound } from "./outbound.js";
import { checkInterfaces, checkPolicies, checkRules, readRule, toRule, type CheckedPolicy } from "./semantic.js";

export type {
  Cidr,
  InterfaceSelection,
  MappedCidr,
  OutboundExemption,
  OutboundPolicy,
  OutboundRule,
  PortRange,
  Rule,
  ValidPolicy,
} from "./model.js";
export { toRule } from "./semantic.js";
export { ruleSummary } from "./summary.js";
export { cidrText } from "./addresses.js";
export { singleOriginalPort } from "./selectors.js";
export { attachesToLinks } from "./outbound.js";

/**
 * Stage 2: checks loaded policies against the schema, then the rules
 * beyond it, and fills in defaults. Returns every problem of every file:
 * the rules that passed the schema are checked against each other even when
 * others did not, and a TS policy's type errors are reported beside the
 * schema's, except where both say the same thing at the same place (then
 * ours, which carries a suggestion, is kept). Only a policy without any
 * problem, its loader's included, is returned as valid. @checking is told
 * each policy's file as its checks begin (the checks across policies count
 * as the last one's), so that a deadline can name where it stopped.
 */
export function validatePolicies(
  loaded: LoadedPolicy[],
  checking?: (file: string) => void,
): { policies: ValidPolicy[]; diagnostics: Diagnostic[] } {
  const diagnostics: Diagnostic[] = [];
  const accepted: CheckedPolicy[] = [];
  for (const policy of loaded) {
    checking?.(policy.file);
    const schema = checkSchema(policy);
    const problems = [...schema.map((problem) => problem.diagnostic), ...checkWhatPassed(policy, schema)];
    const typeErrors = distinctTypeErrors(policy, schema, problems);
    diagnostics.push(...problems, ...typeErrors);
    if (policy.clean && problems.length === 0 && typeErrors.length === 0)
      accepted.push({ loaded: policy, policy: normalise(policy) });
  }
  diagnostics.push(...checkPolicies(accepted), ...checkOutboundAcrossPolicies(accepted));
  return { policies: diagnostics.length === 0 ? accepted.map((entry) => entry.policy) : [], diagnostics };
}

/** The name and rule checks, on the parts of a policy that passed the schema and were read. */
function checkWhatPassed(policy: LoadedPolicy, schema: SchemaProblem[]): Diagnostic[] {
  const value = policy.value as Partial<Policy>;
  if (typeof value !== "object" || value === null || Array.isArray(value)) return [];
  const passed = (pointer: string) =>
    !schema.some((problem) => isWithin(problem.pointer, pointer) || isWithin(pointer, problem.pointer)) &&
    !policy.holes.some((hole) => isWithin(hole, pointer) || isWithin(pointer, hole));
  const problems = passed("/name") ? checkName(policy) : [];
  const include = value.interfaces?.include;
  if (Array.isArray(include)) {
    problems.push(
      ...checkInterfaces(
        policy,
        new Map(
          include.flatMap((name, index) => (passed(`/interfaces/include/${index}`) ? [[index, name] as const] : [])),
        ),
      ),
    );
  }
  if (Array.isArray(value.interceptors) && !policy.openObjects.includes("/interceptors")) {
    const rules: Rule[] = [];
    value.interceptors.forEach((interceptor, index) => {
      // A rule with a member that could not be read is not checked further: its selector is not known.
      if (!passed(`/interceptors/${index}`) || policy.openObjects.includes(`/interceptors/${index}`)) return;
      const read = readRule(interceptor, index);
      for (const problem of read.problems) {
        const pointer = problem.field === "" ? `/interceptors/${index}` : `/interceptors/${index}/${problem.field}`;
        problems.push(
          diagnosticAt(
            problem.code,
            policy.sourceMap.locate(pointer, problem.part),
            problem.message,
            problem.suggestion === undefined ? {} : { suggestion: problem.suggestion },
          ),
        );
      }
      if (read.rule) rules.push(read.rule);
    });
    problems.push(...checkRules(policy, rules));
  }
  problems.push(...checkOutbound(policy, passed));
  return problems;
}

/**
 * tsc's errors, less those at a place where ours already report a problem
 * (an unknown property, a value of the wrong type: tsc points at the
 * property name, the schema at the name or the value).
 */
function distinctTypeErrors(policy: LoadedPolicy, schema: SchemaProblem[], ours: Diagnostic[]): Diagnostic[] {
  if (policy.typeErrors.length === 0) return [];
  const claimed = new Set(ours.map((d) => `${d.line}:${d.column}`));
  for (const { pointer } of schema) {
    for (const part of ["key", "value"] as const) {
      const { line, column } = policy.sourceMap.span(pointer, part);
      claimed.add(`${line}:${column}`);
    }
  }
  return policy.typeErrors.filter((d) => !claimed.has(`${d.line}:${d.column}`));
}

function normalise(loaded: LoadedPolicy): ValidPolicy {
  const policy = loaded.value as Policy;
  return {
    name: policy.name ?? defaultName(loaded.file),
    file: loaded.file,
    interfaces: { include: policy.interfaces?.include ?? null, exclude: policy.interfaces?.exclude ?? [] },
    ...(policy.namespaces !== undefined && { namespaces: policy.namespaces }),
    rules: (policy.interceptors ?? []).map(toRule),
    ...(policy.outbound && { outbound: normaliseOutbound(policy.outbound, policy.interceptors?.length ?? 0) }),
  };
}

/** The file's base name, made into an identifier: "my-policy.yaml" → "my_policy". */
function defaultName(file: string): string {
  return path
    .basename(file, path.extname(file))
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, "_");
}

/** A name from the file name must be usable too (an explicit one is the schema's to check). */
function checkName(loaded: LoadedPolicy): Diagnostic[] {
  if ((loaded.value as Partial<Policy>).name !== undefined) return [];
  const name = defaultName(loaded.file);
  if (isPolicyName(name)) return [];
  return [
    diagnosticAt(
      "policy/name-unusable",
      startOf(loaded.file),
      `the file name gives the policy name "${name}", which is not usable in C identifiers and pin paths: set "name" (lower case letters, digits and _, starting with a letter)`,
    ),
  ];
}
