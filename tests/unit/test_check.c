/* test_check.c — store_check (cowbd-check) in passes: a pool whose
 * reference counts do not fit in memory at once is recounted range by
 * range of its blocks, each pass walking every tree.  On a pool with a
 * volume, a snapshot and blocks the compactor forwarded, a check in
 * several passes finds it clean as one pass does, and finds the same
 * problems, once each, when a count is made wrong.
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
#include <urcu/urcu-memb.h>

#include "faultdev.h"
#include "fwd.h"
#include "store_int.h"
#include "testpool.h"

#define MiB (1ull << 20)

static int check_with(struct store *st, uint64_t span)
{
	uint64_t was = check_span_blocks;
	check_span_blocks = span;
	int bad = store_check(st);
	check_span_blocks = was;
	return bad;
}

static void test_passes(void **state)
{
	struct faultdev *p = faultdev_new(160 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 16 * MiB, &v);
	char *buf = malloc(MiB);

	/* data in several segments, a snapshot sharing it, most of the
	 * volume rewritten (sparse old segments), compacted */
	for (int round = 0; round < 3; round++) {
		memset(buf, 'a' + round, MiB);
		for (uint64_t off = 0; off < 16 * MiB; off += MiB)
			if (round == 0 || off % (4 * MiB))
				assert_int_equal(store_write(v, buf, off, MiB, 0), 0);
		if (round == 0)
			assert_int_equal(store_snap_create(st, "v@s"), 0);
	}
	assert_int_equal(store_flush(v), 0);
	assert_true(store_compact(st) > 0);
	assert_int_equal(store_checkpoint(st), 0);
	store_vol_close(v);
	assert_true(fwd_entries(alloc_fwd(st->a)) > 0);

	assert_int_equal(check_with(st, 1ull << 28), 0); /* one pass */
	assert_int_equal(check_with(st, 3 * FMT_SEG_BLOCKS), 0);
	assert_int_equal(check_with(st, FMT_SEG_BLOCKS), 0); /* a pass per segment */

	/* One block counted once too often, late in the pool: every span
	 * finds it, once. */
	uint64_t blk = 0;
	for (uint64_t b = alloc_nblocks(st->a); b-- > 0;)
		if (alloc_blk_refs(st->a, b)) {
			blk = b;
			break;
		}
	assert_true(alloc_seg_of(blk) > 3);
	alloc_ref(st->a, fwd_name_of(alloc_fwd(st->a), blk));
	int whole = check_with(st, 1ull << 28);
	assert_true(whole > 0);
	assert_int_equal(check_with(st, 3 * FMT_SEG_BLOCKS), whole);
	assert_int_equal(check_with(st, FMT_SEG_BLOCKS), whole);
	alloc_unref(st->a, fwd_name_of(alloc_fwd(st->a), blk));
	assert_int_equal(check_with(st, 2 * FMT_SEG_BLOCKS), 0);

	free(buf);
	store_close(st);
	faultdev_free(p);
}

int main(void)
{
	urcu_memb_register_thread();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_passes),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	urcu_memb_unregister_thread();
	return rc;
}
