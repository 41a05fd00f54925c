/* map.c — open-addressing u64 -> pointer map with linear probing, grown
 * at half full, reset in O(1) by generation (see map.h).  Used by
 * single-threaded store code only. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"

static int used(const struct map *m, size_t i)
{
	return m->gens[i] == m->gen;
}

static size_t home(const struct map *m, uint64_t k)
{
	return (size_t)(k * 0x9E3779B97F4A7C15ull) & (m->cap - 1);
}

static size_t map_slot(const struct map *m, uint64_t k)
{
	size_t h = home(m, k);
	while (used(m, h) && m->keys[h] != k)
		h = (h + 1) & (m->cap - 1);
	return h;
}

void *map_get(const struct map *m, uint64_t k)
{
	if (!m->cap)
		return NULL;
	size_t h = map_slot(m, k);
	return used(m, h) ? m->vals[h] : NULL;
}

static int map_grow(struct map *m)
{
	struct map g = {.gen = 1};
	g.cap = m->cap ? m->cap * 2 : 1024;
	g.keys = malloc(g.cap * sizeof(*g.keys));
	g.vals = malloc(g.cap * sizeof(*g.vals));
	g.gens = calloc(g.cap, sizeof(*g.gens));
	if (!g.keys || !g.vals || !g.gens) {
		map_clear(&g);
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->cap; i++)
		if (used(m, i)) {
			size_t h = map_slot(&g, m->keys[i]);
			g.keys[h] = m->keys[i];
			g.vals[h] = m->vals[i];
			g.gens[h] = g.gen;
			g.n++;
		}
	map_clear(m);
	*m = g;
	return 0;
}

int map_put(struct map *m, uint64_t k, void *v)
{
	if ((m->n + 1) * 2 > m->cap && map_grow(m))
		return -ENOMEM;
	size_t h = map_slot(m, k);
	if (!used(m, h))
		m->n++;
	m->keys[h] = k;
	m->vals[h] = v;
	m->gens[h] = m->gen;
	return 0;
}

bool map_del(struct map *m, uint64_t k)
{
	size_t hole, j;

	if (!m->cap)
		return false;
	hole = map_slot(m, k);
	if (!used(m, hole))
		return false;
	/* Backward shift: an entry after the hole whose home is not in
	 * (hole, j] would be cut off from it, so it moves into the hole. */
	for (j = (hole + 1) & (m->cap - 1); used(m, j); j = (j + 1) & (m->cap - 1)) {
		size_t h = home(m, m->keys[j]);
		bool stays = hole <= j ? hole < h && h <= j : hole < h || h <= j;
		if (stays)
			continue;
		m->keys[hole] = m->keys[j];
		m->vals[hole] = m->vals[j];
		hole = j;
	}
	m->gens[hole] = 0; /* gen is never 0 */
	m->n--;
	return true;
}

void map_reset(struct map *m)
{
	m->n = 0;
	if (++m->gen == 0) { /* wrapped: old generations could match again */
		if (m->gens)
			memset(m->gens, 0, m->cap * sizeof(*m->gens));
		m->gen = 1;
	}
}

void map_clear(struct map *m)
{
	free(m->keys);
	free(m->vals);
	free(m->gens);
	memset(m, 0, sizeof(*m));
}

void **map_next(const struct map *m, size_t *pos, uint64_t *k)
{
	while (*pos < m->cap) {
		size_t i = (*pos)++;
		if (used(m, i)) {
			*k = m->keys[i];
			return &m->vals[i];
		}
	}
	return NULL;
}
