/* test_alloc.c — the allocator on its own (no store, no device): block
 * reference counts and the per-segment live counts and pool totals they
 * drive, segment hand-out (never segment 0, nfree exact down to
 * exhaustion), release of dead segments (keep1/keep2 honoured, the freed
 * callback, freed segments reused first), discard bookkeeping, stamps,
 * and the two checkers: alloc_verify against a reference recount and
 * alloc_check against counters corrupted behind the API.  alloc.c is
 * included whole, so the last test can reach its fields (white box, as
 * SQLite's tests poke a pager); the archive's copy is then never linked.
 */
#undef NDEBUG
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.c"

#define NSEGS     16
#define B(seg, i) ((uint64_t)(seg)*FMT_SEG_BLOCKS + (i))

static void test_refs(void **state)
{
	struct alloc *a = alloc_new(NSEGS);

	assert_non_null(a);
	assert_int_equal(alloc_nsegs(a), NSEGS);
	assert_int_equal(alloc_nblocks(a), NSEGS * FMT_SEG_BLOCKS);
	assert_int_equal(alloc_nfree(a), NSEGS - 1); /* segment 0 is USED forever */
	assert_true(alloc_seg_used(a, 0));
	assert_false(alloc_seg_used(a, 3));

	/* A first reference makes the segment USED and live. */
	alloc_ref(a, B(3, 7));
	assert_true(alloc_seg_used(a, 3));
	assert_int_equal(alloc_nfree(a), NSEGS - 2);
	assert_int_equal(alloc_seg_live(a, 3), 1);
	assert_int_equal(alloc_live_blocks(a), 1);
	/* More references on the same block change no live count. */
	alloc_ref(a, B(3, 7));
	alloc_ref(a, B(3, 7));
	assert_int_equal(alloc_block_refs(a, B(3, 7)), 3);
	assert_int_equal(alloc_seg_live(a, 3), 1);
	alloc_ref(a, B(3, 8));
	alloc_ref(a, B(5, 0));
	assert_int_equal(alloc_seg_live(a, 3), 2);
	assert_int_equal(alloc_seg_live(a, 5), 1);
	assert_int_equal(alloc_live_blocks(a), 3);
	assert_int_equal(alloc_nfree(a), NSEGS - 3);
	assert_true(alloc_check(a));

	/* Down to zero: the block stops counting, the segment stays USED
	 * (dead) until alloc_release_dead. */
	alloc_unref(a, B(3, 7));
	alloc_unref(a, B(3, 7));
	assert_int_equal(alloc_seg_live(a, 3), 2);
	alloc_unref(a, B(3, 7));
	alloc_unref(a, B(3, 8));
	assert_int_equal(alloc_block_refs(a, B(3, 7)), 0);
	assert_int_equal(alloc_seg_live(a, 3), 0);
	assert_true(alloc_seg_used(a, 3));
	assert_int_equal(alloc_live_blocks(a), 1);
	assert_int_equal(alloc_dead_segs(a), 1);
	assert_true(alloc_check(a));

	/* Stamps: per segment, as set. */
	alloc_seg_set_stamp(a, 5, 1234);
	assert_int_equal(alloc_seg_stamp(a, 5), 1234);
	assert_int_equal(alloc_seg_stamp(a, 6), 0);
	alloc_free(a);
}

/* Every FREE segment is handed out once, never segment 0; nfree counts
 * down to 0 and alloc_take_seg then says 0. */
static void test_take_exhaust(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	bool seen[NSEGS] = {0};

	alloc_mark_used(a, 4); /* recovery marks a segment: not handed out */
	assert_int_equal(alloc_nfree(a), NSEGS - 2);
	alloc_mark_used(a, 4); /* twice: counted once */
	assert_int_equal(alloc_nfree(a), NSEGS - 2);
	seen[4] = true;
	for (unsigned i = 0; i < NSEGS - 2; i++) {
		uint64_t s = alloc_take_seg(a);
		assert_true(s > 0 && s < NSEGS);
		assert_false(seen[s]);
		seen[s] = true;
		assert_true(alloc_seg_used(a, s));
		assert_int_equal(alloc_nfree(a), NSEGS - 3 - i);
	}
	assert_int_equal(alloc_take_seg(a), 0);
	assert_int_equal(alloc_take_seg(a), 0);
	assert_int_equal(alloc_nfree(a), 0);
	assert_true(alloc_check(a));
	alloc_free(a);
}

struct freed_log {
	uint64_t seg[NSEGS];
	unsigned n;
};

static void note_freed(void *arg, uint64_t seg)
{
	struct freed_log *f = arg;
	assert_true(f->n < NSEGS);
	f->seg[f->n++] = seg;
}

/* Dead segments become FREE, except keep1/keep2 and those with a live
 * block; the callback hears of each; the first freed is reused first. */
static void test_release_dead(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	struct freed_log f = {0};

	while (alloc_take_seg(a))
		;
	alloc_ref(a, B(2, 0)); /* live */
	alloc_ref(a, B(9, 5));
	alloc_unref(a, B(9, 5)); /* was live, now dead */
	assert_int_equal(alloc_dead_segs(a), NSEGS - 2);
	assert_int_equal(alloc_release_dead(a, 7, 11, note_freed, &f), NSEGS - 4);
	assert_int_equal(f.n, NSEGS - 4);
	assert_int_equal(alloc_nfree(a), NSEGS - 4);
	for (unsigned i = 0; i < f.n; i++) {
		assert_true(f.seg[i] != 0 && f.seg[i] != 2 && f.seg[i] != 7 && f.seg[i] != 11);
		assert_false(alloc_seg_used(a, f.seg[i]));
	}
	assert_true(alloc_seg_used(a, 2) && alloc_seg_used(a, 7) && alloc_seg_used(a, 11));
	assert_int_equal(alloc_dead_segs(a), 2); /* the kept ones */
	/* Nothing more to release; a NULL callback is allowed. */
	assert_int_equal(alloc_release_dead(a, 7, 11, NULL, NULL), 0);
	/* What was freed last is reused first, lowest first (its pages are
	 * warm), before segments further on that were free all along. */
	assert_int_equal(alloc_take_seg(a), f.seg[0]);
	assert_int_equal(alloc_take_seg(a), f.seg[1]);
	assert_int_equal(alloc_take_seg(a), f.seg[2]);
	assert_int_equal(alloc_release_dead(a, 7, 11, NULL, NULL), 3);
	assert_int_equal(alloc_take_seg(a), f.seg[0]);
	/* Without keeps, 7 and 11 go too (the taken one is dead as well). */
	assert_int_equal(alloc_release_dead(a, 0, 0, NULL, NULL), 3);
	assert_int_equal(alloc_nfree(a), NSEGS - 2);
	assert_true(alloc_check(a));
	alloc_free(a);
}

static void note_discard(void *arg, uint64_t seg)
{
	note_freed(arg, seg);
}

/* Each FREE segment is discarded once, up to max per call; taking it
 * (or marking it used) makes it due again once freed. */
static void test_discard(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	struct freed_log f = {0};
	uint64_t s;

	assert_int_equal(alloc_discard_free(a, 5, 0, note_discard, &f), 5);
	assert_int_equal(alloc_discard_free(a, 100, 0, note_discard, &f), NSEGS - 1 - 5);
	assert_int_equal(f.n, NSEGS - 1);
	for (unsigned i = 0; i < f.n; i++)
		assert_int_equal(f.seg[i], i + 1); /* never segment 0 */
	assert_int_equal(alloc_discard_free(a, 100, 0, note_discard, &f), 0);
	s = alloc_take_seg(a);
	alloc_mark_used(a, 9);
	assert_int_equal(alloc_discard_free(a, 100, 0, note_discard, &f), 0); /* both USED */
	assert_int_equal(alloc_release_dead(a, 0, 0, NULL, NULL), 2);
	f.n = 0;
	assert_int_equal(alloc_discard_free(a, 100, 0, note_discard, &f), 2);
	assert_true((f.seg[0] == s && f.seg[1] == 9) || (f.seg[0] == 9 && f.seg[1] == s));
	alloc_free(a);
}

/* Segments the log released are warm (their pages are likely cached):
 * alloc_take_seg hands them out before a cold one the search meets first,
 * and idle discards take cold ones first, then warm ones beyond keep_warm,
 * those the log would reach last first. */
static void test_warm(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	struct freed_log f = {0};

	for (uint64_t s = 1; s < NSEGS; s++)
		alloc_ref(a, B(s, 0));
	alloc_unref(a, B(3, 0));
	alloc_unref(a, B(12, 0));
	assert_int_equal(alloc_release_dead(a, 0, 0, NULL, NULL), 2);
	assert_int_equal(a->nwarm, 2);
	/* Keep one warm: of 3 and 12, 12 comes last from the hint (3). */
	assert_int_equal(alloc_discard_free(a, 100, 1, note_discard, &f), 1);
	assert_int_equal(f.seg[0], 12);
	assert_int_equal(alloc_discard_free(a, 100, 1, note_discard, &f), 0);
	assert_true(alloc_check(a));
	/* From segment 10 on, 12 (discarded, cold) comes first: 3 is taken. */
	a->hint = 10;
	assert_int_equal(alloc_take_seg(a), 3);
	assert_int_equal(a->nwarm, 0);
	assert_int_equal(alloc_take_seg(a), 12);
	assert_int_equal(alloc_take_seg(a), 0);
	assert_true(alloc_check(a));
	/* Released again (taken, never written), they are warm again;
	 * discarded, cold; a newly released one goes before both. */
	assert_int_equal(alloc_release_dead(a, 0, 0, NULL, NULL), 2);
	assert_int_equal(a->nwarm, 2);
	f.n = 0;
	assert_int_equal(alloc_discard_free(a, 100, 0, note_discard, &f), 2);
	alloc_unref(a, B(9, 0));
	assert_int_equal(alloc_release_dead(a, 0, 0, NULL, NULL), 1);
	assert_int_equal(alloc_discard_free(a, 100, 1, note_discard, &f), 0);
	a->hint = 1;
	assert_int_equal(alloc_take_seg(a), 9);
	assert_true(alloc_check(a));
	alloc_free(a);
}

/* alloc_verify compares every block with a recount and finds each
 * difference; alloc_check finds counters that disagree with the arrays. */
static void test_checkers(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	uint32_t *want = calloc(alloc_nblocks(a), sizeof(*want));

	for (unsigned i = 0; i < 100; i++) {
		uint64_t b = B(1 + i % (NSEGS - 1), i * 37 % FMT_SEG_BLOCKS);
		alloc_ref(a, b);
		want[b]++;
	}
	assert_int_equal(alloc_verify(a, want), 0);
	assert_true(alloc_check(a));

	/* The findings below are expected (said on stderr). */
	want[B(3, 3)]++; /* a reference the allocator missed */
	want[B(1, 0)]--; /* one it has too many */
	assert_int_equal(alloc_verify(a, want), 2);
	want[B(3, 3)]--;
	want[B(1, 0)]++;
	assert_int_equal(alloc_verify(a, want), 0);

	/* White box: corrupt each counter in turn. */
	a->seg_live[2]++;
	assert_false(alloc_check(a));
	assert_true(alloc_verify(a, want) > 0);
	a->seg_live[2]--;
	a->nfree--;
	assert_false(alloc_check(a));
	a->nfree++;
	a->live_blocks++;
	assert_false(alloc_check(a));
	a->live_blocks--;
	a->seg_state[1] = ALLOC_FREE; /* holds live blocks */
	a->nfree++;
	assert_false(alloc_check(a));
	assert_true(alloc_verify(a, want) > 0);
	a->seg_state[1] = ALLOC_USED;
	a->nfree--;
	assert_true(alloc_check(a));
	free(want);
	alloc_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refs),         cmocka_unit_test(test_take_exhaust),
	    cmocka_unit_test(test_release_dead), cmocka_unit_test(test_discard),
	    cmocka_unit_test(test_warm),         cmocka_unit_test(test_checkers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
