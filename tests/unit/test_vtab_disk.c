/* test_vtab_disk.c — the volume table on disk (format version 4,
 * docs/FORMAT.md "Volume table blocks"): more records than the checkpoint
 * record of version 3 could hold survive a reopen, listed in id order; a
 * deleted volume's slot is reused; a checkpoint rewrites only the table
 * blocks whose records changed; compaction moves table blocks out of its
 * victims; and a power cut at each device write or flush of a round of
 * deletes, creates, a rename and a resize leaves a pool that opens, checks
 * clean and holds every acknowledged change.
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "faultdev.h"
#include "store_int.h"
#include "testpool.h"

#define MiB (1ull << 20)

/* More than the ~5,000 records a version 3 checkpoint record held. */
#define MANY 6000u

static uint64_t size_of(unsigned i)
{
	return MiB + (uint64_t)(i % 7) * FMT_BLOCK;
}

static void name_of(unsigned i, char *out, size_t len)
{
	snprintf(out, len, "v%05u", i);
}

static void create(struct store *st, unsigned i)
{
	char name[16];
	name_of(i, name, sizeof(name));
	assert_int_equal(store_vol_create(st, name, size_of(i)), 0);
}

/* Every volume of st; *n how many (free the array). */
static struct store_vol_info *list_all(struct store *st, size_t *n)
{
	struct store_vol_info *info;
	assert_int_equal(store_list_names(st, &info, n), 0);
	return info;
}

/* st holds exactly the volumes i in [0, n) with present[i], in id order,
 * each with its name and size. */
static void expect_set(struct store *st, const bool *present, unsigned n)
{
	size_t got;
	struct store_vol_info *info = list_all(st, &got);
	unsigned want = 0, k = 0;
	char name[16];

	for (unsigned i = 0; i < n; i++)
		want += present[i];
	assert_int_equal(got, want);
	for (unsigned i = 0; i < n; i++) {
		if (!present[i])
			continue;
		name_of(i, name, sizeof(name));
		assert_string_equal(info[k].name, name);
		assert_int_equal(info[k].size, size_of(i));
		if (k)
			assert_true(info[k].id > info[k - 1].id);
		k++;
	}
	free(info);
}

static bool exists(struct store *st, const char *name)
{
	struct vol *v;
	if (store_vol_open(st, name, &v))
		return false;
	store_vol_close(v);
	return true;
}

static uint64_t nvblk(struct store *st)
{
	return st->ck.nvblk;
}

static void test_many(void **state)
{
	struct faultdev *p = faultdev_new(256 * MiB);
	struct store *st = testpool_new(&p->dev, NULL);
	bool present[MANY + 400];

	for (unsigned i = 0; i < MANY; i++) {
		create(st, i);
		present[i] = true;
	}
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(nvblk(st), (MANY + FMT_VTAB_ENTRIES - 1) / FMT_VTAB_ENTRIES);
	store_close(st);

	st = testpool_open(&p->dev, NULL);
	expect_set(st, present, MANY);
	assert_int_equal(store_check(st), 0);

	/* Delete every other one of the first 800: their slots are reused
	 * by the next 400, so the table does not grow. */
	uint64_t blocks = nvblk(st);
	char name[16];
	for (unsigned i = 0; i < 800; i += 2) {
		name_of(i, name, sizeof(name));
		assert_int_equal(store_vol_delete(st, name), 0);
		present[i] = false;
	}
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(nvblk(st), blocks);
	for (unsigned i = MANY; i < MANY + 400; i++) {
		create(st, i);
		present[i] = true;
	}
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(nvblk(st), blocks);
	expect_set(st, present, MANY + 400);
	store_close(st);

	st = testpool_open(&p->dev, NULL);
	expect_set(st, present, MANY + 400);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	faultdev_free(p);
}

/* Which table blocks moved between two copies of the addresses. */
static unsigned moved(const uint64_t *was, const uint64_t *now, uint64_t n)
{
	unsigned m = 0;
	for (uint64_t b = 0; b < n; b++)
		m += was[b] != now[b];
	return m;
}

/* A 64 MiB pool with volumes 0 .. n-1, checkpointed. */
static struct store *pool_with(struct faultdev **p, unsigned n)
{
	*p = faultdev_new(64 * MiB);
	struct store *st = testpool_new(&(*p)->dev, NULL);
	for (unsigned i = 0; i < n; i++)
		create(st, i);
	assert_int_equal(store_checkpoint(st), 0);
	return st;
}

static void test_rewrite_changed_only(void **state)
{
	struct faultdev *p;
	const unsigned n = 40 * FMT_VTAB_ENTRIES;
	struct store *st = pool_with(&p, n);
	uint64_t nb = nvblk(st);
	uint64_t *was = malloc(nb * sizeof(*was));
	memcpy(was, st->ck.vblk, nb * sizeof(*was));

	/* A write changes one root: one block (the one of its slot). */
	struct vol *v;
	char name[16], buf[FMT_BLOCK];
	unsigned target = 17 * FMT_VTAB_ENTRIES + 3;
	name_of(target, name, sizeof(name));
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(store_vol_open(st, name, &v), 0);
	assert_int_equal(store_write(v, buf, 0, sizeof(buf), STORE_FUA), 0);
	store_vol_close(v);
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(nvblk(st), nb);
	assert_int_equal(moved(was, st->ck.vblk, nb), 1);
	assert_true(was[17] != st->ck.vblk[17]);

	/* Nothing changed: nothing rewritten. */
	memcpy(was, st->ck.vblk, nb * sizeof(*was));
	assert_int_equal(store_snap_create(st, "v00000@s"), 0);
	assert_int_equal(store_snap_delete(st, "v00000@s"), 0);
	assert_int_equal(store_checkpoint(st), 0);
	/* the snapshot came and went: its slot's block says the same */
	assert_int_equal(moved(was, st->ck.vblk, nb), 0);

	/* A rename changes one record. */
	name_of(5 * FMT_VTAB_ENTRIES, name, sizeof(name));
	assert_int_equal(store_vol_rename(st, name, "renamed"), 0);
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(moved(was, st->ck.vblk, nb), 1);
	assert_true(was[5] != st->ck.vblk[5]);

	/* Deleting a whole block's volumes releases it: listed as 0. */
	for (unsigned i = 0; i < FMT_VTAB_ENTRIES; i++) {
		name_of(39 * FMT_VTAB_ENTRIES + i, name, sizeof(name));
		assert_int_equal(store_vol_delete(st, name), 0);
	}
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(nvblk(st), nb - 1);
	for (unsigned i = 0; i < FMT_VTAB_ENTRIES; i++) {
		name_of(10 * FMT_VTAB_ENTRIES + i, name, sizeof(name));
		assert_int_equal(store_vol_delete(st, name), 0);
	}
	assert_int_equal(store_checkpoint(st), 0);
	assert_int_equal(st->ck.vblk[10], 0);
	store_close(st);

	st = testpool_open(&p->dev, NULL);
	size_t got;
	free(list_all(st, &got));
	assert_int_equal(got, n - 2 * FMT_VTAB_ENTRIES);
	assert_int_equal(store_vol_open(st, "renamed", &v), 0);
	store_vol_close(v);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	free(was);
	faultdev_free(p);
}

/* Table blocks in a segment the compactor empties move with the next
 * checkpoint (the segment can then be freed), and the pool reopens. */
static void test_compaction_moves_table(void **state)
{
	struct faultdev *p;
	const unsigned n = 8 * FMT_VTAB_ENTRIES;
	struct store *st = pool_with(&p, n);
	uint64_t was[8];
	memcpy(was, st->ck.vblk, sizeof(was));
	/* The table went into the segment of the creates' op blocks, dead
	 * now.  Move the log on with a new volume's data and checkpoint: that segment is mostly
	 * dead and behind the head, the compactor takes it. */
	struct vol *v;
	char *buf = malloc(8 * MiB);
	memset(buf, 'd', 8 * MiB);
	assert_int_equal(store_vol_create(st, "data", 8 * MiB), 0);
	assert_int_equal(store_vol_open(st, "data", &v), 0);
	assert_int_equal(store_write(v, buf, 0, 8 * MiB, STORE_FUA), 0);
	store_vol_close(v);
	free(buf);
	assert_int_equal(store_checkpoint(st), 0);
	memcpy(was, st->ck.vblk, sizeof(was));
	struct store_stats s0, s1;
	store_get_stats(st, &s0);
	for (int k = 0; k < 8; k++)
		assert_true(store_compact(st) >= 0);
	store_get_stats(st, &s1);
	assert_true(s1.compactions > s0.compactions);
	assert_true(moved(was, st->ck.vblk, 8) > 0);
	for (unsigned b = 0; b < 8; b++)
		if (was[b] != st->ck.vblk[b])
			assert_true(alloc_seg_of(was[b]) != alloc_seg_of(st->ck.vblk[b]));
	store_close(st);
	st = testpool_open(&p->dev, NULL);
	assert_true(exists(st, "data"));
	char name[16];
	for (unsigned i = 0; i < n; i++) {
		name_of(i, name, sizeof(name));
		assert_true(exists(st, name));
	}
	assert_int_equal(store_check(st), 0);
	store_close(st);
	faultdev_free(p);
}

/* ---- power cuts ---------------------------------------------------------- */

#define BASE 70u /* volumes before the workload: three table blocks */

static struct faultdev *base_pool(void)
{
	struct faultdev *p;
	store_close(pool_with(&p, BASE));
	return p;
}

/* What the workload acknowledged. */
struct acks {
	bool deleted[BASE], created[20], renamed, resized;
};

/* Open, delete every fifth volume, create 20, rename v00001, resize
 * v00002 (within its tree's depth), checkpoint, close. */
static void workload(struct faultdev *p, struct acks *a)
{
	const char *why = NULL;
	struct store *st = store_open(&p->dev, NULL, &why);
	char name[16];

	memset(a, 0, sizeof(*a));
	if (!st) {
		assert_true(p->dead);
		return;
	}
	for (unsigned i = 5; i < BASE; i += 5) {
		name_of(i, name, sizeof(name));
		a->deleted[i] = store_vol_delete(st, name) == 0 && !p->dead;
	}
	for (unsigned i = 0; i < 20; i++) {
		name_of(BASE + i, name, sizeof(name));
		a->created[i] = store_vol_create(st, name, size_of(BASE + i)) == 0 && !p->dead;
	}
	a->renamed = store_vol_rename(st, "v00001", "r00001") == 0 && !p->dead;
	a->resized = store_vol_resize(st, "v00002", MiB + 64 * FMT_BLOCK, 0) == 0 && !p->dead;
	store_checkpoint(st);
	store_close(st);
}

static void test_crash_points(void **state)
{
	struct faultdev *p = base_pool();
	struct acks a;
	long start = p->calls;

	workload(p, &a);
	long total = p->calls - start;
	assert_true(a.renamed && a.resized);
	faultdev_free(p);
	assert_true(total > 20);
	for (long n = 0; n <= total; n++) {
		const char *why = NULL;
		char name[16];

		p = base_pool();
		p->budget = n;
		workload(p, &a);
		faultdev_power_on_rotate(p, n);
		struct store *st = store_open(&p->dev, NULL, &why);
		if (!st)
			fail_msg("crash point %ld: the pool does not open: %s", n, why);
		assert_int_equal(store_check(st), 0);
		for (unsigned i = 0; i < BASE; i++) {
			name_of(i, name, sizeof(name));
			if (i == 1 || (i % 5 == 0 && i))
				continue;
			assert_true(exists(st, name));
		}
		for (unsigned i = 5; i < BASE; i += 5) {
			name_of(i, name, sizeof(name));
			if (a.deleted[i])
				assert_false(exists(st, name));
		}
		for (unsigned i = 0; i < 20; i++) {
			name_of(BASE + i, name, sizeof(name));
			if (a.created[i])
				assert_true(exists(st, name));
		}
		assert_true(exists(st, "r00001") != exists(st, "v00001"));
		if (a.renamed)
			assert_true(exists(st, "r00001"));
		/* and it goes on: one more checkpoint, reopened */
		assert_int_equal(store_vol_create(st, "after", MiB), 0);
		assert_int_equal(store_checkpoint(st), 0);
		store_close(st);
		st = testpool_open(&p->dev, NULL);
		assert_true(exists(st, "after"));
		assert_int_equal(store_check(st), 0);
		store_close(st);
		faultdev_free(p);
	}
	print_message("%ld crash points\n", total + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_many),
	    cmocka_unit_test(test_rewrite_changed_only),
	    cmocka_unit_test(test_compaction_moves_table),
	    cmocka_unit_test(test_crash_points),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
