/* prefixes.h — address lists too long for constant compares: one LPM trie
 * per family, filled by `intercept apply` when it loads the program (like
 * rule_state), holding every long list of the policy. A key starts with
 * its list's number, matched whole (PREFIX_LIST_BITS), then the address,
 * so one lookup finds a list's longest prefix holding the address. A list
 * is stored as its networks (PREFIX_SELECTED) and, nested inside them,
 * its exceptions (PREFIX_LEFT_OUT): the longest match says which applies.
 *
 * Sized by PREFIXES_V4_ENTRIES and PREFIXES_V6_ENTRIES, which the policy
 * block defines: a family without entries has no trie. The entries are
 * src/compile/match.ts's trieEntries; src/compile/prefixes.ts writes
 * their keys in this layout. */
#ifndef INTERCEPT_PREFIXES_H
#define INTERCEPT_PREFIXES_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "address.h"

#if !defined(PREFIXES_V4_ENTRIES) || !defined(PREFIXES_V6_ENTRIES)
#error "prefixes.h needs PREFIXES_V4_ENTRIES and PREFIXES_V6_ENTRIES: include it after the policy block"
#endif

/* What an entry says about the addresses of its prefix. */
enum prefix_verdict {
	PREFIX_LEFT_OUT = 0, /* an exception: the list does not hold them */
	PREFIX_SELECTED = 1,
};

/* The bits of a key's list number, counted in every prefix length. */
#define PREFIX_LIST_BITS 32

#if PREFIXES_V4_ENTRIES > 0
struct prefix_key_v4 {
	__u32 prefixlen; /* PREFIX_LIST_BITS + the prefix's length */
	__u32 list;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PREFIXES_V4_ENTRIES);
	__type(key, struct prefix_key_v4);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} prefixes_v4 SEC(".maps");

/* ipv4_in_prefix_list — true when prefix list @list holds the IPv4
 * address at @addr. */
static __always_inline int ipv4_in_prefix_list(const __be32 *addr, __u32 list)
{
	struct prefix_key_v4 key = { .prefixlen = PREFIX_LIST_BITS + 32, .list = list, .addr = addr[0] };
	__u8 *verdict = bpf_map_lookup_elem(&prefixes_v4, &key);

	return verdict && *verdict == PREFIX_SELECTED;
}
#endif

#if PREFIXES_V6_ENTRIES > 0
struct prefix_key_v6 {
	__u32 prefixlen; /* PREFIX_LIST_BITS + the prefix's length */
	__u32 list;
	__be32 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PREFIXES_V6_ENTRIES);
	__type(key, struct prefix_key_v6);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} prefixes_v6 SEC(".maps");

/* ipv6_in_prefix_list — true when prefix list @list holds the IPv6
 * address at @addr. */
static __always_inline int ipv6_in_prefix_list(const __be32 *addr, __u32 list)
{
	struct prefix_key_v6 key = { .prefixlen = PREFIX_LIST_BITS + 128, .list = list };
	__u8 *verdict;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	verdict = bpf_map_lookup_elem(&prefixes_v6, &key);
	return verdict && *verdict == PREFIX_SELECTED;
}
#endif

#endif /* INTERCEPT_PREFIXES_H */
