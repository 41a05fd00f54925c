/* map.h — a small open-addressing hash map from non-zero u64 keys to
 * pointers (private to the store: node loading, checking, compaction).
 * Not thread-safe; O(1) expected per operation. */
#ifndef COWBD_MAP_H
#define COWBD_MAP_H
#include <stddef.h>
#include <stdint.h>

struct map {
	uint64_t *keys; /* 0 = empty */
	void **vals;
	size_t cap, n;
};

/* The value for k, or NULL. */
void *map_get(const struct map *m, uint64_t k);
/* Insert or replace; 0 or -ENOMEM. */
int map_put(struct map *m, uint64_t k, void *v);
/* Forget everything, keep nothing allocated. */
void map_clear(struct map *m);

#endif
