/* test_resize.c — volume resize and rename in the store (format version
 * 2's ops): growing while attached, shrinking (refused without the flag,
 * while attached, unaligned; the blocks past the new end freed, snapshots
 * untouched), the tree-depth range, renames that snapshots and clones
 * follow, the refusals; everything surviving a power cut (replay) and a
 * checkpoint; a newer format refused; a crash-point enumeration over a
 * workload of both ops.  (Opening older pools: test_upgrade.c.)
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
#include <sys/uio.h>

#include <cmocka.h>

#include "blkdev.h"
#include "crc32c.h"
#include "faultdev.h"
#include "format.h"
#include "store.h"
#include "testpool.h"

#define MiB (1ull << 20)

static void power_cut(struct faultdev *p, struct store *st)
{
	faultdev_power_off(p);
	store_close(st);
	faultdev_power_on(p, false);
}

static void fill(char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (char)(seed * 131 + i * 7 + (i >> 12));
}

static void put(struct vol *v, uint64_t off, size_t n, unsigned seed)
{
	char *b = malloc(n);
	fill(b, n, seed);
	assert_int_equal(store_write(v, b, off, (uint32_t)n, STORE_FUA), 0);
	free(b);
}

/* [off, off + n) of export name reads seed's bytes (seed 0: zeroes). */
static void expect_at(struct store *st, const char *name, uint64_t off, size_t n, unsigned seed)
{
	char *want = calloc(1, n), *got = malloc(n);
	struct vol *v;

	if (seed)
		fill(want, n, seed);
	assert_int_equal(store_vol_open(st, name, &v), 0);
	assert_int_equal(store_read(v, got, off, (uint32_t)n), 0);
	assert_memory_equal(want, got, n);
	store_vol_close(v);
	free(want);
	free(got);
}

static uint64_t size_of(struct store *st, const char *name)
{
	struct store_vol_info vi;
	assert_int_equal(store_info(st, name, &vi), 0);
	return vi.size;
}

static uint64_t mapped_of(struct store *st, const char *name)
{
	struct store_vol_info vi;
	assert_int_equal(store_info(st, name, &vi), 0);
	return vi.mapped_blocks;
}

static uint32_t version_of(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s.format_version;
}

/* Rewrite both superblock slots of a formatted, closed pool with another
 * format version (and a valid CRC): a pool as an older cowbd made it. */
static void set_version(struct faultdev *p, uint32_t version)
{
	for (uint64_t slot = 0; slot < 2; slot++) {
		struct fmt_super sb;
		struct iovec iov = {.iov_base = &sb, .iov_len = sizeof(sb)};

		assert_int_equal(blkdev_pread(&p->dev, &sb, sizeof(sb), slot * FMT_BLOCK), 0);
		sb.version = version;
		sb.crc = 0;
		sb.crc = crc32c(0, &sb, sizeof(sb));
		assert_int_equal(blkdev_pwritev(&p->dev, &iov, 1, slot * FMT_BLOCK), 0);
	}
	assert_int_equal(blkdev_flush(&p->dev), 0);
}

/* Grow while attached: the handle and new ones see the new size, data on
 * both sides of the old end is kept, a snapshot keeps its size; all of it
 * after a power cut (replay) and after a checkpoint and clean reopen. */
static void test_grow(void **state)
{
	struct faultdev *p = faultdev_new(128 * MiB);
	struct store *st;
	struct vol *v;

	st = testpool_volume(&p->dev, NULL, "v", 8 * MiB, &v);
	put(v, 7 * MiB, MiB, 1);
	assert_int_equal(store_snap_create(st, "v@before"), 0);
	assert_int_equal(store_vol_resize(st, "v", 16 * MiB, 0), 0);
	assert_int_equal(store_vol_size(v), 16 * MiB);
	put(v, 12 * MiB, MiB, 2);
	store_vol_close(v);
	assert_int_equal(size_of(st, "v@before"), 8 * MiB);
	assert_int_equal(store_vol_resize(st, "v", 16 * MiB, 0), 0); /* same size: no-op */
	for (int round = 0; round < 2; round++) {
		if (round == 0) {
			power_cut(p, st);
		} else {
			assert_int_equal(store_checkpoint(st), 0);
			store_close(st);
		}
		st = testpool_open(&p->dev, NULL);
		assert_int_equal(store_check(st), 0);
		assert_int_equal(size_of(st, "v"), 16 * MiB);
		assert_int_equal(size_of(st, "v@before"), 8 * MiB);
		expect_at(st, "v", 7 * MiB, MiB, 1);
		expect_at(st, "v", 12 * MiB, MiB, 2);
		expect_at(st, "v", 15 * MiB, MiB, 0);
		expect_at(st, "v@before", 7 * MiB, MiB, 1);
	}
	store_close(st);
	faultdev_free(p);
}

/* Shrink: refused without the flag, while attached and to an unaligned
 * size; then the blocks past the end are unmapped (a snapshot still has
 * them), a grow back reads zeroes there; replay and the check agree. */
static void test_shrink(void **state)
{
	struct faultdev *p = faultdev_new(128 * MiB);
	struct store *st;
	struct vol *v;

	st = testpool_volume(&p->dev, NULL, "v", 8 * MiB, &v);
	put(v, 0, MiB, 3);
	put(v, 6 * MiB, MiB, 4);
	assert_int_equal(store_snap_create(st, "v@s"), 0);
	assert_int_equal(mapped_of(st, "v"), 2 * MiB / STORE_BLOCK_SIZE);
	assert_int_equal(store_vol_resize(st, "v", 4 * MiB, 0), -EPERM);
	assert_int_equal(store_vol_resize(st, "v", 4 * MiB, STORE_RESIZE_SHRINK), -EBUSY);
	store_vol_close(v);
	assert_int_equal(store_vol_resize(st, "v", 4 * MiB + 512, STORE_RESIZE_SHRINK), -EINVAL);
	assert_int_equal(size_of(st, "v"), 8 * MiB); /* nothing changed */
	assert_int_equal(mapped_of(st, "v"), 2 * MiB / STORE_BLOCK_SIZE);
	assert_int_equal(store_vol_resize(st, "v", 4 * MiB, STORE_RESIZE_SHRINK), 0);
	assert_int_equal(mapped_of(st, "v"), MiB / STORE_BLOCK_SIZE);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	assert_int_equal(store_vol_size(v), 4 * MiB);
	store_vol_close(v);
	power_cut(p, st);

	st = testpool_open(&p->dev, NULL);
	assert_int_equal(store_check(st), 0);
	assert_int_equal(size_of(st, "v"), 4 * MiB);
	assert_int_equal(mapped_of(st, "v"), MiB / STORE_BLOCK_SIZE);
	expect_at(st, "v", 0, MiB, 3);
	expect_at(st, "v@s", 6 * MiB, MiB, 4);
	assert_int_equal(store_vol_resize(st, "v", 8 * MiB, 0), 0);
	expect_at(st, "v", 4 * MiB, 4 * MiB, 0);
	/* The snapshot alone holds the old blocks: deleting it frees them. */
	assert_int_equal(store_snap_delete(st, "v@s"), 0);
	power_cut(p, st);
	st = testpool_open(&p->dev, NULL);
	assert_int_equal(store_check(st), 0);
	expect_at(st, "v", 0, MiB, 3);
	expect_at(st, "v", 4 * MiB, 4 * MiB, 0);
	store_close(st);
	faultdev_free(p);
}

/* The depth of a volume's tree is fixed: the range of sizes, refusals of
 * sizes outside it, of snapshots, missing volumes and bad sizes. */
static void test_resize_limits(void **state)
{
	struct faultdev *p = faultdev_new(96 * MiB);
	struct store *st = testpool_volume(&p->dev, NULL, "v", 64 * MiB, NULL);
	uint64_t lo, hi;

	store_resize_range(64 * MiB, &lo, &hi);
	assert_int_equal(lo, 504ull * 4096 + 512);
	assert_int_equal(hi, 504ull * 504 * 4096);
	assert_int_equal(store_vol_resize(st, "v", hi + 4096, 0), -ERANGE);
	store_resize_range(4096, &lo, &hi);
	assert_int_equal(lo, 512);
	assert_int_equal(hi, 504ull * 4096);
	assert_int_equal(store_vol_resize(st, "v", 504ull * 504 * 4096, 0), 0);
	assert_int_equal(store_vol_resize(st, "v", 504ull * 4096, STORE_RESIZE_SHRINK), -ERANGE);
	assert_int_equal(store_vol_resize(st, "v", 504ull * 4096 + 4096, STORE_RESIZE_SHRINK), 0);
	assert_int_equal(store_vol_resize(st, "v", 1000, 0), -EINVAL);
	assert_int_equal(store_vol_resize(st, "v", 0, 0), -EINVAL);
	assert_int_equal(store_vol_resize(st, "nope", 64 * MiB, 0), -ENOENT);
	assert_int_equal(store_snap_create(st, "v@s"), 0);
	assert_int_equal(store_vol_resize(st, "v@s", 64 * MiB, 0), -EINVAL);
	store_close(st);
	faultdev_free(p);
}

/* Rename: snapshots follow, a clone's origin follows, the old name is
 * free; refusals change nothing; replay and a checkpoint keep it. */
static void test_rename(void **state)
{
	struct faultdev *p = faultdev_new(128 * MiB);
	struct store *st;
	struct store_vol_info vi;
	struct store_why why;
	struct vol *v;

	st = testpool_volume(&p->dev, NULL, "v", 8 * MiB, &v);
	put(v, 0, MiB, 5);
	store_vol_close(v);
	assert_int_equal(store_snap_create(st, "v@s1"), 0);
	assert_int_equal(store_clone(st, "v@s1", "c"), 0);
	assert_int_equal(store_vol_create(st, "other", 4 * MiB), 0);
	assert_int_equal(store_vol_rename(st, "v", "other"), -EEXIST);
	assert_int_equal(store_vol_rename(st, "v", "v"), -EEXIST);
	assert_int_equal(store_vol_rename(st, "v@s1", "w"), -EINVAL);
	assert_int_equal(store_vol_rename(st, "v", "a@b"), -EINVAL);
	assert_int_equal(store_vol_rename(st, "nope", "w"), -ENOENT);
	/* An attached snapshot holds its volume's name. */
	assert_int_equal(store_vol_open(st, "v@s1", &v), 0);
	assert_int_equal(store_vol_rename(st, "v", "w"), -EBUSY);
	store_explain(st, STORE_OP_VOL_RENAME, "v", "w", -EBUSY, &why);
	assert_int_equal(why.code, STORE_WHY_ATTACHED);
	assert_string_equal(why.subject, "v@s1");
	store_vol_close(v);
	assert_int_equal(store_vol_rename(st, "v", "w"), 0);
	assert_int_equal(store_info(st, "v", &vi), -ENOENT);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(store_info(st, "v@s1", &vi), -ENOENT);
		expect_at(st, "w", 0, MiB, 5);
		expect_at(st, "w@s1", 0, MiB, 5);
		assert_int_equal(store_info(st, "c", &vi), 0);
		assert_string_equal(vi.origin, "w@s1");
		/* The old name is free again. */
		if (round == 0) {
			assert_int_equal(store_vol_create(st, "v", 4 * MiB), 0);
			power_cut(p, st);
		} else {
			assert_int_equal(store_checkpoint(st), 0);
			store_close(st);
		}
		st = testpool_open(&p->dev, NULL);
		assert_int_equal(store_check(st), 0);
		assert_int_equal(size_of(st, "v"), 4 * MiB);
	}
	store_close(st);
	faultdev_free(p);
}

/* A version 1 pool (an older cowbd's) opens and stays version 1 through
 * the ops version 1 knows; the first resize makes it version 2 before
 * the op is logged, durably; a version newer than ours is refused. */
/* A pool of a newer format than this cowbd knows is refused, clearly. */
static void test_newer_refused(void **state)
{
	struct faultdev *p = faultdev_new(96 * MiB);
	const char *why = NULL;

	assert_int_equal(store_format(&p->dev), 0);
	set_version(p, FMT_VERSION + 1);
	assert_null(store_open(&p->dev, NULL, &why));
	assert_int_equal(errno, EPROTONOSUPPORT);
	assert_non_null(strstr(why, "newer"));
	faultdev_free(p);
}

/* Crash points over resize and rename: after a power cut at every device
 * write or flush the workload reaches, the pool opens and checks clean, an
 * acknowledged op is there (size, name), data written before it is
 * intact. */
struct cp_state {
	bool grown, renamed, shrunk;
};

static long cp_workload(struct faultdev *p, bool verify, struct cp_state *s)
{
	struct store_opts o = {.checkpoint_bytes = 256 << 10};
	struct store_vol_info vi;
	const char *why = NULL;
	struct store *st = store_open(&p->dev, &o, &why);
	const char *name;
	struct vol *v;

	if (!st && !verify && p->dead)
		return p->calls;
	if (!st)
		fail_msg("open: %s", why);
	if (verify) {
		/* The durable state is a prefix of the workload's ops, at
		 * least as long as the acknowledged ones. */
		unsigned acked = s->grown + s->renamed + s->shrunk, k;

		assert_int_equal(store_check(st), 0);
		name = store_info(st, "w", &vi) == 0 ? "w" : "v";
		assert_int_equal(store_info(st, name, &vi), 0);
		if (!strcmp(name, "v"))
			k = vi.size == 8 * MiB ? 0 : vi.size == 16 * MiB ? 1 : 9;
		else
			k = vi.size == 16 * MiB ? 2 : vi.size == 4 * MiB ? 3 : 9;
		if (k == 9 || k < acked)
			fail_msg("after the crash: %s of %llu bytes, %u ops acknowledged", name,
			         (unsigned long long)vi.size, acked);
		assert_int_equal(version_of(st), FMT_VERSION);
		expect_at(st, name, 0, MiB, 6);
		store_close(st);
		return 0;
	}
	if (store_vol_resize(st, "v", 16 * MiB, 0) == 0)
		s->grown = true;
	if (s->grown && store_vol_open(st, "v", &v) == 0) {
		char *b = malloc(MiB);
		fill(b, MiB, 7);
		store_write(v, b, 12 * MiB, MiB, STORE_FUA);
		free(b);
		store_vol_close(v);
	}
	if (s->grown && store_vol_rename(st, "v", "w") == 0)
		s->renamed = true;
	if (s->renamed && store_vol_resize(st, "w", 4 * MiB, STORE_RESIZE_SHRINK) == 0)
		s->shrunk = true;
	store_close(st);
	return p->calls;
}

/* A pool with v (8 MiB, 1 MiB of seed 6 at 0), closed. */
static struct faultdev *cp_pool(void)
{
	struct faultdev *p = faultdev_new(96 * MiB);
	struct store *st;
	struct vol *v;

	assert_int_equal(store_format(&p->dev), 0);
	st = testpool_open(&p->dev, NULL);
	assert_int_equal(store_vol_create(st, "v", 8 * MiB), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	put(v, 0, MiB, 6);
	store_vol_close(v);
	store_close(st);
	p->calls = 0;
	return p;
}

static void test_crash_points(void **state)
{
	struct cp_state s = {0};
	struct faultdev *p = cp_pool();
	long total = cp_workload(p, false, &s);

	assert_true(s.grown && s.renamed && s.shrunk);
	faultdev_free(p);
	assert_true(total > 10);
	for (long n = 0; n <= total; n++) {
		struct cp_state c = {0};

		p = cp_pool();
		p->budget = n;
		cp_workload(p, false, &c);
		faultdev_power_on_rotate(p, n);
		cp_workload(p, true, &c);
		faultdev_free(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grow),          cmocka_unit_test(test_shrink),
	    cmocka_unit_test(test_resize_limits), cmocka_unit_test(test_rename),
	    cmocka_unit_test(test_newer_refused), cmocka_unit_test(test_crash_points),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
