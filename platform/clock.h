/*
 * clock.h - time sources.
 *
 * mql_now_ms() is monotonic (keepalive, expiry while running); mql_wall_s() is wall-clock
 * seconds (stored timestamps that must survive a restart).
 */
#ifndef MQL_CLOCK_H
#define MQL_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t mql_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline int64_t mql_wall_s(void)
{
    return (int64_t)time(NULL);
}

#endif
