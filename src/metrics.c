/* metrics.c — the Prometheus endpoint: `--metrics HOST:PORT` serves the
 * text exposition format 0.0.4 at /metrics (docs/METRICS.md lists every
 * metric), and the text format itself (families, escaped labels,
 * cumulative histograms).
 *
 * libmicrohttpd runs the HTTP side on its own thread (one per listening
 * address), so a scrape never touches the event loop.  Each scrape reads
 * what it shows afresh: the pool's counters through store_get_stats (a
 * no-op job on the log thread: it waits for the round in progress), the
 * volume table's totals and the active records' counters through
 * store_vol_io (one pass under the volume table's lock, copying only the
 * records with I/O since start or attached: a pool of 10^5 idle snapshots
 * gives a page of the pool's series and a few volumes', not millions of
 * lines) and the connection counters (atomics).  Nothing here is on the
 * data path.
 *
 * Layer: daemon side, beside control.c: over store and conn, below main.
 * Locks: none of its own; the HTTP threads share nothing but st and srv,
 * which outlive them (metrics_stop joins them first). */
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "metrics.h"
#include "say.h"
#include "sockets.h"
#include "store.h"

#define METRICS_MAX_LISTEN 4  /* addresses one HOST may resolve to */
#define METRICS_MAX_CONNS  16 /* scrapers at once, per address */
#define METRICS_TIMEOUT    10 /* seconds an idle HTTP connection is kept */
#define METRICS_TYPE       "text/plain; version=0.0.4; charset=utf-8"

struct metrics {
	struct store *st;
	struct conn_server *srv;
	struct MHD_Daemon *d[METRICS_MAX_LISTEN];
	unsigned n;
};

/* ---- the text format ----------------------------------------------------- */

/* Room for n more bytes and the terminating NUL; false (oom) if none. */
static bool reserve(struct metrics_text *t, size_t n)
{
	if (t->oom)
		return false;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 16384;
		while (t->len + n + 1 > cap)
			cap *= 2;
		char *b = realloc(t->buf, cap);
		if (!b) {
			t->oom = true;
			return false;
		}
		t->buf = b;
		t->cap = cap;
	}
	return true;
}

static void put(struct metrics_text *t, const char *s, size_t n)
{
	if (!reserve(t, n))
		return;
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	t->buf[t->len] = '\0';
}

static void puts_(struct metrics_text *t, const char *s)
{
	put(t, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3))) putf(struct metrics_text *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n <= 0 || !reserve(t, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(t->buf + t->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
}

/* s with backslash and newline escaped, and double quote too in a label
 * value (quote). */
static void put_escaped(struct metrics_text *t, const char *s, bool quote)
{
	for (const char *p = s; *p; p++) {
		if (*p == '\\')
			puts_(t, "\\\\");
		else if (*p == '\n')
			puts_(t, "\\n");
		else if (*p == '"' && quote)
			puts_(t, "\\\"");
		else
			put(t, p, 1);
	}
}

void metrics_put_family(struct metrics_text *t, const char *name, const char *type,
                        const char *help)
{
	putf(t, "# HELP %s ", name);
	put_escaped(t, help, false);
	putf(t, "\n# TYPE %s %s\n", name, type);
}

/* name{l...,extra="xv"} with no trailing space (extra may be NULL). */
static void put_name(struct metrics_text *t, const char *name, const struct metrics_label *l,
                     unsigned nl, const char *extra, const char *xv)
{
	puts_(t, name);
	if (!nl && !extra)
		return;
	puts_(t, "{");
	for (unsigned i = 0; i < nl; i++) {
		putf(t, "%s%s=\"", i ? "," : "", l[i].name);
		put_escaped(t, l[i].value, true);
		puts_(t, "\"");
	}
	if (extra) {
		putf(t, "%s%s=\"", nl ? "," : "", extra);
		put_escaped(t, xv, true);
		puts_(t, "\"");
	}
	puts_(t, "}");
}

void metrics_put_u64(struct metrics_text *t, const char *name, const struct metrics_label *l,
                     unsigned nl, uint64_t v)
{
	put_name(t, name, l, nl, NULL, NULL);
	putf(t, " %llu\n", (unsigned long long)v);
}

void metrics_put_double(struct metrics_text *t, const char *name, const struct metrics_label *l,
                        unsigned nl, double v)
{
	put_name(t, name, l, nl, NULL, NULL);
	if (isnan(v))
		puts_(t, " NaN\n");
	else if (isinf(v))
		puts_(t, v > 0 ? " +Inf\n" : " -Inf\n");
	else
		putf(t, " %.17g\n", v);
}

/* ns as decimal seconds, exactly: "0.000025", "1", "12.5". */
static void seconds(char *out, size_t len, uint64_t ns)
{
	unsigned long long s = ns / 1000000000u, frac = ns % 1000000000u;
	int n = snprintf(out, len, "%llu.%09llu", s, frac);

	while (n > 0 && out[n - 1] == '0')
		out[--n] = '\0';
	if (n > 0 && out[n - 1] == '.')
		out[--n] = '\0';
}

void metrics_put_histogram(struct metrics_text *t, const char *name, const struct metrics_label *l,
                           unsigned nl, const uint64_t *bound_ns, const uint64_t *count,
                           unsigned nb, uint64_t sum_ns)
{
	char sub[128], le[32];
	uint64_t cum = 0;

	snprintf(sub, sizeof(sub), "%s_bucket", name);
	for (unsigned i = 0; i < nb; i++) {
		cum += count[i];
		if (i + 1 < nb)
			seconds(le, sizeof(le), bound_ns[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		put_name(t, sub, l, nl, "le", le);
		putf(t, " %llu\n", (unsigned long long)cum);
	}
	seconds(le, sizeof(le), sum_ns);
	snprintf(sub, sizeof(sub), "%s_sum", name);
	put_name(t, sub, l, nl, NULL, NULL);
	putf(t, " %s\n", le);
	snprintf(sub, sizeof(sub), "%s_count", name);
	metrics_put_u64(t, sub, l, nl, cum);
}

void metrics_text_free(struct metrics_text *t)
{
	free(t->buf);
	*t = (struct metrics_text){0};
}

/* ---- the page -------------------------------------------------------------- */

/* A family with one unlabelled sample. */
static void one(struct metrics_text *t, const char *name, const char *type, const char *help,
                uint64_t v)
{
	metrics_put_family(t, name, type, help);
	metrics_put_u64(t, name, NULL, 0, v);
}

/* A counter family of seconds with one unlabelled sample, from ns. */
static void one_seconds(struct metrics_text *t, const char *name, const char *help, uint64_t ns)
{
	char v[32];

	metrics_put_family(t, name, "counter", help);
	seconds(v, sizeof(v), ns);
	putf(t, "%s %s\n", name, v);
}

static void render_pool(struct metrics_text *t, const struct store_stats *s,
                        const struct store_vol_totals *tot)
{
	uint64_t allocated = (s->segments - s->segments_free) * s->segment_bytes;
	/* Segment 0 holds the superblocks, never log blocks: not reclaimable
	 * (as `cowctl pool status` counts it). */
	uint64_t in_log = allocated - s->segment_bytes;
	uint64_t live = s->blocks_live * STORE_BLOCK_SIZE;
	uint64_t written = s->bytes_written;

	one(t, "cowbd_pool_size_bytes", "gauge", "Size of the pool.", s->pool_bytes);
	one(t, "cowbd_pool_provisioned_bytes", "gauge",
	    "Sum of the sizes of the volumes (snapshots not counted).", tot->provisioned);
	one(t, "cowbd_pool_allocated_bytes", "gauge",
	    "Bytes in segments that are not free (live data and metadata, and dead blocks not "
	    "yet reclaimed).",
	    allocated);
	one(t, "cowbd_pool_live_bytes", "gauge",
	    "Bytes in blocks referenced by some volume, snapshot or checkpoint.", live);
	one(t, "cowbd_pool_reclaimable_bytes", "gauge",
	    "Allocated bytes (segment 0, the superblocks', aside) not live: what compaction "
	    "and the next checkpoint can give back.",
	    in_log > live ? in_log - live : 0);
	one(t, "cowbd_pool_segments", "gauge", "Segments in the pool.", s->segments);
	one(t, "cowbd_pool_free_segments", "gauge", "Segments free for the log.", s->segments_free);
	one(t, "cowbd_pool_failed", "gauge",
	    "1 after a failed device write or sync: writes fail until restart.", s->failed);
	one(t, "cowbd_pool_read_only", "gauge", "1 when the pool is open read-only.", s->read_only);
	one(t, "cowbd_pool_volumes", "gauge", "Volumes (clones included, snapshots not).",
	    tot->volumes);
	one(t, "cowbd_pool_snapshots", "gauge", "Snapshots.", tot->snapshots);
	one(t, "cowbd_pool_written_bytes_total", "counter",
	    "Bytes written to the pool: the log (data, summaries, tree nodes, checkpoint records, "
	    "compaction copies) and superblock copies.",
	    written);
	one(t, "cowbd_client_written_bytes_total", "counter",
	    "WRITE payload bytes clients wrote (completed without error).", s->client_write_bytes);
	metrics_put_family(
	    t, "cowbd_write_amplification", "gauge",
	    "cowbd_pool_written_bytes_total / cowbd_client_written_bytes_total since "
	    "start (NaN before the first write).");
	metrics_put_double(t, "cowbd_write_amplification", NULL, 0,
	                   s->client_write_bytes ? (double)written / (double)s->client_write_bytes
	                                         : NAN);
	one(t, "cowbd_log_syncs_total", "counter", "Device syncs of the log (group commits).",
	    s->syncs);
	one(t, "cowbd_flush_requests_total", "counter",
	    "FLUSH requests that reached the log thread.", s->flushes);
	one(t, "cowbd_fua_requests_total", "counter",
	    "WRITE, TRIM and WRITE_ZEROES requests with FUA that reached the log thread.",
	    s->fua_requests);
	one(t, "cowbd_compactor_passes_total", "counter", "Compactor passes run.", s->compactions);
	one(t, "cowbd_compactor_moved_blocks_total", "counter",
	    "Live blocks the compactor copied out of victim segments.", s->compacted_blocks);
	one(t, "cowbd_compactor_skipped_bad_blocks", "gauge",
	    "Damaged blocks the compactor left in place.", s->compact_skipped_bad);
	one_seconds(t, "cowbd_compactor_seconds_total",
	            "Time the log thread spent in compactor passes (choosing victims and copying; "
	            "the checkpoint after a pass not included).",
	            s->compact_ns);
	one(t, "cowbd_metadata_cache_nodes", "gauge", "Tree nodes in memory.", s->cache_nodes);
	one(t, "cowbd_metadata_cache_bytes", "gauge",
	    "Memory of the tree nodes in memory (objects and map), bounded by --metadata-cache.",
	    s->cache_bytes);
	one(t, "cowbd_metadata_cache_bound_bytes", "gauge", "The --metadata-cache bound.",
	    s->cache_bound);
	one(t, "cowbd_metadata_cache_loads_total", "counter", "Tree nodes read on demand.",
	    s->cache_loads);
	one(t, "cowbd_metadata_cache_evictions_total", "counter",
	    "Tree nodes dropped from memory to stay under the bound.", s->cache_evictions);
	one(t, "cowbd_freed_segments_total", "counter",
	    "Segments that became free again (after a checkpoint).", s->segments_freed);
	metrics_put_family(t, "cowbd_checkpoint_duration_seconds", "summary",
	                   "Checkpoints written, and the time each took from its start to the "
	                   "superblock naming it (the background sync included).");
	char sum[32];
	seconds(sum, sizeof(sum), s->checkpoint_ns);
	putf(t, "cowbd_checkpoint_duration_seconds_sum %s\n", sum);
	metrics_put_u64(t, "cowbd_checkpoint_duration_seconds_count", NULL, 0, s->checkpoints);
	one_seconds(t, "cowbd_checkpoint_log_thread_seconds_total",
	            "Time the log thread spent on checkpoints: writing nodes and records, a "
	            "synchronous checkpoint's sync and superblock, waiting for and finishing a "
	            "background one.",
	            s->ckpt_log_ns);
	one_seconds(
	    t, "cowbd_checkpoint_sync_seconds_total",
	    "Time the committer thread spent syncing background checkpoints and writing their "
	    "superblocks.",
	    s->ckpt_sync_ns);
	one(t, "cowbd_checkpoint_precopy_nodes_total", "counter",
	    "Tree leaves periodic checkpoints wrote ahead of themselves, between rounds of "
	    "writes.",
	    s->ckpt_precopy_nodes);
	one(t, "cowbd_checkpoint_precopy_pages_total", "counter",
	    "Count pages periodic checkpoints wrote ahead of themselves, between rounds of "
	    "writes.",
	    s->ckpt_precopy_pages);
	one(t, "cowbd_bad_blocks_total", "counter",
	    "Distinct data blocks found failing their checksum.", s->bad_blocks);
	one(t, "cowbd_bad_reads_total", "counter", "Reads answered EIO for a damaged block.",
	    s->bad_reads);
	one(t, "cowbd_read_views_total", "counter",
	    "READs sent from the pool's page cache without a copy (verified in place).",
	    s->read_views);
	one(t, "cowbd_inline_rounds_total", "counter",
	    "Rounds of writes an event loop ran itself while the log thread slept.",
	    s->inline_rounds);
	one(t, "cowbd_log_blocks_rewritten_total", "counter",
	    "Summaries kept open across rounds of writes, written again in place.",
	    s->summary_rewrites);
	one(t, "cowbd_inline_slow_total", "counter",
	    "Inline rounds slower than 2 ms (each turns them off for 100 ms).", s->inline_slow);
}

static void render_conns(struct metrics_text *t, struct conn_server *srv)
{
	struct conn_server_stats c;

	conn_server_get_stats(srv, &c);
	one(t, "cowbd_clients", "gauge", "NBD connections open now.", c.clients);
	one(t, "cowbd_connections_accepted_total", "counter", "NBD connections accepted.",
	    c.accepted);
	one(t, "cowbd_connections_refused_total", "counter",
	    "NBD connections closed at once: over --max-connections.", c.refused);
	metrics_put_family(t, "cowbd_loop_clients", "gauge",
	                   "NBD connections each event loop serves (loop 0: the daemon's own; "
	                   "--loop-threads).");
	for (unsigned i = 0; i < c.loops; i++) {
		char k[12];

		snprintf(k, sizeof(k), "%u", i);
		metrics_put_u64(t, "cowbd_loop_clients", &(struct metrics_label){"loop", k}, 1,
		                c.loop_clients[i]);
	}
}

/* The per-command counter families, in the order of cmd_field's f. */
static const struct {
	const char *name, *help;
} cmd_fam[] = {
    {"cowbd_volume_ops_total", "Requests completed, failed ones included, by command."},
    {"cowbd_volume_bytes_total", "Bytes of the requests completed without error, by command "
                                 "(block_status: the range described)."},
    {"cowbd_volume_errors_total", "Requests completed with an error, by command."},
};

static uint64_t cmd_field(const struct store_vol_io *v, unsigned c, size_t f)
{
	return f == 0 ? v->cmd[c].ops : f == 1 ? v->cmd[c].bytes : v->cmd[c].errors;
}

/* The series of the active records (store_vol_io's: I/O since start, or
 * attached now); the others would be all zeros. */
static void render_volumes(struct metrics_text *t, const struct store_vol_io *v, size_t n)
{
	metrics_put_family(t, "cowbd_volume_size_bytes", "gauge",
	                   "Size of the volume or snapshot.");
	for (size_t i = 0; i < n; i++)
		metrics_put_u64(t, "cowbd_volume_size_bytes",
		                &(struct metrics_label){"volume", v[i].name}, 1, v[i].size);
	for (size_t f = 0; f < sizeof(cmd_fam) / sizeof(cmd_fam[0]); f++) {
		metrics_put_family(t, cmd_fam[f].name, "counter", cmd_fam[f].help);
		for (size_t i = 0; i < n; i++)
			for (unsigned c = 0; c < STORE_IO_CMDS; c++) {
				const struct metrics_label l[] = {{"volume", v[i].name},
				                                  {"op", store_io_cmd_name(c)}};
				/* NBD_CMD_CACHE never reaches the store (proto
				 * answers it: nothing to warm): no series. */
				if (c != STORE_IO_CACHE)
					metrics_put_u64(t, cmd_fam[f].name, l, 2,
					                cmd_field(&v[i], c, f));
			}
	}
	metrics_put_family(t, "cowbd_volume_request_duration_seconds", "histogram",
	                   "Time from submission to completion of READ, WRITE and FLUSH requests.");
	for (size_t i = 0; i < n; i++)
		for (unsigned c = 0; c < STORE_IO_CMDS; c++) {
			int h = store_io_timed(c);
			if (h < 0)
				continue;
			const struct metrics_label l[] = {{"volume", v[i].name},
			                                  {"op", store_io_cmd_name(c)}};
			metrics_put_histogram(t, "cowbd_volume_request_duration_seconds", l, 2,
			                      store_io_bucket_ns, v[i].lat[h].count,
			                      STORE_IO_BUCKETS, v[i].lat[h].sum_ns);
		}
}

void metrics_render(struct metrics_text *t, struct store *st, struct conn_server *srv)
{
	struct store_stats s;
	struct store_vol_io *vols = NULL;
	struct store_vol_totals tot;
	size_t n = 0;

	store_get_stats(st, &s);
	if (store_vol_io(st, &vols, &n, &tot) < 0) {
		t->oom = true;
		return;
	}
	render_pool(t, &s, &tot);
	if (srv)
		render_conns(t, srv);
	render_volumes(t, vols, n);
	free(vols);
}

/* ---- HTTP ------------------------------------------------------------------ */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *msg)
{
	return reply(conn, status, "text/plain; charset=utf-8", (char *)msg, strlen(msg),
	             MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **req)
{
	struct metrics *m = cls;
	struct metrics_text t = {0};

	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
	if (strcmp(url, "/metrics"))
		return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found: metrics are at /metrics\n");
	metrics_render(&t, m->st, m->srv);
	if (t.oom) {
		metrics_text_free(&t);
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	/* libmicrohttpd frees t.buf with the response. */
	return reply(conn, MHD_HTTP_OK, METRICS_TYPE, t.buf, t.len, MHD_RESPMEM_MUST_FREE);
}

/* libmicrohttpd's own complaints (a client's bad request, out of
 * sockets), one line each. */
static void on_log(void *cls, const char *fmt, va_list ap)
{
	char line[256];
	int n = vsnprintf(line, sizeof(line), fmt, ap);

	while (n > 0 && (size_t)n < sizeof(line) && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	say_warn("metrics: %s", line);
}

int metrics_check_addr(const char *hostport, char *err, size_t errlen)
{
	bool v6 = hostport[0] == '[';
	const char *colon = v6 ? strstr(hostport, "]:") : strrchr(hostport, ':');
	unsigned long port = 0;
	char *end;

	if (colon && v6)
		colon++;
	if (colon && colon[1] >= '0' && colon[1] <= '9') {
		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (errno || *end)
			port = 0;
	}
	if (port < 1 || port > 65535) {
		snprintf(err, errlen, "%s (want HOST:PORT or [IPV6]:PORT, port 1-65535)", hostport);
		return -EINVAL;
	}
	return 0;
}

/* One libmicrohttpd daemon on fd (which it owns from now on, even on
 * failure).  Its thread is created with every signal blocked. */
static struct MHD_Daemon *serve_fd(struct metrics *m, int fd)
{
	sigset_t all, old;
	struct MHD_Daemon *d;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
	                     on_request, m, MHD_OPTION_EXTERNAL_LOGGER, on_log, NULL,
	                     MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
	                     (unsigned)METRICS_MAX_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
	                     (unsigned)METRICS_TIMEOUT, MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!d)
		close(fd);
	return d;
}

struct metrics *metrics_start(const char *hostport, struct store *st, struct conn_server *srv,
                              char *err, size_t errlen)
{
	int fds[METRICS_MAX_LISTEN];
	unsigned n = 0;
	struct metrics *m;

	if (metrics_check_addr(hostport, err, errlen) < 0)
		return NULL;
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "metrics: out of memory");
		return NULL;
	}
	m->st = st;
	m->srv = srv;
	if (sockets_listen_tcp(hostport, fds, METRICS_MAX_LISTEN, &n, err, errlen) < 0) {
		free(m);
		return NULL;
	}
	while (m->n < n && (m->d[m->n] = serve_fd(m, fds[m->n])))
		m->n++;
	if (m->n < n) {
		for (unsigned i = m->n + 1; i < n; i++)
			close(fds[i]); /* serve_fd closed the one it failed on */
		snprintf(err, errlen, "metrics %s: cannot start the HTTP server", hostport);
		metrics_stop(m);
		return NULL;
	}
	return m;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++)
		MHD_stop_daemon(m->d[i]);
	free(m);
}
