/* cowbd-check — offline consistency check of a cowbd pool.
 *
 *   cowbd-check [--all] POOL
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
 * Output: the first 10 problems of each kind (every one with --all), then
 * "... and M more <kind>" for each kind cut short, and always a last line
 * "POOL: clean" or "POOL: DAMAGED: N problems (a <kind>, b <kind>)".
 * Exit status: 0 clean, 1 damaged, 2 cannot read (missing file, I/O
 * error, not a pool, newer format). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blkdev.h"
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

int main(int argc, char **argv)
{
	struct store_opts o = {.read_only = true};
	struct store_vol_info *infos = NULL;
	struct store_stats s;
	const char *why = NULL, *path;
	size_t n = 0;
	bool live;

	if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
		printf("cowbd-check %s\n", COWBD_VERSION);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--all"))
		say_problem_show = 0;
	path = argc == 2 || say_problem_show == 0 ? argv[argc - 1] : "-";
	if (path[0] == '-') {
		fprintf(stderr, "usage: cowbd-check [--all] POOL | --version\n");
		return 2;
	}
	struct blkdev *dev = check_open(path, &live);
	if (!dev)
		return 2;
	struct store *st = store_open(dev, &o, &why);
	if (!st) {
		int e = errno;
		fprintf(stderr, "cowbd-check: %s: %s\n", path, why ? why : strerror(e));
		blkdev_close(dev);
		if (e != EILSEQ)
			return 2;
		printf("%s: DAMAGED: cannot be opened (%s)%s\n", path, why ? why : strerror(e),
		       live ? " (pool in use: may be stale)" : "");
		return 1;
	}
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
