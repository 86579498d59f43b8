/* outbound_maps.h — where a captured connection's original destination is
 * kept until the proxy asks for it, and which cgroups are exempt.
 *
 * A record lives as long as the application's socket: written at
 * connect(), tied to the connection's addresses when it is established,
 * deleted when the socket closes (outbound.h). Both maps are LRU hashes as
 * well, so a record whose close was never seen (a socket still open when
 * the programs were detached) is evicted before the map could fill: the
 * maps never hold more than the open sockets plus such strays.
 *
 * apply loads every version of every policy in a namespace with the same
 * two record maps (bpftool's `map name … pinned …`), so a proxy asking
 * during a replace finds the record whichever version wrote it.
 *
 * The policy block defines OUTBOUND_EXEMPT_CGROUPS before this header. */
#ifndef INTERCEPT_OUTBOUND_MAPS_H
#define INTERCEPT_OUTBOUND_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "outbound_types.h"

#ifndef OUTBOUND_EXEMPT_CGROUPS
#error "outbound_maps.h needs OUTBOUND_EXEMPT_CGROUPS: include it after the policy's outbound block"
#endif

/* Records held at once: far more sockets than one host's applications keep
 * open towards captured destinations; LRU eviction is the backstop. */
#define OUTBOUND_RECORDS 65536

/* The destination a captured connect() asked for, before it was sent to
 * the proxy. */
struct original_destination {
	struct address addr; /* IPv6, or IPv4-mapped */
	__be16 port;
	__u8 family;         /* FAMILY_IPV4 or FAMILY_IPV6 (types.h): the getsockopt that answers it */
	__u8 pad;
	__u32 rule;
};

/* A connection between an application's socket and the proxy, as both
 * ends see it: the application's address is the proxy socket's peer. */
struct connection_key {
	struct address client; /* the application's socket */
	struct address proxy;  /* the proxy's listening address (loopback) */
	__be16 client_port;
	__be16 proxy_port;
};

/* By socket cookie, from connect() until the connection is established
 * (the application's address and port are not chosen before). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, OUTBOUND_RECORDS);
	__type(key, __u64);
	__type(value, struct original_destination);
} orig_by_cookie SEC(".maps");

/* By connection, from established until the application's socket closes:
 * what the proxy's getsockopt on its accepted socket finds. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, OUTBOUND_RECORDS);
	__type(key, struct connection_key);
	__type(value, struct original_destination);
} orig_by_conn SEC(".maps");

/* An exempt cgroup, as the kernel identifies it: its id (the inode of its
 * directory on the cgroup2 mount) and its depth below the root. apply
 * writes these (the policy names paths, the ids exist only on this host);
 * id 0 is an unused slot. */
struct exempt_cgroup {
	__u64 id;
	__u32 level;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OUTBOUND_EXEMPT_CGROUPS > 0 ? OUTBOUND_EXEMPT_CGROUPS : 1);
	__type(key, __u32);
	__type(value, struct exempt_cgroup);
} exempt_cgroups SEC(".maps");

#endif /* INTERCEPT_OUTBOUND_MAPS_H */
