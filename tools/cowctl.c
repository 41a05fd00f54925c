/* cowctl.c — the operator's command-line client for a running cowbd.
 *
 * A thin client: it checks its arguments (names, sizes) so typos fail
 * fast with a precise message, turns the command into one JSON request,
 * sends it over the daemon's control socket (docs/CONTROL.md), waits for
 * the one-line JSON reply and prints it as a table or text, or as JSON
 * with --json.  A list is asked for page by page, each printed as it
 * arrives.  It never opens the pool itself.
 *
 * Exit status: 0 success; 1 the daemon refused the request (the reason is
 * the one line on stderr), or a scrub found damaged blocks (or failed);
 * 2 bad usage (unknown command, bad name or size); 3 cannot talk to the
 * daemon (not running, no permission, bad reply).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "names.h"
#include "version.h"

#define COWCTL_DEFAULT_CONTROL "/run/cowbd/control.sock"
#define COWCTL_MAX_REPLY       (64u << 20)
/* The store's block size, for a stats reply without "block_size"; a
 * constant here rather than store.h, which would tie the client to the
 * store's headers for one number. */
#define COWCTL_BLOCK_SIZE 4096

enum { COWCTL_OK = 0, COWCTL_REFUSED = 1, COWCTL_USAGE = 2, COWCTL_UNREACHABLE = 3 };

static const char *cowctl_control_path;
static bool cowctl_json;
/* scrub's options (refused with any other command; --wait also compact's) */
static struct {
	bool wait, status, stop, any;
	uint64_t rate; /* bytes per second; 0: the daemon's default */
} cowctl_scrub_opt;
static bool cowctl_shrink; /* volume resize --shrink */
/* volume list, snapshot list: entries asked for at a time (--page-size);
 * the daemon's bound is 10000 */
#define COWCTL_PAGE_MAX 10000
static unsigned cowctl_page_size = 1000;
static bool cowctl_page_opt;
static const char *cowctl_binary; /* upgrade --binary */
/* --timeout: seconds one request may take, connect to reply (0: no bound).
 * An upgrade starts a process that opens the pool, so its default is
 * longer. */
#define COWCTL_TIMEOUT_DEFAULT         60
#define COWCTL_TIMEOUT_UPGRADE_DEFAULT 300
#define COWCTL_TIMEOUT_MAX             86400
static unsigned cowctl_timeout_s = COWCTL_TIMEOUT_DEFAULT;
static bool cowctl_timeout_opt;

static void cowctl_usage(FILE *f)
{
	fputs("usage: cowctl [--control PATH] [--json] COMMAND\n"
	      "\n"
	      "commands:\n"
	      "  volume create NAME SIZE     new thin volume; SIZE in bytes or with K/M/G/T\n"
	      "                              (powers of 1024), a multiple of 512\n"
	      "  volume list                 volumes with size, space used, origin\n"
	      "  volume info NAME            one volume (or VOL@SNAP) in detail\n"
	      "  volume delete NAME          delete a volume (not attached, no snapshots)\n"
	      "  volume resize NAME SIZE     grow a volume (attached or not: connections made\n"
	      "                              from now on see the new size)\n"
	      "  volume resize --shrink NAME SIZE\n"
	      "                              shrink a detached volume, discarding the data\n"
	      "                              past the new end (SIZE a multiple of 4096)\n"
	      "  volume rename NAME NEWNAME  rename a volume; its snapshots follow\n"
	      "                              (not attached, nor any of its snapshots)\n"
	      "  snapshot create VOL@SNAP    read-only point-in-time copy of VOL\n"
	      "  snapshot list [VOL]         snapshots (of VOL only, if given)\n"
	      "                              (both lists: --page-size N, entries asked for\n"
	      "                              at a time, default 1000; printed as they come)\n"
	      "  snapshot delete VOL@SNAP    delete a snapshot (no clones depend on it)\n"
	      "  clone VOL@SNAP NEWVOL       new writable volume starting as the snapshot\n"
	      "  rollback VOL@SNAP           make VOL read what the snapshot reads (VOL detached)\n"
	      "  pool status                 pool size, provisioning, space, compactor, state\n"
	      "  stats [VOL]                 pool counters and per-volume space (VOL: that\n"
	      "                              volume or snapshot, and a volume's snapshots)\n"
	      "  clients                     NBD connections: peer, export, since, TLS, bytes,\n"
	      "                              the event loop serving it\n"
	      "  diff FROM [TO]              byte ranges that changed from FROM to TO (VOL or\n"
	      "                              VOL@SNAP sharing history; TO: FROM's volume now)\n"
	      "  compact [--wait]            one compaction pass now (--wait: passes until\n"
	      "                              nothing is worth moving, with a progress line)\n"
	      "  checkpoint                  write a checkpoint now\n"
	      "  scrub [--rate MIB]          start reading every live block in the background\n"
	      "                              at MIB MiB/s (default 64); damaged blocks are\n"
	      "                              reported by volume and offset\n"
	      "  scrub --wait [--rate MIB]   start a pass (or join the running one), wait for\n"
	      "                              it with a progress line, print its report\n"
	      "  scrub --status              the running or last pass and what it found\n"
	      "  scrub --stop                stop the running pass\n"
	      "  upgrade [--binary PATH]     hand the daemon, its listeners and every live\n"
	      "                              NBD connection to a new cowbd process (PATH,\n"
	      "                              default: the binary the daemon was started\n"
	      "                              from, as it is on disk now); clients pause,\n"
	      "                              nothing drops; on failure the old one serves on\n"
	      "  help                        this text\n"
	      "\n"
	      "options:\n"
	      "  -c, --control PATH   control socket (default $COWBD_CONTROL, "
	      "else " COWCTL_DEFAULT_CONTROL ")\n"
	      "  -j, --json           print the daemon's JSON reply instead of text\n"
	      "  -t, --timeout SECS   give up on a daemon that does not answer a request\n"
	      "                       within SECS (default 60, upgrade 300; 0 = wait)\n"
	      "  -h, --help           this text\n"
	      "  -V, --version        print the version and exit\n"
	      "\n"
	      "names: 1-64 of A-Za-z0-9._-, not starting with . or -\n"
	      "exit status: 0 ok, 1 refused by the daemon (scrub: or damaged blocks found),\n"
	      "             2 bad usage, 3 daemon unreachable or no reply in time\n",
	      f);
}

static void cowctl_die(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void cowctl_die(int status, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("cowctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

static void cowctl_timed_out(const char *path) __attribute__((noreturn));
static void cowctl_timed_out(const char *path)
{
	cowctl_die(COWCTL_UNREACHABLE,
	           "no reply from %s within %u s: the daemon is stuck or very busy (the "
	           "request may still be carried out; --timeout 0 waits without bound)",
	           path, cowctl_timeout_s);
}

/* ---- argument checks ------------------------------------------------ */

/* Exit 2 with names.c's message unless name is of the given kind. */
static void cowctl_check_name(const char *name, enum names_kind kind)
{
	char msg[NAMES_MSG_MAX];

	if (names_check(name, kind, msg, sizeof(msg)) < 0)
		cowctl_die(COWCTL_USAGE, "%s", msg);
}

/* Parse SIZE (names_parse_size: digits with an optional K/M/G/T suffix).
 * The daemon takes a positive JSON integer (so at most 2^63-1) that is a
 * multiple of 512; anything else exits 2 here, before connecting. */
static uint64_t cowctl_parse_size(const char *s)
{
	char msg[NAMES_MSG_MAX];
	uint64_t v;

	if (names_parse_size(s, 1, INT64_MAX, &v, msg, sizeof(msg)) < 0)
		cowctl_die(COWCTL_USAGE, "%s", msg);
	if (v % 512)
		cowctl_die(COWCTL_USAGE,
		           "size %s (%" PRIu64 " bytes) is not a multiple of 512 bytes", s, v);
	return v;
}

/* ---- talking to the daemon ------------------------------------------ */

/* Send req (consumed) and return the parsed reply.  Exits 3 on any
 * transport or protocol problem. */
/* The time left before deadline (CLOCK_MONOTONIC ns; 0: none) as the
 * socket's send and receive timeouts; exits 3 once it has passed. */
static void cowctl_bound(int fd, uint64_t deadline, const char *path)
{
	struct timeval tv = {0};
	struct timespec now;
	uint64_t left;

	if (!deadline)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	left = deadline - ((uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec);
	if (left > deadline || !left)
		cowctl_timed_out(path);
	tv.tv_sec = (time_t)(left / 1000000000u);
	tv.tv_usec = (suseconds_t)(left % 1000000000u / 1000u);
	if (!tv.tv_sec && !tv.tv_usec)
		tv.tv_usec = 1; /* 0 would mean no bound */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		cowctl_die(COWCTL_UNREACHABLE, "setsockopt: %s", strerror(errno));
}

static json_t *cowctl_call(json_t *req)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	uint64_t deadline = 0;
	const char *path = cowctl_control_path;
	size_t have = 0, cap = 4096, len;
	char *out, *buf, *nl = NULL;
	json_error_t jerr;
	json_t *res;
	ssize_t n;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		cowctl_die(COWCTL_USAGE, "control socket path too long: %s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (cowctl_timeout_s) {
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		deadline = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec +
		           (uint64_t)cowctl_timeout_s * 1000000000u;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		cowctl_die(COWCTL_UNREACHABLE, "socket: %s", strerror(errno));
	/* A daemon whose accept backlog is full keeps connect waiting. */
	cowctl_bound(fd, deadline, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (deadline && errno == EAGAIN)
			cowctl_timed_out(path);
		cowctl_die(COWCTL_UNREACHABLE, "cannot connect to %s: %s", path, strerror(errno));
	}

	out = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!out)
		cowctl_die(COWCTL_UNREACHABLE, "out of memory");
	len = strlen(out);
	out[len++] = '\n'; /* replaces the NUL; we send len bytes */
	for (size_t off = 0; off < len;) {
		cowctl_bound(fd, deadline, path);
		n = send(fd, out + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && deadline && (errno == EAGAIN || errno == EWOULDBLOCK))
			cowctl_timed_out(path);
		if (n < 0)
			cowctl_die(COWCTL_UNREACHABLE, "sending to %s: %s", path, strerror(errno));
		off += (size_t)n;
	}
	free(out);

	buf = malloc(cap);
	while (buf && !nl) {
		if (have == cap) {
			if (cap >= COWCTL_MAX_REPLY)
				cowctl_die(COWCTL_UNREACHABLE, "reply from %s is too long", path);
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				break;
		}
		cowctl_bound(fd, deadline, path);
		n = recv(fd, buf + have, cap - have, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && deadline && (errno == EAGAIN || errno == EWOULDBLOCK))
			cowctl_timed_out(path);
		if (n < 0)
			cowctl_die(COWCTL_UNREACHABLE, "reading from %s: %s", path,
			           strerror(errno));
		if (n == 0)
			cowctl_die(COWCTL_UNREACHABLE, "%s closed the connection without a reply",
			           path);
		nl = memchr(buf + have, '\n', (size_t)n);
		have += (size_t)n;
	}
	if (!buf)
		cowctl_die(COWCTL_UNREACHABLE, "out of memory");
	close(fd);
	res = json_loadb(buf, (size_t)(nl - buf), 0, &jerr);
	free(buf);
	if (!json_is_object(res) || !json_is_boolean(json_object_get(res, "ok")))
		cowctl_die(COWCTL_UNREACHABLE, "bad reply from %s: %s", path,
		           res ? "not a reply object" : jerr.text);
	return res;
}

/* ---- output ------------------------------------------------------------ */

static uint64_t cowctl_u64(json_t *o, const char *key)
{
	json_t *j = json_object_get(o, key);

	return json_is_integer(j) && json_integer_value(j) > 0 ? (uint64_t)json_integer_value(j)
	                                                       : 0;
}

static const char *cowctl_str(json_t *o, const char *key, const char *dflt)
{
	json_t *j = json_object_get(o, key);

	return json_is_string(j) ? json_string_value(j) : dflt;
}

/* Human size: "0", "512B", "4.0K", "8.0G", "12G" (powers of 1024). */
static const char *cowctl_human(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "BKMGTPE";
	double d = (double)v;
	int u = 0;

	if (v == 0)
		return snprintf(buf, len, "0"), buf;
	if (v < 1024)
		return snprintf(buf, len, "%" PRIu64 "B", v), buf;
	while (d >= 1024 && u < 6) {
		d /= 1024;
		u++;
	}
	if (d < 9.95)
		snprintf(buf, len, "%.1f%c", d, units[u]);
	else
		snprintf(buf, len, "%.0f%c", d, units[u]);
	return buf;
}

static const char *cowctl_time(uint64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!t || !localtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M", &tm))
		snprintf(buf, len, "-");
	return buf;
}

#define COWCTL_COLS 8
#define COWCTL_CELL 160

/* A page of a list as an aligned table, columns separated by two spaces,
 * the header first when header is true.  w carries the column widths from
 * page to page: each is the widest cell seen so far, so a list of one page
 * prints as one table, and later pages only widen.  With snapshots true
 * the ORIGIN column is left out (a snapshot has none). */
static void cowctl_print_table(json_t *arr, bool snapshots, size_t *w, bool header)
{
	static const char *const head[] = {"NAME",   "SIZE",    "USED",    "UNIQUE",
	                                   "ORIGIN", "CREATED", "ATTACHED"};
	size_t rows = json_array_size(arr), i, k, ncol = 7;
	char(*cell)[COWCTL_COLS][COWCTL_CELL];
	json_t *o;

	cell = calloc(rows + 1, sizeof(*cell));
	if (!cell)
		cowctl_die(COWCTL_UNREACHABLE, "out of memory");
	for (k = 0; k < ncol; k++)
		snprintf(cell[0][k], COWCTL_CELL, "%s", head[k]);
	json_array_foreach(arr, i, o)
	{
		char(*c)[COWCTL_CELL] = cell[i + 1];

		snprintf(c[0], COWCTL_CELL, "%s", cowctl_str(o, "name", "?"));
		cowctl_human(cowctl_u64(o, "size"), c[1], COWCTL_CELL);
		cowctl_human(cowctl_u64(o, "used"), c[2], COWCTL_CELL);
		cowctl_human(cowctl_u64(o, "unique"), c[3], COWCTL_CELL);
		snprintf(c[4], COWCTL_CELL, "%s", cowctl_str(o, "origin", "-"));
		cowctl_time(cowctl_u64(o, "created"), c[5], COWCTL_CELL);
		snprintf(c[6], COWCTL_CELL, "%" PRIu64, cowctl_u64(o, "attached"));
	}
	for (i = 0; i <= rows; i++)
		for (k = 0; k < ncol; k++)
			if (strlen(cell[i][k]) > w[k])
				w[k] = strlen(cell[i][k]);
	for (i = header ? 0 : 1; i <= rows; i++) {
		bool first = true;

		for (k = 0; k < ncol; k++) {
			if (snapshots && k == 4)
				continue;
			if (k == ncol - 1)
				printf("%s%s\n", first ? "" : "  ", cell[i][k]);
			else
				printf("%s%-*s", first ? "" : "  ", (int)w[k], cell[i][k]);
			first = false;
		}
	}
	free(cell);
}

static void cowctl_print_names(const char *label, json_t *arr)
{
	size_t i;
	json_t *s;

	printf("%-11s", label);
	if (!json_array_size(arr))
		printf("-");
	json_array_foreach(arr, i, s) printf("%s%s", i ? ", " : "", json_string_value(s));
	printf("\n");
}

static void cowctl_print_info(json_t *o)
{
	char b1[32], b2[32];
	uint64_t size = cowctl_u64(o, "size");

	printf("%-11s%s\n", "name:", cowctl_str(o, "name", "?"));
	printf("%-11s%s\n",
	       "type:", json_is_true(json_object_get(o, "snapshot")) ? "snapshot" : "volume");
	printf("%-11s%" PRIu64 "\n", "id:", cowctl_u64(o, "id"));
	printf("%-11s%s (%" PRIu64 " bytes)\n", "size:", cowctl_human(size, b1, sizeof(b1)), size);
	printf("%-11s%s\n", "used:", cowctl_human(cowctl_u64(o, "used"), b1, sizeof(b1)));
	printf("%-11s%s\n", "unique:", cowctl_human(cowctl_u64(o, "unique"), b2, sizeof(b2)));
	printf("%-11s%s\n", "origin:", cowctl_str(o, "origin", "-"));
	printf("%-11s%s\n", "created:", cowctl_time(cowctl_u64(o, "created"), b1, sizeof(b1)));
	printf("%-11s%" PRIu64 "\n", "attached:", cowctl_u64(o, "attached"));
	if (json_object_get(o, "snapshots"))
		cowctl_print_names("snapshots:", json_object_get(o, "snapshots"));
	if (json_object_get(o, "clones"))
		cowctl_print_names("clones:", json_object_get(o, "clones"));
}

static void cowctl_print_stats(json_t *s)
{
	char b[32], b2[32];
	uint64_t bs = cowctl_u64(s, "block_size");

	printf("%-18s%s\n", "pool size:", cowctl_human(cowctl_u64(s, "pool_bytes"), b, sizeof(b)));
	printf("%-18s%s\n",
	       "segment size:", cowctl_human(cowctl_u64(s, "segment_bytes"), b, sizeof(b)));
	printf("%-18s%" PRIu64 " (%" PRIu64 " free, %" PRIu64 " pending)\n",
	       "segments:", cowctl_u64(s, "segments"), cowctl_u64(s, "segments_free"),
	       cowctl_u64(s, "segments_pending"));
	printf("%-18s%" PRIu64 " (%s)\n", "live blocks:", cowctl_u64(s, "blocks_live"),
	       cowctl_human(cowctl_u64(s, "blocks_live") * (bs ? bs : COWCTL_BLOCK_SIZE), b,
	                    sizeof(b)));
	printf("%-18s%" PRIu64 "\n", "log lsn:", cowctl_u64(s, "log_lsn"));
	printf("%-18s%" PRIu64 "\n", "checkpoint lsn:", cowctl_u64(s, "checkpoint_lsn"));
	printf("%-18s%" PRIu64 " (%" PRIu64 " blocks, %" PRIu64 " summaries written again; %" PRIu64
	       " run by an event loop, %" PRIu64 " of them slow)\n",
	       "batches:", cowctl_u64(s, "batches"), cowctl_u64(s, "batch_blocks"),
	       cowctl_u64(s, "summary_rewrites"), cowctl_u64(s, "inline_rounds"),
	       cowctl_u64(s, "inline_slow"));
	printf("%-18s%" PRIu64 "\n", "syncs:", cowctl_u64(s, "syncs"));
	printf("%-18s%" PRIu64 " (%" PRIu64 " FUA requests)\n",
	       "flushes:", cowctl_u64(s, "flushes"), cowctl_u64(s, "fua_requests"));
	printf("%-18s%s (clients wrote %s)\n",
	       "bytes written:", cowctl_human(cowctl_u64(s, "bytes_written"), b, sizeof(b)),
	       cowctl_human(cowctl_u64(s, "client_write_bytes"), b2, sizeof(b2)));
	printf("%-18s%" PRIu64 " (%.3f s on the log thread, at most %.1f ms at a time; %.3f s "
	       "syncing in the background; %" PRIu64 " leaves and %" PRIu64 " count pages written "
	       "ahead)\n",
	       "checkpoints:", cowctl_u64(s, "checkpoints"), cowctl_u64(s, "ckpt_log_ns") / 1e9,
	       cowctl_u64(s, "ckpt_log_max_ns") / 1e6, cowctl_u64(s, "ckpt_sync_ns") / 1e9,
	       cowctl_u64(s, "ckpt_precopy_nodes"), cowctl_u64(s, "ckpt_precopy_pages"));
	printf("%-18s%" PRIu64 " (%" PRIu64 " blocks moved, %" PRIu64
	       " segments freed, %.3f s on the log thread)\n",
	       "compactions:", cowctl_u64(s, "compactions"), cowctl_u64(s, "compacted_blocks"),
	       cowctl_u64(s, "segments_freed"), cowctl_u64(s, "compact_ns") / 1e9);
	printf("%-18s%" PRIu64 " nodes, %s of %s (%" PRIu64 " loads, %" PRIu64 " evictions)\n",
	       "metadata cache:", cowctl_u64(s, "cache_nodes"),
	       cowctl_human(cowctl_u64(s, "cache_bytes"), b, sizeof(b)),
	       cowctl_human(cowctl_u64(s, "cache_bound"), b2, sizeof(b2)),
	       cowctl_u64(s, "cache_loads"), cowctl_u64(s, "cache_evictions"));
	printf("%-18s%" PRIu64 " (%" PRIu64 " reads refused, %" PRIu64
	       " left in place by the compactor)\n",
	       "bad blocks:", cowctl_u64(s, "bad_blocks"), cowctl_u64(s, "bad_reads"),
	       cowctl_u64(s, "compact_skipped_bad"));
	printf("%-18s%" PRIu64 " sent from the page cache without a copy\n",
	       "read views:", cowctl_u64(s, "read_views"));
	printf("%-18s%s\n", "failed:",
	       json_is_true(json_object_get(s, "failed")) ? "YES (I/O error; restart cowbd)"
	                                                  : "no");
	printf("%-18s%s\n", "read-only:",
	       json_is_true(json_object_get(s, "read_only_fallback"))
	           ? "YES (open could not write a checkpoint: free space, then restart)"
	       : json_is_true(json_object_get(s, "read_only")) ? "yes"
	                                                       : "no");
}

/* ---- commands ------------------------------------------------------------ */

static json_t *cowctl_req(const char *op)
{
	json_t *r = json_object();

	json_object_set_new(r, "op", json_string(op));
	return r;
}

static void cowctl_print_json(json_t *res)
{
	char *s = json_dumps(res, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s)
		puts(s);
	free(s);
}

/* A refused reply: print it with --json, then its one-line reason, and
 * exit 1. */
static void cowctl_refused(json_t *res) __attribute__((noreturn));
static void cowctl_refused(json_t *res)
{
	char msg[1024];

	if (cowctl_json)
		cowctl_print_json(res);
	snprintf(msg, sizeof(msg), "%s", cowctl_str(res, "error", "request refused"));
	json_decref(res);
	cowctl_die(COWCTL_REFUSED, "%s", msg);
}

/* Run req; on refusal exit as cowctl_refused; on success return the
 * reply (not printed). */
static json_t *cowctl_ask(json_t *req)
{
	json_t *res = cowctl_call(req);

	if (!json_is_true(json_object_get(res, "ok")))
		cowctl_refused(res);
	return res;
}

/* Run req as cowctl_ask; the reply returned is already printed as JSON
 * when --json is on. */
static json_t *cowctl_run(json_t *req)
{
	json_t *res = cowctl_ask(req);

	if (cowctl_json)
		cowctl_print_json(res);
	return res;
}

static void cowctl_need(int argc, int want_min, int want_max, const char *cmd, const char *args)
{
	if (argc < want_min)
		cowctl_die(COWCTL_USAGE, "%s needs %s (see cowctl --help)", cmd, args);
	if (argc > want_max)
		cowctl_die(COWCTL_USAGE, "too many arguments for %s (see cowctl --help)", cmd);
}

/* o as --json prints it, each line indented by indent more spaces. */
static void cowctl_print_json_indented(json_t *o, int indent)
{
	char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (!s)
		cowctl_die(COWCTL_UNREACHABLE, "out of memory");
	printf("%*s", indent, "");
	for (const char *c = s; *c; c++) {
		putchar(*c);
		if (*c == '\n')
			printf("%*s", indent, "");
	}
	free(s);
}

/* volume list, snapshot list [VOL]: op asked page after page ("after" the
 * last id of the one before), each printed as it arrives, so neither
 * cowctl nor the daemon holds more than a page.  --json prints the one
 * object the whole reply was, {"ok": true, key: [...]}, written as the
 * pages come.  A daemon that does not page answers the whole list at once
 * (no "next"): one page. */
static void cowctl_list(const char *op, const char *key, const char *vol)
{
	bool snapshots = !strcmp(key, "snapshots"), more = true;
	size_t w[COWCTL_COLS] = {0}, total = 0, i;
	json_int_t after = 0;
	json_t *o;

	while (more) {
		json_t *req = cowctl_req(op), *res, *arr, *next;

		if (vol)
			json_object_set_new(req, "volume", json_string(vol));
		json_object_set_new(req, "after", json_integer(after));
		json_object_set_new(req, "limit", json_integer(cowctl_page_size));
		json_object_set_new(req, "figures", json_true());
		res = cowctl_ask(req);
		arr = json_object_get(res, key);
		next = json_object_get(res, "next");
		/* ids only grow: a cursor that does not is a broken reply, not a loop */
		more = json_is_integer(next) && json_integer_value(next) > after;
		if (more)
			after = json_integer_value(next);
		if (cowctl_json) {
			if (!total)
				printf("{\n  \"ok\": true,\n  \"%s\": [", key);
			json_array_foreach(arr, i, o)
			{
				fputs(total + i ? ",\n" : "\n", stdout);
				cowctl_print_json_indented(o, 4);
			}
		} else {
			cowctl_print_table(arr, snapshots, w, !total);
		}
		total += json_array_size(arr);
		json_decref(res);
		fflush(stdout);
	}
	if (cowctl_json)
		fputs(total ? "\n  ]\n}\n" : "]\n}\n", stdout);
}

static int cowctl_volume(int argc, char **argv)
{
	const char *sub = argc ? argv[0] : "";
	char b[32];
	json_t *req, *res;

	argc--;
	argv++;
	if (!strcmp(sub, "create")) {
		uint64_t size;

		cowctl_need(argc, 2, 2, "volume create", "NAME SIZE");
		cowctl_check_name(argv[0], NAMES_VOLUME);
		size = cowctl_parse_size(argv[1]);
		req = cowctl_req("volume.create");
		json_object_set_new(req, "name", json_string(argv[0]));
		json_object_set_new(req, "size", json_integer((json_int_t)size));
		res = cowctl_run(req);
		if (!cowctl_json)
			printf("created volume \"%s\" (%s)\n", argv[0],
			       cowctl_human(size, b, sizeof(b)));
	} else if (!strcmp(sub, "list")) {
		cowctl_need(argc, 0, 0, "volume list", "no arguments");
		cowctl_list("volume.list", "volumes", NULL);
		return COWCTL_OK;
	} else if (!strcmp(sub, "delete")) {
		cowctl_need(argc, 1, 1, "volume delete", "NAME");
		cowctl_check_name(argv[0], NAMES_VOLUME);
		req = cowctl_req("volume.delete");
		json_object_set_new(req, "name", json_string(argv[0]));
		res = cowctl_run(req);
		if (!cowctl_json)
			printf("deleted volume \"%s\"\n", argv[0]);
	} else if (!strcmp(sub, "info")) {
		cowctl_need(argc, 1, 1, "volume info", "NAME");
		cowctl_check_name(argv[0], NAMES_ANY);
		req = cowctl_req("volume.info");
		json_object_set_new(req, "name", json_string(argv[0]));
		res = cowctl_run(req);
		if (!cowctl_json)
			cowctl_print_info(json_object_get(res, "volume"));
	} else if (!strcmp(sub, "resize")) {
		uint64_t size;

		cowctl_need(argc, 2, 2, "volume resize", "NAME SIZE");
		cowctl_check_name(argv[0], NAMES_VOLUME);
		size = cowctl_parse_size(argv[1]);
		req = cowctl_req("volume.resize");
		json_object_set_new(req, "name", json_string(argv[0]));
		json_object_set_new(req, "size", json_integer((json_int_t)size));
		if (cowctl_shrink)
			json_object_set_new(req, "shrink", json_true());
		res = cowctl_run(req);
		if (!cowctl_json) {
			char was[32];
			uint64_t prev = cowctl_u64(res, "previous_size");

			if (prev == size)
				printf("volume \"%s\" is %s already\n", argv[0],
				       cowctl_human(size, b, sizeof(b)));
			else
				printf("resized volume \"%s\" from %s to %s\n", argv[0],
				       cowctl_human(prev, was, sizeof(was)),
				       cowctl_human(size, b, sizeof(b)));
		}
	} else if (!strcmp(sub, "rename")) {
		cowctl_need(argc, 2, 2, "volume rename", "NAME NEWNAME");
		cowctl_check_name(argv[0], NAMES_VOLUME);
		cowctl_check_name(argv[1], NAMES_VOLUME);
		req = cowctl_req("volume.rename");
		json_object_set_new(req, "name", json_string(argv[0]));
		json_object_set_new(req, "new_name", json_string(argv[1]));
		res = cowctl_run(req);
		if (!cowctl_json)
			printf("renamed volume \"%s\" to \"%s\"\n", argv[0], argv[1]);
	} else {
		if (!*sub)
			cowctl_die(COWCTL_USAGE,
			           "volume needs create, list, info, delete, resize or rename");
		cowctl_die(COWCTL_USAGE, "unknown command \"volume %s\" (see cowctl --help)", sub);
	}
	json_decref(res);
	return COWCTL_OK;
}

static int cowctl_snapshot(int argc, char **argv)
{
	const char *sub = argc ? argv[0] : "";
	json_t *req, *res;

	argc--;
	argv++;
	if (!strcmp(sub, "create")) {
		cowctl_need(argc, 1, 1, "snapshot create", "VOL@SNAP");
		cowctl_check_name(argv[0], NAMES_SNAPSHOT);
		req = cowctl_req("snapshot.create");
		json_object_set_new(req, "name", json_string(argv[0]));
		res = cowctl_run(req);
		if (!cowctl_json)
			printf("created snapshot \"%s\"\n", argv[0]);
	} else if (!strcmp(sub, "list")) {
		cowctl_need(argc, 0, 1, "snapshot list", "[VOL]");
		if (argc)
			cowctl_check_name(argv[0], NAMES_VOLUME);
		cowctl_list("snapshot.list", "snapshots", argc ? argv[0] : NULL);
		return COWCTL_OK;
	} else if (!strcmp(sub, "delete")) {
		cowctl_need(argc, 1, 1, "snapshot delete", "VOL@SNAP");
		cowctl_check_name(argv[0], NAMES_SNAPSHOT);
		req = cowctl_req("snapshot.delete");
		json_object_set_new(req, "name", json_string(argv[0]));
		res = cowctl_run(req);
		if (!cowctl_json)
			printf("deleted snapshot \"%s\"\n", argv[0]);
	} else {
		if (!*sub)
			cowctl_die(COWCTL_USAGE, "snapshot needs create, list or delete");
		cowctl_die(COWCTL_USAGE, "unknown command \"snapshot %s\" (see cowctl --help)",
		           sub);
	}
	json_decref(res);
	return COWCTL_OK;
}

/* ---- pool, stats, clients, compact ------------------------------------------ */

static void cowctl_print_pool(json_t *p)
{
	json_t *cp = json_object_get(p, "compactor");
	json_t *oc = json_object_get(p, "overcommit");
	char b[32];

#define HUMAN(k) cowctl_human(cowctl_u64(p, k), b, sizeof(b))
	printf("%-16s%s\n", "size:", HUMAN("size"));
	printf("%-16s%s (overcommit %.2fx)\n", "provisioned:", HUMAN("provisioned"),
	       json_is_number(oc) ? json_number_value(oc) : 0.0);
	printf("%-16s%s\n", "allocated:", HUMAN("allocated"));
	printf("%-16s%s\n", "live:", HUMAN("live"));
	printf("%-16s%s\n", "reclaimable:", HUMAN("reclaimable"));
	printf("%-16s%s (%" PRIu64 " of %" PRIu64 " segments, %" PRIu64 " pending)\n",
	       "free:", HUMAN("free"), cowctl_u64(p, "segments_free"), cowctl_u64(p, "segments"),
	       cowctl_u64(p, "segments_pending"));
#undef HUMAN
	printf("%-16s%" PRIu64 " (and %" PRIu64 " snapshots)\n",
	       "volumes:", cowctl_u64(p, "volumes"), cowctl_u64(p, "snapshots"));
	printf("%-16s%" PRIu64 " passes, %" PRIu64 " blocks moved, %" PRIu64
	       " segments freed, %" PRIu64 " damaged blocks left in place\n",
	       "compactor:", cowctl_u64(cp, "passes"), cowctl_u64(cp, "blocks_moved"),
	       cowctl_u64(cp, "segments_freed"), cowctl_u64(cp, "damaged_left"));
	printf("%-16s%" PRIu64 "\n", "format version:", cowctl_u64(p, "format_version"));
	printf("%-16s%s\n", "state:",
	       json_is_true(json_object_get(p, "failed"))
	           ? "FAILED (I/O error: writes fail until cowbd restarts)"
	       : json_is_true(json_object_get(p, "read_only_fallback"))
	           ? "READ-ONLY (open could not write a checkpoint: free space, then restart)"
	       : json_is_true(json_object_get(p, "read_only")) ? "read-only"
	                                                       : "ok");
}

/* Rows of cells as an aligned table, columns two spaces apart, the first
 * row the header; numeric columns (bit k of right) right-aligned. */
static void cowctl_table(char (*cell)[COWCTL_COLS][COWCTL_CELL], size_t rows, size_t ncol,
                         unsigned right)
{
	size_t w[COWCTL_COLS] = {0}, i, k;

	for (i = 0; i < rows; i++)
		for (k = 0; k < ncol; k++)
			if (strlen(cell[i][k]) > w[k])
				w[k] = strlen(cell[i][k]);
	for (i = 0; i < rows; i++)
		for (k = 0; k < ncol; k++) {
			const char *sep = k ? "  " : "", *end = k == ncol - 1 ? "\n" : "";
			int width = k == ncol - 1 && !(right >> k & 1) ? 0 : (int)w[k];

			if (right >> k & 1)
				printf("%s%*s%s", sep, width, cell[i][k], end);
			else
				printf("%s%-*s%s", sep, width, cell[i][k], end);
		}
}

static void cowctl_print_vstats(json_t *arr)
{
	static const char *const head[] = {"NAME", "SIZE", "USED", "UNIQUE", "MAPPED", "ATTACHED"};
	size_t rows = json_array_size(arr), i, k;
	char(*cell)[COWCTL_COLS][COWCTL_CELL] = calloc(rows + 1, sizeof(*cell));
	json_t *o;

	if (!cell)
		cowctl_die(COWCTL_UNREACHABLE, "out of memory");
	for (k = 0; k < 6; k++)
		snprintf(cell[0][k], COWCTL_CELL, "%s", head[k]);
	json_array_foreach(arr, i, o)
	{
		char(*c)[COWCTL_CELL] = cell[i + 1];

		snprintf(c[0], COWCTL_CELL, "%s", cowctl_str(o, "name", "?"));
		cowctl_human(cowctl_u64(o, "size"), c[1], COWCTL_CELL);
		cowctl_human(cowctl_u64(o, "used"), c[2], COWCTL_CELL);
		cowctl_human(cowctl_u64(o, "unique"), c[3], COWCTL_CELL);
		snprintf(c[4], COWCTL_CELL, "%" PRIu64, cowctl_u64(o, "mapped_blocks"));
		snprintf(c[5], COWCTL_CELL, "%" PRIu64, cowctl_u64(o, "attached"));
	}
	cowctl_table(cell, rows + 1, 6, 0x3e);
	free(cell);
}

/* diff: one line per changed range (bytes), then a summary. */
static void cowctl_print_diff(json_t *res)
{
	json_t *arr = json_object_get(res, "extents"), *o;
	char changed[32], zeroed[32];
	size_t i;

	if (json_array_size(arr))
		printf("%-20s %-20s %s\n", "OFFSET", "LENGTH", "TYPE");
	json_array_foreach(arr, i, o)
	{
		printf("%-20" PRIu64 " %-20" PRIu64 " %s\n", cowctl_u64(o, "offset"),
		       cowctl_u64(o, "length"),
		       json_is_true(json_object_get(o, "zero")) ? "zero" : "data");
	}
	cowctl_human(cowctl_u64(res, "changed_bytes"), changed, sizeof(changed));
	cowctl_human(cowctl_u64(res, "zeroed_bytes"), zeroed, sizeof(zeroed));
	printf("%zu extent%s, %s changed (%s of it zeroed)\n", json_array_size(arr),
	       json_array_size(arr) == 1 ? "" : "s", changed, zeroed);
}

static void cowctl_print_clients(json_t *arr)
{
	static const char *const head[] = {"PEER", "EXPORT",  "SINCE", "TLS",
	                                   "READ", "WRITTEN", "LOOP"};
	size_t rows = json_array_size(arr), i, k;
	char(*cell)[COWCTL_COLS][COWCTL_CELL] = calloc(rows + 1, sizeof(*cell));
	json_t *o;

	if (!cell)
		cowctl_die(COWCTL_UNREACHABLE, "out of memory");
	if (!rows) {
		free(cell);
		printf("no clients\n");
		return;
	}
	for (k = 0; k < 7; k++)
		snprintf(cell[0][k], COWCTL_CELL, "%s", head[k]);
	json_array_foreach(arr, i, o)
	{
		char(*c)[COWCTL_CELL] = cell[i + 1];

		snprintf(c[0], COWCTL_CELL, "%s", cowctl_str(o, "peer", "?"));
		snprintf(c[1], COWCTL_CELL, "%s", cowctl_str(o, "export", "-"));
		cowctl_time(cowctl_u64(o, "since"), c[2], COWCTL_CELL);
		snprintf(c[3], COWCTL_CELL, "%s",
		         json_is_true(json_object_get(o, "tls")) ? "yes" : "no");
		cowctl_human(cowctl_u64(o, "bytes_read"), c[4], COWCTL_CELL);
		cowctl_human(cowctl_u64(o, "bytes_written"), c[5], COWCTL_CELL);
		snprintf(c[6], COWCTL_CELL, "%llu", (unsigned long long)cowctl_u64(o, "loop"));
	}
	cowctl_table(cell, rows + 1, 7, 0x70);
	free(cell);
}

/* stats [VOL]: without VOL the pool counters (the "stats" op) and every
 * volume's space; with VOL that volume (or snapshot) and its snapshots.
 * --json prints one object: {"ok", "stats" (without VOL), "block_size",
 * "volumes"}. */
static int cowctl_stats(int argc, char **argv)
{
	json_t *req = cowctl_req("volume.stats"), *res, *pool = NULL;

	cowctl_need(argc, 0, 1, "stats", "[VOL]");
	if (argc) {
		cowctl_check_name(argv[0], NAMES_ANY);
		json_object_set_new(req, "name", json_string(argv[0]));
	} else {
		pool = cowctl_ask(cowctl_req("stats"));
	}
	res = cowctl_ask(req);
	if (pool)
		json_object_set(res, "stats", json_object_get(pool, "stats"));
	if (cowctl_json) {
		cowctl_print_json(res);
	} else {
		if (pool) {
			cowctl_print_stats(json_object_get(pool, "stats"));
			printf("\n");
		}
		cowctl_print_vstats(json_object_get(res, "volumes"));
	}
	json_decref(pool);
	json_decref(res);
	return COWCTL_OK;
}

static void cowctl_compact_progress(uint64_t passes, uint64_t moved, uint64_t freed,
                                    uint64_t free_bytes)
{
	char b[32];

	fprintf(stderr,
	        "\rcompact: pass %" PRIu64 ", %" PRIu64 " blocks moved, %" PRIu64
	        " segments freed, %s free\033[K",
	        passes, moved, freed, cowctl_human(free_bytes, b, sizeof(b)));
}

/* compact: one pass; --wait: passes until one moves nothing (at most one
 * per segment of the pool, which bounds a pool that keeps changing). */
static int cowctl_compact(int argc)
{
	bool progress = !cowctl_json && isatty(STDERR_FILENO);
	uint64_t passes = 0, moved = 0, freed = 0, limit = 1;
	json_t *res = NULL, *cp = NULL;
	char b[32], r[32];

	cowctl_need(argc, 0, 0, "compact", "no arguments (option: --wait)");
	if (cowctl_scrub_opt.status || cowctl_scrub_opt.stop || cowctl_scrub_opt.rate)
		cowctl_die(COWCTL_USAGE, "compact takes --wait only");
	if (cowctl_scrub_opt.wait) {
		json_t *p = cowctl_ask(cowctl_req("pool.status"));

		limit = cowctl_u64(json_object_get(p, "pool"), "segments") + 1;
		json_decref(p);
	}
	while (passes < limit) {
		json_decref(res);
		res = cowctl_ask(cowctl_req("compact"));
		cp = json_object_get(res, "compact");
		passes++;
		moved += cowctl_u64(cp, "blocks_moved");
		freed += cowctl_u64(cp, "segments_freed");
		if (!cowctl_u64(cp, "blocks_moved"))
			break;
		if (progress && cowctl_scrub_opt.wait)
			cowctl_compact_progress(passes, moved, freed, cowctl_u64(cp, "free"));
	}
	if (progress && cowctl_scrub_opt.wait)
		fputs("\r\033[K", stderr);
	json_object_set_new(cp, "passes", json_integer((json_int_t)passes));
	json_object_set_new(cp, "blocks_moved", json_integer((json_int_t)moved));
	json_object_set_new(cp, "segments_freed", json_integer((json_int_t)freed));
	if (cowctl_json)
		cowctl_print_json(res);
	else
		printf("compacted: %" PRIu64 " pass%s, %" PRIu64 " blocks moved, %" PRIu64
		       " segments freed; %s free, %s reclaimable\n",
		       passes, passes == 1 ? "" : "es", moved, freed,
		       cowctl_human(cowctl_u64(cp, "free"), b, sizeof(b)),
		       cowctl_human(cowctl_u64(cp, "reclaimable"), r, sizeof(r)));
	json_decref(res);
	return COWCTL_OK;
}

/* ---- scrub ------------------------------------------------------------ */

/* One line for a pass (scrub object sc), then its damaged blocks. */
static void cowctl_scrub_report(json_t *sc)
{
	const char *state = cowctl_str(sc, "state", "?");
	bool running = !strcmp(state, "running");
	uint64_t started = cowctl_u64(sc, "started");
	uint64_t end = running ? (uint64_t)time(NULL) : cowctl_u64(sc, "finished");
	uint64_t checked = cowctl_u64(sc, "blocks_checked"),
	         nbad = cowctl_u64(sc, "damaged_blocks");
	char b[32], how[160];
	size_t i;
	json_t *d;

	if (!strcmp(state, "idle")) {
		printf("no scrub pass since cowbd started\n");
		return;
	}
	if (!strcmp(state, "failed"))
		snprintf(how, sizeof(how), "failed (%s) after", cowctl_str(sc, "error", "?"));
	else
		snprintf(how, sizeof(how), "%s %s", state, running ? "for" : "in");
	printf("scrub pass %" PRIu64 " %s %" PRIu64 " s: %" PRIu64 " of %" PRIu64
	       " volumes, %" PRIu64 " blocks checked (%s), %" PRIu64 " damaged\n",
	       cowctl_u64(sc, "pass"), how, end > started ? end - started : 0,
	       cowctl_u64(sc, "volumes_done"), cowctl_u64(sc, "volumes_total"), checked,
	       cowctl_human(checked * COWCTL_BLOCK_SIZE, b, sizeof(b)), nbad);
	json_array_foreach(json_object_get(sc, "damaged"), i, d)
	{
		printf("damaged: %s offset %" PRIu64 " (pool block %" PRIu64 ")\n",
		       cowctl_str(d, "name", "?"), cowctl_u64(d, "offset"),
		       cowctl_u64(d, "pool_block"));
	}
	if (cowctl_u64(sc, "damaged_more"))
		printf("... and %" PRIu64 " more\n", cowctl_u64(sc, "damaged_more"));
}

/* scrub's exit status for a finished or running pass. */
static int cowctl_scrub_status(json_t *sc)
{
	return cowctl_u64(sc, "damaged_blocks") || !strcmp(cowctl_str(sc, "state", ""), "failed")
	           ? COWCTL_REFUSED
	           : COWCTL_OK;
}

static void cowctl_scrub_progress(json_t *sc)
{
	uint64_t walked = cowctl_u64(sc, "blocks_walked"), total = cowctl_u64(sc, "blocks_total");
	uint64_t pct = total ? walked * 100 / total : 0;

	fprintf(stderr,
	        "\rscrub: %3" PRIu64 "%%  %" PRIu64 " blocks checked, volume %" PRIu64
	        " of %" PRIu64 ", %" PRIu64 " damaged\033[K",
	        pct > 99 ? 99 : pct, cowctl_u64(sc, "blocks_checked"),
	        cowctl_u64(sc, "volumes_done"), cowctl_u64(sc, "volumes_total"),
	        cowctl_u64(sc, "damaged_blocks"));
}

/* Poll until pass is no longer running; returns the last status reply.
 * A progress line on stderr when it is a terminal (and not --json). */
static json_t *cowctl_scrub_wait(uint64_t pass)
{
	bool progress = !cowctl_json && isatty(STDERR_FILENO);
	struct timespec tick = {.tv_nsec = 200 * 1000 * 1000};

	for (;;) {
		json_t *res = cowctl_ask(cowctl_req("scrub.status"));
		json_t *sc = json_object_get(res, "scrub");

		if (cowctl_u64(sc, "pass") != pass ||
		    strcmp(cowctl_str(sc, "state", ""), "running")) {
			if (progress)
				fputs("\r\033[K", stderr);
			return res;
		}
		if (progress)
			cowctl_scrub_progress(sc);
		json_decref(res);
		nanosleep(&tick, NULL);
	}
}

static int cowctl_scrub(int argc, char **argv)
{
	json_t *req, *res, *sc;
	const char *op = cowctl_scrub_opt.status ? "scrub.status"
	                 : cowctl_scrub_opt.stop ? "scrub.stop"
	                                         : NULL;
	int rc;

	cowctl_need(argc, 0, 0, "scrub",
	            "no arguments (options: --rate, --wait, --status, --stop)");
	if (cowctl_scrub_opt.status + cowctl_scrub_opt.stop + cowctl_scrub_opt.wait > 1)
		cowctl_die(COWCTL_USAGE, "scrub takes one of --wait, --status and --stop");
	if (op && cowctl_scrub_opt.rate)
		cowctl_die(COWCTL_USAGE, "--rate is for starting a scrub, not with %s",
		           cowctl_scrub_opt.status ? "--status" : "--stop");
	if (op) {
		res = cowctl_run(cowctl_req(op));
		sc = json_object_get(res, "scrub");
		if (!cowctl_json)
			cowctl_scrub_report(sc);
		rc = cowctl_scrub_opt.status ? cowctl_scrub_status(sc) : COWCTL_OK;
		json_decref(res);
		return rc;
	}
	req = cowctl_req("scrub.start");
	if (cowctl_scrub_opt.rate)
		json_object_set_new(req, "rate", json_integer((json_int_t)cowctl_scrub_opt.rate));
	res = cowctl_call(req);
	if (!json_is_true(json_object_get(res, "ok"))) {
		/* --wait joins a pass that is running already. */
		if (!cowctl_scrub_opt.wait || strcmp(cowctl_str(res, "errno", ""), "EALREADY"))
			cowctl_refused(res);
		json_decref(res);
		res = cowctl_ask(cowctl_req("scrub.status"));
	}
	uint64_t pass = cowctl_u64(json_object_get(res, "scrub"), "pass");
	if (!cowctl_scrub_opt.wait) {
		if (cowctl_json)
			cowctl_print_json(res);
		else
			printf("scrub pass %" PRIu64 " started; see cowctl scrub --status\n", pass);
		json_decref(res);
		return COWCTL_OK;
	}
	json_decref(res);
	res = cowctl_scrub_wait(pass);
	sc = json_object_get(res, "scrub");
	if (cowctl_json)
		cowctl_print_json(res);
	else
		cowctl_scrub_report(sc);
	rc = cowctl_scrub_status(sc);
	json_decref(res);
	return rc;
}

/* --rate MIB: whole MiB per second, 1 to 1048576. */
static uint64_t cowctl_parse_rate(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (!*s || *s < '0' || *s > '9' || *end || errno || v < 1 || v > (1u << 20))
		cowctl_die(COWCTL_USAGE, "invalid rate \"%s\" (MiB per second, 1 to 1048576)", s);
	return (uint64_t)v << 20;
}

/* --timeout SECS: whole seconds, 0 (no bound) to COWCTL_TIMEOUT_MAX. */
static unsigned cowctl_parse_timeout(const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s < '0' || *s > '9' || *end || errno || v > COWCTL_TIMEOUT_MAX)
		cowctl_die(COWCTL_USAGE, "invalid timeout \"%s\" (seconds, 0 to %d; 0 = no bound)",
		           s, COWCTL_TIMEOUT_MAX);
	return (unsigned)v;
}

/* --page-size N: entries per request of a list, 1 to COWCTL_PAGE_MAX. */
static unsigned cowctl_parse_page_size(const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s < '0' || *s > '9' || *end || errno || v < 1 || v > COWCTL_PAGE_MAX)
		cowctl_die(COWCTL_USAGE, "invalid page size \"%s\" (entries, 1 to %d)", s,
		           COWCTL_PAGE_MAX);
	return (unsigned)v;
}

/* getopt would take "-1" (a size, say) for an option: before it runs,
 * arguments that look like negative numbers get a mark in place of their
 * '-' (positional arguments are moved but never read), and lose it after,
 * so `volume create x -1` reaches the size check. */
#define COWCTL_NEG_MARK '\x01'
static void cowctl_hide_negatives(int argc, char **argv, bool hide)
{
	for (int i = 1; i < argc; i++) {
		if (hide && argv[i][0] == '-' && argv[i][1] >= '0' && argv[i][1] <= '9')
			argv[i][0] = COWCTL_NEG_MARK;
		else if (!hide && argv[i][0] == COWCTL_NEG_MARK)
			argv[i][0] = '-';
	}
}

/* The upgrade's outcome: who serves now and how long clients waited. */
static void cowctl_print_upgrade(json_t *u)
{
	double pause = json_number_value(json_object_get(u, "pause_ms"));

	printf("upgraded: pid %" PRIu64 " handed over to pid %" PRIu64 " (cowbd %s)\n",
	       cowctl_u64(u, "old_pid"), cowctl_u64(u, "pid"),
	       json_string_value(json_object_get(u, "version"))
	           ? json_string_value(json_object_get(u, "version"))
	           : "?");
	printf("connections: %" PRIu64 " carried on, %" PRIu64 " closed (TLS)\n",
	       cowctl_u64(u, "carried"), cowctl_u64(u, "closed"));
	printf("clients paused %.1f ms (drain %.1f, close %.1f, takeover %.1f)\n", pause,
	       json_number_value(json_object_get(u, "drain_ms")),
	       json_number_value(json_object_get(u, "close_ms")),
	       json_number_value(json_object_get(u, "takeover_ms")));
}

static int cowctl_version(void)
{
	if (cowctl_json) {
		json_t *v = json_object();

		json_object_set_new(v, "version", json_string(COWBD_VERSION));
		cowctl_print_json(v);
		json_decref(v);
	} else {
		printf("cowctl %s\n", COWBD_VERSION);
	}
	return COWCTL_OK;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"control", required_argument, NULL, 'c'},
	    {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {"shrink", no_argument, NULL, 'K'},
	    /* scrub's own (cowctl_scrub_opt) */
	    {"wait", no_argument, NULL, 'W'},
	    {"status", no_argument, NULL, 'S'},
	    {"stop", no_argument, NULL, 'X'},
	    {"rate", required_argument, NULL, 'R'},
	    {"binary", required_argument, NULL, 'B'},    /* upgrade's */
	    {"page-size", required_argument, NULL, 'P'}, /* the lists' */
	    {NULL, 0, NULL, 0},
	};
	const char *cmd;
	json_t *req, *res;
	bool version = false;
	int c;

	opterr = 0;
	cowctl_hide_negatives(argc, argv, true);
	while ((c = getopt_long(argc, argv, ":c:jt:hV", longopts, NULL)) != -1) {
		if (optarg && optarg[0] == COWCTL_NEG_MARK)
			optarg[0] = '-'; /* an option's argument is its own: "--rate -1" */
		switch (c) {
		case 'c':
			cowctl_control_path = optarg;
			break;
		case 'j':
			cowctl_json = true;
			break;
		case 't':
			cowctl_timeout_s = cowctl_parse_timeout(optarg);
			cowctl_timeout_opt = true;
			break;
		case 'h':
			cowctl_usage(stdout);
			return COWCTL_OK;
		case 'V':
			version = true;
			break;
		case 'K':
			cowctl_shrink = true;
			break;
		case 'W':
			cowctl_scrub_opt.wait = cowctl_scrub_opt.any = true;
			break;
		case 'S':
			cowctl_scrub_opt.status = cowctl_scrub_opt.any = true;
			break;
		case 'X':
			cowctl_scrub_opt.stop = cowctl_scrub_opt.any = true;
			break;
		case 'R':
			cowctl_scrub_opt.rate = cowctl_parse_rate(optarg);
			cowctl_scrub_opt.any = true;
			break;
		case 'B':
			cowctl_binary = optarg;
			break;
		case 'P':
			cowctl_page_size = cowctl_parse_page_size(optarg);
			cowctl_page_opt = true;
			break;
		case ':':
			cowctl_die(COWCTL_USAGE, "option %s needs an argument", argv[optind - 1]);
		default:
			if (optopt)
				cowctl_die(COWCTL_USAGE, "unknown option -%c (see cowctl --help)",
				           optopt);
			cowctl_die(COWCTL_USAGE, "unknown option %s (see cowctl --help)",
			           argv[optind - 1]);
		}
	}
	cowctl_hide_negatives(argc, argv, false);
	if (version)
		return cowctl_version();
	if (!cowctl_control_path || !*cowctl_control_path)
		cowctl_control_path = getenv("COWBD_CONTROL");
	if (!cowctl_control_path || !*cowctl_control_path)
		cowctl_control_path = COWCTL_DEFAULT_CONTROL;
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		cowctl_usage(stderr);
		return COWCTL_USAGE;
	}
	cmd = argv[0];
	argc--;
	argv++;
	if (!strcmp(cmd, "help")) {
		cowctl_usage(stdout);
		return COWCTL_OK;
	}
	if (cowctl_shrink && (strcmp(cmd, "volume") || !argc || strcmp(argv[0], "resize")))
		cowctl_die(COWCTL_USAGE, "--shrink is an option of volume resize");
	if (cowctl_binary && strcmp(cmd, "upgrade"))
		cowctl_die(COWCTL_USAGE, "--binary is an option of upgrade");
	if (cowctl_page_opt && ((strcmp(cmd, "volume") && strcmp(cmd, "snapshot")) || !argc ||
	                        strcmp(argv[0], "list")))
		cowctl_die(COWCTL_USAGE,
		           "--page-size is an option of volume list and snapshot list");
	if (!strcmp(cmd, "scrub"))
		return cowctl_scrub(argc, argv);
	if (!strcmp(cmd, "compact"))
		return cowctl_compact(argc);
	if (cowctl_scrub_opt.any)
		cowctl_die(COWCTL_USAGE, "--wait, --status, --stop and --rate are options of scrub "
		                         "(and --wait of compact)");
	if (!strcmp(cmd, "volume"))
		return cowctl_volume(argc, argv);
	if (!strcmp(cmd, "stats"))
		return cowctl_stats(argc, argv);
	if (!strcmp(cmd, "snapshot"))
		return cowctl_snapshot(argc, argv);
	if (!strcmp(cmd, "clone")) {
		cowctl_need(argc, 2, 2, "clone", "VOL@SNAP NEWVOL");
		cowctl_check_name(argv[0], NAMES_SNAPSHOT);
		cowctl_check_name(argv[1], NAMES_VOLUME);
		req = cowctl_req("clone");
		json_object_set_new(req, "snapshot", json_string(argv[0]));
		json_object_set_new(req, "name", json_string(argv[1]));
		res = cowctl_run(req);
		if (!cowctl_json)
			printf("created volume \"%s\" from \"%s\"\n", argv[1], argv[0]);
	} else if (!strcmp(cmd, "rollback")) {
		char vol[NAMES_PART_MAX + 1];

		cowctl_need(argc, 1, 1, "rollback", "VOL@SNAP");
		cowctl_check_name(argv[0], NAMES_SNAPSHOT);
		req = cowctl_req("rollback");
		json_object_set_new(req, "name", json_string(argv[0]));
		res = cowctl_run(req);
		names_split(argv[0], vol, NULL); /* checked above */
		if (!cowctl_json)
			printf("rolled back \"%s\" to \"%s\"\n", vol, argv[0]);
	} else if (!strcmp(cmd, "pool")) {
		if (!argc || strcmp(argv[0], "status"))
			cowctl_die(COWCTL_USAGE,
			           argc ? "unknown command \"pool %s\" (see cowctl --help)"
			                : "pool needs status%s",
			           argc ? argv[0] : "");
		cowctl_need(argc - 1, 0, 0, "pool status", "no arguments");
		res = cowctl_run(cowctl_req("pool.status"));
		if (!cowctl_json)
			cowctl_print_pool(json_object_get(res, "pool"));
	} else if (!strcmp(cmd, "clients")) {
		cowctl_need(argc, 0, 0, "clients", "no arguments");
		res = cowctl_run(cowctl_req("clients"));
		if (!cowctl_json)
			cowctl_print_clients(json_object_get(res, "clients"));
	} else if (!strcmp(cmd, "diff")) {
		cowctl_need(argc, 1, 2, "diff", "FROM [TO] (VOL or VOL@SNAP)");
		for (int i = 0; i < argc; i++)
			cowctl_check_name(argv[i], NAMES_ANY);
		req = cowctl_req("diff");
		json_object_set_new(req, "from", json_string(argv[0]));
		if (argc > 1)
			json_object_set_new(req, "to", json_string(argv[1]));
		res = cowctl_ask(req);
		/* --json: the extents alone, [{"offset", "length", "zero"}...] */
		if (cowctl_json)
			cowctl_print_json(json_object_get(res, "extents"));
		else
			cowctl_print_diff(res);
	} else if (!strcmp(cmd, "upgrade")) {
		cowctl_need(argc, 0, 0, "upgrade", "no arguments but --binary PATH");
		if (!cowctl_timeout_opt)
			cowctl_timeout_s = COWCTL_TIMEOUT_UPGRADE_DEFAULT;
		req = cowctl_req("upgrade");
		if (cowctl_binary)
			json_object_set_new(req, "binary", json_string(cowctl_binary));
		res = cowctl_run(req);
		if (!cowctl_json)
			cowctl_print_upgrade(json_object_get(res, "upgrade"));
	} else if (!strcmp(cmd, "checkpoint")) {
		cowctl_need(argc, 0, 0, "checkpoint", "no arguments");
		res = cowctl_run(cowctl_req("checkpoint"));
		if (!cowctl_json)
			printf("checkpoint written\n");
	} else {
		cowctl_die(COWCTL_USAGE, "unknown command \"%s\" (see cowctl --help)", cmd);
	}
	json_decref(res);
	return COWCTL_OK;
}
