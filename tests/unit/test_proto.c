/* test_proto.c — cmocka tests for proto.c: the handshake state machine, the
 * request validator and the errno→NBD mapping, fed raw bytes exactly as a
 * socket would deliver them (whole, truncated, malformed, random), and the
 * reply builders, checked on the bytes their iovecs put on the wire.
 *
 * proto looks exports up through its ops table; the table here serves three
 * fixed exports, "vol0" (1 MiB, writable), "vol0@snap" (read-only) and
 * "big" (1 TiB, writable: 64-bit lengths with extended headers), and
 * counts opens and closes so leaks of export handles show up.  The qemu:
 * metadata contexts go through a second table (meta_ops) whose volume has
 * the snapshots "snap" and "old"; its sources are counted the same way.
 */
#undef NDEBUG
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../lib/bytes.h"
#include "proto.h"

#define VOL_SIZE (1u << 20)
#define BIG_SIZE (1ull << 40)

struct fixture {
	struct proto p;
	struct proto_buf out;
	int opens;
	int list_err;
	int srcs; /* meta sources open */
	char src[2][16];
};

static int fx_open(void *ctx, const char *name, struct proto_export *out)
{
	struct fixture *f = ctx;

	if (strcmp(name, "vol0") && strcmp(name, "vol0@snap") && strcmp(name, "big"))
		return -ENOENT;
	out->size = strcmp(name, "big") ? VOL_SIZE : BIG_SIZE;
	out->read_only = strchr(name, '@') != NULL;
	out->handle = f;
	f->opens++;
	return 0;
}

static void fx_close(void *ctx, void *handle)
{
	struct fixture *f = ctx;

	assert_ptr_equal(handle, f);
	f->opens--;
}

static int fx_list(void *ctx, int (*emit)(void *, const char *, const char *), void *arg)
{
	struct fixture *f = ctx;
	int err;

	if (f->list_err)
		return f->list_err;
	err = emit(arg, "vol0", "volume");
	if (!err)
		err = emit(arg, "vol0@snap", NULL);
	return err;
}

static const struct proto_ops fx_ops = {fx_open, fx_close, fx_list};

static int fx_snapshots(void *ctx, void *handle, int (*emit)(void *, const char *), void *arg)
{
	struct fixture *f = ctx;
	int err;

	assert_ptr_equal(handle, f); /* an open export handle */
	assert_true(f->opens > 0);
	err = emit(arg, "snap");
	return err ? err : emit(arg, "old");
}

/* Sources: a string naming what was opened ("dirty:snap", "depth"). */
static int fx_meta_open(void *ctx, void *handle, const char *snap, void **src)
{
	struct fixture *f = ctx;
	char *s = f->src[snap ? 0 : 1];

	assert_true(f->opens > 0);
	if (snap && strcmp(snap, "snap") && strcmp(snap, "old"))
		return -ENOENT;
	snprintf(s, sizeof(f->src[0]), snap ? "dirty:%s" : "depth", snap ? snap : "");
	f->srcs++;
	*src = s;
	return 0;
}

static void fx_meta_close(void *ctx, void *src)
{
	struct fixture *f = ctx;

	assert_true(src == f->src[0] || src == f->src[1]);
	f->srcs--;
}

static const struct proto_meta_ops fx_meta_ops = {fx_snapshots, fx_meta_open, fx_meta_close};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	proto_init(&f->p, &fx_ops, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	proto_fini(&f->p);
	assert_int_equal(f->opens, 0); /* every export handle was closed */
	assert_int_equal(f->srcs, 0);  /* and every meta source */
	proto_buf_free(&f->out);
	free(f);
	return 0;
}

/* ---- byte builders and reply readers ------------------------------- */

static void opt_hdr(struct bytes *b, uint32_t opt, uint32_t len)
{
	bytes_put64(b, NBD_OPT_MAGIC);
	bytes_put32(b, opt);
	bytes_put32(b, len);
}
static void opt_go(struct bytes *b, uint32_t opt, const char *name, int nreq, const uint16_t *reqs)
{
	uint32_t nl = (uint32_t)strlen(name);

	opt_hdr(b, opt, 4 + nl + 2 + 2 * (uint32_t)nreq);
	bytes_put32(b, nl);
	bytes_put(b, name, nl);
	bytes_put16(b, (uint16_t)nreq);
	for (int i = 0; i < nreq; i++)
		bytes_put16(b, reqs[i]);
}

/* Walk option replies in out starting at *pos; check one and advance. */
static const uint8_t *expect_rep(struct fixture *f, size_t *pos, uint32_t opt, uint32_t type,
                                 uint32_t *len)
{
	const uint8_t *r = f->out.data + *pos;

	assert_true(*pos + 20 <= f->out.len);
	assert_true(bytes_be64(r) == NBD_REP_MAGIC);
	assert_int_equal(bytes_be32(r + 8), opt);
	assert_int_equal(bytes_be32(r + 12), type);
	*len = bytes_be32(r + 16);
	assert_true(*pos + 20 + *len <= f->out.len);
	*pos += 20 + *len;
	return r + 20;
}

/* Greeting sent and client flags fed: ready for options. */
static void to_options(struct fixture *f, uint32_t cflags)
{
	struct bytes b = {.n = 0};

	assert_int_equal(proto_greet(&f->p, &f->out), 0);
	f->out.len = 0;
	bytes_put32(&b, cflags);
	assert_int_equal(proto_handshake(&f->p, b.d, b.n, &f->out), 4);
	assert_int_equal(f->p.phase, PROTO_OPTIONS);
}

static ssize_t feed(struct fixture *f, const struct bytes *b)
{
	return proto_handshake(&f->p, b->d, b->n, &f->out);
}

/* ---- handshake ------------------------------------------------------ */

static void greeting(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proto_greet(&f->p, &f->out), 0);
	assert_int_equal(f->out.len, 18);
	assert_true(bytes_be64(f->out.data) == NBD_MAGIC);
	assert_true(bytes_be64(f->out.data + 8) == NBD_OPT_MAGIC);
	assert_int_equal(bytes_be16(f->out.data + 16),
	                 NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	assert_int_equal(f->p.phase, PROTO_CLIENT_FLAGS);
}

static void client_flags_unknown_bit(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	bytes_put32(&b, NBD_FLAG_C_FIXED_NEWSTYLE | 4);
	assert_int_equal(feed(f, &b), -EPROTO);
}

static void client_flags_truncated(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	bytes_put32(&b, NBD_FLAG_C_FIXED_NEWSTYLE);
	assert_int_equal(proto_handshake(&f->p, b.d, 3, &f->out), 0);
	assert_int_equal(f->p.phase, PROTO_CLIENT_FLAGS);
	assert_int_equal(proto_handshake(&f->p, b.d, 4, &f->out), 4);
	assert_int_equal(f->p.phase, PROTO_OPTIONS);
	assert_false(f->p.no_zeroes);
}

static void option_bad_magic(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	bytes_put64(&b, NBD_OPT_MAGIC ^ 1);
	bytes_put32(&b, NBD_OPT_LIST);
	bytes_put32(&b, 0);
	assert_int_equal(feed(f, &b), -EPROTO);
}

static void option_too_long(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_GO, PROTO_OPT_MAX + 1);
	assert_int_equal(feed(f, &b), -E2BIG);
}

static void option_truncated_then_whole(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_go(&b, NBD_OPT_INFO, "vol0", 0, NULL);
	for (size_t i = 0; i < b.n; i++) /* every prefix: nothing consumed */
		assert_int_equal(proto_handshake(&f->p, b.d, i, &f->out), 0);
	assert_int_equal(f->out.len, 0);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_int_equal(f->opens, 0);
}

static void option_unknown_unsup(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, 0x4242, 3);
	bytes_put(&b, "abc", 3);
	opt_hdr(&b, NBD_OPT_PEEK_EXPORT, 0); /* withdrawn */
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, 0x4242, NBD_REP_ERR_UNSUP, &len);
	expect_rep(f, &pos, NBD_OPT_PEEK_EXPORT, NBD_REP_ERR_UNSUP, &len);
	assert_int_equal(pos, f->out.len);
	assert_int_equal(f->p.phase, PROTO_OPTIONS);
}

static void option_list(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;
	const uint8_t *d;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_LIST, 1);
	bytes_put(&b, "x", 1);
	opt_hdr(&b, NBD_OPT_LIST, 0);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_ERR_INVALID, &len);
	d = expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_SERVER, &len);
	assert_int_equal(bytes_be32(d), 4);
	assert_memory_equal(d + 4, "vol0", 4);
	assert_int_equal(len, 4 + 4 + strlen("volume"));
	d = expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_SERVER, &len);
	assert_int_equal(bytes_be32(d), 9);
	assert_int_equal(len, 4 + 9);
	expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_ACK, &len);
	assert_int_equal(len, 0);
	assert_int_equal(pos, f->out.len);
}

static void option_list_error(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	f->list_err = -EIO;
	opt_hdr(&b, NBD_OPT_LIST, 0);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_ERR_PLATFORM, &len);
	assert_int_equal(pos, f->out.len);
}

static void option_abort(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_ABORT, 0);
	opt_hdr(&b, NBD_OPT_LIST, 0); /* after ABORT: left unconsumed */
	assert_int_equal(feed(f, &b), 16);
	expect_rep(f, &pos, NBD_OPT_ABORT, NBD_REP_ACK, &len);
	assert_int_equal(pos, f->out.len);
	assert_int_equal(f->p.phase, PROTO_CLOSE);
}

static void option_info(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	uint16_t reqs[] = {NBD_INFO_NAME, 0x777};
	size_t pos = 0;
	uint32_t len;
	const uint8_t *d;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_go(&b, NBD_OPT_INFO, "vol0@snap", 2, reqs);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	d = expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_int_equal(len, 12);
	assert_int_equal(bytes_be16(d), NBD_INFO_EXPORT);
	assert_true(bytes_be64(d + 2) == VOL_SIZE);
	assert_int_equal(bytes_be16(d + 10), NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY |
	                                         NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	                                         NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE);
	d = expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_int_equal(len, 14);
	assert_int_equal(bytes_be16(d), NBD_INFO_BLOCK_SIZE);
	assert_int_equal(bytes_be32(d + 2), 1);
	assert_int_equal(bytes_be32(d + 6), 4096);
	assert_int_equal(bytes_be32(d + 10), 64u << 20); /* as nbdkit */
	d = expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_int_equal(bytes_be16(d), NBD_INFO_NAME);
	assert_int_equal(len, 2 + 9);
	assert_memory_equal(d + 2, "vol0@snap", 9);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_ACK, &len);
	assert_int_equal(pos, f->out.len);
	assert_int_equal(f->p.phase, PROTO_OPTIONS);
	assert_int_equal(f->opens, 0); /* INFO does not keep the export */
}

static void option_info_unknown_export(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_go(&b, NBD_OPT_GO, "nope", 0, NULL);
	opt_go(&b, NBD_OPT_GO, "", 0, NULL);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, &len);
	assert_true(len > 0); /* carries a message */
	expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, &len);
	assert_int_equal(f->p.phase, PROTO_OPTIONS);
}

static void option_go_malformed(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	/* too short for the fixed fields */
	opt_hdr(&b, NBD_OPT_GO, 5);
	bytes_put(&b, "\0\0\0\0\0", 5);
	/* name length beyond the option */
	opt_hdr(&b, NBD_OPT_GO, 10);
	bytes_put32(&b, 5);
	bytes_put(&b, "vol0", 4);
	bytes_put16(&b, 0);
	/* request count does not match the length */
	opt_hdr(&b, NBD_OPT_GO, 4 + 4 + 2 + 1);
	bytes_put32(&b, 4);
	bytes_put(&b, "vol0", 4);
	bytes_put16(&b, 0);
	bytes_put(&b, "z", 1);
	opt_hdr(&b, NBD_OPT_GO, 4 + 4 + 2);
	bytes_put32(&b, 4);
	bytes_put(&b, "vol0", 4);
	bytes_put16(&b, 1);
	/* NUL inside the name */
	opt_hdr(&b, NBD_OPT_GO, 4 + 4 + 2);
	bytes_put32(&b, 4);
	bytes_put(&b, "vo\0l", 4);
	bytes_put16(&b, 0);
	/* name length near 2^32 must not wrap */
	opt_hdr(&b, NBD_OPT_INFO, 6);
	bytes_put32(&b, 0xfffffffe);
	bytes_put16(&b, 0);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	for (int i = 0; i < 5; i++)
		expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_ERR_INVALID, &len);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_ERR_INVALID, &len);
	assert_int_equal(pos, f->out.len);
	assert_int_equal(f->p.phase, PROTO_OPTIONS);
	assert_int_equal(f->opens, 0);
}

static void option_go(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;
	const uint8_t *d;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	opt_go(&b, NBD_OPT_GO, "vol0", 0, NULL);
	bytes_put(&b, "tail", 4); /* first request bytes: not the handshake's */
	assert_int_equal(feed(f, &b), (ssize_t)b.n - 4);
	d = expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_INFO, &len);
	assert_int_equal(bytes_be16(d + 10), NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
	                                         NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
	                                         NBD_FLAG_SEND_WRITE_ZEROES |
	                                         NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE |
	                                         NBD_FLAG_SEND_FAST_ZERO);
	expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_INFO, &len);
	expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_ACK, &len);
	assert_int_equal(f->p.phase, PROTO_TRANSMISSION);
	assert_int_equal(f->opens, 1);
	assert_true(f->p.exp.size == VOL_SIZE);
}

static void option_export_name(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_EXPORT_NAME, 4);
	bytes_put(&b, "vol0", 4);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->out.len, 10 + 124);
	assert_true(bytes_be64(f->out.data) == VOL_SIZE);
	assert_int_equal(bytes_be16(f->out.data + 8) & NBD_FLAG_HAS_FLAGS, NBD_FLAG_HAS_FLAGS);
	for (int i = 10; i < 134; i++)
		assert_int_equal(f->out.data[i], 0);
	assert_int_equal(f->p.phase, PROTO_TRANSMISSION);
}

static void option_export_name_no_zeroes(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	opt_hdr(&b, NBD_OPT_EXPORT_NAME, 9);
	bytes_put(&b, "vol0@snap", 9);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->out.len, 10);
	assert_true(bytes_be16(f->out.data + 8) & NBD_FLAG_READ_ONLY);
	assert_true(f->p.exp.read_only);
}

static void option_export_name_unknown(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_EXPORT_NAME, 3);
	bytes_put(&b, "vol", 3);
	assert_int_equal(feed(f, &b), -ENOENT);
	assert_int_equal(f->opens, 0);
}

static void option_export_name_too_long(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	char name[NBD_STRING_MAX + 1];

	memset(name, 'a', sizeof(name));
	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_EXPORT_NAME, sizeof(name));
	bytes_put(&b, name, sizeof(name));
	assert_int_equal(feed(f, &b), -EPROTO);
}

static void option_shutdown(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	f->p.shutting_down = true;
	opt_go(&b, NBD_OPT_GO, "vol0", 0, NULL);
	opt_hdr(&b, NBD_OPT_ABORT, 0);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_ERR_SHUTDOWN, &len);
	expect_rep(f, &pos, NBD_OPT_ABORT, NBD_REP_ACK, &len);
	assert_int_equal(f->p.phase, PROTO_CLOSE);
}

/* ---- transmission -------------------------------------------------- */

static void go(struct fixture *f, const char *name)
{
	struct bytes b = {.n = 0};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	opt_hdr(&b, NBD_OPT_EXPORT_NAME, (uint32_t)strlen(name));
	bytes_put(&b, name, strlen(name));
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->p.phase, PROTO_TRANSMISSION);
}

/* A request header, compact or (ext) extended. */
static void hdr_bytes(struct bytes *b, bool ext, uint16_t flags, uint16_t type, uint64_t off,
                      uint64_t len)
{
	b->n = 0;
	bytes_put32(b, ext ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC);
	bytes_put16(b, flags);
	bytes_put16(b, type);
	bytes_put(b, "HANDLE!!", 8);
	bytes_put64(b, off);
	if (ext)
		bytes_put64(b, len);
	else
		bytes_put32(b, (uint32_t)len);
}

static void req_bytes(struct bytes *b, uint16_t flags, uint16_t type, uint64_t off, uint32_t len)
{
	hdr_bytes(b, false, flags, type, off, len);
}

/* Decode one header of the style negotiated (28 or 32 bytes). */
static struct proto_req decode_hdr(struct fixture *f, bool ext, uint16_t flags, uint16_t type,
                                   uint64_t off, uint64_t len)
{
	struct bytes b;
	struct proto_req r;

	hdr_bytes(&b, ext, flags, type, off, len);
	assert_int_equal(proto_request(&f->p, b.d, b.n, &r), ext ? 32 : 28);
	assert_memory_equal(&r.handle, "HANDLE!!", 8);
	assert_true(r.extended == ext && (r.structured || !ext));
	return r;
}

static struct proto_req decode(struct fixture *f, uint16_t flags, uint16_t type, uint64_t off,
                               uint32_t len)
{
	return decode_hdr(f, false, flags, type, off, len);
}

static void request_bad_magic_and_truncated(void **state)
{
	struct fixture *f = *state;
	struct bytes b;
	struct proto_req r;

	go(f, "vol0");
	req_bytes(&b, 0, NBD_CMD_READ, 0, 512);
	for (size_t i = 0; i < 28; i++)
		assert_int_equal(proto_request(&f->p, b.d, i, &r), 0);
	b.d[0] ^= 0x80;
	assert_int_equal(proto_request(&f->p, b.d, b.n, &r), -EPROTO);
}

static void request_valid(void **state)
{
	struct fixture *f = *state;
	struct proto_req r;

	go(f, "vol0");
	r = decode(f, 0, NBD_CMD_READ, 4095, 2);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.op, STORE_READ);
	assert_int_equal(r.payload, 0);
	assert_false(r.noop);
	r = decode(f, NBD_CMD_FLAG_FUA, NBD_CMD_READ, 0, 512); /* FUA on read: accepted */
	assert_int_equal(r.error, 0);
	assert_int_equal(r.store_flags, 0);
	r = decode(f, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, VOL_SIZE - 1, 1);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.op, STORE_WRITE);
	assert_int_equal(r.payload, 1);
	assert_int_equal(r.store_flags, STORE_FUA);
	r = decode(f, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES, 0, VOL_SIZE);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.op, STORE_ZERO);
	assert_int_equal(r.store_flags, STORE_FUA | STORE_NO_HOLE);
	r = decode(f, 0, NBD_CMD_TRIM, 10, 20);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.op, STORE_TRIM);
	r = decode(f, 0, NBD_CMD_FLUSH, 0, 0);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.op, STORE_FLUSH);
	assert_false(r.noop);
	r = decode(f, 0, NBD_CMD_DISC, 0, 0);
	assert_true(r.disc);
}

static void request_bad_command_and_flags(void **state)
{
	struct fixture *f = *state;

	go(f, "vol0");
	assert_int_equal(decode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_RESIZE, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, 0, 0x55, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_CACHE, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_CACHE, VOL_SIZE, 1).error, -EINVAL);
	assert_true(decode(f, 0, NBD_CMD_CACHE, 0, VOL_SIZE).noop);
	assert_int_equal(decode(f, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, 0x100, NBD_CMD_READ, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE, 0, 512).error, -EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 0, 512).error, 0);
	assert_int_equal(decode(f, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_TRIM, 0, 512).error, -EINVAL);
	/* a rejected WRITE still has its payload on the wire */
	struct proto_req r = decode(f, 0x8000, NBD_CMD_WRITE, 0, 777);

	assert_int_equal(r.error, -EINVAL);
	assert_int_equal(r.payload, 777);
}

static void request_ranges(void **state)
{
	struct fixture *f = *state;
	struct proto_req r;

	go(f, "vol0");
	assert_int_equal(decode(f, 0, NBD_CMD_READ, VOL_SIZE, 1).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, VOL_SIZE - 1, 2).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, UINT64_MAX - 10, 512).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_TRIM, VOL_SIZE - 1, 2).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE_ZEROES, 1, VOL_SIZE).error, -EINVAL);
	r = decode(f, 0, NBD_CMD_WRITE, VOL_SIZE - 1, 2);
	assert_int_equal(r.error, -ENOSPC);
	assert_int_equal(r.payload, 2);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE, UINT64_MAX, 1).error, -ENOSPC);
	/* payload over the advertised maximum */
	r = decode(f, 0, NBD_CMD_WRITE, 0, PROTO_MAX_PAYLOAD + 1);
	assert_int_equal(r.error, -EINVAL);
	assert_int_equal(r.payload, PROTO_MAX_PAYLOAD + 1);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, 0, PROTO_MAX_PAYLOAD + 1).error, -EINVAL);
	/* NBD_CMD_FLAG_PAYLOAD_LEN belongs to extended headers */
	assert_int_equal(decode(f, NBD_CMD_FLAG_PAYLOAD_LEN, NBD_CMD_WRITE, 0, 1).error, -EINVAL);
	/* FLUSH fields are reserved */
	assert_int_equal(decode(f, 0, NBD_CMD_FLUSH, 1, 0).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_FLUSH, 0, 1).error, -EINVAL);
	/* length 0 in range: success without work; past the end: the usual errors */
	r = decode(f, 0, NBD_CMD_READ, VOL_SIZE, 0);
	assert_int_equal(r.error, 0);
	assert_true(r.noop);
	r = decode(f, 0, NBD_CMD_WRITE, 5, 0);
	assert_true(r.noop);
	assert_int_equal(r.payload, 0);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, VOL_SIZE + 1, 0).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE, VOL_SIZE + 1, 0).error, -ENOSPC);
}

static void request_read_only(void **state)
{
	struct fixture *f = *state;
	struct proto_req r;

	go(f, "vol0@snap");
	r = decode(f, 0, NBD_CMD_WRITE, 0, 512);
	assert_int_equal(r.error, -EPERM);
	assert_int_equal(r.payload, 512);
	assert_int_equal(decode(f, 0, NBD_CMD_TRIM, 0, 512).error, -EPERM);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE_ZEROES, 0, 512).error, -EPERM);
	/* EPERM wins over the range check */
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE, VOL_SIZE, 512).error, -EPERM);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, 0, 512).error, 0);
	r = decode(f, 0, NBD_CMD_FLUSH, 0, 0);
	assert_int_equal(r.error, 0);
	assert_true(r.noop);
}

/* The bytes a reply puts on the wire, its iovecs in order. */
static size_t flatten(const struct proto_reply *r, uint8_t *out, size_t cap)
{
	size_t n = 0;

	for (unsigned i = 0; i < r->niov; i++) {
		assert_true(n + r->iov[i].iov_len <= cap);
		memcpy(out + n, r->iov[i].iov_base, r->iov[i].iov_len);
		n += r->iov[i].iov_len;
	}
	assert_int_equal(n, r->len);
	return n;
}

static void reply_simple(void **state)
{
	struct proto_req q = {.structured = false};
	struct proto_reply r;
	uint8_t out[64], data[5] = "hello";

	memcpy(&q.handle, "ABCDEFGH", 8);
	proto_reply_init(&r, &q);
	proto_reply_status(&r, -ENOSPC);
	assert_int_equal(flatten(&r, out, sizeof(out)), 16);
	assert_int_equal(bytes_be32(out), NBD_SIMPLE_REPLY_MAGIC);
	assert_int_equal(bytes_be32(out + 4), NBD_ENOSPC);
	assert_memory_equal(out + 8, "ABCDEFGH", 8);
	proto_reply_status(&r, -EROFS); /* translated, and the reply rebuilt */
	assert_int_equal(flatten(&r, out, sizeof(out)), 16);
	assert_int_equal(bytes_be32(out + 4), NBD_EPERM);
	proto_reply_status(&r, 0);
	assert_int_equal(flatten(&r, out, sizeof(out)), 16);
	assert_int_equal(bytes_be32(out + 4), 0);
	/* a simple READ: header, then the caller's buffer itself */
	proto_reply_read(&r, 0, 4096, data, 5);
	assert_int_equal(flatten(&r, out, sizeof(out)), 21);
	assert_int_equal(bytes_be32(out + 4), 0);
	assert_memory_equal(out + 16, "hello", 5);
	assert_ptr_equal(r.iov[1].iov_base, data);
	/* a failed simple READ carries no data */
	proto_reply_read(&r, -EIO, 4096, data, 5);
	assert_int_equal(flatten(&r, out, sizeof(out)), 16);
	assert_int_equal(bytes_be32(out + 4), NBD_EIO);
}

static void reply_structured(void **state)
{
	struct proto_req q = {.handle = 0x1122, .structured = true};
	struct proto_reply r;
	uint8_t o[64];

	proto_reply_init(&r, &q);
	proto_reply_status(&r, 0); /* a READ of length 0 */
	assert_int_equal(flatten(&r, o, sizeof(o)), 20);
	assert_int_equal(bytes_be32(o), NBD_STRUCTURED_REPLY_MAGIC);
	assert_int_equal(bytes_be16(o + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(o + 6), NBD_REPLY_TYPE_NONE);
	assert_memory_equal(o + 8, &q.handle, 8);
	assert_int_equal(bytes_be32(o + 16), 0);
	proto_reply_status(&r, -EINVAL); /* rejected by validation */
	assert_int_equal(flatten(&r, o, sizeof(o)), 26);
	assert_int_equal(bytes_be16(o + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(o + 6), NBD_REPLY_TYPE_ERROR);
	assert_int_equal(bytes_be32(o + 16), 6);
	assert_int_equal(bytes_be32(o + 20), NBD_EINVAL);
	assert_int_equal(bytes_be16(o + 24), 0);      /* no message */
	proto_reply_read(&r, -EILSEQ, 77, NULL, 512); /* failed in the store */
	assert_int_equal(flatten(&r, o, sizeof(o)), 34);
	assert_int_equal(bytes_be16(o + 6), NBD_REPLY_TYPE_ERROR_OFFSET);
	assert_int_equal(bytes_be32(o + 16), 14);
	assert_int_equal(bytes_be32(o + 20), NBD_EIO);
	assert_true(bytes_be64(o + 26) == 77);
}

static void reply_read_chunks(void **state)
{
	static uint8_t buf[3 * 4096], out[4 * 4096];
	struct proto_req q = {.handle = 7, .structured = true};
	struct proto_reply r;
	size_t n;

	memset(buf, 0, sizeof(buf));
	buf[4096 + 10] = 0x5a; /* data in the second block only */
	proto_reply_init(&r, &q);
	proto_reply_read(&r, 0, 8192, buf, sizeof(buf));
	n = flatten(&r, out, sizeof(out));
	/* hole, data (with its bytes), hole; DONE on the last only */
	assert_int_equal(n, 32 + 28 + 4096 + 32);
	assert_int_equal(bytes_be16(out + 4), 0);
	assert_int_equal(bytes_be16(out + 6), NBD_REPLY_TYPE_OFFSET_HOLE);
	assert_true(bytes_be64(out + 20) == 8192);
	assert_int_equal(bytes_be32(out + 28), 4096);
	assert_int_equal(bytes_be16(out + 32 + 4), 0);
	assert_int_equal(bytes_be16(out + 32 + 6), NBD_REPLY_TYPE_OFFSET_DATA);
	assert_int_equal(bytes_be32(out + 32 + 16), 8 + 4096);
	assert_true(bytes_be64(out + 32 + 20) == 8192 + 4096);
	assert_memory_equal(out + 60, buf + 4096, 4096);
	assert_int_equal(bytes_be16(out + 60 + 4096 + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(out + 60 + 4096 + 6), NBD_REPLY_TYPE_OFFSET_HOLE);
	assert_true(bytes_be64(out + 60 + 4096 + 20) == 8192 + 8192);
	/* DF: one data chunk, zeroes included */
	q.df = true;
	proto_reply_init(&r, &q);
	proto_reply_read(&r, 0, 8192, buf, sizeof(buf));
	assert_int_equal(flatten(&r, out, sizeof(out)), 28 + sizeof(buf));
	assert_int_equal(bytes_be16(out + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(out + 6), NBD_REPLY_TYPE_OFFSET_DATA);
	assert_int_equal(bytes_be32(out + 16), 8 + sizeof(buf));
}

/* A READ's data in pieces (a reply sent from views of the pool) goes out
 * exactly as the same bytes from one buffer would: simple, structured with
 * holes found across piece boundaries, and DF; with the most pieces and
 * the most chunks at once, the iovecs suffice (reply_add asserts it). */
static void reply_read_pieces(void **state)
{
	enum { NB = 40 };
	static uint8_t ref[NB * 4096], scattered[NB * 4096 + 8 * 512], a[NB * 4096 + 2048],
	    b[NB * 4096 + 2048];
	/* piece lengths: block multiples, one that splits a block, and the rest */
	static const uint32_t cut[PROTO_READ_PIECES] = {4096, 3 * 4096, 2 * 4096 + 100, 4096 - 100,
	                                                4096, 5 * 4096, 7 * 4096,       0};
	struct iovec piece[PROTO_READ_PIECES];
	struct proto_reply r1, r2;

	for (int pattern = 0; pattern < 3; pattern++) {
		memset(ref, 0, sizeof(ref));
		for (unsigned blk = 0; blk < NB; blk++) {
			bool data = pattern == 0   ? blk % 2 == 0 /* most chunks */
			            : pattern == 1 ? blk % 5 == 3
			                           : true;
			if (data)
				ref[blk * 4096 + (blk * 37) % 4096] = (uint8_t)(blk + 1);
		}
		/* Scatter ref into pieces with gaps between them. */
		uint32_t pos = 0, at = 0;
		unsigned n = 0;
		for (; n < PROTO_READ_PIECES; n++) {
			uint32_t len = cut[n] ? cut[n] : (uint32_t)sizeof(ref) - pos;
			memcpy(scattered + at, ref + pos, len);
			piece[n] = (struct iovec){.iov_base = scattered + at, .iov_len = len};
			pos += len;
			at += len + 512;
		}
		assert_int_equal(pos, sizeof(ref));
		for (int mode = 0; mode < 3; mode++) {
			struct proto_req q = {
			    .handle = 11, .structured = mode > 0, .df = mode == 2};
			proto_reply_init(&r1, &q);
			proto_reply_read(&r1, 0, 1u << 20, ref, sizeof(ref));
			proto_reply_init(&r2, &q);
			proto_reply_read_pieces(&r2, 1u << 20, piece, n, sizeof(ref));
			size_t n1 = flatten(&r1, a, sizeof(a)), n2 = flatten(&r2, b, sizeof(b));
			assert_int_equal(n1, n2);
			assert_memory_equal(a, b, n1);
			assert_int_equal(r1.len, r2.len);
			if (mode == 1 && pattern == 2) /* one chunk: its header, a piece each */
				assert_int_equal(r2.niov, 1 + n);
		}
	}
}

static void reply_block_status(void **state)
{
	struct proto_req q = {.handle = 9, .structured = true};
	struct store_extent ext[2] = {{.len = 4096, .hole = true}, {.len = 8192, .hole = false}};
	struct store_run dirty[3] = {{4096, 0}, {512, 1}, {7680, 0}}, depth[1] = {{12288, 3}};
	struct proto_bs bs = {.alloc = ext, .nalloc = 2};
	struct proto_reply r;
	uint8_t desc[6 * PROTO_BS_DESC], o[160];

	proto_reply_init(&r, &q);
	proto_reply_block_status(&r, &bs, desc);
	assert_int_equal(flatten(&r, o, sizeof(o)), 24 + 16);
	assert_int_equal(bytes_be16(o + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(o + 6), NBD_REPLY_TYPE_BLOCK_STATUS);
	assert_int_equal(bytes_be32(o + 16), 4 + 16);
	assert_int_equal(bytes_be32(o + 20), PROTO_META_ALLOC_ID);
	assert_int_equal(bytes_be32(o + 24), 4096);
	assert_int_equal(bytes_be32(o + 28), NBD_STATE_HOLE | NBD_STATE_ZERO);
	assert_int_equal(bytes_be32(o + 32), 8192);
	assert_int_equal(bytes_be32(o + 36), 0);
	/* three contexts: three chunks in order, DONE on the last only */
	bs.dirty = dirty;
	bs.ndirty = 3;
	bs.depth = depth;
	bs.ndepth = 1;
	proto_reply_block_status(&r, &bs, desc);
	assert_int_equal(flatten(&r, o, sizeof(o)), (24 + 16) + (24 + 24) + (24 + 8));
	assert_int_equal(bytes_be16(o + 4), 0);
	uint8_t *c2 = o + 40, *c3 = o + 40 + 48;
	assert_int_equal(bytes_be16(c2 + 4), 0);
	assert_int_equal(bytes_be16(c2 + 6), NBD_REPLY_TYPE_BLOCK_STATUS);
	assert_int_equal(bytes_be32(c2 + 16), 4 + 24);
	assert_int_equal(bytes_be32(c2 + 20), PROTO_META_DIRTY_ID);
	assert_int_equal(bytes_be32(c2 + 24), 4096);
	assert_int_equal(bytes_be32(c2 + 28), 0);
	assert_int_equal(bytes_be32(c2 + 32), 512);
	assert_int_equal(bytes_be32(c2 + 36), NBD_STATE_DIRTY);
	assert_int_equal(bytes_be32(c2 + 40), 7680);
	assert_int_equal(bytes_be16(c3 + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be32(c3 + 20), PROTO_META_DEPTH_ID);
	assert_int_equal(bytes_be32(c3 + 24), 12288);
	assert_int_equal(bytes_be32(c3 + 28), 3);
	/* no extent in any context: an error, never an empty chunk */
	bs.ndirty = 0;
	proto_reply_block_status(&r, &bs, desc);
	assert_int_equal(flatten(&r, o, sizeof(o)), 26);
	assert_int_equal(bytes_be16(o + 6), NBD_REPLY_TYPE_ERROR);
	assert_int_equal(bytes_be32(o + 20), NBD_EIO);
	bs.ndirty = 3;
	bs.err = -ENOMEM;
	proto_reply_block_status(&r, &bs, desc);
	assert_int_equal(flatten(&r, o, sizeof(o)), 26);
	assert_int_equal(bytes_be32(o + 20), NBD_ENOMEM);
}

static void errno_mapping(void **state)
{
	assert_int_equal(proto_nbd_error(0), 0);
	assert_int_equal(proto_nbd_error(-EPERM), NBD_EPERM);
	assert_int_equal(proto_nbd_error(-EROFS), NBD_EPERM);
	assert_int_equal(proto_nbd_error(-EIO), NBD_EIO);
	assert_int_equal(proto_nbd_error(-ENOMEM), NBD_ENOMEM);
	assert_int_equal(proto_nbd_error(-EINVAL), NBD_EINVAL);
	assert_int_equal(proto_nbd_error(-ENOSPC), NBD_ENOSPC);
	assert_int_equal(proto_nbd_error(-EDQUOT), NBD_ENOSPC);
	assert_int_equal(proto_nbd_error(-EFBIG), NBD_ENOSPC);
	assert_int_equal(proto_nbd_error(-EOVERFLOW), NBD_EOVERFLOW);
	assert_int_equal(proto_nbd_error(-ESHUTDOWN), NBD_ESHUTDOWN);
	assert_int_equal(proto_nbd_error(-EILSEQ), NBD_EIO);
	assert_int_equal(proto_nbd_error(-ENOENT), NBD_EIO);
}

/* Random bytes into the handshake and the request decoder: whatever
 * happens, no crash, no out-of-bounds access (run under ASan), no leaked
 * export handle, and consumption never exceeds the input. */
static void random_bytes(void **state)
{
	static struct bytes b;
	unsigned seed = 12345;

	for (int iter = 0; iter < 3000; iter++) {
		struct fixture *f = calloc(1, sizeof(*f));
		size_t n;

		proto_init(&f->p, &fx_ops, f);
		assert_int_equal(proto_greet(&f->p, &f->out), 0);
		b.n = 0;
		bytes_put32(&b, rand_r(&seed) % 4);
		/* mostly well-framed options with random contents */
		while (b.n < 2000) {
			uint32_t len = (uint32_t)(rand_r(&seed) % 40);

			if (rand_r(&seed) % 8 == 0) {
				bytes_put32(&b, (uint32_t)rand_r(&seed));
				continue;
			}
			opt_hdr(&b, (uint32_t)(rand_r(&seed) % 12), len);
			if (len >= 6 && rand_r(&seed) % 2) {
				uint32_t nl = (uint32_t)(rand_r(&seed) % (len - 5));

				bytes_put32(&b, rand_r(&seed) % 3 ? nl : (uint32_t)rand_r(&seed));
				bytes_put(&b, "vol0@snapxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", nl);
				bytes_put16(&b, (uint16_t)((len - 6 - nl) / 2));
				len -= 6 + nl;
			}
			for (uint32_t i = 0; i < len; i++)
				b.d[b.n++] = (uint8_t)rand_r(&seed);
		}
		n = 0;
		for (int step = 0; step < 100 && f->p.phase != PROTO_TRANSMISSION; step++) {
			size_t chunk = (size_t)(rand_r(&seed) % 64);
			size_t avail = b.n - n < chunk ? b.n - n : chunk;
			ssize_t k = proto_handshake(&f->p, b.d + n, avail, &f->out);

			if (k < 0 || f->p.phase == PROTO_CLOSE)
				break;
			assert_true((size_t)k <= avail);
			n += (size_t)k;
		}
		if (f->p.phase == PROTO_TRANSMISSION) {
			/* option 11 may have turned extended headers on */
			int hdr = f->p.extended ? 32 : 28;

			for (int i = 0; i < 200; i++) {
				struct proto_req r;
				uint8_t raw[32];

				for (int j = 0; j < 32; j++)
					raw[j] = (uint8_t)rand_r(&seed);
				if (i % 2) {
					uint32_t m =
					    htobe32(f->p.extended ? NBD_EXTENDED_REQUEST_MAGIC
					                          : NBD_REQUEST_MAGIC);

					memcpy(raw, &m, 4);
					raw[4] = 0;
					raw[5] &= NBD_CMD_FLAG_PAYLOAD_LEN | NBD_CMD_FLAG_REQ_ONE;
					raw[6] = 0;
					raw[7] %= 8;
					raw[24] = raw[25] =
					    0; /* an extended length: often a payload */
				}
				int k = proto_request(&f->p, raw, (size_t)hdr, &r);

				assert_true(k == hdr || k == -EPROTO || k == -E2BIG);
				assert_true(k != -E2BIG || f->p.extended);
				assert_true(k != hdr || r.payload <= PROTO_MAX_PAYLOAD ||
				            !f->p.extended);
				if (k == 28 && !r.error && !r.disc && !r.noop &&
				    r.op != STORE_FLUSH) {
					assert_true(r.offset + r.length <= f->p.exp.size);
					assert_true(r.length <= PROTO_MAX_PAYLOAD ||
					            r.op == STORE_TRIM || r.op == STORE_ZERO ||
					            r.block_status);
				}
			}
		}
		proto_fini(&f->p);
		assert_int_equal(f->opens, 0);
		proto_buf_free(&f->out);
		free(f);
	}
}

/* ---- structured replies, meta contexts, block status --------------- */

static void meta_opt(struct bytes *b, uint32_t opt, const char *name, int nq, const char **q)
{
	uint32_t nl = (uint32_t)strlen(name), len = 8 + nl;

	for (int i = 0; i < nq; i++)
		len += 4 + (uint32_t)strlen(q[i]);
	opt_hdr(b, opt, len);
	bytes_put32(b, nl);
	bytes_put(b, name, nl);
	bytes_put32(b, (uint32_t)nq);
	for (int i = 0; i < nq; i++) {
		bytes_put32(b, (uint32_t)strlen(q[i]));
		bytes_put(b, q[i], strlen(q[i]));
	}
}

static void expect_ctx(struct fixture *f, size_t *pos, uint32_t opt, uint32_t id)
{
	uint32_t len;
	const uint8_t *d = expect_rep(f, pos, opt, NBD_REP_META_CONTEXT, &len);

	assert_int_equal(len, 4 + 15);
	assert_int_equal(bytes_be32(d), id);
	assert_memory_equal(d + 4, "base:allocation", 15);
}

static void structured_and_meta(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	const char *all[] = {"base:"}, *alloc[] = {"base:allocation"};
	const char *other[] = {"qemu:dirty-bitmap:x", "base:allocation"},
	           *none[] = {"nbd-server:x"};
	size_t pos = 0;
	uint32_t len;
	const uint8_t *d;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0", 1, alloc); /* before STRUCTURED_REPLY */
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 1);
	bytes_put(&b, "x", 1);
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0);
	meta_opt(&b, NBD_OPT_LIST_META_CONTEXT, "vol0", 0, NULL);
	meta_opt(&b, NBD_OPT_LIST_META_CONTEXT, "vol0", 1, all);
	meta_opt(&b, NBD_OPT_LIST_META_CONTEXT, "vol0", 1, none);
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0", 1, all); /* SET needs the full name */
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "nosuch", 1, alloc);
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0", 2, other);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID, &len);
	expect_rep(f, &pos, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID, &len);
	expect_rep(f, &pos, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &len);
	expect_ctx(f, &pos, NBD_OPT_LIST_META_CONTEXT, 0);
	expect_rep(f, &pos, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, &len);
	expect_ctx(f, &pos, NBD_OPT_LIST_META_CONTEXT, 0);
	expect_rep(f, &pos, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, &len);
	expect_rep(f, &pos, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, &len);
	expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, &len);
	expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_UNKNOWN, &len);
	expect_ctx(f, &pos, NBD_OPT_SET_META_CONTEXT, PROTO_META_ALLOC_ID);
	expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, &len);
	assert_int_equal(pos, f->out.len);
	assert_int_equal(f->opens, 0);

	/* malformed: query length past the end, trailing bytes, NUL in query */
	b.n = 0;
	opt_hdr(&b, NBD_OPT_LIST_META_CONTEXT, 4 + 4 + 4 + 4);
	bytes_put32(&b, 4);
	bytes_put(&b, "vol0", 4);
	bytes_put32(&b, 1);
	bytes_put32(&b, 100);
	opt_hdr(&b, NBD_OPT_LIST_META_CONTEXT, 4 + 4 + 4 + 5);
	bytes_put32(&b, 4);
	bytes_put(&b, "vol0", 4);
	bytes_put32(&b, 0);
	bytes_put(&b, "zzzzz", 5);
	opt_hdr(&b, NBD_OPT_SET_META_CONTEXT, 4 + 4 + 4 + 4 + 3);
	bytes_put32(&b, 4);
	bytes_put(&b, "vol0", 4);
	bytes_put32(&b, 1);
	bytes_put32(&b, 3);
	bytes_put(&b, "a\0b", 3);
	opt_hdr(&b, NBD_OPT_SET_META_CONTEXT, 7);
	bytes_put(&b, "1234567", 7);
	f->out.len = pos = 0;
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	for (int i = 0; i < 2; i++)
		expect_rep(f, &pos, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID, &len);
	for (int i = 0; i < 2; i++)
		expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID, &len);
	assert_false(f->p.meta_alloc); /* a SET replaces the selection, even a refused one */

	b.n = 0;
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0", 1, alloc);
	f->out.len = pos = 0;
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_true(f->p.meta_alloc);

	/* GO: DF advertised, BLOCK_STATUS allowed on the export SET named */
	b.n = 0;
	opt_go(&b, NBD_OPT_GO, "vol0", 0, NULL);
	f->out.len = pos = 0;
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	d = expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_INFO, &len);
	assert_true(bytes_be16(d + 10) & NBD_FLAG_SEND_DF);
	assert_true(f->p.meta_active);
}

static void expect_named(struct fixture *f, size_t *pos, uint32_t opt, uint32_t id,
                         const char *name)
{
	uint32_t len;
	const uint8_t *d = expect_rep(f, pos, opt, NBD_REP_META_CONTEXT, &len);

	assert_int_equal(len, 4 + strlen(name));
	assert_int_equal(bytes_be32(d), id);
	assert_memory_equal(d + 4, name, strlen(name));
}

/* qemu:dirty-bitmap:SNAP and qemu:allocation-depth: listed by the
 * wildcards and by name (once each, unknown names ignored), selected by
 * SET with their own ids (one bitmap, unknown ones ignored), their sources
 * kept only while selected for the export that is chosen; without a
 * meta_ops table the qemu: namespace is ignored like any other. */
static void qemu_contexts(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	const char *qemu[] = {"qemu:"}, *bitmaps[] = {"qemu:dirty-bitmap:"};
	const char *named[] = {"qemu:dirty-bitmap:old", "qemu:dirty-bitmap:old",
	                       "qemu:dirty-bitmap:nosuch", "qemu:dirty-bitmap:vol1@s",
	                       "qemu:allocation-depth"};
	const char *set[] = {"qemu:dirty-bitmap:nosuch", "qemu:dirty-bitmap:old",
	                     "qemu:dirty-bitmap:snap",   "qemu:allocation-depth",
	                     "base:allocation",          "qemu:"};
	const char *alloc[] = {"base:allocation"};
	const uint32_t L = NBD_OPT_LIST_META_CONTEXT, S = NBD_OPT_SET_META_CONTEXT;
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0);
	meta_opt(&b, L, "vol0", 1, qemu); /* no table: ignored */
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &len);
	expect_rep(f, &pos, L, NBD_REP_ACK, &len);

	f->p.meta_ops = &fx_meta_ops;
	b.n = 0;
	meta_opt(&b, L, "vol0", 0, NULL);
	meta_opt(&b, L, "vol0@snap", 1, qemu);
	meta_opt(&b, L, "vol0", 1, bitmaps);
	meta_opt(&b, L, "vol0", 5, named);
	f->out.len = pos = 0;
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_named(f, &pos, L, 0, "base:allocation");
	expect_named(f, &pos, L, 0, "qemu:allocation-depth");
	expect_named(f, &pos, L, 0, "qemu:dirty-bitmap:snap");
	expect_named(f, &pos, L, 0, "qemu:dirty-bitmap:old");
	expect_rep(f, &pos, L, NBD_REP_ACK, &len);
	expect_named(f, &pos, L, 0, "qemu:allocation-depth");
	expect_named(f, &pos, L, 0, "qemu:dirty-bitmap:snap");
	expect_named(f, &pos, L, 0, "qemu:dirty-bitmap:old");
	expect_rep(f, &pos, L, NBD_REP_ACK, &len);
	expect_named(f, &pos, L, 0, "qemu:dirty-bitmap:snap");
	expect_named(f, &pos, L, 0, "qemu:dirty-bitmap:old");
	expect_rep(f, &pos, L, NBD_REP_ACK, &len);
	expect_named(f, &pos, L, 0, "qemu:allocation-depth");
	expect_named(f, &pos, L, 0, "qemu:dirty-bitmap:old");
	expect_rep(f, &pos, L, NBD_REP_ACK, &len);
	assert_int_equal(pos, f->out.len);
	assert_int_equal(f->srcs, 0);

	b.n = 0;
	meta_opt(&b, S, "vol0", 6, set);
	f->out.len = pos = 0;
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_named(f, &pos, S, PROTO_META_ALLOC_ID, "base:allocation");
	expect_named(f, &pos, S, PROTO_META_DIRTY_ID, "qemu:dirty-bitmap:old");
	expect_named(f, &pos, S, PROTO_META_DEPTH_ID, "qemu:allocation-depth");
	expect_rep(f, &pos, S, NBD_REP_ACK, &len);
	assert_int_equal(f->srcs, 2);
	assert_int_equal(f->opens, 0); /* the sources hold what they need */
	/* a later SET replaces it all */
	b.n = 0;
	meta_opt(&b, S, "vol0", 1, alloc);
	meta_opt(&b, S, "vol0", 2, named + 1);
	f->out.len = pos = 0;
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_named(f, &pos, S, PROTO_META_ALLOC_ID, "base:allocation");
	expect_rep(f, &pos, S, NBD_REP_ACK, &len);
	expect_named(f, &pos, S, PROTO_META_DIRTY_ID, "qemu:dirty-bitmap:old");
	expect_rep(f, &pos, S, NBD_REP_ACK, &len);
	assert_false(f->p.meta_alloc);
	assert_int_equal(f->srcs, 1);
	/* GO on that export: BLOCK_STATUS answers the bitmap alone */
	b.n = 0;
	opt_go(&b, NBD_OPT_GO, "vol0", 0, NULL);
	f->out.len = pos = 0;
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_true(f->p.meta_active);
	assert_string_equal(f->p.meta_dirty, "dirty:old");
	assert_int_equal(decode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 512).error, 0);
}

/* Selected for one export, GO on another: nothing is active and the
 * sources are let go at once. */
static void qemu_contexts_other_export(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	const char *q[] = {"qemu:dirty-bitmap:snap", "qemu:allocation-depth"};

	f->p.meta_ops = &fx_meta_ops;
	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0);
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0", 2, q);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->srcs, 2);
	b.n = 0;
	opt_go(&b, NBD_OPT_GO, "vol0@snap", 0, NULL);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_false(f->p.meta_active);
	assert_int_equal(f->srcs, 0);
	assert_int_equal(decode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 512).error, -EINVAL);
}

static void request_structured(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	const char *alloc[] = {"base:allocation"};
	struct proto_req r;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0);
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0@snap", 1, alloc);
	opt_go(&b, NBD_OPT_GO, "vol0@snap", 0, NULL);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->p.phase, PROTO_TRANSMISSION);
	r = decode(f, NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512);
	assert_int_equal(r.error, 0);
	assert_true(r.structured && r.df);
	r = decode(f, 0, NBD_CMD_READ, VOL_SIZE, 1);
	assert_int_equal(r.error, -EINVAL);
	assert_true(r.structured); /* the error goes out as a chunk */
	r = decode(f, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 0, VOL_SIZE);
	assert_int_equal(r.error, 0);
	assert_true(r.block_status && r.req_one && r.structured);
	assert_int_equal(decode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 0).error, -EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_BLOCK_STATUS, 1, VOL_SIZE).error, -EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_DF, NBD_CMD_BLOCK_STATUS, 0, 1).error, -EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_READ, 0, 1).error, -EINVAL);
}

static void block_status_other_export(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	const char *alloc[] = {"base:allocation"};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0);
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0@snap", 1, alloc);
	opt_go(&b, NBD_OPT_GO, "vol0", 0, NULL);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_false(f->p.meta_active);
	assert_int_equal(decode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 512).error, -EINVAL);
}

static void info_description(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	uint16_t reqs[] = {NBD_INFO_DESCRIPTION};
	size_t pos = 0;
	uint32_t len;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_go(&b, NBD_OPT_INFO, "vol0", 1, reqs);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	/* the fixture's exports have no description: none is sent */
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_ACK, &len);
}

static void read_runs(void **state)
{
	static uint8_t buf[10 * 4096];
	struct proto_run r[8];
	unsigned n;

	memset(buf, 0, sizeof(buf));
	/* all zero, unaligned start: one hole */
	n = proto_read_runs(buf, 100, 20000, false, r, 8);
	assert_int_equal(n, 1);
	assert_true(r[0].hole && r[0].off == 0 && r[0].len == 20000);
	/* DF: one data run whatever the content */
	n = proto_read_runs(buf, 0, 20000, true, r, 8);
	assert_int_equal(n, 1);
	assert_false(r[0].hole);
	/* data in the export's second block (request starts at 1000) */
	buf[4096 - 1000 + 5] = 1;
	n = proto_read_runs(buf, 1000, 5 * 4096, false, r, 8);
	assert_int_equal(n, 3);
	assert_true(r[0].hole && r[0].len == 3096);
	assert_true(!r[1].hole && r[1].off == 3096 && r[1].len == 4096);
	assert_true(r[2].hole && r[2].off == 7192 && r[2].len == 5 * 4096 - 7192);
	/* alternating blocks with few runs: the remainder is data */
	memset(buf, 0, sizeof(buf));
	for (int i = 1; i < 10; i += 2)
		buf[i * 4096] = 1;
	n = proto_read_runs(buf, 0, sizeof(buf), false, r, 4);
	assert_int_equal(n, 4);
	assert_true(r[0].hole && !r[1].hole && r[2].hole && !r[3].hole);
	assert_int_equal(r[3].off, 3 * 4096);
	assert_int_equal(r[3].off + r[3].len, sizeof(buf));
	n = proto_read_runs(buf, 0, sizeof(buf), false, r, 1);
	assert_int_equal(n, 1);
	assert_true(!r[0].hole && r[0].len == sizeof(buf));
	/* runs always tile the request exactly */
	for (unsigned max = 2; max <= 8; max++) {
		uint32_t end = 0;

		n = proto_read_runs(buf, 123, sizeof(buf) - 200, false, r, max);
		assert_true(n >= 1 && n <= max);
		for (unsigned i = 0; i < n; i++) {
			assert_int_equal(r[i].off, end);
			assert_true(r[i].len > 0);
			end += r[i].len;
		}
		assert_int_equal(end, sizeof(buf) - 200);
	}
}

/* ---- extended headers ----------------------------------------------- */

static void xreq_bytes(struct bytes *b, uint16_t flags, uint16_t type, uint64_t off, uint64_t len)
{
	hdr_bytes(b, true, flags, type, off, len);
}

static struct proto_req xdecode(struct fixture *f, uint16_t flags, uint16_t type, uint64_t off,
                                uint64_t len)
{
	return decode_hdr(f, true, flags, type, off, len);
}

/* Extended headers negotiated, base:allocation and the depth selected on
 * name (with meta), then GO on name: the transmission flags sent. */
static uint16_t xgo(struct fixture *f, const char *name, bool meta)
{
	struct bytes b = {.n = 0};
	const char *q[] = {"base:allocation", "qemu:allocation-depth"};
	size_t pos = 0;
	uint32_t len;
	const uint8_t *d;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	f->p.meta_ops = &fx_meta_ops;
	opt_hdr(&b, NBD_OPT_EXTENDED_HEADERS, 0);
	if (meta)
		meta_opt(&b, NBD_OPT_SET_META_CONTEXT, name, 2, q);
	opt_go(&b, NBD_OPT_GO, name, 0, NULL);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, &len);
	if (meta) {
		expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, &len);
		expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, &len);
		expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, &len);
	}
	d = expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_INFO, &len);
	assert_int_equal(f->p.phase, PROTO_TRANSMISSION);
	return bytes_be16(d + 10);
}

static void ext_negotiation(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};
	const char *alloc[] = {"base:allocation"};
	size_t pos = 0;
	uint32_t len;
	const uint8_t *d;

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_EXTENDED_HEADERS, 2);
	bytes_put(&b, "xy", 2);
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0); /* first is allowed */
	opt_hdr(&b, NBD_OPT_EXTENDED_HEADERS, 0); /* and takes precedence */
	opt_hdr(&b, NBD_OPT_EXTENDED_HEADERS, 0); /* again: still on */
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0); /* no downgrade */
	meta_opt(&b, NBD_OPT_SET_META_CONTEXT, "vol0", 1, alloc);
	opt_go(&b, NBD_OPT_INFO, "vol0", 0, NULL);
	opt_go(&b, NBD_OPT_INFO, "vol0@snap", 0, NULL); /* no context selected there */
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_INVALID, &len);
	expect_rep(f, &pos, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &len);
	expect_rep(f, &pos, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, &len);
	expect_rep(f, &pos, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, &len);
	expect_rep(f, &pos, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_EXT_HEADER_REQD, &len);
	assert_true(f->p.extended && f->p.structured);
	expect_ctx(f, &pos, NBD_OPT_SET_META_CONTEXT, PROTO_META_ALLOC_ID);
	expect_rep(f, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, &len);
	/* BLOCK_STATUS_PAYLOAD: extended headers and contexts on that export */
	d = expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_true(bytes_be16(d + 10) & NBD_FLAG_BLOCK_STATUS_PAYLOAD);
	assert_true(bytes_be16(d + 10) & NBD_FLAG_SEND_DF);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_ACK, &len);
	d = expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_false(bytes_be16(d + 10) & NBD_FLAG_BLOCK_STATUS_PAYLOAD);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_ACK, &len);
	assert_int_equal(pos, f->out.len);
	/* EXPORT_NAME is forbidden after extended headers: a hard disconnect */
	b.n = 0;
	opt_hdr(&b, NBD_OPT_EXPORT_NAME, 4);
	bytes_put(&b, "vol0", 4);
	assert_int_equal(feed(f, &b), -EPROTO);
	assert_int_equal(f->opens, 0);
	/* STARTTLS forgets them, as it forgets structured replies */
	proto_tls_started(&f->p);
	assert_false(f->p.extended || f->p.structured);
}

static void ext_flags(void **state)
{
	struct fixture *f = *state;
	uint16_t fl = xgo(f, "vol0", true);

	assert_true(fl & NBD_FLAG_BLOCK_STATUS_PAYLOAD);
	assert_true(fl & NBD_FLAG_SEND_DF);
	assert_true(f->p.meta_active);
}

static void ext_flags_no_meta(void **state)
{
	struct fixture *f = *state;
	uint16_t fl = xgo(f, "vol0", false);

	assert_false(fl & NBD_FLAG_BLOCK_STATUS_PAYLOAD); /* the spec's SHOULD NOT */
	assert_true(fl & NBD_FLAG_SEND_DF);
	assert_int_equal(xdecode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 512).error, -EINVAL);
}

static void ext_requests(void **state)
{
	struct fixture *f = *state;
	struct bytes b;
	struct proto_req r;
	const uint16_t PL = NBD_CMD_FLAG_PAYLOAD_LEN;

	xgo(f, "big", false);
	/* the compact header is a framing error now, as is a bad magic, known
	 * as soon as the magic is in (a compact header is 4 bytes shorter) */
	req_bytes(&b, 0, NBD_CMD_READ, 0, 512);
	assert_int_equal(proto_request(&f->p, b.d, b.n, &r), -EPROTO);
	assert_int_equal(proto_request(&f->p, b.d, 4, &r), -EPROTO);
	xreq_bytes(&b, 0, NBD_CMD_READ, 0, 512);
	for (size_t i = 0; i < 32; i++)
		assert_int_equal(proto_request(&f->p, b.d, i, &r), 0);
	b.d[1] ^= 1;
	assert_int_equal(proto_request(&f->p, b.d, 32, &r), -EPROTO);
	/* WRITE: its data is a payload, announced by PAYLOAD_LEN */
	r = xdecode(f, PL | NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 4096, PROTO_MAX_PAYLOAD);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.payload, PROTO_MAX_PAYLOAD);
	assert_true(r.length == PROTO_MAX_PAYLOAD);
	assert_int_equal(r.store_flags, STORE_FUA);
	/* without the flag (the spec's MUST, which qemu's client skips): the
	 * same, as qemu's server does */
	r = xdecode(f, 0, NBD_CMD_WRITE, 0, 512);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.payload, 512);
	xreq_bytes(&b, 0, NBD_CMD_WRITE, 0, PROTO_MAX_PAYLOAD + 1ull);
	assert_int_equal(proto_request(&f->p, b.d, b.n, &r), -E2BIG);
	/* a payload over the maximum: hard disconnect (the spec's SHOULD) */
	xreq_bytes(&b, PL, NBD_CMD_WRITE, 0, PROTO_MAX_PAYLOAD + 1ull);
	assert_int_equal(proto_request(&f->p, b.d, b.n, &r), -E2BIG);
	xreq_bytes(&b, PL, NBD_CMD_READ, 0, 1ull << 40);
	assert_int_equal(proto_request(&f->p, b.d, b.n, &r), -E2BIG);
	/* a payload where the command takes none: consumed, then EINVAL */
	for (uint16_t t = NBD_CMD_READ; t <= NBD_CMD_WRITE_ZEROES; t++) {
		if (t == NBD_CMD_WRITE || t == NBD_CMD_DISC)
			continue;
		r = xdecode(f, PL, t, 0, 100);
		assert_int_equal(r.error, -EINVAL);
		assert_int_equal(r.payload, 100);
	}
	r = xdecode(f, PL, 0x55, 0, 7); /* unknown command */
	assert_int_equal(r.error, -EINVAL);
	assert_int_equal(r.payload, 7);
	/* 64-bit effect lengths: trims and zeroes of the whole 1 TiB export */
	r = xdecode(f, 0, NBD_CMD_TRIM, 0, BIG_SIZE);
	assert_int_equal(r.error, 0);
	assert_true(r.length == BIG_SIZE && r.payload == 0);
	r = xdecode(f, 0, NBD_CMD_WRITE_ZEROES, 4096, BIG_SIZE - 4096);
	assert_int_equal(r.error, 0);
	assert_true(r.length == BIG_SIZE - 4096);
	assert_int_equal(xdecode(f, 0, NBD_CMD_TRIM, 1, BIG_SIZE).error, -EINVAL);
	assert_true(xdecode(f, 0, NBD_CMD_CACHE, 0, BIG_SIZE).noop);
	/* READ: an effect length, at most the maximum payload */
	r = xdecode(f, NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, PROTO_MAX_PAYLOAD);
	assert_int_equal(r.error, 0);
	assert_true(r.df && r.payload == 0);
	assert_int_equal(xdecode(f, 0, NBD_CMD_READ, 0, PROTO_MAX_PAYLOAD + 1ull).error, -EINVAL);
	assert_int_equal(xdecode(f, 0, NBD_CMD_READ, 0, 1ull << 33).error, -EINVAL);
	/* every error is a chunk: the reply is extended */
	r = xdecode(f, 0, NBD_CMD_RESIZE, 0, 1);
	assert_true(r.error == -EINVAL && r.structured && r.extended);
	assert_true(xdecode(f, 0, NBD_CMD_DISC, 0, 0).disc);
	assert_int_equal(xdecode(f, 0, NBD_CMD_FLUSH, 0, 0).error, 0);
}

/* A BLOCK_STATUS payload: effect length and n ids. */
static void bs_payload(struct bytes *b, uint64_t len, unsigned n, const uint32_t *ids)
{
	b->n = 0;
	bytes_put64(b, len);
	for (unsigned i = 0; i < n; i++)
		bytes_put32(b, ids[i]);
}

static void ext_block_status(void **state)
{
	struct fixture *f = *state;
	struct bytes b;
	struct proto_req r;
	const uint16_t PL = NBD_CMD_FLAG_PAYLOAD_LEN;
	const unsigned A = PROTO_META_BIT(PROTO_META_ALLOC_ID),
	               D = PROTO_META_BIT(PROTO_META_DEPTH_ID);
	const uint32_t depth[] = {PROTO_META_DEPTH_ID}, both[] = {PROTO_META_DEPTH_ID, 1},
	               dup[] = {1, 1}, dirty[] = {PROTO_META_DIRTY_ID}, zero[] = {0};

	xgo(f, "big", true);
	/* no payload: every selected context, and the whole 1 TiB at once */
	r = xdecode(f, 0, NBD_CMD_BLOCK_STATUS, 0, BIG_SIZE);
	assert_int_equal(r.error, 0);
	assert_true(r.block_status && !r.bs_payload && r.length == BIG_SIZE);
	assert_int_equal(r.contexts, A | D);
	assert_int_equal(xdecode(f, 0, NBD_CMD_BLOCK_STATUS, 1, BIG_SIZE).error, -EINVAL);
	assert_int_equal(xdecode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 0).error, -EINVAL);
	/* a payload naming the depth only */
	r = xdecode(f, PL | NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 4096, 12);
	assert_true(r.error == 0 && r.bs_payload && r.payload == 12 && r.req_one);
	bs_payload(&b, BIG_SIZE - 4096, 1, depth);
	proto_request_payload(&f->p, &r, b.d);
	assert_int_equal(r.error, 0);
	assert_true(r.length == BIG_SIZE - 4096 && r.offset == 4096);
	assert_int_equal(r.contexts, D);
	assert_true(r.payload == 0 && !r.bs_payload);
	/* both, in any order */
	r = xdecode(f, PL, NBD_CMD_BLOCK_STATUS, 0, 16);
	bs_payload(&b, 4096, 2, both);
	proto_request_payload(&f->p, &r, b.d);
	assert_int_equal(r.error, 0);
	assert_int_equal(r.contexts, A | D);
	/* a repeated id, an id not selected, an id never given: EINVAL */
	const uint32_t *bad[] = {dup, dirty, zero};
	const unsigned nbad[] = {2, 1, 1};
	for (unsigned i = 0; i < 3; i++) {
		r = xdecode(f, PL, NBD_CMD_BLOCK_STATUS, 0, 8 + 4 * nbad[i]);
		bs_payload(&b, 4096, nbad[i], bad[i]);
		proto_request_payload(&f->p, &r, b.d);
		assert_int_equal(r.error, -EINVAL);
		assert_int_equal(r.payload, 0); /* consumed all the same */
	}
	/* the range in the payload is checked like any other */
	r = xdecode(f, PL, NBD_CMD_BLOCK_STATUS, 4096, 12);
	bs_payload(&b, BIG_SIZE, 1, depth);
	proto_request_payload(&f->p, &r, b.d);
	assert_int_equal(r.error, -EINVAL);
	r = xdecode(f, PL, NBD_CMD_BLOCK_STATUS, 0, 12);
	bs_payload(&b, 0, 1, depth);
	proto_request_payload(&f->p, &r, b.d);
	assert_int_equal(r.error, -EINVAL);
	/* payload sizes that cannot be valid: EINVAL at once, left to discard */
	const uint64_t sizes[] = {8, 13, PROTO_BS_PAYLOAD_MAX + 4, 4096};
	for (unsigned i = 0; i < 4; i++) {
		r = xdecode(f, PL, NBD_CMD_BLOCK_STATUS, 0, sizes[i]);
		assert_int_equal(r.error, -EINVAL);
		assert_false(r.bs_payload);
		assert_int_equal(r.payload, sizes[i]);
	}
}

static void reply_extended(void **state)
{
	static uint8_t buf[3 * 4096], out[4 * 4096];
	struct proto_req q = {.handle = 0x77, .offset = 8192, .structured = true, .extended = true};
	struct proto_reply r;
	size_t n;

	/* no payload: still a chunk (NONE, DONE), the request's offset echoed */
	proto_reply_init(&r, &q);
	proto_reply_status(&r, 0);
	assert_int_equal(flatten(&r, out, sizeof(out)), 32);
	assert_int_equal(bytes_be32(out), NBD_EXTENDED_REPLY_MAGIC);
	assert_int_equal(bytes_be16(out + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(out + 6), NBD_REPLY_TYPE_NONE);
	assert_memory_equal(out + 8, &q.handle, 8);
	assert_true(bytes_be64(out + 16) == 8192);
	assert_true(bytes_be64(out + 24) == 0);
	proto_reply_status(&r, -ENOSPC);
	assert_int_equal(flatten(&r, out, sizeof(out)), 32 + 6);
	assert_int_equal(bytes_be16(out + 6), NBD_REPLY_TYPE_ERROR);
	assert_true(bytes_be64(out + 24) == 6);
	assert_int_equal(bytes_be32(out + 32), NBD_ENOSPC);
	proto_reply_read(&r, -EIO, 8192, NULL, 512);
	assert_int_equal(flatten(&r, out, sizeof(out)), 32 + 14);
	assert_int_equal(bytes_be16(out + 6), NBD_REPLY_TYPE_ERROR_OFFSET);
	assert_true(bytes_be64(out + 24) == 14);
	assert_true(bytes_be64(out + 38) == 8192);
	/* READ: hole, data, hole; each header carries the request's offset,
	 * the payloads their own */
	memset(buf, 0, sizeof(buf));
	buf[4096 + 10] = 0x5a;
	proto_reply_read(&r, 0, 8192, buf, sizeof(buf));
	n = flatten(&r, out, sizeof(out));
	assert_int_equal(n, 44 + 40 + 4096 + 44);
	assert_int_equal(bytes_be16(out + 6), NBD_REPLY_TYPE_OFFSET_HOLE);
	assert_true(bytes_be64(out + 16) == 8192 && bytes_be64(out + 24) == 12);
	assert_true(bytes_be64(out + 32) == 8192);
	assert_int_equal(bytes_be32(out + 40), 4096);
	uint8_t *c2 = out + 44, *c3 = out + 44 + 40 + 4096;
	assert_int_equal(bytes_be16(c2 + 6), NBD_REPLY_TYPE_OFFSET_DATA);
	assert_true(bytes_be64(c2 + 16) == 8192 && bytes_be64(c2 + 24) == 8 + 4096);
	assert_true(bytes_be64(c2 + 32) == 8192 + 4096);
	assert_memory_equal(c2 + 40, buf + 4096, 4096);
	assert_int_equal(bytes_be16(c3 + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(c3 + 6), NBD_REPLY_TYPE_OFFSET_HOLE);
	assert_true(bytes_be64(c3 + 32) == 8192 + 8192);
}

static void reply_block_status_ext(void **state)
{
	struct proto_req q = {.handle = 5, .offset = 4096, .structured = true, .extended = true};
	/* extents over 4 GiB: only BLOCK_STATUS_EXT can say them */
	struct store_extent ext[2] = {{.len = 4096, .hole = false},
	                              {.len = BIG_SIZE - 8192, .hole = true}};
	struct store_run depth[1] = {{BIG_SIZE - 4096, 2}};
	struct proto_bs bs = {.alloc = ext, .nalloc = 2, .depth = depth, .ndepth = 1};
	struct proto_reply r;
	uint8_t desc[3 * PROTO_BS_DESC], o[160];

	proto_reply_init(&r, &q);
	proto_reply_block_status(&r, &bs, desc);
	assert_int_equal(flatten(&r, o, sizeof(o)), (40 + 32) + (40 + 16));
	assert_int_equal(bytes_be32(o), NBD_EXTENDED_REPLY_MAGIC);
	assert_int_equal(bytes_be16(o + 4), 0);
	assert_int_equal(bytes_be16(o + 6), NBD_REPLY_TYPE_BLOCK_STATUS_EXT);
	assert_true(bytes_be64(o + 16) == 4096);       /* the request's offset */
	assert_true(bytes_be64(o + 24) == 8 + 2 * 16); /* id, count, descriptors */
	assert_int_equal(bytes_be32(o + 32), PROTO_META_ALLOC_ID);
	assert_int_equal(bytes_be32(o + 36), 2);
	assert_true(bytes_be64(o + 40) == 4096 && bytes_be64(o + 48) == 0);
	assert_true(bytes_be64(o + 56) == BIG_SIZE - 8192);
	assert_true(bytes_be64(o + 64) == (NBD_STATE_HOLE | NBD_STATE_ZERO));
	uint8_t *c2 = o + 72;
	assert_int_equal(bytes_be16(c2 + 4), NBD_REPLY_FLAG_DONE);
	assert_int_equal(bytes_be16(c2 + 6), NBD_REPLY_TYPE_BLOCK_STATUS_EXT);
	assert_true(bytes_be64(c2 + 24) == 8 + 16);
	assert_int_equal(bytes_be32(c2 + 32), PROTO_META_DEPTH_ID);
	assert_int_equal(bytes_be32(c2 + 36), 1);
	assert_true(bytes_be64(c2 + 40) == BIG_SIZE - 4096 && bytes_be64(c2 + 48) == 2);
	/* an error is an extended error chunk */
	bs.err = -EIO;
	proto_reply_block_status(&r, &bs, desc);
	assert_int_equal(flatten(&r, o, sizeof(o)), 32 + 6);
	assert_int_equal(bytes_be16(o + 6), NBD_REPLY_TYPE_ERROR);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(greeting),
	    T(client_flags_unknown_bit),
	    T(client_flags_truncated),
	    T(option_bad_magic),
	    T(option_too_long),
	    T(option_truncated_then_whole),
	    T(option_unknown_unsup),
	    T(option_list),
	    T(option_list_error),
	    T(option_abort),
	    T(option_info),
	    T(option_info_unknown_export),
	    T(option_go_malformed),
	    T(option_go),
	    T(option_export_name),
	    T(option_export_name_no_zeroes),
	    T(option_export_name_unknown),
	    T(option_export_name_too_long),
	    T(option_shutdown),
	    T(request_bad_magic_and_truncated),
	    T(request_valid),
	    T(request_bad_command_and_flags),
	    T(request_ranges),
	    T(request_read_only),
	    T(reply_simple),
	    T(reply_structured),
	    T(reply_read_chunks),
	    T(reply_read_pieces),
	    T(reply_block_status),
	    T(errno_mapping),
	    T(random_bytes),
	    T(structured_and_meta),
	    T(request_structured),
	    T(block_status_other_export),
	    T(qemu_contexts),
	    T(qemu_contexts_other_export),
	    T(info_description),
	    T(read_runs),
	    T(ext_negotiation),
	    T(ext_flags),
	    T(ext_flags_no_meta),
	    T(ext_requests),
	    T(ext_block_status),
	    T(reply_extended),
	    T(reply_block_status_ext),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
