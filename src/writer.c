/* writer.c — the log thread: the only writer of trees, allocator, log and
 * volume table.  It takes every queued request at once and runs them in
 * rounds: stages every write/trim/zero of a round into batches (full
 * blocks straight from the client's buffer, partial ones merged with the
 * block's current content as this round sees it), writes them with one
 * append per segment, maps the new blocks in the trees and completes
 * them; the round's FLUSHes and FUA writes go to the syncer, a thread
 * that answers all those waiting with one sync (group commit) while the
 * log thread goes on with the next rounds.  Jobs (control operations)
 * run alone, in their place in the order.
 * Between rounds and while idle it lets the space policy clean and
 * checkpoint, and bounds the tree node cache (tree_cache_evict: a batch
 * at a time, so a round never waits for more than one).
 *
 * An event loop may run a round of its own writes in the log thread's
 * place while the log thread sleeps with nothing queued (writer_inline).
 *
 * Layer: under store and store_ctl; over space, ckpt, vtab, core, tree,
 * log.  Locks: wr.q.lock guards the queue (and its closing at the thread's
 * last look: a request arriving after that is answered -ESHUTDOWN) and
 * the kick, active and awake flags; wr.own guards everything else ("the log
 * thread's"): the log thread holds it except while it sleeps for its
 * queue, an inline round takes it with a trylock.  Order: own, then
 * q.lock; nobody waits for own while in a read-side section (the log
 * thread holds own across grace periods).  The syncer's queue has its own
 * lock (wr.sq.lock), taken after own; the syncer holds nothing else and
 * never waits for own.
 */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#include "fwd.h"
#include "store_int.h"

/* ---- the round's staged blocks: per volume, lba -> latest data ----------- */

/* A staged trim: the block reads as a hole for the rest of the round. */
static const char pend_hole[1];

/* v's map of this round, emptied first if it is from an earlier round. */
static struct map *pend_map(struct store *st, struct volume *v)
{
	if (v->pend_round != st->wr.round) {
		map_reset(&v->pend);
		v->pend_round = st->wr.round;
	}
	return &v->pend;
}

static int pend_put(struct store *st, struct volume *v, uint64_t lba, const void *data)
{
	return map_put(pend_map(st, v), lba, (void *)data);
}

static void pend_forget_range(struct store *st, struct volume *v, uint64_t lo, uint64_t hi)
{
	struct map *m = pend_map(st, v);
	size_t pos = 0;
	uint64_t lba;
	void **val;
	while ((val = map_next(m, &pos, &lba)))
		if (lba >= lo && lba < hi)
			*val = (void *)pend_hole;
}

/* Forget everything staged: a new round, or staged blocks were applied. */
static void pend_reset(struct store *st)
{
	st->wr.round++;
}

/* Current content of (v, lba) as seen by this round. */
static int current_block(struct store *st, struct volume *v, uint64_t lba, void *out)
{
	const void *staged = map_get(pend_map(st, v), lba);
	if (staged == pend_hole) {
		memset(out, 0, FMT_BLOCK);
		return 0;
	}
	if (staged) {
		memcpy(out, staged, FMT_BLOCK);
		return 0;
	}
	uint64_t phys;
	int err = tree_lookup(&v->tree, lba, false, &phys);
	if (err)
		return err;
	if (!phys) {
		memset(out, 0, FMT_BLOCK);
		return 0;
	}
	return reader_read_block(st, v, lba, phys,
	                         out); /* verified: never merge into a bad block */
}

/* ---- staging ------------------------------------------------------------- */

static int add_apply(struct store *st, struct volume *v, uint64_t lba, uint64_t val, bool trim)
{
	if (st->wr.nap == st->wr.ap_cap) {
		size_t n = st->wr.ap_cap ? st->wr.ap_cap * 2 : 256;
		struct apply *p = realloc(st->wr.ap, n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		st->wr.ap = p;
		st->wr.ap_cap = n;
	}
	st->wr.ap[st->wr.nap++] = (struct apply){.v = v, .lba = lba, .val = val, .trim = trim};
	return 0;
}

/* The log or the round's tables refused an entry: unless the log was only
 * full, what the round staged can no longer be trusted, so the pool fails
 * here (a read that fails while merging a partial block does not: the log
 * is intact). */
static int stage_failed(struct store *st, int err)
{
	if (err != -ENOSPC)
		core_set_failed(st, err, "staging");
	return err;
}

static int stage_block(struct store *st, struct volume *v, uint64_t lba, const void *data)
{
	struct fmt_entry e = {.vol = (uint32_t)v->id, .type = FMT_E_DATA, .lba = lba, .count = 1};
	uint64_t addr;
	int err = log_add(st->log, &e, data, &addr);
	if (!err)
		err = pend_put(st, v, lba, data);
	if (!err)
		err = add_apply(st, v, lba, addr, false);
	return err ? stage_failed(st, err) : 0;
}

/* Stage bytes [off, off+len) of v: full blocks straight from buf (no
 * copy), partial ones merged with the current content.  buf NULL = zeroes. */
static int stage_bytes(struct store *st, struct volume *v, const char *buf, uint64_t off,
                       uint64_t len)
{
	uint64_t end = off + len;
	for (uint64_t lba = off / FMT_BLOCK; lba * FMT_BLOCK < end; lba++) {
		uint64_t bs = lba * FMT_BLOCK;
		uint64_t from = off > bs ? off - bs : 0;
		uint64_t to = end < bs + FMT_BLOCK ? end - bs : FMT_BLOCK;
		const void *data;
		int err;
		if (from == 0 && to == FMT_BLOCK && buf) {
			data = buf + (bs - off);
		} else {
			char *blk = core_scratch_get(st);
			if (!blk)
				return stage_failed(st, -ENOMEM);
			err = current_block(st, v, lba, blk);
			if (err) /* unreadable or failing its checksum: this request fails */
				return err;
			if (buf)
				memcpy(blk + from, buf + (bs + from - off), to - from);
			else
				memset(blk + from, 0, to - from);
			data = blk;
		}
		err = stage_block(st, v, lba, data);
		if (err)
			return err;
	}
	return 0;
}

static int stage_trim(struct store *st, struct volume *v, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	uint64_t lo = (off + FMT_BLOCK - 1) / FMT_BLOCK, hi = end / FMT_BLOCK;
	int err;

	if (lo >= hi) /* inside one block */
		return stage_bytes(st, v, NULL, off, len);
	if (off % FMT_BLOCK) {
		err = stage_bytes(st, v, NULL, off, lo * FMT_BLOCK - off);
		if (err)
			return err;
	}
	for (uint64_t at = lo; at < hi;) {
		uint64_t n = hi - at > UINT32_MAX ? UINT32_MAX : hi - at;
		struct fmt_entry e = {
		    .vol = (uint32_t)v->id, .type = FMT_E_TRIM, .lba = at, .count = (uint32_t)n};
		err = log_add(st->log, &e, NULL, NULL);
		if (!err)
			err = add_apply(st, v, at, at + n, true);
		if (err)
			return stage_failed(st, err);
		/* Later partial writes of this round must see the hole. */
		pend_forget_range(st, v, at, at + n);
		at += n;
	}
	if (end % FMT_BLOCK)
		err = stage_bytes(st, v, NULL, hi * FMT_BLOCK, end - hi * FMT_BLOCK);
	return err;
}

static bool is_write(const struct store_req *r)
{
	return r->op == STORE_WRITE || r->op == STORE_TRIM || r->op == STORE_ZERO;
}

/* The partial blocks a trim or zero stages as data: the unaligned head
 * and tail, or the whole range when no full block lies inside it. */
static void trim_edges(const struct store_req *r, uint64_t *off, uint64_t *len)
{
	uint64_t end = r->off + r->len;
	uint64_t lo = (r->off + FMT_BLOCK - 1) / FMT_BLOCK, hi = end / FMT_BLOCK;
	if (lo >= hi) {
		*off = r->off;
		*len = r->len;
	} else {
		/* cost is counted per block: head and tail at most two */
		*off = r->off % FMT_BLOCK ? r->off : end;
		*len = (r->off % FMT_BLOCK ? FMT_BLOCK : 0) + (end % FMT_BLOCK ? FMT_BLOCK : 0);
	}
}

/* Log blocks a request's data may take (space.c's write cost): all of a
 * write; of a trim or zero, the partial blocks it merges (whole blocks
 * become TRIM entries, which may use the reserve). */
static uint64_t data_cost(const struct store *st, const struct store_req *r)
{
	unsigned levels = r->vol->rec->tree.levels;
	uint64_t off, len;
	if (r->op == STORE_WRITE)
		return space_write_cost(st, r->off, r->len, levels);
	trim_edges(r, &off, &len);
	return len ? space_write_cost(st, off, len, levels) : 0;
}

static int stage_req(struct store *st, struct store_req *r)
{
	struct volume *v = r->vol->rec;
	uint64_t cost = data_cost(st, r);
	int err;

	if (st->failed)
		return -EIO;
	if (v->snapshot)
		return -EPERM;
	err = cost ? space_check_write(st, cost) : 0;
	if (!err && r->op != STORE_WRITE)
		err = space_check_trim(st);
	if (err)
		return err;
	st->wr.staged_cost += cost;
	if (r->op == STORE_WRITE)
		return stage_bytes(st, v, r->buf, r->off, r->len);
	/* TRIM and ZERO both unmap: in a copy-on-write store every later
	 * write allocates anew, so a "preallocated" zero block (NO_HOLE)
	 * would buy nothing; both read back as zeroes. */
	return stage_trim(st, v, r->off, r->len);
}

/* Map what the round staged (its blocks are written). */
static void apply_staged(struct store *st)
{
	for (size_t i = 0; i < st->wr.nap; i++) {
		struct apply *ap = &st->wr.ap[i];
		int err = ap->trim ? tree_trim(&ap->v->tree, st->a, ap->lba, ap->val)
		                   : tree_set(&ap->v->tree, st->a, ap->lba,
		                              fwd_name_of(alloc_fwd(st->a), ap->val));
		if (err)
			core_set_failed(st, err, "tree update");
	}
	st->wr.nap = 0;
	st->wr.staged_cost = 0; /* the trees' dirty nodes are charged now */
}

/* Stage r; when short of room, write and map what is staged so far, let
 * the space policy make room, and try once more. */
static int stage_or_make_room(struct store *st, struct store_req *r)
{
	int err = stage_req(st, r);
	if (err != -EAGAIN)
		return err;
	err = log_commit(st->log);
	if (err) {
		core_set_failed(st, err, "write");
		return -EIO;
	}
	apply_staged(st);
	space_make_room(st, data_cost(st, r));
	/* Staged blocks are applied and scratch may be reused: later merges
	 * read the trees again. */
	pend_reset(st);
	err = stage_req(st, r);
	return err == -EAGAIN ? -ENOSPC : err;
}

/* r is answered only once a sync made it durable: a FLUSH, a FUA write. */
static bool is_synced(const struct store_req *r)
{
	return r->op == STORE_FLUSH || (is_write(r) && (r->flags & STORE_FUA));
}

/* Stage every data request of the round; true if one needs a sync. */
static bool stage_round(struct store *st, struct store_req *list)
{
	bool need_sync = false;
	for (struct store_req *r = list; r; r = r->next) {
		r->err = 0;
		if (r->op == STORE_FLUSH) {
			st->stats.flushes++;
			need_sync = true;
			continue;
		}
		if (!is_write(r))
			continue;
		if (r->flags & STORE_FUA)
			st->stats.fua_requests++;
		int err = stage_or_make_room(st, r);
		if (err) {
			r->err = err; /* staging failed the pool itself if it must */
			continue;
		}
		st->ck.dirty = true;
		if (r->flags & STORE_FUA)
			need_sync = true;
	}
	return need_sync;
}

/* A sync the syncer saw fail fails the pool here, on the log thread (the
 * backend refuses every later sync and superblock already: segio.h). */
static void sync_failure(struct store *st)
{
	int err = __atomic_load_n(&st->wr.sync_err, __ATOMIC_ACQUIRE);
	if (err)
		core_set_failed(st, err, "fdatasync");
}

/* One round: stage every data request of the list, write them with one
 * append per segment, apply, complete; what waits for a sync goes to the
 * syncer. */
static void run_round(struct store *st, struct store_req *list)
{
	struct store_req *r;
	int err;

	sync_failure(st);
	st->wr.nap = 0;
	st->wr.staged_cost = 0;
	pend_reset(st);
	bool need_sync = stage_round(st, list);
	/* A round that syncs seals its summary first (a synced summary is
	 * never written again, log.h); any other keeps it open for the next
	 * rounds to add to. */
	err = need_sync ? log_commit(st->log) : log_commit_open(st->log);
	if (err)
		core_set_failed(st, err, "write");
	if (st->failed) {
		/* Some staged block may not have reached the device (a commit
		 * inside staging can fail too): map nothing of this round. */
		for (r = list; r; r = r->next)
			if (is_write(r) && !r->err)
				r->err = -EIO;
	} else {
		apply_staged(st);
	}
	core_scratch_reset(st);
	st->stats.batches++;
	/* What waits for a sync goes to the syncer (its blocks are written:
	 * the sync it waits for starts after this); the rest completes. */
	struct store_req *head = NULL, *tail = NULL;
	for (r = list; r;) {
		struct store_req *next = r->next;
		if (!is_synced(r) || r->err || st->failed) {
			core_complete(r, is_synced(r) && !r->err ? -EIO : r->err);
		} else {
			r->next = NULL;
			if (tail)
				tail->next = r;
			else
				head = r;
			tail = r;
		}
		r = next;
	}
	if (head)
		core_queue_push_list(&st->wr.sq, head, tail);
}

/* Run a taken queue: data requests in rounds, each job alone in its place. */
static void run_list(struct store *st, struct store_req *list)
{
	while (list) {
		struct store_req *r = list, *tail = NULL;
		if (r->job) {
			list = r->next;
			r->next = NULL;
			core_complete(r, r->job(r));
			continue;
		}
		while (r && !r->job) {
			tail = r;
			r = r->next;
		}
		tail->next = NULL;
		struct store_req *round = list;
		list = r;
		run_round(st, round);
	}
}

/* ---- the syncer --------------------------------------------------------- */

/* Each pass takes every FLUSH and FUA write waiting, syncs once and
 * answers them all.  A request was queued after its round's blocks were
 * written, so the sync, which starts after the take, covers them and
 * every write completed before the FLUSH was sent; one queued during a
 * sync waits for the next.  The log thread meanwhile appends the next
 * rounds: the summary a syncing round sealed is never written again
 * (log.h), and what the sync finds of later rounds nobody waits for. */
static void *syncer_main(void *arg)
{
	struct store *st = arg;
	struct req_queue *q = &st->wr.sq;

	for (;;) {
		pthread_mutex_lock(&q->lock);
		while (!q->head && !q->stop)
			core_queue_sleep_locked(q, NULL);
		struct store_req *list = q->head;
		q->head = q->tail = NULL;
		bool stop = q->stop && !list;
		if (stop)
			core_queue_close_locked(q);
		pthread_mutex_unlock(&q->lock);
		if (stop)
			return NULL;
		__atomic_store_n(&st->wr.sync_since, iostats_now(), __ATOMIC_RELAXED);
		int err = segio_sync(st->io);
		__atomic_store_n(&st->wr.sync_since, 0, __ATOMIC_RELAXED);
		__atomic_add_fetch(&st->stats.syncs, 1, __ATOMIC_RELAXED);
		if (err) {
			int none = 0;
			__atomic_compare_exchange_n(&st->wr.sync_err, &none, err, false,
			                            __ATOMIC_RELEASE, __ATOMIC_RELAXED);
			core_queue_wake(&st->wr.q); /* the log thread fails the pool */
		}
		while (list) {
			struct store_req *next = list->next;
			core_complete(list, err ? -EIO : 0);
			list = next;
		}
	}
}

static int syncer_start(struct store *st)
{
	if (pthread_create(&st->wr.sync_thread, NULL, syncer_main, st))
		return -EAGAIN;
	st->wr.sync_running = true;
	return 0;
}

/* After the log thread: it answers what is queued first. */
static void syncer_stop(struct store *st)
{
	if (!st->wr.sync_running)
		return;
	core_queue_stop(&st->wr.sq);
	pthread_join(st->wr.sync_thread, NULL);
	st->wr.sync_running = false;
}

/* Take the whole queue, waiting up to a second for work or for a
 * checkpoint's background part to end.  *stop when asked to stop and the
 * queue is empty: that was the last look, and the queue closes under the
 * same lock, so a request pushed after it is refused (-ESHUTDOWN) rather
 * than left for a thread that is gone.  *idle when the second passed with
 * nothing to do (no inline round either); *kicked when an inline round
 * left work between rounds (writer_inline). */
static struct store_req *take_queue(struct store *st, bool *stop, bool *idle, bool *kicked)
{
	struct store_req *list;
	struct req_queue *q = &st->wr.q;
	bool timed_out = false;
	pthread_mutex_lock(&q->lock);
	st->wr.awake = false;
	while (!q->head && !q->stop && !st->wr.kick && !ckpt_ready(st) &&
	       !(st->nc && tree_cache_over(st->nc)) &&
	       !(!st->failed && __atomic_load_n(&st->wr.sync_err, __ATOMIC_ACQUIRE))) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (core_queue_sleep_locked(q, &ts) == ETIMEDOUT) {
			timed_out = true;
			break;
		}
	}
	list = q->head;
	q->head = q->tail = NULL;
	*stop = q->stop && !list;
	if (*stop)
		core_queue_close_locked(q);
	*idle = timed_out && !st->wr.active;
	*kicked = st->wr.kick;
	st->wr.kick = st->wr.active = false;
	st->wr.awake = true;
	pthread_mutex_unlock(&q->lock);
	return list;
}

/* Nodes the CLOCK visits per call between rounds: a few hundred
 * microseconds of work, so a round waits little for it. */
#define EVICT_BUDGET 256

/* Over the bound, at most once a second: park the root of every volume
 * and snapshot nobody has open (tree_park), so that the hand can evict it
 * once nothing below it is in memory; its next user reads it back.
 * O(volumes). */
static void park_idle_roots(struct store *st)
{
	uint64_t now = iostats_now();
	if (now - st->wr.parked_ns < 1000000000ull)
		return;
	st->wr.parked_ns = now;
	pthread_mutex_lock(&st->vt.lock);
	for (struct volume *v = st->vt.list; v; v = v->next)
		if (!v->attached && !v->locked)
			tree_park(&v->tree);
	pthread_mutex_unlock(&st->vt.lock);
}

/* Give the memory of evicted nodes back to the system, at most once a
 * second and only after 1,024 evictions or more: nodes are allocated on
 * reader threads (each with its malloc arena) and freed after a grace
 * period, and glibc keeps what is freed, so without this cowbd's RSS stays
 * at the high-water mark of all the metadata ever read (750 MiB after
 * listing 10^5 snapshots with their figures under a 64 MiB cache). */
static void give_back(struct store *st)
{
	struct tree_cache_stats cs;
	uint64_t now = iostats_now();

	if (now - st->wr.trimmed_ns < 100000000ull)
		return;
	tree_cache_stats(st->nc, &cs);
	if (cs.evictions - st->wr.trimmed_evictions < 1024)
		return;
	st->wr.trimmed_ns = now;
	st->wr.trimmed_evictions = cs.evictions;
	malloc_trim(0);
}

/* Bound the node cache (one batch); true when dirty nodes pin more than
 * half of it: a checkpoint then starts early, since only writing them
 * lets them go. */
static bool cache_trim(struct store *st)
{
	if (!st->nc)
		return false;
	if (tree_cache_above(st->nc))
		park_idle_roots(st);
	bool pinned = tree_cache_evict(st->nc, EVICT_BUDGET);
	give_back(st);
	return pinned;
}

static void *writer_main(void *arg)
{
	struct store *st = arg;
	urcu_memb_register_thread();
	pthread_mutex_lock(&st->wr.own);
	for (;;) {
		bool stop, idle, kicked;
		/* Asleep, the log's work is free for an event loop's inline
		 * round; awake, it is this thread's. */
		pthread_mutex_unlock(&st->wr.own);
		struct store_req *list = take_queue(st, &stop, &idle, &kicked);
		pthread_mutex_lock(&st->wr.own);
		if (stop)
			break;
		sync_failure(st);
		ckpt_poll(st);
		bool pinned = cache_trim(st);
		if (!list && !kicked) {
			if (idle)
				space_idle(st);
			if (pinned)
				ckpt_begin(st);
			continue;
		}
		run_list(st, list);
		ckpt_poll(st);
		pinned = cache_trim(st);
		if (!space_clean_low(st) && (pinned || (ckpt_due(st) && ckpt_precopy(st))))
			ckpt_begin(st);
	}
	sync_failure(st);
	if (!st->failed && !st->read_only)
		ckpt_write(st);
	pthread_mutex_unlock(&st->wr.own);
	urcu_memb_unregister_thread();
	return NULL;
}

/* Inline rounds (writer_inline).  The calling event loop serves every
 * connection it holds, so a round it runs must be short: at most
 * INLINE_BYTES of payload, and after one that took longer than
 * INLINE_SLOW_NS (the page cache throttling a writer that outruns the
 * disk, writeback congested at a segment's seal) none for INLINE_OFF_NS:
 * the log thread takes the writes meanwhile, and only they wait.  Every
 * round writes a summary block of its own, and a loop's plug holds what
 * one event parsed (often one or two 4 KiB writes, where the log thread's
 * queue gathers more while it works): under INLINE_MIN_BYTES the plug
 * goes to the log thread, so that inline rounds do not multiply the
 * summaries (measured: 4 KiB writes in inline rounds wrote 2.5 bytes to
 * the pool per client byte on a pool twice the volume, against 1.5). */
#define INLINE_BYTES     (1u << 20)
#define INLINE_MIN_BYTES (32u << 10)
#define INLINE_SLOW_NS   2000000ull
#define INLINE_OFF_NS    100000000ull

/* Whether list (a plug's writes, linked by next) may run as an inline
 * round: whole-block WRITEs without FUA, INLINE_MIN_BYTES to INLINE_BYTES
 * in all, so that the round neither reads (a partial block merges with the
 * current one) nor syncs nor runs long; *cost is what space.c charges for
 * them. */
static bool inline_fits(const struct store *st, const struct store_req *list, uint64_t *cost)
{
	uint64_t c = 0, bytes = 0;
	for (const struct store_req *r = list; r; r = r->next) {
		if (r->op != STORE_WRITE || (r->flags & STORE_FUA) || r->off % FMT_BLOCK ||
		    r->len % FMT_BLOCK)
			return false;
		bytes += r->len;
		c += data_cost(st, r);
	}
	*cost = c;
	return bytes >= INLINE_MIN_BYTES && bytes <= INLINE_BYTES;
}

bool writer_inline(struct store *st, struct store_req *list)
{
	struct req_queue *q = &st->wr.q;
	uint64_t cost;

	if (!st->wr.running || !segio_local(st->io) || !reader_rcu_registered() ||
	    urcu_memb_read_ongoing())
		return false;
	if (pthread_mutex_trylock(&st->wr.own))
		return false; /* the log thread is at work: queue behind it */
	pthread_mutex_lock(&q->lock);
	bool open_q = !q->head && !q->stop && !q->closed && !st->wr.awake;
	if (open_q)
		st->wr.active = true;
	pthread_mutex_unlock(&q->lock);
	uint64_t t0 = iostats_now();
	if (!open_q || st->failed || t0 < st->wr.inline_off_until ||
	    !inline_fits(st, list, &cost) || space_check_write(st, cost)) {
		pthread_mutex_unlock(&st->wr.own);
		return false;
	}
	run_round(st, list);
	st->stats.inline_rounds++;
	uint64_t t1 = iostats_now();
	if (t1 - t0 > INLINE_SLOW_NS) {
		st->wr.inline_off_until = t1 + INLINE_OFF_NS;
		st->stats.inline_slow++;
	}
	bool kick = ckpt_due(st) || space_clean_due(st) || (st->nc && tree_cache_over(st->nc));
	pthread_mutex_unlock(&st->wr.own);
	if (kick) {
		pthread_mutex_lock(&q->lock);
		st->wr.kick = true;
		pthread_mutex_unlock(&q->lock);
		core_queue_wake(q);
	}
	return true;
}

void writer_enqueue(struct store *st, struct store_req *r)
{
	core_queue_push(&st->wr.q, r);
}

/* A reader loaded a node past the cache's bound: wake the log thread. */
static void writer_wake(void *arg)
{
	struct store *st = arg;
	core_queue_wake(&st->wr.q);
}

/* The default bound: 1/16 of the machine's memory, at least 64 MiB. */
static uint64_t cache_default(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t b = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 16 : 0;
	return b > (64u << 20) ? b : 64u << 20;
}

int writer_start(struct store *st)
{
	if (st->nc)
		tree_cache_bound(st->nc, st->cache_bytes ? st->cache_bytes : cache_default(),
		                 writer_wake, st);
	int err = ckpt_bg_start(st);
	if (err)
		return err;
	err = syncer_start(st);
	if (err) {
		ckpt_bg_stop(st);
		return err;
	}
	st->wr.running = true;
	st->wr.awake = true; /* until it first sleeps in take_queue */
	if (pthread_create(&st->wr.thread, NULL, writer_main, st)) {
		st->wr.running = false;
		syncer_stop(st);
		ckpt_bg_stop(st);
		return -EAGAIN;
	}
	return 0;
}

void writer_stop(struct store *st)
{
	if (!st->wr.running || st->wr.stopped)
		return;
	core_queue_stop(&st->wr.q);
	pthread_join(st->wr.thread, NULL);
	st->wr.stopped = true;
	core_queue_close(&st->wr.q); /* closed already: the thread's last look */
	syncer_stop(st);
	ckpt_bg_stop(st);
	/* running stays true: ckpt_write after this point still needs the
	 * grace period (readers may be live until the store is freed), and
	 * control calls keep going to the closed queue (-ESHUTDOWN) rather
	 * than run on the caller's thread beside whatever closes the store. */
}
