/* types.h — what the datapath knows about a packet once it is parsed.
 * Plain C, no policy in here: the policy lives in the generated block. */

/* Address families as the policy names them ('ipv4' | 'ipv6'). */
#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

/* Directions index the per-rule counters. */
#define DIR_INGRESS 0
#define DIR_EGRESS  1

/* The L4 header of a packet the datapath may rewrite. Offsets are from the
 * start of the frame, so they stay valid after helpers that invalidate
 * packet pointers (bpf_skb_store_bytes, bpf_l4_csum_replace). */
struct l4_packet {
	__u32 l4_off;   /* start of the TCP/UDP header */
	__u8  protocol; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8  family;   /* FAMILY_IPV4 or FAMILY_IPV6 */
	__be16 sport;   /* network byte order, as on the wire */
	__be16 dport;
};

/* What a rule says to do with a matching packet. */
struct rule_match {
	__u32 rule;      /* index into the rule maps */
	__be16 new_port; /* network byte order, ready to write */
};

/* Which port of the L4 header a direction rewrites. */
#define PORT_SOURCE      0
#define PORT_DESTINATION 1
