/* types.h — what the datapath knows about a packet once it is parsed, and
 * what a rule says to do with it. Plain C, no policy in here: the policy
 * lives in the generated block. */
#ifndef INTERCEPT_TYPES_H
#define INTERCEPT_TYPES_H

#include <linux/types.h>

/* Address families as the policy names them ('any' | 'ipv4' | 'ipv6'). A
 * packet is always IPv4 or IPv6; FAMILY_ANY only appears in rules. */
enum family {
	FAMILY_ANY  = 0,
	FAMILY_IPV4 = 4,
	FAMILY_IPV6 = 6,
};

/* Directions index the per-rule counters. */
enum direction {
	DIR_INGRESS = 0,
	DIR_EGRESS  = 1,
};

/* Which port of the L4 header a direction rewrites. */
enum l4_port {
	PORT_SOURCE      = 0,
	PORT_DESTINATION = 1,
};

/* The L4 header of a packet the datapath may rewrite. Offsets are from the
 * start of the frame (skb->data), so they can be re-derived into fresh,
 * bounds-checked pointers wherever a helper needs the header. */
struct l4_packet {
	__u32 l4_off;   /* start of the TCP/UDP header */
	__u8  protocol; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8  family;   /* FAMILY_IPV4 or FAMILY_IPV6 */
	__be16 sport;   /* network byte order, as on the wire */
	__be16 dport;
};

/* What match_ingress / match_egress (the policy block) found for a packet. */
enum match_result {
	MATCH_NONE  = 0, /* no rule names this packet: hand it on untouched */
	MATCH_FOUND = 1, /* @match says which rule, and the port to write */
};

/* What a rule says to do with a matching packet. */
struct rule_match {
	__u32 rule;      /* index into the rule maps */
	__be16 new_port; /* network byte order, ready to write */
};

#endif /* INTERCEPT_TYPES_H */
