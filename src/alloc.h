/* alloc.h — space accounting for the pool (private to the store).
 *
 * Exact ownership by reference counts: every physical block has a count of
 * the tree leaves (data blocks), node objects (their on-disk copy) and
 * checkpoint records that reference it; a block the checkpoint owns may
 * instead be held without a count (alloc_meta_hold).  Counts are held per
 * segment in count pages (below, "Count pages"), which checkpoints write
 * (cpage.h encodes them) and open may leave on disk until first needed.
 * A segment is FREE or USED; a USED
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

/* Per segment: live blocks (ref > 0, plus the checkpoint's own: below),
 * whether it is USED, and its stamp (the LSN at which the log entered it:
 * its age, for the compactor's cost-benefit choice).  O(1). */
uint32_t alloc_seg_live(const struct alloc *a, uint64_t seg);
/* Of those, the blocks with a count (ref > 0: the live count a segment
 * table stores) and the checkpoint-owned ones.  O(1). */
uint32_t alloc_seg_counted(const struct alloc *a, uint64_t seg);
uint32_t alloc_seg_meta(const struct alloc *a, uint64_t seg);
bool alloc_seg_used(const struct alloc *a, uint64_t seg);
uint64_t alloc_seg_stamp(const struct alloc *a, uint64_t seg);
void alloc_seg_set_stamp(struct alloc *a, uint64_t seg, uint64_t lsn);

/* Block names (fwd.h): alloc_ref, alloc_unref, alloc_block_refs and
 * alloc_name_load take a NAME, the value a tree slot holds, and find its
 * block through the allocator's forwarding map; a name that resolves
 * nowhere fails the allocator (alloc_error -EILSEQ; alloc_block_refs reads
 * 0).  A block just written at blk is named fwd_name_of(alloc_fwd(a), blk);
 * every name of a segment never retired by the compactor is its plain
 * address.  The map is the allocator's; callers use it for names, the
 * compactor and checkpoints. */
struct fwd;
struct fwd *alloc_fwd(const struct alloc *a);

/* The count of the block named name (as alloc_blk_refs).  Any thread, as
 * alloc_blk_refs; off the log thread, inside rcu_read_lock. */
uint32_t alloc_block_refs(const struct alloc *a, uint64_t name);
/* Load the count page of the block named name (alloc_seg_load). */
int alloc_name_load(struct alloc *a, uint64_t name);

/* The compactor copied the block at from (counted) to to (uncounted, in
 * the log's head): every reference moves with it, from's count becomes 0.
 * 0 or alloc_error(a) (a page could not be had: nothing changed). */
int alloc_move(struct alloc *a, uint64_t from, uint64_t to);

/* References held on the block at blk (a physical address).  Any thread: a reader off the log
 * thread sees a moment's value (relaxed atomic load), good for estimates only.  It never loads a
 * page: a block whose segment's page is still on disk (AWAY) reads 0, so on the log thread call
 * alloc_seg_load first where an exact count matters.  Off the log thread, call it only for a block
 * the caller saw inside rcu_read_lock (a segment is freed, and its page with it, only after a grace
 * period).  O(1). */
uint32_t alloc_blk_refs(const struct alloc *a, uint64_t blk);

/* Reference / unreference the block named name; O(1), except the first count access
 * in a segment: it allocates the page (4 KiB) or, if AWAY, loads it
 * through the loader (blocking).  If that fails the change is dropped and
 * alloc_error is set for good.  The segment of a referenced block is
 * always USED; every count stays exact up to 2^32 - 1. */
void alloc_ref(struct alloc *a, uint64_t name);
void alloc_unref(struct alloc *a, uint64_t name);

/* A block the checkpoint owns (a count page, a segment table, the
 * record) is held, not counted: it keeps its segment USED and counts in
 * its live blocks (alloc_seg_live, alloc_live_blocks), but has no count in
 * any page and dirties none, so writing pages never dirties pages.  A
 * segment holding one is never dead.  The caller holds each such block
 * once and releases it once (when the checkpoint that owns it is
 * superseded).  O(1). */
void alloc_meta_hold(struct alloc *a, uint64_t blk);
void alloc_meta_release(struct alloc *a, uint64_t blk);

/* Take a FREE segment (USED afterwards): a warm one (below) if any, the
 * first from where the last search ended.  Returns its number or 0 when
 * none is free (segment 0 is never handed out).  O(nsegs) at worst. */
uint64_t alloc_take_seg(struct alloc *a);

/* Mark a segment USED (recovery: segments the log passes through). */
void alloc_mark_used(struct alloc *a, uint64_t seg);

/* Every USED segment with no live block (counted or held), except keep1
 * and keep2 (the log head and the segment it continues in), becomes FREE;
 * freed(arg, seg) is called for each (may be NULL).  Returns how many. */
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

/* ---- Count pages (docs/METADATA.md, "Step 2b as built") ----
 * A segment's counts live in one page, FMT_SEG_BLOCKS u32 (4 KiB resident),
 * allocated at its first reference and freed when the segment becomes
 * FREE: a segment whose counts are all 0 has none, an empty pool holds no
 * page.  Open (from the checkpoint's segment tables) may mark a page AWAY:
 * on disk, its live count known, not loaded until first needed.  Every
 * change of a count marks its segment dirty; a checkpoint writes the pages
 * of dirty segments (none for a segment with no live block) and then
 * calls alloc_pages_clean. */

/* Fills counts[FMT_SEG_BLOCKS] with seg's counts from disk (checks done:
 * cpage_decode).  Returns 0 or -errno.  Called on the log thread, may
 * block; alloc compares the live blocks with the segment table's. */
typedef int alloc_loader_fn(void *arg, uint64_t seg, uint32_t *counts);
void alloc_set_loader(struct alloc *a, alloc_loader_fn *fn, void *arg);

/* Open, before any count access: seg's page is on disk, and the segment
 * has live (> 0) live blocks.  seg becomes USED. */
void alloc_page_away(struct alloc *a, uint64_t seg, uint32_t live);
bool alloc_seg_away(const struct alloc *a, uint64_t seg);
/* Mark seg dirty without changing a count, so the next checkpoint
 * rewrites its page (the compactor, moving a page out of a victim); a
 * no-op for a segment with no counted block.  O(1). */
void alloc_page_dirty(struct alloc *a, uint64_t seg);
/* Load seg's page now if it is AWAY.  Returns 0 or alloc_error(a). */
int alloc_seg_load(struct alloc *a, uint64_t seg);

/* 0, or the -errno of the first page that could not be had: the loader's
 * error, -EILSEQ (a page whose live blocks disagree with its segment
 * table), -ENOMEM.  Sticky: no page is loaded after it, and the change
 * that met it was dropped, so counts are no longer exact: the store must
 * fail.  O(1). */
int alloc_error(const struct alloc *a);

/* The first dirty segment >= from, or alloc_nsegs(a) if none: for (s =
 * alloc_dirty_next(a, 0); s < n; s = alloc_dirty_next(a, s + 1)).  O(nsegs)
 * for a whole pass.  alloc_dirty_count: how many, O(1). */
uint64_t alloc_dirty_next(const struct alloc *a, uint64_t from);
uint64_t alloc_dirty_count(const struct alloc *a);
/* Copy seg's counts to out[FMT_SEG_BLOCKS] (zeros: no page), loading an
 * AWAY page.  Returns 0 or alloc_error(a). */
int alloc_page_counts(struct alloc *a, uint64_t seg, uint32_t *out);
/* Every segment clean (its page written).  O(nsegs). */
void alloc_pages_clean(struct alloc *a);
/* seg clean (its page written ahead of a checkpoint: ckpt's pre-copy);
 * a change of its counts marks it dirty again.  O(1). */
void alloc_page_clean(struct alloc *a, uint64_t seg);
/* Open or upgrade, before readers: seg's counts become counts[] (its live
 * count and the pool's follow; USED if any is > 0; no page if all are 0),
 * clean and not AWAY.  Returns 0 or -ENOMEM (nothing changed). */
int alloc_page_install(struct alloc *a, uint64_t seg, const uint32_t *counts);
/* Pages in memory (each FMT_BLOCK bytes, plus an RCU head).  O(1). */
uint64_t alloc_pages_resident(const struct alloc *a);

/* Evict clean pages, CLOCK order (a page touched since the hand passed
 * gets a second chance), until at most max are resident or budget
 * segments were looked at: only pages on_disk(arg, seg) says are written
 * where the loader finds them.  An evicted page is AWAY (its live count
 * kept) and freed after an RCU grace period (a reader may be in
 * alloc_block_refs on it).  Log thread.  Returns how many it evicted;
 * alloc_pages_evicted: how many ever. */
uint64_t alloc_pages_trim(struct alloc *a, uint64_t max, uint64_t budget,
                          bool (*on_disk)(void *arg, uint64_t seg), void *arg);
uint64_t alloc_pages_evicted(const struct alloc *a);

/* Whole-object checker for assert(): counts agree with the arrays.  AWAY
 * pages are not read (their live count is taken as said). */
bool alloc_check(const struct alloc *a);

/* Offline checker: compare every block's count with want[] (the references
 * recomputed from the trees, alloc_nblocks entries; checkpoint-owned
 * blocks want 0), every segment's live blocks with its blocks wanted plus
 * its held ones, and every segment's state with its live blocks; report each problem with
 * say_error (the first few per kind).  AWAY pages are read for it through
 * the loader and stay away (a page that cannot be read is one problem).
 * Returns the number found. */
int alloc_verify(const struct alloc *a, const uint32_t *want);
/* The same for segments [lo, hi) only, want[] starting at segment lo's
 * first block (the whole-object check runs with lo 0). */
int alloc_verify_range(const struct alloc *a, uint64_t lo, uint64_t hi, const uint32_t *want);

#endif
