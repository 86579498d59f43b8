/* rewrite.h — changes one L4 port in place and keeps the checksum valid,
 * without helper calls: a direct packet write and an incremental checksum
 * update (RFC 1624), the hit path's whole cost. */
#ifndef INTERCEPT_REWRITE_H
#define INTERCEPT_REWRITE_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "types.h"

#define CHECKSUM_PARTIAL 3 /* skb->ip_summed value, not exported to uapi */

/* What rewrite_port did. */
enum rewrite_result {
	REWRITE_OK        =  0,
	REWRITE_TRUNCATED = -1, /* the L4 header is not fully inside the frame: nothing written */
};

/* The one field of the kernel's sk_buff we read; CO-RE relocates it. */
struct sk_buff {
	__u8 ip_summed:2;
} __attribute__((preserve_access_index));

/* Turns the context into the kernel's sk_buff; inlined by the verifier. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* checksum_is_partial — true when the L4 checksum is still to be completed
 * by the stack or the device (CHECKSUM_PARTIAL, as on veth). The checksum
 * field then holds only the pseudo-header seed, and the completion will sum
 * the new port: patching the field would corrupt it. This is the case
 * bpf_l4_csum_replace handles internally; reading ip_summed ourselves
 * avoids the helper call. */
static __always_inline int checksum_is_partial(struct __sk_buff *skb)
{
	struct sk_buff *kernel_skb = bpf_cast_to_kern_ctx(skb);

	return BPF_CORE_READ_BITFIELD(kernel_skb, ip_summed) == CHECKSUM_PARTIAL;
}

/* checksum_replace16 — the ones' complement checksum @check after one
 * 16-bit word changed from @from to @to: HC' = ~(~HC + ~m + m'). Byte
 * order does not matter as long as all three share it.
 *
 * It needs only the old and new word, never the rest of the data, so it is
 * also right for the first fragment of an IPv4 or IPv6 datagram: that
 * fragment's L4 checksum covers the whole datagram, most of which is in
 * later fragments this program never sees, and the receiver sums the new
 * port after reassembly. (And since the port and the checksum change by
 * amounts that cancel in a ones' complement sum, a CHECKSUM_COMPLETE
 * skb->csum over the L4 bytes stays valid as well.) */
static __always_inline __sum16 checksum_replace16(__sum16 check, __be16 from, __be16 to)
{
	__u32 sum = (__u16)~check + (__u16)~from + (__u16)to;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* write_port — stores @new_port at @port and patches @check for it.
 * UDP: a zero checksum means "none" and stays zero; a computed zero is
 * written as 0xffff. */
static __always_inline void write_port(struct __sk_buff *skb, __be16 *port, __sum16 *check,
				       __be16 new_port, int udp)
{
	__be16 old_port = *port;
	__sum16 updated;

	*port = new_port;
	if (checksum_is_partial(skb) || (udp && *check == 0))
		return;
	updated = checksum_replace16(*check, old_port, new_port);
	*check = udp && updated == 0 ? 0xffff : updated;
}

/* rewrite_port — sets the source or destination port (@which) of @pkt's
 * TCP/UDP header to @new_port (network byte order) and patches the
 * checksum. Returns REWRITE_OK, or REWRITE_TRUNCATED (nothing written).
 * Writes packet data directly: packet pointers the caller holds stay
 * valid. barrier_var keeps clang from re-deriving a header pointer after
 * its bounds check, which the verifier would refuse. */
static __always_inline int rewrite_port(struct __sk_buff *skb, const struct l4_packet *pkt,
					enum l4_port which, __be16 new_port)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = pkt->l4_off;

	if (off > 0xffff) /* tells the verifier the offset is bounded */
		return REWRITE_TRUNCATED;
	if (pkt->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = data + off;

		if ((void *)(tcp + 1) > data_end)
			return REWRITE_TRUNCATED;
		barrier_var(tcp);
		write_port(skb, which == PORT_DESTINATION ? &tcp->dest : &tcp->source, &tcp->check, new_port, 0);
	} else {
		struct udphdr *udp = data + off;

		if ((void *)(udp + 1) > data_end)
			return REWRITE_TRUNCATED;
		barrier_var(udp);
		write_port(skb, which == PORT_DESTINATION ? &udp->dest : &udp->source, &udp->check, new_port, 1);
	}
	return REWRITE_OK;
}

#endif /* INTERCEPT_REWRITE_H */
