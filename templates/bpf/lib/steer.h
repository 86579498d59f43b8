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
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "maps.h"
#include "events.h"
#include "tc_slot.h"
#include "timewait.h"

/* What packet_tuple and assign_listener made of a SYN. */
enum steer_result {
	STEER_ASSIGNED    =  0,
	STEER_NO_LISTENER = -1, /* nothing listens on the proxy port for this address */
	STEER_REFUSED     = -2, /* bpf_sk_assign refused the listener it found */
	STEER_TRUNCATED   = -3, /* the IP header is not inside the frame */
};

/* What the kernel already holds for a SYN's own 4-tuple. */
enum tuple_state {
	TUPLE_FREE      = 0, /* nothing, or only a listener on originalPort */
	TUPLE_CONNECTED = 1, /* a connection or a half-open one: this SYN is a retransmission */
	TUPLE_TIME_WAIT = 2, /* a connection closed here moments ago, still in TIME_WAIT */
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

/* packet_tuple — @pkt's own 4-tuple as a socket lookup key, read from
 * the packet: addresses from the IP header, ports from the TCP header at
 * pkt->l4_off. Returns the key's size, or STEER_TRUNCATED. The family and
 * ports are read again (the family from skb->protocol, as parse_packet
 * read it) rather than kept from the parse: a few loads on the SYN path
 * spare every other packet the register spills that keeping them costs. */
static __always_inline int packet_tuple(struct __sk_buff *skb, const struct l4_packet *pkt, struct bpf_sock_tuple *key)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = pkt->l4_off;
	struct tcphdr *tcp;

	if (off > 0xffff) /* tells the verifier the offset is bounded */
		return STEER_TRUNCATED;
	tcp = data + off;
	if ((void *)(tcp + 1) > data_end)
		return STEER_TRUNCATED;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end)
			return STEER_TRUNCATED;
		key->ipv4.saddr = ip->saddr;
		key->ipv4.daddr = ip->daddr;
		key->ipv4.sport = tcp->source;
		key->ipv4.dport = tcp->dest;
		return sizeof(key->ipv4);
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return STEER_TRUNCATED;
		__builtin_memcpy(key->ipv6.saddr, &ip6->saddr, sizeof(key->ipv6.saddr));
		__builtin_memcpy(key->ipv6.daddr, &ip6->daddr, sizeof(key->ipv6.daddr));
		key->ipv6.sport = tcp->source;
		key->ipv6.dport = tcp->dest;
		return sizeof(key->ipv6);
	}
}

/* listener_key — the lookup key for the proxy's listener: the packet's
 * own @tuple (@size bytes: IPv4 or IPv6) with the destination port set to
 * @proxy_port and no source. A zero source matches no connection (no peer
 * is 0.0.0.0:0), so only a listener can be found, never an unrelated
 * connection to the proxy port that happens to come from the same client
 * address and port. A listener bound to the wildcard address is found for
 * any destination; for an IPv4 packet, so is a dual-stack IPv6 one (bound
 * to ::, not IPV6_V6ONLY), as the stack's own IPv4 lookup finds it. */
static __always_inline void listener_key(const struct bpf_sock_tuple *tuple, int size, __be16 proxy_port,
					 struct bpf_sock_tuple *key)
{
	*key = *tuple;
	if (size == sizeof(key->ipv4)) {
		key->ipv4.saddr = 0;
		key->ipv4.sport = 0;
		key->ipv4.dport = proxy_port;
	} else {
		__builtin_memset(key->ipv6.saddr, 0, sizeof(key->ipv6.saddr));
		key->ipv6.sport = 0;
		key->ipv6.dport = proxy_port;
	}
}

/* tuple_state — what the kernel holds for @tuple (@size bytes), the SYN's
 * own, looked up first (Cilium's proxy path does the same): a SYN for a
 * tuple that is a connection or a half-open one is a retransmission the
 * stack answers itself, and must not become a second connection at the
 * proxy. A tuple in TIME_WAIT (the client reused its port for a
 * connection the server side closed less than a minute ago) cannot be
 * given to the proxy as it is: the kernel refuses a request socket whose
 * tuple it still holds. For such a tuple, @time_wait receives what the
 * kernel would judge a new SYN by (timewait.h). */
static __always_inline enum tuple_state tuple_state(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, int size,
						    struct time_wait *time_wait)
{
	struct bpf_sock *sk;
	enum tuple_state state = TUPLE_FREE;

	sk = bpf_skc_lookup_tcp(skb, tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return TUPLE_FREE;
	if (sk->state == BPF_TCP_TIME_WAIT) {
		state = TUPLE_TIME_WAIT;
		read_time_wait(sk, time_wait);
	} else if (sk->state != BPF_TCP_LISTEN) { /* a listener on originalPort is not this connection */
		state = TUPLE_CONNECTED;
	}
	bpf_sk_release(sk);
	return state;
}

/* assign_listener — assigns @skb to the socket listening on @proxy_port
 * for its destination address (@tuple: the packet's own, @size bytes).
 * The lookup takes a reference, released here whatever happens; the
 * assignment holds its own. */
static __always_inline int assign_listener(struct __sk_buff *skb, const struct bpf_sock_tuple *tuple, int size,
					   __be16 proxy_port)
{
	struct bpf_sock_tuple key;
	struct bpf_sock *sk;
	long err;

	listener_key(tuple, size, proxy_port, &key);
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

/* steer_event — records what became of a SYN (@tuple, @size bytes: its
 * own 4-tuple) that a steer rule (@match) matched, when the rule's records
 * are on. The target is the proxy's port on the address the client asked
 * for, where the listener was, or was not, found. */
static __always_inline void steer_event(struct __sk_buff *skb, const struct rule_match *match,
					const struct bpf_sock_tuple *tuple, int size,
					enum flow_verdict verdict, enum flow_reason reason)
{
	struct flow_event *event = event_start(match->rule, verdict, reason);

	if (!event)
		return;
	event->protocol = IPPROTO_TCP;
	event->ifindex = skb->ifindex;
	event->namespace_slot = match->namespace_slot;
	if (size == sizeof(tuple->ipv4)) {
		event->family = FAMILY_IPV4;
		event_ipv4(&event->source, tuple->ipv4.saddr);
		event_ipv4(&event->destination, tuple->ipv4.daddr);
		event->source_port = tuple->ipv4.sport;
		event->destination_port = tuple->ipv4.dport;
	} else {
		event->family = FAMILY_IPV6;
		__builtin_memcpy(event->source.word, tuple->ipv6.saddr, sizeof(event->source.word));
		__builtin_memcpy(event->destination.word, tuple->ipv6.daddr, sizeof(event->destination.word));
		event->source_port = tuple->ipv6.sport;
		event->destination_port = tuple->ipv6.dport;
	}
	event->target = event->destination;
	event->target_port = match->port;
	event_send(event);
}

/* proxy_unavailable — the verdict for a SYN (@tuple, @size bytes) the
 * proxy cannot take, counted in @counter and recorded as @verdict: dropped
 * when the rule fails closed, else handed on to whatever listens on
 * originalPort. */
static __always_inline int proxy_unavailable(struct __sk_buff *skb, const struct rule_match *match,
					     const struct bpf_sock_tuple *tuple, int size,
					     enum counter_slot counter, enum flow_verdict verdict)
{
	int pass = match->on_proxy_down == PROXY_DOWN_PASS;

	count_packet(match->namespace_slot, match->rule, counter, skb->len);
	steer_event(skb, match, tuple, size, verdict, pass ? REASON_PASSED : REASON_DROPPED);
	return pass ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

/* time_wait_syn — the verdict for a SYN whose tuple the server holds in
 * TIME_WAIT: when the kernel would reopen the tuple for it, a RST ends the
 * TIME_WAIT and the SYN goes round ingress again behind it, to be steered
 * on its second pass (timewait.h). Otherwise — the kernel would not reopen
 * it either, or this tuple's RST was sent less than a second ago and did
 * not take — the rule's onProxyDown applies, counted in timeWait. */
static __always_inline int time_wait_syn(struct __sk_buff *skb, const struct l4_packet *pkt, const struct rule_match *match,
					 const struct bpf_sock_tuple *tuple, int size, const struct time_wait *time_wait)
{
	switch (reopen_time_wait(skb, pkt, tuple, time_wait)) {
	case REOPEN_SENT:
		return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
	case REOPEN_CORRUPTED: /* never hand on a frame that may still be the RST */
		count_packet(match->namespace_slot, match->rule, COUNTER_TIME_WAIT, skb->len);
		steer_event(skb, match, tuple, size, VERDICT_TIME_WAIT, REASON_DROPPED);
		return TC_ACT_SHOT;
	default:
		return proxy_unavailable(skb, match, tuple, size, COUNTER_TIME_WAIT, VERDICT_TIME_WAIT);
	}
}

/* steer_syn — the verdict for a new connection's SYN of an enabled steer
 * rule (@match): assigned to the proxy's listener, or onProxyDown when
 * there is none; a retransmission is the stack's own; a tuple in TIME_WAIT
 * goes through time_wait_syn. Its locals live here, not in steer(), so
 * that every other packet is spared their initialisation. */
static __always_inline int steer_syn(struct __sk_buff *skb, const struct l4_packet *pkt, const struct rule_match *match)
{
	struct bpf_sock_tuple tuple = {}; /* zero-padded: a time_wait_tries key */
	struct time_wait time_wait = {};
	enum flow_reason reason;
	int size;

	size = packet_tuple(skb, pkt, &tuple);
	if (size < 0)
		return TC_ACT_UNSPEC;
	switch (tuple_state(skb, &tuple, size, &time_wait)) {
	case TUPLE_FREE:
		break;
	case TUPLE_TIME_WAIT:
		return time_wait_syn(skb, pkt, match, &tuple, size, &time_wait);
	default: /* a retransmission: the stack's own */
		return TC_ACT_UNSPEC;
	}
	switch (assign_listener(skb, &tuple, size, match->port)) {
	case STEER_ASSIGNED:
		count_packet(match->namespace_slot, match->rule, COUNTER_STEERED, skb->len);
		reason = REASON_NONE;
		if (time_wait_reopened(&tuple)) {
			count_packet(match->namespace_slot, match->rule, COUNTER_TIME_WAIT_RECYCLED, skb->len);
			reason = REASON_TIME_WAIT_RECYCLED;
		}
		steer_event(skb, match, &tuple, size, VERDICT_STEERED, reason);
		return TC_ACT_UNSPEC;
	default:
		return proxy_unavailable(skb, match, &tuple, size, COUNTER_PROXY_DOWN, VERDICT_PROXY_DOWN);
	}
}

/* steer — what ingress does with a packet a steer rule (@match) named.
 * Only a new connection of an enabled rule is acted on, in the namespace
 * slot it arrived in; every other packet is handed on untouched. Returns the tc verdict: TC_ACT_UNSPEC;
 * TC_ACT_REDIRECT for a SYN sent round ingress again behind the RST that
 * ends its tuple's TIME_WAIT; or TC_ACT_SHOT for a SYN the proxy cannot
 * take when the rule fails closed. */
static __always_inline int steer(struct __sk_buff *skb, const struct l4_packet *pkt, struct rule_match *match)
{
	if (!is_new_connection(skb, pkt) || !rule_enabled(match->rule))
		return TC_ACT_UNSPEC;
	match->namespace_slot = namespace_slot(skb);
	return steer_syn(skb, pkt, match);
}

#endif /* INTERCEPT_STEER_H */
