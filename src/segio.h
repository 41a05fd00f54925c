/* segio.h — the segment I/O interface: everything the store below the
 * volume layer reads or writes, in the units the log thinks in (private to
 * the store).
 *
 * A pool is an array of nsegs segments of FMT_SEG_BYTES plus two
 * superblock slots.  The log only ever appends to the segment it is in
 * (segio_append at the segment's current end), seals it when it moves on,
 * and reuses a segment only after discarding it; readers read byte ranges
 * of the pool's address space (segment * FMT_SEG_BYTES + offset).  That
 * contract is what lets a second backend keep each segment as one object
 * (issue "segments in Ceph RADOS"): a sealed segment never changes again,
 * and holds its own summaries.  Segment 0 is never appended to: on a pool
 * device it holds the superblock slots.
 *
 * A backend may run out of space before the pool does (a sparse pool
 * file on a filesystem that fills): open and reserve secure a segment's
 * space before anything is appended to it, so that a full backend shows
 * as -ENOSPC where the log can refuse to move on (a full pool), never as
 * a failed append.
 *
 * Implementations: segio_dev.c (a file or block device through struct
 * blkdev, which tests swap for a fault-injecting memory device).
 *
 * Threads: append/open/reserve/seal/discard/sb_write come from one thread at a
 * time (the log thread, or the opener before threads start); read and
 * read_nowait from any thread; sync from any thread.  Errors: 0 or
 * negative errno.
 */
#ifndef COWBD_SEGIO_H
#define COWBD_SEGIO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blkdev.h"
#include "format.h"

struct segio;

struct segio_ops {
	/* Read exactly len bytes at pool byte address off (may cross
	 * segments). */
	int (*read)(struct segio *io, void *buf, size_t len, uint64_t off);
	/* The same, but -EAGAIN if it would wait for the backend. */
	int (*read_nowait)(struct segio *io, void *buf, size_t len, uint64_t off);
	/* A read-only view of len bytes at off, all in memory now, or NULL
	 * (not possible without waiting, or no views: the caller reads).
	 * Valid until the backend closes; read its bytes only inside
	 * segio_view_guard (blkdev_view says why).  May be NULL. */
	const void *(*view)(struct segio *io, uint64_t off, size_t len);
	/* The log entered seg (empty, or continued after recovery at off).
	 * Appends into seg need no more backend space after this: -ENOSPC
	 * (entering an empty segment only) when the backend cannot give it,
	 * and the log must not move. */
	int (*open)(struct segio *io, uint64_t seg, uint64_t off);
	/* The log chose seg as the segment it enters next: secure its space
	 * now, while the head segment still has room, so that the move later
	 * cannot fail.  -ENOSPC when the backend cannot give it (the rest of
	 * the head segment is then all the log can count on).  Idempotent;
	 * never needed for correctness, only to learn of a full backend a
	 * segment early. */
	int (*reserve)(struct segio *io, uint64_t seg);
	/* Write the vector at byte off of seg: the segment's current end.
	 * -ENOSPC (not -EIO) when the backend is full: the pool is full. */
	int (*append)(struct segio *io, uint64_t seg, uint64_t off, const struct iovec *iov,
	              int iovcnt);
	/* Write block blk (FMT_BLOCK bytes) again, in place: a block of the
	 * segment the log is in, appended earlier (a summary the log keeps
	 * open, log.c).  NULL when the backend writes a segment's bytes
	 * once (an object store): the log then seals every summary it
	 * writes.  A reader of that block meanwhile may see a mix of the
	 * two versions: segio_rewrite_seq says when to read again. */
	int (*rewrite)(struct segio *io, uint64_t blk, const void *buf);
	/* The log left seg: nothing more is appended until it is discarded.
	 * A hint to start writing it out; never fails the caller. */
	void (*seal)(struct segio *io, uint64_t seg);
	/* Every append completed before the call is durable on return.
	 * Once a sync failed, every later sync and sb_write fails too (a
	 * device or object store may report a lost write to one flush
	 * only, and several threads sync a pool: segio_dev.c, segio_obj.c). */
	int (*sync)(struct segio *io);
	/* seg holds nothing live: its space may go back to the backend. */
	int (*discard)(struct segio *io, uint64_t seg);
	/* Superblock slot 0 or 1: one FMT_BLOCK; sb_write is durable on
	 * return. */
	int (*sb_read)(struct segio *io, unsigned slot, void *buf);
	int (*sb_write)(struct segio *io, unsigned slot, const void *buf);
	/* Release the backend (closes the device). */
	void (*close)(struct segio *io);
};

struct segio {
	const struct segio_ops *ops;
	uint64_t nsegs; /* segments the backend has room for */
	/* Bytes appended and superblock bytes written without error, counted
	 * here so that every backend counts alike (relaxed atomics: the
	 * committer thread writes superblocks too; segio_written reads). */
	uint64_t written;
	/* A sequence count of rewrites: odd while one is under way. */
	uint64_t rewrite_seq;
};

static inline int segio_read(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return io->ops->read(io, buf, len, off);
}
static inline int segio_read_nowait(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return io->ops->read_nowait(io, buf, len, off);
}
static inline const void *segio_view(struct segio *io, uint64_t off, size_t len)
{
	return io->ops->view ? io->ops->view(io, off, len) : NULL;
}
/* Appends land in local memory or the page cache (not an object store):
 * they return without waiting on a network. */
static inline bool segio_local(const struct segio *io)
{
	return io->ops->view != NULL;
}
/* fn(arg) with faults on views caught: -EIO if one could not be read. */
static inline int segio_view_guard(int (*fn)(void *arg), void *arg)
{
	return blkdev_view_guard(fn, arg);
}
static inline int segio_open(struct segio *io, uint64_t seg, uint64_t off)
{
	return io->ops->open(io, seg, off);
}
static inline int segio_reserve(struct segio *io, uint64_t seg)
{
	return io->ops->reserve(io, seg);
}
static inline int segio_append(struct segio *io, uint64_t seg, uint64_t off,
                               const struct iovec *iov, int iovcnt)
{
	int err = io->ops->append(io, seg, off, iov, iovcnt);
	uint64_t n = 0;

	if (err)
		return err;
	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	__atomic_fetch_add(&io->written, n, __ATOMIC_RELAXED);
	return 0;
}
static inline bool segio_can_rewrite(const struct segio *io)
{
	return io->ops->rewrite != NULL;
}
static inline int segio_rewrite(struct segio *io, uint64_t blk, const void *buf)
{
	__atomic_fetch_add(&io->rewrite_seq, 1, __ATOMIC_SEQ_CST);
	int err = io->ops->rewrite(io, blk, buf);
	__atomic_fetch_add(&io->rewrite_seq, 1, __ATOMIC_SEQ_CST);
	if (!err)
		__atomic_fetch_add(&io->written, (uint64_t)FMT_BLOCK, __ATOMIC_RELAXED);
	return err;
}
/* Read before and after reading a block that may be rewritten: a block
 * read while the count was odd, or that changed, may be a mix (torn). */
static inline uint64_t segio_rewrite_seq(struct segio *io)
{
	return __atomic_load_n(&io->rewrite_seq, __ATOMIC_SEQ_CST);
}
static inline void segio_seal(struct segio *io, uint64_t seg)
{
	io->ops->seal(io, seg);
}
static inline int segio_sync(struct segio *io)
{
	return io->ops->sync(io);
}
static inline int segio_discard(struct segio *io, uint64_t seg)
{
	return io->ops->discard(io, seg);
}
static inline int segio_sb_read(struct segio *io, unsigned slot, void *buf)
{
	return io->ops->sb_read(io, slot, buf);
}
static inline int segio_sb_write(struct segio *io, unsigned slot, const void *buf)
{
	int err = io->ops->sb_write(io, slot, buf);

	if (!err)
		__atomic_fetch_add(&io->written, (uint64_t)FMT_BLOCK, __ATOMIC_RELAXED);
	return err;
}
/* Bytes written through segio_append and segio_sb_write so far.  Any
 * thread. */
static inline uint64_t segio_written(struct segio *io)
{
	return __atomic_load_n(&io->written, __ATOMIC_RELAXED);
}
static inline void segio_close(struct segio *io)
{
	if (io)
		io->ops->close(io);
}

/* One block (FMT_BLOCK) at block address blk. */
static inline int segio_read_block(struct segio *io, void *buf, uint64_t blk)
{
	return segio_read(io, buf, FMT_BLOCK, blk * FMT_BLOCK);
}

/* The pool device implementation: segments laid out back to back on dev
 * (segment 0's first two blocks are the superblock slots).  Takes dev over
 * only if own (segio_close then closes it).  NULL + errno ENOMEM. */
struct segio *segio_dev_new(struct blkdev *dev, bool own);

#endif
