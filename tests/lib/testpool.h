/* testpool.h — pool fixtures for tests and fuzzers (no cmocka: the fuzz
 * targets link them too): format a device, open it, create a volume.  A
 * fixture that cannot be built is a broken test, not a finding, so every
 * failure prints what failed and why and aborts.
 */
#ifndef COWBD_TEST_TESTPOOL_H
#define COWBD_TEST_TESTPOOL_H
#include <stdint.h>

#include "store.h"

/* Print "testpool: what: strerror(err)" and abort (err: ±errno). */
_Noreturn void testpool_die(const char *what, int err);

/* Open the pool on dev (opts may be NULL); aborts with the store's reason
 * when it refuses. */
struct store *testpool_open(struct blkdev *dev, const struct store_opts *opts);

/* Format dev and open the new pool. */
struct store *testpool_new(struct blkdev *dev, const struct store_opts *opts);

/* Format dev, open it and create the volume name of size bytes; with v,
 * also open a handle on it. */
struct store *testpool_volume(struct blkdev *dev, const struct store_opts *opts, const char *name,
                              uint64_t size, struct vol **v);

/* Block blk of v, when all its bytes are one value: that value; -1 when
 * they are not.  Aborts if the read fails. */
int testpool_block_value(struct vol *v, uint64_t blk);

#endif
