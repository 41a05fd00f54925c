/* boundcall.h — run a blocking call on a thread of its own and give it a
 * bound, so a call that hangs fails the test instead of hanging it (cmocka).
 */
#ifndef COWBD_TEST_BOUNDCALL_H
#define COWBD_TEST_BOUNDCALL_H

struct call;

/* Start fn(arg) on its own (detached) thread. */
struct call *call_start(int (*fn)(void *), void *arg);

/* fn's value; fails the test, leaving the thread and c behind, when fn has
 * not returned within bound seconds.  what names the call in the message. */
int call_end(struct call *c, int bound, const char *what);

/* call_end(call_start(fn, arg), bound, what). */
int call_bounded(int (*fn)(void *), void *arg, int bound, const char *what);

#endif
