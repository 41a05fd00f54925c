/* say.h — diagnostics to stderr (the daemon runs under systemd, which keeps
 * stderr in the journal).  Thread-safe: one fprintf per message. */
#ifndef COWBD_SAY_H
#define COWBD_SAY_H

enum say_level { SAY_ERROR, SAY_WARN, SAY_INFO, SAY_DEBUG };

/* Messages above this level are dropped.  Default SAY_INFO. */
extern enum say_level say_max_level;

void say(enum say_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define say_error(...) say(SAY_ERROR, __VA_ARGS__)
#define say_warn(...)  say(SAY_WARN, __VA_ARGS__)
#define say_info(...)  say(SAY_INFO, __VA_ARGS__)
#define say_debug(...) say(SAY_DEBUG, __VA_ARGS__)

#endif
