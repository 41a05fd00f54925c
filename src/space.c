/* space.c — the space policy: every rule that decides whether something
 * may take room in the pool, and the compactor's driver.
 *
 * THE INVARIANT (DESIGN.md 5 and 9): a full pool is a working pool.  Data
 * writes stop (ENOSPC) while the free segments are still above zero: the
 * last space_reserve_segs() free segments are kept for what makes room
 * again or must never fail for want of it — checkpoints (which move the
 * log to fresh segments), control operations (delete a volume), trims and
 * zeroes (which free blocks), and the compactor's copies.  Reads go on
 * regardless.  Every rule below is written in terms of that reserve;
 * nothing else in the store decides about room.
 *
 * Rules, in one place:
 *  - data writes: space_check_write (room above the reserve), and when
 *    short, space_make_room (checkpoint so that dead segments become free,
 *    then compact even mostly-live segments);
 *  - trims/zeroes: space_check_trim (may dip into the reserve: a summary
 *    and at most two partial blocks);
 *  - control operations: space_check_ctl (one summary and one op block);
 *  - compaction: a pass runs only if its copies and the tree nodes the
 *    next checkpoint rewrites fit with two segments to spare;
 *  - cleaning ahead of need below a low-water mark, and while idle when the
 *    pool holds much more than its live data.
 *
 * Layer: policy over mechanism — calls ckpt and the compactor, never the
 * reverse; under writer and store_ctl.  Locks: none (log thread).
 */
#include <errno.h>
#include <stdlib.h>

#include "store_int.h"

/* A trim or zero stages at most a summary and two partial blocks (the
 * unaligned head and tail). */
#define TRIM_ROOM_BLOCKS 8
/* A control operation logs one summary and one op block. */
#define CTL_ROOM_BLOCKS 4
/* The compactor moves at most this many blocks per pass, so a round waits
 * at most ~16 MiB of copying. */
#define COMPACT_MAX_BLOCKS 4096
/* Live fraction up to which a segment is worth cleaning: ahead of need,
 * while idle, and when writes are blocked. */
#define UTIL_LOW_WATER 0.75
#define UTIL_IDLE      0.8
#define UTIL_BLOCKED   0.95
/* Passes make_room tries before answering ENOSPC. */
#define MAKE_ROOM_PASSES 64
/* Free segments given back to the backend per idle tick. */
#define DISCARD_PER_TICK 256

uint64_t space_reserve_segs(uint64_t nsegs)
{
	return nsegs / 64 > 8 ? nsegs / 64 : 8;
}

/* Blocks data writes may still use: none once free segments are down to
 * the reserve (checkpoints move the log to fresh segments too: counting
 * the head's rest regardless would let data creep into the reserve one
 * checkpoint at a time).  Above it, the rest of the head segment plus a
 * segment for every free one above the reserve (each move of the log
 * takes one free segment as the new next). */
static uint64_t data_room(const struct store *st)
{
	uint64_t nfree = alloc_nfree(st->a);
	uint64_t spare = nfree > st->sp.reserve_segs ? nfree - st->sp.reserve_segs : 0;
	if (!log_next_seg(st->log) && spare)
		spare--; /* the first move takes two */
	if (!spare)
		return 0;
	return FMT_SEG_BLOCKS - log_head_off(st->log) + (spare - 1) * FMT_SEG_BLOCKS;
}

/* Log blocks that `blocks` carried blocks take, summaries included. */
static uint64_t blocks_needed(uint64_t blocks)
{
	return blocks + blocks / (FMT_SUM_ENTRIES - 1) + 2;
}

/* Log blocks available without touching the last free segments at all. */
static uint64_t raw_room(const struct store *st, uint64_t keep_free)
{
	uint64_t nfree = alloc_nfree(st->a);
	return log_room(st->log) + (nfree > keep_free ? nfree - keep_free : 0) * FMT_SEG_BLOCKS;
}

int space_check_write(const struct store *st, uint64_t blocks)
{
	return data_room(st) >= blocks_needed(blocks) ? 0 : -EAGAIN;
}

int space_check_trim(const struct store *st)
{
	return raw_room(st, 0) < TRIM_ROOM_BLOCKS ? -ENOSPC : 0;
}

int space_check_ctl(const struct store *st)
{
	return alloc_nfree(st->a) == 0 && log_room(st->log) < CTL_ROOM_BLOCKS ? -ENOSPC : 0;
}

/* One compaction pass over victims at most max_util live, and the
 * checkpoint that makes it durable and frees them.  Returns blocks moved,
 * 0 if nothing was worth moving, or -errno (pool failed). */
static int64_t compact_now(struct store *st, double max_util)
{
	uint64_t keep[2 + 1 + CKPT_MAX_BLOCKS];
	unsigned nkeep = 0, ntrees, victims;
	struct tree **trees;
	int64_t moved;

	if (st->failed || st->read_only)
		return 0;
	keep[nkeep++] = log_head_seg(st->log);
	keep[nkeep++] = log_next_seg(st->log);
	nkeep += ckpt_segments(st, keep + nkeep);
	uint64_t live = compact_pick(st->sp.compact, st->a, log_lsn(st->log), keep, nkeep, max_util,
	                             COMPACT_MAX_BLOCKS, &victims);
	/* Room for the copies and, as much again, for the tree nodes the next
	 * checkpoint rewrites, plus two spare segments: never compact into
	 * ENOSPC. */
	if (!victims || raw_room(st, 2) < 2 * blocks_needed(live))
		return 0;
	trees = vtab_trees(st, &ntrees);
	if (!trees)
		return 0;
	moved = compact_move(st->sp.compact, st->a, st->log, st->io, trees, ntrees);
	free(trees);
	if (moved < 0) {
		core_set_failed(st, (int)moved, "compaction");
		return moved;
	}
	st->stats.compactions++;
	st->stats.compacted_blocks += (uint64_t)moved;
	st->ck.dirty = true;
	int err = ckpt_write(st);
	return err ? err : moved;
}

void space_make_room(struct store *st, uint64_t blocks)
{
	ckpt_write(st);
	for (int i = 0; i < MAKE_ROOM_PASSES && !st->failed; i++) {
		if (data_room(st) >= blocks_needed(blocks))
			return;
		/* Writes are blocked: move even mostly-live segments. */
		if (compact_now(st, UTIL_BLOCKED) <= 0)
			return;
	}
}

/* Free segments below which the compactor runs between rounds. */
static uint64_t low_water(const struct store *st)
{
	uint64_t extra = st->nsegs / 32 > 2 ? st->nsegs / 32 : 2;
	return st->sp.reserve_segs + extra;
}

/* Only segments where a copy buys real space, and after a pass that found
 * nothing, not again before another segment of log (the victim scan is
 * O(segments): not for every round). */
bool space_clean_low(struct store *st)
{
	uint64_t written = log_blocks_written(st->log);
	if (st->failed || alloc_nfree(st->a) >= low_water(st) ||
	    written < st->sp.futile_at + FMT_SEG_BLOCKS)
		return false;
	if (compact_now(st, UTIL_LOW_WATER) > 0)
		return true;
	st->sp.futile_at = written;
	return false;
}

/* Idle cleaning is worth it when the pool holds much more than live data. */
static bool idle_clean_due(const struct store *st)
{
	uint64_t used = st->nsegs - 1 - alloc_nfree(st->a);
	uint64_t live = alloc_live_blocks(st->a);
	return used * FMT_SEG_BLOCKS > live + live / 5 + 8 * FMT_SEG_BLOCKS;
}

/* Give a free segment's space back to the backend (a pool file shrinks on
 * disk; an SSD learns the blocks are unused).  Done only while idle: a
 * segment reused soon after being freed is cheaper with its pages still
 * cached. */
static void segment_discard(void *arg, uint64_t seg)
{
	struct store *st = arg;
	segio_discard(st->io, seg);
}

void space_idle(struct store *st)
{
	if (st->failed)
		return;
	if (idle_clean_due(st))
		compact_now(st, UTIL_IDLE);
	else if (ckpt_due(st))
		ckpt_write(st);
	else
		alloc_discard_free(st->a, DISCARD_PER_TICK, segment_discard, st);
}
