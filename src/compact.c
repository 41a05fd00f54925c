/* compact.c — victim choice and block copying for the compactor (see
 * compact.h).  Layer: under store; uses tree, alloc, log, blkdev.  Locks:
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
	struct log *l;
	struct blkdev *dev;
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
	c->err = blkdev_pread(c->dev, b, FMT_BLOCK, old * FMT_BLOCK);
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

int64_t compact_pass(struct compact *c, struct alloc *a, struct log *l, struct blkdev *dev,
                     struct tree *const *trees, unsigned ntrees, const uint64_t *keep,
                     unsigned nkeep, double max_util, unsigned max_blocks, unsigned *victims)
{
	struct cand *cand;
	unsigned ncand = 0;
	uint64_t total = 0;

	*victims = 0;
	if (c->nsegs != a->nsegs) {
		free(c->victim);
		c->victim = calloc(a->nsegs, 1);
		if (!c->victim)
			return -ENOMEM;
		c->nsegs = a->nsegs;
	}
	if (c->nbuf < max_blocks) {
		free(c->buf);
		c->buf = malloc((size_t)max_blocks * FMT_BLOCK);
		c->nbuf = c->buf ? max_blocks : 0;
		if (!c->buf)
			return -ENOMEM;
	}
	cand = malloc(sizeof(*cand) * a->nsegs);
	if (!cand)
		return -ENOMEM;
	for (uint64_t s = 1; s < a->nsegs; s++) {
		double u = (double)a->seg_live[s] / FMT_SEG_BLOCKS;
		bool kept = false;
		for (unsigned k = 0; k < nkeep; k++)
			kept = kept || keep[k] == s;
		if (a->seg_state[s] != ALLOC_USED || !a->seg_live[s] || u > max_util || kept)
			continue;
		double age = (double)(l->lsn - a->seg_stamp[s]) + 1.0;
		cand[ncand].seg = s;
		cand[ncand].score = (1.0 - u) * age / (1.0 + u);
		ncand++;
	}
	qsort(cand, ncand, sizeof(*cand), by_score);
	memset(c->victim, 0, a->nsegs);
	for (unsigned i = 0; i < ncand; i++) {
		uint64_t live = a->seg_live[cand[i].seg];
		if (total + live > max_blocks)
			break;
		c->victim[cand[i].seg] = 1;
		total += live;
		(*victims)++;
	}
	free(cand);
	if (!*victims)
		return 0;
	/* Room for the copies and, as much again, for the tree nodes the next
	 * checkpoint rewrites, plus two spare segments: never compact into
	 * ENOSPC. */
	if (log_room(l) + (a->nfree > 2 ? a->nfree - 2 : 0) * FMT_SEG_BLOCKS <
	    2 * (total + total / (FMT_SUM_ENTRIES - 1) + 2)) {
		*victims = 0;
		return 0;
	}
	c->used = 0;
	c->l = l;
	c->dev = dev;
	c->err = 0;
	map_clear(&c->moved);
	int64_t moved = tree_relocate(trees, ntrees, a, c->victim, move_block, commit_copies, c);
	map_clear(&c->moved);
	if (moved < 0)
		return c->err ? c->err : moved;
	return (int64_t)c->used;
}
