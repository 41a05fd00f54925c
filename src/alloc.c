/* alloc.c — per-block reference counts, per-segment live counts and the
 * segment bitmap (FREE/USED).  Layer: below store, beside tree and log.
 * No locks: the store's log thread is the only caller (see alloc.h). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "say.h"

enum alloc_seg_state { ALLOC_FREE = 0, ALLOC_USED = 1 };

/* Invariants (alloc_check): seg_live[s] counts the blocks of s with ref > 0;
 * a segment with a live block is USED; nfree counts FREE segments and
 * live_blocks all blocks with ref > 0.  Segment 0 is USED forever. */
struct alloc {
	uint64_t nsegs;
	uint64_t nblocks;
	uint32_t *ref;      /* per block */
	uint32_t *seg_live; /* per segment: blocks with ref > 0 */
	uint8_t *seg_state; /* enum alloc_seg_state */
	uint64_t nfree;     /* FREE segments */
	uint64_t hint;      /* where the next search starts */
	uint64_t live_blocks;
	uint64_t *seg_stamp;    /* LSN when the log entered the segment (age for the compactor) */
	uint8_t *seg_discarded; /* FREE and already handed back to the device */
	uint8_t *seg_warm;      /* FREE, released by the log since it was last written */
	uint64_t nwarm;         /* segments with seg_warm set */
	uint64_t meta_pending;  /* dirty tree nodes: blocks the next checkpoint writes */
	uint8_t *seg_marked;    /* dead when a checkpoint in flight began (alloc_mark_dead) */
};

struct alloc *alloc_new(uint64_t nsegs)
{
	struct alloc *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->nsegs = nsegs;
	a->nblocks = nsegs * FMT_SEG_BLOCKS;
	a->ref = calloc(a->nblocks, sizeof(*a->ref));
	a->seg_live = calloc(nsegs, sizeof(*a->seg_live));
	a->seg_state = calloc(nsegs, 1);
	a->seg_stamp = calloc(nsegs, sizeof(*a->seg_stamp));
	a->seg_discarded = calloc(nsegs, 1);
	a->seg_marked = calloc(nsegs, 1);
	a->seg_warm = calloc(nsegs, 1);
	if (!a->ref || !a->seg_live || !a->seg_state || !a->seg_stamp || !a->seg_discarded ||
	    !a->seg_marked || !a->seg_warm) {
		alloc_free(a);
		return NULL;
	}
	a->seg_state[0] = ALLOC_USED;
	a->nfree = nsegs - 1;
	a->hint = 1;
	return a;
}

void alloc_free(struct alloc *a)
{
	if (!a)
		return;
	free(a->ref);
	free(a->seg_live);
	free(a->seg_state);
	free(a->seg_stamp);
	free(a->seg_discarded);
	free(a->seg_warm);
	free(a->seg_marked);
	free(a);
}

uint64_t alloc_nsegs(const struct alloc *a)
{
	return a->nsegs;
}

uint64_t alloc_nblocks(const struct alloc *a)
{
	return a->nblocks;
}

uint64_t alloc_nfree(const struct alloc *a)
{
	return a->nfree;
}

uint64_t alloc_live_blocks(const struct alloc *a)
{
	return a->live_blocks;
}

void alloc_meta_charge(struct alloc *a, int64_t delta)
{
	assert(delta >= 0 || a->meta_pending >= (uint64_t)-delta);
	a->meta_pending += (uint64_t)delta;
}

uint64_t alloc_meta_pending(const struct alloc *a)
{
	return a->meta_pending;
}

uint32_t alloc_seg_live(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return a->seg_live[seg];
}

bool alloc_seg_used(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return a->seg_state[seg] == ALLOC_USED;
}

/* Reader threads read stamps (bcrc.c keys its tables by them) while the
 * log thread sets them: relaxed atomics, so a reader sees the old or the
 * new stamp, never a torn one. */
uint64_t alloc_seg_stamp(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return __atomic_load_n(&a->seg_stamp[seg], __ATOMIC_RELAXED);
}

void alloc_seg_set_stamp(struct alloc *a, uint64_t seg, uint64_t lsn)
{
	assert(seg < a->nsegs);
	__atomic_store_n(&a->seg_stamp[seg], lsn, __ATOMIC_RELAXED);
}

uint32_t alloc_block_refs(const struct alloc *a, uint64_t blk)
{
	assert(blk < a->nblocks);
	return __atomic_load_n(&a->ref[blk], __ATOMIC_RELAXED);
}

/* s stops being warm (taken, or its cached pages given up). */
static void seg_cool(struct alloc *a, uint64_t s)
{
	a->nwarm -= a->seg_warm[s];
	a->seg_warm[s] = 0;
}

/* FREE segment s goes to the log. */
static void seg_take(struct alloc *a, uint64_t s)
{
	a->seg_state[s] = ALLOC_USED;
	a->seg_discarded[s] = 0;
	seg_cool(a, s);
	a->nfree--;
}

void alloc_mark_used(struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	if (a->seg_state[seg] == ALLOC_FREE)
		seg_take(a, seg);
}

void alloc_ref(struct alloc *a, uint64_t blk)
{
	assert(blk < a->nblocks);
	if (a->ref[blk]++ == 0) {
		uint64_t s = alloc_seg_of(blk);
		a->seg_live[s]++;
		a->live_blocks++;
		alloc_mark_used(a, s);
	}
}

void alloc_unref(struct alloc *a, uint64_t blk)
{
	assert(blk < a->nblocks);
	assert(a->ref[blk] > 0);
	if (--a->ref[blk] == 0) {
		a->seg_live[alloc_seg_of(blk)]--;
		a->live_blocks--;
	}
}

/* The first FREE segment from the hint on (warm ones only if want_warm). */
static uint64_t find_free(const struct alloc *a, bool want_warm)
{
	for (uint64_t i = 0; i < a->nsegs; i++) {
		uint64_t s = (a->hint + i) % a->nsegs;
		if (s && a->seg_state[s] == ALLOC_FREE && (!want_warm || a->seg_warm[s]))
			return s;
	}
	return 0;
}

/* Warm segments first: appending over pages still in the page cache
 * costs a copy, into a fresh or discarded segment also new pages (and on
 * a VM, memory the host must first provide: several times slower). */
uint64_t alloc_take_seg(struct alloc *a)
{
	uint64_t s = 0;

	if (!a->nfree)
		return 0;
	if (a->nwarm)
		s = find_free(a, true);
	if (!s)
		s = find_free(a, false);
	if (s) {
		seg_take(a, s);
		a->hint = s + 1;
	}
	return s;
}

static bool seg_dead(const struct alloc *a, uint64_t s, uint64_t keep1, uint64_t keep2)
{
	return a->seg_state[s] == ALLOC_USED && a->seg_live[s] == 0 && s != keep1 && s != keep2;
}

/* Segment s (dead) becomes FREE. */
static void seg_release(struct alloc *a, uint64_t s, uint64_t *first,
                        void (*freed)(void *arg, uint64_t seg), void *arg)
{
	if (!*first)
		*first = s;
	a->seg_state[s] = ALLOC_FREE;
	a->seg_marked[s] = 0;
	a->seg_warm[s] = 1;
	a->nwarm++;
	a->nfree++;
	if (freed)
		freed(arg, s);
}

/* Reuse what was just freed first: its pages are likely still in the page
 * cache, where a fresh segment would cost new pages. */
static uint64_t released(struct alloc *a, uint64_t n, uint64_t first)
{
	if (first)
		a->hint = first;
	return n;
}

uint64_t alloc_release_dead(struct alloc *a, uint64_t keep1, uint64_t keep2,
                            void (*freed)(void *arg, uint64_t seg), void *arg)
{
	uint64_t n = 0, first = 0;
	for (uint64_t s = 1; s < a->nsegs; s++)
		if (seg_dead(a, s, keep1, keep2)) {
			seg_release(a, s, &first, freed, arg);
			n++;
		}
	return released(a, n, first);
}

uint64_t alloc_mark_dead(struct alloc *a, uint64_t keep1, uint64_t keep2)
{
	uint64_t n = 0;
	for (uint64_t s = 1; s < a->nsegs; s++) {
		a->seg_marked[s] = seg_dead(a, s, keep1, keep2);
		n += a->seg_marked[s];
	}
	return n;
}

uint64_t alloc_release_marked(struct alloc *a, void (*freed)(void *arg, uint64_t seg), void *arg)
{
	uint64_t n = 0, first = 0;
	for (uint64_t s = 1; s < a->nsegs; s++) {
		if (!a->seg_marked[s])
			continue;
		/* Marked segments cannot come back to life (alloc.h); one
		 * that did is kept, and says so. */
		if (seg_dead(a, s, 0, 0)) {
			seg_release(a, s, &first, freed, arg);
			n++;
		} else {
			say_error(
			    "alloc: segment %llu was dead at a checkpoint and is live now: kept",
			    (unsigned long long)s);
			a->seg_marked[s] = 0;
		}
	}
	return released(a, n, first);
}

void alloc_unmark_dead(struct alloc *a)
{
	memset(a->seg_marked, 0, a->nsegs);
}

static void seg_discard(struct alloc *a, uint64_t s, void (*discard)(void *arg, uint64_t seg),
                        void *arg)
{
	discard(arg, s);
	a->seg_discarded[s] = 1;
	seg_cool(a, s);
}

unsigned alloc_discard_free(struct alloc *a, unsigned max, uint64_t keep_warm,
                            void (*discard)(void *arg, uint64_t seg), void *arg)
{
	unsigned n = 0;
	for (uint64_t s = 1; s < a->nsegs && n < max; s++)
		if (a->seg_state[s] == ALLOC_FREE && !a->seg_discarded[s] && !a->seg_warm[s]) {
			seg_discard(a, s, discard, arg);
			n++;
		}
	/* Warm ones beyond keep_warm, those alloc_take_seg would reach last
	 * first: backwards from the hint. */
	for (uint64_t i = 1; i <= a->nsegs && n < max && a->nwarm > keep_warm; i++) {
		uint64_t s = (a->hint + a->nsegs - i) % a->nsegs;
		if (a->seg_warm[s]) {
			seg_discard(a, s, discard, arg);
			n++;
		}
	}
	return n;
}

uint64_t alloc_dead_segs(const struct alloc *a)
{
	uint64_t n = 0;
	for (uint64_t s = 1; s < a->nsegs; s++)
		if (a->seg_state[s] == ALLOC_USED && a->seg_live[s] == 0)
			n++;
	return n;
}

bool alloc_check(const struct alloc *a)
{
	uint64_t nfree = 0, live = 0, warm = 0;
	for (uint64_t s = 0; s < a->nsegs; s++) {
		if (a->seg_warm[s] && a->seg_state[s] != ALLOC_FREE)
			return false;
		warm += a->seg_warm[s];
		uint32_t l = 0;
		for (uint64_t b = s * FMT_SEG_BLOCKS; b < (s + 1) * FMT_SEG_BLOCKS; b++)
			l += a->ref[b] > 0;
		if (l != a->seg_live[s])
			return false;
		if (l && a->seg_state[s] != ALLOC_USED)
			return false;
		nfree += a->seg_state[s] == ALLOC_FREE;
		live += l;
	}
	return nfree == a->nfree && live == a->live_blocks && warm == a->nwarm;
}

int alloc_verify(const struct alloc *a, const uint32_t *want)
{
	int bad = 0;

	for (uint64_t b = 0; b < a->nblocks; b++)
		if (want[b] != a->ref[b]) {
			say_problem("reference counts that differ", 1,
			            "check: block %llu referenced %u times, accounted %u",
			            (unsigned long long)b, want[b], a->ref[b]);
			bad++;
		}
	for (uint64_t s = 0; s < a->nsegs; s++)
		if (a->seg_live[s] && a->seg_state[s] != ALLOC_USED) {
			say_problem("free segments holding live blocks", 1,
			            "check: segment %llu holds live blocks but is free",
			            (unsigned long long)s);
			bad++;
		}
	if (!alloc_check(a)) {
		say_problem("allocator count errors", 1,
		            "check: allocator counts disagree with its arrays");
		bad++;
	}
	return bad;
}
