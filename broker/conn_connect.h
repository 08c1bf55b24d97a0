/*
 * conn_connect.h - CONNECT -> CONNACK for client connections (conn.c's packet handler).
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
