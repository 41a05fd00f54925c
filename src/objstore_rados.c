/* objstore_rados.c — the object store of objstore.h on a real Ceph
 * cluster, through librados: one rados_t and one io context per client.
 * Layer: under segio_obj.c, beside objstore_mem.c.
 *
 * A write is a rados_aio_write (which copies the caller's bytes) whose
 * completion goes on a pending list; a flush takes the list as it is when
 * the flush begins, waits for each of those completions and releases them.
 * It does not wait for writes queued after it began (rados_aio_flush
 * would: under a steady write load a FLUSH would wait for the writes of
 * later requests too).  A
 * failed write stays failed: its error is kept and returned by every
 * flush after it (sticky), so that no flush can report success while a
 * write queued before it is missing — not even a flush that overlapped
 * the one that harvested the failure.  Flushes run one at a time (they
 * wait for the same writes anyway).
 *
 * Addresses: librados names a client "ip:port/nonce" in rados_getaddrs,
 * "v1:ip:port/nonce" as a locker's address; both are brought to the first
 * form, which is what "osd blocklist add" takes and what client.cowbd's
 * caps allow it to add (docs/RADOS.md).
 *
 * Every call may block for up to the timeout given at connect
 * (rados_osd_op_timeout, rados_mon_op_timeout), then fails -ETIMEDOUT.
 * At most INFLIGHT_MAX bytes of writes are on their way at once: a write
 * beyond that waits for earlier ones to be answered.
 *
 * Writes guarded by the lock are one write operation that first runs
 * cls_lock's assert_locked method on the object (Ceph's own class, loaded
 * by every OSD), then writes: the OSD applies both or neither.
 *
 * Locks: mu guards the pending list, held across the queuing of a write
 * (so the list is in issue order); flush_mu serialises flushes, guards
 * failed and is held across the wait of a flush.  mu is taken inside
 * flush_mu, never the reverse.  fl_mu guards the bytes in flight (taken
 * alone, also by librados' completion thread). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <jansson.h>
#include <rados/librados.h>

#include "objstore.h"

#define LOCK_NAME "cowbd" /* the one lock on an object, as cowbd names it */

/* Bytes of writes queued and not yet answered before a write waits for
 * some of them: without a bound the log queues as fast as it can copy, the
 * OSDs' queues grow without end, and a lease renewal waits behind all of
 * it until the lease runs out (seen in the bench: a fence under load). */
#define INFLIGHT_MAX OBJSTORE_RADOS_INFLIGHT

struct rados_os {
	struct objstore os; /* first: the interface */
	rados_t cluster;
	rados_ioctx_t io;
	char addr[OBJSTORE_NAME_MAX];
	pthread_mutex_t mu;
	rados_completion_t *pending; /* writes not yet harvested by a flush */
	size_t npending, cap;
	pthread_mutex_t flush_mu;
	int failed;            /* the first error of a write (sticky) */
	pthread_mutex_t fl_mu; /* inflight, and fl_cond's waits */
	pthread_cond_t fl_cond;
	size_t inflight;      /* bytes queued, not yet answered */
	size_t inflight_peak; /* the most there ever were */
};

/* One write on its way: what its completion gives back. */
struct ro_wr {
	struct rados_os *r;
	size_t len;
};

static struct rados_os *to_ro(struct objstore *os)
{
	return (struct rados_os *)os;
}

/* The type prefix of one address in librados' text ("v2:"), or 0. */
static size_t addr_type_len(const char *s)
{
	static const char *const types[] = {"v1:", "v2:", "any:"};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (!strncmp(s, types[i], strlen(types[i])))
			return strlen(types[i]);
	return 0;
}

/* "ip:port/nonce" from "v1:ip:port/nonce", from a vector
 * "[v2:ip:port/nonce,v1:...]" (its first address) or from itself. */
static void addr_plain(char *dst, size_t size, const char *src)
{
	bool vector = src[0] == '[' && addr_type_len(src + 1);
	size_t len;

	src += vector;
	src += addr_type_len(src);
	len = strlen(src);
	if (vector)
		len = strchr(src, ',') ? strcspn(src, ",") : len - (len && src[len - 1] == ']');
	snprintf(dst, size, "%.*s", (int)len, src);
}

/* Queued in issue order: mu is held across rados_aio_write, which does
 * not wait for the cluster (only, when too many are in flight, for the
 * oldest of them to finish). */
/* A write answered (on a librados thread): its bytes leave the count. */
static void ro_written(rados_completion_t c, void *arg)
{
	struct ro_wr *w = arg;
	struct rados_os *r = w->r;

	(void)c;
	pthread_mutex_lock(&r->fl_mu);
	r->inflight -= w->len;
	pthread_cond_broadcast(&r->fl_cond);
	pthread_mutex_unlock(&r->fl_mu);
	free(w);
}

/* Wait until len more bytes fit under INFLIGHT_MAX (always, when nothing
 * is in flight), and count them. */
static void inflight_take(struct rados_os *r, size_t len)
{
	pthread_mutex_lock(&r->fl_mu);
	while (r->inflight && r->inflight + len > INFLIGHT_MAX)
		pthread_cond_wait(&r->fl_cond, &r->fl_mu);
	r->inflight += len;
	if (r->inflight > r->inflight_peak)
		r->inflight_peak = r->inflight;
	pthread_mutex_unlock(&r->fl_mu);
}

static int ro_write(struct objstore *os, const char *oid, const void *buf, size_t len, uint64_t off)
{
	struct rados_os *r = to_ro(os);
	struct ro_wr *w = malloc(sizeof(*w));
	rados_completion_t c;
	int err = -ENOMEM;

	if (!w)
		return -ENOMEM;
	w->r = r;
	w->len = len;
	inflight_take(r, len);
	pthread_mutex_lock(&r->mu);
	if (r->npending == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 64;
		rados_completion_t *p = realloc(r->pending, cap * sizeof(*p));

		if (!p)
			goto out;
		r->pending = p;
		r->cap = cap;
	}
	err = rados_aio_create_completion2(w, ro_written, &c);
	if (err < 0)
		goto out;
	err = rados_aio_write(r->io, oid, c, buf, len, off);
	if (err < 0)
		rados_aio_release(c);
	else
		r->pending[r->npending++] = c;
out:
	pthread_mutex_unlock(&r->mu);
	if (err < 0) /* never queued: its completion will not come */
		ro_written(NULL, w);
	return err;
}

static int ro_flush(struct objstore *os)
{
	struct rados_os *r = to_ro(os);
	rados_completion_t *done;
	size_t n;
	int err;

	pthread_mutex_lock(&r->flush_mu);
	pthread_mutex_lock(&r->mu);
	done = r->pending;
	n = r->npending;
	r->pending = NULL;
	r->npending = r->cap = 0;
	pthread_mutex_unlock(&r->mu);
	err = 0;
	for (size_t i = 0; i < n; i++) {
		int ret;

		rados_aio_wait_for_complete_and_cb(done[i]);
		ret = rados_aio_get_return_value(done[i]);
		if (ret < 0 && !r->failed)
			r->failed = ret;
		rados_aio_release(done[i]);
	}
	free(done);
	if (r->failed)
		err = r->failed;
	pthread_mutex_unlock(&r->flush_mu);
	return err;
}

static ssize_t ro_read(struct objstore *os, const char *oid, void *buf, size_t len, uint64_t off)
{
	return rados_read(to_ro(os)->io, oid, buf, len, off);
}

static int ro_write_full(struct objstore *os, const char *oid, const void *buf, size_t len)
{
	return rados_write_full(to_ro(os)->io, oid, buf, len);
}

/* Little-endian u32; a string as Ceph encodes it (u32 length, bytes). */
static size_t put_u32(char *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (char)(v >> (8 * i));
	return 4;
}

static size_t put_str(char *p, const char *s)
{
	size_t n = strlen(s);

	put_u32(p, (uint32_t)n);
	memcpy(p + 4, s, n);
	return 4 + n;
}

/* Ceph's encoding of cls_lock_assert_op (src/cls/lock/cls_lock_ops.h), the
 * input of cls_lock's assert_locked: a struct header (u8 version 1, u8
 * oldest version that can read it 1, u32 length of what follows), then the
 * lock's name, its type (u8; 1: exclusive), the cookie and the tag (each
 * string a u32 length and its bytes; integers little-endian).  The tag is
 * "", as rados_lock_exclusive takes the lock.  Returns the length (out
 * holds 3 * OBJSTORE_NAME_MAX bytes; cookie is shorter than one). */
static size_t assert_op_encode(char *out, const char *cookie)
{
	size_t n = 6;

	n += put_str(out + n, LOCK_NAME);
	out[n++] = 1; /* LOCK_EXCLUSIVE */
	n += put_str(out + n, cookie);
	n += put_str(out + n, "");
	out[0] = 1;
	out[1] = 1;
	put_u32(out + 2, (uint32_t)(n - 6));
	return n;
}

/* A write operation that first asserts this client holds its object's
 * lock under cookie (in keeps the encoded input, *prval gets the assert's
 * answer): 0 and *op, or -EINVAL (cookie too long), -ENOMEM. */
static int locked_op_new(const char *cookie, char *in, int *prval, rados_write_op_t *op)
{
	if (strlen(cookie) >= OBJSTORE_NAME_MAX)
		return -EINVAL;
	*op = rados_create_write_op();
	if (!*op)
		return -ENOMEM;
	rados_write_op_exec(*op, "lock", "assert_locked", in, assert_op_encode(in, cookie), prval);
	return 0;
}

/* Send op (from locked_op_new) to oid, wait for it, release it.  A refused
 * assert (the lock not held by this client under cookie, or no object to
 * hold one) comes back as -ENOLCK. */
static int locked_op_run(struct rados_os *r, rados_write_op_t op, const char *oid, const int *prval)
{
	int err = rados_write_op_operate(op, r->io, oid, NULL, 0);

	rados_release_write_op(op);
	if (err < 0 && *prval < 0 && (*prval == -EBUSY || *prval == -ENOENT))
		err = -ENOLCK;
	return err;
}

static int ro_write_full_locked(struct objstore *os, const char *oid, const char *cookie,
                                const void *buf, size_t len)
{
	char in[3 * OBJSTORE_NAME_MAX];
	rados_write_op_t op;
	int prval = 0, err = locked_op_new(cookie, in, &prval, &op);

	if (err)
		return err;
	rados_write_op_write_full(op, buf, len);
	return locked_op_run(to_ro(os), op, oid, &prval);
}

static int ro_setxattr_locked(struct objstore *os, const char *oid, const char *cookie,
                              const char *name, const void *val, size_t len)
{
	char in[3 * OBJSTORE_NAME_MAX];
	rados_write_op_t op;
	int prval = 0, err = locked_op_new(cookie, in, &prval, &op);

	if (err)
		return err;
	rados_write_op_setxattr(op, name, val, len);
	return locked_op_run(to_ro(os), op, oid, &prval);
}

static ssize_t ro_getxattr(struct objstore *os, const char *oid, const char *name, void *buf,
                           size_t len)
{
	return rados_getxattr(to_ro(os)->io, oid, name, buf, len);
}

static int ro_remove(struct objstore *os, const char *oid)
{
	return rados_remove(to_ro(os)->io, oid);
}

static int ro_lock(struct objstore *os, const char *oid, const char *cookie, unsigned secs,
                   bool renew)
{
	struct timeval lease = {.tv_sec = secs};

	return rados_lock_exclusive(to_ro(os)->io, oid, LOCK_NAME, cookie, "cowbd pool owner",
	                            secs ? &lease : NULL, renew ? LIBRADOS_LOCK_FLAG_MAY_RENEW : 0);
}

static int ro_unlock(struct objstore *os, const char *oid, const char *cookie)
{
	return rados_unlock(to_ro(os)->io, oid, LOCK_NAME, cookie);
}

/* An exclusive lock has one locker, so each list holds one name. */
static int ro_locker(struct objstore *os, const char *oid, struct objstore_locker *out)
{
	char tag[OBJSTORE_NAME_MAX], addr[OBJSTORE_NAME_MAX];
	size_t tag_len = sizeof(tag), client_len = sizeof(out->client);
	size_t cookie_len = sizeof(out->cookie), addr_len = sizeof(addr);
	int exclusive;
	ssize_t n;

	n = rados_list_lockers(to_ro(os)->io, oid, LOCK_NAME, &exclusive, tag, &tag_len,
	                       out->client, &client_len, out->cookie, &cookie_len, addr, &addr_len);
	if (n < 0)
		return n;
	if (n == 0)
		return -ENOENT;
	addr_plain(out->addr, sizeof(out->addr), addr);
	return 0;
}

static int ro_break_lock(struct objstore *os, const char *oid, const struct objstore_locker *l)
{
	return rados_break_lock(to_ro(os)->io, oid, LOCK_NAME, l->client, l->cookie);
}

/* How long a fenced client stays fenced: Ceph's default is an hour, after
 * which a process stopped that long could still have queued writes resent
 * by librados.  A week; entries are one per takeover. */
#define BLOCKLIST_SECS (7 * 24 * 3600)

static int ro_blocklist(struct objstore *os, const char *addr)
{
	struct rados_os *r = to_ro(os);
	char cmd[2 * OBJSTORE_NAME_MAX];
	const char *argv[] = {cmd};
	int err;

	if (strlen(addr) >= OBJSTORE_NAME_MAX || strpbrk(addr, "\"\\"))
		return -EINVAL;
	snprintf(cmd, sizeof(cmd),
	         "{\"prefix\":\"osd blocklist\",\"blocklistop\":\"add\",\"addr\":\"%s\","
	         "\"expire\":%d.0}",
	         addr, BLOCKLIST_SECS);
	err = rados_mon_command(r->cluster, argv, 1, "", 0, NULL, NULL, NULL, NULL);
	if (err < 0)
		return err;
	/* Our next operations carry the new map's epoch: an OSD takes them
	 * only once it knows the entry. */
	return rados_wait_for_latest_osdmap(r->cluster);
}

/* Run the monitor command cmd (JSON) and parse its JSON answer into *out
 * (the caller json_decref's it). */
static int mon_json(struct rados_os *r, const char *cmd, json_t **out)
{
	const char *argv[] = {cmd};
	char *outbuf = NULL, *outs = NULL;
	size_t outlen = 0, outslen = 0;
	int err;

	err = rados_mon_command(r->cluster, argv, 1, "", 0, &outbuf, &outlen, &outs, &outslen);
	if (!err) {
		*out = json_loadb(outbuf ? outbuf : "", outlen, 0, NULL);
		if (!*out)
			err = -EPROTO;
	}
	rados_buffer_free(outbuf);
	rados_buffer_free(outs);
	return err;
}

/* A JSON member as an unsigned figure; 0 when missing or negative. */
static uint64_t json_u64(const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;

	return n > 0 ? (uint64_t)n : 0;
}

/* "df" gives the pool's max_avail (what its OSDs take before the full
 * ratio, replication counted), "osd pool get-quota" its quotas and
 * usage: max_avail does not count a quota.  Both are read-only commands,
 * which client.cowbd's "mon 'allow r'" allows. */
static int ro_space(struct objstore *os, uint64_t *bytes, uint64_t *objects)
{
	struct rados_os *r = to_ro(os);
	char pool[OBJSTORE_NAME_MAX], cmd[2 * OBJSTORE_NAME_MAX];
	json_t *df = NULL, *q = NULL, *p;
	size_t i;
	int err;

	err = rados_ioctx_get_pool_name(r->io, pool, sizeof(pool));
	if (err < 0)
		return err;
	if (strpbrk(pool, "\"\\"))
		return -EINVAL;
	err = mon_json(r, "{\"prefix\":\"df\",\"format\":\"json\"}", &df);
	snprintf(cmd, sizeof(cmd),
	         "{\"prefix\":\"osd pool get-quota\",\"pool\":\"%s\",\"format\":\"json\"}", pool);
	if (!err)
		err = mon_json(r, cmd, &q);
	if (!err) {
		err = -ENOENT;
		json_array_foreach(json_object_get(df, "pools"), i, p)
		{
			const char *name = json_string_value(json_object_get(p, "name"));
			if (name && !strcmp(name, pool)) {
				*bytes = json_u64(json_object_get(p, "stats"), "max_avail");
				err = 0;
			}
		}
	}
	if (!err) {
		uint64_t qb = json_u64(q, "quota_max_bytes"), qo = json_u64(q, "quota_max_objects");
		uint64_t ub = json_u64(q, "current_num_bytes"),
		         uo = json_u64(q, "current_num_objects");
		if (qb && (qb > ub ? qb - ub : 0) < *bytes)
			*bytes = qb > ub ? qb - ub : 0;
		*objects = qo ? (qo > uo ? qo - uo : 0) : UINT64_MAX;
	}
	json_decref(df);
	json_decref(q);
	return err;
}

static const char *ro_addr(struct objstore *os)
{
	return to_ro(os)->addr;
}

static void ro_close(struct objstore *os)
{
	struct rados_os *r = to_ro(os);

	ro_flush(os);
	free(r->pending);
	rados_ioctx_destroy(r->io);
	rados_shutdown(r->cluster);
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->flush_mu);
	pthread_mutex_destroy(&r->fl_mu);
	pthread_cond_destroy(&r->fl_cond);
	free(r);
}

static const struct objstore_ops rados_ops = {
    .write = ro_write,
    .flush = ro_flush,
    .read = ro_read,
    .write_full = ro_write_full,
    .write_full_locked = ro_write_full_locked,
    .setxattr_locked = ro_setxattr_locked,
    .getxattr = ro_getxattr,
    .remove = ro_remove,
    .lock = ro_lock,
    .unlock = ro_unlock,
    .locker = ro_locker,
    .break_lock = ro_break_lock,
    .blocklist = ro_blocklist,
    .addr = ro_addr,
    .space = ro_space,
    .close = ro_close,
};

/* The settings a client needs before it connects: the conf file, then
 * the timeouts.  Returns 0 or a negative errno with *why. */
static int configure(rados_t cl, const struct objstore_rados_opts *o, const char **why)
{
	static const char *const timeouts[] = {"rados_osd_op_timeout", "rados_mon_op_timeout",
	                                       "client_mount_timeout"};
	char secs[16];
	int err;

	err = rados_conf_read_file(cl, o->conf);
	if (err < 0) {
		*why = "cannot read the Ceph configuration file";
		return err;
	}
	snprintf(secs, sizeof(secs), "%u", o->timeout_s ? o->timeout_s : 30);
	for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
		err = rados_conf_set(cl, timeouts[i], secs);
		if (err < 0) {
			*why = "cannot set the RADOS timeouts";
			return err;
		}
	}
	return 0;
}

struct objstore *objstore_rados_new(const struct objstore_rados_opts *o, const char **why)
{
	struct rados_os *r = calloc(1, sizeof(*r));
	char *addrs;
	int err;

	*why = "out of memory";
	if (!r)
		return NULL;
	err = rados_create(&r->cluster, o->id);
	if (err < 0) {
		*why = "cannot create a RADOS client";
		goto fail_free;
	}
	err = configure(r->cluster, o, why);
	if (err < 0)
		goto fail_shutdown;
	err = rados_connect(r->cluster);
	if (err < 0) {
		*why = "cannot connect to the Ceph cluster";
		goto fail_shutdown;
	}
	err = rados_ioctx_create(r->cluster, o->pool, &r->io);
	if (err < 0) {
		*why = err == -ENOENT ? "no such RADOS pool" : "cannot open the RADOS pool";
		goto fail_shutdown;
	}
	err = rados_getaddrs(r->cluster, &addrs);
	if (err < 0) {
		*why = "cannot learn this client's RADOS address";
		goto fail_ioctx;
	}
	addr_plain(r->addr, sizeof(r->addr), addrs);
	free(addrs);
	r->os.ops = &rados_ops;
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->flush_mu, NULL);
	pthread_mutex_init(&r->fl_mu, NULL);
	pthread_cond_init(&r->fl_cond, NULL);
	return &r->os;
fail_ioctx:
	rados_ioctx_destroy(r->io);
fail_shutdown:
	rados_shutdown(r->cluster);
fail_free:
	free(r);
	errno = -err;
	return NULL;
}

size_t objstore_rados_inflight_peak(struct objstore *os)
{
	struct rados_os *r = to_ro(os);

	pthread_mutex_lock(&r->fl_mu);
	size_t v = r->inflight_peak;
	pthread_mutex_unlock(&r->fl_mu);
	return v;
}
