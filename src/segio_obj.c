/* segio_obj.c — the segment I/O interface (segio.h) over an object store
 * (objstore.h: a RADOS pool, or the memory store in tests).  Layer: the
 * bottom of the store, beside segio_dev.c.
 *
 * Objects of the pool NAME: NAME.seg.%016llx per segment, written at its
 * offsets as the log appends and never again once sealed (removed when
 * the segment is discarded); NAME.sb.0 and NAME.sb.1, the superblock
 * slots (one block each, replaced whole).  The owner record, the address
 * of the client that serves the pool ("" after a clean close), is the
 * attribute cowbd.owner of NAME.sb.0; NAME.owner, where the previous
 * build kept it, is read when that attribute is missing and holds a
 * constant marker once this build served the pool (OWNER_MOVED).
 *
 * Ownership and fencing (docs/RADOS.md).  The exclusive lock on NAME.sb.0
 * is taken with a lease and renewed by a thread of this backend every
 * third of it.  Taking it over from a host that died: wait for its lease
 * to run out, then blocklist the address the owner record names before
 * anything is read, so that none of the old owner's writes can land after
 * ours start.  A backend whose lease lapsed (it could not renew in time,
 * or it was blocklisted, or another host holds the lock) is fenced: every
 * later call fails with -EIO, and it says so once.  The data path checks
 * the lease's age itself before every write, so a process stopped past its
 * lease writes nothing when it wakes, even before the renewer runs.  The
 * writes to NAME.sb.0 (the owner record, superblock slot 0) go further:
 * the object store applies them only while the lock is this client's
 * (objstore_setxattr_locked, objstore_write_full_locked), so a process
 * stalled between its check and such a write writes nothing.
 *
 * Data.  The open segment is kept in memory while the log appends to it:
 * each append is copied there and queued to the object (the object store
 * copies what it queues).  A sealed segment is copied into the local cache
 * (segcache.h) whole, by a thread of this backend (the cacher), so that
 * the log thread never waits for the cache file; a segment sealed while
 * the cacher is CACHE_BACKLOG segments behind is not cached (a copy only:
 * it costs a miss later).  The copies of the last sealed segments are kept
 * to answer reads fast (and pinned while the cacher copies them), and the
 * buffers of older ones are reused for the next.  sync is one objstore_flush,
 * which waits only for the writes queued before it: a FLUSH is answered
 * when its writes are durable in the object store.  Reads look in the
 * in-memory copies, then the cache, then the object (a whole segment is
 * fetched into the cache).
 *
 * Threads: as segio.h, plus the renewer and the cacher.  Locks:
 * o->flush_lock makes syncs one at a time (held across the flush; o->lock
 * is taken inside it, never the reverse); o->lock guards the in-memory
 * copies, their pins, the retired and spare lists and the cacher's queue
 * (never held across object-store or cache calls but the short memcpy of
 * a read); the fence is an atomic; the renewer's timing has its own mutex
 * and condition. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "format.h"
#include "objstore.h"
#include "say.h"
#include "segcache.h"
#include "segio.h"
#include "segio_obj.h"

/* Copies of sealed segments kept for reads (the object store and the
 * cache have them too), and spare buffers kept for the next segments. */
#define MAX_RETIRED 2
#define MAX_SPARE   2
/* Sealed segments waiting for the cacher, at most. */
#define CACHE_BACKLOG 4
/* The space watcher asks the object store for its room every
 * SPACE_POLL_MS, and takes off what this backend appended in the last
 * SPACE_LAG polls: Ceph's figures come from the OSDs' usage reports,
 * seconds behind the writes. */
#define SPACE_POLL_MS 1000
#define SPACE_LAG     10

/* A pool whose writes failed still answers reads (from memory, the cache
 * or the objects); a fenced one (the lock may be another host's) nothing. */
enum { OBJ_OK, OBJ_FAILED, OBJ_FENCED };

struct segbuf {
	uint64_t seg;
	uint64_t len; /* bytes appended (or loaded) so far */
	struct segbuf *next;
	char *data;     /* FMT_SEG_BYTES */
	unsigned pins;  /* cacher jobs copying it (under o->lock) */
	bool forgotten; /* off the retired list while pinned: the last unpin puts it away */
};

/* A sealed segment for the cacher: its copy (pinned) and the cache's
 * ticket taken at the seal, which keeps the fill out when seg is
 * discarded (and written again) before the cacher gets to it. */
struct cachejob {
	struct segbuf *b;
	uint64_t ticket;
	struct cachejob *next;
};

struct segio_obj {
	struct segio io; /* first: the interface */
	struct objstore *os;
	struct segcache *cache; /* NULL: none */
	char name[OBJSTORE_NAME_MAX / 2];
	char label[OBJSTORE_NAME_MAX]; /* for messages: "rados:POOL/NAME" */
	char cookie[64];
	unsigned lease;
	bool peek; /* no lock, nothing written (segio_obj_opts.peek) */

	pthread_mutex_t flush_lock; /* one sync at a time (obj_sync) */
	pthread_mutex_t lock;
	struct segbuf *open;    /* the segment the log appends to */
	struct segbuf *retired; /* sealed, newest first, until a flush */
	unsigned nretired;
	struct segbuf *spare; /* free buffers for the next segments */
	unsigned nspare;

	/* The cacher: jobs oldest first, its wake-up, its thread. */
	struct cachejob *cq, **cq_tail;
	unsigned ncq;
	bool cbusy; /* copying a job taken off the queue */
	bool chold; /* held by a test (segio_obj_cache_hold) */
	pthread_cond_t ccond;
	bool cstop, cacher_on;
	pthread_t cacher;

	atomic_int state;             /* OBJ_OK, OBJ_FAILED or OBJ_FENCED: only ever rises */
	atomic_int_least64_t renewed; /* now_ms() of the last good renewal's start */

	/* The space watcher: what obj_reserve goes by. */
	uint64_t space_margin;
	atomic_uint_least64_t appended; /* bytes appended since open */
	pthread_mutex_t smu;            /* the figures below, the watcher's sleep */
	pthread_cond_t scond;
	int64_t space_base;      /* room at the last look, recent appends taken off; -1: unknown */
	uint64_t space_at;       /* appended at the last look */
	uint64_t lag[SPACE_LAG]; /* appended at each of the last looks */
	unsigned lag_pos;
	uint64_t looks;     /* looks that learnt a figure */
	bool space_failing; /* the last look failed (said at the first) */
	bool sstop, watcher_on;
	bool full;           /* obj_reserve's last answer (the log thread's) */
	uint64_t band_since; /* full, room over the reserve since look band_since - 1; 0: not */
	pthread_t watcher;

	pthread_mutex_t rlock; /* the renewer's sleep */
	pthread_cond_t rcond;
	bool stopping, renewer_on;
	pthread_t renewer;
};

static struct segio_obj *to_obj(struct segio *io)
{
	return (struct segio_obj *)io;
}

/* The lease's clock: CLOCK_BOOTTIME, which (unlike CLOCK_MONOTONIC) goes
 * on while the host is suspended: a host that slept past its lease has
 * lost it. */
static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void seg_oid(const struct segio_obj *o, uint64_t seg, char *oid)
{
	snprintf(oid, OBJSTORE_NAME_MAX, "%s.seg.%016" PRIx64, o->name, seg);
}

static void sb_oid(const struct segio_obj *o, unsigned slot, char *oid)
{
	snprintf(oid, OBJSTORE_NAME_MAX, "%s.sb.%u", o->name, slot);
}

/* The owner record of the previous build: read when NAME.sb.0 has none. */
static void legacy_owner_oid(const struct segio_obj *o, char *oid)
{
	snprintf(oid, OBJSTORE_NAME_MAX, "%s.owner", o->name);
}

/* Enter state (OBJ_FAILED: writes fail from now on; OBJ_FENCED: every
 * call), said once per state with why. */
static void set_state(struct segio_obj *o, int state, const char *why)
{
	int old = atomic_load(&o->state);
	while (old < state && !atomic_compare_exchange_weak(&o->state, &old, state))
		;
	if (old >= state)
		return;
	if (state == OBJ_FENCED)
		say_error("pool %s: fenced: %s; failing every request from now on", o->label, why);
	else
		say_error("pool %s: %s; failing every write and flush from now on (reads go on)",
		          o->label, why);
}

static void fence(struct segio_obj *o, const char *why)
{
	set_state(o, OBJ_FENCED, why);
}

static bool fenced(struct segio_obj *o)
{
	return atomic_load(&o->state) == OBJ_FENCED;
}

/* The lease is older than it lasts: the lock may be someone else's by
 * now, so nothing more may be written or read.  Fences and says so. */
static bool lapsed(struct segio_obj *o)
{
	if (fenced(o))
		return true;
	if (!o->lease || now_ms() - atomic_load(&o->renewed) < (int64_t)o->lease * 1000)
		return false;
	fence(o, "its lease ran out before it could be renewed");
	return true;
}

/* May this backend write?  0, or -EIO (failed, fenced or lapsed). */
static int check_owner(struct segio_obj *o)
{
	if (o->peek)
		return -EROFS;
	if (atomic_load(&o->state) != OBJ_OK || lapsed(o))
		return -EIO;
	return 0;
}

/* ---- reads ---------------------------------------------------------------- */

/* Copy [off, off + len) of seg from an in-memory copy: true when found. */
static bool read_mem(struct segio_obj *o, uint64_t seg, void *buf, size_t len, uint64_t off)
{
	bool hit = false;

	pthread_mutex_lock(&o->lock);
	struct segbuf *b = o->open && o->open->seg == seg ? o->open : NULL;
	for (struct segbuf *r = o->retired; !b && r; r = r->next)
		if (r->seg == seg)
			b = r;
	if (b && off + len <= b->len) {
		memcpy(buf, b->data + off, len);
		hit = true;
	}
	pthread_mutex_unlock(&o->lock);
	return hit;
}

static struct segbuf *buf_get(struct segio_obj *o, uint64_t seg);
static void buf_release(struct segio_obj *o, struct segbuf *b);

/* Read [off, off + len) of seg's object; what lies past its end (or a
 * missing object: a segment never written, or discarded) reads as zeroes,
 * as an unwritten device range does.  Fetches the whole segment into the
 * cache on the way when there is one. */
static int read_object(struct segio_obj *o, uint64_t seg, void *buf, size_t len, uint64_t off)
{
	char oid[OBJSTORE_NAME_MAX];
	ssize_t n;

	seg_oid(o, seg, oid);
	if (o->cache) {
		struct segbuf *w = buf_get(o, seg); /* a spare buffer, mostly */
		if (w) {
			/* The ticket keeps a fetch that raced a discard (and a
			 * new life of seg) out of the cache. */
			uint64_t ticket = segcache_ticket(o->cache);
			n = objstore_read(o->os, oid, w->data, FMT_SEG_BYTES, 0);
			if (n == -ENOENT)
				n = 0;
			if (n >= 0) {
				if (n > 0)
					segcache_fill(o->cache, ticket, seg, w->data, (size_t)n);
				memset(w->data + n, 0, FMT_SEG_BYTES - (size_t)n);
				memcpy(buf, w->data + off, len);
			}
			buf_release(o, w);
			return n < 0 ? (int)n : 0;
		}
	}
	n = objstore_read(o->os, oid, buf, len, off);
	if (n == -ENOENT)
		n = 0;
	if (n < 0)
		return (int)n;
	memset((char *)buf + n, 0, len - (size_t)n);
	return 0;
}

/* One segment's part of a read. */
static int read_seg(struct segio_obj *o, uint64_t seg, void *buf, size_t len, uint64_t off,
                    bool nowait)
{
	int err;

	if (read_mem(o, seg, buf, len, off))
		return 0;
	if (o->cache) {
		err = nowait ? segcache_read_nowait(o->cache, seg, buf, len, off)
		             : segcache_read(o->cache, seg, buf, len, off);
		if (err != -ENOENT)
			return err; /* 0, or -EAGAIN */
	}
	if (nowait)
		return -EAGAIN;
	err = read_object(o, seg, buf, len, off);
	if (err == -EBLOCKLISTED) {
		fence(o, "the object store refuses this client (blocklisted)");
		err = -EIO;
	}
	return err < 0 ? -EIO : 0;
}

static int obj_read_any(struct segio *io, void *buf, size_t len, uint64_t off, bool nowait)
{
	struct segio_obj *o = to_obj(io);

	while (len) {
		if (lapsed(o))
			return -EIO;
		uint64_t seg = off / FMT_SEG_BYTES, in = off % FMT_SEG_BYTES;
		size_t n = len < FMT_SEG_BYTES - in ? len : (size_t)(FMT_SEG_BYTES - in);
		int err = read_seg(o, seg, buf, n, in, nowait);
		if (err)
			return err;
		buf = (char *)buf + n;
		off += n;
		len -= n;
	}
	return 0;
}

static int obj_read(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return obj_read_any(io, buf, len, off, false);
}

static int obj_read_nowait(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return obj_read_any(io, buf, len, off, true);
}

/* ---- writes --------------------------------------------------------------- */

static void buf_free(struct segbuf *b)
{
	if (b) {
		free(b->data);
		free(b);
	}
}

/* A buffer for segment seg: a spare one, or a new one.  NULL on ENOMEM. */
static struct segbuf *buf_get(struct segio_obj *o, uint64_t seg)
{
	struct segbuf *b;

	pthread_mutex_lock(&o->lock);
	b = o->spare;
	if (b) {
		o->spare = b->next;
		o->nspare--;
	}
	pthread_mutex_unlock(&o->lock);
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (b && !(b->data = malloc(FMT_SEG_BYTES))) {
			free(b);
			b = NULL;
		}
	}
	if (b) {
		b->seg = seg;
		b->len = 0;
		b->next = NULL;
		b->pins = 0;
		b->forgotten = false;
	}
	return b;
}

/* b is no longer read: keep it as a spare, or free it (under o->lock;
 * returns what the caller frees after unlocking, or NULL). */
static struct segbuf *buf_put_locked(struct segio_obj *o, struct segbuf *b)
{
	if (o->nspare >= MAX_SPARE)
		return b;
	b->next = o->spare;
	o->spare = b;
	o->nspare++;
	return NULL;
}

/* A buffer of buf_get's that nothing else knows of goes back. */
static void buf_release(struct segio_obj *o, struct segbuf *b)
{
	pthread_mutex_lock(&o->lock);
	b = buf_put_locked(o, b);
	pthread_mutex_unlock(&o->lock);
	buf_free(b);
}

/* Put the open copy on the retired list, newest first (under o->lock);
 * returns a copy that fell off the end, for the caller to free after
 * unlocking, or NULL. */
static struct segbuf *retire_locked(struct segio_obj *o)
{
	struct segbuf *b = o->open, **pp;

	if (!b)
		return NULL;
	o->open = NULL;
	b->next = o->retired;
	o->retired = b;
	if (++o->nretired <= MAX_RETIRED)
		return NULL;
	for (pp = &o->retired; (*pp)->next; pp = &(*pp)->next)
		;
	b = *pp;
	*pp = NULL;
	o->nretired--;
	if (b->pins) {
		b->forgotten = true; /* the cacher puts it away */
		return NULL;
	}
	return buf_put_locked(o, b);
}

/* A failed flush or write: the object store may hold any part of what
 * was queued, so nothing appended can be trusted to be there. */
static int write_failed(struct segio_obj *o, int err)
{
	char why[160];

	if (err == -EBLOCKLISTED)
		fence(o, "the object store refuses this client (blocklisted: another host took "
		         "the pool over)");
	else {
		snprintf(why, sizeof(why), "a write to the object store failed (%s)",
		         strerror(-err));
		set_state(o, OBJ_FAILED, why);
	}
	return -EIO;
}

/* One at a time, the state checked once the previous one is over: an
 * object store may report a failed write to one flush only (objstore.h),
 * and a sync that overlapped the one that learnt of it must fail too. */
static int obj_sync(struct segio *io)
{
	struct segio_obj *o = to_obj(io);
	int err;

	pthread_mutex_lock(&o->flush_lock);
	err = check_owner(o);
	if (!err) {
		err = objstore_flush(o->os);
		if (err)
			err = write_failed(o, err);
	}
	pthread_mutex_unlock(&o->flush_lock);
	return err;
}

/* The log enters seg: a fresh in-memory copy, holding the part a
 * recovered segment already has (off > 0). */
static int obj_open(struct segio *io, uint64_t seg, uint64_t off)
{
	struct segio_obj *o = to_obj(io);
	struct segbuf *b, *old;
	int err = o->peek ? 0 : check_owner(o); /* a peek's log writes nothing */

	if (err)
		return err;
	b = buf_get(o, seg);
	if (!b)
		return -ENOMEM;
	if (off) {
		err = obj_read(io, b->data, off, seg * FMT_SEG_BYTES);
		if (err) {
			buf_free(b);
			return err;
		}
		b->len = off;
	}
	/* An old life of the segment, or (off > 0) the object as recovery
	 * fetched it, which may hold bytes past off that the appends are
	 * about to replace: the cacher copies the segment whole at its seal. */
	if (o->cache)
		segcache_drop(o->cache, seg);
	pthread_mutex_lock(&o->lock);
	old = retire_locked(o);
	o->open = b;
	pthread_mutex_unlock(&o->lock);
	buf_free(old);
	return 0;
}

/* ---- room in the object store --------------------------------------------- */

static void rcond_init(pthread_cond_t *c);

/* Ask the object store how much more its pool takes (an object of the
 * object quota counts as room for a segment).  A failed look keeps the
 * last figure; failures are said once, until a look works again. */
static void space_look(struct segio_obj *o)
{
	uint64_t bytes, objs;
	int err = objstore_space(o->os, &bytes, &objs);
	bool known, was_failing;

	pthread_mutex_lock(&o->smu);
	uint64_t now = atomic_load(&o->appended), recent = now - o->lag[o->lag_pos];
	o->lag[o->lag_pos] = now;
	o->lag_pos = (o->lag_pos + 1) % SPACE_LAG;
	if (!err) {
		if (objs < bytes / FMT_SEG_BYTES)
			bytes = objs * FMT_SEG_BYTES;
		bytes = bytes > recent ? bytes - recent : 0;
		o->space_base = bytes > INT64_MAX ? INT64_MAX : (int64_t)bytes;
		o->space_at = now;
		o->looks++;
	}
	known = o->space_base >= 0;
	was_failing = o->space_failing;
	o->space_failing = err && err != -ENOTSUP;
	pthread_mutex_unlock(&o->smu);
	if (err && err != -ENOTSUP && !was_failing)
		say_warn("pool %s: cannot learn how full the object store's pool is (%s); %s",
		         o->label, strerror(-err),
		         known ? "going by the last figure"
		               : "until it can, the pool does not turn full before the object "
		                 "store refuses its writes");
	else if (!err && was_failing)
		say_info("pool %s: learns how full the object store's pool is again", o->label);
}

/* Bytes the pool takes before it is full, as far as known: INT64_MAX
 * when the object store has no figure. */
static int64_t space_left(struct segio_obj *o)
{
	int64_t left;

	pthread_mutex_lock(&o->smu);
	left = o->space_base;
	if (left >= 0) {
		uint64_t since = atomic_load(&o->appended) - o->space_at;
		left = since < (uint64_t)left ? left - (int64_t)since : 0;
	}
	pthread_mutex_unlock(&o->smu);
	return left < 0 ? INT64_MAX : left;
}

static void *watcher(void *arg)
{
	struct segio_obj *o = arg;
	struct timespec ts;

	pthread_mutex_lock(&o->smu);
	while (!o->sstop) {
		clock_gettime(CLOCK_MONOTONIC, &ts); /* scond's clock */
		ts.tv_sec += SPACE_POLL_MS / 1000;
		ts.tv_nsec += (SPACE_POLL_MS % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&o->scond, &o->smu, &ts);
		if (o->sstop)
			break;
		pthread_mutex_unlock(&o->smu);
		space_look(o);
		pthread_mutex_lock(&o->smu);
	}
	pthread_mutex_unlock(&o->smu);
	return NULL;
}

/* Started at the first reservation (the log's open), after one look of
 * its own, so that a pool opened full is full at once.  A watcher that
 * cannot start leaves the first figure to age (said once). */
static void watcher_start(struct segio_obj *o)
{
	if (o->watcher_on || o->sstop)
		return;
	o->space_base = -1;
	pthread_mutex_init(&o->smu, NULL);
	rcond_init(&o->scond);
	space_look(o);
	o->watcher_on = pthread_create(&o->watcher, NULL, watcher, o) == 0;
	if (!o->watcher_on) {
		o->sstop = true; /* no second try; smu stays for space_left */
		say_error("pool %s: cannot start the thread that watches the object store's room",
		          o->label);
	}
}

static void watcher_stop(struct segio_obj *o)
{
	if (!o->watcher_on && !o->sstop)
		return; /* never started */
	if (o->watcher_on) {
		pthread_mutex_lock(&o->smu);
		o->sstop = true;
		pthread_cond_signal(&o->scond);
		pthread_mutex_unlock(&o->smu);
		pthread_join(o->watcher, NULL);
	}
	pthread_mutex_destroy(&o->smu);
	pthread_cond_destroy(&o->scond);
	o->watcher_on = o->sstop = false;
}

void segio_obj_space_refresh(struct segio *io)
{
	struct segio_obj *o = to_obj(io);

	if (o->watcher_on || o->sstop)
		space_look(o);
}

/* How much more than the reserve a full pool's room must be before it
 * turns not full: a quarter of the margin (64 MiB by default), and two
 * segments at least (the steps the figure moves by, for a small margin).
 * The figure is noisy near the reserve: it moves by segments (an object
 * written, a free one removed) and by this host's appends of the last
 * SPACE_LAG looks as Ceph's usage reports catch up with them, so without
 * a gap a pool whose room sits at the reserve turns full and not full
 * from one reservation to the next (a log line each, clients' writes
 * refused and taken in turn).  With it, writes that go on again get that
 * much before the pool can turn full again.  A fraction of the margin,
 * because the margin is what the figure's staleness is sized by; far
 * below what makes room in earnest (a volume deleted, a quota raised:
 * GiBs), so writes still go on without a restart once there is room. */
static uint64_t space_hysteresis(const struct segio_obj *o)
{
	uint64_t h = o->space_margin / 4;

	return h > 2 * FMT_SEG_BYTES ? h : 2 * FMT_SEG_BYTES;
}

/* Looks of the watcher that learnt a figure. */
static uint64_t space_looks(struct segio_obj *o)
{
	uint64_t n;

	pthread_mutex_lock(&o->smu);
	n = o->looks;
	pthread_mutex_unlock(&o->smu);
	return n;
}

/* A full pool whose room is over the reserve but short of the hysteresis
 * turns not full once the room has stayed over the reserve for SPACE_LAG
 * looks (about 10 s): room that merely hovers at the reserve dips under
 * it within that time, while a pool that can never reach the hysteresis
 * (a quota only a little above the reserve and the pool's own data; a
 * delete that freed less) is not left full for good. */
static bool space_settled(struct segio_obj *o, uint64_t left, uint64_t reserve)
{
	uint64_t looks;

	if (left < reserve) {
		o->band_since = 0;
		return false;
	}
	looks = space_looks(o);
	if (!o->band_since)
		o->band_since = looks + 1;
	return looks + 2 - o->band_since >= SPACE_LAG; /* the looks of the run, this one in */
}

/* The next segment is secured when the object store's pool can take it
 * and the margin beyond: else the pool is full (-ENOSPC), and the log
 * keeps what is left of its head for what makes room (segio.h).  A full
 * pool needs space_hysteresis more than that to turn not full, or to
 * stay over the reserve for SPACE_LAG looks (space_settled). */
static int obj_reserve(struct segio *io, uint64_t seg)
{
	struct segio_obj *o = to_obj(io);
	uint64_t reserve, resume;
	int64_t left;
	bool full;

	(void)seg;
	if (o->peek)
		return 0;
	watcher_start(o);
	left = space_left(o);
	reserve = o->space_margin + FMT_SEG_BYTES;
	resume = reserve + space_hysteresis(o);
	if (o->full)
		full = (uint64_t)left < resume && !space_settled(o, (uint64_t)left, reserve);
	else
		full = (uint64_t)left < reserve;
	if (!full || !o->full)
		o->band_since = 0;
	if (full && !o->full)
		say_error("pool %s: the object store's pool takes about %" PRId64
		          " MiB more (its quota or its OSDs' full ratio), less than the %" PRIu64
		          " MiB kept in reserve: refusing new writes until there is room (writes "
		          "go on once it takes %" PRIu64 " MiB more, or more than %" PRIu64
		          " MiB for %d s: delete volumes or snapshots, or give the pool more room)",
		          o->label, left >> 20, reserve >> 20, resume >> 20, reserve >> 20,
		          SPACE_LAG * SPACE_POLL_MS / 1000);
	else if (!full && o->full)
		say_info("pool %s: the object store's pool has room again (about %" PRId64
		         " MiB more): writes go on",
		         o->label, left >> 20);
	o->full = full;
	return full ? -ENOSPC : 0;
}

static int obj_append(struct segio *io, uint64_t seg, uint64_t off, const struct iovec *iov,
                      int iovcnt)
{
	struct segio_obj *o = to_obj(io);
	char oid[OBJSTORE_NAME_MAX];
	struct segbuf *b = o->open;
	size_t total = 0;
	int err = check_owner(o);

	if (err)
		return err;
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (!b || b->seg != seg || off < b->len || off + total > FMT_SEG_BYTES)
		return -EINVAL; /* not the log's contract (segio.h) */
	/* Only this thread writes the copy, and only beyond b->len, which
	 * readers do not read past: copy first, publish the length after. */
	char *p = b->data + off;
	for (int i = 0; i < iovcnt; i++) {
		memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	if (off > b->len)
		memset(b->data + b->len, 0, off - b->len);
	seg_oid(o, seg, oid);
	err = objstore_write(o->os, oid, b->data + off, total, off);
	if (err)
		return write_failed(o, err);
	pthread_mutex_lock(&o->lock);
	b->len = off + total;
	pthread_mutex_unlock(&o->lock);
	atomic_fetch_add_explicit(&o->appended, total, memory_order_relaxed);
	return 0;
}

/* ---- the cacher ----------------------------------------------------------- */

/* A job done: the copy's pin goes (under o->lock); returns a copy that
 * fell off the retired list meanwhile, for the caller to put away, or
 * NULL. */
static struct segbuf *unpin_locked(struct segio_obj *o, struct segbuf *b)
{
	if (--b->pins || !b->forgotten)
		return NULL;
	b->forgotten = false;
	return buf_put_locked(o, b);
}

/* Copies sealed segments into the cache, oldest first, until told to
 * stop (jobs left then are dropped by obj_close: the cache starts empty
 * at the next open anyway). */
static void *cacher(void *arg)
{
	struct segio_obj *o = arg;

	pthread_mutex_lock(&o->lock);
	for (;;) {
		while ((!o->cq || o->chold) && !o->cstop)
			pthread_cond_wait(&o->ccond, &o->lock);
		if (o->cstop)
			break;
		struct cachejob *j = o->cq;
		o->cq = j->next;
		if (!o->cq)
			o->cq_tail = &o->cq;
		o->ncq--;
		o->cbusy = true;
		pthread_mutex_unlock(&o->lock);
		segcache_fill(o->cache, j->ticket, j->b->seg, j->b->data, j->b->len);
		pthread_mutex_lock(&o->lock);
		o->cbusy = false;
		struct segbuf *put = unpin_locked(o, j->b);
		pthread_mutex_unlock(&o->lock);
		free(j);
		buf_free(put);
		pthread_mutex_lock(&o->lock);
	}
	pthread_mutex_unlock(&o->lock);
	return NULL;
}

/* The cacher runs (started at the first seal that has a use for it):
 * true, or false when it cannot be started (said once; the pool then
 * caches only what it fetches). */
static bool cacher_running(struct segio_obj *o)
{
	if (o->cacher_on || o->cstop)
		return o->cacher_on;
	o->cq_tail = &o->cq;
	pthread_cond_init(&o->ccond, NULL);
	o->cacher_on = pthread_create(&o->cacher, NULL, cacher, o) == 0;
	if (!o->cacher_on) {
		pthread_cond_destroy(&o->ccond);
		o->cstop = true;
		say_error("pool %s: cannot start the thread that fills its cache; sealed "
		          "segments are not cached",
		          o->label);
	}
	return o->cacher_on;
}

/* Stop the cacher and drop the jobs it did not do (before the buffers
 * and the cache are freed). */
static void cacher_stop(struct segio_obj *o)
{
	if (!o->cacher_on)
		return;
	pthread_mutex_lock(&o->lock);
	o->cstop = true;
	pthread_cond_signal(&o->ccond);
	pthread_mutex_unlock(&o->lock);
	pthread_join(o->cacher, NULL);
	pthread_cond_destroy(&o->ccond);
	o->cacher_on = false;
	while (o->cq) {
		struct cachejob *j = o->cq;
		o->cq = j->next;
		buf_free(unpin_locked(o, j->b)); /* alone now: no lock needed */
		free(j);
	}
	o->ncq = 0;
	o->cq_tail = &o->cq;
}

unsigned segio_obj_cache_backlog(struct segio *io)
{
	struct segio_obj *o = to_obj(io);
	unsigned n;

	pthread_mutex_lock(&o->lock);
	n = o->ncq + o->cbusy;
	pthread_mutex_unlock(&o->lock);
	return n;
}

void segio_obj_cache_hold(struct segio *io, bool hold)
{
	struct segio_obj *o = to_obj(io);

	pthread_mutex_lock(&o->lock);
	o->chold = hold;
	if (o->cacher_on)
		pthread_cond_signal(&o->ccond);
	pthread_mutex_unlock(&o->lock);
}

/* The sealed copy stays for reads, among the last MAX_RETIRED, and goes
 * to the cacher; nothing waits (the object store has its own copy of
 * every queued write, and the cacher its pin on the copy). */
static void obj_seal(struct segio *io, uint64_t seg)
{
	struct segio_obj *o = to_obj(io);
	struct segbuf *old = NULL, *b;
	struct cachejob *j = NULL;

	if (o->cache && cacher_running(o) && (j = malloc(sizeof(*j))))
		j->ticket = segcache_ticket(o->cache);
	pthread_mutex_lock(&o->lock);
	b = o->open;
	if (b && b->seg == seg) {
		if (j && b->len && o->ncq < CACHE_BACKLOG) {
			b->pins++;
			j->b = b;
			j->next = NULL;
			*o->cq_tail = j;
			o->cq_tail = &j->next;
			o->ncq++;
			pthread_cond_signal(&o->ccond);
			j = NULL;
		}
		old = retire_locked(o);
	}
	pthread_mutex_unlock(&o->lock);
	free(j);
	buf_free(old);
}

static int obj_discard(struct segio *io, uint64_t seg)
{
	struct segio_obj *o = to_obj(io);
	char oid[OBJSTORE_NAME_MAX];
	int err = check_owner(o);

	if (err)
		return err;
	if (o->cache)
		segcache_drop(o->cache, seg);
	seg_oid(o, seg, oid);
	err = objstore_remove(o->os, oid);
	if (err == -ENOENT)
		err = 0;
	return err ? write_failed(o, err) : 0;
}

static int obj_sb_read(struct segio *io, unsigned slot, void *buf)
{
	struct segio_obj *o = to_obj(io);
	char oid[OBJSTORE_NAME_MAX];
	ssize_t n;

	if (fenced(o))
		return -EIO;
	sb_oid(o, slot, oid);
	n = objstore_read(o->os, oid, buf, FMT_BLOCK, 0);
	if (n == -ENOENT)
		n = 0;
	if (n < 0)
		return (int)n;
	memset((char *)buf + n, 0, FMT_BLOCK - (size_t)n);
	return 0;
}

/* The superblock says which checkpoint holds the pool: everything queued
 * before must be durable first (the store syncs before it writes one; a
 * flush here keeps that true whatever the caller did).  The lease is
 * checked again after the flush, which may have outlasted it. */
static int obj_sb_write(struct segio *io, unsigned slot, const void *buf)
{
	struct segio_obj *o = to_obj(io);
	char oid[OBJSTORE_NAME_MAX];
	int err = obj_sync(io);

	if (!err)
		err = check_owner(o);
	if (err)
		return err;
	sb_oid(o, slot, oid);
	/* Slot 0 shares its object with the lock: written only while the
	 * lock is ours.  Slot 1 cannot be (a lock guards its own object's
	 * writes); the blocklist does: a new owner fences the old one before
	 * it reads either slot, so a late write lands before that read or
	 * not at all. */
	if (slot == 0)
		err = objstore_write_full_locked(o->os, oid, o->cookie, buf, FMT_BLOCK);
	else
		err = objstore_write_full(o->os, oid, buf, FMT_BLOCK);
	if (err == -ENOLCK) {
		fence(o, "its lock on the pool is gone (another host took it over): superblock "
		         "not written");
		return -EIO;
	}
	return err ? write_failed(o, err) : 0;
}

/* ---- ownership ------------------------------------------------------------ */

/* The renewer's condition times its waits on CLOCK_MONOTONIC: on the wall
 * clock, a step back (NTP correcting a clock that ran ahead) would hold
 * the renewals back by as much, and a healthy host would lose its lease. */
static void rcond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

/* Extend the lease (taking the lock again if it ran out and nobody took
 * it since): 0 with o->renewed at this call's start, or the lock's error
 * (-EBUSY: another holds it). */
static int renew(struct segio_obj *o)
{
	char oid[OBJSTORE_NAME_MAX];
	int64_t start = now_ms();
	int err;

	sb_oid(o, 0, oid);
	err = objstore_lock(o->os, oid, o->cookie, o->lease, true);
	if (!err)
		atomic_store(&o->renewed, start);
	return err;
}

/* Renew every third of the lease, counted from the start of the last good
 * renewal (a renewal that takes long does not push the next one back: the
 * lease runs from when it was asked for), or a third later after one that
 * failed; fence when the lock is gone or a renewal came too late. */
static void *renewer(void *arg)
{
	struct segio_obj *o = arg;
	char oid[OBJSTORE_NAME_MAX], why[200];
	int64_t period = (int64_t)o->lease * 1000 / 3, wait = period;

	sb_oid(o, 0, oid);
	pthread_mutex_lock(&o->rlock);
	while (!o->stopping && !fenced(o)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts); /* rcond's clock: see segio_obj_new */
		ts.tv_sec += wait / 1000;
		ts.tv_nsec += (wait % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&o->rcond, &o->rlock, &ts);
		if (o->stopping)
			break;
		pthread_mutex_unlock(&o->rlock);
		wait = period;
		if (!lapsed(o)) {
			int err = renew(o);
			if (!err) {
				wait = atomic_load(&o->renewed) + period - now_ms();
				wait = wait < 0 ? 0 : wait;
			} else if (err == -EBUSY || err == -EBLOCKLISTED) {
				snprintf(why, sizeof(why),
				         "lost its lock on %s (%s): another host took "
				         "the pool over",
				         oid, err == -EBUSY ? "held by another" : "blocklisted");
				fence(o, why);
			} else if (err) {
				say_warn("pool %s: cannot renew the lock's lease: %s (retrying)",
				         o->label, strerror(-err));
			}
		}
		pthread_mutex_lock(&o->rlock);
	}
	pthread_mutex_unlock(&o->rlock);
	return NULL;
}

/* Take the lock on NAME.sb.0, waiting up to wait_s seconds for a holder's
 * lease to run out.  0, or -EBUSY after one line naming the holder. */
static int take_lock(struct segio_obj *o, unsigned wait_s, const char **why)
{
	char oid[OBJSTORE_NAME_MAX];
	struct objstore_locker l;
	int64_t until = now_ms() + (int64_t)wait_s * 1000;
	bool said = false;
	int err;

	memset(&l, 0, sizeof(l));
	sb_oid(o, 0, oid);
	for (;;) {
		int64_t start = now_ms();
		err = objstore_lock(o->os, oid, o->cookie, o->lease, false);
		if (!err) {
			atomic_store(&o->renewed, start);
			return 0;
		}
		if (err != -EBUSY) {
			*why = "cannot take the pool's lock";
			return err;
		}
		if (objstore_locker(o->os, oid, &l) == 0 && !said) {
			say_info("pool %s is held by %s at %s; waiting up to %u s for its lease to "
			         "run out",
			         o->label, l.client, l.addr, wait_s);
			said = true;
		}
		if (now_ms() >= until)
			break;
		sleep(1);
	}
	say_error("pool %s is held by %s at %s (cookie %s), which keeps renewing its lease: "
	          "stop it first (or wait for it to fail)",
	          o->label, l.client[0] ? l.client : "another client", l.addr[0] ? l.addr : "?",
	          l.cookie[0] ? l.cookie : "?");
	*why = "the pool is held by another cowbd";
	return -EBUSY;
}

/* The owner record's attribute on NAME.sb.0. */
#define OWNER_XATTR "cowbd.owner"

/* What NAME.owner holds once this build served the pool: not an address,
 * so that the previous build, which would take it for one, fails to
 * blocklist it and refuses to open the pool (it would not see who to
 * fence) with this text in its message. */
#define OWNER_MOVED "owner-record-moved-to-xattr-cowbd.owner-of-sb.0:use-a-newer-cowbd"

/* The address the owner record names into prev ("" when none): the
 * attribute of NAME.sb.0, or, in a pool only the previous build served
 * (no attribute), its NAME.owner object.  0 or the read's error. */
static int owner_read(struct segio_obj *o, char *prev)
{
	char oid[OBJSTORE_NAME_MAX];
	ssize_t n;

	sb_oid(o, 0, oid);
	n = objstore_getxattr(o->os, oid, OWNER_XATTR, prev, OBJSTORE_NAME_MAX - 1);
	if (n == -ENODATA || n == -ENOENT) {
		legacy_owner_oid(o, oid);
		n = objstore_read(o->os, oid, prev, OBJSTORE_NAME_MAX - 1, 0);
		n = n == -ENOENT ? 0 : n;
	}
	if (n < 0)
		return (int)n;
	prev[n] = 0;
	if (!strcmp(prev, OWNER_MOVED))
		prev[0] = 0;
	return 0;
}

/* Name addr in the owner record, only while the lock is ours: 0, -ENOLCK
 * (it is not: nothing written), or the write's error. */
static int owner_write(struct segio_obj *o, const char *addr)
{
	char oid[OBJSTORE_NAME_MAX];

	sb_oid(o, 0, oid);
	return objstore_setxattr_locked(o->os, oid, o->cookie, OWNER_XATTR, addr, strlen(addr));
}

/* Fence whoever the owner record says served the pool and did not close
 * it. */
static int fence_previous(struct segio_obj *o, const char **why)
{
	char prev[OBJSTORE_NAME_MAX];
	int err = owner_read(o, prev);

	if (err) {
		*why = "cannot read the pool's owner record";
		return err;
	}
	if (!prev[0] || !strcmp(prev, objstore_addr(o->os)))
		return 0;
	err = objstore_blocklist(o->os, prev);
	if (err) {
		say_error("pool %s: cannot fence its previous owner %s: %s", o->label, prev,
		          strerror(-err));
		*why = "cannot fence the previous owner (blocklist)";
		return err;
	}
	say_warn("pool %s: took over from %s, which did not close it (now blocklisted)", o->label,
	         prev);
	return 0;
}

/* Rounds of fencing that may each outlast the lease (a monitor command,
 * then the latest OSD map, on a cluster in trouble) before open gives up. */
#define TAKE_OVER_TRIES 3

/* With the lock held: fence the previous owner, then name ourselves.
 * Fencing can outlast the lease, and whoever took the pool meanwhile must
 * be fenced too: the lease is renewed before the record is written, and
 * when it had run out by then, the record is read again.  The record is
 * written only if the lock is still ours when it lands (a process stalled
 * after its renewal names nobody); then NAME.owner gets OWNER_MOVED (a
 * constant: a late copy of it is harmless). */
static int take_over(struct segio_obj *o, const char **why)
{
	char oid[OBJSTORE_NAME_MAX];
	int err;

	for (unsigned try = 0;; try++) {
		int64_t held_since = atomic_load(&o->renewed);
		err = fence_previous(o, why);
		if (err || !o->lease)
			break;
		err = renew(o);
		if (err == -EBUSY) {
			say_error(
			    "pool %s: another host took it while its previous owner was being "
			    "fenced",
			    o->label);
			*why = "the pool was taken by another host";
			return err;
		}
		if (err) {
			*why = "cannot renew the pool's lock";
			return err;
		}
		if (atomic_load(&o->renewed) - held_since < (int64_t)o->lease * 1000)
			break; /* held throughout: nobody else could own it meanwhile */
		if (try + 1 == TAKE_OVER_TRIES) {
			*why = "fencing the previous owner takes longer than the lease";
			return -ETIMEDOUT;
		}
	}
	if (err)
		return err;
	err = owner_write(o, objstore_addr(o->os));
	if (err == -ENOLCK) {
		say_error("pool %s: another host took it before this one could name itself its "
		          "owner",
		          o->label);
		*why = "the pool was taken by another host";
		return -EBUSY;
	}
	legacy_owner_oid(o, oid);
	if (!err)
		err = objstore_write_full(o->os, oid, OWNER_MOVED, strlen(OWNER_MOVED));
	if (err)
		*why = "cannot write the pool's owner record";
	return err;
}

/* Release what open took: the owner record is cleared (a clean close:
 * nobody needs fencing) and the lock given back.  Not by a backend whose
 * lease lapsed (a process stopped past it): another host may have taken
 * the pool since, and the record must go on naming this one for the next
 * owner to fence it. */
static void give_back(struct segio_obj *o)
{
	char oid[OBJSTORE_NAME_MAX];

	if (o->peek || lapsed(o))
		return;
	if (owner_write(o, ""))
		return; /* the next owner fences us: harmless after a close */
	sb_oid(o, 0, oid);
	(void)objstore_unlock(o->os, oid, o->cookie);
}

static void obj_close(struct segio *io)
{
	struct segio_obj *o = to_obj(io);

	/* The watcher may be in a look that lasts up to the cluster's
	 * timeout, the cacher in a fill: the lease is renewed until they are
	 * done, and the renewer stops before the lock is given back. */
	cacher_stop(o);
	watcher_stop(o);
	if (o->renewer_on) {
		pthread_mutex_lock(&o->rlock);
		o->stopping = true;
		pthread_cond_signal(&o->rcond);
		pthread_mutex_unlock(&o->rlock);
		pthread_join(o->renewer, NULL);
	}
	if (!fenced(o) && objstore_flush(o->os) == 0)
		give_back(o);
	objstore_close(o->os);
	if (o->cache)
		segcache_close(o->cache);
	buf_free(o->open);
	while (o->retired) {
		struct segbuf *b = o->retired;
		o->retired = b->next;
		buf_free(b);
	}
	while (o->spare) {
		struct segbuf *b = o->spare;
		o->spare = b->next;
		buf_free(b);
	}
	pthread_mutex_destroy(&o->flush_lock);
	pthread_mutex_destroy(&o->lock);
	pthread_mutex_destroy(&o->rlock);
	pthread_cond_destroy(&o->rcond);
	free(o);
}

static const struct segio_ops obj_ops = {
    .read = obj_read,
    .read_nowait = obj_read_nowait,
    .open = obj_open,
    .reserve = obj_reserve,
    .append = obj_append,
    .seal = obj_seal,
    .sync = obj_sync,
    .discard = obj_discard,
    .sb_read = obj_sb_read,
    .sb_write = obj_sb_write,
    .close = obj_close,
};

struct segio *segio_obj_new(struct objstore *os, struct segcache *cache,
                            const struct segio_obj_opts *opt, const char **why)
{
	struct segio_obj *o = calloc(1, sizeof(*o));
	uint8_t rnd[8];
	int err;

	if (!o) {
		*why = "out of memory";
		errno = ENOMEM;
		return NULL;
	}
	if (strlen(opt->name) >= sizeof(o->name) || !opt->name[0]) {
		free(o);
		*why = "pool name empty or too long";
		errno = EINVAL;
		return NULL;
	}
	o->io.ops = &obj_ops;
	o->io.nsegs = 0; /* as many as the superblock says */
	o->os = os;
	o->lease = opt->lease_s;
	o->space_margin = opt->space_margin ? opt->space_margin : SEGIO_OBJ_SPACE_MARGIN;
	snprintf(o->name, sizeof(o->name), "%s", opt->name);
	snprintf(o->label, sizeof(o->label), "%s", opt->label ? opt->label : opt->name);
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	snprintf(o->cookie, sizeof(o->cookie), "cowbd-%d-%02x%02x%02x%02x%02x%02x%02x%02x",
	         (int)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	pthread_mutex_init(&o->flush_lock, NULL);
	pthread_mutex_init(&o->lock, NULL);
	pthread_mutex_init(&o->rlock, NULL);
	rcond_init(&o->rcond);
	atomic_store(&o->renewed, now_ms());
	if (opt->peek) {
		o->peek = true;
		o->lease = 0;
		o->cache = cache;
		return &o->io;
	}
	err = take_lock(o, opt->wait_s, why);
	if (!err)
		err = take_over(o, why);
	if (!err && o->lease) {
		err = -pthread_create(&o->renewer, NULL, renewer, o);
		o->renewer_on = !err;
		if (err)
			*why = "cannot start the lease renewer";
	}
	if (err) {
		char oid[OBJSTORE_NAME_MAX];
		sb_oid(o, 0, oid);
		if (err != -EBUSY)
			(void)objstore_unlock(o->os, oid, o->cookie);
		o->os = NULL; /* the caller keeps os and cache on failure */
		pthread_mutex_destroy(&o->flush_lock);
		pthread_mutex_destroy(&o->lock);
		pthread_mutex_destroy(&o->rlock);
		pthread_cond_destroy(&o->rcond);
		free(o);
		errno = -err;
		return NULL;
	}
	o->cache = cache;
	return &o->io;
}
