/* steer.h — hands a new TCP connection to a proxy's listening socket
 * instead of rewriting its packets, the mechanism of Cilium's L7 proxy
 * (bpf/lib/proxy.h). At tc ingress, a SYN that a steer rule matched is
 * looked up against the listeners on the rule's port (bpf_skc_lookup_tcp)
 * and assigned to the one found (bpf_sk_assign). The packet itself is not
 * changed: the accepted socket's local address is the one the client asked
 * for (getsockname gives originalPort), replies need no rewrite, and every
 * later segment reaches its connection through the kernel's own socket
 * lookup, so connections already open are never disturbed.
 *
 * Kernel 5.7 or later. A listener in a SO_REUSEPORT group needs 6.5: from
 * there the stack picks the group member itself after the assignment (by
 * the packet's own 4-tuple); before, bpf_sk_assign refuses such a socket,
 * which takes the proxy-down path. */
#ifndef INTERCEPT_STEER_H
#define INTERCEPT_STEER_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "maps.h"

/* What assign_listener did with a SYN. */
enum steer_result {
	STEER_ASSIGNED    =  0,
	STEER_NO_LISTENER = -1, /* nothing listens on the proxy port for this address */
	STEER_REFUSED     = -2, /* bpf_sk_assign refused the listener it found */
	STEER_TRUNCATED   = -3, /* the IP header is not inside the frame */
};

/* is_new_connection — true for a SYN without ACK, the first segment of a
 * connection. Any other segment belongs to a connection the kernel already
 * knows, with whichever socket has it. */
static __always_inline int is_new_connection(struct __sk_buff *skb, const struct l4_packet *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = pkt->l4_off;
	struct tcphdr *tcp;

	if (off > 0xffff) /* tells the verifier the offset is bounded */
		return 0;
	tcp = data + off;
	if ((void *)(tcp + 1) > data_end)
		return 0;
	return tcp->syn && !tcp->ack;
}

/* listener_key — the socket lookup key for the proxy's listener: @pkt's
 * destination address with @proxy_port, and no source. A zero source
 * matches no connection (no peer is 0.0.0.0:0), so only a listener can be
 * found, never an unrelated connection to the proxy port that happens to
 * come from the same client address and port. A listener bound to the
 * wildcard address is found for any destination; for an IPv4 packet, so is
 * a dual-stack IPv6 one (bound to ::, not IPV6_V6ONLY), as the stack's own
 * IPv4 lookup finds it. Returns the key's size, or STEER_TRUNCATED. */
static __always_inline int listener_key(struct __sk_buff *skb, const struct l4_packet *pkt,
					__be16 proxy_port, struct bpf_sock_tuple *key)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (pkt->family == FAMILY_IPV4) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end)
			return STEER_TRUNCATED;
		key->ipv4.daddr = ip->daddr;
		key->ipv4.dport = proxy_port;
		return sizeof(key->ipv4);
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return STEER_TRUNCATED;
		__builtin_memcpy(key->ipv6.daddr, &ip6->daddr, sizeof(key->ipv6.daddr));
		key->ipv6.dport = proxy_port;
		return sizeof(key->ipv6);
	}
}

/* assign_listener — assigns @skb to the socket listening on @proxy_port
 * for its destination address. The lookup takes a reference, released
 * here whatever happens; the assignment holds its own. */
static __always_inline int assign_listener(struct __sk_buff *skb, const struct l4_packet *pkt, __be16 proxy_port)
{
	struct bpf_sock_tuple key = {};
	struct bpf_sock *sk;
	int size;
	long err;

	size = listener_key(skb, pkt, proxy_port, &key);
	if (size < 0)
		return STEER_TRUNCATED;
	sk = bpf_skc_lookup_tcp(skb, &key, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return STEER_NO_LISTENER;
	if (sk->state != BPF_TCP_LISTEN) { /* cannot match with no source; checked, not assumed */
		bpf_sk_release(sk);
		return STEER_NO_LISTENER;
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return err ? STEER_REFUSED : STEER_ASSIGNED;
}

/* steer — what ingress does with a packet a steer rule (@match) named.
 * Only a new connection of an enabled rule is acted on; every other packet
 * is handed on untouched. Returns the tc verdict: TC_ACT_UNSPEC, or
 * TC_ACT_SHOT for a SYN no proxy listens for when the rule fails closed. */
static __always_inline int steer(struct __sk_buff *skb, const struct l4_packet *pkt, const struct rule_match *match)
{
	if (!is_new_connection(skb, pkt) || !rule_enabled(match->rule))
		return TC_ACT_UNSPEC;
	switch (assign_listener(skb, pkt, match->port)) {
	case STEER_ASSIGNED:
		count_packet(match->rule, COUNTER_STEERED, skb->len);
		return TC_ACT_UNSPEC;
	case STEER_TRUNCATED:
		return TC_ACT_UNSPEC;
	default:
		count_packet(match->rule, COUNTER_PROXY_DOWN, skb->len);
		return match->on_proxy_down == PROXY_DOWN_PASS ? TC_ACT_UNSPEC : TC_ACT_SHOT;
	}
}

#endif /* INTERCEPT_STEER_H */
