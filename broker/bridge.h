/*
 * bridge.h - the bridges (bridge.c): each is a client of a remote broker, a peer of the
 * client connections on the endpoint core (proto.h), with a local session registered in the
 * ClientID table. The bridge struct is bridge.c's own; the bridges see of the broker only
 * what mql_bridge_env gives them.
 *
 * Locking: as said per function; the core lock is env->lock (broker.c's).
 */
#ifndef MQL_BRIDGE_H
#define MQL_BRIDGE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "platform/net.h"

struct mql_core;

/* mql_bridges: the bridges of a broker (opaque; bridge.c). */
typedef struct mql_bridges mql_bridges;

/* mql_bridge_env: what the bridges use of the broker, all kept by the broker until
 * mql_bridges_free: the core state, the configuration (its bridges), the core lock (taken
 * where a dial result or an uplink's input enters), the network to dial on. */
typedef struct mql_bridge_env {
    struct mql_core *core;
    const mql_config *cfg;
    pthread_mutex_t *lock;
    mql_net *net;
} mql_bridge_env;

/* mql_bridges_start: set up every bridge of env->cfg (after the store is loaded: their
 * local sessions may be in it) and schedule the first dial. Takes env->lock itself. OUT:
 * *out is the set (NULL without bridges), the caller's until mql_bridges_free even when an
 * error is returned. Returns MQL_OK, or an error with a message in errbuf (errlen bytes). */
MQL_MUST_CHECK mql_err mql_bridges_start(mql_bridges **out, const mql_bridge_env *env, char *errbuf,
                                         size_t errlen);
/* mql_bridges_tick: reconnects, CONNACK timeouts, keep alive and the queue pump of every
 * bridge at monotonic time `now` (ms). Under the core lock; bs NULL: nothing. */
void mql_bridges_tick(mql_bridges *bs, uint64_t now);
/* mql_bridges_stop: disconnect every uplink (at shutdown: DISCONNECT, then close with
 * flush); no bridge dials again. Under the core lock. */
void mql_bridges_stop(mql_bridges *bs);
/* mql_bridges_sys_publish: publish each bridge's $SYS/broker/bridge/NAME/queued value (its
 * local session's queued and in-flight messages; mql_sys_set). Under the core lock. */
void mql_bridges_sys_publish(mql_bridges *bs);
/* mql_bridges_free_dialers: free the bridges' dialers; not under the core lock (waits for
 * dial callbacks). No dial is in progress afterwards. */
void mql_bridges_free_dialers(mql_bridges *bs);
/* mql_bridges_free: free the set, after the network is freed (an uplink's closed callback
 * still uses its bridge). NULL is allowed. */
void mql_bridges_free(mql_bridges *bs);

#endif
