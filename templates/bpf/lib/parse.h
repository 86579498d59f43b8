/* parse.h — finds the TCP/UDP ports of a frame, or says why the frame is
 * none of ours. Every header access is bounds-checked against data_end
 * first; anything unexpected (non-IP, truncated, a fragment after the
 * first, unknown extension header) returns a negative parse_result, and
 * the caller hands the packet on untouched.
 *
 * Only what a miss needs is checked here (the two ports); the rest of the
 * L4 header is checked by rewrite_port, on the hit path. */
#ifndef INTERCEPT_PARSE_H
#define INTERCEPT_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

#define IPV4_FRAGMENT_OFFSET_MASK 0x1fff /* IP_OFFSET, not exported to uapi */
#define IPV6_FRAGMENT_OFFSET_MASK 0xfff8 /* IP6_OFFSET, not exported to uapi */

/* Extension headers walked before giving up: RFC 8200 §4.1's order, each
 * once — hop-by-hop, destination options, routing, fragment, destination
 * options. */
#define IPV6_MAX_EXTENSION_HEADERS 5

/* The IPv6 fragment header (RFC 8200 §4.5); the kernel's struct frag_hdr
 * is not in uapi. Always 8 bytes: it has no length field. */
struct ipv6_fragment_header {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-octet units << 3 | 2 reserved bits | M flag */
	__be32 identification;
};

/* What parse_packet made of a frame: PARSE_OK, or why it is none of ours. */
enum parse_result {
	PARSE_OK             =  0,
	PARSE_NOT_IP         = -1, /* neither IPv4 nor IPv6 */
	PARSE_TRUNCATED      = -2, /* a header runs past the end of the frame */
	PARSE_MALFORMED      = -3, /* an IPv4 header shorter than its 20 bytes */
	PARSE_LATER_FRAGMENT = -4, /* a fragment that carries no L4 header */
	PARSE_NOT_L4         = -5, /* not TCP or UDP, or behind too many extension headers */
};

/* parse_ipv4 — reads the IPv4 header after the Ethernet header. The L4
 * offset comes from IHL, so options are allowed. Non-first fragments carry
 * no L4 header and are refused. */
static __always_inline int parse_ipv4(void *data, void *data_end, struct l4_packet *pkt)
{
	struct iphdr *ip = data + ETH_HLEN;

	if ((void *)(ip + 1) > data_end)
		return PARSE_TRUNCATED;
	if (ip->ihl < 5)
		return PARSE_MALFORMED;
	if (ip->frag_off & bpf_htons(IPV4_FRAGMENT_OFFSET_MASK))
		return PARSE_LATER_FRAGMENT;
	pkt->family = FAMILY_IPV4;
	pkt->protocol = ip->protocol;
	pkt->l4_off = ETH_HLEN + ip->ihl * 4;
	return PARSE_OK;
}

/* ipv6_is_skippable — extension headers whose only job here is to be
 * stepped over; their length is in their second byte. */
static __always_inline int ipv6_is_skippable(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS;
}

/* parse_ipv6 — reads the IPv6 header and walks up to
 * IPV6_MAX_EXTENSION_HEADERS extension headers. A fragment header is
 * walked too: the first fragment (offset 0) carries the L4 header and is
 * matched and rewritten like an unfragmented packet, as IPv4 first
 * fragments are; a later fragment carries none and is refused. */
static __always_inline int parse_ipv6(void *data, void *data_end, struct l4_packet *pkt)
{
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u32 off = ETH_HLEN + sizeof(*ip6);
	__u8 nexthdr;

	if ((void *)(ip6 + 1) > data_end)
		return PARSE_TRUNCATED;
	nexthdr = ip6->nexthdr;

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXTENSION_HEADERS; i++) {
		if (nexthdr == IPPROTO_FRAGMENT) {
			struct ipv6_fragment_header *frag = data + off;

			if ((void *)(frag + 1) > data_end)
				return PARSE_TRUNCATED;
			if (frag->frag_off & bpf_htons(IPV6_FRAGMENT_OFFSET_MASK))
				return PARSE_LATER_FRAGMENT;
			nexthdr = frag->nexthdr;
			off += sizeof(*frag);
		} else if (ipv6_is_skippable(nexthdr)) {
			struct ipv6_opt_hdr *ext = data + off;

			if ((void *)(ext + 1) > data_end)
				return PARSE_TRUNCATED;
			nexthdr = ext->nexthdr;
			off += (ext->hdrlen + 1) * 8; /* hdrlen counts 8-octet units after the first */
		} else {
			break;
		}
	}
	pkt->family = FAMILY_IPV6;
	pkt->protocol = nexthdr;
	pkt->l4_off = off;
	return PARSE_OK;
}

/* parse_ports — reads the source and destination ports, the first four
 * bytes of both TCP and UDP headers. */
static __always_inline int parse_ports(void *data, void *data_end, struct l4_packet *pkt)
{
	__be16 *ports = data + pkt->l4_off;

	if (pkt->protocol != IPPROTO_TCP && pkt->protocol != IPPROTO_UDP)
		return PARSE_NOT_L4;
	if ((void *)(ports + 2) > data_end)
		return PARSE_TRUNCATED;
	pkt->sport = ports[0];
	pkt->dport = ports[1];
	return PARSE_OK;
}

/* parse_packet — fills @pkt for a TCP or UDP packet over IPv4 or IPv6.
 * Returns PARSE_OK, or a negative parse_result (then @pkt is incomplete). */
static __always_inline int parse_packet(struct __sk_buff *skb, struct l4_packet *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	int err;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		err = parse_ipv4(data, data_end, pkt);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		err = parse_ipv6(data, data_end, pkt);
	else
		return PARSE_NOT_IP;
	return err != PARSE_OK ? err : parse_ports(data, data_end, pkt);
}

#endif /* INTERCEPT_PARSE_H */
