import type { Listener, ObservedState } from "../datapath/types.js";
import { cgroupWithin } from "../cgroup-path.js";
import type { PlanWarning } from "../plan/model.js";
import type { ValidPolicy } from "../validate/index.js";
import { portRangeText } from "../validate/selectors.js";

/**
 * What applying @policies would do that they probably do not mean, given
 * the sockets listening in the namespace now: none when the listeners were
 * not observed. @linksOf gives the links a policy runs on once applied.
 */
export function planWarnings(
  policies: ValidPolicy[],
  observed: ObservedState,
  linksOf: (policy: ValidPolicy) => string[],
): PlanWarning[] {
  const listeners = observed.listeners;
  if (!listeners) return [];
  return policies.flatMap((policy) => [
    ...steerWarnings(policy, listeners, linksOf(policy)),
    ...outboundWarnings(policy, listeners, true),
  ]);
}

/** Whether plan must observe the listeners for @policies' warnings: a steer rule that drops, or an outbound rule. */
export function needsListeners(policies: ValidPolicy[]): boolean {
  return policies.some((policy) => policy.rules.some(dropsWithoutProxy) || (policy.outbound?.rules.length ?? 0) > 0);
}

function dropsWithoutProxy(rule: ValidPolicy["rules"][number]): boolean {
  return rule.enabled && rule.strategy === "steer" && (rule.onProxyDown ?? "drop") === "drop";
}

/** Each enabled steer rule that drops without a proxy, on the links the policy runs on, with nothing listening on its port. */
function steerWarnings(policy: ValidPolicy, listeners: Listener[], links: string[]): PlanWarning[] {
  if (links.length === 0) return [];
  return policy.rules
    .filter((rule) => dropsWithoutProxy(rule) && !listeners.some((listener) => listener.port === rule.port))
    .map((rule) => ({
      kind: "proxy-not-listening",
      policy: policy.name,
      rule: rule.index,
      port: rule.port,
      originalPorts: rule.originalPorts.map(portRangeText).join(","),
      links,
    }));
}

/**
 * Each enabled outbound rule whose proxy port nothing listens on; with
 * @missing false, only those whose listeners sit outside every captured
 * and exempt cgroup (where no getsockopt program of ours answers).
 */
export function outboundWarnings(policy: ValidPolicy, listeners: Listener[], missing: boolean): PlanWarning[] {
  const outbound = policy.outbound;
  if (!outbound) return [];
  const served = [...outbound.cgroups, ...outbound.exempt.cgroups];
  return outbound.rules
    .filter((rule) => rule.enabled)
    .flatMap((rule): PlanWarning[] => {
      const on = listeners.filter((listener) => listener.port === rule.port);
      if (on.length === 0) {
        return missing
          ? [
              {
                kind: "outbound-proxy-not-listening",
                policy: policy.name,
                rule: rule.index,
                port: rule.port,
                originalPort: rule.originalPort,
                cgroups: outbound.cgroups,
              },
            ]
          : [];
      }
      const outside = [
        ...new Set(
          on.flatMap((listener) =>
            listener.cgroup !== undefined && !served.some((cgroup) => cgroupWithin(listener.cgroup!, cgroup))
              ? [listener.cgroup]
              : [],
          ),
        ),
      ].sort();
      return outside.length > 0
        ? [
            {
              kind: "outbound-proxy-uncaptured",
              policy: policy.name,
              rule: rule.index,
              port: rule.port,
              listenerCgroups: outside,
            },
          ]
        : [];
    });
}
