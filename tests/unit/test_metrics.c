/* test_metrics.c — the Prometheus text format (src/metrics.c): HELP and
 * TYPE lines, label values and help text escaped, floats spelled as
 * Prometheus does, histograms cumulative with the +Inf bucket equal to
 * _count and _sum in exact seconds; a whole page rendered from a real
 * store (in-memory device) whose per-volume counters (src/iostats.c) moved
 * by exactly the requests made, errors and BLOCK_STATUS included; series
 * only for the records that had I/O or are attached, with the pool's
 * volume, snapshot and provisioned gauges exact through creates,
 * resizes, rollbacks and deletes; and a page from 20,000 idle snapshots
 * that stays small and fast. */
#undef NDEBUG
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "blkdev.h"
#include "faultdev.h"
#include "metrics.h"
#include "store.h"
#include "testpool.h"

#define BS 4096u

static void test_family_and_escaping(void **state)
{
	struct metrics_text t = {0};
	const struct metrics_label l[] = {{"volume", "a\"b\\c\nd"}, {"op", "read"}};

	metrics_put_family(&t, "x_total", "counter", "Help with \\ and\nnewline \"quoted\".");
	metrics_put_u64(&t, "x_total", l, 2, 18446744073709551615ull);
	metrics_put_u64(&t, "x_total", NULL, 0, 0);
	assert_false(t.oom);
	assert_string_equal(t.buf, "# HELP x_total Help with \\\\ and\\nnewline \"quoted\".\n"
	                           "# TYPE x_total counter\n"
	                           "x_total{volume=\"a\\\"b\\\\c\\nd\",op=\"read\"} "
	                           "18446744073709551615\n"
	                           "x_total 0\n");
	metrics_text_free(&t);
}

static void test_doubles(void **state)
{
	struct metrics_text t = {0};

	metrics_put_double(&t, "g", NULL, 0, NAN);
	metrics_put_double(&t, "g", NULL, 0, INFINITY);
	metrics_put_double(&t, "g", NULL, 0, -INFINITY);
	metrics_put_double(&t, "g", NULL, 0, 2.5);
	assert_string_equal(t.buf, "g NaN\ng +Inf\ng -Inf\ng 2.5\n");
	metrics_text_free(&t);
}

static void test_histogram(void **state)
{
	struct metrics_text t = {0};
	const uint64_t bound[] = {25000, 1000000, 1500000000};
	const uint64_t count[] = {3, 0, 2, 4}; /* the last: above every bound */
	const struct metrics_label l[] = {{"op", "write"}};

	metrics_put_histogram(&t, "h_seconds", l, 1, bound, count, 4, 12500000001ull);
	assert_string_equal(t.buf, "h_seconds_bucket{op=\"write\",le=\"0.000025\"} 3\n"
	                           "h_seconds_bucket{op=\"write\",le=\"0.001\"} 3\n"
	                           "h_seconds_bucket{op=\"write\",le=\"1.5\"} 5\n"
	                           "h_seconds_bucket{op=\"write\",le=\"+Inf\"} 9\n"
	                           "h_seconds_sum{op=\"write\"} 12.500000001\n"
	                           "h_seconds_count{op=\"write\"} 9\n");
	metrics_text_free(&t);

	const uint64_t none[] = {0, 0, 0, 0};
	metrics_put_histogram(&t, "h", NULL, 0, bound, none, 4, 0);
	assert_non_null(strstr(t.buf, "h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"));
	metrics_text_free(&t);
}

/* The value of the sample line that starts with prefix ("name{...} "). */
static uint64_t sample(const char *page, const char *prefix)
{
	char want[256];
	snprintf(want, sizeof(want), "\n%s ", prefix);
	const char *p = strstr(page, want);
	if (!p) {
		fprintf(stderr, "no sample %s in:\n%s\n", prefix, page);
		fail();
	}
	return strtoull(p + strlen(want), NULL, 10);
}

/* Is there a "# HELP name " and a "# TYPE name " line before upto? */
static bool announced(const char *page, const char *upto, const char *name)
{
	char help[160], type[160];
	snprintf(help, sizeof(help), "# HELP %s ", name);
	snprintf(type, sizeof(type), "# TYPE %s ", name);
	const char *h = strstr(page, help), *t = strstr(page, type);
	return h && t && h < upto && t < upto;
}

/* Every sample's family (a histogram's or summary's for its _bucket, _sum
 * and _count) was announced by HELP and TYPE before it. */
static void families_announced(const char *page)
{
	static const char *const suffix[] = {"_bucket", "_sum", "_count"};

	for (const char *line = page; *line;) {
		const char *end = strchr(line, '\n');
		assert_non_null(end);
		if (*line != '#') {
			char name[128];
			size_t n = strcspn(line, "{ ");
			assert_true(n < sizeof(name));
			memcpy(name, line, n);
			name[n] = '\0';
			bool ok = announced(page, line, name);
			for (unsigned i = 0; i < 3 && !ok; i++) {
				size_t k = strlen(suffix[i]);
				if (n > k && !strcmp(name + n - k, suffix[i])) {
					name[n - k] = '\0';
					ok = announced(page, line, name);
					name[n - k] = suffix[i][0];
				}
			}
			if (!ok)
				fail_msg("sample of %s before its HELP and TYPE lines", name);
		}
		line = end + 1;
	}
}

static void test_render_store(void **state)
{
	struct blkdev *dev = blkdev_mem_new(128u << 20);
	struct metrics_text t = {0};
	struct store_extent ext[4];
	char buf[3 * BS] = {1};
	struct vol *v, *s;
	unsigned n;
	struct store *st = testpool_volume(dev, NULL, "v", 8u << 20, &v);

	assert_int_equal(store_write(v, buf, 0, 2 * BS, 0), 0);
	assert_int_equal(store_write(v, buf, 100, 1000, STORE_FUA), 0);
	assert_int_equal(store_read(v, buf, 0, 3 * BS), 0);
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_trim(v, BS, BS, 0), 0);
	assert_int_equal(store_zero(v, 4 * BS, 2 * BS, 0), 0);
	assert_int_equal(store_read(v, buf, 8u << 20, 1), -EINVAL); /* past the end */
	assert_int_equal(store_map(v, 0, 16 * BS, ext, 4, &n), 0);
	assert_int_equal(store_snap_create(st, "v@s"), 0);
	assert_int_equal(store_vol_open(st, "v@s", &s), 0);
	assert_int_equal(store_write(s, buf, 0, BS, 0), -EPERM);
	assert_int_equal(store_read(s, buf, 0, BS), 0);

	metrics_render(&t, st, NULL);
	assert_false(t.oom);
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"v\",op=\"write\"}"), 2);
	assert_int_equal(sample(t.buf, "cowbd_volume_bytes_total{volume=\"v\",op=\"write\"}"),
	                 2 * BS + 1000);
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"v\",op=\"read\"}"), 2);
	assert_int_equal(sample(t.buf, "cowbd_volume_errors_total{volume=\"v\",op=\"read\"}"), 1);
	assert_int_equal(sample(t.buf, "cowbd_volume_bytes_total{volume=\"v\",op=\"read\"}"),
	                 3 * BS);
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"v\",op=\"flush\"}"), 1);
	assert_int_equal(sample(t.buf, "cowbd_volume_bytes_total{volume=\"v\",op=\"trim\"}"), BS);
	assert_int_equal(sample(t.buf, "cowbd_volume_bytes_total{volume=\"v\",op=\"zero\"}"),
	                 2 * BS);
	assert_int_equal(
	    sample(t.buf, "cowbd_volume_bytes_total{volume=\"v\",op=\"block_status\"}"), 16 * BS);
	assert_int_equal(sample(t.buf, "cowbd_volume_errors_total{volume=\"v@s\",op=\"write\"}"),
	                 1);
	assert_int_equal(sample(t.buf, "cowbd_volume_bytes_total{volume=\"v@s\",op=\"write\"}"), 0);
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"v@s\",op=\"read\"}"), 1);
	/* every timed request in a histogram, the failed ones too */
	assert_int_equal(sample(t.buf, "cowbd_volume_request_duration_seconds_count{volume=\"v\","
	                               "op=\"read\"}"),
	                 2);
	assert_int_equal(sample(t.buf, "cowbd_volume_request_duration_seconds_bucket{volume=\"v\","
	                               "op=\"write\",le=\"+Inf\"}"),
	                 2);
	assert_int_equal(sample(t.buf, "cowbd_volume_request_duration_seconds_count{volume=\"v@s\","
	                               "op=\"write\"}"),
	                 1);
	assert_null(strstr(t.buf, "op=\"cache\""));
	/* pool: what the writes cost against what was written */
	assert_int_equal(sample(t.buf, "cowbd_pool_size_bytes"), 128u << 20);
	assert_int_equal(sample(t.buf, "cowbd_client_written_bytes_total"), 2 * BS + 1000);
	assert_int_equal(sample(t.buf, "cowbd_pool_provisioned_bytes"), 8u << 20);
	assert_int_equal(sample(t.buf, "cowbd_pool_snapshots"), 1);
	assert_true(sample(t.buf, "cowbd_checkpoint_duration_seconds_count") >= 1);
	assert_null(strstr(t.buf, "cowbd_clients")); /* no server given */
	families_announced(t.buf);
	metrics_text_free(&t);
	store_vol_close(s);
	store_vol_close(v);
	store_close(st);
}

/* Does the page hold any sample of record name ("volume=\"name\"")? */
static bool has_series(const char *page, const char *name)
{
	char want[128];
	snprintf(want, sizeof(want), "{volume=\"%s\"", name);
	return strstr(page, want) != NULL;
}

static void render(struct metrics_text *t, struct store *st)
{
	metrics_text_free(t);
	metrics_render(t, st, NULL);
	assert_false(t->oom);
	families_announced(t->buf);
}

/* The pool gauges against a listing of every record (cowctl pool status
 * counts the same way). */
static void expect_pool(struct store *st, const char *page)
{
	struct store_vol_info *all;
	uint64_t prov = 0, nvol = 0;
	size_t n;

	assert_int_equal(store_list_names(st, &all, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (!all[i].snapshot) {
			prov += all[i].size;
			nvol++;
		}
	free(all);
	assert_int_equal(sample(page, "cowbd_pool_volumes"), nvol);
	assert_int_equal(sample(page, "cowbd_pool_snapshots"), n - nvol);
	assert_int_equal(sample(page, "cowbd_pool_provisioned_bytes"), prov);
}

/* Series only for the records that had I/O since start or are attached
 * now; the pool gauges count every record. */
static void test_render_which(void **state)
{
	struct faultdev *p = faultdev_new(128u << 20);
	struct metrics_text t = {0};
	char buf[BS] = {1};
	struct vol *v, *w, *s;
	struct store *st = testpool_volume(&p->dev, NULL, "v", 8u << 20, &v);

	assert_int_equal(store_snap_create(st, "v@idle"), 0);
	assert_int_equal(store_snap_create(st, "v@read"), 0);
	assert_int_equal(store_vol_create(st, "w", 4u << 20), 0);
	assert_int_equal(store_clone(st, "v@idle", "c"), 0);
	render(&t, st);
	/* attached, no I/O yet: its series, at zero */
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"v\",op=\"read\"}"), 0);
	assert_int_equal(sample(t.buf, "cowbd_volume_size_bytes{volume=\"v\"}"), 8u << 20);
	assert_false(has_series(t.buf, "v@idle"));
	assert_false(has_series(t.buf, "v@read"));
	assert_false(has_series(t.buf, "w"));
	assert_false(has_series(t.buf, "c"));
	assert_int_equal(sample(t.buf, "cowbd_pool_volumes"), 3);
	assert_int_equal(sample(t.buf, "cowbd_pool_snapshots"), 2);
	assert_int_equal(sample(t.buf, "cowbd_pool_provisioned_bytes"), (16u + 4u) << 20);
	expect_pool(st, t.buf);

	/* a read through a snapshot: its series stay once it is closed */
	assert_int_equal(store_vol_open(st, "v@read", &s), 0);
	assert_int_equal(store_read(s, buf, 0, BS), 0);
	store_vol_close(s);
	/* attached and idle: series while attached, none once closed */
	assert_int_equal(store_vol_open(st, "w", &w), 0);
	render(&t, st);
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"v@read\",op=\"read\"}"), 1);
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"w\",op=\"write\"}"), 0);
	assert_int_equal(sample(t.buf, "cowbd_volume_request_duration_seconds_count{volume=\"w\","
	                               "op=\"flush\"}"),
	                 0);
	assert_false(has_series(t.buf, "v@idle"));
	store_vol_close(w);
	render(&t, st);
	assert_false(has_series(t.buf, "w"));
	assert_true(has_series(t.buf, "v@read"));

	/* the provisioned sum follows resizes, rollbacks and deletes */
	assert_int_equal(store_vol_resize(st, "w", 6u << 20, 0), 0);
	assert_int_equal(store_snap_create(st, "w@small"), 0);
	assert_int_equal(store_vol_resize(st, "w", 5u << 20, STORE_RESIZE_SHRINK), 0);
	render(&t, st);
	assert_int_equal(sample(t.buf, "cowbd_pool_provisioned_bytes"), (16u + 5u) << 20);
	expect_pool(st, t.buf);
	assert_int_equal(store_rollback(st, "w@small"), 0);
	render(&t, st);
	assert_int_equal(sample(t.buf, "cowbd_pool_provisioned_bytes"), (16u + 6u) << 20);
	expect_pool(st, t.buf);
	assert_int_equal(store_snap_delete(st, "w@small"), 0);
	assert_int_equal(store_vol_delete(st, "w"), 0);
	assert_int_equal(store_vol_delete(st, "c"), 0);
	assert_int_equal(store_snap_delete(st, "v@read"), 0);
	render(&t, st);
	assert_false(has_series(t.buf, "v@read"));
	assert_int_equal(sample(t.buf, "cowbd_pool_volumes"), 1);
	assert_int_equal(sample(t.buf, "cowbd_pool_snapshots"), 1);
	assert_int_equal(sample(t.buf, "cowbd_pool_provisioned_bytes"), 8u << 20);
	expect_pool(st, t.buf);
	assert_int_equal(store_check(st), 0);
	store_vol_close(v);
	/* after a power cut (the ops replayed) and after a clean close (the
	 * table loaded from the checkpoint): the same counts, and no series
	 * (nothing attached, no I/O since start) */
	for (int round = 0; round < 2; round++) {
		if (round == 0)
			faultdev_power_off(p);
		store_close(st);
		faultdev_power_on(p, false);
		st = testpool_open(&p->dev, NULL);
		assert_int_equal(store_check(st), 0);
		render(&t, st);
		assert_null(strstr(t.buf, "{volume="));
		assert_int_equal(sample(t.buf, "cowbd_pool_volumes"), 1);
		assert_int_equal(sample(t.buf, "cowbd_pool_snapshots"), 1);
		assert_int_equal(sample(t.buf, "cowbd_pool_provisioned_bytes"), 8u << 20);
	}
	metrics_text_free(&t);
	store_close(st);
	faultdev_free(p);
}

/* Snapshots made for the scale test (cc -DSCALE_SNAPS=... for others). */
#ifndef SCALE_SNAPS
#define SCALE_SNAPS 20000u
#endif

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A pool of SCALE_SNAPS snapshots that never had I/O and one busy volume:
 * the page is the busy volume's series and the pool's, well under 200 KB,
 * rendered well under a second (issue 13: at 10^5 snapshots every
 * snapshot's ~80 series made millions of lines). */
static void test_render_scale(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256u << 20);
	struct metrics_text t = {0};
	char name[64], buf[BS] = {1};
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 8u << 20, &v);

	for (unsigned i = 0; i < SCALE_SNAPS; i++) {
		snprintf(name, sizeof(name), "v@s%05u", i);
		assert_int_equal(store_snap_create(st, name), 0);
	}
	assert_int_equal(store_write(v, buf, 0, BS, 0), 0);
	store_vol_close(v);
	double t0 = now_s();
	metrics_render(&t, st, NULL);
	double dt = now_s() - t0;
	assert_false(t.oom);
	printf("metrics page with %u idle snapshots: %zu bytes in %.2f ms\n", SCALE_SNAPS, t.len,
	       dt * 1e3);
	assert_true(t.len < 200u * 1024);
	assert_true(dt < 0.5);
	assert_int_equal(sample(t.buf, "cowbd_volume_ops_total{volume=\"v\",op=\"write\"}"), 1);
	assert_null(strstr(t.buf, "{volume=\"v@"));
	assert_int_equal(sample(t.buf, "cowbd_pool_snapshots"), SCALE_SNAPS);
	assert_int_equal(sample(t.buf, "cowbd_pool_volumes"), 1);
	assert_int_equal(sample(t.buf, "cowbd_pool_provisioned_bytes"), 8u << 20);
	metrics_text_free(&t);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_family_and_escaping), cmocka_unit_test(test_doubles),
	    cmocka_unit_test(test_histogram),           cmocka_unit_test(test_render_store),
	    cmocka_unit_test(test_render_which),        cmocka_unit_test(test_render_scale),
	};
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
