// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* flow_reader.c — prints the records of a pinned BPF ring buffer, one line
 * of lowercase hex per record, for `intercept watch` and the agent's
 * `--flows` to decode (src/observe/). bpftool reads perf buffers but not
 * ring buffers, and Node cannot mmap one: this is the smallest reader
 * libbpf allows, built on first use with the compiler that builds the
 * policies.
 *
 * Usage: flow_reader PIN
 * It runs until SIGINT or SIGTERM, or until its stdout is closed. A ring
 * buffer has one consumer position: two readers of one namespace share
 * its records between them. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define POLL_TIMEOUT_MS 250 /* how often a stop request is noticed while idle */
/* After a batch, the reader rests this long before it looks again. The
 * kernel wakes a reader only for a record written while it has caught up,
 * so records written while it rests cost no wakeup: under a burst of
 * connections the datapath wakes it (and it writes to its caller) at most
 * 1000 / BATCH_REST_MS times a second, not once per connection. The ring
 * (256 KiB, some 1900 records) holds what comes meanwhile up to ~95,000
 * records a second; a record is printed at most this much later. */
#define BATCH_REST_MS 20

enum reader_exit {
	READER_OK    = 0,
	READER_USAGE = 2, /* no pin path given */
	READER_OPEN  = 3, /* the pin is missing, or is not a ring buffer */
	READER_POLL  = 4, /* the kernel refused a poll */
};

static volatile sig_atomic_t stopping;

static void request_stop(int signo)
{
	(void)signo;
	stopping = 1;
}

/* print_record — one record as a line of hex; 0 keeps the reader going. */
static int print_record(void *ctx, void *data, size_t size)
{
	const unsigned char *bytes = data;
	size_t i;

	(void)ctx;
	for (i = 0; i < size; i++)
		printf("%02x", bytes[i]);
	putchar('\n');
	return 0;
}

/* rest — sleeps @ms milliseconds; a signal cuts it short (stop is then seen). */
static void rest(long ms)
{
	struct timespec span = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&span, NULL);
}

/* open_ring — a ring buffer reader on the map pinned at @pin, or NULL. */
static struct ring_buffer *open_ring(const char *pin)
{
	struct ring_buffer *ring;
	int fd = bpf_obj_get(pin);

	if (fd < 0) {
		fprintf(stderr, "cannot open %s: %s\n", pin, strerror(errno));
		return NULL;
	}
	ring = ring_buffer__new(fd, print_record, NULL, NULL);
	if (!ring)
		fprintf(stderr, "%s is not a ring buffer: %s\n", pin, strerror(errno));
	return ring;
}

int main(int argc, char **argv)
{
	struct ring_buffer *ring;
	int err = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: flow_reader PIN\n");
		return READER_USAGE;
	}
	ring = open_ring(argv[1]);
	if (!ring)
		return READER_OPEN;
	signal(SIGINT, request_stop);
	signal(SIGTERM, request_stop);
	/* Ready: the caller may start traffic once it reads this line. */
	printf("ready\n");
	fflush(stdout);
	while (!stopping) {
		err = ring_buffer__poll(ring, POLL_TIMEOUT_MS);
		if (err == -EINTR) {
			err = 0;
			continue;
		}
		if (err < 0)
			break;
		if (fflush(stdout) != 0)
			break; /* the caller went away */
		if (err > 0)
			rest(BATCH_REST_MS);
	}
	ring_buffer__free(ring);
	if (err < 0) {
		fprintf(stderr, "polling %s: %s\n", argv[1], strerror(-err));
		return READER_POLL;
	}
	return READER_OK;
}
