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
	/* A read-only view of [off, off+len): a pointer into a shared
	 * mapping of the device, or NULL when the range is not mapped or not
	 * all in memory (the caller reads instead: a view's pages were in
	 * the page cache when it was given, so reading them waits for the
	 * disk only if they are dropped in between).  May be NULL (no views).  See blkdev_view. */
	const void *(*view)(struct blkdev *d, uint64_t off, size_t len);
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
/* Views (file and block devices): the device is mapped read-only and
 * shared, once, at the first view, as large as it is then (a pool grown
 * later gets no views beyond that until it is opened again).  A view holds
 * what a pread of the range would return at the moment it is read, and
 * stays valid until blkdev_close; whoever takes one must make sure the
 * range is not rewritten meanwhile (the store: a block lives in place
 * until a checkpoint and a grace period after it dies).  Its bytes are in
 * the page cache when it is given, but may be dropped and read again, and
 * a device error or a file truncated under us then faults (SIGBUS): read
 * a view's bytes only inside blkdev_view_guard.  Passing a view to a
 * system call (send) is safe: a fault there is EFAULT. */
static inline const void *blkdev_view(struct blkdev *d, uint64_t off, size_t len)
{
	return d->ops->view ? d->ops->view(d, off, len) : NULL;
}

/* Run fn(arg) with view faults caught on this thread: fn's result, or
 * -EIO when a view's byte could not be read (fn was cut short: it must
 * take no lock and allocate nothing while it reads views).  Guards nest.
 * Installs the process's SIGBUS handler once, at the first view or guard
 * (a fault outside a guard goes to the handler there was before, or ends
 * the process as always); whoever sets another SIGBUS handler later
 * (nothing in cowbd does; cmocka does around each test) turns the guard
 * off until it puts this one back. */
int blkdev_view_guard(int (*fn)(void *arg), void *arg);

static inline void blkdev_close(struct blkdev *d)
{
	if (d)
		d->ops->close(d);
}

/* How a pool device is opened, and who may hold it meanwhile.  The lock is
 * an OFD lock (fcntl F_OFD_SETLK) on the file or device node, owned by the
 * open file description: it goes with our fd and with nothing else, and it
 * is the one thing that decides ownership among cowbd programs.  A block
 * device opened as owner is also opened O_EXCL (the kernel's exclusive
 * open), which keeps out mounts, mkfs and other exclusive openers. */
enum blkdev_mode {
	BLKDEV_OWNER,  /* read-write, exclusive lock: EBUSY while anyone holds one */
	BLKDEV_READER, /* read-only, shared lock: EBUSY while an owner holds it */
	BLKDEV_PEEK,   /* read-only, no lock: look at a pool someone else holds */
};

/* Open a regular file or block device in mode; the lock is taken before
 * anything is read.  Returns NULL with errno set: ENOENT (missing), EBUSY
 * (held: blkdev_holder says by whom), EINVAL (neither a file nor a block
 * device), or open's own errno. */
struct blkdev *blkdev_open(const char *path, enum blkdev_mode mode);

/* blkdev_open as owner; with create_size != 0, a missing file is made
 * (blkdev_create_file) and an empty one extended sparse to create_size.
 * For tests and tools that want a device of a size; the daemon decides
 * about sizes itself (main.c).  NULL with errno set. */
struct blkdev *blkdev_open_file(const char *path, uint64_t create_size);

/* Create a new sparse pool file of size bytes at path (O_EXCL: EEXIST if
 * something is there), opened as BLKDEV_OWNER, and fsync the directory it
 * lives in so that the file's existence is durable.  NULL with errno set. */
struct blkdev *blkdev_create_file(const char *path, uint64_t size);

/* Set a regular file's size (ftruncate: growing is sparse, shrinking
 * drops the tail); d->size follows.  0, -EINVAL for a block device or
 * memory, or -errno. */
int blkdev_set_size(struct blkdev *d, uint64_t size);

/* Is d a block device (as opposed to a regular file or memory)? */
bool blkdev_is_device(struct blkdev *d);

/* Does the device hold nothing?  1 yes, 0 no, negative errno when it
 * cannot tell.  A regular file is blank when every byte of it reads as
 * zero (holes are skipped with SEEK_DATA, so a sparse file costs nothing);
 * a block device when its first and last 4 MiB are zero — where partition
 * tables, file system, LVM and RAID signatures live — since reading a
 * whole device would take too long.  Used before formatting over it. */
int blkdev_is_blank(struct blkdev *d);

/* The owner record: who opened the pool as owner, kept in block 2 of the
 * pool (segment 0, beside the superblock slots; docs/FORMAT.md).  It is
 * advisory — ownership is the lock — and only names the holder in the
 * message a second opener prints. */
#define BLKDEV_OWNER_ADDR (2u * 4096u)
#define BLKDEV_HOST_MAX   64
struct blkdev_owner {
	char prog[16];              /* "cowbd" */
	char host[BLKDEV_HOST_MAX]; /* gethostname */
	uint32_t pid;
	uint64_t started;    /* unix seconds */
	uint8_t boot_id[16]; /* the host's kernel boot id: makes pid meaningful */
};

/* Write (and sync) the record for this process, as prog, started at
 * `started`.  Call only on a device known to hold a pool, opened as owner.
 * 0 or -errno. */
int blkdev_owner_write(struct blkdev *d, const char *prog, uint64_t started);

/* Read the record: 0, -ENOENT when block 2 holds no valid record (never
 * written, damaged, or not a pool), or -errno. */
int blkdev_owner_read(struct blkdev *d, struct blkdev_owner *o);

/* One line for a refusal or a warning: "pool PATH is in use by cowbd pid
 * 1234 on host h since 2026-12-01 04:50:00" — or by a read-only check, or
 * by another program (a block device's exclusive open refused with no
 * cowbd lock on it).  Opens path read-only without a lock; never fails
 * (what it cannot find out, it says). */
void blkdev_holder(const char *path, char *buf, size_t len);

/* In-memory device of size bytes for tests, a disk with a volatile write
 * cache.  It keeps a durable image (what the last successful flush made
 * stable) and the writes since separately, per 4 KiB page: the newest image
 * of each page written since the flush and, for a page written more than
 * once since, up to 8 of its earlier images (oldest first; past 8 the
 * second oldest goes).  A successful flush makes the newest images durable
 * and drops the earlier ones.  Memory: two copies of the device, plus a
 * page per rewrite of a page between flushes. */
struct blkdev *blkdev_mem_new(uint64_t size);
/* Fail the nth (1-based, counted from now) pwritev / flush with -EIO; 0 = never. */
void blkdev_mem_fail_write(struct blkdev *d, unsigned nth);
void blkdev_mem_fail_flush(struct blkdev *d, unsigned nth);
/* Simulated power cut: every write since the last successful flush is lost
 * (when torn is true, the last unsynced write keeps its first half).
 * Afterwards every page is durable (nothing pending) and no failure is
 * armed (blkdev_mem_fail_write/_flush reset). */
void blkdev_mem_crash(struct blkdev *d, bool torn);
/* Simulated power cut as a write cache may leave it: every page written
 * since the last successful flush independently becomes its durable image,
 * one of its earlier unsynced images, or its newest — whole, never a mix
 * within a page.  So any subset of the unsynced writes may survive, in any
 * order, and a page rewritten in place may go back to any version.  The
 * choice is a function of seed alone (its own PRNG; rand() is untouched):
 * the seed also sets how often a page keeps its newest image (1/8 to 7/8
 * of pages), the others pick evenly among the durable and earlier images.
 * Afterwards as blkdev_mem_crash.  O(device pages). */
void blkdev_mem_crash_mixed(struct blkdev *d, uint64_t seed);
/* Counters for tests. */
unsigned blkdev_mem_writes(struct blkdev *d);
unsigned blkdev_mem_flushes(struct blkdev *d);

#endif
