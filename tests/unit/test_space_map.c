/* test_space_map.c — the space map's count pages through the store
 * (docs/METADATA.md, "Step 2 as built"): with a budget of one or two
 * resident pages, every checkpoint drops the clean pages beyond it back to
 * disk, and writes, overwrites, snapshots and their deletion, which need
 * the counts of blocks in evicted segments, load them again; the data
 * reads as a model says, store_check agrees block by block, and a reopened
 * pool too.  A power cut at each device write or flush of such a workload
 * (checkpoints writing pages that were evicted and loaded again) leaves a
 * pool that opens, checks clean and holds every acknowledged write.
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

#include <cmocka.h>

#include "faultdev.h"
#include "store.h"
#include "testpool.h"

#define MiB          (1ull << 20)
#define BS           4096u
#define NLBA         (32 * MiB / BS) /* the volume: 8,192 blocks */
#define WRITES       1200u
#define CRASH_WRITES 150u

/* What each block of v should hold: the seed last acknowledged (0: zeroes)
 * and, while a write is in flight, the one that may have landed. */
static uint32_t model[NLBA], maybe[NLBA];

static void fill(uint8_t *b, uint32_t seed)
{
	for (unsigned i = 0; i < BS / 4; i++)
		((uint32_t *)b)[i] = seed ? seed * 2654435761u + i : 0;
}

static uint64_t pick(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x % NLBA;
}

static int put(struct vol *v, uint64_t lba, uint32_t seed)
{
	uint8_t b[BS];
	fill(b, seed);
	maybe[lba] = seed;
	int err = store_write(v, b, lba * BS, BS, STORE_FUA);
	if (!err)
		model[lba] = seed;
	return err;
}

/* Every block of v reads model's seed (or, with loose, maybe's). */
static void expect_model(struct store *st, bool loose)
{
	uint8_t got[BS], want[BS];
	struct vol *v;

	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (uint64_t lba = 0; lba < NLBA; lba++) {
		assert_int_equal(store_read(v, got, lba * BS, BS), 0);
		fill(want, model[lba]);
		if (memcmp(got, want, BS) == 0)
			continue;
		fill(want, maybe[lba]);
		if (!loose || memcmp(got, want, BS) != 0)
			fail_msg("block %llu holds neither seed %u nor %u", (unsigned long long)lba,
			         model[lba], maybe[lba]);
		model[lba] = maybe[lba];
	}
	store_vol_close(v);
}

static void stats(struct store *st, struct store_stats *s)
{
	store_get_stats(st, s);
}

/* Writes scattered over the volume (so their blocks' segments' counts are
 * needed again later), a snapshot, overwrites, checkpoints between, the
 * snapshot deleted.  Stops at the first failure (a power cut). */
static int workload(struct store *st, uint64_t *x, uint32_t *seed, unsigned writes)
{
	struct vol *v;
	int err = store_vol_open(st, "v", &v);

	for (unsigned round = 0; round < 4 && !err; round++) {
		for (unsigned i = 0; i < writes && !err; i++)
			err = put(v, pick(x), (*seed)++);
		if (!err && round == 1)
			err = store_snap_create(st, "v@s");
		if (!err && round == 3)
			err = store_snap_delete(st, "v@s");
		if (!err)
			err = store_checkpoint(st);
	}
	store_vol_close(v);
	return err;
}

static void test_pages_evicted_and_reloaded(void **state)
{
	struct faultdev *p = faultdev_new(256 * MiB);
	struct store_opts o = {.count_pages = 2};
	struct store *st = testpool_volume(&p->dev, &o, "v", NLBA * BS, NULL);
	struct store_stats s;
	uint64_t x = 88172645463325252ull;
	uint32_t seed = 1;

	memset(model, 0, sizeof(model));
	memset(maybe, 0, sizeof(maybe));
	assert_int_equal(workload(st, &x, &seed, WRITES), 0);
	stats(st, &s);
	print_message("count pages: %llu resident, %llu evicted\n",
	              (unsigned long long)s.count_pages, (unsigned long long)s.count_pages_evicted);
	assert_true(s.count_pages <= 2);
	assert_true(s.count_pages_evicted >= 8);
	expect_model(st, false);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	st = testpool_open(&p->dev, &o);
	expect_model(st, false);
	assert_int_equal(workload(st, &x, &seed, WRITES), 0);
	expect_model(st, false);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	faultdev_free(p);
}

static void test_crash_points_pages(void **state)
{
	struct store_opts o = {.count_pages = 1, .checkpoint_bytes = 1 * MiB};
	long total = -1, step = 1;

	for (long n = 0; total < 0 || n <= total; n += total < 0 ? 0 : step) {
		struct faultdev *p = faultdev_new(256 * MiB);
		struct store *st = testpool_volume(&p->dev, &o, "v", NLBA * BS, NULL);
		uint64_t x = 88172645463325252ull;
		uint32_t seed = 1;

		memset(model, 0, sizeof(model));
		memset(maybe, 0, sizeof(maybe));
		p->calls = 0;
		if (total >= 0)
			p->budget = n;
		int err = workload(st, &x, &seed, CRASH_WRITES);
		store_close(st);
		if (total < 0) { /* the first run counts the crash points */
			assert_int_equal(err, 0);
			total = p->calls;
			step = total / 97 + 1; /* ~100 cuts: every kind of write is met */
			faultdev_free(p);
			continue;
		}
		faultdev_power_on_rotate(p, n);
		st = testpool_open(&p->dev, &o);
		assert_int_equal(store_check(st), 0);
		expect_model(st, true);
		store_close(st);
		faultdev_free(p);
	}
	print_message("%ld crash points, a cut every %ld\n", total, step);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pages_evicted_and_reloaded),
	    cmocka_unit_test(test_crash_points_pages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
