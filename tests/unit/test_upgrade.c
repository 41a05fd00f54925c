/* test_upgrade.c — opening a pool of format version 2, 3 or 4
 * (docs/FORMAT.md, "Versions"): the fixtures tests/fixtures/pool-vV.img.gz,
 * each written by the cowbd of that version (tests/fixtures/make-old-pool.sh:
 * a volume with a snapshot, a resize, a clone renamed, a log after the last
 * checkpoint).  A read-only open leaves it as it is; a read-write open
 * replays the log and its first checkpoint (from version 2 rewriting every
 * node and count page; from 2 or 3, writing the volume table blocks; from
 * any, segment tables with each segment's life) says the current version
 * (FMT_VERSION); every export reads as the untouched pool reads; and a
 * power cut at each device write or flush of an open + write + close
 * leaves a pool that opens and checks clean, at the old version or the
 * current one, with the same data (and the write, if it was acknowledged).
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
#include <sys/uio.h>

#include <cmocka.h>

#include "alloc.h"
#include "blkdev.h"
#include "faultdev.h"
#include "format.h"
#include "fwd.h"
#include "store.h"
#include "store_int.h"
#include "testpool.h"

#define MiB       (1ull << 20)
#define POOL_SIZE (64 * MiB)

static const char *const exports[] = {"v", "v@s1", "c2"};
#define NEXP 3

static unsigned from;    /* the fixture's version */
static char *image;      /* the fixture, unpacked once */
static char *want[NEXP]; /* each export as the untouched pool reads it */
static uint64_t want_len[NEXP];

static struct faultdev *fixture(void)
{
	struct faultdev *p = faultdev_new(POOL_SIZE);
	struct iovec iov = {.iov_base = image, .iov_len = POOL_SIZE};
	assert_int_equal(blkdev_pwritev(p->mem, &iov, 1, 0), 0);
	assert_int_equal(blkdev_flush(p->mem), 0);
	return p;
}

static uint32_t version_of(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s.format_version;
}

/* Export i of st, whole (malloc'd; *len its size). */
static char *read_export(struct store *st, unsigned i, uint64_t *len)
{
	struct vol *v;
	assert_int_equal(store_vol_open(st, exports[i], &v), 0);
	*len = store_vol_size(v);
	char *b = malloc(*len);
	assert_non_null(b);
	for (uint64_t off = 0; off < *len; off += MiB)
		assert_int_equal(store_read(v, b + off, off, MiB), 0);
	store_vol_close(v);
	return b;
}

static int setup(void **state)
{
	char cmd[4096];
	const char *top = getenv("TOP");
	FILE *f;

	snprintf(cmd, sizeof(cmd), "gzip -dc '%s/tests/fixtures/pool-v%u.img.gz'", top ? top : ".",
	         from);
	image = malloc(POOL_SIZE);
	f = popen(cmd, "r");
	if (!image || !f || fread(image, 1, POOL_SIZE, f) != POOL_SIZE || pclose(f) != 0) {
		fprintf(stderr,
		        "test_upgrade: cannot unpack %s (run from the top of the tree, "
		        "or set TOP)\n",
		        cmd);
		return -1;
	}
	/* The oracle: the untouched pool, opened read-only, which leaves it
	 * at its version: no device write or flush. */
	struct faultdev *p = fixture();
	struct store_opts ro = {.read_only = true};
	const char *why = NULL;
	long calls = p->calls;
	struct store *st = store_open(&p->dev, &ro, &why);
	if (!st) {
		fprintf(stderr, "test_upgrade: read-only open: %s\n", why);
		return -1;
	}
	assert_int_equal(version_of(st), from);
	for (unsigned i = 0; i < NEXP; i++)
		want[i] = read_export(st, i, &want_len[i]);
	store_close(st);
	assert_int_equal(p->calls, calls);
	faultdev_free(p);
	return 0;
}

static int teardown(void **state)
{
	for (unsigned i = 0; i < NEXP; i++)
		free(want[i]);
	free(image);
	return 0;
}

/* Every export of st reads as the untouched pool reads; with wrote, v
 * reads 'w' in its first MiB instead. */
static void expect_data(struct store *st, bool wrote)
{
	for (unsigned i = 0; i < NEXP; i++) {
		uint64_t len;
		char *got = read_export(st, i, &len);
		assert_int_equal(len, want_len[i]);
		if (i == 0 && wrote) {
			for (uint64_t k = 0; k < MiB; k++)
				assert_int_equal(got[k], 'w');
			assert_memory_equal(got + MiB, want[i] + MiB, len - MiB);
		} else {
			assert_memory_equal(got, want[i], len);
		}
		free(got);
	}
}

static void test_upgrade(void **state)
{
	struct faultdev *p = fixture();
	struct store *st = testpool_open(&p->dev, NULL);

	assert_true(from < FMT_VERSION); /* an upgrade, not a plain open */
	assert_int_equal(version_of(st), FMT_VERSION);
	expect_data(st, false);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	/* Reopened at the current version: the volume table blocks, roots
	 * only, counts from the pages, lives from the segment tables. */
	st = testpool_open(&p->dev, NULL);
	assert_int_equal(version_of(st), FMT_VERSION);
	expect_data(st, false);
	assert_int_equal(store_check(st), 0);
	/* Compaction in the upgraded pool: the blocks moved are named as the
	 * old version wrote them (tag 0), now forwarded; so after a reopen. */
	assert_int_equal(fwd_entries(alloc_fwd(st->a)), 0);
	assert_true(store_compact(st) > 0);
	assert_true(fwd_entries(alloc_fwd(st->a)) > 0);
	expect_data(st, false);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	st = testpool_open(&p->dev, NULL);
	expect_data(st, false);
	assert_int_equal(store_check(st), 0);
	store_close(st);
	faultdev_free(p);
}

/* Open (the upgrade), write 1 MiB of 'w' to v with FUA, close. */
static long workload(struct faultdev *p, bool *acked)
{
	const char *why = NULL;
	struct store *st = store_open(&p->dev, NULL, &why);
	struct vol *v;

	if (!st) {
		assert_true(p->dead); /* only the power cut may stop it */
		return p->calls;
	}
	if (store_vol_open(st, "v", &v) == 0) {
		char *b = malloc(MiB);
		memset(b, 'w', MiB);
		*acked = store_write(v, b, 0, MiB, STORE_FUA) == 0 && !p->dead;
		free(b);
		store_vol_close(v);
	}
	store_close(st);
	return p->calls;
}

static void test_upgrade_crash_points(void **state)
{
	bool acked = false;
	struct faultdev *p = fixture();
	long total = workload(p, &acked);

	assert_true(acked);
	faultdev_free(p);
	assert_true(total > 5);
	for (long n = 0; n <= total; n++) {
		bool ok = false;
		const char *why = NULL;

		p = fixture();
		p->budget = n;
		workload(p, &ok);
		faultdev_power_on_rotate(p, n);
		struct store *st = store_open(&p->dev, NULL, &why);
		if (!st)
			fail_msg("crash point %ld: the pool does not open: %s", n, why);
		assert_int_equal(store_check(st), 0);
		/* 'w' is there if acknowledged; if not, it may or may not be */
		uint64_t len;
		char *got = read_export(st, 0, &len);
		bool wrote = got[0] == 'w';
		free(got);
		assert_true(wrote || !ok);
		expect_data(st, wrote);
		store_close(st);
		faultdev_free(p);
	}
	print_message("%ld crash points\n", total + 1);
}

static int setup_v2(void **state)
{
	from = FMT_VERSION_V2;
	return setup(state);
}

static int setup_v3(void **state)
{
	from = FMT_VERSION_V3;
	return setup(state);
}

static int setup_v4(void **state)
{
	from = FMT_VERSION_V4;
	return setup(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_upgrade),
	    cmocka_unit_test(test_upgrade_crash_points),
	};
	int failed = cmocka_run_group_tests_name("from version 2", tests, setup_v2, teardown);
	failed += cmocka_run_group_tests_name("from version 3", tests, setup_v3, teardown);
	if (FMT_VERSION > FMT_VERSION_V4) /* an upgrade once version 5 is written */
		failed += cmocka_run_group_tests_name("from version 4", tests, setup_v4, teardown);
	return failed;
}
