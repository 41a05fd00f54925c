/* fwd.c — block names and the forwarding map (see fwd.h).  Layer: under
 * alloc (which owns one and resolves names through it), beside tree and
 * compact.  Locks: none; one writer, RCU readers (fwd.h).
 *
 * Per segment: its life (an atomic u32) and, if it has forwarded lives,
 * one immutable struct fwd_seg holding a table per retired life, sorted by
 * tag, each table's entries sorted by block index.  An entry is the copy's
 * address | idx << 48 and changes in place only when the copy moves again.
 * Adding or pruning tables publishes a new struct fwd_seg and frees the
 * old one after a grace period. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "fwd.h"
#include "map.h"
#include "say.h"

/* Allocator overhead per malloc'd object, counted in a footprint. */
#define MALLOC_OVERHEAD 16

#define ENT_ADDR_MASK ((1ull << 48) - 1)

static inline uint64_t ent_make(uint64_t blk, unsigned idx)
{
	return blk | (uint64_t)idx << 48;
}

static inline unsigned ent_idx(uint64_t e)
{
	return (unsigned)(e >> 48);
}

struct fwd_tab {
	uint32_t tag;
	uint32_t n;
	uint64_t *ent; /* into the owning fwd_seg's allocation */
};

struct fwd_seg {
	struct rcu_head rcu;
	uint32_t ntab;
	uint32_t nent;
	struct fwd_tab tab[]; /* then the entries of every table */
};

struct fwd {
	uint64_t nsegs;
	uint32_t *life;       /* per segment; atomic (readers) */
	struct fwd_seg **seg; /* per segment; RCU-published, NULL: none, or away */
	uint8_t *away;        /* per segment; atomic: its tables are on disk only */
	uint8_t *used;        /* per segment: resolved through since the hand passed */
	uint64_t *dirty;      /* bitmap: tables or life changed since fwd_clean */
	uint64_t *marked;     /* bitmap: a forwarded block lost its last reference */
	uint64_t nent, nwith; /* entries, segments with tables, in memory (load_lock) */
	uint64_t bytes;       /* their footprint (load_lock; read racily) */
	uint64_t added;       /* entries fwd_publish added since fwd_clean */
	uint64_t loads, evictions, hand;
	struct map stage;          /* birth -> new address (as a pointer value) */
	struct map stage_segs;     /* segment -> 1: segments with staged native births */
	pthread_mutex_t load_lock; /* loads, and the counts above */
	fwd_loader_fn *loader;
	void *loader_arg;
	uint64_t last_bad; /* the last segment whose tables could not be loaded (logged) */
};

static inline uint64_t seg_of(uint64_t blk)
{
	return blk / FMT_SEG_BLOCKS;
}

static void bit_set(uint64_t *m, uint64_t i)
{
	m[i / 64] |= 1ull << (i % 64);
}

struct fwd *fwd_new(uint64_t nsegs)
{
	struct fwd *f = calloc(1, sizeof(*f));
	size_t words = (nsegs + 63) / 64;
	if (!f)
		return NULL;
	f->nsegs = nsegs;
	f->life = calloc(nsegs, sizeof(*f->life));
	f->seg = calloc(nsegs, sizeof(*f->seg));
	f->dirty = calloc(words, sizeof(uint64_t));
	f->marked = calloc(words, sizeof(uint64_t));
	f->away = calloc(nsegs, 1);
	f->used = calloc(nsegs, 1);
	pthread_mutex_init(&f->load_lock, NULL);
	if (!f->life || !f->seg || !f->dirty || !f->marked || !f->away || !f->used) {
		fwd_free(f);
		return NULL;
	}
	return f;
}

void fwd_free(struct fwd *f)
{
	if (!f)
		return;
	for (uint64_t s = 0; f->seg && s < f->nsegs; s++)
		free(f->seg[s]);
	free(f->seg);
	free(f->life);
	free(f->dirty);
	free(f->marked);
	free(f->away);
	free(f->used);
	pthread_mutex_destroy(&f->load_lock);
	map_clear(&f->stage);
	map_clear(&f->stage_segs);
	free(f);
}

uint32_t fwd_life(const struct fwd *f, uint64_t seg)
{
	return __atomic_load_n(&f->life[seg], __ATOMIC_ACQUIRE);
}

uint64_t fwd_name_of(const struct fwd *f, uint64_t blk)
{
	return fwd_make(blk, fwd_life(f, seg_of(blk)));
}

static const struct fwd_tab *tab_find(const struct fwd_seg *s, uint32_t tag)
{
	for (uint32_t t = 0; s && t < s->ntab; t++)
		if (s->tab[t].tag == tag)
			return &s->tab[t];
	return NULL;
}

/* The entry of idx in tab, or NULL. */
static uint64_t *ent_find(const struct fwd_tab *tab, unsigned idx)
{
	uint32_t lo = 0, hi = tab ? tab->n : 0;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		unsigned at = ent_idx(__atomic_load_n(&tab->ent[mid], __ATOMIC_RELAXED));
		if (at == idx)
			return &tab->ent[mid];
		if (at < idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static uint64_t seg_bytes(const struct fwd_seg *s)
{
	return s ? sizeof(*s) + s->ntab * sizeof(struct fwd_tab) + s->nent * sizeof(uint64_t) +
	               MALLOC_OVERHEAD
	         : 0;
}

static int seg_load(struct fwd *f, uint64_t seg, bool nowait);

/* seg's tables (NULL: none), loaded if they are away (with nowait:
 * -EAGAIN instead).  A segment is made away before its tables are
 * unpublished, and published before it stops being away, so a reader that
 * finds neither looks again.  Any thread, inside rcu_read_lock (or the
 * writer). */
static const struct fwd_seg *seg_tables(const struct fwd *cf, uint64_t seg, bool nowait, int *err)
{
	struct fwd *f = (struct fwd *)cf; /* loading is the one store */
	*err = 0;
	for (;;) {
		/* acquire: the away flag read below is not older than this */
		const struct fwd_seg *s = __atomic_load_n(&f->seg[seg], __ATOMIC_ACQUIRE);
		if (s) {
			if (!f->used[seg])
				f->used[seg] = 1; /* CLOCK's bit, racy */
			return s;
		}
		if (!__atomic_load_n(&f->away[seg], __ATOMIC_ACQUIRE)) {
			if (!__atomic_load_n(&f->seg[seg], __ATOMIC_ACQUIRE))
				return NULL;
			continue; /* loaded meanwhile */
		}
		if ((*err = seg_load(f, seg, nowait)))
			return NULL;
	}
}

/* The F entry of a forwarded name, or NULL (*err: 0, or the load's). */
static uint64_t *fwd_entry(const struct fwd *f, uint64_t name, bool nowait, int *err)
{
	uint64_t addr = fwd_addr(name), seg = seg_of(addr);
	const struct fwd_seg *s = seg_tables(f, seg, nowait, err);
	return ent_find(tab_find(s, fwd_tag(name)), (unsigned)(addr % FMT_SEG_BLOCKS));
}

static int resolve(const struct fwd *f, uint64_t name, bool nowait, uint64_t *blk)
{
	uint64_t addr = fwd_addr(name), seg = seg_of(addr);
	int err;
	if (seg >= f->nsegs || seg == 0)
		return -EILSEQ;
	if (fwd_tag(name) == fwd_life(f, seg)) {
		*blk = addr;
		return 0;
	}
	uint64_t *e = fwd_entry(f, name, nowait, &err);
	if (!e)
		return err ? err : -EILSEQ;
	*blk = __atomic_load_n(e, __ATOMIC_RELAXED) & ENT_ADDR_MASK;
	return 0;
}

int fwd_self_name(struct fwd *f, uint64_t blk, uint64_t *name)
{
	uint64_t seg = seg_of(blk);
	unsigned idx = (unsigned)(blk % FMT_SEG_BLOCKS);
	int err;
	*name = 0;
	const struct fwd_seg *s = seg_tables(f, seg, false, &err);
	for (uint32_t t = 0; s && t < s->ntab; t++) {
		uint64_t *e = ent_find(&s->tab[t], idx);
		if (e && (__atomic_load_n(e, __ATOMIC_RELAXED) & ENT_ADDR_MASK) == blk) {
			*name = fwd_make(blk, s->tab[t].tag);
			break;
		}
	}
	return err;
}

int fwd_resolve(const struct fwd *f, uint64_t name, uint64_t *blk)
{
	return resolve(f, name, false, blk);
}

int fwd_resolve_nowait(const struct fwd *f, uint64_t name, uint64_t *blk)
{
	return resolve(f, name, true, blk);
}

/* ---- building tables ---------------------------------------------------- */

/* A struct fwd_seg for ntab tables of nent entries in all (tables' n and
 * ent set by the caller, in order, with seg_layout). */
static struct fwd_seg *seg_alloc(uint32_t ntab, uint32_t nent)
{
	struct fwd_seg *s =
	    calloc(1, sizeof(*s) + ntab * sizeof(struct fwd_tab) + (size_t)nent * sizeof(uint64_t));
	if (!s)
		return NULL;
	s->ntab = ntab;
	s->nent = nent;
	return s;
}

/* Point each table's ent into s's entry area, given every tab[].n. */
static void seg_layout(struct fwd_seg *s)
{
	uint64_t *at = (uint64_t *)&s->tab[s->ntab];
	for (uint32_t t = 0; t < s->ntab; t++) {
		s->tab[t].ent = at;
		at += s->tab[t].n;
	}
}

static void seg_free_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct fwd_seg, rcu));
}

/* Publish s (NULL: none) as seg's tables, the old ones freed after a grace
 * period; counts follow. */
static void seg_replace(struct fwd *f, uint64_t seg, struct fwd_seg *s)
{
	pthread_mutex_lock(&f->load_lock);
	struct fwd_seg *old = f->seg[seg];
	f->nent = f->nent - (old ? old->nent : 0) + (s ? s->nent : 0);
	f->nwith = f->nwith - (old != NULL) + (s != NULL);
	f->bytes = f->bytes - seg_bytes(old) + seg_bytes(s);
	rcu_assign_pointer(f->seg[seg], s);
	pthread_mutex_unlock(&f->load_lock);
	if (old)
		urcu_memb_call_rcu(&old->rcu, seg_free_rcu);
	bit_set(f->dirty, seg);
}

static int by_idx(const void *x, const void *y)
{
	unsigned a = ent_idx(*(const uint64_t *)x), b = ent_idx(*(const uint64_t *)y);
	return a < b ? -1 : a > b;
}

/* A copy of old (NULL: none) with its tables' entries filtered by
 * keep(arg, entry) (NULL: all kept) and, unless n is 0, a new table for tag
 * holding add[0..n) (sorted here).  Empty tables are left out; *out is NULL
 * if none is left.  0 or -ENOMEM. */
static int seg_build(const struct fwd_seg *old, bool (*keep)(void *, uint64_t), void *arg,
                     uint32_t tag, uint64_t *add, uint32_t n, struct fwd_seg **out)
{
	uint32_t ntab = 0, nent = n, oldn = old ? old->ntab : 0;
	uint32_t *kept = calloc(oldn + 1, sizeof(*kept));
	if (!kept)
		return -ENOMEM;
	for (uint32_t t = 0; t < oldn; t++) {
		for (uint32_t i = 0; i < old->tab[t].n; i++) {
			uint64_t e = __atomic_load_n(&old->tab[t].ent[i], __ATOMIC_RELAXED);
			kept[t] += !keep || keep(arg, e & ENT_ADDR_MASK);
		}
		nent += kept[t];
		ntab += kept[t] > 0;
	}
	ntab += n > 0;
	*out = NULL;
	if (!ntab) {
		free(kept);
		return 0;
	}
	struct fwd_seg *s = seg_alloc(ntab, nent);
	if (!s) {
		free(kept);
		return -ENOMEM;
	}
	if (n)
		qsort(add, n, sizeof(*add), by_idx);
	/* tables in tag order: the old ones are, the new one goes in its place */
	uint32_t k = 0;
	bool placed = n == 0;
	for (uint32_t t = 0; t <= oldn; t++) {
		if (!placed && (t == oldn || old->tab[t].tag > tag)) {
			s->tab[k++] = (struct fwd_tab){.tag = tag, .n = n};
			placed = true;
		}
		if (t < oldn && kept[t])
			s->tab[k++] = (struct fwd_tab){.tag = old->tab[t].tag, .n = kept[t]};
	}
	seg_layout(s);
	k = 0;
	placed = n == 0;
	for (uint32_t t = 0; t <= oldn; t++) {
		if (!placed && (t == oldn || old->tab[t].tag > tag)) {
			memcpy(s->tab[k++].ent, add, n * sizeof(*add));
			placed = true;
		}
		if (t >= oldn || !kept[t])
			continue;
		uint64_t *to = s->tab[k++].ent;
		for (uint32_t i = 0; i < old->tab[t].n; i++) {
			uint64_t e = __atomic_load_n(&old->tab[t].ent[i], __ATOMIC_RELAXED);
			if (!keep || keep(arg, e & ENT_ADDR_MASK))
				*to++ = e;
		}
	}
	free(kept);
	*out = s;
	return 0;
}

/* ---- the compactor ------------------------------------------------------ */

int fwd_stage(struct fwd *f, uint64_t birth, uint64_t blk)
{
	uint64_t addr = fwd_addr(birth), seg = seg_of(addr);
	if (seg == 0 || seg >= f->nsegs || !blk || seg_of(blk) >= f->nsegs)
		return -EILSEQ;
	bool native = fwd_tag(birth) == fwd_life(f, seg);
	int err = 0;
	if (!native && !fwd_entry(f, birth, false, &err))
		return err ? err : -EILSEQ;
	if (map_get(&f->stage, birth))
		return -EEXIST;
	err = map_put(&f->stage, birth, (void *)(uintptr_t)blk);
	if (!err && native)
		err = map_put(&f->stage_segs, seg, (void *)1);
	if (err)
		map_del(&f->stage, birth);
	return err;
}

void fwd_unstage(struct fwd *f)
{
	map_reset(&f->stage);
	map_reset(&f->stage_segs);
}

/* The next life of seg: a tag none of its tables uses. */
static uint32_t next_life(const struct fwd *f, uint64_t seg)
{
	uint32_t l = f->life[seg];
	do
		l = (l + 1) & FWD_TAG_MASK;
	while (tab_find(f->seg[seg], l));
	return l;
}

/* New tables for the native births staged in seg. */
static int publish_native(struct fwd *f, uint64_t seg)
{
	uint32_t life = f->life[seg], n = 0;
	uint64_t *add = malloc(FMT_SEG_BLOCKS * sizeof(*add)), k;
	size_t pos = 0;
	void **v;
	int err;

	if (!add)
		return -ENOMEM;
	while ((v = map_next(&f->stage, &pos, &k))) {
		if (seg_of(fwd_addr(k)) != seg || fwd_tag(k) != life)
			continue;
		add[n++] =
		    ent_make((uint64_t)(uintptr_t)*v, (unsigned)(fwd_addr(k) % FMT_SEG_BLOCKS));
	}
	struct fwd_seg *s;
	err = seg_build(f->seg[seg], NULL, NULL, life, add, n, &s);
	free(add);
	if (!err) {
		seg_replace(f, seg, s);
		f->added += n;
	}
	return err;
}

int fwd_publish(struct fwd *f, const uint8_t *victim)
{
	size_t pos = 0;
	uint64_t k;
	void **v;
	int err = 0;

	/* Every victim's tables in memory (its next life must skip theirs). */
	for (uint64_t s = 1; s < f->nsegs && !err; s++)
		if (victim[s])
			err = fwd_seg_load(f, s);
	if (err) {
		fwd_unstage(f);
		return err;
	}
	/* Every allocation first, so that a failure changes nothing visible
	 * that could not stay: a table published without its life moving is
	 * never consulted (its tag is the segment's life).  Native births
	 * come from victims only: their life moves below. */
	while ((v = map_next(&f->stage_segs, &pos, &k)))
		if (!victim[k]) {
			fwd_unstage(f);
			return -EINVAL;
		}
	pos = 0;
	while (!err && (v = map_next(&f->stage_segs, &pos, &k)))
		err = publish_native(f, k);
	if (err) {
		fwd_unstage(f);
		return err;
	}
	pos = 0;
	while ((v = map_next(&f->stage, &pos, &k))) {
		uint64_t seg = seg_of(fwd_addr(k));
		if (fwd_tag(k) == f->life[seg])
			continue; /* native: in its new table */
		uint64_t *e = fwd_entry(f, k, false, &err);
		if (!e) { /* its tables were dropped and cannot be read again */
			fwd_unstage(f);
			return err ? err : -EILSEQ;
		}
		__atomic_store_n(e, ent_make((uint64_t)(uintptr_t)*v, ent_idx(*e)),
		                 __ATOMIC_RELEASE);
		bit_set(f->dirty, seg);
	}
	for (uint64_t s = 1; s < f->nsegs; s++) {
		if (!victim[s])
			continue;
		__atomic_store_n(&f->life[s], next_life(f, s), __ATOMIC_RELEASE);
		bit_set(f->dirty, s);
	}
	fwd_unstage(f);
	return 0;
}

/* ---- pruning ------------------------------------------------------------ */

void fwd_mark(struct fwd *f, uint64_t name)
{
	uint64_t seg = seg_of(fwd_addr(name));
	if (seg < f->nsegs && fwd_tag(name) != f->life[seg])
		bit_set(f->marked, seg);
}

int fwd_prune(struct fwd *f, bool (*live)(void *arg, uint64_t blk), void *arg)
{
	for (uint64_t w = 0; w < (f->nsegs + 63) / 64; w++) {
		while (f->marked[w]) {
			uint64_t seg = w * 64 + (uint64_t)__builtin_ctzll(f->marked[w]);
			struct fwd_seg *s;
			int err = fwd_seg_load(f, seg);
			if (!err)
				err = seg_build(f->seg[seg], live, arg, 0, NULL, 0, &s);
			if (err)
				return err;
			if (!s || s->nent != f->seg[seg]->nent)
				seg_replace(f, seg, s);
			else
				free(s);
			f->marked[w] &= f->marked[w] - 1;
		}
	}
	return 0;
}

/* ---- persistence -------------------------------------------------------- */

uint64_t fwd_dirty_next(const struct fwd *f, uint64_t from)
{
	for (uint64_t s = from; s < f->nsegs;) {
		uint64_t w = f->dirty[s / 64] >> (s % 64);
		if (w)
			return s + (uint64_t)__builtin_ctzll(w);
		s = (s / 64 + 1) * 64;
	}
	return f->nsegs;
}

void fwd_mark_dirty(struct fwd *f, uint64_t seg)
{
	bit_set(f->dirty, seg);
}

void fwd_clean(struct fwd *f)
{
	memset(f->dirty, 0, (f->nsegs + 63) / 64 * sizeof(uint64_t));
	f->added = 0;
}

int fwd_seg_get(struct fwd *f, uint64_t seg, struct fwd_ent **out, size_t *n)
{
	int err;
	const struct fwd_seg *s = seg_tables(f, seg, false, &err);
	*out = NULL;
	*n = 0;
	if (!s)
		return err;
	struct fwd_ent *e = malloc(s->nent * sizeof(*e));
	if (!e)
		return -ENOMEM;
	for (uint32_t t = 0; t < s->ntab; t++)
		for (uint32_t i = 0; i < s->tab[t].n; i++) {
			uint64_t x = __atomic_load_n(&s->tab[t].ent[i], __ATOMIC_RELAXED);
			e[(*n)++] = (struct fwd_ent){.blk = x & ENT_ADDR_MASK,
			                             .tag = s->tab[t].tag,
			                             .idx = (uint16_t)ent_idx(x)};
		}
	*out = e;
	return 0;
}

/* Tables of a segment whose life is life from e[0..n) (the rules of
 * fwd_seg_install) into *out (NULL for none).  0, -EILSEQ or -ENOMEM. */
static int seg_from(const struct fwd *f, uint32_t life, const struct fwd_ent *e, size_t n,
                    struct fwd_seg **out)
{
	uint32_t ntab = 0;
	*out = NULL;
	if (life > FWD_TAG_MASK || n > (size_t)FMT_SEG_BLOCKS * (FWD_TAG_MASK + 1))
		return -EILSEQ;
	for (size_t i = 0; i < n; i++) {
		bool next_tab = i == 0 || e[i].tag != e[i - 1].tag;
		if (e[i].tag > FWD_TAG_MASK || e[i].tag == life || e[i].idx >= FMT_SEG_BLOCKS ||
		    seg_of(e[i].blk) == 0 || seg_of(e[i].blk) >= f->nsegs ||
		    (!next_tab && e[i].idx <= e[i - 1].idx) || (i && e[i].tag < e[i - 1].tag))
			return -EILSEQ;
		ntab += next_tab;
	}
	if (!n)
		return 0;
	struct fwd_seg *s = seg_alloc(ntab, (uint32_t)n);
	if (!s)
		return -ENOMEM;
	for (size_t i = 0, t = 0; i < n; i++) {
		if (i && e[i].tag != e[i - 1].tag)
			t++;
		s->tab[t].tag = e[i].tag;
		s->tab[t].n++;
	}
	seg_layout(s);
	for (size_t i = 0, t = 0, j = 0; i < n; i++, j++) {
		if (i && e[i].tag != e[i - 1].tag) {
			t++;
			j = 0;
		}
		s->tab[t].ent[j] = ent_make(e[i].blk, e[i].idx);
	}
	*out = s;
	return 0;
}

int fwd_seg_install(struct fwd *f, uint64_t seg, uint32_t life, const struct fwd_ent *e, size_t n)
{
	struct fwd_seg *s;
	if (seg >= f->nsegs)
		return -EILSEQ;
	int err = seg_from(f, life, e, n, &s);
	if (err)
		return err;
	f->life[seg] = life;
	f->away[seg] = 0;
	seg_replace(f, seg, s);
	f->dirty[seg / 64] &= ~(1ull << (seg % 64));
	return 0;
}

/* ---- tables on disk ----------------------------------------------------- */

void fwd_set_loader(struct fwd *f, fwd_loader_fn *fn, void *arg)
{
	f->loader = fn;
	f->loader_arg = arg;
}

void fwd_seg_away(struct fwd *f, uint64_t seg, uint32_t life)
{
	f->life[seg] = life & FWD_TAG_MASK;
	f->away[seg] = 1;
}

/* Read seg's tables through the loader and publish them (serialised:
 * two threads needing one segment load it once).  A segment whose
 * tables cannot be had stays away: every name forwarded through it fails
 * (logged once), nothing is guessed. */
static int seg_load(struct fwd *f, uint64_t seg, bool nowait)
{
	struct fwd_ent *e = NULL;
	struct fwd_seg *s = NULL;
	size_t n = 0;
	int err = 0;

	if (nowait)
		return -EAGAIN;
	pthread_mutex_lock(&f->load_lock);
	if (__atomic_load_n(&f->away[seg], __ATOMIC_ACQUIRE)) {
		err = f->loader ? f->loader(f->loader_arg, seg, &e, &n) : -EIO;
		if (!err)
			err = seg_from(f, f->life[seg], e, n, &s);
		free(e);
		if (!err) {
			f->nent += s ? s->nent : 0;
			f->nwith += s != NULL;
			f->bytes += seg_bytes(s);
			f->loads++;
			rcu_assign_pointer(f->seg[seg], s);
			__atomic_store_n(&f->away[seg], 0, __ATOMIC_RELEASE);
		} else if (f->last_bad != seg) {
			f->last_bad = seg;
			say_error("forwarding tables of segment %llu cannot be loaded (%s): blocks "
			          "moved out of it cannot be read",
			          (unsigned long long)seg,
			          err == -EILSEQ ? "damaged" : strerror(-err));
		}
	}
	pthread_mutex_unlock(&f->load_lock);
	return err == -EILSEQ ? -EIO : err;
}

int fwd_seg_load(struct fwd *f, uint64_t seg)
{
	int err;
	seg_tables(f, seg, false, &err);
	return err;
}

uint64_t fwd_trim(struct fwd *f, uint64_t max, uint64_t budget)
{
	uint64_t dropped = 0;
	for (; budget && __atomic_load_n(&f->bytes, __ATOMIC_RELAXED) > max; budget--) {
		uint64_t seg = f->hand;
		f->hand = f->hand + 1 < f->nsegs ? f->hand + 1 : 0;
		struct fwd_seg *s = f->seg[seg];
		if (!s || f->dirty[seg / 64] >> (seg % 64) & 1 ||
		    f->marked[seg / 64] >> (seg % 64) & 1)
			continue;
		if (f->used[seg]) { /* a second chance */
			f->used[seg] = 0;
			continue;
		}
		pthread_mutex_lock(&f->load_lock);
		__atomic_store_n(&f->away[seg], 1, __ATOMIC_RELEASE);
		rcu_assign_pointer(f->seg[seg], NULL);
		f->nent -= s->nent;
		f->nwith--;
		f->bytes -= seg_bytes(s);
		f->evictions++;
		pthread_mutex_unlock(&f->load_lock);
		urcu_memb_call_rcu(&s->rcu, seg_free_rcu);
		dropped++;
	}
	return dropped;
}

void fwd_stats(struct fwd *f, struct fwd_stats *out)
{
	pthread_mutex_lock(&f->load_lock);
	*out = (struct fwd_stats){.entries = f->nent,
	                          .segments = f->nwith,
	                          .bytes = f->bytes,
	                          .loads = f->loads,
	                          .evictions = f->evictions};
	pthread_mutex_unlock(&f->load_lock);
}

uint64_t fwd_added(const struct fwd *f)
{
	return f->added;
}

uint64_t fwd_entries(const struct fwd *f)
{
	return f->nent;
}

uint64_t fwd_segments(const struct fwd *f)
{
	return f->nwith;
}
