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
 * Transmission: proto_request() decodes one header — the 28-byte compact
 * one, or the 32-byte extended one once NBD_OPT_EXTENDED_HEADERS was
 * acknowledged (never a mix: the other style is a framing error) — and
 * validates it once, here at the edge, in the order the spec implies:
 * unknown command or flag (EINVAL), write to a read-only export (EPERM),
 * payload too large (EINVAL), range past the end (ENOSPC for writes, EINVAL
 * otherwise).  A valid request leaves as a store operation; the store then
 * runs with plain errno and proto_nbd_error() is the single errno→NBD
 * translation.  With extended headers a payload is announced by
 * NBD_CMD_FLAG_PAYLOAD_LEN: a WRITE's data (whose length is its payload
 * with or without the flag, as qemu does), or a BLOCK_STATUS's list of
 * context ids (proto_request_payload); any other command with a payload is
 * EINVAL once the payload is consumed.
 *
 * Replies: every transmission reply is assembled here (proto_reply_*), as
 * iovecs over its own headers and the caller's data: simple replies,
 * structured or extended chunks and their order (data/hole runs of a READ,
 * DONE on the last), BLOCK_STATUS descriptors (32-bit, or 64-bit in
 * NBD_REPLY_TYPE_BLOCK_STATUS_EXT), error chunks.  With extended headers
 * every reply is a chunk (never a simple reply) carrying the request's
 * offset.  The caller (conn) only queues and sends the iovecs, so it never
 * names an NBD error.
 */
#include <assert.h>
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

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
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

/* Forget the selected metadata contexts, closing their sources. */
static void meta_clear(struct proto *p)
{
	if (p->meta_dirty)
		p->meta_ops->close(p->ctx, p->meta_dirty);
	if (p->meta_depth)
		p->meta_ops->close(p->ctx, p->meta_depth);
	p->meta_dirty = p->meta_depth = NULL;
	p->meta_alloc = false;
	p->meta_name[0] = p->meta_dirty_name[0] = '\0';
}

void proto_fini(struct proto *p)
{
	meta_clear(p);
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

/* Are metadata contexts selected for the export called name? */
static bool meta_selected(const struct proto *p, const char *name)
{
	return (p->meta_alloc || p->meta_dirty || p->meta_depth) && strcmp(name, p->meta_name) == 0;
}

/* The transmission flags for export e, opened under name. */
static uint16_t export_flags(const struct proto *p, const struct proto_export *e, const char *name)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	             NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;

	if (e->read_only)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
	if (p->structured)
		f |= NBD_FLAG_SEND_DF;
	/* The spec: only with extended headers, and not without contexts. */
	if (p->extended && meta_selected(p, name))
		f |= NBD_FLAG_BLOCK_STATUS_PAYLOAD;
	return f;
}

/* Enter transmission with export e (opened under name). */
static void enter_transmission(struct proto *p, const struct proto_export *e, const char *name)
{
	p->exp = *e;
	p->tflags = export_flags(p, e, name);
	p->meta_active = p->structured && meta_selected(p, name);
	if (!p->meta_active)
		meta_clear(p); /* selected for another export: let go of it */
	p->phase = PROTO_TRANSMISSION;
}

/* Copy a validated name into a NUL-terminated buffer. */
static void name_copy(char dst[NBD_STRING_MAX + 1], const uint8_t *s, uint32_t n)
{
	memcpy(dst, s, n);
	dst[n] = '\0';
}

/* ---- options ------------------------------------------------------ */

/* Open the export named by the n bytes at s (copied to name) into *e.
 * Returns 0 when open, 1 when it was refused and NBD_REP_ERR_UNKNOWN is
 * queued on out, or -ENOMEM (or the error of queueing the reply). */
static int open_named(struct proto *p, uint32_t opt, const uint8_t *s, uint32_t n, char *name,
                      struct proto_export *e, struct proto_buf *out)
{
	char msg[NBD_STRING_MAX + 1]; /* the spec caps every string */
	int err;

	name_copy(name, s, n);
	memset(e, 0, sizeof(*e));
	err = p->ops->open(p->ctx, name, e);
	if (!err || err == -ENOMEM)
		return err;
	snprintf(msg, sizeof(msg), "%s: %s", name,
	         err == -ENOENT ? "no such export" : strerror(-err));
	err = put_err(out, opt, NBD_REP_ERR_UNKNOWN, msg);
	return err ? err : 1;
}

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
	memset(&e, 0, sizeof(e));
	err = p->ops->open(p->ctx, name, &e);
	if (err)
		return -ENOENT;
	r.size = htobe64(e.size);
	r.flags = htobe16(export_flags(p, &e, name));
	err = buf_put(out, &r, sizeof(r));
	if (!err && !p->no_zeroes)
		err = buf_put(out, zeroes, sizeof(zeroes));
	if (err) {
		p->ops->close(p->ctx, e.handle);
		return err;
	}
	enter_transmission(p, &e, name);
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
	bool want_name = false, want_desc = false;
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
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t info = get_be16(d + 4 + namelen + 2 + 2u * i);

		want_name |= info == NBD_INFO_NAME;
		want_desc |= info == NBD_INFO_DESCRIPTION;
	}
	err = open_named(p, opt, d + 4, namelen, name, &e, out);
	if (err)
		return err < 0 ? err : 0;

	struct nbd_info_export ie = {
	    .info = htobe16(NBD_INFO_EXPORT),
	    .size = htobe64(e.size),
	    .flags = htobe16(export_flags(p, &e, name)),
	};
	struct nbd_info_block_size bs = {
	    .info = htobe16(NBD_INFO_BLOCK_SIZE),
	    .minimum = htobe32(PROTO_MIN_BLOCK),
	    .preferred = htobe32(PROTO_PREF_BLOCK),
	    .maximum = htobe32(PROTO_MAX_PAYLOAD),
	};
	uint16_t nameinfo = htobe16(NBD_INFO_NAME);
	uint16_t descinfo = htobe16(NBD_INFO_DESCRIPTION);
	size_t desclen = strnlen(e.desc, sizeof(e.desc) - 1);

	err = put_rep(out, opt, NBD_REP_INFO, &ie, sizeof(ie), NULL, 0);
	if (!err)
		err = put_rep(out, opt, NBD_REP_INFO, &bs, sizeof(bs), NULL, 0);
	if (!err && want_name)
		err = put_rep(out, opt, NBD_REP_INFO, &nameinfo, 2, name, namelen);
	if (!err && want_desc && desclen)
		err = put_rep(out, opt, NBD_REP_INFO, &descinfo, 2, e.desc, desclen);
	if (!err)
		err = put_rep(out, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
	if (err || opt == NBD_OPT_INFO) {
		p->ops->close(p->ctx, e.handle);
		return err;
	}
	enter_transmission(p, &e, name);
	return 0;
}

static int opt_structured_reply(struct proto *p, uint32_t n, struct proto_buf *out)
{
	if (n != 0)
		return put_err(out, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
		               "NBD_OPT_STRUCTURED_REPLY takes no data");
	/* The spec: extended headers take precedence; no downgrade. */
	if (p->extended)
		return put_err(out, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_EXT_HEADER_REQD,
		               "extended headers are already negotiated");
	p->structured = true;
	return put_rep(out, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0, NULL, 0);
}

/* NBD_OPT_EXTENDED_HEADERS: allowed before or after STRUCTURED_REPLY (it
 * takes precedence), and again (still on).  Replies are chunks from now
 * on, so everything structured replies enable is enabled too. */
static int opt_extended_headers(struct proto *p, uint32_t n, struct proto_buf *out)
{
	if (n != 0)
		return put_err(out, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_INVALID,
		               "NBD_OPT_EXTENDED_HEADERS takes no data");
	p->extended = true;
	p->structured = true;
	return put_rep(out, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, NULL, 0, NULL, 0);
}

/* What one metadata query asks for (docs/PROTOCOL.md).  The wildcards
 * (the namespace alone, "qemu:dirty-bitmap:") only list; anything in a
 * namespace cowbd does not serve is ignored, as the spec requires. */
enum meta_q {
	Q_NONE,
	Q_ALLOC,     /* base:allocation */
	Q_BASE_ALL,  /* base: */
	Q_DEPTH,     /* qemu:allocation-depth */
	Q_QEMU_ALL,  /* qemu: */
	Q_DIRTY_ALL, /* qemu:dirty-bitmap: */
	Q_DIRTY,     /* qemu:dirty-bitmap:NAME (NAME in *leaf) */
};

static bool is(const uint8_t *q, uint32_t n, const char *s)
{
	return n == strlen(s) && memcmp(q, s, n) == 0;
}

static enum meta_q meta_query(const struct proto *p, const uint8_t *q, uint32_t n, char *leaf)
{
	const size_t dl = sizeof(NBD_META_QEMU_DIRTY) - 1;

	if (is(q, n, NBD_META_BASE_ALLOCATION))
		return Q_ALLOC;
	if (is(q, n, "base:"))
		return Q_BASE_ALL;
	if (!p->meta_ops)
		return Q_NONE;
	if (is(q, n, NBD_META_QEMU_DEPTH))
		return Q_DEPTH;
	if (is(q, n, NBD_META_QEMU_PREFIX))
		return Q_QEMU_ALL;
	if (is(q, n, NBD_META_QEMU_DIRTY))
		return Q_DIRTY_ALL;
	if (n > dl && n - dl <= NAMES_PART_MAX && memcmp(q, NBD_META_QEMU_DIRTY, dl) == 0) {
		memcpy(leaf, q + dl, n - dl);
		leaf[n - dl] = '\0';
		return Q_DIRTY;
	}
	return Q_NONE;
}

/* One NBD_REP_META_CONTEXT: id, then prefix and name (name may be ""). */
static int put_ctx(struct proto_buf *out, uint32_t opt, uint32_t id, const char *prefix,
                   const char *name)
{
	uint32_t be = htobe32(id);
	size_t pl = strlen(prefix);
	uint8_t d[4 + sizeof(NBD_META_QEMU_DIRTY) + NAMES_PART_MAX];

	memcpy(d, &be, 4);
	memcpy(d + 4, prefix, pl);
	return put_rep(out, opt, NBD_REP_META_CONTEXT, d, 4 + pl, name, strlen(name));
}

struct meta_list {
	struct proto_buf *out;
	const char *want; /* only this snapshot (NULL: every one) */
	bool found;
};

static int list_dirty(void *arg, const char *snap)
{
	struct meta_list *l = arg;

	if (l->want && strcmp(l->want, snap))
		return 0;
	l->found = true;
	return put_ctx(l->out, NBD_OPT_LIST_META_CONTEXT, 0, NBD_META_QEMU_DIRTY, snap);
}

/* The queries of a valid LIST/SET option: nq of them from d + pos. */
struct meta_queries {
	const uint8_t *d;
	uint32_t pos, nq;
};

/* Next query (n bytes at *q); false after the last. */
static bool query_next(struct meta_queries *m, const uint8_t **q, uint32_t *n)
{
	if (!m->nq)
		return false;
	*n = get_be32(m->d + m->pos);
	*q = m->d + m->pos + 4;
	m->pos += 4 + *n;
	m->nq--;
	return true;
}

/* Was query q (n bytes), the k-th of m, asked before it? */
static bool query_seen(struct meta_queries m, uint32_t k, const uint8_t *q, uint32_t n)
{
	const uint8_t *q2;
	uint32_t n2;

	for (uint32_t i = 0; i < k && query_next(&m, &q2, &n2); i++)
		if (n2 == n && memcmp(q2, q, n) == 0)
			return true;
	return false;
}

/* NBD_OPT_LIST_META_CONTEXT on the open export handle: every context the
 * queries match, each once (no query: all of them), ids 0. */
static int meta_list(struct proto *p, void *handle, struct meta_queries m, struct proto_buf *out)
{
	bool alloc = m.nq == 0, depth = m.nq == 0 && p->meta_ops, dirty = depth;
	const struct meta_queries all = m;
	char leaf[NAMES_PART_MAX + 1];
	struct meta_list l = {.out = out};
	const uint8_t *q;
	uint32_t n;
	int err = 0;

	while (query_next(&m, &q, &n))
		switch (meta_query(p, q, n, leaf)) {
		case Q_ALLOC:
		case Q_BASE_ALL:
			alloc = true;
			break;
		case Q_QEMU_ALL:
			depth = dirty = true;
			break;
		case Q_DEPTH:
			depth = true;
			break;
		case Q_DIRTY_ALL:
			dirty = true;
			break;
		default:
			break;
		}
	if (alloc)
		err = put_ctx(out, NBD_OPT_LIST_META_CONTEXT, 0, NBD_META_BASE_ALLOCATION, "");
	if (!err && depth)
		err = put_ctx(out, NBD_OPT_LIST_META_CONTEXT, 0, NBD_META_QEMU_DEPTH, "");
	if (!err && dirty)
		return p->meta_ops->snapshots(p->ctx, handle, list_dirty, &l);
	/* No wildcard listed the bitmaps: those named that exist, each once. */
	m = all;
	for (uint32_t k = 0; !err && query_next(&m, &q, &n); k++)
		if (meta_query(p, q, n, leaf) == Q_DIRTY && !query_seen(all, k, q, n)) {
			l.want = leaf;
			err = p->meta_ops->snapshots(p->ctx, handle, list_dirty, &l);
		}
	return err;
}

/* NBD_OPT_SET_META_CONTEXT on the open export handle (the previous
 * selection is gone already): base:allocation, the depth and the first
 * dirty bitmap that exists, if asked for; wildcards select nothing. */
static int meta_set(struct proto *p, void *handle, const char *name, struct meta_queries m,
                    struct proto_buf *out)
{
	const uint32_t opt = NBD_OPT_SET_META_CONTEXT;
	char leaf[NAMES_PART_MAX + 1];
	const uint8_t *q;
	uint32_t n;
	int err = 0;

	while (err != -ENOMEM && query_next(&m, &q, &n)) {
		err = 0;
		switch (meta_query(p, q, n, leaf)) {
		case Q_ALLOC:
			p->meta_alloc = true;
			break;
		case Q_DEPTH:
			if (!p->meta_depth)
				err = p->meta_ops->open(p->ctx, handle, NULL, &p->meta_depth);
			break;
		case Q_DIRTY:
			/* One bitmap per connection: later ones are ignored.  An
			 * unknown (or busy) snapshot selects nothing: not an error. */
			if (p->meta_dirty)
				break;
			err = p->meta_ops->open(p->ctx, handle, leaf, &p->meta_dirty);
			if (!err)
				memcpy(p->meta_dirty_name, leaf, sizeof(leaf));
			break;
		default:
			break;
		}
	}
	if (err == -ENOMEM)
		return err;
	err = 0;
	memcpy(p->meta_name, name, strlen(name) + 1);
	if (p->meta_alloc)
		err = put_ctx(out, opt, PROTO_META_ALLOC_ID, NBD_META_BASE_ALLOCATION, "");
	if (!err && p->meta_dirty)
		err =
		    put_ctx(out, opt, PROTO_META_DIRTY_ID, NBD_META_QEMU_DIRTY, p->meta_dirty_name);
	if (!err && p->meta_depth)
		err = put_ctx(out, opt, PROTO_META_DEPTH_ID, NBD_META_QEMU_DEPTH, "");
	return err;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT share a layout:
 *   32 bits name length, name, 32 bits query count, then per query
 *   32 bits length and the query string.
 * LIST with no query lists every context; SET with none selects none.  A
 * SET replaces the selection even when it fails (the spec). */
static int opt_meta_context(struct proto *p, uint32_t opt, const uint8_t *d, uint32_t n,
                            struct proto_buf *out)
{
	char name[NBD_STRING_MAX + 1];
	struct proto_export e;
	struct meta_queries m = {.d = d};
	uint32_t namelen, nq, pos;
	int err;

	if (opt == NBD_OPT_SET_META_CONTEXT)
		meta_clear(p);
	if (!p->structured)
		return put_err(
		    out, opt, NBD_REP_ERR_INVALID,
		    "negotiate NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS first");
	if (n < 8)
		return put_err(out, opt, NBD_REP_ERR_INVALID, "option data too short");
	namelen = get_be32(d);
	if (namelen > n - 8)
		return put_err(out, opt, NBD_REP_ERR_INVALID, "export name length too long");
	if (!string_ok(d + 4, namelen))
		return put_err(out, opt, NBD_REP_ERR_INVALID, "bad export name");
	nq = get_be32(d + 4 + namelen);
	pos = 8 + namelen;
	m.pos = pos;
	m.nq = nq;
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql;

		if (n - pos < 4)
			return put_err(out, opt, NBD_REP_ERR_INVALID, "query count too large");
		ql = get_be32(d + pos);
		pos += 4;
		if (ql > n - pos)
			return put_err(out, opt, NBD_REP_ERR_INVALID, "query length too long");
		if (!string_ok(d + pos, ql))
			return put_err(out, opt, NBD_REP_ERR_INVALID, "bad query string");
		pos += ql;
	}
	if (pos != n)
		return put_err(out, opt, NBD_REP_ERR_INVALID, "option length does not match");
	err = open_named(p, opt, d + 4, namelen, name, &e, out);
	if (err)
		return err < 0 ? err : 0;
	size_t mark = out->len;
	if (opt == NBD_OPT_SET_META_CONTEXT)
		err = meta_set(p, e.handle, name, m, out);
	else
		err = meta_list(p, e.handle, m, out);
	p->ops->close(p->ctx, e.handle);
	if (err == -ENOMEM)
		return err;
	if (err) {
		if (opt == NBD_OPT_SET_META_CONTEXT)
			meta_clear(p);
		out->len = mark; /* drop the partial list; say why instead */
		return put_err(out, opt, NBD_REP_ERR_PLATFORM, strerror(-err));
	}
	return put_rep(out, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
}

/* NBD_OPT_STARTTLS: ACK, then the caller runs the TLS handshake (phase
 * PROTO_STARTTLS stops proto_handshake until proto_tls_started). */
static int opt_starttls(struct proto *p, uint32_t n, struct proto_buf *out)
{
	if (p->tls_mode == PROTO_TLS_OFF) {
		snprintf(p->refused, sizeof(p->refused), "NBD_OPT_STARTTLS refused: TLS is off");
		return put_err(out, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY,
		               "TLS is not enabled on this server");
	}
	if (p->tls)
		return put_err(out, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is already active");
	if (n != 0)
		return put_err(out, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
		               "NBD_OPT_STARTTLS takes no data");
	p->phase = PROTO_STARTTLS;
	return put_rep(out, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0, NULL, 0);
}

void proto_tls_started(struct proto *p)
{
	p->tls = true;
	p->phase = PROTO_OPTIONS;
	p->structured = false;
	p->extended = false;
	meta_clear(p);
}

/* ---- handover: saving and restoring what was negotiated ------------- */

void proto_save(const struct proto *p, struct proto_state *out)
{
	memset(out, 0, sizeof(*out));
	out->phase = p->phase;
	out->no_zeroes = p->no_zeroes;
	out->structured = p->structured;
	out->extended = p->extended;
	out->size = p->exp.size;
	out->tflags = p->tflags;
	out->read_only = p->exp.read_only;
	out->meta_alloc = p->meta_alloc;
	out->meta_depth = p->meta_depth != NULL;
	if (p->meta_dirty)
		memcpy(out->meta_dirty, p->meta_dirty_name, sizeof(out->meta_dirty));
	memcpy(out->meta_name, p->meta_name, sizeof(out->meta_name));
}

/* Open again, on export handle, the contexts s selected.  0 or -ESTALE. */
static int meta_restore(struct proto *p, void *handle, const struct proto_state *s)
{
	p->meta_alloc = s->meta_alloc;
	if (s->meta_depth && p->meta_ops->open(p->ctx, handle, NULL, &p->meta_depth))
		return -ESTALE;
	if (s->meta_dirty[0]) {
		if (p->meta_ops->open(p->ctx, handle, s->meta_dirty, &p->meta_dirty))
			return -ESTALE;
		memcpy(p->meta_dirty_name, s->meta_dirty, sizeof(p->meta_dirty_name));
	}
	memcpy(p->meta_name, s->meta_name, sizeof(p->meta_name));
	return 0;
}

/* The selection s made in the option phase, for export s->meta_name. */
static int meta_restore_named(struct proto *p, const struct proto_state *s)
{
	struct proto_export e = {0};
	int err;

	if (!s->meta_alloc && !s->meta_depth && !s->meta_dirty[0])
		return 0;
	if (!p->meta_ops || !p->structured || p->ops->open(p->ctx, s->meta_name, &e))
		return -ESTALE;
	err = meta_restore(p, e.handle, s);
	p->ops->close(p->ctx, e.handle);
	return err;
}

/* Transmission: export name again, told exactly as before. */
static int restore_transmission(struct proto *p, const char *name, const struct proto_state *s)
{
	bool any = s->meta_alloc || s->meta_depth || s->meta_dirty[0];
	struct proto_export e = {0};
	int err = p->ops->open(p->ctx, name, &e);

	if (err)
		return err == -ENOENT ? -ESTALE : err;
	if (e.size != s->size || e.read_only != s->read_only)
		goto stale;
	if (any) {
		/* In transmission contexts are only ever this export's
		 * (enter_transmission dropped any others). */
		if (!p->structured || !p->meta_ops || strcmp(name, s->meta_name) ||
		    meta_restore(p, e.handle, s))
			goto stale;
	}
	enter_transmission(p, &e, name);
	if (p->tflags != s->tflags) {
		proto_fini(p);
		return -ESTALE;
	}
	return 0;
stale:
	meta_clear(p);
	p->ops->close(p->ctx, e.handle);
	return -ESTALE;
}

int proto_restore(struct proto *p, const char *name, const struct proto_state *s)
{
	int err;

	if (s->phase != PROTO_CLIENT_FLAGS && s->phase != PROTO_OPTIONS &&
	    s->phase != PROTO_TRANSMISSION)
		return -EPROTO;
	if (s->extended && !s->structured)
		return -EPROTO;
	if (memchr(s->meta_dirty, 0, sizeof(s->meta_dirty)) == NULL ||
	    memchr(s->meta_name, 0, sizeof(s->meta_name)) == NULL)
		return -EPROTO;
	p->no_zeroes = s->no_zeroes;
	p->structured = s->structured;
	p->extended = s->extended;
	if (s->phase == PROTO_TRANSMISSION)
		return restore_transmission(p, name, s);
	p->phase = s->phase;
	err = meta_restore_named(p, s);
	if (err)
		meta_clear(p);
	return err;
}

static int option(struct proto *p, uint32_t opt, const uint8_t *d, uint32_t n,
                  struct proto_buf *out)
{
	if (opt == NBD_OPT_ABORT) {
		p->phase = PROTO_CLOSE;
		return put_rep(out, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
	}
	if (opt == NBD_OPT_EXPORT_NAME) {
		/* FORCEDTLS: this option cannot carry TLS_REQD; hang up. */
		if (p->tls_mode == PROTO_TLS_REQUIRE && !p->tls)
			return -EACCES;
		/* The spec forbids it after extended headers, and its reply
		 * cannot say no: hang up. */
		if (p->extended)
			return -EPROTO;
		return opt_export_name(p, d, n, out);
	}
	if (p->shutting_down)
		return put_err(out, opt, NBD_REP_ERR_SHUTDOWN, "server is shutting down");
	if (opt == NBD_OPT_STARTTLS)
		return opt_starttls(p, n, out);
	if (p->tls_mode == PROTO_TLS_REQUIRE && !p->tls) {
		snprintf(p->refused, sizeof(p->refused), "option %u refused: TLS is required",
		         (unsigned)opt);
		return put_err(out, opt, NBD_REP_ERR_TLS_REQD,
		               "TLS is required: send NBD_OPT_STARTTLS first");
	}
	switch (opt) {
	case NBD_OPT_LIST:
		return opt_list(p, n, out);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(p, opt, d, n, out);
	case NBD_OPT_STRUCTURED_REPLY:
		return opt_structured_reply(p, n, out);
	case NBD_OPT_EXTENDED_HEADERS:
		return opt_extended_headers(p, n, out);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta_context(p, opt, d, n, out);
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
			/* TLS needs fixed newstyle on both sides; without it the
			 * connection is NOTLS, which TLS-required cannot serve. */
			if (!(f & NBD_FLAG_C_FIXED_NEWSTYLE)) {
				if (p->tls_mode == PROTO_TLS_REQUIRE)
					return -EACCES;
				p->tls_mode = PROTO_TLS_OFF;
			}
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

/* Decode the header the negotiation chose into *req (zeroed first): its
 * size, 0 when len is short, -EPROTO for a bad magic (the other header
 * style included: the spec makes each side use only the negotiated one).
 * A compact magic after extended headers is refused as soon as it is in:
 * that header is 4 bytes short of an extended one, and its sender would
 * wait for a reply forever. */
static int request_header(const struct proto *p, const uint8_t *in, size_t len,
                          struct proto_req *req)
{
	struct nbd_extended_header x;
	struct nbd_request r;

	if (p->extended && len >= 4 && get_be32(in) == NBD_REQUEST_MAGIC)
		return -EPROTO;
	if (len < (p->extended ? sizeof(x) : sizeof(r)))
		return 0;
	memset(req, 0, sizeof(*req));
	if (p->extended) {
		memcpy(&x, in, sizeof(x));
		if (be32toh(x.magic) != NBD_EXTENDED_REQUEST_MAGIC)
			return -EPROTO;
		req->type = be16toh(x.type);
		req->flags = be16toh(x.flags);
		req->handle = x.handle; /* opaque: echoed back byte for byte */
		req->offset = be64toh(x.offset);
		req->length = be64toh(x.length);
		/* Replies are chunks with extended headers, whatever the command. */
		req->extended = req->structured = true;
		return sizeof(x);
	}
	memcpy(&r, in, sizeof(r));
	if (be32toh(r.magic) != NBD_REQUEST_MAGIC)
		return -EPROTO;
	req->type = be16toh(r.type);
	req->flags = be16toh(r.flags);
	req->handle = r.handle;
	req->offset = be64toh(r.offset);
	req->length = be32toh(r.length);
	return sizeof(r);
}

/* Bytes that follow the header: a WRITE's length; with extended headers
 * also the length of any command flagged NBD_CMD_FLAG_PAYLOAD_LEN.  The
 * spec says an extended WRITE MUST carry that flag, but qemu's client
 * (10.0) sends its data without it, and qemu's server reads a WRITE's
 * length as its payload either way: so does cowbd (the flag changes
 * nothing for a WRITE).  -E2BIG for an extended payload over the maximum
 * (the spec: hard disconnect), else 0. */
static int request_payload(struct proto_req *req)
{
	if (!req->extended) {
		req->payload = req->type == NBD_CMD_WRITE ? (uint32_t)req->length : 0;
		return 0;
	}
	if (!(req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) && req->type != NBD_CMD_WRITE)
		return 0;
	if (req->length > PROTO_MAX_PAYLOAD)
		return -E2BIG;
	req->payload = (uint32_t)req->length;
	return 0;
}

/* The contexts a BLOCK_STATUS answers unless its payload picks some. */
static unsigned meta_contexts(const struct proto *p)
{
	return (p->meta_alloc ? PROTO_META_BIT(PROTO_META_ALLOC_ID) : 0) |
	       (p->meta_dirty ? PROTO_META_BIT(PROTO_META_DIRTY_ID) : 0) |
	       (p->meta_depth ? PROTO_META_BIT(PROTO_META_DEPTH_ID) : 0);
}

/* A BLOCK_STATUS range: nonzero (the spec) and inside the export. */
static void bs_range(const struct proto *p, struct proto_req *req)
{
	if (req->length == 0 || req->offset > p->exp.size ||
	    req->length > p->exp.size - req->offset)
		req->error = -EINVAL;
}

/* A valid BLOCK_STATUS header.  With NBD_CMD_FLAG_PAYLOAD_LEN the range
 * comes in the payload (proto_request_payload); a payload that cannot be
 * valid is EINVAL at once (the caller discards it). */
static void bs_request(const struct proto *p, struct proto_req *req)
{
	uint32_t n = req->payload;

	req->req_one = req->flags & NBD_CMD_FLAG_REQ_ONE;
	req->contexts = meta_contexts(p);
	if (!(req->flags & NBD_CMD_FLAG_PAYLOAD_LEN)) {
		bs_range(p, req);
		return;
	}
	if (n < 12 || n > PROTO_BS_PAYLOAD_MAX || (n - 8) % 4)
		req->error = -EINVAL;
	else
		req->bs_payload = true;
}

void proto_request_payload(const struct proto *p, struct proto_req *req, const uint8_t *in)
{
	unsigned want = 0;

	req->length = get_be64(in);
	for (uint32_t at = 8; at < req->payload; at += 4) {
		uint32_t id = get_be32(in + at);
		unsigned bit = id >= 1 && id <= PROTO_META_NCTX ? PROTO_META_BIT(id) : 0;

		/* The spec: an unknown or repeated id is EINVAL. */
		if (!(bit & req->contexts) || (bit & want))
			req->error = -EINVAL;
		want |= bit;
	}
	req->payload = 0;
	req->bs_payload = false;
	if (req->error)
		return;
	req->contexts = want;
	bs_range(p, req);
}

int proto_request(struct proto *p, const uint8_t *in, size_t len, struct proto_req *req)
{
	int hdr = request_header(p, in, len, req);
	uint16_t allowed, payload_len;
	bool writes;

	if (hdr <= 0)
		return hdr;
	if (request_payload(req))
		return -E2BIG;
	payload_len = req->extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0;

	switch (req->type) {
	case NBD_CMD_READ:
		req->op = STORE_READ;
		req->structured = p->structured;
		allowed = NBD_CMD_FLAG_FUA | (p->structured ? NBD_CMD_FLAG_DF : 0);
		break;
	case NBD_CMD_WRITE:
		req->op = STORE_WRITE;
		allowed = NBD_CMD_FLAG_FUA | payload_len;
		break;
	case NBD_CMD_DISC:
		req->disc = true;
		return hdr;
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
		/* FAST_ZERO: zeroing always unmaps, which is always fast. */
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_CACHE:
		req->op = STORE_CACHE;
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (!p->meta_active) { /* no context negotiated: the spec's EINVAL */
			req->error = -EINVAL;
			return hdr;
		}
		req->op = STORE_READ; /* never submitted; read-only in effect */
		req->structured = true;
		req->block_status = true;
		/* NBD_FLAG_BLOCK_STATUS_PAYLOAD is sent exactly when both hold. */
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE | payload_len;
		break;
	default: /* RESIZE, ...: not advertised */
		req->error = -EINVAL;
		return hdr;
	}
	if (req->flags & ~allowed) {
		req->error = -EINVAL;
		return hdr;
	}
	if (req->block_status) {
		bs_request(p, req);
		return hdr;
	}
	writes = req->op == STORE_WRITE || req->op == STORE_TRIM || req->op == STORE_ZERO;
	if (writes && p->exp.read_only) {
		req->error = -EPERM;
		return hdr;
	}
	if (req->op == STORE_FLUSH) {
		if (req->offset || req->length)
			req->error = -EINVAL;
		else if (p->exp.read_only)
			req->noop = true; /* nothing can be dirty */
		return hdr;
	}
	if ((req->type == NBD_CMD_READ || req->op == STORE_WRITE) &&
	    req->length > PROTO_MAX_PAYLOAD) {
		req->error = -EINVAL;
		return hdr;
	}
	if (req->offset > p->exp.size || req->length > p->exp.size - req->offset) {
		req->error = req->op == STORE_WRITE ? -ENOSPC : -EINVAL;
		return hdr;
	}
	if (req->length == 0 || req->op == STORE_CACHE) {
		/* CACHE: nothing to warm; reads from the page cache or the
		 * tree are as fast as they get. */
		req->noop = true;
		return hdr;
	}
	req->df = req->flags & NBD_CMD_FLAG_DF;
	if (req->flags & NBD_CMD_FLAG_FUA && writes)
		req->store_flags |= STORE_FUA;
	if (req->flags & NBD_CMD_FLAG_NO_HOLE)
		req->store_flags |= STORE_NO_HOLE;
	return hdr;
}

/* ---- reply encoding ------------------------------------------------- */

static void put_be64(uint8_t *out, uint64_t v)
{
	v = htobe64(v);
	memcpy(out, &v, 8);
}

static void put_be32(uint8_t *out, uint32_t v)
{
	v = htobe32(v);
	memcpy(out, &v, 4);
}

/* A simple reply header. */
static size_t simple_hdr(uint8_t *out, uint64_t handle, uint32_t nbd_err)
{
	struct nbd_simple_reply r = {
	    .magic = htobe32(NBD_SIMPLE_REPLY_MAGIC),
	    .error = htobe32(nbd_err),
	    .handle = handle,
	};

	memcpy(out, &r, sizeof(r));
	return sizeof(r);
}

/* A chunk header for reply r, structured or extended (with the request's
 * offset); len bytes of payload follow it. */
static size_t chunk_hdr(uint8_t *out, const struct proto_reply *r, uint16_t flags, uint16_t type,
                        uint32_t len)
{
	struct nbd_structured_reply s = {
	    .magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC),
	    .flags = htobe16(flags),
	    .type = htobe16(type),
	    .handle = r->handle,
	    .length = htobe32(len),
	};
	struct nbd_extended_header x = {
	    .magic = htobe32(NBD_EXTENDED_REPLY_MAGIC),
	    .flags = htobe16(flags),
	    .type = htobe16(type),
	    .handle = r->handle,
	    .offset = htobe64(r->offset),
	    .length = htobe64(len),
	};

	if (r->extended) {
		memcpy(out, &x, sizeof(x));
		return sizeof(x);
	}
	memcpy(out, &s, sizeof(s));
	return sizeof(s);
}

/* NBD_REPLY_TYPE_OFFSET_DATA header for len data bytes at offset. */
static size_t chunk_data(uint8_t *out, const struct proto_reply *r, uint16_t flags, uint64_t offset,
                         uint32_t len)
{
	size_t n = chunk_hdr(out, r, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + len);

	put_be64(out + n, offset);
	return n + 8;
}

/* NBD_REPLY_TYPE_OFFSET_HOLE: len bytes of zeroes at offset. */
static size_t chunk_hole(uint8_t *out, const struct proto_reply *r, uint16_t flags, uint64_t offset,
                         uint32_t len)
{
	size_t n = chunk_hdr(out, r, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12);

	put_be64(out + n, offset);
	put_be32(out + n + 8, len);
	return n + 12;
}

/* NBD_REPLY_TYPE_ERROR (no offset) or ERROR_OFFSET, with DONE and an
 * empty message. */
static size_t chunk_error(uint8_t *out, const struct proto_reply *r, uint32_t nbd_err,
                          bool with_offset, uint64_t offset)
{
	size_t n = chunk_hdr(out, r, NBD_REPLY_FLAG_DONE,
	                     with_offset ? NBD_REPLY_TYPE_ERROR_OFFSET : NBD_REPLY_TYPE_ERROR,
	                     with_offset ? 14 : 6);

	put_be32(out + n, nbd_err);
	out[n + 4] = out[n + 5] = 0; /* no message */
	n += 6;
	if (with_offset) {
		put_be64(out + n, offset);
		n += 8;
	}
	return n;
}

/* Are n bytes at p all zero?  Stops at the first nonzero word. */
static bool all_zero(const uint8_t *p, size_t n)
{
	uint64_t w;

	while (n >= 64) {
		uint64_t a[8];

		memcpy(a, p, 64);
		if (a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7])
			return false;
		p += 64;
		n -= 64;
	}
	for (; n >= 8; p += 8, n -= 8) {
		memcpy(&w, p, 8);
		if (w)
			return false;
	}
	for (; n; p++, n--)
		if (*p)
			return false;
	return true;
}

/* Call fn(arg, p, k) on each stretch of data bytes [pos, pos+len) of the
 * pieces, in order, while it returns true; false if one returned false. */
static bool pieces_each(const struct iovec *piece, unsigned n, uint32_t pos, uint32_t len,
                        bool (*fn)(void *arg, const uint8_t *p, uint32_t k), void *arg)
{
	for (unsigned i = 0; i < n && len; i++) {
		uint32_t plen = (uint32_t)piece[i].iov_len;
		if (pos >= plen) {
			pos -= plen;
			continue;
		}
		uint32_t k = plen - pos < len ? plen - pos : len;
		if (!fn(arg, (const uint8_t *)piece[i].iov_base + pos, k))
			return false;
		len -= k;
		pos = 0;
	}
	return true;
}

static bool stretch_zero(void *arg, const uint8_t *p, uint32_t k)
{
	return all_zero(p, k);
}

/* Are the len bytes at data offset pos of the pieces all zero? */
static bool pieces_zero(const struct iovec *piece, unsigned n, uint32_t pos, uint32_t len)
{
	return pieces_each(piece, n, pos, len, stretch_zero, NULL);
}

unsigned proto_read_runs_pieces(const struct iovec *piece, unsigned n, uint64_t offset,
                                uint32_t len, bool df, struct proto_run *runs, unsigned max)
{
	unsigned k = 0;
	uint32_t pos = 0;

	if (df || max < 2) {
		runs[0] = (struct proto_run){.off = 0, .len = len, .hole = false};
		return 1;
	}
	while (pos < len) {
		/* Block boundaries are those of the export, not of the request. */
		uint64_t next = ((offset + pos) / STORE_BLOCK_SIZE + 1) * STORE_BLOCK_SIZE;
		uint32_t blk =
		    next - offset - pos < len - pos ? (uint32_t)(next - offset - pos) : len - pos;
		bool hole;

		if (k == max - 1 && !runs[k - 1].hole) {
			runs[k - 1].len = len - runs[k - 1].off; /* out of runs: the rest is data */
			return k;
		}
		hole = pieces_zero(piece, n, pos, blk);
		if (k && runs[k - 1].hole == hole) {
			runs[k - 1].len += blk;
		} else if (k == max - 1) {
			/* Last slot after a hole: the rest goes out as data. */
			runs[k++] = (struct proto_run){.off = pos, .len = len - pos, .hole = false};
			return k;
		} else {
			runs[k++] = (struct proto_run){.off = pos, .len = blk, .hole = hole};
		}
		pos += blk;
	}
	return k;
}

unsigned proto_read_runs(const uint8_t *buf, uint64_t offset, uint32_t len, bool df,
                         struct proto_run *runs, unsigned max)
{
	struct iovec one = {.iov_base = (void *)buf, .iov_len = len};
	return proto_read_runs_pieces(&one, 1, offset, len, df, runs, max);
}

/* ---- reply assembly ------------------------------------------------ */

static_assert(PROTO_CHUNK_HDR + 14 <= sizeof(((struct proto_reply *)0)->hdr),
              "an error chunk fits a reply's header area");
static_assert(PROTO_CHUNK_HDR + 8 <= PROTO_CHUNK_HOLE, "a data chunk header fits its slot");
static_assert(PROTO_META_NCTX * (PROTO_CHUNK_HDR + 8) <= sizeof(((struct proto_reply *)0)->hdr),
              "a BLOCK_STATUS chunk header per context fits a reply's header area");

static void reply_add(struct proto_reply *r, const void *base, size_t len)
{
	assert(r->niov < PROTO_REPLY_IOV);
	r->iov[r->niov].iov_base = (void *)base; /* sent, never written */
	r->iov[r->niov++].iov_len = len;
	r->len += (uint32_t)len;
}

void proto_reply_init(struct proto_reply *r, const struct proto_req *req)
{
	r->handle = req->handle;
	r->offset = req->offset;
	r->structured = req->structured;
	r->extended = req->extended;
	r->df = req->df;
	r->niov = 0;
	r->len = 0;
}

/* An error chunk (with the request's offset when with_offset) or a
 * simple error reply. */
static void reply_error(struct proto_reply *r, int err, bool with_offset, uint64_t offset)
{
	uint32_t nbd_err = proto_nbd_error(err);

	r->niov = 0;
	r->len = 0;
	if (r->structured)
		reply_add(r, r->hdr, chunk_error(r->hdr, r, nbd_err, with_offset, offset));
	else
		reply_add(r, r->hdr, simple_hdr(r->hdr, r->handle, nbd_err));
}

void proto_reply_status(struct proto_reply *r, int err)
{
	if (err) {
		reply_error(r, err, false, 0);
		return;
	}
	r->niov = 0;
	r->len = 0;
	if (r->structured)
		reply_add(r, r->hdr,
		          chunk_hdr(r->hdr, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0));
	else
		reply_add(r, r->hdr, simple_hdr(r->hdr, r->handle, 0));
}

static bool stretch_add(void *arg, const uint8_t *p, uint32_t k)
{
	reply_add(arg, p, k);
	return true;
}

/* The iovecs for data bytes [pos, pos+len) of the pieces. */
static void reply_add_span(struct proto_reply *r, const struct iovec *piece, unsigned n,
                           uint32_t pos, uint32_t len)
{
	pieces_each(piece, n, pos, len, stretch_add, r);
}

void proto_reply_read_pieces(struct proto_reply *r, uint64_t offset, const struct iovec *piece,
                             unsigned n, uint32_t len)
{
	struct proto_run runs[PROTO_READ_CHUNKS];
	uint8_t *h = r->hdr;
	unsigned nr;

	assert(n <= PROTO_READ_PIECES);
	r->niov = 0;
	r->len = 0;
	if (!r->structured) {
		reply_add(r, h, simple_hdr(h, r->handle, 0));
		reply_add_span(r, piece, n, 0, len);
		return;
	}
	/* Each piece boundary inside a data chunk costs one iovec more:
	 * 2 * PROTO_READ_CHUNKS + PROTO_READ_PIECES in all. */
	nr = proto_read_runs_pieces(piece, n, offset, len, r->df, runs, PROTO_READ_CHUNKS);
	for (unsigned i = 0; i < nr; i++) {
		uint16_t fl = i == nr - 1 ? NBD_REPLY_FLAG_DONE : 0;
		uint64_t off = offset + runs[i].off;
		size_t k;

		if (runs[i].hole) {
			k = chunk_hole(h, r, fl, off, runs[i].len);
			reply_add(r, h, k);
		} else {
			k = chunk_data(h, r, fl, off, runs[i].len);
			reply_add(r, h, k);
			reply_add_span(r, piece, n, runs[i].off, runs[i].len);
		}
		h += k;
	}
}

void proto_reply_read(struct proto_reply *r, int err, uint64_t offset, const uint8_t *buf,
                      uint32_t len)
{
	if (err) {
		reply_error(r, err, true, offset);
		return;
	}
	struct iovec one = {.iov_base = (void *)buf, .iov_len = len};
	proto_reply_read_pieces(r, offset, &one, 1, len);
}

/* Bytes of one block descriptor on the wire. */
static size_t bs_desc_size(const struct proto_reply *r)
{
	return r->extended ? sizeof(struct nbd_block_descriptor_ext)
	                   : sizeof(struct nbd_block_descriptor);
}

/* One BLOCK_STATUS chunk header (with the context id, and with extended
 * headers the descriptor count) at h for n descriptors; returns its size. */
static size_t bs_chunk(uint8_t *h, const struct proto_reply *r, bool last, uint32_t id, unsigned n)
{
	size_t pre = r->extended ? 8 : 4;
	size_t k =
	    chunk_hdr(h, r, last ? NBD_REPLY_FLAG_DONE : 0,
	              r->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT : NBD_REPLY_TYPE_BLOCK_STATUS,
	              (uint32_t)(pre + bs_desc_size(r) * n));

	put_be32(h + k, id);
	if (r->extended)
		put_be32(h + k + 4, n);
	return k + pre;
}

/* One descriptor at d; returns the next.  Compact lengths fit 32 bits:
 * extents never reach past the request's 32-bit length. */
static uint8_t *bs_desc(const struct proto_reply *r, uint8_t *d, uint64_t len, uint32_t status)
{
	if (r->extended) {
		put_be64(d, len);
		put_be64(d + 8, status);
		return d + 16;
	}
	put_be32(d, (uint32_t)len);
	put_be32(d + 4, status);
	return d + 8;
}

void proto_reply_block_status(struct proto_reply *r, const struct proto_bs *bs, uint8_t *desc)
{
	struct {
		uint32_t id;
		unsigned n;
	} ctx[3];
	unsigned nctx = 0;
	uint8_t *h = r->hdr, *dd = desc;

	if (bs->alloc)
		ctx[nctx++] = (typeof(ctx[0])){PROTO_META_ALLOC_ID, bs->nalloc};
	if (bs->dirty)
		ctx[nctx++] = (typeof(ctx[0])){PROTO_META_DIRTY_ID, bs->ndirty};
	if (bs->depth)
		ctx[nctx++] = (typeof(ctx[0])){PROTO_META_DEPTH_ID, bs->ndepth};
	int err = bs->err;
	for (unsigned c = 0; c < nctx && !err; c++)
		if (!ctx[c].n)
			err = -EIO; /* a chunk needs one descriptor */
	if (err || !nctx) {
		reply_error(r, err ? err : -EIO, false, 0);
		return;
	}
	r->niov = 0;
	r->len = 0;
	for (unsigned i = 0; i < bs->nalloc && bs->alloc; i++)
		dd = bs_desc(r, dd, bs->alloc[i].len,
		             bs->alloc[i].hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0);
	for (unsigned i = 0; i < bs->ndirty && bs->dirty; i++)
		dd = bs_desc(r, dd, bs->dirty[i].len, bs->dirty[i].value ? NBD_STATE_DIRTY : 0);
	for (unsigned i = 0; i < bs->ndepth && bs->depth; i++)
		dd = bs_desc(r, dd, bs->depth[i].len, bs->depth[i].value);
	dd = desc;
	for (unsigned c = 0; c < nctx; c++) {
		size_t k = bs_chunk(h, r, c == nctx - 1, ctx[c].id, ctx[c].n);
		reply_add(r, h, k);
		reply_add(r, dd, bs_desc_size(r) * ctx[c].n);
		h += k;
		dd += bs_desc_size(r) * ctx[c].n;
	}
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
