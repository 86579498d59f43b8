// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* flow_reader.c — writes the records of a pinned BPF ring buffer to
 * stdout, each as it found it in a frame (a header, then the bytes), for
 * `intercept watch` and the agent's `--flows` to decode (src/flows/,
 * frames.ts reads the frames). bpftool reads perf buffers but not ring
 * buffers, and Node cannot mmap one: this is the smallest reader libbpf
 * allows, built on first use with the compiler that builds the policies.
 *
 * Usage: flow_reader PIN
 * It runs until SIGINT or SIGTERM, or until its stdout is closed. A ring
 * buffer has one consumer position: two readers of one namespace share
 * its records between them. */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
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
 * buffer's worth (132 bytes a framed record) leaves in a few writes,
 * without waiting for the caller to read the first. */
#define OUTPUT_BUFFER (64 * 1024)
#define PIPE_SIZE (1024 * 1024)
#define READY_WORD "ready" /* frames.ts's READY */

enum reader_exit {
	READER_OK    = 0,
	READER_USAGE = 2, /* no pin path given */
	READER_OPEN  = 3, /* the pin is missing, or is not a ring buffer */
	READER_POLL  = 4, /* the kernel refused a read or a wait */
};

/* What a frame carries. */
enum frame_kind {
	FRAME_RECORD  = 1, /* a record, as the ring buffer held it */
	FRAME_CONTROL = 2, /* a word: "ready" */
};

/* Before each frame's bytes: what it carries and how many bytes follow,
 * in the host's byte order. src/flows/frames.ts reads it. */
struct frame_header {
	uint16_t kind; /* enum frame_kind */
	uint16_t size;
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

/* write_frame — a frame of @kind holding @size bytes at @data into
 * stdout's buffer (a batch leaves in one write, after the read); 0, or
 * -E2BIG for more than a frame holds. */
static int write_frame(enum frame_kind kind, const void *data, size_t size)
{
	struct frame_header header = { .kind = kind };

	if (size > UINT16_MAX)
		return -E2BIG;
	header.size = size;
	fwrite_unlocked(&header, sizeof(header), 1, stdout);
	fwrite_unlocked(data, size, 1, stdout);
	return 0;
}

/* print_record — one record as a frame; 0 keeps the reader going. As
 * bytes, not hex: twice the bytes through the pipe, and a line of hex to
 * decode a record, cost the caller more than the rest of its work. */
static int print_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	return write_frame(FRAME_RECORD, data, size);
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
	setvbuf(stdout, output, _IOFBF, sizeof(output));
	/* Not a pipe (a file, a terminal), or a smaller limit: writes just block sooner. */
	(void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, PIPE_SIZE);
	if (open_reader(&reader, argv[1]) < 0)
		return READER_OPEN;
	signal(SIGINT, request_stop);
	signal(SIGTERM, request_stop);
	/* Ready: the caller may start traffic once it reads this word. */
	write_frame(FRAME_CONTROL, READY_WORD, strlen(READY_WORD));
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
