/* test_sync.c — a pool's syncs and superblock writes (segio_dev.c)
 * run one at a time, and a failure sticks.  The kernel reports a writeback
 * error to one fdatasync only; the syncer (a FLUSH's sync), the log
 * thread (a control change's) and the committer (a checkpoint's) sync the
 * same file, so without these rules
 * the one that did not see the error would answer a FLUSH or write a
 * superblock over data that was lost.  faultdev's one-off failed flush is
 * that kernel behaviour: the next flush succeeds.
 *   - after a failed sync, every later sync fails, and a superblock write
 *     is refused without touching the device;
 *   - a sync that starts while a failing one has not returned yet waits
 *     for it and fails too;
 *   - a sync's ENOSPC is -EIO: a checkpoint that meets it fails the pool.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "faultdev.h"
#include "store_int.h"
#include "testpool.h"

#define MiB   (1ull << 20)
#define BOUND 10 /* seconds a wait may take before the test calls it hung */

/* No checkpoint of the pool's own beside the test's syncs. */
static const struct store_opts quiet = {.checkpoint_secs = 3600};

static void test_sync_error_sticks(void **state)
{
	(void)state;
	struct faultdev *f = faultdev_new(64 * MiB);
	struct store *st = testpool_new(&f->dev, &quiet);
	static uint8_t before[2][FMT_BLOCK], after[2][FMT_BLOCK], sb[FMT_BLOCK];

	assert_int_equal(segio_sync(st->io), 0);
	f->fail_next = 1;
	assert_int_equal(segio_sync(st->io), -EIO);
	assert_int_equal(f->fail_next, 0); /* the device works again */
	assert_int_equal(segio_sync(st->io), -EIO);
	assert_int_equal(segio_sync(st->io), -EIO);
	/* No superblock goes out after it, whatever the slot. */
	for (unsigned s = 0; s < 2; s++)
		assert_int_equal(blkdev_pread(&f->dev, before[s], FMT_BLOCK, s * FMT_BLOCK), 0);
	memset(sb, 0x5a, sizeof(sb));
	for (unsigned s = 0; s < 2; s++) {
		assert_int_equal(segio_sb_write(st->io, s, sb), -EIO);
		assert_int_equal(blkdev_pread(&f->dev, after[s], FMT_BLOCK, s * FMT_BLOCK), 0);
		assert_memory_equal(before[s], after[s], FMT_BLOCK);
	}
	assert_int_not_equal(store_checkpoint(st), 0);
	store_close(st);
	faultdev_free(f);
}

struct syncer {
	struct store *st;
	pthread_t t;
	_Atomic int err;
	_Atomic bool done;
};

static void *sync_main(void *arg)
{
	struct syncer *s = arg;
	s->err = segio_sync(s->st->io);
	s->done = true;
	return NULL;
}

static void test_racing_sync_sees_error(void **state)
{
	(void)state;
	struct faultdev *f = faultdev_new(64 * MiB);
	struct store *st = testpool_new(&f->dev, &quiet);
	struct syncer a = {.st = st}, b = {.st = st};

	/* a's flush fails and is held before a learns of it */
	f->fail_next = 1;
	f->hold_failed_flush = 1;
	assert_int_equal(pthread_create(&a.t, NULL, sync_main, &a), 0);
	for (int i = 0; i < BOUND * 1000 && !f->flushes_held; i++)
		usleep(1000);
	assert_true(f->flushes_held > 0);
	/* b's flush would succeed: the device reports the error only once */
	assert_int_equal(pthread_create(&b.t, NULL, sync_main, &b), 0);
	usleep(50 * 1000);
	assert_false(b.done); /* it waits for a's sync */
	assert_false(a.done);
	f->hold_failed_flush = 0;
	assert_int_equal(pthread_join(a.t, NULL), 0);
	assert_int_equal(pthread_join(b.t, NULL), 0);
	assert_int_equal(a.err, -EIO);
	assert_int_equal(b.err, -EIO);
	store_close(st);
	faultdev_free(f);
}

/* A sync that fails with ENOSPC lost data as any failed sync did (the
 * kernel says ENOSPC when writeback found no space, as on a thin device):
 * -EIO, never taken for a full pool. */
static void test_sync_enospc_is_eio(void **state)
{
	(void)state;
	struct faultdev *f = faultdev_new(64 * MiB);
	struct store *st = testpool_new(&f->dev, &quiet);

	f->fail_flush = -ENOSPC;
	assert_int_equal(segio_sync(st->io), -EIO);
	assert_int_equal(f->fail_flush, 0);
	assert_int_equal(segio_sync(st->io), -EIO);
	store_close(st);
	faultdev_free(f);
}

/* A checkpoint whose sync fails with ENOSPC fails the pool: writes are
 * refused from then on, and the pool reopens with the flushed write.  (It
 * was "postponed" as on a full pool before: writes went on, every later
 * checkpoint met the kept error, and the pool never said it had failed.) */
static void test_ckpt_sync_enospc_fails_pool(void **state)
{
	(void)state;
	struct faultdev *f = faultdev_new(64 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&f->dev, &quiet, "v", 8 * MiB, &v);
	static uint8_t blk[FMT_BLOCK];
	struct store_stats s;

	memset(blk, 7, sizeof(blk));
	assert_int_equal(store_write(v, blk, 0, FMT_BLOCK, 0), 0);
	assert_int_equal(store_flush(v), 0);
	memset(blk, 8, sizeof(blk));
	assert_int_equal(store_write(v, blk, FMT_BLOCK, FMT_BLOCK, 0), 0);
	f->fail_flush = -ENOSPC;
	assert_int_equal(store_checkpoint(st), -EIO);
	assert_int_equal(f->fail_flush, 0);
	store_get_stats(st, &s);
	assert_true(s.failed);
	assert_int_equal(store_write(v, blk, 2 * FMT_BLOCK, FMT_BLOCK, 0), -EIO);
	assert_int_not_equal(store_flush(v), 0);
	store_vol_close(v);
	store_close(st);
	st = testpool_open(&f->dev, &quiet);
	v = NULL;
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	assert_int_equal(testpool_block_value(v, 0), 7);
	store_vol_close(v);
	store_close(st);
	faultdev_free(f);
}

/* A sound pool syncs and writes superblocks as before. */
static void test_no_error_no_change(void **state)
{
	(void)state;
	struct faultdev *f = faultdev_new(64 * MiB);
	struct store *st = testpool_new(&f->dev, &quiet);

	for (int i = 0; i < 3; i++) {
		assert_int_equal(segio_sync(st->io), 0);
		assert_int_equal(store_checkpoint(st), 0);
	}
	store_close(st);
	st = testpool_open(&f->dev, &quiet);
	assert_int_equal(segio_sync(st->io), 0);
	store_close(st);
	faultdev_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sync_error_sticks),
	    cmocka_unit_test(test_racing_sync_sees_error),
	    cmocka_unit_test(test_sync_enospc_is_eio),
	    cmocka_unit_test(test_ckpt_sync_enospc_fails_pool),
	    cmocka_unit_test(test_no_error_no_change),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
