/* maps.h — the only state the datapath reads, and only for packets a rule
 * already matched by port: a packet the policy does not name never gets here.
 *
 * Pinned by `intercept apply`, so `bpftool map update` can edit them live.
 * Sized by RULE_COUNT, which the policy block defines. */
#ifndef INTERCEPT_MAPS_H
#define INTERCEPT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "namespace_slot.h"

#ifndef RULE_COUNT
#error "maps.h needs RULE_COUNT: include it after the policy block"
#endif

/* Live on/off switch of each rule: value 1 = enabled. Filled by apply before
 * the program is attached; flipping it needs no reload. */
struct rule_state {
	__u32 enabled;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RULE_COUNT);
	__type(key, __u32);
	__type(value, struct rule_state);
} rule_state SEC(".maps");

/* What each rule counts: COUNTER_SLOTS counters per rule and namespace
 * slot (namespace_slot.h), at key
 *
 *   (namespace_slot * RULE_COUNT + rule) * COUNTER_SLOTS + counter
 *
 * src/model/counters.ts describes the same layout to the readers (a unit
 * test keeps the two in step). */
enum counter_slot {
	COUNTER_REWRITTEN_INGRESS  = 0, /* destination port rewritten on arrival */
	COUNTER_REWRITTEN_EGRESS   = 1, /* source port of a reply rewritten back */
	COUNTER_STEERED            = 2, /* SYN assigned to the proxy's listener: a connection */
	COUNTER_PROXY_DOWN         = 3, /* SYN that found no listener (dropped or passed) */
	COUNTER_TIME_WAIT          = 4, /* SYN whose 4-tuple stayed in TIME_WAIT (dropped or passed) */
	COUNTER_TIME_WAIT_RECYCLED = 5, /* SYN steered after its 4-tuple's TIME_WAIT was ended for it */
	COUNTER_REDIRECTED         = 6, /* outbound connect() sent to the local proxy: a connection */
	COUNTER_SLOTS              = 7,
};

/* Packets and bytes of one rule's slot. Per-CPU, so counting needs no
 * atomic operation; readers sum the CPUs. */
struct rule_counter {
	__u64 packets;
	__u64 bytes;
};

/* The namespace slots rule_counters keeps apart (COUNTER_NAMESPACES, from
 * the policy block): NAMESPACE_SLOTS while 1 MiB of counters a CPU allows,
 * fewer for a policy of many rules, 1 for an object of cgroup programs
 * only, which are never shared. The key stays the same. */
#ifndef COUNTER_NAMESPACES
#error "maps.h needs COUNTER_NAMESPACES: include it after the policy block"
#endif
_Static_assert(COUNTER_NAMESPACES >= 1 && COUNTER_NAMESPACES <= NAMESPACE_SLOTS, "COUNTER_NAMESPACES out of range");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_NAMESPACES * RULE_COUNT * COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct rule_counter);
} rule_counters SEC(".maps");

/* Which policy and which content hash this program was compiled from,
 * written by apply, so `plan` can recognise a live program without a state
 * file. */
struct policy_meta {
	char content_hash[64]; /* hex sha256 of the generated C + clang version */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct policy_meta);
} policy_meta SEC(".maps");

/* rule_enabled — true when @rule is switched on in rule_state. */
static __always_inline int rule_enabled(__u32 rule)
{
	struct rule_state *state = bpf_map_lookup_elem(&rule_state, &rule);

	return state && state->enabled;
}

/* count_packet — adds one packet of @bytes to @rule's @counter in
 * namespace slot @ns_slot. */
static __always_inline void count_packet(__u32 ns_slot, __u32 rule, enum counter_slot counter, __u32 bytes)
{
	__u32 key = (ns_slot * RULE_COUNT + rule) * COUNTER_SLOTS + counter;
	struct rule_counter *entry = bpf_map_lookup_elem(&rule_counters, &key);

	if (entry) {
		entry->packets++;
		entry->bytes += bytes;
	}
}

#endif /* INTERCEPT_MAPS_H */
