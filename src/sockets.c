/* sockets.c — listening sockets: TCP listeners for "HOST:PORT" and unix
 * stream sockets under the one stale-socket policy written in sockets.h
 * (refuse a non-socket, refuse a live socket, replace a stale one
 * atomically, unlink on close only what we created).
 *
 * Layer: a transport helper below conn (NBD listeners) and control (the
 * control socket); it knows nothing of what is spoken on the sockets.  No
 * threads, no locks, no state outside the caller's struct sockets_unix.
 *
 * Why one policy: the daemon used to have two, with different safety.
 * Replacing a socket by unlink-then-bind leaves a moment with no socket
 * and, with a permissive umask, a moment with a socket anyone may connect
 * to; unlinking by name at exit removes a successor's socket when another
 * daemon has taken the path over.  Binding under a temporary name, setting
 * the mode, listening, then rename() avoids the first two; remembering the
 * inode avoids the third.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "say.h"
#include "sockets.h"

/* ---- unix sockets --------------------------------------------------- */

/* mkdir -p the directory part of path (mode 0750 for what it creates). */
static int sockets_mkdir_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *p;

	snprintf(dir, sizeof(dir), "%s", path);
	p = strrchr(dir, '/');
	if (!p || p == dir)
		return 0;
	*p = '\0';
	for (p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0750) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int sockets_probe_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r == 0 || errno == EAGAIN || errno == EINPROGRESS)
		r = 1; /* EAGAIN: a full backlog is a live server too */
	else if (errno == ECONNREFUSED || errno == ENOENT)
		r = 0;
	else
		r = -errno;
	close(fd);
	return r;
}

/* What is at path now: 0 nothing or a stale socket (safe to replace), or
 * -errno with err set. */
static int sockets_check_path(const char *path, char *err, size_t errlen)
{
	struct stat sb;
	int r;

	if (lstat(path, &sb) < 0) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	if (!S_ISSOCK(sb.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return -EEXIST;
	}
	r = sockets_probe_unix(path);
	if (r > 0) {
		snprintf(err, errlen, "%s is in use by a running daemon", path);
		return -EADDRINUSE;
	}
	if (r < 0)
		snprintf(err, errlen, "cannot probe %s: %s", path, strerror(-r));
	else
		say_info("replacing stale socket %s", path);
	return r;
}

int sockets_listen_unix(struct sockets_unix *u, const char *path, mode_t mode, unsigned flags,
                        char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat sb;
	int type = SOCK_STREAM | SOCK_CLOEXEC | (flags & SOCKETS_NONBLOCK ? SOCK_NONBLOCK : 0);
	int r, fd;

	u->fd = -1;
	u->path[0] = '\0';
	if (strlen(path) > SOCKETS_UNIX_PATH_MAX) {
		snprintf(err, errlen, "socket path too long (max %zu bytes): %s",
		         SOCKETS_UNIX_PATH_MAX, path);
		return -ENAMETOOLONG;
	}
	if (flags & SOCKETS_MKDIR && (r = sockets_mkdir_parent(path)) < 0) {
		snprintf(err, errlen, "cannot create the directory of %s: %s", path, strerror(-r));
		return r;
	}
	if ((r = sockets_check_path(path, err, errlen)) < 0)
		return r;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%ld.tmp", path, (long)getpid());
	fd = socket(AF_UNIX, type, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: socket: %s", path, strerror(errno));
		return r;
	}
	unlink(sa.sun_path); /* our own pid's leftover: nobody else's */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot bind %s: %s", sa.sun_path, strerror(errno));
		goto fail_close;
	}
	/* Nobody can connect before listen(), so the umask-derived mode of
	 * the fresh file never matters when a mode is given. */
	if ((mode && chmod(sa.sun_path, mode) < 0) || listen(fd, SOMAXCONN) < 0 ||
	    rename(sa.sun_path, path) < 0 || stat(path, &sb) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot set up %s: %s", path, strerror(errno));
		goto fail_unlink;
	}
	u->fd = fd;
	snprintf(u->path, sizeof(u->path), "%s", path);
	u->dev = sb.st_dev;
	u->ino = sb.st_ino;
	return 0;

fail_unlink:
	unlink(sa.sun_path);
fail_close:
	close(fd);
	return r;
}

void sockets_close_unix(struct sockets_unix *u)
{
	struct stat sb;

	if (u->fd >= 0) {
		close(u->fd);
		u->fd = -1;
	}
	if (u->path[0] && stat(u->path, &sb) == 0 && sb.st_dev == u->dev && sb.st_ino == u->ino)
		unlink(u->path);
	u->path[0] = '\0';
}

/* ---- TCP ------------------------------------------------------------ */

/* Split "HOST:PORT" / "[IPV6]:PORT" into host and *port (pointing into
 * hostport).  0 or -EINVAL with err set. */
static int sockets_split_hostport(const char *hostport, char *host, size_t hostlen,
                                  const char **port, char *err, size_t errlen)
{
	const char *h = hostport;
	size_t hl;

	if (h[0] == '[') {
		const char *e = strchr(h, ']');

		if (!e || e[1] != ':') {
			snprintf(err, errlen, "bad listen address %s (want [IPV6]:PORT)", hostport);
			return -EINVAL;
		}
		h++;
		hl = (size_t)(e - h);
		*port = e + 2;
	} else {
		const char *colon = strrchr(h, ':');

		if (!colon) {
			snprintf(err, errlen, "bad listen address %s (want HOST:PORT)", hostport);
			return -EINVAL;
		}
		hl = (size_t)(colon - h);
		*port = colon + 1;
	}
	if (hl >= hostlen || !**port) {
		snprintf(err, errlen, "bad listen address %s (want HOST:PORT)", hostport);
		return -EINVAL;
	}
	/* getaddrinfo takes any number and keeps its low 16 bits: 99999 would
	 * quietly listen on 34463. */
	unsigned long pv = 0;
	for (const char *c = *port; *c; c++) {
		if (*c < '0' || *c > '9' || (pv = pv * 10 + (unsigned long)(*c - '0')) > 65535) {
			snprintf(err, errlen, "bad listen port in %s (want 0-65535)", hostport);
			return -EINVAL;
		}
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	return 0;
}

int sockets_check_hostport(const char *hostport, char *err, size_t errlen)
{
	char host[256];
	const char *port;

	return sockets_split_hostport(hostport, host, sizeof(host), &port, err, errlen);
}

/* One listening socket for ai; the fd or -errno with err set. */
static int sockets_bind_one(const struct addrinfo *ai, const char *hostport, char *err,
                            size_t errlen)
{
	int fd =
	    socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	int one = 1, r;

	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "listen %s: %s", hostport, strerror(errno));
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		snprintf(err, errlen, "listen %s: %s", hostport, strerror(errno));
		close(fd);
		return r;
	}
	return fd;
}

int sockets_listen_tcp(const char *hostport, int *fds, unsigned max, unsigned *n, char *err,
                       size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res, *ai;
	char host[256];
	const char *port;
	int rc;

	*n = 0;
	if ((rc = sockets_split_hostport(hostport, host, sizeof(host), &port, err, errlen)))
		return rc;
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "listen %s: %s", hostport, gai_strerror(rc));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		if (*n == max) {
			snprintf(err, errlen, "listen %s: too many listen addresses (max %u)",
			         hostport, max);
			rc = -EMFILE;
			goto fail;
		}
		rc = sockets_bind_one(ai, hostport, err, errlen);
		if (rc < 0)
			goto fail;
		fds[(*n)++] = rc;
	}
	freeaddrinfo(res);
	if (!*n) {
		snprintf(err, errlen, "listen %s: no address", hostport);
		return -EADDRNOTAVAIL;
	}
	return 0;
fail:
	freeaddrinfo(res);
	while (*n)
		close(fds[--*n]);
	return rc;
}

/* "ADDR:PORT" ("[ADDR]:PORT" for IPv6 when bracket) of an IPv4 or IPv6
 * address into out; false for another family. */
static bool sockets_inet_name(const struct sockaddr_storage *ss, bool bracket, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(out, n, "%s:%u", host, ntohs(a->sin_port));
		return true;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(out, n, bracket ? "[%s]:%u" : "%s:%u", host, ntohs(a->sin6_port));
		return true;
	}
	return false;
}

void sockets_peer_name(int fd, char *out, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		snprintf(out, n, "?:0");
	else if (!sockets_inet_name(&ss, false, out, n))
		snprintf(out, n, "unix:%d", fd);
}

void sockets_local_name(int fd, char *out, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		snprintf(out, n, "?");
	else if (sockets_inet_name(&ss, true, out, n))
		return;
	else if (ss.ss_family == AF_UNIX && len > offsetof(struct sockaddr_un, sun_path) &&
	         ((struct sockaddr_un *)&ss)->sun_path[0])
		snprintf(out, n, "unix:%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)),
		         ((struct sockaddr_un *)&ss)->sun_path);
	else
		snprintf(out, n, "unix:(unnamed)");
}
