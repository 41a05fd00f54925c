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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkdev.h"
#include "conn.h"
#include "control.h"
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

/* "16G" → bytes.  Suffixes K, M, G, T (powers of 1024), case-insensitive.
 * Returns 0 or -EINVAL (syntax, zero, overflow). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i' || *end == 'I') /* accept "GiB"-style spelling */
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || v == 0 || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

/* Open the pool at path, creating it when asked and allowed.  Returns the
 * open store or NULL after printing one line that names the problem. */
static uint64_t checkpoint_bytes; /* --checkpoint-interval; 0 = the store's default */

static struct store *pool_open(const char *path, uint64_t create_size)
{
	struct store_opts opts = {.checkpoint_bytes = checkpoint_bytes};
	struct blkdev *dev;
	struct store *st;
	const char *why = NULL;
	struct stat sb;
	bool fresh = false, made = false;
	int err;

	if (create_size) {
		if (stat(path, &sb) < 0) {
			if (errno != ENOENT) {
				say_error("cannot open pool %s: %s", path, strerror(errno));
				return NULL;
			}
			fresh = made = true;
		} else if (S_ISREG(sb.st_mode) && sb.st_size == 0) {
			fresh = true;
		}
	}
	dev = blkdev_open_file(path, fresh ? create_size : 0);
	if (!dev) {
		say_error("cannot open pool %s: %s", path, strerror(errno));
		if (made)
			unlink(path);
		return NULL;
	}
	if (fresh) {
		err = store_format(dev);
		if (err) {
			say_error("cannot create pool %s: %s", path,
			          err == -EINVAL ? "too small (the minimum is 64 MiB)"
			                         : strerror(-err));
			blkdev_close(dev);
			if (made)
				unlink(path);
			else if (truncate(path, 0) < 0) /* leave it as empty as we found it */
				say_warn("cannot truncate %s back: %s", path, strerror(errno));
			return NULL;
		}
		say_info("created pool %s (%llu bytes)", path, (unsigned long long)create_size);
	} else if (create_size) {
		err = store_probe(dev);
		if (err == 0 && blkdev_is_blank(dev) == 1) {
			/* All zeroes (a sparse file from truncate, a wiped
			 * device): nothing to lose, make the pool there. */
			err = store_format(dev);
			if (err) {
				say_error("cannot create pool %s: %s", path,
				          err == -EINVAL ? "too small (the minimum is 64 MiB)"
				                         : strerror(-err));
				blkdev_close(dev);
				return NULL;
			}
			say_info("created pool %s on a blank %s", path,
			         S_ISBLK(sb.st_mode) ? "device" : "file");
			err = 1;
		} else if (err == 1) {
			say_info("pool %s exists; opening it", path);
		}
		if (err != 1) {
			if (err == 0)
				say_error("refusing to create a pool on %s: it holds data that is "
				          "not a cowbd pool",
				          path);
			else
				say_error("cannot read %s: %s", path, strerror(-err));
			blkdev_close(dev);
			return NULL;
		}
	}
	st = store_open(dev, &opts, &why);
	if (!st) {
		err = errno;
		say_error("cannot open pool %s: %s", path, why ? why : strerror(err));
		return NULL;
	}
	return st;
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct conn_server *srv = w->data;

	say_info("signal %d: finishing in-flight requests and shutting down", w->signum);
	conn_server_stop(srv);
}

int main(int argc, char **argv)
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
	struct conn_limits lim = {
	    .handshake_timeout = CONN_DEFAULT_HANDSHAKE_TIMEOUT,
	};
	uint64_t inflight_bytes;
	const char *tls_mode = "off", *tls_certs = NULL, *tls_psk = NULL;
	struct tls_creds *creds = NULL;
	const char *pool = NULL, *unix_path = NULL, *control_path = DEFAULT_CONTROL;
	const char *listen[MAX_LISTEN];
	unsigned nlisten = 0;
	uint64_t create_size = 0;
	struct ev_loop *loop;
	struct conn_server *srv;
	struct control *ctl;
	struct store *st;
	ev_signal sigterm, sigint;
	char err[256];
	int opt;

	while ((opt = getopt_long(argc, argv, "p:c:l:u:C:fvh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			pool = optarg;
			break;
		case 'c':
			if (parse_size(optarg, &create_size)) {
				say_error("bad size for --create: %s (want e.g. 16G)", optarg);
				return 1;
			}
			break;
		case 'l':
			if (nlisten == MAX_LISTEN) {
				say_error("too many --listen addresses (max %d)", MAX_LISTEN);
				return 1;
			}
			listen[nlisten++] = optarg;
			break;
		case 'u':
			unix_path = optarg;
			break;
		case 'C':
			control_path = optarg;
			break;
		case 'f':
			break;
		case 'v':
			say_max_level = SAY_DEBUG;
			break;
		case 'M':
			if (parse_count(optarg, &lim.max_conns)) {
				say_error("bad --max-connections %s (want a count >= 1)", optarg);
				return 1;
			}
			break;
		case 'H':
			if (parse_secs(optarg, &lim.handshake_timeout)) {
				say_error("bad --handshake-timeout %s (want seconds)", optarg);
				return 1;
			}
			break;
		case 'I':
			if (parse_secs(optarg, &lim.idle_timeout)) {
				say_error("bad --idle-timeout %s (want seconds)", optarg);
				return 1;
			}
			break;
		case 'R':
			if (parse_count(optarg, &lim.max_reqs)) {
				say_error("bad --max-inflight-requests %s (want a count >= 1)",
				          optarg);
				return 1;
			}
			break;
		case 'B':
			if (parse_size(optarg, &inflight_bytes) || inflight_bytes > SIZE_MAX) {
				say_error("bad --max-inflight-bytes %s (want e.g. 64M)", optarg);
				return 1;
			}
			lim.max_bytes = (size_t)inflight_bytes;
			break;
		case 'T':
			tls_mode = optarg;
			break;
		case 'X':
			tls_certs = optarg;
			break;
		case 'K':
			tls_psk = optarg;
			break;
		case 'P':
			if (parse_size(optarg, &checkpoint_bytes) ||
			    checkpoint_bytes < (4u << 20)) {
				say_error(
				    "bad --checkpoint-interval %s (want a size >= 4M, e.g. 1G)",
				    optarg);
				return 1;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		say_error("unexpected argument: %s", argv[optind]);
		return 1;
	}
	if (!pool) {
		say_error("--pool PATH is required");
		usage(stderr);
		return 1;
	}
	if (nlisten == 0 && !unix_path)
		listen[nlisten++] = DEFAULT_LISTEN;
	if (strcmp(tls_mode, "off") && strcmp(tls_mode, "allow") && strcmp(tls_mode, "require")) {
		say_error("bad --tls mode %s (want off, allow or require)", tls_mode);
		return 1;
	}
	if (strcmp(tls_mode, "off") == 0 && (tls_certs || tls_psk)) {
		say_error("--tls-certs/--tls-psk given but --tls is off (add --tls allow or "
		          "--tls require)");
		return 1;
	}
	if (strcmp(tls_mode, "off") && !tls_certs && !tls_psk) {
		say_error("--tls %s needs --tls-certs DIR or --tls-psk FILE", tls_mode);
		return 1;
	}
	if (strcmp(tls_mode, "off")) { /* before the pool: a bad file changes nothing */
		creds = tls_creds_load(tls_certs, tls_psk, err, sizeof(err));
		if (!creds) {
			say_error("%s", err);
			return 1;
		}
	}

	signal(SIGPIPE, SIG_IGN);
	st = pool_open(pool, create_size);
	if (!st) {
		tls_creds_free(creds);
		return 1;
	}

	loop = ev_default_loop(EVFLAG_AUTO);
	srv = loop ? conn_server_new(loop, st) : NULL;
	if (!srv) {
		say_error("cannot start the event loop");
		store_close(st);
		tls_creds_free(creds);
		return 1;
	}
	conn_server_set_limits(srv, &lim);
	if (creds) {
		conn_server_set_tls(srv, creds, strcmp(tls_mode, "require") == 0);
		say_info("TLS %s: %s", strcmp(tls_mode, "require") == 0 ? "required" : "allowed",
		         tls_creds_describe(creds));
	}
	for (unsigned i = 0; i < nlisten; i++) {
		if (conn_listen_tcp(srv, listen[i], err, sizeof(err)))
			goto fail;
		say_info("listening on %s", listen[i]);
	}
	if (unix_path) {
		if (conn_listen_unix(srv, unix_path, err, sizeof(err)))
			goto fail;
		say_info("listening on unix:%s", unix_path);
	}
	ctl = control_start(st, control_path, err, sizeof(err));
	if (!ctl)
		goto fail;
	say_info("control socket %s", control_path);

	ev_signal_init(&sigterm, on_signal, SIGTERM);
	ev_signal_init(&sigint, on_signal, SIGINT);
	sigterm.data = sigint.data = srv;
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	ev_run(loop, 0); /* returns once conn_server_stop() has drained everything */

	ev_signal_stop(loop, &sigterm);
	ev_signal_stop(loop, &sigint);
	control_stop(ctl);
	store_close(st);
	conn_server_free(srv);
	tls_creds_free(creds);
	ev_loop_destroy(loop);
	say_info("stopped");
	return 0;

fail:
	say_error("%s", err);
	conn_server_free(srv);
	store_close(st);
	tls_creds_free(creds);
	ev_loop_destroy(loop);
	return 1;
}
