/*
 * conn_connect.h - CONNECT -> CONNACK for client connections (conn.c's packet handler), and
 * the client connection struct the two files share.
 *
 * Locking: called with the core lock (broker->lock) held.
 */
#ifndef MQL_CONN_CONNECT_H
#define MQL_CONN_CONNECT_H

#include <stdbool.h>

#include "codec.h"
#include "proto.h"
#include "session.h"

struct mql_broker;

/* mql_client: a client connection: the endpoint (proto.h) first, then what only the server
 * side keeps (conn.c, conn_connect.c; bridge.c and proto.c never see it). conn.c allocates
 * it; proto frees it with free() on the endpoint, its first member. */
typedef struct mql_client {
    mql_conn ep;
    int listener; /* index in cfg.listeners of the listener that accepted it */
    mql_msg *will;
    uint32_t will_delay;
    bool will_suppressed; /* DISCONNECT 0x00 received */
    bool will_deferred;   /* taken over with its will pending: see handle_connect */
    uint64_t drain_until; /* while taken over: read (for a DISCONNECT) until then */
    bool peer_bridge;     /* 3.1/3.1.1 CONNECT with the bridge bit (mosquitto's) */
    uint8_t auth;         /* AUTH_* result of the password check made before the lock */
    bool prechecked;      /* precheck_password ran (first receive) */
} mql_client;

/* mql_client_of: the client connection whose endpoint is c (c made by conn.c). */
static inline mql_client *mql_client_of(mql_conn *c)
{
    return (mql_client *)c;
}

/* mql_conn_connect: the CONNECT of a new client connection c: refused (CONNACK with the
 * reason, then closed) or accepted: its session (new, resumed or taken over from another
 * connection, which is closed) is attached to c, CONNACK sent, and what the session owes
 * resent [MQTT-4.4.0-1]. */
void mql_conn_connect(mql_conn *c, const mql_connect *cn);
/* mql_conn_release_will: c is being replaced or has closed: its will (if any) is dropped
 * (DISCONNECT 0x00 came [MQTT-3.1.2-10]), kept on s as a delayed will (Will Delay Interval,
 * when session_goes_on), or published now [MQTT-3.1.2-8]. c no longer holds it. */
void mql_conn_release_will(struct mql_broker *b, mql_conn *c, mql_session *s, bool session_goes_on);

#endif
