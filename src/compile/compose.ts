/**
 * The policies of one composition (src/model/composition.ts) as the one
 * policy its program is rendered from: the rules of every member, numbered
 * by composedSlots (src/model/rule-slots.ts), so the program's matching is
 * what one policy holding the same rules would match. A composition of one
 * policy is that policy, unchanged.
 */
import { compositionMembers, compositionName } from "../model/composition.js";
import { attachesToLinks } from "../validate/outbound.js";
import { appliesIn, selects } from "../validate/namespaces.js";
import { composedSlots } from "../model/rule-slots.js";
import type { OutboundPolicy, ValidPolicy } from "../validate/index.js";

/** @members (any order) as one policy; the members in composition order are returned beside it. */
export function composePolicies(members: readonly ValidPolicy[]): { policy: ValidPolicy; members: ValidPolicy[] } {
  const byName = new Map(members.map((member) => [member.name, member]));
  const ordered = compositionMembers([...byName.keys()]).map((name) => byName.get(name)!);
  if (ordered.length === 1) return { policy: ordered[0]!, members: ordered };
  const slots = composedSlots(ordered);
  const rules = ordered.flatMap((member, m) => member.rules.map((rule, i) => ({ ...rule, index: slots[m]![i]! })));
  const outbound = composedOutbound(ordered, slots);
  const policy: ValidPolicy = {
    name: compositionName(ordered.map((member) => member.name)),
    file: ordered.map((member) => member.file).join(", "),
    interfaces: { include: null, exclude: [] },
    rules,
    ...(outbound && { outbound }),
  };
  return { policy, members: ordered };
}

/** The outbound sections of @members together: their rules in slot order, their cgroups and exemptions joined. */
function composedOutbound(members: ValidPolicy[], slots: number[][]): OutboundPolicy | undefined {
  const sections = members.flatMap((member, m) =>
    member.outbound ? [{ outbound: member.outbound, slots: slots[m]!.slice(member.rules.length) }] : [],
  );
  if (sections.length === 0) return undefined;
  const unique = <T>(values: T[]) => [...new Set(values)];
  let position = 0;
  return {
    cgroups: unique(sections.flatMap(({ outbound }) => outbound.cgroups)),
    exempt: {
      uids: unique(sections.flatMap(({ outbound }) => outbound.exempt.uids)),
      cgroups: unique(sections.flatMap(({ outbound }) => outbound.exempt.cgroups)),
      marks: unique(sections.flatMap(({ outbound }) => outbound.exempt.marks)),
    },
    rules: sections.flatMap(({ outbound, slots: own }) =>
      outbound.rules.map((rule, i) => ({ ...rule, index: own[i]!, position: position++ })),
    ),
  };
}

/** At most this many compositions are prebuilt: a node builds any other with clang, if it has clang. */
export const PREBUILT_COMPOSITIONS_LIMIT = 256;

/**
 * The compositions of two or more of @policies that links are likely to
 * make, for prebuilt objects (`build --out`), where no link is known: the
 * policies that select each name a policy writes (a glob stands for a name
 * it matches), in each namespace a policy names (or the host's). Sorted by
 * name; a node builds a composition missing here with clang.
 */
export function likelyCompositions(policies: readonly ValidPolicy[]): ValidPolicy[][] {
  const onLinks = policies.filter((policy) => attachesToLinks(policy) && policy.rules.length > 0);
  const sample = (glob: string) => glob.replace(/[*?]/g, "x");
  const links = new Set(["eth0", ...onLinks.flatMap((policy) => (policy.interfaces.include ?? []).map(sample))]);
  const namespaces = new Set<string | undefined>([
    undefined,
    ...onLinks.flatMap((policy) => (policy.namespaces ?? []).map(sample)),
  ]);
  const sets = new Map<string, ValidPolicy[]>();
  for (const namespace of namespaces) {
    const here = onLinks.filter((policy) => appliesIn(policy, namespace));
    for (const link of links) {
      const members = here
        .filter((policy) => selects(policy.interfaces, link))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      if (members.length > 1) sets.set(compositionName(members.map((member) => member.name)), members);
    }
  }
  return [...sets.keys()]
    .sort()
    .slice(0, PREBUILT_COMPOSITIONS_LIMIT)
    .map((name) => sets.get(name)!);
}
