/* parse.h — finds the TCP/UDP ports of a frame, or says the frame is none
 * of ours. Every header access is bounds-checked against data_end first;
 * anything unexpected (non-IP, truncated, fragment, unknown extension
 * header) returns -1 so the caller passes the packet on untouched.
 *
 * Only what a miss needs is checked here (the two ports); the rest of the
 * L4 header is checked by rewrite_port, on the hit path. */

#define IPV4_FRAGMENT_OFFSET_MASK 0x1fff /* IP_OFFSET, not exported to uapi */
#define IPV6_MAX_EXTENSION_HEADERS 4     /* enough for hop-by-hop, routing, dst opts */

/* parse_ipv4 — reads the IPv4 header after the Ethernet header. The L4
 * offset comes from IHL, so options are allowed. Non-first fragments carry
 * no L4 header and are refused. */
static __always_inline int parse_ipv4(void *data, void *data_end, struct l4_packet *pkt)
{
	struct iphdr *ip = data + ETH_HLEN;

	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		return -1;
	if (ip->frag_off & bpf_htons(IPV4_FRAGMENT_OFFSET_MASK))
		return -1;
	pkt->family = FAMILY_IPV4;
	pkt->protocol = ip->protocol;
	pkt->l4_off = ETH_HLEN + ip->ihl * 4;
	return 0;
}

/* ipv6_is_skippable — extension headers whose only job here is to be
 * stepped over. A fragment header is not one of them: fragments pass. */
static __always_inline int ipv6_is_skippable(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS;
}

/* parse_ipv6 — reads the IPv6 header and walks up to
 * IPV6_MAX_EXTENSION_HEADERS skippable extension headers. */
static __always_inline int parse_ipv6(void *data, void *data_end, struct l4_packet *pkt)
{
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u32 off = ETH_HLEN + sizeof(*ip6);
	__u8 nexthdr;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	nexthdr = ip6->nexthdr;

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXTENSION_HEADERS; i++) {
		struct ipv6_opt_hdr *ext = data + off;

		if (!ipv6_is_skippable(nexthdr))
			break;
		if ((void *)(ext + 1) > data_end)
			return -1;
		nexthdr = ext->nexthdr;
		off += (ext->hdrlen + 1) * 8; /* hdrlen counts 8-octet units after the first */
	}
	pkt->family = FAMILY_IPV6;
	pkt->protocol = nexthdr;
	pkt->l4_off = off;
	return 0;
}

/* parse_ports — reads the source and destination ports, the first four
 * bytes of both TCP and UDP headers. */
static __always_inline int parse_ports(void *data, void *data_end, struct l4_packet *pkt)
{
	__be16 *ports = data + pkt->l4_off;

	if (pkt->protocol != IPPROTO_TCP && pkt->protocol != IPPROTO_UDP)
		return -1;
	if ((void *)(ports + 2) > data_end)
		return -1;
	pkt->sport = ports[0];
	pkt->dport = ports[1];
	return 0;
}

/* parse_packet — fills @pkt for a TCP or UDP packet over IPv4 or IPv6. */
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
		return -1;
	return err ? err : parse_ports(data, data_end, pkt);
}
