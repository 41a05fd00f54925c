/* test_tree_cache.c — tree nodes as objects found by their on-disk address,
 * read on demand (docs/METADATA.md, step 1).
 *
 * A volume and a snapshot sharing most of their nodes are written out to an
 * in-memory disk of node images, then tree_unload drops every clean node
 * below the roots.  Covered, each against a model (lba -> block):
 *   - a reader asked not to block answers -EAGAIN for a node away, and a
 *     blocking one reads it, publishes it and answers right;
 *   - reader threads racing to load the same nodes while the writer maps
 *     blocks elsewhere in the volume, writes its dirty nodes and drops the
 *     clean ones again and again: every answer right, one object per node
 *     (the reference checkers find every count exact afterwards);
 *   - the writer's paths on nodes away: set (copying a shared node whose
 *     children are away), trim of whole away subtrees, drop of a shared and
 *     of an unshared tree, diff and count, check;
 *   - a damaged node image or a failing read: -EILSEQ / -EIO for the reads
 *     through it, nothing else affected, nothing inserted, no crash;
 *   - a parent naming an address no node lives at (a lost node): lookups
 *     and store_diff end with -EIO after bounded retries, never spin;
 *   - closing: tree_release reads nothing and frees what is in memory,
 *     with tree_cache_free, even below nodes away;
 *   - the store: store_read_try gives a read through an away node to a
 *     reader thread, which loads it; a byte flipped in the pool under an
 *     away leaf gives the client an error, not a crash;
 *   - a power cut at every device write or flush of a workload that
 *     writes through away nodes and checkpoints the reloaded copies: the
 *     pool opens, checks clean, and each block reads a value it may; the
 *     same with the store's own eviction under a tiny --metadata-cache.
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

#include <cmocka.h>

#include "diff.h"
#include "faultdev.h"
#include "nodedisk.h"
#include "store_int.h"
#include "testpool.h"
#include "tree.h"
#include "treeref.h"

#define NSEGS    256
#define DATA_SEG 1                              /* data blocks from here */
#define NODE_SEG 200                            /* node images from here */
#define NLBA     (2u * FMT_FANOUT * FMT_FANOUT) /* three levels */
#define HALF     (NLBA / 2)                     /* readers: below; writer: above */
#define READERS  4

static struct alloc *A;
static struct nodedisk *D;
static struct tree_cache *NC;
static uint64_t next_blk;
/* The models: volume and snapshot (0 = hole). */
static uint64_t *mvol, *msnap;
static struct tree vol, snap;

static void write_all(void)
{
	struct fmt_node *scratch = malloc(sizeof(*scratch));
	assert_int_equal(tree_write_dirty(&vol, A, nodedisk_emit, D, scratch), 0);
	assert_int_equal(tree_write_dirty(&snap, A, nodedisk_emit, D, scratch), 0);
	free(scratch);
}

static uint64_t unload(void)
{
	return tree_unload((struct tree *[]){&vol, &snap}, 2);
}

/* Map lba of the volume to a fresh block. */
static void set(uint64_t lba)
{
	assert_true(next_blk < (uint64_t)NODE_SEG * FMT_SEG_BLOCKS);
	assert_int_equal(tree_set(&vol, A, lba, next_blk), 0);
	mvol[lba] = next_blk++;
}

/* vol: every 5th block; snap: a snapshot of it; then vol diverges in a
 * few places (so some nodes are shared, some not); all written out. */
static int setup(void **state)
{
	urcu_memb_register_thread();
	A = alloc_new(NSEGS);
	D = calloc(1, sizeof(*D));
	NC = tree_cache_new(A, nodedisk_read, D);
	mvol = calloc(NLBA, sizeof(*mvol));
	msnap = calloc(NLBA, sizeof(*msnap));
	assert_true(A && D && NC && mvol && msnap);
	D->next = (uint64_t)NODE_SEG * FMT_SEG_BLOCKS;
	next_blk = (uint64_t)DATA_SEG * FMT_SEG_BLOCKS;
	memset(&vol, 0, sizeof(vol));
	memset(&snap, 0, sizeof(snap));
	vol.levels = tree_levels_for(NLBA);
	vol.nc = NC;
	assert_int_equal(vol.levels, 3);
	for (uint64_t lba = 0; lba < NLBA; lba += 5)
		set(lba);
	tree_share(&snap, &vol, A);
	memcpy(msnap, mvol, NLBA * sizeof(*mvol));
	for (uint64_t lba = HALF + 3; lba < NLBA; lba += 50000)
		set(lba); /* the first half stays shared */
	write_all();
	return 0;
}

/* After the trees are dropped or released. */
static int free_all(void **state)
{
	urcu_memb_barrier(); /* nodes go through call_rcu */
	tree_cache_free(NC);
	alloc_free(A);
	nodedisk_clear(D);
	free(D);
	free(mvol);
	free(msnap);
	urcu_memb_unregister_thread();
	return 0;
}

static int teardown(void **state)
{
	tree_drop(&vol, A);
	tree_drop(&snap, A);
	urcu_memb_barrier();
	assert_int_equal(alloc_live_blocks(A), 0);
	return free_all(state);
}

static int lookup(const struct tree *t, uint64_t lba, bool nowait, uint64_t *phys)
{
	urcu_memb_read_lock();
	int err = tree_lookup(t, lba, nowait, phys);
	urcu_memb_read_unlock();
	return err;
}

/* Every block of both trees as the models say (reading what is away), and
 * every count exact (which reads the rest). */
static void expect_all(void)
{
	uint64_t phys;
	for (uint64_t lba = 0; lba < NLBA; lba++) {
		assert_int_equal(lookup(&vol, lba, false, &phys), 0);
		if (phys != mvol[lba])
			fail_msg("vol block %llu: %llu, model %llu", (unsigned long long)lba,
			         (unsigned long long)phys, (unsigned long long)mvol[lba]);
		assert_int_equal(lookup(&snap, lba, false, &phys), 0);
		if (phys != msnap[lba])
			fail_msg("snap block %llu: %llu, model %llu", (unsigned long long)lba,
			         (unsigned long long)phys, (unsigned long long)msnap[lba]);
	}
	struct tree *trees[] = {&vol, &snap};
	assert_int_equal(treeref_check(trees, 2, A, NULL), 0);
	assert_int_equal(tree_dirty_nodes(trees, 2), alloc_meta_pending(A));
}

/* A node away: -EAGAIN without blocking, the answer with; once loaded,
 * served from memory. */
static void test_away_nowait(void **state)
{
	struct tree_cache_stats cs;
	uint64_t phys, nodes = treeref_nodes((struct tree *[]){&vol, &snap}, 2);

	tree_cache_stats(NC, &cs);
	assert_int_equal(cs.resident, nodes);
	uint64_t dropped = unload();
	assert_int_equal(dropped, nodes - 2); /* all but the two roots */
	tree_cache_stats(NC, &cs);
	assert_int_equal(cs.resident, 2);
	assert_int_equal(cs.away, dropped);
	assert_int_equal(lookup(&vol, 10, true, &phys), -EAGAIN);
	assert_int_equal(lookup(&vol, 10, false, &phys), 0);
	assert_int_equal(phys, mvol[10]);
	assert_int_equal(lookup(&vol, 11, true, &phys), 0); /* same leaf: in memory now */
	assert_int_equal(phys, 0);
	tree_cache_stats(NC, &cs);
	assert_int_equal(cs.loads, 2); /* one interior node, one leaf */
	/* The snapshot shares that path (the first half): its root's slot
	 * is still empty (a non-blocking reader cannot know more), but the
	 * nodes are found in memory, not read again. */
	assert_int_equal(lookup(&snap, 10, true, &phys), -EAGAIN);
	assert_int_equal(lookup(&snap, 10, false, &phys), 0);
	assert_int_equal(phys, msnap[10]);
	assert_int_equal(lookup(&snap, 10, true, &phys), 0);
	tree_cache_stats(NC, &cs);
	assert_int_equal(cs.loads, 2);
	uint64_t len;
	bool mapped;
	urcu_memb_read_lock();
	assert_int_equal(tree_run(&vol, HALF, 7, false, &len, &mapped), 0);
	urcu_memb_read_unlock();
	assert_true(mapped == (mvol[HALF] != 0));
	expect_all();
	tree_cache_stats(NC, &cs);
	assert_int_equal(cs.resident, nodes);
	assert_int_equal(cs.away, 0);
	assert_int_equal(cs.errors, 0);
}

/* ---- readers racing the loads ------------------------------------------ */

struct race {
	atomic_int go, stop;
	atomic_long checked, wrong, errors;
};

static void *reader_main(void *arg)
{
	struct race *r = arg;
	uint64_t x = 88172645463325252ull; /* the same walk in every thread */

	urcu_memb_register_thread();
	while (!atomic_load(&r->go))
		;
	while (!atomic_load(&r->stop)) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t lba = x % HALF, phys;
		bool on_snap = x >> 63;
		int err = lookup(on_snap ? &snap : &vol, lba, false, &phys);
		if (err)
			atomic_fetch_add(&r->errors, 1);
		else if (phys != (on_snap ? msnap : mvol)[lba])
			atomic_fetch_add(&r->wrong, 1);
		atomic_fetch_add(&r->checked, 1);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void test_readers_race_loads(void **state)
{
	struct race r = {0};
	pthread_t th[READERS];
	struct tree_cache_stats cs;
	uint64_t dropped = 0;

	for (unsigned i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader_main, &r), 0);
	for (unsigned round = 0; round < 40; round++) {
		dropped += unload();
		if (round == 0)
			atomic_store(&r.go, 1);
		/* The writer maps blocks above HALF meanwhile: it loads what
		 * it needs on its own, copies the shared root's path, and its
		 * checkpoint writes move nodes to new addresses. */
		for (unsigned k = 0; k < 200; k++)
			set(HALF + (round * 7919u + k * 104729u) % (NLBA - HALF));
		write_all();
	}
	while (atomic_load(&r.checked) < 20000)
		;
	atomic_store(&r.stop, 1);
	for (unsigned i = 0; i < READERS; i++)
		pthread_join(th[i], NULL);
	tree_cache_stats(NC, &cs);
	print_message("readers: %ld lookups; %llu nodes dropped, %llu loads\n",
	              atomic_load(&r.checked), (unsigned long long)dropped,
	              (unsigned long long)cs.loads);
	assert_int_equal(atomic_load(&r.errors), 0);
	assert_int_equal(atomic_load(&r.wrong), 0);
	assert_true(cs.loads > 0);
	assert_int_equal(cs.errors, 0);
	expect_all();
}

/* ---- the writer on nodes away -------------------------------------------- */

/* tree_diff(snap, vol)'s runs, three numbers each. */
struct runs {
	uint64_t *v;
	size_t n, cap;
};

static int collect(void *arg, uint64_t lba, uint64_t n, bool zero)
{
	struct runs *r = arg;
	if (r->n + 3 > r->cap) {
		r->cap = r->cap ? 2 * r->cap : 1024;
		r->v = realloc(r->v, r->cap * sizeof(*r->v));
		assert_non_null(r->v);
	}
	r->v[r->n++] = lba;
	r->v[r->n++] = n;
	r->v[r->n++] = zero;
	return 0;
}

static void diff_runs(struct runs *r)
{
	urcu_memb_read_lock();
	assert_int_equal(tree_diff(&snap, &vol, 0, NLBA, false, collect, r, NULL), 0);
	urcu_memb_read_unlock();
}

static void test_writer_on_away(void **state)
{
	struct tree other = {0};
	struct runs before = {0}, after = {0};
	uint64_t mapped, unique, mapped2, unique2;

	/* Comparing trees: the same runs with everything away. */
	diff_runs(&before);
	unload();
	diff_runs(&after);
	assert_true(before.n > 0);
	assert_int_equal(after.n, before.n);
	assert_memory_equal(after.v, before.v, before.n * sizeof(*before.v));
	free(before.v);
	free(after.v);
	urcu_memb_read_lock();
	tree_count(&vol, A, false, &mapped, &unique);
	urcu_memb_read_unlock();
	unload();
	urcu_memb_read_lock();
	tree_count(&vol, A, false, &mapped2, &unique2);
	urcu_memb_read_unlock();
	assert_int_equal(mapped2, mapped);
	assert_int_equal(unique2, unique);
	unload();
	/* A second snapshot, then a write: the shared root is copied while
	 * its children are away (their counts go up where they are kept). */
	tree_share(&other, &vol, A);
	set(12);
	tree_drop(&other, A); /* its old root goes; below it, counts only */
	expect_all();
	write_all();
	unload();
	/* Trim whole away subtrees and part of one. */
	assert_int_equal(tree_trim(&vol, A, FMT_FANOUT * 3 + 9, FMT_FANOUT * FMT_FANOUT + 17), 0);
	for (uint64_t lba = FMT_FANOUT * 3 + 9; lba < FMT_FANOUT * FMT_FANOUT + 17; lba++)
		mvol[lba] = 0;
	expect_all();
	write_all();
	unload();
	/* A tree of its own, dropped with all of it away. */
	struct tree own = {.levels = 2, .nc = NC};
	for (uint64_t lba = 0; lba < 3 * FMT_FANOUT; lba += 3)
		assert_int_equal(tree_set(&own, A, lba, next_blk++), 0);
	struct fmt_node *scratch = malloc(sizeof(*scratch));
	assert_int_equal(tree_write_dirty(&own, A, nodedisk_emit, D, scratch), 0);
	free(scratch);
	assert_true(tree_unload((struct tree *[]){&vol, &snap, &own}, 3) >= 3);
	tree_drop(&own, A);
	unload();
	expect_all();
}

/* ---- damage ----------------------------------------------------------------- */

/* The leaf holding lba in t, by address (everything in memory). */
static uint64_t leaf_addr(const struct tree *t, uint64_t lba)
{
	const struct tree_node *n = t->root;
	for (unsigned k = t->levels - 1; k > 0; k--) {
		uint64_t sp = 1;
		for (unsigned j = 0; j < k; j++)
			sp *= FMT_FANOUT;
		n = n->child[(lba / sp) % FMT_FANOUT];
	}
	return n->disk;
}

static void test_damaged_node(void **state)
{
	struct tree_cache_stats cs;
	uint64_t phys, lba = 5 * 1000, other = HALF + 5;
	uint64_t addr = leaf_addr(&vol, lba);
	struct fmt_node *img = D->img[addr];

	unload();
	img->slot[7] ^= 0x40; /* a flipped bit: the CRC no longer matches */
	assert_int_equal(lookup(&vol, lba, false, &phys), -EILSEQ);
	assert_int_equal(lookup(&snap, lba, false, &phys), -EILSEQ);
	assert_int_equal(lookup(&vol, lba, true, &phys), -EAGAIN); /* nothing inserted */
	assert_int_equal(lookup(&vol, other, false, &phys), 0);    /* elsewhere: fine */
	assert_int_equal(phys, mvol[other]);
	uint64_t len;
	bool mapped;
	urcu_memb_read_lock();
	assert_int_equal(tree_run(&vol, lba, 10, false, &len, &mapped), -EILSEQ);
	urcu_memb_read_unlock();
	img->slot[7] ^= 0x40;
	D->fail_addr = addr; /* now the device fails */
	assert_int_equal(lookup(&vol, lba, false, &phys), -EIO);
	D->fail_addr = 0;
	tree_cache_stats(NC, &cs);
	assert_int_equal(cs.errors, 4);
	assert_int_equal(lookup(&vol, lba, false, &phys), 0);
	assert_int_equal(phys, mvol[lba]);
	expect_all();
}

/* ---- a cache that lost a node -------------------------------------------- */

/* An address no node lives at (inside the pool, never written). */
#define LOST_ADDR ((uint64_t)(NSEGS - 1) * FMT_SEG_BLOCKS)

/* Slot 0 of t's root names LOST_ADDR, its pointer empty (a bug's state):
 * returns what it held, for lost_undo. */
static struct tree_node *lost_do(struct tree *t, uint64_t *addr)
{
	struct tree_node *c = t->root->child[0];
	*addr = t->root->caddr[0];
	rcu_assign_pointer(t->root->child[0], NULL);
	t->root->caddr[0] = LOST_ADDR;
	return c;
}

static void lost_undo(struct tree *t, struct tree_node *c, uint64_t addr)
{
	t->root->caddr[0] = addr;
	rcu_assign_pointer(t->root->child[0], c);
}

/* Readers that keep finding no node where a live parent points answer
 * -EIO after a bounded number of walks, never spin. */
static void test_lost_node(void **state)
{
	uint64_t phys, addr;
	struct runs r = {0};
	struct tree_node *c = lost_do(&vol, &addr);

	assert_int_equal(lookup(&vol, 10, false, &phys), -EIO);
	assert_int_equal(lookup(&vol, 10, true, &phys), -EAGAIN);
	urcu_memb_read_lock();
	assert_int_equal(tree_diff(&snap, &vol, 0, NLBA, false, collect, &r, NULL), -ESTALE);
	urcu_memb_read_unlock();
	lost_undo(&vol, c, addr);
	free(r.v);
	assert_int_equal(lookup(&vol, 10, false, &phys), 0);
	assert_int_equal(phys, mvol[10]);
}

/* Closing: tree_release reads no node away (not even one that cannot be
 * read, which tree_drop would read to free what it holds) and frees
 * nothing itself: every node in memory goes with tree_cache_free (the
 * sanitizer build's leak checker and valgrind see that none is left). */
static void test_release(void **state)
{
	struct tree_cache_stats before, after;
	uint64_t phys, bad = leaf_addr(&vol, HALF + 3); /* only vol holds it */

	unload();
	/* The path to block 10 in memory, published in vol's root only; its
	 * top is shared with snap's root, which names it by address. */
	assert_int_equal(lookup(&vol, 10, false, &phys), 0);
	assert_int_equal(phys, mvol[10]);
	D->fail_addr = bad;
	tree_cache_stats(NC, &before);
	tree_release(&vol);
	tree_release(&snap);
	tree_cache_stats(NC, &after);
	assert_null(vol.root);
	assert_null(snap.root);
	assert_int_equal(after.loads, before.loads);
	assert_int_equal(after.errors, before.errors);
	assert_int_equal(after.resident, before.resident);
}

/* ---- through the store ---------------------------------------------------- */

/* A job on the log thread: checkpoint, drop every clean node, and flip a
 * byte of one leaf's block on the device if asked. */
struct unload_job {
	struct store_req req; /* first: the job gets it back */
	struct store *st;
	struct faultdev *dev;
	uint64_t damage_lba; /* UINT64_MAX: none */
	uint64_t dropped;
};

static int unload_run(struct store_req *r)
{
	struct unload_job *j = (struct unload_job *)r;
	unsigned n;
	int err = ckpt_write(j->st);
	if (err)
		return err;
	struct tree **trees = vtab_trees(j->st, &n);
	if (!trees)
		return -ENOMEM;
	if (j->damage_lba != UINT64_MAX) {
		/* Nothing reads the device now: readers are idle, the log
		 * thread is here.  The path is read first (it may be away). */
		uint64_t phys;
		urcu_memb_read_lock();
		err = tree_lookup(trees[0], j->damage_lba, false, &phys);
		urcu_memb_read_unlock();
		assert_int_equal(err, 0);
		uint64_t addr = leaf_addr(trees[0], j->damage_lba);
		uint8_t *b = faultdev_patch(j->dev, addr);
		assert_non_null(b);
		b[100] ^= 1;
	}
	j->dropped = tree_unload(trees, n);
	free(trees);
	return 0;
}

static void unload_submit(struct store_req *r)
{
	struct unload_job *j = (struct unload_job *)r;
	writer_enqueue(j->st, r);
}

/* A job losing (or giving back) slot 0 of the first volume's root. */
struct lose_job {
	struct store_req req; /* first: the job gets it back */
	struct store *st;
	struct tree_node *c;
	uint64_t addr;
	bool undo;
};

static int lose_run(struct store_req *r)
{
	struct lose_job *j = (struct lose_job *)r;
	unsigned n;
	struct tree **trees = vtab_trees(j->st, &n);
	if (!trees)
		return -ENOMEM;
	if (j->undo)
		lost_undo(trees[0], j->c, j->addr);
	else
		j->c = lost_do(trees[0], &j->addr);
	free(trees);
	return 0;
}

static void lose_submit(struct store_req *r)
{
	struct lose_job *j = (struct lose_job *)r;
	writer_enqueue(j->st, r);
}

static int diff_one(void *arg, const struct store_diff_extent *e)
{
	return 0;
}

/* Nodes dropped, or -errno (the checkpoint failed: nothing dropped). */
static int64_t store_unload(struct store *st, struct faultdev *dev, uint64_t damage_lba)
{
	struct unload_job j = {
	    .req = {.job = unload_run}, .st = st, .dev = dev, .damage_lba = damage_lba};
	int err = core_submit_wait(&j.req, unload_submit);
	return err ? err : (int64_t)j.dropped;
}

static void test_store_lazy_read(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	const uint64_t size = 3ull * FMT_FANOUT * FMT_FANOUT * FMT_BLOCK; /* three levels */
	char *buf = malloc(FMT_BLOCK), *want = malloc(FMT_BLOCK);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", size, &v);

	store_thread_register();
	for (unsigned i = 0; i < 64; i++) {
		memset(want, (int)i + 1, FMT_BLOCK);
		assert_int_equal(
		    store_write(v, want, (uint64_t)i * 10000 * FMT_BLOCK, FMT_BLOCK, 0), 0);
	}
	assert_true(store_unload(st, p, UINT64_MAX) > 0);
	struct store_req r = {.op = STORE_READ,
	                      .off = 7ull * 10000 * FMT_BLOCK,
	                      .len = FMT_BLOCK,
	                      .buf = buf,
	                      .vol = v};
	assert_false(store_read_try(&r)); /* a node is away: for a reader thread */
	assert_int_equal(store_read(v, buf, r.off, FMT_BLOCK), 0);
	memset(want, 8, FMT_BLOCK);
	assert_memory_equal(buf, want, FMT_BLOCK);
	assert_true(store_read_try(&r)); /* loaded: served at once */
	assert_int_equal(r.err, 0);
	/* A damaged leaf under an away path: the client gets an error. */
	assert_true(store_unload(st, p, 9ull * 10000) > 0);
	assert_int_equal(store_read(v, buf, 9ull * 10000 * FMT_BLOCK, FMT_BLOCK), -EILSEQ);
	assert_int_equal(store_read(v, buf, 0, FMT_BLOCK), 0); /* elsewhere: fine */
	memset(want, 1, FMT_BLOCK);
	assert_memory_equal(buf, want, FMT_BLOCK);
	/* A diff meeting a lost node ends with -EIO (it used to walk again
	 * for ever). */
	assert_int_equal(store_snap_create(st, "v@s"), 0);
	assert_int_equal(store_write(v, want, 600000ull * FMT_BLOCK, FMT_BLOCK, 0), 0);
	struct lose_job lj = {.req = {.job = lose_run}, .st = st};
	assert_int_equal(core_submit_wait(&lj.req, lose_submit), 0);
	assert_int_equal(store_diff(st, "v@s", "v", diff_one, NULL), -EIO);
	lj.undo = true;
	assert_int_equal(core_submit_wait(&lj.req, lose_submit), 0);
	assert_int_equal(store_diff(st, "v@s", "v", diff_one, NULL), 0);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
	free(buf);
	free(want);
}

/* ---- crashes while nodes are away -------------------------------------- */

#define CW_N    64    /* blocks k * CW_STEP (+1) of the volume */
#define CW_STEP 10000 /* one leaf each */

/* What each block may read after a crash: a bit per value (one byte
 * repeated; 0 = a hole), the durable one and any written since the last
 * flush that succeeded. */
struct cw_model {
	uint64_t ok[2 * CW_N], last[2 * CW_N];
	uint64_t snap[2 * CW_N]; /* the snapshot's values, if it exists */
	bool snap_made, durable_any;
	unsigned seq;
	uint64_t evictions; /* by the writer's bound, when the workload ran to its end */
};

/* How the workload's pool opens: NULL, or with a node cache so small that
 * the log thread evicts between rounds (test_crash_points_evict). */
static const struct store_opts *cw_opts;

static unsigned cw_lba(unsigned i)
{
	return (i / 2) * CW_STEP + i % 2;
}

/* Write value (1..63) or a hole (0) to block i; errors are the crash. */
static void cw_put(struct vol *v, struct cw_model *m, unsigned i, unsigned val)
{
	char blk[FMT_BLOCK];
	memset(blk, (int)val, sizeof(blk));
	m->ok[i] |= 1ull << val;
	m->last[i] = val;
	if (val)
		store_write(v, blk, (uint64_t)cw_lba(i) * FMT_BLOCK, FMT_BLOCK, 0);
	else
		store_trim(v, (uint64_t)cw_lba(i) * FMT_BLOCK, FMT_BLOCK, 0);
}

static void cw_flush(struct vol *v, struct cw_model *m)
{
	if (store_flush(v))
		return;
	for (unsigned i = 0; i < 2 * CW_N; i++)
		m->ok[i] = 1ull << m->last[i];
	m->durable_any = true;
}

static unsigned cw_val(struct cw_model *m)
{
	return 1 + m->seq++ % 63;
}

/* Blocks written, nodes dropped (a checkpoint first; with cw_opts, by the
 * log thread's eviction between rounds instead), blocks written
 * through the away paths (each leaf read back and copied: the snapshot
 * shares it), a checkpoint that writes the reloaded nodes back, dropped
 * again, more writes, close.  Every step may fail once the power goes. */
static void cw_workload(struct faultdev *p, struct cw_model *m)
{
	struct store *st = testpool_open(&p->dev, cw_opts);
	struct vol *v = NULL;

	store_thread_register();
	if (store_vol_create(st, "v", 3ull * FMT_FANOUT * FMT_FANOUT * FMT_BLOCK) ||
	    store_vol_open(st, "v", &v))
		goto out;
	for (unsigned k = 0; k < CW_N; k++)
		cw_put(v, m, 2 * k, cw_val(m));
	cw_flush(v, m);
	/* What the snapshot holds if it exists after a crash, even when the
	 * create failed: the op may have reached the device before the cut
	 * (the sync after it failing), and a later-issued change may survive. */
	memcpy(m->snap, m->last, sizeof(m->snap));
	if (!store_snap_create(st, "v@s"))
		m->snap_made = true;
	if (!cw_opts) /* else the log thread's eviction drops them */
		store_unload(st, p, UINT64_MAX);
	for (unsigned k = 0; k < CW_N; k++) {
		cw_put(v, m, 2 * k + 1, cw_val(m));
		if (k % 4 == 0)
			cw_put(v, m, 2 * k, 0);
	}
	cw_flush(v, m);
	store_checkpoint(st);
	if (!cw_opts)
		store_unload(st, p, UINT64_MAX);
	for (unsigned k = 1; k < CW_N; k += 2)
		cw_put(v, m, 2 * k, cw_val(m));
	cw_flush(v, m);
	struct store_stats ss;
	store_get_stats(st, &ss);
	m->evictions = ss.cache_evictions;
out:
	store_thread_unregister();
	if (v)
		store_vol_close(v);
	store_close(st);
}

/* Each block of name holds an allowed value (want: exactly that one). */
static void cw_expect(struct store *st, const char *name, const uint64_t *ok, const uint64_t *want)
{
	char blk[FMT_BLOCK];
	struct vol *v;

	assert_int_equal(store_vol_open(st, name, &v), 0);
	for (unsigned i = 0; i < 2 * CW_N; i++) {
		assert_int_equal(store_read(v, blk, (uint64_t)cw_lba(i) * FMT_BLOCK, FMT_BLOCK), 0);
		unsigned c = (unsigned char)blk[0];
		for (unsigned b = 1; b < FMT_BLOCK; b++)
			assert_int_equal((unsigned char)blk[b], c);
		if (want ? c != want[i] : c > 63 || !(ok[i] >> c & 1))
			fail_msg("%s block %u reads %u after the crash", name, cw_lba(i), c);
	}
	store_vol_close(v);
}

static void cw_verify(struct faultdev *p, const struct cw_model *m)
{
	struct store *st = testpool_open(&p->dev, cw_opts);
	struct vol *v;

	assert_int_equal(store_check(st), 0);
	if (store_vol_open(st, "v", &v)) {
		assert_false(m->durable_any); /* never made, or not durably */
		store_close(st);
		return;
	}
	store_vol_close(v);
	for (int pass = 0; pass < 2; pass++) {
		cw_expect(st, "v", m->ok, NULL);
		if (store_vol_open(st, "v@s", &v) == 0) {
			store_vol_close(v);
			cw_expect(st, "v@s", NULL, m->snap);
		} else {
			assert_false(m->snap_made);
		}
		if (pass == 0) /* again, read on demand from the recovered pool */
			assert_true(store_unload(st, p, UINT64_MAX) >= 0);
	}
	store_close(st);
}

/* A power cut at every write or flush of the workload: the pool opens, its
 * check is clean, and every block reads what it may.  Returns the
 * evictions of the run without a cut. */
static uint64_t cw_crash_points(void)
{
	uint64_t evictions;
	long total;
	{
		struct faultdev *p = faultdev_new(96u << 20);
		struct cw_model m = {0};
		assert_int_equal(store_format(&p->dev), 0);
		p->calls = 0;
		cw_workload(p, &m);
		total = p->calls;
		evictions = m.evictions;
		cw_verify(p, &m);
		faultdev_free(p);
	}
	assert_true(total > 20);
	for (long n = 0; n <= total; n++) {
		struct faultdev *p = faultdev_new(96u << 20);
		struct cw_model m = {0};
		for (unsigned i = 0; i < 2 * CW_N; i++)
			m.ok[i] = 1; /* a hole */
		assert_int_equal(store_format(&p->dev), 0);
		p->calls = 0;
		p->budget = n;
		cw_workload(p, &m);
		faultdev_power_on_rotate(p, n);
		cw_verify(p, &m);
		faultdev_free(p);
	}
	print_message("%ld crash points, %llu evictions without a cut\n", total + 1,
	              (unsigned long long)evictions);
	return evictions;
}

static void test_crash_points_away(void **state)
{
	cw_opts = NULL;
	cw_crash_points();
}

/* The same with the log thread evicting under a 64 KiB bound (about a
 * dozen nodes, against some 130 in the trees): checkpoints write back
 * nodes that the writer evicted and read again between rounds. */
static void test_crash_points_evict(void **state)
{
	static const struct store_opts small = {.cache_bytes = 64u << 10};
	cw_opts = &small;
	assert_true(cw_crash_points() > 50);
	cw_opts = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_away_nowait, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readers_race_loads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writer_on_away, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_node, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lost_node, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_release, setup, free_all),
	    cmocka_unit_test(test_store_lazy_read),
	    cmocka_unit_test(test_crash_points_away),
	    cmocka_unit_test(test_crash_points_evict),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
