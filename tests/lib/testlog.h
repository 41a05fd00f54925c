/* testlog.h — the store's lower layers on memory, without a store: an
 * allocator, a segment I/O over an in-memory blkdev and a log at the start
 * of a fresh segment, as store_format starts one (no cmocka).
 */
#ifndef COWBD_TEST_TESTLOG_H
#define COWBD_TEST_TESTLOG_H
#include <stdint.h>

#include "alloc.h"
#include "blkdev.h"
#include "log.h"
#include "segio.h"

struct testlog {
	struct blkdev *mem; /* owned by io */
	struct segio *io;
	struct alloc *a;
	struct log *l;
};

/* A pool of nsegs segments; the log starts at the first free segment,
 * LSN 1, with its successor taken.  Aborts on failure. */
void testlog_init(struct testlog *t, uint64_t nsegs);
void testlog_fini(struct testlog *t);

/* Fill a block with bytes derived from seed (every block differs). */
void testlog_fill(void *block, uint64_t seed);

#endif
