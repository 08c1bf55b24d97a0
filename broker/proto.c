/*
 * proto.c - one MQTT endpoint's mechanics, shared by the server side (conn.c) and the
 * client side of a bridge (bridge.c): the frame loop, encoding and sending within the
 * peer's Maximum Packet Size, topic aliases both ways, acknowledgements held until the
 * store commits, and the one close transition.
 *
 * Frames are scanned and decoded under the core lock, in mql_proto_data, and handed to the
 * role one by one (only conn.c's password precheck decodes a first CONNECT before taking
 * the lock). Protocol violations: MQTT 3.1.1 closes the network connection
 * [v3.1.1 MQTT-4.8.0-1]; MQTT 5 first sends CONNACK (before CONNECT is accepted) or
 * DISCONNECT with the reason code [MQTT-4.13.1-1], then closes.
 *
 * Locking: all under broker->lock; mql_proto_data and the store barrier callback take it.
 * Performance assumption: packets up to 512 bytes are encoded on the stack; larger ones
 * take one allocation each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#include "config.h"
#include "core.h"
#include "router.h"
#include "session.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "storage/store.h"

const char *mql_proto_client_id(const mql_conn *c)
{
    return c->session ? c->session->client_id : "";
}

enum mql_send_result mql_proto_send_packet(mql_conn *c, const mql_packet *pkt)
{
    uint8_t stack[512];
    uint8_t version = c->version ? c->version : MQL_V311;
    size_t n = mql_encode(stack, sizeof(stack), pkt, version);
    if (n == 0)
        return MQL_SEND_FAILED;
    if (c->client_max_packet != 0 && n > c->client_max_packet)
        return MQL_SEND_TOO_LARGE;
    uint8_t *buf = stack;
    if (n > sizeof(stack)) {
        buf = malloc(n);
        if (buf == NULL)
            return MQL_SEND_FAILED;
        (void)mql_encode(buf, n, pkt, version);
    }
    bool ok = mql_link_send(c->link, buf, n) == MQL_OK;
    if (ok)
        c->core->stats.bytes_sent += n;
    if (buf != stack)
        free(buf);
    return ok ? MQL_SEND_OK : MQL_SEND_FAILED;
}

void mql_proto_send_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = type;
    p.u.ack.packet_id = pid;
    p.u.ack.reason = reason;
    (void)mql_proto_send_packet(c, &p);
}

bool mql_proto_send_publish(mql_conn *c, mql_msg *msg, mql_bytes topic, uint8_t qos, bool retain,
                            bool dup, uint16_t pid, const uint32_t *ids, uint8_t n_ids)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_PUBLISH;
    mql_publish *pub = &p.u.publish;
    pub->qos = qos;
    pub->dup = dup;
    pub->retain = retain;
    pub->topic = topic;
    pub->packet_id = pid;
    pub->payload = msg->payload;
    if (c->version == MQL_V5) {
        pub->props = msg->props;
        if (msg->expiry_at != 0) {
            /* the remaining lifetime, not the original interval [MQTT-3.3.2-6] */
            uint64_t now = mql_now_ms();
            uint64_t left = msg->expiry_at > now ? (msg->expiry_at - now + 999) / 1000 : 0;
            pub->props.present |= MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY);
            pub->props.message_expiry = (uint32_t)left;
        }
        if (n_ids > 0) {
            pub->props.present |= MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID);
            pub->props.sub_ids = ids;
            pub->props.n_sub_ids = n_ids;
            pub->props.sub_id = ids[0];
        }
    }
    uint16_t alias = 0;
    bool new_alias = false;
    if (c->out_alias_max > 0) {
        for (uint16_t i = 1; i <= c->out_alias_used; i++) {
            mql_bytes a = c->out_aliases[i];
            if (a.len == topic.len && memcmp(a.p, topic.p, a.len) == 0) {
                alias = i;
                pub->topic.len = 0; /* the alias stands for the topic [MQTT-3.3.2-12] */
                break;
            }
        }
        if (alias == 0 && c->out_alias_used < c->out_alias_max) {
            alias = (uint16_t)(c->out_alias_used + 1);
            new_alias = true; /* sent with its topic, which sets the alias */
        }
        if (alias != 0) {
            pub->props.present |= MQL_PBIT(MQL_PROP_TOPIC_ALIAS);
            pub->props.topic_alias = alias;
        }
    }
    enum mql_send_result r = mql_proto_send_packet(c, &p);
    if (r == MQL_SEND_OK && new_alias) {
        uint8_t *copy = malloc(topic.len);
        if (copy != NULL) {
            memcpy(copy, topic.p, topic.len);
            c->out_aliases[alias] = (mql_bytes){.p = copy, .len = topic.len};
            c->out_alias_used = alias;
        } else {
            c->out_alias_max = 0; /* cannot remember it: stop using aliases */
        }
    }
    if (r == MQL_SEND_OK) {
        c->core->stats.msgs_sent++;
    } else if (r == MQL_SEND_TOO_LARGE) {
        c->core->stats.msgs_dropped++;
        mql_info("client.too_large",
                 "client \"%s\" (%s): message on \"%.*s\" (%u byte payload) exceeds the "
                 "client's Maximum Packet Size %u; discarded [MQTT-3.1.2-25]",
                 mql_proto_client_id(c), c->peer, (int)msg->topic.len, msg->topic.p,
                 msg->payload.len, c->client_max_packet);
        return false;
    }
    return true;
}

void mql_proto_send_disconnect(mql_conn *c, uint8_t reason, const char *why)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_DISCONNECT;
    p.u.disconnect.reason = reason;
    if (why != NULL && c->request_problem_info) {
        p.u.disconnect.props.present = MQL_PBIT(MQL_PROP_REASON_STRING);
        p.u.disconnect.props.reason_string.p = (const uint8_t *)why;
        p.u.disconnect.props.reason_string.len = (uint32_t)strlen(why);
    }
    (void)mql_proto_send_packet(c, &p);
}

enum mql_send_result mql_proto_send_connack(mql_conn *c, bool present, uint8_t reason,
                                            const mql_props *props)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_CONNACK;
    /* MQTT 3.1's CONNACK has no Session Present flag: its first byte is reserved, 0 */
    p.u.connack.session_present = present && c->version != MQL_V31;
    p.u.connack.reason = reason;
    if (props != NULL)
        p.u.connack.props = *props;
    return mql_proto_send_packet(c, &p);
}

void mql_proto_close(mql_conn *c, enum mql_close_how how, mql_err err, const char *why)
{
    if (c->state == CS_CLOSING)
        return;
    if (why != NULL)
        snprintf(c->why, sizeof(c->why), "%s", why);
    else
        snprintf(c->why, sizeof(c->why), "%s", mql_err_str(err));
    bool flush = how == MQL_CLOSE_FLUSH;
    if (c->version == MQL_V5 && err != MQL_OK) {
        if (c->state != CS_NEW)
            mql_proto_send_disconnect(c, mql_err_reason(err), why);
        else if (c->role->server) /* a bridge's uplink is the client side */
            (void)mql_proto_send_connack(c, false, mql_err_reason(err), NULL); /* [MQTT-4.13.1-1] */
        flush = true;
        mql_link_last_words(c->link); /* the reason code must reach the peer */
    }
    c->state = CS_CLOSING;
    c->closing_since = mql_now_ms();
    mql_link_close(c->link, flush);
}

void mql_proto_violation(mql_conn *c, mql_err err, const char *why)
{
    c->role->violation(c, err, why);
    mql_proto_close(c, MQL_CLOSE_ABORT, err, why);
}

/*
 * Acknowledge a PUBLISH (PUBACK/PUBREC). When handling it queued store operations that must
 * be durable first (`durable`), the ack waits in c->batch for a store barrier, which
 * conn_data requests once per batch of packets. Acks are sent in the order of their
 * PUBLISHes [MQTT-4.6.0-2] [MQTT-4.6.0-3]: once any ack waits, later ones wait behind it.
 */
void mql_proto_queue_packet(mql_conn *c, const mql_packet *pkt, bool durable)
{
    if (!durable && c->batch == NULL && c->acks_waiting == 0) {
        (void)mql_proto_send_packet(c, pkt);
        return;
    }
    size_t n = mql_encode(NULL, 0, pkt, c->version);
    ack_batch *ab = c->batch;
    size_t len = ab ? ab->len : 0;
    if (ab == NULL || len + n > ab->cap) {
        size_t cap = ab ? ab->cap * 2 : 256;
        while (cap < len + n)
            cap *= 2;
        ack_batch *nb = realloc(ab, sizeof(*nb) + cap);
        if (n == 0 || nb == NULL) {
            mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
            return;
        }
        if (ab == NULL) {
            nb->c = c;
            nb->n = 0;
            nb->len = 0;
        }
        nb->cap = cap;
        c->batch = ab = nb;
    }
    (void)mql_encode(ab->bytes + ab->len, n, pkt, c->version);
    ab->len += n;
    ab->n++;
}

void mql_proto_queue_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason, bool durable)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = type;
    p.u.ack.packet_id = pid;
    p.u.ack.reason = reason;
    mql_proto_queue_packet(c, &p, durable);
}

/*
 * MQTT 5: the acknowledgements of a batch whose commit failed, with every PUBACK/PUBREC
 * that said success turned into a refusal: 0x97 Quota exceeded when the disk is full, else
 * 0x80 Unspecified error [MQTT-3.4.2-1] [MQTT-3.5.2-1]. The publisher learns that the message
 * was not accepted; its library does not re-send that PUBLISH [MQTT-4.4.0-2], the
 * application may publish it again (the store keeps retrying what it already holds, so
 * nothing routed is lost by the refusal; a subscriber that was online may get it twice).
 * A refused PUBREC ends the QoS 2 exchange: its packet id is released, a later PUBLISH with
 * it is a new message [MQTT-4.3.3-9]. Returns the
 * bytes to send (caller frees) and the number of refusals in *refused, or NULL when the
 * batch cannot be refused this way (it holds a SUBACK/UNSUBACK, or no memory): then close.
 */
static uint8_t *refuse_acks(mql_conn *c, const ack_batch *ab, mql_err err, size_t *len,
                            uint32_t *refused)
{
    size_t cap = ab->len + 2 * (size_t)ab->n; /* a reason code and a property length each */
    uint8_t *out = malloc(cap);
    size_t off = 0, n = 0;
    *refused = 0;
    while (out != NULL && off < ab->len) {
        mql_frame fr;
        mql_err e;
        mql_packet p;
        const uint8_t *frame = ab->bytes + off;
        if (mql_frame_scan(frame, ab->len - off, 0, &fr, &e) != MQL_SCAN_COMPLETE ||
            (fr.type != MQL_PUBACK && fr.type != MQL_PUBREC) ||
            mql_decode(frame, fr.total, c->version, &p, NULL) != MQL_OK)
            goto fail;
        if (p.u.ack.reason < 0x80) {
            p.u.ack.reason = mql_err_reason(err);
            memset(&p.u.ack.props, 0, sizeof(p.u.ack.props));
            if (p.type == MQL_PUBREC && c->session != NULL &&
                mql_session_qos2_remove(c->session, p.u.ack.packet_id))
                (void)mql_session_mirror_qos2(c->core, c->session, p.u.ack.packet_id, false);
            size_t w = mql_encode(out + n, cap - n, &p, c->version);
            if (w == 0 || w > cap - n)
                goto fail;
            n += w;
            (*refused)++;
        } else {
            memcpy(out + n, frame, fr.total);
            n += fr.total;
        }
        off += fr.total;
    }
    *len = n;
    return out;
fail:
    free(out);
    return NULL;
}

/*
 * A barrier failed: acknowledge nothing as success. MQTT 5 connections get refusals
 * (refuse_acks); MQTT 3.1.1 has no way to refuse a PUBLISH, so the connection is closed
 * without the acks and the client re-sends the messages when it reconnects
 * [v3.1.1 MQTT-4.4.0-1] (a clean-session client does not, but then only what it published
 * to persistent subscribers needed the store, and those copies stay queued for commit).
 * One error line per failure episode; ack_commit_ok ends it. Under broker->lock.
 */
static void ack_commit_failed(mql_conn *c, ack_batch *ab, mql_err err)
{
    size_t len = 0;
    uint32_t refused = 0;
    uint8_t *out = c->version == MQL_V5 ? refuse_acks(c, ab, err, &len, &refused) : NULL;
    bool closing = out == NULL;
    if (!c->core->store_refusing) {
        c->core->store_refusing = true;
        mql_error("store.refused",
                  "the store cannot commit (%s, see store.commit): QoS 1/2 messages that must "
                  "be stored are not acknowledged as received: MQTT 5 publishers get "
                  "PUBACK/PUBREC 0x%02X, MQTT 3.1.1 connections are closed so that they "
                  "re-send; first: client \"%s\" (%s)%s",
                  mql_err_str(err), mql_err_reason(err), mql_proto_client_id(c), c->peer,
                  closing ? ", closed" : "");
    } else {
        mql_debug("store.refused", "client \"%s\" (%s): %u acknowledgements %s",
                  mql_proto_client_id(c), c->peer, ab->n,
                  closing ? "withheld, closing" : "sent as refusals");
    }
    c->core->stats.store_refused += closing ? ab->n : refused;
    if (closing) {
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_STORE, "store commit failed");
        return;
    }
    if (mql_link_send(c->link, out, len) == MQL_OK)
        c->core->stats.bytes_sent += len;
    free(out);
}

/* Store barrier callback (store thread): the batch's messages are on disk, or not. */
static void acks_done(void *arg, mql_err err)
{
    ack_batch *ab = arg;
    mql_conn *c = ab->c;
    pthread_mutex_lock(c->lock);
    c->acks_waiting--;
    if (err == MQL_OK && c->core->store_refusing) {
        c->core->store_refusing = false;
        mql_notice("store.refused", "the store commits again: QoS 1/2 messages are "
                                    "acknowledged again");
    }
    if (!c->link_gone && c->state != CS_CLOSING) {
        if (err == MQL_OK) {
            if (mql_link_send(c->link, ab->bytes, ab->len) == MQL_OK)
                c->core->stats.bytes_sent += ab->len;
        } else {
            ack_commit_failed(c, ab, err);
        }
    }
    mql_proto_unref(c);
    pthread_mutex_unlock(c->lock);
    free(ab);
}

/* End of a batch of received packets: send the collected acks, or hand them to the store
 * to be sent when it has committed. Under broker->lock. */
static void flush_acks(mql_conn *c)
{
    ack_batch *ab = c->batch;
    if (ab == NULL)
        return;
    c->batch = NULL;
    if (c->core->store == NULL) {
        if (mql_link_send(c->link, ab->bytes, ab->len) == MQL_OK)
            c->core->stats.bytes_sent += ab->len;
        free(ab);
        return;
    }
    c->refs++;
    c->acks_waiting++;
    if (mql_store_barrier(c->core->store, acks_done, ab) != MQL_OK) {
        c->refs--;
        c->acks_waiting--;
        free(ab);
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
    }
}

mql_err mql_proto_resolve_alias(mql_conn *c, mql_publish *pub, const char **why)
{
    if (!(pub->props.present & MQL_PBIT(MQL_PROP_TOPIC_ALIAS)))
        return MQL_OK;
    uint16_t a = pub->props.topic_alias;
    if (a == 0 || a > c->alias_max) {
        *why = "Topic Alias is 0 or above the Topic Alias Maximum sent in CONNACK "
               "[MQTT-3.3.2-8] [MQTT-3.3.2-9]";
        return MQL_E_TOPIC_ALIAS_INVALID;
    }
    mql_bytes *slot = &c->aliases[a];
    if (pub->topic.len == 0) {
        if (slot->len == 0) {
            *why = "PUBLISH with an empty topic uses a Topic Alias that was never set";
            return MQL_E_PROTOCOL;
        }
        pub->topic = *slot;
        return MQL_OK;
    }
    uint8_t *copy = malloc(pub->topic.len);
    if (copy == NULL)
        return MQL_E_NOMEM;
    memcpy(copy, pub->topic.p, pub->topic.len);
    free((void *)slot->p);
    slot->p = copy;
    slot->len = pub->topic.len;
    return MQL_OK;
}

/* The largest frame accepted now: max_packet_size, and MQL_PRECONNECT_MAX until CONNECT
 * (or CONNACK) was handled. */
static uint32_t frame_limit(const mql_conn *c)
{
    uint32_t max = c->cfg->max_packet_size;
    if (c->state == CS_NEW && (max == 0 || max > MQL_PRECONNECT_MAX))
        max = MQL_PRECONNECT_MAX;
    return max;
}

/* A frame that does not decode: close with the right reason. */
static void decode_failed(mql_conn *c, uint8_t type, const mql_packet *p, mql_err err,
                          const char *why)
{
    if (c->state != CS_NEW && type == MQL_CONNECT) {
        /* Any second CONNECT is a Protocol Error [MQTT-3.1.0-2], well-formed or not.
         * Its own decode error may be a CONNACK-only reason code (0x84 for a bad
         * level), which is not valid in DISCONNECT (found by tests/fuzz/fuzz_conn). */
        err = MQL_E_PROTOCOL;
        why = "second CONNECT on one connection [MQTT-3.1.0-2]";
    }
    if (c->state == CS_NEW && type == MQL_CONNECT && c->role->server) {
        /* an unknown level gets 3.1.1's CONNACK 0x01: its rule is a MUST
         * [v3.1.1 MQTT-3.1.2-2], MQTT 5's 0x84 a MAY [MQTT-3.1.2-2] */
        c->version = p->u.connect.version == MQL_V5 ? MQL_V5 : MQL_V311;
        if (err == MQL_E_BAD_VERSION && c->version != MQL_V5) {
            /* [v3.1.1 MQTT-3.1.2-2] */
            mql_notice("client.refused", "connection from %s refused: %s", c->peer,
                       why ? why : "unsupported protocol version");
            c->state = CS_CLOSING;
            (void)mql_proto_send_connack(c, false, 0x01, NULL);
            mql_link_last_words(c->link);
            mql_link_close(c->link, true);
            return;
        }
    }
    mql_proto_violation(c, err, why);
}

/* Scan, decode and hand to the role every complete frame in buf until the connection
 * closes. Returns the bytes used (OUT: *want as for mql_link_ops.data). */
static size_t frames(mql_conn *c, const uint8_t *buf, size_t len, size_t *want)
{
    size_t off = 0;
    while (c->state != CS_CLOSING) {
        mql_frame fr;
        mql_err err = MQL_OK;
        mql_scan sc = mql_frame_scan(buf + off, len - off, frame_limit(c), &fr, &err);
        if (sc == MQL_SCAN_NEED_MORE) {
            if (fr.header_len != 0)
                *want = fr.total;
            break;
        }
        if (sc == MQL_SCAN_ERROR) {
            mql_proto_violation(c, err,
                                err == MQL_E_TOO_LARGE
                                    ? "packet larger than the maximum packet size"
                                    : "invalid Remaining Length [MQTT-1.5.5-1]");
            break;
        }
        mql_packet p;
        const char *why = NULL;
        if (c->state == CS_NEW)
            memset(&p, 0, sizeof(p));
        /* before CONNECT the level is not known yet; a bridge knows its own from the start */
        uint8_t level = c->state == CS_NEW && c->role->server ? 0 : c->version;
        err = mql_decode(buf + off, fr.total, level, &p, &why);
        if (err != MQL_OK) {
            decode_failed(c, fr.type, &p, err, why);
            break;
        }
        c->role->packet(c, &p);
        off += fr.total;
    }
    return off;
}

size_t mql_proto_data(void *ctx, const uint8_t *buf, size_t len, size_t *want)
{
    mql_conn *c = ctx;
    size_t used = 0;
    mql_net_defer_begin(); /* the writes start after the broker lock is released */
    pthread_mutex_lock(c->lock);
    c->last_rx = mql_now_ms();
    c->core->stats.bytes_received += len;
    if (c->role->intercept != NULL && c->role->intercept(c, buf, len, &used)) {
        pthread_mutex_unlock(c->lock);
        mql_net_defer_end();
        return used;
    }
    used = frames(c, buf, len, want);
    flush_acks(c);
    bool closing = c->state == CS_CLOSING;
    pthread_mutex_unlock(c->lock);
    mql_net_defer_end();
    return closing ? len : used;
}

void mql_proto_link_closed(mql_conn *c)
{
    c->link_gone = true;
    c->session = NULL;
    free(c->batch);
    c->batch = NULL;
    mql_proto_unref(c);
}

/* Drop a reference; the last one frees the connection. Under broker->lock. */
void mql_proto_unref(mql_conn *c)
{
    if (--c->refs > 0)
        return;
    free(c->username);
    if (c->aliases != NULL) {
        for (uint32_t i = 0; i <= c->alias_max; i++)
            free((void *)c->aliases[i].p);
        free(c->aliases);
    }
    if (c->out_aliases != NULL) {
        for (uint32_t i = 0; i <= c->out_alias_used; i++)
            free((void *)c->out_aliases[i].p);
        free(c->out_aliases);
    }
    free(c);
}
