/* floor.c — the least an NBD server can do per request, to measure
 * against (bench/ab.sh FLOOR=...; not part of `make bench`, not a server
 * to use): one thread, one file, one client at a time; the fixed newstyle
 * handshake with NBD_OPT_GO (everything else refused), simple replies;
 * READ (preadv2), WRITE (pwrite), FLUSH (fdatasync), DISC.  No checksums,
 * no metadata, no second connection.
 *
 *   floor epoll PORT FILE   wait in epoll_wait, then recv, serve, sendmsg
 *   floor uring PORT FILE   one io_uring_enter per wake-up sends the
 *                           replies and waits for the next requests
 *
 * It serves clients one after another until killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define REQ_MAGIC   0x25609513u
#define REPLY_MAGIC 0x67446698u
#define OPT_MAGIC   0x49484156454F5054ull /* IHAVEOPT */
#define MAXLEN      (4u << 20)            /* the largest request it takes */
#define MAXQ        128                   /* requests served per wake-up (fio: at most its qd) */

static int file_fd;
static uint64_t file_size;

static void die(const char *m)
{
	perror(m);
	exit(1);
}

static int io_full(int fd, void *b, size_t n, int rd)
{
	for (size_t at = 0; at < n;) {
		ssize_t r = rd ? recv(fd, (char *)b + at, n - at, MSG_WAITALL)
		               : send(fd, (const char *)b + at, n - at, MSG_NOSIGNAL);
		if (r <= 0)
			return -1;
		at += (size_t)r;
	}
	return 0;
}

static int opt_reply(int c, uint32_t opt, uint32_t type, const void *d, uint32_t len)
{
	uint8_t h[20];
	uint64_t m = htobe64(0x3e889045565a9ull);
	uint32_t o = htobe32(opt), t = htobe32(type), l = htobe32(len);
	memcpy(h, &m, 8), memcpy(h + 8, &o, 4), memcpy(h + 12, &t, 4), memcpy(h + 16, &l, 4);
	return io_full(c, h, sizeof h, 0) || (len && io_full(c, (void *)d, len, 0)) ? -1 : 0;
}

/* The handshake up to NBD_OPT_GO; 0 when transmission starts. */
static int handshake(int c)
{
	uint8_t hello[18] = "NBDMAGICIHAVEOPT";
	hello[16] = 0, hello[17] = 3; /* FIXED_NEWSTYLE | NO_ZEROES */
	uint32_t cflags;
	if (io_full(c, hello, sizeof hello, 0) || io_full(c, &cflags, 4, 1))
		return -1;
	for (;;) {
		uint8_t h[16];
		if (io_full(c, h, sizeof h, 1))
			return -1;
		uint64_t magic;
		uint32_t opt, len;
		memcpy(&magic, h, 8), memcpy(&opt, h + 8, 4), memcpy(&len, h + 12, 4);
		opt = be32toh(opt), len = be32toh(len);
		if (be64toh(magic) != OPT_MAGIC || len > 65536)
			return -1;
		char data[65536];
		if (len && io_full(c, data, len, 1))
			return -1;
		if (opt == 7 /* GO */) {
			uint8_t info[12];
			uint16_t t = htobe16(0 /* NBD_INFO_EXPORT */);
			uint64_t sz = htobe64(file_size);
			uint16_t fl = htobe16(1 | 4 /* HAS_FLAGS | SEND_FLUSH */);
			memcpy(info, &t, 2), memcpy(info + 2, &sz, 8), memcpy(info + 10, &fl, 2);
			if (opt_reply(c, opt, 3 /* REP_INFO */, info, sizeof info) ||
			    opt_reply(c, opt, 1 /* REP_ACK */, NULL, 0))
				return -1;
			return 0;
		}
		if (opt == 2 /* ABORT */)
			return -1;
		if (opt_reply(c, opt, 0x80000001u /* ERR_UNSUP */, NULL, 0))
			return -1;
	}
}

/* One connection's state: what has been received and the replies made. */
struct conn {
	int fd;
	char *in;    /* received, not yet served */
	size_t have; /* bytes in in[] */
	size_t cap;  /* in[]'s size */
	char *out;   /* reply headers and READ data, MAXQ slots */
	struct iovec iov[MAXQ * 2];
	unsigned niov;
	size_t outlen; /* bytes the iovecs hold */
};

/* Serve the whole requests received; replies go to c->iov.  -1: the
 * client is done (DISC) or broke the protocol. */
static int serve(struct conn *c)
{
	size_t at = 0;
	unsigned n = 0;
	c->niov = 0, c->outlen = 0;
	while (c->have - at >= 28 && n < MAXQ) {
		const uint8_t *q = (const uint8_t *)c->in + at;
		uint32_t magic, len;
		uint16_t type;
		uint64_t off;
		memcpy(&magic, q, 4), memcpy(&type, q + 6, 2), memcpy(&off, q + 16, 8),
		    memcpy(&len, q + 24, 4);
		magic = be32toh(magic), type = be16toh(type), off = be64toh(off),
		len = be32toh(len);
		if (magic != REQ_MAGIC || len > MAXLEN)
			return -1;
		if (type == 1 && c->have - at < 28 + (size_t)len)
			break; /* the rest of a WRITE's payload is on its way */
		if (type == 2)
			return -1;
		char *slot = c->out + (size_t)n * (16 + MAXLEN);
		uint32_t err = 0, rm = htobe32(REPLY_MAGIC);
		memcpy(slot, &rm, 4), memcpy(slot + 8, q + 8, 8);
		size_t dlen = 0;
		if (off > file_size || len > file_size - off)
			err = 22;
		else if (type == 0) {
			struct iovec v = {slot + 16, len};
			ssize_t r = preadv2(file_fd, &v, 1, (off_t)off, 0);
			if (r == (ssize_t)len)
				dlen = len;
			else
				err = 5;
		} else if (type == 1) {
			if (pwrite(file_fd, q + 28, len, (off_t)off) != (ssize_t)len)
				err = 5;
		} else if (type == 3) {
			if (fdatasync(file_fd))
				err = 5;
		} else
			err = 22;
		err = htobe32(err);
		memcpy(slot + 4, &err, 4);
		c->iov[c->niov++] = (struct iovec){slot, 16 + dlen};
		c->outlen += 16 + dlen;
		at += 28 + (type == 1 ? len : 0);
		n++;
	}
	memmove(c->in, c->in + at, c->have - at);
	c->have -= at;
	return 0;
}

static void send_all(struct conn *c)
{
	struct msghdr m = {.msg_iov = c->iov, .msg_iovlen = c->niov};
	size_t sent = 0;
	while (sent < c->outlen) {
		ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
		if (r < 0 && errno == EAGAIN) {
			struct timespec ts = {0, 20000};
			nanosleep(&ts, NULL); /* a full socket buffer: large READs only */
			continue;
		}
		if (r <= 0)
			return;
		sent += (size_t)r;
		while (m.msg_iovlen && (size_t)r >= m.msg_iov->iov_len)
			r -= (ssize_t)m.msg_iov->iov_len, m.msg_iov++, m.msg_iovlen--;
		if (m.msg_iovlen)
			m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + r,
			m.msg_iov->iov_len -= (size_t)r;
	}
}

static void run_epoll(struct conn *c)
{
	int ep = epoll_create1(0);
	struct epoll_event e = {.events = EPOLLIN};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e))
		die("epoll");
	for (;;) {
		if (epoll_wait(ep, &e, 1, -1) < 0 && errno != EINTR)
			die("epoll_wait");
		ssize_t r = recv(c->fd, c->in + c->have, c->cap - c->have, 0);
		if (r < 0 && errno == EAGAIN)
			continue;
		if (r <= 0)
			break;
		c->have += (size_t)r;
		do {
			if (serve(c))
				goto out;
			send_all(c);
		} while (c->niov);
	}
out:
	close(ep);
}

static void run_uring(struct conn *c)
{
	struct io_uring ring;
	struct io_uring_params p = {.flags =
	                                IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
	if (io_uring_queue_init_params(8, &ring, &p))
		die("io_uring_queue_init");
	struct msghdr m;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	io_uring_prep_recv(sqe, c->fd, c->in + c->have, c->cap - c->have, 0);
	for (;;) {
		if (io_uring_submit_and_wait(&ring, 1) < 0)
			die("io_uring_submit_and_wait");
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int r = 0, got = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			seen++;
			if (cqe->user_data == 0)
				r = cqe->res, got = 1;
			else if (cqe->res < 0)
				goto out; /* a failed send */
		}
		io_uring_cq_advance(&ring, seen);
		if (!got)
			continue;
		if (r <= 0)
			break;
		c->have += (size_t)r;
		if (serve(c))
			break;
		if (c->niov) {
			/* Replies to a whole batch: the next receive waits for the
			 * send (linked), so the buffers are free again after it. */
			m = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = c->niov};
			sqe = io_uring_get_sqe(&ring);
			io_uring_prep_sendmsg(sqe, c->fd, &m, MSG_NOSIGNAL | MSG_WAITALL);
			sqe->user_data = 1;
			sqe->flags |= IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK;
		}
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_recv(sqe, c->fd, c->in + c->have, c->cap - c->have, 0);
		sqe->user_data = 0;
	}
out:
	io_uring_queue_exit(&ring);
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "epoll") && strcmp(argv[1], "uring")))
		return fprintf(stderr, "usage: floor epoll|uring PORT FILE\n"), 2;
	struct stat st;
	file_fd = open(argv[3], O_RDWR);
	if (file_fd < 0 || fstat(file_fd, &st))
		die(argv[3]);
	file_size = (uint64_t)st.st_size;
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4))
		die("listen");
	struct conn c = {.cap = 2 * (28 + (size_t)MAXLEN)};
	c.in = malloc(c.cap);
	c.out = malloc((size_t)MAXQ * (16 + MAXLEN)); /* touched only as used */
	if (!c.in || !c.out)
		die("malloc");
	for (;;) {
		c.fd = accept(l, NULL, NULL);
		if (c.fd < 0)
			continue;
		setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		c.have = 0;
		if (!handshake(c.fd)) {
			if (argv[1][0] == 'e') {
				fcntl(c.fd, F_SETFL, O_NONBLOCK);
				run_epoll(&c);
			} else
				run_uring(&c);
		}
		close(c.fd);
	}
}
