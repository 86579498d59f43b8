// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The reference: what map-driven samples do. Every TCP/UDP packet looks its
 * destination port up in a hash map; a hit is rewritten. It shares the
 * parser and the rewrite with intercept's datapath (templates/bpf/lib), so
 * the benchmark compares the matching strategy alone. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "parse.h"
#include "rewrite.h"

struct port_key {
	__be16 port;
	__u8 protocol;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct port_key);
	__type(value, __be16); /* new port */
} ports SEC(".maps");

SEC("tc")
int bench_reference(struct __sk_buff *skb)
{
	struct l4_packet pkt;
	struct port_key key = {};
	__be16 *new_port;

	if (parse_packet(skb, &pkt) != PARSE_OK)
		return TC_ACT_UNSPEC;
	key.port = pkt.dport;
	key.protocol = pkt.protocol;
	new_port = bpf_map_lookup_elem(&ports, &key);
	if (new_port)
		rewrite_port(skb, &pkt, PORT_DESTINATION, *new_port);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
