/* fwd.h — block names and the forwarding map (private to the store;
 * docs/METADATA.md, "Step 4").
 *
 * A tree slot (leaf: a data block; interior: a child node) and a node's
 * identity hold a block's NAME, not where the block is now: the address it
 * was written at (its birth address, FWD_ADDR_BITS bits) and the tag of
 * that segment's life then (FWD_TAG_BITS bits above it).  A segment's life
 * changes only when the compactor retires it (fwd_publish): every live
 * block of the victim has been copied to the log head, and the forwarding
 * map records, per (segment, tag), where each block of that life went.  So
 * a name resolves to
 *
 *   its own address            if its tag is its segment's life now,
 *   F[(segment, tag)][index]   otherwise (the copy; 0 entries: dangling).
 *
 * A block moved again keeps its name: the compactor learns it from the
 * MOVE entry that wrote the copy and updates that entry of F.  So no tree
 * changes when blocks move, whatever number of trees share them: a pass
 * costs one F entry per block moved.  Names of never-retired segments have
 * tag 0, which is how a pool written before names (format version 4 and
 * older) reads: every slot already is a name.
 *
 * Entries die when their block's count reaches zero: alloc.c marks the
 * segment (fwd_mark), and fwd_prune drops them at the next checkpoint, so
 * a name a reader took before the count fell still resolves until a grace
 * period after that checkpoint, when the copy's segment may be reused.
 *
 * Threads: one writer (the log thread, or the opener) calls everything
 * but fwd_resolve, fwd_life and fwd_name_of, which any thread may call
 * inside rcu_read_lock (memb flavour).  A segment's tables are immutable
 * once published except for one thing: an entry's address is updated in
 * place (a single 8-byte store) when its block moves again, after the
 * new copy is written; both copies are right until the old one's segment
 * is freed, a checkpoint and a grace period later.  Tables are replaced
 * (copied, published, the old freed after a grace period) when entries
 * are added or pruned.  Lives are published after the tables that
 * forward them (release/acquire), so a reader that sees a new life finds
 * its table.
 *
 * Memory: a segment's tables are in memory (8 bytes per entry, plus a
 * header) or away, on disk in its forwarding chain (ckpt.c), loaded at
 * first need through the loader by whichever thread needs them (one load
 * per segment at a time; fwd_resolve_nowait answers -EAGAIN instead), and
 * dropped again by fwd_trim when clean (written) and past the budget.
 */
#ifndef COWBD_FWD_H
#define COWBD_FWD_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format.h"

#define FWD_ADDR_BITS 44u
#define FWD_TAG_BITS  20u
#define FWD_ADDR_MASK ((1ull << FWD_ADDR_BITS) - 1)
#define FWD_TAG_MASK  ((1u << FWD_TAG_BITS) - 1)

static inline uint64_t fwd_addr(uint64_t name)
{
	return name & FWD_ADDR_MASK;
}

static inline uint32_t fwd_tag(uint64_t name)
{
	return (uint32_t)(name >> FWD_ADDR_BITS);
}

static inline uint64_t fwd_make(uint64_t addr, uint32_t tag)
{
	return addr | (uint64_t)(tag & FWD_TAG_MASK) << FWD_ADDR_BITS;
}

struct fwd;

/* An empty map over nsegs segments, every life 0.  NULL on ENOMEM. */
struct fwd *fwd_new(uint64_t nsegs);
/* Free it: no reader inside fwd_resolve (a grace period passed). */
void fwd_free(struct fwd *f);

/* seg's life now (0..FWD_TAG_MASK); any thread. */
uint32_t fwd_life(const struct fwd *f, uint64_t seg);
/* The name of the block the log just wrote at blk (blk tagged with its
 * segment's life); any thread. */
uint64_t fwd_name_of(const struct fwd *f, uint64_t blk);

/* Where the block named name is: 0 with *blk set; -EILSEQ for a name that
 * is neither current nor forwarded (a damaged slot, or a count that said a
 * dead block was live); -EIO if its segment's tables cannot be loaded.
 * Any thread, inside rcu_read_lock: *blk stays readable until the reader
 * leaves it (see above).  Loads the tables if they are away (blocking);
 * the nowait form answers -EAGAIN then.  O(log entries of its table). */
int fwd_resolve(const struct fwd *f, uint64_t name, uint64_t *blk);
int fwd_resolve_nowait(const struct fwd *f, uint64_t name, uint64_t *blk);

/* The name of the block at blk if a table of its own segment forwards an
 * old life's block to itself (the compactor left it in place, damaged or
 * unreadable then): that name, else 0.  Writer; 0 or the load's error. */
int fwd_self_name(struct fwd *f, uint64_t blk, uint64_t *name);

/* ---- the compactor (log thread) ----
 * During a pass each copy is staged (fwd_stage: the block named birth now
 * lives at blk, a block the log has been given but may not have written
 * yet); once every copy is written, fwd_publish makes them visible and
 * retires every segment with victim[seg] set: its life moves to the next
 * tag no table of it uses, so the names of its old life resolve through
 * F.  fwd_unstage forgets a failed pass's copies.  A birth whose tag is
 * neither its segment's life nor forwarded is refused (-EILSEQ, nothing
 * staged), as is one staged twice (-EEXIST). */
int fwd_stage(struct fwd *f, uint64_t birth, uint64_t blk);
int fwd_publish(struct fwd *f, const uint8_t *victim);
void fwd_unstage(struct fwd *f);

/* The block named name lost its last reference (alloc.c): if it is a
 * forwarded name, its segment is pruned at the next fwd_prune. */
void fwd_mark(struct fwd *f, uint64_t name);
/* Drop the entries of marked segments whose copy live(arg, blk) says has
 * no reference (checkpoint time, log thread; live may load a count page).
 * The segments pruned become dirty.  0 or -ENOMEM (nothing lost: a later
 * prune tries again). */
int fwd_prune(struct fwd *f, bool (*live)(void *arg, uint64_t blk), void *arg);

/* ---- persistence (ckpt.c) ----
 * A segment is dirty when its tables or its life changed since fwd_clean:
 * the next checkpoint writes its F blocks and its segment table entry. */
struct fwd_ent {
	uint64_t blk; /* where the block is now */
	uint32_t tag; /* the life it was born in */
	uint16_t idx; /* its block within the segment */
	uint16_t pad;
};
/* The first dirty segment >= from, or nsegs: for (s = fwd_dirty_next(f, 0);
 * s < n; s = fwd_dirty_next(f, s + 1)).  O(nsegs / 64) per pass. */
uint64_t fwd_dirty_next(const struct fwd *f, uint64_t from);
void fwd_mark_dirty(struct fwd *f, uint64_t seg);
void fwd_clean(struct fwd *f);
/* seg's entries, sorted by (tag, idx), into *out (malloc'd; NULL when
 * *n is 0), loading them if away.  0, -ENOMEM or the load's error. */
int fwd_seg_get(struct fwd *f, uint64_t seg, struct fwd_ent **out, size_t *n);
/* Open: seg's life and entries as its segment table and F blocks say,
 * before any reader.  -EILSEQ if e[] is unsorted, repeats an (tag, idx),
 * forwards seg's current life, or names a block outside the pool or in
 * segment 0; -ENOMEM.  Nothing changes on error. */
int fwd_seg_install(struct fwd *f, uint64_t seg, uint32_t life, const struct fwd_ent *e, size_t n);
/* Entries in the tables in memory, and segments holding any (for stats
 * and the checker; away tables are not counted).  O(1). */
uint64_t fwd_entries(const struct fwd *f);
uint64_t fwd_segments(const struct fwd *f);
/* Entries fwd_publish added since fwd_clean: each may open a new table
 * block at the next checkpoint (the space reserve). */
uint64_t fwd_added(const struct fwd *f);

/* ---- tables on disk, loaded on demand ----
 * The loader reads seg's chain: its entries, sorted by (tag, idx), into
 * *e (malloc'd) and *n; 0 or -errno.  Any thread (loads are serialised). */
typedef int fwd_loader_fn(void *arg, uint64_t seg, struct fwd_ent **e, size_t *n);
void fwd_set_loader(struct fwd *f, fwd_loader_fn *fn, void *arg);
/* Open, before readers: seg's life, and its tables on disk (away). */
void fwd_seg_away(struct fwd *f, uint64_t seg, uint32_t life);
/* The writer: seg's tables in memory now.  0 or the load's error. */
int fwd_seg_load(struct fwd *f, uint64_t seg);
/* Drop clean tables (not dirty, not marked for pruning) from memory,
 * CLOCK order (tables resolved through since the hand passed get a second
 * chance), until at most max bytes are held or budget segments were
 * looked at; freed after a grace period.  Only once every clean table is
 * on disk where the loader finds it (after a checkpoint is durable).
 * Writer.  Returns how many were dropped. */
uint64_t fwd_trim(struct fwd *f, uint64_t max, uint64_t budget);
struct fwd_stats {
	uint64_t entries, segments, bytes; /* in memory */
	uint64_t loads, evictions;         /* ever */
};
void fwd_stats(struct fwd *f, struct fwd_stats *out);

#endif
