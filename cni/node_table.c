// SPDX-License-Identifier: MIT
/* Reading the node table and finding what it asks for one interface. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"
#include "node_table.h"

const char *const hook_names[HOOK_COUNT] = {
	[HOOK_INGRESS] = "ingress",
	[HOOK_EGRESS] = "egress",
};

static int malformed(struct cni_error *err, const char *path, const char *what)
{
	return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "malformed node table",
			     "%s: %s (written by a different intercept agent?)", path, what);
}

static int read_u32(json_t *object, const char *key, __u32 *out)
{
	json_t *value = json_object_get(object, key);
	json_int_t number;

	if (!json_is_integer(value))
		return -1;
	number = json_integer_value(value);
	if (number < 0 || number > 0xffffffffLL)
		return -1;
	*out = (__u32)number;
	return 0;
}

static int read_fields(struct node_table *table, const char *path, struct cni_error *err)
{
	json_t *root = table->root;
	json_t *filter = json_object_get(root, "filter");
	json_t *registry = json_object_get(root, "qdiscRegistry");
	__u32 version;

	if (strcmp(json_string_value(json_object_get(root, "format")) ?: "", NODE_TABLE_FORMAT) ||
	    read_u32(root, "formatVersion", &version) || version != NODE_TABLE_FORMAT_VERSION)
		return malformed(err, path, "not an intercept-cni-node-table of format version 1");
	if (read_u32(filter, "priority", &table->priority) || read_u32(filter, "handle", &table->handle))
		return malformed(err, path, "filter.priority and filter.handle must be integers");
	table->program_prefix = json_string_value(json_object_get(root, "programPrefix"));
	table->registry_template = json_string_value(json_object_get(registry, "pinTemplate"));
	table->registry_name = json_string_value(json_object_get(registry, "name"));
	if (!table->program_prefix || !table->registry_template || !table->registry_name)
		return malformed(err, path, "programPrefix and qdiscRegistry's pinTemplate and name must be strings");
	if (read_u32(registry, "keySize", &table->registry_key_size) ||
	    read_u32(registry, "valueSize", &table->registry_value_size) ||
	    read_u32(registry, "entries", &table->registry_entries) ||
	    table->registry_key_size != sizeof(__u32) || table->registry_value_size != sizeof(__u32))
		return malformed(err, path, "qdiscRegistry holds a 4-byte ifindex key and a 4-byte value");
	table->namespaces = json_object_get(root, "namespaces");
	table->attachments = json_object_get(root, "attachments");
	if (!json_is_array(table->namespaces) || !json_is_array(table->attachments))
		return malformed(err, path, "namespaces and attachments must be arrays");
	/* Added within format version 1: a table without it lists no composition. */
	table->compositions = json_object_get(root, "compositions");
	if (table->compositions && !json_is_array(table->compositions))
		return malformed(err, path, "compositions must be an array");
	return 0;
}

int node_table_read(struct node_table *table, const char *path, struct cni_error *err)
{
	json_error_t parse;

	memset(table, 0, sizeof(*table));
	table->root = json_load_file(path, JSON_REJECT_DUPLICATES, &parse);
	if (!table->root) {
		if (errno == ENOENT)
			return cni_error_set(err, CNI_ERR_TRY_AGAIN_LATER, "no node table yet",
					     "%s is missing: the intercept agent (--cni) has not loaded the node's programs yet",
					     path);
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot read the node table", "%s: %s", path,
				     parse.text);
	}
	return read_fields(table, path, err);
}

void node_table_free(struct node_table *table)
{
	json_decref(table->root);
	table->root = NULL;
}

/*
 * Whether some glob of @globs matches @name; a JSON null stands for
 * "every name" (a selector that was not given). -1: not an array of strings.
 */
static int any_glob(json_t *globs, const char *name, int null_matches)
{
	json_t *glob;
	size_t i;

	if (json_is_null(globs))
		return null_matches;
	if (!json_is_array(globs))
		return -1;
	json_array_foreach(globs, i, glob) {
		if (!json_is_string(glob))
			return -1;
		if (glob_match(json_string_value(glob), name))
			return 1;
	}
	return 0;
}

/* Whether @attachment's namespaces and interfaces select @ifname in @netns_name; -1: malformed. */
static int selects(json_t *attachment, const char *netns_name, const char *ifname)
{
	int in_namespace = any_glob(json_object_get(attachment, "namespaces"), netns_name, 1);
	int included = any_glob(json_object_get(attachment, "include"), ifname, 1);
	int excluded = any_glob(json_object_get(attachment, "exclude"), ifname, 0);

	if (in_namespace < 0 || included < 0 || excluded < 0)
		return -1;
	return in_namespace && included && !excluded;
}

/* Fills @plan from a table entry: @entry[@name_key] and its pinned programs; -1: malformed. */
static int fill_plan(json_t *entry, const char *name_key, struct capture_plan *plan)
{
	json_t *programs = json_object_get(entry, "programs");
	int hook, found = 0;

	plan->policy = json_string_value(json_object_get(entry, name_key));
	if (!plan->policy || !json_is_object(programs))
		return -1;
	for (hook = 0; hook < HOOK_COUNT; hook++) {
		plan->programs[hook] = json_string_value(json_object_get(programs, hook_names[hook]));
		found |= plan->programs[hook] != NULL;
	}
	return found ? 0 : -1;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether @composition's "policies" are exactly @names (sorted, @count of them); -1: malformed. */
static int same_policies(json_t *composition, const char **names, size_t count)
{
	json_t *policies = json_object_get(composition, "policies");
	json_t *name;
	size_t i;

	if (!json_is_array(policies))
		return -1;
	if (json_array_size(policies) != count)
		return 0;
	json_array_foreach(policies, i, name) {
		if (!json_is_string(name))
			return -1;
		if (strcmp(json_string_value(name), names[i]))
			return 0;
	}
	return 1;
}

/*
 * Fills @plan with the node's program for the composition of @names
 * (@count policies that select @ifname): 1, or -1 with @err set when the
 * table lists none (the agent loads the compositions policies are likely
 * to form; another is a conflict the plugin cannot capture).
 */
static int find_composition(const struct node_table *table, const char **names, size_t count,
			    const char *netns_name, const char *ifname, struct capture_plan *plan,
			    struct cni_error *err)
{
	json_t *composition;
	size_t i;

	qsort(names, count, sizeof(*names), compare_names);
	if (table->compositions) {
		json_array_foreach(table->compositions, i, composition) {
			int same = same_policies(composition, names, count);

			if (same < 0)
				return malformed(err, "the node table", "a composition's policies must be names");
			if (!same)
				continue;
			if (fill_plan(composition, "name", plan))
				return malformed(err, "the node table", "a composition needs a name and a program");
			return 1;
		}
	}
	return cni_error_set(err, CNI_ERR_POLICY_CONFLICT, "no node program for the policies selecting the interface",
			     "interface %s in %s is selected by policies %s, %s%s, whose composition the node has not loaded",
			     ifname, netns_name, names[0], names[1], count > 2 ? " and more" : "");
}

int node_table_lookup(const struct node_table *table, const char *netns_name, const char *ifname,
		      struct capture_plan *plan, struct cni_error *err)
{
	const char *names[MAX_SELECTING];
	json_t *attachment, *first = NULL;
	size_t i, selected = 0;
	int served;

	memset(plan, 0, sizeof(*plan));
	served = any_glob(table->namespaces, netns_name, 0);
	if (served < 0)
		return malformed(err, "the node table", "namespaces must be strings");
	if (!served)
		return 0;
	json_array_foreach(table->attachments, i, attachment) {
		int match = selects(attachment, netns_name, ifname);

		if (match < 0)
			return malformed(err, "the node table", "an attachment's selectors must be arrays of strings");
		if (!match)
			continue;
		if (selected == MAX_SELECTING)
			return cni_error_set(err, CNI_ERR_POLICY_CONFLICT, "interface selected by too many policies",
					     "interface %s in %s is selected by more than %d policies",
					     ifname, netns_name, MAX_SELECTING);
		names[selected] = json_string_value(json_object_get(attachment, "policy"));
		if (!names[selected])
			return malformed(err, "the node table", "an attachment needs a policy and a program");
		first = first ?: attachment;
		selected++;
	}
	if (selected == 0)
		return 0;
	if (selected > 1)
		return find_composition(table, names, selected, netns_name, ifname, plan, err);
	if (fill_plan(first, "policy", plan))
		return malformed(err, "the node table", "an attachment needs a policy and a program");
	return 1;
}
