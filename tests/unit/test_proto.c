/* test_proto.c — cmocka tests for proto.c: the handshake state machine, the
 * request validator and the errno→NBD mapping, fed raw bytes exactly as a
 * socket would deliver them (whole, truncated, malformed, random).
 *
 * proto looks exports up through its ops table; the table here serves two
 * fixed exports, "vol0" (1 MiB, writable) and "vol0@snap" (read-only), and
 * counts opens and closes so leaks of export handles show up.
 */
#undef NDEBUG
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

#define VOL_SIZE (1u << 20)

struct fixture {
	struct proto p;
	struct proto_buf out;
	int opens;
	int list_err;
};

static int fx_open(void *ctx, const char *name, struct proto_export *out)
{
	struct fixture *f = ctx;

	if (strcmp(name, "vol0") && strcmp(name, "vol0@snap"))
		return -ENOENT;
	out->size = VOL_SIZE;
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
	proto_buf_free(&f->out);
	free(f);
	return 0;
}

/* ---- byte builders and reply readers ------------------------------- */

struct bytes {
	uint8_t d[70000];
	size_t n;
};

static void put(struct bytes *b, const void *p, size_t n)
{
	assert_true(b->n + n <= sizeof(b->d));
	memcpy(b->d + b->n, p, n);
	b->n += n;
}
static void put32(struct bytes *b, uint32_t v)
{
	v = htobe32(v);
	put(b, &v, 4);
}
static void put16(struct bytes *b, uint16_t v)
{
	v = htobe16(v);
	put(b, &v, 2);
}
static void put64(struct bytes *b, uint64_t v)
{
	v = htobe64(v);
	put(b, &v, 8);
}
static void opt_hdr(struct bytes *b, uint32_t opt, uint32_t len)
{
	put64(b, NBD_OPT_MAGIC);
	put32(b, opt);
	put32(b, len);
}
static void opt_go(struct bytes *b, uint32_t opt, const char *name, int nreq, const uint16_t *reqs)
{
	uint32_t nl = (uint32_t)strlen(name);

	opt_hdr(b, opt, 4 + nl + 2 + 2 * (uint32_t)nreq);
	put32(b, nl);
	put(b, name, nl);
	put16(b, (uint16_t)nreq);
	for (int i = 0; i < nreq; i++)
		put16(b, reqs[i]);
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return be32toh(v);
}
static uint16_t rd16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return be16toh(v);
}
static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return be64toh(v);
}

/* Walk option replies in out starting at *pos; check one and advance. */
static const uint8_t *expect_rep(struct fixture *f, size_t *pos, uint32_t opt, uint32_t type,
                                 uint32_t *len)
{
	const uint8_t *r = f->out.data + *pos;

	assert_true(*pos + 20 <= f->out.len);
	assert_true(rd64(r) == NBD_REP_MAGIC);
	assert_int_equal(rd32(r + 8), opt);
	assert_int_equal(rd32(r + 12), type);
	*len = rd32(r + 16);
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
	put32(&b, cflags);
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
	assert_true(rd64(f->out.data) == NBD_MAGIC);
	assert_true(rd64(f->out.data + 8) == NBD_OPT_MAGIC);
	assert_int_equal(rd16(f->out.data + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	assert_int_equal(f->p.phase, PROTO_CLIENT_FLAGS);
}

static void client_flags_unknown_bit(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	put32(&b, NBD_FLAG_C_FIXED_NEWSTYLE | 4);
	assert_int_equal(feed(f, &b), -EPROTO);
}

static void client_flags_truncated(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	put32(&b, NBD_FLAG_C_FIXED_NEWSTYLE);
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
	put64(&b, NBD_OPT_MAGIC ^ 1);
	put32(&b, NBD_OPT_LIST);
	put32(&b, 0);
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
	put(&b, "abc", 3);
	opt_hdr(&b, NBD_OPT_STARTTLS, 0);
	opt_hdr(&b, NBD_OPT_STRUCTURED_REPLY, 0);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, 0x4242, NBD_REP_ERR_UNSUP, &len);
	expect_rep(f, &pos, NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP, &len);
	expect_rep(f, &pos, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP, &len);
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
	put(&b, "x", 1);
	opt_hdr(&b, NBD_OPT_LIST, 0);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_ERR_INVALID, &len);
	d = expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_SERVER, &len);
	assert_int_equal(rd32(d), 4);
	assert_memory_equal(d + 4, "vol0", 4);
	assert_int_equal(len, 4 + 4 + strlen("volume"));
	d = expect_rep(f, &pos, NBD_OPT_LIST, NBD_REP_SERVER, &len);
	assert_int_equal(rd32(d), 9);
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
	assert_int_equal(rd16(d), NBD_INFO_EXPORT);
	assert_true(rd64(d + 2) == VOL_SIZE);
	assert_int_equal(rd16(d + 10), NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY |
	                                   NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	                                   NBD_FLAG_CAN_MULTI_CONN);
	d = expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_int_equal(len, 14);
	assert_int_equal(rd16(d), NBD_INFO_BLOCK_SIZE);
	assert_int_equal(rd32(d + 2), 1);
	assert_int_equal(rd32(d + 6), 4096);
	assert_int_equal(rd32(d + 10), 32u << 20);
	d = expect_rep(f, &pos, NBD_OPT_INFO, NBD_REP_INFO, &len);
	assert_int_equal(rd16(d), NBD_INFO_NAME);
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
	put(&b, "\0\0\0\0\0", 5);
	/* name length beyond the option */
	opt_hdr(&b, NBD_OPT_GO, 10);
	put32(&b, 5);
	put(&b, "vol0", 4);
	put16(&b, 0);
	/* request count does not match the length */
	opt_hdr(&b, NBD_OPT_GO, 4 + 4 + 2 + 1);
	put32(&b, 4);
	put(&b, "vol0", 4);
	put16(&b, 0);
	put(&b, "z", 1);
	opt_hdr(&b, NBD_OPT_GO, 4 + 4 + 2);
	put32(&b, 4);
	put(&b, "vol0", 4);
	put16(&b, 1);
	/* NUL inside the name */
	opt_hdr(&b, NBD_OPT_GO, 4 + 4 + 2);
	put32(&b, 4);
	put(&b, "vo\0l", 4);
	put16(&b, 0);
	/* name length near 2^32 must not wrap */
	opt_hdr(&b, NBD_OPT_INFO, 6);
	put32(&b, 0xfffffffe);
	put16(&b, 0);
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
	put(&b, "tail", 4); /* first request bytes: not the handshake's */
	assert_int_equal(feed(f, &b), (ssize_t)b.n - 4);
	d = expect_rep(f, &pos, NBD_OPT_GO, NBD_REP_INFO, &len);
	assert_int_equal(rd16(d + 10), NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
	                                   NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
	                                   NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN);
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
	put(&b, "vol0", 4);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->out.len, 10 + 124);
	assert_true(rd64(f->out.data) == VOL_SIZE);
	assert_int_equal(rd16(f->out.data + 8) & NBD_FLAG_HAS_FLAGS, NBD_FLAG_HAS_FLAGS);
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
	put(&b, "vol0@snap", 9);
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->out.len, 10);
	assert_true(rd16(f->out.data + 8) & NBD_FLAG_READ_ONLY);
	assert_true(f->p.exp.read_only);
}

static void option_export_name_unknown(void **state)
{
	struct fixture *f = *state;
	struct bytes b = {.n = 0};

	to_options(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(&b, NBD_OPT_EXPORT_NAME, 3);
	put(&b, "vol", 3);
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
	put(&b, name, sizeof(name));
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
	put(&b, name, strlen(name));
	assert_int_equal(feed(f, &b), (ssize_t)b.n);
	assert_int_equal(f->p.phase, PROTO_TRANSMISSION);
}

static void req_bytes(struct bytes *b, uint16_t flags, uint16_t type, uint64_t off, uint32_t len)
{
	b->n = 0;
	put32(b, NBD_REQUEST_MAGIC);
	put16(b, flags);
	put16(b, type);
	put(b, "HANDLE!!", 8);
	put64(b, off);
	put32(b, len);
}

static struct proto_req decode(struct fixture *f, uint16_t flags, uint16_t type, uint64_t off,
                               uint32_t len)
{
	struct bytes b;
	struct proto_req r;

	req_bytes(&b, flags, type, off, len);
	assert_int_equal(proto_request(&f->p, b.d, b.n, &r), 28);
	assert_memory_equal(&r.handle, "HANDLE!!", 8);
	return r;
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
	assert_int_equal(decode(f, 0, NBD_CMD_CACHE, 0, 512).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_BLOCK_STATUS, 0, 512).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, 0x55, 0, 512).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0x100, NBD_CMD_READ, 0, 512).error, NBD_EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512).error, NBD_EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE, 0, 512).error, NBD_EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 0, 512).error,
	                 NBD_EINVAL);
	assert_int_equal(decode(f, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_TRIM, 0, 512).error, NBD_EINVAL);
	/* a rejected WRITE still has its payload on the wire */
	struct proto_req r = decode(f, 0x8000, NBD_CMD_WRITE, 0, 777);

	assert_int_equal(r.error, NBD_EINVAL);
	assert_int_equal(r.payload, 777);
}

static void request_ranges(void **state)
{
	struct fixture *f = *state;
	struct proto_req r;

	go(f, "vol0");
	assert_int_equal(decode(f, 0, NBD_CMD_READ, VOL_SIZE, 1).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, VOL_SIZE - 1, 2).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, UINT64_MAX - 10, 512).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_TRIM, VOL_SIZE - 1, 2).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE_ZEROES, 1, VOL_SIZE).error, NBD_EINVAL);
	r = decode(f, 0, NBD_CMD_WRITE, VOL_SIZE - 1, 2);
	assert_int_equal(r.error, NBD_ENOSPC);
	assert_int_equal(r.payload, 2);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE, UINT64_MAX, 1).error, NBD_ENOSPC);
	/* payload over the advertised maximum */
	r = decode(f, 0, NBD_CMD_WRITE, 0, (32u << 20) + 1);
	assert_int_equal(r.error, NBD_EINVAL);
	assert_int_equal(r.payload, (32u << 20) + 1);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, 0, (32u << 20) + 1).error, NBD_EINVAL);
	/* FLUSH fields are reserved */
	assert_int_equal(decode(f, 0, NBD_CMD_FLUSH, 1, 0).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_FLUSH, 0, 1).error, NBD_EINVAL);
	/* length 0 in range: success without work; past the end: the usual errors */
	r = decode(f, 0, NBD_CMD_READ, VOL_SIZE, 0);
	assert_int_equal(r.error, 0);
	assert_true(r.noop);
	r = decode(f, 0, NBD_CMD_WRITE, 5, 0);
	assert_true(r.noop);
	assert_int_equal(r.payload, 0);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, VOL_SIZE + 1, 0).error, NBD_EINVAL);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE, VOL_SIZE + 1, 0).error, NBD_ENOSPC);
}

static void request_read_only(void **state)
{
	struct fixture *f = *state;
	struct proto_req r;

	go(f, "vol0@snap");
	r = decode(f, 0, NBD_CMD_WRITE, 0, 512);
	assert_int_equal(r.error, NBD_EPERM);
	assert_int_equal(r.payload, 512);
	assert_int_equal(decode(f, 0, NBD_CMD_TRIM, 0, 512).error, NBD_EPERM);
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE_ZEROES, 0, 512).error, NBD_EPERM);
	/* EPERM wins over the range check */
	assert_int_equal(decode(f, 0, NBD_CMD_WRITE, VOL_SIZE, 512).error, NBD_EPERM);
	assert_int_equal(decode(f, 0, NBD_CMD_READ, 0, 512).error, 0);
	r = decode(f, 0, NBD_CMD_FLUSH, 0, 0);
	assert_int_equal(r.error, 0);
	assert_true(r.noop);
}

static void reply_encoding(void **state)
{
	uint8_t out[16];
	uint64_t h;

	memcpy(&h, "ABCDEFGH", 8);
	proto_reply(out, h, NBD_ENOSPC);
	assert_int_equal(rd32(out), NBD_SIMPLE_REPLY_MAGIC);
	assert_int_equal(rd32(out + 4), NBD_ENOSPC);
	assert_memory_equal(out + 8, "ABCDEFGH", 8);
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
		put32(&b, rand_r(&seed) % 4);
		/* mostly well-framed options with random contents */
		while (b.n < 2000) {
			uint32_t len = (uint32_t)(rand_r(&seed) % 40);

			if (rand_r(&seed) % 8 == 0) {
				put32(&b, (uint32_t)rand_r(&seed));
				continue;
			}
			opt_hdr(&b, (uint32_t)(rand_r(&seed) % 12), len);
			if (len >= 6 && rand_r(&seed) % 2) {
				uint32_t nl = (uint32_t)(rand_r(&seed) % (len - 5));

				put32(&b, rand_r(&seed) % 3 ? nl : (uint32_t)rand_r(&seed));
				put(&b, "vol0@snapxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", nl);
				put16(&b, (uint16_t)((len - 6 - nl) / 2));
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
			for (int i = 0; i < 200; i++) {
				struct proto_req r;
				uint8_t raw[28];

				for (int j = 0; j < 28; j++)
					raw[j] = (uint8_t)rand_r(&seed);
				if (i % 2) {
					uint32_t m = htobe32(NBD_REQUEST_MAGIC);

					memcpy(raw, &m, 4);
					raw[4] = raw[5] = 0;
					raw[6] = 0;
					raw[7] %= 8;
				}
				int k = proto_request(&f->p, raw, 28, &r);

				assert_true(k == 28 || k == -EPROTO);
				if (k == 28 && !r.error && !r.disc && !r.noop &&
				    r.op != STORE_FLUSH) {
					assert_true(r.offset + r.length <= f->p.exp.size);
					assert_true(r.length <= PROTO_MAX_PAYLOAD ||
					            r.op == STORE_TRIM || r.op == STORE_ZERO);
				}
			}
		}
		proto_fini(&f->p);
		assert_int_equal(f->opens, 0);
		proto_buf_free(&f->out);
		free(f);
	}
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
	    T(reply_encoding),
	    T(errno_mapping),
	    T(random_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
