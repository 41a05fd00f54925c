/* conn_server.c — the NBD server object: its listeners (bound by sockets.c
 * or passed in by the service manager), accepting and adopting connections
 * under --max-connections, the limits and TLS mode every connection
 * inherits, proto's window on the store (the exports table, under the
 * per-export access rules of config.h), and stopping in order (stop
 * accepting, let connections drain, cut them off after a grace period).
 *
 * Access rules are checked when an export is opened (NBD_OPT_GO, INFO,
 * EXPORT_NAME) or listed, never per request: a connection already in
 * transmission keeps its export when the rules change at SIGHUP, and a
 * refused client gets exactly the answer an unknown name gets.
 *
 * Layer: above conn.c (one connection) and below the daemon's main.
 * Threads: the loop thread only. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "conn_int.h"
#include "say.h"

/* What only this file keeps for a server, beside the struct conn_int.h
 * shares with conn.c: conn_server_new allocates this, the shared struct
 * first, and server_priv() finds it again. */
struct server_priv {
	struct conn_server s;
	/* Access rules (config.h), NULL: none.  Read at each export open or
	 * list and replaced by conn_server_set_access, all on the loop
	 * thread: a swap can never be seen half done, and the caller may
	 * free the old rules as soon as the call returns. */
	const struct config *access;
};

static struct server_priv *server_priv(struct conn_server *s)
{
	return (struct server_priv *)((char *)s - offsetof(struct server_priv, s));
}

/* ---- exports: proto's window on the store ------------------------- */

/* A client's export name made safe for a log line: printable ASCII, cut
 * at 80 bytes. */
static const char *log_name(const char *name, char *buf, size_t len)
{
	size_t i;

	for (i = 0; name[i] && i < 80 && i + 4 < len; i++)
		buf[i] = name[i] >= 0x20 && name[i] < 0x7f ? name[i] : '?';
	strcpy(buf + i, name[i] ? "..." : "");
	return buf;
}

/* The client's address (AF_UNSPEC when it cannot be had: no network rule
 * then matches) and TLS identity (NULL: none), for the access rules. */
static const char *conn_who(const struct conn *c, struct sockaddr_storage *peer, char *id,
                            size_t idlen)
{
	socklen_t len = sizeof(*peer);

	memset(peer, 0, sizeof(*peer));
	if (getpeername(c->fd, (struct sockaddr *)peer, &len) < 0)
		peer->ss_family = AF_UNSPEC;
	return c->tls ? tls_peer_identity(c->tls, id, idlen) : NULL;
}

/* Open export name for c, or refuse it with -ENOENT, the same answer an
 * unknown name gets, so a client outside the rules learns nothing; each
 * refusal is logged once with its reason. */
static int export_open(void *ctx, const char *name, struct proto_export *out)
{
	struct conn *c = ctx;
	const struct config_export *rule = config_export_find(server_priv(c->srv)->access, name);
	struct sockaddr_storage peer;
	char id[512], shown[96];
	const char *who, *why;
	struct vol *v;
	int err;

	err = store_vol_open(c->srv->st, name, &v);
	if (err == -EINVAL || err == -ENOENT) {
		say_info("%s: export %s refused: unknown export", c->peer,
		         log_name(name, shown, sizeof(shown)));
		return -ENOENT;
	}
	if (err)
		return err;
	who = conn_who(c, &peer, id, sizeof(id));
	why = config_export_denies(rule, (struct sockaddr *)&peer, who);
	if (why) {
		say_info("%s: export %s refused: access denied (%s)", c->peer, name, why);
		store_vol_close(v);
		return -ENOENT;
	}
	out->size = store_vol_size(v);
	out->read_only = store_vol_readonly(v) || (rule && rule->read_only);
	out->handle = v;
	snprintf(out->desc, sizeof(out->desc), "%s, %llu bytes",
	         store_vol_readonly(v) ? "snapshot (read-only)"
	         : out->read_only      ? "volume (read-only)"
	                               : "volume",
	         (unsigned long long)out->size);
	return 0;
}

static void export_close(void *ctx, void *handle)
{
	store_vol_close(handle);
}

/* The exports c may use (others are left out, as if they did not exist). */
static int export_list(void *ctx, int (*emit)(void *, const char *, const char *), void *arg)
{
	struct conn *c = ctx;
	const struct config *access = server_priv(c->srv)->access;
	struct sockaddr_storage peer;
	struct store_vol_info *v;
	char id[512];
	const char *who = conn_who(c, &peer, id, sizeof(id));
	size_t n;
	int err = store_list_names(c->srv->st, &v, &n); /* the loop thread: no tree walk */

	if (err)
		return err;
	for (size_t i = 0; i < n && !err; i++) {
		const struct config_export *rule = config_export_find(access, v[i].name);
		char desc[96];

		if (config_export_denies(rule, (struct sockaddr *)&peer, who))
			continue;
		snprintf(desc, sizeof(desc), "%s, %llu bytes",
		         v[i].snapshot             ? "snapshot (read-only)"
		         : rule && rule->read_only ? "volume (read-only)"
		                                   : "volume",
		         (unsigned long long)v[i].size);
		err = emit(arg, v[i].name, desc);
	}
	free(v);
	return err;
}

const struct proto_ops conn_server_export_ops = {
    .open = export_open,
    .close = export_close,
    .list = export_list,
};

/* ---- loops -------------------------------------------------------------
 * The server's own loop serves connections like any other (loops[0]); the
 * loop threads each run theirs.  A new connection goes to the loop with
 * the fewest (counting sockets still in an inbox), ties in turn; a loop
 * thread takes it from its inbox when its ctl watcher fires.  What acts on
 * every connection at once (stop, pause, resume, handover, new limits or
 * access rules) runs on the server's thread between server_park() and
 * server_unpark(): every loop thread is then out of its ev_run and waits,
 * so touching its connections and its loop from here is as safe as from
 * its own thread. */

static void on_quiet_check(struct ev_loop *loop, ev_prepare *w, int revents);

static void loop_init(struct conn_server *s, struct conn_loop *lp, struct ev_loop *loop)
{
	lp->srv = s;
	lp->loop = loop;
	atomic_init(&lp->done, NULL);
	atomic_init(&lp->quiet, false);
	ev_async_init(&lp->wake, conn_on_wake);
	lp->wake.data = lp;
	ev_async_start(loop, &lp->wake);
	ev_prepare_init(&lp->quiet_w, on_quiet_check);
	lp->quiet_w.data = lp;
}

void conn_server_uncount(struct conn_server *s)
{
	if (atomic_fetch_sub(&s->nconns, 1) == 1 && s->stopping)
		ev_async_send(s->loop, &s->poke);
}

/* A connection given to lp did not start there. */
static void loop_unassign(struct conn_loop *lp)
{
	atomic_fetch_sub(&lp->assigned, 1);
}

/* Serve fd, counted already, on lp (its thread, or parked). */
static void loop_serve(struct conn_loop *lp, int fd)
{
	struct conn_server *s = lp->srv;

	if (s->stopping) {
		close(fd);
		conn_server_uncount(s);
		loop_unassign(lp);
	} else if (conn_new(lp, fd)) {
		conn_server_uncount(s);
		loop_unassign(lp);
	} else {
		s->accepted++;
	}
}

/* Serve what lp's inbox holds (lp's thread, or parked). */
static void loop_adopt_inbox(struct conn_loop *lp)
{
	struct conn_server *s = lp->srv;
	size_t n;
	int *fds;

	pthread_mutex_lock(&s->park_lock);
	fds = lp->inbox;
	n = lp->ninbox;
	lp->inbox = NULL;
	lp->ninbox = lp->capinbox = 0;
	pthread_mutex_unlock(&s->park_lock);
	for (size_t i = 0; i < n; i++)
		loop_serve(lp, fds[i]);
	free(fds);
}

/* A loop thread's ctl: new sockets, or the server wants it parked. */
static void on_loop_ctl(struct ev_loop *loop, ev_async *w, int revents)
{
	struct conn_loop *lp = w->data;
	struct conn_server *s = lp->srv;
	bool park, quit;

	/* A park asked after this look sends ctl again. */
	pthread_mutex_lock(&s->park_lock);
	park = s->park;
	quit = s->quit;
	pthread_mutex_unlock(&s->park_lock);
	if (!quit) /* else conn_server_free closes what the inbox holds */
		loop_adopt_inbox(lp);
	if (park || quit)
		ev_break(loop, EVBREAK_ALL);
}

static void on_loop_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn_loop *lp = w->data;

	atomic_store_explicit(&lp->tick, mono_ns() / 1000, memory_order_relaxed);
}

static void *loop_thread(void *arg)
{
	struct conn_loop *lp = arg;
	struct conn_server *s = lp->srv;
	sigset_t all;

	/* Signals are the server's thread's (its loop's watchers). */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	store_thread_register(); /* READs and BLOCK_STATUS are served here too */
	pthread_mutex_lock(&s->park_lock);
	while (!s->quit) {
		if (s->park) {
			if (!lp->parked) {
				lp->parked = true;
				s->nparked++;
				pthread_cond_broadcast(&s->park_cv);
			}
			pthread_cond_wait(&s->park_cv, &s->park_lock);
			continue;
		}
		pthread_mutex_unlock(&s->park_lock);
		atomic_store_explicit(&lp->tick, mono_ns() / 1000, memory_order_relaxed);
		ev_run(lp->loop, 0);
		pthread_mutex_lock(&s->park_lock);
	}
	pthread_mutex_unlock(&s->park_lock);
	store_thread_unregister();
	return NULL;
}

/* Every loop thread out of its loop and waiting; what their inboxes held
 * is served (on their loops) before this returns.  The server's thread. */
static void server_park(struct conn_server *s)
{
	if (s->nloops < 2 || s->held)
		return;
	pthread_mutex_lock(&s->park_lock);
	s->park = true;
	pthread_mutex_unlock(&s->park_lock);
	for (unsigned i = 1; i < s->nloops; i++)
		ev_async_send(s->loops[i].loop, &s->loops[i].ctl);
	pthread_mutex_lock(&s->park_lock);
	while (s->nparked < s->nloops - 1)
		pthread_cond_wait(&s->park_cv, &s->park_lock);
	pthread_mutex_unlock(&s->park_lock);
	for (unsigned i = 1; i < s->nloops; i++)
		loop_adopt_inbox(&s->loops[i]);
}

static void server_unpark(struct conn_server *s)
{
	if (s->nloops < 2 || s->held)
		return;
	pthread_mutex_lock(&s->park_lock);
	s->park = false;
	s->nparked = 0;
	for (unsigned i = 1; i < s->nloops; i++) {
		s->loops[i].parked = false;
		atomic_store_explicit(&s->loops[i].tick, mono_ns() / 1000, memory_order_relaxed);
	}
	pthread_cond_broadcast(&s->park_cv);
	pthread_mutex_unlock(&s->park_lock);
}

void conn_server_set_read_views(struct conn_server *s, enum conn_read_views mode)
{
	atomic_store_explicit(&s->read_views, (int)mode, memory_order_relaxed);
}

int conn_server_set_loops(struct conn_server *s, unsigned n)
{
	char name[16];
	int err = 0;

	if (n == 0 || n > CONN_MAX_LOOPS || s->nloops > 1 || s->nlst || atomic_load(&s->nconns))
		return -EINVAL;
	for (; s->nloops < n; s->nloops++) {
		struct conn_loop *lp = &s->loops[s->nloops];
		struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);

		if (!loop) {
			err = -ENOMEM;
			break;
		}
		loop_init(s, lp, loop);
		ev_async_init(&lp->ctl, on_loop_ctl);
		lp->ctl.data = lp;
		ev_async_start(loop, &lp->ctl);
		ev_timer_init(&lp->tick_w, on_loop_tick, CONN_LOOP_TICK, CONN_LOOP_TICK);
		lp->tick_w.data = lp;
		ev_timer_start(loop, &lp->tick_w);
		atomic_init(&lp->tick, mono_ns() / 1000);
		err = -pthread_create(&lp->thr, NULL, loop_thread, lp);
		if (err) {
			ev_loop_destroy(loop);
			break;
		}
		snprintf(name, sizeof(name), "cowbd-loop%u", s->nloops);
		pthread_setname_np(lp->thr, name); /* for top -H and the tests */
	}
	return err;
}

unsigned conn_server_loops(const struct conn_server *s)
{
	return s->nloops;
}

uint64_t conn_server_loop_age_us(struct conn_server *s)
{
	uint64_t now = mono_ns() / 1000, age = 0;

	/* A parked loop waits for the server (a handover's attach holds them
	 * until the resume): not a hang.  Its tick is fresh once it runs. */
	pthread_mutex_lock(&s->park_lock);
	for (unsigned i = 1; i < s->nloops; i++) {
		uint64_t t = atomic_load_explicit(&s->loops[i].tick, memory_order_relaxed);

		if (!s->loops[i].parked && now > t && now - t > age)
			age = now - t;
	}
	pthread_mutex_unlock(&s->park_lock);
	return age;
}

/* The loop for a new connection, given it: the fewest given and not gone,
 * ties in turn.  (Counting open plus queued missed a socket a loop thread
 * had taken from its inbox and not yet opened: two went to that loop.) */
static struct conn_loop *loop_pick(struct conn_server *s)
{
	unsigned best = 0, best_n = UINT_MAX;

	for (unsigned k = 0; k < s->nloops; k++) {
		unsigned i = (s->next_loop + k) % s->nloops;
		unsigned n = atomic_load(&s->loops[i].assigned);

		if (n < best_n) {
			best = i;
			best_n = n;
		}
	}
	s->next_loop = (best + 1) % s->nloops;
	atomic_fetch_add(&s->loops[best].assigned, 1);
	return &s->loops[best];
}

/* Queue fd (counted) for lp's thread: 0, or -ENOMEM. */
static int loop_post(struct conn_loop *lp, int fd)
{
	struct conn_server *s = lp->srv;

	pthread_mutex_lock(&s->park_lock);
	if (lp->ninbox == lp->capinbox) {
		size_t cap = lp->capinbox ? 2 * lp->capinbox : 16;
		int *v = realloc(lp->inbox, cap * sizeof(*v));

		if (!v) {
			pthread_mutex_unlock(&s->park_lock);
			return -ENOMEM;
		}
		lp->inbox = v;
		lp->capinbox = cap;
	}
	lp->inbox[lp->ninbox++] = fd;
	pthread_mutex_unlock(&s->park_lock);
	ev_async_send(lp->loop, &lp->ctl);
	return 0;
}

/* ---- accepting ---------------------------------------------------------- */

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn_server *s = w->data;

	for (int i = 0; i < 64 && !s->stopping; i++) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				say_warn("accept: %s", strerror(errno));
			return;
		}
		conn_server_adopt(s, fd);
	}
}

int conn_server_adopt(struct conn_server *s, int fd)
{
	int fl = fcntl(fd, F_GETFL);
	unsigned n = atomic_load(&s->nconns);
	struct conn_loop *lp;
	int r;

	if (s->stopping) {
		close(fd);
		return -ESHUTDOWN;
	}
	if (n >= s->lim.max_conns) {
		/* Over the limit: hang up at once (an EOF the client sees now,
		 * rather than a connect that hangs in the backlog). */
		if (s->refused++ % 1000 == 0)
			say_warn("%u connections: refusing more (--max-connections; "
			         "%lu refused so far)",
			         n, s->refused);
		close(fd);
		return -EMFILE;
	}
	/* A handed-over socket may be blocking; the loop must never block. */
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	atomic_fetch_add(&s->nconns, 1);
	lp = loop_pick(s);
	if (lp == &s->loops[0]) {
		r = conn_new(lp, fd);
		if (r) {
			conn_server_uncount(s);
			loop_unassign(lp);
		} else {
			s->accepted++;
		}
		return r;
	}
	r = loop_post(lp, fd);
	if (r) {
		say_warn("out of memory for a new connection");
		close(fd);
		conn_server_uncount(s);
		loop_unassign(lp);
	}
	return r;
}

/* ---- server --------------------------------------------------------- */

static void on_grace(struct ev_loop *loop, ev_timer *w, int revents);
static void on_poke(struct ev_loop *loop, ev_async *w, int revents);
static void on_pause_timeout(struct ev_loop *loop, ev_timer *w, int revents);

struct conn_server *conn_server_new(struct ev_loop *loop, struct store *st)
{
	struct server_priv *sp = calloc(1, sizeof(*sp));
	struct conn_server *s = sp ? &sp->s : NULL;

	if (!s)
		return NULL;
	s->nloops = 1;
	s->loop = loop;
	s->st = st;
	pthread_mutex_init(&s->list_lock, NULL);
	pthread_mutex_init(&s->park_lock, NULL);
	pthread_cond_init(&s->park_cv, NULL);
	atomic_init(&s->nconns, 0);
	conn_server_set_limits(s, NULL);
	store_thread_register(); /* this thread calls store_read_try/store_map */
	loop_init(s, &s->loops[0], loop);
	ev_timer_init(&s->grace, on_grace, CONN_STOP_GRACE, 0.);
	s->grace.data = s;
	ev_async_init(&s->poke, on_poke);
	s->poke.data = s;
	ev_async_start(loop, &s->poke);
	ev_init(&s->pause_tmo, on_pause_timeout);
	s->pause_tmo.data = s;
	return s;
}

/* Start accepting on sock (a listening socket, now the server's). */
static void add_listener(struct conn_server *s, const struct sockets_unix *sock)
{
	struct listener *l = &s->lst[s->nlst++];

	l->sock = *sock;
	ev_io_init(&l->w, on_accept, sock->fd, EV_READ);
	l->w.data = s;
	ev_io_start(s->loop, &l->w);
}

int conn_server_listen_tcp(struct conn_server *s, const char *hostport, char *err, size_t errlen)
{
	int fds[CONN_MAX_LISTENERS];
	unsigned n;
	int rc = sockets_listen_tcp(hostport, fds, CONN_MAX_LISTENERS - s->nlst, &n, err, errlen);

	if (rc)
		return rc;
	for (unsigned i = 0; i < n; i++)
		add_listener(s, &(struct sockets_unix){.fd = fds[i]});
	return 0;
}

int conn_server_listen_unix(struct conn_server *s, const char *path, char *err, size_t errlen)
{
	struct sockets_unix sock;
	int rc;

	if (s->nlst == CONN_MAX_LISTENERS) {
		snprintf(err, errlen, "too many listen addresses (max %d)", CONN_MAX_LISTENERS);
		return -EMFILE;
	}
	rc = sockets_listen_unix(&sock, path, 0, SOCKETS_NONBLOCK, err, errlen);
	if (!rc)
		add_listener(s, &sock);
	return rc;
}

int conn_server_listen_fd(struct conn_server *s, int fd, char *err, size_t errlen)
{
	int fl = fcntl(fd, F_GETFL), r;

	if (s->nlst == CONN_MAX_LISTENERS) {
		snprintf(err, errlen, "too many listen sockets (max %d)", CONN_MAX_LISTENERS);
		close(fd);
		return -EMFILE;
	}
	/* A passed socket is usually blocking, and on_accept accepts until
	 * EAGAIN: the loop must never block in accept(). */
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, errlen, "listen socket fd %d: %s", fd, strerror(errno));
		close(fd);
		return r;
	}
	/* No path: the file of a passed unix socket is its maker's to remove. */
	add_listener(s, &(struct sockets_unix){.fd = fd});
	return 0;
}

static void on_grace(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn_server *s = w->data;
	struct conn *c, *next;

	say_warn("shutdown: cutting off %u connection(s) still busy", atomic_load(&s->nconns));
	server_park(s);
	for (c = s->conns; c; c = next) {
		next = c->next;
		conn_cut(c);
	}
	server_unpark(s);
}

/* The server's ev_async, sent by any loop: stopping and the last
 * connection went, or a pausing loop went quiet. */
static void on_poke(struct ev_loop *loop, ev_async *w, int revents)
{
	struct conn_server *s = w->data;

	if (s->stopping && atomic_load(&s->nconns) == 0) {
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	if (!s->pausing || s->stopping)
		return;
	for (unsigned i = 0; i < s->nloops; i++)
		if (!atomic_load(&s->loops[i].quiet))
			return;
	ev_timer_stop(loop, &s->pause_tmo);
	ev_break(loop, EVBREAK_ALL);
}

void conn_server_stop(struct conn_server *s)
{
	struct conn *c, *next;

	if (s->stopping)
		return;
	server_park(s);
	s->stopping = true;
	for (unsigned i = 0; i < s->nlst; i++) {
		ev_io_stop(s->loop, &s->lst[i].w);
		close(s->lst[i].sock.fd);
		s->lst[i].sock.fd = -1; /* the file goes in conn_server_free */
	}
	for (c = s->conns; c; c = next) {
		next = c->next;
		conn_stop(c);
	}
	server_unpark(s);
	if (atomic_load(&s->nconns) == 0) {
		ev_break(s->loop, EVBREAK_ALL);
		return;
	}
	ev_timer_start(s->loop, &s->grace);
}

void conn_server_set_tls(struct conn_server *s, struct tls_creds *creds, bool require)
{
	server_park(s);
	s->tls_creds = creds;
	s->tls_mode = !creds ? PROTO_TLS_OFF : require ? PROTO_TLS_REQUIRE : PROTO_TLS_ALLOW;
	server_unpark(s);
}

void conn_server_set_access(struct conn_server *s, const struct config *rules)
{
	server_park(s);
	server_priv(s)->access = rules;
	server_unpark(s);
}

void conn_server_set_limits(struct conn_server *s, const struct conn_limits *l)
{
	double idle_was = s->lim.idle_timeout;
	static const struct conn_limits defaults = {
	    .max_conns = CONN_DEFAULT_MAX_CONNS,
	    .handshake_timeout = CONN_DEFAULT_HANDSHAKE_TIMEOUT,
	    .idle_timeout = 0,
	    .max_reqs = CONN_MAX_REQS,
	    .max_bytes = CONN_MAX_BYTES,
	};

	server_park(s);
	s->lim = l ? *l : defaults;
	if (!s->lim.max_conns)
		s->lim.max_conns = defaults.max_conns;
	if (!s->lim.max_reqs)
		s->lim.max_reqs = defaults.max_reqs;
	if (!s->lim.max_bytes)
		s->lim.max_bytes = defaults.max_bytes;
	/* Live (SIGHUP), idle timeout turned off: a running idle timer would
	 * take 0 for "idle too long" and close its connection. */
	if (idle_was > 0 && s->lim.idle_timeout == 0)
		for (struct conn *c = s->conns; c; c = c->next)
			if (c->proto.phase == PROTO_TRANSMISSION)
				ev_timer_stop(c->lp->loop, &c->tmo);
	server_unpark(s);
}

unsigned conn_server_count(const struct conn_server *s)
{
	return atomic_load(&s->nconns);
}

void conn_server_get_stats(struct conn_server *s, struct conn_server_stats *out)
{
	out->clients = atomic_load(&s->nconns);
	out->accepted = s->accepted;
	out->refused = s->refused;
	out->loops = s->nloops;
	pthread_mutex_lock(&s->list_lock);
	for (unsigned i = 0; i < s->nloops; i++)
		out->loop_clients[i] = s->loops[i].nconns;
	pthread_mutex_unlock(&s->list_lock);
}

void conn_server_free(struct conn_server *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->park_lock);
	s->quit = true;
	pthread_cond_broadcast(&s->park_cv);
	pthread_mutex_unlock(&s->park_lock);
	for (unsigned i = 1; i < s->nloops; i++) {
		struct conn_loop *lp = &s->loops[i];

		ev_async_send(lp->loop, &lp->ctl);
		pthread_join(lp->thr, NULL);
		for (size_t k = 0; k < lp->ninbox; k++)
			close(lp->inbox[k]);
		free(lp->inbox);
		ev_async_stop(lp->loop, &lp->wake);
		ev_async_stop(lp->loop, &lp->ctl);
		ev_prepare_stop(lp->loop, &lp->quiet_w);
		ev_timer_stop(lp->loop, &lp->tick_w);
		ev_loop_destroy(lp->loop);
	}
	ev_async_stop(s->loop, &s->loops[0].wake);
	ev_prepare_stop(s->loop, &s->loops[0].quiet_w);
	ev_async_stop(s->loop, &s->poke);
	ev_timer_stop(s->loop, &s->grace);
	ev_timer_stop(s->loop, &s->pause_tmo);
	for (unsigned i = 0; i < s->nlst; i++) {
		ev_io_stop(s->loop, &s->lst[i].w);
		sockets_close_unix(&s->lst[i].sock);
	}
	store_thread_unregister();
	pthread_cond_destroy(&s->park_cv);
	pthread_mutex_destroy(&s->park_lock);
	pthread_mutex_destroy(&s->list_lock);
	free(server_priv(s));
}

int conn_server_clients(struct conn_server *s, struct conn_client **out, size_t *n)
{
	struct conn_client *v = NULL;
	size_t k = 0, cap = 0;

	pthread_mutex_lock(&s->list_lock);
	for (struct conn *c = s->conns; c; c = c->next)
		cap++;
	if (cap && !(v = calloc(cap, sizeof(*v)))) {
		pthread_mutex_unlock(&s->list_lock);
		return -ENOMEM;
	}
	for (struct conn *c = s->conns; c; c = c->next, k++) {
		snprintf(v[k].peer, sizeof(v[k].peer), "%s", c->peer);
		snprintf(v[k].export, sizeof(v[k].export), "%s", c->export);
		v[k].since = c->since;
		v[k].tls = c->tls_on;
		v[k].bytes_read = atomic_load_explicit(&c->bytes_read, memory_order_relaxed);
		v[k].bytes_written = atomic_load_explicit(&c->bytes_written, memory_order_relaxed);
		v[k].loop = (unsigned)(c->lp - s->loops);
	}
	pthread_mutex_unlock(&s->list_lock);
	*out = v;
	*n = k;
	return 0;
}

/* ---- handover --------------------------------------------------------------
 * The old process pauses (conn_server_pause) until every connection is
 * quiet, detaches listeners and connections into a conn_handoff, and the
 * new one (or the old one again, when the new one fails) attaches them and
 * resumes.  Between pause and resume nothing is read from a socket but
 * the rest of a payload already begun: requests that arrive wait in the
 * kernel's socket buffers.  A quiet connection stays quiet: it takes no
 * request, has none in flight and nothing to send. */

static_assert(CONN_HANDOFF_BUF_MAX == CONN_RBUF_SIZE, "a handoff carries a whole rbuf");
static_assert(CONN_HANDOFF_LST == CONN_MAX_LISTENERS, "a handoff carries every listener");

/* Are lp's connections all quiet?  On lp's thread (or parked). */
static bool loop_quiet(struct conn_loop *lp)
{
	for (const struct conn *c = lp->conns; c; c = c->lnext)
		if (!conn_quiet(c))
			return false;
	return true;
}

bool conn_server_quiet(struct conn_server *s)
{
	bool quiet = true;

	server_park(s);
	for (const struct conn *c = s->conns; c && quiet; c = c->next)
		if (!conn_quiet(c))
			quiet = false;
	server_unpark(s);
	return quiet;
}

/* Before each iteration of a pausing loop: quiet yet?  Then tell the
 * server's loop (on_poke). */
static void on_quiet_check(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct conn_loop *lp = w->data;

	if (loop_quiet(lp)) {
		ev_prepare_stop(loop, w);
		atomic_store(&lp->quiet, true);
		ev_async_send(lp->srv->loop, &lp->srv->poke);
	}
}

static void on_pause_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL); /* conn_server_quiet() says false */
}

void conn_server_pause(struct conn_server *s, double timeout)
{
	struct conn *c, *next;

	if (s->pausing || s->stopping)
		return;
	server_park(s);
	s->pausing = true;
	for (unsigned i = 0; i < s->nlst; i++)
		ev_io_stop(s->loop, &s->lst[i].w);
	for (c = s->conns; c; c = next) {
		next = c->next;
		conn_pause(c, true);
	}
	for (unsigned i = 0; i < s->nloops; i++) {
		atomic_store(&s->loops[i].quiet, false);
		ev_prepare_start(s->loops[i].loop, &s->loops[i].quiet_w);
	}
	ev_timer_set(&s->pause_tmo, timeout, 0.);
	ev_timer_start(s->loop, &s->pause_tmo);
	server_unpark(s);
}

void conn_server_resume(struct conn_server *s)
{
	struct conn *c, *next;

	server_park(s);
	s->pausing = false;
	for (unsigned i = 0; i < s->nloops; i++)
		ev_prepare_stop(s->loops[i].loop, &s->loops[i].quiet_w);
	ev_timer_stop(s->loop, &s->pause_tmo);
	/* A stop during the pause closed them (a closed fd's number may be
	 * another file's by now). */
	for (unsigned i = 0; i < s->nlst && !s->stopping; i++)
		ev_io_start(s->loop, &s->lst[i].w);
	for (c = s->conns; c; c = next) {
		next = c->next;
		conn_pause(c, false);
	}
	s->held = false;
	server_unpark(s);
}

int conn_server_detach(struct conn_server *s, struct conn_handoff *h)
{
	size_t cap;
	struct conn *c, *next;

	server_park(s);
	cap = atomic_load(&s->nconns);
	memset(h, 0, sizeof(*h));
	h->fds = calloc(cap ? cap : 1, sizeof(*h->fds));
	h->conns = calloc(cap ? cap : 1, sizeof(*h->conns));
	if (!h->fds || !h->conns) {
		conn_handoff_free(h, false);
		server_unpark(s);
		return -ENOMEM;
	}
	for (c = s->conns; c; c = next) {
		int r;

		next = c->next;
		r = conn_detach(c, &h->conns[h->nconns], &h->fds[h->nconns]);
		if (r == 0)
			h->nconns++;
		else if (r == -EPROTONOSUPPORT)
			h->closed++;
	}
	for (unsigned i = 0; i < s->nlst; i++) {
		ev_io_stop(s->loop, &s->lst[i].w);
		h->lst[h->nlst++] = s->lst[i].sock;
	}
	s->nlst = 0; /* nothing left to close or unlink at conn_server_free */
	h->accepted = s->accepted;
	h->refused = s->refused;
	server_unpark(s);
	return 0;
}

int conn_server_attach(struct conn_server *s, const struct conn_handoff *h, unsigned *closed)
{
	*closed = 0;
	if (s->nlst + h->nlst > CONN_MAX_LISTENERS) {
		for (unsigned i = 0; i < h->nlst; i++)
			close(h->lst[i].fd);
		for (size_t i = 0; i < h->nconns; i++)
			close(h->fds[i]);
		return -EMFILE;
	}
	server_park(s);
	for (unsigned i = 0; i < h->nlst; i++)
		add_listener(s, &h->lst[i]);
	for (size_t i = 0; i < h->nconns; i++) {
		struct conn_loop *lp = &s->loops[i % s->nloops];

		atomic_fetch_add(&s->nconns, 1);
		atomic_fetch_add(&lp->assigned, 1);
		if (conn_restore(lp, h->fds[i], &h->conns[i])) {
			conn_server_uncount(s);
			loop_unassign(lp);
			(*closed)++;
		}
	}
	s->accepted = h->accepted;
	s->refused = h->refused;
	/* The loop threads stay parked until conn_server_resume: the old
	 * process may still be serving these sockets (until it commits), so
	 * no timer of theirs may fire here before then. */
	s->held = s->nloops > 1;
	return 0;
}

void conn_handoff_free(struct conn_handoff *h, bool close_fds)
{
	for (unsigned i = 0; close_fds && i < h->nlst; i++)
		close(h->lst[i].fd);
	for (size_t i = 0; i < h->nconns; i++) {
		if (close_fds)
			close(h->fds[i]);
		free(h->conns[i].buf);
	}
	free(h->fds);
	free(h->conns);
	memset(h, 0, sizeof(*h));
}
