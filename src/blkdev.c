/* blkdev.c — the two I/O tables under the store: a file or block device
 * (pread/pwritev/fdatasync), and an in-memory device for tests that can
 * fail the Nth write or flush and forget unsynced writes at a simulated
 * power cut.  Lowest layer: includes nothing of cowbd's but say.h.
 * Thread-safety: the file device is stateless; the memory device takes its
 * own mutex on every call. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkdev.h"

/* ---- file / block device ---------------------------------------------- */

static int file_pread(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t n = pread(d->fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) /* past EOF of a file: reads as zeroes */
		{
			memset(p, 0, len);
			return 0;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int file_pread_nowait(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	ssize_t n;

	do
		n = preadv2(d->fd, &iov, 1, (off_t)off, RWF_NOWAIT);
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)len)
		return 0;
	if (n < 0 && errno != EAGAIN && errno != EOPNOTSUPP)
		return -errno;
	return -EAGAIN; /* not (all) cached, unsupported, or past EOF: take the slow path */
}

static int file_pwritev(struct blkdev *d, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct iovec part; /* the partly written head of a short write */

	while (iovcnt > 0) {
		int n_iov = iovcnt > IOV_MAX ? IOV_MAX : iovcnt;
		ssize_t n = pwritev(d->fd, iov, n_iov, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		off += (uint64_t)n;
		/* Skip the vectors that went out whole ... */
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		/* ... and write the rest of a partly written one on its own. */
		if (n > 0) {
			part.iov_base = (char *)iov->iov_base + n;
			part.iov_len = iov->iov_len - (size_t)n;
			int r = file_pwritev(d, &part, 1, off);
			if (r < 0)
				return r;
			off += part.iov_len;
			iov++;
			iovcnt--;
		}
	}
	return 0;
}

static int file_flush(struct blkdev *d)
{
	return fdatasync(d->fd) ? -errno : 0;
}

static int file_discard(struct blkdev *d, uint64_t off, uint64_t len)
{
	struct stat sb;
	if (fstat(d->fd, &sb) == 0 && S_ISREG(sb.st_mode))
		(void)fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		                (off_t)len);
	return 0;
}

static void file_writeback(struct blkdev *d, uint64_t off, uint64_t len)
{
	(void)sync_file_range(d->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
}

static void file_close(struct blkdev *d)
{
	close(d->fd);
	free(d);
}

static const struct blkdev_ops file_ops = {
    .pread = file_pread,
    .pread_nowait = file_pread_nowait,
    .pwritev = file_pwritev,
    .flush = file_flush,
    .discard = file_discard,
    .writeback = file_writeback,
    .close = file_close,
};

struct blkdev *blkdev_open_file(const char *path, uint64_t create_size)
{
	struct blkdev *d;
	struct stat sb;
	int fd, flags = O_RDWR | O_CLOEXEC;

	if (create_size)
		flags |= O_CREAT;
	fd = open(path, flags, 0600);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &sb) < 0)
		goto fail_fd;
	d = calloc(1, sizeof(*d));
	if (!d)
		goto fail_fd;
	d->ops = &file_ops;
	d->fd = fd;
	if (S_ISBLK(sb.st_mode)) {
		uint64_t sz;
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
			goto fail_d;
		d->size = sz;
	} else if (S_ISREG(sb.st_mode)) {
		if (sb.st_size == 0 && create_size) {
			if (ftruncate(fd, (off_t)create_size) < 0)
				goto fail_d;
			sb.st_size = (off_t)create_size;
		}
		d->size = (uint64_t)sb.st_size;
	} else {
		errno = EINVAL;
		goto fail_d;
	}
	return d;

fail_d:
	free(d);
fail_fd : {
	int e = errno;
	close(fd);
	errno = e;
}
	return NULL;
}

static int range_is_zero(struct blkdev *d, uint64_t off, uint64_t len, char *buf, size_t bufsz)
{
	while (len) {
		size_t n = len < bufsz ? (size_t)len : bufsz;
		int err = blkdev_pread(d, buf, n, off);
		if (err)
			return err;
		for (size_t i = 0; i < n; i++)
			if (buf[i])
				return 0;
		off += n;
		len -= n;
	}
	return 1;
}

int blkdev_is_blank(struct blkdev *d)
{
	const uint64_t edge = 4u << 20;
	size_t bufsz = 1u << 20;
	char *buf = malloc(bufsz);
	struct stat sb;
	int ret = 1;

	if (!buf)
		return -ENOMEM;
	if (d->fd >= 0 && fstat(d->fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
		off_t at = 0;
		while (ret == 1 && (uint64_t)at < d->size) {
			off_t data = lseek(d->fd, at, SEEK_DATA);
			if (data < 0) {
				if (errno != ENXIO)
					ret = -errno;
				break; /* ENXIO: no data after at */
			}
			off_t hole = lseek(d->fd, data, SEEK_HOLE);
			if (hole < 0) {
				ret = -errno;
				break;
			}
			ret = range_is_zero(d, (uint64_t)data, (uint64_t)(hole - data), buf, bufsz);
			at = hole;
		}
	} else {
		uint64_t head = d->size < edge ? d->size : edge;
		ret = range_is_zero(d, 0, head, buf, bufsz);
		if (ret == 1 && d->size > head) {
			uint64_t tail = d->size - head < edge ? d->size - head : edge;
			ret = range_is_zero(d, d->size - tail, tail, buf, bufsz);
		}
	}
	free(buf);
	return ret;
}

/* ---- in-memory device for tests --------------------------------------- */

struct memdev {
	struct blkdev dev;
	pthread_mutex_t lock;
	unsigned char *cur;          /* what reads see */
	unsigned char *durable;      /* what survives a crash */
	unsigned char *dirty;        /* 1 byte per 4 KiB page written since last flush */
	uint64_t last_off, last_len; /* the most recent write, for torn crashes */
	unsigned fail_write, fail_flush, nwrites, nflushes;
};

#define MEM_PAGE 4096u

static struct memdev *to_mem(struct blkdev *d)
{
	return (struct memdev *)d;
}

static int mem_pread(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	struct memdev *m = to_mem(d);
	if (off > d->size || len > d->size - off)
		return -EIO;
	pthread_mutex_lock(&m->lock);
	memcpy(buf, m->cur + off, len);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int mem_pwritev(struct blkdev *d, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct memdev *m = to_mem(d);
	uint64_t start = off;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	m->nwrites++;
	if (m->fail_write && --m->fail_write == 0) {
		ret = -EIO;
		goto out;
	}
	for (int i = 0; i < iovcnt; i++) {
		if (off > d->size || iov[i].iov_len > d->size - off) {
			ret = -EIO;
			goto out;
		}
		memcpy(m->cur + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	for (uint64_t p = start / MEM_PAGE; p * MEM_PAGE < off; p++)
		m->dirty[p] = 1;
	m->last_off = start;
	m->last_len = off - start;
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int mem_flush(struct blkdev *d)
{
	struct memdev *m = to_mem(d);
	uint64_t npages = d->size / MEM_PAGE;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	m->nflushes++;
	if (m->fail_flush && --m->fail_flush == 0) {
		ret = -EIO;
		goto out;
	}
	for (uint64_t p = 0; p < npages; p++)
		if (m->dirty[p]) {
			memcpy(m->durable + p * MEM_PAGE, m->cur + p * MEM_PAGE, MEM_PAGE);
			m->dirty[p] = 0;
		}
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int mem_discard(struct blkdev *d, uint64_t off, uint64_t len)
{
	return 0;
}

static void mem_close(struct blkdev *d)
{
	struct memdev *m = to_mem(d);
	pthread_mutex_destroy(&m->lock);
	free(m->cur);
	free(m->durable);
	free(m->dirty);
	free(m);
}

static const struct blkdev_ops mem_ops = {
    .pread = mem_pread,
    .pread_nowait = mem_pread,
    .pwritev = mem_pwritev,
    .flush = mem_flush,
    .discard = mem_discard,
    .close = mem_close,
};

struct blkdev *blkdev_mem_new(uint64_t size)
{
	struct memdev *m = calloc(1, sizeof(*m));
	size = size / MEM_PAGE * MEM_PAGE;
	if (!m)
		return NULL;
	m->cur = calloc(1, size);
	m->durable = calloc(1, size);
	m->dirty = calloc(1, size / MEM_PAGE);
	if (!m->cur || !m->durable || !m->dirty) {
		free(m->cur);
		free(m->durable);
		free(m->dirty);
		free(m);
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&m->lock, NULL);
	m->dev.ops = &mem_ops;
	m->dev.size = size;
	m->dev.fd = -1;
	return &m->dev;
}

void blkdev_mem_fail_write(struct blkdev *d, unsigned nth)
{
	struct memdev *m = to_mem(d);
	pthread_mutex_lock(&m->lock);
	m->fail_write = nth;
	pthread_mutex_unlock(&m->lock);
}

void blkdev_mem_fail_flush(struct blkdev *d, unsigned nth)
{
	struct memdev *m = to_mem(d);
	pthread_mutex_lock(&m->lock);
	m->fail_flush = nth;
	pthread_mutex_unlock(&m->lock);
}

void blkdev_mem_crash(struct blkdev *d, bool torn)
{
	struct memdev *m = to_mem(d);
	uint64_t npages = d->size / MEM_PAGE;

	pthread_mutex_lock(&m->lock);
	/* A torn crash keeps the first half of the last write, if unsynced. */
	uint64_t keep_lo = 0, keep_hi = 0;
	if (torn && m->last_len && m->dirty[m->last_off / MEM_PAGE]) {
		keep_lo = m->last_off / MEM_PAGE;
		keep_hi = (m->last_off + m->last_len / 2) / MEM_PAGE;
	}
	for (uint64_t p = 0; p < npages; p++) {
		if (!m->dirty[p])
			continue;
		if (p >= keep_lo && p < keep_hi)
			memcpy(m->durable + p * MEM_PAGE, m->cur + p * MEM_PAGE, MEM_PAGE);
		else
			memcpy(m->cur + p * MEM_PAGE, m->durable + p * MEM_PAGE, MEM_PAGE);
		m->dirty[p] = 0;
	}
	m->fail_write = m->fail_flush = 0;
	pthread_mutex_unlock(&m->lock);
}

unsigned blkdev_mem_writes(struct blkdev *d)
{
	return to_mem(d)->nwrites;
}

unsigned blkdev_mem_flushes(struct blkdev *d)
{
	return to_mem(d)->nflushes;
}
