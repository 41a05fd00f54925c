/* test_conn_server.c — the NBD server's event loops (conn_server.c): with
 * --loop-threads, new connections spread over the loops (the fewest first)
 * and each loop serves its own (the greeting arrives on every socket); a
 * pause ends the server's loop once every loop is quiet; a handover's
 * detach takes the connections of every loop and an attach puts them back
 * on the loops of a new server, whose loop threads stay parked until the
 * resume (and the watchdog does not take them for hung meanwhile); a stop
 * ends the loop once the last connection on any loop is gone; a resume
 * after a stop leaves the closed listeners alone; and the spread stays
 * even round after round while loop threads open what they were given.
 */
#undef NDEBUG
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "blkdev.h"
#include "conn_int.h"
#include "store.h"
#include "testpool.h"

#define NCLIENTS 6

struct fixture {
	struct blkdev *dev;
	struct store *st;
	struct ev_loop *loop;
	int cl[NCLIENTS]; /* the clients' ends */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->dev = blkdev_mem_new(64u << 20);
	assert_non_null(f->dev);
	f->st = testpool_volume(f->dev, NULL, "v", 16u << 20, NULL);
	f->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(f->loop);
	for (int i = 0; i < NCLIENTS; i++)
		f->cl[i] = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < NCLIENTS; i++)
		if (f->cl[i] >= 0)
			close(f->cl[i]);
	ev_loop_destroy(f->loop);
	store_close(f->st);
	free(f);
	return 0;
}

/* Per loop, how many connections `clients` lists; waits (up to 5 s) until
 * want are listed: the loop threads take theirs from their inboxes. */
static void loops_of(struct conn_server *s, size_t want, unsigned *per, unsigned nloops)
{
	struct conn_client *v = NULL;
	size_t n = 0;

	for (int tries = 0; tries < 5000; tries++) {
		free(v);
		assert_int_equal(conn_server_clients(s, &v, &n), 0);
		if (n == want)
			break;
		usleep(1000);
	}
	assert_int_equal(n, want);
	memset(per, 0, nloops * sizeof(*per));
	for (size_t i = 0; i < n; i++) {
		assert_true(v[i].loop < nloops);
		per[v[i].loop]++;
	}
	free(v);
}

/* The newstyle greeting (NBDMAGIC, IHAVEOPT) arrives on fd within 5 s. */
static void greeted(int fd)
{
	char buf[16];
	size_t got = 0;

	while (got < sizeof(buf)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t k;

		assert_int_equal(poll(&p, 1, 5000), 1);
		k = recv(fd, buf + got, sizeof(buf) - got, 0);
		assert_true(k > 0);
		got += (size_t)k;
	}
	assert_memory_equal(buf, "NBDMAGIC", 8);
	assert_memory_equal(buf + 8, "IHAVEOPT", 8);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	fail_msg("the server's loop did not end within %.0f s", w->repeat);
}

/* Run the server's loop until it breaks (pause quiet, stop drained); a
 * hang fails the test. */
static void run_until_break(struct ev_loop *loop)
{
	ev_timer t;

	ev_timer_init(&t, on_deadline, 10., 10.);
	ev_timer_start(loop, &t);
	ev_run(loop, 0);
	ev_timer_stop(loop, &t);
}

static struct conn_server *server(struct fixture *f, unsigned loops)
{
	struct conn_server *s;

	s = conn_server_new(f->loop, f->st);
	assert_non_null(s);
	assert_int_equal(conn_server_set_loops(s, loops), 0);
	assert_int_equal(conn_server_loops(s), loops);
	return s;
}

static void server_free(struct conn_server *s)
{
	conn_server_free(s); /* unregisters this thread, as new registered it */
}

static void test_spread_pause_handover_stop(void **state)
{
	struct fixture *f = *state;
	struct conn_server *s = server(f, 3), *s2;
	struct conn_handoff h;
	unsigned per[3], closed;

	assert_int_equal(conn_server_set_loops(s, 2), -EINVAL); /* once */
	for (int i = 0; i < NCLIENTS; i++) {
		int sv[2];

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		assert_int_equal(conn_server_adopt(s, sv[0]), 0);
		f->cl[i] = sv[1];
	}
	assert_int_equal(conn_server_count(s), NCLIENTS);
	loops_of(s, NCLIENTS, per, 3);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(per[i], 2);
	/* loop 0's are served when the server's loop runs */
	ev_run(f->loop, EVRUN_NOWAIT);
	for (int i = 0; i < NCLIENTS; i++)
		greeted(f->cl[i]);

	conn_server_pause(s, 5.);
	run_until_break(f->loop);
	assert_true(conn_server_quiet(s));
	assert_int_equal(conn_server_detach(s, &h), 0);
	assert_int_equal(h.nconns, NCLIENTS);
	assert_int_equal(conn_server_count(s), 0);
	server_free(s);

	s2 = server(f, 2);
	assert_int_equal(conn_server_attach(s2, &h, &closed), 0);
	conn_handoff_free(&h, false);
	assert_int_equal(closed, 0);
	assert_int_equal(conn_server_count(s2), NCLIENTS);
	loops_of(s2, NCLIENTS, per, 2);
	assert_int_equal(per[0], 3);
	assert_int_equal(per[1], 3);
	/* parked until the resume (the old process may still serve them),
	 * which the watchdog must not take for a hang */
	assert_true(s2->held);
	assert_int_equal(s2->nparked, 1);
	usleep(600 * 1000);
	assert_true(conn_server_loop_age_us(s2) < 100 * 1000);
	conn_server_resume(s2);
	assert_false(s2->held);

	/* A stop: connections still in the handshake close at once, on
	 * every loop, and the last one gone ends the server's loop. */
	conn_server_stop(s2);
	run_until_break(f->loop);
	assert_int_equal(conn_server_count(s2), 0);
	for (int i = 0; i < NCLIENTS; i++) {
		char c[64];
		ssize_t k;

		while ((k = recv(f->cl[i], c, sizeof(c), 0)) > 0) /* the greeting's flags */
			;
		assert_int_equal(k, 0); /* EOF */
	}
	server_free(s2);
}

/* Connections spread evenly round after round, however far a loop thread
 * has got with the sockets given it: 500 rounds of six sockets over three
 * loops, two each, every one closed before the next round.  (loop_pick
 * counted a loop's open connections plus its inbox, and missed a socket
 * its thread had taken from the inbox but not yet opened: the next one
 * went there too.  It showed as 3/2/1 here within a few rounds, and once
 * in CI in the test above.) */
#define SPREAD_ROUNDS 500

static void test_spread_rounds(void **state)
{
	struct fixture *f = *state;
	struct conn_server *s = server(f, 3);
	unsigned per[3];

	for (int r = 0; r < SPREAD_ROUNDS; r++) {
		for (int i = 0; i < NCLIENTS; i++) {
			int sv[2];

			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
			assert_int_equal(conn_server_adopt(s, sv[0]), 0);
			f->cl[i] = sv[1];
		}
		loops_of(s, NCLIENTS, per, 3);
		for (unsigned i = 0; i < 3; i++)
			if (per[i] != 2)
				fail_msg("round %d: %u, %u and %u connections on the three loops",
				         r, per[0], per[1], per[2]);
		for (int i = 0; i < NCLIENTS; i++) {
			close(f->cl[i]);
			f->cl[i] = -1;
		}
		/* loop 0's close when the server's loop runs */
		for (int t = 0; t < 5000 && conn_server_count(s); t++) {
			ev_run(f->loop, EVRUN_NOWAIT);
			usleep(1000);
		}
		assert_int_equal(conn_server_count(s), 0);
	}
	server_free(s);
}

/* A stop during a pause (SIGTERM while an upgrade waits) closes the
 * listeners; the resume that follows must not watch their old numbers. */
static void test_resume_after_stop(void **state)
{
	struct fixture *f = *state;
	struct conn_server *s = server(f, 2);
	char dir[] = "/tmp/test_conn_server.XXXXXX", path[64], err[128];

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/nbd.sock", dir);
	assert_int_equal(conn_server_listen_unix(s, path, err, sizeof(err)), 0);
	assert_true(ev_is_active(&s->lst[0].w));
	conn_server_pause(s, 5.);
	assert_false(ev_is_active(&s->lst[0].w));
	conn_server_stop(s);
	conn_server_resume(s);
	assert_false(ev_is_active(&s->lst[0].w));
	server_free(s);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_spread_pause_handover_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resume_after_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spread_rounds, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
