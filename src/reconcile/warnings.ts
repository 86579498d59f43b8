import type { ObservedState } from "../datapath/types.js";
import type { Listener } from "../kernel/sockets.js";
import { cgroupWithin } from "../cgroup-path.js";
import type { PlanWarning } from "../plan/model.js";
import { distance } from "fastest-levenshtein";
import { globMatch } from "../glob.js";
import { attachesToLinks, type ValidPolicy } from "../validate/index.js";
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
  const selectors = policies.flatMap((policy) => interfaceWarnings(policy, observed));
  if (!listeners) return selectors;
  return [
    ...selectors,
    ...policies.flatMap((policy) => [
      ...steerWarnings(policy, listeners, linksOf(policy)),
      ...outboundWarnings(policy, listeners, true),
    ]),
  ];
}

/**
 * A policy left out of the namespace planned by its `namespaces`: told, so
 * a typo in a glob is not silent. @namespace is the namespace's name
 * (undefined: the host's own).
 */
export function namespaceWarning(policy: ValidPolicy, namespace: string | undefined): PlanWarning {
  return {
    kind: "namespaces-match-nothing",
    policy: policy.name,
    file: policy.file,
    namespaces: [...(policy.namespaces ?? [])],
    namespace,
    suggestion: namespace === undefined ? undefined : closest(policy.namespaces ?? [], [namespace]),
  };
}

/** Each `interfaces.include` entry of a policy with tc rules that matches no link intercept can serve here. */
function interfaceWarnings(policy: ValidPolicy, observed: ObservedState): PlanWarning[] {
  if (!attachesToLinks(policy) || policy.interfaces.include === null) return [];
  const links = observed.links.filter((link) => !link.loopback && link.linkType === "ether").map((link) => link.name);
  return policy.interfaces.include
    .filter((glob) => !links.some((link) => globMatch(glob, link)))
    .map((glob) => ({
      kind: "interfaces-match-nothing",
      policy: policy.name,
      file: policy.file,
      include: glob,
      links,
      suggestion: closest([glob], links),
    }));
}

/** The candidate nearest to one of @written, when near enough to be a typo of it (fastest-levenshtein). */
function closest(written: readonly string[], candidates: readonly string[]): string | undefined {
  let best: { name: string; cost: number } | undefined;
  for (const glob of written) {
    for (const name of candidates) {
      const cost = distance(glob.replace(/[*?]/g, ""), name);
      if (cost <= Math.max(2, Math.floor(name.length / 3)) && (!best || cost < best.cost)) best = { name, cost };
    }
  }
  return best?.name;
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
