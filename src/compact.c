/* compact.c — victim choice and block copying for the compactor (see
 * compact.h).  Layer: under store; uses tree, alloc, log, segio.  Locks:
 * none (log thread). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compact.h"
#include "map.h"

struct compact {
	uint8_t *victim; /* per segment */
	uint64_t nsegs;
	char *buf; /* max_blocks copy buffers */
	unsigned nbuf, used;
	struct map moved; /* old address -> new address (as a pointer value) */
	unsigned nvictims;
	struct log *l;
	struct segio *io;
	int err;
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

/* Copy one block to the log head; returns its new address, 0 on error. */
static uint64_t move_block(void *arg, uint64_t old)
{
	struct compact *c = arg;
	uintptr_t done = (uintptr_t)map_get(&c->moved, old);
	uint64_t addr;

	if (done)
		return done;
	if (c->used == c->nbuf) {
		c->err = -ENOSPC; /* more live blocks than counted: impossible */
		return 0;
	}
	char *b = c->buf + (size_t)c->used * FMT_BLOCK;
	struct fmt_entry e = {.type = FMT_E_MOVE, .lba = old, .count = 1};
	c->err = segio_read_block(c->io, b, old);
	if (!c->err)
		c->err = log_add(c->l, &e, b, &addr);
	if (!c->err)
		c->err = map_put(&c->moved, old, (void *)(uintptr_t)addr);
	if (c->err)
		return 0;
	c->used++;
	return addr;
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
	for (uint64_t s = 1; s < nsegs; s++) {
		uint32_t live = alloc_seg_live(a, s);
		double u = (double)live / FMT_SEG_BLOCKS;
		bool kept = false;
		for (unsigned k = 0; k < nkeep; k++)
			kept = kept || keep[k] == s;
		if (!alloc_seg_used(a, s) || !live || u > max_util || kept)
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
	c->used = 0;
	c->l = l;
	c->io = io;
	c->err = 0;
	map_clear(&c->moved);
	int64_t moved = tree_relocate(trees, ntrees, a, c->victim, move_block, commit_copies, c);
	map_clear(&c->moved);
	c->nvictims = 0;
	if (moved < 0)
		return c->err ? c->err : moved;
	return (int64_t)c->used;
}
