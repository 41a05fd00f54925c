/* test_segio.c — the segment I/O over a pool device (segio_dev.c) and
 * what it promises when the filesystem under a pool file fills: entering
 * a segment (open) and naming a successor (reserve) allocate the
 * segment's space, so appends there succeed however full the filesystem
 * is afterwards; a filesystem that cannot give the space answers -ENOSPC
 * at open of an empty segment or reserve, never at a continued one; an
 * append into unreserved space on a full filesystem returns -ENOSPC, not
 * -EIO; a discard gives a free segment's space back, so that a
 * refused reservation can then succeed.  A memory device needs none of
 * it.  The filesystem cases run on a small tmpfs the test mounts
 * (skipped when it cannot: not root, no tmpfs).
 */
#undef NDEBUG
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "segio.h"

#define SEG   FMT_SEG_BYTES
#define NSEGS 16

static char fsdir[64];
static bool mounted;
static uint8_t block[FMT_BLOCK] __attribute__((aligned(4096)));

static int fs_setup(void **state)
{
	strcpy(fsdir, "/tmp/test_segio.XXXXXX");
	if (!mkdtemp(fsdir))
		return -1;
	mounted = mount("tmpfs", fsdir, "tmpfs", 0,
	                "size=10m,mode=0700" /* two segments fit, a third does not */) == 0;
	if (!mounted)
		fprintf(stderr, "test_segio: cannot mount a tmpfs (%s): filesystem cases skip\n",
		        strerror(errno));
	return 0;
}

static int fs_teardown(void **state)
{
	if (mounted)
		umount(fsdir);
	rmdir(fsdir);
	return 0;
}

static const char *in_fs(const char *name)
{
	static char path[128];
	snprintf(path, sizeof(path), "%s/%s", fsdir, name);
	return path;
}

/* A sparse pool file of nsegs segments on the small filesystem. */
static struct segio *pool_file(const char *name, uint64_t nsegs)
{
	struct blkdev *dev = blkdev_create_file(in_fs(name), nsegs * SEG);
	struct segio *io;

	assert_non_null(dev);
	io = segio_dev_new(dev, true);
	assert_non_null(io);
	assert_int_equal(io->nsegs, nsegs);
	return io;
}

static void pool_drop(struct segio *io, const char *name)
{
	segio_close(io);
	unlink(in_fs(name));
}

/* Bytes of the filesystem a file of it holds. */
static uint64_t file_bytes(const char *name)
{
	struct stat sb;
	assert_int_equal(stat(in_fs(name), &sb), 0);
	return (uint64_t)sb.st_blocks * 512;
}

static int append_block(struct segio *io, uint64_t seg, uint64_t off, int fill)
{
	struct iovec iov = {.iov_base = block, .iov_len = FMT_BLOCK};
	memset(block, fill, sizeof(block));
	return segio_append(io, seg, off, &iov, 1);
}

/* Fill what is left of the filesystem with another file. */
static void fill_fs(void)
{
	int fd = open(in_fs("filler"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	memset(block, 'f', sizeof(block));
	while (write(fd, block, sizeof(block)) > 0)
		;
	close(fd);
}

static void unfill_fs(void)
{
	unlink(in_fs("filler"));
}

/* The memory device is no file: nothing to reserve, nothing refused. */
static void test_memdev(void **state)
{
	struct segio *io = segio_dev_new(blkdev_mem_new((uint64_t)NSEGS * SEG), true);
	uint8_t back[FMT_BLOCK];

	assert_non_null(io);
	assert_int_equal(segio_open(io, 3, 0), 0);
	assert_int_equal(segio_reserve(io, 4), 0);
	assert_int_equal(append_block(io, 3, FMT_BLOCK, 'm'), 0);
	assert_int_equal(segio_read(io, back, FMT_BLOCK, 3 * SEG + FMT_BLOCK), 0);
	assert_memory_equal(back, block, FMT_BLOCK);
	assert_int_equal(segio_discard(io, 5), 0);
	segio_close(io);
}

/* Reserved space is there: once a segment is entered, appending its
 * every block succeeds on a filesystem that has nothing left. */
static void test_reserve_then_full(void **state)
{
	if (!mounted)
		skip();
	struct segio *io = pool_file("p1", NSEGS);

	assert_true(file_bytes("p1") < SEG);
	assert_int_equal(segio_open(io, 1, 0), 0);
	assert_true(file_bytes("p1") >= SEG); /* the whole segment, before any append */
	fill_fs();
	for (uint64_t off = 0; off < SEG; off += FMT_BLOCK)
		assert_int_equal(append_block(io, 1, off, 'a'), 0);
	assert_int_equal(segio_sync(io), 0);
	/* a segment whose space was reserved opens again without new space */
	assert_int_equal(segio_reserve(io, 1), 0);
	assert_int_equal(segio_open(io, 1, 0), 0);
	unfill_fs();
	pool_drop(io, "p1");
}

/* A filesystem that cannot give a segment's space: reserve and entering
 * an empty segment say -ENOSPC; a continued segment still opens (a pool
 * must open to be read out); an append into unreserved space is -ENOSPC,
 * never -EIO; once space is freed, reserve succeeds. */
static void test_enospc(void **state)
{
	if (!mounted)
		skip();
	struct segio *io = pool_file("p2", NSEGS);

	assert_int_equal(segio_open(io, 1, 0), 0);
	fill_fs();
	assert_int_equal(segio_reserve(io, 2), -ENOSPC);
	assert_int_equal(segio_open(io, 2, 0), -ENOSPC);
	assert_int_equal(segio_open(io, 3, 100 * FMT_BLOCK), 0);
	assert_int_equal(append_block(io, 3, 100 * FMT_BLOCK, 'x'), -ENOSPC);
	/* the refused reservations took nothing the segment 1 appends need */
	assert_int_equal(append_block(io, 1, 0, 'a'), 0);
	unfill_fs();
	assert_int_equal(segio_reserve(io, 2), 0);
	assert_int_equal(segio_open(io, 2, 0), 0);
	assert_int_equal(append_block(io, 2, 0, 'b'), 0);
	pool_drop(io, "p2");
}

/* Discard gives a free segment's space back to the filesystem, even on an
 * overcommitted one: there it is what lets a successor the log already
 * named get its space. */
static void test_discard(void **state)
{
	if (!mounted)
		skip();
	struct segio *io = pool_file("p3", NSEGS);
	uint64_t before;

	assert_int_equal(segio_open(io, 1, 0), 0);
	assert_int_equal(segio_reserve(io, 3), 0); /* a segment that becomes free later */
	fill_fs();
	assert_int_equal(segio_reserve(io, 2), -ENOSPC);
	before = file_bytes("p3");
	assert_int_equal(segio_discard(io, 3), 0);
	assert_true(file_bytes("p3") <= before - SEG);
	assert_int_equal(segio_reserve(io, 2), 0);
	assert_int_equal(append_block(io, 2, 0, 'b'), 0);
	unfill_fs();
	pool_drop(io, "p3");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_memdev),
	    cmocka_unit_test(test_reserve_then_full),
	    cmocka_unit_test(test_enospc),
	    cmocka_unit_test(test_discard),
	};
	return cmocka_run_group_tests(tests, fs_setup, fs_teardown);
}
