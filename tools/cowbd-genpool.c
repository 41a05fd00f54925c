/* cowbd-genpool — a test tool: make a large, valid pool without writing
 * its data.  It drives the real store (the same code cowbd runs) over a
 * device wrapper that skips every write of a block from its own all-zero
 * buffer: those blocks stay holes in a new sparse pool file, which read as
 * zeroes, the content whose CRC32C the summaries record.  Everything else —
 * summaries, tree nodes, checkpoint records, superblocks — is written as
 * cowbd writes it, so the pool opens, verifies and checks like any other,
 * and 10^8 mapped blocks (400 GiB of volume) cost a few GiB of disk.
 *
 * Usage: cowbd-genpool POOL --size SIZE --blocks N [--volumes V]
 *                      [--snapshots S] [--spread K] [--churn PCT]
 *   POOL        a new file (refused if it exists)
 *   --size      pool size (e.g. 600G; sparse)
 *   --blocks    4 KiB blocks mapped in all, spread over the volumes
 *   --volumes   volumes (default 1), named vol0, vol1, ...
 *   --snapshots snapshots in all (default 0), spread over the volumes,
 *               named VOL@sN; between two snapshots of a volume, PCT % of
 *               its blocks are written again (--churn, default 1), so each
 *               snapshot owns some blocks of its own
 *   --spread    map every K-th block of a volume (default 1: dense; 2: half
 *               the extents end at every block, the worst case for memory)
 * Prints what it made and how long it took.  Exit 0, 1 on failure, 2 on a
 * usage error.  Not installed: for scale tests and benchmarks
 * (docs/PERFORMANCE.md, "Metadata at scale"). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "blkdev.h"
#include "names.h"
#include "store.h"

#define BS    STORE_BLOCK_SIZE
#define CHUNK (STORE_MAX_REQ / BS) /* blocks per request */

/* The data every generated block holds: zeroes, never written. */
static char *zeroes;

struct skipdev {
	struct blkdev dev; /* first: the store sees this */
	struct blkdev *lower;
	uint64_t skipped; /* blocks not written */
};

static bool is_zero_block(const struct iovec *v)
{
	const char *p = v->iov_base;
	return p >= zeroes && p < zeroes + (size_t)CHUNK * BS;
}

static int skip_pread(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	return blkdev_pread(((struct skipdev *)d)->lower, buf, len, off);
}

/* Write the vector, leaving holes where it carries the zero buffer's
 * blocks (runs of other blocks go down as one write each). */
static int skip_pwritev(struct blkdev *d, const struct iovec *iov, int n, uint64_t off)
{
	struct skipdev *s = (struct skipdev *)d;
	int i = 0;
	while (i < n) {
		if (is_zero_block(&iov[i])) {
			off += iov[i].iov_len;
			s->skipped += iov[i].iov_len / BS;
			i++;
			continue;
		}
		int j = i;
		uint64_t len = 0;
		while (j < n && !is_zero_block(&iov[j]))
			len += iov[j++].iov_len;
		int err = blkdev_pwritev(s->lower, iov + i, j - i, off);
		if (err)
			return err;
		off += len;
		i = j;
	}
	return 0;
}

static int skip_flush(struct blkdev *d)
{
	return blkdev_flush(((struct skipdev *)d)->lower);
}

static int skip_discard(struct blkdev *d, uint64_t off, uint64_t len)
{
	return blkdev_discard(((struct skipdev *)d)->lower, off, len);
}

static void skip_close(struct blkdev *d)
{
	blkdev_close(((struct skipdev *)d)->lower);
}

static const struct blkdev_ops skip_ops = {
    .pread = skip_pread,
    .pwritev = skip_pwritev,
    .flush = skip_flush,
    .discard = skip_discard,
    .close = skip_close,
};

struct gen {
	const char *path;
	uint64_t size, blocks;
	unsigned volumes, snapshots, spread, churn;
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: cowbd-genpool POOL --size SIZE --blocks N [--volumes V] [--snapshots S]\n"
	        "                     [--spread K] [--churn PCT]\n");
}

static int parse(int argc, char **argv, struct gen *g)
{
	static const struct option opts[] = {
	    {"size", required_argument, NULL, 's'},    {"blocks", required_argument, NULL, 'b'},
	    {"volumes", required_argument, NULL, 'v'}, {"snapshots", required_argument, NULL, 'n'},
	    {"spread", required_argument, NULL, 'k'},  {"churn", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	int c;
	*g = (struct gen){.volumes = 1, .spread = 1, .churn = 1};
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end = NULL;
		unsigned long long v = 0;
		if (c != 's' && c != 'h' && c != '?') {
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || (c != 'b' && v > 1000000)) {
				fprintf(stderr, "cowbd-genpool: bad number '%s'\n", optarg);
				return 2;
			}
		}
		switch (c) {
		case 's': {
			char msg[NAMES_MSG_MAX];
			if (names_parse_size(optarg, 1, UINT64_MAX, &g->size, msg, sizeof(msg))) {
				fprintf(stderr, "cowbd-genpool: --size: %s\n", msg);
				return 2;
			}
			break;
		}
		case 'b':
			g->blocks = v;
			break;
		case 'v':
			g->volumes = (unsigned)v;
			break;
		case 'n':
			g->snapshots = (unsigned)v;
			break;
		case 'k':
			g->spread = (unsigned)v;
			break;
		case 'c':
			g->churn = (unsigned)v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || !g->size || !g->blocks || !g->volumes || !g->spread ||
	    g->churn > 100) {
		usage(stderr);
		return 2;
	}
	g->path = argv[optind];
	return 0;
}

/* Write block k*spread of v for every k in [first, first+n); with spread
 * 1 the blocks are consecutive and go CHUNK at a time. */
static int map_blocks(struct vol *v, uint64_t first, uint64_t n, unsigned spread)
{
	for (uint64_t k = first; k < first + n;) {
		uint64_t run = spread == 1 ? (first + n - k < CHUNK ? first + n - k : CHUNK) : 1;
		int err = store_write(v, zeroes, k * spread * BS, (uint32_t)(run * BS), 0);
		if (err)
			return err;
		k += run;
	}
	return 0;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "cowbd-genpool: %s: %s\n", what, strerror(-err));
	return 1;
}

static int generate(const struct gen *g, struct store *st)
{
	uint64_t per = (g->blocks + g->volumes - 1) / g->volumes, left = g->blocks;
	unsigned snaps_left = g->snapshots;
	char name[NAMES_FULL_MAX + 1];

	for (unsigned i = 0; i < g->volumes; i++) {
		uint64_t n = left < per ? left : per;
		unsigned snaps = (snaps_left + (g->volumes - i) - 1) / (g->volumes - i);
		struct vol *v;
		int err;
		left -= n;
		snaps_left -= snaps;
		snprintf(name, sizeof(name), "vol%u", i);
		/* A whole number of requests past the last mapped block. */
		uint64_t size = ((n * g->spread + CHUNK - 1) / CHUNK) * CHUNK * BS;
		if ((err = store_vol_create(st, name, size ? size : CHUNK * BS)))
			return fail("volume create", err);
		if ((err = store_vol_open(st, name, &v)))
			return fail("volume open", err);
		err = map_blocks(v, 0, n, g->spread);
		/* After each snapshot, churn % of the blocks are written again:
		 * the next stripe each time, so every snapshot owns a stripe. */
		uint64_t stripe = n * g->churn / 100;
		for (unsigned s = 0; s < snaps && !err; s++) {
			snprintf(name, sizeof(name), "vol%u@s%u", i, s);
			if ((err = store_snap_create(st, name)))
				break;
			uint64_t at = stripe ? (s * stripe) % n : 0;
			err = map_blocks(v, at, at + stripe <= n ? stripe : n - at, g->spread);
		}
		if (!err)
			err = store_flush(v);
		store_vol_close(v);
		if (err)
			return fail("writing", err);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct gen g;
	int rc = parse(argc, argv, &g);
	if (rc)
		return rc;
	if (posix_memalign((void **)&zeroes, BS, (size_t)CHUNK * BS))
		return fail("memory", -ENOMEM);
	memset(zeroes, 0, (size_t)CHUNK * BS);

	struct blkdev *lower = blkdev_create_file(g.path, g.size);
	if (!lower)
		return fail(g.path, -errno);
	struct skipdev s = {.dev = {.ops = &skip_ops, .size = lower->size, .fd = -1},
	                    .lower = lower};
	double t0 = now();
	int err = store_format(&s.dev);
	if (err)
		return fail("format", err);
	/* Checkpoints every 1 GiB of log: fewer of them, as a long-lived pool
	 * would have seen. */
	struct store_opts o = {.checkpoint_bytes = 1ull << 30};
	const char *why = NULL;
	struct store *st = store_open(&s.dev, &o, &why);
	if (!st) {
		fprintf(stderr, "cowbd-genpool: open: %s\n", why ? why : "failed");
		return 1;
	}
	rc = generate(&g, st);
	struct store_stats ss;
	store_get_stats(st, &ss);
	store_close(st); /* a last checkpoint, then the device is closed */
	if (rc)
		return rc;
	printf("%s: %llu blocks mapped in %u volumes and %u snapshots (spread %u, churn %u%%); "
	       "%llu blocks left as holes, %llu checkpoints; %.1f s\n",
	       g.path, (unsigned long long)g.blocks, g.volumes, g.snapshots, g.spread, g.churn,
	       (unsigned long long)s.skipped, (unsigned long long)ss.checkpoints, now() - t0);
	return 0;
}
