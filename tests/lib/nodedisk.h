/* nodedisk.h — an in-memory disk of tree node images for tests of the
 * node cache (no cmocka): what the log would hold, by address, with the
 * store's checks on reading (magic, own address, CRC) and one address
 * whose reads fail.
 */
#ifndef COWBD_TEST_NODEDISK_H
#define COWBD_TEST_NODEDISK_H
#include <stdint.h>

#include "format.h"

#define NODEDISK_BLOCKS (256u * FMT_SEG_BLOCKS) /* a pool of 256 segments */

struct nodedisk {
	struct fmt_node *img[NODEDISK_BLOCKS];
	uint64_t next;      /* where the next image goes */
	uint64_t fail_addr; /* reads of it fail with -EIO (0: none) */
};

/* tree_emit_fn: a copy of image at d->next (self and CRC filled in);
 * aborts when the disk is full. */
uint64_t nodedisk_emit(void *d, struct fmt_node *image);

/* tree_read_fn: 0, -EIO (no image there, or fail_addr) or -EILSEQ. */
int nodedisk_read(void *d, uint64_t addr, struct fmt_node *out);

/* Free every image (not d). */
void nodedisk_clear(struct nodedisk *d);

#endif
