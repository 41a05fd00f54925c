/* fuzz_control.c — libFuzzer target for the control socket's request
 * handling (control.c: JSON parsing, op dispatch, name validation, error
 * replies), through control_answer_line(), the socket-free entry point.
 *
 * The input is up to 16 request lines separated by '\n', answered in order
 * against a small in-memory pool built once with "vol0" (1 MiB), its
 * snapshot "vol0@s" and a clone "cl" of it.  Afterwards every volume and
 * snapshot the requests created is deleted again and the baseline ones they
 * deleted are recreated, so each input starts from the same names (a
 * rollback is harmless: no volume holds data).  Checked: every reply is a JSON object with a
 * boolean "ok"; a refusal carries an "error" string and an "errno" string; an "id" in a request
 * that parses comes back unchanged; the pool is back at its baseline after the cleanup.
 */
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "say.h"
#include "store.h"
#include "testpool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_LINES 16

static struct store *st;
static const char *const baseline[] = {"cl", "vol0", "vol0@s"};
#define NBASE (sizeof(baseline) / sizeof(baseline[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct store_opts opts = {.readers = 1, .checkpoint_bytes = 4u << 20};
	struct blkdev *dev = blkdev_mem_new(64ull << 20);
	int err;

	say_max_level = getenv("FUZZ_VERBOSE") ? SAY_DEBUG : SAY_ERROR;
	if (!dev)
		testpool_die("blkdev_mem_new", errno);
	st = testpool_volume(dev, &opts, "vol0", 1u << 20, NULL);
	if ((err = store_snap_create(st, "vol0@s")) || (err = store_clone(st, "vol0@s", "cl")))
		testpool_die("baseline", err);
	return 0;
}

static bool is_baseline(const char *name)
{
	for (size_t i = 0; i < NBASE; i++)
		if (!strcmp(name, baseline[i]))
			return true;
	return false;
}

/* Delete what the requests made and recreate what they deleted of the
 * baseline.  Order matters (a volume with snapshots, or a snapshot with
 * clones, cannot go first), so delete whatever can go until nothing more
 * does; then nothing but the baseline may be left.  Returns the number of
 * entries then. */
static size_t cleanup(void)
{
	struct store_vol_info *vi;
	size_t n, deleted;
	int err;

	do {
		deleted = 0;
		assert(store_list(st, &vi, &n) == 0);
		for (size_t i = 0; i < n; i++) {
			if (is_baseline(vi[i].name))
				continue;
			err = store_vol_delete(st, vi[i].name);
			assert(err == 0 || err == -EBUSY || err == -ENOTEMPTY);
			deleted += err == 0;
		}
		free(vi);
	} while (deleted);
	err = store_vol_create(st, "vol0", 1u << 20);
	assert(err == 0 || err == -EEXIST);
	err = store_snap_create(st, "vol0@s");
	assert(err == 0 || err == -EEXIST);
	err = store_clone(st, "vol0@s", "cl");
	assert(err == 0 || err == -EEXIST);
	assert(store_list(st, &vi, &n) == 0);
	for (size_t i = 0; i < n; i++)
		assert(is_baseline(vi[i].name));
	free(vi);
	return n;
}

static void check_reply(const char *line, size_t len, const char *reply)
{
	json_error_t jerr;
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *res = json_loads(reply, 0, &jerr);
	json_t *ok;

	assert(res && json_is_object(res));
	ok = json_object_get(res, "ok");
	assert(json_is_boolean(ok));
	if (json_is_false(ok)) {
		assert(json_is_string(json_object_get(res, "error")));
		assert(json_is_string(json_object_get(res, "errno")));
	}
	if (req && json_is_object(req) && json_object_get(req, "id"))
		assert(json_equal(json_object_get(req, "id"), json_object_get(res, "id")));
	json_decref(req);
	json_decref(res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;

	for (int i = 0; i < MAX_LINES && p < end; i++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char *reply = control_answer_line(st, p, len);

		assert(reply);
		check_reply(p, len, reply);
		free(reply);
		p += len + (nl ? 1 : 0);
	}
	assert(cleanup() == NBASE);
	return 0;
}
