import { globMatch, globsOverlap } from "../glob.js";
import type { InterfaceSelection, ValidPolicy } from "./model.js";

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

/** Interface selection by glob (* and ?): whether @selection selects the link @name. */
export function selects(selection: InterfaceSelection, name: string): boolean {
  const included = selection.include === null || selection.include.some((glob) => globMatch(glob, name));
  return included && !selection.exclude.some((glob) => globMatch(glob, name));
}

/**
 * A link both selections may select, for a message: a name both select,
 * or a glob some names both select match; undefined when none can be.
 * Exact for named links; two globs that meet are taken to meet, unless an
 * exclusion of either side covers the other's glob whole.
 */
export function sharedLink(a: InterfaceSelection, b: InterfaceSelection): string | undefined {
  const literal = (glob: string) => !/[*?]/.test(glob);
  for (const x of a.include ?? ["*"]) {
    for (const y of b.include ?? ["*"]) {
      if (!globsOverlap(x, y)) continue;
      const named = [x, y].find(literal);
      if (named !== undefined) {
        if (selects(a, named) && selects(b, named)) return named;
        continue;
      }
      const narrower = x.length >= y.length ? x : y;
      const excluded = [...a.exclude, ...b.exclude].some((glob) => glob === narrower || glob === "*");
      if (!excluded) return x === "*" && y === "*" ? "every link" : `links matching ${narrower}`;
    }
  }
  return undefined;
}
