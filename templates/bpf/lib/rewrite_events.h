/* rewrite_events.h — the record of a rewrite rule: one per new TCP
 * connection, at its SYN, never per packet. A UDP flow has no first
 * packet the program could tell without keeping state per flow, so
 * rewritten datagrams are counted, never recorded. */
#ifndef INTERCEPT_REWRITE_EVENTS_H
#define INTERCEPT_REWRITE_EVENTS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "events.h"
#include "tc_slot.h"

/* event_is_syn — true for the SYN of a new TCP connection: the first
 * packet of a flow, the one a rewrite rule records (a UDP datagram has no
 * first packet the program could tell, and is never recorded). */
static __always_inline int event_is_syn(struct __sk_buff *skb, const struct l4_packet *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = pkt->l4_off;
	struct tcphdr *tcp;

	if (pkt->protocol != IPPROTO_TCP || off > 0xffff) /* the bound tells the verifier */
		return 0;
	tcp = data + off;
	if ((void *)(tcp + 1) > data_end)
		return 0;
	return tcp->syn && !tcp->ack;
}

/* event_addresses — @pkt's addresses and ports into @event, read from
 * its IP header (parse_packet keeps only the offsets). */
static __always_inline void event_addresses(struct __sk_buff *skb, const struct l4_packet *pkt,
					    struct flow_event *event)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	event->family = pkt->family;
	event->protocol = pkt->protocol;
	event->source_port = pkt->sport;
	event->destination_port = pkt->dport;
	if (pkt->family == FAMILY_IPV4) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end)
			return;
		event_ipv4(&event->source, ip->saddr);
		event_ipv4(&event->destination, ip->daddr);
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return;
		__builtin_memcpy(event->source.word, &ip6->saddr, sizeof(event->source.word));
		__builtin_memcpy(event->destination.word, &ip6->daddr, sizeof(event->destination.word));
	}
}

/* rewrite_event — records a new TCP connection whose SYN (@pkt, read
 * before the rewrite) a rewrite rule (@match) sent to its port. */
static __always_inline void rewrite_event(struct __sk_buff *skb, const struct l4_packet *pkt,
					  const struct rule_match *match)
{
	struct flow_event *event;

	if (!event_is_syn(skb, pkt))
		return;
	event = event_start(match->rule, VERDICT_REWRITTEN, REASON_NONE);
	if (!event)
		return;
	event->ifindex = skb->ifindex;
	event->namespace_slot = namespace_slot(skb); /* a SYN's record: read again, not kept across the count */
	event_addresses(skb, pkt, event);
	event->target = event->destination;
	event->target_port = match->port;
	event_send(event);
}

#endif /* INTERCEPT_REWRITE_EVENTS_H */
