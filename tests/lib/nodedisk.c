/* nodedisk.c — an in-memory disk of tree node images (see nodedisk.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "nodedisk.h"

uint64_t nodedisk_emit(void *arg, struct fmt_node *image)
{
	struct nodedisk *d = arg;
	struct fmt_node *copy = malloc(sizeof(*copy));

	if (!copy || d->next >= NODEDISK_BLOCKS) {
		fprintf(stderr, "nodedisk: full or out of memory\n");
		abort();
	}
	memcpy(copy, image, sizeof(*copy));
	copy->self = d->next;
	copy->crc = 0;
	copy->crc = crc32c(0, copy, FMT_BLOCK);
	d->img[d->next] = copy;
	return d->next++;
}

int nodedisk_read(void *arg, uint64_t addr, struct fmt_node *out)
{
	struct nodedisk *d = arg;
	const struct fmt_node *img = addr < NODEDISK_BLOCKS ? d->img[addr] : NULL;

	if (!img || addr == d->fail_addr)
		return -EIO;
	memcpy(out, img, sizeof(*out));
	uint32_t crc = out->crc;
	out->crc = 0;
	if (out->magic != FMT_NODE_MAGIC || out->self != addr || crc32c(0, out, FMT_BLOCK) != crc)
		return -EILSEQ;
	out->crc = crc;
	return 0;
}

void nodedisk_clear(struct nodedisk *d)
{
	for (size_t i = 0; i < NODEDISK_BLOCKS; i++) {
		free(d->img[i]);
		d->img[i] = NULL;
	}
}
