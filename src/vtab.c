/* vtab.c — the volume table: volume and snapshot records, lookups by id
 * and by export name, walks of a kind or a family by id, applying logged
 * control operations to the table (live and at replay), and the export
 * handles connections hold.  Every per-record operation is O(1) or
 * O(log n) in the records: hash indexes and treaps kept with the list
 * (below); only whole-table walks are O(n).
 * Layer: under store_ctl, writer, reader, ckpt and recover; over tree.
 * Locks: vt.lock guards the list, its indexes and every record's attach
 * state against export lookups from connection threads; only the log
 * thread (or the single-threaded opener) changes them, so it may read
 * them unlocked. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

/* Checked before rounding up, which would wrap for sizes near 2^64. */
unsigned vtab_levels_for_size(uint64_t size)
{
	const uint64_t max =
	    (uint64_t)FMT_FANOUT * FMT_FANOUT * FMT_FANOUT * FMT_FANOUT * FMT_BLOCK;
	if (!size || size > max)
		return 0;
	return tree_levels_for((size + FMT_BLOCK - 1) / FMT_BLOCK);
}

/* ---- indexes ----------------------------------------------------------
 *
 * The list keeps every record in id order for whole-table walks (the
 * checkpoint, listings, the check).  Beside it, all under the same rule
 * (vt.lock for connection threads; only the log thread changes them):
 * ids, a map from id to record; names, a chained hash by (volume id, own
 * name) for snapshots and (0, name) for volumes and clones (ids start at
 * 1); bases and snaps, treaps by id (priority: a hash of the id) that find
 * a page's first entry and a record's place in the list whatever order
 * records come in (a checkpoint need not store them by id); kin, per
 * record with snapshots or clones, their counts and a treap of each. */

struct vtab_kin {
	struct vtab_node *snaps, *clones;
	unsigned nsnaps, nclones;
};

static uint64_t node_prio(const struct vtab_node *n)
{
	uint64_t x = n->id + 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

static void node_insert(struct vtab_node **t, struct vtab_node *n)
{
	struct vtab_node *p = *t;

	if (!p) {
		n->l = n->r = NULL;
		*t = n;
	} else if (n->id < p->id) {
		node_insert(&p->l, n);
		if (node_prio(p->l) > node_prio(p)) {
			*t = p->l;
			p->l = (*t)->r;
			(*t)->r = p;
		}
	} else {
		node_insert(&p->r, n);
		if (node_prio(p->r) > node_prio(p)) {
			*t = p->r;
			p->r = (*t)->l;
			(*t)->l = p;
		}
	}
}

/* a and b joined; every id in a is below every id in b. */
static struct vtab_node *node_join(struct vtab_node *a, struct vtab_node *b)
{
	if (!a || !b)
		return a ? a : b;
	if (node_prio(a) > node_prio(b)) {
		a->r = node_join(a->r, b);
		return a;
	}
	b->l = node_join(a, b->l);
	return b;
}

static void node_remove(struct vtab_node **t, uint64_t id)
{
	while (*t && (*t)->id != id)
		t = id < (*t)->id ? &(*t)->l : &(*t)->r;
	if (*t)
		*t = node_join((*t)->l, (*t)->r);
}

/* The node with the largest id below id, or NULL. */
static struct vtab_node *node_below(struct vtab_node *t, uint64_t id)
{
	struct vtab_node *best = NULL;
	while (t)
		if (t->id < id) {
			best = t;
			t = t->r;
		} else {
			t = t->l;
		}
	return best;
}

/* In order from the first id above after; false once fn stopped it. */
static bool node_walk(struct vtab_node *t, uint64_t after, bool kin, vtab_visit_fn fn, void *arg)
{
	for (; t; t = t->r) {
		if (t->id <= after)
			continue;
		struct volume *v =
		    kin ? container_of(t, struct volume, kin) : container_of(t, struct volume, ord);
		if (!node_walk(t->l, after, kin, fn, arg) || !fn(v, arg))
			return false;
	}
	return true;
}

/* The record v is a snapshot or clone of (0: none). */
static uint64_t kin_of(const struct volume *v)
{
	return v->snapshot ? v->parent_id : v->origin_id;
}

static size_t name_slot(const struct store *st, uint64_t up, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull ^ (up * 0x9E3779B97F4A7C15ull);
	for (const unsigned char *c = (const unsigned char *)name; *c; c++)
		h = (h ^ *c) * 0x100000001b3ull;
	return (size_t)(h ^ (h >> 32)) & (st->vt.names_cap - 1);
}

static struct volume *name_find(struct store *st, bool snapshot, uint64_t up, const char *name)
{
	if (!st->vt.names_cap)
		return NULL;
	for (struct volume *v = st->vt.names[name_slot(st, up, name)]; v; v = v->name_next)
		if (v->snapshot == snapshot && (!snapshot || v->parent_id == up) &&
		    !strcmp(v->name, name))
			return v;
	return NULL;
}

static void name_add(struct store *st, struct volume *v)
{
	struct volume **b = &st->vt.names[name_slot(st, v->snapshot ? v->parent_id : 0, v->name)];
	v->name_next = *b;
	*b = v;
}

static void name_del(struct store *st, struct volume *v)
{
	struct volume **pp = &st->vt.names[name_slot(st, v->snapshot ? v->parent_id : 0, v->name)];
	while (*pp != v)
		pp = &(*pp)->name_next;
	*pp = v->name_next;
}

/* Room for one more name: the chains stay short (at most one record per
 * slot on average) by doubling; 0 or -ENOMEM (nothing changed). */
static int name_room(struct store *st)
{
	size_t cap = st->vt.names_cap ? st->vt.names_cap : 64;
	if (st->vt.n + 1 <= st->vt.names_cap)
		return 0;
	while (cap < (size_t)st->vt.n + 1)
		cap *= 2;
	struct volume **t = calloc(cap, sizeof(*t));
	if (!t)
		return -ENOMEM;
	free(st->vt.names);
	st->vt.names = t;
	st->vt.names_cap = cap;
	for (struct volume *v = st->vt.list; v; v = v->next)
		name_add(st, v);
	return 0;
}

/* Put v in the list after the record with the next smaller id. */
static void list_add(struct store *st, struct volume *v)
{
	struct volume *p = st->vt.tail;
	if (p && p->id > v->id) {
		struct vtab_node *a = node_below(st->vt.bases, v->id);
		struct vtab_node *b = node_below(st->vt.snaps, v->id);
		if (a && (!b || a->id > b->id))
			p = container_of(a, struct volume, ord);
		else
			p = b ? container_of(b, struct volume, ord) : NULL;
	}
	v->prev = p;
	v->next = p ? p->next : st->vt.list;
	if (v->next)
		v->next->prev = v;
	else
		st->vt.tail = v;
	if (p)
		p->next = v;
	else
		st->vt.list = v;
}

static void list_del(struct store *st, struct volume *v)
{
	if (v->prev)
		v->prev->next = v->next;
	else
		st->vt.list = v->next;
	if (v->next)
		v->next->prev = v->prev;
	else
		st->vt.tail = v->prev;
}

/* The kin entry of id, made if missing (NULL on ENOMEM). */
static struct vtab_kin *kin_get(struct store *st, uint64_t id)
{
	struct vtab_kin *k = map_get(&st->vt.kin, id);
	if (k)
		return k;
	k = calloc(1, sizeof(*k));
	if (k && map_put(&st->vt.kin, id, k)) {
		free(k);
		k = NULL;
	}
	return k;
}

static void kin_put(struct store *st, uint64_t id, struct vtab_kin *k)
{
	if (!k->nsnaps && !k->nclones) {
		map_del(&st->vt.kin, id);
		free(k);
	}
}

struct volume *vtab_find_id(struct store *st, uint64_t id)
{
	return map_get(&st->vt.ids, id);
}

struct volume *vtab_find_base(struct store *st, const char *name)
{
	return name_find(st, false, 0, name);
}

struct volume *vtab_find_snap(struct store *st, uint64_t parent, const char *snap)
{
	return name_find(st, true, parent, snap);
}

struct volume *vtab_find_export(struct store *st, const char *full, int *err)
{
	char vn[NAMES_PART_MAX + 1], sn[NAMES_PART_MAX + 1];
	struct volume *v;

	*err = names_split(full, vn, sn);
	if (*err)
		return NULL;
	v = vtab_find_base(st, vn);
	if (v && sn[0])
		v = vtab_find_snap(st, v->id, sn);
	if (!v)
		*err = -ENOENT;
	return v;
}

void vtab_walk(struct store *st, const struct volume *family, bool snapshots, uint64_t after,
               vtab_visit_fn fn, void *arg)
{
	const struct vtab_kin *k = family ? map_get(&st->vt.kin, family->id) : NULL;

	if (!family)
		node_walk(snapshots ? st->vt.snaps : st->vt.bases, after, false, fn, arg);
	else if (k)
		node_walk(snapshots ? k->snaps : k->clones, after, true, fn, arg);
}

struct clone_names {
	struct store *st;
	char (*names)[NAMES_FULL_MAX + 1];
	unsigned n, max;
};

static bool clone_name(struct volume *c, void *arg)
{
	struct clone_names *cn = arg;
	if (cn->n == cn->max)
		return false;
	vtab_full_name(cn->st, c, cn->names[cn->n++], sizeof(cn->names[0]));
	return true;
}

unsigned vtab_clones(struct store *st, const struct volume *snap, char (*names)[NAMES_FULL_MAX + 1],
                     unsigned max)
{
	const struct vtab_kin *k = map_get(&st->vt.kin, snap->id);
	struct clone_names cn = {.st = st, .names = names, .max = max};

	if (k && max)
		vtab_walk(st, snap, false, 0, clone_name, &cn);
	return k ? k->nclones : 0;
}

unsigned vtab_snapshots(struct store *st, const struct volume *v)
{
	const struct vtab_kin *k = map_get(&st->vt.kin, v->id);
	return k ? k->nsnaps : 0;
}

void vtab_full_name(struct store *st, const struct volume *v, char *out, size_t len)
{
	if (v->snapshot) {
		const struct volume *p = vtab_find_id(st, v->parent_id);
		snprintf(out, len, "%s@%s", p ? p->name : "?", v->name);
	} else {
		snprintf(out, len, "%s", v->name);
	}
}

struct volume *vtab_volume_new(uint64_t id, const char *name, uint64_t size, uint64_t created)
{
	struct volume *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->id = id;
	v->size = size;
	v->created = created;
	snprintf(v->name, sizeof(v->name), "%.*s", NAMES_PART_MAX, name);
	v->tree.levels = vtab_levels_for_size(size);
	return v;
}

/* Count v in (linked) or out of vt.nsnaps or vt.provisioned.  Caller
 * holds vt.lock. */
static void totals_locked(struct store *st, const struct volume *v, bool in)
{
	if (v->snapshot && in)
		st->vt.nsnaps++;
	else if (v->snapshot)
		st->vt.nsnaps--;
	else if (in)
		st->vt.provisioned += v->size;
	else
		st->vt.provisioned -= v->size;
}

static void volume_free(struct store *st, struct volume *v)
{
	tree_drop(&v->tree, st->a);
	map_clear(&v->pend);
	free(v->io);
	free(v);
}

/* Everything that may fail first (the kin entry, the id map, the name
 * table), then the pointer changes, which cannot.  A record left out is
 * durable (a checkpoint's, or an op's already synced): the pool fails,
 * so that no checkpoint is written without it. */
int vtab_link(struct store *st, struct volume *v)
{
	uint64_t up = kin_of(v);
	struct vtab_kin *k = NULL;
	int err = 0;

	v->tree.nc = st->nc;
	v->ord.id = v->kin.id = v->id;
	pthread_mutex_lock(&st->vt.lock);
	if (up && !(k = kin_get(st, up)))
		err = -ENOMEM;
	if (!err && (err = map_put(&st->vt.ids, v->id, v)))
		kin_put(st, up, k);
	if (!err && (err = name_room(st))) {
		map_del(&st->vt.ids, v->id);
		kin_put(st, up, k);
	}
	if (!err) {
		list_add(st, v);
		node_insert(v->snapshot ? &st->vt.snaps : &st->vt.bases, &v->ord);
		if (k) {
			node_insert(v->snapshot ? &k->snaps : &k->clones, &v->kin);
			*(v->snapshot ? &k->nsnaps : &k->nclones) += 1;
		}
		name_add(st, v);
		st->vt.n++;
		totals_locked(st, v, true);
	}
	pthread_mutex_unlock(&st->vt.lock);
	if (err)
		core_set_failed(st, err, "volume table");
	else if (v->id >= st->vt.next_id)
		st->vt.next_id = v->id + 1;
	return err;
}

static void unlink_volume(struct store *st, struct volume *v)
{
	uint64_t up = kin_of(v);
	struct vtab_kin *k = up ? map_get(&st->vt.kin, up) : NULL;

	pthread_mutex_lock(&st->vt.lock);
	list_del(st, v);
	map_del(&st->vt.ids, v->id);
	node_remove(v->snapshot ? &st->vt.snaps : &st->vt.bases, v->id);
	if (k) {
		node_remove(v->snapshot ? &k->snaps : &k->clones, v->id);
		*(v->snapshot ? &k->nsnaps : &k->nclones) -= 1;
		kin_put(st, up, k);
	}
	name_del(st, v);
	st->vt.n--;
	totals_locked(st, v, false);
	pthread_mutex_unlock(&st->vt.lock);
}

void vtab_free_all(struct store *st)
{
	size_t pos = 0;
	void **k;

	while (st->vt.list) {
		struct volume *v = st->vt.list;
		st->vt.list = v->next;
		tree_release(&v->tree); /* closing: no block to give back, no node to read */
		volume_free(st, v);
	}
	while ((k = map_next(&st->vt.kin, &pos, &(uint64_t){0})))
		free(*k);
	map_clear(&st->vt.kin);
	map_clear(&st->vt.ids);
	free(st->vt.names);
	st->vt.names = NULL;
	st->vt.names_cap = 0;
	st->vt.bases = st->vt.snaps = NULL;
	st->vt.tail = NULL;
	st->vt.n = st->vt.nsnaps = 0;
	st->vt.provisioned = 0;
}

/* ---- the checker ------------------------------------------------------- */

/* Nodes in t, if every one is in id order within (lo, hi) and under its
 * parent's priority; else UINT64_MAX. */
static uint64_t node_check(const struct vtab_node *t, uint64_t lo, uint64_t hi, uint64_t prio)
{
	if (!t)
		return 0;
	if (t->id <= lo || t->id >= hi || node_prio(t) > prio)
		return UINT64_MAX;
	uint64_t l = node_check(t->l, lo, t->id, node_prio(t));
	uint64_t r = node_check(t->r, t->id, hi, node_prio(t));
	return l == UINT64_MAX || r == UINT64_MAX ? UINT64_MAX : l + r + 1;
}

/* Is n in treap t? */
static bool node_in(const struct vtab_node *t, const struct vtab_node *n)
{
	while (t && t->id != n->id)
		t = n->id < t->id ? t->l : t->r;
	return t == n;
}

/* One record against the indexes. */
static const char *check_one(struct store *st, struct volume *v)
{
	uint64_t up = kin_of(v);
	const struct vtab_kin *k = up ? map_get(&st->vt.kin, up) : NULL;

	if (vtab_find_id(st, v->id) != v)
		return "a record its id does not find";
	if (name_find(st, v->snapshot, v->snapshot ? v->parent_id : 0, v->name) != v)
		return "a record its name does not find";
	if (!node_in(v->snapshot ? st->vt.snaps : st->vt.bases, &v->ord))
		return "a record missing from the index of its kind";
	if (up && (!k || !node_in(v->snapshot ? k->snaps : k->clones, &v->kin)))
		return "a snapshot or clone missing from its family";
	return NULL;
}

/* The list's order and links, every record in each index, and nothing
 * else in them. */
static const char *check_indexes(struct store *st)
{
	uint64_t n = 0, nkin = 0, inkin = 0, named = 0, nsnaps = 0, prov = 0;
	const struct volume *prev = NULL;
	const char *why = NULL;
	size_t pos = 0;
	void **slot;

	for (struct volume *v = st->vt.list; v && !why; prev = v, v = v->next, n++) {
		if (v->prev != prev || (prev && prev->id >= v->id))
			return "the list out of id order or badly linked";
		why = check_one(st, v);
		nkin += kin_of(v) != 0;
		nsnaps += v->snapshot;
		prov += v->snapshot ? 0 : v->size;
	}
	if (why || st->vt.tail != prev || n != st->vt.n || st->vt.ids.n != n)
		return why ? why : "the list's count, tail or id map disagree";
	if (nsnaps != st->vt.nsnaps || prov != st->vt.provisioned)
		return "the snapshot count or the provisioned sum disagree with the records";
	while ((slot = map_next(&st->vt.kin, &pos, &(uint64_t){0}))) {
		const struct vtab_kin *k = *slot;
		uint64_t a = node_check(k->snaps, 0, UINT64_MAX, UINT64_MAX);
		uint64_t b = node_check(k->clones, 0, UINT64_MAX, UINT64_MAX);
		if (a != k->nsnaps || b != k->nclones || !(a + b))
			return "a family's counts disagree with its records";
		inkin += a + b;
	}
	for (size_t i = 0; i < st->vt.names_cap; i++)
		for (const struct volume *v = st->vt.names[i]; v; v = v->name_next)
			named++;
	uint64_t a = node_check(st->vt.bases, 0, UINT64_MAX, UINT64_MAX);
	uint64_t b = node_check(st->vt.snaps, 0, UINT64_MAX, UINT64_MAX);
	if (inkin != nkin || named != n || a == UINT64_MAX || b == UINT64_MAX || a + b != n)
		return "an index holds records the list does not";
	return NULL;
}

const char *vtab_check(struct store *st)
{
	pthread_mutex_lock(&st->vt.lock);
	const char *why = check_indexes(st);
	pthread_mutex_unlock(&st->vt.lock);
	return why;
}

/* Resize v (a volume) to size, of the same tree depth: set the size first,
 * so that no request reaches past the new end, then unmap the blocks past
 * it when it shrinks (the volume is detached then; readers still inside an
 * earlier lookup see the old or no block, both freed only after a grace
 * period).  A shrink is block-aligned (store_ctl.c), so no partial last
 * block keeps bytes past the end that a later grow would show: what lies
 * past the end of a volume's last block is always zeroes. */
static int apply_resize(struct store *st, struct volume *v, uint64_t size)
{
	uint64_t old_nb = (v->size + FMT_BLOCK - 1) / FMT_BLOCK;
	uint64_t new_nb = (size + FMT_BLOCK - 1) / FMT_BLOCK;

	if (v->snapshot || vtab_levels_for_size(size) != v->tree.levels)
		return -EILSEQ;
	pthread_mutex_lock(&st->vt.lock);
	st->vt.provisioned += size - v->size;
	CMM_STORE_SHARED(v->size, size);
	pthread_mutex_unlock(&st->vt.lock);
	return new_nb < old_nb ? tree_trim(&v->tree, st->a, new_nb, old_nb) : 0;
}

/* Rename v (a volume) to name, which no other volume has.  Its snapshots
 * hold only their own part, so their full names follow. */
static int apply_rename(struct store *st, struct volume *v, const char *name)
{
	struct volume *other = vtab_find_base(st, name);

	if (v->snapshot || !names_part_valid(name) || (other && other != v))
		return -EILSEQ;
	pthread_mutex_lock(&st->vt.lock);
	name_del(st, v);
	snprintf(v->name, sizeof(v->name), "%s", name);
	name_add(st, v);
	pthread_mutex_unlock(&st->vt.lock);
	return 0;
}

/* Link a record an op made; on ENOMEM it goes again. */
static int link_new(struct store *st, struct volume *v)
{
	int err = vtab_link(st, v);
	if (err)
		volume_free(st, v);
	return err;
}

/* The op was validated before it was logged (live) or comes from a valid
 * summary (replay): a record that does not fit the table is damage. */
int vtab_apply_op(struct store *st, const struct fmt_op *op)
{
	struct volume *v, *src;
	char name[NAMES_PART_MAX + 1];

	if (op->magic != FMT_OP_MAGIC || strnlen(op->name, sizeof(op->name)) > NAMES_PART_MAX)
		return -EILSEQ;
	memcpy(name, op->name, sizeof(name));
	switch (op->kind) {
	case FMT_OP_VOL_CREATE:
		if (vtab_find_id(st, op->id) || !vtab_levels_for_size(op->size))
			return -EILSEQ;
		v = vtab_volume_new(op->id, name, op->size, op->created);
		return v ? link_new(st, v) : -ENOMEM;
	case FMT_OP_VOL_DELETE:
		v = vtab_find_id(st, op->id);
		if (!v)
			return -EILSEQ;
		unlink_volume(st, v);
		volume_free(st, v);
		return 0;
	case FMT_OP_SNAP_CREATE:
	case FMT_OP_CLONE:
		src = vtab_find_id(st, op->src);
		if (!src || vtab_find_id(st, op->id))
			return -EILSEQ;
		v = vtab_volume_new(op->id, name, src->size, op->created);
		if (!v)
			return -ENOMEM;
		if (op->kind == FMT_OP_SNAP_CREATE) {
			v->snapshot = true;
			v->parent_id = src->id;
		} else {
			v->origin_id = src->id;
		}
		tree_share(&v->tree, &src->tree, st->a);
		return link_new(st, v);
	case FMT_OP_ROLLBACK: {
		v = vtab_find_id(st, op->id);
		src = vtab_find_id(st, op->src);
		if (!v || !src || v->snapshot)
			return -EILSEQ;
		/* src holds its own references on what the two share */
		tree_drop(&v->tree, st->a);
		tree_share(&v->tree, &src->tree, st->a);
		pthread_mutex_lock(&st->vt.lock);
		st->vt.provisioned += src->size - v->size;
		v->size = src->size;
		pthread_mutex_unlock(&st->vt.lock);
		return 0;
	}
	case FMT_OP_VOL_RESIZE:
		v = vtab_find_id(st, op->id);
		return v ? apply_resize(st, v, op->size) : -EILSEQ;
	case FMT_OP_VOL_RENAME:
		v = vtab_find_id(st, op->id);
		return v ? apply_rename(st, v, name) : -EILSEQ;
	}
	return -EILSEQ;
}

int vtab_lock_volume(struct store *st, struct volume *v)
{
	int err = 0;
	pthread_mutex_lock(&st->vt.lock);
	if (v->attached)
		err = -EBUSY;
	else
		v->locked = true;
	pthread_mutex_unlock(&st->vt.lock);
	return err;
}

void vtab_unlock_volume(struct store *st, struct volume *v)
{
	pthread_mutex_lock(&st->vt.lock);
	v->locked = false;
	pthread_mutex_unlock(&st->vt.lock);
}

/* lock_family_locked's walk: any attached (*arg), or set locked. */
struct family_lock {
	bool on, busy, check;
};

static bool family_lock_one(struct volume *s, void *arg)
{
	struct family_lock *fl = arg;
	if (fl->check)
		fl->busy |= s->attached > 0;
	else
		s->locked = fl->on;
	return !fl->busy;
}

/* Set or clear locked on v and its snapshots, unless check: then only
 * whether any is attached.  Caller holds vt.lock.  O(log n + snapshots). */
static bool lock_family_locked(struct store *st, struct volume *v, bool on, bool check)
{
	struct family_lock fl = {.on = on, .check = check};
	if (family_lock_one(v, &fl))
		vtab_walk(st, v, true, 0, family_lock_one, &fl);
	return fl.busy;
}

int vtab_lock_family(struct store *st, struct volume *v)
{
	int err = 0;
	pthread_mutex_lock(&st->vt.lock);
	if (lock_family_locked(st, v, true, true))
		err = -EBUSY;
	else
		lock_family_locked(st, v, true, false);
	pthread_mutex_unlock(&st->vt.lock);
	return err;
}

void vtab_unlock_family(struct store *st, struct volume *v)
{
	pthread_mutex_lock(&st->vt.lock);
	lock_family_locked(st, v, false, false);
	pthread_mutex_unlock(&st->vt.lock);
}

struct tree **vtab_trees(struct store *st, unsigned *n)
{
	struct tree **trees = calloc(st->vt.n ? st->vt.n : 1, sizeof(*trees));
	unsigned k = 0;
	if (!trees)
		return NULL;
	for (struct volume *v = st->vt.list; v; v = v->next)
		trees[k++] = &v->tree;
	*n = k;
	return trees;
}

/* ---- export handles ---------------------------------------------------- */

int store_vol_open(struct store *st, const char *export_name, struct vol **out)
{
	struct vol *h = calloc(1, sizeof(*h));
	int err;
	if (!h)
		return -ENOMEM;
	pthread_mutex_lock(&st->vt.lock);
	struct volume *v = vtab_find_export(st, export_name, &err);
	if (v && v->locked) {
		v = NULL;
		err = -EBUSY;
	}
	if (v && (err = iostats_attach(v)))
		v = NULL;
	if (v)
		v->attached++;
	pthread_mutex_unlock(&st->vt.lock);
	if (!v) {
		free(h);
		return err;
	}
	h->st = st;
	h->rec = v;
	snprintf(h->export_name, sizeof(h->export_name), "%s", export_name);
	*out = h;
	return 0;
}

void store_vol_close(struct vol *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->st->vt.lock);
	h->rec->attached--;
	pthread_mutex_unlock(&h->st->vt.lock);
	free(h);
}

/* A resize may grow the size while the handle is open. */
uint64_t store_vol_size(const struct vol *h)
{
	return CMM_LOAD_SHARED(h->rec->size);
}

bool store_vol_readonly(const struct vol *h)
{
	return h->rec->snapshot || h->st->read_only;
}

const char *store_vol_name(const struct vol *h)
{
	return h->export_name;
}
