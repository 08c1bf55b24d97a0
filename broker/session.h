/*
 * session.h - one MQTT session: subscriptions, the QoS 1/2 in-flight window and queue,
 * inbound QoS 2 packet ids, the delayed will, and the sink it delivers through.
 *
 * Locking: every function here is called with the core lock (broker->lock) held.
 */
#ifndef MQL_SESSION_H
#define MQL_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "msg.h"
#include "topic.h"

struct mql_core;
struct mql_conn;
struct mql_bridge;

#define MQL_SESSION_NEVER UINT32_MAX
#define MQL_QOS2_SMALL 8 /* inbound QoS 2 ids kept inline before a session uses a bitmap */
#define MQL_QOS0_BACKLOG_MAX (1024u * 1024u) /* QoS 0 is dropped beyond this backlog */

enum out_state {
    OUT_QUEUED = 0,
    OUT_PUBLISH_SENT, /* waiting for PUBACK / PUBREC */
    OUT_PUBREL_SENT,  /* waiting for PUBCOMP */
};

/* A QoS 1/2 message owed to a session: queued, or in flight with a packet id. */
typedef struct out_msg {
    struct out_msg *next, *prev;
    mql_msg *msg;
    mql_share *share; /* delivered through this shared subscription group (a reference) */
    uint16_t packet_id;
    uint8_t qos;
    uint8_t state;
    bool retain;
    bool dup;     /* may have been sent before a restart: the first send has DUP 1 */
    bool stored;  /* a row exists in the store */
    uint64_t seq; /* per-session order, the row's key in the store */
    uint8_t n_ids;
    uint32_t ids[];
} out_msg;

typedef struct out_list {
    out_msg *head, *tail;
    uint32_t count;
} out_list;

/* mql_out_list_append puts o at the tail of l (o's list links are overwritten) and counts
 * it. The list owns o afterwards. Used by the session and by restore, which rebuilds the
 * lists from the store. */
void mql_out_list_append(out_list *l, out_msg *o);

/*
 * mql_sink_ops: where a session's packets go while something is attached to it (a client
 * connection, filled in by conn.c, or a bridge's uplink, filled in by bridge.c). ctx is the
 * pointer given to mql_session_attach. Each op is called under the core lock and must not
 * call back into the session.
 * - ready: true while the sink takes packets (false once it is closing).
 * - publish: send msg as a PUBLISH with these header fields and Subscription Identifiers.
 *   Returns false when it was discarded because it exceeds the peer's Maximum Packet Size:
 *   the session then treats it as delivered [MQTT-3.1.2-25]. The sink keeps no reference.
 * - ack: send an acknowledgement (PUBREL when the session resends its in-flight window).
 * - backlog: bytes written to the sink and not yet taken by the network.
 */
typedef struct mql_sink_ops {
    bool (*ready)(void *ctx);
    bool (*publish)(void *ctx, mql_msg *msg, uint8_t qos, bool retain, bool dup, uint16_t pid,
                    const uint32_t *ids, uint8_t n_ids);
    void (*ack)(void *ctx, uint8_t type, uint16_t pid, uint8_t reason);
    size_t (*backlog)(void *ctx);
} mql_sink_ops;

/* What mql_session_deliver did with a message. */
typedef enum mql_delivery {
    MQL_DELIVERY_SENT,     /* written to the sink (or discarded as too large for the peer,
                              which counts as delivered [MQTT-3.1.2-25]) */
    MQL_DELIVERY_QUEUED,   /* kept in the queue until the sink has room or comes back */
    MQL_DELIVERY_DROPPED,  /* not delivered, nothing to tell the publisher: QoS 0 for an
                              offline session or over the backlog, read ACL, out of memory,
                              queue full of a session that ends with its connection */
    MQL_DELIVERY_REFUSED,  /* queue full of a session that outlives its connection (or a
                              bridge's): MQTT 5 publishers hear 0x97 Quota exceeded */
    MQL_DELIVERY_NO_STORE, /* QoS 1/2 for a stored session while the store is full: refused
                              (0x97 too); the caller counts and logs it */
} mql_delivery;

typedef struct mql_session {
    char *client_id; /* NUL-terminated */
    uint32_t client_id_len;
    uint32_t hval;
    struct mql_session *hnext;       /* ClientID table chain */
    struct mql_session *next, *prev; /* all sessions */
    /* the attached sink (see mql_session_attach), or sink == NULL */
    const mql_sink_ops *sink;
    void *sink_ctx;
    uint16_t sink_receive_max; /* the peer's Receive Maximum [MQTT-3.3.4-9] */
    uint8_t sink_max_qos;      /* the peer's Maximum QoS [MQTT-3.2.2-11] */
    /* limits: the broker's settings, or the bridge's for its local session */
    uint32_t max_inflight; /* 0: no limit (65535) */
    uint32_t max_queued_messages;
    uint64_t max_queued_bytes;
    const char *bridge_name; /* a bridge's local session: its name (for messages) */
    uint8_t version;
    uint32_t expiry;          /* Session Expiry Interval, seconds; MQL_SESSION_NEVER */
    uint64_t disconnected_at; /* mql_now_ms() when the last connection ended */
    mql_sub *subs;            /* via snext/sprev */
    out_list inflight;        /* in send order */
    out_list queue;
    uint64_t queued_bytes; /* payload bytes in `queue` */
    uint16_t next_pid;
    /* Inbound QoS 2 packet ids awaiting PUBREL: the first MQL_QOS2_SMALL inline, beyond that
     * all of them in a bitmap of the whole packet id space. The table is bounded by the id
     * space (at most 65,535 ids, 8 KiB), which is the only bound MQTT 3.1.1 has (MQTT 5 adds
     * Receive Maximum), and every lookup is O(1): a client flooding QoS 2 without PUBREL
     * cannot make each of its PUBLISHes scan a long list under the broker lock. */
    uint16_t qos2_small[MQL_QOS2_SMALL];
    uint64_t *qos2_bits; /* 65536 bits, or NULL while the ids fit in qos2_small */
    uint32_t n_qos2_in;
    bool stored;       /* the session (and all it holds) is mirrored in the store */
    bool was_online;   /* restored from the store: it had a connection when the broker died */
    char *username;    /* of its last connection, for read ACL checks while offline */
    uint64_t next_seq; /* for out_msg.seq */
    mql_msg *will;     /* v5 delayed will, published at will_at or session end */
    uint64_t will_at;
    bool queue_full_logged;
    /* takeover diagnostics */
    uint32_t takeovers;
    uint64_t takeover_window;
    bool takeover_warned;
    struct mql_bridge *bridge; /* the bridge whose local side this session is, or NULL */
    uint32_t queued_qos0;      /* QoS 0 messages in `queue` (only bridges queue them) */
    /* routing scratch (valid only during one route under broker->lock) */
    uint64_t route_stamp;
    uint32_t route_idx;
} mql_session;

/* mql_session_alloc: a new empty session for ClientID id (len bytes, copied), with no
 * limits (the caller sets max_inflight, max_queued_*) and in no table (see
 * mql_clients_new). The caller owns it until mql_session_free. NULL when out of memory. */
mql_session *mql_session_alloc(const uint8_t *id, uint32_t len);
/* mql_session_take_will: the session's delayed will (the caller owns the reference), or
 * NULL; the session has none afterwards. */
mql_msg *mql_session_take_will(mql_session *s);
/* mql_session_unsubscribe_all: remove all of the session's subscriptions from the topic
 * tree (the first step of ending it: see mql_clients_end). */
void mql_session_unsubscribe_all(struct mql_core *core, mql_session *s);
/* mql_session_free: delete s's rows from the store, drop what it still holds (a will that
 * was not taken, subscriptions, queued and in-flight messages) and free s. The sink must be
 * detached and s out of the ClientID table. Wills and shared-subscription messages are the
 * caller's business first (see mql_clients_end). */
void mql_session_free(struct mql_core *core, mql_session *s);
/* mql_session_link_sub: keep a new subscription in the session's list. */
void mql_session_link_sub(mql_session *s, mql_sub *sub);
/* mql_session_unlink_sub: take sub out of the session's list (before mql_topics_remove). */
void mql_session_unlink_sub(mql_session *s, mql_sub *sub);
/* mql_session_deliver: one message for s at this QoS, retain flag, Subscription Identifiers
 * (copied) and shared group (referenced while the message is owed), or share NULL. It is
 * sent, queued or dropped by the session's rules; msg is referenced if kept. Returns what
 * happened (see mql_delivery). OUT: *wait is set to true when it queued a store operation
 * that an acknowledgement must wait for (mirror.h), and left alone otherwise. */
MQL_MUST_CHECK mql_delivery mql_session_deliver(struct mql_core *core, mql_session *s, mql_msg *msg,
                                                uint8_t qos, bool retain, const uint32_t *ids,
                                                uint8_t n_ids, mql_share *share, bool *wait);
/* mql_session_pump: move queued messages into the window while the sink has room. */
void mql_session_pump(struct mql_core *core, mql_session *s);
/* mql_session_resume: after attaching: resend the in-flight window (PUBLISH with DUP 1,
 * PUBREL) in order, then pump the queue. */
void mql_session_resume(struct mql_core *core, mql_session *s);
/* mql_session_attach: from now on s delivers through ops/ctx, with the peer's Receive
 * Maximum and Maximum QoS. The caller keeps ctx alive until mql_session_detach. */
void mql_session_attach(mql_session *s, const mql_sink_ops *ops, void *ctx, uint16_t receive_max,
                        uint8_t max_qos);
/* mql_session_detach: nothing is attached any more; messages are queued from now on. */
void mql_session_detach(mql_session *s);
/* mql_session_attached: is a sink attached (ready or not)? */
bool mql_session_attached(const mql_session *s);
/* mql_session_online: is a sink attached and ready to take packets? */
bool mql_session_online(const mql_session *s);
/* mql_session_inflight_find: the in-flight message with packet id pid, or NULL. */
out_msg *mql_session_inflight_find(mql_session *s, uint16_t pid);
/* mql_session_inflight_done: o (in flight) was acknowledged: free it and pump the queue. */
void mql_session_inflight_done(struct mql_core *core, mql_session *s, out_msg *o);
/* mql_session_qos2_has: is inbound QoS 2 id pid awaiting PUBREL (see qos2_small)? */
bool mql_session_qos2_has(const mql_session *s, uint16_t pid);
/* mql_session_qos2_add: add pid (adding one that is there does nothing). Returns MQL_OK, or
 * MQL_E_NOMEM when the bitmap cannot be made. */
MQL_MUST_CHECK mql_err mql_session_qos2_add(mql_session *s, uint16_t pid);
/* mql_session_qos2_remove: remove pid; false if it was not there. */
bool mql_session_qos2_remove(mql_session *s, uint16_t pid);
/* mql_session_qos2_each: call fn(arg, pid) for each id, in no particular order. */
void mql_session_qos2_each(const mql_session *s, void (*fn)(void *arg, uint16_t pid), void *arg);
/* mql_session_mirror: the session's row in the store (mirror.h) after a change of its
 * expiry, version or connection: a session that outlives its connection is written (the
 * first time with everything it holds), one that does not is deleted. The session's other
 * changes are mirrored by the functions that make them. Returns whether an acknowledgement
 * must wait for the store's commit (see mirror.h); likewise the mql_session_mirror_*. */
bool mql_session_mirror(struct mql_core *core, mql_session *s);
/* mql_session_mirror_sub: a new or changed subscription of s. */
bool mql_session_mirror_sub(struct mql_core *core, mql_session *s, const mql_sub *sub);
/* mql_session_mirror_sub_del: s no longer subscribes to filter. */
bool mql_session_mirror_sub_del(struct mql_core *core, mql_session *s, const char *filter);
/* mql_session_mirror_qos2: inbound QoS 2 id pid was added (add) or released. */
bool mql_session_mirror_qos2(struct mql_core *core, mql_session *s, uint16_t pid, bool add);
/* mql_session_mirror_out_state: in-flight o changed state (PUBREC received: PUBREL sent). */
bool mql_session_mirror_out_state(struct mql_core *core, mql_session *s, out_msg *o);
/* mql_session_purge_expired: drop queued messages of s whose Message Expiry Interval has
 * passed at `now` [MQTT-3.3.2-5]; at most *budget messages are looked at (IN/OUT: what is
 * left of the budget). */
void mql_session_purge_expired(struct mql_core *core, mql_session *s, uint64_t now,
                               uint32_t *budget);

#endif
