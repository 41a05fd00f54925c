/* test_compact.c — the compactor on its own (allocator, log and trees over
 * a memory segio from tests/lib/testlog; no store, no threads but
 * liburcu's).  Victim policy: compact_pick takes only USED, live segments
 * at most max_util full and not in keep[], best (1-u)·age/(1+u) first, up
 * to max_blocks live blocks, so an old segment beats a young one and a
 * sparse one a fuller one.  Moving: compact_move under a volume, its
 * snapshot, a clone of that and the clone's snapshot (trees sharing nodes
 * and leaves): no slot changes, every tree reads the same bytes before and
 * after through the forwarding map (read back through the segio), each
 * moved block was copied once as a MOVE2 entry naming its birth with the
 * right CRC, the victims end with no live
 * block (alloc_release_dead frees them), and every reference
 * count is exact (tests/lib/treeref).  Damage: a byte flipped in a
 * victim's live block is not laundered — the block stays where it was,
 * still failing its check (bcrc), no MOVE2 entry copies it, it is counted,
 * and its segment is no victim of a later pass while the block is live.
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

#include "bcrc.h"
#include "compact.h"
#include "crc32c.h"
#include "fwd.h"
#include "testlog.h"
#include "treeref.h"

#define B(seg, i) ((uint64_t)(seg)*FMT_SEG_BLOCKS + (i))

static void fill_seg(struct alloc *a, uint64_t seg, unsigned live, uint64_t stamp)
{
	alloc_mark_used(a, seg);
	for (unsigned i = 0; i < live; i++)
		alloc_ref(a, B(seg, i));
	alloc_seg_set_stamp(a, seg, stamp);
}

static void test_pick(void **state)
{
	struct alloc *a = alloc_new(16);
	struct compact *c = compact_new();
	const uint64_t keep[] = {6};
	unsigned v;

	fill_seg(a, 1, 100, 0);   /* sparse, old: the best */
	fill_seg(a, 2, 101, 900); /* as sparse, young */
	fill_seg(a, 3, 500, 0);   /* half full, old */
	fill_seg(a, 4, 950, 0);   /* too full for 0.75 */
	fill_seg(a, 5, 0, 0);     /* dead: nothing to move */
	fill_seg(a, 6, 50, 0);    /* kept (the log head, say) */
	/* 7..15 FREE */

	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.75, 100000, &v), 701);
	assert_int_equal(v, 3);
	/* best first: 1 (822) then 3 (344) fill 600; 2 (83) would not fit */
	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.75, 600, &v), 600);
	assert_int_equal(v, 2);
	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.75, 601, &v), 600);
	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.75, 100, &v), 100);
	assert_int_equal(v, 1);
	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.75, 99, &v), 0);
	assert_int_equal(v, 0);
	/* max_util excludes everything but the kept one ... */
	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.09, 100000, &v), 0);
	/* ... which is taken when not kept, as is the full one at 0.95 */
	assert_int_equal(compact_pick(c, a, 1000, NULL, 0, 0.09, 100000, &v), 50);
	assert_int_equal(compact_pick(c, a, 1000, NULL, 0, 0.95, 100000, &v), 1701);
	assert_int_equal(v, 5);
	/* Age counts: segment 1 made young, 3 (344) and 2 (83) beat it (9). */
	alloc_seg_set_stamp(a, 1, 990);
	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.75, 601, &v), 601);
	/* Utilisation counts: 8, as old as 3 but sparser, goes before it. */
	alloc_seg_set_stamp(a, 1, 0);
	fill_seg(a, 8, 300, 0);
	assert_int_equal(compact_pick(c, a, 1000, keep, 1, 0.75, 500, &v), 400);
	assert_int_equal(v, 2);
	compact_free(c);
	alloc_free(a);
}

/* ---- relocation over shared trees ------------------------------------- */

#define NLBA  3000
#define CHUNK 100

struct vt {
	struct tree t;
	uint64_t seed[NLBA]; /* what each block holds (0 = hole) */
};

static uint8_t bufs[CHUNK][FMT_BLOCK] __attribute__((aligned(4096)));
static uint64_t next_seed = 1;

/* Write n blocks at lbas (fresh contents) through the log, then map them. */
static void put(struct testlog *t, struct vt *v, const uint64_t *lbas, unsigned n)
{
	uint64_t addr[CHUNK];

	for (unsigned at = 0; at < n; at += CHUNK) {
		unsigned m = n - at < CHUNK ? n - at : CHUNK;
		for (unsigned i = 0; i < m; i++) {
			struct fmt_entry e = {.vol = 1, .type = FMT_E_DATA, .lba = lbas[at + i]};
			v->seed[lbas[at + i]] = next_seed;
			testlog_fill(bufs[i], next_seed++);
			assert_int_equal(log_add(t->l, &e, bufs[i], &addr[i]), 0);
		}
		assert_int_equal(log_commit(t->l), 0);
		for (unsigned i = 0; i < m; i++)
			assert_int_equal(tree_set(&v->t, t->a, lbas[at + i],
			                          fwd_name_of(alloc_fwd(t->a), addr[i])),
			                 0);
	}
}

static void put_random(struct testlog *t, struct vt *v, unsigned n, unsigned salt)
{
	uint64_t *lbas = malloc(n * sizeof(*lbas));
	for (unsigned i = 0; i < n; i++)
		lbas[i] = (i * 7919u + salt * 104729u) % NLBA;
	put(t, v, lbas, n);
	free(lbas);
}

/* The block lba of v is at now: its name resolved (these trees have no
 * node cache, so tree_lookup gives the name). */
static uint64_t where(struct testlog *t, const struct vt *v, uint64_t lba)
{
	uint64_t name = treeref_lookup(&v->t, lba), blk = 0;
	if (name)
		assert_int_equal(fwd_resolve(alloc_fwd(t->a), name, &blk), 0);
	return blk;
}

static void share(struct testlog *t, struct vt *dst, const struct vt *src)
{
	tree_share(&dst->t, &src->t, t->a);
	memcpy(dst->seed, src->seed, sizeof(dst->seed));
}

/* Every block of v reads what the model says, through the segio. */
static void expect_reads(struct testlog *t, const struct vt *v)
{
	uint8_t *got = malloc(FMT_BLOCK), *want = malloc(FMT_BLOCK);

	for (uint64_t lba = 0; lba < NLBA; lba++) {
		urcu_memb_read_lock();
		uint64_t b = where(t, v, lba);
		urcu_memb_read_unlock();
		if (!v->seed[lba]) {
			assert_int_equal(b, 0);
			continue;
		}
		assert_true(b != 0);
		assert_int_equal(segio_read_block(t->io, got, b), 0);
		testlog_fill(want, v->seed[lba]);
		if (memcmp(got, want, FMT_BLOCK))
			fail_msg("lba %llu at block %llu reads other bytes",
			         (unsigned long long)lba, (unsigned long long)b);
	}
	free(got);
	free(want);
}

/* Every lba of v but skip reads what the model says. */
static void expect_reads_but(struct testlog *t, const struct vt *v, uint64_t skip)
{
	uint8_t *got = malloc(FMT_BLOCK), *want = malloc(FMT_BLOCK);

	for (uint64_t lba = 0; lba < NLBA; lba++) {
		urcu_memb_read_lock();
		uint64_t b = where(t, v, lba);
		urcu_memb_read_unlock();
		if (lba == skip || !v->seed[lba])
			continue;
		assert_int_equal(segio_read_block(t->io, got, b), 0);
		testlog_fill(want, v->seed[lba]);
		assert_memory_equal(got, want, FMT_BLOCK);
	}
	free(got);
	free(want);
}

static void test_move_bad(void **state)
{
	struct testlog t;
	struct vt *vol = calloc(1, sizeof(*vol));
	struct tree *trees[] = {&vol->t};
	struct compact *c = compact_new();
	uint64_t lbas[NLBA];
	unsigned victims;

	urcu_memb_register_thread();
	testlog_init(&t, 32);
	vol->t.levels = tree_levels_for(NLBA);
	for (unsigned i = 0; i < NLBA; i++)
		lbas[i] = i;
	put(&t, vol, lbas, NLBA);
	/* All but every 50th block of the first 1000 die: the oldest
	 * segment is sparse, the best victim. */
	unsigned n = 0;
	for (unsigned i = 0; i < 1000; i++)
		if (i % 50)
			lbas[n++] = i;
	put(&t, vol, lbas, n);

	/* Flip a byte of live lba 100, in the oldest segment. */
	uint64_t bad_lba = 100, bad = where(&t, vol, bad_lba);
	uint64_t bad_seg = alloc_seg_of(bad);
	uint8_t *b = malloc(FMT_BLOCK);
	assert_int_equal(segio_read_block(t.io, b, bad), 0);
	b[1234] ^= 0x40;
	struct iovec iov = {b, FMT_BLOCK};
	assert_int_equal(blkdev_pwritev(t.mem, &iov, 1, bad * FMT_BLOCK), 0);

	const uint64_t keep[] = {log_head_seg(t.l), log_next_seg(t.l)};
	uint64_t want = compact_pick(c, t.a, log_lsn(t.l), keep, 2, 0.95, 4096, &victims);
	assert_true(want > 1 && victims >= 1);
	uint32_t live_before = alloc_seg_live(t.a, bad_seg);
	assert_true(live_before > 1);
	int64_t moved = compact_move(c, t.a, t.l, t.io);
	assert_int_equal(moved, (int64_t)want - 1); /* all but the bad one */
	assert_int_equal(compact_bad_blocks(c), 1);

	/* Left in place, alone in its segment, still failing its check. */
	assert_int_equal(where(&t, vol, bad_lba), bad);
	assert_true(alloc_seg_used(t.a, bad_seg));
	assert_int_equal(alloc_seg_live(t.a, bad_seg), 1);
	struct bcrc *v = bcrc_new(t.io, alloc_nsegs(t.a), 8);
	assert_int_equal(segio_read_block(t.io, b, bad), 0);
	urcu_memb_read_lock();
	assert_int_equal(bcrc_verify(v, bad, alloc_seg_stamp(t.a, bad_seg), b, false, NULL), -EIO);
	urcu_memb_read_unlock();
	/* No MOVE entry copied it; every other block reads right. */
	struct fmt_summary *s = malloc(sizeof(*s));
	for (uint64_t seg = 1; seg < alloc_nsegs(t.a); seg++) {
		uint64_t blk;
		for (uint64_t pos = seg * FMT_SEG_BLOCKS; log_seg_next(t.io, seg, pos, s) > 0;
		     pos += 1 + s->nblocks) {
			struct log_walk w = {0};
			const struct fmt_entry *e;
			while ((e = log_entry_next(s, pos, &w, &blk)))
				assert_false(e->type == FMT_E_MOVE2 && e->lba == bad);
		}
	}
	expect_reads_but(&t, vol, bad_lba);
	assert_int_equal(treeref_check(trees, 1, t.a, NULL), 0);

	/* A later pass never takes its segment while the block is live. */
	uint64_t keep2[] = {log_head_seg(t.l), log_next_seg(t.l)};
	compact_pick(c, t.a, log_lsn(t.l), keep2, 2, 1.0, 4096, &victims);
	assert_true(compact_move(c, t.a, t.l, t.io) >= 0);
	assert_int_equal(compact_bad_blocks(c), 1);
	assert_int_equal(where(&t, vol, bad_lba), bad);

	/* The damage goes away (a transient fault) and a compactor that
	 * does not remember it (a restart) takes the segment: the block left
	 * in place moves under the name its old life gave it. */
	b[1234] ^= 0x40;
	assert_int_equal(blkdev_pwritev(t.mem, &iov, 1, bad * FMT_BLOCK), 0);
	compact_free(c);
	c = compact_new();
	uint64_t keep3[] = {log_head_seg(t.l), log_next_seg(t.l)};
	assert_true(compact_pick(c, t.a, log_lsn(t.l), keep3, 2, 1.0, 4096, &victims) > 0);
	assert_true(compact_victims(c)[bad_seg]);
	assert_true(compact_move(c, t.a, t.l, t.io) > 0);
	assert_true(where(&t, vol, bad_lba) != bad);
	assert_int_equal(alloc_seg_live(t.a, bad_seg), 0);
	expect_reads(&t, vol);
	assert_int_equal(treeref_check(trees, 1, t.a, NULL), 0);

	tree_drop(trees[0], t.a);
	urcu_memb_barrier();
	bcrc_free(v);
	free(s);
	free(b);
	free(vol);
	compact_free(c);
	testlog_fini(&t);
	urcu_memb_unregister_thread();
}

static void test_move_chain(void **state)
{
	struct testlog t;
	struct vt *vol = calloc(1, sizeof(*vol)), *s1 = calloc(1, sizeof(*s1)),
	          *c1 = calloc(1, sizeof(*c1)), *s2 = calloc(1, sizeof(*s2));
	struct vt *all[] = {vol, s1, c1, s2};
	struct tree *trees[] = {&vol->t, &s1->t, &c1->t, &s2->t};
	struct compact *c = compact_new();
	unsigned victims;

	urcu_memb_register_thread();
	testlog_init(&t, 32);
	vol->t.levels = s1->t.levels = c1->t.levels = s2->t.levels = tree_levels_for(NLBA);
	put_random(&t, vol, 2500, 1);
	share(&t, s1, vol); /* snapshot */
	put_random(&t, vol, 1200, 2);
	put_random(&t, vol, 1000, 2); /* most of the last 1200 die */
	share(&t, c1, s1);            /* clone of the snapshot */
	put_random(&t, c1, 700, 3);
	share(&t, s2, c1); /* snapshot of the clone */
	put_random(&t, c1, 900, 4);
	put_random(&t, c1, 800, 4);
	put_random(&t, vol, 600, 5);
	assert_int_equal(treeref_check(trees, 4, t.a, NULL), 0);

	/* The names every tree maps now, and where their blocks are. */
	uint64_t nb = alloc_nblocks(t.a);
	uint64_t(*before)[NLBA] = malloc(sizeof(uint64_t[4][NLBA]));
	uint64_t(*names)[NLBA] = malloc(sizeof(uint64_t[4][NLBA]));
	uint32_t *was_live = calloc(alloc_nsegs(t.a), sizeof(*was_live));
	for (unsigned i = 0; i < 4; i++)
		for (uint64_t lba = 0; lba < NLBA; lba++) {
			before[i][lba] = where(&t, all[i], lba);
			names[i][lba] = treeref_lookup(trees[i], lba);
		}
	for (uint64_t s = 0; s < alloc_nsegs(t.a); s++)
		was_live[s] = alloc_seg_live(t.a, s);
	uint64_t dead_before = alloc_dead_segs(t.a);

	const uint64_t keep[] = {log_head_seg(t.l), log_next_seg(t.l)};
	uint64_t want = compact_pick(c, t.a, log_lsn(t.l), keep, 2, 0.95, 4096, &victims);
	assert_true(want > 0);
	assert_true(victims >= 2);
	int64_t moved = compact_move(c, t.a, t.l, t.io);
	assert_int_equal(moved, (int64_t)want);

	/* Same bytes everywhere; exact counts. */
	for (unsigned i = 0; i < 4; i++)
		expect_reads(&t, all[i]);
	assert_int_equal(treeref_check(trees, 4, t.a, NULL), 0);

	/* The victims: segments that had live blocks and have none now;
	 * they held exactly what was moved, and none was kept. */
	uint64_t freed_live = 0;
	unsigned nvict = 0;
	uint8_t *victim = calloc(alloc_nsegs(t.a), 1);
	for (uint64_t s = 1; s < alloc_nsegs(t.a); s++)
		if (was_live[s] && !alloc_seg_live(t.a, s)) {
			victim[s] = 1;
			freed_live += was_live[s];
			nvict++;
			assert_true(s != keep[0] && s != keep[1]);
		}
	assert_int_equal(nvict, victims);
	assert_int_equal(freed_live, want);

	/* No slot changed; each block that moved left a victim for a MOVE2
	 * copy naming its birth; a block shared by several trees was copied
	 * once. */
	uint8_t *etype = calloc(nb, 1);
	uint64_t *elba = calloc(nb, sizeof(*elba));
	uint32_t *ecrc = calloc(nb, sizeof(*ecrc));
	struct fmt_summary *s = malloc(sizeof(*s));
	for (uint64_t seg = 1; seg < alloc_nsegs(t.a); seg++) {
		uint64_t pos = seg * FMT_SEG_BLOCKS, blk;
		while (log_seg_next(t.io, seg, pos, s) > 0) {
			struct log_walk w = {0};
			const struct fmt_entry *e;
			while ((e = log_entry_next(s, pos, &w, &blk)))
				if (blk) {
					etype[blk] = (uint8_t)e->type;
					elba[blk] = e->lba;
					ecrc[blk] = e->crc;
				}
			pos += 1 + s->nblocks;
		}
	}
	uint64_t changed = 0;
	uint8_t *buf = malloc(FMT_BLOCK), *counted = calloc(nb, 1);
	for (unsigned i = 0; i < 4; i++)
		for (uint64_t lba = 0; lba < NLBA; lba++) {
			uint64_t old = before[i][lba], now = where(&t, all[i], lba);
			assert_int_equal(treeref_lookup(trees[i], lba), names[i][lba]);
			if (old == now) {
				assert_true(!old || !victim[alloc_seg_of(old)]);
				continue;
			}
			assert_true(victim[alloc_seg_of(old)]);
			assert_int_equal(etype[now], FMT_E_MOVE2);
			assert_int_equal(elba[now], fwd_addr(names[i][lba]));
			assert_int_equal(segio_read_block(t.io, buf, now), 0);
			assert_int_equal(ecrc[now], crc32c(0, buf, FMT_BLOCK));
			if (!counted[now]) {
				changed++;
				counted[now] = 1;
			}
		}
	assert_int_equal(changed, (uint64_t)moved);

	/* Only the victims are dead, and release frees exactly them. */
	assert_int_equal(alloc_dead_segs(t.a), dead_before + victims);
	assert_int_equal(alloc_release_dead(t.a, keep[0], keep[1], NULL, NULL),
	                 dead_before + victims);
	for (uint64_t seg = 1; seg < alloc_nsegs(t.a); seg++)
		if (victim[seg])
			assert_false(alloc_seg_used(t.a, seg));
	/* Nothing left to pick from a fresh pass with nothing chosen. */
	assert_int_equal(compact_move(c, t.a, t.l, t.io), 0);

	for (unsigned i = 0; i < 4; i++)
		tree_drop(trees[i], t.a);
	urcu_memb_barrier();
	assert_int_equal(alloc_live_blocks(t.a), 0);
	free(buf);
	free(counted);
	free(s);
	free(etype);
	free(elba);
	free(ecrc);
	free(victim);
	free(was_live);
	free(before);
	free(names);
	for (unsigned i = 0; i < 4; i++)
		free(all[i]);
	compact_free(c);
	testlog_fini(&t);
	urcu_memb_unregister_thread();
}

static bool is_live(void *a, uint64_t blk)
{
	return alloc_blk_refs(a, blk) > 0;
}

/* The entry that carried block blk (its type, lba and vol), from the
 * summaries of blk's segment. */
static struct fmt_entry entry_of(struct testlog *t, uint64_t blk)
{
	struct fmt_summary *s = malloc(sizeof(*s));
	struct fmt_entry found = {0};
	uint64_t seg = alloc_seg_of(blk), b;
	for (uint64_t pos = seg * FMT_SEG_BLOCKS; log_seg_next(t->io, seg, pos, s) > 0;
	     pos += 1 + s->nblocks) {
		struct log_walk w = {0};
		const struct fmt_entry *e;
		while ((e = log_entry_next(s, pos, &w, &b)))
			if (b == blk)
				found = *e;
	}
	free(s);
	return found;
}

/* A block moved twice keeps its name: the second pass finds its birth in
 * the MOVE2 entry of its first copy, the forwarding entry is updated (not
 * added), and every tree still reads the same bytes. */
static void test_move_twice(void **state)
{
	struct testlog t;
	struct vt *vol = calloc(1, sizeof(*vol)), *snap = calloc(1, sizeof(*snap)),
	          *fill = calloc(1, sizeof(*fill));
	struct tree *trees[] = {&vol->t, &snap->t, &fill->t};
	struct compact *c = compact_new();
	struct fwd *f;
	uint64_t lbas[NLBA];
	unsigned victims;

	urcu_memb_register_thread();
	testlog_init(&t, 32);
	f = alloc_fwd(t.a);
	vol->t.levels = snap->t.levels = fill->t.levels = tree_levels_for(NLBA);
	for (unsigned i = 0; i < NLBA; i++)
		lbas[i] = i;
	/* The oldest segment: 40 blocks of vol (and its snapshot) among
	 * filler that dies. */
	put(&t, vol, lbas, 40);
	put(&t, fill, lbas, 2000);
	put(&t, fill, lbas, 2000);
	share(&t, snap, vol);

	/* Pass 1 moves them, lba 0's among them, into the head. */
	uint64_t name = treeref_lookup(&snap->t, 0), birth = where(&t, snap, 0);
	uint64_t keep[] = {log_head_seg(t.l), log_next_seg(t.l)};
	assert_true(compact_pick(c, t.a, log_lsn(t.l), keep, 2, 0.95, 64, &victims) > 0);
	assert_true(compact_victims(c)[alloc_seg_of(birth)]);
	assert_true(compact_move(c, t.a, t.l, t.io) > 0);
	uint64_t copy1 = where(&t, snap, 0);
	assert_true(copy1 != birth);
	assert_int_equal(where(&t, vol, 0), copy1); /* one copy for both */
	assert_int_equal(treeref_lookup(&snap->t, 0), name);
	struct fwd_ent *ents;
	size_t entries, now;
	assert_int_equal(fwd_seg_get(f, alloc_seg_of(birth), &ents, &entries), 0);
	free(ents);
	assert_true(entries >= 40);

	/* The filler fills the copies' segment and dies again. */
	put(&t, fill, lbas, NLBA);
	put(&t, fill, lbas, NLBA);

	/* Pass 2 takes the copies' segment: lba 0's block moves again. */
	uint64_t keep2[] = {log_head_seg(t.l), log_next_seg(t.l)};
	assert_true(compact_pick(c, t.a, log_lsn(t.l), keep2, 2, 0.95, 4096, &victims) > 0);
	assert_true(compact_victims(c)[alloc_seg_of(copy1)]);
	assert_true(compact_move(c, t.a, t.l, t.io) > 0);
	uint64_t copy2 = where(&t, snap, 0);
	assert_true(copy2 != copy1 && copy2 != birth);
	assert_int_equal(treeref_lookup(&snap->t, 0), name);
	struct fmt_entry e = entry_of(&t, copy2);
	assert_int_equal(e.type, FMT_E_MOVE2);
	assert_int_equal(e.lba, birth); /* its birth, not its first copy */
	assert_int_equal(e.vol, fwd_tag(name));
	for (unsigned i = 0; i < 2; i++)
		expect_reads(&t, i ? snap : vol);
	assert_int_equal(treeref_check(trees, 3, t.a, NULL), 0);
	/* the first pass's entries were updated, none added for them */
	assert_int_equal(fwd_seg_get(f, alloc_seg_of(birth), &ents, &now), 0);
	free(ents);
	assert_int_equal(now, entries);

	for (unsigned i = 0; i < 3; i++)
		tree_drop(trees[i], t.a);
	assert_int_equal(fwd_prune(f, is_live, t.a), 0);
	assert_int_equal(fwd_entries(f), 0); /* every block died: every entry goes */
	urcu_memb_barrier();
	assert_int_equal(alloc_live_blocks(t.a), 0);
	free(vol);
	free(snap);
	free(fill);
	compact_free(c);
	testlog_fini(&t);
	urcu_memb_unregister_thread();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pick),
	    cmocka_unit_test(test_move_chain),
	    cmocka_unit_test(test_move_twice),
	    cmocka_unit_test(test_move_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
