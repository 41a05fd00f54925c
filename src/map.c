/* map.c — open-addressing u64 -> pointer map with linear probing, grown
 * at half full.  Used by single-threaded store code only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"

static size_t map_slot(const struct map *m, uint64_t k)
{
	size_t h = (size_t)(k * 0x9E3779B97F4A7C15ull) & (m->cap - 1);
	while (m->keys[h] && m->keys[h] != k)
		h = (h + 1) & (m->cap - 1);
	return h;
}

void *map_get(const struct map *m, uint64_t k)
{
	if (!m->cap)
		return NULL;
	size_t h = map_slot(m, k);
	return m->keys[h] ? m->vals[h] : NULL;
}

int map_put(struct map *m, uint64_t k, void *v)
{
	if ((m->n + 1) * 2 > m->cap) {
		struct map g = {0};
		g.cap = m->cap ? m->cap * 2 : 1024;
		g.keys = calloc(g.cap, sizeof(*g.keys));
		g.vals = calloc(g.cap, sizeof(*g.vals));
		if (!g.keys || !g.vals) {
			free(g.keys);
			free(g.vals);
			return -ENOMEM;
		}
		for (size_t i = 0; i < m->cap; i++)
			if (m->keys[i]) {
				size_t h = map_slot(&g, m->keys[i]);
				g.keys[h] = m->keys[i];
				g.vals[h] = m->vals[i];
				g.n++;
			}
		free(m->keys);
		free(m->vals);
		*m = g;
	}
	size_t h = map_slot(m, k);
	if (!m->keys[h])
		m->n++;
	m->keys[h] = k;
	m->vals[h] = v;
	return 0;
}

void map_clear(struct map *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}
