/*
 * ratelimit.h - how often a peer address may fail to log in (the login back-off).
 *
 * Pure: no locks, no global state, no logging; the limiter changes its table, so the
 * caller (the broker) serialises calls on one limiter.
 *
 * It counts login failures per peer address in a table of fixed size (chosen at alloc, never
 * grows). After `max_failures` failures from one address within `window_ms`, the address
 * is blocked for `base_delay_ms`; each further block doubles the delay (up to
 * `max_delay_ms`). The doubling is forgotten after `forget_ms` without a failure. When the
 * table is full, a new address takes the slot of the least recently failing address that
 * is not blocked; when every slot is blocked, the one whose block ends first. Lookups scan
 * the table (a few hundred slots: microseconds per CONNECT).
 */
#ifndef MQL_RATELIMIT_H
#define MQL_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* MQL_RATELIMIT_ADDR_MAX: address bytes kept, with the NUL; longer ones are cut. */
#define MQL_RATELIMIT_ADDR_MAX 64

/* mql_ratelimit_cfg: the limiter's settings (defaults from mql_ratelimit_defaults). */

typedef struct mql_ratelimit_cfg {
    uint32_t slots;         /* addresses tracked at once (default 256) */
    uint32_t max_failures;  /* failures within window_ms that block (default 5) */
    uint64_t window_ms;     /* default 60000 */
    uint64_t base_delay_ms; /* first block (default 10000), doubled for each further one */
    uint64_t max_delay_ms;  /* longest block (default 900000 = 15 min) */
    uint64_t forget_ms;     /* no failure for this long: the doubling restarts (3600000) */
} mql_ratelimit_cfg;

/* mql_ratelimit: a limiter (opaque); the caller serialises calls on one. */
typedef struct mql_ratelimit mql_ratelimit;

/* mql_ratelimit_defaults: the defaults above. */
void mql_ratelimit_defaults(mql_ratelimit_cfg *cfg);

/*
 * mql_ratelimit_alloc: allocate a limiter with cfg (NULL: defaults); its memory is fixed from now
 * on. Returns MQL_OK, MQL_E_CONFIG (slots or max_failures 0, window_ms 0) or MQL_E_NOMEM.
 */
MQL_MUST_CHECK mql_err mql_ratelimit_alloc(mql_ratelimit **out, const mql_ratelimit_cfg *cfg);

/* mql_ratelimit_free: free a limiter and its table. NULL is allowed. */
void mql_ratelimit_free(mql_ratelimit *rl);

/*
 * mql_ratelimit_allow: may addr (the peer address without port, e.g. "10.0.0.8" or "fe80::1%eth0")
 * try to log in at now_ms (a monotonic clock)? False while it is blocked. Call it before the
 * password check, so a blocked peer costs no PBKDF2. Does not change the table.
 */
bool mql_ratelimit_allow(const mql_ratelimit *rl, const char *addr, uint64_t now_ms);

/* mql_ratelimit_fail: record a failed login from addr at now_ms. May block addr (see above). */
void mql_ratelimit_fail(mql_ratelimit *rl, const char *addr, uint64_t now_ms);

/* mql_ratelimit_ok: record a successful login from addr: its failures in the current window are
 * cleared (the doubling of the delay is kept until forgotten); an address with no history is
 * removed. */
void mql_ratelimit_ok(mql_ratelimit *rl, const char *addr);

/* mql_ratelimit_blocked_for: for logs and tests: when addr is blocked at now_ms, the ms left, else
 * 0. */
uint64_t mql_ratelimit_blocked_for(const mql_ratelimit *rl, const char *addr, uint64_t now_ms);

/* mql_ratelimit_count: number of addresses in the table. */
size_t mql_ratelimit_count(const mql_ratelimit *rl);

#endif
