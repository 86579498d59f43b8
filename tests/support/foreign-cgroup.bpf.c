// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A cgroup connect4 program that is not intercept's: lets every connect()
 * through untouched, so tests can tell intercept leaves it attached. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup/connect4")
int foreign_connect(struct bpf_sock_addr *ctx)
{
	return 1; /* proceed */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
