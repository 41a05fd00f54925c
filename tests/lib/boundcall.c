/* boundcall.c — a blocking call with a bound (see boundcall.h). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "boundcall.h"

struct call {
	int (*fn)(void *);
	void *arg;
	int ret;
	bool done;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void *call_main(void *arg)
{
	struct call *c = arg;
	int ret = c->fn(c->arg);
	pthread_mutex_lock(&c->lock);
	c->ret = ret;
	c->done = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

struct call *call_start(int (*fn)(void *), void *arg)
{
	struct call *c = calloc(1, sizeof(*c));
	pthread_t t;
	assert_non_null(c);
	c->fn = fn;
	c->arg = arg;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	assert_int_equal(pthread_create(&t, NULL, call_main, c), 0);
	pthread_detach(t);
	return c;
}

int call_end(struct call *c, int bound, const char *what)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += bound;
	pthread_mutex_lock(&c->lock);
	while (!c->done && pthread_cond_timedwait(&c->cond, &c->lock, &ts) != ETIMEDOUT)
		;
	bool done = c->done;
	int ret = c->ret;
	pthread_mutex_unlock(&c->lock);
	if (!done)
		fail_msg("%s: still waiting after %d s", what, bound);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
	return ret;
}

int call_bounded(int (*fn)(void *), void *arg, int bound, const char *what)
{
	return call_end(call_start(fn, arg), bound, what);
}
