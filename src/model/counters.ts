/**
 * The layout of the `rule_counters` map, in one place for every reader
 * (status, metrics, tests). The map is a BPF_MAP_TYPE_PERCPU_ARRAY of
 * `struct rule_counter { __u64 packets; __u64 bytes; }`, per CPU (a reader
 * sums the CPUs), with COUNTER_SLOTS.length entries per rule and namespace
 * slot (src/model/namespace-slot.ts), a slot's rules one block:
 *
 *   key = (namespaceSlot * rules + rule) * COUNTER_SLOTS.length + counter
 *
 * where rules is the program's RULE_COUNT (every rule slot it has). The
 * loader's slot 0 comes first, so its keys are what they were before
 * namespace slots. An object with cgroup programs only holds slot 0 alone.
 *
 * The C side is `enum counter_slot` and count_packet() in
 * templates/bpf/lib/maps.h; tests/unit/counters.test.ts checks that the two
 * agree (src/compile/counters.ts re-exports this module for the compiler,
 * where the C points).
 */
import { LOADER_SLOT, NAMESPACE_SLOTS } from "./namespace-slot.js";

export const COUNTER_SLOTS = [
  /** Rewrite rules: packets arriving for originalPort whose destination port was rewritten. */
  "rewrittenIngress",
  /** Rewrite rules: replies whose source port was rewritten back to originalPort. */
  "rewrittenEgress",
  /** Steer rules: SYNs assigned to the proxy's listener — one per connection (bytes: of those SYNs). */
  "steered",
  /** Steer rules: SYNs that found no listener on port, then dropped or passed as onProxyDown says. */
  "proxyDown",
  /**
   * Steer rules: SYNs whose 4-tuple the kernel still held in TIME_WAIT (a
   * connection the proxy closed moments ago, its client port reused) and
   * that could not be steered: the kernel would not reopen the tuple for
   * this SYN either (its sequence number not after the old connection's),
   * or the reset that ends the TIME_WAIT did not take (net.ipv4.tcp_rfc1337
   * = 1). Dropped or passed as onProxyDown says.
   */
  "timeWait",
  /**
   * Steer rules: connections steered through a 4-tuple that was in
   * TIME_WAIT, which the program ended for them (a reset ahead of the SYN,
   * docs/steering.md): a subset of steered.
   */
  "timeWaitRecycled",
  /**
   * Outbound rules: connect() calls sent to the local proxy — one per
   * connection (bytes: always 0, nothing is counted per packet).
   */
  "redirected",
] as const;

export type CounterSlot = (typeof COUNTER_SLOTS)[number];

/** The C enumerator of each slot (COUNTER_REWRITTEN_INGRESS, …). */
export function counterSlotConstant(slot: CounterSlot): string {
  return `COUNTER_${slot.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase()}`;
}

/**
 * The counters one program holds at most, over all its namespace slots
 * (1 MiB a CPU): a per-CPU array is allocated whole at load, on every CPU,
 * so 128 slots of a policy of many rules would cost the node memory and
 * the load seconds (10,000 rules: 287 MiB here, 6-12 s).
 */
export const COUNTER_ENTRIES_BUDGET = 65_536;

/**
 * How many namespaces a program of @rules rule slots keeps apart (its
 * COUNTER_NAMESPACES): NAMESPACE_SLOTS while the budget allows, fewer for
 * a policy of many rules, and 1 (its loader's alone: never shared) for one
 * whose counters fill the budget by themselves. The compiler writes it into
 * the program; the program bounds a packet's slot by it; user space claims
 * slots below it (the claims map has that many entries).
 */
export function namespaceCapacity(rules: number): number {
  const perNamespace = Math.max(1, rules) * COUNTER_SLOTS.length;
  return Math.min(NAMESPACE_SLOTS, Math.max(1, Math.floor(COUNTER_ENTRIES_BUDGET / perNamespace)));
}

/** Where a reader looks: a namespace slot of a program with @rules rule slots (its RULE_COUNT). */
export interface CounterBlock {
  namespaceSlot: number;
  rules: number;
}

/** The loader's block: its keys do not depend on the number of rules. */
export const LOADER_BLOCK: CounterBlock = { namespaceSlot: LOADER_SLOT, rules: 0 };

/** The rule_counters key of @rule's @counter, in @block's namespace slot. */
export function counterKey(rule: number, counter: CounterSlot, block: CounterBlock = LOADER_BLOCK): number {
  return (block.namespaceSlot * block.rules + rule) * COUNTER_SLOTS.length + COUNTER_SLOTS.indexOf(counter);
}
