/* compact.h — the compactor (private to the store).
 *
 * Picks victim segments by LFS cost-benefit — (1-u)·age / (1+u), u the
 * live fraction, age in LSNs since the log entered the segment — and
 * copies their counted blocks to the log head as MOVE2 entries, each
 * under its name (fwd.h: the birth a MOVE2 entry of the victim gives it,
 * else its own address and the victim's life), staged in the allocator's
 * forwarding map, published once the copies are written, and then counts
 * move with the blocks (alloc_move) and each victim's life moves on.  No
 * tree is read or changed: a pass costs one forwarding entry per block
 * moved, whatever number of snapshots share it.  Nothing is freed here:
 * the caller writes a checkpoint next, which makes the map and the counts
 * durable and only then frees the victims (after an RCU grace period).  A
 * crash before that checkpoint leaves the old one in force, whose blocks
 * are all intact.
 *
 * Whether a pass is worth its room in the log is policy: the store's space
 * rules decide between compact_pick and compact_move.
 *
 * Damaged blocks are never laundered (DESIGN.md invariant 8).  Every
 * block is read and checked against the CRC32C its segment's summaries
 * hold (bcrc.h; a tree node against its own) before it is copied; a MOVE2
 * entry then carries the copy's CRC, which is the same.  A block that fails the check (or cannot be
 * read) is not copied: it stays where it is, still described by the summary that wrote it, so reads
 * of it keep getting EIO and cowbd-check keeps reporting it; it is logged and counted
 * (compact_bad_blocks), and while it is live its segment is never chosen as a victim again (moving
 * the rest would free nothing).  Once it is overwritten or trimmed, the segment is a candidate like
 * any other.  The alternatives were worse: a copy with a fresh CRC hides the damage; a copy
 * carrying the old CRC needs the log to write a CRC it did not compute, and moves the damage away
 * from the summary that names its volume and block.
 *
 * Runs on the store's log thread (RCU-registered), between rounds.
 * Readers are never blocked: they see a block's old or new copy, with the
 * same bytes.
 */
#ifndef COWBD_COMPACT_H
#define COWBD_COMPACT_H
#include <stdint.h>

#include "alloc.h"
#include "log.h"
#include "segio.h"

struct compact;

struct compact *compact_new(void);
void compact_free(struct compact *c);

/* Choose victims: segments of live fraction <= max_util, never one listed
 * in keep[] (segment numbers), best cost-benefit first, holding at most
 * max_blocks live blocks in all; now_lsn dates the segments.  Returns the
 * live blocks the chosen victims hold (0: none worth moving); *victims
 * gets their number.  Nothing is written. */
uint64_t compact_pick(struct compact *c, const struct alloc *a, uint64_t now_lsn,
                      const uint64_t *keep, unsigned nkeep, double max_util, unsigned max_blocks,
                      unsigned *victims);

/* Copy the counted blocks of the victims compact_pick chose to the log
 * head (MOVE2 entries, read through io) and forward their names to the
 * copies; a damaged block is left in place (above), its name forwarded to
 * itself.  Returns the number of blocks copied or -errno (the log may hold
 * part of the copies then, none visible; the caller fails the pool). */
int64_t compact_move(struct compact *c, struct alloc *a, struct log *l, struct segio *io);

/* The victims the last compact_pick chose (victim[seg] != 0), valid until
 * the next pick. */
const uint8_t *compact_victims(const struct compact *c);

/* Damaged blocks compact_move has found and left in place, ever. */
uint64_t compact_bad_blocks(const struct compact *c);

/* Nanoseconds (CLOCK_MONOTONIC) spent in compact_pick and compact_move,
 * ever: the log thread's time compacting, without the checkpoint that
 * follows a pass. */
uint64_t compact_ns(const struct compact *c);

#endif
