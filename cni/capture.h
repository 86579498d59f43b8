/* SPDX-License-Identifier: MIT */
/*
 * The kernel side of intercept-cni: entering the pod's network namespace
 * and putting the node's pinned programs on an interface's tc hooks, in
 * the slot (pref and handle) the agent uses, so the agent later replaces
 * them in place. A clsact qdisc the plugin makes is recorded in the
 * namespace's qdisc registry before it is made, as the agent does.
 */
#ifndef INTERCEPT_CNI_CAPTURE_H
#define INTERCEPT_CNI_CAPTURE_H

#include <linux/types.h>

#include "cni.h"
#include "node_table.h"

/* Enters the network namespace at @path. 1: done; 0: it no longer exists; -1: @err set. */
int capture_enter_netns(const char *path, __u64 *inode, struct cni_error *err);

/* Attaches @plan's programs to @ifname (in the current network namespace, whose inode is @inode). */
int capture_attach(const struct node_table *table, const struct capture_plan *plan, const char *ifname,
		   __u64 inode, struct cni_error *err);

/* Whether @plan's hooks on @ifname run programs of ours in our slot; -1 with @err set when not. */
int capture_check(const struct node_table *table, const struct capture_plan *plan, const char *ifname,
		  struct cni_error *err);

/* Removes our filters from @ifname; a missing interface has none left. */
int capture_detach(const struct node_table *table, const char *ifname, struct cni_error *err);

#endif /* INTERCEPT_CNI_CAPTURE_H */
