/* reader.c — the read side: reader threads that serve READ, the lock-free
 * attempt on the caller's thread (store_read_try), the allocation map for
 * BLOCK_STATUS (store_map), and RCU registration of the threads that use
 * them; a BLOCK_STATUS the event loop could not answer without reading a
 * tree node runs on a reader thread too (a job: store_bs_submit); and
 * walks for callers that hold vt.lock, which must not read there
 * (reader_walk_locked).
 *
 * Readers walk the trees under rcu_read_lock with no other lock, and
 * coalesce physically contiguous blocks into one read.  A READ of whole
 * blocks already in the page cache, in a few contiguous runs, may skip
 * the read: the event loop verifies and sends it from a read-only mapping
 * of the pool, a piece per run, inside its own read-side section
 * (store_read_view).  A physical block
 * is reused only after a checkpoint and an RCU grace period, so a read of
 * a block looked up here never returns another volume's data.
 *
 * Every data block is verified before its bytes are returned (DESIGN.md
 * invariant 8): the whole 4 KiB block, even for a read of part of it,
 * against the CRC32C its segment's summaries hold (bcrc.h, a lock-free
 * cache of per-segment tables).  A mismatch answers the request -EIO,
 * never the bytes; the block is logged once (volume, offset, pool block),
 * counted in the stats and remembered for scrub.
 *
 * Layer: under store; over vtab (records), tree, bcrc and segio.  Locks:
 * rd.q.lock guards the reader queue; rd.bad_lock the bad-block list (only
 * when a block fails).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "bcrc.h"
#include "crc32c.h"
#include "say.h"
#include "store_int.h"

/* Segment tables the read cache keeps at most (each about 5 KiB): pools
 * up to 16 GiB keep every segment's. */
#define BCRC_SLOTS 4096u
/* Bad blocks remembered (logged once each, reported by scrub). */
#define BAD_MAX 1024u

/* A data block found failing its checksum.  phys + stamp name the block in
 * one life of its segment (a block reused later is another block). */
struct reader_bad {
	uint64_t phys, stamp;
	uint64_t vol_id, lba;
};

/* Threads that are not RCU readers yet become one for the duration of a
 * call (control threads come and go; a registered thread must not exit). */
static __thread bool rcu_registered;

/* Block phys of (v, lba) failed its checksum: count it, and log it the
 * first time. */
static void note_bad(struct store *st, struct volume *v, uint64_t lba, uint64_t phys,
                     uint64_t stamp)
{
	bool known = false;

	__atomic_fetch_add(&st->stats.bad_reads, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&st->rd.bad_lock);
	for (unsigned i = 0; i < st->rd.nbad && !known; i++)
		known = st->rd.bad[i].phys == phys && st->rd.bad[i].stamp == stamp;
	if (!known && !st->rd.bad)
		st->rd.bad = calloc(BAD_MAX, sizeof(*st->rd.bad));
	if (!known && st->rd.bad && st->rd.nbad < BAD_MAX)
		st->rd.bad[st->rd.nbad++] =
		    (struct reader_bad){.phys = phys, .stamp = stamp, .vol_id = v->id, .lba = lba};
	pthread_mutex_unlock(&st->rd.bad_lock);
	if (known)
		return;
	__atomic_fetch_add(&st->stats.bad_blocks, 1, __ATOMIC_RELAXED);
	char name[NAMES_FULL_MAX + 1];
	pthread_mutex_lock(&st->vt.lock);
	vtab_full_name(st, v, name, sizeof(name));
	pthread_mutex_unlock(&st->vt.lock);
	say_error("read: volume %s (id %llu) block %llu (offset %llu) at pool block %llu fails "
	          "its checksum: reads of it get EIO",
	          name, (unsigned long long)v->id, (unsigned long long)lba,
	          (unsigned long long)lba * FMT_BLOCK, (unsigned long long)phys);
}

/* Check the data block at buf, read from phys for (v, lba).  0, -EIO
 * (damaged), -EAGAIN (nowait: its checksum is not in memory) or -errno. */
static int check_block(struct store *st, struct volume *v, uint64_t lba, uint64_t phys,
                       const void *buf, bool nowait)
{
	uint64_t stamp = alloc_seg_stamp(st->a, alloc_seg_of(phys));
	int err = bcrc_verify(st->rd.bcrc, phys, stamp, buf, nowait, NULL);
	if (err == -EIO)
		note_bad(st, v, lba, phys, stamp);
	return err;
}

/* A run of physically contiguous whole blocks read with one call. */
struct run {
	uint64_t phys, lba; /* first block */
	uint64_t n;         /* blocks */
	char *dst;
};

static int run_read(struct store *st, struct volume *v, struct run *r, bool nowait)
{
	int (*rd)(struct segio *, void *, size_t, uint64_t) =
	    nowait ? segio_read_nowait : segio_read;
	int err = 0;

	if (!r->n)
		return 0;
	err = rd(st->io, r->dst, r->n * FMT_BLOCK, r->phys * FMT_BLOCK);
	for (uint64_t i = 0; i < r->n && !err; i++)
		err = check_block(st, v, r->lba + i, r->phys + i, r->dst + i * FMT_BLOCK, nowait);
	r->n = 0;
	return err;
}

/* Read [off, off+len) of v into buf, every data block verified.  With
 * nowait, fail with -EAGAIN rather than wait for the backend.  Caller is
 * an RCU-registered thread. */
static int read_range(struct store *st, struct volume *v, char *buf, uint64_t off, uint64_t len,
                      bool nowait)
{
	uint64_t end = off + len;
	struct run run = {0};
	int err = 0;

	urcu_memb_read_lock();
	for (uint64_t lba = off / FMT_BLOCK; lba * FMT_BLOCK < end && !err; lba++) {
		uint64_t bs = lba * FMT_BLOCK;
		uint64_t from = off > bs ? off - bs : 0;
		uint64_t to = end < bs + FMT_BLOCK ? end - bs : FMT_BLOCK;
		char *dst = buf + (bs + from - off);
		uint64_t phys;
		err = tree_lookup(&v->tree, lba, nowait, &phys); /* -EAGAIN: a node is away */
		if (err)
			break;
		bool whole = from == 0 && to == FMT_BLOCK;
		if (phys && whole && run.n && phys == run.phys + run.n) {
			run.n++;
			continue;
		}
		err = run_read(st, v, &run, nowait);
		if (err)
			break;
		if (!phys) {
			memset(dst, 0, to - from);
		} else if (whole) {
			run = (struct run){.phys = phys, .lba = lba, .n = 1, .dst = dst};
		} else {
			/* Part of a block: the whole block is read and verified. */
			char blk[FMT_BLOCK];
			struct run one = {.phys = phys, .lba = lba, .n = 1, .dst = blk};
			err = run_read(st, v, &one, nowait);
			if (!err)
				memcpy(dst, blk + from, to - from);
		}
	}
	if (!err)
		err = run_read(st, v, &run, nowait);
	urcu_memb_read_unlock();
	return err;
}

unsigned reader_bad_blocks(struct store *st, struct reader_bad_block *out, unsigned max)
{
	pthread_mutex_lock(&st->rd.bad_lock);
	unsigned n = st->rd.nbad;
	for (unsigned i = 0; i < n && i < max; i++)
		out[i] = (struct reader_bad_block){.vol_id = st->rd.bad[i].vol_id,
		                                   .lba = st->rd.bad[i].lba,
		                                   .phys = st->rd.bad[i].phys};
	pthread_mutex_unlock(&st->rd.bad_lock);
	return n;
}

int reader_read_block(struct store *st, struct volume *v, uint64_t lba, uint64_t phys, void *out)
{
	struct run one = {.phys = phys, .lba = lba, .n = 1, .dst = out};
	urcu_memb_read_lock(); /* the caller is registered (the log thread is) */
	int err = run_read(st, v, &one, false);
	urcu_memb_read_unlock();
	return err;
}

static void *reader_main(void *arg)
{
	struct store *st = arg;
	urcu_memb_register_thread();
	for (;;) {
		struct req_queue *q = &st->rd.q;
		pthread_mutex_lock(&q->lock);
		while (!q->head && !q->stop)
			core_queue_sleep_locked(q, NULL);
		struct store_req *r = q->head;
		if (r) {
			q->head = r->next;
			if (!q->head)
				q->tail = NULL;
		} else {
			core_queue_close_locked(q); /* the last look: later reads get -ESHUTDOWN */
		}
		pthread_mutex_unlock(&q->lock);
		if (!r)
			break;
		/* A job (a BLOCK_STATUS the loop could not answer) or a READ. */
		core_complete(r, r->job
		                     ? r->job(r)
		                     : read_range(st, r->vol->rec, r->buf, r->off, r->len, false));
	}
	urcu_memb_unregister_thread();
	return NULL;
}

int reader_start(struct store *st, unsigned n)
{
	st->rd.bcrc =
	    bcrc_new(st->io, st->nsegs, st->nsegs < BCRC_SLOTS ? (unsigned)st->nsegs : BCRC_SLOTS);
	if (!st->rd.bcrc)
		return -ENOMEM;
	pthread_mutex_init(&st->rd.bad_lock, NULL);
	st->rd.threads = calloc(n, sizeof(*st->rd.threads));
	if (!st->rd.threads)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&st->rd.threads[i], NULL, reader_main, st))
			break;
		st->rd.n++;
	}
	return st->rd.n ? 0 : -EAGAIN;
}

void reader_stop(struct store *st)
{
	core_queue_stop(&st->rd.q);
	for (unsigned i = 0; i < st->rd.n; i++)
		pthread_join(st->rd.threads[i], NULL);
	st->rd.n = 0;
	core_queue_close(&st->rd.q); /* none started: answer what waits */
	if (st->rd.bcrc) {
		/* Nobody reads any more: the conn threads stopped before the
		 * store closes, and the log thread stopped first. */
		bcrc_free(st->rd.bcrc);
		st->rd.bcrc = NULL;
		pthread_mutex_destroy(&st->rd.bad_lock);
		free(st->rd.bad);
		st->rd.bad = NULL;
		st->rd.nbad = 0;
	}
}

void reader_enqueue(struct store *st, struct store_req *r)
{
	core_queue_push(&st->rd.q, r);
}

bool store_read_try(struct store_req *r)
{
	struct volume *v = r->vol->rec;
	if (r->op != STORE_READ || r->len > STORE_MAX_REQ || r->off > v->size ||
	    r->len > v->size - r->off)
		return false; /* store_submit answers it */
	uint64_t t0 = iostats_now();
	int err = read_range(r->vol->st, v, r->buf, r->off, r->len, true);
	if (err == -EAGAIN)
		return false;
	r->err = err;
	iostats_count(v, STORE_IO_READ, r->len, err, t0);
	return true;
}

/* Views: a READ of at most VIEW_BLOCKS whole blocks (the event loop's
 * largest inline READ, CONN_TRY_MAX, is 256). */
#define VIEW_BLOCKS 512u

void store_read_lock(void)
{
	urcu_memb_read_lock();
}

void store_read_unlock(void)
{
	urcu_memb_read_unlock();
}

int store_view_guard(int (*fn)(void *arg), void *arg)
{
	return segio_view_guard(fn, arg);
}

/* The CRC32C of each block of a view's pieces, in one guarded pass. */
struct view_crcs {
	const struct iovec *piece;
	unsigned n;
	uint32_t *crc;
};

static int view_crcs(void *arg)
{
	struct view_crcs *a = arg;
	uint32_t *crc = a->crc;
	for (unsigned i = 0; i < a->n; i++)
		for (size_t o = 0; o < a->piece[i].iov_len; o += FMT_BLOCK)
			*crc++ = crc32c(0, (const uint8_t *)a->piece[i].iov_base + o, FMT_BLOCK);
	return 0;
}

bool store_read_view(struct store_req *r, struct iovec *piece, unsigned max, unsigned *npiece,
                     int (*use)(void *arg), void *arg)
{
	struct volume *v = r->vol->rec;
	struct store *st = r->vol->st;
	uint64_t lba = r->off / FMT_BLOCK, n = r->len / FMT_BLOCK;
	uint64_t phys[VIEW_BLOCKS];
	uint32_t crc[VIEW_BLOCKS];
	unsigned k = 0;

	if (r->op != STORE_READ || r->off % FMT_BLOCK || r->len % FMT_BLOCK || !n ||
	    n > VIEW_BLOCKS || r->off > v->size || r->len > v->size - r->off || !max)
		return false;
	uint64_t t0 = iostats_now();
	/* The runs of physically contiguous blocks: one piece each. */
	uint64_t from = 0;
	for (uint64_t i = 0; i <= n; i++) {
		if (i < n && (tree_lookup(&v->tree, lba + i, true, &phys[i]) || !phys[i]))
			return false; /* a node away, or a hole */
		if (i && (i == n || phys[i] != phys[i - 1] + 1)) {
			size_t len = (size_t)(i - from) * FMT_BLOCK;
			const void *p =
			    k < max ? segio_view(st->io, phys[from] * FMT_BLOCK, len) : NULL;
			if (!p)
				return false; /* too many runs, or not all in memory */
			piece[k++] = (struct iovec){.iov_base = (void *)p, .iov_len = len};
			from = i;
		}
	}
	struct view_crcs a = {.piece = piece, .n = k, .crc = crc};
	if (segio_view_guard(view_crcs, &a))
		return false; /* could not be read in place: the read says why */
	int err = 0;
	for (uint64_t i = 0; i < n && !err; i++) {
		uint64_t stamp = alloc_seg_stamp(st->a, alloc_seg_of(phys[i]));
		err = bcrc_check(st->rd.bcrc, phys[i], stamp, crc[i], true, NULL);
		if (err == -EIO)
			note_bad(st, v, lba + i, phys[i], stamp);
	}
	if (err && err != -EIO)
		return false; /* a table not in memory: the read builds it */
	*npiece = err ? 0 : k;
	if (!err && use && segio_view_guard(use, arg)) {
		*npiece = 0;
		return false; /* the bytes went after the CRC pass: the read says why */
	}
	r->err = err;
	if (!err)
		__atomic_fetch_add(&st->stats.read_views, 1, __ATOMIC_RELAXED);
	iostats_count(v, STORE_IO_READ, r->len, err, t0);
	return true;
}

int reader_map(struct volume *v, uint64_t off, uint64_t len, struct store_extent *ext, unsigned max,
               bool nowait, unsigned *n)
{
	uint64_t end = off + len;
	unsigned k = 0;

	*n = 0;
	if (off > v->size || len > v->size - off || !max)
		return -EINVAL;
	int err = 0;
	urcu_memb_read_lock();
	while (off < end && k < max) {
		uint64_t lba = off / FMT_BLOCK;
		uint64_t last = (end - 1) / FMT_BLOCK;
		bool mapped;
		uint64_t blocks;
		err = tree_run(&v->tree, lba, last - lba + 1, nowait, &blocks, &mapped);
		if (err)
			break;
		uint64_t run_end = (lba + blocks) * FMT_BLOCK;
		if (run_end > end)
			run_end = end;
		if (k && ext[k - 1].hole == !mapped) {
			ext[k - 1].len += run_end - off; /* tree_run stopped at a leaf edge */
		} else {
			ext[k].len = run_end - off;
			ext[k].hole = !mapped;
			k++;
		}
		off = run_end;
	}
	urcu_memb_read_unlock();
	*n = err ? 0 : k;
	return err;
}

int store_map(struct vol *h, uint64_t off, uint64_t len, struct store_extent *ext, unsigned max,
              unsigned *n)
{
	int err = reader_map(h->rec, off, len, ext, max, false, n);
	iostats_count(h->rec, STORE_IO_BLOCK_STATUS, len, err, 0);
	return err;
}

int reader_walk_locked(struct store *st, uint64_t id, struct volume **v, reader_walk_fn fn,
                       void *arg)
{
	unsigned tries = 0;
	int err;

	for (;;) {
		err = fn(&(*v)->tree, true, arg);
		if (err != -EAGAIN)
			return err;
		/* The copy's nodes outlive vt.lock: freed only after a grace
		 * period, and the caller is inside a read-side section. */
		struct tree copy;
		tree_copy(&copy, &(*v)->tree);
		pthread_mutex_unlock(&st->vt.lock);
		err = fn(&copy, false, arg);
		pthread_mutex_lock(&st->vt.lock);
		*v = vtab_find_id(st, id);
		if (!*v)
			return -ENOENT;
		if (tree_same_root(&(*v)->tree, &copy))
			return err; /* the tree it walked is still the record's */
		err = -ESTALE;
		if (!tree_stale_again(&err, &tries))
			return err;
	}
}

void store_thread_register(void)
{
	urcu_memb_register_thread();
	rcu_registered = true;
}

void store_thread_unregister(void)
{
	urcu_memb_unregister_thread();
	rcu_registered = false;
}

bool reader_rcu_registered(void)
{
	return rcu_registered;
}

bool reader_rcu_enter(void)
{
	if (rcu_registered)
		return false;
	store_thread_register();
	return true;
}

void reader_rcu_leave(bool entered)
{
	if (entered)
		store_thread_unregister();
}
