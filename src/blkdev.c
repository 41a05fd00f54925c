/* blkdev.c — the two I/O tables under the store: a file or block device
 * (pread/pwritev/fdatasync), and an in-memory device for tests that can
 * fail the Nth write or flush and forget unsynced writes at a simulated
 * power cut.  It also owns who may open a pool: the OFD lock taken at
 * open (plus O_EXCL on a block device) and the advisory owner record in
 * block 2 that names the holder to a refused opener.  Lowest layer:
 * includes nothing of cowbd's but crc32c.h.
 * Thread-safety: the file device keeps only its read-only mapping (made
 * once under map_lock, published with a release store); the memory device
 * takes its own mutex on every call.  The memory device's power cuts: all
 * unsynced writes lost (optionally the last one half kept), or any mix of
 * unsynced page images (see its section). */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blkdev.h"
#include "crc32c.h"

/* ---- file / block device ---------------------------------------------- */

/* A file or block device: its fd (in dev) and, after the first view, a
 * read-only shared mapping of its first map_len bytes. */
struct filedev {
	struct blkdev dev;
	pthread_mutex_t map_lock;
	const uint8_t *map; /* NULL: not mapped (yet); map_failed: never */
	uint64_t map_len;
	bool map_failed;
};

static struct filedev *to_file(struct blkdev *d)
{
	return (struct filedev *)d;
}

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

/* Views.  A fault reading a view's byte inside blkdev_view_guard jumps back to
 * the guard (SA_NODEFER: the signal stays unblocked, so sigsetjmp need
 * not save the mask); any other SIGBUS goes where it went before. */
static __thread sigjmp_buf *view_jmp;
static struct sigaction bus_before;
static pthread_once_t bus_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *j = view_jmp;

	if (j) {
		view_jmp = NULL;
		siglongjmp(*j, 1);
	}
	if ((bus_before.sa_flags & SA_SIGINFO) && bus_before.sa_sigaction) {
		bus_before.sa_sigaction(sig, si, uc);
	} else if (bus_before.sa_handler != SIG_DFL && bus_before.sa_handler != SIG_IGN) {
		bus_before.sa_handler(sig);
	} else {
		/* Returning re-runs the faulting access: the default action. */
		signal(SIGBUS, SIG_DFL);
	}
}

static void bus_install(void)
{
	struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_NODEFER};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &bus_before);
}

int blkdev_view_guard(int (*fn)(void *arg), void *arg)
{
	sigjmp_buf j;
	sigjmp_buf *volatile outer = view_jmp; /* guards nest */
	int r;

	pthread_once(&bus_once, bus_install);
	if (sigsetjmp(j, 0)) {
		view_jmp = outer;
		return -EIO;
	}
	view_jmp = &j;
	r = fn(arg);
	view_jmp = outer;
	return r;
}

/* The mapping, made at the first call; NULL if it cannot be. */
static const uint8_t *file_map(struct filedev *f)
{
	const uint8_t *m = __atomic_load_n(&f->map, __ATOMIC_ACQUIRE);

	if (m || __atomic_load_n(&f->map_failed, __ATOMIC_RELAXED))
		return m;
	pthread_once(&bus_once, bus_install);
	pthread_mutex_lock(&f->map_lock);
	if (!f->map && !f->map_failed) {
		void *p = f->dev.size ? mmap(NULL, f->dev.size, PROT_READ, MAP_SHARED, f->dev.fd, 0)
		                      : MAP_FAILED;
		if (p == MAP_FAILED) {
			__atomic_store_n(&f->map_failed, true, __ATOMIC_RELAXED);
		} else {
			f->map_len = f->dev.size;
			__atomic_store_n(&f->map, (const uint8_t *)p, __ATOMIC_RELEASE);
		}
	}
	m = f->map;
	pthread_mutex_unlock(&f->map_lock);
	return m;
}

/* Pages a view may span and still be checked with the stack's vector. */
#define VIEW_MAX_PAGES 1024u

static const void *file_view(struct blkdev *d, uint64_t off, size_t len)
{
	struct filedev *f = to_file(d);
	const uint8_t *m = file_map(f);
	uint64_t psz = (uint64_t)sysconf(_SC_PAGESIZE);
	unsigned char vec[VIEW_MAX_PAGES];

	if (!m || !len || off > f->map_len || len > f->map_len - off)
		return NULL;
	uint64_t lo = off / psz * psz;
	uint64_t pages = (off + len - lo + psz - 1) / psz;
	if (pages > VIEW_MAX_PAGES || mincore((void *)(m + lo), off + len - lo, vec))
		return NULL;
	for (uint64_t i = 0; i < pages; i++)
		if (!(vec[i] & 1))
			return NULL; /* touching it would wait for the disk */
	return m + off;
}

static void file_close(struct blkdev *d)
{
	struct filedev *f = to_file(d);

	if (f->map)
		munmap((void *)f->map, f->map_len);
	pthread_mutex_destroy(&f->map_lock);
	close(d->fd);
	free(f);
}

static const struct blkdev_ops file_ops = {
    .pread = file_pread,
    .pread_nowait = file_pread_nowait,
    .pwritev = file_pwritev,
    .flush = file_flush,
    .discard = file_discard,
    .writeback = file_writeback,
    .view = file_view,
    .close = file_close,
};

/* Take the OFD lock on fd: exclusive for an owner, shared for a reader.
 * 0, -EBUSY when someone holds a conflicting one, or -errno. */
static int file_lock(int fd, enum blkdev_mode mode)
{
	struct flock fl = {.l_type = mode == BLKDEV_OWNER ? F_WRLCK : F_RDLCK,
	                   .l_whence = SEEK_SET};

	if (mode == BLKDEV_PEEK)
		return 0;
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	return errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
}

/* Wrap an open fd (locked as mode wants) in a device.  NULL + errno; the
 * fd is closed on failure. */
static struct blkdev *file_wrap(int fd, enum blkdev_mode mode)
{
	struct filedev *f = NULL;
	struct blkdev *d = NULL;
	struct stat sb;
	int err = file_lock(fd, mode);

	if (err) {
		errno = -err;
		goto fail_fd;
	}
	if (fstat(fd, &sb) < 0)
		goto fail_fd;
	f = calloc(1, sizeof(*f));
	if (!f)
		goto fail_fd;
	pthread_mutex_init(&f->map_lock, NULL);
	d = &f->dev;
	d->ops = &file_ops;
	d->fd = fd;
	if (S_ISBLK(sb.st_mode)) {
		uint64_t sz;
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
			goto fail_fd;
		d->size = sz;
	} else if (S_ISREG(sb.st_mode)) {
		d->size = (uint64_t)sb.st_size;
	} else {
		errno = EINVAL;
		goto fail_fd;
	}
	return d;

fail_fd:
	err = errno;
	if (f)
		pthread_mutex_destroy(&f->map_lock);
	free(f);
	close(fd);
	errno = err;
	return NULL;
}

struct blkdev *blkdev_open(const char *path, enum blkdev_mode mode)
{
	int flags = (mode == BLKDEV_OWNER ? O_RDWR : O_RDONLY) | O_CLOEXEC;
	struct stat sb;
	int fd;

	/* O_EXCL without O_CREAT means "exclusive open" for a block device
	 * only; on a regular file it is undefined, so ask first. */
	if (mode == BLKDEV_OWNER && stat(path, &sb) == 0 && S_ISBLK(sb.st_mode))
		flags |= O_EXCL;
	fd = open(path, flags);
	if (fd < 0)
		return NULL;
	return file_wrap(fd, mode);
}

/* fsync the directory holding path, so that a file just made there stays. */
static int dir_sync(const char *path)
{
	char *copy = strdup(path);
	int fd, err = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}

struct blkdev *blkdev_create_file(const char *path, uint64_t size)
{
	struct blkdev *d;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int err;

	if (fd < 0)
		return NULL;
	d = file_wrap(fd, BLKDEV_OWNER);
	if (!d)
		goto fail_unlink;
	if ((err = blkdev_set_size(d, size)) || (err = dir_sync(path))) {
		blkdev_close(d);
		errno = -err;
		goto fail_unlink;
	}
	return d;

fail_unlink:
	err = errno;
	unlink(path); /* ours: O_EXCL made it */
	errno = err;
	return NULL;
}

struct blkdev *blkdev_open_file(const char *path, uint64_t create_size)
{
	struct blkdev *d = blkdev_open(path, BLKDEV_OWNER);
	int err;

	if (!d && errno == ENOENT && create_size)
		return blkdev_create_file(path, create_size);
	if (d && d->size == 0 && create_size && (err = blkdev_set_size(d, create_size))) {
		blkdev_close(d);
		errno = -err;
		return NULL;
	}
	return d;
}

int blkdev_set_size(struct blkdev *d, uint64_t size)
{
	if (d->fd < 0 || blkdev_is_device(d) || size > INT64_MAX)
		return -EINVAL;
	if (ftruncate(d->fd, (off_t)size) < 0)
		return -errno;
	d->size = size;
	return 0;
}

bool blkdev_is_device(struct blkdev *d)
{
	struct stat sb;

	return d->fd >= 0 && fstat(d->fd, &sb) == 0 && S_ISBLK(sb.st_mode);
}

/* ---- the owner record (block 2) --------------------------------------- */

#define OWNER_MAGIC "COWBDOWN"

/* Block 2 on disk (docs/FORMAT.md); little-endian like the rest. */
struct owner_rec {
	char magic[8];
	uint32_t crc; /* CRC32C of the block with this field zero */
	uint32_t version;
	uint64_t self; /* 2 */
	uint32_t pid;
	uint32_t pad;
	uint64_t started;
	uint8_t boot_id[16];
	char prog[16];
	char host[BLKDEV_HOST_MAX];
	uint8_t zero[4096 - 136];
};
static_assert(sizeof(struct owner_rec) == 4096, "owner record is one block");

static uint32_t owner_crc(struct owner_rec *r)
{
	uint32_t saved = r->crc, c;

	r->crc = 0;
	c = crc32c(0, r, sizeof(*r));
	r->crc = saved;
	return c;
}

/* The kernel's boot id (a random UUID per boot), or zeroes. */
static void boot_id_read(uint8_t id[16])
{
	char txt[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	unsigned n = 0;

	memset(id, 0, 16);
	if (!f)
		return;
	if (fgets(txt, sizeof(txt), f))
		for (const char *p = txt; *p && n < 32; p++) {
			unsigned v;
			if (sscanf(p, "%1x", &v) != 1)
				continue;
			id[n / 2] = (uint8_t)(id[n / 2] << 4 | v);
			n++;
		}
	fclose(f);
}

int blkdev_owner_write(struct blkdev *d, const char *prog, uint64_t started)
{
	struct owner_rec *r = calloc(1, sizeof(*r));
	struct iovec iov = {.iov_base = r, .iov_len = sizeof(*r)};
	int err;

	if (!r)
		return -ENOMEM;
	memcpy(r->magic, OWNER_MAGIC, 8);
	r->version = htole32(1);
	r->self = htole64(BLKDEV_OWNER_ADDR / 4096);
	r->pid = htole32((uint32_t)getpid());
	r->started = htole64(started);
	boot_id_read(r->boot_id);
	snprintf(r->prog, sizeof(r->prog), "%s", prog);
	if (gethostname(r->host, sizeof(r->host) - 1) < 0)
		snprintf(r->host, sizeof(r->host), "?");
	r->crc = htole32(owner_crc(r));
	err = blkdev_pwritev(d, &iov, 1, BLKDEV_OWNER_ADDR);
	if (!err)
		err = blkdev_flush(d);
	free(r);
	return err;
}

int blkdev_owner_read(struct blkdev *d, struct blkdev_owner *o)
{
	struct owner_rec *r = malloc(sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	err = BLKDEV_OWNER_ADDR + sizeof(*r) > d->size
	          ? -ENOENT
	          : blkdev_pread(d, r, sizeof(*r), BLKDEV_OWNER_ADDR);
	if (!err && (memcmp(r->magic, OWNER_MAGIC, 8) || le32toh(r->crc) != owner_crc(r) ||
	             le64toh(r->self) != BLKDEV_OWNER_ADDR / 4096))
		err = -ENOENT;
	if (!err) {
		*o = (struct blkdev_owner){.pid = le32toh(r->pid), .started = le64toh(r->started)};
		memcpy(o->boot_id, r->boot_id, sizeof(o->boot_id));
		/* Bytes from disk: bounded copies, always terminated. */
		snprintf(o->prog, sizeof(o->prog), "%.*s", (int)sizeof(r->prog), r->prog);
		snprintf(o->host, sizeof(o->host), "%.*s", (int)sizeof(r->host), r->host);
	}
	free(r);
	return err;
}

/* Who holds the lock on fd that an owner would need: F_UNLCK (nobody),
 * F_RDLCK (readers), F_WRLCK (an owner), or -1 when it cannot be asked. */
static int lock_holder(int fd)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};

	return fcntl(fd, F_OFD_GETLK, &fl) < 0 ? -1 : fl.l_type;
}

void blkdev_holder(const char *path, char *buf, size_t len)
{
	struct blkdev *d = blkdev_open(path, BLKDEV_PEEK);
	struct blkdev_owner o;
	char when[32] = "?";
	int held;

	if (!d) {
		snprintf(buf, len, "pool %s is in use (cannot look at it: %s)", path,
		         strerror(errno));
		return;
	}
	held = lock_holder(d->fd);
	if (held == F_RDLCK) {
		snprintf(buf, len, "pool %s is in use by a read-only check (cowbd-check)", path);
	} else if (held == F_WRLCK && blkdev_owner_read(d, &o) == 0) {
		time_t t = (time_t)o.started;
		struct tm tm;
		if (localtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(buf, len, "pool %s is in use by %s pid %u on host %s since %s", path,
		         o.prog, o.pid, o.host, when);
	} else if (held == F_WRLCK) {
		snprintf(buf, len, "pool %s is in use by another cowbd (no owner record names it)",
		         path);
	} else if (blkdev_is_device(d)) {
		snprintf(buf, len,
		         "pool %s is in use by another program (the kernel refuses an exclusive "
		         "open: mounted, or held by another tool)",
		         path);
	} else {
		snprintf(buf, len,
		         "pool %s is in use by another process (which has just let go: "
		         "try again)",
		         path);
	}
	blkdev_close(d);
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

/* The device models a volatile write cache.  durable is what the last
 * successful flush made stable; a page written since (dirty) may come back
 * after a power cut as its durable image or as any image a write since
 * gave it, whole (a 4 KiB page never mixes two writes here).  cur holds the
 * newest image; a page written again before the flush keeps its earlier
 * images in vers[page], oldest first, so that a mixed crash can pick one.
 * Rewrites of a page between flushes are rare (a log summary block), so
 * vers is a sparse table of NULLs and each page keeps at most
 * MEM_MAX_VERS: over that, the oldest one after the first goes (the
 * first and the newest ones are the likeliest to matter — what the page
 * held just after the flush and just before the cut).  Everything under
 * lock; a flush or crash frees every version. */
#define MEM_PAGE     4096u
#define MEM_MAX_VERS 8u

struct memvers {
	unsigned n;
	unsigned char *img[MEM_MAX_VERS]; /* MEM_PAGE bytes each, oldest first */
};

struct memdev {
	struct blkdev dev;
	pthread_mutex_t lock;
	unsigned char *cur;          /* what reads see */
	unsigned char *durable;      /* what survives a crash */
	unsigned char *dirty;        /* 1 byte per 4 KiB page written since last flush */
	struct memvers **vers;       /* per page: earlier unsynced images, or NULL */
	uint64_t last_off, last_len; /* the most recent write, for torn crashes */
	unsigned fail_write, fail_flush, nwrites, nflushes;
};

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

/* Keep page p's current image as an earlier version (it is about to be
 * overwritten and was already written since the flush).  -ENOMEM leaves
 * the page's versions as they were.  Caller holds m->lock. */
static int mem_keep_version_locked(struct memdev *m, uint64_t p)
{
	struct memvers *v = m->vers[p];
	unsigned char *img = malloc(MEM_PAGE);

	if (!img)
		return -ENOMEM;
	if (!v) {
		v = m->vers[p] = calloc(1, sizeof(*v));
		if (!v) {
			free(img);
			return -ENOMEM;
		}
	}
	memcpy(img, m->cur + p * MEM_PAGE, MEM_PAGE);
	if (v->n == MEM_MAX_VERS) {
		free(v->img[1]);
		memmove(&v->img[1], &v->img[2], (MEM_MAX_VERS - 2) * sizeof(v->img[0]));
		v->n--;
	}
	v->img[v->n++] = img;
	return 0;
}

/* Forget page p's earlier versions.  Caller holds m->lock. */
static void mem_drop_versions_locked(struct memdev *m, uint64_t p)
{
	struct memvers *v = m->vers[p];

	if (!v)
		return;
	for (unsigned i = 0; i < v->n; i++)
		free(v->img[i]);
	free(v);
	m->vers[p] = NULL;
}

static int mem_pwritev(struct blkdev *d, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct memdev *m = to_mem(d);
	uint64_t start = off, len = 0;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	m->nwrites++;
	if (m->fail_write && --m->fail_write == 0) {
		ret = -EIO;
		goto out;
	}
	/* Bounds first, so that a refused write changes nothing. */
	for (int i = 0; i < iovcnt; i++) {
		if (start > d->size || iov[i].iov_len > d->size - start - len) {
			ret = -EIO;
			goto out;
		}
		len += iov[i].iov_len;
	}
	m->last_off = start;
	m->last_len = len;
	if (!len)
		goto out;
	uint64_t first = start / MEM_PAGE, last = (start + len - 1) / MEM_PAGE;
	for (uint64_t p = first; p <= last; p++)
		if (m->dirty[p] && (ret = mem_keep_version_locked(m, p)))
			goto out;
	for (int i = 0; i < iovcnt; i++) {
		memcpy(m->cur + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	for (uint64_t p = first; p <= last; p++)
		m->dirty[p] = 1;
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
			mem_drop_versions_locked(m, p);
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
	uint64_t npages = d->size / MEM_PAGE;

	for (uint64_t p = 0; p < npages; p++)
		mem_drop_versions_locked(m, p);
	pthread_mutex_destroy(&m->lock);
	free(m->cur);
	free(m->durable);
	free(m->dirty);
	free(m->vers);
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
	m->vers = calloc(size / MEM_PAGE, sizeof(*m->vers));
	if (!m->cur || !m->durable || !m->dirty || !m->vers) {
		free(m->cur);
		free(m->durable);
		free(m->dirty);
		free(m->vers);
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

/* Page p after a crash is img: durable and cur both hold it, the page is
 * clean and has no versions.  Caller holds m->lock. */
static void mem_settle_locked(struct memdev *m, uint64_t p, const unsigned char *img)
{
	unsigned char *dur = m->durable + p * MEM_PAGE, *cur = m->cur + p * MEM_PAGE;

	if (img != dur)
		memcpy(dur, img, MEM_PAGE);
	if (img != cur)
		memcpy(cur, img, MEM_PAGE);
	mem_drop_versions_locked(m, p);
	m->dirty[p] = 0;
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
			mem_settle_locked(m, p, m->cur + p * MEM_PAGE);
		else
			mem_settle_locked(m, p, m->durable + p * MEM_PAGE);
	}
	m->fail_write = m->fail_flush = 0;
	pthread_mutex_unlock(&m->lock);
}

/* splitmix64 (Steele, Lea, Flood 2014): small, and every seed, 0 too,
 * gives a good stream; the crash is a function of the seed alone. */
static uint64_t mem_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void blkdev_mem_crash_mixed(struct blkdev *d, uint64_t seed)
{
	struct memdev *m = to_mem(d);
	uint64_t npages = d->size / MEM_PAGE, rng = seed;
	/* How much of the cache reached the media varies from cut to cut:
	 * with a page's newest image kept at 1/8 .. 7/8, some cuts lose a few
	 * pages of a long tail and some keep a few, which a fixed 1/2 would
	 * rarely do. */
	unsigned keep8 = 1 + (unsigned)(mem_rand(&rng) % 7);

	pthread_mutex_lock(&m->lock);
	for (uint64_t p = 0; p < npages; p++) {
		if (!m->dirty[p])
			continue;
		struct memvers *v = m->vers[p];
		unsigned nold = v ? v->n : 0;
		uint64_t r = mem_rand(&rng);
		const unsigned char *img;

		if (r % 8 < keep8) {
			img = m->cur + p * MEM_PAGE;
		} else {
			/* the durable image or one of the earlier ones, alike */
			unsigned k = (unsigned)((r >> 3) % (nold + 1));
			img = k == 0 ? m->durable + p * MEM_PAGE : v->img[k - 1];
		}
		mem_settle_locked(m, p, img);
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
