/* clock.h — CLOCK_MONOTONIC in nanoseconds, for the store's timings
 * (latencies, time budgets, the counters of time spent). */
#ifndef COWBD_CLOCK_H
#define COWBD_CLOCK_H
#include <stdint.h>
#include <time.h>

static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
