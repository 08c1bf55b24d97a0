/*
 * bridge.h - the bridges (bridge.c): each is a client of a remote broker, a peer of the
 * client connections on the endpoint core (proto.h), with a local session registered in the
 * ClientID table. The bridge struct is bridge.c's own.
 *
 * Locking: as said per function; broker->lock is the core lock (broker.c).
 */
#ifndef MQL_BRIDGE_H
#define MQL_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "err.h"

/* mql_bridges_start: set up every configured bridge (after the store is loaded: their
 * local sessions may be in it) and schedule the first dial. Takes broker->lock itself.
 * Returns MQL_OK, or an error with a message in errbuf (errlen bytes). */
MQL_MUST_CHECK mql_err mql_bridges_start(mql_broker *b, char *errbuf, size_t errlen);
/* mql_bridges_tick: reconnects, CONNACK timeouts, keep alive and the queue pump of every
 * bridge at monotonic time `now` (ms). Under broker->lock. */
void mql_bridges_tick(mql_broker *b, uint64_t now);
/* mql_bridges_stop: disconnect every uplink (at shutdown: DISCONNECT, then close with
 * flush). Under broker->lock. */
void mql_bridges_stop(mql_broker *b);
/* mql_bridges_free: free the bridges' dialers; not under broker->lock (waits for dial
 * callbacks). */
void mql_bridges_free(mql_broker *b);
/* mql_bridges_sys_publish: publish each bridge's $SYS/broker/bridge/NAME/queued value (its
 * local session's queued and in-flight messages; mql_sys_set). Under broker->lock. */
void mql_bridges_sys_publish(mql_broker *b);

#endif
