// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A filter that is not intercept's: counts the packets it sees and hands
 * them on, so tests can tell whether our filter lets it see them. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

SEC("tc")
int foreign_counter(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *packets = bpf_map_lookup_elem(&seen, &key);

	if (packets)
		__sync_fetch_and_add(packets, 1);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
