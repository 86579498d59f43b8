/** Desired policies for unit tests: compiled for real, identified without clang. */
import { createHash } from "node:crypto";
import { compilePolicies } from "../../src/compile/index.js";
import { versionOf } from "../../src/datapath/types.js";
import type { DesiredPolicy } from "../../src/reconcile/index.js";
import type { ValidPolicy } from "../../src/validate/index.js";
import { testPolicy } from "./bpf.js";

/** @policy as reconcile carries it; the content hash is the source's (the real one adds clang's version). */
export function desired(policy: ValidPolicy): DesiredPolicy {
  const [compiled] = compilePolicies([policy]);
  const contentHash = createHash("sha256").update(compiled!.source).digest("hex");
  return {
    definition: { name: policy.name, interceptors: policy.rules.map(({ originalPort, port, protocol, family, enabled }) => ({ originalPort, port, protocol, family, enabled })) },
    policy,
    compiled: compiled!,
    contentHash,
    program: { policy: policy.name, version: versionOf(contentHash) },
    hooks: compiled!.hooks,
  };
}

/** A desired policy from rules, with test defaults filled in. */
export function desiredPolicy(name: string, rules: Parameters<typeof testPolicy>[1], interfaces?: ValidPolicy["interfaces"]): DesiredPolicy {
  return desired({ ...testPolicy(name, rules), ...(interfaces && { interfaces }) });
}
