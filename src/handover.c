/* handover.c — the handover conversation between an old and a new cowbd
 * process (handover.h draws it): starting the new binary, the messages
 * and their encoding, passing sockets with SCM_RIGHTS, and checking every
 * received field before anyone uses it.
 *
 * Layer: the daemon's, beside main.c (which decides when to hand over and
 * what to do with the result).  No threads, no locks: each call blocks on
 * the socket pair with a bounded wait.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handover.h"
#include "say.h"
#include "version.h"

#define HO_MAGIC      0x484f5743u /* "COWH" */
#define HO_MSG_MAX    (64u << 10) /* largest packet */
#define HO_DATA_CHUNK (32u << 10) /* DATA packets carry this much */
#define HO_OFFER_MS   30000       /* the new binary starts and offers */
#define HO_READY_MS   120000      /* it opens the pool (a clean one: fast) */
#define HO_RECV_MS    60000       /* the new side waits for the old */
#define HO_EXIT_MS    10000       /* an aborted new process exits */
#define HO_MAX_CONNS  (1u << 20)

enum ho_type {
	HO_OFFER = 1,
	HO_START,
	HO_LISTENER,
	HO_CONTROL,
	HO_CONN,
	HO_DATA,
	HO_END,
	HO_READY,
	HO_FAIL,
	HO_COMMIT,
	HO_ABORT,
};

/* Wire values of a connection's phase (never the enum's own numbers). */
enum { HO_PHASE_FLAGS = 1, HO_PHASE_OPTIONS = 2, HO_PHASE_TRANSMISSION = 3 };

/* CONN flag bits. */
enum {
	HO_F_NO_ZEROES = 1u << 0,
	HO_F_STRUCTURED = 1u << 1,
	HO_F_EXTENDED = 1u << 2,
	HO_F_READ_ONLY = 1u << 3,
	HO_F_META_ALLOC = 1u << 4,
	HO_F_META_DEPTH = 1u << 5,
};

struct handover {
	int fd;
	pid_t pid;     /* our child, to reap; 0: none (reaped, or detached) */
	bool detached; /* the new process is the service manager's child */
	struct handover_offer offer;
};

/* ---- encoding ------------------------------------------------------------ */

struct ho_out {
	uint8_t b[HO_MSG_MAX];
	size_t len;
};

static void put_bytes(struct ho_out *o, const void *p, size_t n)
{
	if (o->len + n <= sizeof(o->b)) /* every caller's message fits: see ho_put_conn */
		memcpy(o->b + o->len, p, n);
	o->len += n;
}

static void put_u8(struct ho_out *o, uint8_t v)
{
	put_bytes(o, &v, 1);
}

static void put_u32(struct ho_out *o, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

	put_bytes(o, b, 4);
}

static void put_u64(struct ho_out *o, uint64_t v)
{
	put_u32(o, (uint32_t)v);
	put_u32(o, (uint32_t)(v >> 32));
}

static void put_str(struct ho_out *o, const char *s)
{
	size_t n = strlen(s);

	put_u32(o, (uint32_t)n);
	put_bytes(o, s, n);
}

static void put_begin(struct ho_out *o, enum ho_type t)
{
	o->len = 0;
	put_u32(o, HO_MAGIC);
	put_u8(o, (uint8_t)t);
}

/* A received packet being read; bad once anything did not fit. */
struct ho_in {
	uint8_t b[HO_MSG_MAX];
	size_t len, at;
	bool bad;
	int fd; /* passed with it; -1: none */
};

static const uint8_t *get_bytes(struct ho_in *in, size_t n)
{
	const uint8_t *p = in->b + in->at;

	if (in->bad || n > in->len - in->at) {
		in->bad = true;
		return NULL;
	}
	in->at += n;
	return p;
}

static uint8_t get_u8(struct ho_in *in)
{
	const uint8_t *p = get_bytes(in, 1);

	return p ? p[0] : 0;
}

static uint32_t get_u32(struct ho_in *in)
{
	const uint8_t *p = get_bytes(in, 4);

	return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	               (uint32_t)p[3] << 24
	         : 0;
}

static uint64_t get_u64(struct ho_in *in)
{
	uint64_t lo = get_u32(in);

	return lo | (uint64_t)get_u32(in) << 32;
}

/* A string into dst (cap bytes with its NUL): too long, or with a NUL
 * inside, makes in bad. */
static void get_str(struct ho_in *in, char *dst, size_t cap)
{
	uint32_t n = get_u32(in);
	const uint8_t *p = n < cap ? get_bytes(in, n) : NULL;

	if (!p || memchr(p, 0, n)) {
		in->bad = true;
		dst[0] = '\0';
		return;
	}
	memcpy(dst, p, n);
	dst[n] = '\0';
}

/* ---- packets --------------------------------------------------------------- */

/* Where packets go: the socket pair to the other process, or a file (the
 * state a restart through systemd's fd store leaves in a memfd), where
 * each packet is a record [u32 length][i32 fd index or -1][bytes] and the
 * fds are kept aside in a table (out: fds, nfds; in: in_fds, in_n). */
struct ho_chan {
	int sock; /* -1: the file */
	int file;
	int *fds;
	size_t nfds, cap;
	int *in_fds;
	size_t in_n;
};
#define HO_SOCK(s) ((struct ho_chan){.sock = (s), .file = -1})

/* Send o, with fd passed alongside when fd >= 0.  0 or -errno. */
static int ho_sock_send(int sock, const struct ho_out *o, int fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = {.iov_base = (void *)o->b, .iov_len = o->len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	if (o->len > sizeof(o->b))
		return -EMSGSIZE;
	if (fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		m.msg_control = cm.b;
		m.msg_controllen = sizeof(cm.b);
		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(&cm.h), &fd, sizeof(int));
	}
	while (sendmsg(sock, &m, MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Write all of len bytes of p to fd.  0 or -errno. */
static int ho_write(int fd, const void *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p = (const char *)p + n;
		len -= (size_t)n;
	}
	return 0;
}

/* A record in the file; fd goes to the table. */
static int ho_file_send(struct ho_chan *ch, const struct ho_out *o, int fd)
{
	uint8_t h[8];
	int32_t idx = -1;

	if (o->len > sizeof(o->b))
		return -EMSGSIZE;
	if (fd >= 0) {
		if (ch->nfds == ch->cap) {
			size_t cap = ch->cap ? 2 * ch->cap : 64;
			int *v = realloc(ch->fds, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			ch->fds = v;
			ch->cap = cap;
		}
		idx = (int32_t)ch->nfds;
		ch->fds[ch->nfds++] = fd;
	}
	for (int i = 0; i < 4; i++) {
		h[i] = (uint8_t)(o->len >> (8 * i));
		h[4 + i] = (uint8_t)((uint32_t)idx >> (8 * i));
	}
	int r = ho_write(ch->file, h, sizeof(h));
	return r ? r : ho_write(ch->file, o->b, o->len);
}

static int ho_send(struct ho_chan *ch, const struct ho_out *o, int fd)
{
	return ch->sock >= 0 ? ho_sock_send(ch->sock, o, fd) : ho_file_send(ch, o, fd);
}

static int ho_send_type(struct ho_chan *ch, enum ho_type t)
{
	struct ho_out o;

	put_begin(&o, t);
	return ho_send(ch, &o, -1);
}

/* Receive one packet into in within ms milliseconds: its type, or -errno
 * (-ETIMEDOUT, -EPIPE when the other side is gone, -EPROTO for a packet
 * that is not ours: bad magic, truncated, more than one fd). */
static int ho_sock_recv(int sock, struct ho_in *in, int ms)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 4)];
	} cm;
	struct iovec iov = {.iov_base = in->b, .iov_len = sizeof(in->b)};
	struct msghdr m = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
	struct pollfd p = {.fd = sock, .events = POLLIN};
	int nfd = 0, r;
	ssize_t n;

	in->fd = -1;
	in->at = 0;
	in->bad = false;
	while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	if (r == 0)
		return -ETIMEDOUT;
	while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (nfd++ == 0)
				in->fd = fd;
			else
				close(fd);
		}
	}
	in->len = (size_t)n;
	if (nfd > 1 || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || get_u32(in) != HO_MAGIC) {
		if (in->fd >= 0)
			close(in->fd);
		in->fd = -1;
		return -EPROTO;
	}
	return get_u8(in);
}

/* Read exactly len bytes of fd: 0, -EPIPE at the end, or -errno. */
static int ho_read(int fd, void *p, size_t len)
{
	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p = (char *)p + n;
		len -= (size_t)n;
	}
	return 0;
}

/* The next record of the file; its fd taken from the table (each once). */
static int ho_file_recv(struct ho_chan *ch, struct ho_in *in)
{
	uint8_t h[8];
	uint32_t len = 0, idx = 0;
	int r = ho_read(ch->file, h, sizeof(h));

	in->fd = -1;
	in->at = 0;
	in->bad = false;
	if (r)
		return r;
	for (int i = 0; i < 4; i++) {
		len |= (uint32_t)h[i] << (8 * i);
		idx |= (uint32_t)h[4 + i] << (8 * i);
	}
	if (len > sizeof(in->b) || (idx != UINT32_MAX && idx >= ch->in_n))
		return -EPROTO;
	r = ho_read(ch->file, in->b, len);
	if (r)
		return r == -EPIPE ? -EPROTO : r;
	in->len = len;
	if (idx != UINT32_MAX) {
		in->fd = ch->in_fds[idx];
		ch->in_fds[idx] = -1; /* taken */
		if (in->fd < 0)
			return -EPROTO; /* missing, or named twice */
	}
	if (get_u32(in) != HO_MAGIC) {
		if (in->fd >= 0)
			close(in->fd);
		in->fd = -1;
		return -EPROTO;
	}
	return get_u8(in);
}

static int ho_recv(struct ho_chan *ch, struct ho_in *in, int ms)
{
	return ch->sock >= 0 ? ho_sock_recv(ch->sock, in, ms) : ho_file_recv(ch, in);
}

/* ---- the old side ---------------------------------------------------------- */

/* argv for the new process: binary, argv[1..] without --handover-fd and
 * --handover-detach, then --handover-fd N (and --handover-detach when
 * detach).  malloc'd (the strings stay argv's), NULL when out of memory. */
static char **ho_argv(const char *binary, char *const *argv, char *fdarg, bool detach)
{
	size_t n = 0, k = 0;
	char **v;

	while (argv[n])
		n++;
	v = calloc(n + 4, sizeof(*v));
	if (!v)
		return NULL;
	v[k++] = (char *)binary;
	for (size_t i = 1; i < n; i++) {
		if (!strcmp(argv[i], "--handover-fd")) {
			i++;
			continue;
		}
		if (!strncmp(argv[i], "--handover-fd=", 14) ||
		    !strcmp(argv[i], "--handover-detach"))
			continue;
		v[k++] = argv[i];
	}
	v[k++] = "--handover-fd";
	v[k++] = fdarg;
	if (detach)
		v[k++] = "--handover-detach";
	v[k] = NULL;
	return v;
}

/* How a process with wait status st ended, in words. */
static void ho_reap_status(int st, char *why, size_t len)
{
	if (WIFSIGNALED(st))
		snprintf(why, len, "it was killed by signal %d (%s)", WTERMSIG(st),
		         strsignal(WTERMSIG(st)));
	else
		snprintf(why, len, "it exited with status %d", WEXITSTATUS(st));
}

/* Why pid ended, in words, once it has (waited for here). */
static void ho_reap(pid_t pid, char *why, size_t len)
{
	int st = 0;

	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	ho_reap_status(st, why, len);
}

/* Start binary on fd (the child's end of the pair).  0 or -errno. */
static int ho_exec(const char *binary, char *const *argv, int fd, bool detach, pid_t *pid)
{
	extern char **environ;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	char fdarg[16];
	char **v;
	int r;

	snprintf(fdarg, sizeof(fdarg), "%d", fd);
	v = ho_argv(binary, argv, fdarg, detach);
	if (!v)
		return -ENOMEM;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	/* dup2 onto itself clears close-on-exec: the child keeps this fd only. */
	posix_spawn_file_actions_adddup2(&fa, fd, fd);
	/* The caller (a control thread) blocks every signal; the child must
	 * not inherit that, nor a handler's disposition. */
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	r = -posix_spawn(pid, binary, &fa, &at, v, environ);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	free(v);
	return r;
}

/* Read the OFFER into h->offer.  0, or -errno with why in err. */
static int ho_take_offer(struct handover *h, uint32_t pool_format, char *err, size_t errlen)
{
	struct ho_in *in = malloc(sizeof(*in));
	struct handover_offer *o = &h->offer;
	int t;

	if (!in) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t = ho_recv(&HO_SOCK(h->fd), in, HO_OFFER_MS);
	if (t == HO_OFFER) {
		o->version = get_u32(in);
		o->pool_format = get_u32(in);
		o->pid = (pid_t)get_u32(in);
		get_str(in, o->cowbd, sizeof(o->cowbd));
	}
	free(in);
	if (t == -ETIMEDOUT) {
		snprintf(err, errlen, "it did not offer to take over within %d s",
		         HO_OFFER_MS / 1000);
		return t;
	}
	if (t != HO_OFFER) {
		snprintf(err, errlen, "it does not speak the handover protocol (%s)",
		         t == -EPIPE ? "it closed the handover socket" : "bad first message");
		return -EPROTO;
	}
	if (o->version != HANDOVER_VERSION) {
		snprintf(err, errlen,
		         "it speaks handover version %u, this cowbd %u: connections cannot be "
		         "carried over (stop and start it instead)",
		         o->version, HANDOVER_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (o->pool_format < pool_format) {
		snprintf(err, errlen, "it opens pools up to format %u; this pool is format %u",
		         o->pool_format, pool_format);
		return -EPROTONOSUPPORT;
	}
	return 0;
}

struct handover *handover_spawn(const char *binary, char *const *argv, uint32_t pool_format,
                                char *err, size_t errlen)
{
	struct handover *h = calloc(1, sizeof(*h));
	char why[128];
	int sv[2], r;

	if (!h || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(err, errlen, "cannot start %s: %s", binary, strerror(errno));
		free(h);
		return NULL;
	}
	h->fd = sv[0];
	/* Under a service manager the new process must become its child (a
	 * process whose parent is gone goes to PID 1): systemd before 255
	 * cannot wait for a main process that is not its child, and kills it
	 * at the first stop instead.  It forks at once (--handover-detach)
	 * and the first process exits: reaped here, it says how a crash at
	 * start ended; a later death shows as the closed socket. */
	h->detached = getenv("NOTIFY_SOCKET") != NULL;
	r = ho_exec(binary, argv, sv[1], h->detached, &h->pid);
	close(sv[1]);
	if (r) {
		snprintf(err, errlen, "cannot run %s: %s", binary, strerror(-r));
		goto fail;
	}
	if (h->detached) {
		char how[96];
		int st = 0;

		while (waitpid(h->pid, &st, 0) < 0 && errno == EINTR)
			;
		h->pid = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			ho_reap_status(st, how, sizeof(how));
			snprintf(err, errlen, "new binary %s failed at start: %s", binary, how);
			goto fail;
		}
	}
	r = ho_take_offer(h, pool_format, why, sizeof(why));
	if (r == 0) {
		if (!h->detached)
			return h;
		h->pid = h->offer.pid; /* to kill on abort, not to reap */
		return h;
	}
	if (r == -EPROTO) { /* it went away: say how it ended */
		char how[96] = "it went away (the service manager's log says how)";

		if (h->pid > 0)
			ho_reap(h->pid, how, sizeof(how));
		h->pid = 0;
		snprintf(err, errlen, "new binary %s failed before taking over: %s; %s", binary,
		         how, why);
	} else {
		snprintf(err, errlen, "new binary %s refused: %s", binary, why);
	}
fail:
	handover_abort(h);
	return NULL;
}

const struct handover_offer *handover_offered(const struct handover *h)
{
	return &h->offer;
}

/* Everything a connection's state holds, and its fd. */
static int ho_put_conn(struct ho_chan *ch, struct ho_out *o, const struct conn_state *c, int fd)
{
	const struct proto_state *ps = &c->proto;
	uint8_t ph = ps->phase == PROTO_TRANSMISSION ? HO_PHASE_TRANSMISSION
	             : ps->phase == PROTO_OPTIONS    ? HO_PHASE_OPTIONS
	                                             : HO_PHASE_FLAGS;
	uint8_t f = (ps->no_zeroes ? HO_F_NO_ZEROES : 0) | (ps->structured ? HO_F_STRUCTURED : 0) |
	            (ps->extended ? HO_F_EXTENDED : 0) | (ps->read_only ? HO_F_READ_ONLY : 0) |
	            (ps->meta_alloc ? HO_F_META_ALLOC : 0) | (ps->meta_depth ? HO_F_META_DEPTH : 0);
	int r;

	put_begin(o, HO_CONN);
	put_u8(o, ph);
	put_u8(o, f);
	put_u32(o, ps->tflags);
	put_u64(o, ps->size);
	put_str(o, ps->meta_dirty);
	put_str(o, ps->meta_name); /* at most 4096 bytes: the packet stays small */
	put_str(o, c->export);
	put_u64(o, c->since);
	put_u64(o, c->nreq);
	put_u64(o, c->bytes_read);
	put_u64(o, c->bytes_written);
	put_u32(o, c->nbuf);
	r = ho_send(ch, o, fd);
	for (uint32_t at = 0; !r && at < c->nbuf; at += HO_DATA_CHUNK) {
		uint32_t k = c->nbuf - at < HO_DATA_CHUNK ? c->nbuf - at : HO_DATA_CHUNK;

		put_begin(o, HO_DATA);
		put_bytes(o, c->buf + at, k);
		r = ho_send(ch, o, -1);
	}
	return r;
}

static int ho_put_socket(struct ho_chan *ch, struct ho_out *o, enum ho_type t,
                         const struct sockets_unix *u)
{
	put_begin(o, t);
	put_str(o, u->path);
	put_u64(o, (uint64_t)u->dev);
	put_u64(o, (uint64_t)u->ino);
	return ho_send(ch, o, u->fd);
}

/* Everything, START to END.  0 or -errno. */
static int ho_put_all(struct ho_chan *ch, struct ho_out *o, const struct handover_pool *pool,
                      const struct conn_handoff *ho, const struct sockets_unix *ctl)
{
	int r;

	put_begin(o, HO_START);
	put_u32(o, HANDOVER_VERSION);
	put_u64(o, pool->dev);
	put_u64(o, pool->ino);
	put_u32(o, ho->nlst);
	put_u32(o, (uint32_t)ho->nconns);
	put_u64(o, ho->accepted);
	put_u64(o, ho->refused);
	r = ho_send(ch, o, -1);
	for (unsigned i = 0; !r && i < ho->nlst; i++)
		r = ho_put_socket(ch, o, HO_LISTENER, &ho->lst[i]);
	if (!r && ctl->fd >= 0)
		r = ho_put_socket(ch, o, HO_CONTROL, ctl);
	for (size_t i = 0; !r && i < ho->nconns; i++)
		r = ho_put_conn(ch, o, &ho->conns[i], ho->fds[i]);
	if (!r)
		r = ho_send_type(ch, HO_END);
	return r;
}

int handover_send(struct handover *h, const struct handover_pool *pool,
                  const struct conn_handoff *ho, const struct sockets_unix *ctl, unsigned *carried,
                  unsigned *closed, char *err, size_t errlen)
{
	struct ho_out *o = malloc(sizeof(*o));
	struct ho_in *in = malloc(sizeof(*in));
	char why[256] = "";
	struct ho_chan ch = HO_SOCK(h->fd);
	int r = o && in ? ho_put_all(&ch, o, pool, ho, ctl) : -ENOMEM;

	if (!r) {
		r = ho_recv(&ch, in, HO_READY_MS);
		if (r == HO_READY) {
			*carried = get_u32(in);
			*closed = get_u32(in);
			r = in->bad ? -EPROTO : 0;
		} else if (r == HO_FAIL) {
			get_str(in, why, sizeof(why));
			r = -ECANCELED;
		} else if (r >= 0) {
			r = -EPROTO;
		}
	}
	if (r == -ECANCELED)
		snprintf(err, errlen, "the new process refused: %s", why);
	else if (r == -ETIMEDOUT)
		snprintf(err, errlen, "the new process did not take over within %d s",
		         HO_READY_MS / 1000);
	else if (r == -EPIPE || r == -ECONNRESET)
		snprintf(err, errlen, "the new process died while taking over");
	else if (r)
		snprintf(err, errlen, "handover: %s", strerror(-r));
	free(o);
	free(in);
	return r;
}

void handover_commit(struct handover *h)
{
	if (ho_send_type(&HO_SOCK(h->fd), HO_COMMIT))
		say_warn("handover: cannot confirm to pid %d: %s", (int)h->pid, strerror(errno));
	close(h->fd);
	free(h);
}

void handover_abort(struct handover *h)
{
	struct pollfd p;
	char how[96];

	if (!h)
		return;
	if (h->pid > 0) {
		(void)ho_send_type(&HO_SOCK(h->fd), HO_ABORT);
		/* It closes the pair when it exits: wait for that, bounded. */
		p = (struct pollfd){.fd = h->fd, .events = POLLIN};
		for (int waited = 0; waited < HO_EXIT_MS; waited += 100) {
			char b[64];

			if (poll(&p, 1, 100) > 0 && recv(h->fd, b, sizeof(b), MSG_DONTWAIT) == 0)
				break;
			if (!h->detached && waitpid(h->pid, NULL, WNOHANG) == h->pid) {
				h->pid = 0;
				break;
			}
		}
		if (h->pid > 0) {
			kill(h->pid, SIGKILL);
			if (!h->detached) /* else the service manager reaps it */
				ho_reap(h->pid, how, sizeof(how));
		}
	}
	close(h->fd);
	free(h);
}

/* ---- the new side -------------------------------------------------------- */

int handover_offer(int fd, uint32_t pool_format)
{
	struct ho_out *o = malloc(sizeof(*o));
	const char *fault = getenv("COWBD_TEST_HANDOVER");
	unsigned v = HANDOVER_VERSION, f = pool_format;
	int r;

	if (!o)
		return -ENOMEM;
	/* TEST ONLY (docs/TESTING.md): offer another version or format. */
	if (fault && sscanf(fault, "offer-version:%u", &v) == 1)
		say_warn("TEST FAULT: offering handover version %u", v);
	if (fault && sscanf(fault, "offer-format:%u", &f) == 1)
		say_warn("TEST FAULT: offering pool format %u", f);
	put_begin(o, HO_OFFER);
	put_u32(o, v);
	put_u32(o, f);
	put_u32(o, (uint32_t)getpid());
	put_str(o, COWBD_VERSION);
	r = ho_send(&HO_SOCK(fd), o, -1);
	free(o);
	return r;
}

/* A LISTENER or CONTROL packet into u (its fd taken over). */
static void ho_get_socket(struct ho_in *in, struct sockets_unix *u)
{
	get_str(in, u->path, sizeof(u->path));
	u->dev = (dev_t)get_u64(in);
	u->ino = (ino_t)get_u64(in);
	u->fd = in->fd;
	in->fd = -1;
	if (u->fd < 0)
		in->bad = true;
}

/* A CONN packet into c (its fd into *fd). */
static void ho_get_conn(struct ho_in *in, struct conn_state *c, int *fd)
{
	struct proto_state *ps = &c->proto;
	uint8_t ph = get_u8(in), f = get_u8(in);
	uint32_t tflags = get_u32(in);

	memset(c, 0, sizeof(*c));
	ps->phase = ph == HO_PHASE_TRANSMISSION ? PROTO_TRANSMISSION
	            : ph == HO_PHASE_OPTIONS    ? PROTO_OPTIONS
	                                        : PROTO_CLIENT_FLAGS;
	ps->no_zeroes = f & HO_F_NO_ZEROES;
	ps->structured = f & HO_F_STRUCTURED;
	ps->extended = f & HO_F_EXTENDED;
	ps->read_only = f & HO_F_READ_ONLY;
	ps->meta_alloc = f & HO_F_META_ALLOC;
	ps->meta_depth = f & HO_F_META_DEPTH;
	ps->tflags = (uint16_t)tflags;
	ps->size = get_u64(in);
	get_str(in, ps->meta_dirty, sizeof(ps->meta_dirty));
	get_str(in, ps->meta_name, sizeof(ps->meta_name));
	get_str(in, c->export, sizeof(c->export));
	c->since = get_u64(in);
	c->nreq = get_u64(in);
	c->bytes_read = get_u64(in);
	c->bytes_written = get_u64(in);
	c->nbuf = get_u32(in);
	if (ph < HO_PHASE_FLAGS || ph > HO_PHASE_TRANSMISSION || tflags > UINT16_MAX ||
	    (f & ~0x3fu) || c->nbuf > CONN_HANDOFF_BUF_MAX || in->at != in->len || in->fd < 0)
		in->bad = true;
	if (c->nbuf && !in->bad && !(c->buf = malloc(c->nbuf)))
		in->bad = true;
	*fd = in->fd;
	in->fd = -1;
}

/* Receive START..END (the loop of handover_receive).  0, or -errno with
 * err set; what was received is in ho/ctl either way. */
static int ho_get_all(struct ho_chan *ch, struct ho_in *in, struct handover_pool *pool,
                      struct conn_handoff *ho, struct sockets_unix *ctl, char *err, size_t errlen)
{
	uint32_t nlst = 0, nconns = 0, got = 0; /* got: DATA bytes of the last conn */
	int t = ho_recv(ch, in, HO_RECV_MS);

	if (t == HO_START) {
		uint32_t v = get_u32(in);

		pool->dev = get_u64(in);
		pool->ino = get_u64(in);
		nlst = get_u32(in);
		nconns = get_u32(in);
		ho->accepted = get_u64(in);
		ho->refused = get_u64(in);
		if (v != HANDOVER_VERSION) {
			snprintf(err, errlen, "handover version %u offered, %u sent",
			         HANDOVER_VERSION, v);
			return -EPROTO;
		}
		if (in->bad || nlst > CONN_HANDOFF_LST || nconns > HO_MAX_CONNS)
			t = -EPROTO;
		ho->fds = calloc(nconns ? nconns : 1, sizeof(*ho->fds));
		ho->conns = calloc(nconns ? nconns : 1, sizeof(*ho->conns));
		if (!ho->fds || !ho->conns)
			t = -ENOMEM;
	} else if (t >= 0) {
		t = -EPROTO;
	}
	while (t >= 0) {
		struct conn_state *last = ho->nconns ? &ho->conns[ho->nconns - 1] : NULL;

		t = ho_recv(ch, in, HO_RECV_MS);
		if (t == HO_LISTENER && ho->nlst < nlst) {
			ho_get_socket(in, &ho->lst[ho->nlst++]);
		} else if (t == HO_CONTROL && ctl->fd < 0) {
			ho_get_socket(in, ctl);
		} else if (t == HO_CONN && ho->nconns < nconns && (!last || got == last->nbuf)) {
			ho_get_conn(in, &ho->conns[ho->nconns], &ho->fds[ho->nconns]);
			ho->nconns++;
			got = 0;
		} else if (t == HO_DATA && last && in->len - in->at <= last->nbuf - got) {
			memcpy(last->buf + got, in->b + in->at, in->len - in->at);
			got += (uint32_t)(in->len - in->at);
		} else if (t == HO_END && ho->nlst == nlst && ho->nconns == nconns &&
		           (!last || got == last->nbuf)) {
			return 0;
		} else if (t >= 0) {
			in->bad = true;
		}
		if (in->fd >= 0) { /* an fd on a packet that carries none */
			close(in->fd);
			in->bad = true;
		}
		if (t >= 0 && in->bad)
			t = -EPROTO;
	}
	snprintf(err, errlen, "handover: %s",
	         t == -EPIPE    ? "the old process went away before sending everything"
	         : t == -EPROTO ? "a malformed message from the old process"
	                        : strerror(-t));
	return t;
}

int handover_receive(int fd, struct handover_pool *pool, struct conn_handoff *ho,
                     struct sockets_unix *ctl, char *err, size_t errlen)
{
	struct ho_in *in = malloc(sizeof(*in));
	int r;

	memset(ho, 0, sizeof(*ho));
	*ctl = (struct sockets_unix){.fd = -1};
	if (!in) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = ho_get_all(&HO_SOCK(fd), in, pool, ho, ctl, err, errlen);
	free(in);
	if (r) {
		conn_handoff_free(ho, true); /* an fd of -1 (a bad packet) closes nothing */
		if (ctl->fd >= 0)
			close(ctl->fd);
		ctl->fd = -1;
	}
	return r;
}

int handover_ready(int fd, unsigned carried, unsigned closed)
{
	struct ho_out *o = malloc(sizeof(*o));
	struct ho_in *in = malloc(sizeof(*in));
	int r = -ENOMEM;

	if (o && in) {
		put_begin(o, HO_READY);
		put_u32(o, carried);
		put_u32(o, closed);
		r = ho_send(&HO_SOCK(fd), o, -1);
		r = r ? r : ho_recv(&HO_SOCK(fd), in, -1);
		if (r >= 0 && in->fd >= 0)
			close(in->fd);
	}
	free(o);
	free(in);
	/* COMMIT, or the old process is gone and cannot take anything back. */
	return r == HO_ABORT ? -ECANCELED : 0;
}

void handover_fail(int fd, const char *why)
{
	struct ho_out *o = malloc(sizeof(*o));

	if (!o)
		return;
	put_begin(o, HO_FAIL);
	put_str(o, why);
	(void)ho_send(&HO_SOCK(fd), o, -1);
	free(o);
}

/* ---- a restart through the service manager's fd store ------------------- */

int handover_save(int file, const struct handover_pool *pool, const struct conn_handoff *ho,
                  int **fds, size_t *nfds)
{
	struct ho_out *o = malloc(sizeof(*o));
	struct ho_chan ch = {.sock = -1, .file = file};
	struct sockets_unix none = {.fd = -1};
	int r = o ? ho_put_all(&ch, o, pool, ho, &none) : -ENOMEM;

	free(o);
	if (r) {
		free(ch.fds);
		return r;
	}
	*fds = ch.fds;
	*nfds = ch.nfds;
	return 0;
}

int handover_load(int file, int *fds, size_t nfds, struct handover_pool *pool,
                  struct conn_handoff *ho, char *err, size_t errlen)
{
	struct ho_in *in = malloc(sizeof(*in));
	struct ho_chan ch = {.sock = -1, .file = file, .in_fds = fds, .in_n = nfds};
	struct sockets_unix ctl = {.fd = -1};
	int r;

	memset(ho, 0, sizeof(*ho));
	if (!in) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = ho_get_all(&ch, in, pool, ho, &ctl, err, errlen);
	free(in);
	if (!r && (ho->nlst || ctl.fd >= 0)) {
		snprintf(err, errlen, "the saved state names listening sockets");
		r = -EPROTO;
	}
	if (r) {
		conn_handoff_free(ho, true);
		if (ctl.fd >= 0)
			close(ctl.fd);
	}
	return r;
}
