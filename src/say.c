/* say.c — leveled diagnostics on stderr, and the tally of problems a
 * checker reports.  Messages take no lock: each is built in a local buffer
 * and written with a single write(2), so lines from different threads
 * never interleave.  The level is atomic (changed at SIGHUP); the tally
 * has its own mutex. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "say.h"

_Atomic enum say_level say_max_level = SAY_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int say_parse_level(const char *s, enum say_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (!strcmp(s, level_names[i]) || (i == SAY_WARN && !strcmp(s, "warning"))) {
			*out = (enum say_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *say_level_name(enum say_level lvl)
{
	return level_names[lvl];
}

static void say_v(enum say_level lvl, const char *fmt, va_list ap)
{
	static const char *const tag[] = {"error", "warning", "info", "debug"};
	char buf[1024];
	int n;

	if (lvl > say_max_level)
		return;
	n = snprintf(buf, sizeof(buf), "cowbd: %s: ", tag[lvl]);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!write(STDERR_FILENO, buf, (size_t)n);
}

void say(enum say_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say_v(lvl, fmt, ap);
	va_end(ap);
}

/* ---- the problem tally ------------------------------------------------ */

#define KINDS_MAX 32

unsigned long say_problem_show = 10;

static pthread_mutex_t tally_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const char *kind;
	unsigned long count, lines, shown; /* problems, lines printed, problems they named */
} tally[KINDS_MAX];
static unsigned nkinds;

void say_problem(const char *kind, unsigned long n, const char *fmt, ...)
{
	unsigned i;
	bool show;
	va_list ap;

	pthread_mutex_lock(&tally_lock);
	for (i = 0; i < nkinds && strcmp(tally[i].kind, kind); i++)
		;
	if (i == nkinds && nkinds < KINDS_MAX)
		tally[nkinds++].kind = kind;
	else if (i == nkinds) /* table full: the last slot takes the rest */
		tally[i = KINDS_MAX - 1].kind = "other problems";
	tally[i].count += n;
	show = !say_problem_show || tally[i].lines < say_problem_show;
	if (show) {
		tally[i].lines++;
		tally[i].shown += n;
	}
	pthread_mutex_unlock(&tally_lock);
	if (show) {
		va_start(ap, fmt);
		say_v(SAY_ERROR, fmt, ap);
		va_end(ap);
	}
}

void say_problems_reset(void)
{
	pthread_mutex_lock(&tally_lock);
	nkinds = 0;
	memset(tally, 0, sizeof(tally));
	pthread_mutex_unlock(&tally_lock);
}

bool say_problem_kind(unsigned i, const char **kind, unsigned long *count, unsigned long *hidden)
{
	bool found;

	pthread_mutex_lock(&tally_lock);
	found = i < nkinds;
	if (found) {
		*kind = tally[i].kind;
		*count = tally[i].count;
		*hidden = tally[i].count - tally[i].shown;
	}
	pthread_mutex_unlock(&tally_lock);
	return found;
}
