/* super.c — the two superblock slots: validation, picking the newest valid
 * one at open, and writing the next generation into the other slot (so a
 * torn superblock write always leaves the previous one intact).
 * Layer: under ckpt and store; over segio.  Locks: none (log thread, or
 * the single-threaded opener). */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "crc32c.h"
#include "store_int.h"

void super_init(struct fmt_super *sb, uint64_t nsegs)
{
	memset(sb, 0, sizeof(*sb));
	memcpy(sb->magic, FMT_SB_MAGIC, 8);
	sb->version = FMT_VERSION;
	sb->block_size = FMT_BLOCK;
	sb->seg_blocks = FMT_SEG_BLOCKS;
	sb->nsegs = nsegs;
	sb->created = (uint64_t)time(NULL);
	if (getrandom(sb->uuid, sizeof(sb->uuid), 0) < 0)
		memset(sb->uuid, 0x5a, sizeof(sb->uuid));
}

/* 0, -ENOENT (no magic), -EILSEQ (damaged), -EPROTONOSUPPORT (newer). */
static int super_valid(const struct fmt_super *sb, uint64_t slot)
{
	struct fmt_super c;
	if (memcmp(sb->magic, FMT_SB_MAGIC, 8))
		return -ENOENT;
	memcpy(&c, sb, sizeof(c));
	c.crc = 0;
	if (crc32c(0, &c, sizeof(c)) != sb->crc || sb->self != slot)
		return -EILSEQ;
	if (sb->version > FMT_VERSION)
		return -EPROTONOSUPPORT;
	if (sb->block_size != FMT_BLOCK || sb->seg_blocks != FMT_SEG_BLOCKS ||
	    sb->nsegs < FMT_MIN_SEGS)
		return -EILSEQ;
	return 0;
}

void super_seal(struct fmt_super *sb)
{
	sb->generation++;
	sb->self = sb->generation % 2;
	sb->crc = 0;
	sb->crc = crc32c(0, sb, sizeof(*sb));
}

int super_write(struct store *st)
{
	super_seal(&st->sb);
	return segio_sb_write(st->io, (unsigned)st->sb.self, &st->sb);
}

int super_read(struct store *st, const char **why)
{
	struct fmt_super sb[2];
	int e[2];
	for (unsigned i = 0; i < 2; i++) {
		int err = segio_sb_read(st->io, i, &sb[i]);
		if (err) {
			*why = "cannot read the superblocks";
			return err;
		}
		e[i] = super_valid(&sb[i], i);
	}
	if (e[0] == -ENOENT && e[1] == -ENOENT) {
		*why = "not a cowbd pool (no superblock magic)";
		return -ENODATA;
	}
	if (e[0] == -EPROTONOSUPPORT || e[1] == -EPROTONOSUPPORT) {
		*why = "pool format version is newer than this cowbd supports";
		return -EPROTONOSUPPORT;
	}
	int pick = -1;
	for (int i = 0; i < 2; i++)
		if (!e[i] && (pick < 0 || sb[i].generation > sb[pick].generation))
			pick = i;
	if (pick < 0) {
		*why = "both superblocks are damaged (checksum or fields)";
		return -EILSEQ;
	}
	if (st->io->nsegs && sb[pick].nsegs > st->io->nsegs) {
		*why = "pool is larger than the device it is on (truncated?)";
		return -EILSEQ;
	}
	st->sb = sb[pick];
	return 0;
}

int super_probe(struct segio *io)
{
	char buf[FMT_BLOCK];
	for (unsigned slot = 0; slot < 2; slot++) {
		int err = segio_sb_read(io, slot, buf);
		if (err)
			return err;
		if (!memcmp(buf, FMT_SB_MAGIC, 8))
			return 1;
	}
	return 0;
}
