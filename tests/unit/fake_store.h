/*
 * fake_store.h - storage/store.h's change operations in memory, for the unit tests of the
 * core modules (session, router, clients through mirror.c): no SQLite, no thread.
 *
 * fake_store.c implements the functions of storage/store.h that the store mirror
 * (broker/mirror.c) calls: every one counts its call in fake_store_calls and returns
 * MQL_OK. A test that wants the mirror to act sets core.store to fake_store_handle() (and
 * core.store_wait for "acks wait"); with core.store NULL nothing reaches the fake at all.
 */
#ifndef MQL_FAKE_STORE_H
#define MQL_FAKE_STORE_H

#include <stdint.h>

#include "storage/store.h"

/* fake_store_counts: calls of each change operation since the last fake_store_reset. */
typedef struct fake_store_counts {
    uint32_t msg_put, session_put, session_del, sub_put, sub_del;
    uint32_t out_put, out_update, out_del, qos2_put, qos2_del, retain_put, retain_del;
} fake_store_counts;

/* fake_store_calls: the counters (one process-wide fake store). */
extern fake_store_counts fake_store_calls;

/* fake_store_handle: a store pointer to put into core.store; never dereferenced. */
mql_store *fake_store_handle(void);

/* fake_store_reset: zero fake_store_calls. */
void fake_store_reset(void);

#endif
