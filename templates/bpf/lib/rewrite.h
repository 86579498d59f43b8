/* rewrite.h — changes one L4 port and keeps the checksum valid. */

/* rewrite_port — replaces the port at @port_off (from the start of the L4
 * header) with @new_port, both in network byte order, and patches the L4
 * checksum incrementally (ports are not in the pseudo-header). For UDP a
 * zero checksum means "none" over IPv4 and stays zero (BPF_F_MARK_MANGLED_0);
 * a computed zero is written as 0xffff.
 * Invalidates packet pointers. Returns 0, or the helpers' negative errno. */
static __always_inline int rewrite_port(struct __sk_buff *skb, const struct l4_packet *pkt,
					__u32 port_off, __be16 old_port, __be16 new_port)
{
	__u32 csum_off = pkt->l4_off;
	__u64 flags = sizeof(new_port);
	int err;

	if (pkt->protocol == IPPROTO_TCP) {
		csum_off += offsetof(struct tcphdr, check);
	} else {
		csum_off += offsetof(struct udphdr, check);
		flags |= BPF_F_MARK_MANGLED_0;
	}
	err = bpf_l4_csum_replace(skb, csum_off, old_port, new_port, flags);
	if (err)
		return err;
	return bpf_skb_store_bytes(skb, pkt->l4_off + port_off, &new_port, sizeof(new_port), 0);
}
