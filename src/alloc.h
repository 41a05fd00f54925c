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

/* Opaque: used only through the functions below (alloc.c owns the fields). */
struct alloc;

/* Returns NULL on ENOMEM.  Segment 0 (superblocks) is USED forever; every
 * other segment starts FREE. */
struct alloc *alloc_new(uint64_t nsegs);
void alloc_free(struct alloc *a);

static inline uint64_t alloc_seg_of(uint64_t blk)
{
	return blk / FMT_SEG_BLOCKS;
}

/* Sizes fixed at alloc_new; O(1). */
uint64_t alloc_nsegs(const struct alloc *a);
uint64_t alloc_nblocks(const struct alloc *a);
/* FREE segments now; blocks with a reference (data + metadata); O(1). */
uint64_t alloc_nfree(const struct alloc *a);
uint64_t alloc_live_blocks(const struct alloc *a);

/* Metadata promised but not yet written: tree nodes dirtied since the
 * last checkpoint, each of which the next checkpoint writes as one block.
 * The tree charges +1 when a node becomes dirty and -1 when it is written
 * or freed; the space policy keeps room for them.  O(1). */
void alloc_meta_charge(struct alloc *a, int64_t delta);
uint64_t alloc_meta_pending(const struct alloc *a);

/* Per segment: live blocks (ref > 0), whether it is USED, and its stamp
 * (the LSN at which the log entered it: its age, for the compactor's
 * cost-benefit choice).  O(1). */
uint32_t alloc_seg_live(const struct alloc *a, uint64_t seg);
bool alloc_seg_used(const struct alloc *a, uint64_t seg);
uint64_t alloc_seg_stamp(const struct alloc *a, uint64_t seg);
void alloc_seg_set_stamp(struct alloc *a, uint64_t seg, uint64_t lsn);

/* References held on blk.  Any thread: a reader off the log thread sees a
 * moment's value (relaxed atomic load), good for estimates only.  O(1). */
uint32_t alloc_block_refs(const struct alloc *a, uint64_t blk);

/* Reference / unreference a block; O(1).  The segment of a referenced
 * block is always USED. */
void alloc_ref(struct alloc *a, uint64_t blk);
void alloc_unref(struct alloc *a, uint64_t blk);

/* Take a FREE segment (USED afterwards): a warm one (below) if any, the
 * first from where the last search ended.  Returns its number or 0 when
 * none is free (segment 0 is never handed out).  O(nsegs) at worst. */
uint64_t alloc_take_seg(struct alloc *a);

/* Mark a segment USED (recovery: segments the log passes through). */
void alloc_mark_used(struct alloc *a, uint64_t seg);

/* Every USED segment with no live block, except keep1/keep2 (the log head
 * and the segment it continues in), becomes FREE; freed(arg, seg) is called
 * for each (may be NULL).  Returns how many. */
uint64_t alloc_release_dead(struct alloc *a, uint64_t keep1, uint64_t keep2,
                            void (*freed)(void *arg, uint64_t seg), void *arg);

/* For a checkpoint in flight: mark every segment alloc_release_dead would
 * free now (a dead segment stays dead: only the log's head, kept, gains
 * blocks).  Returns how many. */
uint64_t alloc_mark_dead(struct alloc *a, uint64_t keep1, uint64_t keep2);
/* Free the marked segments (that checkpoint is durable and a grace period
 * passed) and unmark them; freed(arg, seg) for each.  Returns how many. */
uint64_t alloc_release_marked(struct alloc *a, void (*freed)(void *arg, uint64_t seg), void *arg);
/* Forget the marks (that checkpoint failed: its successor decides). */
void alloc_unmark_dead(struct alloc *a);

/* Up to max FREE segments not yet discarded: discard(arg, seg) each and
 * remember it.  Warm segments (released by the log since they were last
 * written, so their pages are likely still cached; alloc_take_seg hands
 * them out first) go last, and keep_warm of them stay.  Returns how many. */
unsigned alloc_discard_free(struct alloc *a, unsigned max, uint64_t keep_warm,
                            void (*discard)(void *arg, uint64_t seg), void *arg);

/* USED segments with no live block (waiting for the next checkpoint). */
uint64_t alloc_dead_segs(const struct alloc *a);

/* Whole-object checker for assert(): counts agree with the arrays. */
bool alloc_check(const struct alloc *a);

/* Offline checker: compare every block's count with want[] (the references
 * recomputed from the trees and checkpoint, alloc_nblocks entries) and
 * every segment's state with its live blocks; report each problem with
 * say_error (the first few per kind).  Returns the number found. */
int alloc_verify(const struct alloc *a, const uint32_t *want);

#endif
