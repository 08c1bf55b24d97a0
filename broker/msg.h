/*
 * msg.h - an application message as the broker keeps it: topic, payload, QoS, retain, and
 * the MQTT 5 properties that travel with it, in one allocation shared by reference count
 * between every session queue, in-flight window and the retained tree.
 *
 * Locking: reference counts are atomic, so a message may be released from any thread.
 * The content never changes after mql_msg_new.
 */
#ifndef MQL_MSG_H
#define MQL_MSG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"

typedef struct mql_msg {
    atomic_uint refs;
    uint8_t qos;
    bool retain;
    uint64_t expiry_at; /* monotonic ms when the Message Expiry Interval ends; 0 = never */
    uint64_t store_id;  /* id of its body in the store; 0 = not stored (broker->lock) */
    /* Forwarded properties: payload format, content type, response topic, correlation data,
     * user properties (user_raw). Their bytes live in this allocation. */
    mql_props props;
    mql_bytes topic;
    mql_bytes payload;
} mql_msg;

/*
 * Make a message from a decoded PUBLISH (or will). Copies topic, payload and the
 * forwardable properties of `props` (may be NULL); expiry_at is computed from the Message
 * Expiry Interval against now_ms. Returns NULL when out of memory. The caller owns one
 * reference.
 */
mql_msg *mql_msg_new(mql_bytes topic, mql_bytes payload, uint8_t qos, bool retain,
                     const mql_props *props, uint64_t now_ms);

static inline mql_msg *mql_msg_ref(mql_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

/* Drop one reference; frees the message with the last one. NULL is ignored. */
void mql_msg_unref(mql_msg *m);

/* True when the message's expiry interval has passed at now_ms [MQTT-3.3.2-5]. */
static inline bool mql_msg_expired(const mql_msg *m, uint64_t now_ms)
{
    return m->expiry_at != 0 && now_ms >= m->expiry_at;
}

#endif
