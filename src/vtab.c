/* vtab.c — the volume table: volume and snapshot records, lookups by id
 * and by export name, applying logged control operations to the table
 * (live and at replay), and the export handles connections hold.
 * Layer: under store_ctl, writer, reader, ckpt and recover; over tree.
 * Locks: vt.lock guards the list and every record's attach state against
 * export lookups from connection threads; only the log thread (or the
 * single-threaded opener) changes the list, so it may read it unlocked. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Checked before rounding up, which would wrap for sizes near 2^64. */
unsigned vtab_levels_for_size(uint64_t size)
{
	const uint64_t max =
	    (uint64_t)FMT_FANOUT * FMT_FANOUT * FMT_FANOUT * FMT_FANOUT * FMT_BLOCK;
	if (!size || size > max)
		return 0;
	return tree_levels_for((size + FMT_BLOCK - 1) / FMT_BLOCK);
}

struct volume *vtab_find_id(struct store *st, uint64_t id)
{
	for (struct volume *v = st->vt.list; v; v = v->next)
		if (v->id == id)
			return v;
	return NULL;
}

struct volume *vtab_find_base(struct store *st, const char *name)
{
	for (struct volume *v = st->vt.list; v; v = v->next)
		if (!v->snapshot && !strcmp(v->name, name))
			return v;
	return NULL;
}

struct volume *vtab_find_snap(struct store *st, uint64_t parent, const char *snap)
{
	for (struct volume *v = st->vt.list; v; v = v->next)
		if (v->snapshot && v->parent_id == parent && !strcmp(v->name, snap))
			return v;
	return NULL;
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

unsigned vtab_clones(struct store *st, const struct volume *snap, char (*names)[NAMES_FULL_MAX + 1],
                     unsigned max)
{
	unsigned n = 0;
	for (struct volume *c = st->vt.list; c; c = c->next)
		if (!c->snapshot && c->origin_id == snap->id) {
			if (n < max)
				vtab_full_name(st, c, names[n], sizeof(names[n]));
			n++;
		}
	return n;
}

unsigned vtab_snapshots(struct store *st, const struct volume *v)
{
	unsigned n = 0;
	for (struct volume *s = st->vt.list; s; s = s->next)
		n += s->snapshot && s->parent_id == v->id;
	return n;
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

static void volume_free(struct store *st, struct volume *v)
{
	tree_drop(&v->tree, st->a);
	map_clear(&v->pend);
	free(v);
}

void vtab_link(struct store *st, struct volume *v)
{
	struct volume **pp = &st->vt.list;
	while (*pp)
		pp = &(*pp)->next;
	v->tree.nc = st->nc;
	pthread_mutex_lock(&st->vt.lock);
	*pp = v;
	st->vt.n++;
	pthread_mutex_unlock(&st->vt.lock);
	if (v->id >= st->vt.next_id)
		st->vt.next_id = v->id + 1;
}

static void unlink_volume(struct store *st, struct volume *v)
{
	pthread_mutex_lock(&st->vt.lock);
	for (struct volume **pp = &st->vt.list; *pp; pp = &(*pp)->next)
		if (*pp == v) {
			*pp = v->next;
			st->vt.n--;
			break;
		}
	pthread_mutex_unlock(&st->vt.lock);
}

void vtab_free_all(struct store *st)
{
	while (st->vt.list) {
		struct volume *v = st->vt.list;
		st->vt.list = v->next;
		tree_release(&v->tree); /* closing: no block to give back, no node to read */
		volume_free(st, v);
	}
	st->vt.n = 0;
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
	snprintf(v->name, sizeof(v->name), "%s", name);
	pthread_mutex_unlock(&st->vt.lock);
	return 0;
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
		if (!v)
			return -ENOMEM;
		vtab_link(st, v);
		return 0;
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
		vtab_link(st, v);
		return 0;
	case FMT_OP_ROLLBACK: {
		struct tree t = {0};
		v = vtab_find_id(st, op->id);
		src = vtab_find_id(st, op->src);
		if (!v || !src || v->snapshot)
			return -EILSEQ;
		tree_share(&t, &src->tree, st->a);
		tree_drop(&v->tree, st->a);
		rcu_assign_pointer(v->tree.root, t.root);
		v->tree.levels = t.levels;
		v->size = src->size;
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

/* Set or clear locked on v and its snapshots.  Caller holds vt.lock. */
static void lock_family_locked(struct store *st, struct volume *v, bool on)
{
	for (struct volume *s = st->vt.list; s; s = s->next)
		if (s == v || (s->snapshot && s->parent_id == v->id))
			s->locked = on;
}

int vtab_lock_family(struct store *st, struct volume *v)
{
	int err = 0;
	pthread_mutex_lock(&st->vt.lock);
	for (struct volume *s = st->vt.list; s; s = s->next)
		if ((s == v || (s->snapshot && s->parent_id == v->id)) && s->attached)
			err = -EBUSY;
	if (!err)
		lock_family_locked(st, v, true);
	pthread_mutex_unlock(&st->vt.lock);
	return err;
}

void vtab_unlock_family(struct store *st, struct volume *v)
{
	pthread_mutex_lock(&st->vt.lock);
	lock_family_locked(st, v, false);
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
