/* space.c — the space policy: every rule that decides whether something
 * may take room in the pool, and the compactor's driver.
 *
 * THE INVARIANT (DESIGN.md 5 and 9): a full pool is a working pool.
 * Whatever the clients do, the pool keeps room for
 *  1. the next checkpoint: every tree node dirtied since the last one
 *     (the tree charges each in the allocator when it becomes dirty:
 *     alloc_meta_pending), the count pages and segment tables of the
 *     segments whose counts changed (ckpt_map_blocks), the checkpoint
 *     record, their summaries, and the end of a segment the record may
 *     skip to stay contiguous; and
 *  2. the reserve: space_reserve_segs() segments for what makes room again
 *     or must not fail for want of it — deletes and rollbacks, trims of
 *     whole blocks, the compactor's copies.
 * Data writes (and the partial blocks of unaligned trims and zeroes, which
 * are data) stop with ENOSPC before they would eat into either, counting
 * the data blocks, their summaries and the tree nodes they may dirty;
 * creating volumes, snapshots and clones counts as a write.  Reads,
 * flushes, whole-block trims, deletes and compaction go on, and bring
 * writes back.  A checkpoint that still meets ENOSPC (the host filesystem
 * under a pool file is full) leaves a full pool, not a failed one.
 *
 * Rules, in one place:
 *  - data writes: space_check_write, and when short, space_make_room
 *    (checkpoint so that dead segments become free, then compact even
 *    mostly-live segments);
 *  - trims/zeroes of whole blocks, deletes, rollback: space_check_trim and
 *    space_check_ctl(shrinks) may use the reserve, never the checkpoint's
 *    room (a delete into the reserve first checkpoints, if segments wait
 *    for one to be freed);
 *  - compaction: a pass runs only if its copies and the tree nodes it
 *    dirties fit beside the checkpoint's room with two segments to spare;
 *  - a checkpoint's pre-copy (ckpt_precopy: leaves and count pages
 *    written ahead, some of them twice; at most half of that room in
 *    pages a slice) only with two segments beyond the checkpoint's room
 *    and the reserve (space_precopy_room);
 *  - cleaning ahead of need below a low-water mark, and while idle when the
 *    pool holds much more than its live data.
 *
 * Layer: policy over mechanism — calls ckpt and the compactor, never the
 * reverse; under writer and store_ctl.  Locks: none (log thread).
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"
#include "say.h"
#include "store_int.h"

/* A trim or a control operation logs a summary and at most one block of
 * its own; a trim dirties at most the two paths at its ends. */
#define SMALL_OP_BLOCKS 2
#define PATH_NODES      4 /* levels of the deepest tree */
/* The compactor moves at most this many blocks per pass, so a round waits
 * at most ~16 MiB of copying. */
#define COMPACT_MAX_BLOCKS 4096
/* A pass smaller than this is not worth its checkpoint. */
#define COMPACT_MIN_BLOCKS 64
/* Live fraction up to which a segment is worth cleaning: ahead of need,
 * while idle, and when writes are blocked. */
#define UTIL_LOW_WATER 0.75
#define UTIL_IDLE      0.9
#define UTIL_BLOCKED   0.95
/* Idle cleaning stops at live + live / 6 besides the log's own two
 * segments (DESIGN.md: the pool within 1.2 times its live data). */
#define IDLE_TARGET_PARTS 6
/* Passes make_room tries before answering ENOSPC. */
#define MAKE_ROOM_PASSES 64
/* Free segments given back to the backend per idle tick. */
#define DISCARD_PER_TICK 256
/* The log thread's time for discards per call, taken DISCARD_STEP at a
 * time: a hole punched in a pool file takes microseconds, an object
 * removed from RADOS a round trip (2.6 ms measured on a test cluster),
 * and every write and FLUSH waits behind the log thread meanwhile.  The
 * rest waits for the next call (the next idle tick, the next refused
 * write). */
#define DISCARD_BUDGET_NS (50u * 1000000u)
#define DISCARD_STEP      2

uint64_t space_reserve_segs(uint64_t nsegs)
{
	return nsegs / 64 > 8 ? nsegs / 64 : 8;
}

/* Log blocks that `blocks` carried blocks take, summaries included. */
static uint64_t blocks_needed(uint64_t blocks)
{
	return blocks + blocks / (FMT_SUM_ENTRIES - 1) + 2;
}

/* Log blocks the next checkpoint needs (rule 1 above), with room in the
 * record for one more volume. */
static uint64_t ckpt_need(const struct store *st)
{
	uint64_t rec = ckpt_record_blocks(st, st->vt.n + 1);
	return blocks_needed(alloc_meta_pending(st->a) + ckpt_map_blocks(st)) + 2 * rec + 1;
}

/* Log blocks that can still be written at all: the rest of the head
 * segment, its named successor, and every free segment. */
static uint64_t free_blocks(const struct store *st)
{
	if (log_backend_full(st->log)) /* the host filesystem has no more */
		return log_room(st->log);
	return log_room(st->log) + alloc_nfree(st->a) * FMT_SEG_BLOCKS;
}

/* Free blocks beyond the checkpoint's room and `keep_segs` segments. */
static uint64_t room_beyond(const struct store *st, uint64_t keep_segs)
{
	uint64_t kept = ckpt_need(st) + keep_segs * FMT_SEG_BLOCKS;
	uint64_t free = free_blocks(st);
	return free > kept ? free - kept : 0;
}

/* Tree nodes a write of [lba, lba + n) blocks may dirty in a tree of
 * `levels` levels: at each level, the nodes the range spans. */
static uint64_t nodes_touched(uint64_t lba, uint64_t n, unsigned levels)
{
	uint64_t span = FMT_FANOUT, nodes = 0, last = lba + (n ? n : 1) - 1;
	for (unsigned l = 0; l < levels; l++, span *= FMT_FANOUT)
		nodes += last / span - lba / span + 1;
	return nodes;
}

uint64_t space_write_cost(const struct store *st, uint64_t off, uint64_t len, unsigned levels)
{
	uint64_t lba = off / FMT_BLOCK, n = (off + len + FMT_BLOCK - 1) / FMT_BLOCK - lba;
	return blocks_needed(n) + nodes_touched(lba, n, levels);
}

int space_check_write(const struct store *st, uint64_t cost)
{
	return room_beyond(st, st->sp.reserve_segs) >= st->wr.staged_cost + cost ? 0 : -EAGAIN;
}

int space_check_trim(const struct store *st)
{
	uint64_t need = SMALL_OP_BLOCKS + 2 * PATH_NODES + st->wr.staged_cost;
	return room_beyond(st, 0) >= need ? 0 : -ENOSPC;
}

int space_check_ctl(struct store *st, bool grows)
{
	/* A new volume's record, and the nodes its first writes copy, are
	 * written later; they are charged then.  Creating is a write (and may
	 * first make room, as writes do: a delete just before leaves dead
	 * segments that only a checkpoint frees); deleting or rolling back
	 * frees space and may use the reserve. */
	if (!grows) {
		/* The segments that deletes (and the ops before them) leave
		 * dead come back only with a checkpoint: take one once the
		 * reserve is being used and there are some, or a long run of
		 * deletes uses up all the room there is. */
		if (room_beyond(st, st->sp.reserve_segs) < SMALL_OP_BLOCKS &&
		    alloc_dead_segs(st->a))
			ckpt_write(st); /* a failure leaves the room as it was */
		return room_beyond(st, 0) >= SMALL_OP_BLOCKS ? 0 : -ENOSPC;
	}
	if (!space_check_write(st, SMALL_OP_BLOCKS))
		return 0;
	space_make_room(st, SMALL_OP_BLOCKS);
	return space_check_write(st, SMALL_OP_BLOCKS) ? -ENOSPC : 0;
}

/* One compaction pass over victims at most max_util live, and the
 * checkpoint that makes it durable and frees them.  Returns blocks moved,
 * 0 if nothing was worth moving, or -errno (pool failed). */
static int64_t compact_now(struct store *st, double max_util)
{
	uint64_t keep[2 + 1 + CKPT_MAX_BLOCKS];
	unsigned nkeep = 0, victims;
	int64_t moved;

	if (st->failed || st->read_only)
		return 0;
	/* Never beside a checkpoint in flight (its blocks are not yet the
	 * checkpoint's: the victims must not include them). */
	ckpt_wait(st);
	/* The copies and, as much again, the forwarding blocks they dirty must fit
	 * beside the checkpoint's room and two spare segments (never compact
	 * into ENOSPC): when room is short, a smaller pass. */
	uint64_t room = room_beyond(st, 2), fit = room / 2;
	fit = fit > 2 + fit / (FMT_SUM_ENTRIES - 1) ? fit - 2 - fit / (FMT_SUM_ENTRIES - 1) : 0;
	unsigned max_blocks = fit < COMPACT_MAX_BLOCKS ? (unsigned)fit : COMPACT_MAX_BLOCKS;
	if (max_blocks < COMPACT_MIN_BLOCKS)
		return 0;
	keep[nkeep++] = log_head_seg(st->log);
	keep[nkeep++] = log_next_seg(st->log);
	nkeep += ckpt_segments(st, keep + nkeep);
	uint64_t live = compact_pick(st->sp.compact, st->a, log_lsn(st->log), keep, nkeep, max_util,
	                             max_blocks, &victims);
	if (!victims || room < 2 * blocks_needed(live))
		return 0;
	moved = compact_move(st->sp.compact, st->a, st->log, st->io);
	if (moved < 0) {
		core_set_failed(st, (int)moved, "compaction");
		return moved;
	}
	st->stats.compactions++;
	st->stats.compacted_blocks += (uint64_t)moved;
	st->ck.dirty = true;
	ckpt_move_map(st, compact_victims(st->sp.compact));
	int err = ckpt_write(st);
	return err ? err : moved;
}

int64_t space_compact(struct store *st)
{
	return compact_now(st, UTIL_IDLE);
}

static void segment_discard(void *arg, uint64_t seg);

/* alloc_discard_free within DISCARD_BUDGET_NS: up to max free segments,
 * keep_warm warm ones kept.  Returns how many. */
static unsigned discard_free(struct store *st, unsigned max, uint64_t keep_warm)
{
	uint64_t t0 = mono_ns();
	unsigned n = 0, k;

	do {
		k = alloc_discard_free(st->a, max - n < DISCARD_STEP ? max - n : DISCARD_STEP,
		                       keep_warm, segment_discard, st);
		n += k;
	} while (k && n < max && mono_ns() - t0 < DISCARD_BUDGET_NS);
	return n;
}

void space_make_room(struct store *st, uint64_t cost)
{
	uint64_t live, nfree;

	if (log_backend_full(st->log)) {
		/* The host filesystem under the pool file (or the object
		 * store's pool) is full: give it back free segments' space, as
		 * many as the budget allows (the next refused write goes on),
		 * then ask again for the log's successor (space freed elsewhere
		 * counts too, so this is tried whatever changed). */
		discard_free(st, UINT32_MAX, 0);
		log_retry_reserve(st->log);
	}
	live = alloc_live_blocks(st->a);
	nfree = alloc_nfree(st->a);

	/* Nothing was freed or trimmed since the last attempt found no room:
	 * answer at once (a client retrying on a full pool must not turn
	 * every refused write into a checkpoint). */
	if (st->sp.futile_live == live && st->sp.futile_free == nfree)
		return;
	/* A checkpoint frees the segments that died since the last one and
	 * the room kept for dirty nodes; with neither it only costs syncs. */
	if (alloc_meta_pending(st->a) || alloc_dead_segs(st->a)) {
		ckpt_write(st);
		if (log_backend_full(st->log)) { /* what it freed goes back too */
			discard_free(st, UINT32_MAX, 0);
			log_retry_reserve(st->log);
		}
	}
	/* Make a segment of headroom, so the next writes do not come back
	 * here one by one; writes are blocked: move even mostly-live
	 * segments. */
	for (int i = 0; i < MAKE_ROOM_PASSES && !st->failed; i++) {
		if (!space_check_write(st, cost + FMT_SEG_BLOCKS))
			break;
		if (compact_now(st, UTIL_BLOCKED) <= 0)
			break;
	}
	if (space_check_write(st, cost)) {
		st->sp.futile_live = alloc_live_blocks(st->a);
		st->sp.futile_free = alloc_nfree(st->a);
	} else {
		st->sp.futile_live = st->sp.futile_free = UINT64_MAX;
	}
}

/* Free segments below which the compactor runs between rounds. */
static uint64_t low_water(const struct store *st)
{
	uint64_t extra = st->nsegs / 32 > 2 ? st->nsegs / 32 : 2;
	return st->sp.reserve_segs + extra;
}

bool space_precopy_room(const struct store *st)
{
	return room_beyond(st, st->sp.reserve_segs) >= 2 * FMT_SEG_BLOCKS;
}

/* Only segments where a copy buys real space, and after a pass that found
 * nothing, not again before another segment of log (the victim scan is
 * O(segments): not for every round). */
bool space_clean_due(const struct store *st)
{
	return !st->failed && alloc_nfree(st->a) < low_water(st) &&
	       log_blocks_written(st->log) >= st->sp.futile_at + FMT_SEG_BLOCKS;
}

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

/* Idle cleaning brings the pool down towards its live data
 * (the log's head and next segment, always in use, aside). */
static bool idle_clean_due(const struct store *st)
{
	uint64_t used = st->nsegs - 1 - alloc_nfree(st->a);
	uint64_t live = alloc_live_blocks(st->a);
	return used > 2 && (used - 2) * FMT_SEG_BLOCKS > live + live / IDLE_TARGET_PARTS;
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

void space_pause_idle(struct store *st, bool pause)
{
	__atomic_add_fetch(&st->sp.idle_paused, pause ? 1 : -1, __ATOMIC_RELEASE);
}

/* Warm free segments (alloc.h) idle discards leave alone: two checkpoint
 * intervals of log, about what a write burst after idle fills before its
 * own checkpoints free segments again, but never more than an eighth of
 * the pool (a long interval must not keep the space for good).  Appends
 * over their cached pages cost 40% less CPU than appends into discarded
 * ones here (PERFORMANCE.md). */
static uint64_t warm_keep(const struct store *st)
{
	uint64_t keep = 2 * st->ck.interval_bytes / FMT_SEG_BYTES;
	return keep < st->nsegs / 8 ? keep : st->nsegs / 8;
}

void space_idle(struct store *st)
{
	if (st->failed)
		return;
	if (idle_clean_due(st) && !__atomic_load_n(&st->sp.idle_paused, __ATOMIC_ACQUIRE))
		compact_now(st, UTIL_IDLE);
	else if (ckpt_due(st))
		ckpt_begin(st);
	else
		discard_free(st, DISCARD_PER_TICK, warm_keep(st));
}
