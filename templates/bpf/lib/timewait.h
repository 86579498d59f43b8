/* timewait.h — lets a steered SYN reopen a 4-tuple the server still holds
 * in TIME_WAIT, as the kernel lets a SYN it handles itself.
 *
 * When the proxy closed first, the server keeps the connection's tuple
 * (originalPort ↔ the client's port) in TIME_WAIT for a minute. A client
 * that reuses its port meanwhile sends a SYN for that tuple. Without
 * steering, the kernel accepts it (tcp_timewait_state_process returns
 * TCP_TW_SYN when the SYN's sequence number is after the old connection's
 * rcv_nxt): it ends the TIME_WAIT and hands the SYN to the listener of the
 * packet's own port. A SYN assigned to the proxy's listener never gets
 * there: the request socket is refused while its tuple is still in the
 * established hash (inet_ehash_insert finds the TIME_WAIT), and the SYN
 * is dropped.
 *
 * So the program ends the TIME_WAIT first, the way the kernel lets the
 * peer end it (RFC 793 TIME-WAIT assassination, honoured while
 * net.ipv4.tcp_rfc1337 is 0, the default): a RST for exactly that tuple,
 * its sequence number the TIME_WAIT's rcv_nxt. The SYN is turned into that
 * RST in place, a clone of it goes to the device's ingress
 * (bpf_clone_redirect), the SYN is restored byte for byte, and is itself
 * redirected to the same ingress (bpf_redirect). Both go through the
 * device's forward path into this CPU's backlog (netif_rx), in that order:
 * the stack processes the RST, which deschedules the TIME_WAIT socket,
 * before the SYN runs through this program a second time and finds its
 * tuple free.
 *
 * Only where the kernel itself would reopen the tuple: a true TIME_WAIT
 * (not a dead FIN_WAIT2), a SYN whose sequence number is after the
 * TIME_WAIT's rcv_nxt, and tcp_rfc1337 = 0 in the socket's namespace. And
 * at most once a second per tuple: time_wait_tries remembers each try, so
 * a SYN that meets the same TIME_WAIT on its second pass (the RST did not
 * take: dropped on a full backlog, or by a firewall) is not sent round
 * again. In all those cases the caller takes its fallback.
 *
 * Needs kernel BTF (CO-RE), bpf_skc_to_tcp_timewait_sock (5.9) and
 * bpf_probe_read_kernel, which the kernel offers only to a loader with
 * CAP_PERFMON or CAP_SYS_ADMIN, and not under lockdown=confidentiality. */
#ifndef INTERCEPT_TIMEWAIT_H
#define INTERCEPT_TIMEWAIT_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

#define TIME_WAIT_RETRY_NS 1000000000ULL /* one try per tuple per second */
#define TIME_WAIT_TRIES 1024             /* tuples remembered; an entry lives for microseconds when it works */
#define TCP_SUBSTATE_TIME_WAIT 6         /* TCP_TIME_WAIT; 5 (TCP_FIN_WAIT2) is a dead FIN_WAIT2 */
#define TCP_FLAG_WORD_OFFSET 12          /* tcp_flag_word: data offset, flags and window */
#define TCP_WINDOW_BITS bpf_htonl(0x0000ffff) /* of tcp_flag_word */
#define TCP_DATA_OFFSET_NO_OPTIONS bpf_htonl(5 << 28) /* of tcp_flag_word: a 20-byte header */

/* The fields of the kernel's TIME_WAIT socket this program reads; CO-RE
 * relocates them. tcp_timewait_sock's tw_rcv_nxt is a macro for the
 * sock_common field below (in a union there); the socket's namespace
 * holds the tcp_rfc1337 setting its RSTs are judged by. */
struct netns_ipv4 {
	__u8 sysctl_tcp_rfc1337;
} __attribute__((preserve_access_index));

struct net {
	struct netns_ipv4 ipv4;
} __attribute__((preserve_access_index));

struct sock_common {
	__u32 skc_tw_rcv_nxt;
	struct {
		struct net *net;
	} skc_net; /* possible_net_t */
} __attribute__((preserve_access_index));

struct inet_timewait_sock {
	struct sock_common __tw_common;
	unsigned char tw_substate;
} __attribute__((preserve_access_index));

struct tcp_timewait_sock {
	struct inet_timewait_sock tw_sk;
} __attribute__((preserve_access_index));

/* What the kernel judges a new SYN on a TIME_WAIT tuple by. */
struct time_wait {
	__u32 rcv_nxt;   /* the next sequence number the old connection expected from the client */
	__u8 reopenable; /* a true TIME_WAIT (not a dead FIN_WAIT2) that a RST from the peer ends (tcp_rfc1337 = 0) */
};

/* The tuples (struct bpf_sock_tuple, zero-padded for IPv4) whose TIME_WAIT
 * this program tried to end, and when (bpf_ktime_get_ns). The steered path
 * removes a tuple's entry: that is how it knows the connection reopened a
 * TIME_WAIT. An entry that stays (the try failed) only blocks tries for a
 * second, and the LRU reclaims it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TIME_WAIT_TRIES);
	__type(key, struct bpf_sock_tuple);
	__type(value, __u64);
} time_wait_tries SEC(".maps");

/* What reopen_time_wait did with a SYN whose tuple is in TIME_WAIT. */
enum reopen_result {
	REOPEN_SENT      =  0, /* the RST is on its way in: redirect the SYN to ingress after it */
	REOPEN_REFUSED   = -1, /* the kernel would not reopen the tuple for this SYN either */
	REOPEN_TRIED     = -2, /* tried less than a second ago, and the TIME_WAIT is still there */
	REOPEN_FAILED    = -3, /* a helper failed; the SYN is as it came */
	REOPEN_CORRUPTED = -4, /* the SYN could not be restored after its RST was sent: drop it */
};

/* read_time_wait — fills @time_wait from @sk, a socket in TIME_WAIT that
 * the caller holds a reference on. With net.ipv4.tcp_rfc1337 = 1 in the
 * socket's namespace the kernel ignores a RST in TIME_WAIT (and restarts
 * the TIME_WAIT's minute), so the tuple is not reopenable then.
 *
 * The namespace's setting is read with BPF_CORE_READ (bpf_probe_read_kernel),
 * not through the net pointer: for every pointer it sees loaded from a
 * kernel struct, on every path, the verifier searches all of vmlinux's BTF
 * by name for trust annotations. That search was half the time of loading
 * a steering program (21 of 42 ms), paid again in every namespace. */
static __always_inline void read_time_wait(struct bpf_sock *sk, struct time_wait *time_wait)
{
	struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(sk);

	if (!tw) {
		time_wait->reopenable = 0;
		return;
	}
	time_wait->rcv_nxt = tw->tw_sk.__tw_common.skc_tw_rcv_nxt;
	time_wait->reopenable = tw->tw_sk.tw_substate == TCP_SUBSTATE_TIME_WAIT &&
				!BPF_CORE_READ(tw, tw_sk.__tw_common.skc_net.net, ipv4.sysctl_tcp_rfc1337);
}

/* seq_after — true when sequence number @a comes after @b (the kernel's
 * after(), modulo 2^32). */
static __always_inline int seq_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/* tried_recently — true when a SYN for @tuple was already sent round less
 * than a second before @now. */
static __always_inline int tried_recently(const struct bpf_sock_tuple *tuple, __u64 now)
{
	__u64 *tried = bpf_map_lookup_elem(&time_wait_tries, tuple);

	return tried && now - *tried < TIME_WAIT_RETRY_NS;
}

/* time_wait_reopened — true when @tuple's TIME_WAIT was ended for a SYN
 * less than a second ago: this SYN is that one, on its second pass. The
 * entry is removed either way. */
static __always_inline int time_wait_reopened(const struct bpf_sock_tuple *tuple)
{
	__u64 *tried = bpf_map_lookup_elem(&time_wait_tries, tuple);
	int reopened;

	if (!tried)
		return 0;
	reopened = bpf_ktime_get_ns() - *tried < TIME_WAIT_RETRY_NS;
	bpf_map_delete_elem(&time_wait_tries, tuple);
	return reopened;
}

/* write_tcp_word — stores @to (4 bytes, network byte order) at offset
 * @field of the TCP header at @l4_off in place of @from, and patches the
 * checksum for it. bpf_l4_csum_replace knows the skb's checksum state:
 * with CHECKSUM_PARTIAL (veth) it leaves the field alone; with
 * CHECKSUM_COMPLETE, skb->csum stays valid because the word and the
 * checksum change by amounts that cancel. Returns 0 or a helper's error. */
static __always_inline long write_tcp_word(struct __sk_buff *skb, __u32 l4_off, __u32 field, __be32 from, __be32 to)
{
	long err = bpf_skb_store_bytes(skb, l4_off + field, &to, sizeof(to), 0);

	if (err)
		return err;
	return bpf_l4_csum_replace(skb, l4_off + __builtin_offsetof(struct tcphdr, check), from, to, sizeof(to));
}

/* send_reset_ahead — turns the SYN (@syn: a copy of its TCP header at
 * @l4_off) into the RST that ends its tuple's TIME_WAIT, sends a clone of
 * that to the device's own ingress, and restores the SYN. The RST has
 * sequence number @rcv_nxt, no ACK and no options (data offset 5: the
 * SYN's options become payload, which a RST may carry), so no timestamp
 * can make PAWS reject it. The SYN is restored by writing its original
 * header back, checksum included: the frame leaves exactly as it came. */
static __always_inline int send_reset_ahead(struct __sk_buff *skb, __u32 l4_off, const struct tcphdr *syn, __u32 rcv_nxt)
{
	__be32 syn_flags = tcp_flag_word(syn);
	__be32 reset_flags = (syn_flags & TCP_WINDOW_BITS) | TCP_DATA_OFFSET_NO_OPTIONS | TCP_FLAG_RST;
	long err;

	err = write_tcp_word(skb, l4_off, __builtin_offsetof(struct tcphdr, seq), syn->seq, bpf_htonl(rcv_nxt));
	if (!err)
		err = write_tcp_word(skb, l4_off, TCP_FLAG_WORD_OFFSET, syn_flags, reset_flags);
	if (!err)
		err = bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
	if (bpf_skb_store_bytes(skb, l4_off, syn, sizeof(*syn), 0))
		return REOPEN_CORRUPTED;
	return err ? REOPEN_FAILED : REOPEN_SENT;
}

/* reopen_time_wait — ends the TIME_WAIT that @tuple, @pkt's own, is in,
 * if the kernel would reopen it for this SYN itself: @time_wait reopenable
 * (a true TIME_WAIT, tcp_rfc1337 = 0), and a sequence number after its
 * rcv_nxt. Returns REOPEN_SENT (the caller redirects the SYN to ingress,
 * behind the RST), or why not. */
static __always_inline int reopen_time_wait(struct __sk_buff *skb, const struct l4_packet *pkt,
					    const struct bpf_sock_tuple *tuple, const struct time_wait *time_wait)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = pkt->l4_off;
	struct tcphdr *tcp, syn;
	__u64 now;

	if (off > 0xffff) /* tells the verifier the offset is bounded */
		return REOPEN_FAILED;
	tcp = data + off;
	if ((void *)(tcp + 1) > data_end)
		return REOPEN_FAILED;
	syn = *tcp; /* the original header, to restore from once the helpers below moved the packet */
	if (!time_wait->reopenable || !seq_after(bpf_ntohl(syn.seq), time_wait->rcv_nxt))
		return REOPEN_REFUSED;
	now = bpf_ktime_get_ns();
	if (tried_recently(tuple, now))
		return REOPEN_TRIED;
	if (bpf_map_update_elem(&time_wait_tries, tuple, &now, BPF_ANY))
		return REOPEN_FAILED;
	return send_reset_ahead(skb, off, &syn, time_wait->rcv_nxt);
}

#endif /* INTERCEPT_TIMEWAIT_H */
