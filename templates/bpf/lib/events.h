/* events.h — what the datapath tells `intercept watch`: one record per
 * connection it decided about (a SYN steered or refused, a connect()
 * captured or exempted, an original destination asked for), never one
 * per packet.
 *
 * Records go into flow_events, a ring buffer every program of a namespace
 * shares: apply loads each version with the ring buffer of a version
 * already pinned there (bpftool's `map name … pinned …`), as it does the
 * outbound records. A reader consumes it (`intercept watch`, the agent's
 * `--flows`); when it is full, the record is dropped and counted in
 * flow_event_drops, and the packet goes on as if events were off.
 *
 * Off by default: a rule emits only while its slot in rule_events is 1,
 * a live map update like rule_state. The slot after the last rule
 * (EVENTS_NO_RULE) switches records that belong to no rule: a proxy's
 * SO_ORIGINAL_DST query for a connection nobody captured. A packet no
 * rule names never gets here, so a miss costs nothing more. */
#ifndef INTERCEPT_EVENTS_H
#define INTERCEPT_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "maps.h"

#define FLOW_EVENT_BUFFER (256 * 1024) /* bytes: about 1,900 records between two reads */
#define EVENTS_NO_RULE RULE_COUNT      /* rule_events slot of records without a rule */
#define VERSION_CHARS 16               /* a version's name: the content hash's first 16 hex digits */
#define COMM_CHARS 16                  /* TASK_COMM_LEN */

/* What the datapath did with a connection. */
enum flow_verdict {
	VERDICT_STEERED      = 1, /* the SYN was assigned to the proxy's listener */
	VERDICT_PROXY_DOWN   = 2, /* nothing listened on the proxy port */
	VERDICT_TIME_WAIT    = 3, /* the SYN's 4-tuple stayed in TIME_WAIT */
	VERDICT_REDIRECTED   = 4, /* an outbound connect() was sent to the proxy */
	VERDICT_EXEMPT       = 5, /* an outbound connect() a rule names was left alone */
	VERDICT_ORIGINAL_DST = 6, /* a proxy asked for a connection's original destination */
	VERDICT_REWRITTEN    = 7, /* a new TCP connection's SYN had its port rewritten */
};

/* Why, when a verdict has more than one way to happen. */
enum flow_reason {
	REASON_NONE              = 0,
	REASON_DROPPED           = 1, /* onProxyDown "drop": the SYN was dropped */
	REASON_PASSED            = 2, /* onProxyDown "pass": handed on to originalPort */
	REASON_TIME_WAIT_RECYCLED = 3, /* steered through a 4-tuple whose TIME_WAIT was ended first */
	REASON_EXEMPT_UID        = 4, /* the task's uid is exempt */
	REASON_EXEMPT_MARK       = 5, /* the socket's mark is exempt */
	REASON_EXEMPT_CGROUP     = 6, /* the task's cgroup is, or is below, an exempt one */
	REASON_ANSWERED          = 7, /* SO_ORIGINAL_DST answered from the record */
	REASON_NOT_FOUND         = 8, /* SO_ORIGINAL_DST for a connection with no record */
};

/* A connection's end: IPv6, or IPv4-mapped (::ffff:a.b.c.d), network order. */
struct flow_address {
	__be32 word[4];
};

/* One record. src/model/bpf-abi.ts mirrors this layout (FLOW_EVENT), and
 * tests/unit/bpf-abi.test.ts checks the two agree. */
struct flow_event {
	__u64 time_ns;                /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u64 cgroup_id;              /* the task's cgroup (outbound), else 0 */
	char version[VERSION_CHARS];  /* the program's version: its policy's pin directory */
	struct flow_address source;
	struct flow_address destination; /* as the client asked for it */
	struct flow_address target;      /* where it went instead: the proxy */
	__be16 source_port;
	__be16 destination_port;
	__be16 target_port;
	__u8 family;                  /* FAMILY_IPV4 or FAMILY_IPV6 */
	__u8 protocol;                /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 verdict;                 /* enum flow_verdict */
	__u8 reason;                  /* enum flow_reason */
	__u16 pad;
	__u32 rule;                   /* the rule's slot, or EVENTS_NO_RULE */
	__u32 ifindex;                /* the link (tc), else 0 */
	__u32 pid;                    /* the task (outbound), else 0 */
	__u32 uid;
	char comm[COMM_CHARS];
	__u32 namespace_slot;         /* where the tc program runs (namespace_slot.h); 0 for outbound */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FLOW_EVENT_BUFFER);
} flow_events SEC(".maps");

/* Records dropped because flow_events was full: per-CPU, summed by readers. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} flow_event_drops SEC(".maps");

/* Each rule's switch (value 1: on), and EVENTS_NO_RULE's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RULE_COUNT + 1);
	__type(key, __u32);
	__type(value, __u32);
} rule_events SEC(".maps");

/* events_enabled — true when @rule's records are switched on. */
static __always_inline int events_enabled(__u32 rule)
{
	__u32 *enabled = bpf_map_lookup_elem(&rule_events, &rule);

	return enabled && *enabled;
}

/* count_event_drop — a record flow_events had no room for. */
static __always_inline void count_event_drop(void)
{
	__u32 key = 0;
	__u64 *drops = bpf_map_lookup_elem(&flow_event_drops, &key);

	if (drops)
		(*drops)++;
}

/* event_start — a zeroed record for @rule with its time and the program's
 * version, reserved in flow_events; NULL when the rule's records are off,
 * or when the buffer is full (counted). Submit it with event_send. */
static __always_inline struct flow_event *event_start(__u32 rule, enum flow_verdict verdict, enum flow_reason reason)
{
	struct flow_event *event;
	struct policy_meta *meta;
	__u32 key = 0;

	if (!events_enabled(rule))
		return NULL;
	event = bpf_ringbuf_reserve(&flow_events, sizeof(*event), 0);
	if (!event) {
		count_event_drop();
		return NULL;
	}
	__builtin_memset(event, 0, sizeof(*event));
	event->time_ns = bpf_ktime_get_ns();
	event->rule = rule;
	event->verdict = verdict;
	event->reason = reason;
	meta = bpf_map_lookup_elem(&policy_meta, &key);
	if (meta)
		__builtin_memcpy(event->version, meta->content_hash, VERSION_CHARS);
	return event;
}

/* event_ipv4 — @addr as an IPv4-mapped flow_address. */
static __always_inline void event_ipv4(struct flow_address *out, __be32 addr)
{
	out->word[0] = 0;
	out->word[1] = 0;
	out->word[2] = bpf_htonl(0x0000ffff);
	out->word[3] = addr;
}

/* event_send — hands a record from event_start to the readers. */
static __always_inline void event_send(struct flow_event *event)
{
	bpf_ringbuf_submit(event, 0);
}

#endif /* INTERCEPT_EVENTS_H */
