/* tree.c — per-volume copy-on-write radix block tree, shared between a
 * volume, its snapshots and clones by node reference counts, and the node
 * cache that finds a node by its on-disk address and reads the ones not in
 * memory.  Layer: under store, beside alloc (whose block references it
 * maintains) and log (which stores its nodes at checkpoints).  Locks: one
 * writer thread and RCU readers (see tree.h for the rules); the cache's
 * mutex guards its two maps and every store to a child slot of a node
 * readers can reach, so that a reader publishing a child it loaded never
 * undoes the writer's change to that slot. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"
#include "say.h"
#include "fwd.h"
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

/* ---- the node cache ---------------------------------------------------- */

/* A node not in memory: what its object held that its image does not.
 * Its reference count is the allocator's count of its block (below). */
struct away {
	uint64_t total;
};

struct tree_cache {
	pthread_mutex_t lock; /* nodes, away, last_bad, and child-slot stores */
	struct map nodes;     /* disk address -> node in memory (written or loaded) */
	struct map away;      /* disk address -> struct away: a node not in memory */
	struct map closing;   /* node -> node: found by tree_release (the closer) */
	struct alloc *a;
	tree_read_fn read;
	void *arg;
	bool totals;            /* images hold subtree totals (format version 3) */
	uint64_t last_bad;      /* the last damaged node logged */
	uint64_t loads, errors; /* relaxed atomics */
	/* Eviction (docs/METADATA.md, step 3): the bound on node memory
	 * (0: none), the footprint of the nodes in `nodes` (written under the
	 * lock, read racily by tree_cache_over), the CLOCK hand (a position
	 * in `nodes`, the writer's), nodes evicted so far. */
	uint64_t bound, bytes, evictions;
	uint64_t footprint; /* bytes + the map's slots: written under the lock, read racily */
	size_t hand;
	bool evicting;        /* over the bound: evict down to 7/8 of it (writer) */
	bool woken;           /* wake was called and the writer has not run since */
	bool stuck;           /* a full turn of the hand dropped nothing: until a
	                       * load, the writer need not hurry (all pinned) */
	uint64_t idle_visits; /* visits since the hand last changed something */
	void (*wake)(void *); /* a reader's load passed the bound */
	void *wake_arg;
};

/* Allocator overhead per malloc'd object (glibc: one size word, rounded to
 * 16 bytes), counted in a node's footprint. */
#define MALLOC_OVERHEAD 16
/* A map slot (key, value, generation); maps are kept at most half full. */
#define MAP_SLOT_BYTES (sizeof(uint64_t) + sizeof(void *) + sizeof(uint32_t))

static uint64_t node_bytes(const struct tree_node *n)
{
	return sizeof(*n) + (n->level ? FMT_FANOUT * sizeof(uint64_t) : 0) + MALLOC_OVERHEAD;
}

/* The resident footprint: nodes in memory with a written copy, and the
 * map that finds them.  Any thread. */
static uint64_t cache_bytes(const struct tree_cache *nc)
{
	return __atomic_load_n(&nc->footprint, __ATOMIC_RELAXED);
}

/* nc->bytes changed by delta.  Caller holds the lock. */
static void bytes_add_locked(struct tree_cache *nc, int64_t delta)
{
	nc->bytes = (uint64_t)((int64_t)nc->bytes + delta);
	__atomic_store_n(&nc->footprint, nc->bytes + nc->nodes.cap * MAP_SLOT_BYTES,
	                 __ATOMIC_RELAXED);
}

/* n becomes findable at addr.  Caller holds the lock. */
static int nodes_put_locked(struct tree_cache *nc, uint64_t addr, struct tree_node *n)
{
	struct tree_node *old = map_get(&nc->nodes, addr);
	int err = map_put(&nc->nodes, addr, n);
	if (err)
		return err;
	bytes_add_locked(nc, (int64_t)node_bytes(n) - (old ? (int64_t)node_bytes(old) : 0));
	return 0;
}

/* n is no longer findable by its written copy's address.  Caller holds
 * the lock. */
static void nodes_del_locked(struct tree_cache *nc, struct tree_node *n)
{
	if (!n->disk || map_get(&nc->nodes, n->disk) != n)
		return;
	map_del(&nc->nodes, n->disk);
	bytes_add_locked(nc, -(int64_t)node_bytes(n));
}

struct tree_cache *tree_cache_new(struct alloc *a, tree_read_fn read, void *arg)
{
	struct tree_cache *nc = calloc(1, sizeof(*nc));
	if (!nc)
		return NULL;
	pthread_mutex_init(&nc->lock, NULL);
	nc->a = a;
	nc->read = read;
	nc->arg = arg;
	return nc;
}

void tree_cache_totals(struct tree_cache *nc, bool on)
{
	nc->totals = on;
}

void tree_cache_free(struct tree_cache *nc)
{
	size_t pos = 0;
	uint64_t k;
	void **v;

	if (!nc)
		return;
	while ((v = map_next(&nc->away, &pos, &k)))
		free(*v);
	/* Every node in memory: those with a written copy are in nodes, the
	 * others tree_release found (and it may have found some of the
	 * first kind too). */
	pos = 0;
	while ((v = map_next(&nc->closing, &pos, &k)))
		if (!((struct tree_node *)*v)->disk)
			free(*v);
	pos = 0;
	while ((v = map_next(&nc->nodes, &pos, &k)))
		free(*v);
	map_clear(&nc->closing);
	map_clear(&nc->away);
	map_clear(&nc->nodes);
	pthread_mutex_destroy(&nc->lock);
	free(nc);
}

void tree_cache_stats(struct tree_cache *nc, struct tree_cache_stats *out)
{
	pthread_mutex_lock(&nc->lock);
	out->resident = nc->nodes.n;
	out->away = nc->away.n;
	out->bytes = cache_bytes(nc);
	out->bound = nc->bound;
	out->evictions = nc->evictions;
	pthread_mutex_unlock(&nc->lock);
	out->loads = __atomic_load_n(&nc->loads, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&nc->errors, __ATOMIC_RELAXED);
}

/* A name (fwd.h) whose birth address lies in the log. */
static bool addr_ok(const struct alloc *a, uint64_t name)
{
	uint64_t addr = fwd_addr(name);
	return addr < alloc_nblocks(a) && alloc_seg_of(addr) != 0;
}

static struct tree_node *node_new(unsigned level);

/* Log a node that could not be read (once while it keeps failing). */
static void load_failed(struct tree_cache *nc, uint64_t addr, int err)
{
	bool again;

	__atomic_fetch_add(&nc->errors, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&nc->lock);
	again = nc->last_bad == addr;
	nc->last_bad = addr;
	pthread_mutex_unlock(&nc->lock);
	if (!again)
		say_error("tree: node at pool block %llu %s: reads through it fail",
		          (unsigned long long)addr,
		          err == -EILSEQ ? "is damaged (checksum, address, level or slots)"
		                         : "cannot be read");
}

/* Read the node at addr, expected at level, into a new object that is
 * nowhere yet: slots checked, ref 1, disk = addr; leaves' totals counted,
 * interior nodes' from the image (version 3; else 0, for the caller to
 * sum), children all away (caddr only).  No block references are taken.
 * 0, -EIO, -EILSEQ or -ENOMEM. */
static int node_read(struct tree_cache *nc, uint64_t addr, unsigned level, struct tree_node **out)
{
	struct fmt_node *img = malloc(sizeof(*img));
	struct tree_node *n = NULL;
	unsigned cnt = 0;
	int err = -ENOMEM;

	if (!img)
		return -ENOMEM;
	err = addr_ok(nc->a, addr) ? nc->read(nc->arg, addr, img) : -EILSEQ;
	if (!err && img->level != level)
		err = -EILSEQ;
	if (!err && !(n = node_new(level)))
		err = -ENOMEM;
	for (unsigned i = 0; i < FMT_FANOUT && !err; i++) {
		uint64_t s = img->slot[i];
		if (!s)
			continue;
		if (!addr_ok(nc->a, s))
			err = -EILSEQ;
		else if (level == 0)
			n->phys[i] = s;
		else
			n->caddr[i] = s;
		cnt++;
	}
	if (!err && cnt != img->nmapped)
		err = -EILSEQ;
	if (!err && nc->totals && (level == 0 ? img->total != cnt : img->total < cnt))
		err = -EILSEQ;
	uint64_t total = err || level == 0 ? cnt : nc->totals ? img->total : 0;
	free(img);
	if (err) {
		free(n);
		if (err != -ENOMEM)
			load_failed(nc, addr, err);
		return err;
	}
	n->nmapped = (uint16_t)cnt;
	n->total = total;
	n->disk = addr;
	*out = n;
	return 0;
}

/* Every child of n that is neither in memory nor known away becomes known
 * away (a node read from an image whose children were never loaded: a
 * version 3 pool opens with its roots only).  Caller holds the lock. */
static int register_away_locked(struct tree_cache *nc, const struct tree_node *n)
{
	for (unsigned i = 0; n->level > 0 && i < FMT_FANOUT; i++) {
		uint64_t ca = n->caddr[i];
		if (!ca || n->child[i] || map_get(&nc->nodes, ca) || map_get(&nc->away, ca))
			continue;
		struct away *aw = calloc(1, sizeof(*aw));
		if (!aw || map_put(&nc->away, ca, aw)) {
			free(aw);
			return -ENOMEM;
		}
	}
	return 0;
}

/* The object for the node at addr now: the one in memory, else fresh (a
 * copy of it the caller read) taking over its count if it is away; NULL
 * if neither (*err: -ENOMEM, or 0: away with no fresh copy, or no live
 * node there).  Caller holds the cache lock. */
static struct tree_node *adopt_locked(struct tree_cache *nc, uint64_t addr,
                                      struct tree_node **fresh, int *err)
{
	struct tree_node *c = map_get(&nc->nodes, addr);
	struct away *aw;

	*err = 0;
	if (c || !*fresh || !(aw = map_get(&nc->away, addr)))
		return c;
	*err = register_away_locked(nc, *fresh);
	if (!*err)
		*err = nodes_put_locked(nc, addr, *fresh);
	if (*err)
		return NULL;
	c = *fresh;
	*fresh = NULL;
	if (c->level && !nc->totals)
		c->total = aw->total;
	map_del(&nc->away, addr);
	free(aw);
	return c;
}

/* Read the away node at addr into *fresh (the cache lock not held). */
static int cache_read(struct tree_cache *nc, uint64_t addr, unsigned level,
                      struct tree_node **fresh)
{
	int err = node_read(nc, addr, level, fresh);
	if (!err)
		__atomic_fetch_add(&nc->loads, 1, __ATOMIC_RELAXED);
	return err;
}

/* A reader loaded a node: past the bound, wake the writer (once until it
 * runs) to evict, so that a read-only load is bounded too. */
static void cache_loaded(struct tree_cache *nc)
{
	__atomic_store_n(&nc->stuck, false, __ATOMIC_RELAXED);
	if (!nc->wake || !nc->bound || cache_bytes(nc) <= nc->bound ||
	    __atomic_exchange_n(&nc->woken, true, __ATOMIC_RELAXED))
		return;
	nc->wake(nc->wake_arg);
}

/* Child i of p is away at addr: read it and publish it in p, unless the
 * writer changed the slot meanwhile (then take what it holds now).
 * Finding or inserting the object and publishing it are one critical
 * section, so a node tree_unload drops is never published again.
 * -ESTALE: no live node is at addr (p is a node the writer freed). */
static struct tree_node *child_fault(struct tree_cache *nc, const struct tree_node *cp, unsigned i,
                                     uint64_t addr, int *err)
{
	/* Publishing a loaded child is the one store a reader makes. */
	struct tree_node *p = (struct tree_node *)cp, *fresh = NULL, *c;
	unsigned level = p->level - 1u;

	for (;;) {
		pthread_mutex_lock(&nc->lock);
		if (p->dead) { /* freed or evicted: walk again from the root */
			pthread_mutex_unlock(&nc->lock);
			free(fresh);
			*err = -ESTALE;
			return NULL;
		}
		struct tree_node *now = p->child[i];
		uint64_t now_addr = p->caddr[i];
		bool here = !now && now_addr == addr, away = false, loaded = fresh != NULL;
		c = here ? adopt_locked(nc, addr, &fresh, err) : NULL;
		if (c && c->level == level) {
			rcu_assign_pointer(p->child[i], c);
			c->npub++;
			c->used = 1;
		} else if (here && !c && !*err) {
			away = map_get(&nc->away, addr) != NULL;
		}
		loaded = loaded && !fresh && c;
		pthread_mutex_unlock(&nc->lock);
		free(fresh); /* never published (NULL if adopted) */
		fresh = NULL;
		if (loaded)
			cache_loaded(nc);
		if (!here && (now || !now_addr)) {
			*err = 0;
			return now; /* changed under us: the new state */
		}
		if (!here) {
			addr = now_addr; /* re-pointed to another node that is away */
			continue;
		}
		if (c) {
			*err = c->level == level ? 0 : -EILSEQ;
			return *err ? NULL : c;
		}
		if (*err)
			return NULL;
		if (!away) {
			*err = -ESTALE;
			return NULL;
		}
		*err = cache_read(nc, addr, level, &fresh);
		if (*err) {
			/* p replaced meanwhile (and a checkpoint pruned the
			 * name of the child it had): walk again */
			pthread_mutex_lock(&nc->lock);
			bool gone = p->dead || p->child[i] || CMM_LOAD_SHARED(p->caddr[i]) != addr;
			pthread_mutex_unlock(&nc->lock);
			if (gone && *err != -ENOMEM)
				*err = -ESTALE;
			return NULL;
		}
	}
}

/* The object for the live node at addr, read and inserted if away (the
 * writer, which needs no pointer published).  -ESTALE: no live node. */
static int cache_get(struct tree_cache *nc, uint64_t addr, unsigned level, struct tree_node **out)
{
	struct tree_node *c, *fresh = NULL;
	bool away;
	int err;

	pthread_mutex_lock(&nc->lock);
	c = adopt_locked(nc, addr, &fresh, &err);
	away = !c && map_get(&nc->away, addr);
	pthread_mutex_unlock(&nc->lock);
	if (away) {
		err = cache_read(nc, addr, level, &fresh);
		if (err)
			return err;
		pthread_mutex_lock(&nc->lock);
		c = adopt_locked(nc, addr, &fresh, &err);
		pthread_mutex_unlock(&nc->lock);
		free(fresh);
	}
	if (!c)
		return err ? err : -ESTALE;
	if (c->level != level)
		return -EILSEQ;
	*out = c;
	return 0;
}

/* Child i of n (level > 0), loading it if it is away: NULL with *err 0 is
 * a hole.  With nowait an away child is -EAGAIN.  Readers inside
 * rcu_read_lock, or the writer. */
static inline struct tree_node *child_of(struct tree_cache *nc, const struct tree_node *n,
                                         unsigned i, bool nowait, int *err)
{
	struct tree_node *c = rcu_dereference(n->child[i]);
	*err = 0;
	if (caa_likely(c != NULL)) {
		if (caa_unlikely(!CMM_LOAD_SHARED(c->used)))
			CMM_STORE_SHARED(c->used, 1); /* CLOCK's reference bit */
		return c;
	}
	uint64_t addr = CMM_LOAD_SHARED(n->caddr[i]);
	if (!addr)
		return NULL;
	if (nowait || !nc) {
		*err = nc ? -EAGAIN : -EIO;
		return NULL;
	}
	return child_fault(nc, n, i, addr, err);
}

/* Store child i of p (the writer; p may be visible to readers). */
static void set_child(struct tree_cache *nc, struct tree_node *p, unsigned i, struct tree_node *c,
                      uint64_t addr)
{
	if (nc)
		pthread_mutex_lock(&nc->lock);
	struct tree_node *old = p->child[i];
	rcu_assign_pointer(p->child[i], c);
	CMM_STORE_SHARED(p->caddr[i], addr);
	if (old)
		old->npub--;
	if (c)
		c->npub++;
	if (nc)
		pthread_mutex_unlock(&nc->lock);
}

bool tree_stale_again(int *err, unsigned *tries);

/* ---- roots ------------------------------------------------------------
 *
 * A root is published in t->root, or parked (tree_park): t->root NULL and
 * its block in t->away, the node itself evictable like any other.  Both
 * fields change under the cache lock.  Whoever uses a parked root reads it
 * (or finds it in memory) and publishes it again, unless the tree is a
 * reader's copy; away keeps its value then (it means something only while
 * root is NULL), so a reader that saw root NULL before the publish and
 * reads away after still finds the root.  away is cleared only before a
 * root becomes NULL for good (empty), and set before one is parked: a
 * reader that finds root NULL and away 0 without the lock has an empty
 * tree. */

/* Publish n as t's root (NULL: empty), counting the trees each root is
 * of.  The writer. */
static void root_set(struct tree *t, struct tree_node *n)
{
	if (t->nc)
		pthread_mutex_lock(&t->nc->lock);
	struct tree_node *old = t->root;
	if (n)
		n->nroot++;
	if (old)
		old->nroot--;
	if (!n)
		t->away = 0; /* before root: rcu_assign_pointer orders them */
	rcu_assign_pointer(t->root, n);
	if (t->nc)
		pthread_mutex_unlock(&t->nc->lock);
}

/* t's root: the published one, or the parked one, found in memory or read
 * (with nowait: -EAGAIN), published again with publish.  NULL with *err 0:
 * an empty tree.  Readers inside rcu_read_lock(), or the writer. */
static struct tree_node *root_get(const struct tree *ct, bool nowait, bool publish, int *err)
{
	struct tree *t = (struct tree *)ct; /* publishing is the one store */
	struct tree_cache *nc = t->nc;
	struct tree_node *r = rcu_dereference(t->root), *c = NULL;
	unsigned tries = 0;

	*err = 0;
	if (caa_likely(r != NULL) || !nc)
		return r;
	cmm_smp_rmb(); /* root, then away: see above */
	if (!CMM_LOAD_SHARED(t->away))
		return NULL; /* empty */
	publish = publish && !t->copy;
	do {
		pthread_mutex_lock(&nc->lock);
		uint64_t addr = t->away;
		r = t->root;
		c = !r && addr ? map_get(&nc->nodes, addr) : NULL;
		if (c && c->level == t->levels - 1u && publish) {
			rcu_assign_pointer(t->root, c);
			c->nroot++;
		}
		pthread_mutex_unlock(&nc->lock);
		*err = 0;
		if (r || !addr)
			return r;
		if (c) {
			*err = c->level == t->levels - 1u ? 0 : -EILSEQ;
			CMM_STORE_SHARED(c->used, 1);
			return *err ? NULL : c;
		}
		if (nowait) {
			*err = -EAGAIN;
			return NULL;
		}
		/* read it in; the next round finds it (or a new root).  Each
		 * round counts as a stale one, so that a root evicted between
		 * every read and the next round ends in -EIO, not a loop. */
		*err = cache_get(nc, addr, t->levels - 1u, &c);
		if (!*err) {
			cache_loaded(nc);
			*err = -ESTALE;
		}
	} while (tree_stale_again(err, &tries));
	return NULL;
}

bool tree_park(struct tree *t)
{
	struct tree_node *r = t->root;
	if (!r || !t->nc || r->dirty || !r->disk)
		return false;
	pthread_mutex_lock(&t->nc->lock);
	t->away = r->disk;
	t->away_total = r->total;
	rcu_assign_pointer(t->root, NULL);
	r->nroot--;
	/* the hand may find something again */
	t->nc->idle_visits = 0;
	__atomic_store_n(&t->nc->stuck, false, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&t->nc->lock);
	return true;
}

void tree_copy(struct tree *dst, const struct tree *src)
{
	*dst = *src;
	dst->copy = true;
	if (src->nc)
		pthread_mutex_lock(&src->nc->lock);
	dst->root = rcu_dereference(src->root);
	dst->away = src->away;
	if (src->nc)
		pthread_mutex_unlock(&src->nc->lock);
}

bool tree_same_root(const struct tree *a, const struct tree *b)
{
	struct tree_cache *nc = a->nc ? a->nc : b->nc;
	if (nc)
		pthread_mutex_lock(&nc->lock);
	bool same = rcu_dereference(a->root) == rcu_dereference(b->root) && a->away == b->away;
	if (nc)
		pthread_mutex_unlock(&nc->lock);
	return same;
}

uint64_t tree_root_addr(const struct tree *t)
{
	return t->root ? t->root->disk : t->away;
}

uint64_t tree_total(const struct tree *t)
{
	return t->root ? t->root->total : t->away ? t->away_total : 0;
}

/* ---- readers ------------------------------------------------------------ */

bool tree_stale_again(int *err, unsigned *tries)
{
	if (*err != -ESTALE)
		return false;
	if (++*tries < 64)
		return true;
	*err = -EIO;
	return false;
}

/* The name lba maps (0: a hole). */
static int lookup_name(const struct tree *t, uint64_t lba, bool nowait, uint64_t *name)
{
	unsigned tries = 0;
	int err;

	do {
		const struct tree_node *n = root_get(t, nowait, true, &err);
		for (unsigned k = t->levels - 1; n && k > 0 && !err; k--)
			n = child_of(t->nc, n, idx(lba, k), nowait, &err);
		*name = n && !err ? CMM_LOAD_SHARED(n->phys[lba % FMT_FANOUT]) : 0;
	} while (tree_stale_again(&err, &tries));
	return err;
}

int tree_lookup(const struct tree *t, uint64_t lba, bool nowait, uint64_t *phys)
{
	for (unsigned tries = 0;; tries++) {
		uint64_t name, again;
		int err = lookup_name(t, lba, nowait, &name);
		if (err || !name || !t->nc) {
			*phys = err ? 0 : name;
			return err;
		}
		err = nowait ? fwd_resolve_nowait(alloc_fwd(t->nc->a), name, phys)
		             : fwd_resolve(alloc_fwd(t->nc->a), name, phys);
		if (err != -EILSEQ)
			return err;
		/* The writer may have overwritten lba since, and a checkpoint
		 * pruned the old name's entry: then the slot says so. */
		if (tries < 64 && !lookup_name(t, lba, nowait, &again) && again != name)
			continue;
		load_failed(t->nc, fwd_addr(name), -EILSEQ);
		return err;
	}
}

/* The run at `at`, within one leaf or one missing subtree: its length and
 * state (0 hole, 1 mapped); *whole if it reaches the leaf's end. */
static int run_at(const struct tree *t, uint64_t at, bool nowait, uint64_t *n, int *st, bool *whole)
{
	unsigned tries = 0;
	int err;

	do {
		const struct tree_node *root = root_get(t, nowait, true, &err), *nd = root, *c;
		unsigned k = t->levels - 1;
		if (err)
			continue;
		while (nd && k > 0) {
			c = child_of(t->nc, nd, idx(at, k), nowait, &err);
			if (err)
				break;
			nd = c;
			if (nd)
				k--;
		}
		if (err)
			continue;
		if (!nd) {
			/* a hole as large as the missing subtree (level k+1's child span) */
			uint64_t sp = root ? span[k] : span[t->levels];
			*st = 0;
			*n = sp - at % sp;
			*whole = true;
		} else {
			unsigned i = (unsigned)(at % FMT_FANOUT);
			*st = CMM_LOAD_SHARED(nd->phys[i]) != 0;
			*n = 1;
			while (i + *n < FMT_FANOUT &&
			       (CMM_LOAD_SHARED(nd->phys[i + *n]) != 0) == *st)
				(*n)++;
			*whole = i + *n == FMT_FANOUT;
		}
	} while (tree_stale_again(&err, &tries));
	return err;
}

int tree_run(const struct tree *t, uint64_t lba, uint64_t max, bool nowait, uint64_t *len,
             bool *mapped)
{
	uint64_t done = 0;
	int state = -1; /* unknown, 0 hole, 1 mapped */

	while (done < max) {
		uint64_t n;
		int st;
		bool whole;
		int err = run_at(t, lba + done, nowait, &n, &st, &whole);
		if (err)
			return err;
		if (state >= 0 && st != state)
			break;
		state = st;
		done += n;
		if (!whole)
			break; /* the leaf changed state before its end */
	}
	*mapped = state == 1;
	*len = done < max ? done : max;
	return 0;
}

/* ---- node lifetime -------------------------------------------------- */

/* A node's block is counted once per reference to the node (docs/METADATA.md,
 * step 2): parents' slots and roots.  Once a node has a written copy, the
 * allocator's count of that block IS the node's reference count (n->ref is
 * used only before the first write), so that at a checkpoint, when every
 * node is written, the counts say how many parents share each node block,
 * as the on-disk space map does, and a node read back (by any thread)
 * needs no count of its own.  Writing a node moves all its references
 * from the old copy to the new one (write_node).  Only the writer reads or
 * changes them; a count whose page cannot be loaded leaves the allocator
 * failed (alloc_error), and then nothing is freed on its word. */
static int node_refs(const struct tree_node *n, struct alloc *a, uint32_t *out)
{
	if (!n->disk) {
		*out = n->ref;
		return 0;
	}
	int err = alloc_name_load(a, n->disk);
	*out = err ? 0 : alloc_block_refs(a, n->disk);
	return err ? err : *out ? 0 : -EILSEQ;
}

static void node_hold(struct tree_node *n, struct alloc *a)
{
	if (n->disk)
		alloc_ref(a, n->disk);
	else
		n->ref++;
}

/* Drop one reference; true if others remain (false: the caller frees). */
static bool node_unhold(struct tree_node *n, struct alloc *a)
{
	if (!n->disk)
		return --n->ref > 0;
	alloc_unref(a, n->disk);
	return alloc_error(a) || alloc_block_refs(a, n->disk) > 0;
}

/* Whether the writer may change n in place (nobody else references it):
 * 1 yes, 0 no (copy it first), or -errno. */
static int node_private(const struct tree_node *n, struct alloc *a)
{
	uint32_t r;
	int err = node_refs(n, a, &r);
	return err ? err : r == 1;
}

/* A new, clean node (callers that change it mark it dirty). */
static struct tree_node *node_new(unsigned level)
{
	size_t sz = sizeof(struct tree_node) + (level ? FMT_FANOUT * sizeof(uint64_t) : 0);
	struct tree_node *n = calloc(1, sz);
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

/* n is being freed: no longer findable by the address its image had,
 * nothing is published in it any more, and its pointers to children no
 * longer count as their parents'. */
static void cache_forget(struct tree_cache *nc, struct tree_node *n)
{
	if (nc)
		pthread_mutex_lock(&nc->lock);
	n->dead = 1;
	if (nc)
		nodes_del_locked(nc, n);
	for (unsigned i = 0; n->level > 0 && i < FMT_FANOUT; i++)
		if (n->child[i])
			n->child[i]->npub--;
	if (nc)
		pthread_mutex_unlock(&nc->lock);
}

static void node_put(struct tree_cache *nc, struct tree_node *n, struct alloc *a);

/* Drop a parent's reference on the away node at addr: only its count
 * changes, unless it was the last (then the node is read, to free what it
 * holds). */
static void put_away(struct tree_cache *nc, uint64_t addr, unsigned level, struct alloc *a)
{
	struct tree_node *c;
	struct away *aw;
	bool others = false; /* other parents still reference it */

	if (alloc_name_load(a, addr))
		return; /* the allocator failed: keep what it holds */
	pthread_mutex_lock(&nc->lock);
	c = map_get(&nc->nodes, addr);
	aw = c ? NULL : map_get(&nc->away, addr);
	pthread_mutex_unlock(&nc->lock);
	/* Only the writer changes counts and frees nodes: aw stays valid. */
	others = aw && alloc_block_refs(a, addr) > 1;
	if (others) {
		alloc_unref(a, addr);
		return;
	}
	int err = c ? 0 : cache_get(nc, addr, level, &c);
	if (err) {
		say_error("tree: cannot free the node at pool block %llu (%s): what it holds "
		          "stays allocated",
		          (unsigned long long)addr, err == -EILSEQ ? "damaged" : strerror(-err));
		return;
	}
	node_put(nc, c, a);
}

static void node_put(struct tree_cache *nc, struct tree_node *n, struct alloc *a)
{
	if (node_unhold(n, a))
		return;
	cache_forget(nc, n);
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (n->level == 0) {
			if (n->phys[i])
				alloc_unref(a, n->phys[i]);
			continue;
		}
		struct tree_node *c = rcu_dereference(n->child[i]);
		if (c)
			node_put(nc, c, a);
		else if (n->caddr[i])
			put_away(nc, n->caddr[i], n->level - 1u, a);
	}
	mark_clean(n, a); /* never written now */
	urcu_memb_call_rcu(&n->rcu, node_free_rcu);
}

/* Child i of n into the copy: its address, and the object if there is one
 * (node_copy counts the references).  Caller holds the cache lock (if any). */
static void copy_child_locked(struct tree_cache *nc, const struct tree_node *n, unsigned i,
                              struct tree_node *copy)
{
	struct tree_node *c = n->child[i];
	copy->caddr[i] = n->caddr[i];
	if (!c && n->caddr[i] && nc)
		c = map_get(&nc->nodes, n->caddr[i]);
	copy->child[i] = c;
	if (c)
		c->npub++;
}

/* A private copy of a shared node: references every child/block again. */
static struct tree_node *node_copy(struct tree_cache *nc, const struct tree_node *n,
                                   struct alloc *a)
{
	struct tree_node *c = node_new(n->level);
	if (!c)
		return NULL;
	c->nmapped = n->nmapped;
	c->total = n->total;
	if (n->level == 0) {
		memcpy(c->phys, n->phys, sizeof(c->phys));
		for (unsigned i = 0; i < FMT_FANOUT; i++)
			if (n->phys[i])
				alloc_ref(a, n->phys[i]);
		return c;
	}
	if (nc) /* readers may publish children in n meanwhile */
		pthread_mutex_lock(&nc->lock);
	for (unsigned i = 0; i < FMT_FANOUT; i++)
		copy_child_locked(nc, n, i, c);
	if (nc)
		pthread_mutex_unlock(&nc->lock);
	/* Counted after the lock (a count may have to load its page; only
	 * the writer reads or changes counts, and c is not published yet). */
	for (unsigned i = 0; i < FMT_FANOUT; i++)
		if (c->child[i])
			node_hold(c->child[i], a);
		else if (c->caddr[i])
			alloc_ref(a, c->caddr[i]);
	return c;
}

/* The root, made private (copied if shared, created if absent). */
static struct tree_node *mut_root(struct tree *t, struct alloc *a, int *err)
{
	struct tree_node *n = root_get(t, false, true, err);
	int mine = *err ? *err : n ? node_private(n, a) : 1;

	*err = mine < 0 ? mine : -ENOMEM;
	if (mine < 0)
		return NULL;
	if (!n) {
		n = node_new(t->levels - 1);
		if (!n)
			return NULL;
		root_set(t, n);
	} else if (!mine) {
		struct tree_node *c = node_copy(t->nc, n, a);
		if (!c)
			return NULL;
		node_unhold(n, a); /* others remain: it was shared */
		root_set(t, c);
		n = c;
	}
	mark_dirty(n, a);
	return n;
}

/* Child i of the private node p, made private (read first if away).
 * *err is -ENOMEM, -EIO or -EILSEQ on failure; a missing child with
 * !create gives NULL with *err == 0. */
static struct tree_node *mut_child(struct tree_cache *nc, struct tree_node *p, unsigned i,
                                   struct alloc *a, bool create, int *err)
{
	struct tree_node *c = child_of(nc, p, i, false, err);
	int mine = c ? node_private(c, a) : 1;
	if (*err)
		return NULL;
	if (mine < 0) {
		*err = mine;
		return NULL;
	}
	if (!c) {
		if (!create)
			return NULL;
		c = node_new(p->level - 1u);
		if (!c) {
			*err = -ENOMEM;
			return NULL;
		}
		set_child(nc, p, i, c, 0);
		p->nmapped++;
	} else if (!mine) {
		struct tree_node *copy = node_copy(nc, c, a);
		if (!copy) {
			*err = -ENOMEM;
			return NULL;
		}
		node_unhold(c, a); /* others remain: it was shared */
		set_child(nc, p, i, copy, 0);
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

	if (!phys) {
		uint64_t cur;
		err = lookup_name(t, lba, false, &cur);
		if (err || !cur)
			return err;
	}
	n = mut_root(t, a, &err);
	if (!n)
		return err;
	for (unsigned k = t->levels - 1; k > 0; k--) {
		path[depth++] = n;
		n = mut_child(t->nc, n, idx(lba, k), a, true, &err);
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
static int trim_node(struct tree_cache *nc, struct tree_node *n, struct alloc *a, uint64_t base,
                     uint64_t lo, uint64_t hi, uint64_t *removed)
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
		struct tree_node *c = child_of(nc, n, (unsigned)i, false, &err);
		uint64_t cbase = base + i * cspan;
		if (err)
			return err;
		if (!c)
			continue;
		if (lo <= cbase && cbase + cspan <= hi) {
			set_child(nc, n, (unsigned)i, NULL, 0);
			n->nmapped--;
			*removed += c->total;
			n->total -= c->total;
			node_put(nc, c, a);
			continue;
		}
		c = mut_child(nc, n, (unsigned)i, a, false, &err);
		if (!c)
			return err;
		uint64_t gone = 0;
		err = trim_node(nc, c, a, cbase, lo, hi, &gone);
		n->total -= gone;
		*removed += gone;
		if (err)
			return err;
		if (c->nmapped == 0) {
			set_child(nc, n, (unsigned)i, NULL, 0);
			n->nmapped--;
			node_put(nc, c, a);
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
	if ((!t->root && !t->away) || lo >= hi)
		return 0;
	if (lo == 0 && hi == span[t->levels]) {
		tree_drop(t, a);
		return 0;
	}
	r = mut_root(t, a, &err);
	if (!r)
		return err;
	uint64_t gone = 0;
	err = trim_node(t->nc, r, a, 0, lo, hi, &gone);
	if (r->nmapped == 0)
		tree_drop(t, a);
	return err;
}

void tree_share(struct tree *dst, const struct tree *src, struct alloc *a)
{
	struct tree_node *r = src->root;

	dst->levels = src->levels;
	dst->nc = src->nc;
	if (!r && src->away) { /* parked: one more count on its block, dst parked too */
		alloc_ref(a, src->away);
		pthread_mutex_lock(&dst->nc->lock);
		dst->away = src->away;
		dst->away_total = src->away_total;
		rcu_assign_pointer(dst->root, NULL);
		pthread_mutex_unlock(&dst->nc->lock);
		return;
	}
	if (r)
		node_hold(r, a);
	root_set(dst, r);
}

void tree_drop(struct tree *t, struct alloc *a)
{
	struct tree_node *r = t->root;
	uint64_t parked = r ? 0 : t->away;

	if (!r && !parked)
		return;
	root_set(t, NULL);
	if (r)
		node_put(t->nc, r, a);
	else
		put_away(t->nc, parked, t->levels - 1u, a);
}

/* Closing: remember every node in memory below n that has no written copy
 * (those with one are in the cache's map); each is visited once. */
static void release_walk(struct tree_cache *nc, struct tree_node *n)
{
	uint64_t key = (uint64_t)(uintptr_t)n;
	if (map_get(&nc->closing, key) || map_put(&nc->closing, key, n))
		return; /* seen, or out of memory: leaked rather than freed twice */
	for (unsigned i = 0; n->level > 0 && i < FMT_FANOUT; i++)
		if (n->child[i])
			release_walk(nc, n->child[i]);
}

void tree_release(struct tree *t)
{
	struct tree_node *r = t->root;
	root_set(t, NULL); /* a parked root is in the cache's maps, freed with it */
	if (r)
		release_walk(t->nc, r);
}

/* Add n's unique blocks to *u: 0, or -EAGAIN (nowait, a node away). */
static int count_unique(struct tree_cache *nc, const struct tree_node *n, const struct alloc *a,
                        bool nowait, uint64_t *u)
{
	int err = 0;

	uint32_t refs =
	    n->disk ? alloc_block_refs(a, n->disk) : __atomic_load_n(&n->ref, __ATOMIC_RELAXED);
	if (refs != 1)
		return 0; /* shared (or its count not loaded): everything below stays */
	for (unsigned i = 0; i < FMT_FANOUT && err != -EAGAIN; i++) {
		if (n->level == 0) {
			uint64_t p = CMM_LOAD_SHARED(n->phys[i]);
			*u += p && alloc_block_refs(a, p) == 1;
		} else {
			const struct tree_node *c = child_of(nc, n, i, nowait, &err);
			if (c)
				err = count_unique(nc, c, a, nowait, u);
		}
	}
	return err == -EAGAIN ? err : 0;
}

int tree_count(const struct tree *t, const struct alloc *a, bool nowait, uint64_t *mapped,
               uint64_t *unique)
{
	int err = 0;
	const struct tree_node *r = rcu_dereference(t->root);
	if (!r && !unique) {   /* a parked tree's size is known: read nothing */
		cmm_smp_rmb(); /* root, then away (see "roots") */
		*mapped = CMM_LOAD_SHARED(t->away) ? CMM_LOAD_SHARED(t->away_total) : 0;
		return 0;
	}
	r = root_get(t, nowait, true, &err);
	if (err == -EAGAIN)
		return err;
	if (r)
		*mapped = __atomic_load_n(&r->total, __ATOMIC_RELAXED);
	else /* empty, or a root that cannot be read (logged): its record's size */
		*mapped = err ? CMM_LOAD_SHARED(t->away_total) : 0;
	if (!unique)
		return 0;
	*unique = 0;
	return r ? count_unique(t->nc, r, a, nowait, unique) : 0;
}

/* ---- checkpoint write-back ------------------------------------------ */

/* n was written at addr: the cache finds it there from now on. */
static int cache_moved(struct tree_cache *nc, struct tree_node *n, uint64_t addr,
                       const struct fmt_node *img)
{
	int err = 0;

	if (nc)
		pthread_mutex_lock(&nc->lock);
	if (n->level > 0)
		for (unsigned i = 0; i < FMT_FANOUT; i++)
			CMM_STORE_SHARED(n->caddr[i], img->slot[i]);
	if (nc) {
		nodes_del_locked(nc, n);
		err = nodes_put_locked(nc, addr, n);
		/* n is clean now: the hand may find something again */
		nc->idle_visits = 0;
		__atomic_store_n(&nc->stuck, false, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&nc->lock);
	}
	return err;
}

/* n's image (its children, if any, written) into the log: n is clean. */
static int write_one(struct tree_cache *nc, struct tree_node *n, struct alloc *a, tree_emit_fn emit,
                     void *arg, struct fmt_node *img)
{
	memset(img, 0, sizeof(*img));
	img->magic = FMT_NODE_MAGIC;
	img->level = n->level;
	img->nmapped = n->nmapped;
	img->total = n->total;
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (n->level == 0) {
			img->slot[i] = n->phys[i];
		} else {
			struct tree_node *c = rcu_dereference(n->child[i]);
			img->slot[i] = c ? c->disk : n->caddr[i];
		}
	}
	uint64_t addr = emit(arg, img);
	if (!addr)
		return -EIO;
	addr = fwd_name_of(alloc_fwd(a), addr); /* what parents and roots hold */
	uint32_t refs;
	int err = node_refs(n, a, &refs);
	if (!err)
		err = cache_moved(nc, n, addr, img);
	if (err)
		return err;
	for (uint32_t k = 0; k < refs; k++) { /* every reference moves to the new copy */
		alloc_ref(a, addr);
		if (n->disk)
			alloc_unref(a, n->disk);
	}
	n->disk = addr;
	mark_clean(n, a);
	return 0;
}

static int write_node(struct tree_cache *nc, struct tree_node *n, struct alloc *a,
                      tree_emit_fn emit, void *arg, struct fmt_node *img)
{
	if (!n->dirty)
		return 0;
	if (n->level > 0)
		for (unsigned i = 0; i < FMT_FANOUT; i++) {
			struct tree_node *c = rcu_dereference(n->child[i]);
			if (c && c->dirty) {
				int err = write_node(nc, c, a, emit, arg, img);
				if (err)
					return err;
			}
		}
	return write_one(nc, n, a, emit, arg, img);
}

/* The dirty leaves of n (covering LBAs from base) that start at or after
 * *from, in LBA order, while *budget lasts; *from moves past each subtree
 * done with. */
static int write_leaves(struct tree_cache *nc, struct tree_node *n, uint64_t base, struct alloc *a,
                        tree_emit_fn emit, void *arg, struct fmt_node *img, uint64_t *from,
                        unsigned *budget)
{
	if (n->level == 0) {
		if (!*budget)
			return 0;
		(*budget)--;
		*from = base + span[1];
		return write_one(nc, n, a, emit, arg, img);
	}
	uint64_t cspan = span[n->level];
	unsigned i = *from > base ? (unsigned)((*from - base) / cspan) : 0;
	for (; i < FMT_FANOUT && *budget; i++) {
		struct tree_node *c = rcu_dereference(n->child[i]);
		if (c && c->dirty) {
			int err =
			    write_leaves(nc, c, base + i * cspan, a, emit, arg, img, from, budget);
			if (err)
				return err;
			if (*from < base + (i + 1) * cspan)
				return 0; /* the budget ran out inside c */
		}
		*from = base + (i + 1) * cspan;
	}
	return 0;
}

int tree_write_leaves(struct tree *t, struct alloc *a, tree_emit_fn emit, void *arg,
                      struct fmt_node *scratch, uint64_t *from, unsigned *budget)
{
	int err = 0;
	if (t->root && t->root->dirty && *from < span[t->levels])
		err = write_leaves(t->nc, t->root, 0, a, emit, arg, scratch, from, budget);
	if (!err && (!t->root || !t->root->dirty || *from >= span[t->levels]))
		*from = UINT64_MAX;
	return err;
}

int tree_write_dirty(struct tree *t, struct alloc *a, tree_emit_fn emit, void *arg,
                     struct fmt_node *scratch)
{
	return t->root ? write_node(t->nc, t->root, a, emit, arg, scratch) : 0;
}

/* ---- comparing trees -------------------------------------------------- */

struct diff_walk {
	struct tree_cache *nc;
	bool nowait;
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

/* Children i of a and b (either may be NULL), read if away, except when
 * both are away at one address: then both are the same node, given as
 * the same (dummy) pointer without reading it. */
static int diff_children(const struct diff_walk *w, const struct tree_node *a,
                         const struct tree_node *b, unsigned i, const struct tree_node **ca,
                         const struct tree_node **cb)
{
	int err = 0;

	*ca = a ? rcu_dereference(a->child[i]) : NULL;
	*cb = b ? rcu_dereference(b->child[i]) : NULL;
	if (!*ca && !*cb && a && b) {
		uint64_t xa = CMM_LOAD_SHARED(a->caddr[i]);
		if (xa && xa == CMM_LOAD_SHARED(b->caddr[i])) {
			*cb = *ca = a; /* never followed: equal, so skipped */
			return 0;
		}
	}
	if (!*ca && a)
		*ca = child_of(w->nc, a, i, w->nowait, &err);
	if (!err && !*cb && b)
		*cb = child_of(w->nc, b, i, w->nowait, &err);
	return err;
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
		const struct tree_node *ca, *cb;
		err = diff_children(w, a, b, i, &ca, &cb);
		if (err)
			return err;
		if (ca == cb)
			continue; /* the same subtree, or nothing in either */
		err = diff_node(ca, cb, level - 1, base + i * span[level], w);
		if (err)
			return err;
	}
	return 0;
}

int tree_diff(const struct tree *a, const struct tree *b, uint64_t lo, uint64_t hi, bool nowait,
              tree_diff_fn fn, void *arg, uint64_t *visits)
{
	struct diff_walk w = {.nc = a->nc ? a->nc : b->nc,
	                      .nowait = nowait,
	                      .lo = lo,
	                      .hi = hi,
	                      .fn = fn,
	                      .arg = arg};
	int err = 0;
	if (a->levels != b->levels)
		return -EINVAL;
	const struct tree_node *ra = root_get(a, nowait, true, &err), *rb = NULL;
	if (!err)
		rb = root_get(b, nowait, true, &err);
	if (err)
		return err;
	if (ra != rb && lo < hi)
		err = diff_node(ra, rb, a->levels - 1, 0, &w);
	if (visits)
		*visits += w.visits;
	return err;
}

struct depth_walk {
	struct tree_cache *nc;
	bool nowait;
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
			err = 0;
			for (unsigned k = 0; k < w->n && !err; k++)
				c[k] = nd[k] ? child_of(w->nc, nd[k], i, w->nowait, &err) : NULL;
			if (err)
				return err;
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

int tree_depth(const struct tree *const *chain, unsigned n, uint64_t lo, uint64_t hi, bool nowait,
               tree_depth_fn fn, void *arg)
{
	unsigned levels = chain[0]->levels;
	struct depth_walk w = {
	    .nc = chain[0]->nc, .nowait = nowait, .n = n, .lo = lo, .hi = hi, .fn = fn, .arg = arg};
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
	for (unsigned k = 0; k < n && !err; k++)
		top[k] = root_get(chain[k], nowait, true, &err);
	if (!err)
		err = top[0] ? depth_node(&w, top, levels - 1, 0) : depth_emit(&w, lo, hi - lo, 0);
	if (!err && w.run_n)
		err = fn(arg, w.run_lba, w.run_n, w.run_depth);
	free(w.nodes);
	return err;
}

/* ---- loading at open ------------------------------------------------ */

/* Undo a half-built node of load_node: what it holds so far goes. */
static void load_undo(struct tree_cache *nc, struct tree_node *n)
{
	if (n->level > 0)
		for (unsigned i = 0; i < FMT_FANOUT; i++)
			if (!n->child[i])
				n->caddr[i] = 0; /* not loaded: no reference taken */
	n->disk = 0;                             /* its own block was not referenced yet */
	node_put(nc, n, nc->a);
}

static int load_node(struct tree_cache *nc, uint64_t addr, unsigned level, struct tree_node **out)
{
	struct tree_node *n = map_get(&nc->nodes, addr);
	int err;

	if (n) { /* shared: one more parent */
		if (n->level != level)
			return -EILSEQ;
		node_hold(n, nc->a);
		*out = n;
		return 0;
	}
	err = node_read(nc, addr, level, &n);
	if (err)
		return err;
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (level == 0) {
			if (n->phys[i])
				alloc_ref(nc->a, n->phys[i]);
		} else if (n->caddr[i]) {
			err = load_node(nc, n->caddr[i], level - 1, &n->child[i]);
			if (err) {
				load_undo(nc, n);
				return err;
			}
			n->child[i]->npub++;
			n->total += n->child[i]->total;
		}
	}
	err = nodes_put_locked(nc, addr, n); /* single-threaded: no lock needed */
	if (err) {
		load_undo(nc, n);
		return err;
	}
	alloc_ref(nc->a, addr);
	*out = n;
	return 0;
}

int tree_load(struct tree_cache *nc, struct tree *t, uint64_t root_addr, unsigned levels)
{
	struct tree_node *r = NULL;
	int err = 0;

	t->levels = levels;
	t->nc = nc;
	t->root = NULL;
	t->away = 0;
	if (root_addr)
		err = load_node(nc, root_addr, levels - 1, &r);
	if (!err)
		root_set(t, r);
	return err;
}

int tree_open(struct tree_cache *nc, struct tree *t, uint64_t root_addr, unsigned levels,
              uint64_t total)
{
	int err = 0;

	t->levels = levels;
	t->nc = nc;
	t->root = NULL;
	t->away = 0;
	if (!root_addr)
		return 0;
	if (!addr_ok(nc->a, root_addr))
		return -EILSEQ; /* a record naming a block outside the pool */
	err = alloc_name_load(nc->a, root_addr);
	if (!err && !alloc_block_refs(nc->a, root_addr))
		err = -EILSEQ;
	pthread_mutex_lock(&nc->lock);
	if (!err && !map_get(&nc->nodes, root_addr) && !map_get(&nc->away, root_addr)) {
		struct away *aw = calloc(1, sizeof(*aw));
		if (!aw || map_put(&nc->away, root_addr, aw)) {
			free(aw);
			err = -ENOMEM;
		}
	}
	if (!err) { /* parked: its first user reads it */
		t->away = root_addr;
		t->away_total = total;
	}
	pthread_mutex_unlock(&nc->lock);
	if (!err && total == TREE_TOTAL_UNKNOWN) { /* read it now, and learn it */
		struct tree_node *r = root_get(t, false, true, &err);
		t->away_total = r ? r->total : 0;
	}
	return err;
}

static int dirty_all(struct tree_node *n, struct alloc *a, struct map *seen)
{
	uint64_t key = (uint64_t)(uintptr_t)n;
	if (map_get(seen, key))
		return 0; /* shared: marked with everything below on the first visit */
	if (map_put(seen, key, (void *)1))
		return -ENOMEM;
	mark_dirty(n, a);
	for (unsigned i = 0; n->level > 0 && i < FMT_FANOUT; i++) {
		struct tree_node *c = n->child[i];
		int err = c ? dirty_all(c, a, seen) : n->caddr[i] ? -EAGAIN : 0;
		if (err)
			return err;
	}
	return 0;
}

int tree_dirty_all(struct tree *const *trees, unsigned n, struct alloc *a)
{
	struct map seen = {0};
	int err = 0;

	for (unsigned i = 0; i < n && !err; i++) {
		struct tree_node *r = root_get(trees[i], false, true, &err);
		if (r)
			err = dirty_all(r, a, &seen);
	}
	map_clear(&seen);
	return err;
}

/* ---- dropping nodes from memory: eviction ------------------------------ */

/* Eviction is a CLOCK over the nodes in memory (the `nodes` map, whose
 * slot order is the clock face), driven from the parent's side: a node's
 * pointers live in its parents, so the hand, visiting a node, unpublishes
 * each child that may go and was not followed since the hand last passed
 * (readers set `used`), and the child leaves memory when no parent's
 * pointer to it is left (npub 0).  A child may go when it is clean, has a
 * written copy that its parent's image names (caddr), is no tree's root
 * and has no child in memory itself: leaves go first, and an interior
 * node becomes evictable once its children are gone.  A node no pointer
 * reaches (its parents were freed or evicted, or a parked root) goes when
 * the hand visits it, with the same second chance if it was followed
 * since (a reader's copy walking a parked root).  Dirty nodes, their
 * paths (dirty too) and unwritten nodes are never in `nodes`' candidates:
 * the early checkpoint bounds them.
 * Evicting moves the node to `away` and frees it after a grace period;
 * `dead` stops a reader that still holds it from publishing in it. */

static bool no_child_locked(const struct tree_node *n)
{
	for (unsigned i = 0; n->level > 0 && i < FMT_FANOUT; i++)
		if (n->child[i])
			return false;
	return true;
}

static bool may_go_locked(const struct tree_node *c)
{
	return !c->dirty && c->disk && !c->nroot && !c->dead && no_child_locked(c);
}

/* c (npub 0, may go) leaves memory: false if out of memory (it stays,
 * found again by address, and the hand retries it). */
static bool evict_locked(struct tree_cache *nc, struct tree_node *c)
{
	struct away *aw = malloc(sizeof(*aw));
	if (!aw)
		return false;
	*aw = (struct away){.total = c->total};
	if (map_put(&nc->away, c->disk, aw)) {
		free(aw);
		return false;
	}
	nodes_del_locked(nc, c);
	c->dead = 1;
	nc->evictions++;
	urcu_memb_call_rcu(&c->rcu, node_free_rcu);
	return true;
}

/* The hand visits x: unpublish the children that may go (every one with
 * force, else those not used since the last visit), evicting each whose
 * last pointer that was, then x itself if nothing points at it.  Returns
 * the changes made.  Caller holds the lock (writer). */
static unsigned sweep_locked(struct tree_cache *nc, struct tree_node *x, bool force)
{
	unsigned changes = 0;

	for (unsigned i = 0; x->level > 0 && i < FMT_FANOUT; i++) {
		struct tree_node *c = x->child[i];
		if (!c || x->caddr[i] != c->disk || !may_go_locked(c))
			continue;
		if (c->used && !force) {
			c->used = 0; /* a second chance: the hand moved on, progress too */
			changes++;
			continue;
		}
		rcu_assign_pointer(x->child[i], NULL);
		changes++;
		if (--c->npub == 0)
			evict_locked(nc, c);
	}
	if (!x->npub && may_go_locked(x)) {
		/* No pointer to x: what freed parents left, or a parked root
		 * that a reader's copy walks (found by its address, never
		 * published).  Followed since the last visit: the second
		 * chance, as for a child, or the walk loses it at each read. */
		if (x->used && !force)
			x->used = 0;
		else if (!evict_locked(nc, x))
			return changes;
		changes++;
	}
	return changes;
}

/* Visit up to `budget` nodes from the hand on; stop early when under
 * `target` bytes (0: never).  Returns the changes made.  Writer. */
static uint64_t sweep(struct tree_cache *nc, unsigned budget, uint64_t target, bool force)
{
	uint64_t changes = 0;
	bool wrapped = false;

	pthread_mutex_lock(&nc->lock);
	for (unsigned v = 0; v < budget && !(target && cache_bytes(nc) <= target);) {
		size_t pos = nc->hand;
		uint64_t k;
		void **val = map_next(&nc->nodes, &pos, &k);
		if (!val) {
			if (wrapped)
				break;
			wrapped = true;
			nc->hand = 0;
			continue;
		}
		nc->hand = pos;
		unsigned c = sweep_locked(nc, *val, force);
		nc->idle_visits = c ? 0 : nc->idle_visits + 1;
		changes += c;
		v++;
		if (v % 64 == 0) { /* let readers load */
			pthread_mutex_unlock(&nc->lock);
			pthread_mutex_lock(&nc->lock);
		}
	}
	pthread_mutex_unlock(&nc->lock);
	return changes;
}

void tree_cache_bound(struct tree_cache *nc, uint64_t bytes, void (*wake)(void *), void *arg)
{
	pthread_mutex_lock(&nc->lock);
	nc->bound = bytes;
	nc->wake = wake;
	nc->wake_arg = arg;
	pthread_mutex_unlock(&nc->lock);
}

bool tree_cache_above(const struct tree_cache *nc)
{
	return nc->bound && cache_bytes(nc) > nc->bound;
}

bool tree_cache_over(const struct tree_cache *nc)
{
	return nc->bound && cache_bytes(nc) > nc->bound &&
	       !__atomic_load_n(&nc->stuck, __ATOMIC_RELAXED);
}

uint64_t tree_cache_pinned(const struct tree_cache *nc)
{
	/* a dirty node is a leaf, but for 1 in 504 */
	return alloc_meta_pending(nc->a) * (sizeof(struct tree_node) + MALLOC_OVERHEAD);
}

bool tree_cache_evict(struct tree_cache *nc, unsigned budget)
{
	__atomic_store_n(&nc->woken, false, __ATOMIC_RELAXED);
	if (!nc->bound)
		return false;
	if (cache_bytes(nc) > nc->bound)
		nc->evicting = true;
	if (nc->evicting) {
		uint64_t target = nc->bound - nc->bound / 8;
		sweep(nc, budget, target, false);
		nc->evicting = cache_bytes(nc) > target;
		pthread_mutex_lock(&nc->lock);
		__atomic_store_n(&nc->stuck, nc->idle_visits > nc->nodes.n, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&nc->lock);
	}
	return tree_cache_pinned(nc) > nc->bound / 2;
}

/* The hand never meets nodes without a written copy (not in `nodes`):
 * visit those below n, along its dirty paths, where they all are. */
static uint64_t sweep_unwritten_locked(struct tree_cache *nc, struct tree_node *n)
{
	uint64_t changes = 0;

	for (unsigned i = 0; n->level > 0 && i < FMT_FANOUT; i++) {
		struct tree_node *c = n->child[i];
		if (c && c->dirty)
			changes += sweep_unwritten_locked(nc, c);
	}
	return changes + (n->disk ? 0 : sweep_locked(nc, n, true));
}

uint64_t tree_unload(struct tree *const *trees, unsigned n)
{
	struct tree_cache *nc = n ? trees[0]->nc : NULL;
	uint64_t before;

	if (!nc)
		return 0;
	pthread_mutex_lock(&nc->lock);
	before = nc->evictions;
	pthread_mutex_unlock(&nc->lock);
	/* A pass unpublishes each level's leaves; the next their parents.
	 * Readers loading meanwhile could keep every pass busy: a tree has
	 * at most 4 levels: twice as many passes are enough. */
	for (uint64_t changes = 1, pass = 0; changes && pass < 8; pass++) {
		nc->hand = 0;
		changes = sweep(nc, UINT_MAX, 0, true);
		pthread_mutex_lock(&nc->lock);
		for (unsigned i = 0; i < n; i++)
			if (trees[i]->root && trees[i]->root->dirty)
				changes += sweep_unwritten_locked(nc, trees[i]->root);
		pthread_mutex_unlock(&nc->lock);
	}
	pthread_mutex_lock(&nc->lock);
	before = nc->evictions - before;
	pthread_mutex_unlock(&nc->lock);
	return before;
}

/* ---- checker -------------------------------------------------------- */

/* The block range this pass counts ([lo, hi): bref[b - lo]) and whether
 * it reports what it finds (a check in several passes over block ranges
 * walks every tree in each, and reports in the first only).  The checker
 * runs on one thread. */
static uint64_t check_lo, check_hi;
static bool check_report = true;

#define check_say(...)                                                                             \
	do {                                                                                       \
		if (check_report)                                                                  \
			say_problem(__VA_ARGS__);                                                  \
	} while (0)

/* Why a node could not be read, for the checker's report (strerror's
 * word for EILSEQ is about multibyte characters). */
static const char *read_error(int err)
{
	return err == -EILSEQ ? "damaged (checksum, address, level or slots)" : strerror(-err);
}

/* The block a name is at now, for the checker: false (reported) if it
 * resolves nowhere or outside the pool. */
static bool check_blk(const struct fwd *f, uint64_t name, uint64_t nblocks, uint64_t *blk)
{
	if (fwd_resolve(f, name, blk)) {
		check_say("names that resolve nowhere", 1,
		          "check: pool block %llu (tag %u) is named but neither current nor "
		          "forwarded",
		          (unsigned long long)fwd_addr(name), fwd_tag(name));
		return false;
	}
	if (*blk >= nblocks) {
		check_say("block addresses out of range", 1, "check: block %llu out of range",
		          (unsigned long long)*blk);
		return false;
	}
	return true;
}

static void count_ref(uint32_t *bref, uint64_t blk)
{
	if (blk >= check_lo && blk < check_hi)
		bref[blk - check_lo]++;
}

static int check_node(struct tree_cache *nc, const struct fwd *f, struct tree_node *n,
                      unsigned level, struct map *seen, struct map *pubs, uint32_t *bref,
                      uint64_t nblocks)
{
	uint64_t blk;
	uintptr_t c = (uintptr_t)map_get(seen, (uint64_t)(uintptr_t)n);
	int bad = 0, err;
	bool unreadable = false;

	if (map_put(seen, (uint64_t)(uintptr_t)n, (void *)(c + 1)) < 0) {
		check_say("checks that could not run", 1, "check: out of memory walking a tree");
		return 1;
	}
	if (n->disk && check_blk(f, n->disk, nblocks, &blk))
		count_ref(bref, blk); /* its block: once per reference */
	else if (n->disk)
		bad++;
	if (c)
		return bad; /* children counted on the first visit */
	if (n->level != level) {
		check_say("tree node errors", 1, "check: node at level %u claims level %u", level,
		          n->level);
		bad++;
	}
	unsigned cnt = 0;
	uint64_t total = 0;
	for (unsigned i = 0; i < FMT_FANOUT; i++) {
		if (level == 0) {
			if (n->phys[i]) {
				cnt++;
				total++;
				if (check_blk(f, n->phys[i], nblocks, &blk))
					count_ref(bref, blk);
				else
					bad++;
			}
			continue;
		}
		struct tree_node *ch = child_of(nc, n, i, false, &err);
		if (err) {
			check_say("tree nodes that cannot be read", 1,
			          "check: node at pool block %llu: %s",
			          (unsigned long long)n->caddr[i], read_error(err));
			bad++;
			cnt++;
			unreadable = true;
		} else if (ch) {
			uint64_t k = (uint64_t)(uintptr_t)ch;
			cnt++;
			total += ch->total;
			if (n->child[i] == ch &&
			    map_put(pubs, k, (void *)((uintptr_t)map_get(pubs, k) + 1)))
				bad++;
			bad += check_node(nc, f, ch, level - 1, seen, pubs, bref, nblocks);
		}
	}
	if (cnt != n->nmapped) {
		check_say("tree node errors", 1, "check: node has %u mapped slots, counts %u", cnt,
		          n->nmapped);
		bad++;
	}
	if (!unreadable && total != n->total) {
		check_say("tree node errors", 1,
		          "check: node claims %llu mapped blocks below it, holds %llu",
		          (unsigned long long)n->total, (unsigned long long)total);
		bad++;
	}
	return bad;
}

int tree_check_all(struct tree *const *trees, unsigned n, const struct alloc *a, uint32_t *bref)
{
	return tree_check_range(trees, n, a, 0, alloc_nblocks(a), bref, true);
}

int tree_check_range(struct tree *const *trees, unsigned n, const struct alloc *a, uint64_t lo,
                     uint64_t hi, uint32_t *bref, bool report)
{
	uint64_t nblocks = alloc_nblocks(a);
	check_lo = lo;
	check_hi = hi;
	check_report = report;
	struct map seen = {0}, pubs = {0}, roots = {0};
	int bad = 0;

	for (unsigned i = 0; i < n; i++) {
		int err;
		struct tree_node *r = root_get(trees[i], false, false, &err);
		uint64_t k = (uint64_t)(uintptr_t)r;
		if (err) {
			check_say("tree nodes that cannot be read", 1,
			          "check: the root at pool block %llu: %s",
			          (unsigned long long)trees[i]->away, read_error(err));
			bad++;
		}
		if (!r)
			continue;
		if (trees[i]->root != r && r->total != trees[i]->away_total) {
			check_say("tree node errors", 1,
			          "check: a volume record says its tree maps %llu blocks, its root "
			          "at pool block %llu says %llu",
			          (unsigned long long)trees[i]->away_total,
			          (unsigned long long)trees[i]->away, (unsigned long long)r->total);
			bad++;
		}
		if (trees[i]->root == r &&
		    map_put(&roots, k, (void *)((uintptr_t)map_get(&roots, k) + 1)))
			bad++;
		bad += check_node(trees[i]->nc, alloc_fwd(a), r, trees[i]->levels - 1, &seen, &pubs,
		                  bref, nblocks);
	}
	size_t pos = 0;
	uint64_t key;
	void **val;
	while ((val = map_next(&seen, &pos, &key))) {
		const struct tree_node *tn = (const void *)(uintptr_t)key;
		/* A written node's count is its block's: alloc_verify compares it. */
		if (!tn->disk && tn->ref != (uintptr_t)*val) {
			check_say("tree node reference counts that differ", 1,
			          "check: node has ref %u but %lu references", tn->ref,
			          (unsigned long)(uintptr_t)*val);
			bad++;
		}
		/* Eviction trusts these: a root it took for none, or fewer
		 * pointers than there are, would free a node in use (more are
		 * possible: parents no tree reaches until the hand passes). */
		uintptr_t nr = (uintptr_t)map_get(&roots, key), np = (uintptr_t)map_get(&pubs, key);
		if (tn->nroot != nr || tn->npub < np) {
			check_say("tree node pointer counts that differ", 1,
			          "check: node is %lu trees' root and has %lu parents' pointers, "
			          "counts %u and %u",
			          (unsigned long)nr, (unsigned long)np, tn->nroot, tn->npub);
			bad++;
		}
	}
	map_clear(&roots);
	map_clear(&pubs);
	map_clear(&seen);
	check_report = true;
	return report ? bad : 0;
}

static uint64_t count_dirty(const struct tree_node *n, struct map *seen)
{
	uint64_t d;
	if (map_get(seen, (uint64_t)(uintptr_t)n) ||
	    map_put(seen, (uint64_t)(uintptr_t)n, (void *)1))
		return 0; /* counted already (or out of memory: undercount) */
	d = n->dirty;
	if (n->level > 0)
		for (unsigned i = 0; i < FMT_FANOUT; i++) {
			const struct tree_node *c = rcu_dereference(n->child[i]);
			if (c) /* a node away is clean, and so is all below it */
				d += count_dirty(c, seen);
		}
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
