/* test_syncer.c — FLUSH and FUA answered by the syncer (writer.c), a
 * thread of their own, while the log thread goes on:
 *   - writes sent while a FLUSH's sync runs complete before it does;
 *   - a FLUSH or FUA write sent while a sync runs waits for the next one
 *     (the running one may have started before its writes were written),
 *     and after a power cut of any kind (clean, torn, mixed) everything
 *     each acknowledged sync covered reads back;
 *   - the writes after the last sync may be lost to a cut, torn or left
 *     as any of their images, the open summary naming them too, and cost
 *     nothing acknowledged;
 *   - a failed sync answers its FLUSH -EIO, and a FLUSH that waited for
 *     the next sync too, and fails the pool: the writes after it are
 *     refused, no checkpoint is written, and what an earlier sync
 *     acknowledged reads back after a reopen;
 *   - a sync held in the device shows in store_sync_age_us (the
 *     watchdog's view: the log thread goes on and answers store_ping).
 * Requests are static: a failed assertion leaves the store running, and it
 * may still complete them.
 * The device holds a sync after it made the data durable and before it
 * returns (faultdev hold_done_flush): what is written meanwhile is not
 * covered, as with a real fdatasync that has started.
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "faultdev.h"
#include "store.h"
#include "testpool.h"
#include "treq.h"

#define BS   STORE_BLOCK_SIZE
#define NBLK 64u
#define MiB  (1ull << 20)

/* No checkpoint of its own accord (its sync would cover what the tests
 * want covered only by the syncer's). */
static const struct store_opts opts = {.checkpoint_bytes = 1ull << 40, .checkpoint_secs = 3600};

static unsigned char bufs[NBLK][BS];

/* Submit a write of block blk, all of it val. */
static void put_async(struct treq *t, struct vol *v, unsigned blk, unsigned char val,
                      uint32_t flags)
{
	memset(bufs[blk], val, BS);
	treq_init(t, v, STORE_WRITE, bufs[blk], (uint64_t)blk * BS, BS, flags);
	store_submit(&t->r);
}

static void flush_async(struct treq *t, struct vol *v)
{
	treq_init(t, v, STORE_FLUSH, NULL, 0, 0, 0);
	store_submit(&t->r);
}

static void put(struct vol *v, unsigned blk, unsigned char val)
{
	unsigned char b[BS];
	memset(b, val, sizeof(b));
	assert_int_equal(store_write(v, b, (uint64_t)blk * BS, BS, 0), 0);
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

static void wait_held(struct faultdev *f)
{
	for (int i = 0; i < TREQ_BOUND * 1000 && !f->flushes_held; i++)
		usleep(1000);
	assert_true(f->flushes_held > 0);
}

static void all_ok(const struct treq *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(t[i].err, 0);
}

/* Blocks 0..7 flushed; a FLUSH whose sync is held after it made them
 * durable; blocks 8..15 written meanwhile (they complete); a FLUSH and a
 * FUA write of block 16 sent then (they do not); the sync let go; all
 * complete, over two syncs at least.  Then blocks 0..3 and 20..27 written
 * again, into an open summary, and a FLUSH held before its sync when the
 * power is cut the n-th way (faultdev_power_on_rotate).  Blocks 4..16
 * read as acknowledged, 0..3 and 20..27 as acknowledged or as written
 * after. */
static void held_sync_then_cut(long n)
{
	struct faultdev *f = faultdev_new(64 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&f->dev, &opts, "v", NBLK * BS, &v);
	static struct treq first, w[8], later[2], last, again[12];

	for (unsigned i = 0; i < 8; i++)
		put(v, i, (unsigned char)(1 + i));
	struct store_stats s0 = stats(st);
	f->hold_done_flush = 1;
	flush_async(&first, v);
	wait_held(f);
	for (unsigned i = 0; i < 8; i++)
		put_async(&w[i], v, 8 + i, (unsigned char)(9 + i), 0);
	assert_true(treq_wait(w, 8)); /* the log thread is not in the sync */
	all_ok(w, 8);
	assert_int_equal(treq_ndone(&first, 1), 0);
	flush_async(&later[0], v);
	put_async(&later[1], v, 16, 17, STORE_FUA);
	usleep(20 * 1000);
	assert_int_equal(treq_ndone(later, 2), 0); /* the held sync does not cover them */
	f->hold_done_flush = 0;
	assert_true(treq_wait(&first, 1));
	assert_true(treq_wait(later, 2));
	all_ok(&first, 1);
	all_ok(later, 2);
	assert_true(stats(st).syncs - s0.syncs >= 2);
	for (unsigned i = 0; i < 12; i++)
		put_async(&again[i], v, i < 4 ? i : 16 + i, (unsigned char)(100 + i), 0);
	assert_true(treq_wait(again, 12));
	all_ok(again, 12);
	f->hold_flush = 1;
	flush_async(&last, v);
	wait_held(f);
	faultdev_power_off(f);
	f->hold_flush = 0;
	assert_true(treq_wait(&last, 1));
	assert_int_equal(last.err, -EIO);
	store_vol_close(v);
	store_close(st); /* its final checkpoint fails: the device is gone */
	faultdev_power_on_rotate(f, n);
	st = testpool_open(&f->dev, &opts);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 28; i++) {
		unsigned char got = get(v, i), acked = i <= 16 ? (unsigned char)(1 + i) : 0;
		unsigned char after = i < 4     ? (unsigned char)(100 + i)
		                      : i >= 20 ? (unsigned char)(100 + i - 16)
		                                : acked;
		if (got != acked && got != after)
			fail_msg("cut %ld: block %u reads %u, not %u (acknowledged) or %u (written "
			         "after)",
			         n, i, got, acked, after);
	}
	assert_int_equal(store_check(st), 0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(f);
}

static void test_held_sync(void **state)
{
	for (long n = 0; n < 24; n++)
		held_sync_then_cut(n);
}

/* Blocks 0..7 flushed; block 8 written, then a FLUSH whose sync fails
 * (held first, so that the failure meets the flush and not a write), and
 * held again once it failed while a second FLUSH queues behind it (the
 * device would let that one succeed: it reports an error once).  Both
 * FLUSHes get -EIO, the next write and a checkpoint are refused; after a
 * reopen blocks 0..7 read back. */
static void test_failed_sync(void **state)
{
	struct faultdev *f = faultdev_new(64 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&f->dev, &opts, "v", NBLK * BS, &v);
	static struct treq fl, fl2, w;

	for (unsigned i = 0; i < 8; i++)
		put(v, i, (unsigned char)(1 + i));
	assert_int_equal(store_flush(v), 0);
	put(v, 8, 9);
	f->hold_flush = 1;
	flush_async(&fl, v);
	wait_held(f);
	f->fail_next = 1;
	f->hold_failed_flush = 1;
	f->hold_flush = 0;
	for (int i = 0; i < TREQ_BOUND * 1000 && f->fail_next; i++)
		usleep(1000);
	assert_int_equal(f->fail_next, 0); /* failed, and held */
	flush_async(&fl2, v);
	usleep(20 * 1000);
	assert_int_equal(treq_ndone(&fl, 1), 0);
	f->hold_failed_flush = 0;
	assert_true(treq_wait(&fl, 1));
	assert_true(treq_wait(&fl2, 1));
	assert_int_equal(fl.err, -EIO);
	assert_int_equal(fl2.err, -EIO);
	put_async(&w, v, 9, 10, 0);
	assert_true(treq_wait(&w, 1));
	assert_int_equal(w.err, -EIO);
	assert_int_not_equal(store_checkpoint(st), 0);
	store_vol_close(v);
	store_close(st);

	st = testpool_open(&f->dev, &opts);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(get(v, i), 1 + i);
	store_vol_close(v);
	store_close(st);
	faultdev_free(f);
}

/* A sync held in the device: the log thread answers store_ping and the
 * sync's age grows; once it returns, the age is 0 again. */
static void test_sync_age(void **state)
{
	struct faultdev *f = faultdev_new(64 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&f->dev, &opts, "v", NBLK * BS, &v);
	static struct treq fl;

	assert_int_equal(store_sync_age_us(st), 0);
	f->hold_flush = 1;
	flush_async(&fl, v);
	wait_held(f);
	assert_int_equal(store_ping(st), 0);
	usleep(50 * 1000);
	uint64_t age = store_sync_age_us(st);
	assert_true(age >= 50 * 1000);
	assert_true(age < (uint64_t)TREQ_BOUND * 1000000);
	f->hold_flush = 0;
	assert_true(treq_wait(&fl, 1));
	assert_int_equal(fl.err, 0);
	assert_int_equal(store_sync_age_us(st), 0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_held_sync),
	    cmocka_unit_test(test_failed_sync),
	    cmocka_unit_test(test_sync_age),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
