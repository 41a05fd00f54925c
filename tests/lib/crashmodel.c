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

static void region_fill(char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (char)(seed * 131 + i * 7 + (i >> 12));
}

#define REGION_LEN (65536 + 777)

static void region_expect(struct vol *v, unsigned i)
{
	char *want = malloc(REGION_LEN), *got = malloc(REGION_LEN);
	region_fill(want, REGION_LEN, i);
	assert_int_equal(store_read(v, got, (uint64_t)i << 20, REGION_LEN), 0);
	assert_memory_equal(want, got, REGION_LEN);
	free(want);
	free(got);
}

void crashpoint_run(struct store *st, struct crashpoint *cp)
{
	bool written[CRASHPOINT_REGIONS] = {0};
	struct vol *v;

	if (store_vol_create(st, "v", 32u << 20) == 0)
		cp->durable[CRASHPOINT_REGIONS] = true;
	if (store_vol_open(st, "v", &v))
		return;
	for (unsigned i = 0; i < CRASHPOINT_REGIONS; i++) {
		char *b = malloc(REGION_LEN);
		region_fill(b, REGION_LEN, i);
		uint32_t fl = i % 4 == 3 ? STORE_FUA : 0;
		if (store_write(v, b, (uint64_t)i << 20, REGION_LEN, fl) == 0) {
			written[i] = true;
			if (fl)
				cp->durable[i] = true;
		}
		free(b);
		if (i % 3 == 2 && store_flush(v) == 0)
			for (unsigned k = 0; k <= i; k++)
				cp->durable[k] = cp->durable[k] || written[k];
		if (i == 5 && store_snap_create(st, "v@s") == 0) {
			cp->snap_ok = true;
			for (unsigned k = 0; k <= i; k++)
				assert_true(written[k]);
		}
	}
	store_vol_close(v);
}

void crashpoint_verify(struct store *st, const struct crashpoint *cp)
{
	struct vol *v;

	assert_int_equal(store_check(st), 0);
	if (store_vol_open(st, "v", &v) == 0) {
		for (unsigned i = 0; i < CRASHPOINT_REGIONS; i++)
			if (cp->durable[i])
				region_expect(v, i);
		store_vol_close(v);
	} else {
		assert_false(cp->durable[CRASHPOINT_REGIONS]); /* create was acknowledged */
	}
	if (cp->snap_ok) {
		assert_int_equal(store_vol_open(st, "v@s", &v), 0);
		for (unsigned i = 0; i <= 5; i++)
			region_expect(v, i);
		store_vol_close(v);
	}
}
