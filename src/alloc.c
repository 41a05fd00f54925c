/* alloc.c — per-block reference counts, held per segment in count pages,
 * per-segment live counts and the segment bitmap (FREE/USED).  Layer:
 * below store, beside tree, log and cpage (the pages' on-disk form, which
 * ckpt writes and reads).  No locks: the store's log thread is the only
 * writer (see alloc.h); reader threads only read counts, racily.
 *
 * Count pages: page[s] is NULL while every count of s is 0 (an empty pool
 * holds no page) or while s is AWAY (its page is on disk and not loaded:
 * seg_live[s] is then the segment table's word).  A page is allocated at
 * the first reference of its segment, loaded at the first count access of
 * an AWAY one, and freed when the segment becomes FREE.  Freeing needs no
 * grace period of its own: a segment is released only after one (alloc.h),
 * when no reader can still hold a block of it.
 *
 * Checkpoint-owned blocks (count pages, segment tables, the record) have
 * no count: seg_meta[s] says how many s holds.  They keep s USED and count
 * in its live blocks (alloc_seg_live, alloc_live_blocks), never in a page,
 * so writing pages dirties none. */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "alloc.h"
#include "fwd.h"
#include "say.h"

enum alloc_seg_state { ALLOC_FREE = 0, ALLOC_USED = 1 };
enum alloc_page_flag {
	PAGE_DIRTY = 1, /* a count changed since alloc_pages_clean */
	PAGE_AWAY = 2,  /* the page is on disk, not loaded (page[s] is NULL) */
	PAGE_USED = 4,  /* touched since the eviction hand last passed (alloc_pages_trim) */
};

/* Invariants (alloc_check): seg_live[s] counts the blocks of s with ref > 0;
 * a segment with a live or checkpoint-owned block is USED, and holds at
 * most FMT_SEG_BLOCKS of them; nfree counts FREE segments and live_blocks
 * all blocks with ref > 0 plus the checkpoint-owned ones.  Segment 0 is USED forever.  A page
 * is resident or AWAY, never both; an AWAY segment has live blocks; npages
 * counts resident pages, ndirty segments with PAGE_DIRTY. */
struct alloc {
	uint64_t nsegs;
	uint64_t nblocks;
	uint32_t **page;     /* per segment: FMT_SEG_BLOCKS counts, or NULL (above) */
	uint8_t *page_flags; /* per segment: enum alloc_page_flag */
	uint64_t npages;     /* resident pages */
	uint64_t hand;       /* where alloc_pages_trim goes on */
	uint64_t evicted;    /* pages alloc_pages_trim dropped, ever */
	uint64_t ndirty;     /* segments with PAGE_DIRTY */
	alloc_loader_fn *loader;
	void *loader_arg;
	int err;            /* sticky: the first page that could not be had */
	uint32_t *seg_live; /* per segment: blocks with ref > 0 */
	uint16_t *seg_meta; /* per segment: checkpoint-owned blocks (no count) */
	uint8_t *seg_state; /* enum alloc_seg_state */
	uint64_t nfree;     /* FREE segments */
	uint64_t hint;      /* where the next search starts */
	uint64_t live_blocks;
	uint64_t *seg_stamp;    /* LSN when the log entered the segment (age for the compactor) */
	uint8_t *seg_discarded; /* FREE and already handed back to the device */
	uint8_t *seg_warm;      /* FREE, released by the log since it was last written */
	uint64_t nwarm;         /* segments with seg_warm set */
	uint64_t meta_pending;  /* dirty tree nodes: blocks the next checkpoint writes */
	uint8_t *seg_marked;    /* dead when a checkpoint in flight began (alloc_mark_dead) */
	struct fwd *fwd;        /* block names (fwd.h): every count is found through it */
};

static void page_free(uint32_t *p);

struct alloc *alloc_new(uint64_t nsegs)
{
	struct alloc *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->nsegs = nsegs;
	a->nblocks = nsegs * FMT_SEG_BLOCKS;
	a->page = calloc(nsegs, sizeof(*a->page));
	a->page_flags = calloc(nsegs, 1);
	a->seg_live = calloc(nsegs, sizeof(*a->seg_live));
	a->seg_meta = calloc(nsegs, sizeof(*a->seg_meta));
	a->seg_state = calloc(nsegs, 1);
	a->seg_stamp = calloc(nsegs, sizeof(*a->seg_stamp));
	a->seg_discarded = calloc(nsegs, 1);
	a->seg_marked = calloc(nsegs, 1);
	a->seg_warm = calloc(nsegs, 1);
	a->fwd = fwd_new(nsegs);
	if (!a->fwd || !a->page || !a->page_flags || !a->seg_live || !a->seg_meta ||
	    !a->seg_state || !a->seg_stamp || !a->seg_discarded || !a->seg_marked || !a->seg_warm) {
		alloc_free(a);
		return NULL;
	}
	a->seg_state[0] = ALLOC_USED;
	a->nfree = nsegs - 1;
	a->hint = 1;
	return a;
}

void alloc_free(struct alloc *a)
{
	if (!a)
		return;
	for (uint64_t s = 0; a->page && s < a->nsegs; s++)
		page_free(a->page[s]);
	free(a->page);
	free(a->page_flags);
	free(a->seg_live);
	free(a->seg_meta);
	free(a->seg_state);
	free(a->seg_stamp);
	free(a->seg_discarded);
	free(a->seg_warm);
	free(a->seg_marked);
	fwd_free(a->fwd);
	free(a);
}

uint64_t alloc_nsegs(const struct alloc *a)
{
	return a->nsegs;
}

uint64_t alloc_nblocks(const struct alloc *a)
{
	return a->nblocks;
}

uint64_t alloc_nfree(const struct alloc *a)
{
	return a->nfree;
}

uint64_t alloc_live_blocks(const struct alloc *a)
{
	return a->live_blocks;
}

void alloc_meta_charge(struct alloc *a, int64_t delta)
{
	assert(delta >= 0 || a->meta_pending >= (uint64_t)-delta);
	a->meta_pending += (uint64_t)delta;
}

uint64_t alloc_meta_pending(const struct alloc *a)
{
	return a->meta_pending;
}

uint32_t alloc_seg_live(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return a->seg_live[seg] + a->seg_meta[seg];
}

uint32_t alloc_seg_counted(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return a->seg_live[seg];
}

uint32_t alloc_seg_meta(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return a->seg_meta[seg];
}

bool alloc_seg_used(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return a->seg_state[seg] == ALLOC_USED;
}

/* Reader threads read stamps (bcrc.c keys its tables by them) while the
 * log thread sets them: relaxed atomics, so a reader sees the old or the
 * new stamp, never a torn one. */
uint64_t alloc_seg_stamp(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return __atomic_load_n(&a->seg_stamp[seg], __ATOMIC_RELAXED);
}

void alloc_seg_set_stamp(struct alloc *a, uint64_t seg, uint64_t lsn)
{
	assert(seg < a->nsegs);
	__atomic_store_n(&a->seg_stamp[seg], lsn, __ATOMIC_RELAXED);
}

struct fwd *alloc_fwd(const struct alloc *a)
{
	return a->fwd;
}

uint32_t alloc_block_refs(const struct alloc *a, uint64_t name)
{
	uint64_t blk; /* never loads: a name forwarded through tables on disk reads 0 */
	return fwd_resolve_nowait(a->fwd, name, &blk) ? 0 : alloc_blk_refs(a, blk);
}

uint32_t alloc_blk_refs(const struct alloc *a, uint64_t blk)
{
	assert(blk < a->nblocks);
	const uint32_t *p = __atomic_load_n(&a->page[alloc_seg_of(blk)], __ATOMIC_ACQUIRE);
	return p ? __atomic_load_n(&p[blk % FMT_SEG_BLOCKS], __ATOMIC_RELAXED) : 0;
}

/* ---- count pages ------------------------------------------------------- */

/* A page in memory: its counts, and what frees it after a grace period
 * when it is evicted (a reader may be inside alloc_block_refs on it). */
struct page_mem {
	struct rcu_head rcu;
	uint32_t cnt[FMT_SEG_BLOCKS];
};

static uint32_t *page_new(void)
{
	struct page_mem *m = calloc(1, sizeof(*m));
	return m ? m->cnt : NULL;
}

static struct page_mem *page_mem_of(uint32_t *p)
{
	return (struct page_mem *)(void *)((char *)p - offsetof(struct page_mem, cnt));
}

static void page_free(uint32_t *p)
{
	if (p)
		free(page_mem_of(p));
}

static void page_free_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct page_mem, rcu));
}

static void set_failed(struct alloc *a, uint64_t s, int err)
{
	if (a->err)
		return;
	a->err = err;
	say_error("alloc: the counts of segment %llu cannot be had (%s): space accounting failed",
	          (unsigned long long)s, err == -EILSEQ ? "damaged count page" : strerror(-err));
}

static void page_dirty(struct alloc *a, uint64_t s)
{
	if (!(a->page_flags[s] & PAGE_DIRTY)) {
		a->page_flags[s] |= PAGE_DIRTY;
		a->ndirty++;
	}
}

static unsigned count_live(const uint32_t *cnt)
{
	unsigned n = 0;
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		n += cnt[i] > 0;
	return n;
}

/* Read AWAY segment s's page into cnt: the loader's counts, which must
 * agree with the live count the segment table gave. */
static int page_load(const struct alloc *a, uint64_t s, uint32_t *cnt)
{
	int err;

	assert(a->loader);
	if (!a->loader)
		return -EIO;
	err = a->loader(a->loader_arg, s, cnt);
	if (err)
		return err;
	if (count_live(cnt) != a->seg_live[s]) {
		say_error("alloc: segment %llu: its count page has %u live blocks, its table %u",
		          (unsigned long long)s, count_live(cnt), a->seg_live[s]);
		return -EILSEQ;
	}
	return 0;
}

/* s has no page in memory: give it one, zeroed or loaded.  NULL when
 * that fails (sticky, said once): the caller drops its change, and the
 * store, seeing alloc_error, fails. */
static uint32_t *page_fault(struct alloc *a, uint64_t s)
{
	bool away = a->page_flags[s] & PAGE_AWAY;
	uint32_t *p;
	int err;

	if (away && a->err)
		return NULL; /* no second load after a failure, and no guess */
	p = page_new();
	if (!p) {
		set_failed(a, s, -ENOMEM);
		return NULL;
	}
	if (away && (err = page_load(a, s, p))) {
		page_free(p);
		set_failed(a, s, err);
		return NULL;
	}
	a->page_flags[s] &= ~PAGE_AWAY;
	a->npages++;
	__atomic_store_n(&a->page[s], p, __ATOMIC_RELEASE);
	return p;
}

/* s's page for a change or an exact read (log thread). */
static inline uint32_t *page_get(struct alloc *a, uint64_t s)
{
	uint32_t *p = a->page[s];
	a->page_flags[s] |= PAGE_USED;
	return p ? p : page_fault(a, s);
}

/* s became FREE (or was installed empty): every count is 0. */
static void page_drop(struct alloc *a, uint64_t s)
{
	uint32_t *p = a->page[s];
	if (!p)
		return;
	__atomic_store_n(&a->page[s], NULL, __ATOMIC_RELEASE);
	a->npages--;
	page_free(p);
}

void alloc_set_loader(struct alloc *a, alloc_loader_fn *fn, void *arg)
{
	a->loader = fn;
	a->loader_arg = arg;
}

int alloc_error(const struct alloc *a)
{
	return a->err;
}

void alloc_page_away(struct alloc *a, uint64_t seg, uint32_t live)
{
	assert(seg < a->nsegs && !a->page[seg] && !a->seg_live[seg]);
	assert(live > 0 && live <= FMT_SEG_BLOCKS);
	a->page_flags[seg] |= PAGE_AWAY;
	a->seg_live[seg] = live;
	a->live_blocks += live;
	alloc_mark_used(a, seg);
}

void alloc_page_dirty(struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	if (a->seg_live[seg])
		page_dirty(a, seg);
}

int alloc_seg_load(struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	if (a->page_flags[seg] & PAGE_AWAY && !page_get(a, seg))
		return a->err;
	return 0;
}

bool alloc_seg_away(const struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	return a->page_flags[seg] & PAGE_AWAY;
}

int alloc_page_counts(struct alloc *a, uint64_t seg, uint32_t *out)
{
	int err = alloc_seg_load(a, seg);
	if (err)
		return err;
	if (a->page[seg])
		memcpy(out, a->page[seg], FMT_SEG_BLOCKS * sizeof(*out));
	else
		memset(out, 0, FMT_SEG_BLOCKS * sizeof(*out));
	return 0;
}

int alloc_page_install(struct alloc *a, uint64_t seg, const uint32_t *counts)
{
	uint32_t live = count_live(counts);
	uint32_t *p;

	assert(seg < a->nsegs);
	a->page_flags[seg] &= ~PAGE_AWAY;
	if (!live) {
		page_drop(a, seg);
	} else {
		p = a->page[seg] ? a->page[seg] : page_new();
		if (!p)
			return -ENOMEM;
		memcpy(p, counts, FMT_SEG_BLOCKS * sizeof(*p));
		if (!a->page[seg]) {
			a->npages++;
			__atomic_store_n(&a->page[seg], p, __ATOMIC_RELEASE);
		}
		alloc_mark_used(a, seg);
	}
	a->live_blocks += live;
	a->live_blocks -= a->seg_live[seg];
	a->seg_live[seg] = live;
	if (a->page_flags[seg] & PAGE_DIRTY) {
		a->page_flags[seg] &= ~PAGE_DIRTY;
		a->ndirty--;
	}
	return 0;
}

uint64_t alloc_dirty_next(const struct alloc *a, uint64_t from)
{
	for (uint64_t s = from; s < a->nsegs; s++)
		if (a->page_flags[s] & PAGE_DIRTY)
			return s;
	return a->nsegs;
}

uint64_t alloc_dirty_count(const struct alloc *a)
{
	return a->ndirty;
}

void alloc_pages_clean(struct alloc *a)
{
	for (uint64_t s = 0; s < a->nsegs && a->ndirty; s++)
		if (a->page_flags[s] & PAGE_DIRTY) {
			a->page_flags[s] &= ~PAGE_DIRTY;
			a->ndirty--;
		}
}

void alloc_page_clean(struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	if (a->page_flags[seg] & PAGE_DIRTY) {
		a->page_flags[seg] &= ~PAGE_DIRTY;
		a->ndirty--;
	}
}

uint64_t alloc_pages_resident(const struct alloc *a)
{
	return a->npages;
}

uint64_t alloc_pages_evicted(const struct alloc *a)
{
	return a->evicted;
}

uint64_t alloc_pages_trim(struct alloc *a, uint64_t max, uint64_t budget,
                          bool (*on_disk)(void *arg, uint64_t seg), void *arg)
{
	uint64_t dropped = 0;

	for (uint64_t step = 0; a->npages > max && step < budget; step++) {
		uint64_t s = a->hand;
		a->hand = s + 1 < a->nsegs ? s + 1 : 0;
		uint32_t *p = a->page[s];
		if (!p || a->page_flags[s] & PAGE_DIRTY || !on_disk(arg, s))
			continue;
		if (a->page_flags[s] & PAGE_USED) { /* a second chance */
			a->page_flags[s] &= ~PAGE_USED;
			continue;
		}
		__atomic_store_n(&a->page[s], NULL, __ATOMIC_RELEASE);
		a->page_flags[s] |= PAGE_AWAY;
		a->npages--;
		a->evicted++;
		dropped++;
		urcu_memb_call_rcu(&page_mem_of(p)->rcu, page_free_rcu);
	}
	return dropped;
}

/* s stops being warm (taken, or its cached pages given up). */
static void seg_cool(struct alloc *a, uint64_t s)
{
	a->nwarm -= a->seg_warm[s];
	a->seg_warm[s] = 0;
}

/* FREE segment s goes to the log. */
static void seg_take(struct alloc *a, uint64_t s)
{
	a->seg_state[s] = ALLOC_USED;
	a->seg_discarded[s] = 0;
	seg_cool(a, s);
	a->nfree--;
}

void alloc_mark_used(struct alloc *a, uint64_t seg)
{
	assert(seg < a->nsegs);
	if (a->seg_state[seg] == ALLOC_FREE)
		seg_take(a, seg);
}

void alloc_meta_hold(struct alloc *a, uint64_t blk)
{
	assert(blk < a->nblocks);
	uint64_t s = alloc_seg_of(blk);
	if (a->seg_meta[s] + a->seg_live[s] >= FMT_SEG_BLOCKS) {
		/* more blocks than the segment has: damaged tables said so */
		if (!a->err)
			say_error("alloc: segment %llu would hold more blocks than it has: the "
			          "pool's tables are damaged (cowbd-check reports where)",
			          (unsigned long long)s);
		a->err = -EILSEQ;
		return;
	}
	a->seg_meta[s]++;
	a->live_blocks++;
	alloc_mark_used(a, s);
}

void alloc_meta_release(struct alloc *a, uint64_t blk)
{
	assert(blk < a->nblocks);
	uint64_t s = alloc_seg_of(blk);
	if (!a->seg_meta[s])
		return; /* a hold refused (damaged tables): the allocator failed */
	a->seg_meta[s]--;
	a->live_blocks--;
}

/* Where the block named name is; a name that resolves nowhere fails the
 * allocator (the trees name a block the map does not know: damage). */
static bool resolve(struct alloc *a, uint64_t name, uint64_t *blk)
{
	int err = fwd_resolve(a->fwd, name, blk);
	if (!err)
		return true;
	if (!a->err) {
		say_error("alloc: pool block %llu (tag %u) is named but is neither where it was "
		          "written nor forwarded: the pool's metadata is damaged (cowbd-check "
		          "reports where); space accounting failed",
		          (unsigned long long)fwd_addr(name), fwd_tag(name));
		a->err = err;
	}
	return false;
}

int alloc_name_load(struct alloc *a, uint64_t name)
{
	uint64_t blk;
	return resolve(a, name, &blk) ? alloc_seg_load(a, alloc_seg_of(blk)) : a->err;
}

/* Counts change with single stores: a reader's alloc_block_refs sees the
 * old or the new count. */
void alloc_ref(struct alloc *a, uint64_t name)
{
	uint64_t blk;
	if (!resolve(a, name, &blk))
		return;
	assert(blk < a->nblocks);
	uint64_t s = alloc_seg_of(blk);
	uint32_t *p = page_get(a, s);
	if (!p)
		return; /* alloc_error says so */
	uint32_t *c = &p[blk % FMT_SEG_BLOCKS], n = *c;
	assert(n < UINT32_MAX);
	__atomic_store_n(c, n + 1, __ATOMIC_RELAXED);
	page_dirty(a, s);
	if (n == 0) {
		a->seg_live[s]++;
		a->live_blocks++;
		alloc_mark_used(a, s);
	}
}

void alloc_unref(struct alloc *a, uint64_t name)
{
	uint64_t blk;
	if (!resolve(a, name, &blk))
		return;
	assert(blk < a->nblocks);
	uint64_t s = alloc_seg_of(blk);
	uint32_t *p = page_get(a, s);
	if (!p)
		return;
	uint32_t *c = &p[blk % FMT_SEG_BLOCKS], n = *c;
	if (!n) {
		/* After a failure a dropped reference may be missing; before,
		 * the counts on disk disagree with the trees (damage the
		 * pages' checksums did not catch): fail, never go below 0. */
		if (!a->err)
			say_error("alloc: a reference to pool block %llu is dropped but it has "
			          "none: the pool's counts are damaged (cowbd-check reports where)",
			          (unsigned long long)blk);
		set_failed(a, s, -EILSEQ);
		return;
	}
	__atomic_store_n(c, n - 1, __ATOMIC_RELAXED);
	page_dirty(a, s);
	if (n == 1) {
		a->seg_live[s]--;
		a->live_blocks--;
		fwd_mark(a->fwd, name);
	}
}

int alloc_move(struct alloc *a, uint64_t from, uint64_t to)
{
	assert(from < a->nblocks && to < a->nblocks);
	uint64_t fs = alloc_seg_of(from), ts = alloc_seg_of(to);
	uint32_t *fp = page_get(a, fs), *tp = fp ? page_get(a, ts) : NULL;
	if (!tp)
		return a->err;
	uint32_t *fc = &fp[from % FMT_SEG_BLOCKS], *tc = &tp[to % FMT_SEG_BLOCKS], n = *fc;
	if (*tc || !n) { /* the pages disagree with the log: damage */
		say_error("alloc: moving pool block %llu (count %u) to %llu (count %u): the pool's "
		          "counts are damaged (cowbd-check reports where)",
		          (unsigned long long)from, n, (unsigned long long)to, *tc);
		a->err = a->err ? a->err : -EILSEQ;
		return a->err;
	}
	__atomic_store_n(tc, n, __ATOMIC_RELAXED);
	__atomic_store_n(fc, 0, __ATOMIC_RELAXED);
	page_dirty(a, fs);
	page_dirty(a, ts);
	a->seg_live[fs]--;
	a->seg_live[ts]++;
	alloc_mark_used(a, ts);
	return 0;
}

/* The first FREE segment from the hint on (warm ones only if want_warm). */
static uint64_t find_free(const struct alloc *a, bool want_warm)
{
	for (uint64_t i = 0; i < a->nsegs; i++) {
		uint64_t s = (a->hint + i) % a->nsegs;
		if (s && a->seg_state[s] == ALLOC_FREE && (!want_warm || a->seg_warm[s]))
			return s;
	}
	return 0;
}

/* Warm segments first: appending over pages still in the page cache
 * costs a copy, into a fresh or discarded segment also new pages (and on
 * a VM, memory the host must first provide: several times slower). */
uint64_t alloc_take_seg(struct alloc *a)
{
	uint64_t s = 0;

	if (!a->nfree)
		return 0;
	if (a->nwarm)
		s = find_free(a, true);
	if (!s)
		s = find_free(a, false);
	if (s) {
		seg_take(a, s);
		a->hint = s + 1;
	}
	return s;
}

static bool seg_dead(const struct alloc *a, uint64_t s, uint64_t keep1, uint64_t keep2)
{
	return a->seg_state[s] == ALLOC_USED && a->seg_live[s] == 0 && a->seg_meta[s] == 0 &&
	       s != keep1 && s != keep2;
}

/* Segment s (dead) becomes FREE. */
static void seg_release(struct alloc *a, uint64_t s, uint64_t *first,
                        void (*freed)(void *arg, uint64_t seg), void *arg)
{
	assert(!a->seg_meta[s]);
	if (!*first)
		*first = s;
	a->seg_state[s] = ALLOC_FREE;
	a->seg_marked[s] = 0;
	page_drop(a, s);
	a->seg_warm[s] = 1;
	a->nwarm++;
	a->nfree++;
	if (freed)
		freed(arg, s);
}

/* Reuse what was just freed first: its pages are likely still in the page
 * cache, where a fresh segment would cost new pages. */
static uint64_t released(struct alloc *a, uint64_t n, uint64_t first)
{
	if (first)
		a->hint = first;
	return n;
}

uint64_t alloc_release_dead(struct alloc *a, uint64_t keep1, uint64_t keep2,
                            void (*freed)(void *arg, uint64_t seg), void *arg)
{
	uint64_t n = 0, first = 0;
	for (uint64_t s = 1; s < a->nsegs; s++)
		if (seg_dead(a, s, keep1, keep2)) {
			seg_release(a, s, &first, freed, arg);
			n++;
		}
	return released(a, n, first);
}

uint64_t alloc_mark_dead(struct alloc *a, uint64_t keep1, uint64_t keep2)
{
	uint64_t n = 0;
	for (uint64_t s = 1; s < a->nsegs; s++) {
		a->seg_marked[s] = seg_dead(a, s, keep1, keep2);
		n += a->seg_marked[s];
	}
	return n;
}

uint64_t alloc_release_marked(struct alloc *a, void (*freed)(void *arg, uint64_t seg), void *arg)
{
	uint64_t n = 0, first = 0;
	for (uint64_t s = 1; s < a->nsegs; s++) {
		if (!a->seg_marked[s])
			continue;
		/* Marked segments cannot come back to life (alloc.h); one
		 * that did is kept, and says so. */
		if (seg_dead(a, s, 0, 0)) {
			seg_release(a, s, &first, freed, arg);
			n++;
		} else {
			say_error(
			    "alloc: segment %llu was dead at a checkpoint and is live now: kept",
			    (unsigned long long)s);
			a->seg_marked[s] = 0;
		}
	}
	return released(a, n, first);
}

void alloc_unmark_dead(struct alloc *a)
{
	memset(a->seg_marked, 0, a->nsegs);
}

static void seg_discard(struct alloc *a, uint64_t s, void (*discard)(void *arg, uint64_t seg),
                        void *arg)
{
	discard(arg, s);
	a->seg_discarded[s] = 1;
	seg_cool(a, s);
}

unsigned alloc_discard_free(struct alloc *a, unsigned max, uint64_t keep_warm,
                            void (*discard)(void *arg, uint64_t seg), void *arg)
{
	unsigned n = 0;
	for (uint64_t s = 1; s < a->nsegs && n < max; s++)
		if (a->seg_state[s] == ALLOC_FREE && !a->seg_discarded[s] && !a->seg_warm[s]) {
			seg_discard(a, s, discard, arg);
			n++;
		}
	/* Warm ones beyond keep_warm, those alloc_take_seg would reach last
	 * first: backwards from the hint. */
	for (uint64_t i = 1; i <= a->nsegs && n < max && a->nwarm > keep_warm; i++) {
		uint64_t s = (a->hint + a->nsegs - i) % a->nsegs;
		if (a->seg_warm[s]) {
			seg_discard(a, s, discard, arg);
			n++;
		}
	}
	return n;
}

uint64_t alloc_dead_segs(const struct alloc *a)
{
	uint64_t n = 0;
	for (uint64_t s = 1; s < a->nsegs; s++)
		if (seg_dead(a, s, 0, 0))
			n++;
	return n;
}

/* Segment s's page and flags agree with its live count; *pages and
 * *dirty count resident pages and dirty segments. */
static bool page_check(const struct alloc *a, uint64_t s, uint64_t *pages, uint64_t *dirty)
{
	const uint32_t *p = a->page[s];
	uint8_t f = a->page_flags[s];

	*dirty += !!(f & PAGE_DIRTY);
	if (f & PAGE_AWAY)
		return !p && a->seg_live[s] > 0;
	if (p && a->seg_state[s] == ALLOC_FREE)
		return false;
	*pages += p != NULL;
	return (p ? count_live(p) : 0) == a->seg_live[s];
}

bool alloc_check(const struct alloc *a)
{
	uint64_t nfree = 0, live = 0, warm = 0, pages = 0, dirty = 0;
	for (uint64_t s = 0; s < a->nsegs; s++) {
		if (a->seg_warm[s] && a->seg_state[s] != ALLOC_FREE)
			return false;
		warm += a->seg_warm[s];
		if (!page_check(a, s, &pages, &dirty))
			return false;
		if (alloc_seg_live(a, s) && a->seg_state[s] != ALLOC_USED)
			return false;
		if (alloc_seg_live(a, s) > FMT_SEG_BLOCKS)
			return false;
		nfree += a->seg_state[s] == ALLOC_FREE;
		live += alloc_seg_live(a, s);
	}
	return nfree == a->nfree && live == a->live_blocks && warm == a->nwarm &&
	       pages == a->npages && dirty == a->ndirty;
}

/* Segment s's counts against want[] (its FMT_SEG_BLOCKS entries); an
 * AWAY page is read into buf (and stays away: a check of a big pool need
 * not hold every page). */
static int verify_seg(const struct alloc *a, uint64_t s, const uint32_t *want, uint32_t *buf)
{
	const uint32_t *p = a->page[s];
	unsigned nwant = 0;
	int bad = 0;

	if (a->page_flags[s] & PAGE_AWAY) {
		if (page_load(a, s, buf)) {
			say_problem("count pages that cannot be loaded", 1,
			            "check: the count page of segment %llu cannot be loaded",
			            (unsigned long long)s);
			return 1;
		}
		p = buf;
	}
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++) {
		uint32_t have = p ? p[i] : 0;
		nwant += want[i] > 0;
		if (want[i] == have)
			continue;
		say_problem("reference counts that differ", 1,
		            "check: block %llu referenced %u times, accounted %u",
		            (unsigned long long)(s * FMT_SEG_BLOCKS + i), want[i], have);
		bad++;
	}
	/* Counts that agree, a live count that does not: said once. */
	if (!bad && nwant + a->seg_meta[s] != alloc_seg_live(a, s)) {
		say_problem("segment live counts that differ", 1,
		            "check: segment %llu: %u blocks referenced, %u held, %u live accounted",
		            (unsigned long long)s, nwant, a->seg_meta[s], alloc_seg_live(a, s));
		bad++;
	}
	return bad;
}

int alloc_verify(const struct alloc *a, const uint32_t *want)
{
	return alloc_verify_range(a, 0, a->nsegs, want);
}

int alloc_verify_range(const struct alloc *a, uint64_t lo, uint64_t hi, const uint32_t *want)
{
	uint32_t *buf = malloc(FMT_SEG_BLOCKS * sizeof(*buf));
	int bad = 0;

	if (!buf) {
		say_problem("allocator count errors", 1, "check: no memory to compare counts");
		return 1;
	}
	for (uint64_t s = lo; s < hi && s < a->nsegs; s++)
		bad += verify_seg(a, s, want + (s - lo) * FMT_SEG_BLOCKS, buf);
	free(buf);
	for (uint64_t s = lo; s < hi && s < a->nsegs; s++)
		if (alloc_seg_live(a, s) && a->seg_state[s] != ALLOC_USED) {
			say_problem("free segments holding live blocks", 1,
			            "check: segment %llu holds live blocks but is free",
			            (unsigned long long)s);
			bad++;
		}
	if (lo == 0 && !alloc_check(a)) {
		say_problem("allocator count errors", 1,
		            "check: allocator counts disagree with its arrays");
		bad++;
	}
	return bad;
}
