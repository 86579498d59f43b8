// SPDX-License-Identifier: MIT
/*
 * intercept-cni: a chained CNI plugin that puts the node's already-loaded
 * intercept programs on a pod's interface before any of its containers
 * runs. ADD attaches, DEL detaches, CHECK verifies, VERSION answers;
 * prevResult is passed through unchanged. Everything it attaches, and how,
 * comes from the node table the agent writes (`intercept agent --cni`).
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <bpf/libbpf.h>

#include "capture.h"
#include "cni.h"
#include "node_table.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_ERROR = 1,
};

/* libbpf's own messages would reach the runtime's logs as noise: errors are reported as CNI errors. */
static int quiet(enum libbpf_print_level level, const char *format, va_list args)
{
	(void)level;
	(void)format;
	(void)args;
	return 0;
}

static const char *netns_name(const char *path, char *copy, size_t size)
{
	snprintf(copy, size, "%s", path);
	return basename(copy);
}

/* A fail-open ADD says what it let through: on stderr, and as a JSON line in the log file if configured. */
static void log_failed_open(const struct cni_request *req, const struct cni_error *err)
{
	json_t *line = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "time", (json_int_t)time(NULL), "event",
				 "capture-failed-open", "netns", req->netns ?: "", "interface", req->ifname ?: "",
				 "msg", err->msg, "details", err->details);
	FILE *file = req->log_file ? fopen(req->log_file, "a") : NULL;

	fprintf(stderr, "intercept-cni: fail-open: pod network %s %s not captured: %s: %s\n", req->netns,
		req->ifname, err->msg, err->details);
	if (file && line)
		json_dumpf(line, file, JSON_COMPACT), fputc('\n', file);
	if (file)
		fclose(file);
	json_decref(line);
}

static int pass_through(const struct cni_request *req)
{
	return cni_print_json(req->prev_result) ? EXIT_ERROR : EXIT_OK;
}

/* A capture that could not be set up: the pod fails (closed) or starts uncaptured (open). */
static int capture_failed(const struct cni_request *req, const struct cni_error *err)
{
	if (req->failure == FAIL_OPEN) {
		log_failed_open(req, err);
		return pass_through(req);
	}
	cni_print_error(req->cni_version, err);
	return EXIT_ERROR;
}

static int cmd_add(const struct cni_request *req, struct cni_error *err)
{
	struct node_table table;
	struct capture_plan plan;
	char copy[CNI_PATH_MAX];
	__u64 inode = 0;
	int ret;

	if (node_table_read(&table, req->node_table, err))
		return capture_failed(req, err);
	ret = node_table_lookup(&table, netns_name(req->netns, copy, sizeof(copy)), req->ifname, &plan, err);
	if (ret > 0) {
		ret = capture_enter_netns(req->netns, &inode, err);
		if (ret == 0)
			ret = cni_error_set(err, CNI_ERR_UNKNOWN_CONTAINER, "no such network namespace", "%s",
					    req->netns);
		if (ret > 0)
			ret = capture_attach(&table, &plan, req->ifname, inode, err);
	}
	node_table_free(&table);
	return ret < 0 ? capture_failed(req, err) : pass_through(req);
}

static int cmd_check(const struct cni_request *req, struct cni_error *err)
{
	struct node_table table;
	struct capture_plan plan;
	char copy[CNI_PATH_MAX];
	__u64 inode = 0;
	int ret;

	if (node_table_read(&table, req->node_table, err))
		return -1;
	ret = node_table_lookup(&table, netns_name(req->netns, copy, sizeof(copy)), req->ifname, &plan, err);
	if (ret > 0) {
		ret = capture_enter_netns(req->netns, &inode, err);
		if (ret == 0)
			ret = cni_error_set(err, CNI_ERR_UNKNOWN_CONTAINER, "no such network namespace", "%s",
					    req->netns);
		if (ret > 0)
			ret = capture_check(&table, &plan, req->ifname, err);
	}
	node_table_free(&table);
	return ret < 0 ? -1 : 0;
}

/* Idempotent: a namespace or interface already gone, or no table, leaves nothing to remove. */
static int cmd_del(const struct cni_request *req, struct cni_error *err)
{
	struct node_table table;
	__u64 inode = 0;
	int ret;

	if (!req->netns || !*req->netns)
		return 0;
	if (node_table_read(&table, req->node_table, err))
		return err->code == CNI_ERR_TRY_AGAIN_LATER ? 0 : -1;
	ret = capture_enter_netns(req->netns, &inode, err);
	if (ret > 0)
		ret = capture_detach(&table, req->ifname, err);
	node_table_free(&table);
	return ret < 0 ? -1 : 0;
}

int main(void)
{
	struct cni_request req;
	struct cni_error err;
	int ret;

	libbpf_set_print(quiet);
	if (cni_read_request(&req, &err)) {
		cni_print_error(req.cni_version, &err);
		cni_request_free(&req);
		return EXIT_ERROR;
	}
	switch (req.command) {
	case CNI_CMD_VERSION:
		ret = cni_print_version() ? EXIT_ERROR : EXIT_OK;
		break;
	case CNI_CMD_ADD:
		ret = cmd_add(&req, &err);
		break;
	case CNI_CMD_CHECK:
	case CNI_CMD_DEL:
		ret = (req.command == CNI_CMD_CHECK ? cmd_check : cmd_del)(&req, &err);
		if (ret)
			cni_print_error(req.cni_version, &err);
		ret = ret ? EXIT_ERROR : EXIT_OK;
		break;
	default:
		ret = EXIT_ERROR;
	}
	cni_request_free(&req);
	return ret;
}
