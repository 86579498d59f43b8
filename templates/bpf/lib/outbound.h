/* outbound.h — the cgroup programs of a policy's outbound section, the
 * mechanism of Merbridge (bpf/mb_connect.c, mb_sockops.c,
 * mb_get_sockopts.c) and Cilium's socket load balancer.
 *
 * out_connect4 / out_connect6 run when an application in a captured cgroup
 * calls connect(). A TCP connection a rule captures, from a task that is
 * not exempt, gets the proxy's address instead (127.0.0.1, or ::1, on the
 * rule's port) and its original destination is recorded by socket cookie.
 * No packet is rewritten: the kernel connects to the proxy, and a
 * connection made before the programs were attached is never touched.
 *
 * out_sockops ties the record to the connection once it is established
 * (the application's port is chosen only then), and deletes it when the
 * socket closes.
 *
 * out_getsockopt answers the proxy's getsockopt(SOL_IP, SO_ORIGINAL_DST) or
 * getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) on the socket it accepted,
 * from the record of the connection whose other end it is, exactly as the
 * kernel answers it behind iptables REDIRECT: proxies need no change.
 *
 * Kernel 5.7 or later (cgroup/getsockopt: 5.3; cgroup ids in connect
 * programs: 5.7).
 *
 * The policy's outbound block defines match_outbound, exempt_uid,
 * exempt_mark and OUTBOUND_EXEMPT_CGROUPS before this header. */
#ifndef INTERCEPT_OUTBOUND_H
#define INTERCEPT_OUTBOUND_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "maps.h"
#include "namespace_slot.h"
#include "outbound_types.h"
#include "outbound_maps.h"
#include "events.h"

/* What capture did with a connect(). */
enum capture_result {
	CAPTURE_REDIRECT   =  0, /* recorded: send it to the proxy */
	CAPTURE_NO_RULE    = -1, /* no rule names its destination */
	CAPTURE_DISABLED   = -2, /* the rule is switched off (rule_state) */
	CAPTURE_EXEMPT     = -3, /* the proxy's own connection */
	CAPTURE_UNRECORDED = -4, /* the record could not be written: the proxy could not tell where it goes */
};

/* in_exempt_cgroup — true when the calling task's cgroup is an exempt one
 * or lies below it. */
static __always_inline int in_exempt_cgroup(void)
{
#if OUTBOUND_EXEMPT_CGROUPS > 0
	for (__u32 slot = 0; slot < OUTBOUND_EXEMPT_CGROUPS; slot++) {
		struct exempt_cgroup *cgroup = bpf_map_lookup_elem(&exempt_cgroups, &slot);

		if (cgroup && cgroup->id && bpf_get_current_ancestor_cgroup_id(cgroup->level) == cgroup->id)
			return 1;
	}
#endif
	return 0;
}

/* event_task — the calling task: pid, uid, command and cgroup. */
static __always_inline void event_task(struct flow_event *event)
{
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->uid = (__u32)bpf_get_current_uid_gid();
	event->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(event->comm, sizeof(event->comm));
}

/* exempt_reason — why the proxy's own connect() is never captured: the
 * task's uid, the socket's mark, or the task's cgroup, as the policy
 * exempts it; REASON_NONE when it is not exempt. */
static __always_inline enum flow_reason exempt_reason(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (exempt_uid((__u32)bpf_get_current_uid_gid()))
		return REASON_EXEMPT_UID;
	if (sk && exempt_mark(sk->mark))
		return REASON_EXEMPT_MARK;
	if (in_exempt_cgroup())
		return REASON_EXEMPT_CGROUP;
	return REASON_NONE;
}

/* connect_event — records a connect() to @dst a rule (@match) named, sent
 * to the proxy or left alone (@verdict, @reason), with the task that made
 * it, when the rule's records are on. */
static __always_inline void connect_event(struct bpf_sock_addr *ctx, const struct address *dst, __u8 family,
					  const struct outbound_match *match,
					  enum flow_verdict verdict, enum flow_reason reason)
{
	struct flow_event *event = event_start(match->rule, verdict, reason);

	if (!event)
		return;
	event_task(event);
	event->protocol = IPPROTO_TCP;
	event->family = family;
	__builtin_memcpy(event->destination.word, dst->word, sizeof(event->destination.word));
	event->destination_port = (__be16)ctx->user_port;
	if (verdict == VERDICT_REDIRECTED) {
		if (family == FAMILY_IPV4)
			event_ipv4(&event->target, bpf_htonl(INADDR_LOOPBACK));
		else
			event->target.word[3] = bpf_htonl(1);
		event->target_port = match->proxy_port;
	}
	event_send(event);
}

/* capture — decides whether the connect() in @ctx to @dst goes to a proxy;
 * if so, records the original destination under the socket's cookie, counts
 * it, and fills @match. @family is how the proxy will ask for it. */
static __always_inline int capture(struct bpf_sock_addr *ctx, const struct address *dst, __u8 family,
				   struct outbound_match *match)
{
	struct original_destination original = {};
	__be16 port = (__be16)ctx->user_port;
	enum flow_reason exempt;
	__u64 cookie;

	if (ctx->type != SOCKET_TYPE_STREAM || ctx->protocol != IPPROTO_TCP)
		return CAPTURE_NO_RULE;
	if (match_outbound(dst, port, match) != OUTBOUND_CAPTURE)
		return CAPTURE_NO_RULE;
	if (!rule_enabled(match->rule))
		return CAPTURE_DISABLED;
	exempt = exempt_reason(ctx);
	if (exempt != REASON_NONE) {
		connect_event(ctx, dst, family, match, VERDICT_EXEMPT, exempt);
		return CAPTURE_EXEMPT;
	}
	original.addr = *dst;
	original.port = port;
	original.family = family;
	original.rule = match->rule;
	cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, &original, BPF_ANY) != 0)
		return CAPTURE_UNRECORDED;
	count_packet(LOADER_SLOT, match->rule, COUNTER_REDIRECTED, 0);
	connect_event(ctx, dst, family, match, VERDICT_REDIRECTED, REASON_NONE);
	return CAPTURE_REDIRECT;
}

SEC("cgroup/connect4")
int out_connect4(struct bpf_sock_addr *ctx)
{
	struct outbound_match match;
	struct address dst;

	address_from_ipv4(&dst, ctx->user_ip4);
	if (capture(ctx, &dst, FAMILY_IPV4, &match) == CAPTURE_REDIRECT) {
		ctx->user_ip4 = bpf_htonl(INADDR_LOOPBACK);
		ctx->user_port = match.proxy_port;
	}
	return CGROUP_PROCEED;
}

SEC("cgroup/connect6")
int out_connect6(struct bpf_sock_addr *ctx)
{
	struct outbound_match match;
	struct address dst;
	int ipv4;

	dst.word[0] = ctx->user_ip6[0];
	dst.word[1] = ctx->user_ip6[1];
	dst.word[2] = ctx->user_ip6[2];
	dst.word[3] = ctx->user_ip6[3];
	/* A dual-stack socket connecting to IPv4 (::ffff:a.b.c.d) stays IPv4:
	 * it goes to the proxy's IPv4 address, where SOL_IP asks for it. */
	ipv4 = address_is_ipv4(&dst);
	if (capture(ctx, &dst, ipv4 ? FAMILY_IPV4 : FAMILY_IPV6, &match) != CAPTURE_REDIRECT)
		return CGROUP_PROCEED;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = ipv4 ? bpf_htonl(0x0000ffff) : 0;
	ctx->user_ip6[3] = ipv4 ? bpf_htonl(INADDR_LOOPBACK) : bpf_htonl(1);
	ctx->user_port = match.proxy_port;
	return CGROUP_PROCEED;
}

/* client_connection — the connection of the application's socket in
 * @skops, keyed as the proxy's accepted socket will look it up. The IPv6
 * fields are read whatever the family, so no load depends on it: clang
 * would otherwise merge the two families' loads into one through a
 * computed context pointer, which the verifier refuses. */
static __always_inline void client_connection(const struct bpf_sock_ops *skops, struct connection_key *key)
{
	key->client.word[0] = skops->local_ip6[0];
	key->client.word[1] = skops->local_ip6[1];
	key->client.word[2] = skops->local_ip6[2];
	key->client.word[3] = skops->local_ip6[3];
	key->proxy.word[0] = skops->remote_ip6[0];
	key->proxy.word[1] = skops->remote_ip6[1];
	key->proxy.word[2] = skops->remote_ip6[2];
	key->proxy.word[3] = skops->remote_ip6[3];
	if (skops->family == SOCKET_FAMILY_INET) {
		address_from_ipv4(&key->client, skops->local_ip4);
		address_from_ipv4(&key->proxy, skops->remote_ip4);
	}
	/* local_port is in host order; remote_port in network order, in the
	 * upper half of the word on little-endian: ntohl gives the port. */
	key->client_port = bpf_htons((__u16)skops->local_port);
	key->proxy_port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
}

/* follow_if_captured — asks to hear of the state changes of a connecting
 * socket whose connect() was captured, so its record can go when it closes. */
static __always_inline void follow_if_captured(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);

	if (bpf_map_lookup_elem(&orig_by_cookie, &cookie))
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* tie_to_connection — moves a captured socket's record from its cookie to
 * its connection, now that the application's address and port are known.
 * Runs before the application's ACK is sent: the proxy cannot accept the
 * connection before its record is there. */
static __always_inline void tie_to_connection(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct original_destination *original = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
	struct connection_key key = {};

	if (!original)
		return;
	client_connection(skops, &key);
	bpf_map_update_elem(&orig_by_conn, &key, original, BPF_ANY);
	bpf_map_delete_elem(&orig_by_cookie, &cookie);
}

/* forget_connection — deletes a closing socket's records (either one: it
 * may close before it was ever established). */
static __always_inline void forget_connection(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct connection_key key = {};

	bpf_map_delete_elem(&orig_by_cookie, &cookie);
	client_connection(skops, &key);
	bpf_map_delete_elem(&orig_by_conn, &key);
}

SEC("sockops")
int out_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		follow_if_captured(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		tie_to_connection(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			forget_connection(skops);
		break;
	default:
		break;
	}
	return CGROUP_PROCEED;
}

/* proxy_connection — the connection of the proxy's accepted socket @sk,
 * keyed as client_connection keyed the application's end (and read the
 * same way, for the same reason). */
static __always_inline void proxy_connection(const struct bpf_sock *sk, struct connection_key *key)
{
	key->client.word[0] = sk->dst_ip6[0];
	key->client.word[1] = sk->dst_ip6[1];
	key->client.word[2] = sk->dst_ip6[2];
	key->client.word[3] = sk->dst_ip6[3];
	key->proxy.word[0] = sk->src_ip6[0];
	key->proxy.word[1] = sk->src_ip6[1];
	key->proxy.word[2] = sk->src_ip6[2];
	key->proxy.word[3] = sk->src_ip6[3];
	if (sk->family == SOCKET_FAMILY_INET) {
		address_from_ipv4(&key->client, sk->dst_ip4);
		address_from_ipv4(&key->proxy, sk->src_ip4);
	}
	key->client_port = sk->dst_port;                 /* network order */
	key->proxy_port = bpf_htons((__u16)sk->src_port); /* host order */
}

/* answer_ipv4 — SO_ORIGINAL_DST: the original destination as a struct
 * sockaddr_in, when it was IPv4 and the proxy's buffer holds one. */
static __always_inline void answer_ipv4(struct bpf_sockopt *ctx, const struct original_destination *original)
{
	struct sockaddr_in *sin = ctx->optval;

	if (original->family != FAMILY_IPV4 || (void *)(sin + 1) > ctx->optval_end)
		return;
	__builtin_memset(sin, 0, sizeof(*sin));
	sin->sin_family = SOCKET_FAMILY_INET;
	sin->sin_port = original->port;
	sin->sin_addr.s_addr = original->addr.word[3];
	ctx->optlen = sizeof(*sin);
	ctx->retval = 0;
}

/* answer_ipv6 — IP6T_SO_ORIGINAL_DST: the original destination as a struct
 * sockaddr_in6 (an IPv4 one mapped), when the proxy's buffer holds one. */
static __always_inline void answer_ipv6(struct bpf_sockopt *ctx, const struct original_destination *original)
{
	struct sockaddr_in6 *sin6 = ctx->optval;

	if ((void *)(sin6 + 1) > ctx->optval_end)
		return;
	__builtin_memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = SOCKET_FAMILY_INET6;
	sin6->sin6_port = original->port;
	sin6->sin6_addr.in6_u.u6_addr32[0] = original->addr.word[0];
	sin6->sin6_addr.in6_u.u6_addr32[1] = original->addr.word[1];
	sin6->sin6_addr.in6_u.u6_addr32[2] = original->addr.word[2];
	sin6->sin6_addr.in6_u.u6_addr32[3] = original->addr.word[3];
	ctx->optlen = sizeof(*sin6);
	ctx->retval = 0;
}

/* sockopt_event — records a proxy's query for the original destination of
 * its connection @key: answered from @original, or not found (NULL, a
 * record of no rule), when the records are on. */
static __always_inline void sockopt_event(const struct connection_key *key, const struct original_destination *original,
					  __u8 family)
{
	__u32 rule = original ? original->rule : EVENTS_NO_RULE;
	struct flow_event *event;

	event = event_start(rule, VERDICT_ORIGINAL_DST, original ? REASON_ANSWERED : REASON_NOT_FOUND);
	if (!event)
		return;
	event_task(event);
	event->protocol = IPPROTO_TCP;
	event->family = family;
	__builtin_memcpy(event->source.word, key->client.word, sizeof(event->source.word));
	__builtin_memcpy(event->target.word, key->proxy.word, sizeof(event->target.word));
	event->source_port = key->client_port;
	event->target_port = key->proxy_port;
	if (original) {
		__builtin_memcpy(event->destination.word, original->addr.word, sizeof(event->destination.word));
		event->destination_port = original->port;
	}
	event_send(event);
}

/* Every getsockopt of a task in the cgroup passes here; only the original
 * destination query of a connection we recorded is answered, and its
 * answer replaces the kernel's (ENOENT or ENOPROTOOPT without conntrack,
 * the proxy's own address with it). Anything else stands as the kernel
 * made it. */
SEC("cgroup/getsockopt")
int out_getsockopt(struct bpf_sockopt *ctx)
{
	struct original_destination *original;
	struct connection_key key = {};
	struct bpf_sock *sk = ctx->sk;
	__u8 family;

	if (ctx->optname != SOCKOPT_ORIGINAL_DESTINATION || !sk)
		return CGROUP_PROCEED;
	if (ctx->level != SOCKOPT_LEVEL_IP && ctx->level != SOCKOPT_LEVEL_IPV6)
		return CGROUP_PROCEED;
	proxy_connection(sk, &key);
	family = ctx->level == SOCKOPT_LEVEL_IP ? FAMILY_IPV4 : FAMILY_IPV6;
	original = bpf_map_lookup_elem(&orig_by_conn, &key);
	sockopt_event(&key, original, family);
	if (!original)
		return CGROUP_PROCEED;
	if (family == FAMILY_IPV4)
		answer_ipv4(ctx, original);
	else
		answer_ipv6(ctx, original);
	return CGROUP_PROCEED;
}

#endif /* INTERCEPT_OUTBOUND_H */
