/* recover.c — replay: after the checkpoint is loaded, follow the log chain
 * past it (log_chain_next: a torn or stale tail ends it) and apply every
 * batch — data blocks and trims to the trees, control operations to the
 * volume table — then leave the log head where the chain ended.
 *
 * Layer: under store; over vtab, tree, log and alloc.  Locks: none (runs
 * in store_open before any thread starts). */
#include <errno.h>
#include <stdlib.h>

#include "say.h"
#include "fwd.h"
#include "store_int.h"

struct replay {
	struct store *st;
	struct volume *cache; /* the volume of the last entry */
	uint64_t nblocks;     /* data blocks applied */
	const char *why;
};

static struct volume *replay_vol(struct replay *rp, uint32_t id)
{
	if (!rp->cache || rp->cache->id != id)
		rp->cache = vtab_find_id(rp->st, id);
	return rp->cache;
}

/* A DATA or TRIM entry must name a live, writable volume and lie inside it. */
static struct volume *entry_volume(struct replay *rp, const struct fmt_entry *e)
{
	struct volume *v = replay_vol(rp, e->vol);
	uint64_t nb = v ? (v->size + FMT_BLOCK - 1) / FMT_BLOCK : 0;
	if (!v || v->snapshot || e->lba >= nb ||
	    (e->type == FMT_E_TRIM && e->count > nb - e->lba)) {
		rp->why = "log entry for a missing volume or out of range";
		return NULL;
	}
	return v;
}

static int replay_entry(struct replay *rp, const struct fmt_entry *e, uint64_t blk, void *buf)
{
	struct store *st = rp->st;
	struct volume *v;
	int err;

	switch (e->type) {
	case FMT_E_DATA:
		if (!(v = entry_volume(rp, e)))
			return -EILSEQ;
		rp->nblocks++;
		return tree_set(&v->tree, st->a, e->lba, fwd_name_of(alloc_fwd(st->a), blk));
	case FMT_E_TRIM:
		if (!(v = entry_volume(rp, e)))
			return -EILSEQ;
		return tree_trim(&v->tree, st->a, e->lba, e->lba + e->count);
	case FMT_E_OP:
		if (segio_read_block(st->io, buf, blk))
			return -EIO;
		rp->cache = NULL;
		err = vtab_apply_op(st, buf);
		if (err == -EILSEQ)
			rp->why = "log holds a control operation that does not apply";
		return err;
	case FMT_E_NODE:
	case FMT_E_CKPT:
	case FMT_E_CPAGE:
	case FMT_E_STAB:
	case FMT_E_VTAB:
	case FMT_E_FWD:
	case FMT_E_MOVE:
	case FMT_E_MOVE2:
		/* an unfinished checkpoint's blocks, copies the compactor made
		 * after the last one: unused */
		return 0;
	}
	rp->why = "unknown log entry type";
	return -EILSEQ;
}

int recover_replay(struct store *st, const struct fmt_summary *ck, const char **why)
{
	struct fmt_summary *s = malloc(sizeof(*s));
	char *blk = malloc(FMT_BLOCK);
	struct replay rp = {.st = st};
	struct log_chain c;
	uint64_t nbatches = 0, addr;
	int err = 0, more;

	if (!s || !blk) {
		err = -ENOMEM;
		goto out;
	}
	log_chain_start(&c, ck, st->nsegs);
	if (c.next)
		alloc_mark_used(st->a, c.next);
	while ((more = log_chain_next(st->io, &c, s, blk, &addr)) > 0) {
		struct log_walk w = {0};
		const struct fmt_entry *e;
		uint64_t b;

		alloc_mark_used(st->a, c.seg);
		if (c.next)
			alloc_mark_used(st->a, c.next);
		while ((e = log_entry_next(s, addr, &w, &b)))
			if ((err = replay_entry(&rp, e, b, blk))) {
				if (err == -EILSEQ && rp.why)
					*why = rp.why;
				goto out;
			}
		nbatches++;
	}
	if (more < 0) {
		/* Taking it for the end would lose what the log holds past it. */
		*why = "cannot read the log after the checkpoint";
		err = more;
		goto out;
	}
	if (nbatches)
		say_info("recovery: replayed %llu batches (%llu data blocks) after the checkpoint",
		         (unsigned long long)nbatches, (unsigned long long)rp.nblocks);
	/* The head stays in the last batch's segment (possibly full: then the
	 * first write moves on to next). */
	uint64_t head = c.seg, off = c.pos - c.seg * FMT_SEG_BLOCKS;
	uint64_t next = c.next == c.seg ? 0 : c.next;
	if (!next && off >= FMT_SEG_BLOCKS) {
		/* Full, and no summary names a successor (a pool written
		 * before the log kept a block for naming one): go on in a free
		 * segment.  Nothing is acknowledged from it before the
		 * checkpoint that open writes first names it. */
		uint64_t fresh = alloc_take_seg(st->a);
		if (fresh) {
			head = fresh;
			off = 0;
		}
	}
	st->log = log_new(st->io, st->a, head, off, next, c.lsn, c.prev);
	if (!st->log && errno == ENOSPC && head != c.seg) {
		/* No room for the fresh segment (a full host filesystem): stay
		 * in the full one; the pool opens, read-only if it must. */
		st->log =
		    log_new(st->io, st->a, c.seg, c.pos - c.seg * FMT_SEG_BLOCKS, 0, c.lsn, c.prev);
	}
	if (!st->log) {
		err = -errno;
		goto out;
	}
	st->ck.dirty = nbatches > 0;
out:
	free(s);
	free(blk);
	return err;
}
