/* test_diff.c — changed blocks between snapshots (store_diff) and the
 * per-block status behind NBD's qemu:dirty-bitmap and qemu:allocation-depth
 * (store_status_*), on a real store over an in-memory device.
 *
 * Property: random histories of whole-block and partial writes, trims,
 * zeroes, snapshots, clones, snapshots of clones, rollbacks and deletes,
 * on a pool small enough that the compactor moves blocks between the
 * points compared.  After each step, pairs of records that share history
 * are compared three ways: store_diff; a model of what was written where
 * (a version per block: every write makes a new one, trim and zero make
 * a hole); and a full byte comparison of the two exports read back.  The
 * diff must equal the model exactly (every block written between the two
 * points and differing, none that was not: 0 unchanged blocks reported),
 * flag zero exactly where the later point has a hole, cover every block
 * whose bytes differ, and come out sorted, merged and non-overlapping.
 * The dirty bitmap of an export against a snapshot of its volume, asked
 * over random unaligned ranges with few runs, and the allocation depth
 * of clones, are checked against the same model.  Refusals: unrelated
 * volumes (-EXDEV), unknown names (-ENOENT), a snapshot held by an open
 * dirty-bitmap source cannot be deleted (-EBUSY).  Concurrency: diffs of
 * two snapshots, run in a thread while another thread's writes keep the
 * compactor moving their blocks, always give the same answer.
 */
#undef NDEBUG
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "diff.h"
#include "store.h"
#include "testpool.h"

#define BS     4096u
#define NB     2048u /* blocks per volume: 8 MiB */
#define NREC   10    /* records at most */
#define EXTMAX (NB + 1)

/* A volume, snapshot or clone, and the version of each of its blocks
 * (0 = hole; each write makes a new version, so equal versions mean
 * nothing was written between). */
struct rec {
	char name[NAMES_FULL_MAX + 1];
	bool used, snapshot;
	int parent; /* snapshot: its volume; clone: its origin snapshot; else -1 */
	uint32_t ver[NB];
};

static struct rec R[NREC];
static uint32_t next_ver;
static unsigned next_name;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng % n;
}

static void fill(uint8_t *b, size_t n, uint32_t ver)
{
	for (size_t i = 0; i < n; i += 4) {
		uint32_t w = ver * 2654435761u + (uint32_t)i;
		memcpy(b + i, &w, 4);
	}
}

static struct vol *open_h(struct store *st, const char *name)
{
	struct vol *h;
	assert_int_equal(store_vol_open(st, name, &h), 0);
	return h;
}

static int rec_new(const char *name, bool snapshot, int parent)
{
	for (int i = 0; i < NREC; i++)
		if (!R[i].used) {
			memset(&R[i], 0, sizeof(R[i]));
			snprintf(R[i].name, sizeof(R[i].name), "%s", name);
			R[i].used = true;
			R[i].snapshot = snapshot;
			R[i].parent = parent;
			if (parent >= 0)
				memcpy(R[i].ver, R[parent].ver, sizeof(R[i].ver));
			return i;
		}
	return -1;
}

static int pick(bool snapshot, bool any)
{
	int cand[NREC], n = 0;
	for (int i = 0; i < NREC; i++)
		if (R[i].used && (any || R[i].snapshot == snapshot))
			cand[n++] = i;
	return n ? cand[rnd((uint64_t)n)] : -1;
}

/* ---- the workload ------------------------------------------------------ */

static void do_write(struct store *st, int r)
{
	struct vol *h = open_h(st, R[r].name);
	uint64_t b = rnd(NB), n = 1 + rnd(16);
	uint8_t *buf = malloc(16 * BS);

	if (b + n > NB)
		n = NB - b;
	switch (rnd(6)) {
	case 0: /* trim or zero: holes */
		assert_int_equal(rnd(2) ? store_trim(h, b * BS, (uint32_t)(n * BS), 0)
		                        : store_zero(h, b * BS, (uint32_t)(n * BS), 0),
		                 0);
		for (uint64_t i = b; i < b + n; i++)
			R[r].ver[i] = 0;
		break;
	case 1: { /* partial: merged into a new block */
		uint32_t off = (uint32_t)rnd(BS - 100);
		fill(buf, 100, ++next_ver);
		assert_int_equal(store_write(h, buf, b * BS + off, 100, 0), 0);
		R[r].ver[b] = next_ver;
		break;
	}
	default:
		for (uint64_t i = 0; i < n; i++) {
			R[r].ver[b + i] = ++next_ver;
			fill(buf + i * BS, BS, next_ver);
		}
		assert_int_equal(store_write(h, buf, b * BS, (uint32_t)(n * BS), 0), 0);
	}
	free(buf);
	store_vol_close(h);
}

static void do_snapshot(struct store *st, int vol)
{
	char name[NAMES_FULL_MAX + 1];
	snprintf(name, sizeof(name), "%s@s%u", R[vol].name, ++next_name);
	if (rec_new(name, true, vol) >= 0)
		assert_int_equal(store_snap_create(st, name), 0);
}

static void do_clone(struct store *st, int snap)
{
	char name[NAMES_FULL_MAX + 1];
	snprintf(name, sizeof(name), "c%u", ++next_name);
	if (rec_new(name, false, snap) >= 0)
		assert_int_equal(store_clone(st, R[snap].name, name), 0);
}

static void do_rollback(struct store *st, int snap)
{
	int vol = R[snap].parent;
	assert_int_equal(store_rollback(st, R[snap].name), 0);
	memcpy(R[vol].ver, R[snap].ver, sizeof(R[vol].ver));
}

/* Delete a snapshot nothing was cloned from. */
static void do_delete(struct store *st, int snap)
{
	for (int i = 0; i < NREC; i++)
		if (R[i].used && !R[i].snapshot && R[i].parent == snap)
			return;
	assert_int_equal(store_snap_delete(st, R[snap].name), 0);
	R[snap].used = false;
}

/* ---- the checks -------------------------------------------------------- */

struct got {
	struct store_diff_extent e[EXTMAX];
	unsigned n;
};

static int collect(void *arg, const struct store_diff_extent *e)
{
	struct got *g = arg;
	assert_true(g->n < EXTMAX);
	assert_true(e->len > 0 && e->off % BS == 0 && e->len % BS == 0);
	assert_true(e->off + e->len <= (uint64_t)NB * BS);
	if (g->n) { /* sorted, non-overlapping, merged */
		const struct store_diff_extent *p = &g->e[g->n - 1];
		assert_true(p->off + p->len <= e->off);
		assert_false(p->off + p->len == e->off && p->zero == e->zero);
	}
	g->e[g->n++] = *e;
	return 0;
}

static uint8_t *read_all(struct store *st, const char *name)
{
	struct vol *h = open_h(st, name);
	uint8_t *b = malloc((size_t)NB * BS);
	for (unsigned at = 0; at < NB; at += 256)
		assert_int_equal(store_read(h, b + (size_t)at * BS, (uint64_t)at * BS, 256 * BS),
		                 0);
	store_vol_close(h);
	return b;
}

static uint64_t unchanged_reported, depth_inherited;

/* store_diff(a, b) against the model and the bytes. */
static void check_pair(struct store *st, int a, int b)
{
	static struct got g;
	static uint8_t mark[NB];
	uint8_t *da = read_all(st, R[a].name), *db = read_all(st, R[b].name);
	uint64_t missed = 0, extra = 0, bytes_missed = 0;

	g.n = 0;
	assert_int_equal(store_diff(st, R[a].name, R[b].name, collect, &g), 0);
	memset(mark, 0, sizeof(mark));
	for (unsigned i = 0; i < g.n; i++)
		for (uint64_t k = g.e[i].off / BS; k < (g.e[i].off + g.e[i].len) / BS; k++)
			mark[k] = g.e[i].zero ? 2 : 1;
	for (unsigned k = 0; k < NB; k++) {
		uint8_t want = R[a].ver[k] == R[b].ver[k] ? 0 : R[b].ver[k] ? 1 : 2;
		missed += want && mark[k] != want;
		extra += !want && mark[k];
		if (memcmp(da + (size_t)k * BS, db + (size_t)k * BS, BS) && !mark[k])
			bytes_missed++;
		if (!memcmp(da + (size_t)k * BS, db + (size_t)k * BS, BS) && mark[k])
			unchanged_reported++; /* written between, same bytes: allowed */
	}
	free(da);
	free(db);
	if (missed || extra || bytes_missed)
		fail_msg("diff %s %s: %llu changed blocks missed or misflagged, %llu never-written "
		         "blocks reported, %llu differing blocks not reported",
		         R[a].name, R[b].name, (unsigned long long)missed,
		         (unsigned long long)extra, (unsigned long long)bytes_missed);
}

/* The dirty bitmap of export e against snapshot s of the same volume. */
static void check_dirty(struct store *st, int e, int s)
{
	struct vol *h = open_h(st, R[e].name);
	struct store_status *src;
	struct store_run runs[7];
	const char *snap = strchr(R[s].name, '@') + 1;

	assert_int_equal(store_status_dirty(h, snap, &src), 0);
	store_thread_register();
	for (unsigned q = 0; q < 6; q++) {
		uint64_t off = q ? rnd((uint64_t)NB * BS - 1) : 0;
		uint64_t len = q ? 1 + rnd((uint64_t)NB * BS - off) : (uint64_t)NB * BS;
		unsigned n;
		assert_int_equal(store_status_map(src, off, len, runs, q ? 7 : 1, &n), 0);
		assert_true(n >= 1);
		uint64_t at = off;
		for (unsigned i = 0; i < n; i++) {
			assert_true(runs[i].len > 0 && at + runs[i].len <= off + len);
			if (i)
				assert_int_not_equal(runs[i].value, runs[i - 1].value);
			for (uint64_t k = at / BS; k * BS < at + runs[i].len; k++)
				if ((R[e].ver[k] != R[s].ver[k]) != runs[i].value)
					fail_msg("dirty %s since %s: block %llu says %u", R[e].name,
					         snap, (unsigned long long)k, runs[i].value);
			at += runs[i].len;
		}
	}
	store_thread_unregister();
	store_status_close(src);
	store_vol_close(h);
}

/* The depth of record c: 0 hole, 1 written in it (or its volume), k+1 the
 * same version as the k-th origin snapshot up the chain. */
static void check_depth(struct store *st, int c)
{
	int chain[NREC], n = 0;
	for (int r = c; r >= 0 && n < NREC;) {
		chain[n++] = r;
		int vol = R[r].snapshot ? R[r].parent : r; /* the volume */
		r = R[vol].parent;                         /* a clone's origin snapshot, or -1 */
	}
	struct vol *h = open_h(st, R[c].name);
	struct store_status *src;
	static struct store_run runs[NB];
	unsigned nr;

	assert_int_equal(store_status_depth(h, &src), 0);
	store_thread_register();
	assert_int_equal(store_status_map(src, 0, (uint64_t)NB * BS, runs, NB, &nr), 0);
	store_thread_unregister();
	uint64_t at = 0;
	for (unsigned i = 0; i < nr; i++) {
		for (uint64_t k = at / BS; k < (at + runs[i].len) / BS; k++) {
			uint32_t v = R[c].ver[k], want = v != 0;
			while (v && (int)want < n && R[chain[want]].ver[k] == v)
				want++;
			depth_inherited += want >= 2;
			if (runs[i].value != want)
				fail_msg("depth of %s block %llu: %u, want %u", R[c].name,
				         (unsigned long long)k, runs[i].value, want);
		}
		at += runs[i].len;
	}
	assert_int_equal(at, (uint64_t)NB * BS);
	store_status_close(src);
	store_vol_close(h);
}

static void test_diff_property(void **state)
{
	struct store *st = testpool_new(blkdev_mem_new(128u << 20), NULL);
	struct store_stats s0, s1;
	uint64_t compacted_between = 0, pairs = 0;
	unsigned rollbacks = 0, clones = 0;

	memset(R, 0, sizeof(R));
	assert_int_equal(store_vol_create(st, "v", (uint64_t)NB * BS), 0);
	rec_new("v", false, -1);
	for (unsigned i = 0; i < 300; i++)
		do_write(st, 0);
	store_get_stats(st, &s0);
	for (unsigned step = 0; step < 80; step++) {
		int r;
		switch (step < 2 ? 0 : step == 5 ? 1 : rnd(10)) {
		case 0:
			if ((r = pick(false, false)) >= 0)
				do_snapshot(st, r);
			break;
		case 1:
			if ((r = pick(true, false)) >= 0) {
				do_clone(st, r);
				clones++;
			}
			break;
		case 2:
			if ((r = pick(true, false)) >= 0) {
				do_rollback(st, r);
				rollbacks++;
			}
			break;
		case 3:
			if ((r = pick(true, false)) >= 0)
				do_delete(st, r);
			break;
		default:
			for (unsigned i = 0; i < 400; i++)
				if ((r = pick(false, false)) >= 0)
					do_write(st, r);
		}
		store_get_stats(st, &s1);
		compacted_between += s1.compacted_blocks - s0.compacted_blocks;
		s0 = s1;
		/* a snapshot against a later point of its history */
		int a = pick(true, false), b = pick(false, true);
		if (a < 0)
			continue;
		check_pair(st, a, b);
		check_pair(st, b, a);
		pairs += 2;
		int vol = R[a].parent;
		check_dirty(st, vol, a);
		for (int e = 0; e < NREC; e++)
			if (R[e].used && R[e].snapshot && R[e].parent == vol && rnd(3) == 0)
				check_dirty(st, e, a);
		if (!R[b].snapshot && R[b].parent >= 0)
			check_depth(st, b);
	}
	store_get_stats(st, &s1);
	print_message("%llu pairs compared, %u clones, %u rollbacks, %llu compactions moving "
	              "%llu blocks; blocks reported with unchanged bytes: %llu\n",
	              (unsigned long long)pairs, clones, rollbacks,
	              (unsigned long long)s1.compactions, (unsigned long long)compacted_between,
	              (unsigned long long)unchanged_reported);
	assert_true(s1.compactions > 0 && compacted_between > 0);
	assert_true(clones > 0 && rollbacks > 0 && pairs > 20 && depth_inherited > 0);
	store_close(st);
}

static int count_extents(void *arg, const struct store_diff_extent *e)
{
	(*(unsigned *)arg)++;
	return 0;
}

static int stop_at_first(void *arg, const struct store_diff_extent *e)
{
	return 42;
}

static int list_snap(void *arg, const char *snap)
{
	strcat(arg, snap);
	strcat(arg, ",");
	return 0;
}

static void test_diff_refusals(void **state)
{
	struct store *st = testpool_new(blkdev_mem_new(64u << 20), NULL);
	struct store_status *src;
	struct vol *h;
	unsigned n = 0;
	char list[256] = "";
	uint8_t buf[BS];

	assert_int_equal(store_vol_create(st, "v", 1u << 20), 0);
	assert_int_equal(store_vol_create(st, "u", 1u << 20), 0);
	assert_int_equal(store_snap_create(st, "v@a"), 0);
	assert_int_equal(store_snap_create(st, "u@a"), 0);
	h = open_h(st, "v");
	fill(buf, BS, 7);
	assert_int_equal(store_write(h, buf, 3 * BS, BS, 0), 0);
	assert_int_equal(store_write(h, buf, 9 * BS, BS, 0), 0);
	assert_int_equal(store_snap_create(st, "v@b"), 0);
	/* B defaults to the live volume; fn's value stops the walk */
	assert_int_equal(store_diff(st, "v@a", NULL, count_extents, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_diff(st, "v@a", "v@b", stop_at_first, NULL), 42);
	/* no shared history, no such record, bad names */
	assert_int_equal(store_diff(st, "v@a", "u", count_extents, &n), -EXDEV);
	assert_int_equal(store_diff(st, "v@a", "u@a", count_extents, &n), -EXDEV);
	assert_int_equal(store_diff(st, "v@zz", "v", count_extents, &n), -ENOENT);
	assert_int_equal(store_diff(st, "v@a", "w", count_extents, &n), -ENOENT);
	assert_int_equal(store_diff(st, "v@", "v", count_extents, &n), -EINVAL);
	/* a clone shares history with its origin and that origin's volume */
	assert_int_equal(store_clone(st, "v@a", "c"), 0);
	n = 0;
	assert_int_equal(store_diff(st, "c", "v", count_extents, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_diff(st, "u", "c", count_extents, &n), -EXDEV);
	/* the snapshots a dirty bitmap can name: the export's volume's */
	assert_int_equal(store_status_snapshots(h, list_snap, list), 0);
	assert_string_equal(list, "a,b,");
	assert_int_equal(store_status_dirty(h, "zz", &src), -ENOENT);
	assert_int_equal(store_status_dirty(h, "u@a", &src), -ENOENT);
	assert_int_equal(store_status_dirty(h, "", &src), -ENOENT);
	/* an open source holds its snapshot: deleting it is refused */
	assert_int_equal(store_status_dirty(h, "a", &src), 0);
	store_vol_close(h);
	assert_int_equal(store_vol_delete(st, "c"), 0);
	assert_int_equal(store_snap_delete(st, "v@a"), -EBUSY);
	store_status_close(src);
	assert_int_equal(store_snap_delete(st, "v@a"), 0);
	store_close(st);
}

/* ---- concurrency ------------------------------------------------------- */

struct racer {
	struct store *st;
	atomic_int stop;
	unsigned want, runs, wrong;
};

static void *diff_racer(void *p)
{
	struct racer *r = p;
	while (!atomic_load(&r->stop)) {
		unsigned n = 0;
		assert_int_equal(store_diff(r->st, "v@a", "v@b", count_extents, &n), 0);
		r->wrong += n != r->want;
		r->runs++;
	}
	return NULL;
}

/* Two snapshots never change; the compactor moves their blocks while a
 * thread diffs them: every answer is the same. */
static void test_diff_concurrent(void **state)
{
	struct store *st = testpool_new(blkdev_mem_new(64u << 20), NULL);
	struct racer r = {.st = st};
	struct store_stats stats;
	struct vol *h;
	pthread_t th;
	uint8_t buf[BS];

	assert_int_equal(store_vol_create(st, "v", (uint64_t)NB * BS), 0);
	h = open_h(st, "v");
	for (unsigned b = 0; b < NB; b++) {
		fill(buf, BS, b + 1);
		assert_int_equal(store_write(h, buf, (uint64_t)b * BS, BS, 0), 0);
	}
	assert_int_equal(store_snap_create(st, "v@a"), 0);
	for (unsigned b = 0; b < NB; b += 5) { /* every 5th block: 410 extents */
		fill(buf, BS, NB + b);
		assert_int_equal(store_write(h, buf, (uint64_t)b * BS, BS, 0), 0);
	}
	assert_int_equal(store_snap_create(st, "v@b"), 0);
	assert_int_equal(store_diff(st, "v@a", "v@b", count_extents, &r.want), 0);
	assert_int_equal(r.want, (NB + 4) / 5);
	assert_int_equal(pthread_create(&th, NULL, diff_racer, &r), 0);
	for (unsigned i = 0; i < 30000; i++) {
		unsigned b = (unsigned)rnd(NB);
		fill(buf, BS, 2 * NB + i);
		assert_int_equal(store_write(h, buf, (uint64_t)b * BS, BS, 0), 0);
	}
	atomic_store(&r.stop, 1);
	pthread_join(th, NULL);
	store_vol_close(h);
	store_get_stats(st, &stats);
	print_message("%u diffs during %llu compactions (%llu blocks moved), %u wrong\n", r.runs,
	              (unsigned long long)stats.compactions,
	              (unsigned long long)stats.compacted_blocks, r.wrong);
	assert_true(stats.compactions > 0 && r.runs > 0);
	assert_int_equal(r.wrong, 0);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_diff_refusals),
	    cmocka_unit_test(test_diff_property),
	    cmocka_unit_test(test_diff_concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
