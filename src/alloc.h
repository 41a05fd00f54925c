/* alloc.h — space accounting for the pool (private to the store).
 *
 * Exact ownership by reference counts: every physical block has a count of
 * the tree leaves (data blocks), node objects (their on-disk copy) and
 * checkpoint records that reference it.  A segment is FREE or USED; a USED
 * segment whose blocks are all unreferenced is "dead" and becomes FREE only
 * at alloc_release_dead(), which the store calls after a checkpoint is
 * durable and an RCU grace period has passed (a block freed in the current
 * checkpoint interval is never reused before the next one: the last durable
 * checkpoint and the log after it may still need it).
 *
 * Single writer: only the store's log thread (or the opener before threads
 * start) calls these.  Readers do not touch the allocator.
 */
#ifndef COWBD_ALLOC_H
#define COWBD_ALLOC_H
#include <stdbool.h>
#include <stdint.h>

#include "format.h"

enum alloc_seg_state { ALLOC_FREE = 0, ALLOC_USED = 1 };

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
};

/* Returns NULL on ENOMEM.  Segment 0 (superblocks) is USED forever; every
 * other segment starts FREE. */
struct alloc *alloc_new(uint64_t nsegs);
void alloc_free(struct alloc *a);

static inline uint64_t alloc_seg_of(uint64_t blk)
{
	return blk / FMT_SEG_BLOCKS;
}

/* Reference / unreference a block; O(1).  The segment of a referenced
 * block is always USED. */
void alloc_ref(struct alloc *a, uint64_t blk);
void alloc_unref(struct alloc *a, uint64_t blk);

/* Take a FREE segment (USED afterwards).  Returns its number or 0 when none
 * is free (segment 0 is never handed out). */
uint64_t alloc_take_seg(struct alloc *a);

/* Mark a segment USED (recovery: segments the log passes through). */
void alloc_mark_used(struct alloc *a, uint64_t seg);

/* Every USED segment with no live block, except keep1/keep2 (the log head
 * and the segment it continues in), becomes FREE; freed(arg, seg) is called
 * for each (may be NULL).  Returns how many. */
uint64_t alloc_release_dead(struct alloc *a, uint64_t keep1, uint64_t keep2,
                            void (*freed)(void *arg, uint64_t seg), void *arg);

/* Up to max FREE segments not yet discarded: discard(arg, seg) each and
 * remember it.  Returns how many. */
unsigned alloc_discard_free(struct alloc *a, unsigned max, void (*discard)(void *arg, uint64_t seg),
                            void *arg);

/* USED segments with no live block (waiting for the next checkpoint). */
uint64_t alloc_dead_segs(const struct alloc *a);

/* Whole-object checker for assert(): counts agree with the arrays. */
bool alloc_check(const struct alloc *a);

#endif
