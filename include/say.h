/* say.h — diagnostics to stderr (the daemon runs under systemd, which keeps
 * stderr in the journal).  Thread-safe: one fprintf per message. */
#ifndef COWBD_SAY_H
#define COWBD_SAY_H
#include <stdbool.h>

enum say_level { SAY_ERROR, SAY_WARN, SAY_INFO, SAY_DEBUG };

/* Messages above this level are dropped.  Default SAY_INFO.  Atomic: the
 * daemon changes it at SIGHUP while other threads log. */
extern _Atomic enum say_level say_max_level;

/* "error", "warn", "info" or "debug" (also "warning"): 0 with *out set,
 * or -EINVAL. */
int say_parse_level(const char *s, enum say_level *out);

/* The name of a level, as say_parse_level takes it. */
const char *say_level_name(enum say_level lvl);

void say(enum say_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define say_error(...) say(SAY_ERROR, __VA_ARGS__)
#define say_warn(...)  say(SAY_WARN, __VA_ARGS__)
#define say_info(...)  say(SAY_INFO, __VA_ARGS__)
#define say_debug(...) say(SAY_DEBUG, __VA_ARGS__)

/* Problems a checker finds, tallied by kind (a plural noun phrase, a
 * string literal: "bad data checksums").  Each call counts n problems of
 * the kind and prints its line as an error while fewer than
 * say_problem_show lines of that kind have been printed (0: every one),
 * so a badly damaged pool gives a readable report and a true count.
 * Thread-safe; at most 32 kinds (more are tallied under "other
 * problems"). */
extern unsigned long say_problem_show; /* default 10 */
void say_problem(const char *kind, unsigned long n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Forget the tally (a checker calls it first). */
void say_problems_reset(void);

/* The i-th kind tallied since the reset, in first-seen order: its name,
 * its problem count and how many of them no printed line named.  false
 * past the last. */
bool say_problem_kind(unsigned i, const char **kind, unsigned long *count, unsigned long *hidden);

#endif
