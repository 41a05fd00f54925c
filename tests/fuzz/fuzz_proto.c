/* fuzz_proto.c — libFuzzer target for the NBD handshake and request parser
 * (proto.c), driven the way conn.c drives it, over a real store.
 *
 * The input is what a client would send after the server greeting: client
 * flags, options, then transmission requests and WRITE payloads.  Byte 0
 * is not sent; it seeds how the rest is cut into reads, so resumable
 * parsing (proto never consumes half a message) is exercised, and its bits
 * 1-2 pick the TLS mode (off, allowed, required).  The TLS layer itself is
 * modelled as transparent: after STARTTLS is acknowledged the harness
 * calls proto_tls_started() and what follows is taken as sent inside TLS.  Exports are
 * looked up through the same store calls conn.c makes (store_vol_open on a
 * small in-memory pool built once: "vol0" 1 MiB, its snapshot "vol0@snap",
 * "odd" of a size that is not a multiple of the block and a thin 1 TiB "big"), so client-chosen
 * export names reach the store's name parsing.  Valid READs of at most
 * 64 KiB are executed; nothing writes, so every run sees the same store.
 *
 * Each input runs twice: fed whole, and fed in chunks.  Both runs must
 * produce the same reply bytes and the same decoded requests.  Checked on
 * the way (assert): proto never consumes more than it was given; every
 * option gets a well-formed reply ending in ACK or an error (only
 * EXPORT_NAME answers otherwise), no reply is longer than the spec allows;
 * a request proto lets through is in range, within the payload limit, not
 * a write to a read-only export, and the store accepts it; a structured
 * READ splits into runs that tile it (holes only where the bytes are zero,
 * one data run with DF); BLOCK_STATUS comes only with base:allocation
 * active and store_map answers it; chunk headers say what follows them;
 * every export handle opened is closed.
 *
 * Built by `make fuzz` with clang -fsanitize=fuzzer, and by `make check`
 * with gcc into tests/fuzz/replay.c, which replays the corpus.
 */
#undef NDEBUG
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "say.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define POOL_BYTES (64ull << 20)
#define READ_CAP   (64u << 10)
/* A reply to one option: at most one per export (LIST) plus the ACK, each
 * a header, a name and a description (NBD_STRING_MAX each). */
#define EXPORTS       4
#define OPT_REPLY_MAX ((EXPORTS + 4) * (sizeof(struct nbd_option_reply) + 8 + 2 * NBD_STRING_MAX))

static struct store *st;
static uint8_t *readbuf;

/* ---- the exports: conn.c's ops table, with open/close counted -------- */

struct run {
	int opens;
	struct proto p;
	struct proto_buf out;
	/* What the run produced, for comparing the whole and chunked runs. */
	struct proto_buf log;
	int end; /* 0 input exhausted, else how the run ended */
};

static int fx_open(void *ctx, const char *name, struct proto_export *out)
{
	struct run *r = ctx;
	struct vol *v;
	int err = store_vol_open(st, name, &v);

	if (err)
		return err == -EINVAL ? -ENOENT : err;
	out->size = store_vol_size(v);
	out->read_only = store_vol_readonly(v);
	out->handle = v;
	r->opens++;
	return 0;
}

static void fx_close(void *ctx, void *handle)
{
	struct run *r = ctx;

	assert(handle);
	store_vol_close(handle);
	r->opens--;
}

static int fx_list(void *ctx, int (*emit)(void *, const char *, const char *), void *arg)
{
	struct store_vol_info *v;
	size_t n;
	int err = store_list(st, &v, &n);

	if (err)
		return err;
	for (size_t i = 0; i < n && !err; i++)
		err = emit(arg, v[i].name, v[i].snapshot ? NULL : "volume");
	free(v);
	return err;
}

static const struct proto_ops fx_ops = {fx_open, fx_close, fx_list};

/* ---- setup ------------------------------------------------------------ */

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz_proto: %s: %s\n", what, strerror(err < 0 ? -err : err));
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct store_opts opts = {.readers = 1};
	struct blkdev *dev = blkdev_mem_new(POOL_BYTES);
	const char *why = NULL;
	struct vol *v;
	int err;

	say_max_level = SAY_ERROR;
	if (!dev)
		die("blkdev_mem_new", errno);
	err = store_format(dev);
	if (err)
		die("store_format", err);
	st = store_open(dev, &opts, &why);
	if (!st)
		die(why, errno);
	if ((err = store_vol_create(st, "vol0", 1u << 20)) ||
	    (err = store_vol_create(st, "odd", 3 * 4096 + 1536)) ||
	    (err = store_vol_create(st, "big", 1ull << 40)))
		die("store_vol_create", err);
	/* Some data, so reads go to the disk as well as to holes. */
	readbuf = malloc(READ_CAP);
	if (!readbuf)
		die("malloc", ENOMEM);
	memset(readbuf, 0xa5, READ_CAP);
	if ((err = store_vol_open(st, "vol0", &v)))
		die("store_vol_open", err);
	if ((err = store_write(v, readbuf, 8192, READ_CAP, 0)) || (err = store_flush(v)))
		die("store_write", err);
	store_vol_close(v);
	if ((err = store_snap_create(st, "vol0@snap")))
		die("store_snap_create", err);
	store_thread_register();
	return 0;
}

/* ---- checks ------------------------------------------------------------ */

static uint32_t be32_at(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return be32toh(v);
}

static uint64_t be64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return be64toh(v);
}

/* The replies proto appended (out[from, len)) for the options it consumed
 * (in[0, used)): one reply sequence per option, in order. */
static void check_replies(struct run *r, const uint8_t *in, size_t used, bool had_flags,
                          size_t from)
{
	const uint8_t *o = r->out.data + from;
	size_t olen = r->out.len - from, at = 0, pos = had_flags ? 4 : 0;

	while (pos < used) {
		uint32_t opt = be32_at(in + pos + 8), n = be32_at(in + pos + 12);

		pos += sizeof(struct nbd_option) + n;
		assert(pos <= used);
		if (opt == NBD_OPT_EXPORT_NAME) {
			/* Accepted (the only outcome that consumes it): the
			 * size, flags and, without NO_ZEROES, 124 zeroes. */
			size_t want = sizeof(struct nbd_export_name_reply) +
			              (r->p.no_zeroes ? 0 : NBD_EXPORT_NAME_PAD);

			assert(r->p.phase == PROTO_TRANSMISSION && pos == used);
			assert(olen - at == want);
			assert(be64_at(o + at) == r->p.exp.size);
			at += want;
			continue;
		}
		size_t start = at;

		for (;;) {
			assert(olen - at >= sizeof(struct nbd_option_reply));
			uint32_t type = be32_at(o + at + 12), len = be32_at(o + at + 16);

			assert(be64_at(o + at) == NBD_REP_MAGIC);
			assert(be32_at(o + at + 8) == opt);
			at += sizeof(struct nbd_option_reply);
			assert(olen - at >= len);
			assert(len <= 4 + 2 * NBD_STRING_MAX);
			at += len;
			if (type == NBD_REP_ACK) {
				assert(len == 0);
				break;
			}
			if (type & 0x80000000u) {
				assert(len <= NBD_STRING_MAX);
				break;
			}
			assert(type == NBD_REP_SERVER || type == NBD_REP_INFO ||
			       type == NBD_REP_META_CONTEXT);
		}
		assert(at - start <= OPT_REPLY_MAX);
	}
	assert(at == olen);
}

/* ---- structured replies and BLOCK_STATUS -------------------------------- */

static void check_chunk(const uint8_t *c, size_t n, uint64_t handle, uint16_t type,
                        uint32_t payload)
{
	struct nbd_structured_reply h;

	assert(n >= sizeof(h));
	memcpy(&h, c, sizeof(h));
	assert(be32toh(h.magic) == NBD_STRUCTURED_REPLY_MAGIC);
	assert(be16toh(h.type) == type);
	assert(h.handle == handle);
	assert(be32toh(h.length) == payload);
}

/* A structured READ of readbuf: the runs tile the request, holes hold
 * only zero bytes, DF gives one data run, and each chunk header says
 * what follows it. */
static void check_read_runs(const struct proto_req *q)
{
	struct proto_run runs[8];
	unsigned max = 1 + (unsigned)(q->handle % 8), n;
	uint32_t at = 0;
	uint8_t chunk[PROTO_CHUNK_HOLE > PROTO_CHUNK_DATA ? PROTO_CHUNK_HOLE : PROTO_CHUNK_DATA];

	n = proto_read_runs(readbuf, q->offset, q->length, q->df, runs, max);
	assert(n >= 1 && n <= max);
	if (q->df)
		assert(n == 1 && !runs[0].hole);
	for (unsigned i = 0; i < n; i++) {
		assert(runs[i].off == at && runs[i].len > 0);
		at += runs[i].len;
		if (runs[i].hole) {
			for (uint32_t k = 0; k < runs[i].len; k++)
				assert(readbuf[runs[i].off + k] == 0);
			assert(proto_chunk_hole(chunk, q->handle, 0, q->offset + runs[i].off,
			                        runs[i].len) == PROTO_CHUNK_HOLE);
			check_chunk(chunk, PROTO_CHUNK_HOLE, q->handle, NBD_REPLY_TYPE_OFFSET_HOLE,
			            12);
		} else {
			assert(proto_chunk_data(chunk, q->handle, 0, q->offset + runs[i].off,
			                        runs[i].len) == PROTO_CHUNK_DATA);
			check_chunk(chunk, PROTO_CHUNK_DATA, q->handle, NBD_REPLY_TYPE_OFFSET_DATA,
			            8 + runs[i].len);
		}
	}
	assert(at == q->length);
}

/* BLOCK_STATUS as conn.c answers it: only with base:allocation active,
 * in range, answered by store_map with at most max extents that cover a
 * prefix of the range. */
static void check_block_status(struct run *r, const struct proto_req *q)
{
	const struct proto_export *e = &r->p.exp;
	struct store_extent ext[16];
	unsigned max = q->req_one ? 1 : 16, n = 0;
	uint64_t sum = 0;
	uint8_t chunk[PROTO_CHUNK_BS], desc[8];

	assert(r->p.meta_active && q->structured);
	assert(q->length > 0 && q->offset <= e->size && q->length <= e->size - q->offset);
	assert(store_map(e->handle, q->offset, q->length, ext, max, &n) == 0);
	assert(n >= 1 && n <= max);
	for (unsigned i = 0; i < n; i++) {
		assert(ext[i].len > 0 && ext[i].len <= UINT32_MAX);
		sum += ext[i].len;
		proto_block_desc(desc, (uint32_t)ext[i].len, ext[i].hole);
	}
	assert(sum <= q->length);
	assert(proto_chunk_block_status(chunk, q->handle, n) == PROTO_CHUNK_BS);
	check_chunk(chunk, PROTO_CHUNK_HDR, q->handle, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n);
}

/* The reply conn.c sends at once for a rejected or empty request: a simple
 * reply, an error chunk, or NONE for a structured empty READ.  Also the
 * errno mapping, over every errno the store might return. */
static void check_immediate_reply(const struct proto_req *q)
{
	uint8_t buf[PROTO_CHUNK_ERROR > sizeof(struct nbd_simple_reply)
	                ? PROTO_CHUNK_ERROR
	                : sizeof(struct nbd_simple_reply)];
	int err = -(int)(q->handle % 134);
	uint32_t nerr = proto_nbd_error(err);

	assert((nerr == 0) == (err == 0));
	if (q->structured && (q->error || q->noop)) {
		size_t n = q->error ? proto_chunk_error(buf, q->handle, q->error, true, q->offset)
		                    : proto_chunk_none(buf, q->handle);

		assert(n >= PROTO_CHUNK_HDR && n <= sizeof(buf));
		assert(be32_at(buf) == NBD_STRUCTURED_REPLY_MAGIC);
		assert(be32_at(buf + 16) == n - PROTO_CHUNK_HDR);
	} else if (q->error || q->noop) {
		proto_reply(buf, q->handle, q->error);
		assert(be32_at(buf) == NBD_SIMPLE_REPLY_MAGIC && be32_at(buf + 4) == q->error);
		assert(!memcmp(buf + 8, &q->handle, 8));
	}
}

/* A request proto lets through must be one the store can run. */
static void check_request(struct run *r, const struct proto_req *q)
{
	const struct proto_export *e = &r->p.exp;

	assert(q->payload == (q->type == NBD_CMD_WRITE ? q->length : 0));
	check_immediate_reply(q);
	if (!q->error && q->block_status) {
		check_block_status(r, q);
		return;
	}
	if (q->error || q->disc)
		return;
	if (q->op == STORE_FLUSH) {
		assert(q->offset == 0 && q->length == 0);
		return;
	}
	assert(q->offset <= e->size && q->length <= e->size - q->offset);
	if (q->noop)
		return;
	assert(q->length > 0);
	if (q->op == STORE_READ || q->op == STORE_WRITE)
		assert(q->length <= PROTO_MAX_PAYLOAD);
	if (q->op != STORE_READ)
		assert(!e->read_only);
	assert(!(q->store_flags & ~(STORE_FUA | STORE_NO_HOLE)));
	if (q->op == STORE_READ && q->length <= READ_CAP) {
		int err = store_read(e->handle, readbuf, q->offset, q->length);

		assert(err == 0);
		if (q->structured)
			check_read_runs(q);
	}
}

static void log_put(struct run *r, const void *p, size_t n)
{
	if (r->log.len + n > r->log.cap) {
		size_t cap = r->log.cap ? r->log.cap * 2 : 1024;

		while (cap < r->log.len + n)
			cap *= 2;
		r->log.data = realloc(r->log.data, cap);
		assert(r->log.data);
		r->log.cap = cap;
	}
	memcpy(r->log.data + r->log.len, p, n);
	r->log.len += n;
}

/* ---- one run ------------------------------------------------------------ */

/* Feed in[0, len), the bytes received and not yet consumed, as
 * conn_parse() does; *used receives how many were consumed and *drain is
 * how much WRITE payload is still to skip.  Returns false once the
 * connection would close. */
static bool parse(struct run *r, const uint8_t *in, size_t len, size_t *used, uint64_t *drain)
{
	*used = 0;
	for (;;) {
		size_t avail = len - *used;
		const uint8_t *p = in + *used;

		if (*drain) {
			size_t k = avail < *drain ? avail : (size_t)*drain;

			*used += k;
			*drain -= k;
			if (*drain)
				return true;
			continue;
		}
		if (r->p.phase != PROTO_TRANSMISSION) {
			bool had_flags = r->p.phase == PROTO_CLIENT_FLAGS;
			size_t from = r->out.len;
			ssize_t n = proto_handshake(&r->p, p, avail, &r->out);

			if (n < 0) {
				r->end = (int)n;
				return false;
			}
			assert((size_t)n <= avail);
			check_replies(r, p, (size_t)n, had_flags && n >= 4, from);
			*used += (size_t)n;
			if (r->p.phase == PROTO_CLOSE) {
				r->end = 1;
				return false;
			}
			if (r->p.phase == PROTO_STARTTLS) {
				/* The TLS layer is modelled as transparent: what
				 * follows is what the client sent inside it. */
				assert(r->p.tls_mode != PROTO_TLS_OFF && !r->p.tls);
				proto_tls_started(&r->p);
				assert(r->p.phase == PROTO_OPTIONS && r->p.tls);
				log_put(r, "TLS", 3);
				continue;
			}
			if (r->p.phase == PROTO_TRANSMISSION) {
				assert(r->opens == 1 && r->p.exp.handle);
				continue;
			}
			assert(r->opens == 0);
			return true;
		}

		struct proto_req q;
		int n = proto_request(&r->p, p, avail, &q);

		if (n == 0) {
			assert(avail < sizeof(struct nbd_request));
			return true;
		}
		if (n < 0) {
			assert(n == -EPROTO);
			r->end = 2;
			return false;
		}
		assert(n == sizeof(struct nbd_request));
		check_request(r, &q);
		log_put(r, &q, sizeof(q));
		*used += (size_t)n;
		if (q.disc) {
			r->end = 3;
			return false;
		}
		*drain = q.payload;
	}
}

/* Run the whole stream; cut it into reads of sizes drawn from seed (0:
 * one read).  The run's replies and requests end up in r->out / r->log. */
static void run(struct run *r, const uint8_t *in, size_t len, uint32_t seed, unsigned tls_mode)
{
	size_t have = 0, start = 0;
	uint64_t drain = 0;

	memset(r, 0, sizeof(*r));
	proto_init(&r->p, &fx_ops, r);
	r->p.tls_mode = tls_mode;
	assert(proto_greet(&r->p, &r->out) == 0);
	assert(r->out.len == sizeof(struct nbd_greeting));
	r->out.len = 0; /* the replies start after the greeting */
	do {
		size_t chunk = len - have, used;

		if (seed) {
			seed = seed * 1103515245u + 12345u;
			chunk = 1 + (seed >> 16) % (seed & 0x10000 ? 7 : 67);
			if (chunk > len - have)
				chunk = len - have;
		}
		have += chunk;
		/* A copy of exactly what arrived and is unparsed: ASan catches
		 * any read past it. */
		size_t avail = have - start;
		uint8_t *view = malloc(avail ? avail : 1);

		assert(view);
		memcpy(view, in + start, avail);
		bool more = parse(r, view, avail, &used, &drain);

		free(view);
		start += used;
		if (!more)
			break;
	} while (have < len);
	proto_fini(&r->p);
	assert(r->opens == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, cut;

	if (size < 1)
		return 0;
	/* Byte 0, bits 1-2: TLS off, allowed or required (3: allowed). */
	unsigned tls = (data[0] >> 1) & 3;

	tls = tls == 3 ? 1 : tls;
	run(&whole, data + 1, size - 1, 0, tls);
	run(&cut, data + 1, size - 1, data[0] | 1u, tls);
	assert(whole.end == cut.end);
	assert(whole.out.len == cut.out.len);
	assert(!whole.out.len || !memcmp(whole.out.data, cut.out.data, whole.out.len));
	assert(whole.log.len == cut.log.len);
	assert(!whole.log.len || !memcmp(whole.log.data, cut.log.data, whole.log.len));
	proto_buf_free(&whole.out);
	proto_buf_free(&cut.out);
	proto_buf_free(&whole.log);
	proto_buf_free(&cut.log);
	return 0;
}
