/* test_readway.c — which way a large READ on a loop thread goes (conn.c:
 * conn_way_pick, conn_way_note): a view of the pool's mapping or a copy
 * into the request's buffer, whichever the loop measured cheaper per byte.
 *   - each way is tried once before either is preferred;
 *   - the cheaper way is kept, and the other tried exactly every
 *     CONN_WAY_PROBE-th READ;
 *   - when the kept way gets dearer than the other, the choice follows
 *     within a few READs, both ways round;
 *   - when the other way gets cheaper, the probes find it within a few,
 *     both ways round (a machine where views pay, and one where not);
 *   - one READ slowed by the scheduler does not turn the choice;
 *   - a way timed at 0 ns (a coarse clock) can still be found dearer;
 *   - samples of any size (a second, a gigabyte) leave sane figures;
 *   - views that are declined (holes, blocks not in memory, a pool with
 *     no mapping) cost their try and the copy that follows, so the loop
 *     stops trying them but for the probes (conn_way_declined).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "conn_int.h"

#define MiB (1u << 20)

/* Pick and note n READs of 1 MiB costing cost[way] ns each; how many
 * went each way (*views, *copies) and the last pick made outside a probe. */
static unsigned run(struct conn_ways *w, unsigned n, const uint64_t cost[2], unsigned *views,
                    unsigned *copies)
{
	unsigned last = CONN_WAY_VIEW;

	*views = *copies = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned way = conn_way_pick(w);
		if (w->n % CONN_WAY_PROBE)
			last = way;
		if (way == CONN_WAY_VIEW)
			(*views)++;
		else
			(*copies)++;
		conn_way_note(w, way, cost[way], MiB);
	}
	return last;
}

static void test_both_tried_first(void **state)
{
	(void)state;
	struct conn_ways w = {0};

	assert_int_equal(conn_way_pick(&w), CONN_WAY_VIEW);
	assert_int_equal(conn_way_pick(&w), CONN_WAY_VIEW); /* until a view is timed */
	conn_way_note(&w, CONN_WAY_VIEW, 400000, MiB);
	assert_int_equal(conn_way_pick(&w), CONN_WAY_COPY);
	conn_way_note(&w, CONN_WAY_COPY, 100000, MiB);
	assert_int_equal(conn_way_pick(&w), CONN_WAY_COPY);
}

/* The cheaper way, and the other only on the probes. */
static void expect_kept(const uint64_t cost[2], unsigned want)
{
	struct conn_ways w = {0};
	unsigned views, copies, n = 100 * CONN_WAY_PROBE;

	run(&w, 4 * CONN_WAY_PROBE, cost, &views, &copies);
	unsigned last = run(&w, n, cost, &views, &copies);
	assert_int_equal(last, want);
	assert_int_equal(want == CONN_WAY_VIEW ? copies : views, n / CONN_WAY_PROBE);
}

static void test_cheaper_kept(void **state)
{
	(void)state;
	const uint64_t view_cheap[2] = {[CONN_WAY_VIEW] = 60000, [CONN_WAY_COPY] = 100000};
	const uint64_t copy_cheap[2] = {[CONN_WAY_VIEW] = 400000, [CONN_WAY_COPY] = 100000};

	expect_kept(view_cheap, CONN_WAY_VIEW);
	expect_kept(copy_cheap, CONN_WAY_COPY);
}

/* READs until a pick outside a probe is want (at most max; fails past it),
 * each costing cost[way]. */
static unsigned reads_until(struct conn_ways *w, const uint64_t cost[2], unsigned want,
                            unsigned max)
{
	for (unsigned i = 1; i <= max; i++) {
		unsigned way = conn_way_pick(w);
		conn_way_note(w, way, cost[way], MiB);
		if (way == want && w->n % CONN_WAY_PROBE)
			return i;
	}
	fail_msg("still not way %u after %u READs", want, max);
	return 0;
}

/* After the switch to `to`: 20 probes' worth of READs, from only on the
 * probes. */
static void expect_settled(struct conn_ways *w, const uint64_t cost[2], unsigned from)
{
	unsigned views, copies;

	assert_int_equal(run(w, 20 * CONN_WAY_PROBE, cost, &views, &copies), !from);
	assert_int_equal(from == CONN_WAY_VIEW ? views : copies, 20);
}

/* Settled on from, then from gets 8 times dearer (twice the other): the
 * next few READs, timed on from, turn the choice. */
static void expect_follows(unsigned from)
{
	unsigned to = !from, views, copies;
	uint64_t cost[2];
	struct conn_ways w = {0};

	cost[from] = 50000;
	cost[to] = 100000;
	assert_int_equal(run(&w, 20 * CONN_WAY_PROBE, cost, &views, &copies), from);
	cost[from] = 400000;
	assert_true(reads_until(&w, cost, to, 16) <= 16);
	expect_settled(&w, cost, from);
}

static void test_follows_change(void **state)
{
	(void)state;
	expect_follows(CONN_WAY_VIEW);
	expect_follows(CONN_WAY_COPY);
}

/* Settled on from, then the other way (timed only on probes) gets four
 * times cheaper than it was, half of from: within 8 probes it is kept. */
static void expect_found(unsigned from)
{
	unsigned to = !from, views, copies;
	uint64_t cost[2];
	struct conn_ways w = {0};

	cost[from] = 100000;
	cost[to] = 200000;
	assert_int_equal(run(&w, 20 * CONN_WAY_PROBE, cost, &views, &copies), from);
	cost[to] = 50000;
	reads_until(&w, cost, to, 8 * CONN_WAY_PROBE);
	expect_settled(&w, cost, from);
}

static void test_found_by_probes(void **state)
{
	(void)state;
	expect_found(CONN_WAY_VIEW);
	expect_found(CONN_WAY_COPY);
}

/* Views timed at 0 ns for a while (a clock that did not move), copies at
 * 100 µs; then views take 400 µs: the choice turns to copies. */
static void test_zero_figure_rises(void **state)
{
	(void)state;
	const uint64_t zero[2] = {[CONN_WAY_VIEW] = 0, [CONN_WAY_COPY] = 100000};
	const uint64_t cost[2] = {[CONN_WAY_VIEW] = 400000, [CONN_WAY_COPY] = 100000};
	struct conn_ways w = {0};
	unsigned views, copies;

	assert_int_equal(run(&w, 4 * CONN_WAY_PROBE, zero, &views, &copies), CONN_WAY_VIEW);
	reads_until(&w, cost, CONN_WAY_COPY, 64);
	expect_settled(&w, cost, CONN_WAY_VIEW);
}

/* A view READ that waited 50 ms for the CPU, where views take 60 µs and
 * copies 100 µs: the next picks are still views. */
static void test_one_slow_read(void **state)
{
	(void)state;
	const uint64_t cost[2] = {[CONN_WAY_VIEW] = 60000, [CONN_WAY_COPY] = 100000};
	struct conn_ways w = {0};
	unsigned views, copies;

	run(&w, 10 * CONN_WAY_PROBE, cost, &views, &copies);
	while ((w.n + 1) % CONN_WAY_PROBE == 0 || (w.n + 2) % CONN_WAY_PROBE == 0)
		conn_way_note(&w, conn_way_pick(&w), 60000, MiB); /* no probe next */
	assert_int_equal(conn_way_pick(&w), CONN_WAY_VIEW);
	conn_way_note(&w, CONN_WAY_VIEW, 50000000, MiB);
	assert_int_equal(conn_way_pick(&w), CONN_WAY_VIEW);
}

/* Figures stay within their bounds whatever a sample says, and the
 * comparison still works after. */
static void test_large_samples(void **state)
{
	(void)state;
	const uint64_t cost[2] = {[CONN_WAY_VIEW] = 400000, [CONN_WAY_COPY] = 100000};
	struct conn_ways w = {0};
	unsigned views, copies;

	for (int i = 0; i < 1000; i++) {
		conn_way_note(&w, CONN_WAY_VIEW, UINT64_MAX, UINT64_MAX);
		conn_way_note(&w, CONN_WAY_COPY, 10000000000ull, 1ull << 30);
	}
	for (int i = 0; i < 2; i++) {
		assert_true(w.ns[i] <= 1000000000u);
		assert_true(w.bytes[i] <= 1u << 28);
	}
	assert_int_equal(run(&w, 40 * CONN_WAY_PROBE, cost, &views, &copies), CONN_WAY_COPY);
}

/* n READs where every view is declined after try ns: copied on the loop
 * at copy ns (the view way noted with both), or, with copy 0, sent to a
 * reader thread (conn_way_declined; no copy noted).  How many views were
 * tried. */
static unsigned declined_run(struct conn_ways *w, unsigned n, uint64_t try, uint64_t copy)
{
	unsigned views = 0;

	for (unsigned i = 0; i < n; i++) {
		unsigned way = conn_way_pick(w);
		views += way == CONN_WAY_VIEW;
		if (way == CONN_WAY_VIEW && copy)
			conn_way_note(w, CONN_WAY_VIEW, try + copy, MiB);
		else if (way == CONN_WAY_VIEW)
			conn_way_declined(w, try, MiB);
		else if (copy)
			conn_way_note(w, CONN_WAY_COPY, copy, MiB);
	}
	return views;
}

static void test_declined_views(void **state)
{
	(void)state;
	struct conn_ways w = {0};

	/* Copied on the loop: views only on the probes once settled. */
	declined_run(&w, 16, 20000, 100000);
	assert_int_equal(declined_run(&w, 20 * CONN_WAY_PROBE, 20000, 100000), 20);

	/* Nothing copied on the loop (a pool with no mapping, nothing
	 * cached): one view tried, then none. */
	w = (struct conn_ways){0};
	assert_int_equal(declined_run(&w, 20 * CONN_WAY_PROBE, 20000, 0), 1);

	/* Copies cost 100 us on the loop, views were cheaper; then every
	 * view is declined (20 us) and its READ goes to a reader: the view
	 * way is charged the copy it caused, and copies are kept. */
	const uint64_t cost[2] = {[CONN_WAY_VIEW] = 60000, [CONN_WAY_COPY] = 100000};
	unsigned views, copies;
	w = (struct conn_ways){0};
	assert_int_equal(run(&w, 10 * CONN_WAY_PROBE, cost, &views, &copies), CONN_WAY_VIEW);
	declined_run(&w, 16, 20000, 0);
	for (unsigned i = 0; i < 20 * CONN_WAY_PROBE; i++) {
		unsigned way = conn_way_pick(&w);
		if (w.n % CONN_WAY_PROBE)
			assert_int_equal(way, CONN_WAY_COPY);
		if (way == CONN_WAY_VIEW)
			conn_way_declined(&w, 20000, MiB);
		else
			conn_way_note(&w, CONN_WAY_COPY, cost[CONN_WAY_COPY], MiB);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_both_tried_first),  cmocka_unit_test(test_cheaper_kept),
	    cmocka_unit_test(test_follows_change),    cmocka_unit_test(test_found_by_probes),
	    cmocka_unit_test(test_zero_figure_rises), cmocka_unit_test(test_one_slow_read),
	    cmocka_unit_test(test_large_samples),     cmocka_unit_test(test_declined_views),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
