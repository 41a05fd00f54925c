/* treq.h — asynchronous store requests for tests: each records whether,
 * on which thread and with what error it completed, so that a test can
 * say a request has not completed yet (a sync held by the device) as well
 * as wait for it, within a bound, rather than hang (no cmocka: threads
 * other than the test's use it).
 */
#ifndef COWBD_TEST_TREQ_H
#define COWBD_TEST_TREQ_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* Seconds treq_wait waits before the test calls the store hung. */
#define TREQ_BOUND 10

struct treq {
	struct store_req r; /* first: the callback casts back */
	pthread_t thread;   /* the thread done() ran on */
	int err;
	bool done; /* under treq.c's lock */
};

/* An op request on v (buf, off, len and flags as store_submit takes them). */
void treq_init(struct treq *t, struct vol *v, enum store_op op, void *buf, uint64_t off,
               uint32_t len, uint32_t flags);
/* How many of t[0..n) have completed. */
unsigned treq_ndone(const struct treq *t, unsigned n);
/* All of t[0..n) completed within TREQ_BOUND seconds. */
bool treq_wait(const struct treq *t, unsigned n);

#endif
