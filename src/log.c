/* log.c — batches at the head of the append-only segment log: summary
 * building, sealing (LSN + CRC chain) and the pwritev that writes a round.
 * Layer: under store, over blkdev and alloc.  Locks: none (log thread). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "crc32c.h"
#include "log.h"

int log_init(struct log *l, struct blkdev *dev, struct alloc *a, uint64_t head_seg,
             uint64_t head_off, uint64_t next_seg, uint64_t lsn, uint32_t prev_crc)
{
	memset(l, 0, sizeof(*l));
	l->dev = dev;
	l->a = a;
	l->head_seg = head_seg;
	l->head_off = head_off;
	l->next_seg = next_seg;
	l->lsn = lsn;
	l->prev_crc = prev_crc;
	l->pend_start = head_seg * FMT_SEG_BLOCKS + head_off;
	if (getrandom(&l->boot_id, sizeof(l->boot_id), 0) != sizeof(l->boot_id))
		l->boot_id = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	return 0;
}

void log_destroy(struct log *l)
{
	for (int i = 0; i < l->npool; i++)
		free(l->pool[i]);
	free(l->pool);
	free(l->iov);
	memset(l, 0, sizeof(*l));
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

uint64_t log_seal(struct log *l)
{
	struct fmt_summary *s = l->sum;
	if (!s)
		return 0;
	s->magic = FMT_SUM_MAGIC;
	s->self = l->sum_addr;
	s->lsn = l->lsn++;
	s->next_seg = l->next_seg;
	s->boot_id = l->boot_id;
	s->prev_crc = l->prev_crc;
	s->time = (uint64_t)time(NULL);
	s->crc = 0;
	s->crc = crc32c(0, s, FMT_BLOCK);
	l->prev_crc = s->crc;
	l->last_addr = l->sum_addr;
	l->last_lsn = s->lsn;
	l->sum = NULL;
	l->batches++;
	return l->last_addr;
}

int log_commit(struct log *l)
{
	int err = 0;
	log_seal(l);
	if (l->niov) {
		err = blkdev_pwritev(l->dev, l->iov, l->niov, l->pend_start * FMT_BLOCK);
		l->blocks_written += (uint64_t)l->niov;
	}
	l->niov = 0;
	l->pool_used = 0;
	l->pend_start = l->head_seg * FMT_SEG_BLOCKS + l->head_off;
	return err;
}

/* Open a new summary with room for at least `need` carried blocks. */
static int open_summary(struct log *l, unsigned need)
{
	int err;
	log_seal(l);
	if (l->head_off + 1 + need > FMT_SEG_BLOCKS) {
		/* Not contiguous any more: write what is pending, then move. */
		err = log_commit(l);
		if (err)
			return err;
		/* The segment is sealed: start writing it back now, so that
		 * dirty data never piles up for the next sync to wait on. */
		blkdev_writeback(l->dev, l->head_seg * FMT_SEG_BYTES, FMT_SEG_BYTES);
		if (!l->next_seg)
			l->next_seg = alloc_take_seg(l->a);
		if (!l->next_seg)
			return -ENOSPC;
		l->head_seg = l->next_seg;
		l->head_off = 0;
		l->a->seg_stamp[l->head_seg] = l->lsn;
		l->next_seg = alloc_take_seg(l->a); /* may be 0: taken later */
		l->pend_start = l->head_seg * FMT_SEG_BLOCKS;
	} else if (!l->next_seg) {
		l->next_seg = alloc_take_seg(l->a);
	}
	struct fmt_summary *s = get_summary(l);
	if (!s)
		return -ENOMEM;
	err = push_iov(l, s);
	if (err)
		return err;
	l->sum = s;
	l->sum_addr = l->head_seg * FMT_SEG_BLOCKS + l->head_off;
	l->head_off++;
	return 0;
}

int log_reserve(struct log *l, unsigned nblocks)
{
	return open_summary(l, nblocks);
}

int log_add(struct log *l, const struct fmt_entry *e, const void *block, uint64_t *addr)
{
	int err;
	if (!l->sum || l->sum->nentries == FMT_SUM_ENTRIES ||
	    (block && l->head_off + 1 > FMT_SEG_BLOCKS)) {
		err = open_summary(l, block ? 1 : 0);
		if (err)
			return err;
	}
	struct fmt_entry *d = &l->sum->e[l->sum->nentries++];
	*d = *e;
	if (block) {
		err = push_iov(l, block);
		if (err) {
			l->sum->nentries--;
			return err;
		}
		d->crc = e->type == FMT_E_NODE ? 0 : crc32c(0, block, FMT_BLOCK);
		*addr = l->head_seg * FMT_SEG_BLOCKS + l->head_off;
		l->head_off++;
		l->sum->nblocks++;
	}
	return 0;
}

uint64_t log_room(const struct log *l)
{
	return (FMT_SEG_BLOCKS - l->head_off) + (l->next_seg ? FMT_SEG_BLOCKS : 0);
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
		carried += s->e[i].type != FMT_E_TRIM;
	if (carried != s->nblocks || (addr % FMT_SEG_BLOCKS) + 1 + carried > FMT_SEG_BLOCKS)
		return -EILSEQ;
	return 0;
}
