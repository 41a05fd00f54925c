/* test_config.c — cowbd.conf (src/config.c) on its own: CIDR parsing and
 * matching (IPv4, IPv6, v4-mapped IPv6 peers, prefix edges, host bits),
 * the file grammar (sections, keys handed to a schema, duplicates,
 * continuation-free indentation, comments, long lines) with the FILE:LINE
 * of the first bad line, and the access decision of an export's rules
 * (networks, unix clients, TLS identities, a snapshot under its volume's
 * section).
 */
#undef NDEBUG
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

/* ---- addresses ---------------------------------------------------------- */

/* A peer address from text: IPv4, IPv6, or "unix". */
static const struct sockaddr *peer(const char *s)
{
	static struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (!strcmp(s, "unix")) {
		ss.ss_family = AF_UNIX;
	} else if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, s, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
	}
	return (const struct sockaddr *)&ss;
}

/* Does CIDR c (which must parse) match address a? */
static bool match(const char *c, const char *a)
{
	struct config_cidr cidr;
	char why[200];

	assert_int_equal(config_cidr_parse(c, &cidr, why, sizeof(why)), 0);
	return config_cidr_match(&cidr, peer(a));
}

/* CIDR c is refused with a reason containing want. */
static void refused(const char *c, const char *want)
{
	struct config_cidr cidr;
	char why[200] = "";

	assert_int_equal(config_cidr_parse(c, &cidr, why, sizeof(why)), -EINVAL);
	if (!strstr(why, want))
		fail_msg("%s: '%s' does not say '%s'", c, why, want);
}

static void test_cidr_v4(void **state)
{
	(void)state;
	assert_true(match("127.0.0.2/32", "127.0.0.2"));
	assert_false(match("127.0.0.2/32", "127.0.0.1"));
	assert_false(match("127.0.0.2/32", "127.0.0.3"));
	assert_true(match("127.0.0.2", "127.0.0.2")); /* a host */
	assert_false(match("127.0.0.2", "127.0.0.1"));
	assert_true(match("10.0.0.0/8", "10.255.1.2"));
	assert_false(match("10.0.0.0/8", "11.0.0.0"));
	assert_false(match("10.0.0.0/8", "9.255.255.255"));
	assert_true(match("192.168.4.0/22", "192.168.7.255")); /* a prefix inside a byte */
	assert_false(match("192.168.4.0/22", "192.168.8.0"));
	assert_false(match("192.168.4.0/22", "192.168.3.255"));
	assert_true(match("0.0.0.0/0", "203.0.113.9"));  /* every IPv4 address... */
	assert_false(match("0.0.0.0/0", "2001:db8::1")); /* ...and no IPv6 one */
	assert_false(match("10.0.0.0/8", "unix"));
}

static void test_cidr_v6(void **state)
{
	(void)state;
	assert_true(match("::1", "::1"));
	assert_false(match("::1", "::2"));
	assert_true(match("2001:db8::/32", "2001:db8:ffff::1"));
	assert_false(match("2001:db8::/32", "2001:db9::1"));
	assert_true(match("2001:db8:0:80::/57", "2001:db8:0:ff::1"));
	assert_false(match("2001:db8:0:80::/57", "2001:db8:0:7f::1"));
	assert_true(match("::/0", "2001:db8::1"));
	assert_true(match("::/0", "10.1.2.3")); /* as ::ffff:10.1.2.3 */
	assert_false(match("2001:db8::/32", "10.1.2.3"));
}

static void test_cidr_mapped(void **state)
{
	(void)state;
	/* A dual-stack socket shows an IPv4 client as ::ffff:a.b.c.d. */
	assert_true(match("127.0.0.2/32", "::ffff:127.0.0.2"));
	assert_false(match("127.0.0.2/32", "::ffff:127.0.0.1"));
	assert_true(match("10.0.0.0/8", "::ffff:10.9.8.7"));
	assert_false(match("10.0.0.0/8", "::10.9.8.7")); /* v4-compatible: another address */
	/* ...and a v4-mapped network is the same as its IPv4 one. */
	assert_true(match("::ffff:10.0.0.0/104", "10.1.1.1"));
	assert_false(match("::ffff:10.0.0.0/104", "11.1.1.1"));
}

static void test_cidr_bad(void **state)
{
	(void)state;
	refused("10.0.0.1/8", "host bits set (the network is 10.0.0.0/8)");
	refused("2001:db8::1/32", "the network is 2001:db8::/32");
	refused("1.2.3.4/33", "0 to 32");
	refused("::1/129", "0 to 128");
	refused("1.2.3.4/", "prefix length");
	refused("1.2.3.4/-1", "prefix length");
	refused("1.2.3.4/8x", "prefix length");
	refused("1.2.3", "not an IPv4 or IPv6");
	refused("1.2.3.256", "not an IPv4 or IPv6");
	refused("localhost", "not an IPv4 or IPv6");
	refused("", "not an IPv4 or IPv6");
	refused("/8", "not an IPv4 or IPv6");
}

/* ---- the file -------------------------------------------------------------- */

/* What the test schema was told: "key=value;" for each [cowbd] key. */
static char told[1024];

static int schema_set(void *arg, const char *key, const char *value, char *why, size_t len)
{
	(void)arg;
	if (strcmp(key, "pool") && strcmp(key, "listen") && strcmp(key, "max-connections"))
		return -ENOENT;
	if (!strcmp(key, "max-connections") && strcmp(value, "10")) {
		snprintf(why, len, "%s (want 10)", value);
		return -EINVAL;
	}
	snprintf(told + strlen(told), sizeof(told) - strlen(told), "%s=%s;", key, value);
	return 0;
}

static const char *const schema_repeat[] = {"listen", NULL};
static const struct config_schema schema = {.set = schema_set, .repeatable = schema_repeat};

/* Load the n bytes at text as a config file: the config, or NULL with the
 * error in err. */
static struct config *loadn(const char *text, size_t n, char *err, size_t errlen)
{
	char path[] = "/tmp/test_config.XXXXXX";
	int fd = mkstemp(path);
	struct config *cfg;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
	told[0] = '\0';
	cfg = config_load(path, &schema, err, errlen);
	/* Every message starts with the file's name. */
	if (!cfg)
		assert_memory_equal(err, path, strlen(path));
	unlink(path);
	return cfg;
}

static struct config *load(const char *text, char *err, size_t errlen)
{
	return loadn(text, strlen(text), err, errlen);
}

/* The n bytes at text are refused at line `line` with a message
 * containing want. */
static void badn(const char *text, size_t n, unsigned line, const char *want)
{
	char err[CONFIG_ERR_MAX], at[16];
	const char *colon;

	assert_null(loadn(text, n, err, sizeof(err)));
	colon = strchr(err, ':');
	assert_non_null(colon);
	snprintf(at, sizeof(at), ":%u: ", line);
	if (strncmp(colon, at, strlen(at)) || !strstr(err, want))
		fail_msg("'%s': want line %u and '%s'", err, line, want);
}

static void bad(const char *text, unsigned line, const char *want)
{
	badn(text, strlen(text), line, want);
}

static void test_file_good(void **state)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	const struct config_export *e;

	(void)state;
	cfg = load("\xEF\xBB\xBF# a comment\n"
	           "; another\n"
	           "\n"
	           "[cowbd]   ; the daemon\n"
	           "pool = /var/lib/cowbd/pool.img\n"
	           "  listen = 127.0.0.1:10809\n" /* indented: a key, not a continuation */
	           "\tlisten = [::1]:10809\n"
	           "max-connections=10\n"
	           "[export vm42]\n"
	           "allow = 10.0.0.0/8, 2001:db8::/32 ; the storage networks\n"
	           "allow = 127.0.0.2\n"
	           "read-only = yes\n"
	           "tls-identity = CN=client,O=cowbd tests\n"
	           "tls-identity = alice\n"
	           "[ export   vm43  ]\n"
	           "allow-unix = no\n"
	           "[export vm44]\n"
	           "allow = none\n"
	           "allow-unix = yes\n",
	           err, sizeof(err));
	if (!cfg)
		fail_msg("%s", err);
	assert_string_equal(told, "pool=/var/lib/cowbd/pool.img;listen=127.0.0.1:10809;"
	                          "listen=[::1]:10809;max-connections=10;");
	e = config_export_at(cfg, 0);
	assert_string_equal(e->name, "vm42");
	assert_int_equal(e->line, 9);
	assert_int_equal(e->nallow, 3);
	assert_true(e->has_allow);
	assert_false(e->allow_unix); /* default with allow */
	assert_true(e->read_only);
	assert_int_equal(e->nids, 2);
	assert_string_equal(e->ids[0], "CN=client,O=cowbd tests");
	e = config_export_at(cfg, 1);
	assert_string_equal(e->name, "vm43");
	assert_false(e->has_allow);
	assert_false(e->allow_unix);
	assert_false(e->read_only);
	e = config_export_at(cfg, 2);
	assert_true(e->has_allow);
	assert_int_equal(e->nallow, 0);
	assert_true(e->allow_unix);
	assert_null(config_export_at(cfg, 3));
	config_free(cfg);

	cfg = load("", err, sizeof(err)); /* empty: nothing set, no rules */
	assert_non_null(cfg);
	assert_null(config_export_at(cfg, 0));
	config_free(cfg);
}

static void test_file_bad(void **state)
{
	char line[300], err[CONFIG_ERR_MAX];

	(void)state;
	bad("[cowbd]\npool = x\nbogus = 1\n", 3, "unknown key 'bogus' in [cowbd]");
	bad("[cowbd]\n\npool = x\npool = y\n", 4, "duplicate key 'pool' (first at line 3)");
	bad("[cowbd]\nmax-connections = 7\n", 2, "bad max-connections: 7 (want 10)");
	bad("# x\n[bogus]\n", 2, "unknown section [bogus]");
	bad("[]\n", 1, "unknown section []");
	bad("[exports vm1]\n", 1, "unknown section [exports vm1]");
	bad("[export]\n", 1, "unknown section [export]");
	bad("[cowbd]\n[cowbd]\n", 2, "duplicate section [cowbd] (first at line 1)");
	bad("[export a]\n[export b]\n[export a]\n", 3, "duplicate section [export a]");
	bad("[export bad/name]\n", 1, "invalid volume name");
	bad("[export a@]\n", 1, "invalid");
	bad("[cowbd\n", 1, "'[' without ']'");
	bad("[cowbd] x\n", 1, "text after the section's ']'");
	bad("pool = x\n", 1, "outside any section");
	bad("[cowbd]\npool\n", 2, "syntax error");
	bad("[cowbd]\npool =\n", 2, "'pool' has no value");
	bad("[export a]\nallow = 10.0.0.1/8\n", 2, "bad allow: '10.0.0.1/8' has host bits set");
	bad("[export a]\nallow = 10.0.0.0/8 # office\n", 2, "bad allow: '10.0.0.0/8 # office'");
	bad("[export a]\nallow = 10.0.0.0/8,,::1\n", 2, "an empty entry");
	bad("[export a]\nallow = none, ::1\n", 2, "'none' must be the only entry");
	bad("[export a]\nread-only = maybe\n", 2, "bad read-only: 'maybe' (want yes or no)");
	bad("[export a]\nread-only = no\nread-only = yes\n", 3, "duplicate key 'read-only'");
	bad("[export a]\nallow-unix = yes\nallow-unix = no\n", 3, "duplicate key 'allow-unix'");
	bad("[export a]\npool = x\n", 2, "unknown key 'pool' in [export a]");
	/* the first bad line is the one told, whatever its kind */
	bad("[cowbd]\npool = x\nnothing here\nbogus = 1\n", 3, "syntax error");
	bad("[cowbd]\nbogus = 1\nnothing here\n", 2, "unknown key");
	memset(line, 'x', sizeof(line));
	memcpy(line, "[cowbd]\npool = ", 15);
	line[sizeof(line) - 1] = '\0';
	bad(line, 2, "line longer than");
	badn("[cowbd]\npool = a\0b\n", 17, 2, "NUL");
	assert_null(config_load("/nonexistent/cowbd.conf", &schema, err, sizeof(err)));
	assert_int_equal(errno, ENOENT);
	assert_string_equal(err, "cannot read /nonexistent/cowbd.conf: No such file or directory");
}

/* ---- access decisions --------------------------------------------------------- */

static void test_access(void **state)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	const struct config_export *e;

	(void)state;
	cfg = load("[export net]\nallow = 127.0.0.2/32, 2001:db8::/32\n"
	           "[export ids]\ntls-identity = alice\ntls-identity = CN=client,O=x\n"
	           "[export both]\nallow = 10.0.0.0/8\nallow-unix = yes\ntls-identity = bob\n"
	           "[export none]\nallow = none\n"
	           "[export vol@snap1]\nread-only = no\n",
	           err, sizeof(err));
	if (!cfg)
		fail_msg("%s", err);
	e = config_export_find(cfg, "net");
	assert_null(config_export_denies(e, peer("127.0.0.2"), NULL));
	assert_null(config_export_denies(e, peer("::ffff:127.0.0.2"), NULL));
	assert_null(config_export_denies(e, peer("2001:db8::5"), "alice"));
	assert_string_equal(config_export_denies(e, peer("127.0.0.1"), NULL),
	                    "address not allowed");
	assert_string_equal(config_export_denies(e, peer("unix"), NULL),
	                    "unix socket clients are not allowed");

	e = config_export_find(cfg, "ids");
	assert_null(config_export_denies(e, peer("unix"), "alice")); /* no allow: unix too */
	assert_null(config_export_denies(e, peer("192.0.2.1"), "CN=client,O=x"));
	assert_string_equal(config_export_denies(e, peer("192.0.2.1"), NULL),
	                    "a TLS identity is required");
	assert_string_equal(config_export_denies(e, peer("192.0.2.1"), "CN=client"),
	                    "TLS identity not allowed");
	assert_string_equal(config_export_denies(e, peer("192.0.2.1"), "Alice"),
	                    "TLS identity not allowed");

	e = config_export_find(cfg, "both"); /* both rules must hold */
	assert_null(config_export_denies(e, peer("10.1.1.1"), "bob"));
	assert_null(config_export_denies(e, peer("unix"), "bob"));
	assert_non_null(config_export_denies(e, peer("10.1.1.1"), "alice"));
	assert_non_null(config_export_denies(e, peer("11.1.1.1"), "bob"));

	e = config_export_find(cfg, "none");
	assert_non_null(config_export_denies(e, peer("127.0.0.1"), NULL));
	assert_non_null(config_export_denies(e, peer("::1"), NULL));
	assert_non_null(config_export_denies(e, peer("unix"), NULL));

	/* An address that cannot be had matches no network. */
	struct sockaddr unspec = {.sa_family = AF_UNSPEC};
	assert_non_null(config_export_denies(config_export_find(cfg, "net"), &unspec, NULL));

	/* A snapshot falls under its volume's section unless it has its own. */
	assert_ptr_equal(config_export_find(cfg, "net@daily"), config_export_find(cfg, "net"));
	assert_string_equal(config_export_find(cfg, "vol@snap1")->name, "vol@snap1");
	assert_null(config_export_find(cfg, "vol"));
	assert_null(config_export_find(cfg, "vol@snap2"));
	assert_null(config_export_find(cfg, "other"));
	assert_null(config_export_find(NULL, "net"));
	assert_null(config_export_denies(NULL, peer("127.0.0.1"), NULL)); /* no rules */
	config_free(cfg);
}

static void test_bool(void **state)
{
	bool b;

	(void)state;
	assert_int_equal(config_parse_bool("yes", &b), 0);
	assert_true(b);
	assert_int_equal(config_parse_bool("Off", &b), 0);
	assert_false(b);
	assert_int_equal(config_parse_bool("1", &b), 0);
	assert_true(b);
	assert_int_equal(config_parse_bool("y", &b), -EINVAL);
	assert_int_equal(config_parse_bool("", &b), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cidr_v4),     cmocka_unit_test(test_cidr_v6),
	    cmocka_unit_test(test_cidr_mapped), cmocka_unit_test(test_cidr_bad),
	    cmocka_unit_test(test_file_good),   cmocka_unit_test(test_file_bad),
	    cmocka_unit_test(test_access),      cmocka_unit_test(test_bool),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
