/* fuzz_proto.c — libFuzzer target for the NBD front end: the real
 * connection code (conn.c: buffers, parsing loop, backpressure, reply
 * queue, TLS switch) and protocol code (proto.c), over a real store, fed
 * through a socketpair the way nbdkit's fuzzer feeds its real server.
 *
 * The input is what a client sends after the server greeting: client
 * flags, options, then transmission requests and WRITE payloads.  Byte 0
 * is not sent: it seeds how the rest is cut into writes (0: one write), so
 * resumable parsing is exercised, and its bits 1-2 pick the TLS mode (off,
 * allowed, required; 3 = allowed).  TLS uses a PSK made at startup; no
 * input can complete a TLS handshake, so after NBD_OPT_STARTTLS the bytes
 * go to GnuTLS and the connection ends in a failed handshake.
 *
 * One store on an in-memory pool serves every input; before each, the
 * exports are reset ("vol0" 1 MiB with data at 8 KiB rolled back to its
 * snapshot "vol0@snap", "odd" of a size that is not a multiple of the
 * block and a thin 1 TiB "big" made anew), so writes of one input never
 * change what the next one sees.  Each input gets a fresh conn_server on
 * one libev loop.  One end of a socketpair goes to conn_server_adopt(); this thread
 * writes the input to the other end chunk by chunk, runs the loop, and
 * reads the replies.  Once the server has read everything (SIOCOUTQ is 0)
 * and has nothing more to say, the client shuts down its side; the run
 * ends when the server has closed the connection and freed it.  Every run
 * ends: a bound on loop iterations, and a timer that fails the run if the
 * server hangs.
 *
 * Checked on the reply stream (assert): the greeting; every option's
 * replies well formed, for that option, ending in ACK or an error, none
 * truncated; the EXPORT_NAME reply and its padding; every transmission
 * reply well formed (magic, error values the spec knows, chunk types,
 * lengths, DONE), for a handle the client sent; and when the client ended
 * cleanly (NBD_CMD_DISC, or EOF between requests) every request got
 * exactly one reply and nothing else was sent.  ASan/UBSan check the rest.
 *
 * Built by `make fuzz` with clang -fsanitize=fuzzer, and by `make check`
 * with gcc into tests/fuzz/replay.c, which replays the corpus.
 */
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <ev.h>
#include <linux/sockios.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../lib/bytes.h"
#include "blkdev.h"
#include "conn.h"
#include "nbd.h"
#include "proto.h"
#include "say.h"
#include "store.h"
#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define POOL_BYTES (64ull << 20)
#define DATA_BYTES (64u << 10)
#define OUT_CAP    (16u << 20) /* reply bytes kept for checking; more are read and dropped */
#define HANG_SECS  20.0

static struct ev_loop *loop;
static struct tls_creds *creds;
static struct store *st;
static uint8_t pattern[DATA_BYTES];

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz_proto: %s: %s\n", what, strerror(err < 0 ? -err : err));
	abort();
}

/* ---- setup -------------------------------------------------------------- */

/* A PSK credential, so STARTTLS is offered; the key file is removed once
 * loaded. */
static void make_creds(void)
{
	char dir[] = "/tmp/fuzz_proto.XXXXXX", path[64], err[256];
	FILE *f;

	if (!mkdtemp(dir))
		die("mkdtemp", errno);
	snprintf(path, sizeof(path), "%s/psk", dir);
	f = fopen(path, "w");
	if (!f)
		die(path, errno);
	fprintf(f, "fuzz:00112233445566778899aabbccddeeff\n");
	fclose(f);
	creds = tls_creds_load(NULL, path, err, sizeof(err));
	unlink(path);
	rmdir(dir);
	if (!creds) {
		fprintf(stderr, "fuzz_proto: %s\n", err);
		abort();
	}
}

/* The pool, made once: a fresh store per input would cost a checkpoint
 * and an RCU grace period (about 20 ms) each time. */
static struct store *store_fixture(void)
{
	struct store_opts opts = {.readers = 1};
	struct blkdev *dev = blkdev_mem_new(POOL_BYTES);
	const char *why = NULL;
	struct store *pool;
	struct vol *v;
	int err;

	if (!dev)
		die("blkdev_mem_new", errno);
	if ((err = store_format(dev)))
		die("store_format", err);
	if (!(pool = store_open(dev, &opts, &why)))
		die(why, errno);
	if ((err = store_vol_create(pool, "vol0", 1u << 20)))
		die("store_vol_create", err);
	if ((err = store_vol_open(pool, "vol0", &v)))
		die("store_vol_open", err);
	if ((err = store_write(v, pattern, 8192, DATA_BYTES, 0)) || (err = store_flush(v)))
		die("store_write", err);
	store_vol_close(v);
	if ((err = store_snap_create(pool, "vol0@snap")))
		die("store_snap_create", err);
	return pool;
}

/* Every input starts from the same exports: vol0 as its snapshot, the
 * other volumes new and empty. */
static void exports_reset(void)
{
	int err;

	if ((err = store_rollback(st, "vol0@snap")))
		die("store_rollback", err);
	store_vol_delete(st, "odd"); /* absent before the first input */
	store_vol_delete(st, "big");
	if ((err = store_vol_create(st, "odd", 3 * 4096 + 1536)) ||
	    (err = store_vol_create(st, "big", 1ull << 40)))
		die("store_vol_create", err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	say_max_level = SAY_ERROR;
	loop = ev_loop_new(EVFLAG_AUTO);
	if (!loop)
		die("ev_loop_new", ENOMEM);
	memset(pattern, 0xa5, sizeof(pattern));
	make_creds();
	st = store_fixture();
	return 0;
}

/* ---- the client side -------------------------------------------------- */

struct out {
	uint8_t *d;
	size_t len;    /* kept in d */
	size_t total;  /* received */
	bool overflow; /* more than OUT_CAP: not checked */
};

static bool hung;

static void on_hang(struct ev_loop *l, ev_timer *w, int revents)
{
	hung = true;
	ev_break(l, EVBREAK_ONE);
}

/* Read what the server sent so far.  Returns true at EOF (or reset). */
static bool read_replies(int fd, struct out *o)
{
	static uint8_t scratch[64 << 10];

	for (;;) {
		uint8_t *at = o->len + sizeof(scratch) <= OUT_CAP ? o->d + o->len : scratch;
		ssize_t n = recv(fd, at, sizeof(scratch), MSG_DONTWAIT);

		if (n > 0) {
			o->total += (size_t)n;
			if (at == scratch)
				o->overflow = true;
			else
				o->len += (size_t)n;
			continue;
		}
		if (n == 0)
			return true;
		if (errno == EINTR)
			continue;
		assert(errno == EAGAIN || errno == ECONNRESET);
		return errno == ECONNRESET;
	}
}

static void on_client(struct ev_loop *l, ev_io *w, int revents)
{
	/* Only wakes the loop: run() does the I/O. */
}

/* Feed in[0, len) to a fresh server; collect its replies in o. */
static void run(const uint8_t *in, size_t len, uint32_t seed, unsigned tls, struct out *o)
{
	struct conn_server *s;
	size_t sent = 0, steps = 0, max_steps = 4 * len + 100000;
	bool shut = false, idle = false, eof = false;
	ev_timer hang;
	ev_io client;
	int sv[2];

	exports_reset();
	s = conn_server_new(loop, st);
	assert(s);
	conn_server_set_tls(s, tls ? creds : NULL, tls == 2);
	assert(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	assert(conn_server_adopt(s, sv[0]) == 0);
	hung = false;
	ev_timer_init(&hang, on_hang, HANG_SECS, 0.);
	ev_timer_start(loop, &hang);
	ev_init(&client, on_client);
	for (;;) {
		size_t before = o->total;
		bool moved = false;
		int queued = 0;

		assert(++steps < max_steps && !hung);
		if (sent < len) {
			size_t chunk = len - sent;
			ssize_t n;

			if (seed) {
				seed = seed * 1103515245u + 12345u;
				chunk = 1 + (seed >> 16) % (seed & 0x10000 ? 7 : 67);
				chunk = chunk < len - sent ? chunk : len - sent;
			}
			n = send(sv[1], in + sent, chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0) {
				sent += (size_t)n;
				moved = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				assert(errno == EPIPE || errno == ECONNRESET);
				sent = len; /* the server hung up */
			}
		} else if (!shut && idle && ioctl(sv[1], SIOCOUTQ, &queued) == 0 && queued == 0) {
			/* The server has read everything and said all it had to
			 * say: now the client goes away. */
			shutdown(sv[1], SHUT_WR);
			shut = moved = true;
		}
		ev_run(loop, EVRUN_NOWAIT);
		eof = eof || read_replies(sv[1], o);
		moved |= o->total != before;
		if (eof && conn_server_count(s) == 0)
			break;
		if (moved || (!idle && !shut && sent == len)) {
			idle = !moved; /* one quiet round before shutting down */
			continue;
		}
		idle = true;
		/* Wait for the store, the server's watchers, our socket (room
		 * to write, replies, EOF), or the hang timer. */
		ev_io_stop(loop, &client);
		if (!eof) {
			ev_io_set(&client, sv[1], sent < len ? EV_READ | EV_WRITE : EV_READ);
			ev_io_start(loop, &client);
		}
		ev_run(loop, EVRUN_ONCE);
	}
	ev_io_stop(loop, &client);
	ev_timer_stop(loop, &hang);
	close(sv[1]);
	/* No connection is left, so no store thread can still wake the
	 * loop: the server may go before the store (unlike the daemon). */
	conn_server_stop(s);
	conn_server_free(s);
}

/* ---- checking the reply stream ------------------------------------------ */

struct sent_req {
	uint64_t handle;
	uint16_t type;
	uint64_t len;
	bool answered;
};

static bool nbd_error_known(uint32_t e)
{
	return e == NBD_EPERM || e == NBD_EIO || e == NBD_ENOMEM || e == NBD_EINVAL ||
	       e == NBD_ENOSPC || e == NBD_EOVERFLOW || e == NBD_ESHUTDOWN;
}

/* Replies to one option at o[*at]: well formed, for opt, ending in ACK or
 * an error.  Returns the final reply type. */
static uint32_t check_option_replies(const uint8_t *o, size_t olen, size_t *at, uint32_t opt)
{
	for (;;) {
		uint32_t type, rl;

		assert(olen - *at >= sizeof(struct nbd_option_reply));
		assert(bytes_be64(o + *at) == NBD_REP_MAGIC);
		assert(bytes_be32(o + *at + 8) == opt);
		type = bytes_be32(o + *at + 12);
		rl = bytes_be32(o + *at + 16);
		*at += sizeof(struct nbd_option_reply);
		assert(olen - *at >= rl);
		*at += rl;
		if (type == NBD_REP_ACK) {
			assert(rl == 0);
			return type;
		}
		if (type & 0x80000000u) {
			assert(type >= NBD_REP_ERR_UNSUP && type <= NBD_REP_ERR_EXT_HEADER_REQD);
			assert(rl <= NBD_STRING_MAX);
			return type;
		}
		if (type == NBD_REP_SERVER)
			assert(opt == NBD_OPT_LIST && rl >= 4 && rl <= 4 + 2 * NBD_STRING_MAX);
		else if (type == NBD_REP_INFO)
			assert((opt == NBD_OPT_INFO || opt == NBD_OPT_GO) &&
			       rl <= 2 + NBD_STRING_MAX);
		else
			/* base:allocation, qemu:allocation-depth or
			 * qemu:dirty-bitmap:SNAP */
			assert(
			    type == NBD_REP_META_CONTEXT && rl > 4 && rl <= 4 + NBD_STRING_MAX &&
			    (opt == NBD_OPT_LIST_META_CONTEXT || opt == NBD_OPT_SET_META_CONTEXT));
	}
}

/* The requests in in[pos, len), compact or (extended) 32-byte headers:
 * into *reqs (malloc'ed), their count in *n.  Returns whether the client
 * ended cleanly (DISC, or EOF between requests or inside a header), when
 * the server must answer them all. */
static bool parse_requests(const uint8_t *in, size_t len, size_t pos, bool extended,
                           struct sent_req **reqs, size_t *n)
{
	size_t hlen = extended ? sizeof(struct nbd_extended_header) : sizeof(struct nbd_request);

	*reqs = calloc(len / sizeof(struct nbd_request) + 1, sizeof(**reqs));
	*n = 0;
	assert(*reqs);
	while (len - pos >= hlen) {
		struct sent_req *r = &(*reqs)[*n];
		uint64_t payload;

		if (bytes_be32(in + pos) !=
		    (extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC))
			return false; /* the server hangs up */
		r->type = bytes_be16(in + pos + 6);
		memcpy(&r->handle, in + pos + 8, 8);
		r->len = extended ? bytes_be64(in + pos + 24) : bytes_be32(in + pos + 24);
		/* A WRITE carries its length; with extended headers any command
		 * flagged PAYLOAD_LEN carries its length field's worth. */
		payload =
		    r->type == NBD_CMD_WRITE ||
		            (extended && (bytes_be16(in + pos + 4) & NBD_CMD_FLAG_PAYLOAD_LEN))
		        ? r->len
		        : 0;
		pos += hlen;
		if (r->type == NBD_CMD_DISC)
			return true;
		(*n)++;
		if (payload > PROTO_MAX_PAYLOAD)
			return false; /* refused by hanging up (extended) or drained */
		if (len - pos < payload)
			return false; /* EOF inside a payload */
		pos += payload;
	}
	return true;
}

/* Whether a reply for handle h cannot be told apart: two requests not yet
 * answered share it and differ in command or length.  Which one it
 * answers then decides how later replies are read (a simple reply's data
 * length; a chunk for a READ or for a BLOCK_STATUS), so nothing after it
 * can be checked.  Replies come in completion order, not request order: a
 * WRITE still in the store is answered after a later request with the
 * same handle that was refused at once. */
static bool handle_ambiguous(const struct sent_req *reqs, size_t n, uint64_t h)
{
	const struct sent_req *first = NULL;

	for (size_t i = 0; i < n; i++) {
		if (reqs[i].answered || reqs[i].handle != h)
			continue;
		if (!first)
			first = &reqs[i];
		else if (reqs[i].type != first->type || reqs[i].len != first->len)
			return true;
	}
	return false;
}

/* Transmission replies in o[at, olen) to the requests sent. */
static void check_transmission(const uint8_t *o, size_t olen, size_t at, struct sent_req *reqs,
                               size_t n, bool structured, bool extended, bool clean)
{
	while (at < olen) {
		uint32_t magic;
		uint64_t h;
		size_t pick = n;

		assert(olen - at >= 4);
		magic = bytes_be32(o + at);
		/* Extended headers: every reply is an extended chunk. */
		assert(extended == (magic == NBD_EXTENDED_REPLY_MAGIC));
		if (magic == NBD_SIMPLE_REPLY_MAGIC) {
			uint32_t err, dlen = 0;

			assert(olen - at >= sizeof(struct nbd_simple_reply));
			err = bytes_be32(o + at + 4);
			memcpy(&h, o + at + 8, 8);
			assert(err == 0 || nbd_error_known(err));
			if (handle_ambiguous(reqs, n, h))
				return;
			/* A structured READ never gets a simple reply. */
			for (size_t i = 0; i < n && pick == n; i++)
				if (!reqs[i].answered && reqs[i].handle == h &&
				    !(structured && reqs[i].type == NBD_CMD_READ))
					pick = i;
			assert(pick < n); /* a reply to a request the client sent */
			if (!err && reqs[pick].type == NBD_CMD_READ)
				dlen = (uint32_t)reqs[pick].len;
			at += sizeof(struct nbd_simple_reply);
			assert(olen - at >= dlen);
			at += dlen;
			reqs[pick].answered = true;
			continue;
		}
		assert(magic == NBD_STRUCTURED_REPLY_MAGIC || magic == NBD_EXTENDED_REPLY_MAGIC);
		size_t hlen = extended ? sizeof(struct nbd_extended_header)
		                       : sizeof(struct nbd_structured_reply);
		assert(olen - at >= hlen);

		uint16_t flags = bytes_be16(o + at + 4), type = bytes_be16(o + at + 6);
		uint64_t plen = extended ? bytes_be64(o + at + 24) : bytes_be32(o + at + 16);
		const uint8_t *p = o + at + hlen;
		bool done = flags & NBD_REPLY_FLAG_DONE;

		memcpy(&h, o + at + 8, 8);
		assert(!(flags & ~NBD_REPLY_FLAG_DONE));
		if (handle_ambiguous(reqs, n, h))
			return;
		at += hlen;
		assert(olen - at >= plen);
		at += plen;
		switch (type) {
		case NBD_REPLY_TYPE_NONE:
			assert(plen == 0 && done);
			break;
		case NBD_REPLY_TYPE_OFFSET_DATA:
			assert(plen > 8 && plen - 8 <= PROTO_MAX_PAYLOAD);
			break;
		case NBD_REPLY_TYPE_OFFSET_HOLE:
			assert(plen == 12 && bytes_be32(p + 8) > 0);
			break;
		case NBD_REPLY_TYPE_BLOCK_STATUS: /* one chunk per context; DONE on the last */
			assert(!extended && plen >= 12 && (plen - 4) % 8 == 0);
			assert(bytes_be32(p) >= 1 && bytes_be32(p) <= PROTO_META_NCTX);
			break;
		case NBD_REPLY_TYPE_BLOCK_STATUS_EXT:
			assert(extended && plen >= 24 && (plen - 8) % 16 == 0);
			assert(bytes_be32(p) >= 1 && bytes_be32(p) <= PROTO_META_NCTX);
			assert(bytes_be32(p + 4) == (plen - 8) / 16);
			break;
		case NBD_REPLY_TYPE_ERROR:
		case NBD_REPLY_TYPE_ERROR_OFFSET:
			assert(plen >= 6 && done && nbd_error_known(bytes_be32(p)));
			assert(plen ==
			       6u + bytes_be16(p + 4) + (type == NBD_REPLY_TYPE_ERROR ? 0 : 8));
			break;
		default:
			assert(!"unknown chunk type");
		}
		/* Chunks answer BLOCK_STATUS, and READ once structured. */
		for (size_t i = 0; i < n && pick == n; i++)
			if (!reqs[i].answered && reqs[i].handle == h &&
			    ((structured && reqs[i].type == NBD_CMD_READ) ||
			     reqs[i].type == NBD_CMD_BLOCK_STATUS || extended))
				pick = i;
		assert(pick < n);
		if (done)
			reqs[pick].answered = true;
	}
	if (clean)
		for (size_t i = 0; i < n; i++)
			assert(reqs[i].answered);
}

/* The whole reply stream o against the client's stream in. */
static void check_stream(const uint8_t *in, size_t len, const struct out *o, unsigned tls)
{
	const uint8_t *p = o->d;
	size_t olen = o->len, at = sizeof(struct nbd_greeting), pos = 4;
	bool structured = false, extended = false, no_zeroes;
	struct sent_req *reqs;
	size_t n;
	bool clean;

	assert(olen >= sizeof(struct nbd_greeting));
	assert(bytes_be64(p) == NBD_MAGIC && bytes_be64(p + 8) == NBD_OPT_MAGIC);
	assert(bytes_be16(p + 16) == (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
	if (o->overflow || len < 4)
		return;
	no_zeroes = bytes_be32(in) & NBD_FLAG_C_NO_ZEROES;
	for (;;) {
		uint32_t opt, dlen, last;

		/* A hang-up (framing error, refused EXPORT_NAME, EOF, ...) may
		 * drop replies still buffered: output may end before any
		 * option, never inside a reply. */
		if (at == olen || len - pos < sizeof(struct nbd_option))
			return;
		assert(bytes_be64(in + pos) == NBD_OPT_MAGIC);
		opt = bytes_be32(in + pos + 8);
		dlen = bytes_be32(in + pos + 12);
		assert(dlen <= PROTO_OPT_MAX && len - pos - sizeof(struct nbd_option) >= dlen);
		pos += sizeof(struct nbd_option) + dlen;
		if (opt == NBD_OPT_EXPORT_NAME) {
			size_t want = sizeof(struct nbd_export_name_reply) +
			              (no_zeroes ? 0 : NBD_EXPORT_NAME_PAD);

			assert(olen - at >= want);
			for (size_t i = sizeof(struct nbd_export_name_reply); i < want; i++)
				assert(p[at + i] == 0);
			at += want;
			break;
		}
		last = check_option_replies(p, olen, &at, opt);
		if (last == NBD_REP_ERR_TLS_REQD)
			assert(tls == 2);
		if (last != NBD_REP_ACK)
			continue;
		if (opt == NBD_OPT_ABORT) {
			assert(at == olen);
			return;
		}
		if (opt == NBD_OPT_STARTTLS) {
			assert(tls != 0);
			return; /* TLS records follow */
		}
		structured |= opt == NBD_OPT_STRUCTURED_REPLY || opt == NBD_OPT_EXTENDED_HEADERS;
		extended |= opt == NBD_OPT_EXTENDED_HEADERS;
		if (opt == NBD_OPT_GO)
			break;
	}
	clean = parse_requests(in, len, pos, extended, &reqs, &n);
	check_transmission(p, olen, at, reqs, n, structured, extended, clean);
	free(reqs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct out o = {.d = malloc(OUT_CAP)};
	unsigned tls;

	if (size < 1) {
		free(o.d);
		return 0;
	}
	assert(o.d);
	/* Byte 0, bits 1-2: TLS off, allowed or required (3: allowed). */
	tls = (data[0] >> 1) & 3;
	tls = tls == 3 ? 1 : tls;
	run(data + 1, size - 1, data[0], tls, &o);
	check_stream(data + 1, size - 1, &o, tls);
	free(o.d);
	return 0;
}
