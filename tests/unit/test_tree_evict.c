/* test_tree_evict.c — the node cache under a bound: eviction by the CLOCK
 * (tree_cache_evict) while readers load (docs/METADATA.md, step 3).
 *
 * A volume, a fixed snapshot and a rolling one (dropped and taken again),
 * over an in-memory disk of node images, in a cache bounded to a few dozen
 * nodes (about 1/20 of the trees).  Covered, each against a model:
 *   - 4 reader threads check lookups of the volume's lower half and of
 *     the fixed snapshot while the writer maps and trims blocks in the
 *     upper half, snapshots, compares the rolling snapshot with the volume
 *     (tree_diff, checked block by block), writes its dirty nodes and
 *     evicts between rounds: every answer right, every eviction undone by
 *     a load that gives the same answer;
 *   - with the readers paused after each checkpoint and eviction, the
 *     resident bytes stay under the bound; a reader that loads past the
 *     bound wakes the writer;
 *   - afterwards both reference oracles (tree_check_all with its pointer
 *     counts, alloc_verify; tests/lib/treeref) are clean, every block of
 *     every tree reads as the model says, then again after evicting
 *     everything that may go; dropping the trees frees every block.
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

#include "nodedisk.h"
#include "tree.h"
#include "treeref.h"

#define NSEGS    256
#define DATA_SEG 1                              /* data blocks from here */
#define NODE_SEG 160                            /* node images from here */
#define NLBA     (2u * FMT_FANOUT * FMT_FANOUT) /* three levels */
#define HALF     (NLBA / 2)                     /* readers: below; writer: above */
#define READERS  4
#define BOUND    (256u << 10) /* ~40 leaves, against ~420 in the trees */
#define ROUNDS   40

static struct alloc *A;
static struct nodedisk *D;
static struct tree_cache *NC;
static uint64_t next_blk;
static uint64_t *mvol, *msnap, *mroll; /* the models (0 = hole) */
static struct tree vol, snap, roll;
static atomic_long wakes;
struct race;
static struct race *running; /* readers to stop if the test fails */
static pthread_t th[4];

static void wake(void *arg)
{
	atomic_fetch_add(&wakes, 1);
}

static struct tree **trees(void)
{
	static struct tree *t[] = {&vol, &snap, &roll};
	return t;
}

static void write_all(void)
{
	struct fmt_node *scratch = malloc(sizeof(*scratch));
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(tree_write_dirty(trees()[i], A, nodedisk_emit, D, scratch), 0);
	free(scratch);
}

/* The writer between rounds: batches until under the bound (or nothing
 * more may go). */
static void evict(void)
{
	for (unsigned k = 0; k < 100000 && tree_cache_over(NC); k++)
		tree_cache_evict(NC, 64);
}

static void set(uint64_t lba)
{
	assert_true(next_blk < (uint64_t)NODE_SEG * FMT_SEG_BLOCKS);
	assert_int_equal(tree_set(&vol, A, lba, next_blk), 0);
	mvol[lba] = next_blk++;
}

static int setup(void **state)
{
	urcu_memb_register_thread();
	A = alloc_new(NSEGS);
	D = calloc(1, sizeof(*D));
	NC = tree_cache_new(A, nodedisk_read, D);
	mvol = calloc(NLBA, sizeof(*mvol));
	msnap = calloc(NLBA, sizeof(*msnap));
	mroll = calloc(NLBA, sizeof(*mroll));
	assert_true(A && D && NC && mvol && msnap && mroll);
	D->next = (uint64_t)NODE_SEG * FMT_SEG_BLOCKS;
	next_blk = (uint64_t)DATA_SEG * FMT_SEG_BLOCKS;
	vol = (struct tree){.levels = tree_levels_for(NLBA), .nc = NC};
	for (uint64_t lba = 0; lba < NLBA; lba += 5)
		set(lba);
	tree_share(&snap, &vol, A);
	memcpy(msnap, mvol, NLBA * sizeof(*mvol));
	tree_share(&roll, &vol, A);
	memcpy(mroll, mvol, NLBA * sizeof(*mvol));
	write_all();
	tree_cache_bound(NC, BOUND, wake, NULL);
	return 0;
}

static void stop_readers(void);

static int teardown(void **state)
{
	stop_readers();
	for (unsigned i = 0; i < 3; i++)
		tree_drop(trees()[i], A);
	urcu_memb_barrier();
	assert_int_equal(alloc_live_blocks(A), 0);
	urcu_memb_barrier(); /* nodes go through call_rcu */
	tree_cache_free(NC);
	alloc_free(A);
	nodedisk_clear(D);
	free(D);
	free(mvol);
	free(msnap);
	free(mroll);
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

static void expect_all(void)
{
	const uint64_t *m[] = {mvol, msnap, mroll};
	uint64_t phys;

	for (unsigned i = 0; i < 3; i++)
		for (uint64_t lba = 0; lba < NLBA; lba++) {
			assert_int_equal(lookup(trees()[i], lba, &phys), 0);
			if (phys != m[i][lba])
				fail_msg("tree %u block %llu: %llu, model %llu", i,
				         (unsigned long long)lba, (unsigned long long)phys,
				         (unsigned long long)m[i][lba]);
		}
	assert_int_equal(treeref_check(trees(), 3, A, NULL), 0);
}

/* ---- readers ------------------------------------------------------------ */

struct race {
	atomic_int go, stop, pause, paused;
	atomic_long checked, wrong, errors;
};

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
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		bool on_snap = x >> 63;
		uint64_t lba = x % (on_snap ? NLBA : HALF), phys;
		int err = lookup(on_snap ? &snap : &vol, lba, &phys);
		if (err)
			atomic_fetch_add(&r->errors, 1);
		else if (phys != (on_snap ? msnap : mvol)[lba])
			atomic_fetch_add(&r->wrong, 1);
		atomic_fetch_add(&r->checked, 1);
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

/* ---- the writer's round ------------------------------------------------ */

struct diffbits {
	uint8_t *b;
};

static int mark(void *arg, uint64_t lba, uint64_t n, bool zero)
{
	struct diffbits *d = arg;
	for (uint64_t k = lba; k < lba + n; k++) {
		assert_true(k < NLBA);
		assert_int_equal(d->b[k], 0); /* runs never overlap */
		d->b[k] = 1;
		assert_true(zero == (mvol[k] == 0));
	}
	return 0;
}

/* tree_diff(roll, vol) reports exactly the blocks whose models differ. */
static void check_diff(void)
{
	struct diffbits d = {calloc(NLBA, 1)};
	unsigned tries = 0;
	int err;

	assert_non_null(d.b);
	do {
		memset(d.b, 0, NLBA);
		urcu_memb_read_lock();
		err = tree_diff(&roll, &vol, 0, NLBA, false, mark, &d, NULL);
		urcu_memb_read_unlock();
	} while (tree_stale_again(&err, &tries));
	assert_int_equal(err, 0);
	for (uint64_t lba = 0; lba < NLBA; lba++)
		if (d.b[lba] != (mroll[lba] != mvol[lba]))
			fail_msg("diff at %llu: %u, models %llu %llu", (unsigned long long)lba,
			         d.b[lba], (unsigned long long)mroll[lba],
			         (unsigned long long)mvol[lba]);
	free(d.b);
}

static void round_of(unsigned round)
{
	uint64_t x = round * 2654435761u + 1;

	for (unsigned k = 0; k < 100; k++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		set(HALF + (x >> 20) % (NLBA - HALF));
	}
	uint64_t lo = HALF + (x >> 33) % (NLBA - HALF - 4000), hi = lo + (x >> 50) % 3000;
	assert_int_equal(tree_trim(&vol, A, lo, hi), 0);
	memset(mvol + lo, 0, (hi - lo) * sizeof(*mvol));
	if (round % 4 == 3) { /* a new rolling snapshot */
		tree_drop(&roll, A);
		tree_share(&roll, &vol, A);
		memcpy(mroll, mvol, NLBA * sizeof(*mvol));
	}
	check_diff();
}

/* Readers paused, the cache evicted: under the bound. */
static void check_bound(struct race *r, uint64_t *max)
{
	struct tree_cache_stats cs;

	atomic_store(&r->pause, 1);
	while (atomic_load(&r->paused) < READERS)
		;
	evict();
	tree_cache_stats(NC, &cs);
	if (cs.bytes > *max)
		*max = cs.bytes;
	if (cs.bytes > BOUND)
		fail_msg("%llu bytes resident (%llu nodes), bound %u", (unsigned long long)cs.bytes,
		         (unsigned long long)cs.resident, BOUND);
	atomic_store(&r->pause, 0);
}

static void test_evict_under_readers(void **state)
{
	static struct race r;
	struct tree_cache_stats cs;
	uint64_t max = 0, peak = 0;

	for (unsigned i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader_main, &r), 0);
	running = &r;
	evict();
	atomic_store(&r.go, 1);
	for (unsigned round = 0; round < ROUNDS; round++) {
		round_of(round);
		evict(); /* dirty nodes stay: only the clean ones go */
		write_all();
		evict();
		tree_cache_stats(NC, &cs);
		if (cs.bytes > peak)
			peak = cs.bytes;
		if (round % 5 == 4)
			check_bound(&r, &max);
	}
	while (atomic_load(&r.checked) < 200000)
		;
	stop_readers();
	tree_cache_stats(NC, &cs);
	print_message("readers: %ld lookups; %llu evictions, %llu loads, %ld wakes; "
	              "%llu bytes at most when checked, %llu between rounds, bound %u\n",
	              atomic_load(&r.checked), (unsigned long long)cs.evictions,
	              (unsigned long long)cs.loads, atomic_load(&wakes), (unsigned long long)max,
	              (unsigned long long)peak, BOUND);
	assert_int_equal(atomic_load(&r.errors), 0);
	assert_int_equal(atomic_load(&r.wrong), 0);
	assert_true(cs.evictions > 1000);
	assert_true(cs.loads > 1000);
	assert_true(atomic_load(&wakes) > 0);
	assert_int_equal(cs.errors, 0);
	expect_all(); /* loads everything back */
	tree_cache_stats(NC, &cs);
	assert_true(cs.bytes > 4 * BOUND);
	evict();
	tree_cache_stats(NC, &cs);
	assert_true(cs.bytes <= BOUND);
	expect_all();
	/* Everything that may go, gone: the roots stay. */
	assert_true(tree_unload(trees(), 3) > 0);
	tree_cache_stats(NC, &cs);
	assert_true(cs.resident <= 3);
	expect_all();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_evict_under_readers, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
