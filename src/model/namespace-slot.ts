/**
 * Namespace slots: how one loaded program, attached in many network
 * namespaces, tells them apart. Each namespace that shares a program has a
 * slot; its tc filter carries the slot in its classid (TCA_BPF_CLASSID),
 * which cls_bpf hands a direct-action program as skb->tc_classid, and the
 * program counts (rule_counters) and records (struct flow_event) under
 * that slot. The C side is NAMESPACE_SLOTS in
 * templates/bpf/lib/namespace_slot.h and namespace_slot() in tc_slot.h;
 * tests/unit/bpf-abi.test.ts checks that the sizes agree, and
 * tests/packet/namespace-slots.test.ts that a classid reaches its slot.
 *
 * Slot 0 is the namespace that loaded the program itself, and every filter
 * without a classid (one the CNI plugin or an older intercept attached):
 * such a filter's packets count where they always did. Slots 1 to
 * NAMESPACE_SLOTS - 1 are the namespaces sharing it, each claimed in the
 * program's namespace_slots map (src/model/bpf-abi.ts).
 */

/** Slots per program, slot 0 included: the namespaces one loaded program can count apart. */
export const NAMESPACE_SLOTS = 128;

/** The slot of the namespace that loaded the program, and of a filter without a classid. */
export const LOADER_SLOT = 0;

/** The major number of a slot's classid (`1:<slot>`): any non-zero one would do, the program reads the minor. */
const CLASSID_MAJOR = 1;

/** TC_H_MAKE(@major << 16, @minor), as <linux/pkt_sched.h> makes a handle. */
function tcHandle(major: number, minor: number): number {
  return ((major << 16) | (minor & 0xffff)) >>> 0;
}

/**
 * The classid a filter carries for @slot (`1:<slot>`), or undefined for the
 * loader's slot, whose filter carries none: a filter attached before slots
 * existed, or by the CNI plugin, reads as slot 0 and stays byte-identical.
 */
export function classidOfSlot(slot: number): number | undefined {
  if (!Number.isInteger(slot) || slot < 0 || slot >= NAMESPACE_SLOTS)
    throw new RangeError(`namespace slot ${slot} is not in 0..${NAMESPACE_SLOTS - 1}`);
  return slot === LOADER_SLOT ? undefined : tcHandle(CLASSID_MAJOR, slot);
}

/**
 * The slot a filter's classid gives its packets: its minor number when
 * below NAMESPACE_SLOTS, else the loader's (as the program bounds it).
 */
export function slotOfClassid(classid: number | undefined): number {
  const minor = (classid ?? 0) & 0xffff;
  return minor < NAMESPACE_SLOTS ? minor : LOADER_SLOT;
}
