/* test_vtab_scale.c — the volume table at scale, through the public store
 * API on an in-memory device: N snapshots of one volume and some clones of
 * them, each found by its export name, listed page by page (before and
 * after a rename, after a reopen, while entries are deleted under the
 * walk), then all deleted in random order and the pool checked.  Prints
 * snapshot creates per second over the first tenth and the last tenth of
 * the N (a table that scans per create slows down as it fills).
 * And the table alone (vtab.c on a bare store): M records linked in a
 * shuffled order (a checkpoint need not hold them by id; a snapshot may
 * come before its volume), deleted in another, each index checked against
 * a model and by vtab_check. */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "faultdev.h"
#include "store.h"
#include "store_int.h"
#include "testpool.h"

/* Snapshots made (issue 13: 10^5 in one pool), and the pool (cc -DN=...
 * -DPOOL=... for other sizes).  At 10^5 in 256 MiB the deletes ran the
 * pool out of room until a delete into the reserve checkpointed first
 * (space.c): the segments earlier ops left dead came back only then. */
#ifndef N
#define N 100000u
#endif
#define NCLONES (N / 100) /* a clone of every 100th snapshot */
#define PAGE    97u       /* not a divisor of N: the last page is short */
#ifndef POOL
#define POOL (256ull << 20)
#endif

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void snap_name(char *out, size_t len, const char *vol, unsigned i)
{
	snprintf(out, len, "%s@s%05u", vol, i);
}

/* Is name an export of st, read-only if a snapshot? */
static void expect_found(struct store *st, const char *name, bool snapshot)
{
	struct vol *h;
	assert_int_equal(store_vol_open(st, name, &h), 0);
	assert_string_equal(store_vol_name(h), name);
	assert_int_equal(store_vol_readonly(h), snapshot);
	store_vol_close(h);
}

/* Walk q page by page; check ascending ids and that the entries are
 * exactly want[0..nwant) (full names, in id order = creation order);
 * return the number seen. */
static size_t walk(struct store *st, struct store_list_req q, char (*want)[64], size_t nwant)
{
	struct store_vol_info *page = calloc(q.max, sizeof(*page));
	size_t seen = 0, n;
	bool more = true;

	assert_non_null(page);
	q.after = 0;
	while (more) {
		assert_int_equal(store_list_page(st, &q, page, &n, &more), 0);
		assert_true(n <= q.max);
		assert_true(!more || n == q.max);
		for (size_t i = 0; i < n; i++, seen++) {
			assert_true(page[i].id > q.after);
			assert_true(seen < nwant);
			assert_string_equal(page[i].name, want[seen]);
			q.after = page[i].id;
		}
	}
	free(page);
	return seen;
}

/* The full names still there, in creation order: the volume's snapshots
 * (alive[i]) or its clones (every 100th, calive[]). */
static size_t want_snaps(char (*out)[64], const char *vol, const bool *alive)
{
	size_t k = 0;
	for (unsigned i = 0; i < N; i++)
		if (alive[i])
			snap_name(out[k++], 64, vol, i);
	return k;
}

static size_t want_vols(char (*out)[64], const char *vol, const bool *calive)
{
	size_t k = 0;
	snprintf(out[k++], 64, "%s", vol);
	for (unsigned c = 0; c < NCLONES; c++)
		if (calive[c])
			snprintf(out[k++], 64, "c%05u", c);
	return k;
}

/* Every listing agrees with alive[] and calive[]. */
static void check_lists(struct store *st, const char *vol, const bool *alive, const bool *calive)
{
	char(*want)[64] = calloc(N + 1, sizeof(*want));
	size_t nsnap = want_snaps(want, vol, alive);
	struct store_list_req q = {.snapshots = true, .volume = vol, .max = PAGE};

	assert_non_null(want);
	assert_int_equal(walk(st, q, want, nsnap), nsnap);
	q.volume = NULL; /* every snapshot in the pool: the same ones */
	assert_int_equal(walk(st, q, want, nsnap), nsnap);
	size_t nvol = want_vols(want, vol, calive);
	q.snapshots = false;
	assert_int_equal(walk(st, q, want, nvol), nvol);
	/* the volume's entry counts its snapshots */
	struct store_vol_info first;
	size_t n;
	bool more;
	q.max = 1;
	assert_int_equal(store_list_page(st, &q, &first, &n, &more), 0);
	assert_int_equal(n, 1);
	assert_string_equal(first.name, vol);
	assert_int_equal(first.nsnapshots, nsnap);
	free(want);
}

/* Create the snapshots, timing the first and the last tenth. */
static void make_snapshots(struct store *st)
{
	char name[64];
	double t0 = 0, first = 0, start = now_s();

	for (unsigned i = 0; i < N; i++) {
		if (i == 0 || i == N - N / 10)
			t0 = now_s();
		snap_name(name, sizeof(name), "v", i);
		assert_int_equal(store_snap_create(st, name), 0);
		if (i + 1 == N / 10)
			first = now_s() - t0;
	}
	double last = now_s() - t0, all = now_s() - start;
	print_message("snapshot creates/s: %.0f for the first %u, %.0f for the last %u; "
	              "%u in %.3f s, %.1f us each\n",
	              (N / 10) / first, N / 10, (N / 10) / last, N / 10, N, all, all * 1e6 / N);
	snap_name(name, sizeof(name), "v", 0);
	assert_int_equal(store_snap_create(st, name), -EEXIST);
}

static void make_clones(struct store *st)
{
	char snap[64], clone[16];
	for (unsigned c = 0; c < NCLONES; c++) {
		snap_name(snap, sizeof(snap), "v", c * 100);
		snprintf(clone, sizeof(clone), "c%05u", c);
		assert_int_equal(store_clone(st, snap, clone), 0);
	}
	assert_int_equal(store_clone(st, "v@s00000", "c00000"), -EEXIST);
}

static void expect_all_found(struct store *st, const char *vol, const bool *alive)
{
	char name[64];
	double t0 = now_s();
	for (unsigned i = 0; i < N; i++) {
		snap_name(name, sizeof(name), vol, i);
		if (alive[i])
			expect_found(st, name, true);
	}
	print_message("lookups by export name: %.2f us each\n", (now_s() - t0) * 1e6 / N);
	expect_found(st, vol, false);
	expect_found(st, "c00000", false);
}

/* Deleting the last entry of a page between two pages: the next page
 * starts after its id all the same, and nothing is listed twice. */
static void delete_under_walk(struct store *st, bool *alive)
{
	struct store_list_req q = {.snapshots = true, .volume = "w", .max = PAGE};
	struct store_vol_info *page = calloc(PAGE, sizeof(*page));
	char name[64];
	size_t n;
	bool more;

	assert_non_null(page);
	assert_int_equal(store_list_page(st, &q, page, &n, &more), 0);
	assert_int_equal(n, PAGE);
	assert_true(more);
	/* the last one on the page is w@s00096, which has no clone */
	assert_string_equal(page[PAGE - 1].name, "w@s00096");
	assert_int_equal(store_snap_delete(st, page[PAGE - 1].name), 0);
	alive[PAGE - 1] = false;
	q.after = page[PAGE - 1].id;
	assert_int_equal(store_list_page(st, &q, page, &n, &more), 0);
	assert_true(n > 0);
	snap_name(name, sizeof(name), "w", PAGE);
	assert_string_equal(page[0].name, name);
	free(page);
}

/* Delete clones and snapshots in a random (seeded) order, checking the
 * lists at a few points on the way. */
static void delete_all(struct store *st, bool *alive, bool *calive)
{
	unsigned *order = malloc(N * sizeof(*order));
	char name[64];
	unsigned done = 0;

	assert_non_null(order);
	for (unsigned i = 0; i < N; i++)
		order[i] = i;
	srand(13);
	for (unsigned i = N - 1; i > 0; i--) {
		unsigned j = (unsigned)rand() % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	/* a snapshot with a clone stays until its clone goes */
	assert_int_equal(store_snap_delete(st, "w@s00100"), -EBUSY);
	for (unsigned c = 0; c < NCLONES; c++) {
		snprintf(name, sizeof(name), "c%05u", order[c] % NCLONES);
		if (!calive[order[c] % NCLONES])
			continue;
		assert_int_equal(store_vol_delete(st, name), 0);
		calive[order[c] % NCLONES] = false;
	}
	for (unsigned c = 0; c < NCLONES; c++)
		if (calive[c]) {
			snprintf(name, sizeof(name), "c%05u", c);
			assert_int_equal(store_vol_delete(st, name), 0);
			calive[c] = false;
		}
	assert_int_equal(store_vol_delete(st, "w"), -ENOTEMPTY);
	for (unsigned k = 0; k < N; k++) {
		unsigned i = order[k];
		if (!alive[i])
			continue;
		snap_name(name, sizeof(name), "w", i);
		assert_int_equal(store_snap_delete(st, name), 0);
		assert_int_equal(store_vol_open(st, name, &(struct vol *){NULL}), -ENOENT);
		alive[i] = false;
		if (++done % (N / 4) == 0)
			check_lists(st, "w", alive, calive);
	}
	check_lists(st, "w", alive, calive);
	assert_int_equal(store_vol_delete(st, "w"), 0);
	free(order);
}

static void test_many_snapshots(void **state)
{
	struct faultdev *p = faultdev_new(POOL);
	bool *alive = malloc(N * sizeof(*alive)), calive[NCLONES];
	struct vol *h;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 64u << 20, &h);

	(void)state;
	assert_non_null(alive);
	char buf[4096];
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(store_write(h, buf, 0, sizeof(buf), 0), 0);
	store_vol_close(h);
	make_snapshots(st);
	make_clones(st);
	for (unsigned i = 0; i < N; i++)
		alive[i] = true;
	for (unsigned c = 0; c < NCLONES; c++)
		calive[c] = true;
	expect_all_found(st, "v", alive);
	check_lists(st, "v", alive, calive);

	/* a rename moves every snapshot's export name with it */
	assert_int_equal(store_vol_rename(st, "v", "w"), 0);
	assert_int_equal(store_vol_open(st, "v@s00001", &h), -ENOENT);
	assert_int_equal(store_vol_open(st, "v", &h), -ENOENT);
	expect_all_found(st, "w", alive);
	check_lists(st, "w", alive, calive);

	assert_int_equal(store_checkpoint(st), 0);
	store_close(st);
	st = testpool_open(&p->dev, NULL);
	expect_all_found(st, "w", alive);
	check_lists(st, "w", alive, calive);

	delete_under_walk(st, alive);
	delete_all(st, alive, calive);
	assert_int_equal(store_vol_open(st, "w", &h), -ENOENT);
	assert_int_equal(store_check(st), 0);
	store_close(st);

	/* and once more after a reopen, from the log this time */
	st = testpool_open(&p->dev, NULL);
	assert_int_equal(store_vol_open(st, "w@s00001", &h), -ENOENT);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	free(alive);
	faultdev_free(p);
}

/* ---- the table alone ---------------------------------------------------- */

/* Records of the table test: ids 1..M; every tenth (1, 11, ...) a volume
 * "b<id>", the nine after it its snapshots "s<id>"; every fiftieth volume
 * from 51 on a clone of the snapshot five below it. */
#define M 20000u

static bool is_base(uint64_t id)
{
	return id % 10 == 1;
}

static uint64_t up_of(uint64_t id)
{
	if (!is_base(id))
		return id - (id - 1) % 10;
	return id % 50 == 1 && id > 50 ? id - 5 : 0;
}

static void rec_name(char *out, size_t len, uint64_t id)
{
	snprintf(out, len, "%c%llu", is_base(id) ? 'b' : 's', (unsigned long long)id);
}

static void shuffle(uint64_t *a, size_t n)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)rand() % (i + 1);
		uint64_t t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

struct seen {
	uint64_t last;
	unsigned n;
};

static bool seen_one(struct volume *v, void *arg)
{
	struct seen *s = arg;
	assert_true(v->id > s->last);
	s->last = v->id;
	s->n++;
	return true;
}

static bool first_one(struct volume *v, void *arg)
{
	*(uint64_t *)arg = v->id;
	return false;
}

/* Every record against the model: found by id and name if alive, its
 * family counted and walked in id order. */
static void check_model(struct store *st, const bool *alive)
{
	char name[24];
	unsigned n = 0;

	assert_null(vtab_check(st));
	for (uint64_t id = 1; id <= M; id++) {
		struct volume *v = vtab_find_id(st, id);
		uint64_t up = up_of(id);
		rec_name(name, sizeof(name), id);
		n += alive[id];
		assert_true(!v == !alive[id]);
		if (is_base(id))
			assert_ptr_equal(vtab_find_base(st, name), v);
		else
			assert_ptr_equal(vtab_find_snap(st, up, name), v);
		if (!v)
			continue;
		/* a volume's snapshots: the alive ones of the nine after it;
		 * a snapshot's clone: the volume five after it, if one */
		unsigned want = 0;
		struct seen s = {0};
		if (is_base(id)) {
			for (uint64_t c = id + 1; c <= M && c < id + 10; c++)
				want += alive[c];
			assert_int_equal(vtab_snapshots(st, v), want);
		} else {
			want = id + 5 <= M && alive[id + 5] && up_of(id + 5) == id;
			assert_int_equal(vtab_clones(st, v, NULL, 0), want);
		}
		vtab_walk(st, v, is_base(id), 0, seen_one, &s);
		assert_int_equal(s.n, want);
	}
	assert_int_equal(st->vt.n, n);
	struct seen all = {0};
	vtab_walk(st, NULL, false, 0, seen_one, &all);
	vtab_walk(st, NULL, true, 0, seen_one, &(struct seen){0});
	/* a walk from any point starts at the next record of its kind */
	for (unsigned k = 0; k < 200; k++) {
		uint64_t after = (uint64_t)rand() % (M + 1), first = 0, want = 0;
		for (uint64_t id = after + 1; id <= M && !want; id++)
			want = alive[id] && is_base(id) ? id : 0;
		vtab_walk(st, NULL, false, after, first_one, &first);
		assert_int_equal(first, want);
	}
}

static void apply(struct store *st, uint32_t kind, uint64_t id, const char *name)
{
	struct fmt_op op = {.magic = FMT_OP_MAGIC, .kind = kind, .id = id};
	snprintf(op.name, sizeof(op.name), "%s", name);
	assert_int_equal(vtab_apply_op(st, &op), 0);
}

static void test_link_any_order(void **state)
{
	struct store *st = calloc(1, sizeof(*st));
	uint64_t *order = malloc(M * sizeof(*order));
	bool *alive = calloc(M + 1, sizeof(*alive));
	char name[24];

	(void)state;
	assert_true(st && order && alive);
	pthread_mutex_init(&st->vt.lock, NULL);
	st->vt.next_id = 1;
	for (unsigned i = 0; i < M; i++)
		order[i] = i + 1;
	srand(5);
	shuffle(order, M);
	double t0 = now_s();
	for (unsigned i = 0; i < M; i++) {
		uint64_t id = order[i];
		rec_name(name, sizeof(name), id);
		struct volume *v = vtab_volume_new(id, name, 1 << 20, 0);
		assert_non_null(v);
		v->snapshot = !is_base(id);
		*(v->snapshot ? &v->parent_id : &v->origin_id) = up_of(id);
		assert_int_equal(vtab_link(st, v), 0);
		alive[id] = true;
	}
	print_message("%u records linked in a shuffled order: %.2f us each\n", M,
	              (now_s() - t0) * 1e6 / M);
	assert_int_equal(st->vt.next_id, M + 1);
	uint64_t id = 0;
	for (struct volume *v = st->vt.list; v; v = v->next)
		assert_int_equal(v->id, ++id);
	check_model(st, alive);

	/* a rename moves the volume in the name index, its snapshots stay */
	apply(st, FMT_OP_VOL_RENAME, 11, "renamed");
	assert_null(vtab_find_base(st, "b11"));
	assert_int_equal(vtab_find_base(st, "renamed")->id, 11);
	apply(st, FMT_OP_VOL_RENAME, 11, "b11");

	shuffle(order, M);
	for (unsigned i = 0; i < M; i++) {
		apply(st, FMT_OP_VOL_DELETE, order[i], "");
		alive[order[i]] = false;
		if (i == M / 3 || i == 2 * M / 3)
			check_model(st, alive);
	}
	check_model(st, alive);
	assert_null(st->vt.list);
	vtab_free_all(st);
	pthread_mutex_destroy(&st->vt.lock);
	free(alive);
	free(order);
	free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_many_snapshots),
	    cmocka_unit_test(test_link_any_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
