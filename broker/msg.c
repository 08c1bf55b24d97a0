/*
 * msg.c - construction and release of shared application messages.
 *
 * One malloc per message holds the struct, topic, payload and forwarded property bytes;
 * every subscriber that receives it holds a reference instead of a copy.
 *
 * Pure code (no I/O, no logging, no nng, no SQLite). Locking: none; the reference count is
 * atomic, so the last holder may drop a message from any thread, and the content never
 * changes after mql_msg_new. Performance: one allocation and one copy per published message,
 * whatever the number of subscribers.
 */
#include "msg.h"

#include <stdlib.h>
#include <string.h>

/* The properties a server forwards unchanged to subscribers [MQTT-3.3.2-*]. */
#define FORWARDED                                                                                  \
    (MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT) | MQL_PBIT(MQL_PROP_CONTENT_TYPE) |                         \
     MQL_PBIT(MQL_PROP_RESPONSE_TOPIC) | MQL_PBIT(MQL_PROP_CORRELATION_DATA))

static mql_bytes put(uint8_t **cursor, mql_bytes b)
{
    mql_bytes out = {.p = *cursor, .len = b.len};
    if (b.len)
        memcpy(*cursor, b.p, b.len);
    *cursor += b.len;
    return out;
}

mql_msg *mql_msg_new(mql_bytes topic, mql_bytes payload, uint8_t qos, bool retain,
                     const mql_props *props, uint64_t now_ms)
{
    size_t user_len = 0;
    if (props != NULL && props->n_user > 0) {
        uint32_t pos = 0;
        mql_bytes k, v;
        while (mql_props_next_user(props, &pos, &k, &v))
            user_len += 5 + (size_t)k.len + v.len;
    }
    size_t extra = (size_t)topic.len + payload.len + user_len;
    if (props != NULL)
        extra += (size_t)props->content_type.len + props->response_topic.len +
                 props->correlation_data.len;
    mql_msg *m = malloc(sizeof(*m) + extra);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof(*m));
    atomic_init(&m->refs, 1);
    m->qos = qos;
    m->retain = retain;
    uint8_t *cur = (uint8_t *)(m + 1);
    m->topic = put(&cur, topic);
    m->payload = put(&cur, payload);
    if (props != NULL) {
        m->props.present = props->present & FORWARDED;
        m->props.payload_format = props->payload_format;
        m->props.content_type = put(&cur, props->content_type);
        m->props.response_topic = put(&cur, props->response_topic);
        m->props.correlation_data = put(&cur, props->correlation_data);
        if (props->present & MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY))
            m->expiry_at = now_ms + (uint64_t)props->message_expiry * 1000u;
        if (user_len > 0) {
            uint32_t pos = 0;
            mql_bytes k, v;
            m->props.user_raw.p = cur;
            while (mql_props_next_user(props, &pos, &k, &v))
                cur += mql_user_prop_encode(cur, user_len, k, v);
            m->props.user_raw.len = (uint32_t)user_len;
            m->props.present |= MQL_PBIT(MQL_PROP_USER);
        }
    }
    return m;
}

void mql_msg_unref(mql_msg *m)
{
    if (m != NULL && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}
