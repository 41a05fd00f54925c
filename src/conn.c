/* conn.c — one NBD client connection on its libev loop: its state machine
 * (below), buffers, backpressure, submitting to the store and sending
 * replies (layer: above proto and store; below conn_server.c, which owns
 * the listeners, the loops and the server object).
 *
 * Threads and locks: everything runs on the connection's loop thread
 * (c->lp: the server's own loop or one of its loop threads; conn_server.c
 * parks the loop threads before it acts on connections itself) except
 * done_cb(), which the store calls on its own threads.  Each loop thread
 * is registered with the store: READs that need no disk wait are served on
 * it (store_read_try), and so are BLOCK_STATUS requests whose tree nodes
 * are in memory (store_bs without reading); the others go to the store's
 * reader threads.  Nothing here blocks.  done_cb() pushes the finished
 * request onto its loop's lock-free stack (one atomic exchange pops it
 * whole) and pokes that loop with ev_async; no mutex on the data path (the
 * server's list lock only when a connection opens, closes or names its
 * export).  A request struct is owned by the store between store_submit()
 * and done_cb(), and by its loop otherwise.
 *
 * Per connection:
 *
 *      accept ──► HANDSHAKE ──(GO / EXPORT_NAME)──► TRANSMISSION
 *        │        │   │ greeting, option replies     │ read many requests per recv,
 *        │        │   │ (proto_handshake, STARTTLS)  │ serve or submit each,
 *        │        │   └─(ABORT)─► DRAINING           │ replies queue as they complete
 *        │        │                  ▲               │
 *        │        │                  └─(DISC, EOF, framing error, shutdown,
 *        │        │                     idle timeout)
 *        │        │                                  │
 *        │  bad handshake / reset / write error /    │  DRAINING: no more reading;
 *        │  handshake timeout                        │  in-flight requests finish and
 *        │        ▼                                  ▼  their replies go out, then
 *        │      DEAD: socket closed, replies dropped ◄──── close
 *        │        │
 *        │        └─ freed when the store has returned every submitted request
 *        │           (never free memory a store thread may still write)
 *        └─ over --max-connections: closed at once, never a conn
 *
 * Reading: bytes land in a per-connection buffer (rbuf) and are parsed
 * there, many requests per recv().  A small WRITE waits in rbuf until its
 * whole payload is there; a large one gets its own buffer and the rest of
 * the payload is received straight into it (rx).  After a large WRITE the
 * next recv() into rbuf takes one request header only, so that a stream
 * of large WRITEs lands in their own buffers, never copied out of rbuf.
 * A rejected WRITE's payload is read and discarded (drain).  Reading
 * stops while more than lim.max_reqs requests or lim.max_bytes payload
 * bytes are held (backpressure; --max-inflight-requests/-bytes) and
 * resumes as replies go out.
 *
 * Writing: proto assembles each reply (proto_reply_*: a short list of
 * iovecs over its own headers and the request's buffer, READ data or
 * BLOCK_STATUS extents); conn never encodes a reply or names an NBD error.
 * Replies queue per connection and one sendmsg() gathers many of them.  All socket I/O goes through
 * conn_sock_recv()/conn_sock_send() (plain or TLS).  A direct write is tried
 * first; the write watcher runs only while data is left over.
 *
 * Memory: request structs, and their buffers up to CONN_POOL_BUF, are kept
 * on a per-connection free list; larger buffers (up to PROTO_MAX_PAYLOAD,
 * 64 MiB) are allocated on demand and freed when their reply has been sent.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn_int.h"
#include "say.h"

static void conn_parse(struct conn *c);
static void conn_arm_idle(struct conn *c);

/* ---- the socket ------------------------------------------------------
 * Every byte to or from a client goes through these two functions (a TLS
 * layer hooks in here).  Both behave like recv()/sendmsg() on a
 * non-blocking socket: -1 with errno EAGAIN when nothing can move. */

static ssize_t conn_sock_recv(struct conn *c, void *buf, size_t len)
{
	if (c->tls)
		return tls_recv(c->tls, buf, len);
	return recv(c->fd, buf, len, MSG_DONTWAIT);
}

static ssize_t conn_sock_send(struct conn *c, const struct msghdr *m)
{
	if (c->tls)
		return tls_sendmsg(c->tls, m);
	return sendmsg(c->fd, m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Why c closes, for its close line: the first reason given wins. */
static void conn_why(struct conn *c, const char *why)
{
	if (!c->why)
		c->why = why;
}

/* ---- request structs ---------------------------------------------- */

/* Payload buffers.  Large ones are mapped straight from the kernel and
 * pooled per connection (conn_int.h: CONN_POOL_*), so a stream of 1 MiB
 * requests reuses pages already faulted in, and what a connection held
 * goes back to the system when it closes (glibc would keep a freed
 * multi-MiB chunk in a thread's arena, or map and fault it anew for every
 * request, depending on its history). */
static void *buf_alloc(size_t cap)
{
	if (cap < CONN_MMAP_MIN)
		return malloc(cap);
	void *b = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return b == MAP_FAILED ? NULL : b;
}

static void buf_free(void *b, size_t cap)
{
	if (cap < CONN_MMAP_MIN)
		free(b);
	else if (b)
		munmap(b, cap);
}

/* A request with a buffer of at least size bytes; NULL when out of memory. */
static struct conn_req *req_get(struct conn *c, uint32_t size)
{
	struct conn_req *q = c->free;

	if (q) {
		c->free = q->next;
		c->pool_bytes -= q->bufcap;
	} else {
		q = calloc(1, sizeof(*q));
		if (!q)
			return NULL;
	}
	q->c = c;
	q->next = NULL;
	q->held = q->sent = 0;
	q->block_status = false;
	q->nview = 0;
	if (size > q->bufcap) {
		size_t cap = 4096;
		uint8_t *b;

		while (cap < size)
			cap *= 2;
		buf_free(q->buf, q->bufcap);
		q->buf = NULL;
		q->bufcap = 0;
		b = buf_alloc(cap);
		if (!b) {
			q->next = c->free;
			c->free = q;
			return NULL;
		}
		q->buf = b;
		q->bufcap = cap;
	}
	return q;
}

/* Return q to the free list (it is no longer counted anywhere). */
static void req_put(struct conn *c, struct conn_req *q)
{
	c->bytes -= q->held;
	q->held = 0;
	if (q->bufcap > CONN_POOL_BUF || c->pool_bytes + q->bufcap > CONN_POOL_BYTES) {
		buf_free(q->buf, q->bufcap);
		q->buf = NULL;
		q->bufcap = 0;
	}
	/* Structs are small: keep up to one per request slot. */
	q->next = c->free;
	c->free = q;
	c->pool_bytes += q->bufcap;
}

/* ---- replies -------------------------------------------------------
 * proto assembles each reply (q->out: iovecs over its headers and q->buf);
 * conn only queues and sends it. */

/* Queue q's reply (assembled in q->out) for sending. */
static void reply_queue(struct conn *c, struct conn_req *q)
{
	q->sent = 0;
	q->next = NULL;
	if (c->rq_tail)
		c->rq_tail->next = q;
	else
		c->rq_head = q;
	c->rq_tail = q;
}

/* The reply for a request that never reaches the store (rejected, or
 * nothing to do), or err when the request cannot be served. */
static void reply_now(struct conn *c, const struct proto_req *r, int err)
{
	struct conn_req *q = req_get(c, 0);

	if (!q) {
		/* Cannot even answer: better to hang up than to lose a reply. */
		say_warn("%s: out of memory, disconnecting", c->peer);
		conn_why(c, "out of memory");
		c->draining = true;
		c->dead = true;
		return;
	}
	c->reqs++;
	proto_reply_init(&q->out, r);
	proto_reply_status(&q->out, err ? err : r->error);
	reply_queue(c, q);
}

/* ---- store submission and completion ------------------------------ */

static void done_cb(struct store_req *sr)
{
	struct conn_req *q = sr->priv;
	struct conn_loop *lp = q->c->lp;
	struct conn_req *head = atomic_load_explicit(&lp->done, memory_order_relaxed);

	do
		q->done_next = head;
	while (!atomic_compare_exchange_weak_explicit(&lp->done, &head, q, memory_order_release,
	                                              memory_order_relaxed));
	ev_async_send(lp->loop, &lp->wake);
}

/* q is about to go to the store: it completes through done_cb. */
static void req_hand_over(struct conn *c, struct conn_req *q)
{
	c->submitted++;
	q->sr.err = 0;
	q->sr.next = NULL;
	q->sr.done = done_cb;
	q->sr.priv = q;
	q->sr.vol = c->proto.exp.handle;
}

/* Hand q to the store.  Writes wait in the loop's plug until the event
 * that parsed them is settled (conn_settle unplugs). */
static void req_submit(struct conn *c, struct conn_req *q)
{
	req_hand_over(c, q);
	store_submit_plugged(&c->lp->plug, &q->sr);
}

/* The store is done with q (all parts): queue its reply. */
static void req_finish(struct conn *c, struct conn_req *q)
{
	int err = q->sr.err;

	if (err && err != -ENOSPC && err != -EPERM)
		say_debug("%s: request failed: %s", c->peer, strerror(-err));
	if (q->block_status) {
		struct proto_bs bs = {.err = err,
		                      .alloc = q->bs.alloc,
		                      .nalloc = q->bs.nalloc,
		                      .dirty = q->bs.dirty_runs,
		                      .ndirty = q->bs.ndirty,
		                      .depth = q->bs.depth_runs,
		                      .ndepth = q->bs.ndepth};
		proto_reply_block_status(&q->out, &bs, q->buf);
		reply_queue(c, q);
		return;
	}
	if (q->sr.op == STORE_WRITE) {
		/* The payload is on its way to disk; release it now. */
		c->bytes -= q->held;
		q->held = 0;
	}
	if (q->sr.op == STORE_READ)
		proto_reply_read(&q->out, err, q->sr.off, q->buf, q->sr.len);
	else
		proto_reply_status(&q->out, err);
	reply_queue(c, q);
}

/* Store result for q is in; queue its reply or submit the next part. */
static void req_complete(struct conn *c, struct conn_req *q)
{
	c->submitted--;
	if (c->dead) {
		c->reqs--;
		req_put(c, q);
		return;
	}
	if (!q->sr.err && q->sr.off + q->sr.len < q->end) {
		uint64_t left = q->end - q->sr.off - q->sr.len;

		q->sr.off += q->sr.len;
		q->sr.len = left < STORE_MAX_REQ ? (uint32_t)left : STORE_MAX_REQ;
		req_submit(c, q);
		return;
	}
	req_finish(c, q);
}

void conn_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
	struct conn_loop *lp = w->data;
	struct conn_req *list = atomic_exchange_explicit(&lp->done, NULL, memory_order_acquire);
	struct conn_req *fifo = NULL, *q;
	struct conn *dirty = NULL, *c;

	while (list) { /* the stack pops newest first; restore arrival order */
		q = list;
		list = q->done_next;
		q->done_next = fifo;
		fifo = q;
	}
	while ((q = fifo)) {
		fifo = q->done_next;
		c = q->c;
		req_complete(c, q);
		if (!c->dirty) {
			c->dirty = true;
			c->dirty_next = dirty;
			dirty = c;
		}
	}
	while ((c = dirty)) {
		dirty = c->dirty_next;
		c->dirty = false;
		conn_settle(c);
	}
}

/* ---- parsing ------------------------------------------------------ */

static bool conn_can_accept(const struct conn *c)
{
	return c->reqs < c->srv->lim.max_reqs && c->bytes < c->srv->lim.max_bytes;
}

/* NBD_CMD_BLOCK_STATUS: one chunk per context asked for (r->contexts:
 * every active one, or those its payload names) — base:allocation,
 * qemu:dirty-bitmap:SNAP, qemu:allocation-depth — of up to
 * CONN_MAP_EXTENTS extents (one with REQ_ONE), each covering a prefix of
 * the range (with extended headers a range may be the whole volume).
 * Contexts not asked for cost nothing.  Answered here when every tree
 * node it needs is in memory (store_bs without reading); else it goes to
 * a reader thread, as a READ the page cache cannot serve does, and its
 * reply queues when it comes back (req_finish): replies go out in the
 * order they are ready, which NBD allows.  q->buf holds the reply's
 * descriptors, then the runs of each context asked for. */
static void conn_block_status(struct conn *c, const struct proto_req *r)
{
	struct proto *p = &c->proto;
	unsigned max = r->req_one ? 1 : CONN_MAP_EXTENTS;
	bool alloc = r->contexts & PROTO_META_BIT(PROTO_META_ALLOC_ID);
	bool dirty = r->contexts & PROTO_META_BIT(PROTO_META_DIRTY_ID);
	bool depth = r->contexts & PROTO_META_BIT(PROTO_META_DEPTH_ID);
	size_t desc = (size_t)(alloc + dirty + depth) * max * PROTO_BS_DESC;
	size_t runs = max * (alloc * sizeof(struct store_extent) +
	                     (dirty + depth) * sizeof(struct store_run));
	struct conn_req *q = req_get(c, (uint32_t)(desc + runs));

	if (!q) {
		say_warn("%s: out of memory for BLOCK_STATUS", c->peer);
		reply_now(c, r, -ENOMEM);
		return;
	}
	c->reqs++;
	uint8_t *b = q->buf + desc;
	q->block_status = true;
	q->bs = (struct store_bs){.off = r->offset, .len = r->length, .max = max};
	if (alloc) {
		q->bs.alloc = (struct store_extent *)b;
		b += max * sizeof(struct store_extent);
	}
	if (dirty) {
		q->bs.dirty = p->meta_dirty;
		q->bs.dirty_runs = (struct store_run *)b;
		b += max * sizeof(struct store_run);
	}
	if (depth) {
		q->bs.depth = p->meta_depth;
		q->bs.depth_runs = (struct store_run *)b;
	}
	proto_reply_init(&q->out, r);
	memset(&q->sr, 0, sizeof(q->sr));
	q->end = 0; /* one part */
	q->sr.buf = &q->bs;
	q->sr.err = store_bs(p->exp.handle, &q->bs, true);
	if (q->sr.err == -EAGAIN) { /* a node is away: a reader thread reads it */
		req_hand_over(c, q);
		store_bs_submit(&q->sr);
	} else {
		req_finish(c, q);
	}
}

/* ---- READs sent from the page cache ---------------------------------
 * A large READ (CONN_VIEW_MIN..CONN_TRY_MAX, whole blocks) whose blocks
 * are all in the page cache, in at most PROTO_READ_PIECES physically
 * contiguous runs, is verified there and its reply points into the pool's
 * mapping, a piece per run (store_read_view):
 * the loop thread's copy into a buffer is saved, the send's copy into the
 * socket is the only one.  The mapping's bytes stay the volume's only
 * inside a read-side section, so the event that made such replies holds
 * one, and before it returns (conn_settle) copies whatever the socket did
 * not take into the request's buffer and closes it.  Not over TLS (the
 * library reads the bytes itself, where a device error could not be
 * caught). */

static uint64_t mono_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

struct view_reply {
	struct conn_req *q;
	uint64_t verified; /* when the blocks had verified (the view's cost ends) */
};

static int view_reply(void *arg)
{
	struct view_reply *a = arg;
	struct conn_req *q = a->q;
	a->verified = mono_ns();
	/* Structured replies look for zero blocks: that reads the bytes. */
	proto_reply_read_pieces(&q->out, q->sr.off, q->view, q->nview, q->sr.len);
	return 0;
}

/* a's cost per byte against b's: ns[a] / bytes[a] <= ns[b] / bytes[b]. */
static bool way_cheaper(const struct conn_ways *w, unsigned a, unsigned b)
{
	return w->ns[a] * w->bytes[b] <= w->ns[b] * w->bytes[a];
}

unsigned conn_way_pick(struct conn_ways *w)
{
	w->n++;
	if (!w->samples[CONN_WAY_VIEW])
		return CONN_WAY_VIEW;
	if (!w->samples[CONN_WAY_COPY])
		return CONN_WAY_COPY;
	unsigned best =
	    way_cheaper(w, CONN_WAY_VIEW, CONN_WAY_COPY) ? CONN_WAY_VIEW : CONN_WAY_COPY;
	return w->n % CONN_WAY_PROBE ? best : !best;
}

/* A sample is capped to 1/DECAY s and 256 MiB / DECAY; a decayed sum stays
 * below DECAY times that (a second, 256 MiB): the products here and in
 * way_cheaper fit in 64 bits.  Once a way has a figure, a sample counts
 * for at most twice what the figure expects of its bytes (plus
 * CONN_WAY_SLACK_NS): a READ the
 * scheduler cut into (the client shares the CPUs) moves the figure by a
 * quarter, not by however long the thread waited, while a real change
 * comes through in a few samples. */
void conn_way_note(struct conn_ways *w, unsigned way, uint64_t ns, uint64_t bytes)
{
	if (ns > 1000000000u / CONN_WAY_DECAY)
		ns = 1000000000u / CONN_WAY_DECAY;
	if (bytes > (1u << 28) / CONN_WAY_DECAY)
		bytes = (1u << 28) / CONN_WAY_DECAY;
	if (w->samples[way] >= CONN_WAY_DECAY && w->bytes[way]) {
		/* The slack: a figure of 0 (a coarse clock) can still rise. */
		uint64_t cap = 2 * w->ns[way] * bytes / w->bytes[way] + CONN_WAY_SLACK_NS;
		if (ns > cap)
			ns = cap;
	}
	w->ns[way] += ns - w->ns[way] / CONN_WAY_DECAY;
	w->bytes[way] += bytes - w->bytes[way] / CONN_WAY_DECAY;
	if (w->samples[way] < UINT32_MAX)
		w->samples[way]++;
}

void conn_way_declined(struct conn_ways *w, uint64_t ns, uint64_t bytes)
{
	uint64_t copy = 0;
	if (w->bytes[CONN_WAY_COPY])
		copy = w->ns[CONN_WAY_COPY] * (bytes < (1u << 28) ? bytes : 1u << 28) /
		       w->bytes[CONN_WAY_COPY];
	conn_way_note(w, CONN_WAY_VIEW, ns + copy, bytes);
}

/* Answer q from a view if it can be; false: read it another way.  t0:
 * when the READ's way was taken (the view's sample runs from there). */
static bool conn_view(struct conn *c, struct conn_req *q, uint64_t t0)
{
	if (!c->view_lock) {
		store_read_lock();
		c->view_lock = true;
	}
	/* A reply whose bytes went while it was made (a guard fault) is
	 * not answered or counted: a read says why. */
	struct view_reply a = {.q = q};
	if (!store_read_view(&q->sr, q->view, PROTO_READ_PIECES, &q->nview, view_reply, &a))
		return false;
	if (q->sr.err) {
		req_finish(c, q);
		return true;
	}
	conn_way_note(&c->lp->ways, CONN_WAY_VIEW, a.verified - t0, q->sr.len);
	c->views++;
	reply_queue(c, q);
	return true;
}

/* Copy the part of view reply q not sent yet into q->buf, where the
 * reply's iovecs then point. */
static int view_copy(void *arg)
{
	struct conn_req *q = arg;
	size_t at = 0; /* reply bytes before iov[i] */

	for (unsigned i = 0; i < q->out.niov; i++) {
		struct iovec *io = &q->out.iov[i];
		const uint8_t *b = io->iov_base;
		size_t len = io->iov_len, data = 0; /* data bytes before piece j */

		for (unsigned j = 0; j < q->nview; j++) {
			const uint8_t *v = q->view[j].iov_base;
			if (b >= v && b < v + q->view[j].iov_len) {
				uint8_t *to = q->buf + data + (size_t)(b - v);
				size_t skip = q->sent > at ? q->sent - at : 0;
				if (skip < len)
					memcpy(to + skip, b + skip, len - skip);
				io->iov_base = to;
				break;
			}
			data += q->view[j].iov_len;
		}
		at += len;
	}
	return 0;
}

/* The end of an event: no reply points into a view any more, and the
 * read-side section is closed. */
static void conn_views_end(struct conn *c)
{
	if (c->views) {
		for (struct conn_req *q = c->rq_head; q; q = q->next) {
			if (!q->nview)
				continue;
			if (!c->dead && store_view_guard(view_copy, q)) {
				say_error("%s: the pool could not be read while a reply was sent; "
				          "disconnecting",
				          c->peer);
				conn_why(c, "pool read error mid-reply");
				c->dead = true;
			}
			q->nview = 0;
		}
		c->views = 0;
	}
	if (c->view_lock) {
		store_read_unlock();
		c->view_lock = false;
	}
}

/* Act on one validated request whose header has been consumed.  Returns
 * false when parsing must pause (payload still arriving). */
static bool conn_request(struct conn *c, struct proto_req *r)
{
	size_t avail;
	uint32_t need;
	struct conn_req *q;

	c->nreq++;
	if (r->bs_payload) {
		/* A BLOCK_STATUS's context list: small, and in rbuf already. */
		size_t n = r->payload;

		proto_request_payload(&c->proto, r, c->rbuf + c->rstart);
		c->rstart += n;
	}
	avail = c->rend - c->rstart;
	need = r->op == STORE_READ || r->op == STORE_WRITE ? (uint32_t)r->length : 0;

	if (r->error || r->noop) {
		if (r->payload) {
			/* Answer a rejected WRITE only once its payload is read:
			 * a client still sending it would get a reply for a
			 * request it has not finished (libnbd drops the
			 * connection then). */
			c->drain = r->payload;
			c->drain_reply = *r;
			c->drain_reply_due = true;
		} else {
			reply_now(c, r, 0);
		}
		return true;
	}
	if (r->block_status) {
		conn_block_status(c, r);
		return true;
	}
	q = req_get(c, need);
	if (!q) {
		say_warn("%s: out of memory for a %u-byte request", c->peer, need);
		c->drain_reply = *r;
		c->drain_reply.error = -ENOMEM;
		if (r->payload) {
			c->drain = r->payload;
			c->drain_reply_due = true;
		} else {
			reply_now(c, &c->drain_reply, 0);
		}
		return true;
	}
	c->reqs++;
	q->held = need;
	c->bytes += need;
	proto_reply_init(&q->out, r);
	memset(&q->sr, 0, sizeof(q->sr));
	q->sr.op = r->op;
	q->sr.flags = r->store_flags;
	q->sr.off = r->offset;
	q->sr.buf = q->buf;
	q->end = r->offset + r->length;
	q->sr.len = r->length < STORE_MAX_REQ ? (uint32_t)r->length : STORE_MAX_REQ;
	if (r->op == STORE_READ || r->op == STORE_WRITE)
		atomic_fetch_add_explicit(r->op == STORE_READ ? &c->bytes_read : &c->bytes_written,
		                          r->length, memory_order_relaxed);
	if (r->op == STORE_WRITE) {
		uint32_t have = avail < need ? (uint32_t)avail : need;

		memcpy(q->buf, c->rbuf + c->rstart, have);
		c->rstart += have;
		if (have < need) {
			c->rx = q;
			c->rx_got = have;
			return false;
		}
	}
	if (r->op == STORE_READ && r->length <= CONN_TRY_MAX) {
		/* Page-cache hits and holes are served right here: no thread
		 * hand-off, no wake-up, the reply goes out with this batch. */
		q->sr.vol = c->proto.exp.handle;
		int mode = atomic_load_explicit(&c->srv->read_views, memory_order_relaxed);
		bool large = r->length >= CONN_VIEW_MIN && !c->tls && mode != CONN_READ_VIEWS_OFF;
		unsigned way = !large                       ? CONN_WAY_COPY
		               : mode == CONN_READ_VIEWS_ON ? CONN_WAY_VIEW
		                                            : conn_way_pick(&c->lp->ways);
		uint64_t t0 = large ? mono_ns() : 0;
		if (way == CONN_WAY_VIEW && conn_view(c, q, t0))
			return true;
		/* A view declined (a hole, a block not in memory, a pool
		 * with no mapping) was paid for and is read another way: the
		 * view way's sample is both. */
		uint64_t t1 = large && way == CONN_WAY_VIEW ? mono_ns() : t0;
		if (store_read_try(&q->sr)) {
			if (large && !q->sr.err)
				conn_way_note(&c->lp->ways, way, mono_ns() - t0, q->sr.len);
			req_finish(c, q);
			return true;
		}
		if (large && way == CONN_WAY_VIEW)
			conn_way_declined(&c->lp->ways, t1 - t0, r->length);
	}
	req_submit(c, q);
	return true;
}

/* Consume what rbuf holds, as far as backpressure allows. */
static void conn_parse(struct conn *c)
{
	while (!c->dead && !c->draining && !c->rx) {
		size_t avail = c->rend - c->rstart;
		const uint8_t *p = c->rbuf + c->rstart;

		if (c->drain) {
			size_t k = avail < c->drain ? avail : (size_t)c->drain;

			c->rstart += k;
			c->drain -= k;
			if (c->drain)
				break;
			if (c->drain_reply_due) {
				c->drain_reply_due = false;
				reply_now(c, &c->drain_reply, 0);
			}
			continue;
		}
		if (c->paused)
			break; /* handover: what is left stays in rbuf */
		if (c->proto.phase != PROTO_TRANSMISSION) {
			ssize_t n = proto_handshake(&c->proto, p, avail, &c->hout);

			if (n < 0) {
				/* A refused export (NBD_OPT_EXPORT_NAME) was logged
				 * with its reason by the export table already. */
				if (n != -ENOENT)
					say_info("%s: handshake failed: %s", c->peer,
					         n == -EACCES ? "TLS is required"
					                      : strerror((int)-n));
				conn_why(c, n == -ENOENT ? "export refused" : "handshake failed");
				c->dead = true;
				break;
			}
			c->rstart += (size_t)n;
			if (c->proto.refused[0]) {
				say_info("%s: %s", c->peer, c->proto.refused);
				c->proto.refused[0] = '\0';
			}
			if (c->proto.phase == PROTO_STARTTLS) {
				/* Plaintext behind STARTTLS would be taken as if
				 * it came through TLS (injection): refuse it. */
				if (c->rend > c->rstart) {
					say_info("%s: data after NBD_OPT_STARTTLS, "
					         "disconnecting",
					         c->peer);
					c->dead = true;
				}
				break; /* conn_settle runs the handshake */
			}
			if (c->proto.phase == PROTO_CLOSE) {
				conn_why(c, "client ended the handshake");
				c->draining = true;
				break;
			}
			if (c->proto.phase == PROTO_TRANSMISSION) {
				pthread_mutex_lock(&c->srv->list_lock);
				snprintf(c->export, sizeof(c->export), "%s",
				         store_vol_name(c->proto.exp.handle));
				c->tls_on = c->tls != NULL;
				pthread_mutex_unlock(&c->srv->list_lock);
				say_info("%s: serving %s (%s, %s) with %s", c->peer, c->export,
				         c->proto.exp.read_only ? "read-only" : "read-write",
				         c->tls ? "TLS" : "plaintext",
				         c->proto.extended     ? "extended headers"
				         : c->proto.structured ? "structured replies"
				                               : "simple replies");
				conn_arm_idle(c);
				continue;
			}
			break; /* need more */
		}
		if (!conn_can_accept(c))
			break;

		struct proto_req r;
		int n = proto_request(&c->proto, p, avail, &r);

		if (n == 0)
			break;
		if (n < 0) {
			say_info("%s: %s, disconnecting", c->peer,
			         n == -E2BIG ? "request payload over the maximum"
			                     : "bad request magic (or header style)");
			conn_why(c, "bad request");
			/* Nothing after it can be framed, but every request
			 * before it was: those are answered in full (a reply
			 * already half sent must not be cut off), then the
			 * connection closes, as after NBD_CMD_DISC. */
			c->draining = true;
			break;
		}
		c->rx_hdr_only = r.op == STORE_WRITE && r.payload > CONN_SMALL_WRITE && !r.error;
		/* A small payload (a WRITE, a BLOCK_STATUS's context list) is
		 * parsed only once all of it is in rbuf. */
		if (r.payload && r.payload <= CONN_SMALL_WRITE && avail < (size_t)n + r.payload &&
		    !r.error)
			break;
		c->rstart += (size_t)n;
		if (r.disc) {
			conn_why(c, "client sent NBD_CMD_DISC");
			c->draining = true;
			break;
		}
		if (!conn_request(c, &r))
			break;
	}
	if (c->rstart == c->rend)
		c->rstart = c->rend = 0;
}

/* ---- socket I/O ----------------------------------------------------- */

/* How much the next recv() into rbuf may take: all the room, or after a
 * large WRITE the rest of one request header (a 1 MiB payload copied out
 * of rbuf would cost as much as receiving it again). */
static size_t rbuf_room(const struct conn *c)
{
	size_t room = CONN_RBUF_SIZE - c->rend;
	size_t hdr =
	    c->proto.extended ? sizeof(struct nbd_extended_header) : sizeof(struct nbd_request);
	size_t have = c->rend - c->rstart;

	if (c->rx_hdr_only && have < hdr && hdr - have < room)
		return hdr - have;
	return room;
}

static void conn_read(struct conn *c)
{
	/* During STARTTLS the socket belongs to the TLS handshake (conn_settle). */
	for (int rounds = 0;
	     rounds < 8 && !c->dead && !c->draining && c->proto.phase != PROTO_STARTTLS &&
	     !(c->paused && !c->rx && !c->drain);
	     rounds++) {
		ssize_t n;

		if (c->rx) {
			struct conn_req *q = c->rx;
			uint32_t want = q->sr.len - c->rx_got;

			n = conn_sock_recv(c, q->buf + c->rx_got, want);
			if (n > 0) {
				c->last_active = ev_now(c->lp->loop);
				c->rx_got += (uint32_t)n;
				if (c->rx_got == q->sr.len) {
					c->rx = NULL;
					req_submit(c, q);
					conn_parse(c);
				}
				continue;
			}
		} else {
			if (!conn_can_accept(c))
				break;
			if (c->rstart) {
				memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
				c->rend -= c->rstart;
				c->rstart = 0;
			}
			if (c->rend == CONN_RBUF_SIZE)
				break; /* cannot happen: parse always frees room */
			size_t room = rbuf_room(c);
			n = conn_sock_recv(c, c->rbuf + c->rend, room);
			if (n > 0) {
				c->last_active = ev_now(c->lp->loop);
				c->rend += (size_t)n;
				conn_parse(c);
				if ((size_t)n < room / 2)
					break; /* the socket is probably empty */
				continue;
			}
		}
		if (n == 0) {
			/* Client closed its side: finish what it asked for. */
			if (c->rx || c->drain || c->proto.phase != PROTO_TRANSMISSION) {
				conn_why(c, "client vanished mid-message");
				c->dead = true;
			}
			conn_why(c, "client closed the connection");
			c->draining = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			say_debug("%s: recv: %s", c->peer, strerror(errno));
			conn_why(c, "receive error");
			c->dead = true;
		}
		break;
	}
}

/* Send handshake output and queued replies until done or EAGAIN. */
static void conn_write(struct conn *c)
{
	while (!c->dead) {
		struct iovec iov[CONN_IOV];
		struct msghdr m = {.msg_iov = iov};
		int n = 0;
		ssize_t w;

		if (c->hout_sent < c->hout.len) {
			iov[n].iov_base = c->hout.data + c->hout_sent;
			iov[n++].iov_len = c->hout.len - c->hout_sent;
		}
		for (struct conn_req *q = c->rq_head; q && n < CONN_IOV; q = q->next) {
			size_t skip = q->sent;

			const struct iovec *qi = q->out.iov;

			for (unsigned i = 0; i < q->out.niov && n < CONN_IOV; i++) {
				if (skip >= qi[i].iov_len) {
					skip -= qi[i].iov_len;
					continue;
				}
				iov[n].iov_base = (uint8_t *)qi[i].iov_base + skip;
				iov[n++].iov_len = qi[i].iov_len - skip;
				skip = 0;
			}
		}
		if (n == 0)
			break;
		m.msg_iovlen = (size_t)n;
		w = conn_sock_send(c, &m);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				say_debug("%s: send: %s", c->peer, strerror(errno));
				c->dead = true;
			}
			break;
		}
		size_t left = (size_t)w;

		c->last_active = ev_now(c->lp->loop);

		if (c->hout_sent < c->hout.len) {
			size_t k = c->hout.len - c->hout_sent;

			k = k < left ? k : left;
			c->hout_sent += k;
			left -= k;
			if (c->hout_sent == c->hout.len)
				c->hout.len = c->hout_sent = 0;
		}
		while (left && c->rq_head) {
			struct conn_req *q = c->rq_head;
			size_t k = q->out.len - q->sent;

			if (left < k) {
				q->sent += (uint32_t)left;
				break;
			}
			left -= k;
			c->rq_head = q->next;
			if (!c->rq_head)
				c->rq_tail = NULL;
			c->reqs--;
			req_put(c, q);
		}
	}
}

static bool conn_output_pending(const struct conn *c)
{
	return c->rq_head || c->hout_sent < c->hout.len;
}

static void conn_free(struct conn *c)
{
	struct conn_server *s = c->srv;
	struct conn_req *q;

	while ((q = c->free)) {
		c->free = q->next;
		buf_free(q->buf, q->bufcap);
		free(q);
	}
	proto_fini(&c->proto);
	proto_buf_free(&c->hout);
	free(c->rbuf);
	pthread_mutex_lock(&s->list_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->lprev)
		c->lprev->lnext = c->lnext;
	else
		c->lp->conns = c->lnext;
	if (c->lnext)
		c->lnext->lprev = c->lprev;
	c->lp->nconns--;
	pthread_mutex_unlock(&s->list_lock);
	atomic_fetch_sub(&c->lp->assigned, 1);
	say_info("%s: closed (%s%s%llu requests; %s)", c->peer, c->export, c->export[0] ? ", " : "",
	         (unsigned long long)c->nreq, c->why ? c->why : "connection lost");
	say_debug("%s: %llu bytes read, %llu written", c->peer,
	          (unsigned long long)atomic_load(&c->bytes_read),
	          (unsigned long long)atomic_load(&c->bytes_written));
	free(c);
	conn_server_uncount(s);
}

/* Close the socket and drop everything not owned by the store. */
static void conn_kill(struct conn *c)
{
	struct conn_req *q;

	c->dead = true;
	c->draining = true;
	if (c->fd >= 0) {
		ev_io_stop(c->lp->loop, &c->rio);
		ev_io_stop(c->lp->loop, &c->wio);
		ev_timer_stop(c->lp->loop, &c->tmo);
		tls_session_free(c->tls);
		c->tls = NULL;
		close(c->fd);
		c->fd = -1;
	}
	while ((q = c->rq_head)) {
		c->rq_head = q->next;
		c->reqs--;
		req_put(c, q);
	}
	c->rq_tail = NULL;
	if (c->rx) {
		c->reqs--;
		req_put(c, c->rx);
		c->rx = NULL;
	}
}

/* A graceful close: the replies just sent may still sit in the kernel's
 * send queue, and close() on a socket with unread input sends a RST that
 * throws them away.  So send FIN first and discard what the client sent
 * after the point where we stopped reading (bounded: a client streaming
 * data forever still gets its RST). */
static void conn_close_gently(struct conn *c)
{
	if (c->tls)
		tls_bye(c->tls); /* close_notify, best effort */
	shutdown(c->fd, SHUT_WR);
	for (int i = 0; i < 16; i++) {
		ssize_t n = conn_sock_recv(c, c->rbuf, CONN_RBUF_SIZE);

		if (n <= 0 && !(n < 0 && errno == EINTR))
			break;
	}
}

/* NBD_OPT_STARTTLS was acknowledged: once the ACK is out (in plaintext),
 * start a TLS session and advance its handshake.  Returns true while the
 * handshake waits for the socket (the watchers are set for the direction
 * it needs; nothing is read as plaintext meanwhile); false when it is over:
 * failed (c->dead) or done, with option haggling resumed inside TLS. */
static bool conn_tls_step(struct conn *c)
{
	struct ev_loop *loop = c->lp->loop;
	char desc[128];
	int r;

	if (conn_output_pending(c)) {
		ev_io_stop(loop, &c->rio);
		ev_io_start(loop, &c->wio);
		return true;
	}
	if (!c->tls && !(c->tls = tls_session_new(c->srv->tls_creds, c->fd))) {
		say_warn("%s: cannot start TLS: %s", c->peer, strerror(errno));
		c->dead = true;
		return false;
	}
	r = tls_handshake(c->tls);
	if (r == -EAGAIN) {
		bool w = tls_want_write(c->tls);

		ev_io_stop(loop, w ? &c->rio : &c->wio);
		ev_io_start(loop, w ? &c->wio : &c->rio);
		return true;
	}
	if (r < 0) {
		say_info("%s: TLS handshake failed: %s", c->peer, tls_strerror(c->tls));
		conn_why(c, "TLS handshake failed");
		c->dead = true;
		return false;
	}
	proto_tls_started(&c->proto);
	say_info("%s: %s", c->peer, tls_describe(c->tls, desc, sizeof(desc)));
	conn_read(c); /* the first options may already be decrypted */
	conn_write(c);
	return false;
}

static void conn_settle_one(struct conn *c);

/* After any event: flush output, decide which watchers run, close or free
 * the connection when its time has come, hand the requests it parsed to
 * the store.  c may be freed on return. */
void conn_settle(struct conn *c)
{
	struct conn_loop *lp = c->lp; /* c may be freed */

	conn_settle_one(c);
	store_unplug(&lp->plug);
}

static void conn_settle_one(struct conn *c)
{
	struct ev_loop *loop = c->lp->loop;

	if (!c->dead) {
		conn_write(c);
		/* Replies went out: requests waiting in rbuf may go on now
		 * (the socket may have nothing new to wake us for them).  READs
		 * served on this thread answer at once, so keep going while
		 * that frees room; stop when a pass consumes nothing. */
		while (c->rend > c->rstart && !c->rx && !c->draining && !c->dead && !c->paused &&
		       c->proto.phase == PROTO_TRANSMISSION && conn_can_accept(c)) {
			size_t before = c->rstart;

			conn_parse(c);
			conn_write(c);
			if (c->rstart == before)
				break;
		}
	}
	conn_views_end(c);
	if (!c->dead && c->proto.phase == PROTO_STARTTLS && conn_tls_step(c))
		return;
	if (!c->dead && c->draining && !conn_output_pending(c) &&
	    (c->reqs == 0 || c->proto.phase != PROTO_TRANSMISSION)) {
		conn_close_gently(c); /* all answered */
		c->dead = true;
	}
	if (c->dead) {
		conn_kill(c);
		if (c->submitted == 0)
			conn_free(c);
		return;
	}
	if (conn_output_pending(c))
		ev_io_start(loop, &c->wio);
	else
		ev_io_stop(loop, &c->wio);
	if (!c->draining && (c->rx || (c->paused ? c->drain != 0 : conn_can_accept(c))))
		ev_io_start(loop, &c->rio);
	else
		ev_io_stop(loop, &c->rio);
	/* Bytes GnuTLS has already decrypted never make the socket readable. */
	if (c->tls && ev_is_active(&c->rio) && tls_pending(c->tls))
		ev_feed_event(loop, &c->rio, EV_READ);
}

/* Handshake deadline, then (when configured) the idle timeout: a
 * connection in transmission with nothing in flight and no byte moved for
 * idle_timeout seconds is closed like a DISC.  One timer does both, re-armed
 * lazily (activity only updates last_active). */
static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	struct conn_server *s = c->srv;
	ev_tstamp idle;

	if (c->dead || c->draining) {
		ev_timer_stop(loop, w); /* closing anyway */
		return;
	}
	if (c->proto.phase != PROTO_TRANSMISSION) {
		say_info("%s: handshake not finished within %.0f s, disconnecting", c->peer,
		         s->lim.handshake_timeout);
		conn_why(c, "handshake timeout");
		c->dead = true;
		conn_settle(c);
		return;
	}
	idle = ev_now(loop) - c->last_active;
	if (c->reqs || c->rx || idle < s->lim.idle_timeout) {
		w->repeat = c->reqs || c->rx ? s->lim.idle_timeout : s->lim.idle_timeout - idle;
		ev_timer_again(loop, w);
		return;
	}
	say_info("%s: idle for %.0f s, disconnecting", c->peer, idle);
	conn_why(c, "idle timeout");
	c->draining = true;
	conn_settle(c);
}

/* Leaving the handshake: stop its deadline, start the idle timeout. */
static void conn_arm_idle(struct conn *c)
{
	struct conn_server *s = c->srv;

	ev_timer_stop(c->lp->loop, &c->tmo);
	if (s->lim.idle_timeout > 0) {
		c->last_active = ev_now(c->lp->loop);
		c->tmo.repeat = s->lim.idle_timeout;
		ev_timer_again(c->lp->loop, &c->tmo);
	}
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	conn_read(c);
	conn_settle(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	conn_settle(c);
}

/* ---- a new connection ---------------------------------------------- */

/* ---- metadata contexts: proto's window on the store's status sources ---- */

static int meta_snapshots(void *ctx, void *handle, int (*emit)(void *, const char *), void *arg)
{
	return store_status_snapshots(handle, emit, arg);
}

static int meta_open(void *ctx, void *handle, const char *snap, void **src)
{
	struct store_status *s;
	int err = snap ? store_status_dirty(handle, snap, &s) : store_status_depth(handle, &s);

	if (!err)
		*src = s;
	return err;
}

static void meta_close(void *ctx, void *src)
{
	store_status_close(src);
}

static const struct proto_meta_ops conn_meta_ops = {
    .snapshots = meta_snapshots,
    .open = meta_open,
    .close = meta_close,
};

/* A new c on lp for fd: its protocol state, its peer's name. */
static void conn_init(struct conn_loop *lp, struct conn *c, int fd)
{
	struct conn_server *s = lp->srv;

	c->srv = s;
	c->lp = lp;
	c->fd = fd;
	sockets_peer_name(fd, c->peer, sizeof(c->peer));
	proto_init(&c->proto, &conn_server_export_ops, c);
	c->proto.tls_mode = s->tls_mode;
	c->proto.meta_ops = &conn_meta_ops;
}

/* Put c on the server's list of connections. */
static void conn_link(struct conn *c)
{
	struct conn_server *s = c->srv;

	pthread_mutex_lock(&s->list_lock);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	c->lnext = c->lp->conns;
	if (c->lp->conns)
		c->lp->conns->lprev = c;
	c->lp->conns = c;
	c->lp->nconns++;
	pthread_mutex_unlock(&s->list_lock);
}

int conn_new(struct conn_loop *lp, int fd)
{
	struct conn_server *s = lp->srv;
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (!c || !(c->rbuf = malloc(CONN_RBUF_SIZE))) {
		say_warn("out of memory for a new connection");
		free(c);
		close(fd);
		return -ENOMEM;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on unix: fine */
	conn_init(lp, c, fd);
	ev_io_init(&c->rio, on_readable, fd, EV_READ);
	ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
	ev_init(&c->tmo, on_timeout);
	c->rio.data = c->wio.data = c->tmo.data = c;
	c->last_active = ev_now(lp->loop);
	if (s->lim.handshake_timeout > 0) {
		c->tmo.repeat = s->lim.handshake_timeout;
		ev_timer_again(lp->loop, &c->tmo);
	}
	c->since = (uint64_t)time(NULL);
	conn_link(c);
	say_info("%s: connected", c->peer);
	if (proto_greet(&c->proto, &c->hout))
		c->dead = true;
	conn_settle(c);
	return 0;
}

/* ---- the server stopping ------------------------------------------------ */

void conn_stop(struct conn *c)
{
	conn_why(c, "server stopping");
	c->draining = true;
	if (c->proto.phase != PROTO_TRANSMISSION)
		c->dead = true;
	if (c->rx) { /* half-received WRITE: never acknowledged, drop it */
		c->reqs--;
		req_put(c, c->rx);
		c->rx = NULL;
	}
	conn_settle(c);
}

void conn_cut(struct conn *c)
{
	conn_why(c, "cut off after the stop grace period");
	if (!c->dead) {
		c->dead = true;
		conn_settle(c);
	}
}

/* ---- handover ------------------------------------------------------------ */

void conn_pause(struct conn *c, bool on)
{
	c->paused = on;
	if (!on)
		conn_parse(c); /* what came in meanwhile; the socket may stay silent */
	conn_settle(c);
}

bool conn_quiet(const struct conn *c)
{
	enum proto_phase ph = c->proto.phase;

	/* In the middle of STARTTLS it will be closed (conn_detach): quiet. */
	return c->paused && !c->dead && !c->draining && !c->rx && !c->drain &&
	       !c->drain_reply_due && c->reqs == 0 && c->submitted == 0 &&
	       (!conn_output_pending(c) || ph == PROTO_STARTTLS) &&
	       (ph == PROTO_CLIENT_FLAGS || ph == PROTO_OPTIONS || ph == PROTO_TRANSMISSION ||
	        ph == PROTO_STARTTLS);
}

int conn_detach(struct conn *c, struct conn_state *out, int *fd)
{
	size_t n = c->rend - c->rstart;

	if (c->tls || c->proto.phase == PROTO_STARTTLS) {
		/* GnuTLS cannot hand a live session's record state to another
		 * process: end it cleanly, the client reconnects. */
		say_warn("%s: a TLS session cannot be handed over: closing it", c->peer);
		conn_why(c, "TLS session closed for the handover");
		conn_close_gently(c);
		c->dead = true;
		conn_settle(c);
		return -EPROTONOSUPPORT;
	}
	memset(out, 0, sizeof(*out));
	if (n && !(out->buf = malloc(n)))
		return -ENOMEM;
	if (n)
		memcpy(out->buf, c->rbuf + c->rstart, n);
	out->nbuf = (uint32_t)n;
	proto_save(&c->proto, &out->proto);
	memcpy(out->export, c->export, sizeof(out->export));
	out->since = c->since;
	out->nreq = c->nreq;
	out->bytes_read = atomic_load(&c->bytes_read);
	out->bytes_written = atomic_load(&c->bytes_written);
	ev_io_stop(c->lp->loop, &c->rio);
	ev_io_stop(c->lp->loop, &c->wio);
	ev_timer_stop(c->lp->loop, &c->tmo);
	*fd = c->fd;
	c->fd = -1;
	c->dead = c->draining = true;
	conn_why(c, "handed over to the new process");
	conn_free(c);
	return 0;
}

int conn_restore(struct conn_loop *lp, int fd, const struct conn_state *st)
{
	struct conn_server *s = lp->srv;
	const struct proto_state *ps = &st->proto;
	bool meta = ps->meta_alloc || ps->meta_depth || ps->meta_dirty[0];
	struct conn *c = calloc(1, sizeof(*c));
	int err = -ENOMEM;

	if (st->nbuf > CONN_RBUF_SIZE)
		err = -EPROTO;
	if (!c || err == -EPROTO || !(c->rbuf = malloc(CONN_RBUF_SIZE)))
		goto fail;
	conn_init(lp, c, fd);
	err = proto_restore(&c->proto, meta ? ps->meta_name : st->export, ps);
	if (err) {
		say_warn("%s: cannot carry on with %s: %s", c->peer,
		         ps->phase == PROTO_TRANSMISSION ? st->export : "the handshake",
		         err == -ESTALE ? "the export is not what the client was told"
		                        : strerror(-err));
		goto fail;
	}
	if (st->nbuf)
		memcpy(c->rbuf, st->buf, st->nbuf);
	c->rend = st->nbuf;
	ev_io_init(&c->rio, on_readable, fd, EV_READ);
	ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
	ev_init(&c->tmo, on_timeout);
	c->rio.data = c->wio.data = c->tmo.data = c;
	c->since = st->since;
	c->nreq = st->nreq;
	atomic_store(&c->bytes_read, st->bytes_read);
	atomic_store(&c->bytes_written, st->bytes_written);
	c->paused = true;
	c->last_active = ev_now(lp->loop);
	if (c->proto.phase == PROTO_TRANSMISSION) {
		snprintf(c->export, sizeof(c->export), "%s", store_vol_name(c->proto.exp.handle));
		conn_arm_idle(c);
	} else if (s->lim.handshake_timeout > 0) {
		c->tmo.repeat = s->lim.handshake_timeout;
		ev_timer_again(lp->loop, &c->tmo);
	}
	conn_link(c);
	say_debug("%s: carried on (%s)", c->peer, c->export[0] ? c->export : "handshake");
	return 0;

fail:
	if (c) {
		proto_fini(&c->proto);
		free(c->rbuf);
	}
	free(c);
	close(fd);
	return err;
}
