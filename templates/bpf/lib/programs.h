/* programs.h — the two tc programs. Both always return TC_ACT_UNSPEC: they
 * rewrite in place and hand the packet on, so a filter attached after ours
 * still runs and no packet is ever dropped here.
 *
 * The policy block defines match_ingress and match_egress (and RULE_COUNT)
 * before this header is included. */
#ifndef INTERCEPT_PROGRAMS_H
#define INTERCEPT_PROGRAMS_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"

/* intercept — one direction's whole job; @direction is a constant, so each
 * program gets only its own branch. Ingress: a packet arriving for a rule's
 * originalPort goes to the rule's port (destination rewrite). Egress: a
 * reply leaving from the rule's port leaves from originalPort (source
 * rewrite). */
static __always_inline int intercept(struct __sk_buff *skb, enum direction direction)
{
	struct l4_packet pkt;
	struct rule_match match;
	int matched;

	if (parse_packet(skb, &pkt) != PARSE_OK)
		return TC_ACT_UNSPEC;
	matched = direction == DIR_INGRESS ? match_ingress(&pkt, &match) : match_egress(&pkt, &match);
	if (matched == MATCH_FOUND && rule_enabled(match.rule) &&
	    rewrite_port(skb, &pkt, direction == DIR_INGRESS ? PORT_DESTINATION : PORT_SOURCE,
			 match.new_port) == REWRITE_OK)
		count_packet(match.rule, direction, skb->len);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int intercept_ingress(struct __sk_buff *skb)
{
	return intercept(skb, DIR_INGRESS);
}

SEC("tc")
int intercept_egress(struct __sk_buff *skb)
{
	return intercept(skb, DIR_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#endif /* INTERCEPT_PROGRAMS_H */
