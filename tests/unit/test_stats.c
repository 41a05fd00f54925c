/* test_stats.c — the pool counters that say where time and bytes went
 * (store_stats, issue 12): FLUSH and FUA requests counted exactly;
 * bytes_written equal to what the device below received, a checkpoint
 * adding its log blocks and one superblock copy; the log thread's time on
 * checkpoints and compaction, and the committer's sync time, at least the
 * time a held sync took. */
#undef NDEBUG
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "faultdev.h"
#include "store.h"
#include "testpool.h"

#define BS  STORE_BLOCK_SIZE
#define MiB (1ull << 20)

static struct store_stats stats(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s;
}

/* ---- a device that counts the bytes written to it ---------------------- */

struct countdev {
	struct blkdev dev;
	struct blkdev *lower; /* an in-memory device, ours */
	uint64_t bytes;       /* written without error (atomic: store threads) */
};

static struct blkdev *lower_of(struct blkdev *d)
{
	return ((struct countdev *)d)->lower;
}

static int cd_pread(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	return blkdev_pread(lower_of(d), buf, len, off);
}

static int cd_pread_nowait(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	return blkdev_pread_nowait(lower_of(d), buf, len, off);
}

static int cd_pwritev(struct blkdev *d, const struct iovec *iov, int n, uint64_t off)
{
	int err = blkdev_pwritev(lower_of(d), iov, n, off);
	uint64_t len = 0;

	for (int i = 0; i < n && !err; i++)
		len += iov[i].iov_len;
	__atomic_fetch_add(&((struct countdev *)d)->bytes, len, __ATOMIC_RELAXED);
	return err;
}

static int cd_flush(struct blkdev *d)
{
	return blkdev_flush(lower_of(d));
}

static int cd_discard(struct blkdev *d, uint64_t off, uint64_t len)
{
	return blkdev_discard(lower_of(d), off, len);
}

static void cd_close(struct blkdev *d)
{
	(void)d; /* kept across store_close: countdev_free */
}

static const struct blkdev_ops cd_ops = {
    .pread = cd_pread,
    .pread_nowait = cd_pread_nowait,
    .pwritev = cd_pwritev,
    .flush = cd_flush,
    .discard = cd_discard,
    .close = cd_close,
};

static struct countdev *countdev_new(uint64_t size)
{
	struct countdev *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->lower = blkdev_mem_new(size);
	assert_non_null(c->lower);
	c->dev = (struct blkdev){.ops = &cd_ops, .size = size, .fd = -1};
	return c;
}

static uint64_t countdev_bytes(struct countdev *c)
{
	return __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
}

static void countdev_free(struct countdev *c)
{
	blkdev_close(c->lower);
	free(c);
}

/* ---- tests ------------------------------------------------------------- */

/* Every FLUSH, and every write, trim and zero with FUA, counts once;
 * requests without FUA do not. */
static void test_flush_fua(void **state)
{
	struct faultdev *p = faultdev_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 16 * MiB, &v);
	char buf[BS];
	struct store_stats s0 = stats(st), s1;

	memset(buf, 'f', BS);
	for (unsigned i = 0; i < 7; i++)
		assert_int_equal(store_flush(v), 0);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(store_write(v, buf, i * BS, BS, 0), 0);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(store_write(v, buf, i * BS, BS, STORE_FUA), 0);
	assert_int_equal(store_trim(v, 8 * BS, BS, STORE_FUA), 0);
	assert_int_equal(store_zero(v, 9 * BS, BS, STORE_FUA), 0);
	assert_int_equal(store_zero(v, 10 * BS, BS, 0), 0);
	s1 = stats(st);
	assert_int_equal(s1.flushes - s0.flushes, 7);
	assert_int_equal(s1.fua_requests - s0.fua_requests, 5);
	assert_true(s1.syncs - s0.syncs >= 12); /* each request was alone in its round */
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

/* bytes_written is what reached the device: client data and the log's
 * own blocks, background checkpoints' superblocks too; a synchronous
 * checkpoint adds its log blocks and one superblock copy. */
static void test_bytes_written(void **state)
{
	static const struct store_opts opts = {.checkpoint_bytes = 256u << 10};
	struct countdev *c = countdev_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&c->dev, &opts, "v", 32 * MiB, &v);
	char *buf = malloc(MiB);
	struct store_stats s0 = stats(st), s1, s2;
	uint64_t d0 = countdev_bytes(c);

	assert_non_null(buf);
	for (unsigned i = 0; i < 8; i++) {
		memset(buf, 'a' + (int)i, MiB);
		assert_int_equal(store_write(v, buf, i * MiB, MiB, 0), 0);
	}
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_checkpoint(st), 0); /* waits for one in flight */
	s1 = stats(st);
	assert_true(s1.checkpoints - s0.checkpoints >= 2); /* background ones, then ours */
	assert_true(s1.client_write_bytes - s0.client_write_bytes == 8 * MiB);
	assert_true(s1.bytes_written - s0.bytes_written >= 8 * MiB);
	assert_int_equal(s1.bytes_written - s0.bytes_written, countdev_bytes(c) - d0);
	/* The log's appends, and the superblock copies beside them. */
	assert_true(s1.bytes_written - s0.bytes_written > (s1.batch_blocks - s0.batch_blocks) * BS);

	assert_int_equal(store_checkpoint(st), 0);
	s2 = stats(st);
	assert_int_equal(s2.checkpoints - s1.checkpoints, 1);
	assert_int_equal(s2.bytes_written - s1.bytes_written,
	                 (s2.batch_blocks - s1.batch_blocks) * BS + BS);
	assert_int_equal(s2.bytes_written - s0.bytes_written, countdev_bytes(c) - d0);
	free(buf);
	store_vol_close(v);
	store_close(st);
	countdev_free(c);
}

/* A checkpoint's time on the log thread is counted; a background one's
 * sync is counted as the committer's, for at least as long as it was
 * held. */
static void test_checkpoint_time(void **state)
{
	static const struct store_opts opts = {.checkpoint_bytes = 256u << 10};
	struct faultdev *p = faultdev_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, &opts, "v", 32 * MiB, &v);
	char buf[BS];
	struct store_stats s0 = stats(st), s1;
	const uint64_t held_ns = 50 * 1000000ull;

	alarm(60);
	memset(buf, 'c', BS);
	assert_int_equal(store_checkpoint(st), 0);
	s1 = stats(st);
	assert_int_equal(s1.checkpoints - s0.checkpoints, 1);
	assert_true(s1.ckpt_log_ns > s0.ckpt_log_ns);
	assert_int_equal(s1.ckpt_sync_ns, s0.ckpt_sync_ns); /* synchronous: no committer */

	/* A background checkpoint whose sync waits held_ns. */
	s0 = s1;
	p->hold_flush = 1;
	for (uint64_t lba = 0; !p->flushes_held; lba++)
		assert_int_equal(store_write(v, buf, (lba % 4096) * BS, BS, 0), 0);
	struct timespec ts = {.tv_nsec = (long)held_ns};
	nanosleep(&ts, NULL);
	p->hold_flush = 0;
	assert_int_equal(store_checkpoint(st), 0);
	s1 = stats(st);
	assert_true(s1.checkpoints - s0.checkpoints >= 2);
	assert_true(s1.ckpt_sync_ns - s0.ckpt_sync_ns >= held_ns);
	assert_true(s1.ckpt_log_ns > s0.ckpt_log_ns);
	alarm(0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

/* A compaction pass is counted with its time on the log thread. */
static void test_compact_time(void **state)
{
	struct faultdev *p = faultdev_new(160 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 16 * MiB, &v);
	char *buf = malloc(MiB);
	struct store_stats s0, s1;

	assert_non_null(buf);
	/* Four segments of data, then every other MiB trimmed: half-live
	 * segments, each a victim. */
	memset(buf, 'k', MiB);
	for (uint64_t off = 0; off < 16 * MiB; off += MiB)
		assert_int_equal(store_write(v, buf, off, MiB, 0), 0);
	for (uint64_t off = 0; off < 16 * MiB; off += 2 * MiB)
		assert_int_equal(store_trim(v, off, MiB, 0), 0);
	assert_int_equal(store_flush(v), 0);
	s0 = stats(st);
	int64_t moved = store_compact(st);
	s1 = stats(st);
	assert_true(moved > 0);
	assert_true(s1.compactions > s0.compactions);
	assert_true(s1.compacted_blocks - s0.compacted_blocks >= (uint64_t)moved);
	assert_true(s1.compact_ns > s0.compact_ns);
	free(buf);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_flush_fua),
	    cmocka_unit_test(test_bytes_written),
	    cmocka_unit_test(test_checkpoint_time),
	    cmocka_unit_test(test_compact_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
