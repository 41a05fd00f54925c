/* test_tree_away.c — the store's tree readers other than READ when tree
 * nodes are away (docs/METADATA.md, "Left for step 3"): no node read on
 * the event loop, none under vt.lock.
 *
 * A pool with a volume "v" (three tree levels), its snapshot "v@s", more
 * writes to v, and a clone "c" of v@s with writes of its own; each data
 * block written is in a model.  Before each check the log thread writes a
 * checkpoint and drops every clean node (tree_unload).  The pool's device
 * is a spy over an in-memory one: it counts reads, the reads made by the
 * test's own thread, and reads made while the reading thread holds
 * vt.lock (glibc's mutex names its owner).  Covered:
 *   - BLOCK_STATUS (store_bs) as the event loop asks it, not reading:
 *     -EAGAIN for base:allocation, qemu:dirty-bitmap:s and
 *     qemu:allocation-depth alike, and nothing read, on the device or in
 *     the node cache; the same request handed to a reader thread
 *     (store_bs_submit) reads there, not on the caller's thread, and
 *     answers as the model says, block by block; once loaded, the
 *     non-reading attempt answers the same;
 *   - the same through a connection (conn.c over a socketpair, a raw NBD
 *     client): base:allocation and qemu:dirty-bitmap:s in one request, no
 *     read on the event loop's thread, the reply as the model says;
 *   - the listing for NBD_OPT_LIST (store_list_names) reads nothing;
 *   - volume info and listing (store_info, store_list, a store_list_page
 *     with figures) and a scrub pass with every node away: the answers
 *     equal those given with every node in memory, nodes were read, and
 *     none while vt.lock was held; a page without figures reads nothing;
 *   - a volume rolled back or deleted while its info is being read without
 *     vt.lock (between two node reads): the info of the rolled-back state,
 *     -ENOENT for the deleted one, a listing without it; a volume whose
 *     root changes at every read (a snapshot and a write each time): -EIO
 *     after a bounded number of walks, from the info and the listing alike
 *     (never a listing that leaves it out).
 */
#undef NDEBUG
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <sys/socket.h>

#include "bytes.h"
#include "conn.h"
#include "diff.h"
#include "faultdev.h"
#include "nbd.h"
#include "store_int.h"
#include "testpool.h"
#include "tree.h"

#define NB   (3ull * FMT_FANOUT * FMT_FANOUT) /* blocks: three levels */
#define SIZE (NB * FMT_BLOCK)
#define STEP 10000 /* one leaf apart */
#define N    64

/* ---- the spy device --------------------------------------------------- */

struct spy {
	struct blkdev dev;
	struct faultdev *lower;
	struct store *st; /* set once open: whose vt.lock to watch */
	pid_t me;         /* the test's thread */
	atomic_long reads, reads_mine, reads_locked;
	/* Run once, on the test's thread, at its next read (a control
	 * operation while a walk is between two node reads). */
	void (*hook)(struct store *st);
	bool hooked;
};

static int spy_pread(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	struct spy *s = (struct spy *)d;
	struct store *st = __atomic_load_n(&s->st, __ATOMIC_ACQUIRE);
	pid_t tid = gettid();

	s->reads++;
	s->reads_mine += tid == s->me;
	if (tid == s->me && s->hook) {
		void (*hook)(struct store *) = s->hook;
		s->hook = NULL;
		hook(st);
		s->hooked = true;
	}
	if (st && __atomic_load_n(&st->vt.lock.__data.__owner, __ATOMIC_RELAXED) == tid)
		s->reads_locked++;
	return blkdev_pread(&s->lower->dev, buf, len, off);
}

static int spy_pwritev(struct blkdev *d, const struct iovec *iov, int n, uint64_t off)
{
	return blkdev_pwritev(&((struct spy *)d)->lower->dev, iov, n, off);
}

static int spy_flush(struct blkdev *d)
{
	return blkdev_flush(&((struct spy *)d)->lower->dev);
}

static int spy_discard(struct blkdev *d, uint64_t off, uint64_t len)
{
	return blkdev_discard(&((struct spy *)d)->lower->dev, off, len);
}

static void spy_close(struct blkdev *d)
{
	/* the test frees it */
}

static const struct blkdev_ops spy_ops = {
    .pread = spy_pread,
    .pwritev = spy_pwritev,
    .flush = spy_flush,
    .discard = spy_discard,
    .close = spy_close,
};

/* ---- the pool and its model ------------------------------------------- */

static bool in_a(uint64_t lba) /* v before the snapshot */
{
	return lba % STEP == 0 && lba / STEP < N;
}

static bool in_b(uint64_t lba) /* v after it */
{
	uint64_t i = lba / STEP, r = lba % STEP;
	return i < N && ((r == 0 && i % 3 == 0) || (r == 5 && i % 4 == 0));
}

static bool in_c(uint64_t lba) /* the clone of v@s */
{
	uint64_t i = lba / STEP, r = lba % STEP;
	return i < N && ((r == 1 && i % 5 == 0) || (r == 0 && i % 7 == 0));
}

struct pool {
	struct spy spy;
	struct store *st;
	struct vol *v, *c;
};

static void write_where(struct vol *h, bool (*in)(uint64_t), uint8_t val)
{
	uint8_t buf[FMT_BLOCK];
	memset(buf, val, sizeof(buf));
	for (uint64_t i = 0; i < N; i++)
		for (uint64_t r = 0; r < 8; r++)
			if (in(i * STEP + r))
				assert_int_equal(
				    store_write(h, buf, (i * STEP + r) * FMT_BLOCK, FMT_BLOCK, 0),
				    0);
}

static void pool_open(struct pool *p)
{
	memset(p, 0, sizeof(*p));
	p->spy.lower = faultdev_new(128u << 20);
	p->spy.dev = (struct blkdev){.ops = &spy_ops, .size = p->spy.lower->dev.size, .fd = -1};
	p->spy.me = gettid();
	/* Nothing reads behind the test's back: no timed checkpoint, no
	 * idle compaction (its relocation walk would load nodes). */
	struct store_opts opts = {.checkpoint_secs = 3600, .checkpoint_bytes = 1ull << 40};
	p->st = testpool_volume(&p->spy.dev, &opts, "v", SIZE, &p->v);
	space_pause_idle(p->st, true);
	assert_int_equal(store_ping(p->st), 0); /* outlasts a pass under way */
	store_thread_register();
	write_where(p->v, in_a, 1);
	assert_int_equal(store_snap_create(p->st, "v@s"), 0);
	write_where(p->v, in_b, 2);
	assert_int_equal(store_clone(p->st, "v@s", "c"), 0);
	assert_int_equal(store_vol_open(p->st, "c", &p->c), 0);
	write_where(p->c, in_c, 3);
	__atomic_store_n(&p->spy.st, p->st, __ATOMIC_RELEASE);
}

static void pool_close(struct pool *p)
{
	space_pause_idle(p->st, false);
	store_vol_close(p->c);
	store_vol_close(p->v);
	store_thread_unregister();
	store_close(p->st);
	faultdev_free(p->spy.lower);
}

/* A job on the log thread: checkpoint (unless asked not to), then drop
 * every clean node. */
struct unload_job {
	struct store_req req; /* first: the job gets it back */
	struct store *st;
	bool no_ckpt; /* for a caller inside an RCU read-side section, which a
	               * checkpoint waits out (synchronize_rcu) */
};

static int unload_run(struct store_req *r)
{
	struct unload_job *j = (struct unload_job *)r;
	unsigned n;
	int err = j->no_ckpt ? 0 : ckpt_write(j->st);
	struct tree **trees = err ? NULL : vtab_trees(j->st, &n);
	if (!trees)
		return err ? err : -ENOMEM;
	tree_unload(trees, n);
	free(trees);
	return 0;
}

static void unload_submit(struct store_req *r)
{
	writer_enqueue(((struct unload_job *)r)->st, r);
}

static void unload_as(struct pool *p, bool ckpt)
{
	struct unload_job j = {.req = {.job = unload_run}, .st = p->st, .no_ckpt = !ckpt};
	assert_int_equal(core_submit_wait(&j.req, unload_submit), 0);
}

static void unload(struct pool *p)
{
	unload_as(p, true);
}

static uint64_t loads(struct pool *p)
{
	struct tree_cache_stats cs;
	tree_cache_stats(p->st->nc, &cs);
	return cs.loads;
}

/* ---- BLOCK_STATUS ----------------------------------------------------- */

enum ctx { ALLOC, DIRTY, DEPTH };

/* What the model says block lba of the context's export holds. */
static uint32_t model(enum ctx k, uint64_t lba)
{
	switch (k) {
	case ALLOC: /* v: 1 mapped */
		return in_a(lba) || in_b(lba);
	case DIRTY: /* v against v@s: 1 written since */
		return in_b(lba);
	case DEPTH: /* c: 1 its own, 2 from v@s, 0 a hole */
		return in_c(lba) ? 1 : in_a(lba) ? 2 : 0;
	}
	return UINT32_MAX;
}

struct answer {
	struct store_bs bs;
	struct store_extent ext[4096];
	struct store_run runs[4096];
};

/* The question for context k over the whole export, from src. */
static void ask(struct answer *a, enum ctx k, struct store_status *src)
{
	a->bs = (struct store_bs){.off = 0, .len = SIZE, .max = 4096};
	if (k == ALLOC) {
		a->bs.alloc = a->ext;
	} else if (k == DIRTY) {
		a->bs.dirty = src;
		a->bs.dirty_runs = a->runs;
	} else {
		a->bs.depth = src;
		a->bs.depth_runs = a->runs;
	}
}

/* The answer covers the export and says what the model does, per block. */
static void expect_model(const struct answer *a, enum ctx k)
{
	unsigned n = k == ALLOC ? a->bs.nalloc : k == DIRTY ? a->bs.ndirty : a->bs.ndepth;
	uint64_t lba = 0;
	assert_true(n > 0);
	for (unsigned i = 0; i < n; i++) {
		uint64_t len = k == ALLOC ? a->ext[i].len : a->runs[i].len;
		uint32_t val = k == ALLOC ? !a->ext[i].hole : a->runs[i].value;
		assert_int_equal(len % FMT_BLOCK, 0);
		for (uint64_t end = lba + len / FMT_BLOCK; lba < end; lba++)
			if (model(k, lba) != val)
				fail_msg("context %d block %llu: %u, model %u", (int)k,
				         (unsigned long long)lba, val, model(k, lba));
	}
	assert_int_equal(lba, NB);
}

static void test_block_status_away(void **state)
{
	struct pool p;
	struct store_status *dirty, *depth;
	struct answer *a = malloc(sizeof(*a));
	struct vol *exp[] = {NULL, NULL, NULL};

	pool_open(&p);
	assert_int_equal(store_status_dirty(p.v, "s", &dirty), 0);
	assert_int_equal(store_status_depth(p.c, &depth), 0);
	struct store_status *src[] = {NULL, dirty, depth};
	exp[ALLOC] = exp[DIRTY] = p.v;
	exp[DEPTH] = p.c;
	unload(&p);
	/* The event loop's attempt: every context meets a node away. */
	long reads = p.spy.reads;
	uint64_t l0 = loads(&p);
	for (enum ctx k = ALLOC; k <= DEPTH; k++) {
		ask(a, k, src[k]);
		assert_int_equal(store_bs(exp[k], &a->bs, true), -EAGAIN);
	}
	assert_int_equal(p.spy.reads, reads);
	assert_int_equal(loads(&p), l0);
	/* A reader thread answers, reading. */
	for (enum ctx k = ALLOC; k <= DEPTH; k++) {
		long mine = p.spy.reads_mine;
		uint64_t before = loads(&p);
		ask(a, k, src[k]);
		struct store_req r = {.vol = exp[k], .buf = &a->bs};
		assert_int_equal(core_submit_wait(&r, store_bs_submit), 0);
		assert_true(loads(&p) > before);
		assert_int_equal(p.spy.reads_mine, mine);
		expect_model(a, k);
		/* Loaded: the event loop answers it now, the same. */
		ask(a, k, src[k]);
		assert_int_equal(store_bs(exp[k], &a->bs, true), 0);
		expect_model(a, k);
	}
	store_status_close(dirty);
	store_status_close(depth);
	pool_close(&p);
	free(a);
}

/* ---- BLOCK_STATUS through a connection ----------------------------------- */

static void put_opt(struct bytes *w, uint32_t opt, const struct bytes *data)
{
	bytes_put64(w, NBD_OPT_MAGIC);
	bytes_put32(w, opt);
	bytes_put32(w, (uint32_t)data->n);
	bytes_put(w, data->d, data->n);
}

static void put_str(struct bytes *w, const char *str)
{
	bytes_put32(w, (uint32_t)strlen(str));
	bytes_put(w, str, strlen(str));
}

/* What a client sends: the export list, structured replies, the two
 * contexts, GO on "v", one BLOCK_STATUS of the whole export (handle 7). */
static void client_bytes(struct bytes *w)
{
	struct bytes meta = {0}, go = {0}, none = {0};
	put_str(&meta, "v");
	bytes_put32(&meta, 2);
	put_str(&meta, "base:allocation");
	put_str(&meta, "qemu:dirty-bitmap:s");
	put_str(&go, "v");
	bytes_put16(&go, 0);
	bytes_put32(w, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	put_opt(w, NBD_OPT_LIST, &none);
	put_opt(w, NBD_OPT_STRUCTURED_REPLY, &none);
	put_opt(w, NBD_OPT_SET_META_CONTEXT, &meta);
	put_opt(w, NBD_OPT_GO, &go);
	bytes_put32(w, NBD_REQUEST_MAGIC);
	bytes_put16(w, 0);
	bytes_put16(w, NBD_CMD_BLOCK_STATUS);
	bytes_put64(w, 7);
	bytes_put64(w, 0);
	bytes_put32(w, (uint32_t)SIZE);
}

/* The server's bytes so far in b[0, n): the BLOCK_STATUS chunks checked
 * against the model once the last (DONE) is in.  True when it is. */
static bool server_bytes_done(const uint8_t *b, size_t n, unsigned *chunks)
{
	uint32_t ctx_alloc = UINT32_MAX, ctx_dirty = UINT32_MAX;
	size_t at = 18; /* the greeting */
	bool transmission = false;

	while (!transmission) { /* option replies, up to GO's ACK */
		if (n < at + 20)
			return false;
		uint32_t opt = bytes_be32(b + at + 8), type = bytes_be32(b + at + 12);
		uint32_t len = bytes_be32(b + at + 16);
		assert_int_equal(bytes_be64(b + at), NBD_REP_MAGIC);
		if (n < at + 20 + len)
			return false;
		if (type == NBD_REP_META_CONTEXT) {
			bool dirty = len > 4 && b[at + 24] == 'q';
			*(dirty ? &ctx_dirty : &ctx_alloc) = bytes_be32(b + at + 20);
		}
		assert_true(type < (1u << 31)); /* no error */
		transmission = opt == NBD_OPT_GO && type == NBD_REP_ACK;
		at += 20 + len;
	}
	for (;;) { /* structured reply chunks */
		if (n < at + 20 || n < at + 20 + bytes_be32(b + at + 16))
			return false;
		uint16_t flags = bytes_be16(b + at + 4), type = bytes_be16(b + at + 6);
		uint32_t len = bytes_be32(b + at + 16);
		assert_int_equal(bytes_be32(b + at), NBD_STRUCTURED_REPLY_MAGIC);
		assert_int_equal(type, NBD_REPLY_TYPE_BLOCK_STATUS);
		assert_int_equal(bytes_be64(b + at + 8), 7);
		uint32_t id = bytes_be32(b + at + 20);
		assert_true(id == ctx_alloc || id == ctx_dirty);
		uint64_t lba = 0;
		for (uint32_t k = 4; k < len; k += 8) {
			uint32_t elen = bytes_be32(b + at + 20 + k),
			         st = bytes_be32(b + at + 24 + k);
			uint32_t val =
			    id == ctx_alloc ? !(st & NBD_STATE_HOLE) : st & NBD_STATE_DIRTY;
			for (uint64_t end = lba + elen / FMT_BLOCK; lba < end; lba++)
				if (model(id == ctx_alloc ? ALLOC : DIRTY, lba) != val)
					fail_msg("wire context %u block %llu: %u", id,
					         (unsigned long long)lba, val);
		}
		assert_int_equal(lba, NB);
		++*chunks;
		at += 20 + len;
		if (flags & NBD_REPLY_FLAG_DONE)
			return true;
	}
}

static void on_wire(struct ev_loop *l, ev_io *w, int revents)
{
	ev_break(l, EVBREAK_ONE); /* the test reads */
}

static void test_block_status_conn(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	static uint8_t in[1u << 20];
	struct bytes out = {0};
	unsigned chunks = 0;
	size_t n = 0;
	struct pool p;
	ev_io client;
	int sv[2];

	pool_open(&p);
	unload(&p);
	uint64_t l0 = loads(&p);
	long mine = p.spy.reads_mine;
	store_thread_unregister(); /* conn_server_new registers the loop's thread */
	struct conn_server *s = conn_server_new(loop, p.st);
	assert_non_null(s);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	assert_int_equal(conn_server_adopt(s, sv[0]), 0);
	client_bytes(&out);
	assert_int_equal(send(sv[1], out.d, out.n, 0), (ssize_t)out.n);
	ev_io_init(&client, on_wire, sv[1], EV_READ);
	ev_io_start(loop, &client);
	for (unsigned rounds = 0; !server_bytes_done(in, n, &chunks); rounds++) {
		assert_true(rounds < 10000);
		ev_run(loop, EVRUN_ONCE);
		ssize_t k = recv(sv[1], in + n, sizeof(in) - n, MSG_DONTWAIT);
		assert_true(k > 0 || (k < 0 && errno == EAGAIN));
		n += k > 0 ? (size_t)k : 0;
	}
	assert_int_equal(chunks, 2);
	assert_true(loads(&p) > l0);              /* nodes were read ... */
	assert_int_equal(p.spy.reads_mine, mine); /* ... but not on the loop's thread */
	ev_io_stop(loop, &client);
	close(sv[1]);
	while (conn_server_count(s))
		ev_run(loop, EVRUN_ONCE);
	conn_server_stop(s);
	conn_server_free(s);
	ev_loop_destroy(loop);
	store_thread_register();
	pool_close(&p);
}

/* ---- info, list, scrub ------------------------------------------------ */

static void scrub_wait(struct store *st, struct store_scrub_status *out)
{
	assert_int_equal(store_scrub_start(st, 1ull << 30), 0);
	do {
		usleep(1000);
		store_scrub_status(st, out, NULL, 0);
	} while (out->state == STORE_SCRUB_RUNNING);
	assert_int_equal(out->state, STORE_SCRUB_DONE);
}

static void test_info_scrub_away(void **state)
{
	static const char *const names[] = {"v", "v@s", "c"};
	struct store_vol_info want[3], got;
	struct store_scrub_status sw, sg;
	struct store_vol_info *list;
	size_t n;
	struct pool p;

	pool_open(&p);
	/* Every node in memory: the answers to give. */
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(store_info(p.st, names[i], &want[i]), 0);
	assert_true(want[0].unique_blocks > 0 && want[2].unique_blocks > 0);
	scrub_wait(p.st, &sw);
	assert_true(sw.blocks_checked > 0);

	unload(&p);
	uint64_t l0 = loads(&p);
	long reads = p.spy.reads;
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(store_info(p.st, names[i], &got), 0);
		assert_string_equal(got.name, want[i].name);
		assert_int_equal(got.mapped_blocks, want[i].mapped_blocks);
		assert_int_equal(got.unique_blocks, want[i].unique_blocks);
	}
	assert_true(loads(&p) > l0 && p.spy.reads > reads);
	assert_int_equal(p.spy.reads_locked, 0);

	unload(&p);
	l0 = loads(&p);
	reads = p.spy.reads;
	assert_int_equal(store_list_names(p.st, &list, &n), 0); /* the event loop's */
	assert_int_equal(n, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_string_equal(list[i].name, want[i].name);
		assert_int_equal(list[i].size, want[i].size);
	}
	free(list);
	assert_int_equal(loads(&p), l0);
	assert_int_equal(p.spy.reads, reads);
	assert_int_equal(store_list(p.st, &list, &n), 0);
	assert_int_equal(n, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_string_equal(list[i].name, want[i].name);
		assert_int_equal(list[i].mapped_blocks, want[i].mapped_blocks);
		assert_int_equal(list[i].unique_blocks, want[i].unique_blocks);
	}
	free(list);
	assert_true(loads(&p) > l0);
	assert_int_equal(p.spy.reads_locked, 0);

	/* a listing page: nothing read without figures; with them, unique as
	 * above, nodes read, none under vt.lock (v's walk drops it, c is
	 * found again after) */
	unload(&p);
	l0 = loads(&p);
	reads = p.spy.reads;
	struct store_vol_info page[2];
	struct store_list_req q = {.max = 2};
	bool more;
	assert_int_equal(store_list_page(p.st, &q, page, &n, &more), 0);
	assert_int_equal(n, 2);
	assert_int_equal(page[0].mapped_blocks, want[0].mapped_blocks);
	assert_int_equal(page[1].unique_blocks, 0);
	assert_true(loads(&p) == l0 && p.spy.reads == reads);
	q.flags = STORE_LIST_FIGURES;
	for (unsigned k = 0; k < 2; k++) { /* volumes, then snapshots */
		assert_int_equal(store_list_page(p.st, &q, page, &n, &more), 0);
		assert_int_equal(n, 2 - k);
		for (unsigned i = 0; i < n; i++) {
			const struct store_vol_info *w = &want[k ? 1 : 2 * i];
			assert_string_equal(page[i].name, w->name);
			assert_int_equal(page[i].unique_blocks, w->unique_blocks);
		}
		q.snapshots = true;
	}
	assert_true(loads(&p) > l0);
	assert_int_equal(p.spy.reads_locked, 0);

	unload(&p);
	l0 = loads(&p);
	scrub_wait(p.st, &sg);
	assert_int_equal(sg.blocks_checked, sw.blocks_checked);
	assert_int_equal(sg.blocks_walked, sw.blocks_walked);
	assert_int_equal(sg.damaged_blocks, 0);
	assert_true(loads(&p) > l0);
	assert_int_equal(p.spy.reads_locked, 0);
	pool_close(&p);
}

/* ---- changes while a walk reads ---------------------------------------- */

static void hook_rollback(struct store *st)
{
	assert_int_equal(store_rollback(st, "w@t"), 0);
}

static void hook_delete_w(struct store *st)
{
	assert_int_equal(store_vol_delete(st, "w"), 0);
}

static void hook_delete_x(struct store *st)
{
	assert_int_equal(store_vol_delete(st, "x"), 0);
}

static void test_info_changed_meanwhile(void **state)
{
	struct store_vol_info want, got, *list;
	struct vol *h;
	struct pool p;
	size_t n;

	pool_open(&p);
	assert_int_equal(store_vol_create(p.st, "w", SIZE), 0);
	assert_int_equal(store_vol_open(p.st, "w", &h), 0);
	write_where(h, in_a, 4);
	assert_int_equal(store_snap_create(p.st, "w@t"), 0);
	write_where(h, in_b, 5);
	store_vol_close(h);
	assert_int_equal(store_info(p.st, "w@t", &want), 0);
	assert_int_equal(store_info(p.st, "w", &got), 0);
	assert_true(got.mapped_blocks != want.mapped_blocks);

	/* Rolled back between two reads: walked again, from the new root. */
	unload(&p);
	p.spy.hook = hook_rollback;
	assert_int_equal(store_info(p.st, "w", &got), 0);
	assert_true(p.spy.hooked);
	assert_int_equal(got.mapped_blocks, want.mapped_blocks);
	assert_int_equal(got.unique_blocks, 0); /* all shared with w@t */

	/* Deleted: gone, not an answer about a freed tree. */
	assert_int_equal(store_vol_delete(p.st, "w@t"), 0);
	unload(&p);
	p.spy.hooked = false;
	p.spy.hook = hook_delete_w;
	assert_int_equal(store_info(p.st, "w", &got), -ENOENT);
	assert_true(p.spy.hooked);

	/* Deleted while the list reads its nodes (the others' are loaded
	 * first): left out, the others right. */
	assert_int_equal(store_vol_create(p.st, "x", SIZE), 0);
	assert_int_equal(store_vol_open(p.st, "x", &h), 0);
	write_where(h, in_c, 6);
	store_vol_close(h);
	unload(&p);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(store_info(p.st, (const char *[]){"v", "v@s", "c"}[i], &got), 0);
	p.spy.hooked = false;
	p.spy.hook = hook_delete_x;
	assert_int_equal(store_list(p.st, &list, &n), 0);
	assert_true(p.spy.hooked);
	assert_int_equal(n, 3);
	assert_string_equal(list[0].name, "v");
	assert_string_equal(list[1].name, "v@s");
	assert_string_equal(list[2].name, "c");
	free(list);
	assert_int_equal(p.spy.reads_locked, 0);
	pool_close(&p);
}

/* Each read of the test's thread: a new snapshot of w and a write to it
 * (the root is copied: a new root), clean nodes dropped again. */
static struct pool *churn_pool;
static struct vol *churn_vol;
static unsigned churn_n, churn_names;

static void hook_churn(struct store *st)
{
	char name[NAMES_FULL_MAX + 1];
	uint8_t buf[FMT_BLOCK] = {0};

	snprintf(name, sizeof(name), "w@c%u", churn_names++);
	churn_n++;
	assert_int_equal(store_snap_create(st, name), 0);
	assert_int_equal(store_write(churn_vol, buf, 0, FMT_BLOCK, 0), 0);
	unload_as(churn_pool, false);
	if (churn_n < 1000) /* the code under test must give up long before */
		churn_pool->spy.hook = hook_churn;
}

static void test_info_root_churn(void **state)
{
	struct store_vol_info got, *list;
	struct pool p;
	size_t n;

	pool_open(&p);
	assert_int_equal(store_vol_create(p.st, "w", SIZE), 0);
	assert_int_equal(store_vol_open(p.st, "w", &churn_vol), 0);
	/* A block under each of the root's second and third children: a walk
	 * of w's count reads one of them (to see it is shared), the hook
	 * drops the other, and the next walk reads that: one hook a walk. */
	uint8_t buf[FMT_BLOCK] = {4};
	assert_int_equal(store_write(churn_vol, buf, 300000ull * FMT_BLOCK, FMT_BLOCK, 0), 0);
	assert_int_equal(store_write(churn_vol, buf, 600000ull * FMT_BLOCK, FMT_BLOCK, 0), 0);
	churn_pool = &p;
	for (int list_it = 0; list_it < 2; list_it++) {
		unload(&p);
		for (unsigned i = 0; i < 3; i++) /* the others in memory: w reads */
			assert_int_equal(
			    store_info(p.st, (const char *[]){"v", "v@s", "c"}[i], &got), 0);
		churn_n = 0;
		p.spy.hook = hook_churn;
		if (list_it)
			assert_int_equal(store_list(p.st, &list, &n), -EIO);
		else
			assert_int_equal(store_info(p.st, "w", &got), -EIO);
		p.spy.hook = NULL;
		assert_true(churn_n >= 64 && churn_n < 1000);
	}
	assert_int_equal(p.spy.reads_locked, 0);
	store_vol_close(churn_vol);
	pool_close(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_block_status_away), cmocka_unit_test(test_block_status_conn),
	    cmocka_unit_test(test_info_scrub_away),   cmocka_unit_test(test_info_changed_meanwhile),
	    cmocka_unit_test(test_info_root_churn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
