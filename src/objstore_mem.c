/* objstore_mem.c — the object store of objstore.h in memory, for tests: a
 * cluster of objects, exclusive locks and a blocklist that several clients
 * share, with a clock that only the test moves, and faults on demand (a
 * failed write, flush or read; a client whose host loses power).  Layer:
 * beside objstore_rados.c, under segio_obj.c.
 *
 * The model of a write: a queued write is applied to its object at once,
 * as an OSD that already received it (every client's reads see it), and
 * is remembered in its client's undo log until a flush of that client
 * makes it durable.  A crash then undoes, for each object, a random suffix
 * of that client's unflushed writes in reverse issue order, so what stays
 * is a prefix in issue order (objstore.h's ordering).  write_full and
 * remove are durable on return and, as RADOS orders one object's
 * operations, make the writes queued to that object before them durable
 * too (every client's undo entries for the object are dropped).  The model
 * assumes, as cowbd does, that no second client writes an object while
 * another has unflushed writes to it.
 *
 * A lock lives on its object as in RADOS: taking one creates the object,
 * removing the object drops it.  A lock with a lease is held while the
 * clock is before its end; an expired lock is not held by anyone, and a
 * write guarded by it (write_full_locked, setxattr_locked) is refused
 * then, as cls_lock's assert_locked refuses it.  Attributes live on their
 * object too; like locks, they are durable when set (a crash keeps them).
 *
 * Locks: one mutex per cluster, held by every call for its whole length;
 * no call blocks on anything else. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "objstore.h"

struct mem_lock {
	bool held;
	unsigned client; /* the holder's number: "client.N" */
	char cookie[OBJSTORE_NAME_MAX];
	uint64_t until; /* end of the lease on the cluster clock; 0 = none */
};

struct mem_xattr {
	struct mem_xattr *next;
	char name[OBJSTORE_NAME_MAX];
	size_t len;
	uint8_t val[];
};

struct mem_obj {
	struct mem_obj *next;
	char name[OBJSTORE_NAME_MAX];
	uint8_t *data;
	size_t len, cap;
	struct mem_lock lock;
	struct mem_xattr *xattrs;
	unsigned crash_n, crash_left, crash_keep; /* objstore_mem_crash's counts */
	bool crash_gone;                          /* its creating write was lost */
};

/* An unflushed write: what it overwrote, to undo it at a crash. */
struct mem_undo {
	struct mem_undo *next;
	struct mem_obj *obj;
	uint64_t off;
	size_t old_len; /* the object's length before the write */
	size_t saved;   /* bytes of old[] (the overwritten part below old_len) */
	bool created;   /* the write made the object */
	unsigned seq;   /* its place among this object's entries (crash) */
	uint8_t old[];
};

struct mem_client {
	struct objstore os; /* first: the interface */
	struct objstore_mem *m;
	struct mem_client *next;
	unsigned num;
	char addr[OBJSTORE_NAME_MAX];
	bool crashed;
	int write_err; /* a write not applied: the next flush's error (-EIO, -ENOSPC) */
	unsigned fail_write, fail_flush, fail_read;
	unsigned writes, flushes;
	unsigned calls;                /* writes, flushes, write_fulls and removes */
	unsigned crash_at, crash_seed; /* objstore_mem_crash_after */
	struct mem_undo *undo;         /* the newest first */
};

struct objstore_mem {
	pthread_mutex_t mu;
	struct mem_obj *objs;
	struct mem_client *clients;
	unsigned nclients; /* clients ever made: the next number */
	uint64_t now;
	unsigned calls; /* writes, flushes, write_fulls and removes of every client */
	char **blocked; /* blocklisted addresses */
	size_t nblocked;
	uint64_t capacity; /* bytes; 0: no limit */
};

static const struct objstore_ops mem_ops;

static struct mem_client *to_mc(struct objstore *os)
{
	return (struct mem_client *)os;
}

/* Locks m; returns the client, or NULL (and m unlocked) when it is fenced. */
static struct mem_client *enter(struct objstore *os)
{
	struct mem_client *c = to_mc(os);
	struct objstore_mem *m = c->m;

	pthread_mutex_lock(&m->mu);
	if (c->crashed)
		goto fenced;
	for (size_t i = 0; i < m->nblocked; i++)
		if (!strcmp(m->blocked[i], c->addr))
			goto fenced;
	return c;
fenced:
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

static void leave(struct mem_client *c)
{
	pthread_mutex_unlock(&c->m->mu);
}

static void crash_locked(struct mem_client *c, unsigned seed);

/* enter, for a call that changes objects: counted, and the host loses
 * power here when objstore_mem_crash_after says so (the call is lost). */
static struct mem_client *enter_change(struct objstore *os)
{
	struct mem_client *c = enter(os);

	if (!c)
		return NULL;
	c->m->calls++;
	if (c->crash_at && --c->crash_at == 0) {
		crash_locked(c, c->crash_seed);
		leave(c);
		return NULL;
	}
	return c;
}

/* A fault armed with n (nth call from now; 0 none) fires on this call. */
static bool fires(unsigned *n)
{
	return *n && --*n == 0;
}

static struct mem_obj *obj_find_locked(struct objstore_mem *m, const char *oid)
{
	for (struct mem_obj *o = m->objs; o; o = o->next)
		if (!strcmp(o->name, oid))
			return o;
	return NULL;
}

/* oid, made (empty) when missing; *created says which.  NULL: no memory. */
static struct mem_obj *obj_get_locked(struct objstore_mem *m, const char *oid, bool *created)
{
	struct mem_obj *o = obj_find_locked(m, oid);

	*created = !o;
	if (o)
		return o;
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	snprintf(o->name, sizeof(o->name), "%s", oid);
	o->next = m->objs;
	m->objs = o;
	return o;
}

/* Make room for len bytes; bytes past the old length read as zeros. */
static int obj_resize(struct mem_obj *o, size_t len)
{
	if (len > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;
		uint8_t *d;

		while (cap < len)
			cap *= 2;
		d = realloc(o->data, cap);
		if (!d)
			return -ENOMEM;
		o->data = d;
		o->cap = cap;
	}
	if (len > o->len)
		memset(o->data + o->len, 0, len - o->len);
	o->len = len;
	return 0;
}

/* Drop every client's undo entries for o: its writes are durable now, or
 * o is going away. */
static void undo_forget_locked(struct objstore_mem *m, const struct mem_obj *o)
{
	for (struct mem_client *c = m->clients; c; c = c->next) {
		struct mem_undo **p = &c->undo;

		while (*p) {
			struct mem_undo *u = *p;

			if (u->obj == o) {
				*p = u->next;
				free(u);
			} else {
				p = &u->next;
			}
		}
	}
}

static void undo_clear(struct mem_client *c)
{
	while (c->undo) {
		struct mem_undo *u = c->undo;

		c->undo = u->next;
		free(u);
	}
}

static void obj_free(struct mem_obj *o)
{
	while (o->xattrs) {
		struct mem_xattr *x = o->xattrs;

		o->xattrs = x->next;
		free(x);
	}
	free(o->data);
	free(o);
}

static void obj_remove_locked(struct objstore_mem *m, struct mem_obj *o)
{
	struct mem_obj **p = &m->objs;

	undo_forget_locked(m, o);
	while (*p != o)
		p = &(*p)->next;
	*p = o->next;
	obj_free(o);
}

/* Bytes of every object's data. */
static uint64_t used_locked(const struct objstore_mem *m)
{
	uint64_t n = 0;

	for (const struct mem_obj *o = m->objs; o; o = o->next)
		n += o->len;
	return n;
}

/* Would o (NULL: a new object) at least len bytes long overfill the
 * cluster (objstore_mem_set_capacity)? */
static bool too_big_locked(const struct objstore_mem *m, const struct mem_obj *o, uint64_t len)
{
	uint64_t cur = o ? o->len : 0;

	return m->capacity && len > cur && used_locked(m) + (len - cur) > m->capacity;
}

static int mem_write(struct objstore *os, const char *oid, const void *buf, size_t len,
                     uint64_t off)
{
	struct mem_client *c = enter_change(os);
	struct mem_obj *o;
	struct mem_undo *u = NULL;
	size_t saved = 0;
	bool created;
	int err = 0;

	if (!c)
		return -EBLOCKLISTED;
	c->writes++;
	if (fires(&c->fail_write)) {
		c->write_err = -EIO; /* not applied; the next flush says so */
		goto out;
	}
	o = obj_find_locked(c->m, oid);
	if (too_big_locked(c->m, o, off + len)) {
		c->write_err = -ENOSPC;
		goto out;
	}
	o = obj_get_locked(c->m, oid, &created);
	if (o && off < o->len)
		saved = len < o->len - off ? len : o->len - off;
	if (o)
		u = malloc(sizeof(*u) + saved);
	if (!u) {
		err = -ENOMEM;
		goto out;
	}
	*u = (struct mem_undo){
	    .obj = o, .off = off, .old_len = o->len, .saved = saved, .created = created};
	if (saved)
		memcpy(u->old, o->data + off, saved);
	if (off + len > o->len && (err = obj_resize(o, off + len)) < 0) {
		free(u);
		goto out;
	}
	if (len)
		memcpy(o->data + off, buf, len);
	u->next = c->undo;
	c->undo = u;
out:
	leave(c);
	return err;
}

static int mem_flush(struct objstore *os)
{
	struct mem_client *c = enter_change(os);
	int err = 0;

	if (!c)
		return -EBLOCKLISTED;
	c->flushes++;
	if (fires(&c->fail_flush)) {
		err = -EIO; /* the writes stay unflushed: a crash may lose them */
		goto out;
	}
	undo_clear(c);
	if (c->write_err) {
		err = c->write_err;
		c->write_err = 0;
	}
out:
	leave(c);
	return err;
}

static ssize_t mem_read(struct objstore *os, const char *oid, void *buf, size_t len, uint64_t off)
{
	struct mem_client *c = enter(os);
	struct mem_obj *o;
	ssize_t n = 0;

	if (!c)
		return -EBLOCKLISTED;
	if (fires(&c->fail_read)) {
		n = -EIO;
		goto out;
	}
	o = obj_find_locked(c->m, oid);
	if (!o) {
		n = -ENOENT;
		goto out;
	}
	if (off < o->len) {
		n = len < o->len - off ? len : o->len - off;
		memcpy(buf, o->data + off, n);
	}
out:
	leave(c);
	return n;
}

/* Replace o's content with buf: durable, with the writes queued to o
 * before it. */
static int obj_replace_locked(struct objstore_mem *m, struct mem_obj *o, const void *buf,
                              size_t len)
{
	int err;

	undo_forget_locked(m, o);
	o->len = 0;
	err = obj_resize(o, len);
	if (!err && len)
		memcpy(o->data, buf, len);
	return err;
}

static int mem_write_full(struct objstore *os, const char *oid, const void *buf, size_t len)
{
	struct mem_client *c = enter_change(os);
	struct mem_obj *o;
	bool created;
	int err = -ENOMEM;

	if (!c)
		return -EBLOCKLISTED;
	if (too_big_locked(c->m, obj_find_locked(c->m, oid), len))
		err = -ENOSPC;
	else if ((o = obj_get_locked(c->m, oid, &created)))
		err = obj_replace_locked(c->m, o, buf, len);
	leave(c);
	return err;
}

static int mem_remove(struct objstore *os, const char *oid)
{
	struct mem_client *c = enter_change(os);
	struct mem_obj *o;

	if (!c)
		return -EBLOCKLISTED;
	o = obj_find_locked(c->m, oid);
	if (o)
		obj_remove_locked(c->m, o);
	leave(c);
	return o ? 0 : -ENOENT;
}

/* o's lock, or NULL when nobody holds it (an expired lease is dropped). */
static struct mem_lock *lock_held_locked(struct objstore_mem *m, struct mem_obj *o)
{
	if (!o || !o->lock.held)
		return NULL;
	if (o->lock.until && m->now >= o->lock.until)
		o->lock.held = false;
	return o->lock.held ? &o->lock : NULL;
}

static bool lock_mine(const struct mem_lock *l, const struct mem_client *c, const char *cookie)
{
	return l->client == c->num && !strcmp(l->cookie, cookie);
}

/* oid, when c holds its lock under cookie now: else NULL. */
static struct mem_obj *obj_mine_locked(struct mem_client *c, const char *oid, const char *cookie)
{
	struct mem_obj *o = obj_find_locked(c->m, oid);
	struct mem_lock *l = lock_held_locked(c->m, o);

	return l && lock_mine(l, c, cookie) ? o : NULL;
}

static int mem_write_full_locked(struct objstore *os, const char *oid, const char *cookie,
                                 const void *buf, size_t len)
{
	struct mem_client *c = enter_change(os);
	struct mem_obj *o;
	int err = -ENOLCK;

	if (!c)
		return -EBLOCKLISTED;
	o = obj_mine_locked(c, oid, cookie);
	if (o && too_big_locked(c->m, o, len))
		err = -ENOSPC;
	else if (o)
		err = obj_replace_locked(c->m, o, buf, len);
	leave(c);
	return err;
}

static struct mem_xattr **xattr_find(struct mem_obj *o, const char *name)
{
	struct mem_xattr **p = &o->xattrs;

	while (*p && strcmp((*p)->name, name))
		p = &(*p)->next;
	return p;
}

static int mem_setxattr_locked(struct objstore *os, const char *oid, const char *cookie,
                               const char *name, const void *val, size_t len)
{
	struct mem_client *c = enter_change(os);
	struct mem_xattr **p, *x;
	struct mem_obj *o;
	int err = -ENOLCK;

	if (!c)
		return -EBLOCKLISTED;
	o = obj_mine_locked(c, oid, cookie);
	if (!o)
		goto out;
	err = -ENOMEM;
	x = malloc(sizeof(*x) + len);
	if (!x)
		goto out;
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->len = len;
	if (len)
		memcpy(x->val, val, len);
	p = xattr_find(o, name);
	x->next = *p ? (*p)->next : NULL;
	free(*p);
	*p = x;
	err = 0;
out:
	leave(c);
	return err;
}

static ssize_t mem_getxattr(struct objstore *os, const char *oid, const char *name, void *buf,
                            size_t len)
{
	struct mem_client *c = enter(os);
	struct mem_xattr *x;
	struct mem_obj *o;
	ssize_t n = -ENOENT;

	if (!c)
		return -EBLOCKLISTED;
	o = obj_find_locked(c->m, oid);
	x = o ? *xattr_find(o, name) : NULL;
	if (o)
		n = !x ? -ENODATA : x->len > len ? -ERANGE : (ssize_t)x->len;
	if (n > 0)
		memcpy(buf, x->val, x->len);
	leave(c);
	return n;
}

static int mem_lock(struct objstore *os, const char *oid, const char *cookie, unsigned secs,
                    bool renew)
{
	struct mem_client *c = enter(os);
	struct mem_obj *o;
	struct mem_lock *l;
	bool created;
	int err = 0;

	if (!c)
		return -EBLOCKLISTED;
	o = obj_get_locked(c->m, oid, &created);
	if (!o) {
		err = -ENOMEM;
		goto out;
	}
	l = lock_held_locked(c->m, o);
	if (l && !lock_mine(l, c, cookie))
		err = -EBUSY;
	else if (l && !renew)
		err = -EEXIST; /* as cls_lock answers a second lock by its holder */
	else
		o->lock = (struct mem_lock){
		    .held = true, .client = c->num, .until = secs ? c->m->now + secs : 0};
	if (!err)
		snprintf(o->lock.cookie, sizeof(o->lock.cookie), "%s", cookie);
out:
	leave(c);
	return err;
}

static int mem_unlock(struct objstore *os, const char *oid, const char *cookie)
{
	struct mem_client *c = enter(os);
	struct mem_lock *l;
	int err = -ENOENT;

	if (!c)
		return -EBLOCKLISTED;
	l = lock_held_locked(c->m, obj_find_locked(c->m, oid));
	if (l && lock_mine(l, c, cookie)) {
		l->held = false;
		err = 0;
	}
	leave(c);
	return err;
}

static struct mem_client *client_num_locked(struct objstore_mem *m, unsigned num)
{
	for (struct mem_client *c = m->clients; c; c = c->next)
		if (c->num == num)
			return c;
	return NULL;
}

static int mem_locker(struct objstore *os, const char *oid, struct objstore_locker *out)
{
	struct mem_client *c = enter(os), *h;
	struct mem_lock *l;

	if (!c)
		return -EBLOCKLISTED;
	l = lock_held_locked(c->m, obj_find_locked(c->m, oid));
	if (l) {
		h = client_num_locked(c->m, l->client);
		snprintf(out->client, sizeof(out->client), "client.%u", l->client);
		snprintf(out->cookie, sizeof(out->cookie), "%s", l->cookie);
		/* A closed client's address is gone from the table, not from
		 * the lock: its form is the same. */
		if (h)
			snprintf(out->addr, sizeof(out->addr), "%s", h->addr);
		else
			snprintf(out->addr, sizeof(out->addr), "mem:%u/%d", l->client,
			         (int)getpid());
	}
	leave(c);
	return l ? 0 : -ENOENT;
}

static int mem_break_lock(struct objstore *os, const char *oid, const struct objstore_locker *lk)
{
	struct mem_client *c = enter(os);
	struct mem_lock *l;
	char name[OBJSTORE_NAME_MAX];
	int err = -ENOENT;

	if (!c)
		return -EBLOCKLISTED;
	l = lock_held_locked(c->m, obj_find_locked(c->m, oid));
	if (l) {
		snprintf(name, sizeof(name), "client.%u", l->client);
		if (!strcmp(name, lk->client) && !strcmp(l->cookie, lk->cookie)) {
			l->held = false;
			err = 0;
		}
	}
	leave(c);
	return err;
}

static int mem_blocklist(struct objstore *os, const char *addr)
{
	struct mem_client *c = enter(os);
	struct objstore_mem *m;
	char **b, *s;

	if (!c)
		return -EBLOCKLISTED;
	m = c->m;
	b = realloc(m->blocked, (m->nblocked + 1) * sizeof(*b));
	if (b)
		m->blocked = b;
	s = b ? strdup(addr) : NULL;
	if (s)
		m->blocked[m->nblocked++] = s;
	leave(c);
	return s ? 0 : -ENOMEM;
}

static int mem_space(struct objstore *os, uint64_t *bytes, uint64_t *objects)
{
	struct mem_client *c = enter(os);
	int err = -ENOTSUP;

	if (!c)
		return -EBLOCKLISTED;
	if (c->m->capacity) {
		uint64_t used = used_locked(c->m);
		*bytes = used < c->m->capacity ? c->m->capacity - used : 0;
		*objects = UINT64_MAX;
		err = 0;
	}
	leave(c);
	return err;
}

static const char *mem_addr(struct objstore *os)
{
	return to_mc(os)->addr;
}

static void mem_close(struct objstore *os)
{
	struct mem_client *c = to_mc(os), **p;
	struct objstore_mem *m = c->m;

	pthread_mutex_lock(&m->mu);
	undo_clear(c); /* closing waits for the queued writes: durable */
	for (p = &m->clients; *p != c; p = &(*p)->next)
		;
	*p = c->next;
	pthread_mutex_unlock(&m->mu);
	free(c);
}

static const struct objstore_ops mem_ops = {
    .write = mem_write,
    .flush = mem_flush,
    .read = mem_read,
    .write_full = mem_write_full,
    .write_full_locked = mem_write_full_locked,
    .setxattr_locked = mem_setxattr_locked,
    .getxattr = mem_getxattr,
    .remove = mem_remove,
    .lock = mem_lock,
    .unlock = mem_unlock,
    .locker = mem_locker,
    .break_lock = mem_break_lock,
    .blocklist = mem_blocklist,
    .addr = mem_addr,
    .space = mem_space,
    .close = mem_close,
};

struct objstore_mem *objstore_mem_new(void)
{
	struct objstore_mem *m = calloc(1, sizeof(*m));

	if (m)
		pthread_mutex_init(&m->mu, NULL);
	return m;
}

void objstore_mem_free(struct objstore_mem *m)
{
	if (!m)
		return;
	while (m->clients)
		mem_close(&m->clients->os); /* a test that forgot one: no leak */
	while (m->objs) {
		struct mem_obj *o = m->objs;

		m->objs = o->next;
		obj_free(o);
	}
	for (size_t i = 0; i < m->nblocked; i++)
		free(m->blocked[i]);
	free(m->blocked);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

struct objstore *objstore_mem_client(struct objstore_mem *m)
{
	struct mem_client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->os.ops = &mem_ops;
	c->m = m;
	pthread_mutex_lock(&m->mu);
	c->num = ++m->nclients;
	snprintf(c->addr, sizeof(c->addr), "mem:%u/%d", c->num, (int)getpid());
	c->next = m->clients;
	m->clients = c;
	pthread_mutex_unlock(&m->mu);
	return &c->os;
}

void objstore_mem_advance(struct objstore_mem *m, unsigned secs)
{
	pthread_mutex_lock(&m->mu);
	m->now += secs;
	pthread_mutex_unlock(&m->mu);
}

static void arm(struct objstore *os, unsigned *what, unsigned nth)
{
	pthread_mutex_lock(&to_mc(os)->m->mu);
	*what = nth;
	pthread_mutex_unlock(&to_mc(os)->m->mu);
}

void objstore_mem_fail_write(struct objstore *os, unsigned nth)
{
	arm(os, &to_mc(os)->fail_write, nth);
}

void objstore_mem_fail_flush(struct objstore *os, unsigned nth)
{
	arm(os, &to_mc(os)->fail_flush, nth);
}

void objstore_mem_fail_read(struct objstore *os, unsigned nth)
{
	arm(os, &to_mc(os)->fail_read, nth);
}

/* xorshift32: the same seed loses the same writes on every machine. */
static unsigned next_rand(unsigned *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void undo_apply(struct mem_undo *u)
{
	struct mem_obj *o = u->obj;

	if (u->saved)
		memcpy(o->data + u->off, u->old, u->saved);
	if (u->old_len < o->len)
		o->len = u->old_len;
	o->crash_gone = u->created;
}

static void crash_locked(struct mem_client *c, unsigned seed)
{
	struct objstore_mem *m = c->m;
	unsigned rnd = seed * 2654435761u + 1;
	struct mem_undo *u;
	struct mem_obj *o, *next;

	for (u = c->undo; u; u = u->next) {
		u->obj->crash_n = u->obj->crash_left = 0;
		u->obj->crash_gone = false;
	}
	for (u = c->undo; u; u = u->next)
		u->obj->crash_left = ++u->obj->crash_n;
	/* The log is newest first: number each object's writes in issue
	 * order, and at its newest pick how many of them stay. */
	for (u = c->undo; u; u = u->next) {
		o = u->obj;
		u->seq = --o->crash_left;
		if (u->seq == o->crash_n - 1)
			o->crash_keep = next_rand(&rnd) % (o->crash_n + 1);
	}
	/* Undo newest first: each entry restores what was there before it. */
	for (u = c->undo; u; u = u->next)
		if (u->seq >= u->obj->crash_keep)
			undo_apply(u);
	undo_clear(c);
	for (o = m->objs; o; o = next) {
		next = o->next;
		if (o->crash_gone && !lock_held_locked(m, o) && !o->xattrs)
			obj_remove_locked(m, o);
	}
	c->crashed = true;
}

void objstore_mem_crash(struct objstore *os, unsigned seed)
{
	struct objstore_mem *m = to_mc(os)->m;

	pthread_mutex_lock(&m->mu);
	crash_locked(to_mc(os), seed);
	pthread_mutex_unlock(&m->mu);
}

void objstore_mem_crash_after(struct objstore *os, unsigned n, unsigned seed)
{
	struct objstore_mem *m = to_mc(os)->m;

	pthread_mutex_lock(&m->mu);
	to_mc(os)->crash_at = n + 1;
	to_mc(os)->crash_seed = seed;
	pthread_mutex_unlock(&m->mu);
}

unsigned objstore_mem_calls(struct objstore_mem *m)
{
	pthread_mutex_lock(&m->mu);
	unsigned v = m->calls;
	pthread_mutex_unlock(&m->mu);
	return v;
}

static unsigned count(struct objstore *os, const unsigned *n)
{
	unsigned v;

	pthread_mutex_lock(&to_mc(os)->m->mu);
	v = *n;
	pthread_mutex_unlock(&to_mc(os)->m->mu);
	return v;
}

unsigned objstore_mem_writes(struct objstore *os)
{
	return count(os, &to_mc(os)->writes);
}

unsigned objstore_mem_flushes(struct objstore *os)
{
	return count(os, &to_mc(os)->flushes);
}

void objstore_mem_set_capacity(struct objstore_mem *m, uint64_t bytes)
{
	pthread_mutex_lock(&m->mu);
	m->capacity = bytes;
	pthread_mutex_unlock(&m->mu);
}

void objstore_mem_usage(struct objstore_mem *m, uint64_t *objects, uint64_t *bytes)
{
	*objects = *bytes = 0;
	pthread_mutex_lock(&m->mu);
	for (struct mem_obj *o = m->objs; o; o = o->next) {
		++*objects;
		*bytes += o->len;
	}
	pthread_mutex_unlock(&m->mu);
}
