/* segio_dev.c — the segment I/O interface (segio.h) over one pool device:
 * a file or block device, or in tests the fault-injecting memory device.
 * Segment s lives at byte s * FMT_SEG_BYTES; the superblock slots are the
 * first two blocks of segment 0.  Layer: the bottom of the store, over
 * blkdev.
 *
 * A pool file may be sparse, and the filesystem under it may fill before
 * the pool does (invariant 9: that is a full pool, not a failed one).  So
 * the space of a segment is allocated (fallocate) before the log writes
 * into it — when the log enters it, or earlier when the log names it as
 * its successor (reserve) — and a filesystem that cannot give it answers
 * -ENOSPC there, at a point where the log can refuse the move, instead of
 * in the middle of an append.  Appends into reserved space never meet
 * ENOSPC.  A block device needs none of this.
 *
 * Locks: none; open/reserve/append/discard come from one thread at a time
 * (segio.h), the flags below are written only there.  The once-per-file
 * memory of the sparse-pool warning has its own mutex. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "format.h"
#include "say.h"
#include "segio.h"

struct segio_dev {
	struct segio io; /* first: the interface */
	struct blkdev *dev;
	bool own;
	bool file;       /* a regular file: segments get their space reserved */
	bool no_reserve; /* the filesystem cannot preallocate (said once) */
	bool warned;     /* the sparse-pool check ran */
	/* syncs one at a time, and the first failed flush's error, kept
	 * (sync_err, under flush_lock): dev_sync says why */
	pthread_mutex_t flush_lock;
	int sync_err;
};

static struct segio_dev *to_dev(struct segio *io)
{
	return (struct segio_dev *)io;
}

static struct blkdev *dev_of(struct segio *io)
{
	return to_dev(io)->dev;
}

/* A quota is a filesystem that is full for us: the store knows ENOSPC. */
static int space_errno(int err)
{
	return err == -EDQUOT ? -ENOSPC : err;
}

/* The pool file's name, for messages ("fd N" when /proc is missing). */
static void file_name(const struct segio_dev *d, char *buf, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", d->dev->fd);
	n = readlink(link, buf, len - 1);
	if (n < 0)
		snprintf(buf, len, "fd %d", d->dev->fd);
	else
		buf[n] = 0;
}

/* How much more a sparse pool file may take (*need: its size less what is
 * allocated) and what the filesystem has free (*avail).  Returns false
 * when that cannot be told. */
static bool file_space(const struct segio_dev *d, uint64_t *need, uint64_t *avail)
{
	uint64_t size = d->io.nsegs * FMT_SEG_BYTES, used;
	struct statvfs vfs;
	struct stat sb;

	if (fstat(d->dev->fd, &sb) < 0 || fstatvfs(d->dev->fd, &vfs) < 0)
		return false;
	used = (uint64_t)sb.st_blocks * 512;
	*need = size > used ? size - used : 0;
	*avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	return true;
}

/* One line when the store starts writing a sparse pool file that the
 * filesystem could not hold at its full size: the operator learns it now,
 * not when writes get ENOSPC.  Once per file per process (a --create
 * formats through one segio and opens through another). */
static void check_space_once(struct segio_dev *d)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static dev_t warned_dev;
	static ino_t warned_ino;
	uint64_t need, avail;
	char name[512];
	struct stat sb;
	bool again;

	d->warned = true;
	if (!file_space(d, &need, &avail) || need <= avail || fstat(d->dev->fd, &sb) < 0)
		return;
	pthread_mutex_lock(&lock);
	again = warned_dev == sb.st_dev && warned_ino == sb.st_ino;
	warned_dev = sb.st_dev;
	warned_ino = sb.st_ino;
	pthread_mutex_unlock(&lock);
	if (again)
		return;
	file_name(d, name, sizeof(name));
	say_warn("pool file %s is sparse: %" PRIu64 " MiB more may be needed but the filesystem "
	         "has only %" PRIu64 " MiB free",
	         name, need >> 20, avail >> 20);
}

/* Allocate [off, off + len) of a pool file, so that writes there cannot
 * meet ENOSPC.  -ENOSPC when the filesystem cannot give the space.  A
 * filesystem without fallocate is said once and then left alone (its
 * appends report ENOSPC themselves); other refusals (a read-only medium
 * or descriptor, an immutable file) are not space and not ours to report:
 * nothing is written through such a device, or its writes fail with
 * their own error. */
static int reserve_range(struct segio_dev *d, uint64_t off, uint64_t len)
{
	char name[512];
	int r;

	if (!d->file || d->no_reserve)
		return 0;
	do
		r = fallocate(d->dev->fd, 0, (off_t)off, (off_t)len);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return 0;
	if (errno == ENOSPC || errno == EDQUOT)
		return -ENOSPC;
	if (errno == EOPNOTSUPP) {
		d->no_reserve = true;
		file_name(d, name, sizeof(name));
		say_warn("pool file %s: its filesystem cannot reserve space; if it fills, writes "
		         "get ENOSPC",
		         name);
	}
	return 0;
}

static int dev_read(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return blkdev_pread(dev_of(io), buf, len, off);
}

static int dev_read_nowait(struct segio *io, void *buf, size_t len, uint64_t off)
{
	return blkdev_pread_nowait(dev_of(io), buf, len, off);
}

static const void *dev_view(struct segio *io, uint64_t off, size_t len)
{
	return blkdev_view(dev_of(io), off, len);
}

/* Entering an empty segment needs its space: -ENOSPC refuses the move.  A
 * segment continued after recovery (off > 0) had its space reserved when
 * the log first entered it; if a pool written before reservations existed
 * cannot get the rest, its appends will say ENOSPC — never a reason to
 * refuse opening the pool, whose data must stay readable. */
static int dev_open(struct segio *io, uint64_t seg, uint64_t off)
{
	struct segio_dev *d = to_dev(io);
	int err;

	if (d->file && !d->warned)
		check_space_once(d);
	err = reserve_range(d, seg * FMT_SEG_BYTES + off, FMT_SEG_BYTES - off);
	return off ? 0 : err;
}

static int dev_reserve(struct segio *io, uint64_t seg)
{
	return reserve_range(to_dev(io), seg * FMT_SEG_BYTES, FMT_SEG_BYTES);
}

static int dev_append(struct segio *io, uint64_t seg, uint64_t off, const struct iovec *iov,
                      int iovcnt)
{
	return space_errno(blkdev_pwritev(dev_of(io), iov, iovcnt, seg * FMT_SEG_BYTES + off));
}

static int dev_rewrite(struct segio *io, uint64_t blk, const void *buf)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = FMT_BLOCK};
	return space_errno(blkdev_pwritev(dev_of(io), &iov, 1, blk * FMT_BLOCK));
}

/* Start writing the sealed segment back now, so that dirty data never
 * piles up for the next sync to wait on. */
static void dev_seal(struct segio *io, uint64_t seg)
{
	blkdev_writeback(dev_of(io), seg * FMT_SEG_BYTES, FMT_SEG_BYTES);
}

/* One at a time, and once one failed every later one fails (and no
 * superblock is written after it, dev_sb_write): the kernel reports a
 * writeback error to one fdatasync only, and three threads sync the
 * pool: the syncer (FLUSH, FUA), the log thread (control changes) and the
 * committer (a checkpoint in the background).  The one that did not learn of the
 * error would answer a FLUSH, or name a checkpoint in the superblock,
 * over data that never reached the disk. */
static int flush_locked(struct segio_dev *d)
{
	char name[512];
	int err;

	if (d->sync_err)
		return d->sync_err;
	err = blkdev_flush(d->dev);
	if (!err)
		return 0;
	/* -EIO whatever the kernel said: a sync's ENOSPC (writeback into
	 * space the filesystem could not give after all) lost data as any
	 * other failed sync did, and the store would take ENOSPC for a full
	 * pool, put the checkpoint off and go on. */
	file_name(d, name, sizeof(name));
	say_error("pool %s: a sync failed (%s): what was written since the last one may be "
	          "lost",
	          name, strerror(-err));
	d->sync_err = -EIO;
	return d->sync_err;
}

static int dev_sync(struct segio *io)
{
	struct segio_dev *d = to_dev(io);
	pthread_mutex_lock(&d->flush_lock);
	int err = flush_locked(d);
	pthread_mutex_unlock(&d->flush_lock);
	return err;
}

/* A free segment's space goes back to the filesystem, even when the pool
 * file is promised more than the filesystem has: keeping it would help
 * only if the log reused exactly this segment, while the successor the
 * log already named (reserve) may be waiting for just this space. */
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
	struct segio_dev *d = to_dev(io);
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = FMT_BLOCK};
	int err;

	pthread_mutex_lock(&d->flush_lock);
	err = d->sync_err;
	if (!err) {
		err = blkdev_pwritev(d->dev, &iov, 1, (uint64_t)slot * FMT_BLOCK);
		/* Only the write's errno is mapped: a failed sync is never
		 * "full". */
		err = err ? space_errno(err) : flush_locked(d);
	}
	pthread_mutex_unlock(&d->flush_lock);
	return err;
}

static void dev_close(struct segio *io)
{
	struct segio_dev *d = to_dev(io);
	if (d->own)
		blkdev_close(d->dev);
	pthread_mutex_destroy(&d->flush_lock);
	free(d);
}

static const struct segio_ops dev_ops = {
    .read = dev_read,
    .read_nowait = dev_read_nowait,
    .view = dev_view,
    .open = dev_open,
    .reserve = dev_reserve,
    .append = dev_append,
    .rewrite = dev_rewrite,
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
	struct stat sb;

	if (!d)
		return NULL;
	d->io.ops = &dev_ops;
	d->io.nsegs = dev->size / FMT_SEG_BYTES;
	d->dev = dev;
	d->own = own;
	d->file = dev->fd >= 0 && fstat(dev->fd, &sb) == 0 && S_ISREG(sb.st_mode);
	pthread_mutex_init(&d->flush_lock, NULL);
	return &d->io;
}
