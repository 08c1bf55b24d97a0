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

#ifdef MQL_TEST_CLOCK
/* Test seam: a build that drives time itself (the connection fuzzer, tests/fuzz/fuzz_conn.c)
 * defines MQL_TEST_CLOCK and supplies this function, so every timeout and expiry in the
 * broker core follows the test's clock and a run is reproducible. Never set for mqlite. */
uint64_t mql_test_now_ms(void);

static inline uint64_t mql_now_ms(void)
{
    return mql_test_now_ms();
}
#else
/* mql_now_ms: milliseconds of CLOCK_MONOTONIC (never goes back; not wall-clock time). */
static inline uint64_t mql_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
#endif

/* mql_wall_s: wall-clock seconds since the epoch (time(2)). */
static inline int64_t mql_wall_s(void)
{
    return (int64_t)time(NULL);
}

#endif
