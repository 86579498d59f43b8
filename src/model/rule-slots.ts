/**
 * A policy's rules share one numbering: the slots of its rule_state and
 * rule_counters maps hold its interceptors first, then its outbound rules.
 * A rule's slot is its `index`; this is the one place that orders them.
 */

/** What a policy must have to be numbered: its interceptors and, optionally, outbound rules. */
export interface SlottedPolicy<Interceptor, Outbound> {
  rules: readonly Interceptor[];
  outbound?: { rules: readonly Outbound[] } | undefined;
}

export type RuleSlot<Interceptor, Outbound> =
  | { slot: number; kind: "interceptor"; rule: Interceptor }
  | { slot: number; kind: "outbound"; rule: Outbound };

/** Every rule of @policy in slot order. */
export function ruleSlots<I, O>(policy: SlottedPolicy<I, O>): RuleSlot<I, O>[] {
  return [
    ...policy.rules.map((rule, slot) => ({ slot, kind: "interceptor" as const, rule })),
    ...(policy.outbound?.rules ?? []).map((rule, position) => ({
      slot: outboundSlot(policy.rules.length, position),
      kind: "outbound" as const,
      rule,
    })),
  ];
}

/** The rules of @policy in slot order, without their kinds. */
export function slottedRules<I, O>(policy: SlottedPolicy<I, O>): (I | O)[] {
  return ruleSlots(policy).map((entry) => entry.rule);
}

/** How many slots @policy's rules take. */
export function slotCount(policy: SlottedPolicy<unknown, unknown>): number {
  return policy.rules.length + (policy.outbound?.rules.length ?? 0);
}

/** The slot of the outbound rule at @position, after @interceptors interceptors. */
export function outboundSlot(interceptors: number, position: number): number {
  return interceptors + position;
}

/**
 * A composed program (src/model/composition.ts) numbers the rules of its
 * policies, @members in composition order, in one sequence: every policy's
 * interceptors first, policy by policy, then every policy's outbound rules,
 * policy by policy. The interceptors are then numbered as one policy
 * holding all of them would number them, so a composed program's matching
 * code is that policy's; a composition of one policy numbers its rules as
 * ruleSlots does. Returns each member's slot for each of its rule indexes.
 */
export function composedSlots<I, O>(members: readonly SlottedPolicy<I, O>[]): number[][] {
  const interceptors = members.reduce((sum, policy) => sum + policy.rules.length, 0);
  let interceptorBase = 0;
  let outboundBase = interceptors;
  return members.map((policy) => {
    const slots = [
      ...policy.rules.map((_, i) => interceptorBase + i),
      ...(policy.outbound?.rules ?? []).map((_, position) => outboundBase + position),
    ];
    interceptorBase += policy.rules.length;
    outboundBase += policy.outbound?.rules.length ?? 0;
    return slots;
  });
}

/** The rules of @members' composed program in slot order (composedSlots); for one policy, slottedRules. */
export function composedRules<I, O>(members: readonly SlottedPolicy<I, O>[]): (I | O)[] {
  const slots = composedSlots(members);
  const rules: (I | O)[] = [];
  members.forEach((policy, m) => {
    for (const [i, rule] of slottedRules(policy).entries()) rules[slots[m]![i]!] = rule;
  });
  return rules;
}
