/* test_park.c — parked roots (tree.h, tree_park): a volume with many
 * snapshots, each with a root of its own, under a node cache far smaller
 * than those roots.  Open reads no node, nor does a listing of their sizes
 * (the volume records carry them); reading every snapshot loads
 * them, and once their handles are closed the writer parks and evicts them
 * until the cache is under its bound (it could not with every root held,
 * as before); every snapshot then reads the same again, and a clone of a
 * parked snapshot, a rollback to one and deleting them (which frees what
 * only they held) leave a pool that checks clean, reopened too.
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "faultdev.h"
#include "format.h"
#include "store.h"
#include "testpool.h"

#define MiB     (1ull << 20)
#define BS      4096u
#define VOLSIZE (8 * MiB) /* two levels: a root over 5 leaves */
#define NSNAP   300u      /* roots of ~8 KiB each: 2.4 MiB */
#define BOUND   (1 * MiB)
#define FAR     700u /* generation g writes blocks g, g + FAR, g + 2 FAR */

static const struct store_opts opts = {.cache_bytes = BOUND};

static void fill(char *b, uint64_t lba, unsigned gen)
{
	memset(b, 0, BS);
	snprintf(b, BS, "block %llu generation %u", (unsigned long long)lba, gen);
}

static void snap_name(unsigned k, char *out, size_t len)
{
	snprintf(out, len, "v@s%u", k);
}

/* Block lba as export name reads it: generation gen, or zeroes (gen < 0). */
static void expect_block(struct store *st, const char *name, uint64_t lba, int gen)
{
	struct vol *v;
	char got[BS], want[BS] = {0};

	assert_int_equal(store_vol_open(st, name, &v), 0);
	assert_int_equal(store_read(v, got, lba * BS, BS), 0);
	store_vol_close(v);
	if (gen >= 0)
		fill(want, lba, (unsigned)gen);
	assert_memory_equal(got, want, BS);
}

/* Snapshot k holds generations 0..k: its own three blocks, and not the
 * next generation's. */
static void expect_snapshot(struct store *st, unsigned k)
{
	char name[32];
	snap_name(k, name, sizeof(name));
	for (unsigned j = 0; j < 3; j++)
		expect_block(st, name, k + j * FAR, (int)k);
	expect_block(st, name, k + 1, -1);
}

static struct store_stats stats(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s;
}

/* The writer trims the cache between rounds and when a reader's load
 * wakes it: give it up to 10 s to get under the bound. */
static void expect_under_bound(struct store *st)
{
	struct store_stats s = stats(st);
	for (int i = 0; i < 200 && s.cache_bytes > BOUND; i++) {
		usleep(50 * 1000);
		s = stats(st);
	}
	print_message("cache %llu bytes in %llu nodes (bound %llu), %llu evictions\n",
	              (unsigned long long)s.cache_bytes, (unsigned long long)s.cache_nodes,
	              (unsigned long long)BOUND, (unsigned long long)s.cache_evictions);
	assert_true(s.cache_bytes <= BOUND);
}

static void test_park(void **state)
{
	struct faultdev *p = faultdev_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, &opts, "v", VOLSIZE, &v);
	char buf[BS], name[32];

	for (unsigned g = 0; g < NSNAP; g++) {
		for (unsigned j = 0; j < 3; j++) {
			fill(buf, g + j * FAR, g);
			assert_int_equal(store_write(v, buf, (g + j * FAR) * BS, BS, 0), 0);
		}
		snap_name(g, name, sizeof(name));
		assert_int_equal(store_snap_create(st, name), 0);
	}
	store_vol_close(v);
	store_close(st);

	/* Open reads no node: every root is parked; a listing knows each
	 * snapshot's size from its record, still reading none. */
	st = testpool_open(&p->dev, &opts);
	assert_int_equal(stats(st).cache_nodes, 0);
	struct store_list_req q = {.snapshots = true, .volume = "v", .max = 100};
	struct store_vol_info info[100];
	size_t n;
	bool more;
	assert_int_equal(store_list_page(st, &q, info, &n, &more), 0);
	assert_int_equal(n, 100);
	for (unsigned k = 0; k < n; k++)
		assert_int_equal(info[k].mapped_blocks, 3 * (k + 1));
	assert_int_equal(stats(st).cache_nodes, 0);
	for (unsigned k = 0; k < NSNAP; k++)
		expect_snapshot(st, k);
	assert_true(stats(st).cache_loads >= NSNAP);
	expect_under_bound(st);
	for (unsigned k = 0; k < NSNAP; k += 7)
		expect_snapshot(st, k);
	expect_under_bound(st);

	/* A clone of a parked snapshot, written; a rollback to one. */
	assert_int_equal(store_clone(st, "v@s100", "c"), 0);
	assert_int_equal(store_vol_open(st, "c", &v), 0);
	fill(buf, 5, 1000);
	assert_int_equal(store_write(v, buf, 5 * BS, BS, STORE_FUA), 0);
	store_vol_close(v);
	expect_block(st, "c", 5, 1000);
	expect_block(st, "c", 100, 100);
	expect_block(st, "c", 101, -1);
	expect_block(st, "v@s100", 5, 5);
	assert_int_equal(store_rollback(st, "v@s200"), 0);
	expect_block(st, "v", 200, 200);
	expect_block(st, "v", 201, -1);
	assert_int_equal(store_check(st), 0);

	/* Deleting parked snapshots frees what only they held. */
	for (unsigned k = 0; k < NSNAP; k += 2) {
		snap_name(k, name, sizeof(name));
		if (k != 100)
			assert_int_equal(store_snap_delete(st, name), 0);
	}
	assert_int_equal(store_check(st), 0);
	store_close(st);

	st = testpool_open(&p->dev, &opts);
	for (unsigned k = 1; k < NSNAP; k += 2)
		expect_snapshot(st, k);
	expect_block(st, "c", 5, 1000);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	faultdev_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_park),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
