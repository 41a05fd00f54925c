/* blkdev.h — the I/O table under the store.
 *
 * Every byte the store reads or writes goes through a struct blkdev, so that
 * tests can swap the real file/device for an in-memory device that fails the
 * Nth write or flush and drops unsynced writes at a simulated power cut.
 * All functions return 0 or a negative errno; none keeps state between
 * calls beyond what the device itself holds.  pread/pwritev may be called
 * from several threads at once; flush from any thread.
 */
#ifndef COWBD_BLKDEV_H
#define COWBD_BLKDEV_H
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct blkdev;

struct blkdev_ops {
	/* Read exactly len bytes at off (short reads are retried inside). */
	int (*pread)(struct blkdev *d, void *buf, size_t len, uint64_t off);
	/* The same, but only if it need not wait for the disk (page-cache
	 * hit): -EAGAIN otherwise.  NULL = not supported. */
	int (*pread_nowait)(struct blkdev *d, void *buf, size_t len, uint64_t off);
	/* Write the whole vector at off. */
	int (*pwritev)(struct blkdev *d, const struct iovec *iov, int iovcnt, uint64_t off);
	/* Make every completed write durable (fdatasync). */
	int (*flush)(struct blkdev *d);
	/* Tell the device a range holds nothing (hole punch); may be a no-op. */
	int (*discard)(struct blkdev *d, uint64_t off, uint64_t len);
	/* Start writing a range back now, without waiting (a hint, so that a
	 * later flush has little left to do); may be NULL. */
	void (*writeback)(struct blkdev *d, uint64_t off, uint64_t len);
	void (*close)(struct blkdev *d);
};

struct blkdev {
	const struct blkdev_ops *ops;
	uint64_t size; /* bytes */
	int fd;        /* file devices only, else -1 */
};

static inline int blkdev_pread(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	return d->ops->pread(d, buf, len, off);
}
static inline int blkdev_pread_nowait(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	return d->ops->pread_nowait ? d->ops->pread_nowait(d, buf, len, off) : -EAGAIN;
}
static inline int blkdev_pwritev(struct blkdev *d, const struct iovec *iov, int n, uint64_t off)
{
	return d->ops->pwritev(d, iov, n, off);
}
static inline int blkdev_flush(struct blkdev *d)
{
	return d->ops->flush(d);
}
static inline int blkdev_discard(struct blkdev *d, uint64_t off, uint64_t len)
{
	return d->ops->discard(d, off, len);
}
static inline void blkdev_writeback(struct blkdev *d, uint64_t off, uint64_t len)
{
	if (d->ops->writeback)
		d->ops->writeback(d, off, len);
}
static inline void blkdev_close(struct blkdev *d)
{
	if (d)
		d->ops->close(d);
}

/* Open a regular file or block device.  With create_size != 0 and a missing
 * or empty file, the file is created/extended sparse to create_size.
 * Returns NULL with errno set. */
struct blkdev *blkdev_open_file(const char *path, uint64_t create_size);

/* Does the device hold nothing?  1 yes, 0 no, negative errno when it
 * cannot tell.  A regular file is blank when every byte of it reads as
 * zero (holes are skipped with SEEK_DATA, so a sparse file costs nothing);
 * a block device when its first and last 4 MiB are zero — where partition
 * tables, file system, LVM and RAID signatures live — since reading a
 * whole device would take too long.  Used before formatting over it. */
int blkdev_is_blank(struct blkdev *d);

/* In-memory device of size bytes for tests.  It keeps a durable image and
 * the writes since the last flush separately. */
struct blkdev *blkdev_mem_new(uint64_t size);
/* Fail the nth (1-based, counted from now) pwritev / flush with -EIO; 0 = never. */
void blkdev_mem_fail_write(struct blkdev *d, unsigned nth);
void blkdev_mem_fail_flush(struct blkdev *d, unsigned nth);
/* Simulated power cut: every write since the last successful flush is lost
 * (when torn is true, the last unsynced write keeps its first half). */
void blkdev_mem_crash(struct blkdev *d, bool torn);
/* Counters for tests. */
unsigned blkdev_mem_writes(struct blkdev *d);
unsigned blkdev_mem_flushes(struct blkdev *d);

#endif
