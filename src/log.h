/* log.h — the append-only log of segments (private to the store).
 *
 * Builds batches (a summary block + the blocks its entries carry) at the log
 * head and writes everything pending with one pwritev per segment at
 * log_commit().  Summaries are sealed with LSN, the previous summary's CRC,
 * the boot id and the segment the log continues in (see format.h).  When a
 * segment is full the log moves to the segment named as next and takes a
 * new next from the allocator.
 *
 * Single-threaded: the store's log thread owns it.  log_add never does I/O
 * except when it must move to another segment (it then writes what is
 * pending first).  Blocks handed to log_add must stay valid and unchanged
 * until log_commit returns.
 */
#ifndef COWBD_LOG_H
#define COWBD_LOG_H
#include <stdint.h>
#include <sys/uio.h>

#include "alloc.h"
#include "blkdev.h"
#include "format.h"

struct log {
	struct blkdev *dev;
	struct alloc *a;
	uint64_t head_seg, head_off; /* next block to assign: head_seg * SEG + head_off */
	uint64_t next_seg;           /* 0 = none could be taken yet */
	uint64_t lsn;                /* LSN the next sealed summary gets */
	uint32_t prev_crc;           /* CRC of the last sealed summary */
	uint64_t boot_id;
	/* the open summary, if any */
	struct fmt_summary *sum;
	uint64_t sum_addr;
	/* pending, unwritten: contiguous blocks from pend_start */
	uint64_t pend_start;
	struct iovec *iov;
	int niov, iov_cap;
	struct fmt_summary **pool; /* summary buffers */
	int npool, pool_used;
	/* last sealed summary */
	uint64_t last_addr, last_lsn;
	uint64_t blocks_written, batches;
};

/* Start the log at (head_seg, head_off); next_seg may be 0. */
int log_init(struct log *l, struct blkdev *dev, struct alloc *a, uint64_t head_seg,
             uint64_t head_off, uint64_t next_seg, uint64_t lsn, uint32_t prev_crc);
void log_destroy(struct log *l);

/* Add an entry; block (4 KiB) or NULL.  For blocks, *addr receives the
 * block's address and, unless e->type is FMT_E_NODE (whose blocks carry
 * their own CRC, filled in by the caller before log_commit), the entry's
 * crc is computed here.  Returns 0, -ENOSPC (no segment to continue in) or
 * the error of writing pending blocks. */
int log_add(struct log *l, const struct fmt_entry *e, const void *block, uint64_t *addr);

/* Seal the open summary and make sure the next one can carry nblocks
 * blocks in one batch (moving to the next segment if needed). */
int log_reserve(struct log *l, unsigned nblocks);

/* Seal the open summary (no I/O).  Returns its address, or 0 if none was open. */
uint64_t log_seal(struct log *l);

/* Write everything pending (one pwritev per segment).  Returns 0 or -errno. */
int log_commit(struct log *l);

/* Blocks that can still be written without taking another free segment. */
uint64_t log_room(const struct log *l);

/* Validate a summary block read from addr: magic, crc, self. */
int log_summary_valid(const struct fmt_summary *s, uint64_t addr);

#endif
