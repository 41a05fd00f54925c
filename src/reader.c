/* reader.c — the read side: reader threads that serve READ, the lock-free
 * attempt on the caller's thread (store_read_try), the allocation map for
 * BLOCK_STATUS (store_map), and RCU registration of the threads that use
 * them.
 *
 * Readers walk the trees under rcu_read_lock with no other lock, and
 * coalesce physically contiguous blocks into one read.  A physical block
 * is reused only after a checkpoint and an RCU grace period, so a read of
 * a block looked up here never returns another volume's data.
 *
 * Layer: under store; over vtab (records), tree and segio.  Locks:
 * rd.q.lock guards the reader queue.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "store_int.h"

/* Threads that are not RCU readers yet become one for the duration of a
 * call (control threads come and go; a registered thread must not exit). */
static __thread bool rcu_registered;

/* Read [off, off+len) of v into buf.  With nowait, fail with -EAGAIN
 * rather than wait for the backend.  Caller is an RCU-registered thread. */
static int read_range(struct store *st, struct volume *v, char *buf, uint64_t off, uint64_t len,
                      bool nowait)
{
	int (*rd)(struct segio *, void *, size_t, uint64_t) =
	    nowait ? segio_read_nowait : segio_read;
	uint64_t end = off + len;
	uint64_t run_phys = 0, run_len = 0; /* bytes */
	char *run_buf = NULL;
	int err = 0;

	urcu_memb_read_lock();
	for (uint64_t lba = off / FMT_BLOCK; lba * FMT_BLOCK < end; lba++) {
		uint64_t bs = lba * FMT_BLOCK;
		uint64_t from = off > bs ? off - bs : 0;
		uint64_t to = end < bs + FMT_BLOCK ? end - bs : FMT_BLOCK;
		char *dst = buf + (bs + from - off);
		uint64_t phys = tree_lookup(&v->tree, lba);
		uint64_t pbyte = phys * FMT_BLOCK + from;
		if (run_len && phys && pbyte == run_phys + run_len) {
			run_len += to - from;
			continue;
		}
		if (run_len) {
			err = rd(st->io, run_buf, run_len, run_phys);
			if (err)
				break;
			run_len = 0;
		}
		if (!phys) {
			memset(dst, 0, to - from);
		} else {
			run_phys = pbyte;
			run_len = to - from;
			run_buf = dst;
		}
	}
	if (!err && run_len)
		err = rd(st->io, run_buf, run_len, run_phys);
	urcu_memb_read_unlock();
	return err;
}

static void *reader_main(void *arg)
{
	struct store *st = arg;
	urcu_memb_register_thread();
	for (;;) {
		struct req_queue *q = &st->rd.q;
		pthread_mutex_lock(&q->lock);
		while (!q->head && !q->stop)
			pthread_cond_wait(&q->cond, &q->lock);
		struct store_req *r = q->head;
		if (r) {
			q->head = r->next;
			if (!q->head)
				q->tail = NULL;
		}
		pthread_mutex_unlock(&q->lock);
		if (!r)
			break;
		core_complete(r, read_range(st, r->vol->rec, r->buf, r->off, r->len, false));
	}
	urcu_memb_unregister_thread();
	return NULL;
}

int reader_start(struct store *st, unsigned n)
{
	st->rd.threads = calloc(n, sizeof(*st->rd.threads));
	if (!st->rd.threads)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&st->rd.threads[i], NULL, reader_main, st))
			break;
		st->rd.n++;
	}
	return st->rd.n ? 0 : -EAGAIN;
}

void reader_stop(struct store *st)
{
	core_queue_stop(&st->rd.q);
	for (unsigned i = 0; i < st->rd.n; i++)
		pthread_join(st->rd.threads[i], NULL);
	st->rd.n = 0;
}

void reader_enqueue(struct store *st, struct store_req *r)
{
	core_queue_push(&st->rd.q, r);
}

bool store_read_try(struct store_req *r)
{
	struct volume *v = r->vol->rec;
	if (r->op != STORE_READ || r->len > STORE_MAX_REQ || r->off > v->size ||
	    r->len > v->size - r->off)
		return false; /* store_submit answers it */
	int err = read_range(r->vol->st, v, r->buf, r->off, r->len, true);
	if (err == -EAGAIN)
		return false;
	r->err = err;
	return true;
}

int store_map(struct vol *h, uint64_t off, uint64_t len, struct store_extent *ext, unsigned max,
              unsigned *n)
{
	struct volume *v = h->rec;
	uint64_t end = off + len;
	unsigned k = 0;

	*n = 0;
	if (off > v->size || len > v->size - off || !max)
		return -EINVAL;
	urcu_memb_read_lock();
	while (off < end && k < max) {
		uint64_t lba = off / FMT_BLOCK;
		uint64_t last = (end - 1) / FMT_BLOCK;
		bool mapped;
		uint64_t blocks = tree_run(&v->tree, lba, last - lba + 1, &mapped);
		uint64_t run_end = (lba + blocks) * FMT_BLOCK;
		if (run_end > end)
			run_end = end;
		if (k && ext[k - 1].hole == !mapped) {
			ext[k - 1].len += run_end - off; /* tree_run stopped at a leaf edge */
		} else {
			ext[k].len = run_end - off;
			ext[k].hole = !mapped;
			k++;
		}
		off = run_end;
	}
	urcu_memb_read_unlock();
	*n = k;
	return 0;
}

void store_thread_register(void)
{
	urcu_memb_register_thread();
	rcu_registered = true;
}

void store_thread_unregister(void)
{
	urcu_memb_unregister_thread();
	rcu_registered = false;
}

bool reader_rcu_enter(void)
{
	if (rcu_registered)
		return false;
	store_thread_register();
	return true;
}

void reader_rcu_leave(bool entered)
{
	if (entered)
		store_thread_unregister();
}
