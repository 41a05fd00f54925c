/* testlog.c — allocator + segment I/O + log on memory (see testlog.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlog.h"

static void die(const char *what)
{
	fprintf(stderr, "testlog: %s failed\n", what);
	abort();
}

void testlog_init(struct testlog *t, uint64_t nsegs)
{
	uint64_t head, next;

	memset(t, 0, sizeof(*t));
	if (!(t->mem = blkdev_mem_new(nsegs * FMT_SEG_BYTES)))
		die("blkdev_mem_new");
	if (!(t->io = segio_dev_new(t->mem, true)))
		die("segio_dev_new");
	if (!(t->a = alloc_new(nsegs)))
		die("alloc_new");
	head = alloc_take_seg(t->a);
	next = alloc_take_seg(t->a);
	if (!(t->l = log_new(t->io, t->a, head, 0, next, 1, 0)))
		die("log_new");
}

void testlog_fini(struct testlog *t)
{
	log_free(t->l);
	segio_close(t->io);
	alloc_free(t->a);
	memset(t, 0, sizeof(*t));
}

void testlog_fill(void *block, uint64_t seed)
{
	uint64_t *w = block;

	for (unsigned i = 0; i < FMT_BLOCK / 8; i++)
		w[i] = seed * 0x9E3779B97F4A7C15ull + i;
}
