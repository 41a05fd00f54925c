/* core.c — pool-wide state every part of the store shares: the sticky
 * failure flag, the scratch block buffers of a round or checkpoint, and
 * the request queues of
 * its threads, and waiting for a submitted request.  Layer: the bottom of the store's own
 * files (store_int.h); calls nothing above it.  Locks: each queue's lock
 * guards its list, its sleepers and its stop and closed flags, so "is anyone still
 * reading this queue" and the push are one decision; a refused request is
 * completed after the lock is dropped.  Failure and scratch belong to the
 * log thread; core_submit_wait blocks the calling thread on its own
 * condition variable. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "say.h"
#include "store_int.h"

/* Keep at most this many scratch blocks (16 MiB) between rounds. */
#define SCRATCH_KEEP 4096

void core_set_failed(struct store *st, int err, const char *what)
{
	if (!st->failed)
		say_error("pool I/O failed (%s: %s); refusing writes until restart", what,
		          strerror(-err));
	st->failed = true;
}

void *core_scratch_get(struct store *st)
{
	struct scratch *s = &st->scr;
	if (s->used == s->n) {
		void **nb = realloc(s->blk, sizeof(*nb) * (s->n + 64));
		if (!nb)
			return NULL;
		s->blk = nb;
		for (size_t i = 0; i < 64; i++)
			if (posix_memalign(&s->blk[s->n + i], 4096, FMT_BLOCK)) {
				s->n += i;
				return s->used < s->n ? s->blk[s->used++] : NULL;
			}
		s->n += 64;
	}
	return s->blk[s->used++];
}

size_t core_scratch_used(const struct store *st)
{
	return st->scr.used;
}

void core_scratch_reset(struct store *st)
{
	struct scratch *s = &st->scr;
	while (s->n > SCRATCH_KEEP && s->n > s->used)
		free(s->blk[--s->n]);
	s->used = 0;
}

void core_scratch_free(struct store *st)
{
	struct scratch *s = &st->scr;
	for (size_t i = 0; i < s->n; i++)
		free(s->blk[i]);
	free(s->blk);
	memset(s, 0, sizeof(*s));
}

/* Sleeping on a queue.  Every sleeper has a condition variable of its own
 * and a push wakes exactly the one it takes off the list, so no condition
 * variable here ever has two waiters.  The readers used to share one that
 * every push signalled, and glibc's condition variable can lose a signal
 * among several waiters (bug 25847: a waiter woken late takes a signal
 * meant for a newer one and does not pass it on; seen with 2.36).  Now and
 * then every reader slept beside a queued READ, and a synchronous caller,
 * who pushes nothing more, waited for ever (test_space_map; test_core). */
static void wake_one_locked(struct req_queue *q)
{
	struct queue_sleeper *s = q->sleepers;
	if (!s)
		return;
	q->sleepers = s->next;
	s->woken = true;
	pthread_cond_signal(&s->cond);
}

static void wake_all_locked(struct req_queue *q)
{
	while (q->sleepers)
		wake_one_locked(q);
}

int core_queue_sleep_locked(struct req_queue *q, const struct timespec *until)
{
	struct queue_sleeper s = {.next = q->sleepers, .woken = false};
	int err = 0;

	pthread_cond_init(&s.cond, NULL);
	q->sleepers = &s;
	while (!s.woken && !err)
		err = until ? pthread_cond_timedwait(&s.cond, &q->lock, until)
		            : pthread_cond_wait(&s.cond, &q->lock);
	if (!s.woken) { /* timed out: still listed */
		struct queue_sleeper **p = &q->sleepers;
		while (*p != &s)
			p = &(*p)->next;
		*p = s.next;
	}
	pthread_cond_destroy(&s.cond);
	return s.woken ? 0 : ETIMEDOUT;
}

void core_queue_init(struct req_queue *q)
{
	pthread_mutex_init(&q->lock, NULL);
}

void core_queue_destroy(struct req_queue *q)
{
	pthread_mutex_destroy(&q->lock);
}

int core_queue_push(struct req_queue *q, struct store_req *r)
{
	r->next = NULL;
	return core_queue_push_list(q, r, r);
}

/* Complete head.. (linked by next) with -ESHUTDOWN; next is read before
 * done() hands each back (it may free it or reuse it). */
static void refuse_list(struct store_req *head)
{
	while (head) {
		struct store_req *next = head->next;
		core_complete(head, -ESHUTDOWN);
		head = next;
	}
}

int core_queue_push_list(struct req_queue *q, struct store_req *head, struct store_req *tail)
{
	pthread_mutex_lock(&q->lock);
	bool closed = q->closed;
	if (!closed) {
		if (q->tail)
			q->tail->next = head;
		else
			q->head = head;
		q->tail = tail;
		wake_one_locked(q);
	}
	pthread_mutex_unlock(&q->lock);
	if (!closed)
		return 0;
	tail->next = NULL;
	refuse_list(head);
	return -ESHUTDOWN;
}

void core_queue_wake(struct req_queue *q)
{
	pthread_mutex_lock(&q->lock);
	wake_all_locked(q);
	pthread_mutex_unlock(&q->lock);
}

void core_queue_stop(struct req_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	wake_all_locked(q);
	pthread_mutex_unlock(&q->lock);
}

void core_queue_close_locked(struct req_queue *q)
{
	q->closed = true;
}

void core_queue_close(struct req_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	struct store_req *left = q->head;
	q->head = q->tail = NULL;
	pthread_mutex_unlock(&q->lock);
	refuse_list(left);
}

struct waiter {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool done;
};

static void waiter_done(struct store_req *r)
{
	struct waiter *w = r->priv;
	pthread_mutex_lock(&w->m);
	w->done = true;
	pthread_cond_signal(&w->c);
	pthread_mutex_unlock(&w->m);
}

int core_submit_wait(struct store_req *r, void (*submit)(struct store_req *))
{
	struct waiter w = {.done = false};
	pthread_mutex_init(&w.m, NULL);
	pthread_cond_init(&w.c, NULL);
	r->priv = &w;
	r->done = waiter_done;
	submit(r);
	pthread_mutex_lock(&w.m);
	while (!w.done)
		pthread_cond_wait(&w.c, &w.m);
	pthread_mutex_unlock(&w.m);
	pthread_mutex_destroy(&w.m);
	pthread_cond_destroy(&w.c);
	return r->err;
}
