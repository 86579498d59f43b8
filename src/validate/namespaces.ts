import { globMatch, globsOverlap } from "../glob.js";
import type { ValidPolicy } from "./model.js";

/**
 * A policy's `namespaces`: the network namespaces (by `ip netns` name) it
 * applies in. Without the field it applies in every namespace it is used
 * for; with it, only in named namespaces that match one of its globs — the
 * namespace intercept runs in has no name, so such a policy never applies
 * there.
 */
export function appliesIn(policy: Pick<ValidPolicy, "namespaces">, namespace: string | undefined): boolean {
  if (policy.namespaces === undefined) return true;
  return namespace !== undefined && policy.namespaces.some((glob) => globMatch(glob, namespace));
}

/** Whether some namespace could have both policies (so their interface selections may collide there). */
export function mayShareNamespace(a: Pick<ValidPolicy, "namespaces">, b: Pick<ValidPolicy, "namespaces">): boolean {
  if (a.namespaces === undefined || b.namespaces === undefined) return true;
  return a.namespaces.some((x) => b.namespaces!.some((y) => globsOverlap(x, y)));
}
