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
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blkdev.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "format.h"
#include "handover.h"
#include "metrics.h"
#include "names.h"
#include "rados_pool.h"
#include "say.h"
#include "service.h"
#include "sockets.h"
#include "store.h"
#include "tls.h"
#include "version.h"

#define DEFAULT_LISTEN  "127.0.0.1:10809"
#define DEFAULT_CONTROL "/run/cowbd/control.sock"
#define MAX_LISTEN      8
#define MAIN_LOOPS_AUTO 8 /* --loop-threads' default: half the CPUs, at most this */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: cowbd [--config FILE] [--pool PATH] [--create SIZE]\n"
	        "             [--listen HOST:PORT]... [--unix PATH] [--tls off|allow|require]\n"
	        "             [--tls-certs DIR] [--tls-psk FILE] [--control PATH]\n"
	        "             [--log-level LEVEL] [--verbose]\n"
	        "       cowbd --check-config [FILE] | --handover-check | --help | --version\n"
	        "  --config FILE       configuration file (default " CONFIG_DEFAULT_PATH "\n"
	        "                      when it exists); its [cowbd] keys are the long\n"
	        "                      options below, and options given here override them\n"
	        "  --check-config [FILE]  check the configuration (FILE, or the --config one)\n"
	        "                      and exit: 0 good, 2 bad (naming FILE:LINE)\n"
	        "  --pool PATH         pool file or block device, or rados:POOL/NAME for a\n"
	        "                      pool kept in Ceph RADOS (docs/RADOS.md)\n"
	        "  --create SIZE       create the pool if PATH is missing or blank (all\n"
	        "                      zeroes; K/M/G/T suffixes); a blank file smaller than\n"
	        "                      SIZE is grown, any other size is refused; an existing\n"
	        "                      pool is opened as it is\n"
	        "  --listen HOST:PORT  NBD TCP address, repeatable; [::1]:10809 for IPv6\n"
	        "                      (default " DEFAULT_LISTEN " unless --unix is given)\n"
	        "  --unix PATH         NBD unix socket\n"
	        "  --control PATH      control socket (default " DEFAULT_CONTROL ")\n"
	        "  --control-group GROUP  give the control socket to GROUP, mode 0660\n"
	        "  --foreground        accepted; cowbd never forks\n"
	        "  --tls MODE          off (default), allow (plaintext or TLS) or require\n"
	        "  --tls-certs DIR     X.509: DIR/ca-cert.pem (signs client certificates),\n"
	        "                      DIR/server-cert.pem, DIR/server-key.pem\n"
	        "  --tls-psk FILE      PSK: psktool file of username:hexkey lines\n"
	        "  --log-level LEVEL   error, warn, info (default) or debug\n"
	        "  --verbose           debug logging (--log-level debug)\n"
	        "  --checkpoint-interval SIZE  log written between checkpoints (default 256M;\n"
	        "                      longer: fewer checkpoints, longer recovery)\n"
	        "  --metadata-cache SIZE  memory for tree nodes (default 1/16 of RAM, at\n"
	        "                      least 64M; dirty nodes may exceed it until a checkpoint)\n"
	        "  --metrics HOST:PORT Prometheus metrics at http://HOST:PORT/metrics\n"
	        "                      ([IPV6]:PORT for IPv6; off unless given)\n"
	        "  --loop-threads N    event loops serving NBD connections, each on a\n"
	        "                      thread of its own (default: one per two CPUs, at\n"
	        "                      most 8; a connection stays on one loop)\n"
	        "  --read-views MODE   READs of 64K..1M sent straight from the page cache\n"
	        "                      (not over TLS): auto (default: when measured cheaper\n"
	        "                      than a copy), on, off; SIGHUP changes it\n"
	        "a pool in RADOS (--pool rados:POOL/NAME):\n"
	        "  --rados-conf FILE   ceph.conf (default: librados' own search)\n"
	        "  --rados-id ID       the client's id, as in client.ID (default admin)\n"
	        "  --cache PATH        local file or device caching its segments (default none)\n"
	        "  --cache-size SIZE   the cache's size (default 1G)\n"
	        "  --rados-lease SECS  the pool lock's lease (default 30): another host takes\n"
	        "                      the pool over this long after this one stops renewing\n"
	        "  --rados-timeout SECS  bound on every cluster call (default 30)\n"
	        "limits:\n"
	        "  --max-connections N       open NBD connections (default 1024); more\n"
	        "                            are accepted and closed at once\n"
	        "  --handshake-timeout SECS  accept to transmission (default 30; 0 = none)\n"
	        "  --idle-timeout SECS       close connections idle this long (default 0 = off)\n"
	        "  --max-inflight-requests N per connection (default 256)\n"
	        "  --max-inflight-bytes SIZE payload held per connection (default 64M)\n"
	        "per-export access rules ([export NAME] sections): see cowbd.conf(5)\n"
	        "one daemon per pool: a pool held by another cowbd is refused, naming it\n"
	        "upgrades: `cowctl upgrade` hands live connections to a new cowbd process;\n"
	        "  --handover-check    print the handover and pool format versions and exit\n"
	        "signals: SIGTERM/SIGINT stop cleanly; SIGHUP reads the configuration again\n"
	        "         (access rules, limits, log level and TLS change live);\n"
	        "         SIGUSR1/SIGUSR2 are logged and ignored\n");
}

/* A count for a limit: 1 .. UINT_MAX.  0 or -EINVAL with why. */
static int parse_count(const char *s, unsigned *out, char *why, size_t len)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = *s && *s != '-' ? strtoul(s, &end, 10) : 0;
	if (!*s || *s == '-' || errno || *end || v == 0 || v > UINT_MAX) {
		snprintf(why, len, "%s (want a count >= 1)", s);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

/* Seconds, fractions allowed, 0 .. one year.  0 or -EINVAL with why. */
static int parse_secs(const char *s, double *out, char *why, size_t len)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0 && v <= 366 * 86400.0)) {
		snprintf(why, len, "%s (want seconds, 0 to a year)", s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* A size (names_parse_size, limits [min, max]).  0 or -EINVAL with why. */
static int parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out, char *why,
                      size_t len)
{
	return names_parse_size(s, min, max, out, why, len) ? -EINVAL : 0;
}

/* Everything the configuration file and the command line say (flags over
 * keys); main_load fills it.  String fields point into argv or into cfg,
 * which the struct owns. */
struct main_opts {
	const char *pool;
	uint64_t create_size; /* --create; 0 = open an existing pool only */
	const char *listen[MAX_LISTEN];
	unsigned nlisten;
	bool listen_default;   /* no --listen or --unix: listen[0] is DEFAULT_LISTEN */
	bool listen_from_file; /* listen[] are the file's: a --listen replaces them */
	const char *unix_path;
	const char *control_path;
	const char *control_group; /* NULL: the socket keeps its group, mode 0600 */
	gid_t control_gid;
	const char *tls_mode, *tls_certs, *tls_psk;
	struct conn_limits lim;
	uint64_t checkpoint_bytes;       /* 0 = the store's default */
	uint64_t cache_bytes;            /* --metadata-cache; 0 = the store's default */
	struct rados_pool_opts rados;    /* --rados-*, --cache*: a rados: pool's */
	const char *metrics;             /* --metrics HOST:PORT; NULL: none */
	unsigned loops;                  /* --loop-threads; 0 = main_loops' default */
	enum conn_read_views read_views; /* --read-views */
	enum say_level log_level;
	/* The command line's own. */
	const char *config_path; /* --config, or --check-config's FILE */
	bool check_config;
	int handover_fd;      /* --handover-fd: taking over from an old process; -1 none */
	bool handover_detach; /* --handover-detach: fork first (handover.c says why) */
	struct config *cfg;   /* the file read, NULL: none */
};

/* What main does after parsing: run, or exit with this status. */
enum { MAIN_RUN = -1, MAIN_EXIT_OK = 0, MAIN_EXIT_FAIL = 1, MAIN_EXIT_CONFIG = 2 };

/* Long options without a short letter. */
enum {
	OPT_CONFIG = 0x100,
	OPT_CHECK_CONFIG,
	OPT_LOG_LEVEL,
	OPT_CONTROL_GROUP,
	OPT_VERSION,
	OPT_HANDOVER_FD,
	OPT_HANDOVER_CHECK,
	OPT_HANDOVER_DETACH,
	OPT_METADATA_CACHE,
	OPT_LOOP_THREADS,
	OPT_READ_VIEWS,
	OPT_RADOS_CONF,
	OPT_RADOS_ID,
	OPT_RADOS_LEASE,
	OPT_RADOS_TIMEOUT,
	OPT_CACHE,
	OPT_CACHE_SIZE,
};

/* Every option; the [cowbd] keys of the file are these names too, except
 * main_cli_only's. */
static const struct option main_longopts[] = {
    {"pool", required_argument, NULL, 'p'},
    {"create", required_argument, NULL, 'c'},
    {"listen", required_argument, NULL, 'l'},
    {"unix", required_argument, NULL, 'u'},
    {"control", required_argument, NULL, 'C'},
    {"control-group", required_argument, NULL, OPT_CONTROL_GROUP},
    {"foreground", no_argument, NULL, 'f'},
    {"verbose", no_argument, NULL, 'v'},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
    {"max-connections", required_argument, NULL, 'M'},
    {"handshake-timeout", required_argument, NULL, 'H'},
    {"idle-timeout", required_argument, NULL, 'I'},
    {"max-inflight-requests", required_argument, NULL, 'R'},
    {"max-inflight-bytes", required_argument, NULL, 'B'},
    {"tls", required_argument, NULL, 'T'},
    {"tls-certs", required_argument, NULL, 'X'},
    {"tls-psk", required_argument, NULL, 'K'},
    {"checkpoint-interval", required_argument, NULL, 'P'},
    {"metadata-cache", required_argument, NULL, OPT_METADATA_CACHE},
    {"metrics", required_argument, NULL, 'm'}, /* long only: 'm' is not in MAIN_SHORTOPTS */
    {"loop-threads", required_argument, NULL, OPT_LOOP_THREADS},
    {"read-views", required_argument, NULL, OPT_READ_VIEWS},
    {"rados-conf", required_argument, NULL, OPT_RADOS_CONF},
    {"rados-id", required_argument, NULL, OPT_RADOS_ID},
    {"rados-lease", required_argument, NULL, OPT_RADOS_LEASE},
    {"rados-timeout", required_argument, NULL, OPT_RADOS_TIMEOUT},
    {"cache", required_argument, NULL, OPT_CACHE},
    {"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
    {"handover-fd", required_argument, NULL, OPT_HANDOVER_FD},
    {"handover-check", no_argument, NULL, OPT_HANDOVER_CHECK},
    {"handover-detach", no_argument, NULL, OPT_HANDOVER_DETACH},
    {NULL, 0, NULL, 0},
};
#define MAIN_SHORTOPTS ":p:c:l:u:C:fvh" /* ':': a missing value is told apart */

/* Options that say what to do rather than how to serve: not file keys
 * (--verbose has its key: log-level). */
static bool main_cli_only(int opt)
{
	return opt == 'h' || opt == 'f' || opt == 'v' || opt == OPT_CONFIG ||
	       opt == OPT_CHECK_CONFIG || opt == OPT_VERSION || opt == OPT_HANDOVER_FD ||
	       opt == OPT_HANDOVER_CHECK || opt == OPT_HANDOVER_DETACH;
}

/* Keys the file may give more than once. */
static const char *const main_repeatable[] = {"listen", NULL};

static const char *opt_name(int opt)
{
	for (const struct option *lo = main_longopts; lo->name; lo++)
		if (lo->val == opt)
			return lo->name;
	return "?";
}

/* Set option opt to arg in o, from the file (from_file) or the command
 * line.  0, or -EINVAL with the reason in why. */
static int main_set(int opt, const char *arg, struct main_opts *o, bool from_file, char *why,
                    size_t len)
{
	struct group *gr;
	uint64_t v;

	switch (opt) {
	case 'p':
		o->pool = arg;
		return rados_pool_is(arg) ? rados_pool_check(arg, why, len) : 0;
	case 'c':
		/* A file size is an off_t, so the pool file is at most 2^63-1. */
		return parse_size(arg, 1, INT64_MAX, &o->create_size, why, len);
	case 'l':
		if (!from_file && o->listen_from_file)
			o->nlisten = 0; /* the command line's replace the file's */
		o->listen_from_file = from_file;
		if (o->nlisten == MAX_LISTEN) {
			snprintf(why, len, "more than %d addresses", MAX_LISTEN);
			return -EINVAL;
		}
		if (sockets_check_hostport(arg, why, len))
			return -EINVAL;
		o->listen[o->nlisten++] = arg;
		return 0;
	case 'u':
		o->unix_path = arg;
		return 0;
	case 'C':
		o->control_path = arg;
		return 0;
	case OPT_CONTROL_GROUP:
		errno = 0;
		gr = getgrnam(arg);
		if (!gr) {
			snprintf(why, len, "no group %s%s%s", arg, errno ? ": " : "",
			         errno ? strerror(errno) : "");
			return -EINVAL;
		}
		o->control_group = arg;
		o->control_gid = gr->gr_gid;
		return 0;
	case OPT_LOG_LEVEL:
		if (say_parse_level(arg, &o->log_level)) {
			snprintf(why, len, "%s (want error, warn, info or debug)", arg);
			return -EINVAL;
		}
		return 0;
	case 'v':
		o->log_level = SAY_DEBUG;
		return 0;
	case 'M':
		return parse_count(arg, &o->lim.max_conns, why, len);
	case 'H':
		return parse_secs(arg, &o->lim.handshake_timeout, why, len);
	case 'I':
		return parse_secs(arg, &o->lim.idle_timeout, why, len);
	case 'R':
		return parse_count(arg, &o->lim.max_reqs, why, len);
	case 'B':
		if (parse_size(arg, 1, SIZE_MAX, &v, why, len))
			return -EINVAL;
		o->lim.max_bytes = (size_t)v;
		return 0;
	case 'T':
		if (strcmp(arg, "off") && strcmp(arg, "allow") && strcmp(arg, "require")) {
			snprintf(why, len, "mode %s (want off, allow or require)", arg);
			return -EINVAL;
		}
		o->tls_mode = arg;
		return 0;
	case 'X':
		o->tls_certs = arg;
		return 0;
	case 'K':
		o->tls_psk = arg;
		return 0;
	case 'P':
		/* Below 4 MiB the pool would checkpoint every few rounds. */
		return parse_size(arg, 4u << 20, UINT64_MAX, &o->checkpoint_bytes, why, len);
	case OPT_METADATA_CACHE:
		/* Below 1 MiB a few paths of a large tree would not fit. */
		return parse_size(arg, 1u << 20, UINT64_MAX, &o->cache_bytes, why, len);
	case 'm':
		o->metrics = arg;
		return metrics_check_addr(arg, why, len);
	case OPT_LOOP_THREADS:
		if (parse_count(arg, &o->loops, why, len) || o->loops > CONN_MAX_LOOPS) {
			snprintf(why, len, "%s (want a count from 1 to %d)", arg, CONN_MAX_LOOPS);
			return -EINVAL;
		}
		return 0;
	case OPT_READ_VIEWS:
		if (!strcmp(arg, "auto"))
			o->read_views = CONN_READ_VIEWS_AUTO;
		else if (!strcmp(arg, "on"))
			o->read_views = CONN_READ_VIEWS_ON;
		else if (!strcmp(arg, "off"))
			o->read_views = CONN_READ_VIEWS_OFF;
		else {
			snprintf(why, len, "mode %s (want auto, on or off)", arg);
			return -EINVAL;
		}
		return 0;
	case OPT_RADOS_CONF:
		o->rados.conf = arg;
		return 0;
	case OPT_RADOS_ID:
		o->rados.id = arg;
		return 0;
	case OPT_RADOS_LEASE:
		/* Renewed every third: below 3 s one slow round trip fences. */
		if (parse_count(arg, &o->rados.lease_s, why, len) || o->rados.lease_s < 3) {
			snprintf(why, len, "%s (want seconds >= 3)", arg);
			return -EINVAL;
		}
		return 0;
	case OPT_RADOS_TIMEOUT:
		if (parse_count(arg, &o->rados.timeout_s, why, len)) {
			snprintf(why, len, "%s (want seconds >= 1)", arg);
			return -EINVAL;
		}
		return 0;
	case OPT_CACHE:
		o->rados.cache = arg;
		return 0;
	case OPT_CACHE_SIZE:
		/* Two segments at least: the open one and one read. */
		return parse_size(arg, 2 * FMT_SEG_BYTES, UINT64_MAX, &o->rados.cache_size, why,
		                  len);
	default: /* what only the command line says: taken by main_scan_args */
		return 0;
	}
}

/* config.c's schema callback: a [cowbd] key is a long option's name. */
static int main_set_key(void *arg, const char *key, const char *value, char *why, size_t len)
{
	for (const struct option *lo = main_longopts; lo->name; lo++)
		if (!strcmp(lo->name, key) && !main_cli_only(lo->val))
			return main_set(lo->val, value, arg, true, why, len);
	return -ENOENT;
}

/* The rules that tie options together, checked once all are read.
 * MAIN_RUN, or MAIN_EXIT_FAIL with one line in err. */
static int main_check_opts(struct main_opts *o, char *err, size_t errlen)
{
	bool tls_on = strcmp(o->tls_mode, "off") != 0;

	if (!o->pool) {
		snprintf(err, errlen,
		         "no pool: give --pool PATH, or pool = PATH in the [cowbd] section of %s",
		         o->cfg ? config_path(o->cfg) : CONFIG_DEFAULT_PATH);
		return MAIN_EXIT_FAIL;
	}
	if (!rados_pool_is(o->pool) &&
	    (o->rados.conf || o->rados.id || o->rados.cache || o->rados.cache_size)) {
		snprintf(
		    err, errlen,
		    "--rados-conf, --rados-id, --cache and --cache-size are for a pool in RADOS "
		    "(--pool rados:POOL/NAME), not %s",
		    o->pool);
		return MAIN_EXIT_FAIL;
	}
	if (o->nlisten == 0 && !o->unix_path) {
		o->listen[o->nlisten++] = DEFAULT_LISTEN;
		o->listen_default = true;
	}
	if (!tls_on && (o->tls_certs || o->tls_psk)) {
		snprintf(err, errlen,
		         "--tls-certs/--tls-psk given but --tls is off (add --tls allow or "
		         "--tls require)");
		return MAIN_EXIT_FAIL;
	}
	if (tls_on && !o->tls_certs && !o->tls_psk) {
		snprintf(err, errlen, "--tls %s needs --tls-certs DIR or --tls-psk FILE",
		         o->tls_mode);
		return MAIN_EXIT_FAIL;
	}
	return MAIN_RUN;
}

/* The first pass over the command line: what it asks for (--help,
 * --version, --check-config [FILE]) and which file to read; every unknown
 * option or missing value is refused here.  MAIN_RUN, or the exit status
 * with one line in err ("" after --help's or --version's text). */
static int main_scan_args(int argc, char **argv, struct main_opts *o, char *err, size_t errlen)
{
	unsigned fdnum;
	int opt;

	optind = 0; /* glibc: start over (main_load runs again at SIGHUP) */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, MAIN_SHORTOPTS, main_longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			usage(stdout);
			err[0] = '\0';
			return MAIN_EXIT_OK;
		case OPT_VERSION:
			printf("cowbd %s\n", COWBD_VERSION);
			err[0] = '\0';
			return MAIN_EXIT_OK;
		case OPT_HANDOVER_CHECK:
			/* What `cowctl upgrade` checks before anything stops. */
			printf("cowbd %s handover %u pool-format %u\n", COWBD_VERSION,
			       HANDOVER_VERSION, FMT_VERSION);
			err[0] = '\0';
			return MAIN_EXIT_OK;
		case OPT_HANDOVER_FD:
			if (parse_count(optarg, &fdnum, err, errlen) || fdnum > INT_MAX) {
				snprintf(err, errlen, "bad --handover-fd %s", optarg);
				return MAIN_EXIT_FAIL;
			}
			o->handover_fd = (int)fdnum;
			break;
		case OPT_HANDOVER_DETACH:
			o->handover_detach = true;
			break;
		case OPT_CONFIG:
			o->config_path = optarg;
			break;
		case OPT_CHECK_CONFIG:
			o->check_config = true;
			break;
		case ':':
			snprintf(err, errlen, "%s needs a value (cowbd --help)", argv[optind - 1]);
			return MAIN_EXIT_FAIL;
		case '?':
			snprintf(err, errlen, "unknown option %s (cowbd --help lists them)",
			         argv[optind - 1]);
			return MAIN_EXIT_FAIL;
		}
	}
	if (o->check_config && optind + 1 == argc)
		o->config_path = argv[optind++]; /* --check-config FILE */
	if (optind < argc) {
		snprintf(err, errlen, "unexpected argument: %s", argv[optind]);
		return MAIN_EXIT_FAIL;
	}
	return MAIN_RUN;
}

/* Read the configuration file into o: --config's, else the default one
 * when it exists (--check-config insists on one).  0, or -1 with one
 * line in err. */
static int main_read_config(struct main_opts *o, char *err, size_t errlen)
{
	const struct config_schema schema = {
	    .set = main_set_key,
	    .arg = o,
	    .repeatable = main_repeatable,
	};
	const char *path = o->config_path;

	if (!path && !o->check_config && access(CONFIG_DEFAULT_PATH, F_OK) < 0)
		return 0;
	o->cfg = config_load(path ? path : CONFIG_DEFAULT_PATH, &schema, err, errlen);
	return o->cfg ? 0 : -1;
}

/* Fill o from the configuration file and then the command line over it,
 * at start and again at SIGHUP.  MAIN_RUN, or the exit status with one
 * line in err ("" when --help printed its text): MAIN_EXIT_CONFIG for a
 * bad file (or anything wrong under --check-config). */
static int main_load(int argc, char **argv, struct main_opts *o, char *err, size_t errlen)
{
	char why[CONFIG_ERR_MAX / 2];
	int opt, r;

	*o = (struct main_opts){
	    .control_path = DEFAULT_CONTROL,
	    .tls_mode = "off",
	    .lim = {.handshake_timeout = CONN_DEFAULT_HANDSHAKE_TIMEOUT},
	    .log_level = SAY_INFO,
	    .handover_fd = -1,
	};
	if ((r = main_scan_args(argc, argv, o, err, errlen)) != MAIN_RUN)
		return o->check_config && r != MAIN_EXIT_OK ? MAIN_EXIT_CONFIG : r;
	if (main_read_config(o, err, errlen) < 0)
		return MAIN_EXIT_CONFIG;
	optind = 0;
	while ((opt = getopt_long(argc, argv, MAIN_SHORTOPTS, main_longopts, NULL)) != -1) {
		if (main_set(opt, optarg, o, false, why, sizeof(why))) {
			snprintf(err, errlen, "bad --%s: %s", opt_name(opt), why);
			return o->check_config ? MAIN_EXIT_CONFIG : MAIN_EXIT_FAIL;
		}
	}
	r = main_check_opts(o, err, errlen);
	return o->check_config && r != MAIN_RUN ? MAIN_EXIT_CONFIG : r;
}

/* Free what main_load made (o itself is the caller's). */
static void main_opts_free(struct main_opts *o)
{
	config_free(o->cfg);
	o->cfg = NULL;
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
	else if (!dev && errno == ENOENT)
		say_error("cannot open pool %s: No such file or directory (to make one, set "
		          "create = SIZE in the configuration or pass --create SIZE)",
		          path);
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
static struct store *pool_open(const struct main_opts *mo, uint64_t create_size, uint64_t started)
{
	struct store_opts opts = {.checkpoint_bytes = mo->checkpoint_bytes,
	                          .cache_bytes = mo->cache_bytes};
	const char *path = mo->pool, *why = NULL;
	struct blkdev *dev;
	struct store *st;
	bool made;
	int err;

	if (rados_pool_is(path)) /* its lock and owner record are its own */
		return rados_pool_open(path, &mo->rados, create_size, &opts);
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

/* `cowctl upgrade` in progress: the control thread that asked waits on
 * cond; the loop thread pauses the server; main_handover runs between two
 * loop runs and says how it went.  lock guards u, h, done, result. */
struct main_upgrade {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	ev_async ask;              /* control thread → loop: pause now */
	struct control_upgrade *u; /* the request, NULL: none */
	struct handover *h;        /* the new process, offered and accepted */
	bool done;                 /* the control thread may return */
	int result;                /* 0 or -errno (u->msg) */
	double t_pause;            /* monotonic ms when the pause began */
	bool handed_over;          /* this process serves no more */
	bool lost;                 /* rolled back, but the pool would not open again */
};

/* The running daemon: what main_start makes and main_stop takes down. */
struct main_daemon {
	int argc; /* the command line, read again at SIGHUP */
	char **argv;
	struct main_opts *o;        /* in force */
	struct main_opts **oldopts; /* replaced by SIGHUP; o's strings may point into them */
	size_t noldopts;
	struct tls_creds *creds;    /* NULL with --tls off; the ones new connections get */
	struct tls_creds **retired; /* replaced by SIGHUP; sessions may still use them */
	size_t nretired;
	struct store *st;
	struct ev_loop *loop;
	struct conn_server *srv;
	struct control *ctl;
	struct metrics *metrics; /* --metrics: NULL when not asked for */
	struct service *sv;
	struct service_fds fds; /* passed by the service manager; -1 once handed on */
	ev_signal sigterm, sigint, sighup, sigusr1, sigusr2;
	uint64_t started;    /* unix seconds, for the pool's owner record */
	bool stopping;       /* SIGTERM/SIGINT: no upgrade starts any more
	                      * (written under up.lock; main_upgrade reads it there) */
	bool storing;        /* ... and the connections go to the fd store */
	char self[PATH_MAX]; /* the binary running, `cowctl upgrade`'s default */
	struct main_upgrade up;
};

/* The options in force and every one a SIGHUP replaced. */
static void main_free_opts(struct main_daemon *d)
{
	for (size_t i = 0; i < d->noldopts; i++) {
		main_opts_free(d->oldopts[i]);
		free(d->oldopts[i]);
	}
	free(d->oldopts);
	if (d->o)
		main_opts_free(d->o);
	free(d->o);
}

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

/* --control-group: the control socket's file goes to that group, mode
 * 0660, so its members may use cowctl.  The socket was made 0600 and is
 * only widened here.  0, or -1 with a one-line reason in err. */
static int main_control_group(const struct main_opts *o, char *err, size_t errlen)
{
	if (!o->control_group)
		return 0;
	if (chown(o->control_path, (uid_t)-1, o->control_gid) < 0 ||
	    chmod(o->control_path, 0660) < 0) {
		snprintf(err, errlen, "cannot give the control socket %s to group %s: %s",
		         o->control_path, o->control_group, strerror(errno));
		return -1;
	}
	say_info("control socket %s: group %s, mode 0660", o->control_path, o->control_group);
	return 0;
}

/* The `clients` op's view of the NBD server (control threads). */
static int main_clients(void *arg, struct control_conn **out, size_t *n)
{
	struct conn_client *v;
	int err = conn_server_clients(arg, &v, n);
	if (err)
		return err;
	*out = calloc(*n ? *n : 1, sizeof(**out));
	if (!*out) {
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < *n; i++) {
		struct control_conn *c = &(*out)[i];
		snprintf(c->peer, sizeof(c->peer), "%s", v[i].peer);
		snprintf(c->export, sizeof(c->export), "%s", v[i].export);
		c->since = v[i].since;
		c->tls = v[i].tls;
		c->bytes_read = v[i].bytes_read;
		c->bytes_written = v[i].bytes_written;
		c->loop = v[i].loop;
	}
	free(v);
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
		if (!d->ctl)
			return -1;
		say_info("control socket %s", o->control_path);
		return main_control_group(o, err, errlen);
	}
	if (o->control_group)
		say_warn("control-group %s ignored: the service manager passed the control socket "
		         "(set SocketGroup= and SocketMode=0660 in its socket unit)",
		         o->control_group);
	d->fds.control = -1;
	sockets_local_name(fd, name, sizeof(name));
	d->ctl = control_start_fd(d->st, fd, err, errlen);
	if (d->ctl)
		say_info("control socket %s (passed by the service manager)", name);
	return d->ctl ? 0 : -1;
}

/* The [export NAME] sections of cfg. */
static size_t main_count_rules(const struct config *cfg)
{
	size_t n = 0;

	while (config_export_at(cfg, n))
		n++;
	return n;
}

static int main_upgrade(void *arg, struct control_upgrade *u);
static void on_upgrade_ask(struct ev_loop *loop, ev_async *w, int revents);

/* Event loops for --loop-threads: the option, or one per two online CPUs,
 * at least one and at most MAIN_LOOPS_AUTO.  The loops share the CPUs with
 * the log thread, the reader threads and often the clients: on two CPUs a
 * second loop made 4 KiB writes from two clients 8% slower (more wake-ups,
 * smaller batches for the log thread) while it made their reads a third
 * faster (docs/PERFORMANCE.md, "Event loop threads"). */
static unsigned main_loops(const struct main_opts *o)
{
	long n;

	if (o->loops)
		return o->loops;
	n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
	return n < 1 ? 1 : n > MAIN_LOOPS_AUTO ? MAIN_LOOPS_AUTO : (unsigned)n;
}

/* The event loop and an NBD server on it with the settings o gives (no
 * listener yet).  0, or -1 after one line. */
static int main_new_server(struct main_daemon *d, const struct main_opts *o)
{
	bool require = !strcmp(o->tls_mode, "require");
	unsigned loops;
	int r;

	/* Not libev's default loop: that one reaps every child on SIGCHLD,
	 * and an upgrade waits for its own child to say how it ended. */
	if (!d->loop)
		d->loop = ev_loop_new(EVFLAG_AUTO);
	d->srv = d->loop ? conn_server_new(d->loop, d->st) : NULL;
	if (!d->srv) {
		say_error("cannot start the event loop");
		return -1;
	}
	/* Fewer loops than asked still serve every client (and a rollback
	 * must not drop the connections it carries on for want of a thread). */
	loops = main_loops(o);
	r = conn_server_set_loops(d->srv, loops);
	if (r)
		say_warn("event loops: %u of %u started: %s", conn_server_loops(d->srv), loops,
		         strerror(-r));
	say_debug("serving connections on %u event loop(s)", conn_server_loops(d->srv));
	conn_server_set_read_views(d->srv, o->read_views);
	if (!ev_is_active(&d->up.ask)) {
		ev_async_init(&d->up.ask, on_upgrade_ask);
		d->up.ask.data = d;
		ev_async_start(d->loop, &d->up.ask);
	}
	conn_server_set_limits(d->srv, &o->lim);
	conn_server_set_access(d->srv, o->cfg);
	if (o->cfg)
		say_info("configuration %s: access rules for %zu export(s)", config_path(o->cfg),
		         main_count_rules(o->cfg));
	if (d->creds) {
		conn_server_set_tls(d->srv, d->creds, require);
		say_info("TLS %s: %s", require ? "required" : "allowed",
		         tls_creds_describe(d->creds));
	}
	return 0;
}

/* Event loop, connection server, NBD listeners, then the control socket
 * last: its appearance means "ready to serve".  On failure print one line
 * and return -1; what was made stays in d for main_abort. */
static int main_start(struct main_daemon *d, const struct main_opts *o)
{
	char err[256];

	if (main_new_server(d, o) < 0)
		return -1;
	if (main_listen(d, o, err, sizeof(err)) < 0)
		goto fail;
	if (o->metrics &&
	    !(d->metrics = metrics_start(o->metrics, d->st, d->srv, err, sizeof(err))))
		goto fail;
	if (o->metrics)
		say_info("metrics at http://%s/metrics", o->metrics);
	if (main_control(d, o, err, sizeof(err)) < 0)
		goto fail;
	control_set_clients_fn(d->ctl, main_clients, d->srv);
	control_set_upgrade_fn(d->ctl, main_upgrade, d);
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
	metrics_stop(d->metrics);
	control_stop(d->ctl);
	conn_server_free(d->srv);
	store_close(d->st);
	tls_creds_free(d->creds);
	if (d->loop)
		ev_loop_destroy(d->loop);
	main_free_opts(d);
}

#define MAIN_PAUSE_SECS 10.0 /* in-flight requests must finish within this */
static double main_now_ms(void);

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct main_daemon *d = w->data;

	bool upgrading;

	/* One hold of up.lock: an upgrade either was asked for before (the
	 * handover sees stopping and answers it), or main_upgrade sees
	 * stopping and refuses it. */
	pthread_mutex_lock(&d->up.lock);
	upgrading = d->up.u != NULL;
	d->stopping = true;
	pthread_mutex_unlock(&d->up.lock);
	service_stopping(d->sv);
	if (service_fdstore_on() && !upgrading && !d->storing) {
		/* A restart keeps the connections: main_store, once quiet. */
		say_info(
		    "signal %d: finishing in-flight requests, then keeping %u connection(s) in "
		    "the service manager's fd store for the next start",
		    w->signum, conn_server_count(d->srv));
		d->storing = true;
		d->up.t_pause = main_now_ms();
		conn_server_pause(d->srv, MAIN_PAUSE_SECS);
		return;
	}
	say_info("signal %d: finishing in-flight requests and shutting down", w->signum);
	conn_server_stop(d->srv);
}

/* SIGHUP, TLS: load the credentials n names (again from the same files:
 * a renewed certificate, a new PSK user; or the new files, or none) for
 * connections accepted from now on.  On the loop thread, so conn never
 * sees the switch half done.  Old credentials stay alive until exit: a
 * session still using them has no count to tell us when it is gone, and
 * reloads are rare.  On any error the credentials and the TLS settings in
 * use stay (copied into n). */
static void main_reload_tls(struct main_daemon *d, struct main_opts *n)
{
	bool off = !strcmp(n->tls_mode, "off");
	struct tls_creds *fresh = NULL, **r;
	char err[256];

	if (off && !d->creds)
		return;
	if (!off && !(fresh = tls_creds_load(n->tls_certs, n->tls_psk, err, sizeof(err)))) {
		say_error("SIGHUP: reload failed, keeping the old TLS credentials: %s", err);
		goto keep;
	}
	r = d->creds ? realloc(d->retired, (d->nretired + 1) * sizeof(*r)) : d->retired;
	if (d->creds && !r) {
		tls_creds_free(fresh);
		say_error("SIGHUP: reload failed, keeping the old TLS credentials: out of memory");
		goto keep;
	}
	d->retired = r;
	if (d->creds)
		d->retired[d->nretired++] = d->creds;
	d->creds = fresh;
	conn_server_set_tls(d->srv, fresh, !strcmp(n->tls_mode, "require"));
	if (fresh)
		say_info("SIGHUP: reloaded TLS credentials: %s (TLS %s)", tls_creds_describe(fresh),
		         strcmp(n->tls_mode, "require") ? "allowed" : "required");
	else
		say_info("SIGHUP: TLS is off for new connections");
	return;
keep:
	n->tls_mode = d->o->tls_mode;
	n->tls_certs = d->o->tls_certs;
	n->tls_psk = d->o->tls_psk;
}

static bool str_differ(const char *a, const char *b)
{
	return (a || b) && (!a || !b || strcmp(a, b));
}

/* One line for a key that changed in the file but takes a restart. */
static void restart_note(const char *key, bool changed)
{
	if (changed)
		say_warn("SIGHUP: %s changed; it takes effect when cowbd is restarted", key);
}

/* SIGHUP: name each changed setting that needs a restart, then keep the
 * running value of each in n (so n says what is in force, and the next
 * reload compares against that). */
static void main_reload_fixed(const struct main_opts *o, struct main_opts *n)
{
	bool listen = o->nlisten != n->nlisten || o->listen_default != n->listen_default;

	for (unsigned i = 0; !listen && i < o->nlisten; i++)
		listen = strcmp(o->listen[i], n->listen[i]) != 0;
	restart_note("pool", str_differ(o->pool, n->pool));
	restart_note("create", o->create_size != n->create_size);
	restart_note("listen", listen);
	restart_note("unix", str_differ(o->unix_path, n->unix_path));
	restart_note("control", str_differ(o->control_path, n->control_path));
	restart_note("control-group", str_differ(o->control_group, n->control_group));
	restart_note("checkpoint-interval", o->checkpoint_bytes != n->checkpoint_bytes);
	restart_note("metadata-cache", o->cache_bytes != n->cache_bytes);
	restart_note("metrics", str_differ(o->metrics, n->metrics));
	restart_note("loop-threads", o->loops != n->loops);
	restart_note("rados-conf", str_differ(o->rados.conf, n->rados.conf));
	restart_note("rados-id", str_differ(o->rados.id, n->rados.id));
	restart_note("rados-lease", o->rados.lease_s != n->rados.lease_s);
	restart_note("rados-timeout", o->rados.timeout_s != n->rados.timeout_s);
	restart_note("cache", str_differ(o->rados.cache, n->rados.cache));
	restart_note("cache-size", o->rados.cache_size != n->rados.cache_size);
	n->pool = o->pool;
	n->rados = o->rados;
	n->create_size = o->create_size;
	memcpy(n->listen, o->listen, sizeof(n->listen));
	n->nlisten = o->nlisten;
	n->listen_default = o->listen_default;
	n->listen_from_file = o->listen_from_file;
	n->unix_path = o->unix_path;
	n->control_path = o->control_path;
	n->control_group = o->control_group;
	n->control_gid = o->control_gid;
	n->checkpoint_bytes = o->checkpoint_bytes;
	n->cache_bytes = o->cache_bytes;
	n->metrics = o->metrics;
	n->loops = o->loops;
}

/* SIGHUP: what changes live — the log level, the limits, the access
 * rules — one line each when it changed. */
static void main_reload_live(struct main_daemon *d, const struct main_opts *n)
{
	const struct conn_limits *a = &d->o->lim, *b = &n->lim;

	if (n->log_level != say_max_level)
		say_warn("SIGHUP: log-level %s", say_level_name(n->log_level));
	say_max_level = n->log_level;
	if (a->max_conns != b->max_conns || a->handshake_timeout != b->handshake_timeout ||
	    a->idle_timeout != b->idle_timeout || a->max_reqs != b->max_reqs ||
	    a->max_bytes != b->max_bytes) {
		conn_server_set_limits(d->srv, b);
		say_info(
		    "SIGHUP: limits: max-connections %u, handshake-timeout %g, idle-timeout %g, "
		    "max-inflight-requests %u, max-inflight-bytes %zu",
		    b->max_conns, b->handshake_timeout, b->idle_timeout, b->max_reqs, b->max_bytes);
	}
	if (n->read_views != d->o->read_views) {
		static const char *const mode[] = {"auto", "on", "off"};
		conn_server_set_read_views(d->srv, n->read_views);
		say_info("SIGHUP: read-views %s", mode[n->read_views]);
	}
	conn_server_set_access(d->srv, n->cfg);
	say_info("SIGHUP: access rules for %zu export(s)%s%s", main_count_rules(n->cfg),
	         n->cfg ? " from " : "", n->cfg ? config_path(n->cfg) : "");
}

/* SIGHUP: read the configuration file and the command line again and put
 * the result in force.  A file that cannot be read or has a bad line
 * changes nothing (one line names FILE:LINE).  The replaced options are
 * kept until exit: the settings that need a restart still point into
 * them. */
static void main_reload(struct main_daemon *d)
{
	struct main_opts *n = malloc(sizeof(*n)), **old;
	char err[CONFIG_ERR_MAX];

	old = realloc(d->oldopts, (d->noldopts + 1) * sizeof(*old));
	if (!n || !old) {
		free(n);
		if (old)
			d->oldopts = old;
		say_error("SIGHUP: out of memory; keeping the running configuration");
		return;
	}
	d->oldopts = old;
	if (main_load(d->argc, d->argv, n, err, sizeof(err)) != MAIN_RUN) {
		say_error("SIGHUP: %s; keeping the running configuration", err);
		main_opts_free(n);
		free(n);
		return;
	}
	main_reload_fixed(d->o, n);
	main_reload_live(d, n);
	main_reload_tls(d, n);
	d->oldopts[d->noldopts++] = d->o;
	d->o = n;
}

/* SIGHUP, between RELOADING=1 and READY=1 for the service manager. */
static void on_reload_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct main_daemon *d = w->data;

	service_reloading(d->sv, "reloading (SIGHUP)");
	main_reload(d);
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

/* The signals the loop's watchers take (main_run) are blocked from the
 * first line of main() until those watchers run, and again after them: one
 * that arrives while the daemon starts (reading its configuration, opening
 * the pool, binding its sockets) waits for the loop instead of ending a
 * half-started process by its default action with its control socket left
 * behind, and a second SIGTERM during the shutdown does not cut it short.
 * Threads started meanwhile inherit the mask, so the loop's thread alone
 * takes them. */
static void main_block_signals(bool block)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&set, sigs[i]);
	pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
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
	main_block_signals(false); /* what came while starting is taken now */
	ev_run(d->loop, 0);        /* returns once conn_server_stop() has drained everything */
	main_block_signals(true);
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

/* Stop every thread that calls into the store beside the loop: the
 * service thread (its watchdog pings and status ask the log thread),
 * metrics scrapes, the control socket's threads.  Before any store_close:
 * a store call made while the store closes waits for a log thread that
 * has left, and nothing would wake it or the join of its thread. */
static void main_quiesce(struct main_daemon *d)
{
	service_free(d->sv);
	d->sv = NULL;
	metrics_stop(d->metrics); /* scrapes read the store and the server */
	d->metrics = NULL;
	control_stop(d->ctl);
	d->ctl = NULL;
}

/* Stop in the order the top of this file explains: control socket, store
 * (flush + checkpoint, threads joined), and only then the connection
 * server, whose wake-up watcher store threads may touch until joined. */
static void main_stop(struct main_daemon *d)
{
	main_quiesce(d);
	store_close(d->st);
	conn_server_free(d->srv);
	main_free_creds(d);
	main_free_opts(d);
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

/* ---- upgrades: handing over to a new process -------------------------------
 * (docs/ARCHITECTURE.md, "Upgrades without downtime").  The control thread
 * that runs `upgrade` starts the new binary and waits for its offer while
 * this process serves on (main_upgrade); the loop thread then pauses the
 * NBD server (on_upgrade_ask); once every connection is quiet the loop
 * returns and main_handover, on the main thread, takes everything apart,
 * closes the store and hands over, or, when the new process fails, opens
 * the store again and carries on with the same sockets (main_resume). */

static double main_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* TEST ONLY (docs/TESTING.md): COWBD_TEST_HANDOVER=STAGE kills this
 * process at STAGE of a handover, as kill -9 would. */
static void main_handover_fault(const char *stage)
{
	const char *f = getenv("COWBD_TEST_HANDOVER");

	if (f && !strcmp(f, stage)) {
		say_warn("TEST FAULT: killed at handover stage %s", stage);
		raise(SIGKILL);
	}
}

/* The binary this daemon runs, as a path that names the file there now (a
 * package upgrade replaces it: /proc/self/exe then reads "... (deleted)"). */
static void main_find_self(struct main_daemon *d)
{
	ssize_t n = readlink("/proc/self/exe", d->self, sizeof(d->self) - 1);
	size_t k;

	d->self[n > 0 ? n : 0] = '\0';
	k = strlen(d->self);
	if (k > 10 && !strcmp(d->self + k - 10, " (deleted)"))
		d->self[k - 10] = '\0';
}

/* The identity of the pool file or device at path.  0 or -1 (errno). */
static int main_pool_id(const char *path, struct handover_pool *out)
{
	struct stat sb;

	if (rados_pool_is(path)) {
		/* No inode: the name is the identity (FNV-1a of it). */
		uint64_t h = 14695981039346656037ull;
		for (const char *p = path; *p; p++)
			h = (h ^ (uint8_t)*p) * 1099511628211ull;
		out->dev = 0;
		out->ino = h;
		return 0;
	}
	if (stat(path, &sb) < 0)
		return -1;
	out->dev = sb.st_rdev ? (uint64_t)sb.st_rdev : (uint64_t)sb.st_dev;
	out->ino = sb.st_rdev ? 0 : (uint64_t)sb.st_ino;
	return 0;
}

/* The upgrade is over: wake the control thread with result r. */
static void main_upgrade_done(struct main_daemon *d, int r)
{
	pthread_mutex_lock(&d->up.lock);
	d->up.result = r;
	d->up.done = true;
	d->up.h = NULL;
	pthread_cond_broadcast(&d->up.cond);
	pthread_mutex_unlock(&d->up.lock);
}

/* An upgrade asked for once a SIGTERM/SIGINT came: refused, since the
 * loop that would pause the connections may have ended already and then
 * nothing would answer it (control_stop waits for a busy client). */
static int main_upgrade_refuse(struct control_upgrade *u)
{
	snprintf(u->msg, sizeof(u->msg), "cowbd is stopping");
	say_error("upgrade refused: %s", u->msg);
	return -ESHUTDOWN;
}

/* control_upgrade_fn, on a control thread. */
static int main_upgrade(void *arg, struct control_upgrade *u)
{
	struct main_daemon *d = arg;
	const char *bin = u->binary[0] ? u->binary : d->self;
	struct store_stats ss;
	struct handover *h;
	bool stopping;
	int r;

	u->old_pid = (int)getpid();
	pthread_mutex_lock(&d->up.lock);
	stopping = d->stopping;
	pthread_mutex_unlock(&d->up.lock);
	if (stopping)
		return main_upgrade_refuse(u); /* before a new process is started for nothing */
	store_get_stats(d->st, &ss);
	say_info("upgrade: starting %s", bin);
	h = handover_spawn(bin, d->argv, ss.format_version, u->msg, sizeof(u->msg));
	if (!h) {
		say_error("upgrade refused, nothing stopped: %s", u->msg);
		return -ECANCELED;
	}
	pthread_mutex_lock(&d->up.lock);
	if (d->stopping) { /* came while the new process started */
		pthread_mutex_unlock(&d->up.lock);
		handover_abort(h);
		return main_upgrade_refuse(u);
	}
	d->up.u = u;
	d->up.h = h;
	d->up.done = false;
	pthread_mutex_unlock(&d->up.lock);
	ev_async_send(d->loop, &d->up.ask);
	pthread_mutex_lock(&d->up.lock);
	while (!d->up.done)
		pthread_cond_wait(&d->up.cond, &d->up.lock);
	r = d->up.result;
	d->up.u = NULL;
	pthread_mutex_unlock(&d->up.lock);
	return r;
}

/* The loop: a control thread asks for a pause. */
static void on_upgrade_ask(struct ev_loop *loop, ev_async *w, int revents)
{
	struct main_daemon *d = w->data;

	say_info("upgrade: pausing %u connection(s): no new request is read",
	         conn_server_count(d->srv));
	d->up.t_pause = main_now_ms();
	conn_server_pause(d->srv, MAIN_PAUSE_SECS);
}

/* A server on the loop for the store, serving what ho holds (paused):
 * the old process rolling back, or the new one taking over.  ho is
 * emptied.  0, or -1 after one line in err. */
static int main_adopt(struct main_daemon *d, struct conn_handoff *ho, unsigned *closed, char *err,
                      size_t errlen)
{
	int r;

	if (main_new_server(d, d->o) < 0) {
		snprintf(err, errlen, "cannot start the event loop");
		conn_handoff_free(ho, true);
		return -1;
	}
	r = conn_server_attach(d->srv, ho, closed);
	conn_handoff_free(ho, false); /* the fds are the server's now */
	if (r) {
		snprintf(err, errlen, "too many listeners handed over");
		return -1;
	}
	if (d->o->metrics &&
	    !(d->metrics = metrics_start(d->o->metrics, d->st, d->srv, err, errlen)))
		return -1;
	return 0;
}

/* The new process failed: serve on with the same sockets.  0, or -1 when
 * the pool cannot be opened again (then nothing is served: exit). */
static int main_resume(struct main_daemon *d, struct conn_handoff *ho, struct sockets_unix *ctl)
{
	char err[256];
	unsigned closed;

	d->st = pool_open(d->o, 0, d->started);
	if (!d->st) {
		conn_handoff_free(ho, true);
		close(ctl->fd);
		return -1;
	}
	if (main_adopt(d, ho, &closed, err, sizeof(err)) < 0)
		say_error("upgrade: rolling back: %s", err);
	control_set_store(d->ctl, d->st);
	control_set_clients_fn(d->ctl, main_clients, d->srv);
	control_take_back(d->ctl, ctl);
	d->sv = service_new();
	if (d->sv)
		service_start(d->sv, d->loop, d->st, d->srv);
	conn_server_resume(d->srv);
	if (closed)
		say_warn("upgrade: %u connection(s) could not be carried on", closed);
	return 0;
}

/* Everything quiet: take the daemon apart and hand it to up.h.  Returns 1
 * when handed over (exit now), 0 to serve on (the new process failed and
 * everything is back), -1 when nothing can be served any more. */
static int main_hand_off(struct main_daemon *d, struct control_upgrade *u)
{
	struct sockets_unix ctl = {.fd = -1};
	struct handover_pool pool;
	struct conn_handoff ho;
	double t1 = main_now_ms(), t2, t3;
	int r;

	u->drain_ms = t1 - d->up.t_pause;
	errno = 0;
	if (main_pool_id(d->o->pool, &pool) < 0 || conn_server_detach(d->srv, &ho)) {
		snprintf(u->msg, sizeof(u->msg), "pool %s: %s", d->o->pool,
		         errno ? strerror(errno) : "out of memory");
		conn_server_resume(d->srv);
		return 0;
	}
	main_handover_fault("paused");
	control_hand_off(d->ctl, &ctl);
	service_free(d->sv);
	d->sv = NULL;
	metrics_stop(d->metrics);
	d->metrics = NULL;
	store_close(d->st); /* flush, checkpoint, the pool's lock released */
	d->st = NULL;
	conn_server_free(d->srv);
	d->srv = NULL;
	t2 = main_now_ms();
	r = handover_send(d->up.h, &pool, &ho, &ctl, &u->carried, &u->closed, u->msg,
	                  sizeof(u->msg));
	main_handover_fault("sent");
	t3 = main_now_ms();
	if (r == 0) {
		const struct handover_offer *of = handover_offered(d->up.h);

		u->new_pid = (int)of->pid;
		snprintf(u->version, sizeof(u->version), "%s", of->cowbd);
		u->close_ms = t2 - t1;
		u->takeover_ms = t3 - t2;
		u->pause_ms = t3 - d->up.t_pause;
		u->closed += ho.closed;
		service_main_pid(of->pid);
		handover_commit(d->up.h);
		say_info(
		    "upgrade: handed over to pid %d (cowbd %s): %u connection(s) carried on, "
		    "%u closed; clients paused %.1f ms (drain %.1f, close %.1f, takeover %.1f)",
		    u->new_pid, u->version, u->carried, u->closed, u->pause_ms, u->drain_ms,
		    u->close_ms, u->takeover_ms);
		control_set_store(d->ctl, NULL);
		control_set_clients_fn(d->ctl, NULL, NULL);
		conn_handoff_free(&ho, true); /* our copies; the sockets live on there */
		close(ctl.fd);
		return 1;
	}
	say_error("upgrade failed, serving on: %s", u->msg);
	handover_abort(d->up.h);
	if (main_resume(d, &ho, &ctl) < 0) {
		snprintf(u->msg + strlen(u->msg), sizeof(u->msg) - strlen(u->msg),
		         "; and the pool cannot be opened again: stopping");
		d->up.lost = true;
		return -1;
	}
	return 0;
}

/* ---- restarts through the service manager's fd store ------------------
 * (`systemctl restart cowbd`; docs/OPERATIONS.md.)  At SIGTERM, under a
 * manager whose fd store is on, the connections pause as for an upgrade;
 * once quiet the store is closed and each connection's socket goes to the
 * fd store, with their descriptions in a memfd beside them; the next start
 * finds them among the passed fds (service.c) and carries on.  No roll
 * back: the old process is gone by then.  A stop (no restart) discards the
 * store, and the clients see the connection close. */

/* SIGTERM's pause is over: store, or stop as usual when the connections
 * did not go quiet.  -1: stop now; 0: run the loop (draining). */
static int main_store(struct main_daemon *d)
{
	struct handover_pool pool;
	struct conn_handoff ho;
	size_t nfds = 0, kept = 0;
	int *fds = NULL, mfd = -1, r;
	char name[64];

	d->storing = false;
	if (!conn_server_quiet(d->srv) || main_pool_id(d->o->pool, &pool) < 0 ||
	    conn_server_detach(d->srv, &ho)) {
		say_warn(
		    "stopping: in-flight requests did not finish within %.0f s: the connections "
		    "close instead of waiting for the next start",
		    MAIN_PAUSE_SECS);
		conn_server_resume(d->srv);
		conn_server_stop(d->srv);
		return conn_server_count(d->srv) ? 0 : -1;
	}
	for (unsigned i = 0; i < ho.nlst; i++)
		sockets_close_unix(&ho.lst[i]); /* listeners: as at any stop */
	ho.nlst = 0;
	main_quiesce(d); /* as main_stop does, before the store goes */
	store_close(d->st);
	d->st = NULL;
	mfd = memfd_create(SERVICE_FD_STATE, MFD_CLOEXEC);
	r = mfd < 0 ? -errno : handover_save(mfd, &pool, &ho, &fds, &nfds);
	for (size_t i = 0; !r && i < nfds; i++, kept++) {
		snprintf(name, sizeof(name), "%s%zu", SERVICE_FD_CONN, i);
		r = service_fdstore(name, fds[i], true);
	}
	if (!r && nfds) /* nothing to carry on: a plain stop */
		r = service_fdstore(SERVICE_FD_STATE, mfd, false);
	if (r)
		say_error("stopping: cannot keep the connections in the fd store: %s",
		          strerror(-r));
	else if (nfds)
		say_info("stopping: %zu connection(s) kept in the fd store (%u TLS closed), paused "
		         "%.1f ms so far",
		         kept, ho.closed, main_now_ms() - d->up.t_pause);
	if (mfd >= 0)
		close(mfd);
	free(fds);
	conn_handoff_free(&ho, true); /* our copies: the store holds its own */
	return -1;
}

/* At start: carry on with what a previous process left in the fd store,
 * and take it all out of the store (this process owns it now). */
static void main_restore(struct main_daemon *d)
{
	struct handover_pool pool, ours;
	struct conn_handoff ho;
	unsigned closed = 0;
	char err[256] = "connections stored without their state", name[64];
	int r = -ENOENT;

	if (d->fds.state >= 0 && lseek(d->fds.state, 0, SEEK_SET) == 0)
		r = handover_load(d->fds.state, d->fds.conns, d->fds.nconns, &pool, &ho, err,
		                  sizeof(err));
	if (!r &&
	    (main_pool_id(d->o->pool, &ours) < 0 || ours.dev != pool.dev || ours.ino != pool.ino)) {
		snprintf(err, sizeof(err), "they were another pool's");
		conn_handoff_free(&ho, true);
		r = -ESTALE;
	}
	if (!r) {
		r = conn_server_attach(d->srv, &ho, &closed);
		conn_handoff_free(&ho, false);
	}
	if (r)
		say_warn("restart: the connections kept in the fd store are dropped: %s", err);
	else
		say_info(
		    "restart: carried on with %u connection(s) from the fd store (%u could not be)",
		    conn_server_count(d->srv), closed);
	service_fdstore_remove(SERVICE_FD_STATE);
	for (size_t i = 0; i < d->fds.nconns; i++) {
		snprintf(name, sizeof(name), "%s%zu", SERVICE_FD_CONN, i);
		service_fdstore_remove(name);
	}
	service_fds_close(&d->fds); /* what was not used */
	conn_server_resume(d->srv);
}

/* Between two runs of the loop: an upgrade's pause is over (or it could
 * not happen).  1: handed over; 0: serve on; -1: stop. */
static int main_handover(struct main_daemon *d)
{
	struct control_upgrade *u;
	int r = 0;

	if (d->storing)
		return main_store(d);
	pthread_mutex_lock(&d->up.lock);
	u = d->up.u;
	pthread_mutex_unlock(&d->up.lock);
	if (!u || d->up.done)
		return -1; /* the loop ended because the daemon stops */
	if (d->stopping) {
		snprintf(u->msg, sizeof(u->msg), "cowbd is stopping");
		conn_server_resume(d->srv); /* the stop drains the connections */
		handover_abort(d->up.h);
		main_upgrade_done(d, -ESHUTDOWN);
		return conn_server_count(d->srv) ? 0 : -1;
	}
	if (!conn_server_quiet(d->srv)) {
		snprintf(
		    u->msg, sizeof(u->msg),
		    "in-flight requests did not finish within %.0f s (a client not reading its "
		    "replies?); nothing stopped",
		    MAIN_PAUSE_SECS);
		say_error("upgrade: %s", u->msg);
		conn_server_resume(d->srv);
		handover_abort(d->up.h);
		main_upgrade_done(d, -ETIMEDOUT);
		return 0;
	}
	r = main_hand_off(d, u);
	if (r == 1)
		d->up.handed_over = true;
	main_upgrade_done(d, r == 1 ? 0 : -ECANCELED);
	return r;
}

/* Serve until stopped or handed over: 1 handed over, -1 stopped. */
static int main_serve(struct main_daemon *d)
{
	int r;

	do {
		main_run(d);
		r = main_handover(d);
	} while (r == 0);
	return r;
}

/* The new process gives up before COMMIT: let go of everything without
 * touching a socket (no shutdown, no byte sent: the old process serves
 * them on) and close the store. */
static void main_let_go(struct main_daemon *d)
{
	struct conn_handoff ho;

	if (d->srv && !conn_server_detach(d->srv, &ho))
		conn_handoff_free(&ho, true);
	metrics_stop(d->metrics);
	store_close(d->st);
	conn_server_free(d->srv);
	if (d->loop)
		ev_loop_destroy(d->loop);
}

/* The service manager addressed the watchdog to the old process
 * (WATCHDOG_PID); once we take over it is ours: the old process tells the
 * manager MAINPID= before it exits. */
static void main_watchdog_pid(void)
{
	char pid[24];

	if (getenv("WATCHDOG_PID")) {
		snprintf(pid, sizeof(pid), "%ld", (long)getpid());
		setenv("WATCHDOG_PID", pid, 1);
	}
}

/* --handover-detach: fork and let the first process exit, so that this
 * one becomes the service manager's child (handover.c says why).  Still
 * single-threaded here.  0 in the child, -1 after one line. */
static int main_detach(void)
{
	pid_t pid = fork();

	if (pid < 0) {
		say_error("cannot take over: fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0)
		_exit(0);
	return 0;
}

/* The new process's side: take over from the old one on fd, after the
 * configuration and TLS are loaded.  MAIN_RUN: serving (paused until the
 * loop runs); else the exit status, with the store and server gone. */
static int main_take_over(struct main_daemon *d)
{
	int fd = d->o->handover_fd;
	struct handover_pool pool, ours;
	struct sockets_unix ctl;
	struct conn_handoff ho;
	unsigned closed = 0;
	char err[256];
	const char *fault = getenv("COWBD_TEST_HANDOVER");

	fcntl(fd, F_SETFD, FD_CLOEXEC); /* never passed on to a later upgrade */
	if (handover_offer(fd, FMT_VERSION) < 0 ||
	    handover_receive(fd, &pool, &ho, &ctl, err, sizeof(err)) < 0) {
		say_error("cannot take over: %s", err);
		return MAIN_EXIT_FAIL;
	}
	say_info("taking over %zu connection(s) and %u listener(s)", ho.nconns, ho.nlst);
	if (main_pool_id(d->o->pool, &ours) < 0 || ours.dev != pool.dev || ours.ino != pool.ino) {
		snprintf(err, sizeof(err),
		         "the configuration names another pool (%s) than the one served",
		         d->o->pool);
		conn_handoff_free(&ho, true);
		close(ctl.fd);
		goto fail;
	}
	if (fault && !strcmp(fault, "refuse-pool")) {
		say_warn("TEST FAULT: refusing the pool");
		errno = EPROTO;
	} else {
		d->st = pool_open(d->o, 0, d->started);
	}
	if (!d->st) {
		snprintf(err, sizeof(err), "cannot open pool %s (the log says why)", d->o->pool);
		conn_handoff_free(&ho, true);
		close(ctl.fd);
		goto fail;
	}
	if (main_adopt(d, &ho, &closed, err, sizeof(err)) < 0)
		goto fail;
	if (handover_ready(fd, conn_server_count(d->srv), closed) < 0) {
		close(ctl.fd);
		main_let_go(d);
		say_info("handover aborted by the old process: exiting");
		return MAIN_EXIT_OK;
	}
	close(fd);
	d->ctl = ctl.fd >= 0 ? control_start_sock(d->st, &ctl, err, sizeof(err)) : NULL;
	if (ctl.fd >= 0 && !d->ctl)
		say_error("control socket: %s", err); /* serve the clients anyway */
	if (d->ctl) {
		control_set_clients_fn(d->ctl, main_clients, d->srv);
		control_set_upgrade_fn(d->ctl, main_upgrade, d);
	}
	service_start(d->sv, d->loop, d->st, d->srv);
	conn_server_resume(d->srv);
	say_info("took over: serving %u connection(s) (%u could not be carried on)",
	         conn_server_count(d->srv), closed);
	return MAIN_RUN;

fail:
	say_error("cannot take over: %s", err);
	handover_fail(fd, err);
	main_let_go(d);
	return MAIN_EXIT_FAIL;
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

/* Read the configuration; --check-config ends here.  MAIN_RUN, or the exit
 * status after one line. */
static int main_configure(struct main_daemon *d)
{
	char err[CONFIG_ERR_MAX];
	int r;

	d->o = calloc(1, sizeof(*d->o));
	if (!d->o) {
		say_error("out of memory");
		return MAIN_EXIT_FAIL;
	}
	r = main_load(d->argc, d->argv, d->o, err, sizeof(err));
	if (r != MAIN_RUN) {
		if (err[0])
			say_error("%s", err);
		return r;
	}
	say_max_level = d->o->log_level;
	if (d->o->check_config) {
		printf("%s: OK\n", config_path(d->o->cfg));
		return MAIN_EXIT_OK;
	}
	return MAIN_RUN;
}

int main(int argc, char **argv)
{
	struct main_daemon d = {.argc = argc, .argv = argv, .started = (uint64_t)time(NULL)};
	int r;

	main_block_signals(true);
	main_find_self(&d);
	pthread_mutex_init(&d.up.lock, NULL);
	pthread_cond_init(&d.up.cond, NULL);
	if ((r = main_configure(&d)) != MAIN_RUN || main_load_tls(d.o, &d.creds) < 0) {
		main_free_opts(&d);
		return r != MAIN_RUN ? r : 1;
	}
	if (d.o->handover_fd >= 0 && d.o->handover_detach && main_detach() < 0) {
		main_free_opts(&d);
		return 1;
	}
	if (d.o->handover_fd >= 0)
		main_watchdog_pid();
	if (main_service(&d) < 0) {
		service_free(d.sv);
		tls_creds_free(d.creds);
		main_free_opts(&d);
		return 1;
	}
	main_ignore_signals();
	if (d.o->handover_fd >= 0) {
		r = main_take_over(&d);
		if (r != MAIN_RUN) {
			service_free(d.sv);
			tls_creds_free(d.creds);
			main_free_opts(&d);
			return r;
		}
		goto serve;
	}
	service_status(d.sv, "opening pool %s (recovering its log if it was not closed cleanly)",
	               d.o->pool);
	d.st = pool_open(d.o, d.o->create_size, d.started);
	if (!d.st) {
		service_status(d.sv, "failed to open pool %s", d.o->pool);
		service_fds_close(&d.fds);
		service_free(d.sv);
		tls_creds_free(d.creds);
		main_free_opts(&d);
		return 1;
	}
	if (main_start(&d, d.o) < 0) {
		main_abort(&d);
		return 1;
	}
	if (d.fds.state >= 0 || d.fds.nconns)
		main_restore(&d);
	if (service_start(d.sv, d.loop, d.st, d.srv) < 0 || main_test_faults(&d) < 0) {
		main_abort(&d);
		return 1;
	}
serve:
	r = main_serve(&d);
	main_stop(&d);
	if (r == 1)
		say_info("handed over: exiting");
	return d.up.lost ? 1 : 0;
}
