/* tc_slot.h — how a tc program learns the namespace slot it runs in
 * (namespace_slot.h), and where user space claims the slots of a program
 * it shares. Only objects with tc programs hold these. */
#ifndef INTERCEPT_TC_SLOT_H
#define INTERCEPT_TC_SLOT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "namespace_slot.h"

/* The namespace slots claimed, by slot: the inode of the network namespace
 * holding it (its /proc/PID/ns/net), which is how user space finds its
 * own. The programs never read it: user space claims a free slot
 * atomically (BPF_NOEXIST) before it attaches a filter with the slot's
 * classid, and releases it once the filter is gone. libbpf creates, and
 * bpftool's pinmaps pins, every map in .maps, read by a program or not. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COUNTER_NAMESPACES); /* the slots this program keeps apart, 0 included */
	__type(key, __u32);
	__type(value, __u64);
} namespace_slots SEC(".maps");

/* namespace_slot — the slot @skb counts under: the minor number of its
 * filter's classid, or LOADER_SLOT for a classid no slot of this program has (a filter
 * someone else attached with a classid of their own). The kernel keeps
 * only the minor (qdisc_skb_cb's tc_classid is 16 bits, and the verifier
 * turns this load into a 16-bit one), so no mask is needed. */
static __always_inline __u32 namespace_slot(const struct __sk_buff *skb)
{
	__u32 slot = skb->tc_classid;

	return slot < COUNTER_NAMESPACES ? slot : LOADER_SLOT;
}

#endif /* INTERCEPT_TC_SLOT_H */
