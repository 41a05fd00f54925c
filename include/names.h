/* names.h — the one grammar of volume and snapshot names ("VOL",
 * "VOL@SNAP") and the one parser of human sizes ("64M", "1GiB").
 *
 * Pure functions: no lookups, no store types, no locks, no allocation; safe
 * from any thread.  The lowest layer, so the daemon, the control plane, the
 * store and cowctl can all share it (cowctl links names.o alone).
 * docs/CONTROL.md ("Names and sizes") states the same rules for operators.
 */
#ifndef COWBD_NAMES_H
#define COWBD_NAMES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest volume name, and longest part of "VOL@SNAP", in bytes. */
#define NAMES_PART_MAX 64
/* Longest full name "VOL@SNAP", without its NUL. */
#define NAMES_FULL_MAX (2 * NAMES_PART_MAX + 1)
/* Buffer size for a message from names_check or names_parse_size. */
#define NAMES_MSG_MAX 256

/* Is s a valid name part (a volume name, or either side of '@'):
 * 1..NAMES_PART_MAX of [A-Za-z0-9._-], not starting with '.' or '-'?
 * Bytes outside ASCII are never valid.  O(length). */
bool names_part_valid(const char *s);

/* Split a valid "VOL" or "VOL@SNAP" into vol and snap, each a buffer of
 * NAMES_PART_MAX + 1 bytes; snap becomes "" for a plain volume name, and
 * may be NULL if the caller wants only the volume part.  Returns 0, or
 * -EINVAL (and "" in both) if full is not a valid name of either kind. */
int names_split(const char *full, char *vol, char *snap);

/* What a caller expects a name to be. */
enum names_kind {
	NAMES_VOLUME,   /* "VOL" */
	NAMES_SNAPSHOT, /* "VOL@SNAP" */
	NAMES_ANY,      /* either, told apart by the '@' */
};

/* Check name against kind.  Returns 0, or -EINVAL with one operator-ready
 * line in msg (at most len bytes, NUL-terminated; NAMES_MSG_MAX is enough)
 * that starts "invalid volume name" or "invalid snapshot name" and says
 * what is wrong.  The quoted name is cut at 140 bytes. */
int names_check(const char *name, enum names_kind kind, char *msg, size_t len);

/* Parse a size: decimal digits, then optionally K, M, G or T (powers of
 * 1024), which may be followed by "iB" or "B"; or a plain "B" (bytes).
 * Letters in either case.  Nothing else: no sign, spaces, fractions or hex.
 * The value must lie in [min, max].  Returns 0 with *out set, or -EINVAL
 * (syntax) / -ERANGE (outside [min, max], including anything >= 2^64)
 * with one line in msg that quotes s and, for -ERANGE, names the limit. */
int names_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out, char *msg,
                     size_t len);

/* Write v as an exact size for a message: "64 MiB", "8 EiB - 1",
 * "1536 KiB" or "1000 bytes".  Returns buf. */
const char *names_format_size(uint64_t v, char *buf, size_t len);

#endif
