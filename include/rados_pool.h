/* rados_pool.h — a pool kept in a Ceph RADOS pool (docs/RADOS.md): its
 * segments are objects, a local file caches them, and one host at a time
 * serves it under a lock with a lease.
 *
 * Named "rados:POOL/NAME": the RADOS pool POOL, objects NAME.*. */
#ifndef COWBD_RADOS_POOL_H
#define COWBD_RADOS_POOL_H
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

#define RADOS_POOL_PREFIX     "rados:"
#define RADOS_DEFAULT_LEASE   30 /* seconds */
#define RADOS_DEFAULT_TIMEOUT 30 /* seconds, every librados call */

struct rados_pool_opts {
	const char *conf;    /* ceph.conf; NULL: librados' default search */
	const char *id;      /* client id, e.g. "cowbd"; NULL: "admin" */
	const char *cache;   /* local cache file or device; NULL: none */
	uint64_t cache_size; /* its size; 0 = 1 GiB */
	unsigned lease_s;    /* 0 = RADOS_DEFAULT_LEASE */
	unsigned timeout_s;  /* 0 = RADOS_DEFAULT_TIMEOUT */
};

/* Does spec name a RADOS pool? */
bool rados_pool_is(const char *spec);

/* Check spec's form ("rados:POOL/NAME", names of [A-Za-z0-9._-]): 0, or
 * -EINVAL with the reason in why. */
int rados_pool_check(const char *spec, char *why, size_t len);

/* Connect, take the pool over, create it (create_size > 0, when there is
 * none yet) and open it.  NULL after one line that names the problem. */
struct store *rados_pool_open(const char *spec, const struct rados_pool_opts *o,
                              uint64_t create_size, const struct store_opts *so);

/* For cowbd-check: open the pool read-only without its lock (nothing is
 * written, nobody fenced).  *holder gets "client.N at ADDR" when a daemon
 * holds the pool (the check may then see a mix of states), else "".  NULL
 * + errno with *why a one-line reason (EILSEQ: damaged). */
struct store *rados_pool_open_check(const char *spec, const struct rados_pool_opts *o,
                                    const struct store_opts *so, char *holder, size_t len,
                                    const char **why);

#endif
