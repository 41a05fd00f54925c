/* faultdev.c — the fault-injecting test device (see faultdev.h): power
 * cuts after a budget of writes + flushes, call counting, a one-off failed
 * write, slow writes, held
 * flushes, a write-forbidden mode and patched blocks over a lower device. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultdev.h"
#include "format.h"

static struct faultdev *to_fault(struct blkdev *d)
{
	return (struct faultdev *)d;
}

/* One write or flush reaches the device: is the power still on? */
static bool alive(struct faultdev *f)
{
	f->calls++;
	if (f->budget >= 0 && f->budget-- == 0)
		f->dead = 1;
	return !f->dead && !atomic_exchange(&f->fail_next, 0);
}

static void forbidden(const char *what)
{
	fprintf(stderr, "faultdev: a %s on a device that must not be written\n", what);
	abort();
}

static int f_pread(struct blkdev *d, void *buf, size_t len, uint64_t off)
{
	struct faultdev *f = to_fault(d);
	int err = blkdev_pread(f->mem, buf, len, off);

	for (unsigned i = 0; i < f->npatch && !err; i++) {
		uint64_t bo = f->patch_addr[i] * FMT_BLOCK;

		if (bo + FMT_BLOCK <= off || bo >= off + len)
			continue;
		uint64_t from = bo > off ? bo : off;
		uint64_t to = bo + FMT_BLOCK < off + len ? bo + FMT_BLOCK : off + len;
		memcpy((uint8_t *)buf + (from - off), f->patch_blk[i] + (from - bo), to - from);
	}
	return err;
}

static int f_pwritev(struct blkdev *d, const struct iovec *iov, int n, uint64_t off)
{
	struct faultdev *f = to_fault(d);

	if (f->no_writes)
		forbidden("write");
	if (f->write_delay_us)
		usleep(f->write_delay_us);
	return alive(f) ? blkdev_pwritev(f->mem, iov, n, off) : -EIO;
}

/* Wait while *flag is set, counted in flushes_held. */
static void hold(struct faultdev *f, _Atomic int *flag)
{
	if (*flag) {
		f->flushes_held++;
		while (*flag)
			usleep(200);
		f->flushes_held--;
	}
}

static int f_flush(struct blkdev *d)
{
	struct faultdev *f = to_fault(d);

	hold(f, &f->hold_flush);
	int fail = atomic_exchange(&f->fail_flush, 0);
	int err = !alive(f) ? -EIO : fail ? fail : blkdev_flush(f->mem);
	hold(f, err ? &f->hold_failed_flush : &f->hold_done_flush);
	return err;
}

static int f_discard(struct blkdev *d, uint64_t off, uint64_t len)
{
	if (to_fault(d)->no_writes)
		forbidden("discard");
	return 0;
}

static void f_close(struct blkdev *d)
{
	/* the test keeps the device: faultdev_free */
}

static const struct blkdev_ops fault_ops = {
    .pread = f_pread,
    .pread_nowait = f_pread,
    .pwritev = f_pwritev,
    .flush = f_flush,
    .discard = f_discard,
    .close = f_close,
};

struct faultdev *faultdev_over(struct blkdev *lower)
{
	struct faultdev *f = calloc(1, sizeof(*f));

	if (!f || !lower) {
		fprintf(stderr, "faultdev: out of memory\n");
		abort();
	}
	f->mem = lower;
	f->dev.ops = &fault_ops;
	f->dev.size = lower->size;
	f->dev.fd = -1;
	f->budget = -1;
	return f;
}

struct faultdev *faultdev_new(uint64_t size)
{
	struct faultdev *f = faultdev_over(blkdev_mem_new(size));

	f->own_mem = true;
	return f;
}

void faultdev_free(struct faultdev *f)
{
	if (!f)
		return;
	for (unsigned i = 0; i < f->npatch; i++)
		free(f->patch_blk[i]);
	if (f->own_mem)
		blkdev_close(f->mem);
	free(f);
}

void faultdev_power_off(struct faultdev *f)
{
	f->dead = 1;
}

void faultdev_power_on(struct faultdev *f, bool torn)
{
	blkdev_mem_crash(f->mem, torn);
	f->budget = -1;
	f->dead = 0;
}

void faultdev_power_on_mixed(struct faultdev *f, uint64_t seed)
{
	blkdev_mem_crash_mixed(f->mem, seed);
	f->budget = -1;
	f->dead = 0;
}

void faultdev_power_on_rotate(struct faultdev *f, long n)
{
	if (n % 3 == 2)
		faultdev_power_on_mixed(f, (uint64_t)n);
	else
		faultdev_power_on(f, n % 3 == 1);
}

uint8_t *faultdev_patched(struct faultdev *f, uint64_t blk)
{
	for (unsigned i = 0; i < f->npatch; i++)
		if (f->patch_addr[i] == blk)
			return f->patch_blk[i];
	return NULL;
}

uint8_t *faultdev_patch(struct faultdev *f, uint64_t blk)
{
	uint8_t *b = faultdev_patched(f, blk);

	if (b || f->npatch == FAULTDEV_MAX_PATCH)
		return b;
	b = malloc(FMT_BLOCK);
	if (!b || blkdev_pread(f->mem, b, FMT_BLOCK, blk * FMT_BLOCK)) {
		fprintf(stderr, "faultdev: cannot copy block %llu\n", (unsigned long long)blk);
		abort();
	}
	f->patch_addr[f->npatch] = blk;
	f->patch_blk[f->npatch++] = b;
	return b;
}
