/* test_ckpt_fwd.c — the forwarding map on disk (format version 5,
 * docs/FORMAT.md "Forwarding blocks"): the lives and forwarding tables a
 * checkpoint writes come back at the next open exactly (a table spanning
 * several blocks, two tags of one segment, a life without tables, a table
 * a later checkpoint empties); the chains are held, so their segments
 * stay in use (open reads no chain: each segment's table says how many
 * chain blocks lie in it), and rewritten when the compactor empties their
 * segment; tables are read at first need, dropped by fwd_trim and read
 * again; and a damaged forwarding block (checksum, a chain that loops, a
 * block of another segment) fails the names it forwards and the check,
 * with the reason logged, while the rest of the pool opens.  With the real
 * compactor: what a pass forwards reads the same after a reopen, and
 * entries of blocks that died leave the disk at the next checkpoint.
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
#include <urcu/urcu-memb.h>

#include "cpage.h"
#include "faultdev.h"
#include "fwd.h"
#include "store_int.h"
#include "testpool.h"

#define MiB       (1ull << 20)
#define POOL_SIZE (256 * MiB) /* 64 segments */

/* Segments the test gives forwarding state, far from where the log runs
 * in a fresh pool, and the segments their entries point into. */
#define SEG_A 60u /* life 3: tag 1 with 600 entries (2 blocks), tag 2 with 5 */
#define SEG_B 61u /* life 1, no table */
#define SEG_C 62u /* life 2: tag 0 with 1 entry */
#define NA    605u

static struct fwd_ent ea[NA], ec[1];
static uint64_t chain_a[3]; /* SEG_A's chain as make_pool wrote it */

static void sample(void)
{
	for (unsigned i = 0; i < 600; i++)
		ea[i] =
		    (struct fwd_ent){.blk = 50 * FMT_SEG_BLOCKS + i, .tag = 1, .idx = (uint16_t)i};
	for (unsigned i = 0; i < 5; i++)
		ea[600 + i] = (struct fwd_ent){
		    .blk = 52 * FMT_SEG_BLOCKS + 7 * i, .tag = 2, .idx = (uint16_t)(10 + 200 * i)};
	ec[0] = (struct fwd_ent){.blk = 59 * FMT_SEG_BLOCKS + 3, .tag = 0, .idx = 1023};
}

static uint32_t version_of(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s.format_version;
}

/* seg has life and exactly e[0..n-1]. */
static void expect_seg(struct store *st, uint64_t seg, uint32_t life, const struct fwd_ent *e,
                       size_t n)
{
	struct fwd *f = alloc_fwd(st->a);
	struct fwd_ent *got;
	size_t m;

	assert_int_equal(fwd_life(f, seg), life);
	assert_int_equal(fwd_seg_get(f, seg, &got, &m), 0);
	assert_int_equal(m, n);
	if (n)
		assert_memory_equal(got, e, n * sizeof(*e));
	free(got);
}

/* A pool with one volume and some data, and the sample's state
 * checkpointed (installed while the store is idle: nothing else touches
 * the map then). */
static struct faultdev *make_pool(void)
{
	struct faultdev *p = faultdev_new(POOL_SIZE);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 8 * MiB, &v);
	char *buf = malloc(MiB);
	struct fwd *f = alloc_fwd(st->a);

	memset(buf, 'x', MiB);
	assert_int_equal(store_write(v, buf, 0, MiB, STORE_FUA), 0);
	free(buf);
	assert_int_equal(store_checkpoint(st), 0);
	sample();
	assert_int_equal(fwd_seg_install(f, SEG_A, 3, ea, NA), 0);
	assert_int_equal(fwd_seg_install(f, SEG_B, 1, NULL, 0), 0);
	assert_int_equal(fwd_seg_install(f, SEG_C, 2, ec, 1), 0);
	fwd_mark_dirty(f, SEG_A);
	fwd_mark_dirty(f, SEG_B);
	fwd_mark_dirty(f, SEG_C);
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(st->ck.chain[SEG_A].n, 3); /* 504 + 96 of tag 1, 5 of tag 2 */
	memcpy(chain_a, st->ck.chain[SEG_A].blk, sizeof(chain_a));
	assert_int_equal(st->ck.chain[SEG_B].n, 0);
	assert_int_equal(st->ck.chain[SEG_C].n, 1);
	store_vol_close(v);
	store_close(st);
	return p;
}

static void test_reopen(void **state)
{
	struct faultdev *p = make_pool();
	struct store *st = testpool_open(&p->dev, NULL);

	assert_int_equal(version_of(st), FMT_VERSION);
	/* Open read no chain: the tables are away, their blocks held by
	 * the counts of the segments they lie in. */
	assert_int_equal(fwd_entries(alloc_fwd(st->a)), 0);
	assert_false(st->ck.chain[SEG_A].known);
	assert_int_equal(st->ck.chain[SEG_A].head, chain_a[0]);
	for (unsigned k = 0; k < 3; k++)
		assert_true(alloc_seg_used(st->a, alloc_seg_of(chain_a[k])));
	assert_int_equal(st->ck.nchain, 4);
	expect_seg(st, SEG_A, 3, ea, NA);
	expect_seg(st, SEG_B, 1, NULL, 0);
	expect_seg(st, SEG_C, 2, ec, 1);
	for (uint64_t s = 0; s < st->nsegs; s++)
		if (s != SEG_A && s != SEG_B && s != SEG_C)
			expect_seg(st, s, 0, NULL, 0);
	assert_int_equal(fwd_entries(alloc_fwd(st->a)), NA + 1);
	/* Dropped from memory and read again through the chain. */
	struct fwd_stats fs;
	assert_int_equal(fwd_trim(alloc_fwd(st->a), 0, 4 * st->nsegs), 2);
	assert_int_equal(fwd_entries(alloc_fwd(st->a)), 0);
	expect_seg(st, SEG_A, 3, ea, NA);
	fwd_stats(alloc_fwd(st->a), &fs);
	assert_int_equal(fs.loads, 3);
	/* A checkpoint with nothing dirty keeps them; one that empties a
	 * segment's tables writes no chain for it, and keeps its life. */
	uint64_t head = st->ck.chain[SEG_A].head;
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(st->ck.chain[SEG_A].head, head);
	/* A chain in a segment the compactor empties is rewritten by the
	 * next checkpoint (marked while the store is idle). */
	uint8_t *victim = calloc(st->nsegs, 1);
	victim[alloc_seg_of(head)] = 1;
	ckpt_move_map(st, victim);
	free(victim);
	assert_int_equal(store_checkpoint(st), 0);
	for (unsigned k = 0; k < 3; k++)
		assert_true(st->ck.chain[SEG_A].blk[k] > head);
	assert_int_equal(fwd_seg_install(alloc_fwd(st->a), SEG_C, 2, NULL, 0), 0);
	fwd_mark_dirty(alloc_fwd(st->a), SEG_C);
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(st->ck.chain[SEG_C].n, 0);
	store_close(st);

	st = testpool_open(&p->dev, NULL);
	expect_seg(st, SEG_A, 3, ea, NA);
	expect_seg(st, SEG_C, 2, NULL, 0);
	assert_int_equal(fwd_entries(alloc_fwd(st->a)), NA);
	store_close(st);
	faultdev_free(p);
}

/* Open p: it opens, SEG_A's tables cannot be had (every name through
 * them fails, nothing is guessed), SEG_C's can, and the check counts the
 * damage. */
static void expect_damaged(struct faultdev *p)
{
	struct store *st = testpool_open(&p->dev, NULL);
	struct fwd_ent *e;
	size_t n;
	assert_int_equal(fwd_seg_get(alloc_fwd(st->a), SEG_A, &e, &n), -EIO);
	uint64_t blk;
	urcu_memb_read_lock();
	assert_int_equal(
	    fwd_resolve(alloc_fwd(st->a), fwd_make(SEG_A * FMT_SEG_BLOCKS + 3, 1), &blk), -EIO);
	urcu_memb_read_unlock();
	expect_seg(st, SEG_C, 2, ec, 1);
	assert_true(store_check(st) > 0);
	store_close(st);
}

/* Patch blk back to what the device holds. */
static void restore(struct faultdev *p, uint8_t *b, uint64_t blk)
{
	assert_int_equal(blkdev_pread(p->mem, b, FMT_BLOCK, blk * FMT_BLOCK), 0);
}

static void test_damage(void **state)
{
	struct faultdev *p = make_pool();
	struct store *st;
	uint64_t blk[3];
	memcpy(blk, chain_a, sizeof(blk));

	/* A bit flipped in the middle block. */
	uint8_t *b1 = faultdev_patch(p, blk[1]), *b2 = faultdev_patch(p, blk[2]);
	assert_true(b1 && b2);
	b1[FMT_BLOCK - 9] ^= 1;
	expect_damaged(p);
	restore(p, b1, blk[1]);
	/* Resealed, the last block naming the first: a loop. */
	struct fmt_fwd *f = (struct fmt_fwd *)b2;
	f->next = blk[0];
	cpage_seal(f, blk[2]);
	expect_damaged(p);
	restore(p, b2, blk[2]);
	/* A block of another segment in the chain. */
	f->seg = SEG_C;
	cpage_seal(f, blk[2]);
	expect_damaged(p);
	restore(p, b2, blk[2]);
	/* Undamaged again: it opens. */
	st = testpool_open(&p->dev, NULL);
	expect_seg(st, SEG_A, 3, ea, NA);
	store_close(st);
	faultdev_free(p);
}

/* ---- with the compactor ---- */

#define VOL (16 * MiB)

/* The map of an idle store, whole: per segment its life and entries. */
struct map_copy {
	uint64_t nsegs, entries;
	uint32_t *life;
	struct fwd_ent **e;
	size_t *n;
};

static void map_take(struct store *st, struct map_copy *m)
{
	struct fwd *f = alloc_fwd(st->a);
	m->nsegs = st->nsegs;
	m->life = calloc(m->nsegs, sizeof(*m->life));
	m->e = calloc(m->nsegs, sizeof(*m->e));
	m->n = calloc(m->nsegs, sizeof(*m->n));
	assert_true(m->life && m->e && m->n);
	for (uint64_t s = 0; s < m->nsegs; s++) {
		m->life[s] = fwd_life(f, s);
		assert_int_equal(fwd_seg_get(f, s, &m->e[s], &m->n[s]), 0);
	}
	m->entries = fwd_entries(f); /* every table loaded now */
}

static void map_expect(struct store *st, struct map_copy *m)
{
	for (uint64_t s = 0; s < m->nsegs; s++) {
		expect_seg(st, s, m->life[s], m->e[s], m->n[s]);
		free(m->e[s]);
	}
	assert_int_equal(fwd_entries(alloc_fwd(st->a)), m->entries);
	free(m->life);
	free(m->e);
	free(m->n);
}

/* Export name reads byte b in every block at lba % 2 == odd, else a. */
static void expect_bytes(struct store *st, const char *name, char even, char odd)
{
	struct vol *v;
	char *buf = malloc(VOL);
	assert_int_equal(store_vol_open(st, name, &v), 0);
	for (uint64_t off = 0; off < VOL; off += MiB)
		assert_int_equal(store_read(v, buf + off, off, MiB), 0);
	for (uint64_t b = 0; b < VOL / FMT_BLOCK; b++)
		for (unsigned k = 0; k < FMT_BLOCK; k += 1024)
			assert_int_equal(buf[b * FMT_BLOCK + k], b % 2 ? odd : even);
	store_vol_close(v);
	free(buf);
}

/* Blocks first, first + 2, ... of v become c. */
static void write_every(struct vol *v, uint64_t first, uint64_t step, char c)
{
	char blk[FMT_BLOCK];
	memset(blk, c, sizeof(blk));
	for (uint64_t b = first; b < VOL / FMT_BLOCK; b += step)
		assert_int_equal(store_write(v, blk, b * FMT_BLOCK, FMT_BLOCK, 0), 0);
	assert_int_equal(store_flush(v), 0);
}

static void write_odd(struct vol *v, char c)
{
	write_every(v, 1, 2, c);
}

static void write_all(struct vol *v, char c)
{
	write_every(v, 0, 1, c);
}

/* What the real compactor forwards survives a reopen, and what dies with
 * a deleted snapshot is pruned from disk too. */
static void test_compacted(void **state)
{
	struct faultdev *p = faultdev_new(128 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, NULL, "v", VOL, &v);
	struct map_copy m;

	write_all(v, 'a');
	write_odd(v, 'x'); /* the first segments half dead */
	assert_int_equal(store_snap_create(st, "v@s"), 0);
	write_odd(v, 'b'); /* their other half is the snapshot's too */
	assert_int_equal(store_checkpoint(st), 0);
	for (int k = 0; k < 8 && fwd_entries(alloc_fwd(st->a)) == 0; k++)
		assert_true(store_compact(st) >= 0);
	assert_true(fwd_entries(alloc_fwd(st->a)) > 0);
	assert_int_equal(store_checkpoint(st), 0);
	map_take(st, &m);
	store_vol_close(v);
	store_close(st);

	st = testpool_open(&p->dev, NULL);
	map_expect(st, &m);
	expect_bytes(st, "v", 'a', 'b');
	expect_bytes(st, "v@s", 'a', 'x');
	assert_int_equal(store_check(st), 0);
	/* Every block the pass moved dies (the snapshot goes, v is
	 * rewritten): the entries go at the next checkpoint, on disk too. */
	uint64_t before = fwd_entries(alloc_fwd(st->a));
	assert_int_equal(store_snap_delete(st, "v@s"), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	write_all(v, 'c');
	store_vol_close(v);
	assert_int_equal(store_checkpoint(st), 0);
	assert_true(fwd_entries(alloc_fwd(st->a)) < before / 2);
	map_take(st, &m);
	store_close(st);
	st = testpool_open(&p->dev, NULL);
	map_expect(st, &m);
	expect_bytes(st, "v", 'c', 'c');
	assert_int_equal(store_check(st), 0);
	store_close(st);
	faultdev_free(p);
}

int main(void)
{
	urcu_memb_register_thread();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reopen),
	    cmocka_unit_test(test_damage),
	    cmocka_unit_test(test_compacted),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	urcu_memb_unregister_thread();
	return rc;
}
