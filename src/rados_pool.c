/* rados_pool.c — open a pool kept in Ceph RADOS: connect (objstore_rados),
 * open the local cache (segcache), take the pool over (segio_obj), create
 * it when asked and it is not there, and open the store over it.  Layer:
 * beside store.c's own entry points, called by main. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "format.h"
#include "objstore.h"
#include "rados_pool.h"
#include "say.h"
#include "segcache.h"
#include "segio_obj.h"

#define DEFAULT_CACHE_SIZE (1ull << 30)

bool rados_pool_is(const char *spec)
{
	return spec && !strncmp(spec, RADOS_POOL_PREFIX, strlen(RADOS_POOL_PREFIX));
}

static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 48)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
		            s[i]))
			return false;
	return true;
}

/* Split spec into pool and name (each < 64 bytes). */
static int split(const char *spec, char *pool, char *name, char *why, size_t len)
{
	const char *p = spec + strlen(RADOS_POOL_PREFIX), *slash = strchr(p, '/');

	if (!rados_pool_is(spec) || !slash || !name_ok(p, (size_t)(slash - p)) ||
	    !name_ok(slash + 1, strlen(slash + 1))) {
		snprintf(why, len,
		         "%s (want rados:POOL/NAME, each 1-48 characters of letters, digits, '.', "
		         "'_' and '-')",
		         spec);
		return -EINVAL;
	}
	snprintf(pool, 64, "%.*s", (int)(slash - p), p);
	snprintf(name, 64, "%s", slash + 1);
	return 0;
}

int rados_pool_check(const char *spec, char *why, size_t len)
{
	char pool[64], name[64];
	return split(spec, pool, name, why, len);
}

/* A pool that is not there yet: make it (create_size) or say how. */
static int make_pool(struct segio *io, const char *spec, uint64_t create_size)
{
	int err = store_probe_io(io);

	if (err == 1) {
		say_info("pool %s exists; opening it", spec);
		return 0;
	}
	if (err < 0) {
		say_error("cannot read pool %s: %s", spec, strerror(-err));
		return err;
	}
	if (!create_size) {
		say_error("cannot open pool %s: there is none (to make one, set create = SIZE in "
		          "the configuration or pass --create SIZE)",
		          spec);
		return -ENOENT;
	}
	err = store_format_io(io, create_size / FMT_SEG_BYTES);
	if (err) {
		say_error("cannot create pool %s: %s", spec,
		          err == -EINVAL ? "too small (the minimum is 64 MiB)" : strerror(-err));
		return err;
	}
	say_info("created pool %s (%llu bytes)", spec,
	         (unsigned long long)(create_size / FMT_SEG_BYTES * FMT_SEG_BYTES));
	return 0;
}

/* Connect to spec's RADOS pool; name gets the object prefix.  NULL after
 * one line. */
static struct objstore *connect_pool(const char *spec, const struct rados_pool_opts *o, char *name)
{
	char pool[64], why_buf[256];
	const char *why = NULL;
	struct objstore *os;

	if (split(spec, pool, name, why_buf, sizeof(why_buf))) {
		say_error("bad pool name %s", why_buf);
		return NULL;
	}
	struct objstore_rados_opts ro = {
	    .conf = o->conf, .id = o->id, .pool = pool, .timeout_s = o->timeout_s};
	os = objstore_rados_new(&ro, &why);
	if (!os)
		say_error("cannot open pool %s: %s", spec, why ? why : strerror(errno));
	return os;
}

struct store *rados_pool_open(const char *spec, const struct rados_pool_opts *o,
                              uint64_t create_size, const struct store_opts *so)
{
	char name[64];
	const char *why = NULL;
	struct objstore *os = connect_pool(spec, o, name);
	struct segcache *cache = NULL;
	struct segio *io;
	struct store *st;

	if (!os)
		return NULL;
	if (o->cache) {
		cache = segcache_open(o->cache, o->cache_size ? o->cache_size : DEFAULT_CACHE_SIZE,
		                      &why);
		if (!cache) {
			say_error("cannot open the cache %s of pool %s: %s", o->cache, spec,
			          why ? why : strerror(errno));
			objstore_close(os);
			return NULL;
		}
	}
	unsigned lease = o->lease_s ? o->lease_s : RADOS_DEFAULT_LEASE;
	struct segio_obj_opts oo = {
	    .name = name, .label = spec, .lease_s = lease, .wait_s = lease + 5};
	io = segio_obj_new(os, cache, &oo, &why);
	if (!io) {
		if (errno != EBUSY) /* that one was said, naming the holder */
			say_error("cannot open pool %s: %s", spec, why ? why : strerror(errno));
		if (cache)
			segcache_close(cache);
		objstore_close(os);
		return NULL;
	}
	if (make_pool(io, spec, create_size)) {
		segio_close(io);
		return NULL;
	}
	st = store_open_io(io, so, &why);
	if (!st) {
		say_error("cannot open pool %s: %s", spec, why ? why : strerror(errno));
		segio_close(io);
	}
	return st;
}

struct store *rados_pool_open_check(const char *spec, const struct rados_pool_opts *o,
                                    const struct store_opts *so, char *holder, size_t len,
                                    const char **why)
{
	char name[64], oid[OBJSTORE_NAME_MAX];
	struct objstore *os = connect_pool(spec, o, name);
	struct objstore_locker l;
	struct store *st;
	struct segio *io;

	holder[0] = 0;
	if (!os) {
		*why = "cannot connect to the cluster";
		errno = EIO;
		return NULL;
	}
	snprintf(oid, sizeof(oid), "%s.sb.0", name);
	if (objstore_locker(os, oid, &l) == 0)
		snprintf(holder, len, "%s at %s", l.client, l.addr);
	struct segio_obj_opts oo = {.name = name, .label = spec, .peek = true};
	io = segio_obj_new(os, NULL, &oo, why);
	if (!io) {
		int e = errno;
		objstore_close(os);
		errno = e;
		return NULL;
	}
	st = store_open_io(io, so, why);
	if (!st) {
		int e = errno;
		segio_close(io);
		errno = e;
	}
	return st;
}
