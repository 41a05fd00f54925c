/* treq.c — asynchronous store requests for tests (treq.h). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "treq.h"

static pthread_mutex_t tlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tcond = PTHREAD_COND_INITIALIZER;

static void treq_done(struct store_req *r)
{
	struct treq *t = (struct treq *)r;
	pthread_mutex_lock(&tlock);
	t->thread = pthread_self();
	t->err = r->err;
	t->done = true;
	pthread_cond_broadcast(&tcond);
	pthread_mutex_unlock(&tlock);
}

void treq_init(struct treq *t, struct vol *v, enum store_op op, void *buf, uint64_t off,
               uint32_t len, uint32_t flags)
{
	memset(t, 0, sizeof(*t));
	t->r.op = op;
	t->r.flags = flags;
	t->r.buf = buf;
	t->r.off = off;
	t->r.len = len;
	t->r.vol = v;
	t->r.done = treq_done;
}

unsigned treq_ndone(const struct treq *t, unsigned n)
{
	unsigned k = 0;
	pthread_mutex_lock(&tlock);
	for (unsigned i = 0; i < n; i++)
		k += t[i].done;
	pthread_mutex_unlock(&tlock);
	return k;
}

bool treq_wait(const struct treq *t, unsigned n)
{
	struct timespec ts;
	bool all;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += TREQ_BOUND;
	pthread_mutex_lock(&tlock);
	for (;;) {
		all = true;
		for (unsigned i = 0; i < n; i++)
			all = all && t[i].done;
		if (all || pthread_cond_timedwait(&tcond, &tlock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&tlock);
	return all;
}
