/** Namespace slots (lead's placeholder; the helper's module replaces it at merge). */
export const NAMESPACE_SLOTS = 128;
import { COUNTER_SLOTS, type CounterSlot } from "./counters.js";
export function slotCounterKey(rule: number, counter: CounterSlot, slot: number, rules: number): number {
  return (slot * rules + rule) * COUNTER_SLOTS.length + COUNTER_SLOTS.indexOf(counter);
}
