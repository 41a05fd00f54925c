/* bcrc.c — the expected CRC32C of a data block: per-segment tables built
 * from the segment's summaries through the log's one batch walker, and a
 * bounded cache of them (see bcrc.h for the rules of a segment's life).
 *
 * Layer: under the store, beside compact; over log (the walker) and segio.
 * Locks: each table's mutex serialises building and extending it; lookups
 * take none.  A table's entries below `covered` never change once
 * `covered` passed them (release store, acquire load); `kind` may later
 * turn DATA into BAD (a confirmed mismatch) by a relaxed byte store.
 * Slots are RCU-published pointers; a replaced table is freed with
 * call_rcu. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "bcrc.h"
#include "crc32c.h"
#include "fwd.h"
#include "log.h"

/* Blocks read at once while walking a segment's summaries after a small
 * batch (small batches put several summaries in one read); after a large
 * one, only the next summary is read. */
#define WALK_WINDOW 16u

enum bcrc_kind {
	KIND_NONE = 0,  /* not walked */
	KIND_DATA = 1,  /* a DATA or MOVE entry carries it: crc[] holds its CRC */
	KIND_OTHER = 2, /* a summary, tree node, op or checkpoint block */
	KIND_BAD = 3,   /* DATA whose mismatch a table rebuilt from disk confirmed */
	KIND_NODE = 4,  /* a tree node (sealed: its own CRC and address) */
};

struct bcrc_table {
	uint64_t seg, stamp; /* fixed at creation */
	pthread_mutex_t lock;
	uint32_t covered; /* blocks [0, covered) walked (release / acquire) */
	/* under lock: what the next batch must carry to continue the chain */
	uint64_t next_lsn;
	uint32_t prev_crc;
	/* under lock: the last batch walked (has_last), which may be a
	 * summary the log keeps open and writes again with more entries
	 * (log.h): its block, LSN and previous CRC, and the entries of it
	 * walked */
	bool has_last;
	uint32_t last_at, last_n;
	uint64_t last_lsn;
	uint32_t last_prev;
	struct rcu_head rcu;
	uint8_t kind[FMT_SEG_BLOCKS]; /* enum bcrc_kind */
	uint32_t crc[FMT_SEG_BLOCKS];
	/* The births of blocks MOVE2 entries carry (fwd.h names; 0: none),
	 * allocated at the first such entry; written under lock, read below
	 * covered like kind. */
	uint64_t *birth;
};

struct bcrc {
	struct segio *io;
	uint64_t nsegs;
	unsigned nslots;
	struct bcrc_table **slot; /* RCU-published; seg % nslots */
};

struct bcrc *bcrc_new(struct segio *io, uint64_t nsegs, unsigned slots)
{
	struct bcrc *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->io = io;
	c->nsegs = nsegs;
	c->nslots = slots ? slots : 1;
	c->slot = calloc(c->nslots, sizeof(*c->slot));
	if (!c->slot) {
		free(c);
		return NULL;
	}
	return c;
}

static void table_free(struct bcrc_table *t)
{
	pthread_mutex_destroy(&t->lock);
	free(t->birth);
	free(t);
}

static void table_free_rcu(struct rcu_head *h)
{
	table_free(caa_container_of(h, struct bcrc_table, rcu));
}

void bcrc_free(struct bcrc *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->nslots; i++)
		if (c->slot[i])
			table_free(c->slot[i]);
	free(c->slot);
	free(c);
}

/* Does the valid summary s at block addr of t's segment belong to the life
 * t describes?  The first batch must be no older than the life; every
 * later one must continue the chain (a stale batch from an earlier life
 * that lies after the current ones never does). */
static bool batch_fits(const struct bcrc_table *t, const struct fmt_summary *s, uint64_t addr)
{
	if (log_summary_valid(s, addr))
		return false;
	if (addr % FMT_SEG_BLOCKS == 0)
		return s->lsn >= t->stamp;
	return s->lsn == t->next_lsn && s->prev_crc == t->prev_crc;
}

/* Block off of t's segment is a copy of the block named birth. */
static int note_birth(struct bcrc_table *t, uint32_t off, uint64_t birth)
{
	if (!t->birth && !(t->birth = calloc(FMT_SEG_BLOCKS, sizeof(*t->birth))))
		return -ENOMEM;
	t->birth[off] = birth;
	return 0;
}

/* Is s, read at the last batch walked, that batch again (a later version
 * of a summary kept open: the same LSN and previous CRC, no fewer
 * entries)? */
static bool batch_again(const struct bcrc_table *t, const struct fmt_summary *s, uint64_t addr)
{
	return !log_summary_valid(s, addr) && s->lsn == t->last_lsn &&
	       s->prev_crc == t->last_prev && s->nentries >= t->last_n;
}

/* Walk t's segment to the end of its chain of batches, recording each
 * carried block: first the last batch walked again (the open summary may
 * have grown), then on from `covered`.  Caller holds t->lock.  0 or -errno
 * (entries walked so far stay). */
static int table_extend(struct bcrc *c, struct bcrc_table *t, bool nowait)
{
	int (*rd)(struct segio *, void *, size_t, uint64_t) =
	    nowait ? segio_read_nowait : segio_read;
	uint64_t base = t->seg * FMT_SEG_BLOCKS;
	uint32_t at = t->covered, win_at = 0, win_n = 0;
	unsigned window = 1;
	bool nocache = false;     /* nowait, and a window was not all cached */
	bool again = t->has_last; /* at is the last batch, walked in part */
	uint64_t win_seq = 0;     /* segio_rewrite_seq before the window's read */
	char *win = NULL;
	int err = 0;

	if (again)
		at = t->last_at;

	if (posix_memalign((void **)&win, FMT_BLOCK, (size_t)WALK_WINDOW * FMT_BLOCK))
		return -ENOMEM;
	while (at < FMT_SEG_BLOCKS) {
		if (at < win_at || at >= win_at + win_n) {
			win_n = FMT_SEG_BLOCKS - at < window ? FMT_SEG_BLOCKS - at : window;
			win_seq = segio_rewrite_seq(c->io);
			err = rd(c->io, win, (size_t)win_n * FMT_BLOCK, (base + at) * FMT_BLOCK);
			if (err == -EAGAIN && win_n > 1) {
				/* Past the log head nothing is cached: the
				 * summary alone may be. */
				nocache = true;
				window = 1;
				win_n = 0;
				continue;
			}
			if (err)
				break;
			win_at = at;
		}
		const struct fmt_summary *s =
		    (const void *)(win + (size_t)(at - win_at) * FMT_BLOCK);
		if (again ? !batch_again(t, s, base + at) : !batch_fits(t, s, base + at)) {
			if (win_at != at) {
				win_n = 0; /* the window may predate the batch: read again */
				continue;
			}
			/* Read fresh at this very block.  Torn by a rewrite of
			 * the open summary under way meanwhile?  Read again. */
			if (log_summary_valid(s, base + at) &&
			    (win_seq & 1 || segio_rewrite_seq(c->io) != win_seq)) {
				win_n = 0;
				continue;
			}
			if (!again)
				break; /* the run ends */
			again = false; /* the last batch has nothing new: go on after it */
			at = t->covered;
			continue;
		}
		struct log_walk w = {0};
		if (again) { /* the entries walked before, and their blocks */
			w.i = t->last_n;
			w.k = t->covered - at - 1;
		}
		const struct fmt_entry *e;
		uint64_t blk;
		while ((e = log_entry_next(s, base + at, &w, &blk)) && !err) {
			if (!blk)
				continue;
			bool data = e->type == FMT_E_DATA || e->type == FMT_E_MOVE ||
			            e->type == FMT_E_MOVE2;
			t->crc[blk - base] = data ? e->crc : 0;
			t->kind[blk - base] = data                    ? KIND_DATA
			                      : e->type == FMT_E_NODE ? KIND_NODE
			                                              : KIND_OTHER;
			if (e->type == FMT_E_MOVE2)
				err =
				    note_birth(t, (uint32_t)(blk - base), fwd_make(e->lba, e->vol));
		}
		if (err)
			break;
		t->kind[at] = KIND_OTHER;
		t->next_lsn = s->lsn + 1;
		t->prev_crc = s->crc;
		t->has_last = true;
		t->last_at = at;
		t->last_n = s->nentries;
		t->last_lsn = s->lsn;
		t->last_prev = s->prev_crc;
		again = false;
		window = !nocache && 2u * (1u + s->nblocks) <= WALK_WINDOW ? WALK_WINDOW : 1;
		at += 1 + s->nblocks;
		__atomic_store_n(&t->covered, at, __ATOMIC_RELEASE);
	}
	free(win);
	return err;
}

/* The CRC t holds for block off of its segment, extending t if off lies
 * past what was walked.  0, -EIO (no batch of this life carries off as a
 * data block), -EAGAIN (nowait: the table is busy or its summaries are
 * not cached), or a read error. */
static int table_lookup(struct bcrc *c, struct bcrc_table *t, uint32_t off, bool nowait,
                        uint32_t *crc, uint8_t *kind)
{
	int err = 0;

	if (off >= __atomic_load_n(&t->covered, __ATOMIC_ACQUIRE)) {
		if (!nowait)
			pthread_mutex_lock(&t->lock);
		else if (pthread_mutex_trylock(&t->lock))
			return -EAGAIN;
		if (off >= t->covered)
			err = table_extend(c, t, nowait);
		pthread_mutex_unlock(&t->lock);
		if (off >= __atomic_load_n(&t->covered, __ATOMIC_ACQUIRE))
			return err ? err : -EIO;
	}
	*kind = __atomic_load_n(&t->kind[off], __ATOMIC_RELAXED);
	if (*kind != KIND_DATA && *kind != KIND_BAD)
		return -EIO;
	*crc = t->crc[off];
	return 0;
}

/* A fresh table for (seg, stamp), published in its slot (the table it
 * replaces is freed after a grace period).  NULL on ENOMEM. */
static struct bcrc_table *table_publish(struct bcrc *c, uint64_t seg, uint64_t stamp)
{
	struct bcrc_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->seg = seg;
	t->stamp = stamp;
	pthread_mutex_init(&t->lock, NULL);
	struct bcrc_table *old = rcu_xchg_pointer(&c->slot[seg % c->nslots], t);
	if (old)
		urcu_memb_call_rcu(&old->rcu, table_free_rcu);
	return t;
}

int bcrc_verify(struct bcrc *c, uint64_t blk, uint64_t stamp, const void *data, bool nowait,
                uint32_t *crc)
{
	return bcrc_check(c, blk, stamp, crc32c(0, data, FMT_BLOCK), nowait, crc);
}

int bcrc_check(struct bcrc *c, uint64_t blk, uint64_t stamp, uint32_t got, bool nowait,
               uint32_t *crc)
{
	uint64_t seg = blk / FMT_SEG_BLOCKS;
	uint32_t off = (uint32_t)(blk % FMT_SEG_BLOCKS);
	uint32_t want = 0;
	uint8_t kind = KIND_NONE;
	bool fresh = false;
	int err;

	if (seg >= c->nsegs)
		return -EIO;
	struct bcrc_table *t = rcu_dereference(c->slot[seg % c->nslots]);
	if (!t || t->seg != seg || t->stamp != stamp) {
		if (!(t = table_publish(c, seg, stamp)))
			return -ENOMEM;
		fresh = true;
	}
	err = table_lookup(c, t, off, nowait, &want, &kind);
	if ((err == -EIO || (!err && want != got && kind != KIND_BAD)) && !fresh) {
		/* A cached table disagrees: confirm against the disk as it
		 * is now (the table may describe a life whose end the stamp
		 * read here did not show). */
		if (!(t = table_publish(c, seg, stamp)))
			return -ENOMEM;
		fresh = true;
		err = table_lookup(c, t, off, nowait, &want, &kind);
	}
	if (!err && want != got) {
		/* Confirmed from disk: reading this block again costs no
		 * second walk. */
		if (fresh)
			__atomic_store_n(&t->kind[off], (uint8_t)KIND_BAD, __ATOMIC_RELAXED);
		err = -EIO;
		kind = KIND_BAD;
	}
	if (crc && (kind == KIND_DATA || kind == KIND_BAD))
		*crc = want;
	return err;
}

int bcrc_describe(struct bcrc *c, uint64_t blk, uint64_t stamp, bool *node, uint64_t *birth)
{
	uint64_t seg = blk / FMT_SEG_BLOCKS;
	uint32_t off = (uint32_t)(blk % FMT_SEG_BLOCKS), crc;
	uint8_t kind = KIND_NONE;

	if (seg >= c->nsegs)
		return -EIO;
	struct bcrc_table *t = rcu_dereference(c->slot[seg % c->nslots]);
	if (!t || t->seg != seg || t->stamp != stamp)
		if (!(t = table_publish(c, seg, stamp)))
			return -ENOMEM;
	int err = table_lookup(c, t, off, false, &crc, &kind);
	if (err == -EIO && off < __atomic_load_n(&t->covered, __ATOMIC_ACQUIRE))
		err = 0;
	kind = __atomic_load_n(&t->kind[off], __ATOMIC_RELAXED);
	if (err || (kind != KIND_DATA && kind != KIND_BAD && kind != KIND_NODE))
		return err ? err : -EIO;
	*node = kind == KIND_NODE;
	*birth = t->birth ? t->birth[off] : 0;
	return 0;
}
