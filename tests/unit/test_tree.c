/* test_tree.c — the copy-on-write block tree on its own (an allocator, no
 * store, no device, no threads but liburcu's).  Every tree is checked
 * against a model (lba -> block) after each step, and every reference count
 * — nodes' parents and roots, blocks' leaves and on-disk copies — against
 * two oracles (tests/lib/treeref: tree_check_all + alloc_verify, and an
 * independent recount).  Covered: tree_levels_for; set, lookup, run and trim
 * over 1 to 4 levels, at node edges; snapshot -> clone -> snapshot chains
 * where each snapshot keeps its mappings through later sets, trims and
 * drops of its source; tree_count's mapped and unique blocks;
 * tree_write_dirty emitting only what changed (and tree_write_leaves, the
 * checkpoint's pre-copy, only dirty leaves, by cursor and budget), and
 * tree_load reading it back into the same mappings, the same sharing and the same counts;
 * tree_diff and tree_depth against models over histories that include
 * compaction, which moves blocks under their names (fwd.h) and changes no
 * slot, with every count found through the forwarding map.
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "fwd.h"
#include "map.h"
#include "tree.h"
#include "treeref.h"

#define NSEGS     64
#define DATA_SEG  1  /* data blocks are numbered from here on */
#define NODE_SEG  40 /* node images from here on */
#define NODE_SEG2 50 /* a second place for node images */

static const uint64_t span[5] = {1, FMT_FANOUT, (uint64_t)FMT_FANOUT *FMT_FANOUT,
                                 (uint64_t)FMT_FANOUT *FMT_FANOUT *FMT_FANOUT,
                                 (uint64_t)FMT_FANOUT *FMT_FANOUT *FMT_FANOUT *FMT_FANOUT};

/* A tree and its model: lba[i] -> blk[i] (0 = hole), found by lba + 1 ->
 * i + 1 in idx. */
struct vt {
	struct tree t;
	struct map idx;
	uint64_t *lba, *blk;
	size_t n, cap;
};

static struct alloc *A;

static uint64_t next_blk;
static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng % n;
}

static uint64_t new_block(void)
{
	assert_true(next_blk < (uint64_t)NODE_SEG * FMT_SEG_BLOCKS);
	return next_blk++;
}

static int setup(void **state)
{
	urcu_memb_register_thread();
	A = alloc_new(NSEGS);
	next_blk = (uint64_t)DATA_SEG * FMT_SEG_BLOCKS;
	return A ? 0 : -1;
}

static int teardown(void **state)
{
	urcu_memb_barrier(); /* nodes go through call_rcu */
	assert_int_equal(alloc_live_blocks(A), 0);
	alloc_free(A);
	urcu_memb_unregister_thread();
	return 0;
}

static uint64_t model_get(const struct vt *v, uint64_t lba)
{
	uintptr_t i = (uintptr_t)map_get(&v->idx, lba + 1);
	return i ? v->blk[i - 1] : 0;
}

static void model_put(struct vt *v, uint64_t lba, uint64_t blk)
{
	uintptr_t i = (uintptr_t)map_get(&v->idx, lba + 1);

	if (i) {
		v->blk[i - 1] = blk;
		return;
	}
	if (v->n == v->cap) {
		v->cap = v->cap ? 2 * v->cap : 256;
		v->lba = realloc(v->lba, v->cap * sizeof(*v->lba));
		v->blk = realloc(v->blk, v->cap * sizeof(*v->blk));
		assert_non_null(v->lba);
		assert_non_null(v->blk);
	}
	v->lba[v->n] = lba;
	v->blk[v->n++] = blk;
	assert_int_equal(map_put(&v->idx, lba + 1, (void *)(uintptr_t)v->n), 0);
}

static void vt_init(struct vt *v, unsigned levels)
{
	memset(v, 0, sizeof(*v));
	v->t.levels = levels;
}

static void vt_set(struct vt *v, uint64_t lba, uint64_t blk)
{
	assert_int_equal(tree_set(&v->t, A, lba, blk), 0);
	model_put(v, lba, blk);
}

static void vt_trim(struct vt *v, uint64_t lo, uint64_t hi)
{
	assert_int_equal(tree_trim(&v->t, A, lo, hi), 0);
	for (size_t i = 0; i < v->n; i++)
		if (v->lba[i] >= lo && v->lba[i] < hi)
			v->blk[i] = 0;
}

/* dst (empty) becomes a snapshot or clone of src. */
static void vt_share(struct vt *dst, struct vt *src)
{
	memset(dst, 0, sizeof(*dst));
	tree_share(&dst->t, &src->t, A);
	for (size_t i = 0; i < src->n; i++)
		model_put(dst, src->lba[i], src->blk[i]);
}

static void vt_drop(struct vt *v)
{
	tree_drop(&v->t, A);
	assert_null(v->t.root);
	map_clear(&v->idx);
	free(v->lba);
	free(v->blk);
	memset(v, 0, sizeof(*v));
}

static uint64_t model_count(const struct vt *v)
{
	uint64_t n = 0;
	for (size_t i = 0; i < v->n; i++)
		n += v->blk[i] != 0;
	return n;
}

/* The tree maps exactly what the model says. */
static void vt_expect(const struct vt *v)
{
	uint64_t mapped, unique;

	urcu_memb_read_lock();
	for (size_t i = 0; i < v->n; i++)
		if (treeref_lookup(&v->t, v->lba[i]) != v->blk[i])
			fail_msg("lba %llu maps %llu, model %llu", (unsigned long long)v->lba[i],
			         (unsigned long long)treeref_lookup(&v->t, v->lba[i]),
			         (unsigned long long)v->blk[i]);
	tree_count(&v->t, A, false, &mapped, &unique);
	urcu_memb_read_unlock();
	assert_int_equal(mapped, model_count(v)); /* and nothing else */
}

/* Every tree against its model, every count against both oracles. */
static void expect_all(struct vt *const *vs, unsigned n)
{
	struct tree *trees[16];

	assert_true(n <= 16);
	for (unsigned i = 0; i < n; i++) {
		vt_expect(vs[i]);
		trees[i] = &vs[i]->t;
	}
	assert_int_equal(treeref_check(trees, n, A, NULL), 0);
	/* Every dirty node is charged once as metadata the next checkpoint
	 * writes (the space policy reserves room for it), none twice. */
	assert_int_equal(tree_dirty_nodes(trees, n), alloc_meta_pending(A));
}

/* The run tree_run must report at lba: maximal, at most max. */
static uint64_t model_run(const struct vt *v, uint64_t lba, uint64_t max, bool *mapped)
{
	uint64_t n = 1;

	*mapped = model_get(v, lba) != 0;
	if (*mapped) {
		while (n < max && model_get(v, lba + n))
			n++;
		return n;
	}
	n = max;
	for (size_t i = 0; i < v->n; i++)
		if (v->blk[i] && v->lba[i] > lba && v->lba[i] - lba < n)
			n = v->lba[i] - lba;
	return n;
}

static void expect_run(const struct vt *v, uint64_t lba, uint64_t max)
{
	bool want_m, got_m;
	uint64_t want = model_run(v, lba, max, &want_m), got;

	urcu_memb_read_lock();
	assert_int_equal(tree_run(&v->t, lba, max, false, &got, &got_m), 0);
	urcu_memb_read_unlock();
	if (got != want || got_m != want_m)
		fail_msg("run at %llu (max %llu): %llu %s, model %llu %s", (unsigned long long)lba,
		         (unsigned long long)max, (unsigned long long)got,
		         got_m ? "mapped" : "holes", (unsigned long long)want,
		         want_m ? "mapped" : "holes");
}

static void test_levels_for(void **state)
{
	assert_int_equal(tree_levels_for(0), 1);
	assert_int_equal(tree_levels_for(1), 1);
	for (unsigned l = 1; l <= 4; l++) {
		assert_int_equal(tree_levels_for(span[l]), l);
		if (l < 4)
			assert_int_equal(tree_levels_for(span[l] + 1), l + 1);
	}
	assert_int_equal(tree_levels_for(span[4] + 1), 0);
	assert_int_equal(tree_levels_for(UINT64_MAX), 0);
}

/* Set, look up, run and trim at every level's edges and at random. */
static void test_ops_all_levels(void **state)
{
	for (unsigned l = 1; l <= 4; l++) {
		uint64_t size = span[l], lbas[300];
		unsigned n = 0;
		struct vt v, *vs[1] = {&v};

		vt_init(&v, l);
		vt_expect(&v);
		expect_run(&v, 0, size < 5000 ? size : 5000);
		/* node edges, and a run that crosses a leaf boundary */
		const uint64_t edges[] = {0, 1, 502, 503, 504, 505, size - 1, size / 2};
		for (unsigned i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
			if (edges[i] < size)
				lbas[n++] = edges[i];
		while (n < 250)
			lbas[n++] = rnd(size);
		for (unsigned i = 0; i < n; i++)
			vt_set(&v, lbas[i], new_block());
		for (uint64_t lba = 1000; lba < 1020 && lba < size; lba++)
			vt_set(&v, lba, new_block());
		expect_all(vs, 1);
		/* overwrite some, unmap some with tree_set(0) */
		for (unsigned i = 0; i < n; i += 3)
			vt_set(&v, lbas[i], i % 2 ? new_block() : 0);
		expect_all(vs, 1);
		for (unsigned i = 0; i < n; i++) {
			uint64_t max = 1 + rnd(3000);
			expect_run(&v, lbas[i], max < size - lbas[i] ? max : size - lbas[i]);
			if (lbas[i] + 1 < size)
				expect_run(&v, lbas[i] + 1,
				           size - lbas[i] - 1 < 700 ? size - lbas[i] - 1 : 700);
		}
		/* trims: inside a leaf, a whole leaf's range, across leaves, past the end */
		vt_trim(&v, 1005, 1010);
		if (size > 1030)
			expect_run(&v, 1000, 30);
		vt_trim(&v, 0, 504);
		vt_trim(&v, size / 3, size / 3 + 2000);
		expect_all(vs, 1);
		vt_trim(&v, size - 10, size + 1000);
		expect_all(vs, 1);
		vt_trim(&v, 0, size);
		assert_null(v.t.root);
		expect_all(vs, 1);
		assert_int_equal(alloc_live_blocks(A), 0);
		vt_drop(&v);
	}
}

/* Random sets and trims on one tree of a chain; blocks from blk(). */
static void churn_by(struct vt *v, uint64_t size, unsigned n, uint64_t (*blk)(void))
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t lba = rnd(size);
		if (i % 17 == 16)
			vt_trim(v, lba, lba + rnd(700));
		else
			vt_set(v, lba, i % 11 == 10 ? 0 : blk());
	}
}

static void churn(struct vt *v, uint64_t size, unsigned n)
{
	churn_by(v, size, n, new_block);
}

/* snapshot -> clone -> snapshot chains: every member keeps its own
 * mappings whatever the others do, and drops in any order leave exact
 * counts (and, at the end, nothing). */
static void test_snapshot_chain(void **state)
{
	const uint64_t size = 3 * span[2] / 2; /* three levels */
	struct vt vol, s1, c1, s2, s3, c2;
	struct vt *all[] = {&vol, &s1, &c1, &s2, &s3, &c2};

	vt_init(&vol, tree_levels_for(size));
	churn(&vol, size, 3000);
	vt_share(&s1, &vol); /* snapshot */
	expect_all(all, 2);
	churn(&vol, size, 2000);
	expect_all(all, 2);
	vt_share(&c1, &s1); /* clone of the snapshot */
	churn(&c1, size, 1500);
	vt_share(&s2, &c1); /* snapshot of the clone */
	churn(&c1, size, 1500);
	churn(&vol, size, 500);
	vt_share(&s3, &vol);
	vt_share(&c2, &s2); /* clone of the clone's snapshot */
	churn(&c2, size, 800);
	expect_all(all, 6);
	/* Whole-range trims of a sharer drop shared subtrees, not walk them. */
	vt_trim(&c2, 0, size / 2);
	expect_all(all, 6);
	/* Drops, origin first: the chain below keeps its bytes. */
	struct vt *rest1[] = {&s1, &c1, &s2, &s3, &c2};
	vt_drop(&vol);
	expect_all(rest1, 5);
	struct vt *rest2[] = {&c1, &s2, &s3, &c2};
	vt_drop(&s1);
	churn(&c1, size, 300);
	expect_all(rest2, 4);
	struct vt *rest3[] = {&c1, &s3, &c2};
	vt_drop(&s2);
	expect_all(rest3, 3);
	vt_drop(&c1);
	vt_drop(&s3);
	vt_drop(&c2);
	assert_int_equal(alloc_live_blocks(A), 0);
	assert_true(alloc_check(A));
}

/* tree_count: mapped always; unique = blocks no other tree can reach. */
static void test_count(void **state)
{
	struct vt vol, snap;
	uint64_t mapped, unique;

	vt_init(&vol, 2);
	for (uint64_t lba = 0; lba < 2000; lba += 3)
		vt_set(&vol, lba, new_block());
	urcu_memb_read_lock();
	tree_count(&vol.t, A, false, &mapped, &unique);
	urcu_memb_read_unlock();
	assert_int_equal(mapped, 667);
	assert_int_equal(unique, 667);
	vt_share(&snap, &vol);
	urcu_memb_read_lock();
	tree_count(&vol.t, A, false, &mapped, &unique);
	urcu_memb_read_unlock();
	assert_int_equal(mapped, 667);
	assert_int_equal(unique, 0);
	/* 10 new blocks in vol (in four leaves), 5 overwrites of shared ones */
	for (uint64_t lba = 1; lba < 2000; lba += 201)
		vt_set(&vol, lba, new_block());
	for (uint64_t lba = 0; lba < 15; lba += 3)
		vt_set(&vol, lba, new_block());
	urcu_memb_read_lock();
	tree_count(&vol.t, A, false, &mapped, &unique);
	assert_int_equal(mapped, 677);
	assert_int_equal(unique, 15);
	tree_count(&snap.t, A, false, &mapped, &unique);
	assert_int_equal(mapped, 667);
	/* Only the blocks vol overwrote: the leaves vol copied are the
	 * snapshot's alone now, the others are still shared. */
	assert_int_equal(unique, 5);
	urcu_memb_read_unlock();
	vt_drop(&vol);
	urcu_memb_read_lock();
	tree_count(&snap.t, A, false, &mapped, &unique);
	urcu_memb_read_unlock();
	assert_int_equal(mapped, 667);
	assert_int_equal(unique, 667);
	vt_drop(&snap);
}

/* ---- write-back and loading ------------------------------------------- */

struct disk {
	struct fmt_node *img[NSEGS * FMT_SEG_BLOCKS]; /* by address */
	uint64_t next;                                /* where the next emitted node goes */
	unsigned emitted;
	int fail_at; /* emit number that fails (1-based), 0 = never */
};

static uint64_t emit(void *arg, struct fmt_node *image)
{
	struct disk *d = arg;
	struct fmt_node *copy = malloc(sizeof(*copy));

	if (d->fail_at && ++d->emitted == (unsigned)d->fail_at) {
		free(copy);
		return 0;
	}
	if (!d->fail_at)
		d->emitted++;
	assert_non_null(copy);
	image->self = d->next;
	memcpy(copy, image, sizeof(*copy));
	assert_true(d->next < NSEGS * FMT_SEG_BLOCKS);
	free(d->img[d->next]);
	d->img[d->next] = copy;
	return d->next++;
}

static int read_node(void *arg, uint64_t addr, struct fmt_node *out)
{
	struct disk *d = arg;
	const struct fmt_node *img = addr < NSEGS * FMT_SEG_BLOCKS ? d->img[addr] : NULL;

	if (!img)
		return -EIO;
	assert_int_equal(img->self, addr);
	memcpy(out, img, sizeof(*out));
	return 0;
}

static void disk_free(struct disk *d)
{
	for (size_t i = 0; i < NSEGS * FMT_SEG_BLOCKS; i++)
		free(d->img[i]);
	free(d);
}

static struct disk *disk_new(uint64_t seg)
{
	struct disk *d = calloc(1, sizeof(*d));
	assert_non_null(d);
	d->next = seg * FMT_SEG_BLOCKS;
	return d;
}

static unsigned write_all(struct vt *const *vs, unsigned n, struct disk *d)
{
	struct fmt_node *scratch = malloc(sizeof(*scratch));
	unsigned before = d->emitted;

	for (unsigned i = 0; i < n; i++)
		assert_int_equal(tree_write_dirty(&vs[i]->t, A, emit, d, scratch), 0);
	free(scratch);
	return d->emitted - before;
}

/* Write every tree out, load the images into a second allocator: the same
 * mappings, the same node sharing, the same count on every block. */
static void test_write_load(void **state)
{
	const uint64_t size = 2 * span[2]; /* three levels */
	struct vt vol, snap, clone;
	struct vt *all[] = {&vol, &snap, &clone};
	struct disk *d = disk_new(NODE_SEG);

	vt_init(&vol, tree_levels_for(size));
	churn(&vol, size, 2000);
	unsigned first = write_all(all, 1, d);
	assert_int_equal(first, treeref_nodes((struct tree *[]){&vol.t}, 1));
	assert_int_equal(write_all(all, 1, d), 0); /* nothing dirty */
	vt_share(&snap, &vol);
	vt_share(&clone, &snap);
	assert_int_equal(write_all(all, 3, d), 0); /* sharing dirties nothing */
	/* One block changed in a private tree: its path, nothing else. */
	vt_set(&clone, 7, new_block());
	assert_int_equal(write_all(all, 3, d), 3);
	vt_set(&clone, 8, new_block());
	assert_int_equal(write_all(all, 3, d), 3);
	churn(&vol, size, 300);
	churn(&clone, size, 300);
	write_all(all, 3, d);
	expect_all(all, 3); /* old copies released, new ones referenced */

	/* A failed emit fails the write-back. */
	struct fmt_node *scratch = malloc(sizeof(*scratch));
	vt_set(&vol, 3, new_block());
	d->fail_at = (int)d->emitted + 2;
	assert_int_equal(tree_write_dirty(&vol.t, A, emit, d, scratch), -EIO);
	d->fail_at = 0;
	assert_int_equal(tree_write_dirty(&vol.t, A, emit, d, scratch), 0);
	free(scratch);
	expect_all(all, 3);

	/* Load into a second allocator. */
	struct alloc *a2 = alloc_new(NSEGS), *a1 = A;
	struct tree_cache *nc = tree_cache_new(a2, read_node, d);
	struct vt lv[3];
	struct vt *lall[] = {&lv[0], &lv[1], &lv[2]};
	assert_non_null(nc);
	for (unsigned i = 0; i < 3; i++) {
		memset(&lv[i], 0, sizeof(lv[i]));
		assert_int_equal(tree_load(nc, &lv[i].t, all[i]->t.root->disk, all[i]->t.levels),
		                 0);
		lv[i].lba = all[i]->lba; /* the same model (borrowed) */
		lv[i].blk = all[i]->blk;
		lv[i].n = all[i]->n;
		lv[i].idx = all[i]->idx;
	}
	A = a2;
	expect_all(lall, 3);
	assert_int_equal(treeref_nodes((struct tree *[]){&lv[0].t, &lv[1].t, &lv[2].t}, 3),
	                 treeref_nodes((struct tree *[]){&vol.t, &snap.t, &clone.t}, 3));
	for (uint64_t b = 0; b < alloc_nblocks(a1); b++)
		if (alloc_block_refs(a1, b) != alloc_block_refs(a2, b))
			fail_msg("block %llu: %u references, %u after loading",
			         (unsigned long long)b, alloc_block_refs(a1, b),
			         alloc_block_refs(a2, b));
	/* A missing node: the load fails and leaks nothing. */
	struct tree bad = {0};
	assert_int_equal(tree_load(nc, &bad, d->next + 5, 3), -EIO);
	for (unsigned i = 0; i < 3; i++)
		tree_drop(&lv[i].t, A);
	urcu_memb_barrier();
	tree_cache_free(nc);
	assert_int_equal(alloc_live_blocks(a2), 0);
	alloc_free(a2);
	A = a1;
	for (unsigned i = 0; i < 3; i++)
		vt_drop(all[i]);
	disk_free(d);
}

/* A checkpoint's pre-copy: tree_write_leaves writes dirty leaves only, in
 * LBA order from its cursor, as many as its budget allows; the checkpoint
 * that follows writes the inner nodes and the leaves changed since, and
 * what it wrote loads back into the same mappings. */
static void test_write_leaves(void **state)
{
	const uint64_t size = 2 * span[2]; /* three levels */
	const uint64_t l0 = 5, l3 = 3 * span[1] + 1, l504 = span[2] + 7,
	               l514 = span[2] + 10 * span[1];
	struct vt vol, snap;
	struct vt *all[] = {&vol, &snap};
	struct disk *d = disk_new(NODE_SEG);
	struct fmt_node *scratch = malloc(sizeof(*scratch));
	uint64_t from = 0;
	unsigned budget;

	vt_init(&vol, tree_levels_for(size));
	churn(&vol, size, 2000);
	write_all(all, 1, d);
	vt_share(&snap, &vol);
	vt_set(&vol, l0, new_block());
	vt_set(&vol, l3, new_block());
	vt_set(&vol, l504, new_block());
	vt_set(&vol, l514, new_block());
	/* nothing dirty in the snapshot: done at once, nothing written */
	budget = 4;
	assert_int_equal(tree_write_leaves(&snap.t, A, emit, d, scratch, &from, &budget), 0);
	assert_true(from == UINT64_MAX && budget == 4);
	from = 0;
	/* no budget: nothing */
	budget = 0;
	assert_int_equal(tree_write_leaves(&vol.t, A, emit, d, scratch, &from, &budget), 0);
	assert_true(from == 0);
	unsigned before = d->emitted;
	budget = 1;
	assert_int_equal(tree_write_leaves(&vol.t, A, emit, d, scratch, &from, &budget), 0);
	assert_true(from == span[1] && budget == 0);
	budget = 1;
	assert_int_equal(tree_write_leaves(&vol.t, A, emit, d, scratch, &from, &budget), 0);
	assert_true(from == 4 * span[1] && budget == 0);
	assert_false(vol.t.root->dirty == 0); /* inner nodes wait for the checkpoint */
	/* a leaf behind the cursor changes again */
	vt_set(&vol, l0 + 1, new_block());
	budget = 2;
	assert_int_equal(tree_write_leaves(&vol.t, A, emit, d, scratch, &from, &budget), 0);
	assert_true(from == span[2] + 11 * span[1] && budget == 0);
	budget = 5;
	assert_int_equal(tree_write_leaves(&vol.t, A, emit, d, scratch, &from, &budget), 0);
	assert_true(from == UINT64_MAX && budget == 5);
	assert_int_equal(d->emitted - before, 4);
	for (uint64_t a = d->next - 4; a < d->next; a++)
		assert_int_equal(d->img[a]->level, 0);
	/* the checkpoint: the root, both level-1 nodes, leaf 0 again */
	assert_int_equal(write_all(all, 2, d), 4);
	expect_all(all, 2); /* every leaf's first copy released */

	/* A failed emit fails the pre-copy. */
	vt_set(&vol, l3, new_block());
	d->fail_at = (int)d->emitted + 1;
	from = 0;
	budget = 3;
	assert_int_equal(tree_write_leaves(&vol.t, A, emit, d, scratch, &from, &budget), -EIO);
	d->fail_at = 0;
	assert_int_equal(write_all(all, 2, d), 3);
	expect_all(all, 2);

	/* What the checkpoint wrote loads back into vol's mappings. */
	struct alloc *a2 = alloc_new(NSEGS), *a1 = A;
	struct tree_cache *nc = tree_cache_new(a2, read_node, d);
	struct vt lv;
	assert_non_null(nc);
	memset(&lv, 0, sizeof(lv));
	assert_int_equal(tree_load(nc, &lv.t, vol.t.root->disk, vol.t.levels), 0);
	lv.lba = vol.lba; /* the same model (borrowed) */
	lv.blk = vol.blk;
	lv.n = vol.n;
	lv.idx = vol.idx;
	A = a2;
	vt_expect(&lv);
	tree_drop(&lv.t, A);
	urcu_memb_barrier();
	tree_cache_free(nc);
	alloc_free(a2);
	A = a1;
	free(scratch);
	vt_drop(&snap);
	vt_drop(&vol);
	disk_free(d);
}

/* ---- comparing trees ---------------------------------------------------- */

/* What each block holds, by physical block: a write gives a new value,
 * relocation copies it to the new address.  Two trees hold the same bytes
 * at lba exactly when content[] of their blocks agree. */
static uint32_t content[NSEGS * FMT_SEG_BLOCKS];
static uint32_t next_content;

static uint64_t new_data(void)
{
	uint64_t b = new_block();
	content[b] = ++next_content;
	return b;
}

static uint32_t model_content(const struct vt *v, uint64_t lba)
{
	uint64_t b = model_get(v, lba);
	return b ? content[b] : 0;
}

/* Random writes, unmaps and trims of fresh data. */
static void churn_data(struct vt *v, uint64_t size, unsigned n)
{
	churn_by(v, size, n, new_data);
}

struct diff_seen {
	uint64_t lo, hi; /* the range asked */
	uint64_t next;   /* runs come in order: the next may start here or later */
	uint8_t *mark;   /* per lba - lo: 1 changed, 2 changed to a hole */
	unsigned runs;
	int stop_after; /* return 1 after this many runs (0: never) */
};

static int diff_cb(void *arg, uint64_t lba, uint64_t n, bool zero)
{
	struct diff_seen *d = arg;

	assert_true(n > 0);
	assert_true(lba >= d->next);
	assert_true(lba + n <= d->hi);
	for (uint64_t i = lba; i < lba + n; i++)
		d->mark[i - d->lo] = zero ? 2 : 1;
	d->next = lba + n;
	d->runs++;
	return d->stop_after && (int)d->runs == d->stop_after;
}

/* tree_diff(a, b) over [lo, hi) reports exactly the blocks whose contents
 * differ (no unchanged block, however the trees got there), each flagged
 * zero exactly when b has a hole there. */
static void expect_diff(const struct vt *a, const struct vt *b, uint64_t lo, uint64_t hi)
{
	struct diff_seen d = {.lo = lo, .hi = hi, .next = lo, .mark = calloc(hi - lo, 1)};
	uint64_t visits = 0, missed = 0, extra = 0;

	assert_non_null(d.mark);
	urcu_memb_read_lock();
	assert_int_equal(tree_diff(&a->t, &b->t, lo, hi, false, diff_cb, &d, &visits), 0);
	urcu_memb_read_unlock();
	for (uint64_t lba = lo; lba < hi; lba++) {
		uint32_t ca = model_content(a, lba), cb = model_content(b, lba);
		uint8_t want = ca == cb ? 0 : cb ? 1 : 2;
		if (d.mark[lba - lo] != want) {
			missed += want && !d.mark[lba - lo];
			extra += !want && d.mark[lba - lo];
			if (missed + extra < 5)
				print_error("lba %llu: content %u vs %u, diff says %u\n",
				            (unsigned long long)lba, ca, cb, d.mark[lba - lo]);
		}
	}
	free(d.mark);
	if (missed || extra)
		fail_msg("diff [%llu, %llu): %llu changed blocks missed, %llu unchanged reported",
		         (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)missed,
		         (unsigned long long)extra);
}

/* Move every counted block of data segment seg to *dest on, under its
 * name (as the compactor does: fwd.h), copying its content; no tree
 * changes. */
static uint64_t relocate_seg(struct vt *const *vs, unsigned n, uint64_t seg, uint64_t *dest)
{
	struct fwd *f = alloc_fwd(A);
	uint8_t victim[NSEGS] = {0};
	uint64_t from[FMT_SEG_BLOCKS], to[FMT_SEG_BLOCKS], moved = 0;

	for (uint64_t blk = seg * FMT_SEG_BLOCKS; blk < (seg + 1) * FMT_SEG_BLOCKS; blk++) {
		if (!alloc_blk_refs(A, blk))
			continue;
		assert_int_equal(fwd_stage(f, fwd_make(blk, fwd_life(f, seg)), *dest), 0);
		from[moved] = blk;
		to[moved++] = (*dest)++;
	}
	victim[seg] = 1;
	assert_int_equal(fwd_publish(f, victim), 0);
	for (uint64_t k = 0; k < moved; k++) {
		assert_int_equal(alloc_move(A, from[k], to[k]), 0);
		content[to[k]] = content[from[k]];
	}
	assert_int_equal(alloc_seg_counted(A, seg), 0);
	return moved;
}

/* Property: over random histories — writes, unmaps, trims, snapshots,
 * clones, rollbacks (a volume's tree replaced by a snapshot's) and
 * compaction between the two points compared — tree_diff equals a full
 * comparison of the two trees' contents, for every pair and random
 * sub-ranges: no changed block missed, no unchanged block reported. */
static void test_diff_property(void **state)
{
	const uint64_t size = span[2] + 3 * FMT_FANOUT + 7; /* three levels, partial top */
	struct vt t[8];
	unsigned n = 0;
	uint64_t dest = (uint64_t)NODE_SEG2 * FMT_SEG_BLOCKS; /* where copies go */
	uint64_t seg = DATA_SEG, moved = 0;
	unsigned rollbacks = 0;

	next_content = 0;
	vt_init(&t[n++], tree_levels_for(size)); /* 0: the volume */
	churn_data(&t[0], size, 2000);
	for (unsigned step = 0; step < 30; step++) {
		struct vt *all[8];
		for (unsigned i = 0; i < n; i++)
			all[i] = &t[i];
		unsigned pick = (unsigned)rnd(n);
		/* one rollback at least, whatever the draws */
		unsigned op = step == 20 && !rollbacks && n > 1 ? 2 : (unsigned)rnd(7);
		if (op == 2 && step == 20 && !pick)
			pick = n - 1;
		switch (op) {
		case 0: /* snapshot or clone of any tree */
		case 1:
			if (n < 7)
				vt_share(&t[n++], &t[pick]);
			break;
		case 2: /* rollback: a tree becomes a copy of another */
			if (pick != 0) {
				vt_drop(&t[0]);
				vt_share(&t[0], &t[pick]);
				rollbacks++;
			}
			break;
		case 3: /* compaction of an old data segment */
			if (seg < (next_blk - 1) / FMT_SEG_BLOCKS)
				moved += relocate_seg(all, n, seg++, &dest);
			break;
		default:
			churn_data(&t[pick], size, 400);
		}
		for (unsigned i = 0; i < n; i++)
			for (unsigned j = 0; j < n; j++)
				expect_diff(&t[i], &t[j], 0, size);
		for (unsigned k = 0; k < 4; k++) {
			uint64_t lo = rnd(size), hi = lo + 1 + rnd(size - lo);
			expect_diff(&t[rnd(n)], &t[rnd(n)], lo, hi);
		}
	}
	print_message("%u trees, %u rollbacks, %llu blocks moved by compaction\n", n, rollbacks,
	              (unsigned long long)moved);
	assert_true(moved > 0 && rollbacks > 0 && n >= 4);
	struct vt *all[8];
	for (unsigned i = 0; i < n; i++)
		all[i] = &t[i];
	expect_all(all, n);
	/* fn's nonzero stops the walk and comes back */
	struct diff_seen d = {.hi = size, .mark = calloc(size, 1), .stop_after = 1};
	vt_set(&t[0], 5, new_data());
	vt_set(&t[0], size - 1, new_data());
	vt_share(&t[n], &t[0]);
	vt_set(&t[n], 6, new_data());
	vt_set(&t[n], size - 2, new_data());
	urcu_memb_read_lock();
	assert_int_equal(tree_diff(&t[0].t, &t[n].t, 0, size, false, diff_cb, &d, NULL), 1);
	urcu_memb_read_unlock();
	assert_int_equal(d.runs, 1);
	free(d.mark);
	vt_drop(&t[n]);
	for (unsigned i = 0; i < n; i++)
		vt_drop(&t[i]);
}

/* The cost: a walk visits nodes on paths to what changed, not the tree.
 * 10^6 blocks mapped in a 3-level tree (a 100 GiB volume); a snapshot;
 * then 10, 100 and 1,000 blocks changed: node pairs visited stay within
 * levels x changed + 1, and a clustered change of 1,000 blocks visits a
 * handful. */
static void test_diff_cost(void **state)
{
	const uint64_t nblocks = 26214400, mapped = 1000000; /* 100 GiB, 4 KiB blocks */
	struct alloc *a1 = A, *big = alloc_new(1100);
	struct tree vol = {.levels = tree_levels_for(nblocks)}, snap = {0};
	uint64_t blk = FMT_SEG_BLOCKS, nodes;

	assert_non_null(big);
	assert_int_equal(vol.levels, 3);
	A = big;
	for (uint64_t lba = 0; lba < mapped; lba++)
		assert_int_equal(tree_set(&vol, A, lba * 13 % nblocks, blk++), 0);
	tree_share(&snap, &vol, A);
	nodes = treeref_nodes((struct tree *[]){&vol}, 1);
	const unsigned counts[] = {0, 10, 100, 1000};
	unsigned changed = 0;
	for (unsigned c = 0; c < 4; c++) {
		while (changed < counts[c]) {
			uint64_t lba = rnd(mapped) * 13 % nblocks;
			if (treeref_lookup(&vol, lba) == treeref_lookup(&snap, lba))
				changed++;
			assert_int_equal(tree_set(&vol, A, lba, blk++), 0);
		}
		struct diff_seen d = {.hi = nblocks, .mark = calloc(nblocks, 1)};
		uint64_t visits = 0, seen = 0;
		assert_non_null(d.mark);
		urcu_memb_read_lock();
		assert_int_equal(tree_diff(&snap, &vol, 0, nblocks, false, diff_cb, &d, &visits),
		                 0);
		urcu_memb_read_unlock();
		for (uint64_t i = 0; i < nblocks; i++)
			seen += d.mark[i] != 0;
		free(d.mark);
		print_message("%u changed of %llu mapped (%llu nodes): %llu node pairs visited\n",
		              changed, (unsigned long long)mapped, (unsigned long long)nodes,
		              (unsigned long long)visits);
		assert_int_equal(seen, changed);
		assert_true(visits <= 3ull * changed + (changed ? 1 : 0));
	}
	/* 1,000 changes in two leaves: the two paths, nothing else */
	tree_drop(&snap, A);
	tree_share(&snap, &vol, A);
	for (uint64_t lba = 0; lba < 1000; lba++)
		assert_int_equal(tree_set(&vol, A, 4096 + lba, blk++), 0);
	uint64_t visits = 0;
	struct diff_seen d = {.hi = nblocks, .mark = calloc(nblocks, 1)};
	urcu_memb_read_lock();
	assert_int_equal(tree_diff(&snap, &vol, 0, nblocks, false, diff_cb, &d, &visits), 0);
	urcu_memb_read_unlock();
	free(d.mark);
	print_message("1000 clustered changes: %llu node pairs visited\n",
	              (unsigned long long)visits);
	assert_true(visits <= 5);
	tree_drop(&vol, A);
	tree_drop(&snap, A);
	urcu_memb_barrier();
	assert_int_equal(alloc_live_blocks(A), 0);
	alloc_free(big);
	A = a1;
}

struct depth_seen {
	uint64_t lo, hi, next;
	uint32_t *depth; /* per lba - lo */
};

static int depth_cb(void *arg, uint64_t lba, uint64_t n, uint32_t depth)
{
	struct depth_seen *d = arg;

	assert_int_equal(lba, d->next); /* contiguous, in order, from lo */
	assert_true(n > 0 && lba + n <= d->hi);
	for (uint64_t i = lba; i < lba + n; i++)
		d->depth[i - d->lo] = depth;
	d->next = lba + n;
	return 0;
}

/* Allocation depth along vol -> snapshot -> clone -> its snapshot ->
 * clone: 0 hole, 1 written in the clone, k+1 the same block as the k-th
 * tree up the chain (and every one between), through compaction too. */
static void test_depth(void **state)
{
	const uint64_t size = 2 * span[1] * 7 + 11;
	struct vt vol, s1, c1, s2, c2;
	struct vt *all[] = {&vol, &s1, &c1, &s2, &c2};
	uint64_t dest = (uint64_t)NODE_SEG2 * FMT_SEG_BLOCKS;

	vt_init(&vol, tree_levels_for(size));
	churn_data(&vol, size, 3000);
	vt_share(&s1, &vol);
	churn_data(&vol, size, 500);
	vt_share(&c1, &s1);
	churn_data(&c1, size, 800);
	vt_share(&s2, &c1);
	churn_data(&c1, size, 300);
	vt_share(&c2, &s2);
	churn_data(&c2, size, 400);
	relocate_seg(all, 5, DATA_SEG, &dest);
	churn_data(&c2, size, 100);
	const struct vt *chain[] = {&c2, &s2, &s1};
	const struct tree *trees[] = {&c2.t, &s2.t, &s1.t};
	unsigned seen[4] = {0};
	for (unsigned r = 0; r < 3; r++) {
		uint64_t lo = r ? rnd(size) : 0, hi = r ? lo + 1 + rnd(size - lo) : size;
		struct depth_seen d = {
		    .lo = lo, .hi = hi, .next = lo, .depth = calloc(hi - lo, sizeof(uint32_t))};
		urcu_memb_read_lock();
		assert_int_equal(tree_depth(trees, 3, lo, hi, false, depth_cb, &d), 0);
		urcu_memb_read_unlock();
		assert_int_equal(d.next, hi);
		for (uint64_t lba = lo; lba < hi; lba++) {
			uint64_t b = model_get(&c2, lba);
			uint32_t want = b != 0;
			while (b && want < 3 && model_get(chain[want], lba) == b)
				want++;
			if (d.depth[lba - lo] != want)
				fail_msg("lba %llu: depth %u, want %u", (unsigned long long)lba,
				         d.depth[lba - lo], want);
			seen[want]++;
		}
		free(d.depth);
	}
	for (unsigned k = 0; k < 4; k++)
		assert_true(seen[k] > 0); /* every depth occurs */
	for (unsigned i = 0; i < 5; i++)
		vt_drop(all[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_levels_for),
	    cmocka_unit_test_setup_teardown(test_ops_all_levels, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_count, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_leaves, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_diff_property, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_diff_cost, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
