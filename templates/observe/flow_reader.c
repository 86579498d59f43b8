// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* flow_reader.c — prints the records of a pinned BPF ring buffer, one line
 * of lowercase hex per record, for `intercept watch` and the agent's
 * `--flows` to decode (src/flows/). bpftool reads perf buffers but not
 * ring buffers, and Node cannot mmap one: this is the smallest reader
 * libbpf allows, built on first use with the compiler that builds the
 * policies.
 *
 * Usage: flow_reader PIN
 * It runs until SIGINT or SIGTERM, or until its stdout is closed. A ring
 * buffer has one consumer position: two readers of one namespace share
 * its records between them. */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define IDLE_WAIT_MS 250 /* how often a stop request is noticed while idle */
/* After a batch, the reader rests this long before it reads again, so that
 * the next batch gathers: every read wakes this reader and its caller (a
 * Node process), and on a busy machine a wakeup costs more than printing
 * a hundred records. A record is printed at most this much later. The
 * datapath wakes a reader only for the first record after it caught up
 * (the kernel's rule for flags 0), so a resting reader costs it nothing. */
#define BATCH_REST_MS 100
/* The rest is taken in slices, and ends early once half the ring is
 * unread: a burst finds room (1,900 records a slice: 75,000 a second). */
#define REST_SLICE_MS 25
/* stdout's buffer, and the pipe's size asked for: a batch of up to a ring
 * buffer's worth (257 bytes a line) leaves in a few writes, without
 * waiting for the caller to read the first. */
#define OUTPUT_BUFFER (64 * 1024)
/* Bytes of a record turned into hex at a time: a whole flow_event (128). */
#define HEX_CHUNK 256
#define PIPE_SIZE (1024 * 1024)

enum reader_exit {
	READER_OK    = 0,
	READER_USAGE = 2, /* no pin path given */
	READER_OPEN  = 3, /* the pin is missing, or is not a ring buffer */
	READER_POLL  = 4, /* the kernel refused a read or a wait */
};

/* A ring buffer being read, and where its positions are seen. */
struct reader {
	struct ring_buffer *ring;
	const volatile unsigned long *consumer; /* the ring's positions, mapped read-only */
	const volatile unsigned long *producer;
	unsigned long half;                   /* half the ring's data bytes */
};

static volatile sig_atomic_t stopping;
static char output[OUTPUT_BUFFER];

static void request_stop(int signo)
{
	(void)signo;
	stopping = 1;
}

/* Each byte's two hex digits, filled in by fill_hex_pairs. */
static char hex_pairs[256][2];

static void fill_hex_pairs(void)
{
	static const char digits[] = "0123456789abcdef";
	int byte;

	for (byte = 0; byte < 256; byte++) {
		hex_pairs[byte][0] = digits[byte >> 4];
		hex_pairs[byte][1] = digits[byte & 0xf];
	}
}

/* print_record — one record as a line of hex into stdout's buffer (a
 * batch leaves in one write, after the read); 0 keeps the reader going.
 * Two digits a byte from a table, HEX_CHUNK bytes written at once: a
 * character at a time (putchar), or printf("%02x") a byte, cost more than
 * the rest of the reader. */
static int print_record(void *ctx, void *data, size_t size)
{
	const unsigned char *bytes = data;
	char text[2 * HEX_CHUNK];
	size_t done, chunk, i;

	(void)ctx;
	for (done = 0; done < size; done += chunk) {
		chunk = size - done < HEX_CHUNK ? size - done : HEX_CHUNK;
		for (i = 0; i < chunk; i++)
			memcpy(&text[2 * i], hex_pairs[bytes[done + i]], 2);
		fwrite_unlocked(text, 1, 2 * chunk, stdout);
	}
	putchar_unlocked('\n');
	return 0;
}

/* filling — true once half the ring is unread. */
static int filling(const struct reader *reader)
{
	unsigned long produced = __atomic_load_n(reader->producer, __ATOMIC_ACQUIRE);
	unsigned long consumed = __atomic_load_n(reader->consumer, __ATOMIC_ACQUIRE);

	return produced - consumed >= reader->half;
}

/* sleep_ms — sleeps @ms milliseconds; a signal cuts it short (stop is then seen). */
static void sleep_ms(long ms)
{
	struct timespec span = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&span, NULL);
}

/* rest — lets the next batch gather for BATCH_REST_MS, cut short when the
 * ring is half full or a stop is asked for. */
static void rest(const struct reader *reader)
{
	int slice;

	for (slice = 0; slice < BATCH_REST_MS / REST_SLICE_MS; slice++) {
		if (stopping || filling(reader))
			return;
		sleep_ms(REST_SLICE_MS);
	}
}

/* read_batch — prints what the ring holds; with nothing there, waits up to
 * IDLE_WAIT_MS for a record and prints what came. The count, or -errno. */
static int read_batch(const struct reader *reader)
{
	int count = ring_buffer__consume(reader->ring);

	if (count == 0)
		count = ring_buffer__poll(reader->ring, IDLE_WAIT_MS);
	return count == -EINTR ? 0 : count; /* a signal: stop is then seen */
}

/* map_position — the ring's page at @page (0: consumer, 1: producer), read-only. */
static const volatile unsigned long *map_position(int fd, int page)
{
	long size = sysconf(_SC_PAGESIZE);
	void *at = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, page * size);

	return at == MAP_FAILED ? NULL : at;
}

/* open_reader — @reader on the ring buffer pinned at @pin; 0, or -1 said on stderr. */
static int open_reader(struct reader *reader, const char *pin)
{
	struct bpf_map_info info = {};
	__u32 info_size = sizeof(info);
	int fd = bpf_obj_get(pin);

	if (fd < 0) {
		fprintf(stderr, "cannot open %s: %s\n", pin, strerror(errno));
		return -1;
	}
	if (bpf_obj_get_info_by_fd(fd, &info, &info_size) < 0 || info.type != BPF_MAP_TYPE_RINGBUF) {
		fprintf(stderr, "%s is not a ring buffer\n", pin);
		return -1;
	}
	reader->half = info.max_entries / 2;
	reader->ring = ring_buffer__new(fd, print_record, NULL, NULL);
	reader->consumer = map_position(fd, 0);
	reader->producer = map_position(fd, 1);
	if (!reader->ring || !reader->consumer || !reader->producer) {
		fprintf(stderr, "cannot read %s: %s\n", pin, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct reader reader = {};
	int count;
	int err = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: flow_reader PIN\n");
		return READER_USAGE;
	}
	fill_hex_pairs();
	setvbuf(stdout, output, _IOFBF, sizeof(output));
	/* Not a pipe (a file, a terminal), or a smaller limit: writes just block sooner. */
	(void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, PIPE_SIZE);
	if (open_reader(&reader, argv[1]) < 0)
		return READER_OPEN;
	signal(SIGINT, request_stop);
	signal(SIGTERM, request_stop);
	/* Ready: the caller may start traffic once it reads this line. */
	printf("ready\n");
	fflush(stdout);
	while (!stopping) {
		count = read_batch(&reader);
		if (count < 0) {
			err = count;
			break;
		}
		if (fflush(stdout) != 0)
			break; /* the caller went away */
		if (count > 0)
			rest(&reader);
	}
	ring_buffer__free(reader.ring);
	if (err < 0) {
		fprintf(stderr, "reading %s: %s\n", argv[1], strerror(-err));
		return READER_POLL;
	}
	return READER_OK;
}
