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
 * One owner per pool: the pool is opened with an exclusive lock before
 * anything is read (blkdev), so a second daemon is refused with one line
 * naming the holder from the owner record this daemon writes once the pool
 * is open.  Signals: SIGTERM/SIGINT stop cleanly; SIGHUP reloads the TLS
 * credentials on the loop thread; SIGUSR1/SIGUSR2 are logged and ignored;
 * SIGPIPE is ignored (and HUP/USR1/USR2 too while no watcher runs).
 *
 * cowbd stays in the foreground whether or not --foreground is given
 * (systemd style: Type=notify, logs on stderr).  Under a service manager
 * (service.c) it takes the listening sockets socket activation passed
 * instead of binding its own, says READY=1 once the control socket is up,
 * RELOADING=1/READY=1 around SIGHUP and STOPPING=1 at SIGTERM/SIGINT, and
 * feeds the watchdog while the loop and the log thread make progress.
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
#include <time.h>
#include <unistd.h>

#include "blkdev.h"
#include "conn.h"
#include "control.h"
#include "names.h"
#include "say.h"
#include "service.h"
#include "sockets.h"
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
	        "  --create SIZE       create the pool if PATH is missing or blank (all\n"
	        "                      zeroes; K/M/G/T suffixes); a blank file smaller than\n"
	        "                      SIZE is grown, any other size is refused; an existing\n"
	        "                      pool is opened as it is\n"
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
	        "  --max-inflight-bytes SIZE payload held per connection (default 64M)\n"
	        "one daemon per pool: a pool held by another cowbd is refused, naming it\n"
	        "signals: SIGTERM/SIGINT stop cleanly; SIGHUP reloads the TLS credentials;\n"
	        "         SIGUSR1/SIGUSR2 are logged and ignored\n");
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
	bool listen_default; /* no --listen or --unix: listen[0] is DEFAULT_LISTEN */
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
	if (o->nlisten == 0 && !o->unix_path) {
		o->listen[o->nlisten++] = DEFAULT_LISTEN;
		o->listen_default = true;
	}
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

/* The one line a refused opener prints: who holds path. */
static void pool_say_holder(const char *path)
{
	char line[512];

	blkdev_holder(path, line, sizeof(line));
	say_error("%s", line);
}

/* Open path as its only owner (the lock comes before any read), or with
 * --create make a new pool file there when nothing is there (*made: the
 * file is ours to remove if the pool cannot be made).  Returns the device
 * or NULL after one line: a pool someone holds names its holder. */
static struct blkdev *pool_take(const char *path, uint64_t create_size, bool *made)
{
	struct blkdev *dev = blkdev_open(path, BLKDEV_OWNER);

	*made = false;
	if (!dev && errno == ENOENT && create_size) {
		dev = blkdev_create_file(path, create_size);
		*made = dev != NULL;
		if (!dev && errno == EEXIST) /* another opener made it meanwhile */
			dev = blkdev_open(path, BLKDEV_OWNER);
	}
	if (!dev && errno == EBUSY)
		pool_say_holder(path);
	else if (!dev)
		say_error("cannot open pool %s: %s", path, strerror(errno));
	return dev;
}

/* A blank dev whose size is not create_size: grow a regular file that is
 * smaller (a sparse file costs nothing and nothing is lost), refuse a
 * larger file or any device — the pool must be the size asked for or the
 * size the operator sees, never silently another.  0, or -1 after one
 * line that gives both sizes. */
static int pool_fit(struct blkdev *dev, const char *path, uint64_t create_size)
{
	unsigned long long have = dev->size, want = create_size;
	int err;

	if (have == want)
		return 0;
	if (blkdev_is_device(dev) || have > want) {
		say_error("refusing to create a pool of %llu bytes on %s: it is a blank %s of %llu "
		          "bytes (pass --create %llu to use all of it)",
		          want, path, blkdev_is_device(dev) ? "device" : "file", have, have);
		return -1;
	}
	if ((err = blkdev_set_size(dev, want)) < 0) {
		say_error("cannot grow %s from %llu to %llu bytes: %s", path, have, want,
		          strerror(-err));
		return -1;
	}
	say_info("grew blank file %s from %llu to %llu bytes", path, have, want);
	return 0;
}

/* --create: open a pool that is there (warning when its size is not the
 * one asked for), make one on a missing file or an all-zero file or device
 * (nothing to lose), and refuse anything else.  On failure leave path as
 * found: removed if made, else its old size.  0 when dev now holds a pool,
 * or -1 after one line. */
static int pool_adopt(struct blkdev *dev, const char *path, uint64_t create_size, bool made)
{
	uint64_t old_size = dev->size;
	int err = store_probe(dev);

	if (err == 1) {
		if (dev->size != create_size)
			say_warn(
			    "pool %s exists with %llu bytes (--create asked for %llu); opening "
			    "it as it is",
			    path, (unsigned long long)dev->size, (unsigned long long)create_size);
		else
			say_info("pool %s exists; opening it", path);
		return 0;
	}
	if (err == 0)
		err = blkdev_is_blank(dev);
	if (err < 0) {
		say_error("cannot read %s: %s", path, strerror(-err));
		return -1;
	}
	if (err == 0) {
		say_error("refusing to create a pool on %s: it holds data that is not a cowbd pool",
		          path);
		return -1;
	}
	if (pool_fit(dev, path, create_size) < 0)
		return -1;
	err = store_format(dev);
	if (err) {
		say_error("cannot create pool %s: %s", path,
		          err == -EINVAL ? "too small (the minimum is 64 MiB)" : strerror(-err));
		if (!made && dev->size != old_size && (err = blkdev_set_size(dev, old_size)) < 0)
			say_warn("cannot truncate %s back: %s", path, strerror(-err));
		return -1;
	}
	say_info("created pool %s (%llu bytes)%s", path, (unsigned long long)dev->size,
	         made                    ? ""
	         : blkdev_is_device(dev) ? " on a blank device"
	                                 : " on a blank file");
	return 0;
}

/* Open the pool at path as its one owner, creating it when create_size is
 * set and the path is missing or blank, and write the owner record that
 * names this daemon to a refused opener.  Returns the open store or NULL
 * after one line that names the problem. */
static struct store *pool_open(const char *path, uint64_t create_size, uint64_t checkpoint_bytes,
                               uint64_t started)
{
	struct store_opts opts = {.checkpoint_bytes = checkpoint_bytes};
	const char *why = NULL;
	struct blkdev *dev;
	struct store *st;
	bool made;
	int err;

	dev = pool_take(path, create_size, &made);
	if (!dev)
		return NULL;
	if (create_size && pool_adopt(dev, path, create_size, made) < 0)
		goto close_dev;
	st = store_open(dev, &opts, &why);
	if (!st) {
		say_error("cannot open pool %s: %s", path, why ? why : strerror(errno));
		goto close_dev;
	}
	/* Advisory (the lock decides): a failure costs only a vaguer message
	 * to the next opener.  Left in place at exit, see docs/FORMAT.md. */
	if ((err = blkdev_owner_write(dev, "cowbd", started)) < 0)
		say_warn("cannot write the owner record of %s: %s", path, strerror(-err));
	return st;

close_dev:
	if (made)
		unlink(path); /* ours (O_EXCL), and still locked: no one else has it */
	blkdev_close(dev);
	return NULL;
}

/* The running daemon: what main_start makes and main_stop takes down. */
struct main_daemon {
	const struct main_opts *o;
	struct tls_creds *creds;    /* NULL with --tls off; the ones new connections get */
	struct tls_creds **retired; /* replaced by SIGHUP; sessions may still use them */
	size_t nretired;
	struct store *st;
	struct ev_loop *loop;
	struct conn_server *srv;
	struct control *ctl;
	struct service *sv;
	struct service_fds fds; /* passed by the service manager; -1 once handed on */
	ev_signal sigterm, sigint, sighup, sigusr1, sigusr2;
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

/* The NBD listeners: the sockets the service manager passed (socket
 * activation), else those --listen and --unix name.  0, or -1 with a
 * one-line reason in err. */
static int main_listen(struct main_daemon *d, const struct main_opts *o, char *err, size_t errlen)
{
	char name[128];

	if (d->fds.nnbd && (!o->listen_default || o->unix_path))
		say_warn("--listen/--unix ignored: the service manager passed %u NBD socket(s)",
		         d->fds.nnbd);
	for (unsigned i = 0; i < d->fds.nnbd; i++) {
		int fd = d->fds.nbd[i];

		d->fds.nbd[i] = -1;
		sockets_local_name(fd, name, sizeof(name));
		if (conn_server_listen_fd(d->srv, fd, err, errlen))
			return -1;
		say_info("listening on %s (passed by the service manager)", name);
	}
	for (unsigned i = 0; i < o->nlisten && !d->fds.nnbd; i++) {
		if (conn_server_listen_tcp(d->srv, o->listen[i], err, errlen))
			return -1;
		say_info("listening on %s", o->listen[i]);
	}
	if (o->unix_path && !d->fds.nnbd) {
		if (conn_server_listen_unix(d->srv, o->unix_path, err, errlen))
			return -1;
		say_info("listening on unix:%s", o->unix_path);
	}
	return 0;
}

/* The control socket: the one the service manager passed, else one made
 * at --control.  0, or -1 with a one-line reason in err. */
static int main_control(struct main_daemon *d, const struct main_opts *o, char *err, size_t errlen)
{
	char name[128];
	int fd = d->fds.control;

	if (fd < 0) {
		d->ctl = control_start(d->st, o->control_path, err, errlen);
		if (d->ctl)
			say_info("control socket %s", o->control_path);
		return d->ctl ? 0 : -1;
	}
	d->fds.control = -1;
	sockets_local_name(fd, name, sizeof(name));
	d->ctl = control_start_fd(d->st, fd, err, errlen);
	if (d->ctl)
		say_info("control socket %s (passed by the service manager)", name);
	return d->ctl ? 0 : -1;
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
	if (main_listen(d, o, err, sizeof(err)) < 0)
		goto fail;
	if (main_control(d, o, err, sizeof(err)) < 0)
		goto fail;
	return 0;

fail:
	say_error("%s", err);
	return -1;
}

/* Undo a start that failed (the loop never ran).  No NBD request reached
 * the store, so the server may go before the store. */
static void main_abort(struct main_daemon *d)
{
	service_free(d->sv);
	service_fds_close(&d->fds);
	control_stop(d->ctl);
	conn_server_free(d->srv);
	store_close(d->st);
	tls_creds_free(d->creds);
	if (d->loop)
		ev_loop_destroy(d->loop);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct main_daemon *d = w->data;

	say_info("signal %d: finishing in-flight requests and shutting down", w->signum);
	service_stopping(d->sv);
	conn_server_stop(d->srv);
}

/* SIGHUP: load the TLS credentials again from the same files (a renewed
 * certificate, a new PSK user) for connections accepted from now on.  On
 * the loop thread, so conn never sees the switch half done.  The old
 * credentials stay alive until exit: a session still using them has no
 * count to tell us when it is gone, and reloads are rare.  On any error
 * the old credentials stay in use. */
static void main_reload_tls(struct main_daemon *d)
{
	struct tls_creds *fresh, **r;
	char err[256];

	if (!d->creds) {
		say_info("SIGHUP: reloaded nothing (TLS is off; no other setting changes live)");
		return;
	}
	fresh = tls_creds_load(d->o->tls_certs, d->o->tls_psk, err, sizeof(err));
	if (!fresh) {
		say_error("SIGHUP: reload failed, keeping the old TLS credentials: %s", err);
		return;
	}
	r = realloc(d->retired, (d->nretired + 1) * sizeof(*r));
	if (!r) {
		tls_creds_free(fresh);
		say_error("SIGHUP: reload failed, keeping the old TLS credentials: out of memory");
		return;
	}
	d->retired = r;
	d->retired[d->nretired++] = d->creds;
	d->creds = fresh;
	conn_server_set_tls(d->srv, fresh, !strcmp(d->o->tls_mode, "require"));
	say_info("SIGHUP: reloaded TLS credentials: %s", tls_creds_describe(fresh));
}

/* SIGHUP, between RELOADING=1 and READY=1 for the service manager. */
static void on_reload_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct main_daemon *d = w->data;

	service_reloading(d->sv, "reloading (SIGHUP)");
	main_reload_tls(d);
	service_reloaded(d->sv);
}

static void on_ignored_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	say_info("signal SIG%s ignored: it has no use in cowbd", sigabbrev_np(w->signum));
}

/* Signals that must never end the daemon by their default action: ignored
 * while no watcher is running (opening the pool, stopping), handled by
 * the loop's watchers in between (libev restores SIG_DFL when a watcher
 * stops, hence the second call after the loop). */
static void main_ignore_signals(void)
{
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
}

/* Serve until SIGTERM or SIGINT has drained every connection; SIGHUP
 * reloads, SIGUSR1/SIGUSR2 are logged and ignored. */
static void main_run(struct main_daemon *d)
{
	ev_signal *const all[] = {&d->sigterm, &d->sigint, &d->sighup, &d->sigusr1, &d->sigusr2};

	ev_signal_init(&d->sigterm, on_stop_signal, SIGTERM);
	ev_signal_init(&d->sigint, on_stop_signal, SIGINT);
	ev_signal_init(&d->sighup, on_reload_signal, SIGHUP);
	ev_signal_init(&d->sigusr1, on_ignored_signal, SIGUSR1);
	ev_signal_init(&d->sigusr2, on_ignored_signal, SIGUSR2);
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		all[i]->data = d;
		ev_signal_start(d->loop, all[i]);
	}
	ev_run(d->loop, 0); /* returns once conn_server_stop() has drained everything */
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		ev_signal_stop(d->loop, all[i]);
	main_ignore_signals();
}

/* TLS credentials: the current ones and every one a SIGHUP replaced. */
static void main_free_creds(struct main_daemon *d)
{
	for (size_t i = 0; i < d->nretired; i++)
		tls_creds_free(d->retired[i]);
	free(d->retired);
	tls_creds_free(d->creds);
}

/* Stop in the order the top of this file explains: control socket, store
 * (flush + checkpoint, threads joined), and only then the connection
 * server, whose wake-up watcher store threads may touch until joined. */
static void main_stop(struct main_daemon *d)
{
	service_free(d->sv);
	control_stop(d->ctl);
	store_close(d->st);
	conn_server_free(d->srv);
	main_free_creds(d);
	ev_loop_destroy(d->loop);
	say_info("stopped");
}

/* The daemon's test faults, named by environment variables only tests
 * set (docs/TESTING.md).  COWBD_TEST_STALL_LOG=AFTER:DURATION holds the
 * log thread DURATION seconds, AFTER seconds from now, so the watchdog
 * test sees WATCHDOG=1 stop.  0, or -1 after one line. */
static int main_test_faults(struct main_daemon *d)
{
	const char *stall = getenv("COWBD_TEST_STALL_LOG");
	char err[256];

	if (stall && service_stall_log(d->sv, stall, err, sizeof(err)) < 0) {
		say_error("%s", err);
		return -1;
	}
	return 0;
}

/* What main needs before the pool opens: the service manager's state and
 * the sockets it passed (a bad one refused before the pool is touched).
 * 0, or -1 after one line. */
static int main_service(struct main_daemon *d)
{
	char err[256];

	d->fds = (struct service_fds){.control = -1};
	d->sv = service_new();
	if (!d->sv) {
		say_error("out of memory");
		return -1;
	}
	if (service_listen_fds(&d->fds, err, sizeof(err)) < 0) {
		say_error("%s", err);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct main_opts o;
	struct main_daemon d = {.o = &o};
	uint64_t started = (uint64_t)time(NULL);
	int r;

	if ((r = main_parse_args(argc, argv, &o)) != MAIN_RUN)
		return r;
	if (main_load_tls(&o, &d.creds) < 0)
		return 1;
	if (main_service(&d) < 0) {
		service_free(d.sv);
		tls_creds_free(d.creds);
		return 1;
	}
	main_ignore_signals();
	service_status(d.sv, "opening pool %s (recovering its log if it was not closed cleanly)",
	               o.pool);
	d.st = pool_open(o.pool, o.create_size, o.checkpoint_bytes, started);
	if (!d.st) {
		service_status(d.sv, "failed to open pool %s", o.pool);
		service_fds_close(&d.fds);
		service_free(d.sv);
		tls_creds_free(d.creds);
		return 1;
	}
	if (main_start(&d, &o) < 0 || service_start(d.sv, d.loop, d.st, d.srv) < 0 ||
	    main_test_faults(&d) < 0) {
		main_abort(&d);
		return 1;
	}
	main_run(&d);
	main_stop(&d);
	return 0;
}
