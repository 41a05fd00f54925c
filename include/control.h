/* control.h — the daemon's control socket (see docs/CONTROL.md).
 *
 * The daemon serves one unix stream socket on which cowctl (or any client
 * speaking newline-delimited JSON) creates, lists and deletes volumes,
 * snapshots and clones.  Every request runs a synchronous store_* control
 * call, so a success reply means the change is durable.
 *
 * Threads: control_start() starts one accept thread; each client is served
 * on its own short-lived thread.  Store control calls are serialised by a
 * control mutex (they are rare; this keeps their order obvious).
 */
#ifndef COWBD_CONTROL_H
#define COWBD_CONTROL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sockets.h"

struct store;
struct control;

/* Create the control socket at path (mode 0600; missing parent
 * directories are created mode 0750) and start serving it for st.  A stale
 * socket left by a dead daemon is replaced; a path on which a live daemon
 * answers, or which is not a socket, is refused.  Returns NULL on failure
 * with a one-line reason in err (errlen bytes, always NUL-terminated) and
 * errno set.  Blocks only briefly (probing an existing socket). */
struct control *control_start(struct store *st, const char *path, char *err, size_t errlen);

/* Serve the control socket on fd, a listening unix stream socket made by
 * someone else (socket activation: the service manager passed it), as
 * control_start does on its own.  c owns fd from now on, whatever the
 * result (made non-blocking and close-on-exec); control_stop closes it
 * and never removes the socket file (its maker owns it).  The caller has
 * checked that fd is a listening unix stream socket.  Returns NULL on
 * failure with a one-line reason in err, errno set and fd closed. */
struct control *control_start_fd(struct store *st, int fd, char *err, size_t errlen);

/* Stop accepting, let requests in progress finish and send their replies
 * (a store call is never interrupted), disconnect clients, remove the
 * socket file and free c.  After it returns no control thread touches the store, so the
 * caller may store_close().  NULL is a no-op. */
void control_stop(struct control *c);

/* One NBD connection, as the `clients` op lists it. */
struct control_conn {
	char peer[64];    /* "ADDR:PORT", "[ADDR6]:PORT" or "unix" */
	char export[144]; /* the export name in use; "" before the client chose one */
	uint64_t since;   /* accepted, unix seconds */
	bool tls;         /* TLS in use */
	uint64_t bytes_read, bytes_written; /* payload bytes read from / written to the export */
	unsigned loop;                      /* the event loop serving it (0: the daemon's own) */
};

/* Fill *out with a malloc'd array of the open connections (*n of them; the
 * caller frees it) and return 0, or -errno.  Called on a control thread,
 * with no control lock held; must not block for long (the NBD server
 * takes a consistent copy of its list, e.g. under its own lock or through
 * its loop thread). */
typedef int (*control_clients_fn)(void *arg, struct control_conn **out, size_t *n);

/* Answer the `clients` op with fn(arg) from now on (NULL: the op answers
 * EOPNOTSUPP, "this cowbd does not list its connections").  Before or
 * after control_start; arg must outlive c or the next call. */
void control_set_clients_fn(struct control *c, control_clients_fn fn, void *arg);

/* `cowctl upgrade`: hand the daemon over to a new process (main.c does
 * it; docs/ARCHITECTURE.md "Upgrades without downtime"). */
struct control_upgrade {
	char binary[4096]; /* in: the new binary; "" for the one running */
	/* out */
	int old_pid, new_pid;
	char version[64];         /* the new process's cowbd version */
	unsigned carried, closed; /* connections carried on / closed (TLS) */
	/* how long clients waited: from the pause to the new process's
	 * READY, and its parts (draining in-flight requests, closing the
	 * store, the new process opening it and taking the sockets) */
	double pause_ms, drain_ms, close_ms, takeover_ms;
	char msg[512]; /* on failure: why (the old process serves on) */
};
/* Run one upgrade, blocking until it is over: 0 (the caller's reply is
 * the last thing this process sends) or -errno with u->msg.  Called on a
 * control thread with the control op lock held: no other request runs
 * meanwhile. */
typedef int (*control_upgrade_fn)(void *arg, struct control_upgrade *u);
void control_set_upgrade_fn(struct control *c, control_upgrade_fn fn, void *arg);

/* Handover, old side: stop accepting and give the listening socket to the
 * caller (*out: its fd and the file this object would have removed; the
 * object removes nothing any more).  Clients already connected stay.
 * 0, or -EBUSY when it was handed off already. */
int control_hand_off(struct control *c, struct sockets_unix *out);
/* Take back what control_hand_off gave and accept again (the new process
 * failed). */
void control_take_back(struct control *c, const struct sockets_unix *s);
/* The store requests run on from now on; NULL: the daemon handed over,
 * every request is answered "ESHUTDOWN: ask again" (the next connection
 * reaches the new process).  Called while the upgrade op holds the op
 * lock (no request runs). */
void control_set_store(struct control *c, struct store *st);
/* Handover, new side: serve s, a listening socket received from the old
 * process, owning its file (removed at control_stop if it is still the
 * same file).  As control_start_fd otherwise. */
struct control *control_start_sock(struct store *st, const struct sockets_unix *s, char *err,
                                   size_t errlen);

/* Answer one request line (len bytes, no newline) for st as a client
 * thread would, without a socket: for tests and the fuzzer
 * (tests/fuzz/fuzz_control.c).  Returns the reply JSON, malloc'd, without
 * the newline (free() it), or NULL when out of memory.  Not serialised with
 * the requests of a control_start() instance on the same store.  Blocks
 * like the store call the request makes. */
char *control_answer_line(struct store *st, const char *line, size_t len);

#endif
