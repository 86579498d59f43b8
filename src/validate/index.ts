import path from "node:path";
import type { Diagnostic } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import type { Interceptor, Policy } from "../api.js";
import type { Rule, ValidPolicy } from "./model.js";
import { checkSchema } from "./schema.js";
import { checkPolicies, checkRules } from "./semantic.js";

export type { InterfaceSelection, Rule, ValidPolicy } from "./model.js";

/** Names end up in C identifiers and pin paths. Mirrors the schema's pattern. */
const NAME_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;

/**
 * Stage 2: checks loaded policies against the schema, then the rules
 * beyond it, and fills in defaults. Returns every problem of every file.
 */
export function validatePolicies(loaded: LoadedPolicy[]): { policies: ValidPolicy[]; diagnostics: Diagnostic[] } {
  const diagnostics: Diagnostic[] = [];
  const policies: ValidPolicy[] = [];
  for (const policy of loaded) {
    const problems = checkSchema(policy);
    if (problems.length === 0) {
      const valid = normalise(policy);
      problems.push(...checkName(policy, valid), ...checkRules(policy, valid.rules));
      if (problems.length === 0) policies.push(valid);
    }
    diagnostics.push(...problems);
  }
  diagnostics.push(...checkPolicies(policies));
  return { policies: diagnostics.length === 0 ? policies : [], diagnostics };
}

function normalise(loaded: LoadedPolicy): ValidPolicy {
  const policy = loaded.value as Policy;
  return {
    name: policy.name ?? defaultName(loaded.file),
    file: loaded.file,
    interfaces: { include: policy.interfaces?.include ?? null, exclude: policy.interfaces?.exclude ?? [] },
    rules: policy.interceptors.map(toRule),
  };
}

/** Steer is the default where it exists (TCP); UDP rewrites. */
const DEFAULT_STRATEGY = { tcp: "steer", udp: "rewrite" } as const;

function toRule(interceptor: Interceptor, index: number): Rule {
  const protocol = interceptor.protocol ?? "tcp";
  const strategy = interceptor.strategy ?? DEFAULT_STRATEGY[protocol];
  return {
    index,
    originalPort: interceptor.originalPort,
    port: interceptor.port,
    protocol,
    family: interceptor.family ?? "any",
    strategy,
    // Kept on a rewrite rule when written, so checkRules can refuse it there.
    ...((strategy === "steer" || interceptor.onProxyDown !== undefined) && { onProxyDown: interceptor.onProxyDown ?? "drop" }),
    enabled: interceptor.enabled ?? true,
    ...(interceptor.description !== undefined && { description: interceptor.description }),
  };
}

/** The file's base name, made into an identifier: "my-policy.yaml" → "my_policy". */
function defaultName(file: string): string {
  return path.basename(file, path.extname(file)).toLowerCase().replace(/[^a-z0-9_]/g, "_");
}

function checkName(loaded: LoadedPolicy, policy: ValidPolicy): Diagnostic[] {
  if (NAME_PATTERN.test(policy.name)) return [];
  return [{
    file: loaded.file,
    line: 1,
    column: 1,
    message: `the file name gives the policy name "${policy.name}", which is not usable in C identifiers and pin paths: set "name" (lower case letters, digits and _, starting with a letter)`,
  }];
}
