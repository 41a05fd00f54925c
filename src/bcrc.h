/* bcrc.h — the expected CRC32C of a data block, looked up in the summaries
 * of its segment (private to the store).
 *
 * Every data block's CRC32C is on disk in the summary that wrote it (a
 * DATA entry, or a MOVE entry for a compactor copy), and the batches of a
 * segment lie contiguous from its first block.  A segment's table (one
 * CRC per block, FMT_SEG_BLOCKS × 4 bytes) is built on demand by walking
 * those summaries, and a cache of such tables answers later lookups with
 * no I/O.  The cache is bounded (one table per slot, a segment maps to
 * slot seg % slots); a later issue that puts all metadata behind one
 * bounded cache can hold these tables in it unchanged.
 *
 * Which life of a segment a table describes: the caller passes the
 * segment's stamp (alloc_seg_stamp: the LSN at which the log entered it,
 * distinct for every life).  A table whose stamp differs is rebuilt.  The
 * walk accepts only batches of that life: the first summary must carry an
 * LSN at least the stamp (a stamp of 0 names a life begun before this
 * process opened the pool), and every following one must continue the
 * chain (LSN + 1, previous CRC), so a stale batch from an earlier life,
 * which can lie after the current ones, never supplies a CRC.  A block
 * past the batches walked so far (the log head grows) extends the table.
 * A mismatch against a cached table is confirmed against a table rebuilt
 * from disk before it is reported, so no race on the stamp can turn a
 * good block into an error.
 *
 * Threads: bcrc_verify may run on any number of threads at once, each an
 * RCU reader (liburcu memb flavour, registered): the common case is lock
 * free (an RCU-published table, its entries published with release
 * stores); building or extending a table takes that table's mutex and
 * reads summaries through the segio.  Replaced tables are freed after a
 * grace period.
 */
#ifndef COWBD_BCRC_H
#define COWBD_BCRC_H
#include <stdbool.h>
#include <stdint.h>

#include "segio.h"

struct bcrc;

/* A cache of up to `slots` segment tables (at least 1) over io, a pool of
 * nsegs segments.  Tables are allocated when first needed (about 5 KiB
 * each).  NULL on ENOMEM. */
struct bcrc *bcrc_new(struct segio *io, uint64_t nsegs, unsigned slots);
/* Free the cache and its tables; no thread may be inside bcrc_verify. */
void bcrc_free(struct bcrc *c);

/* Check the 4 KiB data block `data`, read from block address blk, whose
 * segment has stamp `stamp`, against the CRC its segment's summaries hold.
 * Returns 0 (it matches), -EIO (it does not, or no summary of the
 * segment's current life describes blk as a data block), -EAGAIN (nowait,
 * and a summary it needs is not in memory, or another thread is building
 * the table), -ENOMEM, or the backend's error reading a summary.  With
 * crc non-NULL, *crc receives the expected CRC when one was found.
 * Caller: inside an RCU read-side critical section.  Cost: one CRC32C of
 * the block, and when the table is missing or short, reading the
 * segment's summaries. */
int bcrc_verify(struct bcrc *c, uint64_t blk, uint64_t stamp, const void *data, bool nowait,
                uint32_t *crc);
/* The same for a block whose CRC32C the caller computed (got): for bytes
 * that must be read in one guarded pass (a view, segio_view_guard). */
int bcrc_check(struct bcrc *c, uint64_t blk, uint64_t stamp, uint32_t got, bool nowait,
               uint32_t *crc);

/* What carried block blk of a segment with stamp `stamp` (the compactor,
 * before it copies the block): *node if a NODE entry (the block checks
 * itself), else a DATA, MOVE or MOVE2 entry; *birth the name a MOVE2
 * entry gives it (fwd.h), 0 for a block born where it is.  0, -EIO (no
 * entry of the segment's current life carries it), -ENOMEM or a read
 * error.  Caller: inside an RCU read-side section; may block. */
int bcrc_describe(struct bcrc *c, uint64_t blk, uint64_t stamp, bool *node, uint64_t *birth);

#endif
