/**
 * The policies of one composition (src/model/composition.ts) as the one
 * policy its program is rendered from: the rules of every member, numbered
 * by composedSlots (src/model/rule-slots.ts), so the program's matching is
 * what one policy holding the same rules would match. A composition of one
 * policy is that policy, unchanged.
 */
import { compositionMembers, compositionName } from "../model/composition.js";
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
