/* test_names.c — the name grammar and the size parser (src/names.c) on
 * their own: part limits (64 vs 65 bytes, leading '.' or '-', non-ASCII),
 * '@' placement and empty parts, the messages callers show, and sizes
 * (suffixes, zero, limits, overflow at 2^64, junk).
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "names.h"

/* A string of n copies of c (n < 200). */
static const char *rep(char c, size_t n)
{
	static char buf[200];

	assert_true(n < sizeof(buf));
	memset(buf, c, n);
	buf[n] = '\0';
	return buf;
}

static void test_part(void **state)
{
	(void)state;
	assert_true(names_part_valid("a"));
	assert_true(names_part_valid("vm-1_b.c"));
	assert_true(names_part_valid("0"));
	assert_true(names_part_valid("_x"));
	assert_true(names_part_valid("a.."));
	assert_true(names_part_valid(rep('x', 64)));
	assert_false(names_part_valid(rep('x', 65)));
	assert_false(names_part_valid(rep('x', 190)));
	assert_false(names_part_valid(""));
	assert_false(names_part_valid("."));
	assert_false(names_part_valid(".."));
	assert_false(names_part_valid(".hidden"));
	assert_false(names_part_valid("-dash"));
	assert_false(names_part_valid("a/b"));
	assert_false(names_part_valid("sp ace"));
	assert_false(names_part_valid("a@b"));
	assert_false(names_part_valid("caf\xc3\xa9")); /* UTF-8 é */
	assert_false(names_part_valid("\xff"));
	assert_false(names_part_valid("tab\t"));
}

static void test_split(void **state)
{
	char vol[NAMES_PART_MAX + 1], snap[NAMES_PART_MAX + 1];
	char full[256]; /* room for a 65-byte part and then some */

	(void)state;
	assert_int_equal(names_split("vm1", vol, snap), 0);
	assert_string_equal(vol, "vm1");
	assert_string_equal(snap, "");
	assert_int_equal(names_split("vm1@s.1", vol, snap), 0);
	assert_string_equal(vol, "vm1");
	assert_string_equal(snap, "s.1");
	assert_int_equal(names_split("vm1@s", vol, NULL), 0);
	assert_string_equal(vol, "vm1");

	/* both parts at the limit: the longest full name */
	snprintf(full, sizeof(full), "%s@", rep('v', 64));
	strcat(full, rep('s', 64));
	assert_int_equal(strlen(full), NAMES_FULL_MAX);
	assert_int_equal(names_split(full, vol, snap), 0);
	assert_string_equal(vol, rep('v', 64));
	assert_string_equal(snap, rep('s', 64));
	strcat(full, "s");
	assert_int_equal(names_split(full, vol, snap), -EINVAL);
	assert_string_equal(vol, "");
	assert_string_equal(snap, "");
	snprintf(full, sizeof(full), "%s@s", rep('v', 65));
	assert_int_equal(names_split(full, vol, snap), -EINVAL);

	static const char *const bad[] = {"",     "@",     "@s",   "v@",    "a@b@c",
	                                  "v@@s", "v@.s",  "v@-s", ".v@s",  "-v@s",
	                                  "v s",  "v@s s", "v/s",  "v@s/x", "v@caf\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		strcpy(vol, "junk");
		strcpy(snap, "junk");
		if (names_split(bad[i], vol, snap) != -EINVAL)
			fail_msg("names_split accepted \"%s\"", bad[i]);
		assert_string_equal(vol, "");
		assert_string_equal(snap, "");
	}
}

/* names_check(name, kind) fails with a message containing want. */
static void check_bad(const char *name, enum names_kind kind, const char *want)
{
	char msg[NAMES_MSG_MAX];

	assert_int_equal(names_check(name, kind, msg, sizeof(msg)), -EINVAL);
	if (!strstr(msg, want))
		fail_msg("names_check(\"%s\"): \"%s\" lacks \"%s\"", name, msg, want);
}

static void test_check(void **state)
{
	char msg[NAMES_MSG_MAX] = "";
	char big[400];

	(void)state;
	assert_int_equal(names_check("vm1", NAMES_VOLUME, msg, sizeof(msg)), 0);
	assert_int_equal(names_check("vm1", NAMES_ANY, msg, sizeof(msg)), 0);
	assert_int_equal(names_check("vm1@s", NAMES_SNAPSHOT, msg, sizeof(msg)), 0);
	assert_int_equal(names_check("vm1@s", NAMES_ANY, msg, sizeof(msg)), 0);
	assert_string_equal(msg, ""); /* untouched on success */

	check_bad("a@b", NAMES_VOLUME, "invalid volume name \"a@b\": that is a snapshot name");
	check_bad(".x", NAMES_VOLUME, "invalid volume name \".x\" (1-64 of A-Za-z0-9._-");
	check_bad("", NAMES_VOLUME, "invalid volume name \"\"");
	check_bad(rep('x', 65), NAMES_VOLUME, "invalid volume name");
	check_bad(".x", NAMES_ANY, "invalid volume name");
	check_bad("g", NAMES_SNAPSHOT, "invalid snapshot name \"g\": that is not a snapshot name");
	check_bad("a@b@c", NAMES_SNAPSHOT, "invalid snapshot name \"a@b@c\" (want VOL@SNAP");
	check_bad("a@b@c", NAMES_ANY, "invalid snapshot name");
	check_bad("alpha@", NAMES_SNAPSHOT, "invalid snapshot name \"alpha@\" (each part");
	check_bad("@s", NAMES_SNAPSHOT, "invalid snapshot name \"@s\"");
	check_bad("alpha@.s", NAMES_SNAPSHOT, "invalid snapshot name \"alpha@.s\"");

	/* a huge name is quoted cut short, and the message still ends */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(names_check(big, NAMES_VOLUME, msg, sizeof(msg)), -EINVAL);
	assert_non_null(strstr(msg, "...\" (1-64"));
	assert_true(strlen(msg) < 250);
}

/* names_parse_size(s) gives want. */
static void size_ok(const char *s, uint64_t want)
{
	char msg[NAMES_MSG_MAX];
	uint64_t v = 0;

	if (names_parse_size(s, 1, UINT64_MAX, &v, msg, sizeof(msg)))
		fail_msg("\"%s\" refused: %s", s, msg);
	if (v != want)
		fail_msg("\"%s\" = %llu, want %llu", s, (unsigned long long)v,
		         (unsigned long long)want);
}

/* names_parse_size(s, min, max) fails with err and a message containing want. */
static void size_bad(const char *s, uint64_t min, uint64_t max, int err, const char *want)
{
	char msg[NAMES_MSG_MAX];
	uint64_t v = 12345;

	assert_int_equal(names_parse_size(s, min, max, &v, msg, sizeof(msg)), err);
	assert_int_equal(v, 12345); /* untouched on failure */
	if (!strstr(msg, want))
		fail_msg("\"%s\": \"%s\" lacks \"%s\"", s, msg, want);
}

static void test_size(void **state)
{
	(void)state;
	size_ok("1", 1);
	size_ok("512", 512);
	size_ok("512B", 512);
	size_ok("512b", 512);
	size_ok("007", 7);
	size_ok("1K", 1024);
	size_ok("1k", 1024);
	size_ok("64M", 64ull << 20);
	size_ok("1G", 1ull << 30);
	size_ok("1g", 1ull << 30);
	size_ok("1GiB", 1ull << 30);
	size_ok("1gib", 1ull << 30);
	size_ok("1GB", 1ull << 30);
	size_ok("3T", 3ull << 40);
	size_ok("16777215T", 16777215ull << 40);
	size_ok("18446744073709551615", UINT64_MAX);

	size_bad("", 1, UINT64_MAX, -EINVAL, "invalid size \"\" (bytes, or a number");
	size_bad("G", 1, UINT64_MAX, -EINVAL, "invalid size \"G\"");
	size_bad(" 1G", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("+1G", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("-1", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("1.5G", 1, UINT64_MAX, -EINVAL, "invalid size \"1.5G\"");
	size_bad("0x100", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("12Q", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("1P", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("1Gi", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("1iB", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("1GBB", 1, UINT64_MAX, -EINVAL, "invalid size");
	size_bad("1G ", 1, UINT64_MAX, -EINVAL, "invalid size");
	/* junk after an overflowing number is junk, not "too large" */
	size_bad("99999999999999999999999x", 1, UINT64_MAX, -EINVAL, "invalid size");

	size_bad("0", 1, UINT64_MAX, -ERANGE, "size must be greater than zero");
	size_bad("0G", 1, UINT64_MAX, -ERANGE, "size must be greater than zero");
	size_bad("1M", 4ull << 20, UINT64_MAX, -ERANGE,
	         "size \"1M\" is too small (the minimum is 4 MiB)");
	/* 2^64 and beyond */
	size_bad("18446744073709551616", 1, UINT64_MAX, -ERANGE,
	         "is too large (the maximum is 16 EiB - 1)");
	size_bad("16777216T", 1, UINT64_MAX, -ERANGE, "too large");
	size_bad("99999999999999999999999", 1, UINT64_MAX, -ERANGE, "too large");
	/* a caller's maximum */
	size_bad("8E", 1, INT64_MAX, -EINVAL, "invalid size");
	size_bad("8388608T", 1, INT64_MAX, -ERANGE,
	         "size \"8388608T\" is too large (the maximum is 8 EiB - 1)");
	size_ok("8388607T", 8388607ull << 40);
	size_bad("1025", 1, 1024, -ERANGE, "(the maximum is 1 KiB)");
}

static void test_format_size(void **state)
{
	char b[48];

	(void)state;
	assert_string_equal(names_format_size(0, b, sizeof(b)), "0 bytes");
	assert_string_equal(names_format_size(1000, b, sizeof(b)), "1000 bytes");
	assert_string_equal(names_format_size(1023, b, sizeof(b)), "1 KiB - 1");
	assert_string_equal(names_format_size(1536, b, sizeof(b)), "1536 bytes");
	assert_string_equal(names_format_size(1536 << 10, b, sizeof(b)), "1536 KiB");
	assert_string_equal(names_format_size(64ull << 20, b, sizeof(b)), "64 MiB");
	assert_string_equal(names_format_size(1ull << 60, b, sizeof(b)), "1 EiB");
	assert_string_equal(names_format_size(INT64_MAX, b, sizeof(b)), "8 EiB - 1");
	assert_string_equal(names_format_size(UINT64_MAX, b, sizeof(b)), "16 EiB - 1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_part),        cmocka_unit_test(test_split),
	    cmocka_unit_test(test_check),       cmocka_unit_test(test_size),
	    cmocka_unit_test(test_format_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
