/* programs.h — the tc programs of a policy.
 *
 * intercept_ingress acts on what arrives: a packet for a rewrite rule's
 * originalPort gets the rule's port, a SYN for a steer rule's originalPort
 * is assigned to the proxy listening on the rule's port. intercept_egress,
 * compiled only when some rule rewrites, gives replies leaving from a
 * rewrite rule's port their originalPort back; a policy that only steers
 * has no egress program.
 *
 * Every packet is handed on (TC_ACT_UNSPEC), so a filter attached after
 * ours still runs. Two exceptions, both a steer rule's SYN: one that finds
 * no proxy, when the rule fails closed (onProxyDown "drop"), is dropped;
 * one whose 4-tuple is in TIME_WAIT goes round the device's ingress again
 * (TC_ACT_REDIRECT) behind the reset that ends the TIME_WAIT (timewait.h).
 *
 * The policy blocks define RULE_COUNT, POLICY_REWRITES, POLICY_STEERS,
 * match_ingress and (when it rewrites) match_egress before this header. */
#ifndef INTERCEPT_PROGRAMS_H
#define INTERCEPT_PROGRAMS_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#if !defined(POLICY_REWRITES) || !defined(POLICY_STEERS)
#error "programs.h needs POLICY_REWRITES and POLICY_STEERS: include it after the policy block"
#endif

#include "types.h"
#include "maps.h"
#include "events.h"
#include "parse.h"
#include "tc_slot.h"

/* Only what the policy uses is compiled: an unused static function is an
 * error under -Wall -Werror, and a rewrite-only policy stays free of the
 * socket helpers steering needs (kernel 5.7). */
#if POLICY_REWRITES
#include "rewrite.h"
#include "rewrite_events.h"

/* rewrite — sets @which port of a packet a rewrite rule (@match) named,
 * and counts it in @counter of the packet's namespace slot, if the rule is
 * enabled. A new connection's SYN arriving is recorded too (events.h). The
 * slot is read where it is used: kept in @match across the count's map
 * lookup, it would cost every hit a register spill. */
static __always_inline void rewrite(struct __sk_buff *skb, const struct l4_packet *pkt,
				    const struct rule_match *match, enum l4_port which, enum counter_slot counter)
{
	if (!rule_enabled(match->rule) || rewrite_port(skb, pkt, which, match->port) != REWRITE_OK)
		return;
	count_packet(namespace_slot(skb), match->rule, counter, skb->len);
	if (which == PORT_DESTINATION)
		rewrite_event(skb, pkt, match);
}
#endif

#if POLICY_STEERS
#include "steer.h"
#endif

SEC("tc")
int intercept_ingress(struct __sk_buff *skb)
{
	struct l4_packet pkt;
	struct rule_match match;

	if (parse_packet(skb, &pkt) != PARSE_OK)
		return TC_ACT_UNSPEC;
	switch (match_ingress(skb, &pkt, &match)) {
#if POLICY_REWRITES
	case MATCH_REWRITE:
		rewrite(skb, &pkt, &match, PORT_DESTINATION, COUNTER_REWRITTEN_INGRESS);
		return TC_ACT_UNSPEC;
#endif
#if POLICY_STEERS
	case MATCH_STEER:
		return steer(skb, &pkt, &match);
#endif
	default:
		return TC_ACT_UNSPEC;
	}
}

#if POLICY_REWRITES
SEC("tc")
int intercept_egress(struct __sk_buff *skb)
{
	struct l4_packet pkt;
	struct rule_match match;

	if (parse_packet(skb, &pkt) != PARSE_OK)
		return TC_ACT_UNSPEC;
	if (match_egress(skb, &pkt, &match) == MATCH_REWRITE)
		rewrite(skb, &pkt, &match, PORT_SOURCE, COUNTER_REWRITTEN_EGRESS);
	return TC_ACT_UNSPEC;
}
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#endif /* INTERCEPT_PROGRAMS_H */
