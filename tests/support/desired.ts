/** Desired policies for unit tests: compiled for real, identified without clang. */
import { createHash } from "node:crypto";
import { compilePolicies } from "../../src/compile/index.js";
import { versionOf } from "../../src/model/version.js";
import type { DesiredPolicy } from "../../src/reconcile/index.js";
import type { Interceptor, Outbound, PortItem } from "../../src/api.js";
import {
  cidrText,
  singleOriginalPort,
  type OutboundPolicy,
  type PortRange,
  type Rule,
  type ValidPolicy,
} from "../../src/validate/index.js";
import { normaliseOutbound } from "../../src/validate/outbound.js";
import { testPolicy } from "./bpf.js";

/** @policy as reconcile carries it; the content hash is the source's (the real one adds clang's version). */
export function desired(policy: ValidPolicy): DesiredPolicy {
  const [compiled] = compilePolicies([policy]);
  const contentHash = createHash("sha256").update(compiled!.source).digest("hex");
  return {
    definition: {
      name: policy.name,
      interceptors: policy.rules.map(interceptorOf),
      ...(policy.outbound && { outbound: outboundDefinition(policy.outbound) }),
    },
    policy,
    compiled: compiled!,
    contentHash,
    program: { policy: policy.name, version: versionOf(contentHash) },
    hooks: compiled!.hooks,
    cgroupHooks: compiled!.cgroupHooks,
    identify: async (program) => createHash("sha256").update(program.source).digest("hex"),
  };
}

/** An outbound section as a policy file writes it. */
function outboundDefinition(outbound: OutboundPolicy): Outbound {
  const { uids, cgroups, marks } = outbound.exempt;
  return {
    cgroups: outbound.cgroups,
    exempt: {
      ...(uids.length > 0 && { uids }),
      ...(cgroups.length > 0 && { cgroups }),
      ...(marks.length > 0 && { marks }),
    },
    rules: outbound.rules.map(({ originalPort, port, cidrs, enabled }) => ({
      originalPort,
      port,
      enabled,
      ...(cidrs.length > 0 && { cidrs: cidrs.map((cidr) => cidr.text) }),
    })),
  };
}

/** A desired policy with an outbound section (written as in a policy file) after @rules' interceptors. */
export function desiredOutbound(
  name: string,
  outbound: Outbound,
  rules: Parameters<typeof testPolicy>[1] = [],
): DesiredPolicy {
  const policy = testPolicy(name, rules);
  return desired({ ...policy, outbound: normaliseOutbound(outbound, policy.rules.length) });
}

/** A desired policy from rules, with test defaults filled in. */
export function desiredPolicy(
  name: string,
  rules: Parameters<typeof testPolicy>[1],
  interfaces?: ValidPolicy["interfaces"],
): DesiredPolicy {
  return desired({ ...testPolicy(name, rules), ...(interfaces && { interfaces }) });
}

/** A rule as a policy file would write it (what a saved plan stores, validated again when applied). */
function interceptorOf(rule: Rule): Interceptor {
  const item = ({ first, last }: PortRange): PortItem => (first === last ? first : `${first}-${last}`);
  const single = singleOriginalPort(rule);
  const lists = {
    ...(rule.sources.length > 0 && { sources: rule.sources.map(cidrText) }),
    ...(rule.exceptSources.length > 0 && { exceptSources: rule.exceptSources.map(cidrText) }),
    ...(rule.destinations.length > 0 && { destinations: rule.destinations.map(cidrText) }),
  };
  return {
    ...(single !== undefined
      ? { originalPort: single }
      : { originalPorts: rule.originalPorts.map(item), exceptPorts: rule.exceptPorts.map(item) }),
    ...lists,
    port: rule.port,
    protocol: rule.protocol,
    family: rule.family,
    strategy: rule.strategy,
    ...(rule.onProxyDown && { onProxyDown: rule.onProxyDown }),
    enabled: rule.enabled,
  };
}
