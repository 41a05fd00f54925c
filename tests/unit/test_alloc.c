/* test_alloc.c — the allocator on its own (no store, no device): block
 * reference counts and the per-segment live counts and pool totals they
 * drive, segment hand-out (never segment 0, nfree exact down to
 * exhaustion), release of dead segments (keep1/keep2 honoured, the freed
 * callback, freed segments reused first), discard bookkeeping, stamps,
 * and the two checkers: alloc_verify against a reference recount and
 * alloc_check against counters corrupted behind the API; count pages
 * (none for an empty pool, freed with their segment, dirty tracking,
 * install, the on-demand loader and its sticky failure, and a round trip
 * through the codec: pages written, opened AWAY, loaded back).  alloc.c is
 * included whole, so tests can reach its fields (white box, as
 * SQLite's tests poke a pager); the archive's copy is then never linked.
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

#include "alloc.c"
#include "cpage.h"

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
	a->npages++;
	assert_false(alloc_check(a));
	a->npages--;
	a->ndirty++;
	assert_false(alloc_check(a));
	a->ndirty--;
	a->page[2][1]++; /* a count that makes a block live behind seg_live */
	assert_false(alloc_check(a));
	a->page[2][1]--;
	assert_true(alloc_check(a));
	free(want);
	alloc_free(a);
}

/* ---- count pages ---- */

/* A pool of 10^5 segments holds no page until a block is referenced, one
 * per segment referenced; taking segments allocates none. */
static void test_no_pages_empty(void **state)
{
	struct alloc *a = alloc_new(100000);

	assert_non_null(a);
	assert_int_equal(alloc_pages_resident(a), 0);
	for (unsigned i = 0; i < 1000; i++)
		assert_true(alloc_take_seg(a));
	assert_int_equal(alloc_pages_resident(a), 0);
	assert_int_equal(alloc_block_refs(a, B(99999, 3)), 0);
	alloc_ref(a, B(7, 1));
	alloc_ref(a, B(7, 2));
	alloc_ref(a, B(99999, 1023));
	assert_int_equal(alloc_pages_resident(a), 2);
	assert_true(alloc_check(a));
	alloc_free(a);
}

/* A segment's page goes when the segment becomes FREE, not before. */
static void test_page_freed(void **state)
{
	struct alloc *a = alloc_new(NSEGS);

	alloc_ref(a, B(4, 9));
	alloc_ref(a, B(5, 9));
	alloc_unref(a, B(4, 9));
	assert_int_equal(alloc_pages_resident(a), 2); /* dead, not yet FREE */
	assert_int_equal(alloc_mark_dead(a, 0, 0), 1);
	assert_int_equal(alloc_release_marked(a, NULL, NULL), 1);
	assert_int_equal(alloc_pages_resident(a), 1);
	assert_null(a->page[4]);
	assert_int_equal(alloc_block_refs(a, B(4, 9)), 0);
	alloc_unref(a, B(5, 9));
	assert_int_equal(alloc_release_dead(a, 0, 0, NULL, NULL), 1);
	assert_int_equal(alloc_pages_resident(a), 0);
	/* Reused, it starts from zero. */
	alloc_ref(a, B(5, 3));
	assert_int_equal(alloc_block_refs(a, B(5, 3)), 1);
	assert_int_equal(alloc_block_refs(a, B(5, 9)), 0);
	assert_true(alloc_check(a));
	alloc_free(a);
}

static uint64_t dirty_list(const struct alloc *a, uint64_t *out)
{
	uint64_t n = 0;
	for (uint64_t s = alloc_dirty_next(a, 0); s < alloc_nsegs(a);
	     s = alloc_dirty_next(a, s + 1))
		out[n++] = s;
	assert_int_equal(n, alloc_dirty_count(a));
	return n;
}

/* Every change of a count marks its segment dirty until alloc_pages_clean;
 * alloc_page_counts copies the page. */
static void test_dirty(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	uint32_t c[FMT_SEG_BLOCKS];
	uint64_t d[NSEGS];

	assert_int_equal(dirty_list(a, d), 0);
	assert_int_equal(alloc_dirty_next(a, 0), NSEGS);
	alloc_ref(a, B(9, 1));
	alloc_ref(a, B(3, 1));
	alloc_ref(a, B(3, 1)); /* a count that is not the first */
	assert_int_equal(dirty_list(a, d), 2);
	assert_true(d[0] == 3 && d[1] == 9);
	assert_true(alloc_check(a));
	alloc_pages_clean(a);
	assert_int_equal(dirty_list(a, d), 0);
	alloc_unref(a, B(3, 1)); /* 2 -> 1: live unchanged, still a change */
	assert_int_equal(dirty_list(a, d), 1);
	assert_int_equal(d[0], 3);
	alloc_pages_clean(a);
	alloc_unref(a, B(9, 1));
	assert_int_equal(dirty_list(a, d), 1);
	assert_int_equal(d[0], 9);
	assert_true(alloc_check(a));

	assert_int_equal(alloc_page_counts(a, 3, c), 0);
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		assert_int_equal(c[i], i == 1);
	assert_int_equal(alloc_page_counts(a, 12, c), 0); /* no page: zeros */
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		assert_int_equal(c[i], 0);
	assert_int_equal(alloc_pages_resident(a), 2); /* copying made none */
	alloc_free(a);
}

/* Install sets a page as given (any count), its live count and the
 * pool's, USED, not dirty; all zeros drops the page. */
static void test_install(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	static uint32_t c[FMT_SEG_BLOCKS], back[FMT_SEG_BLOCKS];
	uint64_t d[NSEGS];

	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i += 2)
		c[i] = i + 1;
	c[0] = UINT32_MAX - 1;
	c[2] = 0x10000;
	c[4] = 100001;
	alloc_ref(a, B(6, 1)); /* replaced by the install, dirty before */
	alloc_ref(a, B(2, 0));
	assert_int_equal(alloc_page_install(a, 6, c), 0);
	assert_int_equal(alloc_page_install(a, 8, c), 0);
	assert_true(alloc_seg_used(a, 8));
	assert_int_equal(alloc_seg_live(a, 6), FMT_SEG_BLOCKS / 2);
	assert_int_equal(alloc_live_blocks(a), 1 + FMT_SEG_BLOCKS);
	assert_int_equal(dirty_list(a, d), 1);
	assert_int_equal(d[0], 2);
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++) {
		assert_int_equal(alloc_block_refs(a, B(6, i)), c[i]);
		assert_int_equal(alloc_block_refs(a, B(8, i)), c[i]);
	}
	assert_int_equal(alloc_page_counts(a, 8, back), 0);
	assert_memory_equal(back, c, sizeof(c));
	assert_true(alloc_check(a));
	/* Counting goes on from the installed values. */
	alloc_ref(a, B(6, 0));
	assert_int_equal(alloc_block_refs(a, B(6, 0)), UINT32_MAX);
	alloc_ref(a, B(6, 1));
	assert_int_equal(alloc_seg_live(a, 6), FMT_SEG_BLOCKS / 2 + 1);
	/* All zeros: no page, no live block. */
	memset(c, 0, sizeof(c));
	assert_int_equal(alloc_page_install(a, 8, c), 0);
	assert_int_equal(alloc_seg_live(a, 8), 0);
	assert_null(a->page[8]);
	assert_int_equal(alloc_pages_resident(a), 2);
	assert_int_equal(alloc_live_blocks(a), 1 + FMT_SEG_BLOCKS / 2 + 1);
	assert_true(alloc_check(a));
	alloc_free(a);
}

/* The loader of the tests: counts (seg + i) % 4, or an error. */
struct loader {
	unsigned calls;
	int err;
	int skew; /* added to one count's liveness: a page that disagrees */
};

static int test_loader(void *arg, uint64_t seg, uint32_t *counts)
{
	struct loader *l = arg;
	l->calls++;
	if (l->err)
		return l->err;
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		counts[i] = (seg + i) % 4;
	if (l->skew)
		counts[(4 - seg % 4) % 4] = 7; /* a 0 made live */
	return 0;
}

#define LOADED_LIVE (FMT_SEG_BLOCKS * 3 / 4)

/* An AWAY page is loaded at the first count access on the log thread,
 * once; alloc_block_refs never loads (it reads 0 meanwhile);
 * alloc_verify reads AWAY pages and leaves them away. */
static void test_loader_once(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	struct loader l = {0};
	uint32_t *want = calloc(alloc_nblocks(a), sizeof(*want));

	alloc_set_loader(a, test_loader, &l);
	alloc_page_away(a, 5, LOADED_LIVE);
	alloc_page_away(a, 6, LOADED_LIVE);
	assert_true(alloc_seg_used(a, 5) && alloc_seg_away(a, 5));
	assert_int_equal(alloc_seg_live(a, 5), LOADED_LIVE);
	assert_int_equal(alloc_live_blocks(a), 2 * LOADED_LIVE);
	assert_int_equal(alloc_pages_resident(a), 0);
	assert_true(alloc_check(a));
	assert_int_equal(alloc_block_refs(a, B(5, 1)), 0); /* an estimate: not loaded */
	assert_int_equal(l.calls, 0);

	alloc_ref(a, B(5, 1));
	assert_int_equal(l.calls, 1);
	assert_false(alloc_seg_away(a, 5));
	assert_int_equal(alloc_block_refs(a, B(5, 1)), (5 + 1) % 4 + 1);
	alloc_unref(a, B(5, 2));
	alloc_ref(a, B(5, 3)); /* (5 + 3) % 4 = 0: a new live block */
	assert_int_equal(alloc_seg_live(a, 5), LOADED_LIVE + 1);
	assert_int_equal(alloc_error(a), 0);
	assert_int_equal(l.calls, 1);
	assert_int_equal(dirty_list(a, (uint64_t[NSEGS]){0}), 1);
	assert_int_equal(alloc_seg_load(a, 5), 0);
	assert_int_equal(l.calls, 1);
	assert_true(alloc_check(a));
	a->page_flags[9] |= PAGE_AWAY; /* white box: away without a live block */
	assert_false(alloc_check(a));
	a->page_flags[9] &= ~PAGE_AWAY;

	/* Verify reads segment 6 without keeping it. */
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++) {
		want[B(5, i)] = (5 + i) % 4 + (i == 1) - (i == 2) + (i == 3);
		want[B(6, i)] = (6 + i) % 4;
	}
	assert_int_equal(alloc_verify(a, want), 0);
	assert_int_equal(l.calls, 2);
	assert_true(alloc_seg_away(a, 6));
	want[B(6, 100)]++; /* expected finding (said on stderr) */
	assert_int_equal(alloc_verify(a, want), 1);
	want[B(6, 100)]--;
	/* Copying its counts loads it, once. */
	uint32_t c[FMT_SEG_BLOCKS];
	assert_int_equal(alloc_page_counts(a, 6, c), 0);
	assert_int_equal(alloc_page_counts(a, 6, c), 0);
	assert_int_equal(l.calls, 4);
	assert_memory_equal(c, &want[B(6, 0)], sizeof(c));
	assert_int_equal(alloc_pages_resident(a), 2);
	assert_true(alloc_check(a));
	free(want);
	alloc_free(a);
}

/* A loader failure, or a page whose live blocks disagree with its
 * table, fails the allocator for good: the change is dropped, no page is
 * loaded again, and counts elsewhere still work. */
static void test_loader_fails(void **state)
{
	for (int skew = 0; skew < 2; skew++) {
		struct alloc *a = alloc_new(NSEGS);
		struct loader l = {.err = skew ? 0 : -EIO, .skew = skew};
		int want_err = skew ? -EILSEQ : -EIO;

		alloc_set_loader(a, test_loader, &l);
		alloc_page_away(a, 5, LOADED_LIVE);
		alloc_page_away(a, 6, LOADED_LIVE);
		alloc_ref(a, B(5, 1)); /* expected error (said on stderr) */
		assert_int_equal(alloc_error(a), want_err);
		assert_int_equal(l.calls, 1);
		assert_true(alloc_seg_away(a, 5));
		assert_int_equal(alloc_block_refs(a, B(5, 1)), 0);
		alloc_unref(a, B(5, 1));
		l.err = 0, l.skew = 0; /* the disk is fine again: still failed */
		assert_int_equal(alloc_seg_load(a, 5), want_err);
		assert_int_equal(alloc_seg_load(a, 6), want_err);
		uint32_t c[FMT_SEG_BLOCKS];
		assert_int_equal(alloc_page_counts(a, 6, c), want_err);
		assert_int_equal(l.calls, 1);
		alloc_ref(a, B(7, 0));
		assert_int_equal(alloc_block_refs(a, B(7, 0)), 1);
		assert_int_equal(alloc_error(a), want_err);
		assert_true(alloc_check(a));
		alloc_free(a);
	}
}

/* ---- through the codec: what a checkpoint writes, open reads back ---- */

/* A "disk" of count pages and segment tables, as a checkpoint would write
 * them (cpage.c), and a loader that decodes them. */
struct disk {
	struct fmt_cpage img[NSEGS][2];
	struct fmt_stab tab;
	unsigned loads;
};

static uint64_t page_addr(uint64_t seg, unsigned part)
{
	return B(NSEGS - 1, 2 * seg + part); /* any distinct blocks */
}

static int disk_loader(void *arg, uint64_t seg, uint32_t *counts)
{
	struct disk *d = arg;
	struct cpage_ent e[FMT_STAB_ENTRIES];
	uint64_t first;
	unsigned n;
	uint32_t live;
	const char *why;
	int err = cpage_stab_decode(&d->tab, page_addr(0, 0) - 1, NSEGS, &first, &n, e, &why);

	d->loads++;
	if (err)
		return err;
	const struct cpage_ent *x = &e[seg - first];
	return cpage_decode(seg, &d->img[seg][0], x->page0, x->page1 ? &d->img[seg][1] : NULL,
	                    x->page1, counts, &live, &why);
}

/* Counts made by references (and a wide segment by install) are written
 * through the codec for every dirty segment, opened in a fresh allocator
 * with every page AWAY, and read back exactly: each page loaded once, on
 * demand, and alloc_verify agrees. */
static void test_pages_through_codec(void **state)
{
	struct alloc *a = alloc_new(NSEGS), *b = alloc_new(NSEGS);
	static struct disk d;
	static uint32_t c[FMT_SEG_BLOCKS];
	struct cpage_ent e[NSEGS] = {{0}};
	uint32_t *want = calloc(alloc_nblocks(a), sizeof(*want));

	srand(2);
	for (unsigned i = 0; i < 20000; i++) {
		uint64_t blk = B(1 + rand() % 10, rand() % FMT_SEG_BLOCKS);
		alloc_ref(a, blk);
		if (i % 3 == 0)
			alloc_ref(a, B(4, 17)); /* a block counted in the thousands */
	}
	for (unsigned i = 0; i < 70000; i++)
		alloc_ref(a, B(5, 1)); /* past 0xFFFF: an overflow entry */
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		c[i] = 0x10000u + i; /* every block overflows: wide */
	assert_int_equal(alloc_page_install(a, 12, c), 0);
	alloc_ref(a, B(12, 0));

	/* The checkpoint: every dirty segment's page, then the table. */
	unsigned written = 0, wide = 0;
	for (uint64_t s = alloc_dirty_next(a, 0); s < NSEGS; s = alloc_dirty_next(a, s + 1)) {
		assert_int_equal(alloc_page_counts(a, s, c), 0);
		unsigned n = cpage_encode(s, c, d.img[s]);
		for (unsigned p = 0; p < n; p++)
			cpage_seal(&d.img[s][p], page_addr(s, p));
		e[s] = (struct cpage_ent){.page0 = n ? page_addr(s, 0) : 0,
		                          .page1 = n == 2 ? page_addr(s, 1) : 0,
		                          .live = alloc_seg_live(a, s)};
		written++, wide += n == 2;
	}
	assert_int_equal(written, 11);
	assert_int_equal(wide, 1);
	alloc_pages_clean(a);
	cpage_stab_encode(&d.tab, 0, NSEGS, e);
	cpage_seal(&d.tab, page_addr(0, 0) - 1);

	/* Open: the table only. */
	alloc_set_loader(b, disk_loader, &d);
	for (uint64_t s = 1; s < NSEGS; s++)
		if (e[s].live)
			alloc_page_away(b, s, e[s].live);
	assert_int_equal(alloc_live_blocks(b), alloc_live_blocks(a));
	assert_int_equal(alloc_pages_resident(b), 0);
	for (uint64_t blk = 0; blk < alloc_nblocks(a); blk++)
		want[blk] = alloc_block_refs(a, blk);
	assert_int_equal(alloc_verify(b, want), 0);
	assert_int_equal(d.loads, 11);
	for (uint64_t s = 1; s < NSEGS; s++) {
		assert_int_equal(alloc_seg_load(b, s), 0);
		for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
			assert_int_equal(alloc_block_refs(b, B(s, i)), want[B(s, i)]);
	}
	assert_int_equal(d.loads, 22);
	assert_int_equal(alloc_block_refs(b, B(5, 1)), want[B(5, 1)]);
	assert_true(want[B(5, 1)] > 0xFFFF);
	assert_int_equal(alloc_dirty_count(b), 0);
	assert_int_equal(alloc_error(b), 0);
	assert_true(alloc_check(b));
	free(want);
	alloc_free(a);
	alloc_free(b);
}

/* ---- checkpoint-owned blocks ---- */

/* A held block keeps its segment USED and live, in the pool's live
 * blocks, with no count and no page; a segment holding one is never dead
 * (release, mark, the dead count), and is once the last is released. */
static void test_meta_hold(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	struct freed_log f = {0};

	alloc_meta_hold(a, B(3, 5));
	assert_true(alloc_seg_used(a, 3));
	assert_int_equal(alloc_nfree(a), NSEGS - 2);
	assert_int_equal(alloc_seg_live(a, 3), 1);
	assert_int_equal(alloc_seg_counted(a, 3), 0);
	assert_int_equal(alloc_seg_meta(a, 3), 1);
	assert_int_equal(alloc_live_blocks(a), 1);
	assert_int_equal(alloc_block_refs(a, B(3, 5)), 0);
	assert_int_equal(alloc_pages_resident(a), 0);
	assert_int_equal(alloc_dirty_count(a), 0);
	assert_true(alloc_check(a));

	/* Beside counted blocks: both in seg_live, only these in counted. */
	alloc_ref(a, B(3, 9));
	alloc_meta_hold(a, B(3, 6));
	assert_int_equal(alloc_seg_live(a, 3), 3);
	assert_int_equal(alloc_seg_counted(a, 3), 1);
	assert_int_equal(alloc_live_blocks(a), 3);
	alloc_unref(a, B(3, 9));
	assert_int_equal(alloc_seg_live(a, 3), 2);
	assert_int_equal(alloc_seg_counted(a, 3), 0);
	assert_true(alloc_check(a));

	/* No counted block left, yet not dead while held. */
	assert_int_equal(alloc_dead_segs(a), 0);
	assert_int_equal(alloc_mark_dead(a, 0, 0), 0);
	assert_int_equal(alloc_release_dead(a, 0, 0, note_freed, &f), 0);
	assert_true(alloc_seg_used(a, 3));
	alloc_meta_release(a, B(3, 5));
	assert_int_equal(alloc_release_dead(a, 0, 0, note_freed, &f), 0);
	alloc_meta_release(a, B(3, 6));
	assert_int_equal(alloc_seg_live(a, 3), 0);
	assert_int_equal(alloc_live_blocks(a), 0);
	assert_int_equal(alloc_dead_segs(a), 1);
	assert_true(alloc_check(a));
	assert_int_equal(alloc_release_dead(a, 0, 0, note_freed, &f), 1);
	assert_true(f.n == 1 && f.seg[0] == 3);
	assert_false(alloc_seg_used(a, 3));
	assert_true(alloc_check(a));

	/* White box: a held block the pool's total misses; a FREE segment
	 * holding one. */
	alloc_meta_hold(a, B(4, 0));
	a->live_blocks--;
	assert_false(alloc_check(a));
	a->live_blocks++;
	a->seg_state[4] = ALLOC_FREE;
	a->nfree++;
	assert_false(alloc_check(a));
	a->seg_state[4] = ALLOC_USED;
	a->nfree--;
	assert_true(alloc_check(a));
	alloc_free(a);
}

/* A checkpoint writing every dirty segment's page into the log's head
 * (held, not counted) dirties no page: after it, none is dirty. */
static void test_meta_no_dirty(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	uint32_t c[FMT_SEG_BLOCKS];
	uint64_t head = alloc_take_seg(a), d[NSEGS];
	unsigned at = 0;

	for (unsigned i = 0; i < 300; i++)
		alloc_ref(a, B(2 + i % 5, i));
	assert_int_equal(dirty_list(a, d), 5);
	for (uint64_t s = alloc_dirty_next(a, 0); s < NSEGS; s = alloc_dirty_next(a, s + 1)) {
		assert_int_equal(alloc_page_counts(a, s, c), 0);
		alloc_meta_hold(a, B(head, at++)); /* the page, written */
	}
	alloc_meta_hold(a, B(head, at++));     /* the table */
	assert_int_equal(dirty_list(a, d), 5); /* the same ones, not the head */
	alloc_pages_clean(a);
	assert_int_equal(alloc_dirty_count(a), 0);
	assert_int_equal(alloc_seg_meta(a, head), 6);
	assert_int_equal(alloc_seg_counted(a, head), 0);
	assert_int_equal(alloc_seg_live(a, head), 6);
	assert_int_equal(alloc_dead_segs(a), 0);
	assert_true(alloc_check(a));
	alloc_free(a);
}

/* alloc_verify takes held blocks as live beyond the wanted ones: a pool
 * with them verifies clean against the counted references alone, and a
 * held block given a count too is found. */
static void test_meta_verify(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	uint32_t *want = calloc(alloc_nblocks(a), sizeof(*want));

	for (unsigned i = 0; i < 50; i++) {
		alloc_ref(a, B(1 + i % 4, i));
		want[B(1 + i % 4, i)]++;
	}
	alloc_meta_hold(a, B(2, 900));
	alloc_meta_hold(a, B(7, 0)); /* a segment with no counted block */
	assert_int_equal(alloc_verify(a, want), 0);
	want[B(7, 0)] = 1; /* found below, on stderr */
	assert_true(alloc_verify(a, want) > 0);
	want[B(7, 0)] = 0;
	a->seg_meta[2]++; /* white box: a hold the total misses */
	assert_true(alloc_verify(a, want) > 0);
	a->seg_meta[2]--;
	assert_int_equal(alloc_verify(a, want), 0);
	free(want);
	alloc_free(a);
}

/* alloc_page_dirty marks a segment with counts dirty, counts unchanged
 * (an AWAY one too: writing it loads it); none without counts. */
static void test_page_dirty(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	struct loader l = {0};
	uint32_t c[FMT_SEG_BLOCKS];
	uint64_t d[NSEGS];

	alloc_set_loader(a, test_loader, &l);
	alloc_ref(a, B(3, 1));
	alloc_ref(a, B(3, 1));
	alloc_meta_hold(a, B(4, 1));
	alloc_page_away(a, 5, LOADED_LIVE);
	alloc_pages_clean(a);
	alloc_page_dirty(a, 3);
	alloc_page_dirty(a, 4); /* held only: no counts */
	alloc_page_dirty(a, 9); /* FREE */
	alloc_page_dirty(a, 5); /* AWAY */
	assert_int_equal(dirty_list(a, d), 2);
	assert_true(d[0] == 3 && d[1] == 5);
	assert_int_equal(alloc_block_refs(a, B(3, 1)), 2);
	assert_int_equal(alloc_seg_live(a, 3), 1);
	assert_int_equal(l.calls, 0);
	assert_true(alloc_seg_away(a, 5));
	assert_true(alloc_check(a));
	assert_int_equal(alloc_page_counts(a, 5, c), 0);
	assert_int_equal(l.calls, 1);
	assert_int_equal(alloc_seg_live(a, 5), LOADED_LIVE);
	alloc_pages_clean(a);
	alloc_unref(a, B(3, 1));
	alloc_unref(a, B(3, 1));
	alloc_pages_clean(a);
	alloc_page_dirty(a, 3); /* its counts are all 0 now */
	assert_int_equal(alloc_dirty_count(a), 0);
	alloc_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refs),
	    cmocka_unit_test(test_take_exhaust),
	    cmocka_unit_test(test_release_dead),
	    cmocka_unit_test(test_discard),
	    cmocka_unit_test(test_warm),
	    cmocka_unit_test(test_checkers),
	    cmocka_unit_test(test_no_pages_empty),
	    cmocka_unit_test(test_page_freed),
	    cmocka_unit_test(test_dirty),
	    cmocka_unit_test(test_install),
	    cmocka_unit_test(test_loader_once),
	    cmocka_unit_test(test_loader_fails),
	    cmocka_unit_test(test_pages_through_codec),
	    cmocka_unit_test(test_meta_hold),
	    cmocka_unit_test(test_meta_no_dirty),
	    cmocka_unit_test(test_meta_verify),
	    cmocka_unit_test(test_page_dirty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
