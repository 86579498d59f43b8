// SPDX-License-Identifier: MIT
/* Reading a CNI request and printing what a plugin answers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cni.h"

/* Where the agent writes the node table when the configuration names none. */
#define DEFAULT_NODE_TABLE "/run/intercept/cni/node-table.json"
/* The most stdin may hold: a configuration with a prevResult is a few KiB. */
#define MAX_CONFIG_BYTES (1 << 20)

static const char *const supported_versions[] = {
	"0.3.0", "0.3.1", "0.4.0", "1.0.0",
};

int cni_error_set(struct cni_error *err, int code, const char *msg, const char *fmt, ...)
{
	va_list args;

	err->code = code;
	snprintf(err->msg, sizeof(err->msg), "%s", msg);
	va_start(args, fmt);
	vsnprintf(err->details, sizeof(err->details), fmt, args);
	va_end(args);
	return -1;
}

static int parse_command(const char *name, enum cni_command *command)
{
	static const struct {
		const char *name;
		enum cni_command command;
	} commands[] = {
		{ "ADD", CNI_CMD_ADD },
		{ "DEL", CNI_CMD_DEL },
		{ "CHECK", CNI_CMD_CHECK },
		{ "VERSION", CNI_CMD_VERSION },
	};
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, name) == 0) {
			*command = commands[i].command;
			return 0;
		}
	}
	return -1;
}

static int parse_failure_policy(json_t *config, enum failure_policy *failure, struct cni_error *err)
{
	json_t *value = json_object_get(config, "failurePolicy");
	const char *name;

	*failure = FAIL_CLOSED;
	if (!value)
		return 0;
	name = json_string_value(value);
	if (name && strcmp(name, "closed") == 0)
		return 0;
	if (name && strcmp(name, "open") == 0) {
		*failure = FAIL_OPEN;
		return 0;
	}
	return cni_error_set(err, CNI_ERR_INVALID_CONFIG, "invalid failurePolicy",
			     "failurePolicy must be \"closed\" or \"open\"");
}

static int optional_string(json_t *config, const char *key, const char **out, struct cni_error *err)
{
	json_t *value = json_object_get(config, key);

	if (!value)
		return 0;
	*out = json_string_value(value);
	if (!*out || !**out)
		return cni_error_set(err, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
				     "%s must be a non-empty string", key);
	return 0;
}

static int read_config(struct cni_request *req, struct cni_error *err)
{
	json_error_t parse;
	json_t *version;

	req->config = json_loadf(stdin, JSON_REJECT_DUPLICATES, &parse);
	if (!req->config)
		return cni_error_set(err, CNI_ERR_DECODING, "cannot decode the network configuration",
				     "line %d, column %d: %s", parse.line, parse.column, parse.text);
	if (!json_is_object(req->config))
		return cni_error_set(err, CNI_ERR_DECODING, "cannot decode the network configuration",
				     "the configuration is not a JSON object");
	version = json_object_get(req->config, "cniVersion");
	if (!json_string_value(version)) /* the error is then said in the latest version's terms */
		return cni_error_set(err, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
				     "cniVersion must be a string");
	req->cni_version = json_string_value(version);
	req->prev_result = json_object_get(req->config, "prevResult");
	if (req->prev_result && !json_is_object(req->prev_result))
		return cni_error_set(err, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
				     "prevResult must be an object");
	if (optional_string(req->config, "nodeTable", &req->node_table, err) ||
	    optional_string(req->config, "logFile", &req->log_file, err))
		return -1;
	return parse_failure_policy(req->config, &req->failure, err);
}

static int supported_version(const char *version)
{
	size_t i;

	for (i = 0; i < sizeof(supported_versions) / sizeof(supported_versions[0]); i++)
		if (strcmp(supported_versions[i], version) == 0)
			return 1;
	return 0;
}

int cni_read_request(struct cni_request *req, struct cni_error *err)
{
	const char *command = getenv("CNI_COMMAND");

	memset(req, 0, sizeof(*req));
	req->node_table = DEFAULT_NODE_TABLE;
	req->cni_version = CNI_VERSION_LATEST;
	if (!command || parse_command(command, &req->command))
		return cni_error_set(err, CNI_ERR_INVALID_ENVIRONMENT, "invalid CNI_COMMAND",
				     "CNI_COMMAND is %s: ADD, DEL, CHECK or VERSION expected",
				     command ? command : "unset");
	if (req->command == CNI_CMD_VERSION)
		return 0;
	if (read_config(req, err))
		return -1;
	if (!supported_version(req->cni_version))
		return cni_error_set(err, CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
				     "cniVersion %s is not one of 0.3.0, 0.3.1, 0.4.0, 1.0.0",
				     req->cni_version);
	req->netns = getenv("CNI_NETNS");
	req->ifname = getenv("CNI_IFNAME");
	if (!req->ifname || !*req->ifname)
		return cni_error_set(err, CNI_ERR_INVALID_ENVIRONMENT, "invalid CNI_IFNAME",
				     "CNI_IFNAME must be set");
	if (req->command != CNI_CMD_DEL && (!req->netns || !*req->netns))
		return cni_error_set(err, CNI_ERR_INVALID_ENVIRONMENT, "invalid CNI_NETNS",
				     "CNI_NETNS must be set for ADD and CHECK");
	if (req->command != CNI_CMD_DEL && !req->prev_result)
		return cni_error_set(err, CNI_ERR_INVALID_CONFIG, "no prevResult",
				     "intercept-cni is a chained plugin: it must follow an interface plugin (bridge, ptp, ...) in a conflist");
	return 0;
}

void cni_request_free(struct cni_request *req)
{
	json_decref(req->config);
	req->config = NULL;
}

void cni_print_error(const char *cni_version, const struct cni_error *err)
{
	json_t *object = json_pack("{s:s, s:i, s:s, s:s}", "cniVersion", cni_version, "code", err->code,
				   "msg", err->msg, "details", err->details);

	if (!object || cni_print_json(object))
		fprintf(stdout, "{\"code\": %d, \"msg\": \"cannot print the error\"}\n", err->code);
	json_decref(object);
}

int cni_print_json(json_t *object)
{
	if (json_dumpf(object, stdout, JSON_PRESERVE_ORDER | JSON_COMPACT))
		return -1;
	fputc('\n', stdout);
	return fflush(stdout) ? -1 : 0;
}

int cni_print_version(void)
{
	json_t *versions = json_array();
	json_t *object;
	size_t i;
	int ret;

	for (i = 0; i < sizeof(supported_versions) / sizeof(supported_versions[0]); i++)
		json_array_append_new(versions, json_string(supported_versions[i]));
	object = json_pack("{s:s, s:o}", "cniVersion", CNI_VERSION_LATEST, "supportedVersions", versions);
	ret = object ? cni_print_json(object) : -1;
	json_decref(object);
	return ret;
}
