/*
 * session.c - one session: subscriptions owned by it, the QoS 1/2 in-flight window and
 * offline queue, inbound QoS 2 packet ids, what of it is mirrored in the store, and the
 * sink it delivers through (session.h).
 *
 * A session outlives its connections: subscriptions point at it, and messages are queued
 * on it while nothing is attached [MQTT-3.1.2-4] [v3.1.1 MQTT-3.1.2-5]. When it ends (a
 * clean start, its expiry interval, or at once with interval 0 [MQTT-3.1.2-23]) is decided
 * in clients.c, which also keeps the ClientID table. Delivery never calls up: it sends
 * through the sink and returns what it did (mql_delivery).
 *
 * Locking: every function here runs under broker->lock (core.h) and takes none.
 * Performance assumption: in-flight windows are small (max_inflight_messages, default 20),
 * so looking a packet id up in the window is a short linear scan.
 */
#include <stdlib.h>
#include <string.h>

#include "session.h"

#include "core.h"
#include "mirror.h"
#include "platform/clock.h"
#include "platform/log.h"

mql_session *mql_session_alloc(const uint8_t *id, uint32_t len)
{
    mql_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->client_id = malloc((size_t)len + 1);
    if (s->client_id == NULL) {
        free(s);
        return NULL;
    }
    memcpy(s->client_id, id, len);
    s->client_id[len] = '\0';
    s->client_id_len = len;
    s->next_pid = 1;
    return s;
}

void mql_session_link_sub(mql_session *s, mql_sub *sub)
{
    sub->sprev = NULL;
    sub->snext = s->subs;
    if (s->subs)
        s->subs->sprev = sub;
    s->subs = sub;
}

void mql_session_unlink_sub(mql_session *s, mql_sub *sub)
{
    if (sub->sprev)
        sub->sprev->snext = sub->snext;
    else
        s->subs = sub->snext;
    if (sub->snext)
        sub->snext->sprev = sub->sprev;
}

void mql_out_list_append(out_list *l, out_msg *o)
{
    o->next = NULL;
    o->prev = l->tail;
    if (l->tail)
        l->tail->next = o;
    else
        l->head = o;
    l->tail = o;
    l->count++;
}

static void out_unlink(out_list *l, out_msg *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        l->head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        l->tail = o->prev;
    l->count--;
}

static void out_free(out_msg *o)
{
    mql_msg_unref(o->msg);
    if (o->share != NULL)
        mql_share_unref(o->share);
    free(o);
}

/* ---- mirroring in the store (mirror.h): what of a session is kept, and when ---- */

static bool mirror_out(mql_core *core, mql_session *s, out_msg *o)
{
    if (!s->stored)
        return false;
    mql_store_out row = {
        .client_id = s->client_id,
        .seq = o->seq,
        .qos = o->qos,
        .retain = o->retain,
        .state = o->state,
        .packet_id = o->packet_id,
        .sub_id = o->n_ids ? o->ids[0] : 0,
    };
    bool wait = mql_mirror_out_put(core, &row, o->msg);
    o->stored = core->store != NULL;
    return wait;
}

static bool mirror_out_del(mql_core *core, mql_session *s, out_msg *o)
{
    if (!o->stored)
        return false;
    o->stored = false;
    return mql_mirror_out_del(core, s->client_id, o->seq);
}

bool mql_session_mirror_out_state(mql_core *core, mql_session *s, out_msg *o)
{
    if (!o->stored)
        return false;
    return mql_mirror_out_state(core, s->client_id, o->seq, o->state, o->packet_id);
}

static uint8_t sub_options(const mql_sub *sub)
{
    return (uint8_t)((sub->no_local ? 1 : 0) | (sub->retain_as_published ? 2 : 0) |
                     (sub->retain_handling << 2));
}

bool mql_session_mirror_sub(mql_core *core, mql_session *s, const mql_sub *sub)
{
    if (!s->stored)
        return false;
    mql_store_sub row = {
        .client_id = s->client_id,
        .filter = sub->filter,
        .qos = sub->qos,
        .options = sub_options(sub),
        .sub_id = sub->sub_id,
    };
    return mql_mirror_sub_put(core, &row);
}

bool mql_session_mirror_sub_del(mql_core *core, mql_session *s, const char *filter)
{
    if (!s->stored)
        return false;
    return mql_mirror_sub_del(core, s->client_id, filter);
}

bool mql_session_mirror_qos2(mql_core *core, mql_session *s, uint16_t pid, bool add)
{
    if (!s->stored)
        return false;
    return mql_mirror_qos2(core, s->client_id, pid, add);
}

/* The session no longer outlives its connection (or ends): its rows go. */
static bool unmirror(mql_core *core, mql_session *s)
{
    if (core->store == NULL || !s->stored)
        return false;
    s->stored = false;
    for (out_msg *o = s->inflight.head; o != NULL; o = o->next)
        o->stored = false;
    for (out_msg *o = s->queue.head; o != NULL; o = o->next)
        o->stored = false;
    return mql_mirror_session_del(core, s->client_id);
}

struct qos2_put_ctx {
    mql_core *core;
    mql_session *s;
};

static void qos2_put_cb(void *arg, uint16_t pid)
{
    struct qos2_put_ctx *qc = arg;
    (void)mql_session_mirror_qos2(qc->core, qc->s, pid, true);
}

bool mql_session_mirror(mql_core *core, mql_session *s)
{
    if (core->store == NULL)
        return false;
    if (s->expiry == 0)
        return unmirror(core, s); /* no longer outlives its connection */
    bool wait = mql_mirror_session_put(core, s->client_id, s->version, s->expiry, s->sink != NULL,
                                       s->disconnected_at);
    if (s->stored)
        return wait;
    /* First time in the store: write everything the session already holds. */
    s->stored = true;
    for (mql_sub *sub = s->subs; sub != NULL; sub = sub->snext)
        wait = mql_session_mirror_sub(core, s, sub) || wait;
    for (out_msg *o = s->inflight.head; o != NULL; o = o->next)
        wait = mirror_out(core, s, o) || wait;
    for (out_msg *o = s->queue.head; o != NULL; o = o->next)
        wait = mirror_out(core, s, o) || wait;
    struct qos2_put_ctx qc = {.core = core, .s = s};
    mql_session_qos2_each(s, qos2_put_cb, &qc);
    return wait;
}

static void out_list_clear(out_list *l)
{
    out_msg *o = l->head;
    while (o != NULL) {
        out_msg *next = o->next;
        out_free(o);
        o = next;
    }
    l->head = l->tail = NULL;
    l->count = 0;
}

mql_msg *mql_session_take_will(mql_session *s)
{
    mql_msg *will = s->will;
    s->will = NULL;
    return will;
}

void mql_session_unsubscribe_all(mql_core *core, mql_session *s)
{
    mql_sub *sub = s->subs;
    while (sub != NULL) {
        mql_sub *next = sub->snext;
        mql_topics_remove(core->topics, sub);
        sub = next;
    }
    s->subs = NULL;
}

void mql_session_free(mql_core *core, mql_session *s)
{
    (void)unmirror(core, s);
    free(s->username);
    mql_msg_unref(s->will);
    s->will = NULL;
    mql_session_unsubscribe_all(core, s);
    out_list_clear(&s->inflight);
    out_list_clear(&s->queue);
    s->queued_qos0 = 0;
    free(s->qos2_bits);
    free(s->client_id);
    free(s);
}

/* The number of QoS 1/2 PUBLISH packets we may have in flight to the session's client. */
static uint32_t window(const mql_session *s)
{
    uint32_t w = s->max_inflight ? s->max_inflight : 65535u;
    if (s->sink != NULL && s->sink_receive_max < w)
        w = s->sink_receive_max; /* [MQTT-3.3.4-9] */
    return w;
}

static bool pid_in_use(const mql_session *s, uint16_t pid)
{
    for (const out_msg *o = s->inflight.head; o != NULL; o = o->next)
        if (o->packet_id == pid)
            return true;
    return false;
}

static uint16_t next_pid(mql_session *s)
{
    for (;;) {
        uint16_t pid = s->next_pid++;
        if (s->next_pid == 0)
            s->next_pid = 1;
        if (!pid_in_use(s, pid)) /* [MQTT-2.2.1-3] */
            return pid;
    }
}

static bool connected(const mql_session *s)
{
    return s->sink != NULL && s->sink->ready(s->sink_ctx);
}

void mql_session_attach(mql_session *s, const mql_sink_ops *ops, void *ctx, uint16_t receive_max,
                        uint8_t max_qos)
{
    s->sink = ops;
    s->sink_ctx = ctx;
    s->sink_receive_max = receive_max;
    s->sink_max_qos = max_qos;
}

void mql_session_detach(mql_session *s)
{
    s->sink = NULL;
    s->sink_ctx = NULL;
}

bool mql_session_attached(const mql_session *s)
{
    return s->sink != NULL;
}

bool mql_session_online(const mql_session *s)
{
    return connected(s);
}

/* Put o into the in-flight window and send it. A message too large for the client is
 * discarded as if delivered [MQTT-3.1.2-25]: then o is freed and false returned. */
static bool send_first(mql_core *core, mql_session *s, out_msg *o)
{
    if (o->qos > s->sink_max_qos && o->qos == 2)
        o->qos = 1; /* the remote's Maximum QoS [MQTT-3.2.2-11]; QoS 1 still loses nothing */
    o->packet_id = next_pid(s);
    o->state = OUT_PUBLISH_SENT;
    mql_out_list_append(&s->inflight, o);
    if (!s->sink->publish(s->sink_ctx, o->msg, o->qos, o->retain, o->dup, o->packet_id, o->ids,
                          o->n_ids)) {
        out_unlink(&s->inflight, o);
        (void)mirror_out_del(core, s, o);
        out_free(o);
        return false;
    }
    return true;
}

/* Take o out of the session's queue. */
static void queue_take(mql_session *s, out_msg *o)
{
    out_unlink(&s->queue, o);
    s->queued_bytes -= o->msg->payload.len;
    if (o->qos == 0)
        s->queued_qos0--;
}

void mql_session_pump(mql_core *core, mql_session *s)
{
    uint64_t now = mql_now_ms();
    while (s->queue.head != NULL && connected(s)) {
        out_msg *o = s->queue.head;
        if (o->qos == 0) {
            /* queued QoS 0 (a bridge's backlog): no window, but a bounded socket backlog;
             * the bridge tick pumps again */
            if (s->sink->backlog(s->sink_ctx) > MQL_QOS0_BACKLOG_MAX)
                break;
            queue_take(s, o);
            if (!mql_msg_expired(o->msg, now))
                (void)s->sink->publish(s->sink_ctx, o->msg, 0, o->retain, false, 0, o->ids,
                                       o->n_ids);
            (void)mirror_out_del(core, s, o);
            out_free(o);
            continue;
        }
        if (s->inflight.count >= window(s))
            break;
        queue_take(s, o);
        if (mql_msg_expired(o->msg, now)) { /* [MQTT-3.3.2-5] */
            (void)mirror_out_del(core, s, o);
            out_free(o);
            continue;
        }
        /* A bridge's QoS 1 message need not be recorded as sent: after a restart every
         * restored message of a bridge goes out again with DUP 1 anyway (bridge.c), and
         * skipping the update saves a third of the store's work while a backlog drains. */
        if (send_first(core, s, o) && !(s->bridge != NULL && o->qos == 1))
            (void)mql_session_mirror_out_state(core, s, o);
    }
    if (s->queue.count == 0)
        s->queue_full_logged = false;
}

/* Is there room in the session's queue for one more message of `bytes` payload bytes?
 * A bridge makes room by dropping its oldest queued QoS 0 messages first (*wait is set when
 * that deletes rows an ack must wait for). */
static bool queue_room(mql_core *core, mql_session *s, uint32_t bytes, bool *wait)
{
    uint32_t max_msgs = s->max_queued_messages;
    uint64_t max_bytes = s->max_queued_bytes;
    for (;;) {
        bool full = (max_msgs != 0 && s->queue.count >= max_msgs) ||
                    (max_bytes != 0 && s->queued_bytes + bytes > max_bytes);
        if (!full)
            return true;
        if (s->queued_qos0 == 0)
            return false;
        out_msg *o = s->queue.head;
        while (o != NULL && o->qos != 0)
            o = o->next;
        if (o == NULL)
            return false;
        queue_take(s, o);
        *wait = mirror_out_del(core, s, o) || *wait;
        out_free(o);
        core->stats.msgs_dropped++;
    }
}

mql_delivery mql_session_deliver(mql_core *core, mql_session *s, mql_msg *msg, uint8_t qos,
                                 bool retain, const uint32_t *ids, uint8_t n_ids, mql_share *share,
                                 bool *wait)
{
    if (core->acl != NULL && !mql_acl_can_read(core->acl, s->username, s->client_id, msg->topic))
        return MQL_DELIVERY_DROPPED; /* the ACL may have changed since the subscription was made */
    /* a bridge queues QoS 0 too while its uplink is down or draining (in order) */
    bool bridge_queues = s->bridge != NULL && (!connected(s) || s->queue.count > 0);
    if (qos == 0 && !bridge_queues) {
        if (!connected(s)) {
            return MQL_DELIVERY_DROPPED; /* QoS 0 is not queued for offline sessions */
        }
        if (s->sink->backlog(s->sink_ctx) > MQL_QOS0_BACKLOG_MAX) {
            core->stats.msgs_dropped++;
            return MQL_DELIVERY_DROPPED;
        }
        (void)s->sink->publish(s->sink_ctx, msg, 0, retain, false, 0, ids, n_ids);
        return MQL_DELIVERY_SENT;
    }
    if (s->stored && core->store_full) {
        /* store_max_bytes, or a store that cannot commit: no new QoS 1/2 message for a
         * persistent session (it could not be kept, and would only pile up in memory) */
        return MQL_DELIVERY_NO_STORE;
    }
    bool direct = qos > 0 && connected(s) && s->queue.count == 0 && s->inflight.count < window(s);
    if (!direct && !queue_room(core, s, msg->payload.len, wait)) {
        core->stats.msgs_dropped++;
        /* a session that outlives its connection, or a bridge, refuses QoS 1/2 it cannot
         * keep: MQTT 5 publishers hear it as 0x97 Quota exceeded */
        bool refuse = qos > 0 && (s->expiry != 0 || s->bridge != NULL);
        if (!s->queue_full_logged) {
            s->queue_full_logged = true;
            if (s->bridge != NULL)
                mql_warning("bridge.queue_full",
                            "bridge \"%s\": queue full (%u messages, %llu bytes; "
                            "bridge_queue_max_messages / bridge_queue_max_bytes), refusing new "
                            "messages until it drains",
                            s->bridge_name, s->queue.count, (unsigned long long)s->queued_bytes);
            else
                mql_warning("session.queue_full",
                            "client \"%s\": queue full (%u messages, %llu bytes; "
                            "max_queued_messages / max_queued_bytes), dropping new messages "
                            "until it drains",
                            s->client_id, s->queue.count, (unsigned long long)s->queued_bytes);
        }
        return refuse ? MQL_DELIVERY_REFUSED : MQL_DELIVERY_DROPPED;
    }
    out_msg *o = malloc(sizeof(*o) + (size_t)n_ids * sizeof(uint32_t));
    if (o == NULL) {
        core->stats.msgs_dropped++;
        return MQL_DELIVERY_DROPPED;
    }
    o->msg = mql_msg_ref(msg);
    o->share = share;
    if (share != NULL)
        mql_share_ref(share);
    o->qos = qos;
    o->retain = retain;
    o->dup = false;
    o->packet_id = 0;
    o->state = OUT_QUEUED;
    o->stored = false;
    o->seq = s->next_seq++;
    o->n_ids = n_ids;
    if (n_ids)
        memcpy(o->ids, ids, (size_t)n_ids * sizeof(uint32_t));
    if (direct) {
        if (!send_first(core, s, o))
            return MQL_DELIVERY_SENT;
    } else {
        mql_out_list_append(&s->queue, o);
        s->queued_bytes += msg->payload.len;
        if (qos == 0)
            s->queued_qos0++;
    }
    *wait = mirror_out(core, s, o) || *wait;
    return direct ? MQL_DELIVERY_SENT : MQL_DELIVERY_QUEUED;
}

void mql_session_resume(mql_core *core, mql_session *s)
{
    /* Re-send unacknowledged PUBLISH (DUP=1) and PUBREL in their original order
     * [MQTT-4.4.0-1] [v3.1.1 MQTT-4.4.0-1]. */
    for (out_msg *o = s->inflight.head; o != NULL; o = o->next) {
        if (o->state == OUT_PUBREL_SENT)
            s->sink->ack(s->sink_ctx, MQL_PUBREL, o->packet_id, 0);
        else
            (void)s->sink->publish(s->sink_ctx, o->msg, o->qos, o->retain, true, o->packet_id,
                                   o->ids, o->n_ids);
    }
    mql_session_pump(core, s);
}

out_msg *mql_session_inflight_find(mql_session *s, uint16_t pid)
{
    for (out_msg *o = s->inflight.head; o != NULL; o = o->next)
        if (o->packet_id == pid)
            return o;
    return NULL;
}

void mql_session_inflight_done(mql_core *core, mql_session *s, out_msg *o)
{
    out_unlink(&s->inflight, o);
    (void)mirror_out_del(core, s, o);
    out_free(o);
    mql_session_pump(core, s);
}

#define QOS2_WORDS (65536u / 64u)

static bool qos2_bit(const uint64_t *m, uint16_t pid)
{
    return (m[pid >> 6] >> (pid & 63u)) & 1u;
}

bool mql_session_qos2_has(const mql_session *s, uint16_t pid)
{
    if (s->qos2_bits != NULL)
        return qos2_bit(s->qos2_bits, pid);
    for (uint32_t i = 0; i < s->n_qos2_in; i++)
        if (s->qos2_small[i] == pid)
            return true;
    return false;
}

mql_err mql_session_qos2_add(mql_session *s, uint16_t pid)
{
    if (mql_session_qos2_has(s, pid))
        return MQL_OK;
    if (s->qos2_bits == NULL && s->n_qos2_in < MQL_QOS2_SMALL) {
        s->qos2_small[s->n_qos2_in++] = pid;
        return MQL_OK;
    }
    if (s->qos2_bits == NULL) { /* more than a few in flight: move them into a bitmap */
        uint64_t *m = calloc(QOS2_WORDS, sizeof(*m));
        if (m == NULL)
            return MQL_E_NOMEM;
        for (uint32_t i = 0; i < s->n_qos2_in; i++)
            m[s->qos2_small[i] >> 6] |= 1ull << (s->qos2_small[i] & 63u);
        s->qos2_bits = m;
    }
    s->qos2_bits[pid >> 6] |= 1ull << (pid & 63u);
    s->n_qos2_in++;
    return MQL_OK;
}

bool mql_session_qos2_remove(mql_session *s, uint16_t pid)
{
    if (s->qos2_bits != NULL) {
        if (!qos2_bit(s->qos2_bits, pid))
            return false;
        s->qos2_bits[pid >> 6] &= ~(1ull << (pid & 63u));
        if (--s->n_qos2_in == 0) { /* back to the inline table: idle sessions cost nothing */
            free(s->qos2_bits);
            s->qos2_bits = NULL;
        }
        return true;
    }
    for (uint32_t i = 0; i < s->n_qos2_in; i++) {
        if (s->qos2_small[i] == pid) {
            s->qos2_small[i] = s->qos2_small[--s->n_qos2_in];
            return true;
        }
    }
    return false;
}

void mql_session_qos2_each(const mql_session *s, void (*fn)(void *arg, uint16_t pid), void *arg)
{
    if (s->qos2_bits == NULL) {
        for (uint32_t i = 0; i < s->n_qos2_in; i++)
            fn(arg, s->qos2_small[i]);
        return;
    }
    for (uint32_t w = 0; w < QOS2_WORDS; w++)
        for (uint64_t bits = s->qos2_bits[w]; bits != 0; bits &= bits - 1)
            fn(arg, (uint16_t)(w * 64u + (uint32_t)__builtin_ctzll(bits)));
}

void mql_session_purge_expired(mql_core *core, mql_session *s, uint64_t now, uint32_t *budget)
{
    out_msg *o = s->queue.head;
    while (o != NULL && *budget > 0) {
        out_msg *next = o->next;
        (*budget)--;
        if (mql_msg_expired(o->msg, now)) {
            queue_take(s, o);
            (void)mirror_out_del(core, s, o);
            out_free(o);
        }
        o = next;
    }
}
