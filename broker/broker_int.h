/*
 * broker_int.h - broker.c's own header: the broker struct, for the modules that keep
 * per-broker state which is not the core's (core.h) and that enter the core from a thread:
 * conn.c and conn_connect.c (the connection list, the listeners' counts, the password file,
 * login back-off, generated ClientIDs), bridge.c (its bridges, the network to dial on, the
 * core lock, shutdown) and the connection fuzzer (tests/fuzz/fuzz_conn.c: the network, the
 * clock, mql_broker_tick). session, router, clients, mirror, restore, sys, proto and flow
 * never see it: they get the core, the configuration or the lock.
 *
 * Locking (the order is fixed: broker->lock -> link mutex inside platform/net.c):
 * - broker->lock protects everything here: the ClientID table, sessions, connections'
 *   protocol state, the topic tree and the counters. A connection's packets are scanned,
 *   decoded and handled under the lock (mql_proto_data), so two CONNECTs for one ClientID
 *   are strictly ordered and a takeover is atomic with respect to every publish. Only the
 *   password check of a connection's first CONNECT decodes it before the lock is taken
 *   (precheck_password in conn.c: PBKDF2 is slow).
 * - Output goes through mql_link_send(), which only takes the link's own mutex and never
 *   calls back, so delivering to another connection under broker->lock cannot deadlock.
 * - Nothing here blocks on I/O while holding the lock.
 */
#ifndef MQL_BROKER_INT_H
#define MQL_BROKER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "broker.h"
#include "config.h"
#include "conn.h"
#include "core.h"
#include "proto.h"
#include "platform/net.h"

/* mql_broker: see above (broker.h has its opaque typedef). */
struct mql_broker {
    mql_core core; /* what session, router, clients and mirror use (core.h) */
    mql_config cfg;
    struct mql_listener_state listeners[MQL_MAX_LISTENERS];
    bool conns_full_logged; /* the broker-wide max_connections episode was logged */
    pthread_mutex_t lock;
    mql_net *net;
    mql_conn *conns;
    uint32_t nconns;
    uint32_t id_counter;
    pthread_t ticker;
    bool ticker_started;
    bool stopping;
    pthread_cond_t tick_cv;
    uint64_t started_at;     /* mql_now_ms() at start, for $SYS uptime */
    uint64_t sys_next;       /* when $SYS is published next */
    uint64_t reap_lost_next; /* when mql_net_reap_lost runs next */
    /* authentication: passwd/acl (core.acl) are replaced on SIGHUP under lock + auth_lock (write);
     * password checks run outside lock with auth_lock (read) */
    pthread_rwlock_t auth_lock;
    mql_passwd *passwd;
    mql_ratelimit *ratelimit;
    struct mql_bridge *bridges; /* [cfg.n_bridges] */
};

/* mql_broker_tick: one round of housekeeping at monotonic time `now` (ms): keepalive and
 * CONNECT timeouts, delayed wills, session expiry, $SYS, the store's fullness. Under
 * broker->lock. The ticker thread calls it every 250 ms; the connection fuzzer calls it
 * directly with its own clock (it never starts the ticker), which is why it is not
 * static. */
void mql_broker_tick(mql_broker *b, uint64_t now);

#endif
