/* service.h — cowbd and its service manager (systemd, through libsystemd's
 * sd-daemon API): readiness and status notifications, the watchdog, and
 * the listening sockets socket activation passes in.
 *
 * Without a service manager (no NOTIFY_SOCKET, no LISTEN_FDS) every call
 * here is a cheap no-op and no thread runs.  With one:
 *   - READY=1 once the pool is open and every listener bound;
 *   - STATUS= while the pool opens (recovery), then "serving V volumes to C
 *     clients" refreshed every few seconds, or "pool failed: ...";
 *   - RELOADING=1 ... READY=1 around a SIGHUP reload, STOPPING=1 at stop;
 *   - WATCHDOG=1 every WATCHDOG_USEC/2 while both the event loop (a timer
 *     on it ticks) and the store's log thread (store_ping answers within
 *     the period) make progress; when either is stuck nothing is sent and
 *     the service manager restarts cowbd.
 *
 * Layer: the daemon's, beside main.c; uses the store and the connection
 * server (its client count), never the reverse.  Threads: one service
 * thread (statuses, watchdog) and, only for the test fault, one more;
 * a timer on the loop thread.  The notify calls may come from any thread.
 */
#ifndef COWBD_SERVICE_H
#define COWBD_SERVICE_H
#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct store;
struct conn_server;
struct service;

#define SERVICE_MAX_FDS 16 /* passed sockets taken (conn's listener limit) */

/* The sockets the service manager passed (LISTEN_FDS, LISTEN_FDNAMES). */
struct service_fds {
	/* NBD listeners, TCP or unix: named "nbd", unnamed ("unknown", as
	 * `systemd-socket-activate -l` passes them) or named after their
	 * .socket unit (systemd's default name) */
	int nbd[SERVICE_MAX_FDS];
	unsigned nnbd;
	int control; /* the control socket: a unix socket named "control"; -1: none */
	/* What a previous cowbd left in the fd store (`systemctl restart`,
	 * docs/OPERATIONS.md): its state, a memfd named SERVICE_FD_STATE (-1:
	 * none), and its connections, each a connected stream socket named
	 * SERVICE_FD_CONN "N" (conns[N]; -1 where none came; malloc'd). */
	int state;
	int *conns;
	size_t nconns;
};

#define SERVICE_FD_STATE "cowbd-state"
#define SERVICE_FD_CONN  "cowbd-conn."

/* Take the sockets passed to this process (sd_listen_fds_with_names; the
 * LISTEN_* variables are then unset).  Each must be a listening stream
 * socket (the control one a unix socket) with a name above.  Returns 0
 * with out filled (nothing passed: nnbd 0, control -1), or -errno with a
 * one-line reason in err naming the fd (not a socket, not a stream
 * socket, not listening, an unknown name, two control sockets, too many)
 * and every passed fd closed.  Call once. */
int service_listen_fds(struct service_fds *out, char *err, size_t errlen);

/* Is the service manager's fd store there for us (FDSTORE=N > 0, as
 * systemd 254 sets it, or the unit's Environment= does for older ones)? */
bool service_fdstore_on(void);
/* Store fd under name (FDSTORE=1; FDPOLL=0 when poll is false: a memfd).
 * 0 or -errno. */
int service_fdstore(const char *name, int fd, bool poll);
/* Take name's fds out of the store again (FDSTOREREMOVE=1). */
void service_fdstore_remove(const char *name);

/* Close the fds in f not handed on (those still >= 0), free conns. */
void service_fds_close(struct service_fds *f);

/* New service state, reading NOTIFY_SOCKET and the watchdog variables
 * (sd_watchdog_enabled: WATCHDOG_USEC, for this pid only).  NULL + errno
 * when out of memory. */
struct service *service_new(void);

/* STATUS=<fmt ...> (remembered: a reload restores it). */
void service_status(struct service *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The daemon serves: READY=1 with the first "serving ..." status; start
 * the loop timer (on loop, from its thread, before it runs) and, when a
 * service manager listens, the service thread.  Returns 0 or -errno (the
 * thread could not start) after one line. */
int service_start(struct service *sv, struct ev_loop *loop, struct store *st,
                  struct conn_server *srv);

/* RELOADING=1 (with what as the status) before a reload; READY=1 and the
 * status from before after it. */
void service_reloading(struct service *sv, const char *what);
void service_reloaded(struct service *sv);

/* MAINPID=pid: a handover (`cowctl upgrade`) made pid the daemon; this
 * process exits next.  Sent whether or not a service object exists (the
 * old one is gone by then); a no-op without a service manager. */
void service_main_pid(int pid);

/* STOPPING=1: the daemon is shutting down; the status stays "stopping". */
void service_stopping(struct service *sv);

/* TEST ONLY (COWBD_TEST_STALL_LOG=AFTER:DURATION, docs/TESTING.md): after
 * AFTER seconds hold the store's log thread for DURATION seconds
 * (store_stall_log), so a test can watch the watchdog go quiet.  After
 * service_start.  Returns 0, or -EINVAL with a one-line reason in err for
 * a spec that is not two whole numbers of seconds, or a pthread -errno. */
int service_stall_log(struct service *sv, const char *spec, char *err, size_t errlen);

/* Stop the timer and the threads (a stall in progress is waited for),
 * then free sv.  On the loop's thread after the loop has returned (or
 * before it ran), and before store_close: the threads use the store.
 * NULL is a no-op. */
void service_free(struct service *sv);

#endif
