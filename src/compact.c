/* compact.c — victim choice and block copying for the compactor (see
 * compact.h).  Every block is verified against the CRC its segment's
 * summaries hold before it is copied (bcrc.h); one that fails stays where
 * it is.  Layer: under store; uses tree, alloc, log, bcrc, segio.  Locks:
 * none (log thread, an RCU-registered thread). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "bcrc.h"
#include "compact.h"
#include "crc32c.h"
#include "map.h"
#include "say.h"

/* Victim segment tables the compactor's CRC cache keeps. */
#define BCRC_SLOTS 256u
/* Damaged blocks remembered (their segments are never victims while they
 * are live); more than this are still left in place, but their segments
 * may be picked again. */
#define BAD_MAX 4096u

struct compact {
	uint8_t *victim; /* per segment */
	uint64_t nsegs;
	char *buf; /* max_blocks copy buffers */
	unsigned nbuf, used;
	struct map moved; /* old address -> new address (as a pointer value) */
	unsigned nvictims;
	struct log *l;
	struct segio *io;
	struct alloc *a;
	int err;
	struct bcrc *bcrc; /* for io (made by compact_move) */
	struct segio *bcrc_io;
	uint64_t *bad; /* damaged blocks left in place, still live when found */
	unsigned nbad;
	uint64_t bad_found; /* ever */
};

struct compact *compact_new(void)
{
	return calloc(1, sizeof(struct compact));
}

void compact_free(struct compact *c)
{
	if (!c)
		return;
	free(c->victim);
	free(c->buf);
	map_clear(&c->moved);
	bcrc_free(c->bcrc);
	free(c->bad);
	free(c);
}

struct cand {
	uint64_t seg;
	double score;
};

static int by_score(const void *x, const void *y)
{
	const struct cand *a = x, *b = y;
	return a->score < b->score ? 1 : a->score > b->score ? -1 : 0;
}

/* Read block old and check it against its summary's CRC.  0, -EIO
 * (damaged or unreadable), or -ENOMEM. */
static int read_verified(struct compact *c, uint64_t old, void *b, uint32_t *want)
{
	int err = segio_read_block(c->io, b, old);
	if (err)
		return -EIO;
	urcu_memb_read_lock();
	err = bcrc_verify(c->bcrc, old, alloc_seg_stamp(c->a, alloc_seg_of(old)), b, false, want);
	urcu_memb_read_unlock();
	return err == -ENOMEM ? err : err ? -EIO : 0;
}

/* Block old failed: it stays where it is, and its segment is no victim
 * again while it is live. */
static void leave_bad(struct compact *c, uint64_t old, uint32_t want, const void *b)
{
	c->bad_found++;
	say_error("compact: pool block %llu fails its checksum (expected %08x, read %08x): "
	          "left in place, not copied",
	          (unsigned long long)old, want, crc32c(0, b, FMT_BLOCK));
	if (!c->bad)
		c->bad = calloc(BAD_MAX, sizeof(*c->bad));
	if (c->bad && c->nbad < BAD_MAX)
		c->bad[c->nbad++] = old;
}

/* Copy one block to the log head; returns its new address (old itself for
 * a damaged block left in place), 0 on error. */
static uint64_t move_block(void *arg, uint64_t old)
{
	struct compact *c = arg;
	uintptr_t done = (uintptr_t)map_get(&c->moved, old);
	uint64_t addr;
	uint32_t want = 0;

	if (done)
		return done;
	if (c->used == c->nbuf) {
		c->err = -ENOSPC; /* more live blocks than counted: impossible */
		return 0;
	}
	char *b = c->buf + (size_t)c->used * FMT_BLOCK;
	struct fmt_entry e = {.type = FMT_E_MOVE, .lba = old, .count = 1};
	c->err = read_verified(c, old, b, &want);
	if (c->err == -EIO) {
		/* A fresh CRC would launder it: keep the bytes and the
		 * summary that describes them, so that reads and the checker
		 * go on seeing the damage. */
		leave_bad(c, old, want, b);
		addr = old;
		c->err = 0;
	} else if (!c->err) {
		c->err = log_add(c->l, &e, b, &addr);
		if (!c->err)
			c->used++;
	}
	if (!c->err)
		c->err = map_put(&c->moved, old, (void *)(uintptr_t)addr);
	return c->err ? 0 : addr;
}

static int commit_copies(void *arg)
{
	struct compact *c = arg;
	return log_commit(c->l);
}

uint64_t compact_pick(struct compact *c, const struct alloc *a, uint64_t now_lsn,
                      const uint64_t *keep, unsigned nkeep, double max_util, unsigned max_blocks,
                      unsigned *victims)
{
	uint64_t nsegs = alloc_nsegs(a);
	struct cand *cand;
	unsigned ncand = 0;
	uint64_t total = 0;

	*victims = 0;
	c->nvictims = 0;
	if (c->nsegs != nsegs) {
		free(c->victim);
		c->victim = calloc(nsegs, 1);
		c->nsegs = c->victim ? nsegs : 0;
		if (!c->victim)
			return 0;
	}
	if (c->nbuf < max_blocks) {
		free(c->buf);
		c->buf = malloc((size_t)max_blocks * FMT_BLOCK);
		c->nbuf = c->buf ? max_blocks : 0;
		if (!c->buf)
			return 0;
	}
	cand = malloc(sizeof(*cand) * nsegs);
	if (!cand)
		return 0;
	/* Segments holding a damaged block that is still live are no
	 * victims: moving the rest would free nothing.  (victim[] doubles as
	 * the mark; it is rebuilt below.) */
	memset(c->victim, 0, nsegs);
	for (unsigned i = 0; i < c->nbad;) {
		if (c->bad[i] < alloc_nblocks(a) && alloc_blk_refs(a, c->bad[i])) {
			c->victim[alloc_seg_of(c->bad[i])] = 1;
			i++;
		} else {
			c->bad[i] = c->bad[--c->nbad]; /* overwritten or trimmed since */
		}
	}
	for (uint64_t s = 1; s < nsegs; s++) {
		uint32_t live = alloc_seg_live(a, s);
		double u = (double)live / FMT_SEG_BLOCKS;
		bool kept = false;
		for (unsigned k = 0; k < nkeep; k++)
			kept = kept || keep[k] == s;
		if (!alloc_seg_used(a, s) || !live || u > max_util || kept || c->victim[s])
			continue;
		double age = (double)(now_lsn - alloc_seg_stamp(a, s)) + 1.0;
		cand[ncand].seg = s;
		cand[ncand].score = (1.0 - u) * age / (1.0 + u);
		ncand++;
	}
	qsort(cand, ncand, sizeof(*cand), by_score);
	memset(c->victim, 0, nsegs);
	for (unsigned i = 0; i < ncand; i++) {
		uint64_t live = alloc_seg_live(a, cand[i].seg);
		if (total + live > max_blocks)
			break;
		c->victim[cand[i].seg] = 1;
		total += live;
		c->nvictims++;
	}
	free(cand);
	*victims = c->nvictims;
	return total;
}

int64_t compact_move(struct compact *c, struct alloc *a, struct log *l, struct segio *io,
                     struct tree *const *trees, unsigned ntrees)
{
	if (!c->nvictims)
		return 0;
	if (c->bcrc_io != io) {
		bcrc_free(c->bcrc);
		c->bcrc = bcrc_new(io, alloc_nsegs(a), BCRC_SLOTS);
		c->bcrc_io = c->bcrc ? io : NULL;
		if (!c->bcrc)
			return -ENOMEM;
	}
	c->used = 0;
	c->l = l;
	c->io = io;
	c->a = a;
	c->err = 0;
	map_clear(&c->moved);
	int64_t moved = tree_relocate(trees, ntrees, a, c->victim, move_block, commit_copies, c);
	map_clear(&c->moved);
	c->nvictims = 0;
	if (moved < 0)
		return c->err ? c->err : moved;
	return (int64_t)c->used;
}

uint64_t compact_bad_blocks(const struct compact *c)
{
	return c->bad_found;
}

const uint8_t *compact_victims(const struct compact *c)
{
	return c->victim;
}
