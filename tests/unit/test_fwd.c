/* test_fwd.c — block names and the forwarding map on their own, and with
 * the allocator's counts: a name resolves to its birth address while its
 * segment's life is the tag, through F after the compactor retired it;
 * a block moved twice keeps one entry; staging is invisible until
 * published and forgotten when unstaged; lives skip tags still forwarded;
 * pruning drops exactly the entries whose copy lost its last reference;
 * the persistence view (fwd_seg_get / fwd_seg_install) round-trips and
 * refuses what a damaged F block could say; and readers resolving in a
 * loop while the writer moves blocks never see a wrong address.
 */
#undef NDEBUG
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <urcu/urcu-memb.h>

#include "alloc.h"
#include "fwd.h"

#define NSEGS     64
#define B(seg, i) ((uint64_t)(seg)*FMT_SEG_BLOCKS + (i))

static uint64_t res(const struct fwd *f, uint64_t name)
{
	uint64_t blk = 0;
	urcu_memb_read_lock();
	int err = fwd_resolve(f, name, &blk);
	urcu_memb_read_unlock();
	return err ? 0 : blk;
}

static void mark_victim(uint8_t *victim, uint64_t seg)
{
	memset(victim, 0, NSEGS);
	victim[seg] = 1;
}

static void test_names(void **state)
{
	struct fwd *f = fwd_new(NSEGS);
	uint8_t victim[NSEGS];
	assert_non_null(f);
	uint64_t n1 = fwd_name_of(f, B(3, 7)), n2 = fwd_name_of(f, B(3, 9));
	assert_int_equal(n1, B(3, 7)); /* life 0: the plain address */
	assert_int_equal(res(f, n1), B(3, 7));
	assert_int_equal(res(f, fwd_make(B(3, 7), 5)), 0); /* no such life */
	assert_int_equal(res(f, B(0, 4)), 0);              /* segment 0 holds no block */
	assert_int_equal(res(f, B(NSEGS, 0)), 0);

	/* the compactor moves both out of segment 3 */
	assert_int_equal(fwd_stage(f, n1, B(5, 0)), 0);
	assert_int_equal(fwd_stage(f, n2, B(5, 1)), 0);
	assert_int_equal(fwd_stage(f, n2, B(5, 2)), -EEXIST);
	assert_int_equal(res(f, n1), B(3, 7)); /* staged: not visible */
	mark_victim(victim, 3);
	assert_int_equal(fwd_publish(f, victim), 0);
	assert_int_equal(fwd_life(f, 3), 1);
	assert_int_equal(res(f, n1), B(5, 0));
	assert_int_equal(res(f, n2), B(5, 1));
	assert_int_equal(res(f, fwd_make(B(3, 8), 0)), 0); /* not live then: not forwarded */
	assert_int_equal(fwd_name_of(f, B(3, 7)), fwd_make(B(3, 7), 1));
	assert_int_equal(fwd_entries(f), 2);
	assert_int_equal(fwd_segments(f), 1);

	/* segment 5 is retired in its turn: n1 moves again, keeping its name */
	assert_int_equal(fwd_stage(f, n1, B(9, 4)), 0);
	mark_victim(victim, 5);
	assert_int_equal(fwd_publish(f, victim), 0);
	assert_int_equal(res(f, n1), B(9, 4));
	assert_int_equal(res(f, n2), B(5, 1)); /* not moved: where it was */
	assert_int_equal(fwd_entries(f), 2);   /* updated, not added */
	assert_true(fwd_dirty_next(f, 0) == 3);
	assert_true(fwd_dirty_next(f, 4) == 5);
	fwd_clean(f);
	assert_true(fwd_dirty_next(f, 0) == NSEGS);

	/* a birth neither current nor forwarded is refused; unstage forgets */
	assert_int_equal(fwd_stage(f, fwd_make(B(3, 7), 7), B(9, 5)), -EILSEQ);
	assert_int_equal(fwd_stage(f, fwd_name_of(f, B(7, 1)), B(9, 5)), 0);
	fwd_unstage(f);
	assert_int_equal(res(f, B(7, 1)), B(7, 1));
	/* native births only from victims */
	assert_int_equal(fwd_stage(f, fwd_name_of(f, B(7, 1)), B(9, 5)), 0);
	mark_victim(victim, 8);
	assert_int_equal(fwd_publish(f, victim), -EINVAL);
	assert_int_equal(fwd_life(f, 7), 0);
	assert_int_equal(res(f, B(7, 1)), B(7, 1));
	fwd_free(f);
}

static void test_life_skips_used_tags(void **state)
{
	struct fwd *f = fwd_new(NSEGS);
	uint8_t victim[NSEGS];
	struct fwd_ent e[2] = {{.blk = B(6, 1), .tag = 1, .idx = 3},
	                       {.blk = B(6, 2), .tag = 2, .idx = 0}};
	assert_int_equal(fwd_seg_install(f, 4, 0, e, 2), 0);
	mark_victim(victim, 4);
	assert_int_equal(fwd_publish(f, victim), 0);
	assert_int_equal(fwd_life(f, 4), 3); /* 1 and 2 are forwarded lives */
	assert_int_equal(res(f, fwd_make(B(4, 3), 1)), B(6, 1));
	assert_int_equal(res(f, fwd_make(B(4, 0), 2)), B(6, 2));
	/* wrap-around */
	assert_int_equal(fwd_seg_install(f, 4, FWD_TAG_MASK, e, 2), 0);
	assert_int_equal(fwd_publish(f, victim), 0);
	assert_int_equal(fwd_life(f, 4), 0);
	fwd_free(f);
}

static void test_install_refuses(void **state)
{
	struct fwd *f = fwd_new(NSEGS);
	struct fwd_ent ok[3] = {{.blk = B(6, 1), .tag = 1, .idx = 3},
	                        {.blk = B(6, 9), .tag = 1, .idx = 8},
	                        {.blk = B(7, 2), .tag = 4, .idx = 0}};
	struct fwd_ent e[3];

	memcpy(e, ok, sizeof(e));
	e[1].idx = 3; /* repeated index */
	assert_int_equal(fwd_seg_install(f, 4, 0, e, 3), -EILSEQ);
	memcpy(e, ok, sizeof(e));
	e[2].tag = 0; /* tags out of order */
	assert_int_equal(fwd_seg_install(f, 4, 0, e, 3), -EILSEQ);
	assert_int_equal(fwd_seg_install(f, 4, 4, ok, 3), -EILSEQ); /* forwards its own life */
	memcpy(e, ok, sizeof(e));
	e[0].blk = B(0, 5); /* into segment 0 */
	assert_int_equal(fwd_seg_install(f, 4, 0, e, 3), -EILSEQ);
	memcpy(e, ok, sizeof(e));
	e[0].blk = B(NSEGS, 0); /* past the pool */
	assert_int_equal(fwd_seg_install(f, 4, 0, e, 3), -EILSEQ);
	memcpy(e, ok, sizeof(e));
	e[0].idx = FMT_SEG_BLOCKS;
	assert_int_equal(fwd_seg_install(f, 4, 0, e, 3), -EILSEQ);
	assert_int_equal(fwd_seg_install(f, 4, FWD_TAG_MASK + 1, ok, 3), -EILSEQ);
	assert_int_equal(fwd_entries(f), 0); /* nothing changed */

	assert_int_equal(fwd_seg_install(f, 4, 2, ok, 3), 0);
	struct fwd_ent *got;
	size_t n;
	assert_int_equal(fwd_seg_get(f, 4, &got, &n), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(got[i].blk, ok[i].blk);
		assert_int_equal(got[i].tag, ok[i].tag);
		assert_int_equal(got[i].idx, ok[i].idx);
	}
	free(got);
	assert_int_equal(fwd_life(f, 4), 2);
	assert_true(fwd_dirty_next(f, 0) == NSEGS); /* installed = clean */
	assert_int_equal(res(f, fwd_make(B(4, 8), 1)), B(6, 9));
	assert_int_equal(res(f, fwd_make(B(4, 0), 4)), B(7, 2));
	assert_int_equal(res(f, fwd_make(B(4, 0), 1)), 0);
	fwd_free(f);
}

/* Names through the allocator: counts follow moves, and a forwarded
 * block whose last reference goes is pruned at the next fwd_prune. */
static bool is_live(void *arg, uint64_t blk)
{
	return alloc_blk_refs(arg, blk) > 0;
}

static void test_counts_and_prune(void **state)
{
	struct alloc *a = alloc_new(NSEGS);
	struct fwd *f = alloc_fwd(a);
	uint8_t victim[NSEGS];
	uint64_t x = fwd_name_of(f, B(2, 0)), y = fwd_name_of(f, B(2, 1));

	alloc_ref(a, x);
	alloc_ref(a, x); /* shared by two trees */
	alloc_ref(a, y);
	assert_int_equal(fwd_stage(f, x, B(3, 0)), 0);
	assert_int_equal(fwd_stage(f, y, B(3, 1)), 0);
	mark_victim(victim, 2);
	assert_int_equal(fwd_publish(f, victim), 0);
	assert_int_equal(alloc_move(a, B(2, 0), B(3, 0)), 0);
	assert_int_equal(alloc_move(a, B(2, 1), B(3, 1)), 0);
	assert_int_equal(alloc_seg_counted(a, 2), 0); /* the victim is dead */
	assert_int_equal(alloc_block_refs(a, x), 2);
	assert_int_equal(alloc_blk_refs(a, B(3, 0)), 2);

	alloc_unref(a, y); /* y's copy dies: its entry goes at the prune */
	alloc_unref(a, x); /* x keeps one reference */
	assert_int_equal(alloc_error(a), 0);
	assert_int_equal(fwd_entries(f), 2);
	assert_int_equal(fwd_prune(f, is_live, a), 0);
	assert_int_equal(fwd_entries(f), 1);
	assert_int_equal(res(f, x), B(3, 0));
	assert_int_equal(res(f, y), 0);
	alloc_unref(a, x);
	assert_int_equal(fwd_prune(f, is_live, a), 0);
	assert_int_equal(fwd_entries(f), 0);
	assert_int_equal(fwd_segments(f), 0);

	/* a name that resolves nowhere fails the allocator */
	alloc_unref(a, fwd_make(B(2, 5), 0));
	assert_int_equal(alloc_error(a), -EILSEQ);
	alloc_free(a);
}

/* Readers resolve a name in a loop while the writer moves its block from
 * segment to segment: every answer is one of the copies made so far. */
struct race {
	struct fwd *f;
	uint64_t name;
	volatile int stop;
	uint64_t bad, reads;
};

static void *reader(void *arg)
{
	struct race *r = arg;
	urcu_memb_register_thread();
	while (!r->stop) {
		uint64_t blk = 0;
		urcu_memb_read_lock();
		int err = fwd_resolve(r->f, r->name, &blk);
		urcu_memb_read_unlock();
		/* copies go to block 0 of segments 10, 11, ... in order */
		if (err || !(blk == B(2, 0) || (blk % FMT_SEG_BLOCKS == 0 && blk >= B(10, 0))))
			r->bad++;
		r->reads++;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void test_readers_race(void **state)
{
	struct race r = {.f = fwd_new(NSEGS)};
	uint8_t victim[NSEGS];
	pthread_t th;
	r.name = fwd_name_of(r.f, B(2, 0));
	assert_int_equal(pthread_create(&th, NULL, reader, &r), 0);
	for (int round = 0; round < 2000; round++) {
		uint64_t from = round ? 10 + (uint64_t)(round - 1) % 40 : 2, to = 10 + round % 40;
		/* unused filler blocks in the destination keep tables changing */
		assert_int_equal(fwd_stage(r.f, r.name, B(to, 0)), 0);
		mark_victim(victim, from);
		assert_int_equal(fwd_publish(r.f, victim), 0);
		if (round % 100 == 0)
			urcu_memb_barrier();
	}
	r.stop = 1;
	pthread_join(th, NULL);
	assert_true(r.reads > 0);
	assert_int_equal(r.bad, 0);
	fwd_free(r.f);
}

/* Tables on disk: a loader serving what a "disk" holds per segment. */
struct disk {
	struct fwd_ent e[NSEGS][4];
	size_t n[NSEGS];
	int fail; /* the loader's answer when nonzero */
	unsigned loads;
};

static int load(void *arg, uint64_t seg, struct fwd_ent **e, size_t *n)
{
	struct disk *d = arg;
	__atomic_fetch_add(&d->loads, 1, __ATOMIC_RELAXED);
	if (d->fail)
		return d->fail;
	*n = d->n[seg];
	*e = malloc(sizeof(**e) * (*n ? *n : 1));
	memcpy(*e, d->e[seg], sizeof(**e) * *n);
	return 0;
}

static void test_away(void **state)
{
	struct fwd *f = fwd_new(NSEGS);
	struct disk d = {.n = {[4] = 2, [5] = 1}};
	struct fwd_stats st;
	uint8_t victim[NSEGS];
	d.e[4][0] = (struct fwd_ent){.blk = B(6, 1), .tag = 1, .idx = 3};
	d.e[4][1] = (struct fwd_ent){.blk = B(6, 2), .tag = 1, .idx = 9};
	d.e[5][0] = (struct fwd_ent){.blk = B(7, 0), .tag = 0, .idx = 0};
	fwd_set_loader(f, load, &d);
	fwd_seg_away(f, 4, 2);
	fwd_seg_away(f, 5, 1);
	assert_int_equal(fwd_life(f, 4), 2);
	assert_int_equal(fwd_entries(f), 0);                     /* nothing read at open */
	assert_int_equal(res(f, fwd_make(B(4, 5), 2)), B(4, 5)); /* current: no load */
	assert_int_equal(d.loads, 0);

	/* nowait never loads; the blocking form loads once */
	uint64_t blk;
	urcu_memb_read_lock();
	assert_int_equal(fwd_resolve_nowait(f, fwd_make(B(4, 3), 1), &blk), -EAGAIN);
	urcu_memb_read_unlock();
	assert_int_equal(res(f, fwd_make(B(4, 3), 1)), B(6, 1));
	assert_int_equal(res(f, fwd_make(B(4, 9), 1)), B(6, 2));
	assert_int_equal(res(f, fwd_make(B(4, 4), 1)), 0);
	assert_int_equal(d.loads, 1);
	urcu_memb_read_lock();
	assert_int_equal(fwd_resolve_nowait(f, fwd_make(B(4, 3), 1), &blk), 0);
	urcu_memb_read_unlock();
	assert_int_equal(blk, B(6, 1));

	/* trim drops clean tables only, CLOCK order: segment 4 was used */
	assert_int_equal(res(f, fwd_make(B(5, 0), 0)), B(7, 0));
	fwd_stats(f, &st);
	assert_int_equal(st.segments, 2);
	assert_true(st.bytes > 0);
	fwd_mark_dirty(f, 5);
	assert_int_equal(fwd_trim(f, 0, 4 * NSEGS), 1); /* 4: second chance, then dropped */
	fwd_stats(f, &st);
	assert_int_equal(st.segments, 1); /* dirty 5 stays */
	assert_int_equal(st.evictions, 1);
	fwd_clean(f);
	assert_int_equal(fwd_trim(f, 0, 4 * NSEGS), 1);
	fwd_stats(f, &st);
	assert_int_equal(st.segments, 0);
	assert_int_equal(st.bytes, 0);
	/* and read back on demand */
	assert_int_equal(res(f, fwd_make(B(4, 9), 1)), B(6, 2));
	assert_int_equal(d.loads, 3);

	/* the compactor retiring an away segment loads it first (its next
	 * life skips its tables' tags) */
	fwd_trim(f, 0, 4 * NSEGS);
	fwd_trim(f, 0, 4 * NSEGS);
	mark_victim(victim, 5);
	assert_int_equal(fwd_stage(f, fwd_make(B(5, 4), 1), B(8, 0)), 0);
	assert_int_equal(fwd_publish(f, victim), 0);
	assert_int_equal(fwd_life(f, 5), 2); /* 0 is forwarded, 1 retired now */
	assert_int_equal(res(f, fwd_make(B(5, 0), 0)), B(7, 0));
	assert_int_equal(res(f, fwd_make(B(5, 4), 1)), B(8, 0));

	/* a load that fails: names through it fail, nothing is guessed */
	fwd_clean(f);
	fwd_trim(f, 0, 4 * NSEGS);
	fwd_trim(f, 0, 4 * NSEGS);
	d.fail = -EIO;
	urcu_memb_read_lock();
	assert_int_equal(fwd_resolve(f, fwd_make(B(4, 3), 1), &blk), -EIO);
	urcu_memb_read_unlock();
	d.fail = 0;
	assert_int_equal(res(f, fwd_make(B(4, 3), 1)), B(6, 1));
	fwd_free(f);
}

/* Readers needing one away segment at once load it once. */
struct loaders {
	struct fwd *f;
	unsigned bad;
};

static void *load_reader(void *arg)
{
	struct loaders *l = arg;
	urcu_memb_register_thread();
	for (int i = 0; i < 200; i++)
		if (res(l->f, fwd_make(B(4, 3), 1)) != B(6, 1))
			__atomic_fetch_add(&l->bad, 1, __ATOMIC_RELAXED);
	urcu_memb_unregister_thread();
	return NULL;
}

static void test_away_race(void **state)
{
	struct disk d = {.n = {[4] = 1}};
	d.e[4][0] = (struct fwd_ent){.blk = B(6, 1), .tag = 1, .idx = 3};
	for (int round = 0; round < 50; round++) {
		struct loaders l = {.f = fwd_new(NSEGS)};
		pthread_t th[3];
		fwd_set_loader(l.f, load, &d);
		fwd_seg_away(l.f, 4, 2);
		d.loads = 0;
		for (int k = 0; k < 3; k++)
			assert_int_equal(pthread_create(&th[k], NULL, load_reader, &l), 0);
		/* the writer drops and the readers load, over and over */
		for (int i = 0; i < 50; i++)
			fwd_trim(l.f, 0, 8 * NSEGS);
		for (int k = 0; k < 3; k++)
			pthread_join(th[k], NULL);
		assert_int_equal(l.bad, 0);
		assert_true(d.loads >= 1);
		urcu_memb_barrier();
		fwd_free(l.f);
	}
}

int main(void)
{
	urcu_memb_register_thread();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),           cmocka_unit_test(test_life_skips_used_tags),
	    cmocka_unit_test(test_install_refuses), cmocka_unit_test(test_counts_and_prune),
	    cmocka_unit_test(test_readers_race),    cmocka_unit_test(test_away),
	    cmocka_unit_test(test_away_race),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	urcu_memb_barrier();
	urcu_memb_unregister_thread();
	return rc;
}
