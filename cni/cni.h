/* SPDX-License-Identifier: MIT */
/*
 * The CNI side of intercept-cni: what the runtime hands a plugin (the
 * CNI_* environment and the network configuration on stdin) and what a
 * plugin hands back (a result or an error object on stdout).
 * Spec: https://github.com/containernetworking/cni/blob/main/SPEC.md
 */
#ifndef INTERCEPT_CNI_CNI_H
#define INTERCEPT_CNI_CNI_H

#include <jansson.h>

/* The CNI spec's error codes (SPEC.md, "Error"); 100 and up are ours. */
enum cni_error_code {
	CNI_ERR_INCOMPATIBLE_VERSION = 1,
	CNI_ERR_UNSUPPORTED_FIELD = 2,
	CNI_ERR_UNKNOWN_CONTAINER = 3,
	CNI_ERR_INVALID_ENVIRONMENT = 4,
	CNI_ERR_IO = 5,
	CNI_ERR_DECODING = 6,
	CNI_ERR_INVALID_CONFIG = 7,
	CNI_ERR_TRY_AGAIN_LATER = 11,
	/* The capture could not be set up (fail closed). */
	CNI_ERR_CAPTURE_FAILED = 100,
	/* More than one policy selects the interface. */
	CNI_ERR_POLICY_CONFLICT = 101,
	/* CHECK: the capture the node table asks for is not in place. */
	CNI_ERR_CAPTURE_MISSING = 102,
};

enum cni_command {
	CNI_CMD_ADD,
	CNI_CMD_DEL,
	CNI_CMD_CHECK,
	CNI_CMD_VERSION,
};

/* What happens to a pod whose capture cannot be set up. */
enum failure_policy {
	FAIL_CLOSED,	/* ADD fails: the pod does not start */
	FAIL_OPEN,	/* ADD succeeds uncaptured; said on stderr and in the log file */
};

#define CNI_VERSION_LATEST "1.0.0"
#define CNI_PATH_MAX 4096

/* The parts of the request intercept-cni uses. */
struct cni_request {
	enum cni_command command;
	const char *netns;	/* CNI_NETNS: a path; may be empty on DEL */
	const char *ifname;	/* CNI_IFNAME */
	json_t *config;		/* stdin, owned */
	const char *cni_version;
	json_t *prev_result;	/* borrowed from config; NULL when absent */
	const char *node_table;	/* "nodeTable", or the default */
	const char *log_file;	/* "logFile"; NULL: stderr only */
	enum failure_policy failure;
};

/* An error to report: a CNI code and two lines for people. */
struct cni_error {
	int code;
	char msg[256];
	char details[1024];
};

int cni_error_set(struct cni_error *err, int code, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

int cni_read_request(struct cni_request *req, struct cni_error *err);
void cni_request_free(struct cni_request *req);

void cni_print_error(const char *cni_version, const struct cni_error *err);
int cni_print_json(json_t *object);
int cni_print_version(void);

#endif /* INTERCEPT_CNI_CNI_H */
