/* test_memdev.c — the in-memory test device's power cuts (blkdev.c), the
 * model every store crash test stands on: a flush makes every write
 * durable; a plain cut loses everything since the flush (torn: the last
 * write keeps its first half); a mixed cut leaves each page written since
 * the flush as its durable image or any image a write since gave it —
 * every such image possible, nothing else, pages chosen independently,
 * nothing from before the flush, at most 8 earlier images kept per page.
 * Pages are written whole with one byte value so that an image is a value
 * and a mix within a page shows. */
#undef NDEBUG
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blkdev.h"

#define PAGE   4096u
#define NPAGES 16u
#define SEEDS  256u /* a page with 4 possible images sees each at p >= 1/24 per seed */

static void put(struct blkdev *d, unsigned page, unsigned char x)
{
	unsigned char b[PAGE];
	struct iovec iov = {.iov_base = b, .iov_len = PAGE};

	memset(b, x, PAGE);
	assert_int_equal(blkdev_pwritev(d, &iov, 1, (uint64_t)page * PAGE), 0);
}

/* The value page holds, whole (fails on a page that mixes two). */
static unsigned char value(struct blkdev *d, unsigned page)
{
	unsigned char b[PAGE];

	assert_int_equal(blkdev_pread(d, b, PAGE, (uint64_t)page * PAGE), 0);
	for (unsigned i = 1; i < PAGE; i++)
		if (b[i] != b[0])
			fail_msg("page %u mixes %u and %u at byte %u", page, b[0], b[i], i);
	return b[0];
}

/* The page holds x now and keeps it through a plain cut (durable). */
static void expect_durable(struct blkdev *d, unsigned page, unsigned char x)
{
	assert_int_equal(value(d, page), x);
	blkdev_mem_crash(d, false);
	assert_int_equal(value(d, page), x);
}

/* A fresh device with page 0 durable as 1, then written as 2, 3, 4. */
static struct blkdev *three_rewrites(void)
{
	struct blkdev *d = blkdev_mem_new(NPAGES * PAGE);

	assert_non_null(d);
	put(d, 0, 1);
	assert_int_equal(blkdev_flush(d), 0);
	put(d, 0, 2);
	put(d, 0, 3);
	put(d, 0, 4);
	return d;
}

/* The pages test_flush_makes_durable flushed: 10 + p, page 3 rewritten
 * as 41, 50 from the middle of page 5 to the middle of page 6. */
static void expect_flushed(struct blkdev *d)
{
	unsigned char b[PAGE];

	for (unsigned p = 0; p < NPAGES; p++) {
		if (p == 5 || p == 6)
			continue;
		assert_int_equal(value(d, p), p == 3 ? 41 : 10 + p);
	}
	assert_int_equal(blkdev_pread(d, b, PAGE, 5 * PAGE), 0);
	assert_int_equal(b[0], 15);
	assert_int_equal(b[PAGE - 1], 50);
	assert_int_equal(blkdev_pread(d, b, PAGE, 6 * PAGE), 0);
	assert_int_equal(b[0], 50);
	assert_int_equal(b[PAGE - 1], 16);
}

/* (a) After a successful flush no cut of any kind loses a write, rewritten
 * pages and pages that straddle two writes included; and the flushed
 * images are the durable ones (a later write of every page, cut, goes back
 * to them — a cut touches only pages written since the flush). */
static void test_flush_makes_durable(void **state)
{
	for (unsigned seed = 0; seed < SEEDS; seed++) {
		struct blkdev *d = blkdev_mem_new(NPAGES * PAGE);
		unsigned char b[PAGE];
		struct iovec iov[2] = {{b, PAGE / 4}, {b + PAGE / 4, 3 * PAGE / 4}};

		for (unsigned p = 0; p < NPAGES; p++)
			put(d, p, (unsigned char)(10 + p));
		put(d, 3, 40);
		put(d, 3, 41);
		/* the second half of page 5 and the first of 6, in one two-piece write */
		memset(b, 50, sizeof(b));
		assert_int_equal(blkdev_pwritev(d, iov, 2, 5 * PAGE + PAGE / 2), 0);
		assert_int_equal(blkdev_flush(d), 0);
		switch (seed % 3) {
		case 0:
			blkdev_mem_crash_mixed(d, seed);
			break;
		case 1:
			blkdev_mem_crash(d, false);
			break;
		case 2:
			blkdev_mem_crash(d, true);
			break;
		}
		expect_flushed(d);
		for (unsigned p = 0; p < NPAGES; p++)
			put(d, p, 99);
		blkdev_mem_crash(d, false);
		expect_flushed(d);
		blkdev_close(d);
	}
}

/* (b) A page written 3 times since the flush ends, over many seeds, as each
 * of its 4 images (durable 1; 2, 3; newest 4) and as nothing else; the
 * device is clean after the cut (a second cut changes nothing). */
static void test_mixed_every_version(void **state)
{
	unsigned seen[5] = {0};

	for (unsigned seed = 0; seed < SEEDS; seed++) {
		struct blkdev *d = three_rewrites();

		blkdev_mem_crash_mixed(d, seed);
		unsigned char x = value(d, 0);
		if (x < 1 || x > 4)
			fail_msg("seed %u: page reads %u, not one of 1..4", seed, x);
		seen[x]++;
		blkdev_mem_crash_mixed(d, seed + 1);
		expect_durable(d, 0, x);
		for (unsigned p = 1; p < NPAGES; p++)
			assert_int_equal(value(d, p), 0); /* never written */
		blkdev_close(d);
	}
	print_message("page images over %u seeds: durable %u, 2nd %u, 3rd %u, newest %u\n", SEEDS,
	              seen[1], seen[2], seen[3], seen[4]);
	for (unsigned x = 1; x <= 4; x++)
		assert_true(seen[x] > 0);
}

/* The same seed gives the same cut. */
static void test_mixed_deterministic(void **state)
{
	for (unsigned seed = 0; seed < 32; seed++) {
		unsigned char got[2][NPAGES];

		for (int k = 0; k < 2; k++) {
			struct blkdev *d = blkdev_mem_new(NPAGES * PAGE);
			for (unsigned p = 0; p < NPAGES; p++) {
				put(d, p, 1);
				put(d, p, 2);
			}
			blkdev_mem_crash_mixed(d, seed);
			for (unsigned p = 0; p < NPAGES; p++)
				got[k][p] = value(d, p);
			blkdev_close(d);
		}
		assert_memory_equal(got[0], got[1], NPAGES);
	}
}

/* (c) Pages choose independently: two pages each written 3 times since
 * the flush end, over the seeds, in every one of the 16 pairs of images. */
static void test_mixed_pages_independent(void **state)
{
	bool pair[5][5] = {{false}};
	unsigned npairs = 0;

	for (unsigned seed = 0; seed < 4 * SEEDS; seed++) {
		struct blkdev *d = blkdev_mem_new(NPAGES * PAGE);

		put(d, 2, 1);
		put(d, 9, 1);
		assert_int_equal(blkdev_flush(d), 0);
		for (unsigned char x = 2; x <= 4; x++) {
			put(d, 2, x);
			put(d, 9, x);
		}
		blkdev_mem_crash_mixed(d, seed);
		unsigned char a = value(d, 2), b = value(d, 9);
		assert_true(a >= 1 && a <= 4 && b >= 1 && b <= 4);
		if (!pair[a][b])
			npairs++;
		pair[a][b] = true;
		blkdev_close(d);
	}
	print_message("pairs of images of two pages: %u of 16\n", npairs);
	assert_int_equal(npairs, 16);
}

/* Over the seeds: page 0 as three_rewrites() left it, then step, after
 * which its durable image is durable (how names the step in a failure),
 * then written as last; a mixed cut leaves it as durable or last only,
 * and both are seen. */
static void expect_either(void (*step)(struct blkdev *), const char *how, unsigned char durable,
                          unsigned char last)
{
	unsigned seen[256] = {0};

	for (unsigned seed = 0; seed < SEEDS; seed++) {
		struct blkdev *d = three_rewrites(); /* durable 1, then 2, 3, 4 */

		step(d);
		put(d, 0, last);
		blkdev_mem_crash_mixed(d, seed);
		unsigned char x = value(d, 0);
		if (x != durable && x != last)
			fail_msg("seed %u: page reads %u after %s (%u) and a write (%u)", seed, x,
			         how, durable, last);
		seen[x]++;
		blkdev_close(d);
	}
	assert_true(seen[durable] > 0 && seen[last] > 0);
}

static void flush_step(struct blkdev *d)
{
	assert_int_equal(blkdev_flush(d), 0); /* durable 4 */
}

/* (d) Versions do not outlive a flush: written 2, 3, 4 after the flush of
 * 1, flushed, written 5: a page ends as 4 or 5 (both seen), never 1, 2 or
 * 3 (nor 0, never written). */
static void test_flush_drops_versions(void **state)
{
	expect_either(flush_step, "flush", 4, 5);
}

static void crash_step(struct blkdev *d)
{
	blkdev_mem_crash(d, false);
	assert_int_equal(value(d, 0), 1);
}

/* A cut drops the versions too: written 2, 3, 4 after the flush of 1, a
 * plain cut (back to 1), then written 5: the page ends as 1 or 5 only
 * (both seen). */
static void test_crash_drops_versions(void **state)
{
	expect_either(crash_step, "a cut", 1, 5);
}

/* At most 8 earlier images per page: written 1..20 after the flush of 0,
 * the page ends as 0, 1 (the oldest kept), 13..19 (the 7 latest earlier
 * ones) or 20 (the newest), each seen, and never as 2..12. */
static void test_mixed_version_cap(void **state)
{
	bool seen[21] = {false};

	for (unsigned seed = 0; seed < 8 * SEEDS; seed++) {
		struct blkdev *d = blkdev_mem_new(NPAGES * PAGE);

		assert_int_equal(blkdev_flush(d), 0);
		for (unsigned char x = 1; x <= 20; x++)
			put(d, 4, x);
		blkdev_mem_crash_mixed(d, seed);
		unsigned char x = value(d, 4);
		if (x > 20 || (x >= 2 && x <= 12))
			fail_msg("seed %u: page reads %u, not 0, 1, 13..20", seed, x);
		seen[x] = true;
		blkdev_close(d);
	}
	for (unsigned x = 0; x <= 20; x++)
		if (x < 2 || x > 12)
			assert_true(seen[x]);
}

/* (e) The plain cut is as it was: every page written since the flush,
 * rewritten or not, goes back to its durable image; torn keeps the first
 * half of the last write (whole pages) and loses everything else.  A cut
 * also disarms a pending write or flush failure. */
static void test_plain_and_torn(void **state)
{
	struct blkdev *d = three_rewrites(); /* page 0: durable 1, then 2, 3, 4 */
	unsigned char b[4 * PAGE];
	struct iovec iov = {.iov_base = b, .iov_len = sizeof(b)};

	put(d, 1, 7);
	put(d, 8, 7);
	blkdev_mem_fail_write(d, 5);
	blkdev_mem_fail_flush(d, 2);
	blkdev_mem_crash(d, false);
	for (unsigned p = 0; p < NPAGES; p++)
		assert_int_equal(value(d, p), p == 0 ? 1 : 0);
	for (int i = 0; i < 6; i++)
		put(d, 10, (unsigned char)(20 + i)); /* no failure armed now */
	assert_int_equal(blkdev_flush(d), 0);
	assert_int_equal(blkdev_flush(d), 0);

	/* torn: pages 12..15 in one write after 0 and 1 were rewritten */
	put(d, 0, 30);
	put(d, 0, 31);
	memset(b, 60, sizeof(b));
	assert_int_equal(blkdev_pwritev(d, &iov, 1, 12 * PAGE), 0);
	blkdev_mem_crash(d, true);
	assert_int_equal(value(d, 0), 1);
	assert_int_equal(value(d, 10), 25);
	assert_int_equal(value(d, 12), 60);
	assert_int_equal(value(d, 13), 60);
	assert_int_equal(value(d, 14), 0);
	assert_int_equal(value(d, 15), 0);
	expect_durable(d, 12, 60);
	blkdev_close(d);
}

/* A mixed cut disarms a pending write or flush failure too. */
static void test_mixed_resets_failures(void **state)
{
	struct blkdev *d = blkdev_mem_new(NPAGES * PAGE);

	put(d, 0, 1);
	blkdev_mem_fail_write(d, 1);
	blkdev_mem_fail_flush(d, 1);
	blkdev_mem_crash_mixed(d, 7);
	put(d, 0, 2);
	assert_int_equal(blkdev_flush(d), 0);
	expect_durable(d, 0, 2);
	blkdev_close(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_flush_makes_durable),
	    cmocka_unit_test(test_mixed_every_version),
	    cmocka_unit_test(test_mixed_deterministic),
	    cmocka_unit_test(test_mixed_pages_independent),
	    cmocka_unit_test(test_flush_drops_versions),
	    cmocka_unit_test(test_crash_drops_versions),
	    cmocka_unit_test(test_mixed_version_cap),
	    cmocka_unit_test(test_plain_and_torn),
	    cmocka_unit_test(test_mixed_resets_failures),
	};
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
