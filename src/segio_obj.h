/* segio_obj.h — the segment backend over an object store (segio_obj.c;
 * private to the store, like segio.h). */
#ifndef COWBD_SEGIO_OBJ_H
#define COWBD_SEGIO_OBJ_H
#include "objstore.h"
#include "segcache.h"
#include "segio.h"

struct segio_obj_opts {
	const char *name;      /* object name prefix: the pool's name */
	const char *label;     /* how messages name the pool; NULL: name */
	unsigned lease_s;      /* the lock's lease; 0: no lease (tests) */
	unsigned wait_s;       /* how long to wait for a held lock's lease to run out */
	bool peek;             /* read only, without the lock (cowbd-check): every
	                        * write fails with -EROFS, nobody is fenced */
	uint64_t space_margin; /* bytes the object store's pool must keep free beyond
	                        * the next segment, else the pool is full (and
	                        * stays full until a quarter of it, two segments
	                        * at least, more is free, or the room stays over
	                        * the threshold for 10 looks);
	                        * 0: SEGIO_OBJ_SPACE_MARGIN */
};

/* The default margin: room for the writes a stale figure did not see. */
#define SEGIO_OBJ_SPACE_MARGIN (256ull << 20)

/* Take the pool's lock in os (fencing an owner that did not close it) and
 * return the backend, which then owns os and cache (NULL: no cache).  NULL
 * + errno with *why a one-line reason (EBUSY: held by a live owner, said
 * in one line naming it); the caller then still owns os and cache. */
struct segio *segio_obj_new(struct objstore *os, struct segcache *cache,
                            const struct segio_obj_opts *opt, const char **why);

/* Sealed segments the cacher has still to copy into the cache (queued or
 * being copied): tests wait for 0 before they count on a hit. */
unsigned segio_obj_cache_backlog(struct segio *io);
/* Tests: hold the cacher (it copies nothing until released), so that the
 * seals meet it behind. */
void segio_obj_cache_hold(struct segio *io, bool hold);
/* Tests: ask the object store for its room now, as the space watcher
 * does every second. */
void segio_obj_space_refresh(struct segio *io);

#endif
