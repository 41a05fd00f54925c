/* log.c — the append-only log: batches at the head (summary building,
 * sealing with the LSN + CRC chain, one append per segment per commit) and
 * the one description of how batches are walked back (entries, the chain
 * after a checkpoint, the batches of a segment).
 * Layer: under the store, over segio and alloc.  Locks: none (the writing
 * half belongs to the log thread; the reading half is stateless). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "crc32c.h"
#include "log.h"

struct log {
	struct segio *io;
	struct alloc *a;
	uint64_t head_seg, head_off; /* next block to assign: head_seg * SEG + head_off */
	uint64_t next_seg;           /* 0 = none could be taken yet */
	bool next_unbacked;          /* the backend could not reserve next_seg's space */
	uint64_t lsn;                /* LSN the next sealed summary gets */
	uint32_t prev_crc;           /* CRC of the last sealed summary */
	uint64_t boot_id;
	/* the open summary, if any */
	struct fmt_summary *sum;
	uint64_t sum_addr;
	/* Summaries kept open across commits (log_commit_open), where the
	 * backend rewrites a block in place: a version of the open summary
	 * is on disk (sum is then open_buf) and entries were added since it
	 * was written (sum_dirty); or open_buf holds a sealed summary whose
	 * final version the next commit writes at final_addr. */
	bool can_rewrite;
	bool sum_written, sum_dirty, final_pending;
	struct fmt_summary *open_buf;
	uint64_t final_addr;
	uint64_t rewrites;
	/* pending, unwritten: contiguous blocks from pend_start, in one segment */
	uint64_t pend_start;
	struct iovec *iov;
	int niov, iov_cap;
	struct fmt_summary **pool; /* summary buffers */
	int npool, pool_used;
	/* last sealed summary */
	uint64_t last_lsn;
	uint64_t blocks_written;
};

/* Ask the backend for next_seg's space now, a whole segment ahead: a full
 * host filesystem then shows while the head still has room for what
 * makes space again (a checkpoint, a delete). */
static void reserve_next(struct log *l)
{
	l->next_unbacked = l->next_seg && segio_reserve(l->io, l->next_seg) == -ENOSPC;
}

struct log *log_new(struct segio *io, struct alloc *a, uint64_t head_seg, uint64_t head_off,
                    uint64_t next_seg, uint64_t lsn, uint32_t prev_crc)
{
	struct log *l = calloc(1, sizeof(*l));
	int err;

	if (!l)
		return NULL;
	l->io = io;
	l->a = a;
	l->head_seg = head_seg;
	l->head_off = head_off;
	l->next_seg = next_seg;
	l->lsn = lsn;
	l->prev_crc = prev_crc;
	l->pend_start = head_seg * FMT_SEG_BLOCKS + head_off;
	l->can_rewrite = segio_can_rewrite(io);
	if (getrandom(&l->boot_id, sizeof(l->boot_id), 0) != sizeof(l->boot_id))
		l->boot_id = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	err = segio_open(io, head_seg, head_off * FMT_BLOCK);
	if (err) {
		free(l);
		errno = -err;
		return NULL;
	}
	reserve_next(l);
	return l;
}

void log_free(struct log *l)
{
	if (!l)
		return;
	for (int i = 0; i < l->npool; i++)
		free(l->pool[i]);
	free(l->pool);
	free(l->open_buf);
	free(l->iov);
	free(l);
}

uint64_t log_head_seg(const struct log *l)
{
	return l->head_seg;
}

uint64_t log_head_off(const struct log *l)
{
	return l->head_off;
}

uint64_t log_next_seg(const struct log *l)
{
	return l->next_seg;
}

uint64_t log_lsn(const struct log *l)
{
	return l->lsn;
}

uint64_t log_blocks_written(const struct log *l)
{
	return l->blocks_written;
}

uint64_t log_rewrites(const struct log *l)
{
	return l->rewrites;
}

void log_last(const struct log *l, uint64_t *lsn, uint32_t *crc)
{
	*lsn = l->last_lsn;
	*crc = l->prev_crc;
}

static int push_iov(struct log *l, const void *p)
{
	if (l->niov == l->iov_cap) {
		int cap = l->iov_cap ? l->iov_cap * 2 : 256;
		struct iovec *n = realloc(l->iov, sizeof(*n) * (size_t)cap);
		if (!n)
			return -ENOMEM;
		l->iov = n;
		l->iov_cap = cap;
	}
	l->iov[l->niov].iov_base = (void *)p;
	l->iov[l->niov].iov_len = FMT_BLOCK;
	l->niov++;
	return 0;
}

static struct fmt_summary *get_summary(struct log *l)
{
	if (l->pool_used == l->npool) {
		struct fmt_summary **n = realloc(l->pool, sizeof(*n) * (size_t)(l->npool + 1));
		if (!n)
			return NULL;
		l->pool = n;
		if (posix_memalign((void **)&l->pool[l->npool], 4096, FMT_BLOCK))
			return NULL;
		l->npool++;
	}
	struct fmt_summary *s = l->pool[l->pool_used++];
	memset(s, 0, sizeof(*s));
	return s;
}

/* Make s a valid summary of what it holds now, with the LSN the open
 * summary has (l->lsn: every version of a summary kept open carries the
 * LSN and previous CRC it is sealed with). */
static void sum_fill(struct log *l, struct fmt_summary *s)
{
	s->magic = FMT_SUM_MAGIC;
	s->self = l->sum_addr;
	s->lsn = l->lsn;
	s->next_seg = l->next_seg;
	s->boot_id = l->boot_id;
	s->prev_crc = l->prev_crc;
	s->time = (uint64_t)time(NULL);
	s->crc = 0;
	s->crc = crc32c(0, s, FMT_BLOCK);
}

uint64_t log_seal(struct log *l)
{
	struct fmt_summary *s = l->sum;
	if (!s)
		return 0;
	if (l->sum_written) {
		/* The version on disk is final unless entries came since, or
		 * the successor it names changed: otherwise the next commit
		 * writes the final one. */
		if (l->sum_dirty || s->next_seg != l->next_seg) {
			sum_fill(l, s);
			l->final_pending = true;
			l->final_addr = l->sum_addr;
		}
		l->sum_written = false;
	} else {
		sum_fill(l, s);
	}
	l->lsn++;
	l->prev_crc = s->crc;
	l->last_lsn = s->lsn;
	l->sum = NULL;
	return l->sum_addr;
}

/* Append the pending blocks (one append: they are contiguous in one
 * segment), then the final version of a summary sealed since it was last
 * written.  Data first: a summary on disk names only blocks the same or
 * an earlier write put there, for a reader of the running pool (bcrc.c);
 * after a power cut any order may have persisted, and a version that
 * names a block that did not ends the chain (log_chain_next). */
static int write_pending(struct log *l)
{
	int err = 0;
	if (l->niov) {
		uint64_t seg = l->pend_start / FMT_SEG_BLOCKS;
		uint64_t off = (l->pend_start % FMT_SEG_BLOCKS) * FMT_BLOCK;
		err = segio_append(l->io, seg, off, l->iov, l->niov);
		l->blocks_written += (uint64_t)l->niov;
	}
	if (l->final_pending) {
		if (!err)
			err = segio_rewrite(l->io, l->final_addr, l->open_buf);
		l->final_pending = false;
		l->rewrites++;
	}
	l->niov = 0;
	l->pool_used = 0;
	l->pend_start = l->head_seg * FMT_SEG_BLOCKS + l->head_off;
	return err;
}

int log_commit(struct log *l)
{
	log_seal(l);
	return write_pending(l);
}

int log_commit_open(struct log *l)
{
	struct fmt_summary *s = l->sum;
	int err;

	if (!l->can_rewrite || !s)
		return log_commit(l);
	if (!l->open_buf && posix_memalign((void **)&l->open_buf, 4096, FMT_BLOCK)) {
		l->open_buf = NULL;
		return log_commit(l);
	}
	if (l->sum_written) {
		/* Its blocks first, then the summary that names them. */
		if (l->sum_dirty)
			sum_fill(l, s);
		err = write_pending(l);
		if (!err && l->sum_dirty) {
			err = segio_rewrite(l->io, l->sum_addr, s);
			l->rewrites++;
		}
	} else {
		/* Opened since the last commit: it goes out in the pending
		 * run, then lives on in open_buf (which may hold the final
		 * version of a summary sealed before it until write_pending
		 * has written that). */
		sum_fill(l, s);
		err = write_pending(l);
		memcpy(l->open_buf, s, FMT_BLOCK);
		l->sum = l->open_buf;
		l->sum_written = true;
	}
	l->sum_dirty = false;
	return err;
}

/* Blocks of the head segment the log may fill.  While no sealed summary
 * names a successor (none was free when the log entered the segment), the
 * last block is kept for one that will: recovery follows the log only into
 * a segment some summary names, so the log never moves into any other. */
static uint64_t seg_capacity(const struct log *l)
{
	return l->next_seg ? FMT_SEG_BLOCKS : FMT_SEG_BLOCKS - 1;
}

/* Start a summary at the head (the caller made sure it fits). */
static int start_summary(struct log *l)
{
	struct fmt_summary *s = get_summary(l);
	if (!s)
		return -ENOMEM;
	int err = push_iov(l, s);
	if (err)
		return err;
	l->sum = s;
	l->sum_addr = l->head_seg * FMT_SEG_BLOCKS + l->head_off;
	l->head_off++;
	return 0;
}

/* Write what is pending and move the head to next_seg (which some sealed
 * summary of the head segment names), taking a new next if one is free. */
static int move_head(struct log *l)
{
	int err = log_commit(l);
	if (err)
		return err;
	segio_seal(l->io, l->head_seg);
	err = segio_open(l->io, l->next_seg, 0);
	if (err)
		return err;
	l->head_seg = l->next_seg;
	l->head_off = 0;
	alloc_seg_set_stamp(l->a, l->head_seg, l->lsn);
	l->next_seg = alloc_take_seg(l->a); /* may be 0: taken later */
	reserve_next(l);
	l->pend_start = l->head_seg * FMT_SEG_BLOCKS;
	return 0;
}

/* Open a new summary with room for at least `need` carried blocks. */
static int open_summary(struct log *l, unsigned need)
{
	int err;
	uint64_t cap = seg_capacity(l); /* before a successor is taken below */

	log_seal(l);
	if (!l->next_seg) { /* every summary sealed from now on names it */
		l->next_seg = alloc_take_seg(l->a);
		reserve_next(l);
	} else if (l->next_unbacked) {
		reserve_next(l);
	}
	if (l->head_off + 1 + need > cap) {
		/* Not contiguous any more: move to the successor. */
		if (!l->next_seg)
			return -ENOSPC;
		if (cap < FMT_SEG_BLOCKS) {
			/* Just taken: no sealed summary names it yet.  An
			 * empty one in the kept block does. */
			err = start_summary(l);
			if (err)
				return err;
			log_seal(l);
		}
		err = move_head(l);
		if (err)
			return err;
	}
	return start_summary(l);
}

int log_reserve(struct log *l, unsigned nblocks)
{
	return open_summary(l, nblocks);
}

int log_add(struct log *l, const struct fmt_entry *e, const void *block, uint64_t *addr)
{
	int err;
	if (!l->sum || l->sum->nentries == FMT_SUM_ENTRIES ||
	    (block && l->head_off + 1 > seg_capacity(l))) {
		err = open_summary(l, block ? 1 : 0);
		if (err)
			return err;
	}
	struct fmt_entry *d = &l->sum->e[l->sum->nentries++];
	*d = *e;
	l->sum_dirty = true;
	if (block) {
		err = push_iov(l, block);
		if (err) {
			l->sum->nentries--;
			return err;
		}
		d->crc = fmt_entry_sealed(e->type) ? 0 : crc32c(0, block, FMT_BLOCK);
		*addr = l->head_seg * FMT_SEG_BLOCKS + l->head_off;
		l->head_off++;
		l->sum->nblocks++;
	}
	return 0;
}

uint64_t log_room(const struct log *l)
{
	uint64_t cap = seg_capacity(l);
	uint64_t here = cap > l->head_off ? cap - l->head_off : 0;
	return here + (l->next_seg && !l->next_unbacked ? FMT_SEG_BLOCKS : 0);
}

bool log_backend_full(const struct log *l)
{
	return l->next_unbacked;
}

void log_retry_reserve(struct log *l)
{
	if (l->next_unbacked)
		reserve_next(l);
}

/* ---- reading batches back ---------------------------------------------- */

/* The one place that knows which entries carry a block: all but TRIM. */
static bool entry_carries(const struct fmt_entry *e)
{
	return e->type != FMT_E_TRIM;
}

int log_summary_valid(const struct fmt_summary *s, uint64_t addr)
{
	struct fmt_summary copy;
	if (s->magic != FMT_SUM_MAGIC || s->self != addr || s->nentries > FMT_SUM_ENTRIES)
		return -EILSEQ;
	memcpy(&copy, s, sizeof(copy));
	copy.crc = 0;
	if (crc32c(0, &copy, FMT_BLOCK) != s->crc)
		return -EILSEQ;
	unsigned carried = 0;
	for (unsigned i = 0; i < s->nentries; i++)
		carried += entry_carries(&s->e[i]);
	if (carried != s->nblocks || (addr % FMT_SEG_BLOCKS) + 1 + carried > FMT_SEG_BLOCKS)
		return -EILSEQ;
	return 0;
}

const struct fmt_entry *log_entry_next(const struct fmt_summary *s, uint64_t addr,
                                       struct log_walk *w, uint64_t *blk)
{
	if (w->i >= s->nentries)
		return NULL;
	const struct fmt_entry *e = &s->e[w->i++];
	*blk = entry_carries(e) ? addr + 1 + w->k++ : 0;
	return e;
}

void log_chain_start(struct log_chain *c, const struct fmt_summary *ck, uint64_t nsegs)
{
	c->pos = ck->self + 1 + ck->nblocks;
	c->seg = ck->self / FMT_SEG_BLOCKS;
	c->next = ck->next_seg;
	c->lsn = ck->lsn + 1;
	c->prev = ck->crc;
	c->nsegs = nsegs;
}

/* Is the batch at `at` the one that continues c: a valid summary with the
 * right LSN and previous CRC, every carried data block intact?  1 or 0, or
 * the -errno of a read that failed: a block that cannot be read may hold
 * the rest of the log, so it is not its end. */
static int chain_fits(struct segio *io, const struct log_chain *c, uint64_t at,
                      struct fmt_summary *s, void *scratch)
{
	struct log_walk w = {0};
	const struct fmt_entry *e;
	uint64_t blk;
	int err = segio_read_block(io, s, at);

	if (err)
		return err;
	if (log_summary_valid(s, at) || s->lsn != c->lsn || s->prev_crc != c->prev)
		return 0;
	/* Nodes, count pages and segment tables carry their own CRC (checked
	 * when read); every other carried block must match its entry (torn
	 * write?). */
	while ((e = log_entry_next(s, at, &w, &blk))) {
		if (!blk || fmt_entry_sealed(e->type))
			continue;
		if ((err = segio_read_block(io, scratch, blk)))
			return err;
		if (crc32c(0, scratch, FMT_BLOCK) != e->crc)
			return 0;
	}
	return 1;
}

int log_chain_next(struct segio *io, struct log_chain *c, struct fmt_summary *s, void *scratch,
                   uint64_t *addr)
{
	uint64_t at = c->pos;
	int fits = 0;

	/* The block after the last batch, then the next segment's start. */
	if (c->pos / FMT_SEG_BLOCKS == c->seg)
		fits = chain_fits(io, c, at, s, scratch);
	if (!fits && c->next && c->next < c->nsegs) {
		at = c->next * FMT_SEG_BLOCKS;
		fits = chain_fits(io, c, at, s, scratch);
	}
	if (fits <= 0)
		return fits;
	c->seg = at / FMT_SEG_BLOCKS;
	if (s->next_seg && s->next_seg < c->nsegs)
		c->next = s->next_seg;
	c->pos = at + 1 + s->nblocks;
	c->prev = s->crc;
	c->lsn++;
	*addr = at;
	return 1;
}

int log_seg_next(struct segio *io, uint64_t seg, uint64_t pos, struct fmt_summary *s)
{
	if (pos / FMT_SEG_BLOCKS != seg)
		return 0;
	int err = segio_read_block(io, s, pos);
	return err ? err : !log_summary_valid(s, pos);
}
