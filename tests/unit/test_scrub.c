/* test_scrub.c — the background scrub (src/scrub.c) on a real store over
 * the in-memory device: a block shared by a volume, its snapshot and a
 * clone is read once per pass; a damaged block is found and reported by
 * every name that maps it (read-write and read-only pools); volumes
 * deleted during a pass are skipped; the rate bounds a pass from below;
 * one pass at a time; stop and close end a pass at once. */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "blkdev.h"
#include "faultdev.h"
#include "store.h"
#include "testpool.h"

#define BS    4096u
#define FAST  (1ull << 30) /* bytes per second: no pacing to speak of */
#define SLOWS 30           /* seconds a pass may take before the test gives up */

static void fill(char *b, unsigned lba, unsigned gen)
{
	for (unsigned i = 0; i < BS; i++)
		b[i] = (char)(lba * 131 + gen * 17 + i * 7 + (i >> 8));
}

/* Write blocks [lo, hi) of v with generation gen's bytes. */
static void put_blocks(struct vol *v, unsigned lo, unsigned hi, unsigned gen)
{
	char b[BS];
	for (unsigned lba = lo; lba < hi; lba++) {
		fill(b, lba, gen);
		assert_int_equal(store_write(v, b, (uint64_t)lba * BS, BS, 0), 0);
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for the pass to end; its status (and up to max damaged pairs). */
static unsigned wait_pass(struct store *st, struct store_scrub_status *s,
                          struct store_scrub_damage *d, unsigned max)
{
	double give_up = now_s() + SLOWS;
	unsigned n;
	for (;;) {
		n = store_scrub_status(st, s, d, max);
		if (s->state != STORE_SCRUB_RUNNING)
			return n;
		assert_true(now_s() < give_up);
		usleep(10 * 1000);
	}
}

static struct vol *open_vol(struct store *st, const char *name)
{
	struct vol *v;
	assert_int_equal(store_vol_open(st, name, &v), 0);
	return v;
}

/* v: 100 blocks; v@s shares all of them; c, cloned from v@s, overwrites 10.
 * Distinct data blocks: 110; mapped: 300. */
static void test_shared_once(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	struct store_scrub_status s;
	struct vol *v, *c;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 8u << 20, &v);

	store_scrub_status(st, &s, NULL, 0);
	assert_int_equal(s.state, STORE_SCRUB_IDLE);
	put_blocks(v, 0, 100, 0);
	assert_int_equal(store_snap_create(st, "v@s"), 0);
	assert_int_equal(store_clone(st, "v@s", "c"), 0);
	c = open_vol(st, "c");
	put_blocks(c, 50, 60, 1);

	assert_int_equal(store_scrub_start(st, FAST), 0);
	assert_int_equal(wait_pass(st, &s, NULL, 0), 0);
	assert_int_equal(s.state, STORE_SCRUB_DONE);
	assert_int_equal(s.pass, 1);
	assert_int_equal(s.volumes_total, 3);
	assert_int_equal(s.volumes_done, 3);
	assert_int_equal(s.blocks_total, 300);
	assert_int_equal(s.blocks_walked, 300);
	assert_int_equal(s.blocks_checked, 110);
	assert_int_equal(s.damaged_blocks, 0);
	assert_int_equal(s.damaged_names, 0);
	assert_true(s.finished >= s.started && s.started > 0);

	/* A second pass starts afresh. */
	assert_int_equal(store_scrub_start(st, 0), 0);
	wait_pass(st, &s, NULL, 0);
	assert_int_equal(s.pass, 2);
	assert_int_equal(s.rate, STORE_SCRUB_RATE_DEFAULT);
	assert_int_equal(s.blocks_checked, 110);

	store_vol_close(c);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

/* The pool block holding (lba, gen)'s bytes; the store is closed. */
static uint64_t find_block(struct faultdev *p, unsigned lba, unsigned gen)
{
	char want[BS], blk[BS];
	fill(want, lba, gen);
	for (uint64_t at = BS; at < p->dev.size; at += BS) {
		assert_int_equal(blkdev_pread(&p->dev, blk, BS, at), 0);
		if (!memcmp(blk, want, BS))
			return at / BS;
	}
	fail_msg("block of lba %u not found", lba);
	return 0;
}

static void flip_byte(struct faultdev *p, uint64_t block, unsigned at)
{
	char blk[BS];
	assert_int_equal(blkdev_pread(&p->dev, blk, BS, block * BS), 0);
	blk[at] ^= 0x10;
	struct iovec iov = {.iov_base = blk, .iov_len = BS};
	assert_int_equal(blkdev_pwritev(&p->dev, &iov, 1, block * BS), 0);
}

/* Scrub st and check that block phys, at lba 7, is reported by v, v@s and
 * c (in walk order) and nothing else. */
static void expect_damage(struct store *st, uint64_t phys, unsigned pass)
{
	struct store_scrub_damage d[8];
	struct store_scrub_status s;
	const char *names[] = {"v", "v@s", "c"};

	assert_int_equal(store_scrub_start(st, FAST), 0);
	unsigned n = wait_pass(st, &s, d, 8);
	assert_int_equal(s.state, STORE_SCRUB_DONE);
	assert_int_equal(s.pass, pass);
	assert_int_equal(s.damaged_blocks, 1);
	assert_int_equal(s.damaged_names, 3);
	assert_int_equal(n, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_string_equal(d[i].name, names[i]);
		assert_int_equal(d[i].offset, 7 * BS);
		assert_int_equal(d[i].pool_block, phys);
	}
	assert_int_equal(s.blocks_checked, 40 + 5); /* every distinct block, the bad one too */
}

static void test_damage_every_name(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	struct store_opts ro = {.read_only = true};
	struct store_stats stats;
	struct vol *v, *c;
	char b[BS];
	struct store *st = testpool_volume(&p->dev, NULL, "v", 8u << 20, &v);

	put_blocks(v, 0, 40, 0);
	assert_int_equal(store_snap_create(st, "v@s"), 0);
	assert_int_equal(store_clone(st, "v@s", "c"), 0);
	c = open_vol(st, "c");
	put_blocks(c, 20, 25, 1); /* c's own blocks; lba 7 still shared */
	store_vol_close(c);
	store_vol_close(v);
	store_close(st);

	uint64_t phys = find_block(p, 7, 0);
	flip_byte(p, phys, 1234);

	st = testpool_open(&p->dev, NULL);
	expect_damage(st, phys, 1);
	/* The reader logged and counted it once, as for any read. */
	store_get_stats(st, &stats);
	assert_int_equal(stats.bad_blocks, 1);
	v = open_vol(st, "v@s");
	assert_int_equal(store_read(v, b, 7 * BS, BS), -EIO);
	assert_int_equal(store_read(v, b, 8 * BS, BS), 0);
	store_vol_close(v);
	store_close(st);

	/* A read-only pool (cowbd-check's kind of open) scrubs too. */
	st = testpool_open(&p->dev, &ro);
	expect_damage(st, phys, 1);
	store_close(st);

	/* Healed: v and c rewrite lba 7, the snapshot goes: a clean pass. */
	st = testpool_open(&p->dev, NULL);
	v = open_vol(st, "v");
	c = open_vol(st, "c");
	put_blocks(v, 7, 8, 2);
	put_blocks(c, 7, 8, 2);
	store_vol_close(c);
	store_vol_close(v);
	/* c's origin must go before the snapshot can: delete c, then v@s. */
	assert_int_equal(store_vol_delete(st, "c"), 0);
	assert_int_equal(store_snap_delete(st, "v@s"), 0);
	struct store_scrub_status s;
	assert_int_equal(store_scrub_start(st, FAST), 0);
	wait_pass(st, &s, NULL, 0);
	assert_int_equal(s.state, STORE_SCRUB_DONE);
	assert_int_equal(s.damaged_blocks, 0);
	assert_int_equal(s.blocks_checked, 40);
	store_close(st);
	faultdev_free(p);
}

/* a (1024 blocks, slow), b (64), c (64): a is deleted while the pass is
 * in it (or before it got there, on a slow machine), c before the pass
 * reaches it.  The pass ends done with only b counted done; b is read
 * whole, c not at all. */
static void test_deleted_skipped(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	struct store_scrub_status s;
	struct vol *a, *b, *c;
	struct store *st = testpool_volume(&p->dev, NULL, "a", 8u << 20, &a);

	assert_int_equal(store_vol_create(st, "b", 1u << 20), 0);
	assert_int_equal(store_vol_create(st, "c", 1u << 20), 0);
	b = open_vol(st, "b");
	c = open_vol(st, "c");
	put_blocks(a, 0, 1024, 0);
	put_blocks(b, 0, 64, 0);
	put_blocks(c, 0, 64, 0);
	store_vol_close(a);
	store_vol_close(b);
	store_vol_close(c);

	assert_int_equal(store_scrub_start(st, 1u << 20), 0); /* a alone takes 4 s */
	usleep(300 * 1000);
	assert_int_equal(store_vol_delete(st, "a"), 0);
	assert_int_equal(store_vol_delete(st, "c"), 0);
	wait_pass(st, &s, NULL, 0);
	assert_int_equal(s.state, STORE_SCRUB_DONE);
	assert_int_equal(s.volumes_total, 3);
	assert_int_equal(s.volumes_done, 1);
	assert_int_equal(s.blocks_total, 1024 + 64 + 64);
	assert_true(s.blocks_checked >= 64);
	assert_true(s.blocks_checked < 1024 + 64);
	print_message("checked %llu blocks of a deleted mid-pass\n",
	              (unsigned long long)(s.blocks_checked - 64));
	store_close(st);
	faultdev_free(p);
}

/* 512 blocks (2 MiB) at 2 MiB/s: the pass may start at once with one
 * chunk's burst, so it takes at least (2 MiB - 256 KiB) / rate = 0.875 s;
 * asserted: more than 0.6 s (no upper bound: a loaded machine is slow). */
static void test_rate(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	struct store_scrub_status s;
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 8u << 20, &v);

	put_blocks(v, 0, 512, 0);
	double t0 = now_s();
	assert_int_equal(store_scrub_start(st, 2u << 20), 0);
	wait_pass(st, &s, NULL, 0);
	double took = now_s() - t0;
	print_message("512 blocks at 2 MiB/s: %.2f s\n", took);
	assert_int_equal(s.state, STORE_SCRUB_DONE);
	assert_int_equal(s.blocks_checked, 512);
	assert_true(took > 0.6);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

/* One pass at a time; a bad rate is refused; stop ends a slow pass at
 * once (stopped, not done); a client reads and writes meanwhile; close
 * stops a running pass. */
static void test_start_stop(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	struct store_scrub_status s;
	struct vol *v;
	char b[BS], want[BS];
	struct store *st = testpool_volume(&p->dev, NULL, "v", 8u << 20, &v);

	put_blocks(v, 0, 1024, 0);
	assert_int_equal(store_scrub_start(st, STORE_SCRUB_RATE_MIN - 1), -EINVAL);
	assert_int_equal(store_scrub_start(st, STORE_SCRUB_RATE_MIN), 0); /* 1024 s */
	assert_int_equal(store_scrub_start(st, FAST), -EALREADY);
	for (unsigned lba = 0; lba < 1024; lba += 7) {
		put_blocks(v, lba, lba + 1, 1);
		fill(want, lba + 1 < 1024 ? lba + 1 : 0, 0);
		assert_int_equal(
		    store_read(v, b, (uint64_t)(lba + 1 < 1024 ? lba + 1 : 0) * BS, BS), 0);
		assert_memory_equal(b, want, BS);
	}
	double t0 = now_s();
	store_scrub_stop(st);
	store_scrub_status(st, &s, NULL, 0);
	assert_int_equal(s.state, STORE_SCRUB_STOPPED);
	assert_true(s.blocks_checked < 1024);
	assert_true(now_s() - t0 < SLOWS);
	store_scrub_stop(st); /* nothing running: nothing to do */

	unsigned pass = s.pass;
	assert_int_equal(store_scrub_start(st, STORE_SCRUB_RATE_MIN), 0);
	store_scrub_status(st, &s, NULL, 0);
	assert_int_equal(s.pass, pass + 1);
	assert_int_equal(s.state, STORE_SCRUB_RUNNING);
	store_vol_close(v);
	store_close(st); /* stops the pass */
	faultdev_free(p);
}

/* Idle compaction would move blocks under a pass (and the pass would read
 * their new copies again): a pass holds it off.  The pool is made so that
 * idle cleaning is due (4,096 blocks written, 3 in 4 overwritten: four
 * segments a quarter live), the pass is slow enough to span several idle
 * ticks, and it must read exactly the 4,096 live blocks; afterwards the
 * compactor does run (so it was due). */
static void test_idle_compaction_held(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	struct store_scrub_status s;
	struct store_stats ss;
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 16u << 20, &v);

	put_blocks(v, 0, 4096, 0);
	for (unsigned lba = 0; lba < 4096; lba++)
		if (lba % 4)
			put_blocks(v, lba, lba + 1, 1);
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_scrub_start(st, 4u << 20), 0); /* 16 MiB at 4 MiB/s */
	store_get_stats(st, &ss);
	uint64_t before = ss.compactions; /* none may start from here to the pass's end */
	assert_int_equal(wait_pass(st, &s, NULL, 0), 0);
	assert_int_equal(s.state, STORE_SCRUB_DONE);
	assert_int_equal(s.blocks_checked, 4096);
	store_get_stats(st, &ss);
	assert_int_equal(ss.compactions, before);
	/* Idle means a second with no request at all (a stats call is
	 * one): ask seldom. */
	double t0 = now_s();
	while (ss.compactions == before && now_s() - t0 < SLOWS) {
		sleep(2);
		store_get_stats(st, &ss);
	}
	assert_true(ss.compactions > before); /* it was due, and held */
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    /* each on its own store */
	    cmocka_unit_test(test_shared_once),     cmocka_unit_test(test_damage_every_name),
	    cmocka_unit_test(test_deleted_skipped), cmocka_unit_test(test_rate),
	    cmocka_unit_test(test_start_stop),      cmocka_unit_test(test_idle_compaction_held),
	};
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
