// SPDX-License-Identifier: MIT
/*
 * bench/load-once.ts: what counting per namespace costs a program shared
 * by every namespace (issue 22's "load once, attach everywhere"). Each
 * program counts one packet of one rule's slot, as count_packet() in
 * templates/bpf/lib/maps.h does, in one of three ways:
 *   private_count: today's per-CPU array, one per namespace's own program;
 *   cookie_count:  one per-CPU hash for every namespace, keyed by the
 *                  packet's netns cookie and the slot, made on first use;
 *   slot_count:    the cookie looked up in a small hash the agent fills
 *                  (cookie -> namespace slot), then a per-CPU array.
 * nothing and cookie_only measure the test run itself and the helper alone.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define RULE_COUNT 4
#define COUNTER_SLOTS 7
#define NAMESPACE_SLOTS 256

struct rule_counter { __u64 packets; __u64 bytes; };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RULE_COUNT * COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct rule_counter);
} private_counters SEC(".maps");

struct netns_key { __u64 cookie; __u32 slot; __u32 pad; };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NAMESPACE_SLOTS * RULE_COUNT * COUNTER_SLOTS);
	__type(key, struct netns_key);
	__type(value, struct rule_counter);
} netns_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NAMESPACE_SLOTS);
	__type(key, __u64);
	__type(value, __u32);
} netns_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NAMESPACE_SLOTS * RULE_COUNT * COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct rule_counter);
} slotted_counters SEC(".maps");

static __always_inline void add(struct rule_counter *c, __u32 bytes)
{
	if (c) { c->packets++; c->bytes += bytes; }
}

/* Today: one per-CPU array lookup at rule * SLOTS + slot. */
SEC("tc")
int private_count(struct __sk_buff *skb)
{
	__u32 key = 1 * COUNTER_SLOTS + 2;
	add(bpf_map_lookup_elem(&private_counters, &key), skb->len);
	return TC_ACT_UNSPEC;
}

/* Shared, keyed by the packet's netns cookie: a per-CPU hash, made on first use. */
SEC("tc")
int cookie_count(struct __sk_buff *skb)
{
	struct netns_key key = { .cookie = bpf_get_netns_cookie(skb), .slot = 1 * COUNTER_SLOTS + 2 };
	struct rule_counter *c = bpf_map_lookup_elem(&netns_counters, &key);

	if (!c) {
		struct rule_counter zero = {};
		bpf_map_update_elem(&netns_counters, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&netns_counters, &key);
	}
	add(c, skb->len);
	return TC_ACT_UNSPEC;
}

/* Shared, by a namespace slot the agent assigns (cookie -> slot), then a per-CPU array. */
SEC("tc")
int slot_count(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_netns_cookie(skb);
	__u32 *slot = bpf_map_lookup_elem(&netns_slots, &cookie);
	__u32 key;

	if (!slot || *slot >= NAMESPACE_SLOTS)
		return TC_ACT_UNSPEC;
	key = (*slot * RULE_COUNT + 1) * COUNTER_SLOTS + 2;
	add(bpf_map_lookup_elem(&slotted_counters, &key), skb->len);
	return TC_ACT_UNSPEC;
}

/* The bare cost of the helper, for reference. */
SEC("tc")
int cookie_only(struct __sk_buff *skb)
{
	return bpf_get_netns_cookie(skb) ? TC_ACT_UNSPEC : TC_ACT_OK;
}

/* Nothing: the test run's own overhead. */
SEC("tc")
int nothing(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
