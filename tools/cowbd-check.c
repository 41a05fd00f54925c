/* cowbd-check — offline consistency check of a cowbd pool.
 *
 *   cowbd-check [--all] POOL
 *   cowbd-check [--all] [--rados-conf FILE] [--rados-id ID] rados:POOL/NAME
 *   cowbd-check --version
 *
 * Opens the pool read-only (nothing is written: no checkpoint, no log
 * repair, no owner record), which validates the superblocks, the
 * checkpoint record and every tree node's checksum and address, and
 * replays the log after the checkpoint; then recounts every block
 * reference from the trees and compares it with the allocator and the
 * checkpoint's segment bitmap.
 *
 * It takes the pool's lock shared, so no daemon can start on the pool
 * while it runs.  A pool a daemon holds is still checked, without the
 * lock, after one first line naming the holder and saying the result may
 * be stale: the daemon keeps writing meanwhile, so what the check sees can
 * be a mix of states.
 *
 * A pool in Ceph RADOS is read without its lock (nothing is written and
 * nobody fenced); when a daemon holds it, the first line names the holder
 * and says the result may be stale, as above.
 *
 * Output: the first 10 problems of each kind (every one with --all), then
 * "... and M more <kind>" for each kind cut short, and always a last line
 * "POOL: clean" or "POOL: DAMAGED: N problems (a <kind>, b <kind>)".
 * Exit status: 0 clean, 1 damaged, 2 cannot read (missing file, I/O
 * error, not a pool, newer format). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blkdev.h"
#include "rados_pool.h"
#include "say.h"
#include "store.h"
#include "version.h"

/* Open path for a check: shared lock, or, when a daemon holds the pool,
 * no lock after the one line that says so (*live).  NULL after a message. */
static struct blkdev *check_open(const char *path, bool *live)
{
	struct blkdev *dev = blkdev_open(path, BLKDEV_READER);
	char line[512];

	*live = false;
	if (!dev && errno == EBUSY) {
		blkdev_holder(path, line, sizeof(line));
		fprintf(stderr,
		        "cowbd-check: %s; checking it anyway, read-only: the result may be stale\n",
		        line);
		*live = true;
		dev = blkdev_open(path, BLKDEV_PEEK);
	}
	if (!dev)
		fprintf(stderr, "cowbd-check: %s: %s\n", path, strerror(errno));
	return dev;
}

/* The lines after the problems: "... and M more" for each kind cut short,
 * then the summary. */
static void check_summary(const char *path, int bad, bool live)
{
	const char *kind, *sep = "";
	unsigned long count, hidden;
	char why[1024] = "";
	size_t at = 0;

	for (unsigned i = 0; say_problem_kind(i, &kind, &count, &hidden); i++) {
		if (hidden)
			fprintf(stderr, "cowbd-check: ... and %lu more %s\n", hidden, kind);
		if (at < sizeof(why))
			at += (size_t)snprintf(why + at, sizeof(why) - at, "%s%lu %s", sep, count,
			                       kind);
		sep = ", ";
	}
	if (bad)
		printf("%s: DAMAGED: %d problems (%s)", path, bad, why);
	else
		printf("%s: clean", path);
	printf("%s\n", live ? " (pool in use: may be stale)" : "");
}

/* Open the pool at path (a file, a device or rados:POOL/NAME) read-only;
 * *live when a daemon holds it.  NULL after a message, with *rc the exit
 * status (1 damaged, 2 cannot read). */
static struct store *check_pool(const char *path, const struct rados_pool_opts *ro, bool *live,
                                int *rc)
{
	struct store_opts o = {.read_only = true};
	const char *why = NULL;
	struct blkdev *dev = NULL;
	struct store *st;
	char holder[256];
	int e;

	*rc = 2;
	if (rados_pool_is(path)) {
		st = rados_pool_open_check(path, ro, &o, holder, sizeof(holder), &why);
		*live = holder[0] != 0;
		if (*live)
			fprintf(stderr,
			        "cowbd-check: pool %s is held by %s; checking it anyway, "
			        "read-only: the "
			        "result may be stale\n",
			        path, holder);
	} else {
		dev = check_open(path, live);
		if (!dev)
			return NULL;
		st = store_open(dev, &o, &why);
	}
	if (st)
		return st;
	e = errno;
	fprintf(stderr, "cowbd-check: %s: %s\n", path, why ? why : strerror(e));
	blkdev_close(dev);
	if (e != EILSEQ)
		return NULL;
	printf("%s: DAMAGED: cannot be opened (%s)%s\n", path, why ? why : strerror(e),
	       *live ? " (pool in use: may be stale)" : "");
	*rc = 1;
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: cowbd-check [--all] POOL | --version\n"
	                "       cowbd-check [--all] [--rados-conf FILE] [--rados-id ID] "
	                "rados:POOL/NAME\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"all", no_argument, NULL, 'a'},
	    {"version", no_argument, NULL, 'V'},
	    {"rados-conf", required_argument, NULL, 'c'},
	    {"rados-id", required_argument, NULL, 'i'},
	    {NULL, 0, NULL, 0},
	};
	struct rados_pool_opts ro = {0};
	struct store_vol_info *infos = NULL;
	struct store_stats s;
	const char *path;
	size_t n = 0;
	bool live;
	int c, rc;

	opterr = 0; /* one usage line, not getopt's own */
	while ((c = getopt_long(argc, argv, "V", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			if (say_problem_show == 0)
				return usage(); /* given twice */
			say_problem_show = 0;
			break;
		case 'V':
			printf("cowbd-check %s\n", COWBD_VERSION);
			return 0;
		case 'c':
			ro.conf = optarg;
			break;
		case 'i':
			ro.id = optarg;
			break;
		default:
			return usage();
		}
	}
	if (optind != argc - 1)
		return usage();
	path = argv[optind];
	struct store *st = check_pool(path, &ro, &live, &rc);
	if (!st)
		return rc;
	int bad = store_check(st);
	if (store_list(st, &infos, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			printf("%-40s %12llu bytes %10llu blocks mapped\n", infos[i].name,
			       (unsigned long long)infos[i].size,
			       (unsigned long long)infos[i].mapped_blocks);
		free(infos);
	}
	store_get_stats(st, &s);
	printf("pool: %llu segments of %llu KiB, %llu free, %llu live blocks\n",
	       (unsigned long long)s.segments, (unsigned long long)s.segment_bytes / 1024,
	       (unsigned long long)s.segments_free, (unsigned long long)s.blocks_live);
	store_close(st);
	fflush(stdout);
	check_summary(path, bad, live);
	return bad ? 1 : 0;
}
