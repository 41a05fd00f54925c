/* proto.c — NBD protocol logic over byte buffers (layer: below conn, above
 * store; no sockets, no threads, no locks).
 *
 * Handshake: fixed newstyle only.  proto_greet() emits NBDMAGIC, IHAVEOPT
 * and the handshake flags; proto_handshake() then eats the client flags and
 * options one whole message at a time, appending option replies to an
 * output buffer, until the client picks an export (NBD_OPT_EXPORT_NAME or
 * NBD_OPT_GO) or aborts.  It never consumes half a message, so the caller
 * simply calls again with more bytes.
 *
 * Transmission: proto_request() decodes one 28-byte header and validates it
 * once, here at the edge, in the order the spec implies: unknown command or
 * flag (EINVAL), write to a read-only export (EPERM), payload too large
 * (EINVAL), range past the end (ENOSPC for writes, EINVAL otherwise).  A
 * valid request leaves as a store operation; the store then runs with plain
 * errno and proto_nbd_error() is the single errno→NBD translation.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* ---- output buffer ------------------------------------------------ */

void proto_buf_free(struct proto_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int buf_put(struct proto_buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *d;

		while (cap < b->len + n)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

/* One option reply: header plus up to two pieces of payload. */
static int put_rep(struct proto_buf *b, uint32_t opt, uint32_t type, const void *d1, size_t n1,
                   const void *d2, size_t n2)
{
	struct nbd_option_reply r = {
	    .magic = htobe64(NBD_REP_MAGIC),
	    .option = htobe32(opt),
	    .reply = htobe32(type),
	    .length = htobe32((uint32_t)(n1 + n2)),
	};
	int err = buf_put(b, &r, sizeof(r));

	if (!err)
		err = buf_put(b, d1, n1);
	if (!err)
		err = buf_put(b, d2, n2);
	return err;
}

static int put_err(struct proto_buf *b, uint32_t opt, uint32_t type, const char *msg)
{
	return put_rep(b, opt, type, msg, strlen(msg), NULL, 0);
}

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static uint16_t get_be16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return be16toh(v);
}

/* A protocol string: at most NBD_STRING_MAX bytes and no NUL inside. */
static bool string_ok(const uint8_t *s, uint32_t n)
{
	return n <= NBD_STRING_MAX && !memchr(s, 0, n);
}

/* ---- setup -------------------------------------------------------- */

void proto_init(struct proto *p, const struct proto_ops *ops, void *ctx)
{
	memset(p, 0, sizeof(*p));
	p->phase = PROTO_CLIENT_FLAGS;
	p->ops = ops;
	p->ctx = ctx;
}

void proto_fini(struct proto *p)
{
	if (p->exp.handle)
		p->ops->close(p->ctx, p->exp.handle);
	p->exp.handle = NULL;
}

int proto_greet(struct proto *p, struct proto_buf *out)
{
	struct nbd_greeting g = {
	    .magic = htobe64(NBD_MAGIC),
	    .opt_magic = htobe64(NBD_OPT_MAGIC),
	    .flags = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
	};

	return buf_put(out, &g, sizeof(g));
}

static uint16_t export_flags(const struct proto_export *e)
{
	uint16_t f =
	    NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN;

	if (e->read_only)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
	return f;
}

/* Copy a validated name into a NUL-terminated buffer. */
static void name_copy(char dst[NBD_STRING_MAX + 1], const uint8_t *s, uint32_t n)
{
	memcpy(dst, s, n);
	dst[n] = '\0';
}

/* ---- options ------------------------------------------------------ */

static int opt_export_name(struct proto *p, const uint8_t *d, uint32_t n, struct proto_buf *out)
{
	char name[NBD_STRING_MAX + 1];
	struct proto_export e;
	struct nbd_export_name_reply r;
	static const uint8_t zeroes[NBD_EXPORT_NAME_PAD];
	int err;

	/* This option cannot answer an error: the only refusal is to hang up. */
	if (!string_ok(d, n) || p->shutting_down)
		return -EPROTO;
	name_copy(name, d, n);
	err = p->ops->open(p->ctx, name, &e);
	if (err)
		return -ENOENT;
	p->exp = e;
	p->tflags = export_flags(&e);
	r.size = htobe64(e.size);
	r.flags = htobe16(p->tflags);
	err = buf_put(out, &r, sizeof(r));
	if (!err && !p->no_zeroes)
		err = buf_put(out, zeroes, sizeof(zeroes));
	if (err)
		return err;
	p->phase = PROTO_TRANSMISSION;
	return 0;
}

static int list_emit(void *arg, const char *name, const char *desc)
{
	struct proto_buf *out = arg;
	size_t n = strlen(name), dn = desc ? strlen(desc) : 0;
	uint8_t hdr[4 + NBD_STRING_MAX];
	uint32_t be;

	if (n > NBD_STRING_MAX)
		return 0; /* cannot be named on the wire; skip it */
	be = htobe32((uint32_t)n);
	memcpy(hdr, &be, 4);
	memcpy(hdr + 4, name, n);
	return put_rep(out, NBD_OPT_LIST, NBD_REP_SERVER, hdr, 4 + n, desc, dn);
}

static int opt_list(struct proto *p, uint32_t n, struct proto_buf *out)
{
	size_t mark = out->len;
	int err;

	if (n != 0)
		return put_err(out, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
		               "NBD_OPT_LIST takes no data");
	err = p->ops->list(p->ctx, list_emit, out);
	if (err == -ENOMEM)
		return err;
	if (err) {
		out->len = mark; /* drop the partial list; say why instead */
		return put_err(out, NBD_OPT_LIST, NBD_REP_ERR_PLATFORM, strerror(-err));
	}
	return put_rep(out, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0, NULL, 0);
}

/* NBD_OPT_INFO and NBD_OPT_GO share a layout:
 *   32 bits name length, name, 16 bits request count, 16 bits per request. */
static int opt_info_go(struct proto *p, uint32_t opt, const uint8_t *d, uint32_t n,
                       struct proto_buf *out)
{
	char name[NBD_STRING_MAX + 1];
	struct proto_export e;
	bool want_name = false;
	uint32_t namelen;
	uint16_t nreq;
	int err;

	if (n < 6)
		return put_err(out, opt, NBD_REP_ERR_INVALID, "option data too short");
	namelen = get_be32(d);
	if (namelen > n - 6)
		return put_err(out, opt, NBD_REP_ERR_INVALID, "export name length too long");
	nreq = get_be16(d + 4 + namelen);
	if ((uint64_t)n != 4u + namelen + 2u + 2u * (uint64_t)nreq)
		return put_err(out, opt, NBD_REP_ERR_INVALID, "option length does not match");
	if (!string_ok(d + 4, namelen))
		return put_err(out, opt, NBD_REP_ERR_INVALID, "bad export name");
	for (uint16_t i = 0; i < nreq; i++)
		if (get_be16(d + 4 + namelen + 2 + 2u * i) == NBD_INFO_NAME)
			want_name = true;
	name_copy(name, d + 4, namelen);
	err = p->ops->open(p->ctx, name, &e);
	if (err == -ENOMEM)
		return err;
	if (err) {
		char msg[NBD_STRING_MAX + 64];

		snprintf(msg, sizeof(msg), "%s: %s", name,
		         err == -ENOENT ? "no such export" : strerror(-err));
		return put_err(out, opt, NBD_REP_ERR_UNKNOWN, msg);
	}

	struct nbd_info_export ie = {
	    .info = htobe16(NBD_INFO_EXPORT),
	    .size = htobe64(e.size),
	    .flags = htobe16(export_flags(&e)),
	};
	struct nbd_info_block_size bs = {
	    .info = htobe16(NBD_INFO_BLOCK_SIZE),
	    .minimum = htobe32(PROTO_MIN_BLOCK),
	    .preferred = htobe32(PROTO_PREF_BLOCK),
	    .maximum = htobe32(PROTO_MAX_PAYLOAD),
	};
	uint16_t nameinfo = htobe16(NBD_INFO_NAME);

	err = put_rep(out, opt, NBD_REP_INFO, &ie, sizeof(ie), NULL, 0);
	if (!err)
		err = put_rep(out, opt, NBD_REP_INFO, &bs, sizeof(bs), NULL, 0);
	if (!err && want_name)
		err = put_rep(out, opt, NBD_REP_INFO, &nameinfo, 2, name, namelen);
	if (!err)
		err = put_rep(out, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
	if (err || opt == NBD_OPT_INFO) {
		p->ops->close(p->ctx, e.handle);
		return err;
	}
	p->exp = e;
	p->tflags = export_flags(&e);
	p->phase = PROTO_TRANSMISSION;
	return 0;
}

static int option(struct proto *p, uint32_t opt, const uint8_t *d, uint32_t n,
                  struct proto_buf *out)
{
	if (opt == NBD_OPT_ABORT) {
		p->phase = PROTO_CLOSE;
		return put_rep(out, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
	}
	if (opt == NBD_OPT_EXPORT_NAME)
		return opt_export_name(p, d, n, out);
	if (p->shutting_down)
		return put_err(out, opt, NBD_REP_ERR_SHUTDOWN, "server is shutting down");
	switch (opt) {
	case NBD_OPT_LIST:
		return opt_list(p, n, out);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(p, opt, d, n, out);
	default:
		return put_err(out, opt, NBD_REP_ERR_UNSUP, "option not supported");
	}
}

ssize_t proto_handshake(struct proto *p, const uint8_t *in, size_t len, struct proto_buf *out)
{
	size_t used = 0;

	while (p->phase == PROTO_CLIENT_FLAGS || p->phase == PROTO_OPTIONS) {
		const uint8_t *m = in + used;
		size_t left = len - used;

		if (p->phase == PROTO_CLIENT_FLAGS) {
			uint32_t f;

			if (left < 4)
				break;
			f = get_be32(m);
			/* The server MUST drop a client that sets flags it does
			 * not know or that were not offered. */
			if (f & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
				return -EPROTO;
			p->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
			p->phase = PROTO_OPTIONS;
			used += 4;
			continue;
		}

		struct nbd_option o;
		uint32_t n;
		int err;

		if (left < sizeof(o))
			break;
		memcpy(&o, m, sizeof(o));
		if (be64toh(o.magic) != NBD_OPT_MAGIC)
			return -EPROTO;
		n = be32toh(o.length);
		if (n > PROTO_OPT_MAX)
			return -E2BIG;
		if (left < sizeof(o) + n)
			break;
		err = option(p, be32toh(o.option), m + sizeof(o), n, out);
		if (err)
			return err;
		used += sizeof(o) + n;
	}
	return (ssize_t)used;
}

/* ---- transmission ------------------------------------------------- */

int proto_request(struct proto *p, const uint8_t *in, size_t len, struct proto_req *req)
{
	struct nbd_request r;
	uint16_t allowed;
	bool writes;

	if (len < sizeof(r))
		return 0;
	memcpy(&r, in, sizeof(r));
	if (be32toh(r.magic) != NBD_REQUEST_MAGIC)
		return -EPROTO;
	memset(req, 0, sizeof(*req));
	req->type = be16toh(r.type);
	req->flags = be16toh(r.flags);
	req->handle = r.handle; /* opaque: echoed back byte for byte */
	req->offset = be64toh(r.offset);
	req->length = be32toh(r.length);
	req->payload = req->type == NBD_CMD_WRITE ? req->length : 0;

	switch (req->type) {
	case NBD_CMD_READ:
		req->op = STORE_READ;
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_WRITE:
		req->op = STORE_WRITE;
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_DISC:
		req->disc = true;
		return sizeof(r);
	case NBD_CMD_FLUSH:
		req->op = STORE_FLUSH;
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_TRIM:
		req->op = STORE_TRIM;
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_WRITE_ZEROES:
		req->op = STORE_ZERO;
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE;
		break;
	default: /* CACHE, BLOCK_STATUS, ...: not advertised */
		req->error = NBD_EINVAL;
		return sizeof(r);
	}
	if (req->flags & ~allowed) {
		req->error = NBD_EINVAL;
		return sizeof(r);
	}
	writes = req->op == STORE_WRITE || req->op == STORE_TRIM || req->op == STORE_ZERO;
	if (writes && p->exp.read_only) {
		req->error = NBD_EPERM;
		return sizeof(r);
	}
	if (req->op == STORE_FLUSH) {
		if (req->offset || req->length)
			req->error = NBD_EINVAL;
		else if (p->exp.read_only)
			req->noop = true; /* nothing can be dirty */
		return sizeof(r);
	}
	if ((req->op == STORE_READ || req->op == STORE_WRITE) && req->length > PROTO_MAX_PAYLOAD) {
		req->error = NBD_EINVAL;
		return sizeof(r);
	}
	if (req->offset > p->exp.size || req->length > p->exp.size - req->offset) {
		req->error = req->op == STORE_WRITE ? NBD_ENOSPC : NBD_EINVAL;
		return sizeof(r);
	}
	if (req->length == 0) {
		req->noop = true;
		return sizeof(r);
	}
	if (req->flags & NBD_CMD_FLAG_FUA && writes)
		req->store_flags |= STORE_FUA;
	if (req->flags & NBD_CMD_FLAG_NO_HOLE)
		req->store_flags |= STORE_NO_HOLE;
	return sizeof(r);
}

void proto_reply(uint8_t out[sizeof(struct nbd_simple_reply)], uint64_t handle, uint32_t error)
{
	struct nbd_simple_reply r = {
	    .magic = htobe32(NBD_SIMPLE_REPLY_MAGIC),
	    .error = htobe32(error),
	    .handle = handle,
	};

	memcpy(out, &r, sizeof(r));
}

uint32_t proto_nbd_error(int err)
{
	switch (err) {
	case 0:
		return 0;
	case -EPERM:
	case -EROFS:
		return NBD_EPERM;
	case -EIO:
		return NBD_EIO;
	case -ENOMEM:
		return NBD_ENOMEM;
	case -EINVAL:
		return NBD_EINVAL;
	case -ENOSPC:
	case -EDQUOT:
	case -EFBIG:
		return NBD_ENOSPC;
	case -EOVERFLOW:
		return NBD_EOVERFLOW;
	case -ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}
