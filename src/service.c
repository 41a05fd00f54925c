/* service.c — cowbd and its service manager: sd_notify readiness and
 * status, the watchdog, and the sockets socket activation passes in (see
 * service.h for the whole conversation).
 *
 * The watchdog's rule: WATCHDOG=1 says "this daemon makes progress", so it
 * is sent only when the threads everything depends on have shown it
 * within the last period (WATCHDOG_USEC/2): the event loop, through a
 * timer that stamps loop_tick every half period, the NBD server's loop
 * threads, through theirs (conn_server_loop_age_us), the store's log
 * thread, through store_ping on the service thread returning within the
 * period, and its syncer, through the age of the sync it runs
 * (store_sync_age_us).  A stuck log thread keeps the service thread blocked inside
 * store_ping, so nothing is sent, which is the point: the service manager
 * kills and restarts a daemon that stops sending.
 *
 * Layer: the daemon's, beside main.c (store and conn below it).
 * Threads and locks: the loop thread runs the timer (loop_tick and
 * clients are atomics it writes); the service thread refreshes the status
 * and feeds the watchdog; the fault thread exists only for the test fault.
 * lock guards status, stopping and stop; wake wakes the threads to stop.
 */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "say.h"
#include "service.h"
#include "store.h"

#define SERVICE_STATUS_US (5 * 1000000ull) /* how often "serving ..." is refreshed */
#define SERVICE_TICK_US   (1 * 1000000ull) /* the loop timer, at most */

struct service {
	bool notify;          /* NOTIFY_SOCKET is set: someone listens */
	uint64_t watchdog_us; /* WATCHDOG_USEC for this pid; 0: no watchdog */
	struct store *st;
	struct conn_server *srv;
	struct ev_loop *loop;
	ev_timer tick;
	bool ticking;
	_Atomic uint64_t loop_tick; /* monotonic µs of the timer's last run */
	_Atomic unsigned clients;   /* conn_server_count, as the timer saw it */

	pthread_mutex_t lock;
	pthread_cond_t wake; /* CLOCK_MONOTONIC; signalled when stop is set */
	bool stop;           /* the threads end */
	bool stopping;       /* STOPPING=1 sent: the status stays */
	char status[256];
	pthread_t thread, fault;
	bool has_thread, has_fault;
	unsigned fault_after, fault_secs;
};

static uint64_t service_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Wait on sv->wake until the monotonic time until_us or stop.  Caller
 * holds sv->lock.  Returns sv->stop. */
static bool service_sleep_locked(struct service *sv, uint64_t until_us)
{
	struct timespec ts = {.tv_sec = (time_t)(until_us / 1000000u),
	                      .tv_nsec = (long)(until_us % 1000000u) * 1000};

	while (!sv->stop && service_now_us() < until_us)
		pthread_cond_timedwait(&sv->wake, &sv->lock, &ts);
	return sv->stop;
}

/* Start fn(sv) on a thread that blocks every signal (signals stay with the
 * loop thread's watchers, as for the control threads).  0 or -errno. */
static int service_thread_start(struct service *sv, pthread_t *t, void *(*fn)(void *))
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(t, NULL, fn, sv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

/* ---- passed sockets ------------------------------------------------- */

/* What is wrong with fd as a listening stream socket of the wanted kind,
 * or NULL when nothing is. */
static const char *service_fd_problem(int fd, bool control)
{
	if (sd_is_socket(fd, AF_UNSPEC, 0, -1) <= 0)
		return "is not a socket";
	if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, -1) <= 0)
		return "is not a stream socket";
	if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
		return "is not listening";
	if (control && sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
		return "is not a unix socket";
	if (!control && sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0 &&
	    sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
		return "is neither a TCP nor a unix socket";
	return NULL;
}

/* NBD names: "nbd", none ("unknown"), a .socket unit's default name. */
static bool service_nbd_name(const char *name)
{
	size_t n = strlen(name);

	return !strcmp(name, "nbd") || !strcmp(name, "unknown") ||
	       (n > 7 && !strcmp(name + n - 7, ".socket"));
}

/* A stored connection cowbd-conn.N: N, or -1 when name is not one. */
static long service_conn_index(const char *name)
{
	size_t k = strlen(SERVICE_FD_CONN);
	char *end;
	long n;

	if (strncmp(name, SERVICE_FD_CONN, k) || !name[k] || name[k] == '-')
		return -1;
	errno = 0;
	n = strtol(name + k, &end, 10);
	return errno || *end || n < 0 || n > (1 << 20) ? -1 : n;
}

/* What a previous process stored: its state, or one of its connections.
 * 1 when fd was one of them (filed or closed), 0 when not. */
static int service_take_stored(struct service_fds *out, int fd, const char *name)
{
	long n = service_conn_index(name);

	if (!strcmp(name, SERVICE_FD_STATE) && out->state < 0) {
		out->state = fd;
		return 1;
	}
	if (n < 0)
		return 0;
	if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 0) <= 0 || (size_t)n >= 1u << 20) {
		close(fd); /* not a connection: dropped, removed from the store later */
		return 1;
	}
	if ((size_t)n >= out->nconns) {
		size_t cap = (size_t)n + 1;
		int *v = realloc(out->conns, cap * sizeof(*v));

		if (!v) {
			close(fd);
			return 1;
		}
		for (size_t i = out->nconns; i < cap; i++)
			v[i] = -1;
		out->conns = v;
		out->nconns = cap;
	}
	if (out->conns[n] >= 0)
		close(out->conns[n]);
	out->conns[n] = fd;
	return 1;
}

/* File the passed fd under its name.  0 or -errno with err set. */
static int service_take_fd(struct service_fds *out, int fd, const char *name, char *err,
                           size_t errlen)
{
	bool control = !strcmp(name, "control");
	const char *why;

	if (service_take_stored(out, fd, name))
		return 0;
	if (!control && !service_nbd_name(name)) {
		snprintf(err, errlen,
		         "passed socket fd %d has an unknown name \"%s\" (want nbd or control)", fd,
		         name);
		return -EINVAL;
	}
	if ((why = service_fd_problem(fd, control))) {
		snprintf(err, errlen, "passed fd %d (\"%s\") %s: want a listening %s stream socket",
		         fd, name, why, control ? "unix" : "TCP or unix");
		return -ENOTSOCK;
	}
	if (control && out->control >= 0) {
		snprintf(err, errlen, "two passed sockets are named control (fds %d and %d)",
		         out->control, fd);
		return -EINVAL;
	}
	if (control)
		out->control = fd;
	else
		out->nbd[out->nnbd++] = fd;
	return 0;
}

int service_listen_fds(struct service_fds *out, char *err, size_t errlen)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names), r = 0, stored = 0;

	out->nnbd = 0;
	out->control = -1;
	out->state = -1;
	out->conns = NULL;
	out->nconns = 0;
	if (n < 0) {
		snprintf(err, errlen, "cannot take the sockets the service manager passed: %s",
		         strerror(-n));
		return n;
	}
	for (int i = 0; i < n && names && names[i]; i++)
		if (service_conn_index(names[i]) >= 0 || !strcmp(names[i], SERVICE_FD_STATE))
			stored++;
	if (n - stored > SERVICE_MAX_FDS + 1) {
		snprintf(err, errlen, "%d sockets passed (at most %d NBD and one control)",
		         n - stored, SERVICE_MAX_FDS);
		r = -EMFILE;
	}
	for (int i = 0; i < n && !r; i++)
		r = service_take_fd(out, SD_LISTEN_FDS_START + i,
		                    names && names[i] ? names[i] : "unknown", err, errlen);
	if (r < 0) {
		for (int i = 0; i < n; i++)
			close(SD_LISTEN_FDS_START + i);
		free(out->conns);
		out->nnbd = 0;
		out->control = -1;
		out->state = -1;
		out->conns = NULL;
		out->nconns = 0;
	}
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

void service_fds_close(struct service_fds *f)
{
	for (unsigned i = 0; i < f->nnbd; i++)
		if (f->nbd[i] >= 0)
			close(f->nbd[i]);
	f->nnbd = 0;
	if (f->control >= 0)
		close(f->control);
	f->control = -1;
	if (f->state >= 0)
		close(f->state);
	f->state = -1;
	for (size_t i = 0; i < f->nconns; i++)
		if (f->conns[i] >= 0)
			close(f->conns[i]);
	free(f->conns);
	f->conns = NULL;
	f->nconns = 0;
}

bool service_fdstore_on(void)
{
	const char *n = getenv("FDSTORE");

	return getenv("NOTIFY_SOCKET") && n && atoi(n) > 0;
}

int service_fdstore(const char *name, int fd, bool poll)
{
	char msg[128];
	int r;

	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s%s", name, poll ? "" : "\nFDPOLL=0");
	r = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	return r > 0 ? 0 : r < 0 ? r : -ENOTCONN;
}

void service_fdstore_remove(const char *name)
{
	sd_notifyf(0, "FDSTOREREMOVE=1\nFDNAME=%s", name);
}

/* ---- notifications -------------------------------------------------- */

struct service *service_new(void)
{
	struct service *sv = calloc(1, sizeof(*sv));
	pthread_condattr_t ca;
	uint64_t usec = 0;

	if (!sv)
		return NULL;
	sv->notify = getenv("NOTIFY_SOCKET") != NULL;
	if (sv->notify && sd_watchdog_enabled(0, &usec) > 0)
		sv->watchdog_us = usec;
	pthread_mutex_init(&sv->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sv->wake, &ca);
	pthread_condattr_destroy(&ca);
	return sv;
}

/* Send the remembered status with the extra fields before it ("" or
 * "READY=1\n"). */
static void service_send_status(struct service *sv, const char *extra)
{
	char msg[sizeof(sv->status) + 64];

	pthread_mutex_lock(&sv->lock);
	snprintf(msg, sizeof(msg), "%sSTATUS=%s", extra, sv->status);
	pthread_mutex_unlock(&sv->lock);
	sd_notify(0, msg);
}

void service_status(struct service *sv, const char *fmt, ...)
{
	va_list ap;

	if (!sv->notify)
		return;
	pthread_mutex_lock(&sv->lock);
	va_start(ap, fmt);
	vsnprintf(sv->status, sizeof(sv->status), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&sv->lock);
	service_send_status(sv, "");
}

/* "serving V volumes ... to C clients", or what keeps the pool from it. */
static void service_describe(struct service *sv, char *out, size_t n)
{
	struct store_vol_info *v;
	struct store_stats ss;
	size_t nv, vols = 0, snaps = 0;
	unsigned c = atomic_load(&sv->clients);

	store_get_stats(sv->st, &ss);
	if (ss.failed) {
		snprintf(out, n,
		         "pool failed: a write or sync failed; writes and flushes fail "
		         "until restart");
		return;
	}
	if (store_list(sv->st, &v, &nv) == 0) {
		for (size_t i = 0; i < nv; i++)
			if (v[i].snapshot)
				snaps++;
			else
				vols++;
		free(v);
	}
	snprintf(out, n, "serving %zu volume%s and %zu snapshot%s to %u client%s%s", vols,
	         vols == 1 ? "" : "s", snaps, snaps == 1 ? "" : "s", c, c == 1 ? "" : "s",
	         ss.read_only_fallback ? " (read-only: recovery could not write a checkpoint)"
	         : ss.read_only        ? " (read-only)"
	                               : "");
}

/* Describe the pool now and send it, with extra ("" or "READY=1\n")
 * before it, if it changed or extra is given (never once stopping). */
static void service_refresh(struct service *sv, const char *extra)
{
	char now[sizeof(sv->status)];
	bool send;

	service_describe(sv, now, sizeof(now));
	pthread_mutex_lock(&sv->lock);
	send = !sv->stopping && (extra[0] || strcmp(now, sv->status));
	if (send)
		memcpy(sv->status, now, sizeof(now));
	pthread_mutex_unlock(&sv->lock);
	if (send)
		service_send_status(sv, extra);
}

void service_reloading(struct service *sv, const char *what)
{
	if (sv->notify)
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
		           (unsigned long long)service_now_us(), what);
}

void service_reloaded(struct service *sv)
{
	if (sv->notify)
		service_send_status(sv, "READY=1\n");
}

void service_main_pid(int pid)
{
	if (getenv("NOTIFY_SOCKET"))
		sd_notifyf(0, "MAINPID=%d\nSTATUS=handed over to pid %d", pid, pid);
}

void service_stopping(struct service *sv)
{
	if (!sv->notify)
		return;
	pthread_mutex_lock(&sv->lock);
	sv->stopping = true;
	snprintf(sv->status, sizeof(sv->status), "stopping: finishing in-flight requests");
	pthread_mutex_unlock(&sv->lock);
	service_send_status(sv, "STOPPING=1\n");
}

/* ---- the loop timer and the service thread --------------------------- */

static void service_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct service *sv = w->data;

	atomic_store(&sv->loop_tick, service_now_us());
	atomic_store(&sv->clients, conn_server_count(sv->srv));
}

/* One watchdog round begun at t0: ping the log thread (blocking while it
 * is stuck), check the loop's stamp, and send WATCHDOG=1 only if both
 * answered within the period.  *stuck: what was stuck last round (for
 * one log line per change). */
static void service_watchdog_round(struct service *sv, uint64_t t0, const char **stuck)
{
	uint64_t period = sv->watchdog_us / 2, t1, age;
	const char *now = NULL;

	store_ping(sv->st); /* an error still proves the log thread runs */
	t1 = service_now_us();
	age = t1 - t0;
	if (age <= period) {
		age = t1 - atomic_load(&sv->loop_tick);
		if (age > period) {
			now = "the event loop";
		} else if (sv->srv && (age = conn_server_loop_age_us(sv->srv)) > period) {
			now = "an event loop thread";
		} else if ((age = store_sync_age_us(sv->st)) > period) {
			now = "the syncer (a FLUSH's device sync)";
		}
	} else {
		now = "the log thread";
	}
	if (now && now != *stuck)
		say_error("watchdog: %s made no progress for %.1f s (limit %.1f s): not "
		          "notifying, so the service manager restarts cowbd unless it recovers",
		          now, age / 1e6, period / 1e6);
	else if (!now && *stuck)
		say_warn("watchdog: %s makes progress again; notifying", *stuck);
	*stuck = now;
	if (!now)
		sd_notify(0, "WATCHDOG=1");
}

/* Every round (half the watchdog period, or the status interval): feed the
 * watchdog, and refresh the status when it is due. */
static void *service_main(void *arg)
{
	struct service *sv = arg;
	uint64_t period = sv->watchdog_us ? sv->watchdog_us / 2 : SERVICE_STATUS_US;
	uint64_t t0 = service_now_us(), next_status = t0 + SERVICE_STATUS_US;
	const char *stuck = NULL;
	bool stop;

	do {
		if (sv->watchdog_us)
			service_watchdog_round(sv, t0, &stuck);
		if (service_now_us() >= next_status) {
			service_refresh(sv, "");
			next_status = service_now_us() + SERVICE_STATUS_US;
		}
		pthread_mutex_lock(&sv->lock);
		t0 += period;
		stop = service_sleep_locked(sv, t0);
		pthread_mutex_unlock(&sv->lock);
		if (service_now_us() > t0 + period)
			t0 = service_now_us(); /* a long stall: no burst of rounds */
	} while (!stop);
	return NULL;
}

int service_start(struct service *sv, struct ev_loop *loop, struct store *st,
                  struct conn_server *srv)
{
	double tick = SERVICE_TICK_US / 1e6;
	int r;

	sv->st = st;
	sv->srv = srv;
	sv->loop = loop;
	if (!sv->notify)
		return 0;
	if (sv->watchdog_us && sv->watchdog_us / 4 < SERVICE_TICK_US)
		tick = sv->watchdog_us / 4 / 1e6;
	atomic_store(&sv->loop_tick, service_now_us());
	ev_timer_init(&sv->tick, service_on_tick, 0., tick);
	sv->tick.data = sv;
	ev_timer_start(loop, &sv->tick);
	sv->ticking = true;
	service_refresh(sv, "READY=1\n");
	if (sv->watchdog_us)
		say_info("watchdog: notifying every %.1f s while the loop and the log thread "
		         "make progress",
		         sv->watchdog_us / 2e6);
	r = service_thread_start(sv, &sv->thread, service_main);
	if (r) {
		say_error("cannot start the service thread: %s", strerror(-r));
		return r;
	}
	sv->has_thread = true;
	return 0;
}

/* ---- the test fault -------------------------------------------------- */

/* TEST ONLY: after fault_after seconds, hold the log thread fault_secs. */
static void *service_fault_main(void *arg)
{
	struct service *sv = arg;
	bool stop;

	pthread_mutex_lock(&sv->lock);
	stop = service_sleep_locked(sv, service_now_us() + sv->fault_after * 1000000ull);
	pthread_mutex_unlock(&sv->lock);
	if (!stop)
		store_stall_log(sv->st, sv->fault_secs);
	return NULL;
}

int service_stall_log(struct service *sv, const char *spec, char *err, size_t errlen)
{
	unsigned after, secs;
	int end = 0, r;

	if (strspn(spec, "0123456789:") != strlen(spec) ||
	    sscanf(spec, "%u:%u%n", &after, &secs, &end) != 2 || spec[end] || secs > 3600 ||
	    after > 3600) {
		snprintf(err, errlen,
		         "bad COWBD_TEST_STALL_LOG=%s (want AFTER:DURATION, whole seconds)", spec);
		return -EINVAL;
	}
	sv->fault_after = after;
	sv->fault_secs = secs;
	r = service_thread_start(sv, &sv->fault, service_fault_main);
	if (r) {
		snprintf(err, errlen, "cannot start the stall fault: %s", strerror(-r));
		return r;
	}
	sv->has_fault = true;
	say_warn("TEST FAULT: the log thread will be held for %u s, %u s from now "
	         "(COWBD_TEST_STALL_LOG)",
	         secs, after);
	return 0;
}

void service_free(struct service *sv)
{
	if (!sv)
		return;
	pthread_mutex_lock(&sv->lock);
	sv->stop = true;
	pthread_cond_broadcast(&sv->wake);
	pthread_mutex_unlock(&sv->lock);
	if (sv->has_thread)
		pthread_join(sv->thread, NULL);
	if (sv->has_fault)
		pthread_join(sv->fault, NULL);
	if (sv->ticking)
		ev_timer_stop(sv->loop, &sv->tick);
	pthread_cond_destroy(&sv->wake);
	pthread_mutex_destroy(&sv->lock);
	free(sv);
}
