/* replay.c — run a libFuzzer target over its saved inputs without fuzzing,
 * so `make check` (gcc, no libFuzzer) keeps every corpus entry and every
 * crash ever found passing.
 *
 * Linked with one tests/fuzz/fuzz_<name>.c into build/tests/test_fuzz_<name>.
 * With no arguments it replays tests/fuzz/corpus/fuzz_<name>/ and
 * tests/fuzz/crashes/fuzz_<name>/ under $TOP (set by tests/run.sh; else the
 * source tree the binary was built from); with arguments, those files or
 * directories.  A failing input aborts (assert or sanitizer), after the
 * line "replay: FILE" that names it.  Exit 0 when all ran.
 *
 * A replay that ran nothing proves nothing, so it fails: a missing corpus
 * directory (a wrong $TOP, a renamed target), a path given that does not
 * exist, or zero inputs replayed in all.  Only the crashes directory may be
 * missing: most targets have never crashed.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#ifndef FUZZ_TARGET
#error "build with -DFUZZ_TARGET=\"fuzz_<name>\""
#endif
#ifndef FUZZ_TOP
#define FUZZ_TOP "."
#endif

static unsigned ran;

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) ||
	    !(buf = malloc(n ? (size_t)n : 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "replay: %s: cannot read\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	fprintf(stderr, "replay: %s\n", path);
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	free(buf);
	ran++;
	return 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order. */
static int run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int err = 0;

	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));

			if (!nn) {
				err = -1;
				break;
			}
			names = nn;
		}
		if (!(names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2))) {
			err = -1;
			break;
		}
		sprintf(names[n++], "%s/%s", dir, e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), compare_names);
	for (size_t i = 0; i < n; i++) {
		struct stat sb;

		if (!err && !stat(names[i], &sb) && S_ISREG(sb.st_mode))
			err = run_file(names[i]);
		free(names[i]);
	}
	free(names);
	return err;
}

/* A file or a directory of inputs; may_be_missing lets an absent path
 * count as empty. */
static int run_path(const char *path, int may_be_missing)
{
	struct stat sb;

	if (stat(path, &sb)) {
		if (errno == ENOENT && may_be_missing)
			return 0;
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return S_ISDIR(sb.st_mode) ? run_dir(path) : run_file(path);
}

int main(int argc, char **argv)
{
	const char *top = getenv("TOP") ? getenv("TOP") : FUZZ_TOP;
	char path[4096];
	int err = 0;

	LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (int i = 1; i < argc && !err; i++)
			err = run_path(argv[i], 0);
	} else {
		snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/%s", top, FUZZ_TARGET);
		err = run_path(path, 0);
		snprintf(path, sizeof(path), "%s/tests/fuzz/crashes/%s", top, FUZZ_TARGET);
		if (!err)
			err = run_path(path, 1);
	}
	printf("%s: replayed %u inputs\n", FUZZ_TARGET, ran);
	if (!err && !ran) {
		fprintf(stderr, "replay: %s: no inputs found: nothing was tested\n", FUZZ_TARGET);
		err = -1;
	}
	return err ? 1 : 0;
}
