/* namespace_slot.h — which namespace a packet is counted for, when one
 * loaded program is attached in many.
 *
 * Each namespace sharing a program has a slot. Its tc filter carries the
 * slot as its classid, 1:<slot> (TCA_BPF_CLASSID), and cls_bpf sets
 * skb->tc_classid to the filter's classid before it runs a direct-action
 * program: one context load tells the program where it runs (tc_slot.h).
 * Slot 0 is the namespace that loaded the program, and any filter without a
 * classid (the CNI plugin's, an older intercept's). The cgroup programs are
 * never shared and count at slot 0.
 *
 * src/model/namespace-slot.ts mirrors NAMESPACE_SLOTS and the classid's
 * encoding; tests/unit/bpf-abi.test.ts checks the two agree. */
#ifndef INTERCEPT_NAMESPACE_SLOT_H
#define INTERCEPT_NAMESPACE_SLOT_H

#define NAMESPACE_SLOTS 128 /* slot 0, the loader's, and 127 sharing namespaces */
#define LOADER_SLOT 0       /* the loader's namespace, a filter without classid, the cgroup programs */

_Static_assert(NAMESPACE_SLOTS <= 256, "struct rule_match (types.h) keeps a namespace slot in a byte");

#endif /* INTERCEPT_NAMESPACE_SLOT_H */
