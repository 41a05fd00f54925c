/* alloc.c — per-block reference counts, per-segment live counts and the
 * segment bitmap (FREE/USED).  Layer: below store, beside tree and log.
 * No locks: the store's log thread is the only caller (see alloc.h). */
#include <assert.h>
#include <stdlib.h>

#include "alloc.h"

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
	if (!a->ref || !a->seg_live || !a->seg_state || !a->seg_stamp || !a->seg_discarded) {
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
	free(a);
}

void alloc_mark_used(struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	if (a->seg_state[seg] == ALLOC_FREE) {
		a->seg_state[seg] = ALLOC_USED;
		a->seg_discarded[seg] = 0;
		a->nfree--;
	}
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

uint64_t alloc_take_seg(struct alloc *a)
{
	if (!a->nfree)
		return 0;
	for (uint64_t i = 0; i < a->nsegs; i++) {
		uint64_t s = (a->hint + i) % a->nsegs;
		if (s && a->seg_state[s] == ALLOC_FREE) {
			a->seg_state[s] = ALLOC_USED;
			a->seg_discarded[s] = 0;
			a->nfree--;
			a->hint = s + 1;
			return s;
		}
	}
	return 0;
}

uint64_t alloc_release_dead(struct alloc *a, uint64_t keep1, uint64_t keep2,
                            void (*freed)(void *arg, uint64_t seg), void *arg)
{
	uint64_t n = 0, first = 0;
	for (uint64_t s = 1; s < a->nsegs; s++) {
		if (a->seg_state[s] == ALLOC_USED && a->seg_live[s] == 0 && s != keep1 &&
		    s != keep2) {
			if (!first)
				first = s;
			a->seg_state[s] = ALLOC_FREE;
			a->nfree++;
			n++;
			if (freed)
				freed(arg, s);
		}
	}
	/* Reuse what was just freed first: its pages are likely still in
	 * the page cache, where a fresh segment would cost new pages. */
	if (first)
		a->hint = first;
	return n;
}

unsigned alloc_discard_free(struct alloc *a, unsigned max, void (*discard)(void *arg, uint64_t seg),
                            void *arg)
{
	unsigned n = 0;
	for (uint64_t s = 1; s < a->nsegs && n < max; s++)
		if (a->seg_state[s] == ALLOC_FREE && !a->seg_discarded[s]) {
			discard(arg, s);
			a->seg_discarded[s] = 1;
			n++;
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
	uint64_t nfree = 0, live = 0;
	for (uint64_t s = 0; s < a->nsegs; s++) {
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
	return nfree == a->nfree && live == a->live_blocks;
}
