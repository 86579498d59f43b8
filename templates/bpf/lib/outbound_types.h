/* outbound_types.h — what the outbound programs know about a connection an
 * application asks for, and how the kernel numbers the things they read.
 * Plain C, no policy in here: the policy's rules are in its outbound block,
 * which this header comes before. */
#ifndef INTERCEPT_OUTBOUND_TYPES_H
#define INTERCEPT_OUTBOUND_TYPES_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

/* Socket address families as the kernel numbers them: AF_INET and AF_INET6
 * live in <sys/socket.h>, which a BPF program cannot include. */
enum socket_family {
	SOCKET_FAMILY_INET  = 2,
	SOCKET_FAMILY_INET6 = 10,
};

/* SOCK_STREAM, for the same reason. */
enum socket_type {
	SOCKET_TYPE_STREAM = 1,
};

/* The getsockopt a proxy written for iptables REDIRECT makes on an accepted
 * connection: level SOL_IP, option SO_ORIGINAL_DST (<linux/netfilter_ipv4.h>)
 * for IPv4; level SOL_IPV6, option IP6T_SO_ORIGINAL_DST
 * (<linux/netfilter_ipv6/ip6_tables.h>) for IPv6. */
enum original_destination_query {
	SOCKOPT_LEVEL_IP               = 0,  /* SOL_IP */
	SOCKOPT_LEVEL_IPV6             = 41, /* SOL_IPV6 */
	SOCKOPT_ORIGINAL_DESTINATION   = 80, /* SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST alike */
};

/* Verdicts of cgroup socket programs: 1 lets the call proceed (with what the
 * program changed), 0 fails it with EPERM. The outbound programs never
 * refuse a call: a connection they do not capture goes where it was sent. */
enum cgroup_verdict {
	CGROUP_REFUSE  = 0,
	CGROUP_PROCEED = 1,
};

/* An address in one form for both families: IPv6 as it is, IPv4 mapped
 * (::ffff:a.b.c.d), so a destination network is one comparison whatever
 * the socket's family. Words in network byte order. */
struct address {
	__be32 word[4];
};

/* address_from_ipv4 — @addr (network order) in its IPv4-mapped form. */
static __always_inline void address_from_ipv4(struct address *out, __be32 addr)
{
	out->word[0] = 0;
	out->word[1] = 0;
	out->word[2] = bpf_htonl(0x0000ffff);
	out->word[3] = addr;
}

/* address_is_ipv4 — true for an IPv4-mapped address (a dual-stack socket
 * connecting to IPv4 through connect6, or an IPv4 address of ours). */
static __always_inline int address_is_ipv4(const struct address *addr)
{
	return addr->word[0] == 0 && addr->word[1] == 0 && addr->word[2] == bpf_htonl(0x0000ffff);
}

/* What match_outbound (the policy's outbound block) found for a connection. */
enum outbound_match_result {
	OUTBOUND_NONE    = 0, /* no rule captures it: it goes where it was sent */
	OUTBOUND_CAPTURE = 1, /* send it to the proxy on match.proxy_port */
};

/* The rule a connection matched. */
struct outbound_match {
	__u32 rule;        /* index into the rule maps */
	__be16 proxy_port; /* network byte order */
};

#endif /* INTERCEPT_OUTBOUND_TYPES_H */
