/* test_tree_roots.c — parked roots (tree.c, "roots") under readers, the
 * writer parking, evicting, writing, sharing and dropping them.
 *
 * Ten trees over an in-memory disk of node images: a volume, six
 * snapshots (taken from it again and again) and three clones (of
 * snapshots, written to), each with a model, in a node cache bounded to
 * about a tenth of their nodes.  Covered:
 *   - test_roots_under_readers: 3 reader threads look blocks up in every
 *     tree (the volume's and clones' lower half, all of a snapshot),
 *     through the tree (blocking, or first with nowait) and through a
 *     reader's copy (tree_copy, checked with tree_same_root as reader.c
 *     does), map runs (tree_run), count snapshots' blocks (tree_count)
 *     and compare two snapshots (tree_diff), each against the models, while
 *     the writer writes and trims the upper halves (through parked roots
 *     too), snapshots a parked or a published volume, clones a parked or
 *     a published snapshot, drops parked trees (root in memory or not),
 *     writes dirty nodes, parks roots and evicts.  With the readers
 *     paused, the store's checkers (tree_check_all, alloc_verify) with
 *     roots parked; at the end those and tests/lib/treeref, every block
 *     of every tree, and dropping everything frees every block;
 *   - test_damaged_root: a parked root that cannot be read (damaged, or
 *     an I/O error) fails reads, writes and checks with an error and
 *     changes nothing, while counting, sharing and dropping a reference
 *     read nothing; once readable again the trees are whole;
 *   - test_open_bad_root: tree_open refuses a root address outside the
 *     pool or a block nobody counts (-EILSEQ), and a root that is not a
 *     node, or not at the tree's height, fails at first use;
 *   - test_copy_reads_unpublished: a reader's copy of a parked tree reads
 *     its root without publishing it, and after that root is evicted
 *     under it reads it again, and a diff of two copies whose nodes are
 *     evicted under it walks again (-ESTALE);
 *   - test_hand_during_reads: with the hand passing during every node
 *     read, a copy still reads through the root it found by address (the
 *     second chance an orphan node gets).
 */
#undef NDEBUG
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nodedisk.h"
#include "tree.h"
#include "treeref.h"

#define F        ((uint64_t)FMT_FANOUT)
#define NSEGS    256
#define DATA_SEG 1           /* data blocks from here */
#define NODE_SEG 128         /* node images from here */
#define NLBA     (2 * F * F) /* three levels */
#define NLEAF    64          /* leaves holding keys, half in each level-1 subtree */
#define KPL      32          /* keys per leaf */
#define NK       (NLEAF * KPL)
#define LOW      (NK / 2) /* keys below: never written after setup */
#define NSNAP    6
#define NCLONE   3
#define NT       (1 + NSNAP + NCLONE)
#define READERS  3
#define BOUND    (96u << 10) /* ~20 leaves, against ~200 nodes in the trees */
#define ROUNDS   60

/* A tree, its model by key, and the readers' pin on it. */
struct slot {
	struct tree t;
	uint64_t m[NK];
	uint64_t count;   /* mapped keys (snapshots: fixed while live) */
	bool writable;    /* the volume and clones: keys >= LOW change */
	atomic_int live;  /* readers may use it */
	atomic_int users; /* readers using it */
};

static struct alloc *A;
static struct nodedisk *D;
static struct tree_cache *NC;
static uint64_t next_blk;
static struct slot S[NT]; /* 0 the volume, then snapshots, then clones */
static int32_t *key_of;   /* lba -> key + 1, 0 for none */

#define VOL   (&S[0])
#define SNAP0 1
#define CLON0 (1 + NSNAP)

/* Key k's block: leaves alternate between the two level-1 subtrees and
 * are spread over each; keys within a leaf are 7 apart. */
static uint64_t lba_of(unsigned k)
{
	unsigned j = k / KPL, s = k % KPL;
	return (j % 2) * F * F + (uint64_t)(j / 2) * 15 * F + s * 7 + j % 3;
}

static struct tree **trees(void)
{
	static struct tree *t[NT];
	for (unsigned i = 0; i < NT; i++)
		t[i] = &S[i].t;
	return t;
}

static uint64_t xs(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static uint64_t model_count(const struct slot *s)
{
	uint64_t n = 0;
	for (unsigned k = 0; k < NK; k++)
		n += s->m[k] != 0;
	return n;
}

static void write_all(void)
{
	struct fmt_node *scratch = malloc(sizeof(*scratch));
	assert_non_null(scratch);
	for (unsigned i = 0; i < NT; i++)
		assert_int_equal(tree_write_dirty(&S[i].t, A, nodedisk_emit, D, scratch), 0);
	free(scratch);
}

static void evict(void)
{
	for (unsigned k = 0; k < 100000 && tree_cache_over(NC); k++)
		tree_cache_evict(NC, 64);
}

static void set_key(struct slot *s, unsigned k, bool unmap)
{
	uint64_t phys = unmap ? 0 : next_blk++;
	assert_true(next_blk < (uint64_t)NODE_SEG * FMT_SEG_BLOCKS);
	assert_int_equal(tree_set(&s->t, A, lba_of(k), phys), 0);
	s->m[k] = phys;
}

/* The hand passes during every node read (test_hand_during_reads). */
static bool hand_in_reads;

static int read_node(void *d, uint64_t addr, struct fmt_node *out)
{
	int err = nodedisk_read(d, addr, out);
	if (hand_in_reads) { /* one turn of the hand */
		struct tree_cache_stats cs;
		tree_cache_stats(NC, &cs);
		tree_cache_evict(NC, cs.resident ? (unsigned)cs.resident : 1);
	}
	return err;
}

static int setup(void **state)
{
	hand_in_reads = false;
	urcu_memb_register_thread();
	A = alloc_new(NSEGS);
	D = calloc(1, sizeof(*D));
	NC = A ? tree_cache_new(A, read_node, D) : NULL;
	key_of = calloc(NLBA, sizeof(*key_of));
	assert_true(A && D && NC && key_of);
	D->next = (uint64_t)NODE_SEG * FMT_SEG_BLOCKS;
	next_blk = (uint64_t)DATA_SEG * FMT_SEG_BLOCKS;
	tree_cache_totals(NC, true);
	memset(S, 0, sizeof(S));
	for (unsigned i = 0; i < NT; i++)
		S[i].t = (struct tree){.levels = tree_levels_for(NLBA), .nc = NC};
	assert_int_equal(S[0].t.levels, 3);
	for (unsigned k = 0; k < NK; k++) {
		assert_int_equal(key_of[lba_of(k)], 0);
		key_of[lba_of(k)] = (int32_t)k + 1;
	}
	return 0;
}

static void stop_readers(void);

static int teardown(void **state)
{
	stop_readers();
	for (unsigned i = 0; i < NT; i++)
		tree_drop(&S[i].t, A);
	urcu_memb_barrier();
	assert_int_equal(alloc_live_blocks(A), 0);
	urcu_memb_barrier(); /* nodes go through call_rcu */
	tree_cache_free(NC);
	alloc_free(A);
	nodedisk_clear(D);
	free(D);
	free(key_of);
	urcu_memb_unregister_thread();
	return 0;
}

static int lookup(const struct tree *t, uint64_t lba, uint64_t *phys)
{
	urcu_memb_read_lock();
	int err = tree_lookup(t, lba, false, phys);
	urcu_memb_read_unlock();
	return err;
}

static uint64_t count_of(const struct tree *t)
{
	uint64_t mapped = UINT64_MAX;
	urcu_memb_read_lock();
	assert_int_equal(tree_count(t, A, false, &mapped, NULL), 0);
	urcu_memb_read_unlock();
	return mapped;
}

/* Every key of slot s as its model says, and the holes beside them. */
static void expect_slot(const struct slot *s)
{
	uint64_t phys;
	for (unsigned k = 0; k < NK; k++) {
		assert_int_equal(lookup(&s->t, lba_of(k), &phys), 0);
		if (phys != s->m[k])
			fail_msg("tree %u key %u: %llu, model %llu", (unsigned)(s - S), k,
			         (unsigned long long)phys, (unsigned long long)s->m[k]);
		assert_int_equal(lookup(&s->t, lba_of(k) + 1, &phys), 0);
		assert_int_equal(phys, 0);
	}
	assert_int_equal(count_of(&s->t), model_count(s));
}

static void expect_all(void)
{
	for (unsigned i = 0; i < NT; i++)
		expect_slot(&S[i]); /* publishes every root, loads every node */
	assert_int_equal(treeref_check(trees(), NT, A, NULL), 0);
}

/* The store's checkers alone (roots may be parked: tree_check_all reads
 * them without publishing them; the recount of tests/lib/treeref walks
 * published roots only). */
static int store_checks(void)
{
	uint64_t nb = alloc_nblocks(A);
	uint32_t *bref = calloc(nb, sizeof(*bref));
	assert_non_null(bref);
	int bad = tree_check_all(trees(), NT, A, bref);
	bad += alloc_verify(A, bref);
	free(bref);
	return bad;
}

/* ---- diffs against the models ------------------------------------------- */

struct diffcheck {
	const uint64_t *ma, *mb;
	unsigned reported;
	bool bad;
};

static int diff_mark(void *arg, uint64_t lba, uint64_t n, bool zero)
{
	struct diffcheck *d = arg;
	for (uint64_t x = lba; x < lba + n; x++) {
		int32_t k = x < NLBA ? key_of[x] - 1 : -1;
		if (k < 0 || d->ma[k] == d->mb[k] || zero != (d->mb[k] == 0))
			d->bad = true;
		else
			d->reported++;
	}
	return 0;
}

/* tree_diff(a, b) reports exactly the keys whose models differ (runs
 * never overlap, so counting them is enough).  Any thread. */
static bool diff_right(const struct slot *a, const struct slot *b)
{
	struct diffcheck d;
	unsigned tries = 0, want = 0;
	int err;

	for (unsigned k = 0; k < NK; k++)
		want += a->m[k] != b->m[k];
	do {
		d = (struct diffcheck){.ma = a->m, .mb = b->m};
		urcu_memb_read_lock();
		err = tree_diff(&a->t, &b->t, 0, NLBA, false, diff_mark, &d, NULL);
		urcu_memb_read_unlock();
	} while (tree_stale_again(&err, &tries));
	return !err && !d.bad && d.reported == want;
}

/* ---- readers ------------------------------------------------------------ */

struct race {
	atomic_int go, stop, pause, paused;
	atomic_long lookups, runs, copies, copy_retries, counts, diffs, wrong, errors;
};

static struct race *running;
static pthread_t th[READERS];

/* Pin slot i for a reader: false if it is being replaced. */
static bool pin(struct slot *s)
{
	atomic_fetch_add(&s->users, 1);
	if (atomic_load(&s->live))
		return true;
	atomic_fetch_sub(&s->users, 1);
	return false;
}

static void unpin(struct slot *s)
{
	atomic_fetch_sub(&s->users, 1);
}

/* A key a reader may check in s: the lower half of a writable tree. */
static unsigned reader_key(const struct slot *s, uint64_t x)
{
	return (unsigned)(x % (s->writable ? LOW : NK));
}

/* A lookup that, with nowait, first tries without reading (as the store's
 * readers do on their loop), then reads. */
static int nowait_first(const struct slot *s, uint64_t lba, uint64_t *phys, bool nowait)
{
	urcu_memb_read_lock();
	int err = nowait ? tree_lookup(&s->t, lba, true, phys) : -EAGAIN;
	if (err == -EAGAIN)
		err = tree_lookup(&s->t, lba, false, phys);
	urcu_memb_read_unlock();
	return err;
}

/* A lookup through a reader's copy, as reader_walk_locked walks: the
 * answer counts only if the tree's root is still the copy's. */
static int copy_lookup(struct race *r, const struct slot *s, uint64_t lba, uint64_t *phys)
{
	for (unsigned tries = 0; tries < 1000; tries++) {
		struct tree copy;
		tree_copy(&copy, &s->t);
		int err = lookup(&copy, lba, phys);
		if (tree_same_root(&s->t, &copy))
			return err;
		atomic_fetch_add(&r->copy_retries, 1);
	}
	return -ESTALE;
}

static void reader_op(struct race *r, uint64_t *x)
{
	uint64_t v = xs(x), phys;
	struct slot *s = &S[v % NT];
	unsigned op = (unsigned)(v >> 8) % 10;

	if (!pin(s))
		return;
	if (op < 5 || (op >= 8 && s->writable)) {
		unsigned k = reader_key(s, v >> 16);
		int err = nowait_first(s, lba_of(k), &phys, v & (1 << 20));
		atomic_fetch_add(&r->lookups, 1);
		if (err)
			atomic_fetch_add(&r->errors, 1);
		else if (phys != s->m[k])
			atomic_fetch_add(&r->wrong, 1);
	} else if (op == 5) { /* a run: the key alone, then the holes after it */
		unsigned k = reader_key(s, v >> 16);
		uint64_t len, hole;
		bool mapped, after;
		urcu_memb_read_lock();
		int err = tree_run(&s->t, lba_of(k), 1, false, &len, &mapped);
		if (!err)
			err = tree_run(&s->t, lba_of(k) + 1, 6, false, &hole, &after);
		urcu_memb_read_unlock();
		atomic_fetch_add(&r->runs, 1);
		if (err)
			atomic_fetch_add(&r->errors, 1);
		else if (len != 1 || mapped != (s->m[k] != 0) || after || hole != 6)
			atomic_fetch_add(&r->wrong, 1);
	} else if (op < 8) {
		unsigned k = reader_key(s, v >> 16);
		int err = copy_lookup(r, s, lba_of(k), &phys);
		atomic_fetch_add(&r->copies, 1);
		if (err)
			atomic_fetch_add(&r->errors, 1);
		else if (phys != s->m[k])
			atomic_fetch_add(&r->wrong, 1);
	} else if (op == 8) { /* a snapshot's size: parked or not, exact */
		uint64_t mapped = 0, unique = 0;
		urcu_memb_read_lock();
		int err = tree_count(&s->t, A, false, &mapped, v & (1 << 20) ? &unique : NULL);
		urcu_memb_read_unlock();
		atomic_fetch_add(&r->counts, 1);
		if (err)
			atomic_fetch_add(&r->errors, 1);
		else if (mapped != s->count || unique > mapped)
			atomic_fetch_add(&r->wrong, 1);
	} else { /* two snapshots compared */
		struct slot *o = &S[SNAP0 + (v >> 40) % NSNAP];
		if (pin(o)) {
			atomic_fetch_add(&r->diffs, 1);
			if (!diff_right(s, o))
				atomic_fetch_add(&r->wrong, 1);
			unpin(o);
		}
	}
	unpin(s);
}

static void *reader_main(void *arg)
{
	struct race *r = arg;
	uint64_t x = 88172645463325252ull ^ (uint64_t)(uintptr_t)&x;

	urcu_memb_register_thread();
	while (!atomic_load(&r->go))
		;
	while (!atomic_load(&r->stop)) {
		if (atomic_load(&r->pause)) {
			atomic_fetch_add(&r->paused, 1);
			while (atomic_load(&r->pause) && !atomic_load(&r->stop))
				;
			atomic_fetch_sub(&r->paused, 1);
			continue;
		}
		reader_op(r, &x);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void stop_readers(void)
{
	if (!running)
		return;
	atomic_store(&running->stop, 1);
	for (unsigned i = 0; i < READERS; i++)
		pthread_join(th[i], NULL);
	running = NULL;
}

static void pause_readers(struct race *r)
{
	atomic_store(&r->pause, 1);
	while (atomic_load(&r->paused) < READERS)
		;
}

/* ---- the writer ------------------------------------------------------- */

struct wstats {
	unsigned park_share, pub_share, parked_drops, parked_writes, parks;
};

/* Take slot s from the readers (they finish with it first). */
static void retire(struct slot *s)
{
	atomic_store(&s->live, 0);
	while (atomic_load(&s->users))
		;
}

/* Park t (after writing it, so that it is clean); true if it is parked. */
static bool park(struct tree *t, struct wstats *w)
{
	write_all();
	bool parked = tree_park(t);
	w->parks += parked;
	return parked || (!t->root && t->away);
}

/* Slot d becomes a copy of src (parked or not) for the readers. */
static void share(struct slot *d, struct slot *src, bool parked, bool writable, struct wstats *w)
{
	retire(d);
	if (!d->t.root && d->t.away)
		w->parked_drops++;
	tree_drop(&d->t, A);
	if (parked)
		w->park_share += park(&src->t, w);
	else
		w->pub_share += src->t.root != NULL;
	tree_share(&d->t, &src->t, A);
	memcpy(d->m, src->m, sizeof(d->m));
	d->count = model_count(d);
	d->writable = writable;
	atomic_store(&d->live, 1);
}

/* Writes and a trim to the upper half of writable slot s. */
static void write_upper(struct slot *s, uint64_t *x, struct wstats *w)
{
	if (!s->t.root && s->t.away)
		w->parked_writes++;
	for (unsigned n = 0; n < 40; n++) {
		uint64_t v = xs(x);
		set_key(s, LOW + (unsigned)(v % (NK - LOW)), v % 8 == 0);
	}
	/* a trim within the upper leaves of one subtree: whole leaves and parts */
	uint64_t v = xs(x), sub = v % 2;
	uint64_t lo = sub * F * F + 16 * 15 * F + (v >> 8) % (8 * 15 * F);
	uint64_t hi = lo + (v >> 32) % (4 * 15 * F);
	assert_int_equal(tree_trim(&s->t, A, lo, hi), 0);
	for (unsigned k = LOW; k < NK; k++)
		if (lba_of(k) >= lo && lba_of(k) < hi)
			s->m[k] = 0;
}

static void round_of(unsigned round, uint64_t *x, struct wstats *w)
{
	struct slot *snap = &S[SNAP0 + round % NSNAP];

	if (round % 2)
		park(&VOL->t, w); /* its writes go through a parked root */
	write_upper(VOL, x, w);
	for (unsigned c = 0; c < NCLONE; c++)
		if (S[CLON0 + c].writable)
			write_upper(&S[CLON0 + c], x, w);
	/* a parked snapshot is dropped: its root in memory or evicted */
	if (round % 3 == 0) {
		park(&snap->t, w);
		if (round % 6 == 0)
			tree_unload(trees(), NT);
	}
	share(snap, VOL, round % 4 < 2, false, w);
	if (round % 3 == 1) {
		struct slot *c = &S[CLON0 + (round / 3) % NCLONE];
		struct slot *from = &S[SNAP0 + (round * 7) % NSNAP];
		if (round % 2 == 0)
			park(&c->t, w);
		share(c, from, round % 4 == 1, true, w);
	}
	write_all();
	for (unsigned i = 0; i < NT; i++)
		if (xs(x) % 2)
			w->parks += tree_park(&S[i].t);
	evict();
	if (round % 5 == 4)
		tree_unload(trees(), NT);
	/* the writer's own view of every tree, parked or not */
	for (unsigned i = 0; i < NT; i++)
		if (count_of(&S[i].t) != model_count(&S[i]))
			fail_msg("round %u tree %u: %llu mapped, model %llu", round, i,
			         (unsigned long long)count_of(&S[i].t),
			         (unsigned long long)model_count(&S[i]));
	assert_true(diff_right(snap, VOL));
	assert_true(diff_right(VOL, &S[SNAP0 + (round + 3) % NSNAP]));
}

static void test_roots_under_readers(void **state)
{
	static struct race r;
	struct tree_cache_stats cs;
	struct wstats w = {0};
	uint64_t x = 0x9e3779b97f4a7c15ull;

	VOL->writable = true;
	for (unsigned k = 0; k < NK; k++)
		if (k % 3 != 2)
			set_key(VOL, k, false);
	for (unsigned i = SNAP0; i < NT; i++)
		share(&S[i], VOL, i % 2, false, &w);
	atomic_store(&VOL->live, 1);
	write_all();
	tree_cache_bound(NC, BOUND, NULL, NULL);
	for (unsigned i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader_main, &r), 0);
	running = &r;
	atomic_store(&r.go, 1);
	for (unsigned round = 0; round < ROUNDS; round++) {
		round_of(round, &x, &w);
		if (round % 10 == 9) { /* the checkers, roots parked where they are */
			pause_readers(&r);
			assert_int_equal(store_checks(), 0);
			atomic_store(&r.pause, 0);
		}
	}
	while (atomic_load(&r.lookups) < 100000)
		;
	stop_readers();
	tree_cache_stats(NC, &cs);
	print_message(
	    "readers: %ld lookups, %ld runs, %ld through copies (%ld retried), %ld counts, "
	    "%ld diffs; writer: %u parks, %u shares of parked and %u of published "
	    "roots, %u drops and %u writes of parked trees; %llu evictions, %llu "
	    "loads\n",
	    atomic_load(&r.lookups), atomic_load(&r.runs), atomic_load(&r.copies),
	    atomic_load(&r.copy_retries), atomic_load(&r.counts), atomic_load(&r.diffs), w.parks,
	    w.park_share, w.pub_share, w.parked_drops, w.parked_writes,
	    (unsigned long long)cs.evictions, (unsigned long long)cs.loads);
	assert_int_equal(atomic_load(&r.errors), 0);
	assert_int_equal(atomic_load(&r.wrong), 0);
	assert_int_equal(cs.errors, 0);
	assert_true(w.park_share > 10 && w.pub_share > 10 && w.parked_drops > 10 &&
	            w.parked_writes > 10);
	assert_true(cs.evictions > 1000 && cs.loads > 1000);

	/* everything parked and evicted: the checkers, then every block */
	for (unsigned i = 0; i < NT; i++)
		tree_park(&S[i].t);
	tree_unload(trees(), NT);
	tree_cache_stats(NC, &cs);
	assert_int_equal(cs.resident, 0);
	assert_int_equal(store_checks(), 0);
	for (unsigned i = 0; i < NT; i++)
		assert_int_equal(count_of(&S[i].t), model_count(&S[i]));
	expect_all();
}

/* ---- a root that cannot be read ----------------------------------------- */

/* tree_check_all's problems, and what it printed (stderr) into out. */
static int checker_says(char *out, size_t len)
{
	uint32_t *bref = calloc(alloc_nblocks(A), sizeof(*bref));
	FILE *f = tmpfile();
	int saved = dup(2);

	assert_true(bref && f && saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(f), 2) == 2);
	int bad = tree_check_all(trees(), NT, A, bref);
	fflush(stderr);
	assert_true(dup2(saved, 2) == 2);
	close(saved);
	rewind(f);
	size_t n = fread(out, 1, len - 1, f);
	out[n] = 0;
	fclose(f);
	free(bref);
	fputs(out, stderr);
	return bad;
}

/* The volume written, a snapshot and a clone of it, all parked and
 * evicted; returns the shared root's address. */
static uint64_t three_parked(void)
{
	struct wstats w = {0};

	VOL->writable = true;
	for (unsigned k = 0; k < NK; k += 5)
		set_key(VOL, k, false);
	write_all();
	share(&S[SNAP0], VOL, true, false, &w);
	share(&S[CLON0], VOL, true, true, &w);
	tree_unload(trees(), NT);
	uint64_t root = VOL->t.away;
	assert_true(root && !VOL->t.root && S[SNAP0].t.away == root);
	return root;
}

static void damaged_root(uint64_t root, int want)
{
	struct tree_cache_stats before, after;
	uint64_t phys, mapped;

	tree_cache_stats(NC, &before);
	/* sizes come from the records: nothing read */
	assert_int_equal(count_of(&VOL->t), model_count(VOL));
	tree_cache_stats(NC, &after);
	assert_int_equal(after.loads + after.errors, before.loads + before.errors);
	/* reads fail, every time, and publish nothing */
	for (unsigned n = 0; n < 3; n++) {
		assert_int_equal(lookup(&S[SNAP0].t, lba_of(0), &phys), want);
		assert_int_equal(copy_lookup(&(struct race){0}, &S[SNAP0], lba_of(0), &phys), want);
	}
	urcu_memb_read_lock();
	/* a listing's figures: the record's size, nothing unique */
	assert_int_equal(tree_count(&VOL->t, A, false, &mapped, &phys), 0);
	assert_int_equal(mapped, model_count(VOL));
	assert_int_equal(phys, 0);
	assert_int_equal(tree_diff(&VOL->t, &S[CLON0].t, 0, NLBA, false, diff_mark,
	                           &(struct diffcheck){0}, NULL),
	                 want);
	urcu_memb_read_unlock();
	tree_cache_stats(NC, &after);
	assert_int_equal(after.errors, before.errors + 8);
	/* a write fails and leaves the tree as it was */
	assert_int_equal(tree_set(&VOL->t, A, lba_of(1), next_blk), want);
	assert_int_equal(tree_trim(&VOL->t, A, 0, 10), want);
	assert_true(!VOL->t.root && VOL->t.away == root && !S[SNAP0].t.root);
	assert_int_equal(alloc_block_refs(A, root), 3);
	/* the checker says so, once per tree that holds it, in words */
	char said[4096];
	assert_int_equal(checker_says(said, sizeof(said)), 3);
	if (!strstr(said, want == -EIO ? "Input/output error" : "damaged (checksum"))
		fail_msg("the checker said: %s", said);
	tree_cache_stats(NC, &after);
	assert_int_equal(after.errors, before.errors + 13);
	/* a snapshot and dropping one reference of several read nothing */
	tree_share(&S[SNAP0 + 1].t, &S[CLON0].t, A);
	assert_int_equal(alloc_block_refs(A, root), 4);
	tree_drop(&S[CLON0].t, A);
	tree_drop(&S[SNAP0 + 1].t, A);
	assert_int_equal(alloc_block_refs(A, root), 2);
	memset(S[CLON0].m, 0, sizeof(S[CLON0].m));
	tree_cache_stats(NC, &after);
	assert_int_equal(after.errors, before.errors + 13);
}

static void test_damaged_root(void **state)
{
	uint64_t root = three_parked();
	struct fmt_node *img = D->img[root];

	img->slot[3] ^= 1; /* its checksum no longer matches */
	damaged_root(root, -EILSEQ);
	img->slot[3] ^= 1;
	expect_all();
}

static void test_unreadable_root(void **state)
{
	uint64_t root = three_parked();

	D->fail_addr = root;
	damaged_root(root, -EIO);
	D->fail_addr = 0;
	expect_all();
}

/* ---- opening a root -------------------------------------------------- */

/* t (opened on block addr) holds a count of its own, so that dropping it
 * is a drop like any other. */
static void open_counted(struct tree *t, uint64_t addr, unsigned levels, uint64_t total)
{
	alloc_ref(A, addr);
	assert_int_equal(tree_open(NC, t, addr, levels, total), 0);
	assert_int_equal(count_of(t), total);
}

static void test_open_bad_root(void **state)
{
	uint64_t root = three_parked(), total = model_count(VOL), phys;
	struct tree t = {0};

	/* outside the pool, or a block nobody counts */
	assert_int_equal(tree_open(NC, &t, alloc_nblocks(A) + 7, 3, total), -EILSEQ);
	assert_int_equal(tree_open(NC, &t, UINT64_MAX - 1, 3, total), -EILSEQ);
	assert_int_equal(tree_open(NC, &t, D->next + 1, 3, total), -EILSEQ);
	/* counted, but a data block: fails when first read (-EIO: nodedisk
	 * holds no image there; the store's read finds no node: -EILSEQ) */
	open_counted(&t, VOL->m[0], 3, total);
	assert_int_equal(lookup(&t, lba_of(0), &phys), -EIO);
	tree_drop(&t, A);
	/* the root, at the wrong height */
	open_counted(&t, root, 2, total);
	assert_int_equal(lookup(&t, lba_of(0), &phys), -EILSEQ);
	tree_drop(&t, A);
	/* and right */
	open_counted(&t, root, 3, total);
	assert_int_equal(lookup(&t, lba_of(0), &phys), 0);
	assert_int_equal(phys, VOL->m[0]);
	assert_non_null(t.root);
	tree_drop(&t, A);
	assert_int_equal(store_checks(), 0);
}

/* ---- a reader's copy ---------------------------------------------------- */

static void test_copy_reads_unpublished(void **state)
{
	uint64_t root = three_parked(), phys;
	struct tree copy;
	struct tree_cache_stats cs;

	tree_copy(&copy, &S[SNAP0].t);
	for (unsigned n = 0; n < 3; n++) {
		for (unsigned k = 0; k < NK; k += 7) {
			assert_int_equal(lookup(&copy, lba_of(k), &phys), 0);
			assert_int_equal(phys, S[SNAP0].m[k]);
		}
		/* nothing published, so everything may go (the root too) */
		assert_true(!S[SNAP0].t.root && !copy.root && S[SNAP0].t.away == root);
		assert_true(tree_same_root(&S[SNAP0].t, &copy));
		tree_unload(trees(), NT);
		tree_cache_stats(NC, &cs);
		assert_int_equal(cs.resident, 0);
	}
	/* the same while the copy is being read: found in memory, evicted */
	urcu_memb_read_lock();
	assert_int_equal(tree_lookup(&copy, lba_of(5), false, &phys), 0);
	tree_unload(trees(), NT);
	assert_int_equal(tree_lookup(&copy, lba_of(10), false, &phys), 0);
	assert_int_equal(phys, S[SNAP0].m[10]);
	urcu_memb_read_unlock();
	assert_int_equal(store_checks(), 0);
}

/* A diff of two copies whose nodes (their roots too) are evicted under
 * it, at every run it reports: it meets a node evicted while it held it
 * (-ESTALE), walks again and gives the models' answer. */
struct unloading {
	struct diffcheck d;
	unsigned calls, unload_at;
};

static int diff_unload(void *arg, uint64_t lba, uint64_t n, bool zero)
{
	struct unloading *u = arg;
	if (u->calls++ == u->unload_at)
		tree_unload(trees(), NT);
	return diff_mark(&u->d, lba, n, zero);
}

static void test_diff_of_evicted_copies(void **state)
{
	uint64_t x = 7;
	struct wstats w = {0};
	unsigned stale = 0, want = 0;

	three_parked();
	for (unsigned k = LOW; k < NK; k += 3) /* upper leaves of both subtrees */
		set_key(VOL, k, xs(&x) % 4 == 0);
	park(&VOL->t, &w);
	for (unsigned k = 0; k < NK; k++)
		want += VOL->m[k] != S[SNAP0].m[k];
	for (unsigned at = 0; at < 8; at++) {
		struct tree cv, cs;
		struct unloading u;
		unsigned tries = 0;
		int err;
		tree_unload(trees(), NT);
		tree_copy(&cv, &VOL->t);
		tree_copy(&cs, &S[SNAP0].t);
		do {
			u = (struct unloading){.d = {.ma = VOL->m, .mb = S[SNAP0].m},
			                       .unload_at = tries ? UINT_MAX : at};
			urcu_memb_read_lock();
			err = tree_diff(&cv, &cs, 0, NLBA, false, diff_unload, &u, NULL);
			urcu_memb_read_unlock();
			stale += err == -ESTALE;
		} while (tree_stale_again(&err, &tries));
		assert_int_equal(err, 0);
		assert_false(u.d.bad);
		assert_int_equal(u.d.reported, want);
		assert_true(!VOL->t.root && !S[SNAP0].t.root);
	}
	assert_true(stale >= 4);
	assert_int_equal(store_checks(), 0);
}

/* The log thread's hand passes while each node is read (a busy pool
 * under a small cache, nodes read from a slow device): a reader's copy of
 * a parked tree holds a root nobody published, found by its address, and
 * still reads through it (its second chance is what a walk needs). */
static void test_hand_during_reads(void **state)
{
	uint64_t root = three_parked(), phys;
	struct tree copy;

	tree_cache_bound(NC, 1, NULL, NULL); /* always over: every pass evicts */
	hand_in_reads = true;
	tree_copy(&copy, &S[SNAP0].t);
	for (unsigned k = 0; k < NK; k += 97) {
		tree_unload(trees(), NT);
		assert_int_equal(lookup(&copy, lba_of(k), &phys), 0);
		assert_int_equal(phys, S[SNAP0].m[k]);
		/* and through the tree, which publishes its root */
		assert_int_equal(lookup(&S[CLON0].t, lba_of(k), &phys), 0);
		assert_int_equal(phys, S[CLON0].m[k]);
	}
	hand_in_reads = false;
	assert_true(!S[SNAP0].t.root && S[SNAP0].t.away == root);
	assert_int_equal(store_checks(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_roots_under_readers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_root, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unreadable_root, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_bad_root, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_copy_reads_unpublished, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_diff_of_evicted_copies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hand_during_reads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
