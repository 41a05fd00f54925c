/* diff.c — changed blocks between two points of a volume's history
 * (store_diff, for `cowctl diff`) and the per-block status behind NBD's
 * qemu:dirty-bitmap:SNAP and qemu:allocation-depth contexts
 * (store_status_*), all read from the trees with tree_diff / tree_depth,
 * and one NBD BLOCK_STATUS over all three (store_bs): tried on the event
 * loop without reading a node, else a job for a reader thread.
 * Why a comparison of mappings is a comparison of data, compaction
 * included, is written once, in src/tree.h ("Comparing trees").
 *
 * Layer: in the store, beside reader.c (a reader of trees); over vtab
 * (records, handles) and tree.  Locks: vt.lock only to find records and
 * names, never during a walk.  Walks run in RCU read-side sections of
 * bounded work (DIFF_SPAN blocks, DIFF_BATCH extents, or one BLOCK_STATUS
 * request); a section that met a node the writer replaced while it was
 * read from disk (-ESTALE) is walked again.  Compaction changes no slot
 * (block names, fwd.h), so it never disturbs a comparison.  The records compared
 * are kept alive by handles (attaches), not by locks: an origin chain
 * above an attached clone needs none, since a snapshot with clones and a
 * volume with snapshots cannot be deleted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "diff.h"
#include "store_int.h"

/* Blocks compared in one read-side section of store_diff at most (worst
 * case every slot differs: a few milliseconds). */
#define DIFF_SPAN (1ull << 20)
/* Extents collected in one section at most. */
#define DIFF_BATCH 1024u

/* ---- history --------------------------------------------------------- */

/* The oldest ancestor of v: up from a snapshot to its volume, from a clone
 * to its origin snapshot, until neither applies (or a link is gone, in
 * pools older than the clone-origin rule).  Caller holds vt.lock. */
static const struct volume *family_root_locked(struct store *st, const struct volume *v)
{
	for (unsigned hops = 0; hops <= 2 * st->vt.n; hops++) {
		const struct volume *up = NULL;
		if (v->snapshot)
			up = vtab_find_id(st, v->parent_id);
		else if (v->origin_id)
			up = vtab_find_id(st, v->origin_id);
		if (!up)
			return v;
		v = up;
	}
	return NULL; /* a cycle: impossible in a valid table */
}

/* Do a and b share history (the same oldest ancestor)? */
static bool related(struct store *st, const struct volume *a, const struct volume *b)
{
	pthread_mutex_lock(&st->vt.lock);
	const struct volume *ra = family_root_locked(st, a), *rb = family_root_locked(st, b);
	pthread_mutex_unlock(&st->vt.lock);
	return ra && ra == rb;
}

/* The volume of record v (itself, or a snapshot's volume).  Caller holds
 * vt.lock. */
static struct volume *volume_of_locked(struct store *st, struct volume *v)
{
	return v->snapshot ? vtab_find_id(st, v->parent_id) : v;
}

/* ---- store_diff -------------------------------------------------------- */

struct batch {
	struct store_diff_extent e[DIFF_BATCH];
	unsigned n;
	uint64_t stop;  /* the LBA collection stopped at (full) */
	uint64_t limit; /* the volume's size in bytes: the last block may be partial */
};

static int batch_add(void *arg, uint64_t lba, uint64_t n, bool zero)
{
	struct batch *b = arg;
	uint64_t off = lba * FMT_BLOCK, len = n * FMT_BLOCK;
	struct store_diff_extent *last = b->n ? &b->e[b->n - 1] : NULL;

	if (off + len > b->limit)
		len = b->limit - off;
	if (last && last->zero == zero && last->off + last->len == off) {
		last->len += len;
		return 0;
	}
	if (b->n == DIFF_BATCH) {
		b->stop = lba;
		return 1;
	}
	b->e[b->n++] = (struct store_diff_extent){.off = off, .len = len, .zero = zero};
	return 0;
}

/* Compare [lo, hi) of a and b into b->e, walking again if the writer
 * replaced a node being read.  Returns the LBA to go on from, or 0 with
 * *err set. */
static uint64_t diff_section(const struct tree *a, const struct tree *b, uint64_t lo, uint64_t hi,
                             struct batch *bt, uint64_t *visits, int *err)
{
	unsigned tries = 0;
	bool again;
	do {
		bt->n = 0;
		bt->stop = hi;
		urcu_memb_read_lock();
		*err = tree_diff(a, b, lo, hi, false, batch_add, bt, visits);
		again = tree_stale_again(err, &tries);
		urcu_memb_read_unlock();
	} while (again && (*err >= 0 || *err == -ESTALE));
	if (*err < 0)
		return 0;
	*err = 0;
	return bt->stop;
}

/* Hand the batch to fn, merging across batches: *pend is the last extent
 * seen, held back until the next one shows it cannot grow. */
static int batch_flush(const struct batch *bt, struct store_diff_extent *pend, bool *have,
                       store_diff_fn fn, void *arg)
{
	for (unsigned i = 0; i < bt->n; i++) {
		const struct store_diff_extent *e = &bt->e[i];
		if (*have && pend->zero == e->zero && pend->off + pend->len == e->off) {
			pend->len += e->len;
			continue;
		}
		if (*have) {
			int err = fn(arg, pend);
			if (err)
				return err;
		}
		*pend = *e;
		*have = true;
	}
	return 0;
}

static int diff_walk(struct vol *ha, struct vol *hb, store_diff_fn fn, void *arg, uint64_t *visits)
{
	const struct tree *a = &ha->rec->tree, *b = &hb->rec->tree;
	uint64_t size = ha->rec->size, nb = (size + FMT_BLOCK - 1) / FMT_BLOCK, lba = 0;
	struct batch *bt = malloc(sizeof(*bt));
	struct store_diff_extent pend = {0};
	bool have = false;
	int err = 0;

	if (!bt)
		return -ENOMEM;
	bt->limit = size;
	while (lba < nb && !err) {
		uint64_t hi = nb - lba > DIFF_SPAN ? lba + DIFF_SPAN : nb;
		lba = diff_section(a, b, lba, hi, bt, visits, &err);
		if (!err)
			err = batch_flush(bt, &pend, &have, fn, arg);
	}
	if (!err && have)
		err = fn(arg, &pend);
	free(bt);
	return err;
}

int store_diff_count(struct store *st, const char *from, const char *to, store_diff_fn fn,
                     void *arg, uint64_t *visits)
{
	char vn[NAMES_PART_MAX + 1];
	struct vol *ha, *hb;
	int err;

	if (!to) {
		err = names_split(from, vn, NULL);
		if (err)
			return err;
		to = vn;
	}
	err = store_vol_open(st, from, &ha);
	if (err)
		return err;
	err = store_vol_open(st, to, &hb);
	if (err)
		goto close_a;
	if (!related(st, ha->rec, hb->rec) || ha->rec->size != hb->rec->size) {
		err = -EXDEV;
		goto close_b;
	}
	bool entered = reader_rcu_enter();
	err = diff_walk(ha, hb, fn, arg, visits);
	reader_rcu_leave(entered);
close_b:
	store_vol_close(hb);
close_a:
	store_vol_close(ha);
	return err;
}

int store_diff(struct store *st, const char *from, const char *to, store_diff_fn fn, void *arg)
{
	return store_diff_count(st, from, to, fn, arg, NULL);
}

/* ---- status sources for NBD metadata contexts -------------------------- */

struct store_status {
	struct vol *self;  /* the export's record, attached */
	struct vol *since; /* dirty: VOL@SNAP, attached; NULL for depth */
	/* depth: the export's tree, then the origin snapshots' */
	const struct tree **chain;
	unsigned n;
};

/* Snapshot names copied out, by id. */
struct snap_names {
	char (*names)[NAMES_PART_MAX + 1];
	unsigned n;
};

static bool snap_name(struct volume *s, void *arg)
{
	struct snap_names *sn = arg;
	memcpy(sn->names[sn->n++], s->name, sizeof(sn->names[0]));
	return true;
}

int store_status_snapshots(struct vol *v, int (*emit)(void *arg, const char *snap), void *arg)
{
	struct store *st = v->st;
	struct snap_names sn = {0};
	int err = 0;

	pthread_mutex_lock(&st->vt.lock);
	struct volume *base = volume_of_locked(st, v->rec);
	unsigned nsnap = base ? vtab_snapshots(st, base) : 0;
	if (nsnap && (sn.names = calloc(nsnap, sizeof(*sn.names))))
		vtab_walk(st, base, true, 0, snap_name, &sn);
	pthread_mutex_unlock(&st->vt.lock);
	if (nsnap && !sn.names)
		return -ENOMEM;
	for (unsigned i = 0; i < sn.n && !err; i++)
		err = emit(arg, sn.names[i]);
	free(sn.names);
	return err;
}

/* A new source holding its own handle on v's record. */
static int status_new(struct vol *v, struct store_status **out)
{
	struct store_status *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	err = store_vol_open(v->st, store_vol_name(v), &s->self);
	if (!err && s->self->rec != v->rec)
		err = -EBUSY; /* cannot happen: v's record is attached */
	if (err) {
		store_status_close(s);
		return err;
	}
	*out = s;
	return 0;
}

int store_status_dirty(struct vol *v, const char *snap, struct store_status **out)
{
	struct store *st = v->st;
	char full[NAMES_FULL_MAX + 1], vn[NAMES_PART_MAX + 1] = "";
	struct store_status *s;
	int err;

	if (!names_part_valid(snap))
		return -ENOENT;
	pthread_mutex_lock(&st->vt.lock);
	struct volume *base = volume_of_locked(st, v->rec);
	if (base)
		memcpy(vn, base->name, sizeof(vn));
	pthread_mutex_unlock(&st->vt.lock);
	if (!vn[0])
		return -ENOENT;
	strcpy(full, vn);
	strcat(full, "@");
	strcat(full, snap);
	err = status_new(v, &s);
	if (err)
		return err;
	err = store_vol_open(st, full, &s->since);
	if (err) {
		store_status_close(s);
		return err == -EINVAL ? -ENOENT : err;
	}
	*out = s;
	return 0;
}

/* Up the origin chain above r: the clone's origin snapshot, then its
 * volume's origin, ... (records that cannot go away, above); their trees
 * into out[] unless NULL; returns how many.  Caller holds vt.lock. */
static unsigned origins_locked(struct store *st, struct volume *r, const struct tree **out)
{
	unsigned n = 0;

	for (struct volume *b = volume_of_locked(st, r); b && b->origin_id && n < st->vt.n;) {
		struct volume *o = vtab_find_id(st, b->origin_id);
		if (!o)
			break;
		if (out)
			out[n] = &o->tree;
		n++;
		b = volume_of_locked(st, o);
	}
	return n;
}

int store_status_depth(struct vol *v, struct store_status **out)
{
	struct store *st = v->st;
	struct store_status *s;
	int err = status_new(v, &s);

	if (err)
		return err;
	pthread_mutex_lock(&st->vt.lock);
	s->chain = calloc(origins_locked(st, v->rec, NULL) + 1, sizeof(*s->chain));
	if (s->chain) {
		s->chain[0] = &v->rec->tree;
		s->n = 1 + origins_locked(st, v->rec, s->chain + 1);
	}
	pthread_mutex_unlock(&st->vt.lock);
	if (!s->chain) {
		store_status_close(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void store_status_close(struct store_status *s)
{
	if (!s)
		return;
	store_vol_close(s->since);
	store_vol_close(s->self);
	free(s->chain);
	free(s);
}

/* Runs being filled for store_status_map: [off, pos) is described. */
struct runs {
	struct store_run *r;
	unsigned max, n;
	uint64_t off, pos, end;
};

/* Describe [pos, upto) (clipped to end) as value.  1 when out of runs. */
static int runs_to(struct runs *x, uint64_t upto, uint32_t value)
{
	if (upto > x->end)
		upto = x->end;
	if (upto <= x->pos)
		return 0;
	if (x->n && x->r[x->n - 1].value == value)
		x->r[x->n - 1].len += upto - x->pos;
	else if (x->n == x->max)
		return 1;
	else
		x->r[x->n++] = (struct store_run){.len = upto - x->pos, .value = value};
	x->pos = upto;
	return 0;
}

static int dirty_run(void *arg, uint64_t lba, uint64_t n, bool zero)
{
	struct runs *x = arg;
	int full = runs_to(x, lba * FMT_BLOCK, 0);
	return full ? full : runs_to(x, (lba + n) * FMT_BLOCK, 1);
}

static int depth_run(void *arg, uint64_t lba, uint64_t n, uint32_t depth)
{
	return runs_to(arg, (lba + n) * FMT_BLOCK, depth);
}

/* store_status_map; with nowait, -EAGAIN rather than read a node. */
static int status_map(struct store_status *s, uint64_t off, uint64_t len, bool nowait,
                      struct store_run *runs, unsigned max, unsigned *n)
{
	const struct volume *v = s->self->rec;
	struct runs x = {.r = runs, .max = max, .off = off, .end = off + len};
	uint64_t lo = off / FMT_BLOCK, hi = (off + len + FMT_BLOCK - 1) / FMT_BLOCK;
	const struct tree *other = s->since ? &s->since->rec->tree : s->chain[s->n - 1];
	unsigned tries = 0;
	bool again;
	int err;

	*n = 0;
	if (off > v->size || len > v->size - off || !len || !max)
		return -EINVAL;
	do {
		x.n = 0;
		x.pos = off;
		urcu_memb_read_lock();
		if (s->since)
			err = tree_diff(other, &v->tree, lo, hi, nowait, dirty_run, &x, NULL);
		else
			err = tree_depth(s->chain, s->n, lo, hi, nowait, depth_run, &x);
		again = tree_stale_again(&err, &tries);
		urcu_memb_read_unlock();
	} while (again && (err >= 0 || err == -ESTALE));
	if (err < 0)
		return err;
	if (!err && s->since)
		runs_to(&x, x.end, 0); /* clean after the last change */
	*n = x.n;
	return 0;
}

int store_status_map(struct store_status *s, uint64_t off, uint64_t len, struct store_run *runs,
                     unsigned max, unsigned *n)
{
	return status_map(s, off, len, false, runs, max, n);
}

/* ---- one BLOCK_STATUS ---------------------------------------------------- */

int store_bs(struct vol *v, struct store_bs *bs, bool nowait)
{
	int err = 0;

	bs->nalloc = bs->ndirty = bs->ndepth = 0;
	if (bs->alloc)
		err = reader_map(v->rec, bs->off, bs->len, bs->alloc, bs->max, nowait, &bs->nalloc);
	if (bs->dirty && !err)
		err = status_map(bs->dirty, bs->off, bs->len, nowait, bs->dirty_runs, bs->max,
		                 &bs->ndirty);
	if (bs->depth && !err)
		err = status_map(bs->depth, bs->off, bs->len, nowait, bs->depth_runs, bs->max,
		                 &bs->ndepth);
	if (bs->alloc && err != -EAGAIN) /* docs/METRICS.md: one op per base:allocation */
		iostats_count(v->rec, STORE_IO_BLOCK_STATUS, bs->len, err, 0);
	return err;
}

static int bs_job(struct store_req *r)
{
	return store_bs(r->vol, r->buf, false);
}

void store_bs_submit(struct store_req *r)
{
	r->err = 0;
	r->job = bs_job;
	reader_enqueue(r->vol->st, r);
}
