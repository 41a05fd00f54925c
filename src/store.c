/* store.c — the store's public entry points: format, probe, open (the
 * order: superblock, checkpoint, replay, fresh checkpoint, threads) and
 * close, request submission (reads to the readers, everything else to the
 * log thread) and the synchronous helpers.
 *
 * The store is split by concern (store_int.h lists the files and who may
 * call whom; docs/ARCHITECTURE.md draws it).  Threads: store_open starts
 * one log thread (writer.c) and a few reader threads (reader.c).
 * Layer: the top of the storage stack (conn and control call it). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "say.h"
#include "store_int.h"

#define DEFAULT_READERS     4
#define DEFAULT_CKPT_BYTES  (256ull << 20)
#define DEFAULT_CKPT_SECS   30
#define DEFAULT_COUNT_PAGES 16384 /* resident count pages after a checkpoint: 64 MiB */
/* Forwarding tables kept in memory after a checkpoint (docs/METADATA.md,
 * step 4): 8 bytes per forwarded block, so 8 Mi blocks' worth. */
#define DEFAULT_FWD_BYTES (64ull << 20)

/* The largest pool whose checkpoint record still holds STORE_MIN_VOLS
 * volumes beside its segment bitmap (17 TiB). */
uint64_t store_max_pool_bytes(void)
{
	return ckpt_max_segs(STORE_MIN_VOLS) * FMT_SEG_BYTES;
}

/* A store over io for a pool of nsegs segments; no log yet.  NULL on
 * ENOMEM. */
static struct store *store_alloc(struct segio *io, uint64_t nsegs, const struct store_opts *o)
{
	struct store *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->io = io;
	st->nsegs = nsegs;
	st->a = alloc_new(nsegs);
	st->sp.compact = compact_new();
	if (!st->a || !st->sp.compact) {
		alloc_free(st->a);
		compact_free(st->sp.compact);
		free(st);
		return NULL;
	}
	st->vt.next_id = 1;
	st->sp.reserve_segs = space_reserve_segs(nsegs);
	st->sp.futile_live = st->sp.futile_free = UINT64_MAX;
	st->ck.interval_bytes = o && o->checkpoint_bytes ? o->checkpoint_bytes : DEFAULT_CKPT_BYTES;
	st->ck.interval_secs = o && o->checkpoint_secs ? o->checkpoint_secs : DEFAULT_CKPT_SECS;
	st->ck.pages_max = o && o->count_pages ? o->count_pages : DEFAULT_COUNT_PAGES;
	st->ck.fwd_max = o && o->fwd_bytes ? o->fwd_bytes : DEFAULT_FWD_BYTES;
	st->read_only = o && o->read_only;
	st->cache_bytes = o ? o->cache_bytes : 0;
	st->ck.last = time(NULL);
	pthread_mutex_init(&st->vt.lock, NULL);
	scrub_init(st);
	core_queue_init(&st->wr.q);
	core_queue_init(&st->wr.sq);
	pthread_mutex_init(&st->wr.own, NULL);
	core_queue_init(&st->rd.q);
	return st;
}

/* Free everything but the backend (threads are stopped). */
static void store_dealloc(struct store *st)
{
	vtab_free_all(st);
	urcu_memb_barrier(); /* nodes freed through call_rcu */
	tree_cache_free(st->nc);
	ckpt_free(st);
	log_free(st->log);
	alloc_free(st->a);
	compact_free(st->sp.compact);
	core_scratch_free(st);
	free(st->wr.ap);
	free(st->rd.threads);
	pthread_mutex_destroy(&st->vt.lock);
	scrub_free(st);
	core_queue_destroy(&st->wr.q);
	core_queue_destroy(&st->wr.sq);
	pthread_mutex_destroy(&st->wr.own);
	core_queue_destroy(&st->rd.q);
	free(st);
}

int store_probe_io(struct segio *io)
{
	return super_probe(io);
}

int store_probe(struct blkdev *dev)
{
	if (dev->size < 2 * FMT_BLOCK)
		return 0;
	struct segio *io = segio_dev_new(dev, false);
	if (!io)
		return -ENOMEM;
	int r = store_probe_io(io);
	segio_close(io);
	return r;
}

int store_format_io(struct segio *io, uint64_t nsegs)
{
	struct store *st;
	int err = -ENOMEM;

	if (nsegs < FMT_MIN_SEGS)
		return -EINVAL; /* too small */
	if (nsegs > ckpt_max_segs(STORE_MIN_VOLS)) {
		/* The checkpoint record (one batch) holds the segment bitmap
		 * and the volume table: refuse up front what it cannot hold. */
		say_error("a pool of %llu bytes is too large: at most %llu bytes are supported",
		          (unsigned long long)(nsegs * FMT_SEG_BYTES),
		          (unsigned long long)store_max_pool_bytes());
		return -EFBIG;
	}
	st = store_alloc(io, nsegs, NULL);
	if (!st)
		return -ENOMEM;
	super_init(&st->sb, nsegs);
	uint64_t head = alloc_take_seg(st->a);
	uint64_t next = alloc_take_seg(st->a);
	st->log = log_new(io, st->a, head, 0, next, 1, 0);
	if (!st->log) {
		err = -errno;
		goto out;
	}
	/* Both slots: the checkpoint writes generation 1 into slot 1, then
	 * generation 2 goes to slot 0, so a pool never has an empty slot. */
	err = ckpt_write(st);
	if (!err)
		err = super_write(st);
out:
	store_dealloc(st);
	return err;
}

int store_format(struct blkdev *dev)
{
	struct segio *io = segio_dev_new(dev, false);
	if (!io)
		return -ENOMEM;
	int err = store_format_io(io, dev->size / FMT_SEG_BYTES);
	segio_close(io);
	return err;
}

/* Load the checkpoint and replay the log after it. */
static int store_recover(struct store *st, const char **why)
{
	struct fmt_summary *ck = malloc(sizeof(*ck));
	int err = -ENOMEM;

	if (ck)
		err = ckpt_load(st, ck, why);
	if (!err)
		err = recover_replay(st, ck, why);
	free(ck);
	return err;
}

/* Start from a fresh checkpoint (the log replayed is then no longer
 * needed, and dead segments become free), then the threads. */
static int store_start(struct store *st, const struct store_opts *opts, const char **why)
{
	int err;

	unsigned readers = opts && opts->readers ? opts->readers : DEFAULT_READERS;

	if (st->read_only) /* reads still need a reader thread */
		return reader_start(st, 1);
	if (st->sb.version < FMT_VERSION && st->vt.n >= ckpt_max_vols(st->nsegs)) {
		/* An older pool is upgraded by its first checkpoint, whose
		 * record lists the current version's segment tables (twice as
		 * many from version 5): too large a pool cannot be upgraded,
		 * but its data can still be read. */
		say_warn(
		    "pool opened READ-ONLY: format version %u cannot hold a pool of %llu bytes "
		    "with %llu volumes and snapshots (at most %llu bytes with %u), so this "
		    "version %u pool cannot be upgraded; write to it with the cowbd that made it",
		    FMT_VERSION, (unsigned long long)(st->nsegs * FMT_SEG_BYTES),
		    (unsigned long long)st->vt.n, (unsigned long long)store_max_pool_bytes(),
		    STORE_MIN_VOLS, st->sb.version);
		st->read_only = true;
		st->stats.read_only_fallback = true;
		return reader_start(st, readers);
	}
	err = ckpt_write(st);
	if (err) {
		/* A pool that cannot be written (full, or its device refuses
		 * writes) still opens, so that its data can be read out: the
		 * recovered state is in memory; nothing is written. */
		say_warn("pool opened READ-ONLY: cannot write a checkpoint after recovery (%s); "
		         "free space or fix the device, then restart",
		         strerror(-err));
		st->read_only = true;
		st->stats.read_only_fallback = true;
		return reader_start(st, readers);
	}
	err = writer_start(st);
	if (err) {
		*why = "cannot start the log thread";
		return err;
	}
	err = reader_start(st, readers);
	if (err)
		*why = "cannot start the reader threads";
	return err;
}

/* Stop every thread this store started. */
static void store_stop(struct store *st)
{
	scrub_shutdown(st); /* a pass reads through the readers' checksum cache */
	writer_stop(st);
	reader_stop(st);
}

struct store *store_open_io(struct segio *io, const struct store_opts *opts, const char **why)
{
	static const char *dummy;
	struct store *st;
	int err = -ENOMEM;

	if (!why)
		why = &dummy;
	*why = "out of memory";
	/* A backend without a size of its own (nsegs 0: an object store)
	 * holds the pool its superblock describes. */
	st = store_alloc(io, io->nsegs ? io->nsegs : FMT_MIN_SEGS, opts);
	if (!st)
		goto fail;
	err = super_read(st, why);
	if (err)
		goto fail;
	if (st->sb.nsegs != st->nsegs) {
		/* The device grew: use only what the pool was made with. */
		alloc_free(st->a);
		st->nsegs = st->sb.nsegs;
		st->a = alloc_new(st->nsegs);
		if (!st->a) {
			err = -ENOMEM;
			goto fail;
		}
		st->sp.reserve_segs = space_reserve_segs(st->nsegs);
	}
	err = store_recover(st, why);
	if (!err)
		err = store_start(st, opts, why);
	if (err)
		goto fail;
	return st;

fail:
	if (st) {
		store_stop(st);
		store_dealloc(st);
	}
	errno = -err;
	return NULL;
}

struct store *store_open(struct blkdev *dev, const struct store_opts *opts, const char **why)
{
	struct segio *io;
	struct store *st;

	if (dev->size < FMT_MIN_SEGS * FMT_SEG_BYTES) {
		if (why)
			*why = "device too small to hold a cowbd pool";
		errno = EILSEQ;
		return NULL;
	}
	io = segio_dev_new(dev, false);
	if (!io) {
		if (why)
			*why = "out of memory";
		errno = ENOMEM;
		return NULL;
	}
	st = store_open_io(io, opts, why);
	if (!st) {
		int e = errno;
		segio_close(io); /* the caller still owns dev on failure */
		errno = e;
		return NULL;
	}
	st->dev = dev; /* the store owns dev from here on */
	return st;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	store_stop(st);
	struct segio *io = st->io;
	struct blkdev *dev = st->dev;
	store_dealloc(st);
	segio_close(io);
	blkdev_close(dev);
}

/* ---- submission ---------------------------------------------------------- */

/* The checks every request takes and where it goes: the queue it waits
 * in, or NULL when it was completed here (bad range, a snapshot, ...). */
static struct req_queue *submit_route(struct store_req *r)
{
	struct store *st = r->vol->st;
	struct volume *v = r->vol->rec;

	r->err = 0;
	r->next = NULL;
	r->job = NULL;
	if (iostats_timed((enum store_io_cmd)r->op))
		r->t_submit = iostats_now();
	if (r->op != STORE_FLUSH) {
		if (r->len > STORE_MAX_REQ || r->off > v->size || r->len > v->size - r->off) {
			core_complete(r, r->op == STORE_WRITE ? -ENOSPC : -EINVAL);
			return NULL;
		}
		if (r->op != STORE_READ && r->op != STORE_CACHE && v->snapshot) {
			core_complete(r, -EPERM);
			return NULL;
		}
		if (r->len == 0) {
			core_complete(r, 0);
			return NULL;
		}
	}
	switch (r->op) {
	case STORE_CACHE:
		core_complete(r, 0);
		return NULL;
	case STORE_READ:
		return &st->rd.q;
	case STORE_WRITE:
	case STORE_TRIM:
	case STORE_ZERO:
	case STORE_FLUSH:
		if (st->read_only) {
			core_complete(r, -EROFS);
			return NULL;
		}
		return &st->wr.q;
	}
	core_complete(r, -EINVAL);
	return NULL;
}

void store_submit(struct store_req *r)
{
	struct req_queue *q = submit_route(r);

	if (q)
		core_queue_push(q, r);
}

void store_submit_plugged(struct store_plug *p, struct store_req *r)
{
	struct store *st = r->vol->st;
	struct req_queue *q = submit_route(r);

	if (!q)
		return;
	if (q != &st->wr.q) {
		core_queue_push(q, r); /* readers: one wake each, they run in parallel */
		return;
	}
	if (p->st != st)
		store_unplug(p);
	p->st = st;
	if (p->tail)
		p->tail->next = r;
	else
		p->head = r;
	p->tail = r;
	if (r->op == STORE_WRITE)
		p->bytes += r->len;
	if (p->bytes >= STORE_PLUG_BYTES)
		store_unplug(p);
}

void store_unplug(struct store_plug *p)
{
	if (!p->head)
		return;
	if (!writer_inline(p->st, p->head))
		core_queue_push_list(&p->st->wr.q, p->head, p->tail);
	p->head = p->tail = NULL;
	p->bytes = 0;
}

/* ---- synchronous helpers -------------------------------------------------- */

static int sync_req(struct vol *v, enum store_op op, void *buf, uint64_t off, uint32_t len,
                    uint32_t flags)
{
	struct store_req r = {
	    .op = op, .flags = flags, .off = off, .len = len, .buf = buf, .vol = v};
	return core_submit_wait(&r, store_submit);
}

int store_read(struct vol *v, void *buf, uint64_t off, uint32_t len)
{
	return sync_req(v, STORE_READ, buf, off, len, 0);
}

int store_write(struct vol *v, const void *buf, uint64_t off, uint32_t len, uint32_t flags)
{
	return sync_req(v, STORE_WRITE, (void *)buf, off, len, flags);
}

int store_trim(struct vol *v, uint64_t off, uint32_t len, uint32_t flags)
{
	return sync_req(v, STORE_TRIM, NULL, off, len, flags);
}

int store_zero(struct vol *v, uint64_t off, uint32_t len, uint32_t flags)
{
	return sync_req(v, STORE_ZERO, NULL, off, len, flags);
}

int store_flush(struct vol *v)
{
	return sync_req(v, STORE_FLUSH, NULL, 0, 0, 0);
}
