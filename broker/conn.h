/*
 * conn.h - the server side of client connections (conn.c, with CONNECT -> CONNACK in
 * conn_connect.c): their link callbacks, their per-listener state, their housekeeping.
 *
 * Locking: under the core lock (broker->lock) unless said otherwise.
 */
#ifndef MQL_CONN_H
#define MQL_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "platform/net.h"

struct mql_broker;

/* mql_listener_state: conn.c's state of one listener (same index as cfg.listeners), kept in
 * the broker struct; only conn.c reads or writes it (mql_conn_listener_started names it). */
struct mql_listener_state {
    char url[256];    /* what it listens on, for messages */
    uint32_t nconns;  /* its connections (counted in mql_broker.nconns too) */
    bool full_logged; /* its max_connections episode was logged */
};

/* mql_conn_link_ops: the link callbacks of client connections (for mql_net_alloc). */
extern const mql_link_ops mql_conn_link_ops;
/* mql_conn_listener_started: listener i listens on url (kept, truncated to the state's
 * size, for connection messages). Before it accepts; not under the lock (at start). */
void mql_conn_listener_started(struct mql_broker *b, int i, const char *url);
/* mql_conn_tick: keepalive and CONNECT timeouts, ends of closing flushes and takeover
 * drains of client connections at monotonic time `now` (ms). */
void mql_conn_tick(struct mql_broker *b, uint64_t now);
/* mql_conn_shutdown_all: at shutdown: close every client connection (MQTT 5 clients that
 * are connected hear DISCONNECT 0x8B Server shutting down; no flush wait here). */
void mql_conn_shutdown_all(struct mql_broker *b);

#endif
