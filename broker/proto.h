/*
 * proto.h - one MQTT endpoint's mechanics, whichever side we play: the connection struct,
 * the frame loop (scan with a size limit, decode, hand each packet to the role), encoding
 * and sending within the peer's Maximum Packet Size, topic aliases both ways, acks held
 * until the store commits, and the one close transition.
 *
 * Two roles fill in an mql_proto_role: conn.c (we are the server of a client connection)
 * and bridge.c (we are the client of a remote broker). Neither knows the other; what both
 * do with QoS flows is in flow.h.
 *
 * Locking: everything here runs under the core lock (broker->lock) except where said
 * (mql_proto_data takes it). Output goes through mql_link_send(), which takes only the
 * link's own mutex and never calls back.
 */
#ifndef MQL_PROTO_H
#define MQL_PROTO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"
#include "msg.h"
#include "session.h"
#include "platform/net.h"

struct mql_broker;
struct mql_core;
struct mql_config;

#define MQL_CLOSE_FLUSH_MS 3000
#define MQL_PRECONNECT_MAX (256u * 1024u) /* largest frame accepted before CONNACK */

enum auth_result {
    AUTH_NONE = 0, /* no password check was made */
    AUTH_OK,
    AUTH_BAD,     /* wrong user name or password */
    AUTH_BLOCKED, /* too many failures from this address */
};

enum conn_state {
    CS_NEW = 0, /* waiting for CONNECT (server) or CONNACK (client) */
    CS_ACTIVE,  /* CONNACK sent or received */
    CS_CLOSING, /* close requested; input ignored */
};

/* How mql_proto_close ends the link: what is queued is sent first (FLUSH), or not. */
enum mql_close_how {
    MQL_CLOSE_ABORT = 0,
    MQL_CLOSE_FLUSH,
};

struct mql_conn;

/*
 * mql_proto_role: what one side of the protocol does with an endpoint. All ops are called
 * under the core lock.
 * - server: we are the server (decode CONNECT before the level is known, refuse with
 *   CONNACK before CONNECT is accepted).
 * - intercept: optional; input before any frame is scanned: returns true when it used the
 *   input itself (OUT: *used, the bytes consumed).
 * - packet: one decoded packet (its slices point into the receive buffer).
 * - violation: log that the peer broke the protocol (the close follows).
 */
typedef struct mql_proto_role {
    bool server;
    bool (*intercept)(struct mql_conn *c, const uint8_t *buf, size_t len, size_t *used);
    void (*packet)(struct mql_conn *c, mql_packet *p);
    void (*violation)(struct mql_conn *c, mql_err err, const char *why);
} mql_proto_role;

/* Encoded acknowledgements (PUBACK, PUBREC, SUBACK, UNSUBACK) of one connection waiting
 * for a store commit, in the order they were made. */
typedef struct ack_batch {
    struct mql_conn *c;
    uint32_t n; /* packets */
    size_t len, cap;
    uint8_t bytes[];
} ack_batch;

typedef struct mql_conn {
    struct mql_broker *b;         /* the role's broker (conn.c, bridge.c); proto and flow use: */
    struct mql_core *core;        /* the core state (core.h) */
    const struct mql_config *cfg; /* the broker's configuration */
    pthread_mutex_t *lock;        /* the core lock (broker.c), taken where a thread enters */
    const mql_proto_role *role;
    void *owner; /* the role's own object (a bridge), or NULL */
    mql_link *link;
    uint32_t refs;         /* the link (until closed) + each ack batch waiting for the store */
    bool link_gone;        /* the link's closed callback ran: link must not be used */
    uint32_t acks_waiting; /* ack batches handed to the store and not back yet */
    ack_batch *batch;      /* acks collected during this mql_proto_data call */
    struct mql_conn *next, *prev;
    char peer[64];
    uint8_t state;
    uint8_t version;
    mql_session *session;
    uint16_t keepalive;
    uint64_t created_at;
    uint64_t last_rx;
    uint64_t closing_since;
    bool request_problem_info; /* v5: reason strings / user properties allowed */
    uint16_t client_receive_max;
    uint32_t client_max_packet; /* 0 = protocol maximum */
    uint16_t alias_max;         /* topic aliases the client may use towards us */
    mql_bytes *aliases;         /* [alias_max + 1], heap copies */
    uint16_t out_alias_max;     /* aliases we may assign towards the client */
    uint16_t out_alias_used;
    mql_bytes *out_aliases; /* [out_alias_max + 1], heap copies */
    char why[160];          /* reason for closing, for the log */
    char *username;         /* the authenticated (or anonymous-but-given) user name, or NULL */
} mql_conn;

enum mql_send_result { MQL_SEND_FAILED = 0, MQL_SEND_OK, MQL_SEND_TOO_LARGE };

/* mql_proto_send_packet: encode pkt at the connection's level and queue it on the link. A
 * packet larger than the peer's Maximum Packet Size is not sent [MQTT-3.1.2-24]. Returns
 * MQL_SEND_OK, MQL_SEND_TOO_LARGE or MQL_SEND_FAILED (no memory, link gone). */
enum mql_send_result mql_proto_send_packet(mql_conn *c, const mql_packet *pkt);
/* mql_proto_send_ack: send PUBACK/PUBREC/PUBREL/PUBCOMP with this packet id and reason. */
void mql_proto_send_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason);
/* mql_proto_send_publish: send msg as a PUBLISH under the wire topic `topic` (msg->topic,
 * or the bridge's mapping of it), with the message's remaining expiry and Subscription
 * Identifiers (MQTT 5) and an outgoing topic alias when the peer allows them. Returns false
 * when it was discarded because it exceeds the peer's Maximum Packet Size (logged, counted
 * as dropped): the caller treats it as delivered [MQTT-3.1.2-25]. */
bool mql_proto_send_publish(mql_conn *c, mql_msg *msg, mql_bytes topic, uint8_t qos, bool retain,
                            bool dup, uint16_t pid, const uint32_t *ids, uint8_t n_ids);
/* mql_proto_send_connack: (server) send CONNACK with Session Present (never in MQTT 3.1),
 * the reason code and, for MQTT 5, props (NULL: none). */
enum mql_send_result mql_proto_send_connack(mql_conn *c, bool present, uint8_t reason,
                                            const mql_props *props);
/* mql_proto_send_disconnect: (MQTT 5) send DISCONNECT with reason and, when the peer
 * accepts problem information, why as its Reason String. */
void mql_proto_send_disconnect(mql_conn *c, uint8_t reason, const char *why);
/* mql_proto_close: the one close transition (no-op when already closing): why (NULL: the
 * text of err) is kept for the log; with MQTT 5 and err != MQL_OK the peer is told first:
 * DISCONNECT with err's reason code once established, CONNACK (server) before
 * [MQTT-4.13.1-1], and then what is queued is flushed whatever `how` says. Input is ignored
 * from now on; the link's closed callback follows. */
void mql_proto_close(mql_conn *c, enum mql_close_how how, mql_err err, const char *why);
/* mql_proto_violation: the peer broke the protocol: the role logs it, then mql_proto_close
 * with err and why. */
void mql_proto_violation(mql_conn *c, mql_err err, const char *why);
/* mql_proto_queue_packet: send an acknowledgement (PUBACK/PUBREC/SUBACK/UNSUBACK) now, or,
 * when `durable` (handling the packet queued store operations) or earlier acks wait, keep
 * it in c->batch until the store has committed: acks go out in the order of their
 * packets [MQTT-4.6.0-2] [MQTT-4.6.0-3]. Closes c when out of memory. */
void mql_proto_queue_packet(mql_conn *c, const mql_packet *pkt, bool durable);
/* mql_proto_queue_ack: mql_proto_queue_packet of PUBACK/PUBREC with pid and reason. */
void mql_proto_queue_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason, bool durable);
/* mql_proto_resolve_alias: (MQTT 5) apply pub's Topic Alias: an empty topic takes the
 * alias's, a topic sets it. Returns MQL_OK, or the error to close with and (OUT) *why. */
mql_err mql_proto_resolve_alias(mql_conn *c, mql_publish *pub, const char **why);
/* mql_proto_data: mql_link_ops.data of both roles: takes the core lock, then hands the
 * input to role->intercept, else scans frames (within max_packet_size, and
 * MQL_PRECONNECT_MAX before CONNECT), decodes each and gives it to role->packet, then
 * sends or hands to the store the acks collected. Returns the bytes used (OUT: *want, the
 * size of a frame whose header is in). */
size_t mql_proto_data(void *ctx, const uint8_t *buf, size_t len, size_t *want);
/* mql_proto_link_closed: the common end of a link's closed callback (under the lock): the
 * link is gone, the session and the ack batch are dropped, the link's reference released. */
void mql_proto_link_closed(mql_conn *c);
/* mql_proto_unref: drop a reference; the last one frees the connection. */
void mql_proto_unref(mql_conn *c);
/* mql_proto_client_id: the ClientID of c's session, or "" before there is one. */
const char *mql_proto_client_id(const mql_conn *c);

#endif
