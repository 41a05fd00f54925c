/* segio_dev.c — the segment I/O interface (segio.h) over one pool device:
 * a file or block device, or in tests the fault-injecting memory device.
 * Segment s lives at byte s * FMT_SEG_BYTES; the superblock slots are the
 * first two blocks of segment 0.  Layer: the bottom of the store, over
 * blkdev.  No state beyond the device: no locks. */
#include <errno.h>
#include <stdlib.h>

#include "format.h"
#include "segio.h"

struct segio_dev {
	struct segio io; /* first: the interface */
	struct blkdev *dev;
	bool own;
};

static struct blkdev *dev_of(struct segio *io)
{
	return ((struct segio_dev *)io)->dev;
}

static int dev_read(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return blkdev_pread(dev_of(io), buf, len, off);
}

static int dev_read_nowait(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return blkdev_pread_nowait(dev_of(io), buf, len, off);
}

static int dev_open(struct segio *io, uint64_t seg, uint64_t off)
{
	return 0; /* the space is there already */
}

static int dev_append(struct segio *io, uint64_t seg, uint64_t off, const struct iovec *iov,
                      int iovcnt)
{
	return blkdev_pwritev(dev_of(io), iov, iovcnt, seg * FMT_SEG_BYTES + off);
}

/* Start writing the sealed segment back now, so that dirty data never
 * piles up for the next sync to wait on. */
static void dev_seal(struct segio *io, uint64_t seg)
{
	blkdev_writeback(dev_of(io), seg * FMT_SEG_BYTES, FMT_SEG_BYTES);
}

static int dev_sync(struct segio *io)
{
	return blkdev_flush(dev_of(io));
}

static int dev_discard(struct segio *io, uint64_t seg)
{
	return blkdev_discard(dev_of(io), seg * FMT_SEG_BYTES, FMT_SEG_BYTES);
}

static int dev_sb_read(struct segio *io, unsigned slot, void *buf)
{
	return blkdev_pread(dev_of(io), buf, FMT_BLOCK, (uint64_t)slot * FMT_BLOCK);
}

static int dev_sb_write(struct segio *io, unsigned slot, const void *buf)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = FMT_BLOCK};
	int err = blkdev_pwritev(dev_of(io), &iov, 1, (uint64_t)slot * FMT_BLOCK);
	return err ? err : blkdev_flush(dev_of(io));
}

static void dev_close(struct segio *io)
{
	struct segio_dev *d = (struct segio_dev *)io;
	if (d->own)
		blkdev_close(d->dev);
	free(d);
}

static const struct segio_ops dev_ops = {
    .read = dev_read,
    .read_nowait = dev_read_nowait,
    .open = dev_open,
    .append = dev_append,
    .seal = dev_seal,
    .sync = dev_sync,
    .discard = dev_discard,
    .sb_read = dev_sb_read,
    .sb_write = dev_sb_write,
    .close = dev_close,
};

struct segio *segio_dev_new(struct blkdev *dev, bool own)
{
	struct segio_dev *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->io.ops = &dev_ops;
	d->io.nsegs = dev->size / FMT_SEG_BYTES;
	d->dev = dev;
	d->own = own;
	return &d->io;
}
