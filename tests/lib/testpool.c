/* testpool.c — pool fixtures (see testpool.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testpool.h"

void testpool_die(const char *what, int err)
{
	fprintf(stderr, "testpool: %s: %s\n", what, strerror(err < 0 ? -err : err));
	abort();
}

struct store *testpool_open(struct blkdev *dev, const struct store_opts *opts)
{
	const char *why = NULL;
	struct store *st = store_open(dev, opts, &why);

	if (!st)
		testpool_die(why ? why : "store_open", errno);
	return st;
}

struct store *testpool_new(struct blkdev *dev, const struct store_opts *opts)
{
	int err = store_format(dev);

	if (err)
		testpool_die("store_format", err);
	return testpool_open(dev, opts);
}

struct store *testpool_volume(struct blkdev *dev, const struct store_opts *opts, const char *name,
                              uint64_t size, struct vol **v)
{
	struct store *st = testpool_new(dev, opts);
	int err = store_vol_create(st, name, size);

	if (!err && v)
		err = store_vol_open(st, name, v);
	if (err)
		testpool_die(name, err);
	return st;
}

int testpool_block_value(struct vol *v, uint64_t blk)
{
	unsigned char b[STORE_BLOCK_SIZE];
	int err = store_read(v, b, blk * STORE_BLOCK_SIZE, STORE_BLOCK_SIZE);
	if (err)
		testpool_die("block read", err);
	for (unsigned i = 1; i < sizeof(b); i++)
		if (b[i] != b[0])
			return -1;
	return b[0];
}
