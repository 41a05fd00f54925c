/* ckpt.c — checkpoints: the record (volume table + segment bitmap) encoded
 * and decoded, writing one (dirty tree nodes children first, the record,
 * a sync, then the superblock flip) and loading one at open.
 *
 * Writing is two steps: ckpt_pre_commit makes nodes and record durable in
 * the log; ckpt_commit flips the superblock to them and only then lets the
 * old checkpoint's blocks and the segments that died before it go.
 *
 * The periodic checkpoint keeps the sync off the write path (ckpt_begin):
 * the log thread writes nodes and record into the log, takes references on
 * the record's blocks and marks the segments dead at that moment; a
 * committer thread syncs, writes the superblock naming it (a copy: the log
 * thread never waits for it) and waits for an RCU grace period; the log
 * thread, between rounds, then drops the old checkpoint's blocks and frees
 * the marked segments (ckpt_poll).  Writes and flushes go on meanwhile:
 * they follow the record in the log, so a crash before the flip replays
 * them after the old checkpoint, and after it after the new one.  Blocks
 * that die meanwhile wait for the next checkpoint.  One checkpoint is in
 * flight at a time; ckpt_write (space policy, control, close) and the
 * compactor first wait for it.
 *
 * Layer: under space, writer, store_ctl, recover and store; over vtab,
 * super, core, tree, log and alloc.  Locks: the log thread (or the
 * single-threaded opener) owns everything but struct ckpt_bg's hand-over
 * fields, which its lock guards. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "crc32c.h"
#include "say.h"
#include "store_int.h"

/* Node blocks buffered before a checkpoint writes them out. */
#define SCRATCH_COMMIT 2048

static size_t record_bytes(uint64_t nvols, uint64_t nsegs)
{
	return sizeof(struct fmt_ckpt) + nvols * sizeof(struct fmt_vol) + (nsegs + 7) / 8;
}

unsigned ckpt_max_vols(uint64_t nsegs)
{
	size_t fixed = sizeof(struct fmt_ckpt) + (nsegs + 7) / 8;
	size_t room = (size_t)CKPT_MAX_BLOCKS * FMT_BLOCK;
	return fixed < room ? (unsigned)((room - fixed) / sizeof(struct fmt_vol)) : 0;
}

uint64_t ckpt_max_segs(unsigned min_vols)
{
	size_t room = (size_t)CKPT_MAX_BLOCKS * FMT_BLOCK - sizeof(struct fmt_ckpt) -
	              (size_t)min_vols * sizeof(struct fmt_vol);
	return (uint64_t)room * 8; /* one bitmap bit per segment */
}

unsigned ckpt_record_blocks(uint64_t nvols, uint64_t nsegs)
{
	return (unsigned)((record_bytes(nvols, nsegs) + FMT_BLOCK - 1) / FMT_BLOCK);
}

/* A checkpoint handed to the committer, not finished by the log thread
 * (ckpt_bg.busy, which only the log thread changes). */
static bool in_flight(const struct store *st);

bool ckpt_due(const struct store *st)
{
	if (st->failed || !st->ck.dirty || in_flight(st))
		return false;
	if ((log_blocks_written(st->log) - st->ck.log_blocks_at) * FMT_BLOCK >=
	    st->ck.interval_bytes)
		return true;
	return time(NULL) - st->ck.last >= (time_t)st->ck.interval_secs;
}

unsigned ckpt_segments(const struct store *st, uint64_t *out)
{
	for (unsigned i = 0; i < st->ck.nblocks; i++)
		out[i] = alloc_seg_of(st->ck.blocks[i]);
	return st->ck.nblocks;
}

/* tree_write_dirty's emitter: one node image into the log. */
static uint64_t emit_node(void *arg, struct fmt_node *img)
{
	struct store *st = arg;
	struct fmt_entry e = {.type = FMT_E_NODE, .count = 1};
	struct fmt_node *blk;
	uint64_t addr;

	if (core_scratch_used(st) >= SCRATCH_COMMIT) {
		if ((st->ck.emit_err = log_commit(st->log)))
			return 0;
		core_scratch_reset(st);
	}
	blk = core_scratch_get(st);
	if (!blk) {
		st->ck.emit_err = -ENOMEM;
		return 0;
	}
	memcpy(blk, img, sizeof(*blk));
	if ((st->ck.emit_err = log_add(st->log, &e, blk, &addr)))
		return 0;
	blk->self = addr;
	blk->crc = 0;
	blk->crc = crc32c(0, blk, FMT_BLOCK);
	return addr;
}

/* The record: header, one fmt_vol per volume, the segment bitmap. */
static void encode_record(struct store *st, uint8_t *rec)
{
	struct fmt_ckpt *h = (struct fmt_ckpt *)rec;
	h->magic = FMT_CKPT_MAGIC;
	h->version = FMT_VERSION;
	h->lsn = log_lsn(st->log);
	h->next_vol_id = st->vt.next_id;
	h->nvols = st->vt.n;
	h->nsegs = st->nsegs;
	h->head_seg = log_head_seg(st->log);
	struct fmt_vol *fv = (struct fmt_vol *)(rec + sizeof(*h));
	for (struct volume *v = st->vt.list; v; v = v->next, fv++) {
		fv->id = v->id;
		fv->size = v->size;
		fv->root = v->tree.root ? v->tree.root->disk : 0;
		fv->parent = v->parent_id;
		fv->origin = v->origin_id;
		fv->created = v->created;
		fv->levels = (uint8_t)v->tree.levels;
		fv->flags = v->snapshot ? FMT_VOL_SNAPSHOT : 0;
		snprintf(fv->name, sizeof(fv->name), "%s", v->name);
	}
	uint8_t *bm = (uint8_t *)fv;
	uint64_t head = log_head_seg(st->log), next = log_next_seg(st->log);
	for (uint64_t s = 0; s < st->nsegs; s++)
		if (alloc_seg_live(st->a, s) || s == 0 || s == head || s == next)
			bm[s / 8] |= (uint8_t)(1u << (s % 8));
}

/* A checkpoint made durable in the log but not yet named by the
 * superblock. */
struct pending_ckpt {
	uint64_t sum_addr, lsn;
	uint32_t crc;
	uint64_t addrs[CKPT_MAX_BLOCKS];
	unsigned nblk;
};

/* Write every dirty node, children first. */
static int write_nodes(struct store *st)
{
	struct log *l = st->log;
	int err = log_commit(l);

	st->ck.emit_err = 0;
	for (struct volume *v = st->vt.list; v && !err; v = v->next)
		err = tree_write_dirty(&v->tree, st->a, emit_node, st, &st->ck.img);
	if (err && st->ck.emit_err)
		err = st->ck.emit_err; /* the tree says -EIO for any emit failure */
	/* Whatever was emitted lives in scratch blocks: it reaches the device
	 * before they are reused, even when the log ran out of room (those
	 * nodes are clean now, their new copies referenced: the next
	 * checkpoint names them). */
	int cerr = log_commit(l);
	if (!err || (cerr && cerr != -ENOSPC))
		err = cerr;
	core_scratch_reset(st);
	return err;
}

/* Write the record as one batch; p learns where. */
static int write_record(struct store *st, struct pending_ckpt *p)
{
	struct log *l = st->log;
	uint8_t *rec;
	int err;

	p->nblk = ckpt_record_blocks(st->vt.n, st->nsegs);
	if (p->nblk > CKPT_MAX_BLOCKS)
		return -ENOSPC; /* store_ctl never lets the table grow this far */
	err = log_reserve(l, p->nblk);
	if (err)
		return err;
	rec = calloc(p->nblk, FMT_BLOCK);
	if (!rec)
		return -ENOMEM;
	encode_record(st, rec);
	for (unsigned i = 0; i < p->nblk && !err; i++) {
		struct fmt_entry e = {.type = FMT_E_CKPT, .lba = i, .count = 1};
		err = log_add(l, &e, rec + (size_t)i * FMT_BLOCK, &p->addrs[i]);
	}
	if (!err) {
		p->sum_addr = log_seal(l);
		log_last(l, &p->lsn, &p->crc);
	}
	/* Written before rec goes, even after a failed add (the pending
	 * vector points into it). */
	int cerr = log_commit(l);
	free(rec);
	return err ? err : cerr;
}

/* Make nodes and record durable in the log (not yet named). */
static int ckpt_pre_commit(struct store *st, struct pending_ckpt *p)
{
	int err = write_nodes(st);
	if (!err)
		err = write_record(st, p);
	if (!err)
		err = segio_sync(st->io);
	return err;
}

static void segment_freed(void *arg, uint64_t seg)
{
	struct store *st = arg;
	st->stats.segments_freed++;
}

static void name_in_super(struct fmt_super *sb, const struct pending_ckpt *p)
{
	sb->ckpt_addr = p->sum_addr;
	sb->ckpt_lsn = p->lsn;
	sb->ckpt_crc = p->crc;
}

/* p's blocks: referenced (held in the log) while p is the checkpoint or
 * on its way to becoming it. */
static void pending_refs(struct store *st, const struct pending_ckpt *p, bool take)
{
	void (*fn)(struct alloc *, uint64_t) = take ? alloc_ref : alloc_unref;
	fn(st->a, p->sum_addr);
	for (unsigned i = 0; i < p->nblk; i++)
		fn(st->a, p->addrs[i]);
}

/* p is named by the superblock (whose references p's blocks already
 * hold): the old checkpoint's blocks go. */
static void adopt(struct store *st, const struct pending_ckpt *p)
{
	for (unsigned i = 0; i < st->ck.nblocks; i++)
		alloc_unref(st->a, st->ck.blocks[i]);
	st->ck.blocks[0] = p->sum_addr;
	for (unsigned i = 0; i < p->nblk; i++)
		st->ck.blocks[1 + i] = p->addrs[i];
	st->ck.nblocks = 1 + p->nblk;
	st->ck.lsn = p->lsn;
	st->stats.checkpoints++;
	st->stats.checkpoint_ns += iostats_now() - st->ck.began_ns;
}

/* What the last checkpoint covers: everything logged before now. */
static void covered_now(struct store *st)
{
	st->ck.log_blocks_at = log_blocks_written(st->log);
	st->ck.last = time(NULL);
	st->ck.dirty = false;
}

/* Point the superblock at p; then the old checkpoint's blocks, and the
 * segments that died before p, may go. */
static int ckpt_commit(struct store *st, const struct pending_ckpt *p)
{
	name_in_super(&st->sb, p);
	int err = super_write(st);
	if (err)
		return err;
	pending_refs(st, p, true);
	adopt(st, p);
	/* No reader may still hold an address in a segment about to be free. */
	if (st->wr.running)
		urcu_memb_synchronize_rcu();
	alloc_release_dead(st->a, log_head_seg(st->log), log_next_seg(st->log), segment_freed, st);
	covered_now(st);
	return 0;
}

/* A checkpoint that meets ENOSPC (the space policy keeps room for it, so
 * only a full host filesystem under a pool file gets here) leaves a full
 * pool, not a failed one: the last durable checkpoint and the log after
 * it are intact, and what this one wrote is named by the next. */
static int outcome(struct store *st, int err)
{
	if (err == -ENOSPC) {
		if (!st->ck.full_logged)
			say_warn("checkpoint postponed: no room left in the pool");
		st->ck.full_logged = true;
	} else if (err) {
		core_set_failed(st, err, "checkpoint");
	} else {
		st->ck.full_logged = false;
	}
	return err;
}

int ckpt_write(struct store *st)
{
	struct pending_ckpt p;
	int err;

	ckpt_wait(st);
	if (st->failed)
		return -EIO;
	st->ck.began_ns = iostats_now();
	err = ckpt_pre_commit(st, &p);
	if (!err)
		err = ckpt_commit(st, &p);
	return outcome(st, err);
}

/* ---- the background commit --------------------------------------------- */

/* What the log thread hands the committer and gets back.  The committer
 * touches only the device (a sync and a superblock slot) and RCU. */
struct ckpt_bg {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* work for the committer, or its result */
	bool stop;           /* under lock */
	bool busy;           /* in flight: set and cleared by the log thread */
	bool handed, done;   /* under lock: given to the committer; its part is over */
	int err;             /* under lock: its result */
	struct pending_ckpt p;
	struct fmt_super sb; /* a copy of st->sb naming p */
};

static bool in_flight(const struct store *st)
{
	return st->ck.bg && st->ck.bg->busy;
}

static void *committer_main(void *arg)
{
	struct store *st = arg;
	struct ckpt_bg *bg = st->ck.bg;

	pthread_mutex_lock(&bg->lock);
	for (;;) {
		while (!bg->handed && !bg->stop)
			pthread_cond_wait(&bg->cond, &bg->lock);
		if (!bg->handed)
			break;
		bg->handed = false;
		pthread_mutex_unlock(&bg->lock);
		int err = segio_sync(st->io);
		if (!err)
			err = segio_sb_write(st->io, (unsigned)bg->sb.self, &bg->sb);
		/* No reader may still hold an address in a segment about to
		 * be free (the marked ones died before this started). */
		if (!err)
			urcu_memb_synchronize_rcu();
		pthread_mutex_lock(&bg->lock);
		bg->err = err;
		bg->done = true;
		pthread_cond_broadcast(&bg->cond);
		pthread_mutex_unlock(&bg->lock);
		core_queue_wake(&st->wr.q); /* the log thread finishes it */
		pthread_mutex_lock(&bg->lock);
	}
	pthread_mutex_unlock(&bg->lock);
	return NULL;
}

int ckpt_bg_start(struct store *st)
{
	struct ckpt_bg *bg = calloc(1, sizeof(*bg));
	if (!bg)
		return -ENOMEM;
	pthread_mutex_init(&bg->lock, NULL);
	pthread_cond_init(&bg->cond, NULL);
	st->ck.bg = bg;
	if (pthread_create(&bg->thread, NULL, committer_main, st)) {
		st->ck.bg = NULL;
		pthread_cond_destroy(&bg->cond);
		pthread_mutex_destroy(&bg->lock);
		free(bg);
		return -EAGAIN;
	}
	return 0;
}

void ckpt_bg_stop(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	if (!bg)
		return;
	ckpt_wait(st); /* the log thread has stopped: its part is ours */
	pthread_mutex_lock(&bg->lock);
	bg->stop = true;
	pthread_cond_broadcast(&bg->cond);
	pthread_mutex_unlock(&bg->lock);
	pthread_join(bg->thread, NULL);
	st->ck.bg = NULL;
	pthread_cond_destroy(&bg->cond);
	pthread_mutex_destroy(&bg->lock);
	free(bg);
}

void ckpt_begin(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	int err;

	if (!bg) {
		ckpt_write(st);
		return;
	}
	if (bg->busy || st->failed)
		return;
	st->ck.began_ns = iostats_now();
	err = write_nodes(st);
	if (!err)
		err = write_record(st, &bg->p);
	if (err) {
		outcome(st, err);
		return;
	}
	/* Held from now: the record's segment must not look dead to the
	 * marking below, nor to anyone before the flip. */
	pending_refs(st, &bg->p, true);
	alloc_mark_dead(st->a, log_head_seg(st->log), log_next_seg(st->log));
	bg->sb = st->sb;
	name_in_super(&bg->sb, &bg->p);
	super_seal(&bg->sb);
	covered_now(st);
	bg->busy = true;
	pthread_mutex_lock(&bg->lock);
	bg->handed = true;
	bg->done = false;
	pthread_cond_broadcast(&bg->cond);
	pthread_mutex_unlock(&bg->lock);
}

bool ckpt_ready(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	if (!bg)
		return false;
	pthread_mutex_lock(&bg->lock);
	bool done = bg->done;
	pthread_mutex_unlock(&bg->lock);
	return done;
}

/* The committer is done with bg->p (caller saw bg->done). */
static void finish(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	int err;

	pthread_mutex_lock(&bg->lock);
	err = bg->err;
	bg->done = false;
	pthread_mutex_unlock(&bg->lock);
	bg->busy = false;
	if (err) {
		/* Not named: the last durable checkpoint stays, and the next
		 * one covers what this one did (its nodes are referenced by
		 * the trees; its record goes). */
		pending_refs(st, &bg->p, false);
		alloc_unmark_dead(st->a);
		st->ck.dirty = true;
		outcome(st, err);
		return;
	}
	st->sb = bg->sb;
	adopt(st, &bg->p);
	alloc_release_marked(st->a, segment_freed, st);
	st->ck.full_logged = false;
}

void ckpt_poll(struct store *st)
{
	if (in_flight(st) && ckpt_ready(st))
		finish(st);
}

void ckpt_wait(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	if (!in_flight(st))
		return;
	pthread_mutex_lock(&bg->lock);
	while (!bg->done)
		pthread_cond_wait(&bg->cond, &bg->lock);
	pthread_mutex_unlock(&bg->lock);
	finish(st);
}

/* ---- loading ----------------------------------------------------------- */

/* The node cache's reader: one node block, validated.  Any thread (a
 * reader thread meeting a node not in memory, or the opener). */
static int read_node(void *arg, uint64_t addr, struct fmt_node *out)
{
	struct store *st = arg;
	int err = segio_read_block(st->io, out, addr);
	if (err)
		return err;
	uint32_t crc = out->crc;
	out->crc = 0;
	if (out->magic != FMT_NODE_MAGIC || out->self != addr || crc32c(0, out, FMT_BLOCK) != crc ||
	    out->level > 3)
		return -EILSEQ;
	out->crc = crc;
	return 0;
}

/* Read the record's n blocks carried by the checkpoint summary at addr and
 * check them against their entries.  0, -EILSEQ or -errno. */
static int read_record(struct store *st, const struct fmt_summary *sum, uint64_t addr, uint8_t *rec)
{
	struct log_walk w = {0};
	const struct fmt_entry *e;
	uint64_t blk;
	unsigned i = 0;

	while ((e = log_entry_next(sum, addr, &w, &blk))) {
		if (e->type != FMT_E_CKPT || e->lba != i || !blk)
			return -EILSEQ;
		uint8_t *b = rec + (size_t)i * FMT_BLOCK;
		int err = segio_read_block(st->io, b, blk);
		if (err)
			return err;
		if (crc32c(0, b, FMT_BLOCK) != e->crc)
			return -EILSEQ;
		i++;
	}
	return 0;
}

/* Make the record's volumes and load their trees (into the pool's node
 * cache, made here: every open loads a checkpoint). */
static int load_volumes(struct store *st, const struct fmt_ckpt *h, const struct fmt_vol *fv,
                        const char **why)
{
	int err = 0;

	if (!st->nc)
		st->nc = tree_cache_new(st->a, read_node, st);
	if (!st->nc)
		return -ENOMEM;
	for (uint64_t i = 0; i < h->nvols && !err; i++, fv++) {
		if (!memchr(fv->name, 0, sizeof(fv->name)) || vtab_find_id(st, fv->id) ||
		    fv->levels != vtab_levels_for_size(fv->size) || !fv->levels) {
			err = -EILSEQ;
			break;
		}
		struct volume *v = vtab_volume_new(fv->id, fv->name, fv->size, fv->created);
		if (!v) {
			err = -ENOMEM;
			break;
		}
		v->snapshot = fv->flags & FMT_VOL_SNAPSHOT;
		v->parent_id = fv->parent;
		v->origin_id = fv->origin;
		vtab_link(st, v);
		err = tree_load(st->nc, &v->tree, fv->root, fv->levels);
		if (err == -EILSEQ)
			*why = "damaged block tree node (checksum, address or level)";
	}
	return err;
}

int ckpt_load(struct store *st, struct fmt_summary *sum, const char **why)
{
	uint64_t addr = st->sb.ckpt_addr;
	const char *reason = NULL;
	uint8_t *rec = NULL;
	int err = -EILSEQ;

	if (addr >= alloc_nblocks(st->a) || alloc_seg_of(addr) == 0)
		goto out;
	err = segio_read_block(st->io, sum, addr);
	if (err)
		goto out;
	err = -EILSEQ;
	if (log_summary_valid(sum, addr) || sum->crc != st->sb.ckpt_crc ||
	    sum->lsn != st->sb.ckpt_lsn || sum->nblocks == 0)
		goto out;
	unsigned n = sum->nblocks;
	rec = malloc((size_t)n * FMT_BLOCK);
	err = rec ? read_record(st, sum, addr, rec) : -ENOMEM;
	if (err)
		goto out;
	const struct fmt_ckpt *h = (const struct fmt_ckpt *)rec;
	if (h->magic != FMT_CKPT_MAGIC || h->nsegs != st->nsegs ||
	    h->nvols > ckpt_max_vols(st->nsegs) ||
	    record_bytes(h->nvols, h->nsegs) > (size_t)n * FMT_BLOCK || !h->head_seg ||
	    h->head_seg >= st->nsegs || sum->next_seg >= st->nsegs) {
		err = -EILSEQ;
		goto out;
	}
	st->vt.next_id = h->next_vol_id;
	const struct fmt_vol *fv = (const struct fmt_vol *)(rec + sizeof(*h));
	err = load_volumes(st, h, fv, &reason);
	if (err)
		goto out;
	/* The bitmap must cover every segment the trees use. */
	const uint8_t *bm = (const uint8_t *)(fv + h->nvols);
	for (uint64_t s = 1; s < st->nsegs; s++) {
		bool used = bm[s / 8] & (1u << (s % 8));
		if (alloc_seg_live(st->a, s) && !used)
			st->ck.bitmap_mismatch++;
		if (used)
			alloc_mark_used(st->a, s);
	}
	alloc_mark_used(st->a, h->head_seg);
	st->ck.blocks[0] = addr;
	alloc_ref(st->a, addr);
	for (unsigned i = 0; i < n; i++) {
		st->ck.blocks[1 + i] = addr + 1 + i;
		alloc_ref(st->a, addr + 1 + i);
	}
	st->ck.nblocks = 1 + n;
	st->ck.lsn = sum->lsn;
out:
	if (err)
		*why = reason           ? reason
		       : err == -EILSEQ ? "damaged checkpoint record"
		       : err == -ENOMEM ? "out of memory"
		                        : "cannot read the checkpoint";
	free(rec);
	return err;
}
