/* test_open_sum.c — summaries kept open across rounds of writes (log.h),
 * in the store.  Rounds that need no sync add to one summary: many
 * rounds cost one summary block of log, not one each, and every write
 * reads back at once, after a clean reopen and after a power cut that
 * keeps everything.  A FLUSH, or a FUA write, seals the summary before its
 * sync: after a power cut that leaves each page written since the last
 * sync as any of its images (faultdev_power_on_mixed, many seeds), every
 * write the sync acknowledged reads back, and the writes after it read
 * their new value or the one before.
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "faultdev.h"
#include "store.h"
#include "testpool.h"

#define BS   STORE_BLOCK_SIZE
#define NBLK 64u

/* No checkpoint of its own accord during a test (one seals the summary
 * too, and would hide what is tested). */
static const struct store_opts opts = {.checkpoint_bytes = 1ull << 40, .checkpoint_secs = 3600};

static void put(struct vol *v, unsigned blk, unsigned char val, uint32_t flags)
{
	unsigned char b[BS];
	memset(b, val, sizeof(b));
	assert_int_equal(store_write(v, b, (uint64_t)blk * BS, BS, flags), 0);
}

/* What block blk reads: its one byte value (the block must be uniform). */
static unsigned char get(struct vol *v, unsigned blk)
{
	int x = testpool_block_value(v, blk);
	if (x < 0)
		fail_msg("block %u is not one value", blk);
	return (unsigned char)x;
}

static struct store_stats stats(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s;
}

/* Fifty rounds of one block each: one summary block of log in all, every
 * block readable at once and after a clean reopen. */
static void test_rounds_share_summary(void **state)
{
	struct faultdev *p = faultdev_new(64u << 20);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, &opts, "v", NBLK * BS, &v);

	put(v, 0, 1, 0); /* the summary's first version */
	struct store_stats s0 = stats(st);
	for (unsigned i = 1; i <= 50; i++) {
		put(v, i, (unsigned char)(10 + i), 0);
		assert_int_equal(get(v, i), 10 + i);
	}
	struct store_stats s1 = stats(st);
	assert_int_equal(s1.batch_blocks - s0.batch_blocks, 50);
	assert_int_equal(s1.summary_rewrites - s0.summary_rewrites, 50);
	assert_int_equal(s1.batches - s0.batches, 50);
	store_vol_close(v);
	store_close(st);
	st = testpool_open(&p->dev, &opts);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	assert_int_equal(get(v, 0), 1);
	for (unsigned i = 1; i <= 50; i++)
		assert_int_equal(get(v, i), 10 + i);
	assert_int_equal(store_check(st), 0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

/* Writes, then a sync that acknowledges them (a FLUSH, or with fua the
 * last write carries FUA), then more writes into the summary that follows
 * (new blocks, and some acknowledged ones again); the power goes.  Each
 * page written since the sync may be left as any of its images. */
static void cut_after_sync(bool fua, uint64_t seed)
{
	struct faultdev *p = faultdev_new(64u << 20);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, &opts, "v", NBLK * BS, &v);

	for (unsigned i = 0; i < 16; i++)
		put(v, i, (unsigned char)(1 + i), fua && i == 15 ? STORE_FUA : 0);
	if (!fua)
		assert_int_equal(store_flush(v), 0);
	for (unsigned i = 16; i < 48; i++)
		put(v, i, (unsigned char)(100 + i), 0);
	for (unsigned i = 0; i < 8; i++)
		put(v, i, (unsigned char)(200 + i), 0);
	faultdev_power_off(p);
	store_vol_close(v);
	store_close(st); /* its final checkpoint fails: the device is gone */
	faultdev_power_on_mixed(p, seed);

	st = testpool_open(&p->dev, &opts);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 48; i++) {
		unsigned char got = get(v, i), acked = i < 16 ? (unsigned char)(1 + i) : 0;
		unsigned char later = i < 8    ? (unsigned char)(200 + i)
		                      : i < 16 ? acked
		                               : (unsigned char)(100 + i);
		if (got != acked && got != later)
			fail_msg("%s, seed %llu: block %u reads %u, not %u (acknowledged) or %u "
			         "(written later)",
			         fua ? "FUA" : "FLUSH", (unsigned long long)seed, i, got, acked,
			         later);
	}
	assert_int_equal(store_check(st), 0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

static void test_flush_seals(void **state)
{
	for (uint64_t seed = 1; seed <= 40; seed++)
		cut_after_sync(false, seed);
}

static void test_fua_seals(void **state)
{
	for (uint64_t seed = 1; seed <= 40; seed++)
		cut_after_sync(true, seed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rounds_share_summary),
	    cmocka_unit_test(test_flush_seals),
	    cmocka_unit_test(test_fua_seals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
