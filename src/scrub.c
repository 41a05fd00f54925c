/* scrub.c — the background scrub: one pass at a time reads every data
 * block the volumes and snapshots map, verified like any read
 * (reader_read_block), and reports the damaged ones by every name and
 * byte offset that maps them (store.h: store_scrub_*; `cowctl scrub`).
 *
 * A pass runs on its own thread, an RCU reader.  It takes the volume ids
 * that exist at its start and walks each tree in chunks: under vt.lock (the
 * record cannot be unlinked and freed, which the log thread does at once on
 * delete) and rcu_read_lock (nor can the tree's nodes), it looks up at most
 * SCRUB_WALK mapped blocks and keeps at most SCRUB_CHUNK not read before in
 * this pass (a tree node not in memory is read with vt.lock dropped and the
 * record found again: reader_walk_locked); then, vt.lock released but the
 * RCU read lock still held (a block is reused only after a grace period),
 * it reads and verifies them.  The record is found again by id at each
 * chunk, so a volume deleted meanwhile is skipped from then on; the reads
 * name the volume through a copy of the record's identity (id, parent,
 * name), because the record itself may be freed as soon as vt.lock is
 * dropped.  Between chunks the pass holds no lock and sleeps as long as its
 * rate asks (a token bucket with a one-chunk burst), so the RCU read lock
 * is held for at most one chunk's reads (delaying block reuse that long)
 * and vt.lock only for one chunk's tree lookups.
 *
 * Each pool block is read once per pass however many trees share it (a
 * bitmap of the pool's blocks: 1 bit per 4 KiB, 32 MiB per TiB); a block
 * found damaged is reported again for every later tree that maps it.
 * A damaged block is one whose read gets -EIO: it fails its checksum
 * (logged once and counted by the reader) or cannot be read.  Any other
 * error ends the pass (state failed).
 *
 * Layer: the store, beside store_ctl (control.c calls it); over reader,
 * vtab and tree.  Locks: sc.lock guards st->sc; taken inside vt.lock
 * (vt.lock → sc.lock), never the reverse.  store_close stops a pass
 * (scrub_shutdown) before the reader threads and the checksum cache go.
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "clock.h"
#include "say.h"
#include "store_int.h"

#define SCRUB_CHUNK 64u   /* blocks read per chunk (under one RCU read lock) */
#define SCRUB_WALK  4096u /* tree slots looked up per chunk (under vt.lock) */

/* One pass's private state (the pass thread's alone). */
struct scrub {
	struct store *st;
	uint64_t rate;
	uint64_t *ids; /* volumes and snapshots at the start */
	unsigned nids;
	uint64_t nblocks;  /* pool blocks */
	uint64_t *seen;    /* bitmap: read in this pass */
	struct map bad;    /* pool block -> non-NULL: found damaged */
	uint64_t allow_ns; /* pacing: the next chunk may start then */
	/* the chunk in hand: its volume's identity and name, the blocks
	 * to read, the mapped slots looked up */
	struct volume ident;
	char name[NAMES_FULL_MAX + 1];
	struct {
		uint64_t lba, phys;
	} blk[SCRUB_CHUNK];
	unsigned n;
	uint64_t walked;
	char buf[FMT_BLOCK];
};

const char *store_scrub_state_name(enum store_scrub_state s)
{
	switch (s) {
	case STORE_SCRUB_IDLE:
		return "idle";
	case STORE_SCRUB_RUNNING:
		return "running";
	case STORE_SCRUB_DONE:
		return "done";
	case STORE_SCRUB_STOPPED:
		return "stopped";
	case STORE_SCRUB_FAILED:
		return "failed";
	}
	return "?";
}

static bool scrub_seen(const struct scrub *s, uint64_t phys)
{
	return s->seen[phys / 64] >> (phys % 64) & 1;
}

static void scrub_mark(struct scrub *s, uint64_t phys)
{
	s->seen[phys / 64] |= 1ull << (phys % 64);
}

/* Record that name maps damaged block phys at lba. */
static void scrub_report(struct store *st, const char *name, uint64_t lba, uint64_t phys)
{
	pthread_mutex_lock(&st->sc.lock);
	uint64_t k = st->sc.status.damaged_names++;
	if (k < STORE_SCRUB_REPORT_MAX) {
		struct store_scrub_damage *d = &st->sc.found[k];
		snprintf(d->name, sizeof(d->name), "%s", name);
		d->offset = lba * FMT_BLOCK;
		d->pool_block = phys;
	}
	pthread_mutex_unlock(&st->sc.lock);
}

/* Sleep until the blocks read so far fit the rate; false if asked to stop
 * (at once, or while sleeping). */
static bool scrub_pace(struct scrub *s, uint64_t bytes)
{
	struct store *st = s->st;
	uint64_t now = mono_ns();
	bool stop;

	if (s->allow_ns < now)
		s->allow_ns = now; /* time left unused earns no credit */
	s->allow_ns += bytes * 1000000000u / s->rate;
	struct timespec until = {.tv_sec = (time_t)(s->allow_ns / 1000000000u),
	                         .tv_nsec = (long)(s->allow_ns % 1000000000u)};
	pthread_mutex_lock(&st->sc.lock);
	while (!st->sc.stop && mono_ns() < s->allow_ns)
		pthread_cond_timedwait(&st->sc.wake, &st->sc.lock, &until);
	stop = st->sc.stop;
	pthread_mutex_unlock(&st->sc.lock);
	return !stop;
}

/* The identity of record v that reader_read_block names in its log line;
 * no tree (a copy must never be walked).  Caller holds vt.lock. */
static struct volume scrub_ident(const struct volume *v)
{
	struct volume id = {.id = v->id,
	                    .parent_id = v->parent_id,
	                    .origin_id = v->origin_id,
	                    .size = v->size,
	                    .created = v->created,
	                    .snapshot = v->snapshot};
	memcpy(id.name, v->name, sizeof(id.name));
	return id;
}

/* One lookup of scrub_lookup's, for reader_walk_locked: the run at lba
 * (of at most max blocks), or with max 0 the block lba maps. */
struct scrub_step {
	uint64_t lba, max;
	uint64_t run, phys;
	bool mapped;
};

static int scrub_step(const struct tree *t, bool nowait, void *arg)
{
	struct scrub_step *x = arg;
	if (!x->max)
		return tree_lookup(t, x->lba, nowait, &x->phys);
	return tree_run(t, x->lba, x->max, nowait, &x->run, &x->mapped);
}

/* Look up the next blocks of volume id from *lba on: the ones not yet
 * read go to s->blk, damaged ones already read are reported under this
 * volume's name too.  Under vt.lock, but a node not in memory is read
 * without it (reader_walk_locked).  Caller holds rcu_read_lock.  Returns
 * 0, -ENOENT when the volume is gone, or -EIO/-EILSEQ/-ENOMEM when a tree
 * node not in memory cannot be read (the cache logs which; the pass
 * ends). */
static int scrub_lookup(struct scrub *s, uint64_t id, uint64_t *lba)
{
	struct store *st = s->st;

	pthread_mutex_lock(&st->vt.lock);
	struct volume *v = vtab_find_id(st, id);
	if (!v) {
		pthread_mutex_unlock(&st->vt.lock);
		return -ENOENT;
	}
	s->ident = scrub_ident(v);
	vtab_full_name(st, v, s->name, sizeof(s->name));
	uint64_t end = (v->size + FMT_BLOCK - 1) / FMT_BLOCK;
	unsigned looked = 0;
	int err = 0;
	while (*lba < end && s->n < SCRUB_CHUNK && looked < SCRUB_WALK && !err) {
		struct scrub_step x = {.lba = *lba, .max = end - *lba};
		err = reader_walk_locked(st, id, &v, scrub_step, &x);
		if (err)
			break;
		looked++;
		if (!x.mapped) {
			*lba += x.run;
			continue;
		}
		for (uint64_t k = 0; k < x.run && s->n < SCRUB_CHUNK && looked < SCRUB_WALK; k++) {
			struct scrub_step one = {.lba = *lba};
			err = reader_walk_locked(st, id, &v, scrub_step, &one);
			if (err)
				break;
			uint64_t phys = one.phys;
			looked++;
			if (phys) {
				assert(phys < s->nblocks);
				s->walked++;
				if (!scrub_seen(s, phys)) {
					scrub_mark(s, phys);
					s->blk[s->n].lba = *lba;
					s->blk[s->n++].phys = phys;
				} else if (map_get(&s->bad, phys)) {
					scrub_report(st, s->name, *lba, phys);
				}
			}
			(*lba)++;
		}
	}
	if (*lba >= end && !err)
		*lba = UINT64_MAX; /* done */
	pthread_mutex_unlock(&st->vt.lock);
	return err;
}

/* Scrub one chunk of volume id from *lba (UINT64_MAX afterwards when the
 * volume is done).  Returns 0, -ENOENT (the volume is gone), -ECANCELED
 * (asked to stop) or -errno (the pass fails). */
static int scrub_chunk(struct scrub *s, uint64_t id, uint64_t *lba)
{
	struct store *st = s->st;
	uint64_t damaged = 0;
	unsigned i;
	int err;

	s->n = 0;
	s->walked = 0;
	urcu_memb_read_lock();
	err = scrub_lookup(s, id, lba);
	for (i = 0; i < s->n && !err; i++) {
		err = reader_read_block(st, &s->ident, s->blk[i].lba, s->blk[i].phys, s->buf);
		if (err == -EIO) {
			err = map_put(&s->bad, s->blk[i].phys, s);
			scrub_report(st, s->name, s->blk[i].lba, s->blk[i].phys);
			damaged++;
		}
	}
	urcu_memb_read_unlock();
	pthread_mutex_lock(&st->sc.lock);
	st->sc.status.blocks_walked += s->walked;
	st->sc.status.blocks_checked += i;
	st->sc.status.damaged_blocks += damaged;
	pthread_mutex_unlock(&st->sc.lock);
	if (err)
		return err;
	return scrub_pace(s, (uint64_t)s->n * FMT_BLOCK) ? 0 : -ECANCELED;
}

/* The volumes to scrub and their mapped blocks (*total), at the start.
 * Caller's thread, registered or not. */
static int scrub_begin(struct scrub *s, uint64_t *total)
{
	struct store *st = s->st;
	bool entered = reader_rcu_enter();
	unsigned k = 0;

	*total = 0;
	pthread_mutex_lock(&st->vt.lock);
	s->ids = calloc(st->vt.n ? st->vt.n : 1, sizeof(*s->ids));
	if (s->ids) {
		urcu_memb_read_lock();
		for (struct volume *v = st->vt.list; v; v = v->next) {
			uint64_t mapped;
			tree_count(&v->tree, st->a, true, &mapped, NULL); /* O(1): reads nothing */
			*total += mapped;
			s->ids[k++] = v->id;
		}
		urcu_memb_read_unlock();
	}
	pthread_mutex_unlock(&st->vt.lock);
	reader_rcu_leave(entered);
	s->nids = k;
	return s->ids ? 0 : -ENOMEM;
}

/* Every volume in turn; one that is deleted meanwhile is skipped (and not
 * counted done). */
static int scrub_run(struct scrub *s)
{
	struct store *st = s->st;
	int err = 0;

	for (unsigned i = 0; i < s->nids && !err; i++) {
		uint64_t lba = 0;
		while (lba != UINT64_MAX && !err)
			err = scrub_chunk(s, s->ids[i], &lba);
		pthread_mutex_lock(&st->sc.lock);
		st->sc.status.volumes_done += !err;
		pthread_mutex_unlock(&st->sc.lock);
		if (err == -ENOENT)
			err = 0;
	}
	return err;
}

/* The pass is over (or never started): idle compaction may run again. */
static void scrub_free_pass(struct scrub *s)
{
	space_pause_idle(s->st, false);
	map_clear(&s->bad);
	free(s->seen);
	free(s->ids);
	free(s);
}

static void *scrub_main(void *arg)
{
	struct scrub *s = arg;
	struct store *st = s->st;
	uint64_t t0 = mono_ns();

	store_thread_register();
	int err = scrub_run(s);
	store_thread_unregister();

	pthread_mutex_lock(&st->sc.lock);
	struct store_scrub_status *ss = &st->sc.status;
	ss->state = !err                ? STORE_SCRUB_DONE
	            : err == -ECANCELED ? STORE_SCRUB_STOPPED
	                                : STORE_SCRUB_FAILED;
	ss->err = ss->state == STORE_SCRUB_FAILED ? err : 0;
	ss->finished = (uint64_t)time(NULL);
	struct store_scrub_status done = *ss;
	pthread_mutex_unlock(&st->sc.lock);

	if (done.state == STORE_SCRUB_FAILED)
		say_error("scrub: pass %u failed after %llu blocks: %s", done.pass,
		          (unsigned long long)done.blocks_checked, strerror(-err));
	else
		say_info("scrub: pass %u %s in %.1f s: %llu blocks checked, %llu damaged "
		         "(%llu names)",
		         done.pass, store_scrub_state_name(done.state),
		         (double)(mono_ns() - t0) / 1e9, (unsigned long long)done.blocks_checked,
		         (unsigned long long)done.damaged_blocks,
		         (unsigned long long)done.damaged_names);
	scrub_free_pass(s);
	return NULL;
}

/* Join a pass that has finished (or is finishing).  Caller holds sc.lock
 * and the pass is not running (it takes sc.lock no more). */
static void scrub_reap_locked(struct store *st)
{
	if (st->sc.joinable && st->sc.status.state != STORE_SCRUB_RUNNING) {
		pthread_join(st->sc.thread, NULL);
		st->sc.joinable = false;
	}
}

int store_scrub_start(struct store *st, uint64_t rate)
{
	struct scrub *s;
	sigset_t all, old;
	unsigned pass = 0;
	uint64_t total;
	int err;

	if (!rate)
		rate = STORE_SCRUB_RATE_DEFAULT;
	if (rate < STORE_SCRUB_RATE_MIN)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->st = st;
	/* No idle compaction moves a block under the walk (scrub_free_pass
	 * lets it go again): once the pause is set, a no-op through the log
	 * thread outlasts any compaction pass already under way. */
	space_pause_idle(st, true);
	store_ping(st);
	s->rate = rate;
	s->nblocks = st->nsegs * FMT_SEG_BLOCKS;
	s->seen = calloc((s->nblocks + 63) / 64, sizeof(*s->seen));
	err = s->seen ? scrub_begin(s, &total) : -ENOMEM;
	if (err) {
		scrub_free_pass(s);
		return err;
	}

	pthread_mutex_lock(&st->sc.lock);
	err = st->sc.closed                                ? -ESHUTDOWN
	      : st->sc.status.state == STORE_SCRUB_RUNNING ? -EALREADY
	                                                   : 0;
	if (!err && !st->sc.found) {
		st->sc.found = calloc(STORE_SCRUB_REPORT_MAX, sizeof(*st->sc.found));
		err = st->sc.found ? 0 : -ENOMEM;
	}
	if (!err) {
		scrub_reap_locked(st);
		pass = st->sc.status.pass + 1;
		st->sc.status = (struct store_scrub_status){.state = STORE_SCRUB_RUNNING,
		                                            .pass = pass,
		                                            .started = (uint64_t)time(NULL),
		                                            .rate = rate,
		                                            .volumes_total = s->nids,
		                                            .blocks_total = total};
		st->sc.stop = false;
		/* The pass's thread takes no signal the daemon handles. */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		err = -pthread_create(&st->sc.thread, NULL, scrub_main, s);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (err) {
			st->sc.status.state = STORE_SCRUB_FAILED;
			st->sc.status.err = err;
			err = -EAGAIN;
		} else {
			st->sc.joinable = true;
		}
	}
	pthread_mutex_unlock(&st->sc.lock);
	if (err) {
		scrub_free_pass(s);
		return err;
	}
	say_info("scrub: pass %u started at %llu KiB/s", pass, (unsigned long long)(rate >> 10));
	return 0;
}

void store_scrub_stop(struct store *st)
{
	pthread_mutex_lock(&st->sc.lock);
	bool joinable = st->sc.joinable;
	pthread_t t = st->sc.thread;
	st->sc.stop = true;
	st->sc.joinable = false;
	pthread_cond_broadcast(&st->sc.wake);
	pthread_mutex_unlock(&st->sc.lock);
	if (joinable)
		pthread_join(t, NULL); /* outside sc.lock: the pass takes it to finish */
}

unsigned store_scrub_status(struct store *st, struct store_scrub_status *out,
                            struct store_scrub_damage *dmg, unsigned max)
{
	unsigned n = 0;

	pthread_mutex_lock(&st->sc.lock);
	*out = st->sc.status;
	for (; n < max && n < out->damaged_names && n < STORE_SCRUB_REPORT_MAX; n++)
		dmg[n] = st->sc.found[n];
	pthread_mutex_unlock(&st->sc.lock);
	return n;
}

void scrub_init(struct store *st)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&st->sc.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->sc.wake, &ca);
	pthread_condattr_destroy(&ca);
}

void scrub_shutdown(struct store *st)
{
	pthread_mutex_lock(&st->sc.lock);
	st->sc.closed = true;
	pthread_mutex_unlock(&st->sc.lock);
	store_scrub_stop(st);
}

void scrub_free(struct store *st)
{
	free(st->sc.found);
	st->sc.found = NULL;
	pthread_cond_destroy(&st->sc.wake);
	pthread_mutex_destroy(&st->sc.lock);
}
