/* networks.h — destination networks, for outbound rules limited by cidrs.
 * Included by the policy's outbound block only when a rule has cidrs (an
 * unused function is an error under -Wall -Werror). */
#ifndef INTERCEPT_NETWORKS_H
#define INTERCEPT_NETWORKS_H

#include <bpf/bpf_endian.h>

#include "outbound_types.h"

/* word_matches — one 32-bit word of @addr against a network's word under
 * its mask (both host-order constants, as the policy block writes them).
 * A network is the conjunction of the words its prefix covers. */
static __always_inline int word_matches(const struct address *addr, int word, __u32 network, __u32 mask)
{
	return (addr->word[word] & bpf_htonl(mask)) == bpf_htonl(network);
}

#endif /* INTERCEPT_NETWORKS_H */
