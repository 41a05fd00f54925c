/* store_ctl.c — control operations: one function per operation, each run
 * as a job on the log thread (so it is ordered with the data path), made
 * durable before it returns; and the listings (list, info, stats, and
 * list pages: one page of ids above a cursor, for paged control lists).
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
	unsigned flags;
	struct store_stats *stats;
	int64_t moved;
};

/* Before the first op of a kind format version 1 does not know: raise the
 * superblock's version, durably, so that an older cowbd refuses the pool
 * ("newer format") rather than meet an op it cannot replay.  The
 * superblock still names the same checkpoint; none is in flight (a
 * background one holds a copy of the superblock).  Log thread. */
static int ctl_need_version(struct store *st, uint32_t version)
{
	uint32_t was = st->sb.version;
	int err;

	if (was >= version)
		return 0;
	ckpt_wait(st);
	if (st->failed)
		return -EIO;
	st->sb.version = version;
	err = super_write(st);
	if (err) {
		st->sb.version = was;
		core_set_failed(st, err, "format upgrade");
		return -EIO;
	}
	say_info("pool format upgraded from version %u to %u (volume resize or rename)", was,
	         version);
	return 0;
}

/* Does op make room for more data (a write, for the space policy)? */
static bool ctl_op_grows(struct store *st, const struct fmt_op *op)
{
	const struct volume *v;

	switch (op->kind) {
	case FMT_OP_VOL_CREATE:
	case FMT_OP_SNAP_CREATE:
	case FMT_OP_CLONE:
		return true;
	case FMT_OP_VOL_RESIZE:
		v = vtab_find_id(st, op->id);
		return v && op->size > v->size;
	}
	return false;
}

/* Log op, sync, then apply it to the table.  Log thread. */
static int ctl_log_op(struct store *st, struct fmt_op *op)
{
	struct fmt_entry e = {.vol = (uint32_t)op->id, .type = FMT_E_OP, .count = 1};
	uint64_t addr;
	int err;

	if (st->failed)
		return -EIO;
	if (st->read_only)
		return -EROFS;
	err = space_check_ctl(st, ctl_op_grows(st, op));
	if (err)
		return err;
	if (op->kind >= FMT_OP_VOL_RESIZE && (err = ctl_need_version(st, FMT_VERSION_V2)))
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

void store_resize_range(uint64_t size, uint64_t *lo, uint64_t *hi)
{
	unsigned levels = vtab_levels_for_size(size);
	uint64_t span = FMT_BLOCK;

	for (unsigned l = 1; l < levels; l++)
		span *= FMT_FANOUT;
	*lo = levels > 1 ? span + 512 : 512;
	*hi = levels ? span * FMT_FANOUT : 0;
}

static int ctl_vol_resize(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct fmt_op op = {.kind = FMT_OP_VOL_RESIZE};
	struct volume *v;
	bool shrink;
	int err;

	if (!names_part_valid(c->a) || c->size % 512 || !vtab_levels_for_size(c->size))
		return -EINVAL;
	v = vtab_find_base(st, c->a);
	if (!v)
		return -ENOENT;
	if (c->size == v->size)
		return 0;
	if (vtab_levels_for_size(c->size) != v->tree.levels)
		return -ERANGE;
	shrink = c->size < v->size;
	if (shrink && !(c->flags & STORE_RESIZE_SHRINK))
		return -EPERM;
	if (shrink && c->size % FMT_BLOCK)
		return -EINVAL;
	if (shrink && (err = vtab_lock_volume(st, v)))
		return err;
	op.id = v->id;
	op.size = c->size;
	snprintf(op.name, sizeof(op.name), "%s", v->name);
	err = ctl_log_op(st, &op);
	if (shrink)
		vtab_unlock_volume(st, v);
	return err;
}

static int ctl_vol_rename(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;
	struct fmt_op op = {.kind = FMT_OP_VOL_RENAME};
	struct volume *v;
	int err;

	if (!names_part_valid(c->a) || !names_part_valid(c->b))
		return -EINVAL;
	v = vtab_find_base(st, c->a);
	if (!v)
		return -ENOENT;
	if (vtab_find_base(st, c->b))
		return -EEXIST;
	err = vtab_lock_family(st, v);
	if (err)
		return err;
	op.id = v->id;
	snprintf(op.name, sizeof(op.name), "%s", c->b);
	err = ctl_log_op(st, &op);
	vtab_unlock_family(st, v);
	return err;
}

/* Dead segments go with the pass's checkpoint, or with one of their own
 * when nothing is worth moving. */
static int ctl_compact(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	struct store *st = c->st;

	if (st->failed)
		return -EIO;
	if (st->read_only)
		return -EROFS;
	c->moved = space_compact(st);
	if (c->moved == 0 && alloc_dead_segs(st->a))
		return ckpt_write(st);
	return c->moved < 0 ? (int)c->moved : 0;
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
	/* the syncer adds to these beside the log thread */
	out->syncs = __atomic_load_n(&st->stats.syncs, __ATOMIC_RELAXED);
	out->client_write_bytes = __atomic_load_n(&st->stats.client_write_bytes, __ATOMIC_RELAXED);
	out->pool_bytes = st->nsegs * FMT_SEG_BYTES;
	out->segment_bytes = FMT_SEG_BYTES;
	out->segments = st->nsegs;
	out->segments_free = alloc_nfree(st->a);
	out->segments_pending = alloc_dead_segs(st->a);
	out->blocks_live = alloc_live_blocks(st->a);
	out->log_lsn = st->log ? log_lsn(st->log) : 0;
	out->checkpoint_lsn = st->ck.lsn;
	out->batch_blocks = st->log ? log_blocks_written(st->log) : 0;
	out->summary_rewrites = st->log ? log_rewrites(st->log) : 0;
	out->failed = st->failed;
	out->read_only = st->read_only;
	out->compact_skipped_bad = compact_bad_blocks(st->sp.compact);
	out->compact_ns = compact_ns(st->sp.compact);
	out->bytes_written = segio_written(st->io);
	out->format_version = st->sb.version;
	out->count_pages = alloc_pages_resident(st->a);
	out->count_pages_evicted = alloc_pages_evicted(st->a);
	if (st->nc) {
		struct tree_cache_stats cs;
		tree_cache_stats(st->nc, &cs);
		out->cache_nodes = cs.resident;
		out->cache_bytes = cs.bytes;
		out->cache_bound = cs.bound;
		out->cache_loads = cs.loads;
		out->cache_evictions = cs.evictions;
	}
	return 0;
}

/* Run the job on the log thread, or right here when there is none (a
 * read-only store, or before threads start).  Once the log thread has
 * stopped (running stays true) the queue refuses it: -ESHUTDOWN at once. */
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

int store_vol_resize(struct store *st, const char *name, uint64_t size, unsigned flags)
{
	struct ctl c = {.a = name, .size = size, .flags = flags};
	return ctl_call(st, &c, ctl_vol_resize);
}

int store_vol_rename(struct store *st, const char *old_name, const char *new_name)
{
	struct ctl c = {.a = old_name, .b = new_name};
	return ctl_call(st, &c, ctl_vol_rename);
}

int64_t store_compact(struct store *st)
{
	struct ctl c = {0};
	int err = ctl_call(st, &c, ctl_compact);
	return err ? err : c.moved;
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

uint64_t store_sync_age_us(struct store *st)
{
	uint64_t since = __atomic_load_n(&st->wr.sync_since, __ATOMIC_RELAXED), now = iostats_now();
	return since && now > since ? (now - since) / 1000 : 0;
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

/* Runs on the log thread (the counters' only writer) for a consistent view;
 * zeros once it has stopped. */
void store_get_stats(struct store *st, struct store_stats *out)
{
	struct ctl c = {.stats = out};
	if (ctl_call(st, &c, ctl_stats))
		memset(out, 0, sizeof(*out));
}

/* ---- listings (caller's thread) ---------------------------------------- */

struct count {
	const struct alloc *a;
	uint64_t mapped, unique;
};

static int count_walk(const struct tree *t, bool nowait, void *arg)
{
	struct count *c = arg;
	return tree_count(t, c->a, nowait, &c->mapped, &c->unique);
}

/* Describe *v, its block counts too if counts.  Caller holds vt.lock and
 * rcu_read_lock; a node not in memory is read with vt.lock dropped
 * (reader_walk_locked: *v becomes the record found again, NULL if it was
 * deleted meanwhile: -ENOENT).  0, -ENOENT or -EIO. */
static int fill_info_locked(struct store *st, struct volume **pv, bool counts,
                            struct store_vol_info *i)
{
	struct count c = {.a = st->a};
	int err = counts ? reader_walk_locked(st, (*pv)->id, pv, count_walk, &c) : 0;
	struct volume *v = *pv;
	if (err)
		return err;
	memset(i, 0, sizeof(*i));
	i->mapped_blocks = c.mapped;
	i->unique_blocks = c.unique;
	vtab_full_name(st, v, i->name, sizeof(i->name));
	i->id = v->id;
	i->size = v->size;
	i->snapshot = v->snapshot;
	i->created = v->created;
	if (v->origin_id) {
		struct volume *o = vtab_find_id(st, v->origin_id);
		if (o)
			vtab_full_name(st, o, i->origin, sizeof(i->origin));
		else
			snprintf(i->origin, sizeof(i->origin), "(deleted)");
	}
	i->attached = v->attached;
	return 0;
}

/* The records at the start, in table order; one deleted while the list
 * is made is left out.  vt.lock may be dropped to read a record's nodes
 * (fill_info_locked), so each record is found by its id: the next in the
 * list if nothing changed (O(1)), else by a search.  0, -ENOMEM, or -EIO
 * (a record's root kept changing under the walk: reader_walk_locked). */
static int list(struct store *st, bool counts, struct store_vol_info **out, size_t *n)
{
	bool entered = reader_rcu_enter();
	size_t k = 0, nids = 0;
	int err = 0;

	pthread_mutex_lock(&st->vt.lock);
	size_t cap = st->vt.n ? st->vt.n : 1;
	struct store_vol_info *infos = calloc(cap, sizeof(*infos));
	uint64_t *ids = calloc(cap, sizeof(*ids));
	if (!infos || !ids)
		err = -ENOMEM;
	for (struct volume *v = st->vt.list; v && !err; v = v->next)
		ids[nids++] = v->id;
	struct volume *prev = NULL;
	for (size_t j = 0; j < nids && !err; j++) {
		struct volume *v = prev && prev->next && prev->next->id == ids[j]
		                       ? prev->next
		                       : vtab_find_id(st, ids[j]);
		urcu_memb_read_lock();
		err = v ? fill_info_locked(st, &v, counts, &infos[k]) : -ENOENT;
		urcu_memb_read_unlock();
		k += !err;
		if (err == -ENOENT)
			err = 0; /* deleted meanwhile: not listed */
		prev = v;
	}
	pthread_mutex_unlock(&st->vt.lock);
	reader_rcu_leave(entered);
	free(ids);
	if (err) {
		free(infos);
		return err;
	}
	*out = infos;
	*n = k;
	return 0;
}

int store_list(struct store *st, struct store_vol_info **out, size_t *n)
{
	return list(st, true, out, n);
}

int store_list_names(struct store *st, struct store_vol_info **out, size_t *n)
{
	return list(st, false, out, n);
}

int store_info(struct store *st, const char *name, struct store_vol_info *out)
{
	bool entered = reader_rcu_enter();
	int err;

	pthread_mutex_lock(&st->vt.lock);
	struct volume *v = vtab_find_export(st, name, &err);
	if (v) {
		urcu_memb_read_lock();
		err = fill_info_locked(st, &v, true, out); /* -ENOENT: deleted meanwhile */
		urcu_memb_read_unlock();
	}
	pthread_mutex_unlock(&st->vt.lock);
	reader_rcu_leave(entered);
	return err;
}

/* ---- listing one page (caller's thread) --------------------------------- */

/* A page is the first max entries above the cursor among those asked
 * for, taken from the table's index of that kind (vtab_walk): O(log n)
 * to find the first, O(1) per entry after it, whatever the table holds
 * besides; names, origins and snapshot counts are O(1) lookups. */
struct list_page {
	struct volume **v; /* ascending ids */
	size_t n, max;
	bool more;
};

static bool list_take(struct volume *v, void *arg)
{
	struct list_page *p = arg;
	if (p->n == p->max) {
		p->more = true;
		return false;
	}
	p->v[p->n++] = v;
	return true;
}

/* Describe the page's entry v but for unique_blocks (the mapped count is
 * the root's: nothing is read).  Caller holds rcu_read_lock and vt.lock. */
static void list_fill_locked(struct store *st, struct volume *v, struct store_vol_info *i)
{
	memset(i, 0, sizeof(*i));
	vtab_full_name(st, v, i->name, sizeof(i->name));
	i->id = v->id;
	i->size = v->size;
	i->snapshot = v->snapshot;
	i->created = v->created;
	i->attached = v->attached;
	i->nsnapshots = v->snapshot ? 0 : vtab_snapshots(st, v);
	tree_count(&v->tree, st->a, true, &i->mapped_blocks, NULL);
	if (v->origin_id) {
		struct volume *o = vtab_find_id(st, v->origin_id);
		if (o)
			vtab_full_name(st, o, i->origin, sizeof(i->origin));
		else
			snprintf(i->origin, sizeof(i->origin), "(deleted)");
	}
}

/* count_walk's answer, and whether it dropped vt.lock to read a node. */
struct list_count {
	struct count c;
	bool dropped;
};

static int list_count_walk(const struct tree *t, bool nowait, void *arg)
{
	struct list_count *lc = arg;
	lc->dropped |= !nowait;
	return count_walk(t, nowait, &lc->c);
}

/* vt.lock was dropped: find the records of out[from..] again (NULL:
 * deleted meanwhile).  vt.lock held. */
static void list_refind_locked(struct store *st, struct list_page *p, size_t from,
                               const struct store_vol_info *out)
{
	for (size_t i = from; i < p->n; i++)
		p->v[i] = vtab_find_id(st, out[i].id);
}

/* unique_blocks of each entry: a walk of the nodes only it holds, with
 * vt.lock dropped for a node not in memory (reader_walk_locked), after
 * which the records left are found again.  An entry deleted meanwhile
 * keeps its place, unique 0.  Caller holds rcu_read_lock and vt.lock.
 * 0 or -EIO (a tree that kept changing under the walk). */
static int list_unique_locked(struct store *st, struct list_page *p, struct store_vol_info *out)
{
	for (size_t i = 0; i < p->n; i++) {
		struct list_count lc = {.c = {.a = st->a}};
		struct volume *v = p->v[i];
		int err = v ? reader_walk_locked(st, out[i].id, &v, list_count_walk, &lc) : 0;

		if (v && !err)
			out[i].unique_blocks = lc.c.unique;
		if (err && err != -ENOENT)
			return err;
		if (lc.dropped)
			list_refind_locked(st, p, i + 1, out);
	}
	return 0;
}

/* Pick, name and describe the page.  A volume's snapshots are the only
 * entries a volume filters (a volume has no volumes).  vt.lock held. */
static int list_page_locked(struct store *st, const struct store_list_req *q, struct list_page *p,
                            struct store_vol_info *out)
{
	struct volume *pv = NULL;

	if (q->volume && !(pv = vtab_find_base(st, q->volume)))
		return -ENOENT;
	if (!pv || q->snapshots)
		vtab_walk(st, pv, q->snapshots, q->after, list_take, p);
	urcu_memb_read_lock();
	for (size_t i = 0; i < p->n; i++)
		list_fill_locked(st, p->v[i], &out[i]);
	int err = q->flags & STORE_LIST_FIGURES ? list_unique_locked(st, p, out) : 0;
	urcu_memb_read_unlock();
	return err;
}

int store_list_page(struct store *st, const struct store_list_req *q, struct store_vol_info *out,
                    size_t *n, bool *more)
{
	struct list_page p = {.max = q->max};
	bool entered;
	int err;

	if (!q->max || q->max > STORE_LIST_PAGE_MAX || (q->volume && !names_part_valid(q->volume)))
		return -EINVAL;
	p.v = calloc(q->max, sizeof(*p.v));
	if (!p.v)
		return -ENOMEM;
	entered = reader_rcu_enter();
	pthread_mutex_lock(&st->vt.lock);
	err = list_page_locked(st, q, &p, out);
	pthread_mutex_unlock(&st->vt.lock);
	reader_rcu_leave(entered);
	*n = err ? 0 : p.n;
	*more = !err && p.more;
	free(p.v);
	return err;
}

/* ---- explaining refusals (caller's thread) -------------------------------- */

static void why_subject(struct store_why *why, enum store_why_code code, const char *subject)
{
	why->code = code;
	snprintf(why->subject, sizeof(why->subject), "%s", subject);
}

/* vtab_walk: the first record attached into *arg. */
static bool first_attached(struct volume *v, void *arg)
{
	if (v->attached)
		*(struct volume **)arg = v;
	return !v->attached;
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
	if (v && !v->snapshot && op == STORE_OP_VOL_RENAME) {
		struct volume *a = v->attached ? v : NULL;
		if (!a)
			vtab_walk(st, v, true, 0, first_attached, &a);
		if (a) {
			vtab_full_name(st, a, why->subject, sizeof(why->subject));
			why->code = STORE_WHY_ATTACHED;
			why->count = a->attached;
			return;
		}
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

void store_explain_resize(struct store *st, const char *name, uint64_t new_size, int err,
                          struct store_why *why)
{
	struct store_vol_info vi;

	store_explain(st, STORE_OP_VOL_RESIZE, name, NULL, err, why);
	if (store_info(st, name, &vi))
		return;
	why->size = vi.size;
	store_resize_range(vi.size, &why->lo, &why->hi);
	if (err == -EPERM)
		why_subject(why, STORE_WHY_SHRINK, name);
	else if (err == -ERANGE)
		why_subject(why, STORE_WHY_RANGE, name);
	else if (err == -EINVAL && new_size < vi.size && new_size % STORE_BLOCK_SIZE)
		why_subject(why, STORE_WHY_UNALIGNED, name);
}
