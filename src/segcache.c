/* segcache.c — the local cache of a RADOS pool's segments (segcache.h): a
 * file or block device cut into slots of FMT_SEG_BYTES, slot i at byte
 * i * FMT_SEG_BYTES, and in memory the table that says which segment each
 * slot holds and how much of it.  Layer: beside segio_obj.c, under the
 * store, over blkdev (open, the lock, writes, read_nowait).
 *
 * A slot is free (on the free list), mapped (in the index and the LRU
 * list: it holds bytes [0, len) of seg) or an orphan (dropped or replaced
 * while a reader still read it or a writer still wrote it: on the orphan
 * list, freed by the next taker of a slot once they have left).  Only a free slot is
 * taken for a new segment, so the bytes a pinned reader reads are never
 * overwritten by another segment's: at worst they are the old segment's,
 * which is what it looked up.  A writer publishes a new length only after
 * its bytes are in the file, so a reader never reads bytes not written.
 * A fill (a segment fetched from the objects) carries a ticket, the count
 * of drops when its fetch began, and is ignored when its segment was
 * dropped or restarted since: its bytes may be an old life's.
 *
 * Locks: c->lock guards the whole table (every field of struct slot, the
 * index, the lists, the stats, the warned flag); it is never held across
 * file I/O.  Except: a reader unpins (pins, atomic) and counts its hit
 * (hits, atomic) without it, so that a hit takes the lock once; whoever
 * reuses a slot checks pins under the lock.  dev, nslots and the arrays' addresses are set at open.
 *
 * O_DIRECT is not used: bench/segcache.c measured a 4 KiB O_DIRECT read
 * at 35-130x a warm read (80 us against 1.5 us on the 2-core dev VM) and
 * a 4 MiB O_DIRECT write at 2-3x a buffered one; the page cache is what
 * makes recent segments cheap, and what lets read_nowait serve the event
 * loop.  Its cost is memory the kernel may reclaim at will.  Readahead is
 * left as it is (no fadvise): reads of sealed segments are often runs. */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "blkdev.h"
#include "format.h"
#include "say.h"
#include "segcache.h"

#define SLOT_NONE UINT32_MAX
#define SEG_NONE  UINT64_MAX /* the seg of a free slot */
/* 64 TiB of cache: a table of 512 MiB (more is not used). */
#define MAX_SLOTS (1u << 24)
/* The last drops remembered for fills: a fill whose fetch saw more is
 * ignored (256: seconds of discards at hundreds of MB/s of writes). */
#define DROP_RING 256

struct slot {
	uint64_t seg;          /* the segment held, SEG_NONE when free */
	uint64_t len;          /* bytes [0, len) of seg are in the file */
	uint32_t prev, next;   /* LRU list when mapped (next only: free list) */
	_Atomic uint32_t pins; /* readers reading the slot's bytes now */
	bool busy;             /* a writer writing the slot's bytes now */
	bool mapped;           /* in the index and the LRU list */
};

struct segcache {
	struct blkdev *dev;
	uint32_t nslots;
	char *path;
	pthread_mutex_t lock;
	struct slot *slots;
	uint32_t *index;    /* open addressing, linear probing; SLOT_NONE: empty */
	uint32_t mask;      /* index size - 1, a power of two >= 2 * nslots */
	uint32_t lru_first; /* mapped slots, least recently used first */
	uint32_t lru_last;
	uint32_t free_first;          /* free slots, through next */
	uint32_t orphan_first;        /* unmapped slots in use when unmapped, through next */
	_Atomic uint64_t hits;        /* outside the lock: a hit takes it once */
	bool warned;                  /* a file error was said */
	uint64_t drops;               /* drops and restarts so far: fill tickets */
	uint64_t drop_seg[DROP_RING]; /* the segment of drop n at n % DROP_RING */
	struct segcache_stats st;
};

static uint64_t slot_off(uint32_t i)
{
	return (uint64_t)i * FMT_SEG_BYTES;
}

/* ---- the index: segment -> slot ----------------------------------------- */

static uint32_t index_home(const struct segcache *c, uint64_t seg)
{
	return (uint32_t)((seg * 0x9e3779b97f4a7c15ull) >> 32) & c->mask;
}

/* The index position holding seg's slot, or the empty one where it would
 * go. */
static uint32_t index_pos_locked(const struct segcache *c, uint64_t seg)
{
	uint32_t p = index_home(c, seg);

	while (c->index[p] != SLOT_NONE && c->slots[c->index[p]].seg != seg)
		p = (p + 1) & c->mask;
	return p;
}

static uint32_t index_find_locked(const struct segcache *c, uint64_t seg)
{
	return c->index[index_pos_locked(c, seg)];
}

/* Remove the entry at p, shifting back the entries of its probe run that
 * would no longer be found past the hole (no tombstones). */
static void index_remove_at_locked(struct segcache *c, uint32_t p)
{
	uint32_t hole = p;

	c->index[hole] = SLOT_NONE;
	for (p = (hole + 1) & c->mask; c->index[p] != SLOT_NONE; p = (p + 1) & c->mask) {
		uint32_t home = index_home(c, c->slots[c->index[p]].seg);
		/* The entry at p stays when its home lies cyclically in (hole, p]. */
		if (((p - home) & c->mask) < ((p - hole) & c->mask))
			continue;
		c->index[hole] = c->index[p];
		c->index[p] = SLOT_NONE;
		hole = p;
	}
}

/* ---- the lists ------------------------------------------------------------ */

static void lru_unlink_locked(struct segcache *c, uint32_t i)
{
	struct slot *s = &c->slots[i];

	if (s->prev != SLOT_NONE)
		c->slots[s->prev].next = s->next;
	else
		c->lru_first = s->next;
	if (s->next != SLOT_NONE)
		c->slots[s->next].prev = s->prev;
	else
		c->lru_last = s->prev;
}

static void lru_append_locked(struct segcache *c, uint32_t i)
{
	struct slot *s = &c->slots[i];

	s->prev = c->lru_last;
	s->next = SLOT_NONE;
	if (c->lru_last != SLOT_NONE)
		c->slots[c->lru_last].next = i;
	else
		c->lru_first = i;
	c->lru_last = i;
}

static void lru_touch_locked(struct segcache *c, uint32_t i)
{
	if (c->lru_last == i)
		return;
	lru_unlink_locked(c, i);
	lru_append_locked(c, i);
}

/* ---- slot states ------------------------------------------------------------ */

/* Does a reader or writer use slot i?  A reader unpins without the lock
 * (release, after its read): seeing 0 here (acquire) means its read is
 * over, so the slot's bytes may be overwritten. */
static bool slot_in_use_locked(const struct segcache *c, uint32_t i)
{
	return atomic_load_explicit(&c->slots[i].pins, memory_order_acquire) || c->slots[i].busy;
}

static void slot_free_locked(struct segcache *c, uint32_t i)
{
	struct slot *s = &c->slots[i];

	s->seg = SEG_NONE;
	s->len = 0;
	s->next = c->free_first;
	c->free_first = i;
}

/* Forget what slot i holds: out of the index and the LRU list; free now,
 * or an orphan until its last user leaves. */
static void slot_unmap_locked(struct segcache *c, uint32_t i)
{
	struct slot *s = &c->slots[i];

	index_remove_at_locked(c, index_pos_locked(c, s->seg));
	lru_unlink_locked(c, i);
	s->mapped = false;
	c->st.used--;
	if (slot_in_use_locked(c, i)) {
		s->next = c->orphan_first;
		c->orphan_first = i;
	} else {
		slot_free_locked(c, i);
	}
}

/* Free the orphans nobody uses any more (readers unpin without the lock,
 * so they cannot free them themselves).  Orphans are few: a drop or a
 * restart racing a read. */
static void orphans_reclaim_locked(struct segcache *c)
{
	uint32_t *link = &c->orphan_first;

	while (*link != SLOT_NONE) {
		uint32_t i = *link;
		if (slot_in_use_locked(c, i)) {
			link = &c->slots[i].next;
			continue;
		}
		*link = c->slots[i].next;
		slot_free_locked(c, i);
	}
}

/* A free slot, else an orphan no longer used, else the least recently
 * used slot nobody uses (evicted); SLOT_NONE when every slot is in use. */
static uint32_t slot_take_locked(struct segcache *c)
{
	uint32_t i;

	if (c->free_first == SLOT_NONE)
		orphans_reclaim_locked(c);
	i = c->free_first;
	if (i == SLOT_NONE) {
		for (i = c->lru_first; i != SLOT_NONE; i = c->slots[i].next)
			if (!slot_in_use_locked(c, i))
				break;
		if (i == SLOT_NONE)
			return SLOT_NONE;
		slot_unmap_locked(c, i);
		c->st.evictions++;
	}
	c->free_first = c->slots[i].next;
	return i;
}

/* Start seg over in a slot of its own (a mapping it had is dropped: its
 * readers finish on the old slot).  SLOT_NONE when no slot can be had. */
static uint32_t slot_start_locked(struct segcache *c, uint64_t seg)
{
	uint32_t p = index_pos_locked(c, seg);
	uint32_t i;
	struct slot *s;

	if (c->index[p] != SLOT_NONE)
		slot_unmap_locked(c, c->index[p]);
	i = slot_take_locked(c);
	if (i == SLOT_NONE)
		return SLOT_NONE;
	s = &c->slots[i];
	s->seg = seg;
	s->len = 0;
	s->mapped = true;
	c->index[index_pos_locked(c, seg)] = i;
	lru_append_locked(c, i);
	c->st.used++;
	return i;
}

/* seg's slot when off continues it and no other writer is in it. */
static uint32_t slot_continue_locked(struct segcache *c, uint64_t seg, uint64_t off)
{
	uint32_t i = index_find_locked(c, seg);

	if (i == SLOT_NONE || c->slots[i].len != off || c->slots[i].busy)
		return SLOT_NONE;
	lru_touch_locked(c, i);
	return i;
}

/* A read or write of slot i's bytes failed with err: the slot is dropped
 * (when still mapped) and the error counted.  true when it is the cache's
 * first, to be said by the caller outside the lock. */
static bool slot_failed_locked(struct segcache *c, uint32_t i)
{
	bool first = !c->warned;

	if (c->slots[i].mapped)
		slot_unmap_locked(c, i);
	c->st.errors++;
	c->warned = true;
	return first;
}

static void say_failed(const struct segcache *c, const char *what, uint64_t seg, int err)
{
	say_warn("segment cache %s: %s of segment %" PRIu64 " failed (%s); the cache drops what "
	         "fails and goes on, further errors are only counted",
	         c->path, what, seg, strerror(-err));
}

/* ---- fill tickets ---------------------------------------------------------- */

/* A drop or restart of seg: fills fetched before it must not cache. */
static void drop_note_locked(struct segcache *c, uint64_t seg)
{
	c->drop_seg[c->drops % DROP_RING] = seg;
	c->drops++;
}

/* Was seg dropped or restarted since ticket?  true also when too many
 * drops came since to tell. */
static bool dropped_since_locked(const struct segcache *c, uint64_t seg, uint64_t ticket)
{
	if (c->drops - ticket > DROP_RING)
		return true;
	for (uint64_t n = ticket; n < c->drops; n++)
		if (c->drop_seg[n % DROP_RING] == seg)
			return true;
	return false;
}

/* ---- file I/O (no lock held) -------------------------------------------- */

/* blkdev_pread, except that the end of the file is an error, not zeroes:
 * a cache file cut short under us must not read as data. */
static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* ---- the interface --------------------------------------------------------- */

static int cache_read(struct segcache *c, uint64_t seg, void *buf, size_t len, uint64_t off,
                      bool nowait)
{
	uint32_t i;
	bool say_it = false;
	int r;

	pthread_mutex_lock(&c->lock);
	i = index_find_locked(c, seg);
	if (i == SLOT_NONE || off > c->slots[i].len || len > c->slots[i].len - off) {
		c->st.misses++;
		pthread_mutex_unlock(&c->lock);
		return -ENOENT;
	}
	atomic_fetch_add_explicit(&c->slots[i].pins, 1, memory_order_relaxed);
	lru_touch_locked(c, i);
	pthread_mutex_unlock(&c->lock);

	if (nowait)
		r = blkdev_pread_nowait(c->dev, buf, len, slot_off(i) + off);
	else
		r = pread_all(c->dev->fd, buf, len, slot_off(i) + off);

	if (r == 0 || r == -EAGAIN) { /* unpinned without the lock */
		if (r == 0)
			atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&c->slots[i].pins, 1, memory_order_release);
		return r;
	}
	pthread_mutex_lock(&c->lock);
	atomic_fetch_sub_explicit(&c->slots[i].pins, 1, memory_order_release);
	say_it = slot_failed_locked(c, i);
	c->st.misses++;
	pthread_mutex_unlock(&c->lock);
	if (say_it)
		say_failed(c, "a read", seg, r);
	return -ENOENT;
}

int segcache_read(struct segcache *c, uint64_t seg, void *buf, size_t len, uint64_t off)
{
	return cache_read(c, seg, buf, len, off, false);
}

int segcache_read_nowait(struct segcache *c, uint64_t seg, void *buf, size_t len, uint64_t off)
{
	return cache_read(c, seg, buf, len, off, true);
}

/* segcache_write, or with a ticket segcache_fill. */
static void cache_write(struct segcache *c, uint64_t seg, const void *buf, size_t len, uint64_t off,
                        const uint64_t *ticket)
{
	bool say_it = false;
	uint32_t i = SLOT_NONE;
	int r;

	if (!len || seg == SEG_NONE || off > FMT_SEG_BYTES || len > FMT_SEG_BYTES - off)
		return;
	pthread_mutex_lock(&c->lock);
	if (off && !ticket)
		i = slot_continue_locked(c, seg, off);
	else if (!ticket || !dropped_since_locked(c, seg, *ticket))
		i = slot_start_locked(c, seg);
	if (!off && !ticket)
		drop_note_locked(c, seg); /* a restart */
	if (i != SLOT_NONE)
		c->slots[i].busy = true;
	pthread_mutex_unlock(&c->lock);
	if (i == SLOT_NONE)
		return;

	r = blkdev_pwritev(c->dev, &(struct iovec){.iov_base = (void *)buf, .iov_len = len}, 1,
	                   slot_off(i) + off);

	pthread_mutex_lock(&c->lock);
	c->slots[i].busy = false;
	if (r < 0)
		say_it = slot_failed_locked(c, i);
	else if (c->slots[i].mapped) /* not dropped or replaced meanwhile */
		c->slots[i].len = off + len;
	pthread_mutex_unlock(&c->lock);
	if (say_it)
		say_failed(c, "a write", seg, r);
}

void segcache_write(struct segcache *c, uint64_t seg, const void *buf, size_t len, uint64_t off)
{
	cache_write(c, seg, buf, len, off, NULL);
}

uint64_t segcache_ticket(struct segcache *c)
{
	uint64_t t;

	pthread_mutex_lock(&c->lock);
	t = c->drops;
	pthread_mutex_unlock(&c->lock);
	return t;
}

void segcache_fill(struct segcache *c, uint64_t ticket, uint64_t seg, const void *buf, size_t len)
{
	cache_write(c, seg, buf, len, 0, &ticket);
}

void segcache_drop(struct segcache *c, uint64_t seg)
{
	uint32_t i;

	pthread_mutex_lock(&c->lock);
	i = index_find_locked(c, seg);
	if (i != SLOT_NONE)
		slot_unmap_locked(c, i);
	drop_note_locked(c, seg); /* cached or not */
	pthread_mutex_unlock(&c->lock);
}

void segcache_stats(struct segcache *c, struct segcache_stats *out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->st;
	pthread_mutex_unlock(&c->lock);
	out->hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
}

/* ---- open and close ------------------------------------------------------ */

/* How many slots of a regular file's first want get their space.  A
 * filesystem that cannot reserve (no fallocate) gives them all, sparse:
 * its writes may fail later, and that drops only their slots. */
static uint64_t file_reserve(int fd, uint64_t want)
{
	uint64_t n;
	int r;

	do
		r = fallocate(fd, 0, 0, (off_t)(want * FMT_SEG_BYTES));
	while (r < 0 && errno == EINTR);
	if (r == 0 || (errno != ENOSPC && errno != EDQUOT))
		return want;
	/* Not room for all: as many whole slots as there is room for. */
	for (n = 0; n < want; n++) {
		do
			r = fallocate(fd, 0, (off_t)(n * FMT_SEG_BYTES), FMT_SEG_BYTES);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			break;
	}
	return n;
}

/* Size a regular file to want slots and reserve their space: 0 with
 * *slots set, or -errno with *why. */
static int file_size(struct blkdev *d, const char *path, uint64_t want, uint64_t *slots,
                     const char **why)
{
	int err = blkdev_set_size(d, want * FMT_SEG_BYTES);

	if (err) {
		*why = "cannot size the file";
		return err;
	}
	*slots = file_reserve(d->fd, want);
	if (*slots < 2) {
		*why = "its filesystem has no room for two segments";
		return -ENOSPC;
	}
	if (*slots < want) {
		say_warn("segment cache %s: room for %" PRIu64 " segments of the %" PRIu64
		         " asked: the filesystem is full",
		         path, *slots, want);
		(void)blkdev_set_size(d, *slots * FMT_SEG_BYTES);
	}
	return 0;
}

/* Open path as a cache of up to bytes (a block device: of what it has):
 * the device with *slots set, or NULL with errno and *why.  Opened as
 * BLKDEV_OWNER: locked, a block device exclusively (blkdev_open). */
static struct blkdev *cache_dev_open(const char *path, uint64_t bytes, uint64_t *slots,
                                     const char **why)
{
	uint64_t want = bytes / FMT_SEG_BYTES < MAX_SLOTS ? bytes / FMT_SEG_BYTES : MAX_SLOTS;
	struct blkdev *d;
	int err;

	if (want < 2) {
		errno = EINVAL;
		*why = "room for fewer than two segments";
		return NULL;
	}
	d = blkdev_open_file(path, want * FMT_SEG_BYTES);
	if (!d) {
		*why = errno == EBUSY ? "another process uses it" : "cannot open or create it";
		return NULL;
	}
	if (blkdev_is_device(d)) {
		*slots = d->size / FMT_SEG_BYTES < want ? d->size / FMT_SEG_BYTES : want;
		if (*slots >= 2)
			return d;
		err = -EINVAL;
		*why = "the device has room for fewer than two segments";
	} else {
		err = file_size(d, path, want, slots, why);
		if (!err)
			return d;
	}
	blkdev_close(d);
	errno = -err;
	return NULL;
}

struct segcache *segcache_open(const char *path, uint64_t bytes, const char **why)
{
	struct segcache *c;
	uint64_t nslots, isize = 4;
	int err;

	c = calloc(1, sizeof(*c));
	if (!c)
		goto fail_mem;
	c->dev = cache_dev_open(path, bytes, &nslots, why);
	if (!c->dev)
		goto fail_c;
	c->nslots = (uint32_t)nslots;
	while (isize < 2 * nslots)
		isize *= 2;
	c->mask = (uint32_t)(isize - 1);
	c->path = strdup(path);
	c->slots = calloc(nslots, sizeof(*c->slots));
	c->index = malloc(isize * sizeof(*c->index));
	if (!c->path || !c->slots || !c->index)
		goto fail_arrays;
	memset(c->index, 0xff, isize * sizeof(*c->index)); /* SLOT_NONE */
	for (uint32_t i = 0; i < c->nslots; i++) {
		c->slots[i].seg = SEG_NONE;
		c->slots[i].next = i + 1 < c->nslots ? i + 1 : SLOT_NONE;
	}
	c->free_first = 0;
	c->orphan_first = SLOT_NONE;
	c->lru_first = c->lru_last = SLOT_NONE;
	c->st.slots = nslots;
	pthread_mutex_init(&c->lock, NULL);
	return c;

fail_arrays:
	free(c->index);
	free(c->slots);
	free(c->path);
	blkdev_close(c->dev);
	errno = ENOMEM;
	*why = "out of memory";
fail_c:
	err = errno;
	free(c);
	errno = err;
	return NULL;
fail_mem:
	*why = "out of memory";
	return NULL;
}

void segcache_close(struct segcache *c)
{
	if (!c)
		return;
	blkdev_close(c->dev);
	pthread_mutex_destroy(&c->lock);
	free(c->index);
	free(c->slots);
	free(c->path);
	free(c);
}
