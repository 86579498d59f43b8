/* address.h — the addresses of a packet, for rules that select by them
 * (sources, destinations). Read only once a rule's ports matched, and
 * compared with the policy's prefixes in network byte order: a masked
 * compare against constants needs no byte swap.
 *
 * Only what the policy uses is compiled (an unused static function is an
 * error under -Wall -Werror): the policy block defines POLICY_ADDRESSES
 * and PREFIX_CONSTANTS_V4 / _V6. */
#ifndef INTERCEPT_ADDRESS_H
#define INTERCEPT_ADDRESS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

#include "types.h"

#if !defined(POLICY_ADDRESSES) || !defined(PREFIX_CONSTANTS_V4) || !defined(PREFIX_CONSTANTS_V6)
#error "address.h needs POLICY_ADDRESSES and PREFIX_CONSTANTS_V4/_V6: include it after the policy block"
#endif

/* Which way a packet goes between a client and us. A rule's sources are
 * the client's addresses and its destinations the ones the client asked
 * for, whichever way the packet travels. */
enum packet_direction {
	PACKET_REQUEST = 0, /* client to us (ingress): the client is the source */
	PACKET_REPLY   = 1, /* us to the client (egress): the client is the destination */
};

/* What packet_addresses found. */
enum address_result {
	ADDRESSES_OK        =  0,
	ADDRESSES_TRUNCATED = -1, /* the IP header is not inside the frame */
};

/* The two addresses a rule looks at, as pointers into the packet: one
 * 32-bit word (IPv4) or four (IPv6), in network byte order. */
struct packet_addresses {
	const __be32 *client; /* sources are matched against this */
	const __be32 *server; /* destinations: the address the client asked for */
};

#if POLICY_ADDRESSES
/* packet_addresses — points @addrs at the client and server addresses of
 * @pkt, a packet going @direction. Returns ADDRESSES_OK, or
 * ADDRESSES_TRUNCATED (then @addrs is not set). */
static __always_inline int packet_addresses(struct __sk_buff *skb, const struct l4_packet *pkt,
					    enum packet_direction direction, struct packet_addresses *addrs)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const __be32 *source, *destination;

	if (pkt->family == FAMILY_IPV4) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end)
			return ADDRESSES_TRUNCATED;
		source = &ip->saddr;
		destination = &ip->daddr;
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return ADDRESSES_TRUNCATED;
		source = ip6->saddr.in6_u.u6_addr32;
		destination = ip6->daddr.in6_u.u6_addr32;
	}
	addrs->client = direction == PACKET_REQUEST ? source : destination;
	addrs->server = direction == PACKET_REQUEST ? destination : source;
	return ADDRESSES_OK;
}
#endif

#if PREFIX_CONSTANTS_V4
/* ipv4_in_prefix — true when the IPv4 address at @addr lies in @net/@mask
 * (host byte order constants, swapped at compile time). */
static __always_inline int ipv4_in_prefix(const __be32 *addr, __u32 net, __u32 mask)
{
	return (addr[0] & bpf_htonl(mask)) == bpf_htonl(net);
}
#endif

#if PREFIX_CONSTANTS_V6
/* ipv6_in_prefix — the same for the IPv6 address at @addr, word by word:
 * a word the prefix does not reach has mask 0 and compiles to nothing, a
 * word it covers whole to one compare. */
static __always_inline int ipv6_in_prefix(const __be32 *addr,
					  __u32 net0, __u32 mask0, __u32 net1, __u32 mask1,
					  __u32 net2, __u32 mask2, __u32 net3, __u32 mask3)
{
	return (addr[0] & bpf_htonl(mask0)) == bpf_htonl(net0) &&
	       (addr[1] & bpf_htonl(mask1)) == bpf_htonl(net1) &&
	       (addr[2] & bpf_htonl(mask2)) == bpf_htonl(net2) &&
	       (addr[3] & bpf_htonl(mask3)) == bpf_htonl(net3);
}
#endif

#endif /* INTERCEPT_ADDRESS_H */
