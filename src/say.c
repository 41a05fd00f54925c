/* say.c — leveled diagnostics on stderr.  No locks: each message is built
 * in a local buffer and written with a single write(2), so lines from
 * different threads never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "say.h"

enum say_level say_max_level = SAY_INFO;

void say(enum say_level lvl, const char *fmt, ...)
{
	static const char *const tag[] = {"error", "warning", "info", "debug"};
	char buf[1024];
	va_list ap;
	int n;

	if (lvl > say_max_level)
		return;
	n = snprintf(buf, sizeof(buf), "cowbd: %s: ", tag[lvl]);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!write(STDERR_FILENO, buf, (size_t)n);
}
