/* segcache.h — the local cache of a RADOS pool's segments: one file (or
 * block device) of whole-segment slots, FMT_SEG_BYTES each.  It holds the
 * segments sealed most recently (copied in whole, off the log thread) and
 * the ones read most recently, so that reads of cached data never leave
 * the host.
 *
 * The cache is only ever a copy: nothing in it is needed to open or serve
 * the pool, and a cache that fails (a full filesystem, an I/O error, a
 * damaged or foreign file) makes the pool slower, never wrong and never
 * failed — its errors are not returned to the caller, they drop what
 * they touched (and are said once).  It starts empty at every open: a
 * segment another host wrote since must not be read from an old copy.
 *
 * A slot holds a prefix of one segment: bytes [0, len).  Writes extend it
 * in order (write at off == len), or fill it whole from the object.
 *
 * Threads: every call from any thread.  A reader pins its slot while it
 * reads the file, so that no writer reuses the slot under it.  Locks: one
 * mutex for the slot table, never held across file I/O. */
#ifndef COWBD_SEGCACHE_H
#define COWBD_SEGCACHE_H
#include <stddef.h>
#include <stdint.h>

struct segcache;

/* Open (creating when missing) the cache at path with room for bytes /
 * FMT_SEG_BYTES segments (at least 2).  A regular file is sized to bytes
 * (and its space reserved with fallocate where possible: a cache that
 * cannot get its space is still used, with fewer slots); a block device
 * gives what it has.  NULL + errno with *why a one-line reason when path
 * cannot be used at all (then the pool runs without a cache, or refuses:
 * the caller chooses). */
struct segcache *segcache_open(const char *path, uint64_t bytes, const char **why);
void segcache_close(struct segcache *c);

/* Read [off, off + len) of segment seg from the cache: 0 when all of it is
 * there, -ENOENT when not (nothing was read or some of it is missing).
 * Never another error: a failed read of the file drops the slot and says
 * -ENOENT. */
int segcache_read(struct segcache *c, uint64_t seg, void *buf, size_t len, uint64_t off);
/* The same, but -EAGAIN when the file read would wait for the disk. */
int segcache_read_nowait(struct segcache *c, uint64_t seg, void *buf, size_t len, uint64_t off);

/* Copy [off, off + len) of seg into the cache: starts a slot for seg when
 * off is 0 (evicting the least recently used unpinned slot), extends it
 * when off is the slot's current length, and is ignored otherwise. */
void segcache_write(struct segcache *c, uint64_t seg, const void *buf, size_t len, uint64_t off);
/* seg was discarded (or rewritten from 0): forget it. */
void segcache_drop(struct segcache *c, uint64_t seg);

/* A whole segment fetched from the objects is copied in with a ticket
 * taken before the fetch: the fill is ignored when a drop or a restart
 * (a write at 0) of seg came in between — the bytes fetched may be the
 * old life's of a segment discarded and written again meanwhile, and
 * cached they would be served in place of the new.  (Also ignored after
 * more than 256 drops of any segments: a skipped fill costs one miss.)
 * Otherwise as segcache_write at 0. */
uint64_t segcache_ticket(struct segcache *c);
void segcache_fill(struct segcache *c, uint64_t ticket, uint64_t seg, const void *buf, size_t len);

struct segcache_stats {
	uint64_t slots, used;  /* slots in the file, slots holding a segment */
	uint64_t hits, misses; /* segcache_read calls */
	uint64_t evictions;    /* slots reused for another segment */
	uint64_t errors;       /* failed file reads or writes (slots dropped) */
};
void segcache_stats(struct segcache *c, struct segcache_stats *out);

#endif
