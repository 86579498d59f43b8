/* SPDX-License-Identifier: MIT */
/*
 * The node table: what the agent (`intercept agent --cni`) tells the
 * plugin. Which pinned program goes on which hook of which interface in
 * which namespace, and the tc slot and qdisc registry the agent uses. The
 * agent derives every value from its own model (src/cni/node-table.ts);
 * nothing here repeats a constant of it.
 */
#ifndef INTERCEPT_CNI_NODE_TABLE_H
#define INTERCEPT_CNI_NODE_TABLE_H

#include <linux/types.h>
#include <jansson.h>

#include "cni.h"

#define NODE_TABLE_FORMAT "intercept-cni-node-table"
#define NODE_TABLE_FORMAT_VERSION 1

enum tc_hook {
	HOOK_INGRESS,
	HOOK_EGRESS,
	HOOK_COUNT,
};

extern const char *const hook_names[HOOK_COUNT];

/* The filter slot and registry the agent uses, as the table states them. */
struct node_table {
	json_t *root;		/* owned; every string below is borrowed from it */
	__u32 priority;		/* tc pref */
	__u32 handle;		/* tc handle */
	const char *program_prefix;	/* our programs' names begin with it */
	const char *registry_template;	/* the qdisc registry's pin, "{inode}" for the netns inode */
	const char *registry_name;
	__u32 registry_key_size;
	__u32 registry_value_size;
	__u32 registry_entries;
	json_t *namespaces;	/* globs of namespace names the agent serves */
	json_t *attachments;
	json_t *compositions;	/* the node's programs for sets of policies; may be absent (NULL) */
};

/*
 * The most policies one interface may be selected by: a composition of
 * more is not one the agent loads for the plugin (its names would not fit
 * a pin path component anyway).
 */
#define MAX_SELECTING 16

/*
 * What the table asks for one interface: the pinned program per hook
 * (NULL: none) of the one policy that selects it, or of the composition of
 * the policies that do.
 */
struct capture_plan {
	const char *policy;	/* the policy's name, or the composition's */
	const char *programs[HOOK_COUNT];
};

int node_table_read(struct node_table *table, const char *path, struct cni_error *err);
void node_table_free(struct node_table *table);

/*
 * Fills @plan for interface @ifname in the namespace named @netns_name.
 * Returns 1 when policies select it, 0 when none does, -1 with @err set
 * when the table is malformed, or when two or more policies select it and
 * the table lists no composition of exactly those.
 */
int node_table_lookup(const struct node_table *table, const char *netns_name, const char *ifname,
		      struct capture_plan *plan, struct cni_error *err);

#endif /* INTERCEPT_CNI_NODE_TABLE_H */
