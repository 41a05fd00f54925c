/* log.h — the append-only log of segments (private to the store): writing
 * batches at the head, and the one description of how to walk them back.
 *
 * Writing: builds batches (a summary block + the blocks its entries carry)
 * at the log head and writes everything pending with one append per
 * segment at log_commit().  Summaries are sealed with LSN, the previous
 * summary's CRC, the boot id and the segment the log continues in (see
 * format.h).  When a segment is full the log seals it, moves to the
 * segment named as next and takes a new next from the allocator (stamping
 * the segment with the LSN it was entered at: its age for the compactor).
 *
 * Summaries kept open: where the backend can rewrite a block in place
 * (segio_can_rewrite: a file or block device), log_commit_open writes a
 * valid version of the open summary and keeps it open, so that the next
 * commits add to it instead of spending a block of log per commit.  Each
 * later version is written after the blocks it adds, at the same address,
 * with the same LSN and previous CRC; the summary is sealed (its final
 * version written) by the next log_commit, by a full summary or segment,
 * or by a checkpoint.  A caller that syncs for a client (FLUSH, FUA, a
 * control change) commits with log_commit first, so a summary a client
 * waits on is never written again and a power cut can cost only unsynced
 * commits; a sync that happens to catch a version of an open summary (the
 * syncer's, writer.c, while later rounds go on) promised nobody its
 * entries.  After a cut the disk may hold
 * any version, or a torn one: recovery (log_chain_next) takes the chain up
 * to a version whose carried blocks all check, and a version older than
 * the final one ends it (its successor chains to the final CRC).
 *
 * Reading: log_summary_valid, log_entry_next (which entries carry a block
 * and where it lies), log_chain_next (the batch that continues the chain
 * after a checkpoint: recovery) and log_seg_next (the batches of one
 * segment: the checker).  Replay, the checker and the compactor use these
 * and nothing else to interpret a batch.
 *
 * Single-threaded writer: the store's log thread owns a struct log.
 * log_add never does I/O except when it must move to another segment (it
 * then writes what is pending first).  Blocks handed to log_add must stay
 * valid and unchanged until log_commit returns.  The reading functions are
 * stateless and may run on any thread.
 */
#ifndef COWBD_LOG_H
#define COWBD_LOG_H
#include <stdbool.h>
#include <stdint.h>

#include "alloc.h"
#include "format.h"
#include "segio.h"

/* Opaque: log.c owns the fields. */
struct log;

/* Start the log at (head_seg, head_off) blocks; next_seg may be 0 (taken
 * when needed); lsn is what the next summary gets, prev_crc the CRC of the
 * last sealed one.  NULL + errno (ENOMEM, or the backend's error opening
 * the head segment). */
struct log *log_new(struct segio *io, struct alloc *a, uint64_t head_seg, uint64_t head_off,
                    uint64_t next_seg, uint64_t lsn, uint32_t prev_crc);
void log_free(struct log *l);

/* Add an entry; block (4 KiB) or NULL.  For blocks, *addr receives the
 * block's address and, unless e->type is FMT_E_NODE (whose blocks carry
 * their own CRC, filled in by the caller before log_commit), the entry's
 * crc is computed here.  Returns 0, -ENOSPC (no segment to continue in) or
 * the error of writing pending blocks. */
int log_add(struct log *l, const struct fmt_entry *e, const void *block, uint64_t *addr);

/* Seal the open summary and make sure the next one can carry nblocks
 * blocks in one batch (moving to the next segment if needed). */
int log_reserve(struct log *l, unsigned nblocks);

/* Seal the open summary (no I/O).  Returns its address, or 0 if none was
 * open; log_last() then describes it. */
uint64_t log_seal(struct log *l);

/* Seal the open summary and write everything pending (one append per
 * segment, and the final version of a summary kept open).  Returns 0 or
 * -errno. */
int log_commit(struct log *l);

/* Write everything pending, keeping the open summary open: a version of it
 * naming every block written so far is on disk on return (in the page
 * cache: not synced), and later log_add calls add to it.  The same as
 * log_commit where the backend cannot rewrite.  0 or -errno. */
int log_commit_open(struct log *l);

/* Blocks that can still be written without taking another free segment
 * (the successor counts only once the backend has reserved its space). */
uint64_t log_room(const struct log *l);

/* The backend could not reserve the successor's space (a full host
 * filesystem under a pool file): only log_room() is left until
 * log_retry_reserve() succeeds, e.g. after free segments were discarded. */
bool log_backend_full(const struct log *l);
void log_retry_reserve(struct log *l);

/* Where the log stands: the head segment and the next free block in it,
 * the segment it continues in (0 = none taken yet), the LSN the next
 * summary gets, blocks of log written since log_new (a summary written
 * again counts once). */
uint64_t log_head_seg(const struct log *l);
uint64_t log_head_off(const struct log *l);
uint64_t log_next_seg(const struct log *l);
uint64_t log_lsn(const struct log *l);
uint64_t log_blocks_written(const struct log *l);
/* Summary versions written again in place since log_new. */
uint64_t log_rewrites(const struct log *l);

/* The last sealed summary's LSN and CRC (what a superblock pointing at it
 * records). */
void log_last(const struct log *l, uint64_t *lsn, uint32_t *crc);

/* ---- reading batches back --------------------------------------------- */

/* Validate a summary block read from addr: magic, crc, self, and that the
 * blocks its entries carry fit in its segment.  0 or -EILSEQ. */
int log_summary_valid(const struct fmt_summary *s, uint64_t addr);

/* Walk the entries of a valid summary read at addr.  Start with w zeroed;
 * each call returns the next entry and in *blk the address of the block it
 * carries, 0 for an entry that carries none (TRIM).  NULL after the last. */
struct log_walk {
	unsigned i, k;
};
const struct fmt_entry *log_entry_next(const struct fmt_summary *s, uint64_t addr,
                                       struct log_walk *w, uint64_t *blk);

/* Following the chain from a checkpoint (recovery).  log_chain_start
 * begins after the batch whose valid summary ck is (in a pool of nsegs); log_chain_next reads
 * into s the batch that continues the chain — right after the last one in
 * the same segment, else at the start of the segment the log continues in
 * — whose LSN and previous-CRC fit and whose carried data blocks all match
 * their CRCs (a torn batch does not count).  scratch is one block.
 * Returns 1 (found: *addr is its summary, the chain has advanced and
 * c->seg/c->next say where the log is), 0 (end of the log), or the -errno
 * of a read that failed (not the end: what cannot be read may be the rest
 * of the log; c is unchanged). */
struct log_chain {
	uint64_t pos;   /* block after the last batch */
	uint64_t seg;   /* segment of the last batch */
	uint64_t next;  /* segment the log continues in (0 = none) */
	uint64_t lsn;   /* LSN the next batch must carry */
	uint32_t prev;  /* CRC it must chain to */
	uint64_t nsegs; /* segments in the pool */
};
void log_chain_start(struct log_chain *c, const struct fmt_summary *ck, uint64_t nsegs);
int log_chain_next(struct segio *io, struct log_chain *c, struct fmt_summary *s, void *scratch,
                   uint64_t *addr);

/* The batches of one segment lie contiguous from its first block: read the
 * valid summary at block pos of segment seg into s (1), or return 0 where
 * the run ends (pos past the segment, or no valid summary there), or the
 * -errno of a failed read.  Start at seg * FMT_SEG_BLOCKS; advance with
 * pos += 1 + s->nblocks. */
int log_seg_next(struct segio *io, uint64_t seg, uint64_t pos, struct fmt_summary *s);

#endif
