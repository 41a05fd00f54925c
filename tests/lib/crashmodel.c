/* crashmodel.c — the power-cut tests' oracle (crashmodel.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crashmodel.h"
#include "store.h"

void crashmodel_init(struct crashmodel *m, unsigned nb)
{
	m->nb = nb;
	m->durable = calloc(nb, 1);
	m->latest = calloc(nb, 1);
	m->pending = calloc(nb, sizeof(*m->pending));
	assert_true(m->durable && m->latest && m->pending);
}

void crashmodel_free(struct crashmodel *m)
{
	free(m->durable);
	free(m->latest);
	free(m->pending);
}

int crashmodel_write(struct crashmodel *m, struct vol *v)
{
	char blk[4096];
	unsigned b = (unsigned)rand() % m->nb;
	unsigned char x = (unsigned char)(1 + rand() % 250);

	memset(blk, x, sizeof(blk));
	m->pending[b][x / 8] |= (unsigned char)(1u << (x % 8));
	int err = store_write(v, blk, (uint64_t)b * 4096, 4096, 0);
	if (!err)
		m->latest[b] = x;
	return err;
}

int crashmodel_flush(struct crashmodel *m, struct vol *v)
{
	int err = store_flush(v);
	if (!err) {
		memset(m->pending, 0, (size_t)m->nb * sizeof(*m->pending));
		memcpy(m->durable, m->latest, m->nb);
	}
	return err;
}

void crashmodel_check(const struct crashmodel *m, struct vol *v, int run)
{
	unsigned char got[4096];

	for (unsigned b = 0; b < m->nb; b++) {
		assert_int_equal(store_read(v, got, (uint64_t)b * 4096, 4096), 0);
		unsigned char x = got[0];
		if (x != m->durable[b] && !(m->pending[b][x / 8] & (1u << (x % 8))))
			fail_msg("block %u reads %u, durable %u (run %d)", b, x, m->durable[b],
			         run);
		for (int k = 1; k < 4096; k++)
			if (got[k] != x)
				fail_msg("block %u is torn at byte %d (run %d)", b, k, run);
	}
}
