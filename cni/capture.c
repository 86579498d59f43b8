// SPDX-License-Identifier: MIT
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "capture.h"

/* What our slot on a hook holds. */
enum slot_state {
	SLOT_EMPTY,
	SLOT_OURS,
	SLOT_FOREIGN,
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int capture_enter_netns(const char *path, __u64 *inode, struct cni_error *err)
{
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot open the network namespace", "%s: %s",
				     path, strerror(errno));
	if (fstat(fd, &st) || setns(fd, CLONE_NEWNET)) {
		ret = errno;
		close(fd);
		if (ret == EINVAL) /* a file that is not a namespace (any more): an unmounted bind target */
			return 0;
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot enter the network namespace", "%s: %s",
				     path, strerror(ret));
	}
	close(fd);
	*inode = st.st_ino;
	return 1;
}

/*
 * libbpf rejects options whose bytes past the fields it knows are not zero,
 * padding included. LIBBPF_OPTS() assigns a compound literal, whose padding
 * the compiler may leave as it likes (clang -O2 does): hence memset here.
 */
static void tc_hook_init(struct bpf_tc_hook *tc, int ifindex, enum bpf_tc_attach_point point)
{
	memset(tc, 0, sizeof(*tc));
	tc->sz = sizeof(*tc);
	tc->ifindex = ifindex;
	tc->attach_point = point;
}

static void tc_slot_init(struct bpf_tc_opts *opts, const struct node_table *table)
{
	memset(opts, 0, sizeof(*opts));
	opts->sz = sizeof(*opts);
	opts->handle = table->handle;
	opts->priority = table->priority;
}

static enum bpf_tc_attach_point attach_point(enum tc_hook hook)
{
	return hook == HOOK_INGRESS ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}

/* Whether the program with @id is one of ours: its name begins with the table's prefix. */
static int program_is_ours(const struct node_table *table, __u32 id)
{
	struct bpf_prog_info info = {};
	__u32 length = sizeof(info);
	int fd, ours;

	fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return 0;
	ours = !bpf_obj_get_info_by_fd(fd, &info, &length) &&
	       strncmp(info.name, table->program_prefix, strlen(table->program_prefix)) == 0;
	close(fd);
	return ours;
}

static enum slot_state slot_state(const struct node_table *table, int ifindex, enum tc_hook hook)
{
	struct bpf_tc_hook tc;
	struct bpf_tc_opts opts;

	tc_hook_init(&tc, ifindex, attach_point(hook));
	tc_slot_init(&opts, table);
	if (bpf_tc_query(&tc, &opts))
		return SLOT_EMPTY;
	return program_is_ours(table, opts.prog_id) ? SLOT_OURS : SLOT_FOREIGN;
}

static int interface_index(const char *ifname, struct cni_error *err)
{
	int ifindex = if_nametoindex(ifname);

	if (!ifindex)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "no such interface",
				     "%s: %s (the interface plugin before intercept-cni made no such link)",
				     ifname, strerror(errno));
	return ifindex;
}

/* The registry's pin for the namespace with @inode: the table's template with "{inode}" filled in. */
static int registry_path(const struct node_table *table, __u64 inode, char *path, size_t size)
{
	const char *mark = strstr(table->registry_template, "{inode}");
	int n;

	if (!mark)
		return -1;
	n = snprintf(path, size, "%.*s%llu%s", (int)(mark - table->registry_template), table->registry_template,
		     (unsigned long long)inode, mark + strlen("{inode}"));
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

/*
 * What one ADD made, so that a failed ADD takes it back and a successful
 * one leaves nothing it did not need: all or nothing, as the agent's steps.
 */
struct made {
	char registry[CNI_PATH_MAX];	/* the namespace's registry pin */
	int registry_made;		/* pinned by this ADD */
	int qdisc_made;			/* the clsact qdisc is this ADD's (recorded in the registry) */
	int hooks_attached[HOOK_COUNT];	/* attached into an empty slot by this ADD */
};

/* Opens the namespace's qdisc registry, making it (and its folder) when the agent has not yet. */
static int open_registry(const struct node_table *table, __u64 inode, struct made *made, struct cni_error *err)
{
	struct bpf_map_create_opts opts;
	char *slash;
	int fd;

	if (registry_path(table, inode, made->registry, sizeof(made->registry)))
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "malformed node table",
				     "qdiscRegistry.pinTemplate lacks {inode}");
	fd = bpf_obj_get(made->registry);
	if (fd >= 0 || errno != ENOENT)
		goto opened;
	slash = strrchr(made->registry, '/');
	*slash = '\0';
	if (mkdir(made->registry, 0700) && errno != EEXIST)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot make the pin folder", "%s: %s",
				     made->registry, strerror(errno));
	*slash = '/';
	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	/* A registry holds a record or two: preallocating all its entries costs milliseconds on a pod's path. */
	opts.map_flags = BPF_F_NO_PREALLOC;
	fd = bpf_map_create(BPF_MAP_TYPE_HASH, table->registry_name, table->registry_key_size,
			    table->registry_value_size, table->registry_entries, &opts);
	if (fd >= 0 && bpf_obj_pin(fd, made->registry) == 0) {
		made->registry_made = 1;
	} else if (fd >= 0) {
		close(fd); /* the agent pinned one meanwhile: use it */
		fd = bpf_obj_get(made->registry);
	}
opened:
	if (fd < 0)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot open the qdisc registry", "%s: %s",
				     made->registry, strerror(errno));
	return fd;
}

/*
 * Gives the link a clsact qdisc unless it has one. Recorded as ours first
 * (a crash in between leaves a record the agent forgets, never a qdisc
 * nobody knows is ours); a qdisc that was there already is not ours, and
 * its record goes again, unless it was recorded before (ours from earlier).
 */
static int ensure_clsact(const struct node_table *table, int ifindex, __u64 inode, struct made *made,
			 struct cni_error *err)
{
	__u32 key = ifindex, value = 1, recorded;
	struct bpf_tc_hook tc;
	int registry, ret;

	tc_hook_init(&tc, ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
	registry = open_registry(table, inode, made, err);
	if (registry < 0)
		return -1;
	if (bpf_map_lookup_elem(registry, &key, &recorded) == 0) {
		ret = bpf_tc_hook_create(&tc);
		ret = ret == -EEXIST ? 0 : ret;
		goto out;
	}
	ret = bpf_map_update_elem(registry, &key, &value, BPF_ANY);
	if (ret) {
		ret = -errno;
		goto out;
	}
	ret = bpf_tc_hook_create(&tc);
	made->qdisc_made = ret == 0;
	if (ret) /* not made (EEXIST: someone else's): not ours to record */
		bpf_map_delete_elem(registry, &key);
	ret = ret == -EEXIST ? 0 : ret;
out:
	close(registry);
	if (ret)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot add the clsact qdisc", "ifindex %d: %s",
				     ifindex, strerror(-ret));
	return 0;
}

static int attach_hook(const struct node_table *table, int ifindex, enum tc_hook hook, const char *pin,
		       struct made *made, struct cni_error *err)
{
	struct bpf_tc_hook tc;
	struct bpf_tc_opts opts;
	enum slot_state state;
	int fd, ret;

	tc_hook_init(&tc, ifindex, attach_point(hook));
	tc_slot_init(&opts, table);
	opts.flags = BPF_TC_F_REPLACE;
	state = slot_state(table, ifindex, hook);
	if (state == SLOT_FOREIGN)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "tc slot taken",
				     "%s: pref %u handle %u, where intercept attaches, holds a filter intercept did not make",
				     hook_names[hook], table->priority, table->handle);
	fd = bpf_obj_get(pin);
	if (fd < 0)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot open the node's program", "%s: %s", pin,
				     strerror(errno));
	opts.prog_fd = fd;
	ret = bpf_tc_attach(&tc, &opts);
	close_fd(&fd);
	if (ret)
		return cni_error_set(err, CNI_ERR_CAPTURE_FAILED, "cannot attach the program",
				     "%s %s: %s", hook_names[hook], pin, strerror(-ret));
	made->hooks_attached[hook] = state == SLOT_EMPTY;
	return 0;
}

/* A registry this ADD pinned and left empty goes again, with its folder if that is empty too. */
static void drop_empty_registry(struct made *made)
{
	__u32 key;
	char *slash;
	int fd;

	if (!made->registry_made)
		return;
	fd = bpf_obj_get(made->registry);
	if (fd >= 0 && bpf_map_get_next_key(fd, NULL, &key) && errno == ENOENT) {
		unlink(made->registry);
		slash = strrchr(made->registry, '/');
		*slash = '\0';
		rmdir(made->registry); /* fails, as it should, when the agent keeps pins there */
		*slash = '/';
	}
	if (fd >= 0)
		close(fd);
}

/* Takes back what a failed ADD made: its filters, its qdisc and record, a registry it pinned. */
static void undo(const struct node_table *table, int ifindex, struct made *made)
{
	struct bpf_tc_hook tc;
	struct bpf_tc_opts opts;
	__u32 key = ifindex;
	int hook, registry;

	if (made->qdisc_made) {
		tc_hook_init(&tc, ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
		bpf_tc_hook_destroy(&tc); /* with the filters this ADD put on it */
		registry = bpf_obj_get(made->registry);
		if (registry >= 0) {
			bpf_map_delete_elem(registry, &key);
			close(registry);
		}
	} else {
		for (hook = 0; hook < HOOK_COUNT; hook++) {
			if (!made->hooks_attached[hook])
				continue;
			tc_hook_init(&tc, ifindex, attach_point(hook));
			tc_slot_init(&opts, table);
			bpf_tc_detach(&tc, &opts);
		}
	}
	drop_empty_registry(made);
}

int capture_attach(const struct node_table *table, const struct capture_plan *plan, const char *ifname,
		   __u64 inode, struct cni_error *err)
{
	struct made made = {};
	int ifindex, hook;

	ifindex = interface_index(ifname, err);
	if (ifindex < 0)
		return -1;
	if (ensure_clsact(table, ifindex, inode, &made, err))
		goto failed;
	for (hook = 0; hook < HOOK_COUNT; hook++)
		if (plan->programs[hook] && attach_hook(table, ifindex, hook, plan->programs[hook], &made, err))
			goto failed;
	drop_empty_registry(&made); /* the link had a qdisc of someone else's: nothing to record */
	return 0;
failed:
	undo(table, ifindex, &made);
	return -1;
}

int capture_check(const struct node_table *table, const struct capture_plan *plan, const char *ifname,
		  struct cni_error *err)
{
	int ifindex, hook;

	ifindex = interface_index(ifname, err);
	if (ifindex < 0)
		return -1;
	for (hook = 0; hook < HOOK_COUNT; hook++) {
		if (!plan->programs[hook] || slot_state(table, ifindex, hook) == SLOT_OURS)
			continue;
		return cni_error_set(err, CNI_ERR_CAPTURE_MISSING, "capture missing",
				     "%s %s runs no program of intercept's (policy %s)", ifname,
				     hook_names[hook], plan->policy);
	}
	return 0;
}

int capture_detach(const struct node_table *table, const char *ifname, struct cni_error *err)
{
	int ifindex = if_nametoindex(ifname), hook, ret;

	if (!ifindex)
		return 0;
	for (hook = 0; hook < HOOK_COUNT; hook++) {
		struct bpf_tc_hook tc;
		struct bpf_tc_opts opts;

		if (slot_state(table, ifindex, hook) != SLOT_OURS)
			continue;
		tc_hook_init(&tc, ifindex, attach_point(hook));
		tc_slot_init(&opts, table);
		ret = bpf_tc_detach(&tc, &opts);
		if (ret && ret != -ENOENT)
			return cni_error_set(err, CNI_ERR_IO, "cannot detach", "%s %s: %s", ifname,
					     hook_names[hook], strerror(-ret));
	}
	return 0;
}
