/*
 * clients.h - the ClientID table: lookup, new sessions, ending a session (its will, its
 * shared messages) and session expiry.
 *
 * Locking: every function here is called with the core lock (broker->lock) held.
 */
#ifndef MQL_CLIENTS_H
#define MQL_CLIENTS_H

#include <stdint.h>

#include "session.h"

struct mql_core;

/* mql_clients_find: the session of ClientID id (len bytes), or NULL. */
mql_session *mql_clients_find(struct mql_core *core, const uint8_t *id, uint32_t len);
/* mql_clients_new: a new empty session for ClientID id, which must not be in the table
 * (mql_clients_find), with the broker's queue and window limits, entered in the table,
 * which owns it until mql_clients_end. NULL when out of memory. */
mql_session *mql_clients_new(struct mql_core *core, const uint8_t *id, uint32_t len);
/* mql_clients_end: end session s (nothing attached) now: a will it still holds is published
 * (the session ends before the will delay [MQTT-3.1.3-9]), its subscriptions go, messages
 * it got through shared subscriptions and did not deliver go to another member of their
 * group, and s leaves the table and is freed (mql_session_free). */
void mql_clients_end(struct mql_core *core, mql_session *s);
/* mql_clients_expire_scan: one bounded pass over the sessions with nothing attached at
 * monotonic time `now` (ms): expired queued messages go, delayed wills whose time came are
 * published, sessions whose expiry interval ran out end. */
void mql_clients_expire_scan(struct mql_core *core, uint64_t now);

#endif
