/* store_ctl.c — control operations: one function per operation, each run
 * as a job on the log thread (so it is ordered with the data path), made
 * durable before it returns; and the listings (list, info, stats).
 *
 * A change is validated against the volume table, logged as one op block,
 * synced, and only then applied to the table (vtab_apply_op, which replay
 * uses too), so what a caller was told succeeded survives any crash.
 *
 * Layer: the top of the store beside store.c (control.c calls it); over
 * writer (job queue), space, ckpt, vtab and core.  Locks: jobs run on the
 * log thread; list and info run on the caller's thread under vt.lock and
 * RCU, so the walk for "unique" never holds up writes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#include "say.h"
#include "store_int.h"

struct ctl {
	struct store_req req; /* first: the job */
	struct store *st;
	const char *a, *b;
	uint64_t size;
	struct store_stats *stats;
};

/* Log op, sync, then apply it to the table.  Log thread. */
static int ctl_log_op(struct store *st, struct fmt_op *op)
{
	bool grows = op->kind == FMT_OP_VOL_CREATE || op->kind == FMT_OP_SNAP_CREATE ||
	             op->kind == FMT_OP_CLONE;
	struct fmt_entry e = {.vol = (uint32_t)op->id, .type = FMT_E_OP, .count = 1};
	uint64_t addr;
	int err;

	if (st->failed)
		return -EIO;
	if (st->read_only)
		return -EROFS;
	err = space_check_ctl(st, grows);
	if (err)
		return err;
	op->magic = FMT_OP_MAGIC;
	op->created = (uint64_t)time(NULL);
	err = log_add(st->log, &e, op, &addr);
	if (!err)
		err = log_commit(st->log);
	if (!err)
		err = segio_sync(st->io);
	if (err) {
		if (err != -ENOSPC)
			core_set_failed(st, err, "control operation");
		return err == -ENOSPC ? err : -EIO;
	}
	st->ck.dirty = true;
	return vtab_apply_op(st, op);
}

/* Room in the checkpoint record for one more volume, and an id for it?
 * Log entries carry a volume id in 32 bits (format.h): ids are never
 * reused, so a pool makes at most 2^32 - 1 volumes, snapshots and clones
 * in its life. */
static int ctl_room_for_volume(struct store *st)
{
	if (st->vt.next_id > UINT32_MAX)
		return -EOVERFLOW;
	return st->vt.n + 1 > ckpt_max_vols(st->nsegs) ? -ENOSPC : 0;
}

static int ctl_vol_create(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct fmt_op op = {.kind = FMT_OP_VOL_CREATE};
	int err;

	if (!names_part_valid(c->a) || c->size % 512 || !vtab_levels_for_size(c->size))
		return -EINVAL;
	if (vtab_find_base(st, c->a))
		return -EEXIST;
	if ((err = ctl_room_for_volume(st)))
		return err;
	op.id = st->vt.next_id;
	op.size = c->size;
	snprintf(op.name, sizeof(op.name), "%s", c->a);
	return ctl_log_op(st, &op);
}

/* Delete a volume (no snapshots left) or a snapshot (no clones left). */
static int ctl_vol_delete(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct fmt_op op = {.kind = FMT_OP_VOL_DELETE};
	int err;

	struct volume *v = vtab_find_export(st, c->a, &err);
	if (!v)
		return err;
	if (!v->snapshot && vtab_snapshots(st, v))
		return -ENOTEMPTY;
	/* A clone's history runs through its origin snapshot. */
	if (v->snapshot && vtab_clones(st, v, NULL, 0))
		return -EBUSY;
	err = vtab_lock_volume(st, v);
	if (err)
		return err;
	op.id = v->id;
	err = ctl_log_op(st, &op);
	if (err)
		vtab_unlock_volume(st, v);
	return err;
}

/* c->a as "vol@snap": the volume (must exist) and the snapshot part. */
static int ctl_snap_target(struct store *st, const char *name, struct volume **vol, char *snap)
{
	char vn[NAMES_PART_MAX + 1];
	int err = names_split(name, vn, snap);
	if (err || !snap[0])
		return -EINVAL;
	*vol = vtab_find_base(st, vn);
	return *vol ? 0 : -ENOENT;
}

static int ctl_snap_create(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct fmt_op op = {.kind = FMT_OP_SNAP_CREATE};
	char sn[NAMES_PART_MAX + 1];
	struct volume *v;

	int err = ctl_snap_target(st, c->a, &v, sn);
	if (err)
		return err;
	if ((err = ctl_room_for_volume(st)))
		return err;
	if (vtab_find_snap(st, v->id, sn))
		return -EEXIST;
	op.id = st->vt.next_id;
	op.src = v->id;
	snprintf(op.name, sizeof(op.name), "%s", sn);
	return ctl_log_op(st, &op);
}

static int ctl_clone(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct fmt_op op = {.kind = FMT_OP_CLONE};
	char sn[NAMES_PART_MAX + 1];
	struct volume *v, *src;

	int err = ctl_snap_target(st, c->a, &v, sn);
	if (err)
		return err;
	if ((err = ctl_room_for_volume(st)))
		return err;
	src = vtab_find_snap(st, v->id, sn);
	if (!src)
		return -ENOENT;
	if (!names_part_valid(c->b))
		return -EINVAL;
	if (vtab_find_base(st, c->b))
		return -EEXIST;
	op.id = st->vt.next_id;
	op.src = src->id;
	snprintf(op.name, sizeof(op.name), "%s", c->b);
	return ctl_log_op(st, &op);
}

static int ctl_rollback(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct fmt_op op = {.kind = FMT_OP_ROLLBACK};
	char sn[NAMES_PART_MAX + 1];
	struct volume *v, *src;

	int err = ctl_snap_target(st, c->a, &v, sn);
	if (err)
		return err;
	src = vtab_find_snap(st, v->id, sn);
	if (!src)
		return -ENOENT;
	err = vtab_lock_volume(st, v);
	if (err)
		return err;
	op.id = v->id;
	op.src = src->id;
	err = ctl_log_op(st, &op);
	vtab_unlock_volume(st, v);
	return err;
}

static int ctl_checkpoint(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	return c->st->read_only ? -EROFS : ckpt_write(c->st);
}

static int ctl_stats(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct store_stats *out = c->stats;

	*out = st->stats;
	out->pool_bytes = st->nsegs * FMT_SEG_BYTES;
	out->segment_bytes = FMT_SEG_BYTES;
	out->segments = st->nsegs;
	out->segments_free = alloc_nfree(st->a);
	out->segments_pending = alloc_dead_segs(st->a);
	out->blocks_live = alloc_live_blocks(st->a);
	out->log_lsn = st->log ? log_lsn(st->log) : 0;
	out->checkpoint_lsn = st->ck.lsn;
	out->batch_blocks = st->log ? log_blocks_written(st->log) : 0;
	out->failed = st->failed;
	out->read_only = st->read_only;
	out->compact_skipped_bad = compact_bad_blocks(st->sp.compact);
	return 0;
}

/* Run the job on the log thread, or right here when there is none (a
 * read-only store, or before threads start). */
static void ctl_submit(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	if (c->st->wr.running)
		writer_enqueue(c->st, r);
	else
		core_complete(r, r->job(r));
}

static int ctl_call(struct store *st, struct ctl *c, int (*job)(struct store_req *))
{
	c->st = st;
	c->req.job = job;
	return core_submit_wait(&c->req, ctl_submit);
}

int store_vol_create(struct store *st, const char *name, uint64_t size)
{
	struct ctl c = {.a = name, .size = size};
	return ctl_call(st, &c, ctl_vol_create);
}

int store_vol_delete(struct store *st, const char *name)
{
	struct ctl c = {.a = name};
	return ctl_call(st, &c, ctl_vol_delete);
}

int store_snap_create(struct store *st, const char *vol_at_snap)
{
	struct ctl c = {.a = vol_at_snap};
	return ctl_call(st, &c, ctl_snap_create);
}

int store_snap_delete(struct store *st, const char *vol_at_snap)
{
	if (!strchr(vol_at_snap, '@'))
		return -EINVAL;
	return store_vol_delete(st, vol_at_snap);
}

int store_clone(struct store *st, const char *vol_at_snap, const char *new_vol)
{
	struct ctl c = {.a = vol_at_snap, .b = new_vol};
	return ctl_call(st, &c, ctl_clone);
}

int store_rollback(struct store *st, const char *vol_at_snap)
{
	struct ctl c = {.a = vol_at_snap};
	return ctl_call(st, &c, ctl_rollback);
}

int store_checkpoint(struct store *st)
{
	struct ctl c = {0};
	return ctl_call(st, &c, ctl_checkpoint);
}

static int ctl_ping(struct store_req *r)
{
	(void)r;
	return 0;
}

int store_ping(struct store *st)
{
	struct ctl c = {0};
	return ctl_call(st, &c, ctl_ping);
}

static int ctl_stall(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	say_warn("log thread: stalled for %llu s on request (a test fault)",
	         (unsigned long long)c->size);
	sleep((unsigned)c->size);
	return 0;
}

int store_stall_log(struct store *st, unsigned secs)
{
	struct ctl c = {.size = secs};
	return ctl_call(st, &c, ctl_stall);
}

/* Runs on the log thread (the counters' only writer) for a consistent view. */
void store_get_stats(struct store *st, struct store_stats *out)
{
	struct ctl c = {.stats = out};
	ctl_call(st, &c, ctl_stats);
}

/* ---- listings (caller's thread) ---------------------------------------- */

/* Describe v.  Caller holds vt.lock (the list cannot change) and
 * rcu_read_lock (the tree's nodes cannot go away). */
static void fill_info_locked(struct store *st, struct volume *v, struct store_vol_info *i)
{
	memset(i, 0, sizeof(*i));
	vtab_full_name(st, v, i->name, sizeof(i->name));
	i->id = v->id;
	i->size = v->size;
	i->snapshot = v->snapshot;
	i->created = v->created;
	tree_count(&v->tree, st->a, &i->mapped_blocks, &i->unique_blocks);
	if (v->origin_id) {
		struct volume *o = vtab_find_id(st, v->origin_id);
		if (o)
			vtab_full_name(st, o, i->origin, sizeof(i->origin));
		else
			snprintf(i->origin, sizeof(i->origin), "(deleted)");
	}
	i->attached = v->attached;
}

int store_list(struct store *st, struct store_vol_info **out, size_t *n)
{
	bool entered = reader_rcu_enter();
	size_t k = 0;

	pthread_mutex_lock(&st->vt.lock);
	struct store_vol_info *infos = calloc(st->vt.n ? st->vt.n : 1, sizeof(*infos));
	if (infos) {
		urcu_memb_read_lock();
		for (struct volume *v = st->vt.list; v; v = v->next)
			fill_info_locked(st, v, &infos[k++]);
		urcu_memb_read_unlock();
	}
	pthread_mutex_unlock(&st->vt.lock);
	reader_rcu_leave(entered);
	if (!infos)
		return -ENOMEM;
	*out = infos;
	*n = k;
	return 0;
}

int store_info(struct store *st, const char *name, struct store_vol_info *out)
{
	bool entered = reader_rcu_enter();
	int err;

	pthread_mutex_lock(&st->vt.lock);
	struct volume *v = vtab_find_export(st, name, &err);
	if (v) {
		urcu_memb_read_lock();
		fill_info_locked(st, v, out);
		urcu_memb_read_unlock();
	}
	pthread_mutex_unlock(&st->vt.lock);
	reader_rcu_leave(entered);
	return v ? 0 : err;
}

/* ---- explaining refusals (caller's thread) -------------------------------- */

static void why_subject(struct store_why *why, enum store_why_code code, const char *subject)
{
	why->code = code;
	snprintf(why->subject, sizeof(why->subject), "%s", subject);
}

/* EBUSY or ENOTEMPTY: attached, snapshots left, clones left, or another
 * request holds it.  Caller holds vt.lock. */
static void explain_busy_locked(struct store *st, enum store_ctl_op op, const char *name,
                                const char *vol, int err, struct store_why *why)
{
	int e;
	struct volume *v = vtab_find_export(st, name, &e);
	struct volume *base = vtab_find_base(st, vol);
	unsigned nsnap = v && !v->snapshot ? vtab_snapshots(st, v) : 0;

	if (op == STORE_OP_ROLLBACK && base && base->attached) {
		why_subject(why, STORE_WHY_ATTACHED, vol);
		why->count = base->attached;
		return;
	}
	if (v && v->snapshot && op == STORE_OP_SNAP_DELETE &&
	    (why->count = vtab_clones(st, v, why->names, STORE_WHY_NAMES))) {
		why_subject(why, STORE_WHY_HAS_CLONES, name);
		return;
	}
	if (v && (err != -ENOTEMPTY || !nsnap) && v->attached) {
		why_subject(why, STORE_WHY_ATTACHED, name);
		why->count = v->attached;
	} else if (nsnap) {
		why_subject(why, STORE_WHY_HAS_SNAPSHOTS, name);
		why->count = nsnap;
	} else {
		why_subject(why, STORE_WHY_BUSY, name);
	}
}

void store_explain(struct store *st, enum store_ctl_op op, const char *name, const char *new_name,
                   int err, struct store_why *why)
{
	char vol[NAMES_PART_MAX + 1] = "", snap[NAMES_PART_MAX + 1] = "";

	memset(why, 0, sizeof(*why));
	names_split(name, vol, snap);
	switch (err) {
	case -EEXIST:
		why_subject(why, STORE_WHY_EXISTS, new_name ? new_name : name);
		return;
	case -ENOSPC:
		why_subject(why, STORE_WHY_POOL_FULL, name);
		return;
	case -EIO:
		why_subject(why, STORE_WHY_POOL_FAILED, name);
		return;
	case -EROFS:
		why_subject(why, STORE_WHY_READ_ONLY, name);
		return;
	case -ENOENT:
	case -EBUSY:
	case -ENOTEMPTY:
		break;
	default:
		why_subject(why, STORE_WHY_OTHER, name);
		return;
	}
	pthread_mutex_lock(&st->vt.lock);
	if (err != -ENOENT)
		explain_busy_locked(st, op, name, vol, err, why);
	else if (snap[0] && vtab_find_base(st, vol))
		why_subject(why, STORE_WHY_NO_SNAPSHOT, name);
	else
		why_subject(why, STORE_WHY_NO_VOLUME, vol);
	pthread_mutex_unlock(&st->vt.lock);
}
