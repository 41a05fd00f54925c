/* objstore.h — the object store a RADOS pool lives in: the few librados
 * calls cowbd makes, as an interface, so that the segment backend above
 * it (segio_obj.c) runs against a real cluster (objstore_rados.c) or, in
 * tests, a fault-injecting memory store (objstore_mem.c) that can lose
 * the writes a crash would lose, fail any call, expire leases on a clock
 * the test moves, and fence a client.
 *
 * One objstore is one client of one pool (one librados instance and io
 * context): it has its own address, as a lock's locker reports it and as
 * a blocklist entry names it.  Object names are short strings (< 128
 * bytes) chosen by the caller.
 *
 * Ordering, as RADOS gives it: the writes of one client to one object
 * apply in the order they were issued, and a read sees every write the
 * same client issued before it (queued or not).  Writes to different
 * objects are independent: a crash may keep any subset of the queued
 * writes, but of one object's writes only a prefix in issue order.
 *
 * Writes guarded by a lock (write_full_locked, setxattr_locked) check
 * that this client holds an object's exclusive lock and write in one
 * operation the object store applies whole or not at all: a client that
 * stalled (stopped, paused) between its own check of its lease and the
 * call writes nothing once the lock is no longer its own.
 *
 * Threads: every call may come from any thread.  Errors: negative errno;
 * -EBLOCKLISTED (ESHUTDOWN) once this client is fenced, -ETIMEDOUT when
 * the cluster does not answer in time, -ENOLCK when a write guarded by a
 * lock finds the lock not this client's. */
#ifndef COWBD_OBJSTORE_H
#define COWBD_OBJSTORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifndef EBLOCKLISTED
#define EBLOCKLISTED ESHUTDOWN /* as librados reports a fenced client */
#endif

#define OBJSTORE_NAME_MAX 128 /* object names, lock cookies, addresses */

struct objstore;

/* The holder of an exclusive lock, as objstore_locker reports it. */
struct objstore_locker {
	char client[OBJSTORE_NAME_MAX]; /* e.g. "client.4123" */
	char cookie[OBJSTORE_NAME_MAX];
	char addr[OBJSTORE_NAME_MAX]; /* "ip:port/nonce": what blocklist takes */
};

struct objstore_ops {
	/* Queue a write of len bytes at byte off of object oid (created if
	 * missing) and return: the store keeps its own copy of buf, which
	 * the caller may reuse at once.  An error of the write itself comes
	 * back from a flush issued after this call. */
	int (*write)(struct objstore *os, const char *oid, const void *buf, size_t len,
	             uint64_t off);
	/* Wait for every write queued before the call: 0 when all of them
	 * are durable, else the error of one that failed (every failure is
	 * reported to at least one flush; a write that failed stays failed:
	 * the caller decides what that means). */
	int (*flush)(struct objstore *os);
	/* Read up to len bytes at off: the bytes read (fewer at the object's
	 * end, 0 past it), -ENOENT when there is no such object. */
	ssize_t (*read)(struct objstore *os, const char *oid, void *buf, size_t len, uint64_t off);
	/* Replace oid's whole content with buf (len may be 0); durable on
	 * return. */
	int (*write_full)(struct objstore *os, const char *oid, const void *buf, size_t len);
	/* write_full, applied only if this client holds oid's exclusive
	 * lock under cookie when the object store applies it (a lease not
	 * yet run out): else nothing is written and it returns -ENOLCK. */
	int (*write_full_locked)(struct objstore *os, const char *oid, const char *cookie,
	                         const void *buf, size_t len);
	/* Set oid's attribute name (< OBJSTORE_NAME_MAX bytes) to val (len
	 * bytes, len may be 0), on the same condition as write_full_locked
	 * (-ENOLCK, nothing written); durable on return.  Attributes stay
	 * across write_full and go with remove. */
	int (*setxattr_locked)(struct objstore *os, const char *oid, const char *cookie,
	                       const char *name, const void *val, size_t len);
	/* Read oid's attribute name into buf: its length, -ENODATA when oid
	 * has no such attribute, -ENOENT when there is no such object,
	 * -ERANGE when it is longer than len. */
	ssize_t (*getxattr)(struct objstore *os, const char *oid, const char *name, void *buf,
	                    size_t len);
	/* Remove oid; durable on return; -ENOENT when it was not there. */
	int (*remove)(struct objstore *os, const char *oid);
	/* Take the exclusive lock on oid under cookie for secs seconds (0:
	 * until unlocked or broken), or with renew extend the lock this
	 * client already holds under cookie (taking it again if it expired
	 * and nobody else took it).  -EBUSY when another holds it. */
	int (*lock)(struct objstore *os, const char *oid, const char *cookie, unsigned secs,
	            bool renew);
	/* Release this client's lock (cookie); -ENOENT when it holds none. */
	int (*unlock)(struct objstore *os, const char *oid, const char *cookie);
	/* The current holder of oid's exclusive lock: 0 and *out, or
	 * -ENOENT when nobody holds it (an expired lock is not held). */
	int (*locker)(struct objstore *os, const char *oid, struct objstore_locker *out);
	/* Break the lock l holds on oid (l as locker returned it). */
	int (*break_lock)(struct objstore *os, const char *oid, const struct objstore_locker *l);
	/* Fence the client at addr: from the return on, no operation it
	 * sends reaches any object (they fail with -EBLOCKLISTED there). */
	int (*blocklist)(struct objstore *os, const char *addr);
	/* This client's own address, in the form locker and blocklist use. */
	const char *(*addr)(struct objstore *os);
	/* What the pool can still take before the object store refuses
	 * writes, as the cluster last reported it (figures that lag the
	 * writes by seconds): bytes (its quota, or its OSDs' full ratio,
	 * whichever comes first) and objects (its object quota; UINT64_MAX
	 * without one).  0, or an error: -ENOTSUP when the store has no such
	 * figure.  May wait on the cluster for up to its timeout. */
	int (*space)(struct objstore *os, uint64_t *bytes, uint64_t *objects);
	/* Wait for queued writes (errors ignored) and release the client. */
	void (*close)(struct objstore *os);
};

struct objstore {
	const struct objstore_ops *ops;
};

static inline int objstore_write(struct objstore *os, const char *oid, const void *buf, size_t len,
                                 uint64_t off)
{
	return os->ops->write(os, oid, buf, len, off);
}
static inline int objstore_flush(struct objstore *os)
{
	return os->ops->flush(os);
}
static inline ssize_t objstore_read(struct objstore *os, const char *oid, void *buf, size_t len,
                                    uint64_t off)
{
	return os->ops->read(os, oid, buf, len, off);
}
static inline int objstore_write_full(struct objstore *os, const char *oid, const void *buf,
                                      size_t len)
{
	return os->ops->write_full(os, oid, buf, len);
}
static inline int objstore_write_full_locked(struct objstore *os, const char *oid,
                                             const char *cookie, const void *buf, size_t len)
{
	return os->ops->write_full_locked(os, oid, cookie, buf, len);
}
static inline int objstore_setxattr_locked(struct objstore *os, const char *oid, const char *cookie,
                                           const char *name, const void *val, size_t len)
{
	return os->ops->setxattr_locked(os, oid, cookie, name, val, len);
}
static inline ssize_t objstore_getxattr(struct objstore *os, const char *oid, const char *name,
                                        void *buf, size_t len)
{
	return os->ops->getxattr(os, oid, name, buf, len);
}
static inline int objstore_remove(struct objstore *os, const char *oid)
{
	return os->ops->remove(os, oid);
}
static inline int objstore_lock(struct objstore *os, const char *oid, const char *cookie,
                                unsigned secs, bool renew)
{
	return os->ops->lock(os, oid, cookie, secs, renew);
}
static inline int objstore_unlock(struct objstore *os, const char *oid, const char *cookie)
{
	return os->ops->unlock(os, oid, cookie);
}
static inline int objstore_locker(struct objstore *os, const char *oid, struct objstore_locker *out)
{
	return os->ops->locker(os, oid, out);
}
static inline int objstore_break_lock(struct objstore *os, const char *oid,
                                      const struct objstore_locker *l)
{
	return os->ops->break_lock(os, oid, l);
}
static inline int objstore_blocklist(struct objstore *os, const char *addr)
{
	return os->ops->blocklist(os, addr);
}
static inline int objstore_space(struct objstore *os, uint64_t *bytes, uint64_t *objects)
{
	return os->ops->space(os, bytes, objects);
}
static inline const char *objstore_addr(struct objstore *os)
{
	return os->ops->addr(os);
}
static inline void objstore_close(struct objstore *os)
{
	if (os)
		os->ops->close(os);
}

/* ---- a real cluster (objstore_rados.c) ----------------------------------- */

struct objstore_rados_opts {
	const char *conf;   /* ceph.conf path; NULL: librados' default search */
	const char *id;     /* client id without "client." (e.g. "cowbd"); NULL: admin */
	const char *pool;   /* RADOS pool name */
	unsigned timeout_s; /* rados_osd_op_timeout and rados_mon_op_timeout; 0 = 30 */
};

/* Connect.  NULL + errno, with *why a one-line reason (static). */
struct objstore *objstore_rados_new(const struct objstore_rados_opts *o, const char **why);
/* Writes queued and not yet answered are at most OBJSTORE_RADOS_INFLIGHT
 * bytes (a write past it waits): the most there ever were, for tests. */
#define OBJSTORE_RADOS_INFLIGHT (32u << 20)
size_t objstore_rados_inflight_peak(struct objstore *os);

/* ---- the memory store for tests (objstore_mem.c) -------------------------- */

/* A cluster: the objects, locks, blocklist and clock that several clients
 * (objstore_mem_client) share.  Its clock starts at 0 and moves only by
 * objstore_mem_advance. */
struct objstore_mem;
struct objstore_mem *objstore_mem_new(void);
void objstore_mem_free(struct objstore_mem *m); /* after every client closed */
/* A new client with its own address ("mem:N/nonce"). */
struct objstore *objstore_mem_client(struct objstore_mem *m);
void objstore_mem_advance(struct objstore_mem *m, unsigned secs);
/* Fail this client's nth next write (its flush reports -EIO), flush,
 * read or lock call (0 = none); counts from the call. */
void objstore_mem_fail_write(struct objstore *os, unsigned nth);
void objstore_mem_fail_flush(struct objstore *os, unsigned nth);
void objstore_mem_fail_read(struct objstore *os, unsigned nth);
/* The host of this client loses power: of each object's writes not yet
 * flushed, a random prefix (seeded by seed) is applied and the rest is
 * lost; the client then fails every call with -EBLOCKLISTED (it is gone;
 * close it). */
void objstore_mem_crash(struct objstore *os, unsigned seed);
/* The same at this client's nth next write, flush, write_full or remove
 * (that call is lost too): crash points enumerated by a test. */
void objstore_mem_crash_after(struct objstore *os, unsigned n, unsigned seed);
/* Writes, flushes, write_fulls and removes so far, of every client. */
unsigned objstore_mem_calls(struct objstore_mem *m);
/* Calls and queued writes so far, for tests that inject at each point. */
unsigned objstore_mem_writes(struct objstore *os);
unsigned objstore_mem_flushes(struct objstore *os);
/* Objects in the cluster and their total bytes. */
void objstore_mem_usage(struct objstore_mem *m, uint64_t *objects, uint64_t *bytes);
/* The cluster holds at most bytes of object data (0: no limit, and
 * space says -ENOTSUP): a write or write_full that would grow it past
 * that is not applied and fails with -ENOSPC (a queued write at its
 * flush), as a full Ceph pool refuses them. */
void objstore_mem_set_capacity(struct objstore_mem *m, uint64_t bytes);

#endif
