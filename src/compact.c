/* compact.c — victim choice and block copying for the compactor (see
 * compact.h).  Every block is verified against the CRC its segment's
 * summaries hold before it is copied (bcrc.h); one that fails stays where
 * it is.  Layer: under store; uses tree, alloc, log, bcrc, segio.  Locks:
 * none (log thread, an RCU-registered thread). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu/urcu-memb.h>

#include "bcrc.h"
#include "clock.h"
#include "compact.h"
#include "crc32c.h"
#include "fwd.h"
#include "map.h"
#include "say.h"

/* Victim segment tables the compactor's CRC cache keeps. */
#define BCRC_SLOTS 256u
/* Damaged blocks remembered (their segments are never victims while they
 * are live); more than this are still left in place, but their segments
 * may be picked again. */
#define BAD_MAX 4096u

struct move {
	uint64_t from, to;
};

struct compact {
	uint8_t *victim; /* per segment */
	uint64_t nsegs;
	char *buf;          /* max_blocks copy buffers */
	struct move *moves; /* max_blocks: the copies made this pass */
	unsigned nbuf, used;
	unsigned nvictims;
	struct log *l;
	struct segio *io;
	struct alloc *a;
	struct bcrc *bcrc; /* for io (made by compact_move) */
	struct segio *bcrc_io;
	uint64_t *bad; /* damaged blocks left in place, still live when found */
	unsigned nbad;
	uint64_t bad_found; /* ever */
	uint64_t ns;        /* in compact_pick and compact_move, ever */
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
	free(c->moves);
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

/* A node block carries its own checks: magic, CRC and the address it was
 * written at (its name's, wherever it lies now). */
static bool node_intact(const void *b, uint64_t birth)
{
	struct fmt_node n;
	memcpy(&n, b, sizeof(n));
	uint32_t crc = n.crc;
	n.crc = 0;
	return n.magic == FMT_NODE_MAGIC && n.self == fwd_addr(birth) &&
	       crc32c(0, &n, FMT_BLOCK) == crc;
}

/* The counted block blk of a victim whose life is `life`: copy it to the
 * log head under its name (staged in the forwarding map), or leave it in
 * place if it is damaged or nothing says what carried it. */
static int move_one(struct compact *c, uint64_t blk, uint32_t life)
{
	struct fwd *f = alloc_fwd(c->a);
	uint64_t birth = 0, addr;
	uint32_t want = 0;
	bool node = false;
	int err;

	if (c->used == c->nbuf)
		return -ENOSPC; /* more live blocks than counted: impossible */
	char *b = c->buf + (size_t)c->used * FMT_BLOCK;
	urcu_memb_read_lock();
	err = bcrc_describe(c->bcrc, blk, alloc_seg_stamp(c->a, alloc_seg_of(blk)), &node, &birth);
	urcu_memb_read_unlock();
	if (err == -ENOMEM)
		return err;
	/* Born here: in this life, unless an earlier pass left the block in
	 * place (its old life's table forwards it to itself). */
	if (!birth && fwd_self_name(f, blk, &birth) == 0 && !birth)
		birth = fwd_make(blk, life);
	uint64_t at;
	if (!birth || fwd_resolve(f, birth, &at) || at != blk) {
		say_error("compact: pool block %llu is counted but its name does not lead to it "
		          "(the pool's metadata is damaged): compaction stops",
		          (unsigned long long)blk);
		return -EILSEQ;
	}
	if (err || node) { /* a node checks itself; nothing is known of the other */
		bool read = !segio_read_block(c->io, b, blk);
		err = err ? err : read && node_intact(b, birth) ? 0 : -EIO;
	} else {
		err = read_verified(c, blk, b, &want);
		if (err == -ENOMEM)
			return err;
	}
	if (err) {
		/* Left in place: a name of this life forwards to itself, so
		 * that it still resolves once the victim's life moves on (a
		 * copy's own name already points here). */
		leave_bad(c, blk, want, b);
		return fwd_tag(birth) == life && fwd_addr(birth) == blk ? fwd_stage(f, birth, blk)
		                                                        : 0;
	}
	struct fmt_entry e = {
	    .type = FMT_E_MOVE2, .vol = fwd_tag(birth), .lba = fwd_addr(birth), .count = 1};
	err = log_add(c->l, &e, b, &addr);
	if (!err)
		err = fwd_stage(f, birth, addr);
	if (!err)
		c->moves[c->used++] = (struct move){.from = blk, .to = addr};
	return err;
}

static uint64_t pick(struct compact *c, const struct alloc *a, uint64_t now_lsn,
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
		free(c->moves);
		c->buf = malloc((size_t)max_blocks * FMT_BLOCK);
		c->moves = malloc((size_t)max_blocks * sizeof(*c->moves));
		c->nbuf = c->buf && c->moves ? max_blocks : 0;
		if (!c->nbuf)
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

uint64_t compact_pick(struct compact *c, const struct alloc *a, uint64_t now_lsn,
                      const uint64_t *keep, unsigned nkeep, double max_util, unsigned max_blocks,
                      unsigned *victims)
{
	uint64_t t0 = mono_ns();
	uint64_t live = pick(c, a, now_lsn, keep, nkeep, max_util, max_blocks, victims);

	c->ns += mono_ns() - t0;
	return live;
}

/* Every counted block of the victims, staged (move_one); then written,
 * published and counted where it went. */
static int move_all(struct compact *c)
{
	struct fwd *f = alloc_fwd(c->a);
	int err = 0;

	for (uint64_t seg = 1; seg < c->nsegs && !err; seg++) {
		if (!c->victim[seg])
			continue;
		err = alloc_seg_load(c->a, seg);
		uint32_t life = fwd_life(f, seg);
		for (unsigned i = 0; i < FMT_SEG_BLOCKS && !err; i++) {
			uint64_t blk = seg * FMT_SEG_BLOCKS + i;
			if (alloc_blk_refs(c->a, blk))
				err = move_one(c, blk, life);
		}
	}
	/* Readers may resolve a name to its copy the moment it is published:
	 * publish only once every copy is on the device. */
	if (!err)
		err = log_commit(c->l);
	if (!err)
		err = fwd_publish(f, c->victim);
	else
		fwd_unstage(f);
	for (unsigned k = 0; k < c->used && !err; k++)
		err = alloc_move(c->a, c->moves[k].from, c->moves[k].to);
	return err;
}

int64_t compact_move(struct compact *c, struct alloc *a, struct log *l, struct segio *io)
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
	uint64_t t0 = mono_ns();
	c->used = 0;
	c->l = l;
	c->io = io;
	c->a = a;
	int err = move_all(c);
	c->nvictims = 0;
	c->ns += mono_ns() - t0;
	return err ? err : (int64_t)c->used;
}

uint64_t compact_bad_blocks(const struct compact *c)
{
	return c->bad_found;
}

uint64_t compact_ns(const struct compact *c)
{
	return c->ns;
}

const uint8_t *compact_victims(const struct compact *c)
{
	return c->victim;
}
