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

/* What match_ingress / match_egress (the policy block) found for a
 * packet: no rule, or a rule and what its strategy does with the packet. */
enum match_result {
	MATCH_NONE    = 0, /* no rule names this packet: hand it on untouched */
	MATCH_REWRITE = 1, /* rewrite the port to match.port */
	MATCH_STEER   = 2, /* a new connection goes to the listener on match.port */
};

/* What a steer rule does with a SYN when nothing listens on its port
 * (the policy's onProxyDown). */
enum proxy_down_action {
	PROXY_DOWN_DROP = 0, /* fail closed: drop the SYN */
	PROXY_DOWN_PASS = 1, /* hand it on to whatever listens on originalPort */
};

/* The rule a packet matched, and what the rule needs to act on it. */
struct rule_match {
	__u32 rule;          /* index into the rule maps */
	__be16 port;         /* network byte order: the port to write (rewrite), or the proxy's (steer) */
	__u8 on_proxy_down;  /* enum proxy_down_action; steer rules only */
	__u8 namespace_slot; /* where a steered SYN counts (namespace_slot.h): set by steer() */
};

#endif /* INTERCEPT_TYPES_H */
