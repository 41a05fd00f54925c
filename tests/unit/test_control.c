/* test_control.c — the control socket against a real store on an
 * in-memory device: socket setup (mode, parent directory, live and stale
 * sockets), every op's reply shape, the refusals and their messages, and
 * the protocol's edges (bad JSON, unknown op, over-long line, pipelining,
 * client limit, stop with clients connected).  The daemon and cowctl are
 * covered end to end by tests/integration/cowctl_*.sh.
 */
#undef NDEBUG
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "format.h"
#include "blkdev.h"
#include "control.h"
#include "say.h"
#include "store.h"
#include "testpool.h"
#include "version.h"

struct fixture {
	char dir[64];
	char path[128];
	struct store *st;
	struct control *c;
};

static int test_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void test_send(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

		if (n < 0)
			return; /* the server may close first (over-long line) */
		s += n;
		len -= (size_t)n;
	}
}

static void test_sends(int fd, const char *s)
{
	test_send(fd, s, strlen(s));
}

/* Read one reply line from fd and parse it. */
static json_t *test_recv(int fd)
{
	char buf[1 << 16];
	size_t have = 0;
	json_error_t jerr;
	json_t *j;

	for (;;) {
		ssize_t n = recv(fd, buf + have, 1, 0);

		assert_true(n == 1);
		if (buf[have] == '\n')
			break;
		have++;
		assert_true(have < sizeof(buf));
	}
	j = json_loadb(buf, have, 0, &jerr);
	if (!j)
		fail_msg("bad reply %.*s: %s", (int)have, buf, jerr.text);
	return j;
}

/* One request on a fresh connection; the reply. */
static json_t *ask(struct fixture *f, const char *fmt, ...)
{
	char req[4096];
	va_list ap;
	int n, fd;
	json_t *r;

	va_start(ap, fmt);
	n = vsnprintf(req, sizeof(req) - 1, fmt, ap);
	va_end(ap);
	req[n++] = '\n';
	fd = test_connect(f->path);
	test_send(fd, req, (size_t)n);
	r = test_recv(fd);
	close(fd);
	return r;
}

static void expect_ok(json_t *r)
{
	if (!json_is_true(json_object_get(r, "ok"))) {
		char *s = json_dumps(r, 0);

		fail_msg("want ok, got %s", s);
	}
}

/* r is an error with errno name en whose message contains sub; frees r. */
static void expect_err(json_t *r, const char *en, const char *sub)
{
	const char *e = json_string_value(json_object_get(r, "errno"));
	const char *m = json_string_value(json_object_get(r, "error"));

	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_non_null(e);
	assert_non_null(m);
	if (strcmp(e, en) || !strstr(m, sub))
		fail_msg("want %s \"%s\", got %s \"%s\"", en, sub, e, m);
	json_decref(r);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct blkdev *dev = blkdev_mem_new(256u << 20);
	char err[256];

	say_max_level = SAY_WARN;
	assert_non_null(f);
	assert_non_null(dev);
	f->st = testpool_new(dev, NULL);
	snprintf(f->dir, sizeof(f->dir), "/tmp/cowbd-ctl.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	/* a parent directory that does not exist yet */
	snprintf(f->path, sizeof(f->path), "%s/run/cowbd/control.sock", f->dir);
	f->c = control_start(f->st, f->path, err, sizeof(err));
	if (!f->c)
		fail_msg("control_start: %s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[200];

	control_stop(f->c);
	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void test_socket_setup(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dir[160], err[256], other[160];
	struct control *c2;
	struct stat sb;
	int fd;

	assert_int_equal(lstat(f->path, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0600);
	snprintf(dir, sizeof(dir), "%s/run/cowbd", f->dir);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0750);

	/* a live daemon's socket is never taken over */
	c2 = control_start(f->st, f->path, err, sizeof(err));
	assert_null(c2);
	assert_non_null(strstr(err, "in use"));
	json_decref(ask(f, "{\"op\":\"ping\"}"));

	/* a path holding something else is refused */
	snprintf(other, sizeof(other), "%s/file", f->dir);
	fclose(fopen(other, "w"));
	assert_null(control_start(f->st, other, err, sizeof(err)));
	assert_non_null(strstr(err, "not a socket"));

	/* a stale socket (bound, nobody listening) is replaced */
	snprintf(other, sizeof(other), "%s/stale.sock", f->dir);
	assert_true(strlen(other) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, other, strlen(other) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	c2 = control_start(f->st, other, err, sizeof(err));
	if (!c2)
		fail_msg("stale socket not replaced: %s", err);
	fd = test_connect(other);
	close(fd);
	control_stop(c2);
	assert_int_equal(lstat(other, &sb), -1);
	assert_int_equal(errno, ENOENT);

	/* too long for sockaddr_un */
	memset(other, 'x', sizeof(other) - 1);
	other[0] = '/';
	other[sizeof(other) - 1] = '\0';
	assert_null(control_start(f->st, other, err, sizeof(err)));
	assert_non_null(strstr(err, "too long"));
}

static void test_volume_ops(void **state)
{
	struct fixture *f = *state;
	json_t *r, *v, *arr;
	size_t i;

	r = ask(f, "{\"op\":\"volume.create\",\"name\":\"vm1\",\"size\":%d}", 64 << 20);
	expect_ok(r);
	v = json_object_get(r, "volume");
	assert_string_equal(json_string_value(json_object_get(v, "name")), "vm1");
	assert_int_equal(json_integer_value(json_object_get(v, "size")), 64 << 20);
	assert_true(json_is_null(json_object_get(v, "origin")));
	assert_true(json_is_false(json_object_get(v, "snapshot")));
	assert_true(json_integer_value(json_object_get(v, "created")) > 1600000000);
	json_decref(r);

	expect_err(ask(f, "{\"op\":\"volume.create\",\"name\":\"vm1\",\"size\":4096}"), "EEXIST",
	           "volume \"vm1\" exists");
	expect_err(ask(f, "{\"op\":\"volume.create\",\"name\":\".x\",\"size\":4096}"), "EINVAL",
	           "invalid volume name");
	expect_err(ask(f, "{\"op\":\"volume.create\",\"name\":\"a@b\",\"size\":4096}"), "EINVAL",
	           "invalid volume name");
	expect_err(ask(f, "{\"op\":\"volume.create\",\"name\":\"x\",\"size\":0}"), "EINVAL",
	           "invalid size");
	expect_err(ask(f, "{\"op\":\"volume.create\",\"name\":\"x\",\"size\":1000}"), "EINVAL",
	           "invalid size");
	expect_err(ask(f, "{\"op\":\"volume.create\",\"name\":\"x\",\"size\":\"1G\"}"), "EINVAL",
	           "needs \"size\"");
	expect_err(ask(f, "{\"op\":\"volume.create\",\"size\":4096}"), "EINVAL", "needs \"name\"");
	expect_err(ask(f, "{\"op\":\"volume.info\",\"name\":\"nope\"}"), "ENOENT",
	           "no volume \"nope\"");
	expect_err(ask(f, "{\"op\":\"volume.delete\",\"name\":\"nope\"}"), "ENOENT",
	           "no volume \"nope\"");

	expect_ok(r = ask(f, "{\"op\":\"volume.create\",\"name\":\"vm2\",\"size\":1048576}"));
	json_decref(r);
	r = ask(f, "{\"op\":\"volume.list\"}");
	expect_ok(r);
	arr = json_object_get(r, "volumes");
	assert_int_equal(json_array_size(arr), 2);
	json_array_foreach(arr, i, v)
	{
		const char *n = json_string_value(json_object_get(v, "name"));

		assert_true(!strcmp(n, "vm1") || !strcmp(n, "vm2"));
		assert_true(json_is_array(json_object_get(v, "snapshots")));
	}
	json_decref(r);

	expect_ok(r = ask(f, "{\"op\":\"volume.delete\",\"name\":\"vm2\"}"));
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"volume.info\",\"name\":\"vm2\"}"), "ENOENT", "no volume");

	r = ask(f, "{\"op\":\"stats\"}");
	expect_ok(r);
	v = json_object_get(r, "stats");
	assert_int_equal(json_integer_value(json_object_get(v, "pool_bytes")), 256 << 20);
	assert_true(json_is_false(json_object_get(v, "failed")));
	json_decref(r);
	expect_ok(r = ask(f, "{\"op\":\"checkpoint\"}"));
	json_decref(r);
}

static void test_snapshot_ops(void **state)
{
	struct fixture *f = *state;
	char buf[STORE_BLOCK_SIZE];
	struct vol *h;
	json_t *r, *v;

	expect_ok(r = ask(f, "{\"op\":\"volume.create\",\"name\":\"g\",\"size\":%d}", 16 << 20));
	json_decref(r);
	assert_int_equal(store_vol_open(f->st, "g", &h), 0);
	memset(buf, 'A', sizeof(buf));
	assert_int_equal(store_write(h, buf, 0, sizeof(buf), STORE_FUA), 0);

	/* an attached volume: snapshots fine; delete and rollback refused */
	expect_err(ask(f, "{\"op\":\"volume.delete\",\"name\":\"g\"}"), "EBUSY",
	           "volume \"g\" is attached (1 open handle)");
	r = ask(f, "{\"op\":\"snapshot.create\",\"name\":\"g@s1\"}");
	expect_ok(r);
	v = json_object_get(r, "snapshot");
	assert_string_equal(json_string_value(json_object_get(v, "name")), "g@s1");
	assert_string_equal(json_string_value(json_object_get(v, "volume")), "g");
	assert_true(json_is_true(json_object_get(v, "snapshot")));
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"snapshot.create\",\"name\":\"g@s1\"}"), "EEXIST",
	           "snapshot \"g@s1\" exists");
	expect_err(ask(f, "{\"op\":\"snapshot.create\",\"name\":\"nope@s1\"}"), "ENOENT",
	           "no volume \"nope\"");
	expect_err(ask(f, "{\"op\":\"snapshot.create\",\"name\":\"g\"}"), "EINVAL",
	           "invalid snapshot name");
	expect_err(ask(f, "{\"op\":\"rollback\",\"name\":\"g@s1\"}"), "EBUSY",
	           "volume \"g\" is attached");
	memset(buf, 'B', sizeof(buf));
	assert_int_equal(store_write(h, buf, 0, sizeof(buf), STORE_FUA), 0);
	store_vol_close(h);

	expect_err(ask(f, "{\"op\":\"volume.delete\",\"name\":\"g\"}"), "ENOTEMPTY",
	           "volume \"g\" has 1 snapshot; delete it first");

	r = ask(f, "{\"op\":\"clone\",\"snapshot\":\"g@s1\",\"name\":\"c1\"}");
	expect_ok(r);
	v = json_object_get(r, "volume");
	assert_string_equal(json_string_value(json_object_get(v, "origin")), "g@s1");
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"clone\",\"snapshot\":\"g@s1\",\"name\":\"c1\"}"), "EEXIST",
	           "volume \"c1\" exists");
	expect_err(ask(f, "{\"op\":\"clone\",\"snapshot\":\"g@nope\",\"name\":\"c2\"}"), "ENOENT",
	           "no snapshot \"g@nope\"");
	expect_err(ask(f, "{\"op\":\"snapshot.delete\",\"name\":\"g@s1\"}"), "EBUSY",
	           "snapshot \"g@s1\" is the origin of clone c1; delete it first");

	r = ask(f, "{\"op\":\"volume.info\",\"name\":\"g@s1\"}");
	expect_ok(r);
	v = json_object_get(json_object_get(r, "volume"), "clones");
	assert_int_equal(json_array_size(v), 1);
	assert_string_equal(json_string_value(json_array_get(v, 0)), "c1");
	json_decref(r);

	r = ask(f, "{\"op\":\"snapshot.list\",\"volume\":\"g\"}");
	expect_ok(r);
	assert_int_equal(json_array_size(json_object_get(r, "snapshots")), 1);
	json_decref(r);
	r = ask(f, "{\"op\":\"snapshot.list\",\"volume\":\"c1\"}");
	expect_ok(r);
	assert_int_equal(json_array_size(json_object_get(r, "snapshots")), 0);
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"snapshot.list\",\"volume\":\"nope\"}"), "ENOENT", "no volume");

	/* rollback: g reads A again */
	expect_ok(r = ask(f, "{\"op\":\"rollback\",\"name\":\"g@s1\"}"));
	json_decref(r);
	assert_int_equal(store_vol_open(f->st, "g", &h), 0);
	assert_int_equal(store_read(h, buf, 0, sizeof(buf)), 0);
	assert_int_equal(buf[0], 'A');
	assert_int_equal(buf[sizeof(buf) - 1], 'A');
	store_vol_close(h);

	expect_ok(r = ask(f, "{\"op\":\"volume.delete\",\"name\":\"c1\"}"));
	json_decref(r);
	expect_ok(r = ask(f, "{\"op\":\"snapshot.delete\",\"name\":\"g@s1\"}"));
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"snapshot.delete\",\"name\":\"g@s1\"}"), "ENOENT",
	           "no snapshot \"g@s1\"");
	expect_ok(r = ask(f, "{\"op\":\"volume.delete\",\"name\":\"g\"}"));
	json_decref(r);
}

static void test_protocol_edges(void **state)
{
	struct fixture *f = *state;
	int fd, fds[20];
	char *big, big_reply[1];
	json_t *r;
	size_t i;

	expect_err(ask(f, "not json"), "EINVAL", "not valid JSON");
	expect_err(ask(f, "[1]"), "EINVAL", "not a JSON object");
	expect_err(ask(f, "{\"op\":3}"), "EINVAL", "no \"op\"");
	expect_err(ask(f, "{\"op\":\"ping\",\"op\":\"ping\"}"), "EINVAL", "duplicate");
	r = ask(f, "{\"op\":\"frob\",\"id\":[1,2]}");
	assert_int_equal(json_array_size(json_object_get(r, "id")), 2);
	expect_err(r, "EOPNOTSUPP", "unknown op \"frob\"");

	/* several requests in one write, answered in order; CRLF and blank
	 * lines tolerated */
	fd = test_connect(f->path);
	test_sends(fd, "{\"op\":\"ping\",\"id\":1}\r\n\n{\"op\":\"ping\",\"id\":2}\n");
	r = test_recv(fd);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 1);
	json_decref(r);
	r = test_recv(fd);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 2);
	json_decref(r);
	/* a last request without newline is answered at EOF */
	test_sends(fd, "{\"op\":\"ping\",\"id\":3}");
	shutdown(fd, SHUT_WR);
	r = test_recv(fd);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 3);
	json_decref(r);
	close(fd);

	/* an over-long line: EMSGSIZE, then the connection closes */
	big = malloc(100000);
	memset(big, ' ', 100000);
	fd = test_connect(f->path);
	test_send(fd, big, 100000);
	expect_err(test_recv(fd), "EMSGSIZE", "longer than");
	close(fd);
	free(big);

	/* more than the client limit: the extra ones wait, then are served */
	for (i = 0; i < 20; i++) {
		fds[i] = test_connect(f->path);
		test_sends(fds[i], "{\"op\":\"ping\"}\n");
	}
	for (i = 0; i < 16; i++) {
		expect_ok(r = test_recv(fds[i]));
		json_decref(r);
	}
	usleep(100 * 1000);
	assert_int_equal(recv(fds[19], big_reply, 1, MSG_DONTWAIT), -1); /* still queued */
	assert_int_equal(errno, EAGAIN);
	for (i = 0; i < 16; i++)
		close(fds[i]);
	for (i = 16; i < 20; i++) {
		expect_ok(r = test_recv(fds[i]));
		json_decref(r);
		close(fds[i]);
	}

	/* the teardown's control_stop must not wait for idle clients */
	fd = test_connect(f->path);
	(void)fd; /* left open on purpose; closed by exit */
}

static void test_stop_with_client(void **state)
{
	struct fixture *f = *state;
	struct timespec a, b;
	int fd = test_connect(f->path);
	char c;
	json_t *r;

	/* served (not just queued in the backlog), then idle */
	test_sends(fd, "{\"op\":\"ping\"}\n");
	expect_ok(r = test_recv(fd));
	json_decref(r);
	clock_gettime(CLOCK_MONOTONIC, &a);
	control_stop(f->c);
	f->c = NULL;
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_true(b.tv_sec - a.tv_sec < 2);
	assert_int_equal(recv(fd, &c, 1, 0), 0); /* disconnected */
	close(fd);
	assert_int_equal(access(f->path, F_OK), -1); /* socket removed */
}

/* volume.resize and volume.rename: replies, the refusals in words, and a
 * refusal leaving the volume as it was. */
static void test_resize_rename(void **state)
{
	struct fixture *f = *state;
	struct vol *h;
	json_t *r, *v;

	expect_ok(r = ask(f, "{\"op\":\"volume.create\",\"name\":\"a\",\"size\":%d}", 8 << 20));
	json_decref(r);
	r = ask(f, "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":%d}", 16 << 20);
	expect_ok(r);
	assert_int_equal(json_integer_value(json_object_get(r, "previous_size")), 8 << 20);
	v = json_object_get(r, "volume");
	assert_int_equal(json_integer_value(json_object_get(v, "size")), 16 << 20);
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":%d}", 4 << 20),
	           "EPERM", "volume.resize a: 4 MiB is smaller than its size 16 MiB");
	expect_err(ask(f, "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":%d,\"shrink\":true}",
	               (4 << 20) + 512),
	           "EINVAL", "a shrink must be to a multiple of 4096 bytes");
	expect_err(ask(f, "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":%lld}", 2ll << 30),
	           "ERANGE", "2 GiB is outside 2.0 MiB..992.2 MiB");
	expect_err(ask(f, "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":1000}"), "EINVAL",
	           "invalid size 1000");
	expect_err(ask(f, "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":4096,\"shrink\":1}"),
	           "EINVAL", "\"shrink\" is true or false");
	expect_err(ask(f, "{\"op\":\"volume.resize\",\"name\":\"no\",\"size\":4096}"), "ENOENT",
	           "no volume \"no\"");
	assert_int_equal(store_vol_open(f->st, "a", &h), 0);
	expect_err(ask(f, "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":%d,\"shrink\":true}",
	               4 << 20),
	           "EBUSY", "volume \"a\" is attached (1 open handle)");
	store_vol_close(h);
	expect_ok(r = ask(f, "{\"op\":\"volume.info\",\"name\":\"a\"}"));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "volume"), "size")),
	                 16 << 20);
	json_decref(r);
	expect_ok(r = ask(f,
	                  "{\"op\":\"volume.resize\",\"name\":\"a\",\"size\":%d,"
	                  "\"shrink\":true}",
	                  4 << 20));
	json_decref(r);

	expect_ok(r = ask(f, "{\"op\":\"snapshot.create\",\"name\":\"a@s\"}"));
	json_decref(r);
	expect_ok(r = ask(f, "{\"op\":\"volume.create\",\"name\":\"b\",\"size\":4096}"));
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"volume.rename\",\"name\":\"a\",\"new_name\":\"b\"}"), "EEXIST",
	           "volume \"b\" exists");
	expect_err(ask(f, "{\"op\":\"volume.rename\",\"name\":\"a\"}"), "EINVAL",
	           "needs \"new_name\"");
	assert_int_equal(store_vol_open(f->st, "a@s", &h), 0);
	expect_err(ask(f, "{\"op\":\"volume.rename\",\"name\":\"a\",\"new_name\":\"c\"}"), "EBUSY",
	           "snapshot \"a@s\" is attached");
	store_vol_close(h);
	r = ask(f, "{\"op\":\"volume.rename\",\"name\":\"a\",\"new_name\":\"c\"}");
	expect_ok(r);
	v = json_object_get(r, "volume");
	assert_string_equal(json_string_value(json_object_get(v, "name")), "c");
	json_decref(r);
	expect_ok(r = ask(f, "{\"op\":\"volume.info\",\"name\":\"c@s\"}"));
	json_decref(r);
}

/* pool.status, volume.stats, compact and the version in ping: shapes and
 * values the store gives. */
static void test_pool_ops(void **state)
{
	struct fixture *f = *state;
	json_t *r, *p, *arr;

	expect_ok(r = ask(f, "{\"op\":\"volume.create\",\"name\":\"a\",\"size\":%d}", 512 << 20));
	json_decref(r);
	expect_ok(r = ask(f, "{\"op\":\"snapshot.create\",\"name\":\"a@s\"}"));
	json_decref(r);
	r = ask(f, "{\"op\":\"pool.status\"}");
	expect_ok(r);
	p = json_object_get(r, "pool");
	assert_int_equal(json_integer_value(json_object_get(p, "size")), 256 << 20);
	assert_int_equal(json_integer_value(json_object_get(p, "provisioned")), 512 << 20);
	assert_true(json_real_value(json_object_get(p, "overcommit")) == 2.0);
	assert_int_equal(json_integer_value(json_object_get(p, "volumes")), 1);
	assert_int_equal(json_integer_value(json_object_get(p, "snapshots")), 1);
	assert_int_equal(json_integer_value(json_object_get(p, "format_version")), FMT_VERSION);
	assert_true(json_integer_value(json_object_get(p, "free")) > 0);
	assert_true(json_is_false(json_object_get(p, "failed")));
	assert_true(json_is_object(json_object_get(p, "compactor")));
	json_decref(r);

	r = ask(f, "{\"op\":\"volume.stats\",\"name\":\"a\"}");
	expect_ok(r);
	arr = json_object_get(r, "volumes");
	assert_int_equal(json_array_size(arr), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "name")),
	                    "a@s");
	json_decref(r);
	expect_err(ask(f, "{\"op\":\"volume.stats\",\"name\":\"zz\"}"), "ENOENT",
	           "no volume \"zz\"");

	r = ask(f, "{\"op\":\"compact\"}");
	expect_ok(r);
	p = json_object_get(r, "compact");
	assert_int_equal(json_integer_value(json_object_get(p, "blocks_moved")), 0);
	assert_true(json_is_integer(json_object_get(p, "reclaimable")));
	json_decref(r);

	r = ask(f, "{\"op\":\"ping\"}");
	expect_ok(r);
	assert_string_equal(json_string_value(json_object_get(r, "version")), COWBD_VERSION);
	json_decref(r);
}

static int test_clients_fn(void *arg, struct control_conn **out, size_t *n)
{
	int *calls = arg;
	struct control_conn *c = calloc(2, sizeof(*c));

	if (!c)
		return -ENOMEM;
	(*calls)++;
	snprintf(c[0].peer, sizeof(c[0].peer), "127.0.0.1:4000");
	snprintf(c[0].export, sizeof(c[0].export), "vm1");
	c[0].since = 1700000000;
	c[0].tls = true;
	c[0].bytes_read = 4096;
	c[0].bytes_written = 8192;
	snprintf(c[1].peer, sizeof(c[1].peer), "unix");
	*out = c;
	*n = 2;
	return 0;
}

static int test_clients_fail(void *arg, struct control_conn **out, size_t *n)
{
	return -EAGAIN;
}

/* clients: EOPNOTSUPP until the daemon gives a source; then its entries,
 * one object each (an export not chosen yet: null); its error. */
/* Walk op's pages of limit entries (extra: more request fields, starting
 * with a comma) into ids[], deleting g@s<k> for each k in del[] after the
 * first page; returns the count.  Checks each reply's cursor. */
static size_t page_walk(struct fixture *f, const char *op, const char *key, const char *extra,
                        int limit, const int *del, uint64_t *ids, size_t max)
{
	json_int_t after = 0;
	size_t n = 0, pages = 0;

	for (;;) {
		json_t *r = ask(f, "{\"op\":\"%s\",\"after\":%lld,\"limit\":%d%s}", op,
		                (long long)after, limit, extra);
		json_t *arr = json_object_get(r, key), *next = json_object_get(r, "next"), *e;
		size_t i;

		expect_ok(r);
		assert_true(json_array_size(arr) <= (size_t)limit);
		json_array_foreach(arr, i, e)
		{
			assert_true(n < max);
			ids[n++] = (uint64_t)json_integer_value(json_object_get(e, "id"));
		}
		if (!pages++)
			for (; del && *del; del++) {
				json_t *d =
				    ask(f, "{\"op\":\"snapshot.delete\",\"name\":\"g@s%d\"}", *del);
				expect_ok(d);
				json_decref(d);
			}
		if (json_is_null(next)) {
			json_decref(r);
			return n;
		}
		assert_true(json_is_integer(next));
		assert_int_equal(json_integer_value(next), ids[n - 1]);
		assert_true(json_integer_value(next) > after);
		after = json_integer_value(next);
		json_decref(r);
	}
}

/* Paged listings: id order, every entry once, deletes between pages on
 * both sides of the cursor, figures only when asked, volume pages with
 * their snapshot counts, the store's own bounds. */
static void test_list_pages(void **state)
{
	struct fixture *f = *state;
	static const int del[] = {2, 3, 4, 9, 30, 31, 40, 0}; /* 4: the cursor */
	struct store_list_req q = {.snapshots = true, .max = STORE_LIST_PAGE_MAX + 1};
	char buf[STORE_BLOCK_SIZE] = {1};
	uint64_t ids[64], want[64];
	struct store_vol_info e;
	size_t n, k = 0;
	struct vol *h;
	json_t *r, *o;
	bool more;

	expect_ok(r = ask(f, "{\"op\":\"volume.create\",\"name\":\"g\",\"size\":%d}", 16 << 20));
	json_decref(r);
	assert_int_equal(store_vol_open(f->st, "g", &h), 0);
	assert_int_equal(store_write(h, buf, 0, sizeof(buf), STORE_FUA), 0);
	store_vol_close(h);
	for (int i = 1; i <= 40; i++) {
		expect_ok(r = ask(f, "{\"op\":\"snapshot.create\",\"name\":\"g@s%d\"}", i));
		want[i] = (uint64_t)json_integer_value(
		    json_object_get(json_object_get(r, "snapshot"), "id"));
		assert_true(i == 1 || want[i] > want[i - 1]);
		json_decref(r);
		if (i == 20) { /* a volume between them: not in g's list */
			expect_ok(
			    r = ask(f, "{\"op\":\"volume.create\",\"name\":\"h\",\"size\":4096}"));
			json_decref(r);
		}
	}

	/* every snapshot once, in id order, pages of 6 (the last one short) */
	n = page_walk(f, "snapshot.list", "snapshots", ",\"volume\":\"g\"", 6, NULL, ids, 64);
	assert_int_equal(n, 40);
	for (int i = 1; i <= 40; i++)
		assert_int_equal(ids[i - 1], want[i]);
	/* deletes behind and ahead of the cursor after the first page of 4:
	 * what was left throughout is listed once, in order */
	n = page_walk(f, "snapshot.list", "snapshots", "", 4, del, ids, 64);
	for (int i = 1; i <= 40; i++) {
		bool gone = false;
		for (const int *d = del; *d; d++)
			gone |= *d == i;
		if (i <= 4) /* the first page, listed before the deletes */
			assert_int_equal(ids[k++], want[i]);
		else if (!gone)
			assert_int_equal(ids[k++], want[i]);
	}
	assert_int_equal(n, k);

	/* unique only when asked; used always: g@s1 and g@s5 map the block
	 * written before them */
	r = ask(f, "{\"op\":\"snapshot.list\",\"volume\":\"g\",\"limit\":1}");
	o = json_array_get(json_object_get(r, "snapshots"), 0);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "g@s1");
	assert_int_equal(json_integer_value(json_object_get(o, "used")), STORE_BLOCK_SIZE);
	assert_null(json_object_get(o, "unique"));
	assert_int_equal(json_integer_value(json_object_get(r, "next")), want[1]);
	json_decref(r);
	r = ask(f, "{\"op\":\"snapshot.list\",\"after\":%llu,\"limit\":1,\"figures\":true}",
	        (unsigned long long)want[1]);
	o = json_array_get(json_object_get(r, "snapshots"), 0);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "g@s5");
	assert_int_equal(json_integer_value(json_object_get(o, "used")), STORE_BLOCK_SIZE);
	assert_int_equal(json_integer_value(json_object_get(o, "unique")), 0);
	json_decref(r);

	/* volumes: g (33 snapshots left) then h, one a page */
	r = ask(f, "{\"op\":\"volume.list\",\"limit\":1}");
	o = json_array_get(json_object_get(r, "volumes"), 0);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "g");
	assert_int_equal(json_integer_value(json_object_get(o, "snapshot_count")), 33);
	assert_null(json_object_get(o, "snapshots"));
	assert_true(json_is_integer(json_object_get(r, "next")));
	json_decref(r);
	r = ask(f, "{\"op\":\"volume.list\",\"after\":%llu}", (unsigned long long)want[1]);
	assert_int_equal(json_array_size(json_object_get(r, "volumes")), 1);
	assert_true(json_is_null(json_object_get(r, "next")));
	json_decref(r);

	/* the store's bounds, below the control layer's */
	assert_int_equal(store_list_page(f->st, &q, &e, &n, &more), -EINVAL);
	q.max = 0;
	assert_int_equal(store_list_page(f->st, &q, &e, &n, &more), -EINVAL);
	q.max = 1;
	q.volume = "g@s1";
	assert_int_equal(store_list_page(f->st, &q, &e, &n, &more), -EINVAL);
	q.volume = "nope";
	assert_int_equal(store_list_page(f->st, &q, &e, &n, &more), -ENOENT);
	q.volume = "h";
	assert_int_equal(store_list_page(f->st, &q, &e, &n, &more), 0);
	assert_int_equal(n, 0);
	assert_false(more);
	expect_err(ask(f, "{\"op\":\"snapshot.list\",\"limit\":0}"), "EINVAL", "\"limit\"");
	expect_err(ask(f, "{\"op\":\"volume.list\",\"after\":-1}"), "EINVAL", "\"after\"");
}

static void test_clients(void **state)
{
	struct fixture *f = *state;
	int calls = 0;
	json_t *r, *c;

	expect_err(ask(f, "{\"op\":\"clients\"}"), "EOPNOTSUPP", "does not list its connections");
	control_set_clients_fn(f->c, test_clients_fn, &calls);
	r = ask(f, "{\"op\":\"clients\"}");
	expect_ok(r);
	assert_int_equal(calls, 1);
	assert_int_equal(json_array_size(json_object_get(r, "clients")), 2);
	c = json_array_get(json_object_get(r, "clients"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "peer")), "127.0.0.1:4000");
	assert_string_equal(json_string_value(json_object_get(c, "export")), "vm1");
	assert_int_equal(json_integer_value(json_object_get(c, "since")), 1700000000);
	assert_true(json_is_true(json_object_get(c, "tls")));
	assert_int_equal(json_integer_value(json_object_get(c, "bytes_read")), 4096);
	assert_int_equal(json_integer_value(json_object_get(c, "bytes_written")), 8192);
	c = json_array_get(json_object_get(r, "clients"), 1);
	assert_true(json_is_null(json_object_get(c, "export")));
	assert_true(json_is_false(json_object_get(c, "tls")));
	json_decref(r);
	control_set_clients_fn(f->c, test_clients_fail, NULL);
	expect_err(ask(f, "{\"op\":\"clients\"}"), "EAGAIN", "clients: ");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_socket_setup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_volume_ops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_ops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_protocol_edges, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_with_client, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resize_rename, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_ops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clients, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_list_pages, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
