/* names.c — the name grammar ("VOL", "VOL@SNAP") and the size parser
 * ("64M", "1GiB"), written once for the daemon, the control plane, the
 * store and cowctl.
 *
 * Layer: the lowest; it includes nothing of cowbd but its own header, knows
 * no store types and looks nothing up, so any layer may call it and cowctl
 * links it alone.  Pure functions: no state, no locks, no allocation.
 *
 * Why one copy: the grammar used to be written three times (store, control,
 * cowctl) and sizes parsed twice with different rules (the daemon took
 * " 1G" and "1Gi", cowctl did not), so the same string could be accepted by
 * one tool and refused by another.  The messages live here too, so every
 * tool refuses a name or size in the same words.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "names.h"

#define NAMES_QUOTE_MAX 140 /* longest part of a bad input echoed in a message */

/* The grammar in words, for messages; keep in step with names_part_valid. */
#define NAMES_RULE "1-64 of A-Za-z0-9._-, not starting with . or -"
_Static_assert(NAMES_PART_MAX == 64, "NAMES_RULE spells out the part limit");

/* Does s[0..n) form a valid part? */
static bool names_part_valid_n(const char *s, size_t n)
{
	if (n < 1 || n > NAMES_PART_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool names_part_valid(const char *s)
{
	/* strnlen: a 1 MB string is refused after NAMES_PART_MAX + 1 bytes. */
	return names_part_valid_n(s, strnlen(s, NAMES_PART_MAX + 1));
}

int names_split(const char *full, char *vol, char *snap)
{
	const char *at = strchr(full, '@');
	size_t n = at ? (size_t)(at - full) : strnlen(full, NAMES_PART_MAX + 1);

	vol[0] = '\0';
	if (snap)
		snap[0] = '\0';
	/* A second '@' lands in the snapshot part, which refuses it. */
	if (!names_part_valid_n(full, n) || (at && !names_part_valid(at + 1)))
		return -EINVAL;
	memcpy(vol, full, n);
	vol[n] = '\0';
	if (snap && at)
		strcpy(snap, at + 1);
	return 0;
}

int names_check(const char *name, enum names_kind kind, char *msg, size_t len)
{
	const char *at = strchr(name, '@');
	const int q = NAMES_QUOTE_MAX;
	const char *more = strnlen(name, NAMES_QUOTE_MAX + 1) > NAMES_QUOTE_MAX ? "..." : "";
	char vol[NAMES_PART_MAX + 1];

	if (kind == NAMES_ANY)
		kind = at ? NAMES_SNAPSHOT : NAMES_VOLUME;
	if (kind == NAMES_VOLUME) {
		if (at)
			snprintf(msg, len,
			         "invalid volume name \"%.*s%s\": that is a snapshot name (a "
			         "volume name has no '@')",
			         q, name, more);
		else if (!names_part_valid(name))
			snprintf(msg, len, "invalid volume name \"%.*s%s\" (" NAMES_RULE ")", q,
			         name, more);
		else
			return 0;
		return -EINVAL;
	}
	if (!at)
		snprintf(msg, len,
		         "invalid snapshot name \"%.*s%s\": that is not a snapshot name (want "
		         "VOL@SNAP)",
		         q, name, more);
	else if (strchr(at + 1, '@'))
		snprintf(msg, len, "invalid snapshot name \"%.*s%s\" (want VOL@SNAP, one '@')", q,
		         name, more);
	else if (names_split(name, vol, NULL))
		snprintf(msg, len, "invalid snapshot name \"%.*s%s\" (each part: " NAMES_RULE ")",
		         q, name, more);
	else
		return 0;
	return -EINVAL;
}

/* The binary units, largest first: the suffix letter and its shift. */
static const struct {
	char letter;
	unsigned shift;
} names_units[] = {{'E', 60}, {'P', 50}, {'T', 40}, {'G', 30}, {'M', 20}, {'K', 10}};

const char *names_format_size(uint64_t v, char *buf, size_t len)
{
	if (v == UINT64_MAX) { /* v + 1 below would wrap */
		snprintf(buf, len, "16 EiB - 1");
		return buf;
	}
	for (size_t i = 0; i < sizeof(names_units) / sizeof(names_units[0]); i++) {
		uint64_t u = 1ull << names_units[i].shift;

		if (v >= u && v % u == 0) {
			snprintf(buf, len, "%" PRIu64 " %ciB", v / u, names_units[i].letter);
			return buf;
		}
		if (v + 1 >= u && (v + 1) % u == 0) {
			snprintf(buf, len, "%" PRIu64 " %ciB - 1", (v + 1) / u,
			         names_units[i].letter);
			return buf;
		}
	}
	snprintf(buf, len, "%" PRIu64 " bytes", v);
	return buf;
}

/* Shift for the unit letter c (K/M/G/T, either case); -1 if c is not one.
 * P and E are printed in messages but not parsed: nothing needs them. */
static int names_unit_shift(char c)
{
	switch (c) {
	case 'k':
	case 'K':
		return 10;
	case 'm':
	case 'M':
		return 20;
	case 'g':
	case 'G':
		return 30;
	case 't':
	case 'T':
		return 40;
	default:
		return -1;
	}
}

int names_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out, char *msg,
                     size_t len)
{
	const int q = NAMES_QUOTE_MAX;
	const char *p = s;
	char lim[48];
	uint64_t v = 0;
	bool wrapped = false;
	int shift = 0;

	if (*p < '0' || *p > '9')
		goto bad;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			wrapped = true; /* keep scanning: junk after it is still junk */
		else
			v = v * 10 + d;
	}
	if ((shift = names_unit_shift(*p)) >= 0) {
		p++;
		if ((p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
			p += 2;
		else if (p[0] == 'b' || p[0] == 'B')
			p++;
	} else {
		shift = 0;
		if (*p == 'b' || *p == 'B')
			p++;
	}
	if (*p)
		goto bad;
	if (wrapped || v > (UINT64_MAX >> shift) || (v << shift) > max) {
		snprintf(msg, len, "size \"%.*s\" is too large (the maximum is %s)", q, s,
		         names_format_size(max, lim, sizeof(lim)));
		return -ERANGE;
	}
	v <<= shift;
	if (v < min) {
		if (min == 1)
			snprintf(msg, len, "size must be greater than zero");
		else
			snprintf(msg, len, "size \"%.*s\" is too small (the minimum is %s)", q, s,
			         names_format_size(min, lim, sizeof(lim)));
		return -ERANGE;
	}
	*out = v;
	return 0;
bad:
	snprintf(msg, len, "invalid size \"%.*s\" (bytes, or a number with K, M, G or T)", q, s);
	return -EINVAL;
}
