/* main.c — the cowbd daemon: parse the command line, open (or create) the
 * pool, bind the NBD listeners, start the control socket, run the event
 * loop until SIGTERM/SIGINT, then shut down in order.
 *
 * Startup order matters to tests and to systemd: listeners are bound
 * before the control socket appears, so "control socket exists" means
 * "ready to serve".  Shutdown order: stop accepting and let in-flight NBD
 * requests finish (conn_server_stop), stop the control socket, then
 * store_close() (flush + checkpoint), and only then free the connection
 * server, whose wake-up watcher store threads may touch until joined.
 *
 * cowbd stays in the foreground whether or not --foreground is given
 * (systemd style: Type=simple, logs on stderr).
 */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkdev.h"
#include "conn.h"
#include "control.h"
#include "names.h"
#include "say.h"
#include "store.h"
#include "tls.h"

#define DEFAULT_LISTEN  "127.0.0.1:10809"
#define DEFAULT_CONTROL "/run/cowbd/control.sock"
#define MAX_LISTEN      8

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: cowbd --pool PATH [--create SIZE] [--listen HOST:PORT]... "
	        "[--unix PATH]\n"
	        "             [--tls off|allow|require] [--tls-certs DIR] [--tls-psk FILE]\n"
	        "             [--control PATH] [--foreground] [--verbose]\n"
	        "  --pool PATH         pool file or block device\n"
	        "  --create SIZE       create the pool if PATH is missing or empty "
	        "(K/M/G/T suffixes)\n"
	        "  --listen HOST:PORT  NBD TCP address, repeatable; [::1]:10809 for IPv6\n"
	        "                      (default " DEFAULT_LISTEN " unless --unix is given)\n"
	        "  --unix PATH         NBD unix socket\n"
	        "  --control PATH      control socket (default " DEFAULT_CONTROL ")\n"
	        "  --foreground        accepted; cowbd never forks\n"
	        "  --tls MODE          off (default), allow (plaintext or TLS) or require\n"
	        "  --tls-certs DIR     X.509: DIR/ca-cert.pem (signs client certificates),\n"
	        "                      DIR/server-cert.pem, DIR/server-key.pem\n"
	        "  --tls-psk FILE      PSK: psktool file of username:hexkey lines\n"
	        "  --verbose           debug logging\n"
	        "  --checkpoint-interval SIZE  log written between checkpoints (default 256M;\n"
	        "                      longer: fewer checkpoints, longer recovery)\n"
	        "limits:\n"
	        "  --max-connections N       open NBD connections (default 1024); more\n"
	        "                            are accepted and closed at once\n"
	        "  --handshake-timeout SECS  accept to transmission (default 30; 0 = none)\n"
	        "  --idle-timeout SECS       close connections idle this long (default 0 = off)\n"
	        "  --max-inflight-requests N per connection (default 256)\n"
	        "  --max-inflight-bytes SIZE payload held per connection (default 64M)\n");
}

/* A count for a limit: 1 .. UINT_MAX.  0 or -EINVAL. */
static int parse_count(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > UINT_MAX)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* Seconds, fractions allowed, 0 .. one year.  0 or -EINVAL. */
static int parse_secs(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0 && v <= 366 * 86400.0))
		return -EINVAL;
	*out = v;
	return 0;
}

/* The size argument of option opt (names_parse_size, limits [min, max]).
 * Returns 0, or -EINVAL after one line "bad --opt: reason". */
static int parse_size_opt(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char msg[NAMES_MSG_MAX];

	if (names_parse_size(s, min, max, out, msg, sizeof(msg)) < 0) {
		say_error("bad --%s: %s", opt, msg);
		return -EINVAL;
	}
	return 0;
}

/* Everything the command line says; main_parse_args fills it. */
struct main_opts {
	const char *pool;
	uint64_t create_size; /* --create; 0 = open an existing pool only */
	const char *listen[MAX_LISTEN];
	unsigned nlisten;
	const char *unix_path;
	const char *control_path;
	const char *tls_mode, *tls_certs, *tls_psk;
	struct conn_limits lim;
	uint64_t checkpoint_bytes; /* 0 = the store's default */
};

/* What main does after parsing: run, or exit with this status. */
enum { MAIN_RUN = -1, MAIN_EXIT_OK = 0, MAIN_EXIT_FAIL = 1 };

/* Apply one getopt result to o.  Returns MAIN_RUN to go on, else the exit
 * status (after one message, or the usage text). */
static int main_parse_option(int opt, const char *arg, struct main_opts *o)
{
	uint64_t v;

	switch (opt) {
	case 'p':
		o->pool = arg;
		break;
	case 'c':
		/* A file size is an off_t, so the pool file is at most 2^63-1. */
		if (parse_size_opt("create", arg, 1, INT64_MAX, &o->create_size))
			return MAIN_EXIT_FAIL;
		break;
	case 'l':
		if (o->nlisten == MAX_LISTEN) {
			say_error("too many --listen addresses (max %d)", MAX_LISTEN);
			return MAIN_EXIT_FAIL;
		}
		o->listen[o->nlisten++] = arg;
		break;
	case 'u':
		o->unix_path = arg;
		break;
	case 'C':
		o->control_path = arg;
		break;
	case 'f':
		break;
	case 'v':
		say_max_level = SAY_DEBUG;
		break;
	case 'M':
		if (parse_count(arg, &o->lim.max_conns)) {
			say_error("bad --max-connections %s (want a count >= 1)", arg);
			return MAIN_EXIT_FAIL;
		}
		break;
	case 'H':
		if (parse_secs(arg, &o->lim.handshake_timeout)) {
			say_error("bad --handshake-timeout %s (want seconds)", arg);
			return MAIN_EXIT_FAIL;
		}
		break;
	case 'I':
		if (parse_secs(arg, &o->lim.idle_timeout)) {
			say_error("bad --idle-timeout %s (want seconds)", arg);
			return MAIN_EXIT_FAIL;
		}
		break;
	case 'R':
		if (parse_count(arg, &o->lim.max_reqs)) {
			say_error("bad --max-inflight-requests %s (want a count >= 1)", arg);
			return MAIN_EXIT_FAIL;
		}
		break;
	case 'B':
		if (parse_size_opt("max-inflight-bytes", arg, 1, SIZE_MAX, &v))
			return MAIN_EXIT_FAIL;
		o->lim.max_bytes = (size_t)v;
		break;
	case 'T':
		o->tls_mode = arg;
		break;
	case 'X':
		o->tls_certs = arg;
		break;
	case 'K':
		o->tls_psk = arg;
		break;
	case 'P':
		/* Below 4 MiB the pool would checkpoint every few rounds. */
		if (parse_size_opt("checkpoint-interval", arg, 4u << 20, UINT64_MAX,
		                   &o->checkpoint_bytes))
			return MAIN_EXIT_FAIL;
		break;
	case 'h':
		usage(stdout);
		return MAIN_EXIT_OK;
	default:
		usage(stderr);
		return MAIN_EXIT_FAIL;
	}
	return MAIN_RUN;
}

/* The rules that tie options together, checked once all are read.
 * Returns MAIN_RUN or MAIN_EXIT_FAIL after one message. */
static int main_check_opts(struct main_opts *o)
{
	bool tls_on = strcmp(o->tls_mode, "off") != 0;

	if (!o->pool) {
		say_error("--pool PATH is required");
		usage(stderr);
		return MAIN_EXIT_FAIL;
	}
	if (o->nlisten == 0 && !o->unix_path)
		o->listen[o->nlisten++] = DEFAULT_LISTEN;
	if (tls_on && strcmp(o->tls_mode, "allow") && strcmp(o->tls_mode, "require")) {
		say_error("bad --tls mode %s (want off, allow or require)", o->tls_mode);
		return MAIN_EXIT_FAIL;
	}
	if (!tls_on && (o->tls_certs || o->tls_psk)) {
		say_error("--tls-certs/--tls-psk given but --tls is off (add --tls allow or "
		          "--tls require)");
		return MAIN_EXIT_FAIL;
	}
	if (tls_on && !o->tls_certs && !o->tls_psk) {
		say_error("--tls %s needs --tls-certs DIR or --tls-psk FILE", o->tls_mode);
		return MAIN_EXIT_FAIL;
	}
	return MAIN_RUN;
}

/* Fill o from the command line.  Returns MAIN_RUN, or the exit status
 * after one message (MAIN_EXIT_OK for --help). */
static int main_parse_args(int argc, char **argv, struct main_opts *o)
{
	static const struct option longopts[] = {
	    {"pool", required_argument, NULL, 'p'},
	    {"create", required_argument, NULL, 'c'},
	    {"listen", required_argument, NULL, 'l'},
	    {"unix", required_argument, NULL, 'u'},
	    {"control", required_argument, NULL, 'C'},
	    {"foreground", no_argument, NULL, 'f'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {"max-connections", required_argument, NULL, 'M'},
	    {"handshake-timeout", required_argument, NULL, 'H'},
	    {"idle-timeout", required_argument, NULL, 'I'},
	    {"max-inflight-requests", required_argument, NULL, 'R'},
	    {"max-inflight-bytes", required_argument, NULL, 'B'},
	    {"tls", required_argument, NULL, 'T'},
	    {"tls-certs", required_argument, NULL, 'X'},
	    {"tls-psk", required_argument, NULL, 'K'},
	    {"checkpoint-interval", required_argument, NULL, 'P'},
	    {NULL, 0, NULL, 0},
	};
	int opt, r;

	*o = (struct main_opts){
	    .control_path = DEFAULT_CONTROL,
	    .tls_mode = "off",
	    .lim = {.handshake_timeout = CONN_DEFAULT_HANDSHAKE_TIMEOUT},
	};
	while ((opt = getopt_long(argc, argv, "p:c:l:u:C:fvh", longopts, NULL)) != -1)
		if ((r = main_parse_option(opt, optarg, o)) != MAIN_RUN)
			return r;
	if (optind < argc) {
		say_error("unexpected argument: %s", argv[optind]);
		return MAIN_EXIT_FAIL;
	}
	return main_check_opts(o);
}

/* Make a pool on dev; on failure print why.  0 or -1. */
static int pool_format(struct blkdev *dev, const char *path)
{
	int err = store_format(dev);

	if (err)
		say_error("cannot create pool %s: %s", path,
		          err == -EINVAL ? "too small (the minimum is 64 MiB)" : strerror(-err));
	return err ? -1 : 0;
}

/* With --create: should path get a new pool file?  *fresh when path is
 * missing (then *made too: a failure removes what we made) or an empty
 * regular file.  sb receives what stat found.  0, or -1 after a message. */
static int pool_stat(const char *path, struct stat *sb, bool *fresh, bool *made)
{
	*fresh = *made = false;
	if (stat(path, sb) < 0) {
		if (errno != ENOENT) {
			say_error("cannot open pool %s: %s", path, strerror(errno));
			return -1;
		}
		*fresh = *made = true;
	} else if (S_ISREG(sb->st_mode) && sb->st_size == 0) {
		*fresh = true;
	}
	return 0;
}

/* Create a pool file of size bytes at path (missing, or empty).  On
 * failure leave path as found: removed if made, else empty again.
 * Returns the open device or NULL after a message. */
static struct blkdev *pool_create(const char *path, uint64_t size, bool made)
{
	struct blkdev *dev = blkdev_open_file(path, size);

	if (!dev) {
		say_error("cannot open pool %s: %s", path, strerror(errno));
		goto undo_file;
	}
	if (pool_format(dev, path) < 0)
		goto close_dev;
	say_info("created pool %s (%llu bytes)", path, (unsigned long long)size);
	return dev;

close_dev:
	blkdev_close(dev);
	if (!made && truncate(path, 0) < 0)
		say_warn("cannot truncate %s back: %s", path, strerror(errno));
undo_file:
	if (made)
		unlink(path);
	return NULL;
}

/* --create on a path that already holds something: open a pool that is
 * there, make one on an all-zero file or device (nothing to lose), and
 * refuse anything else.  0 when dev now holds a pool, or -1 after a
 * message. */
static int pool_adopt(struct blkdev *dev, const char *path, const struct stat *sb)
{
	int err = store_probe(dev);

	if (err == 1) {
		say_info("pool %s exists; opening it", path);
		return 0;
	}
	if (err == 0 && blkdev_is_blank(dev) == 1) {
		/* A sparse file from truncate, a wiped device. */
		if (pool_format(dev, path) < 0)
			return -1;
		say_info("created pool %s on a blank %s", path,
		         S_ISBLK(sb->st_mode) ? "device" : "file");
		return 0;
	}
	if (err == 0)
		say_error("refusing to create a pool on %s: it holds data that is not a cowbd pool",
		          path);
	else
		say_error("cannot read %s: %s", path, strerror(-err));
	return -1;
}

/* Open the pool at path, creating it when create_size is set and the path
 * is missing, empty or blank.  Returns the open store or NULL after one
 * line that names the problem. */
static struct store *pool_open(const char *path, uint64_t create_size, uint64_t checkpoint_bytes)
{
	struct store_opts opts = {.checkpoint_bytes = checkpoint_bytes};
	struct blkdev *dev;
	struct store *st;
	const char *why = NULL;
	struct stat sb;
	bool fresh = false, made = false;

	if (create_size && pool_stat(path, &sb, &fresh, &made) < 0)
		return NULL;
	if (fresh) {
		dev = pool_create(path, create_size, made);
		if (!dev)
			return NULL;
	} else {
		dev = blkdev_open_file(path, 0);
		if (!dev) {
			say_error("cannot open pool %s: %s", path, strerror(errno));
			return NULL;
		}
		if (create_size && pool_adopt(dev, path, &sb) < 0) {
			blkdev_close(dev);
			return NULL;
		}
	}
	st = store_open(dev, &opts, &why);
	if (!st) {
		say_error("cannot open pool %s: %s", path, why ? why : strerror(errno));
		return NULL;
	}
	return st;
}

/* The running daemon: what main_start makes and main_stop takes down. */
struct main_daemon {
	struct tls_creds *creds; /* NULL with --tls off */
	struct store *st;
	struct ev_loop *loop;
	struct conn_server *srv;
	struct control *ctl;
	ev_signal sigterm, sigint;
};

/* Load the TLS credentials --tls asks for, before the pool is touched, so
 * a bad file changes nothing.  0, or -1 after a message. */
static int main_load_tls(const struct main_opts *o, struct tls_creds **creds)
{
	char err[256];

	*creds = NULL;
	if (!strcmp(o->tls_mode, "off"))
		return 0;
	*creds = tls_creds_load(o->tls_certs, o->tls_psk, err, sizeof(err));
	if (!*creds) {
		say_error("%s", err);
		return -1;
	}
	return 0;
}

/* Event loop, connection server, NBD listeners, then the control socket
 * last: its appearance means "ready to serve".  On failure print one line
 * and return -1; what was made stays in d for main_abort. */
static int main_start(struct main_daemon *d, const struct main_opts *o)
{
	bool require = !strcmp(o->tls_mode, "require");
	char err[256];

	d->loop = ev_default_loop(EVFLAG_AUTO);
	d->srv = d->loop ? conn_server_new(d->loop, d->st) : NULL;
	if (!d->srv) {
		say_error("cannot start the event loop");
		return -1;
	}
	conn_server_set_limits(d->srv, &o->lim);
	if (d->creds) {
		conn_server_set_tls(d->srv, d->creds, require);
		say_info("TLS %s: %s", require ? "required" : "allowed",
		         tls_creds_describe(d->creds));
	}
	for (unsigned i = 0; i < o->nlisten; i++) {
		if (conn_server_listen_tcp(d->srv, o->listen[i], err, sizeof(err)))
			goto fail;
		say_info("listening on %s", o->listen[i]);
	}
	if (o->unix_path) {
		if (conn_server_listen_unix(d->srv, o->unix_path, err, sizeof(err)))
			goto fail;
		say_info("listening on unix:%s", o->unix_path);
	}
	d->ctl = control_start(d->st, o->control_path, err, sizeof(err));
	if (!d->ctl)
		goto fail;
	say_info("control socket %s", o->control_path);
	return 0;

fail:
	say_error("%s", err);
	return -1;
}

/* Undo a main_start that failed (the control socket never started).  No
 * request reached the store, so the server may go before the store. */
static void main_abort(struct main_daemon *d)
{
	conn_server_free(d->srv);
	store_close(d->st);
	tls_creds_free(d->creds);
	if (d->loop)
		ev_loop_destroy(d->loop);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct conn_server *srv = w->data;

	say_info("signal %d: finishing in-flight requests and shutting down", w->signum);
	conn_server_stop(srv);
}

/* Serve until SIGTERM or SIGINT has drained every connection. */
static void main_run(struct main_daemon *d)
{
	ev_signal_init(&d->sigterm, on_signal, SIGTERM);
	ev_signal_init(&d->sigint, on_signal, SIGINT);
	d->sigterm.data = d->sigint.data = d->srv;
	ev_signal_start(d->loop, &d->sigterm);
	ev_signal_start(d->loop, &d->sigint);
	ev_run(d->loop, 0); /* returns once conn_server_stop() has drained everything */
	ev_signal_stop(d->loop, &d->sigterm);
	ev_signal_stop(d->loop, &d->sigint);
}

/* Stop in the order the top of this file explains: control socket, store
 * (flush + checkpoint, threads joined), and only then the connection
 * server, whose wake-up watcher store threads may touch until joined. */
static void main_stop(struct main_daemon *d)
{
	control_stop(d->ctl);
	store_close(d->st);
	conn_server_free(d->srv);
	tls_creds_free(d->creds);
	ev_loop_destroy(d->loop);
	say_info("stopped");
}

int main(int argc, char **argv)
{
	struct main_opts o;
	struct main_daemon d = {0};
	int r;

	if ((r = main_parse_args(argc, argv, &o)) != MAIN_RUN)
		return r;
	if (main_load_tls(&o, &d.creds) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	d.st = pool_open(o.pool, o.create_size, o.checkpoint_bytes);
	if (!d.st) {
		tls_creds_free(d.creds);
		return 1;
	}
	if (main_start(&d, &o) < 0) {
		main_abort(&d);
		return 1;
	}
	main_run(&d);
	main_stop(&d);
	return 0;
}
