/* metrics.h — Prometheus metrics over HTTP: `cowbd --metrics HOST:PORT`
 * serves the text exposition format (version 0.0.4) at /metrics from a
 * thread of libmicrohttpd's own, so a scrape never runs on, or waits for,
 * the event loop.  Every metric, its type, labels and meaning:
 * docs/METRICS.md.
 *
 * A scrape reads the store (store_get_stats, a no-op job on the log
 * thread, and store_vol_io: the table's totals and a copy of the records
 * with I/O since start or attached, under the volume table's lock) and
 * the connection server's counters (conn_server_get_stats, atomics).
 * Per-volume series are given for those records only.  Nothing is kept
 * between scrapes.
 */
#ifndef COWBD_METRICS_H
#define COWBD_METRICS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct conn_server;
struct metrics;

/* Is hostport an address metrics can serve on: "HOST:PORT" or
 * "[IPV6]:PORT" with a port 1-65535?  0, or -EINVAL with a one-line reason
 * in err.  Checks the form only (nothing is resolved or bound). */
int metrics_check_addr(const char *hostport, char *err, size_t errlen);

/* Serve /metrics on every address hostport resolves to (GET or HEAD; any
 * other path is 404, any other method 405).  srv may be NULL (no
 * connection metrics).  st and srv must outlive metrics_stop.  Returns
 * the server, or NULL with a one-line reason in err ("listen ADDR:
 * Address already in use").  The thread it starts blocks every signal. */
struct metrics *metrics_start(const char *hostport, struct store *st, struct conn_server *srv,
                              char *err, size_t errlen);

/* Stop serving (a scrape in progress finishes first) and free m.  NULL is
 * a no-op. */
void metrics_stop(struct metrics *m);

/* ---- the text format (exposed for tests/unit/test_metrics.c) ---------- */

/* A growing text buffer; oom is set (and text dropped) when it cannot
 * grow. */
struct metrics_text {
	char *buf;
	size_t len, cap;
	bool oom;
};

struct metrics_label {
	const char *name, *value;
};

/* "# HELP name help" (backslash and newline escaped) and "# TYPE name
 * type": once per metric family, before its samples. */
void metrics_put_family(struct metrics_text *t, const char *name, const char *type,
                        const char *help);
/* One sample "name{l1="v1",...} value": label values with backslash,
 * double quote and newline escaped; no braces when nl is 0. */
void metrics_put_u64(struct metrics_text *t, const char *name, const struct metrics_label *l,
                     unsigned nl, uint64_t v);
/* The same with a float value: NaN, +Inf and -Inf spelled as Prometheus
 * does. */
void metrics_put_double(struct metrics_text *t, const char *name, const struct metrics_label *l,
                        unsigned nl, double v);
/* A histogram's samples: name_bucket{...,le="B"} for each of the nb-1
 * upper bounds bound_ns[] (in seconds) and le="+Inf", cumulative over
 * count[0..nb) (per-bucket counts), then name_sum (sum_ns in seconds) and
 * name_count (the +Inf bucket). */
void metrics_put_histogram(struct metrics_text *t, const char *name, const struct metrics_label *l,
                           unsigned nl, const uint64_t *bound_ns, const uint64_t *count,
                           unsigned nb, uint64_t sum_ns);
/* The whole page for st (and srv, when not NULL) into t. */
void metrics_render(struct metrics_text *t, struct store *st, struct conn_server *srv);
void metrics_text_free(struct metrics_text *t);

#endif
