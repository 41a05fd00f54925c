/* tree.c — per-volume copy-on-write radix block tree, shared between a
 * volume, its snapshots and clones by node reference counts.  Layer: under
 * store, beside alloc (whose block references it maintains) and log (which
 * stores its nodes at checkpoints).  Locks: none; one writer thread, RCU
 * readers (see tree.h for the rules). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"
#include "say.h"
#include "tree.h"

static const uint64_t span[5] = {1, FMT_FANOUT, (uint64_t)FMT_FANOUT *FMT_FANOUT,
                                 (uint64_t)FMT_FANOUT *FMT_FANOUT *FMT_FANOUT,
                                 (uint64_t)FMT_FANOUT *FMT_FANOUT *FMT_FANOUT *FMT_FANOUT};

static inline unsigned idx(uint64_t lba, unsigned level)
{
	return (unsigned)((lba / span[level]) % FMT_FANOUT);
}

unsigned tree_levels_for(uint64_t nblocks)
{
	for (unsigned l = 1; l <= 4; l++)
		if (nblocks <= span[l])
			return l;
	return 0;
}

uint64_t tree_lookup(const struct tree *t, uint64_t lba)
{
	const struct tree_node *n = rcu_dereference(t->root);
	for (unsigned k = t->levels - 1; n && k > 0; k--)
		n = rcu_dereference(n->child[idx(lba, k)]);
	if (!n)
		return 0;
	return CMM_LOAD_SHARED(n->phys[lba % FMT_FANOUT]);
}

uint64_t tree_run(const struct tree *t, uint64_t lba, uint64_t max, bool *mapped)
{
	uint64_t done = 0;
	int state = -1; /* unknown, 0 hole, 1 mapped */

	while (done < max) {
		uint64_t at = lba + done, n;
		int st;
		const struct tree_node *nd = rcu_dereference(t->root);
		unsigned k = t->levels - 1;
		while (nd && k > 0) {
			nd = rcu_dereference(nd->child[idx(at, k)]);
			if (nd)
				k--;
		}
		if (!nd) {
			/* a hole as large as the missing subtree (level k+1's child span) */
			uint64_t sp = t->root ? span[k] : span[t->levels];
			st = 0;
			n = sp - at % sp;
		} else {
			unsigned i = (unsigned)(at % FMT_FANOUT);
			st = CMM_LOAD_SHARED(nd->phys[i]) != 0;
			n = 1;
			while (i + n < FMT_FANOUT && (CMM_LOAD_SHARED(nd->phys[i + n]) != 0) == st)
				n++;
		}
		if (state >= 0 && st != state)
			break;
		state = st;
		done += n;
		if (n < 1)
			break;
		if (st == 1 && at % FMT_FANOUT + n < FMT_FANOUT)
			break; /* the leaf changed state before its end */
		if (st == 0 && nd && at % FMT_FANOUT + n < FMT_FANOUT)
			break;
	}
	*mapped = state == 1;
	return done < max ? done : max;
}

/* ---- node lifetime -------------------------------------------------- */

/* A new, clean node (callers that change it mark it dirty). */
static struct tree_node *node_new(unsigned level)
{
	struct tree_node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->level = (uint8_t)level;
	n->ref = 1;
	return n;
}

/* n must be written at the next checkpoint: the allocator counts it as
 * metadata the checkpoint will need room for (the space policy charges it
 * against free space now, not when the checkpoint meets a full pool). */
static void mark_dirty(struct tree_node *n, struct alloc *a)
{
	if (!n->dirty) {
		n->dirty = 1;
		alloc_meta_charge(a, 1);
	}
}

static void mark_clean(struct tree_node *n, struct alloc *a)
{
	if (n->dirty) {
		n->dirty = 0;
		alloc_meta_charge(a, -1);
	}
}

static void node_free_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct tree_node, rcu));
}

static void node_put(struct tree_node *n, struct alloc *a)
{
	if (--n->ref > 0)
		return;
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (n->level == 0) {
			if (n->phys[i])
				alloc_unref(a, n->phys[i]);
		} else if (n->child[i]) {
			node_put(n->child[i], a);
		}
	}
	if (n->disk)
		alloc_unref(a, n->disk);
	mark_clean(n, a); /* never written now */
	urcu_memb_call_rcu(&n->rcu, node_free_rcu);
}

/* A private copy of a shared node: references every child/block again. */
static struct tree_node *node_copy(const struct tree_node *n, struct alloc *a)
{
	struct tree_node *c = node_new(n->level);
	if (!c)
		return NULL;
	memcpy(c->phys, n->phys, sizeof(c->phys));
	c->nmapped = n->nmapped;
	c->total = n->total;
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (n->level == 0) {
			if (n->phys[i])
				alloc_ref(a, n->phys[i]);
		} else if (n->child[i]) {
			n->child[i]->ref++;
		}
	}
	return c;
}

/* The root, made private (copied if shared, created if absent). */
static struct tree_node *mut_root(struct tree *t, struct alloc *a)
{
	struct tree_node *n = t->root;
	if (!n) {
		n = node_new(t->levels - 1);
		if (!n)
			return NULL;
		rcu_assign_pointer(t->root, n);
	} else if (n->ref > 1) {
		struct tree_node *c = node_copy(n, a);
		if (!c)
			return NULL;
		n->ref--;
		rcu_assign_pointer(t->root, c);
		n = c;
	}
	mark_dirty(n, a);
	return n;
}

/* Child i of the private node p, made private.  *err is -ENOMEM on
 * failure; a missing child with !create gives NULL with *err == 0. */
static struct tree_node *mut_child(struct tree_node *p, unsigned i, struct alloc *a, bool create,
                                   int *err)
{
	struct tree_node *c = p->child[i];
	*err = 0;
	if (!c) {
		if (!create)
			return NULL;
		c = node_new(p->level - 1u);
		if (!c) {
			*err = -ENOMEM;
			return NULL;
		}
		rcu_assign_pointer(p->child[i], c);
		p->nmapped++;
	} else if (c->ref > 1) {
		struct tree_node *copy = node_copy(c, a);
		if (!copy) {
			*err = -ENOMEM;
			return NULL;
		}
		c->ref--;
		rcu_assign_pointer(p->child[i], copy);
		c = copy;
	}
	mark_dirty(c, a);
	return c;
}

int tree_set(struct tree *t, struct alloc *a, uint64_t lba, uint64_t phys)
{
	struct tree_node *n, *path[4];
	unsigned depth = 0;
	int err;

	if (!phys && !tree_lookup(t, lba))
		return 0;
	n = mut_root(t, a);
	if (!n)
		return -ENOMEM;
	for (unsigned k = t->levels - 1; k > 0; k--) {
		path[depth++] = n;
		n = mut_child(n, idx(lba, k), a, true, &err);
		if (!n)
			return err;
	}
	unsigned i = (unsigned)(lba % FMT_FANOUT);
	uint64_t old = n->phys[i];
	int delta = (phys != 0) - (old != 0);
	if (phys)
		alloc_ref(a, phys);
	CMM_STORE_SHARED(n->phys[i], phys);
	n->nmapped = (uint16_t)(n->nmapped + delta);
	n->total = (uint64_t)((int64_t)n->total + delta);
	for (unsigned d = 0; d < depth; d++)
		path[d]->total = (uint64_t)((int64_t)path[d]->total + delta);
	if (old)
		alloc_unref(a, old);
	return 0;
}

/* Unmap [lo, hi) below the private node n covering [base, ...); n->total
 * drops by, and *removed grows by, the mapped blocks that went. */
static int trim_node(struct tree_node *n, struct alloc *a, uint64_t base, uint64_t lo, uint64_t hi,
                     uint64_t *removed)
{
	uint64_t from = lo > base ? lo : base;
	uint64_t cspan = span[n->level];
	uint64_t end = base + cspan * FMT_FANOUT;
	uint64_t to = hi < end ? hi : end;
	int err;

	if (from >= to)
		return 0;
	if (n->level == 0) {
		for (uint64_t lba = from; lba < to; lba++) {
			unsigned i = (unsigned)(lba - base);
			uint64_t p = n->phys[i];
			if (p) {
				CMM_STORE_SHARED(n->phys[i], 0);
				n->nmapped--;
				n->total--;
				(*removed)++;
				alloc_unref(a, p);
			}
		}
		return 0;
	}
	for (uint64_t i = (from - base) / cspan; i <= (to - 1 - base) / cspan; i++) {
		struct tree_node *c = n->child[i];
		uint64_t cbase = base + i * cspan;
		if (!c)
			continue;
		if (lo <= cbase && cbase + cspan <= hi) {
			rcu_assign_pointer(n->child[i], NULL);
			n->nmapped--;
			*removed += c->total;
			n->total -= c->total;
			node_put(c, a);
			continue;
		}
		c = mut_child(n, (unsigned)i, a, false, &err);
		if (!c)
			return err;
		uint64_t gone = 0;
		err = trim_node(c, a, cbase, lo, hi, &gone);
		n->total -= gone;
		*removed += gone;
		if (err)
			return err;
		if (c->nmapped == 0) {
			rcu_assign_pointer(n->child[i], NULL);
			n->nmapped--;
			node_put(c, a);
		}
	}
	return 0;
}

int tree_trim(struct tree *t, struct alloc *a, uint64_t lo, uint64_t hi)
{
	struct tree_node *r;
	int err;

	if (hi > span[t->levels])
		hi = span[t->levels];
	if (!t->root || lo >= hi)
		return 0;
	if (lo == 0 && hi == span[t->levels]) {
		tree_drop(t, a);
		return 0;
	}
	r = mut_root(t, a);
	if (!r)
		return -ENOMEM;
	uint64_t gone = 0;
	err = trim_node(r, a, 0, lo, hi, &gone);
	if (r->nmapped == 0)
		tree_drop(t, a);
	return err;
}

void tree_share(struct tree *dst, const struct tree *src)
{
	dst->levels = src->levels;
	if (src->root)
		src->root->ref++;
	rcu_assign_pointer(dst->root, src->root);
}

void tree_drop(struct tree *t, struct alloc *a)
{
	struct tree_node *r = t->root;
	if (!r)
		return;
	rcu_assign_pointer(t->root, NULL);
	node_put(r, a);
}

static uint64_t count_unique(const struct tree_node *n, const struct alloc *a)
{
	uint64_t u = 0;
	if (__atomic_load_n(&n->ref, __ATOMIC_RELAXED) != 1)
		return 0; /* shared: everything below stays when this tree goes */
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (n->level == 0) {
			uint64_t p = CMM_LOAD_SHARED(n->phys[i]);
			u += p && alloc_block_refs(a, p) == 1;
		} else {
			const struct tree_node *c = rcu_dereference(n->child[i]);
			if (c)
				u += count_unique(c, a);
		}
	}
	return u;
}

void tree_count(const struct tree *t, const struct alloc *a, uint64_t *mapped, uint64_t *unique)
{
	const struct tree_node *r = rcu_dereference(t->root);
	*mapped = r ? __atomic_load_n(&r->total, __ATOMIC_RELAXED) : 0;
	*unique = r ? count_unique(r, a) : 0;
}

/* ---- checkpoint write-back ------------------------------------------ */

static int write_node(struct tree_node *n, struct alloc *a, tree_emit_fn emit, void *arg,
                      struct fmt_node *img)
{
	if (!n->dirty)
		return 0;
	if (n->level > 0)
		for (unsigned i = 0; i < FMT_FANOUT; i++)
			if (n->child[i] && n->child[i]->dirty) {
				int err = write_node(n->child[i], a, emit, arg, img);
				if (err)
					return err;
			}
	memset(img, 0, sizeof(*img));
	img->magic = FMT_NODE_MAGIC;
	img->level = n->level;
	img->nmapped = n->nmapped;
	for (unsigned i = 0; i < FMT_FANOUT; i++)
		img->slot[i] = n->level == 0 ? n->phys[i] : (n->child[i] ? n->child[i]->disk : 0);
	uint64_t addr = emit(arg, img);
	if (!addr)
		return -EIO;
	alloc_ref(a, addr);
	if (n->disk)
		alloc_unref(a, n->disk);
	n->disk = addr;
	mark_clean(n, a);
	return 0;
}

int tree_write_dirty(struct tree *t, struct alloc *a, tree_emit_fn emit, void *arg,
                     struct fmt_node *scratch)
{
	return t->root ? write_node(t->root, a, emit, arg, scratch) : 0;
}

/* ---- compactor relocation ------------------------------------------- */

struct reloc_rec { /* a leaf slot to re-point once the copies are written */
	struct tree_node *leaf;
	unsigned slot;
	uint64_t old, nw;
};

struct reloc {
	struct alloc *a;
	const uint8_t *victim;
	tree_move_fn move;
	void *arg;
	uint32_t stamp;
	struct reloc_rec *rec;
	size_t nrec, cap;
	int err;
};

static bool in_victim(const struct reloc *r, uint64_t blk)
{
	return r->victim[alloc_seg_of(blk)] != 0;
}

/* Returns whether n must be rewritten (is dirty) after the walk. */
static bool reloc_node(struct tree_node *n, struct reloc *r)
{
	if (n->stamp == r->stamp || r->err)
		return n->dirty;
	n->stamp = r->stamp;
	if (n->disk && in_victim(r, n->disk))
		mark_dirty(n, r->a);
	for (unsigned i = 0; i < FMT_FANOUT && !r->err; i++) {
		if (n->level == 0) {
			uint64_t old = n->phys[i];
			if (!old || !in_victim(r, old))
				continue;
			uint64_t nw = r->move(r->arg, old);
			if (!nw) {
				r->err = -EIO;
				break;
			}
			if (r->nrec == r->cap) {
				size_t cap = r->cap ? r->cap * 2 : 1024;
				struct reloc_rec *nr = realloc(r->rec, cap * sizeof(*nr));
				if (!nr) {
					r->err = -ENOMEM;
					break;
				}
				r->rec = nr;
				r->cap = cap;
			}
			r->rec[r->nrec++] =
			    (struct reloc_rec){.leaf = n, .slot = i, .old = old, .nw = nw};
			mark_dirty(n, r->a);
		} else if (n->child[i] && reloc_node(n->child[i], r)) {
			mark_dirty(n, r->a);
		}
	}
	return n->dirty;
}

/* Enter (odd) or leave (even) a re-pointing, for every tree. */
static void seq_bump(struct tree *const *trees, unsigned n)
{
	cmm_smp_wmb(); /* leaving: the slots before the count */
	for (unsigned i = 0; i < n; i++)
		CMM_STORE_SHARED(trees[i]->seq, trees[i]->seq + 1);
	cmm_smp_wmb(); /* entering: the count before the slots */
}

int64_t tree_relocate(struct tree *const *trees, unsigned n, struct alloc *a, const uint8_t *victim,
                      tree_move_fn move, tree_commit_fn commit, void *arg)
{
	static uint32_t stamp; /* writer-only */
	struct reloc r = {.a = a, .victim = victim, .move = move, .arg = arg, .stamp = ++stamp};
	if (!r.stamp)
		r.stamp = ++stamp;
	for (unsigned i = 0; i < n && !r.err; i++)
		if (trees[i]->root)
			reloc_node(trees[i]->root, &r);
	/* Readers may follow a slot the moment it changes: re-point only once
	 * every copy is on the device (before, they would read the hole or
	 * stale bytes where the copy is going). */
	if (!r.err)
		r.err = commit(arg);
	if (!r.err && r.nrec) {
		/* Readers comparing two trees must not see one re-pointed and
		 * the other not yet: the seq brackets the stores (tree.h). */
		seq_bump(trees, n);
		for (size_t k = 0; k < r.nrec; k++) {
			struct reloc_rec *x = &r.rec[k];
			alloc_ref(a, x->nw);
			CMM_STORE_SHARED(x->leaf->phys[x->slot], x->nw);
			alloc_unref(a, x->old);
		}
		seq_bump(trees, n);
	}
	free(r.rec);
	return r.err ? r.err : (int64_t)r.nrec;
}

/* ---- comparing trees -------------------------------------------------- */

uint32_t tree_read_begin(const struct tree *t)
{
	uint32_t s;
	while ((s = CMM_LOAD_SHARED(t->seq)) & 1)
		caa_cpu_relax(); /* a relocation re-points at most a pass's slots */
	cmm_smp_rmb();
	return s;
}

bool tree_read_retry(const struct tree *t, uint32_t seq)
{
	cmm_smp_rmb();
	return CMM_LOAD_SHARED(t->seq) != seq;
}

struct diff_walk {
	uint64_t lo, hi;
	tree_diff_fn fn;
	void *arg;
	uint64_t visits;
};

/* The child range [first, last] of a node at level covering [base, ...)
 * that meets [lo, hi); false if none does. */
static bool child_range(unsigned level, uint64_t base, uint64_t lo, uint64_t hi, unsigned *first,
                        unsigned *last)
{
	uint64_t end = base + span[level + 1];
	uint64_t from = lo > base ? lo : base, to = hi < end ? hi : end;
	if (from >= to)
		return false;
	*first = (unsigned)((from - base) / span[level]);
	*last = (unsigned)((to - 1 - base) / span[level]);
	return true;
}

/* Slots [first, last] of leaves a and b (either may be NULL), at base. */
static int diff_leaf(const struct tree_node *a, const struct tree_node *b, uint64_t base,
                     unsigned first, unsigned last, struct diff_walk *w)
{
	unsigned run = 0; /* slots in the pending run, which ends before i */
	bool zero = false;
	int err;

	for (unsigned i = first; i <= last + 1; i++) {
		bool differs = false, z = false;
		if (i <= last) {
			uint64_t pa = a ? CMM_LOAD_SHARED(a->phys[i]) : 0;
			uint64_t pb = b ? CMM_LOAD_SHARED(b->phys[i]) : 0;
			differs = pa != pb;
			z = pb == 0;
		}
		if (run && (!differs || z != zero)) {
			err = w->fn(w->arg, base + i - run, run, zero);
			if (err)
				return err;
			run = 0;
		}
		if (differs) {
			zero = z;
			run++;
		}
	}
	return 0;
}

/* a != b (either may be NULL): nodes at level covering [base, ...). */
static int diff_node(const struct tree_node *a, const struct tree_node *b, unsigned level,
                     uint64_t base, struct diff_walk *w)
{
	unsigned first, last;
	int err;

	w->visits++;
	if (!child_range(level, base, w->lo, w->hi, &first, &last))
		return 0;
	if (level == 0)
		return diff_leaf(a, b, base, first, last, w);
	for (unsigned i = first; i <= last; i++) {
		const struct tree_node *ca = a ? rcu_dereference(a->child[i]) : NULL;
		const struct tree_node *cb = b ? rcu_dereference(b->child[i]) : NULL;
		if (ca == cb)
			continue; /* the same subtree, or nothing in either */
		err = diff_node(ca, cb, level - 1, base + i * span[level], w);
		if (err)
			return err;
	}
	return 0;
}

int tree_diff(const struct tree *a, const struct tree *b, uint64_t lo, uint64_t hi, tree_diff_fn fn,
              void *arg, uint64_t *visits)
{
	struct diff_walk w = {.lo = lo, .hi = hi, .fn = fn, .arg = arg};
	const struct tree_node *ra = rcu_dereference(a->root), *rb = rcu_dereference(b->root);
	int err = 0;

	if (a->levels != b->levels)
		return -EINVAL;
	if (ra != rb && lo < hi)
		err = diff_node(ra, rb, a->levels - 1, 0, &w);
	if (visits)
		*visits += w.visits;
	return err;
}

struct depth_walk {
	unsigned n; /* trees in the chain */
	uint64_t lo, hi;
	tree_depth_fn fn;
	void *arg;
	const struct tree_node **nodes; /* n per level, top level first */
	uint64_t run_lba, run_n;        /* the pending run */
	uint32_t run_depth;
};

static int depth_emit(struct depth_walk *w, uint64_t lba, uint64_t n, uint32_t depth)
{
	int err = 0;
	if (w->run_n && w->run_depth == depth && w->run_lba + w->run_n == lba) {
		w->run_n += n;
		return 0;
	}
	if (w->run_n)
		err = w->fn(w->arg, w->run_lba, w->run_n, w->run_depth);
	w->run_lba = lba;
	w->run_n = n;
	w->run_depth = depth;
	return err;
}

/* nd[0..n) at level covering [base, ...); nd[0] != NULL. */
static int depth_node(struct depth_walk *w, const struct tree_node *const *nd, unsigned level,
                      uint64_t base)
{
	const struct tree_node **c = w->nodes + (size_t)w->n * level;
	unsigned first, last;
	int err;

	if (!child_range(level, base, w->lo, w->hi, &first, &last))
		return 0;
	for (unsigned i = first; i <= last; i++) {
		uint64_t at = base + i * span[level];
		if (level == 0) {
			uint64_t p = CMM_LOAD_SHARED(nd[0]->phys[i]);
			uint32_t d = p != 0;
			while (p && d < w->n && nd[d] && CMM_LOAD_SHARED(nd[d]->phys[i]) == p)
				d++;
			err = depth_emit(w, at, 1, d);
		} else {
			for (unsigned k = 0; k < w->n; k++)
				c[k] = nd[k] ? rcu_dereference(nd[k]->child[i]) : NULL;
			if (c[0]) {
				err = depth_node(w, c, level - 1, at);
			} else {
				uint64_t from = at > w->lo ? at : w->lo, end = at + span[level];
				err = depth_emit(w, from, (end < w->hi ? end : w->hi) - from, 0);
			}
		}
		if (err)
			return err;
	}
	return 0;
}

int tree_depth(const struct tree *const *chain, unsigned n, uint64_t lo, uint64_t hi,
               tree_depth_fn fn, void *arg)
{
	unsigned levels = chain[0]->levels;
	struct depth_walk w = {.n = n, .lo = lo, .hi = hi, .fn = fn, .arg = arg};
	const struct tree_node **top;
	int err = 0;

	if (lo >= hi)
		return 0;
	for (unsigned k = 1; k < n; k++)
		if (chain[k]->levels != levels)
			return -EINVAL;
	w.nodes = calloc((size_t)n * (levels + 1), sizeof(*w.nodes));
	if (!w.nodes)
		return -ENOMEM;
	top = w.nodes + (size_t)n * levels;
	for (unsigned k = 0; k < n; k++)
		top[k] = rcu_dereference(chain[k]->root);
	if (top[0])
		err = depth_node(&w, top, levels - 1, 0);
	else
		err = depth_emit(&w, lo, hi - lo, 0);
	if (!err && w.run_n)
		err = fn(arg, w.run_lba, w.run_n, w.run_depth);
	free(w.nodes);
	return err;
}

/* ---- loading -------------------------------------------------------- */

struct tree_loader {
	struct alloc *a;
	tree_read_fn read;
	void *arg;
	struct map map; /* disk block -> node */
	struct fmt_node img[4];
};

struct tree_loader *tree_loader_new(struct alloc *a, tree_read_fn read, void *arg)
{
	struct tree_loader *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->a = a;
	l->read = read;
	l->arg = arg;
	return l;
}

void tree_loader_free(struct tree_loader *l)
{
	if (!l)
		return;
	map_clear(&l->map);
	free(l);
}

static bool addr_ok(const struct alloc *a, uint64_t addr)
{
	return addr < alloc_nblocks(a) && alloc_seg_of(addr) != 0;
}

static int load_node(struct tree_loader *l, uint64_t addr, unsigned level, struct tree_node **out)
{
	struct fmt_node *img = &l->img[level];
	struct tree_node *n;
	unsigned cnt = 0;
	int err;

	if (!addr_ok(l->a, addr))
		return -EILSEQ;
	n = map_get(&l->map, addr);
	if (n) {
		if (n->level != level)
			return -EILSEQ;
		n->ref++;
		*out = n;
		return 0;
	}
	err = l->read(l->arg, addr, img);
	if (err)
		return err;
	if (img->level != level)
		return -EILSEQ;
	n = node_new(level);
	if (!n)
		return -ENOMEM;
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		uint64_t s = img->slot[i];
		if (!s)
			continue;
		if (level == 0) {
			if (!addr_ok(l->a, s)) {
				err = -EILSEQ;
				goto fail_node;
			}
			n->phys[i] = s;
			alloc_ref(l->a, s);
			n->total++;
		} else {
			err = load_node(l, s, level - 1, &n->child[i]);
			if (err)
				goto fail_node;
			n->total += n->child[i]->total;
		}
		cnt++;
	}
	if (cnt != img->nmapped) {
		err = -EILSEQ;
		goto fail_node;
	}
	n->nmapped = (uint16_t)cnt;
	n->disk = addr;
	alloc_ref(l->a, addr);
	err = map_put(&l->map, addr, n);
	if (err)
		goto fail_node;
	*out = n;
	return 0;

fail_node:
	node_put(n, l->a);
	return err;
}

int tree_load(struct tree_loader *l, struct tree *t, uint64_t root_addr, unsigned levels)
{
	struct tree_node *r = NULL;
	t->levels = levels;
	t->root = NULL;
	if (!root_addr)
		return 0;
	int err = load_node(l, root_addr, levels - 1, &r);
	if (err)
		return err;
	rcu_assign_pointer(t->root, r);
	return 0;
}

/* ---- checker -------------------------------------------------------- */

static int check_node(const struct tree_node *n, unsigned level, struct map *seen, uint32_t *bref,
                      uint64_t nblocks)
{
	uintptr_t c = (uintptr_t)map_get(seen, (uint64_t)(uintptr_t)n);
	int bad = 0;

	if (map_put(seen, (uint64_t)(uintptr_t)n, (void *)(c + 1)) < 0) {
		say_problem("checks that could not run", 1, "check: out of memory walking a tree");
		return 1;
	}
	if (c)
		return 0; /* children counted on the first visit */
	if (n->level != level) {
		say_problem("tree node errors", 1, "check: node at level %u claims level %u", level,
		            n->level);
		bad++;
	}
	unsigned cnt = 0;
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (level == 0) {
			if (n->phys[i]) {
				cnt++;
				if (n->phys[i] >= nblocks) {
					say_problem("block addresses out of range", 1,
					            "check: block %llu out of range",
					            (unsigned long long)n->phys[i]);
					bad++;
				} else {
					bref[n->phys[i]]++;
				}
			}
		} else if (n->child[i]) {
			cnt++;
			bad += check_node(n->child[i], level - 1, seen, bref, nblocks);
		}
	}
	if (cnt != n->nmapped) {
		say_problem("tree node errors", 1, "check: node has %u mapped slots, counts %u",
		            cnt, n->nmapped);
		bad++;
	}
	uint64_t total = 0;
	for (unsigned i = 0; i < FMT_FANOUT; i++)
		total += level == 0 ? n->phys[i] != 0 : (n->child[i] ? n->child[i]->total : 0);
	if (total != n->total) {
		say_problem("tree node errors", 1,
		            "check: node claims %llu mapped blocks below it, holds %llu",
		            (unsigned long long)n->total, (unsigned long long)total);
		bad++;
	}
	if (n->disk)
		bref[n->disk]++;
	return bad;
}

int tree_check_all(struct tree *const *trees, unsigned n, uint64_t nblocks, uint32_t *bref)
{
	struct map seen = {0};
	int bad = 0;

	for (unsigned i = 0; i < n; i++)
		if (trees[i]->root)
			bad +=
			    check_node(trees[i]->root, trees[i]->levels - 1, &seen, bref, nblocks);
	size_t pos = 0;
	uint64_t key;
	void **val;
	while ((val = map_next(&seen, &pos, &key))) {
		const struct tree_node *tn = (const void *)(uintptr_t)key;
		if (tn->ref != (uintptr_t)*val) {
			say_problem("tree node reference counts that differ", 1,
			            "check: node has ref %u but %lu references", tn->ref,
			            (unsigned long)(uintptr_t)*val);
			bad++;
		}
	}
	map_clear(&seen);
	return bad;
}

static uint64_t count_dirty(const struct tree_node *n, struct map *seen)
{
	uint64_t d;
	if (map_get(seen, (uint64_t)(uintptr_t)n) ||
	    map_put(seen, (uint64_t)(uintptr_t)n, (void *)1))
		return 0; /* counted already (or out of memory: undercount) */
	d = n->dirty;
	if (n->level > 0)
		for (unsigned i = 0; i < FMT_FANOUT; i++)
			if (n->child[i])
				d += count_dirty(n->child[i], seen);
	return d;
}

uint64_t tree_dirty_nodes(struct tree *const *trees, unsigned n)
{
	struct map seen = {0};
	uint64_t d = 0;
	for (unsigned i = 0; i < n; i++)
		if (trees[i]->root)
			d += count_dirty(trees[i]->root, &seen);
	map_clear(&seen);
	return d;
}
