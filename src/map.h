/* map.h — the store's one hash map: open addressing from u64 keys (any
 * value) to pointers, grown at half full, with an O(1) reset (a generation
 * per slot: a slot is in use only if it carries the map's generation), so
 * a table refilled every round never pays for clearing.  Used for node
 * loading, checking, compaction and a round's staged blocks.
 * Not thread-safe; O(1) expected per operation. */
#ifndef COWBD_MAP_H
#define COWBD_MAP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct map {
	uint64_t *keys;
	void **vals;
	uint32_t *gens; /* slot in use iff gens[i] == gen */
	uint32_t gen;
	size_t cap, n;
};

/* The value for k, or NULL. */
void *map_get(const struct map *m, uint64_t k);
/* Insert or replace; 0 or -ENOMEM. */
int map_put(struct map *m, uint64_t k, void *v);
/* Remove k; whether it was there. */
bool map_del(struct map *m, uint64_t k);
/* Forget every entry in O(1), keeping the memory. */
void map_reset(struct map *m);
/* Forget everything, keep nothing allocated. */
void map_clear(struct map *m);
/* Iterate: start with *pos = 0; each call returns the value slot of the
 * next entry (which the caller may overwrite) and its key in *k; NULL at
 * the end.  No insertions while iterating. */
void **map_next(const struct map *m, size_t *pos, uint64_t *k);

#endif
