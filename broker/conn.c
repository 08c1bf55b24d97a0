/*
 * conn.c - the server side of a client connection: accepting it (max_connections),
 * dispatching its packets (CONNECT -> conn_connect.c, PUBLISH and acks -> flow.c),
 * SUBSCRIBE / UNSUBSCRIBE / DISCONNECT / PINGREQ, keepalive, and what happens to its will
 * and session when it ends.
 *
 * The endpoint mechanics (frames, sending, acks held for the store, closing) are proto.c's;
 * this file fills in the server's mql_proto_role. Every way a connection ends goes through
 * mql_proto_close (we close) or conn_closed (the link is gone), and the decisions about the
 * will and the session are made in exactly one place: conn_closed, or the takeover in
 * conn_connect.c.
 *
 * Locking: see broker_int.h. conn_data checks a first CONNECT's password before taking
 * broker->lock (PBKDF2 is slow); mql_proto_data then takes it once per batch of frames,
 * which are decoded and handled under it.
 * Performance assumption: connections are few enough (max_connections) that the ticker
 * walks them all every 250 ms.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"

#include "broker_int.h"
#include "clients.h"
#include "flow.h"
#include "router.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "storage/store.h"
#include "conn_connect.h"

/* A client that sends while this much output (beyond its in-flight QoS 1/2 deliveries)
 * waits unread is closed: see unread_backlog_exceeded. */
#define MQL_UNREAD_BACKLOG_MAX (4u * 1024u * 1024u)

static const mql_proto_role server_role;

static const char *cid(const mql_conn *c)
{
    return mql_proto_client_id(c);
}

/*
 * Whether a new connection on listener `li` would exceed max_connections: the listener's
 * own limit or the whole broker's. The first refusal of an episode is a warning naming the
 * listener; the episode ends (with a notice) when a connection closes and makes room, see
 * count_closed. Under broker->lock.
 */
static bool connection_limit_reached(mql_broker *b, int li, const char *peer)
{
    const mql_listener_conf *lc = &b->cfg.listeners[li];
    struct mql_listener_state *ls = &b->listeners[li];
    if (lc->max_connections >= 0 && ls->nconns >= (uint32_t)lc->max_connections) {
        if (!ls->full_logged) {
            ls->full_logged = true;
            mql_warning("conn.limit",
                        "listener %s has reached its max_connections %d: refusing new "
                        "connections on it until one closes (first refused: %s)",
                        ls->url, lc->max_connections, peer);
        }
        mql_debug("conn.refused", "connection from %s refused: listener %s max_connections %d",
                  peer, ls->url, lc->max_connections);
        return true;
    }
    if (b->cfg.max_connections >= 0 && b->nconns >= (uint32_t)b->cfg.max_connections) {
        if (!b->conns_full_logged) {
            b->conns_full_logged = true;
            mql_warning("conn.limit",
                        "the broker has reached max_connections %d (all listeners): refusing "
                        "new connections until one closes (first refused: %s on %s)",
                        b->cfg.max_connections, peer, ls->url);
        }
        mql_debug("conn.refused", "connection from %s on %s refused: max_connections %d", peer,
                  ls->url, b->cfg.max_connections);
        return true;
    }
    return false;
}

/* A connection of listener li went away: end a max_connections episode it ends. Under
 * broker->lock, after the counters were decremented. */
static void count_closed(mql_broker *b, int li)
{
    const mql_listener_conf *lc = &b->cfg.listeners[li];
    struct mql_listener_state *ls = &b->listeners[li];
    if (ls->full_logged && ls->nconns < (uint32_t)lc->max_connections) {
        ls->full_logged = false;
        mql_notice("conn.limit", "listener %s is below its max_connections %d again", ls->url,
                   lc->max_connections);
    }
    if (b->conns_full_logged && b->nconns < (uint32_t)b->cfg.max_connections) {
        b->conns_full_logged = false;
        mql_notice("conn.limit", "the broker is below max_connections %d again",
                   b->cfg.max_connections);
    }
}

/* A new link: refused (NULL) when shutting down or at a max_connections limit, which closes
 * it before anything is read from it. */
static void *conn_open(void *arg, mql_link *link, const char *peer, int listener_id)
{
    mql_broker *b = arg;
    assert(listener_id >= 0 && listener_id < b->cfg.n_listeners);
    mql_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    mql_conn *c = &cl->ep;
    c->b = b;
    c->core = &b->core;
    c->cfg = &b->cfg;
    c->lock = &b->lock;
    c->role = &server_role;
    c->link = link;
    mql_client_of(c)->listener = listener_id;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    c->created_at = c->last_rx = mql_now_ms();
    c->client_receive_max = 65535;
    c->refs = 1;
    pthread_mutex_lock(&b->lock);
    if (b->stopping) {
        pthread_mutex_unlock(&b->lock);
        mql_notice("conn.refused", "connection from %s refused: shutting down", peer);
        free(c);
        return NULL;
    }
    if (connection_limit_reached(b, listener_id, peer)) {
        pthread_mutex_unlock(&b->lock);
        free(c);
        return NULL;
    }
    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->nconns++;
    b->listeners[listener_id].nconns++;
    pthread_mutex_unlock(&b->lock);
    mql_debug("conn.open", "connection from %s on %s", peer, b->listeners[listener_id].url);
    return c;
}

/* ---- SUBSCRIBE / UNSUBSCRIBE ---- */

struct retained_ctx {
    mql_conn *c;
    const mql_sub *sub;
};

static void retained_cb(void *arg, mql_msg *msg)
{
    struct retained_ctx *rc = arg;
    uint8_t qos = msg->qos < rc->sub->qos ? msg->qos : rc->sub->qos;
    uint32_t id = rc->sub->sub_id;
    if (mql_msg_expired(msg, mql_now_ms()))
        return;
    /* retained messages sent because of a subscribe keep retain=1 [MQTT-3.3.1-9] */
    bool wait = false; /* sent after the SUBACK: no ack waits for it */
    (void)mql_router_deliver(&rc->c->b->core, rc->c->session, msg, qos, true, &id, id ? 1 : 0, NULL,
                             &wait);
}

/* One filter of a SUBSCRIBE: returns its SUBACK code (0xFF: a 3.1.1 protocol violation).
 * OUT: *out_sub the subscription made or replaced (NULL if none), *existed whether it
 * replaced one; *wait set when an ack must wait for the store (left alone otherwise). */
static uint8_t subscribe_one(mql_conn *c, const mql_sub_entry *e, uint32_t sub_id,
                             mql_sub **out_sub, bool *existed, bool *wait)
{
    mql_broker *b = c->b;
    mql_session *s = c->session;
    bool v5 = c->version == MQL_V5;
    *out_sub = NULL;
    if (!mql_topic_filter_valid(e->filter)) {
        if (!v5)
            return 0xFF; /* a protocol violation in 3.1.1: the caller closes */
        mql_notice("client.bad_filter",
                   "client \"%s\" (%s): invalid topic filter \"%.*s\" "
                   "[MQTT-4.7.1-1] [MQTT-4.7.1-2]",
                   s->client_id, c->peer, (int)e->filter.len, e->filter.p);
        return mql_err_reason(MQL_E_TOPIC_FILTER_INVALID);
    }
    bool shared = e->filter.len >= 7 && memcmp(e->filter.p, "$share/", 7) == 0;
    if (shared && !b->cfg.shared_subscriptions)
        return v5 ? mql_err_reason(MQL_E_SHARED_UNSUPPORTED) : 0x80; /* 0x9E */
    if (!b->cfg.wildcard_subscriptions &&
        (memchr(e->filter.p, '+', e->filter.len) || memchr(e->filter.p, '#', e->filter.len)))
        return v5 ? mql_err_reason(MQL_E_WILDCARD_UNSUPPORTED) : 0x80; /* 0xA2 */
    if (b->core.acl != NULL &&
        !mql_acl_can_subscribe(b->core.acl, c->username, s->client_id, e->filter)) {
        mql_notice("client.acl",
                   "client \"%s\" (%s) user \"%s\": SUBSCRIBE to \"%.*s\" denied "
                   "by the ACL",
                   s->client_id, c->peer, c->username ? c->username : "", (int)e->filter.len,
                   e->filter.p);
        return v5 ? mql_err_reason(MQL_E_NOT_AUTHORIZED) : 0x80;
    }
    uint8_t qos = e->qos < b->cfg.max_qos ? e->qos : b->cfg.max_qos; /* [MQTT-3.8.4-6] */
    mql_sub tmpl;
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.session = s;
    tmpl.qos = qos;
    tmpl.sub_id = sub_id;
    if (v5) {
        tmpl.no_local = e->no_local;
        tmpl.retain_as_published = e->retain_as_published;
        tmpl.retain_handling = e->retain_handling;
    } else if (mql_client_of(c)->peer_bridge) {
        /* what mosquitto gives a bridge: its own messages are not echoed back to it (no
         * loop), retain flags arrive as published */
        tmpl.no_local = true;
        tmpl.retain_as_published = true;
    }
    mql_sub *sub = mql_topics_subscribe(b->core.topics, e->filter, &tmpl, existed);
    if (sub == NULL)
        return 0x80;
    if (!*existed)
        mql_session_link_sub(s, sub);
    *wait = mql_session_mirror_sub(&b->core, s, sub) || *wait;
    *out_sub = sub;
    return qos;
}

static void handle_subscribe(mql_conn *c, const mql_subscribe *sub)
{
    mql_broker *b = c->b;
    uint32_t n = sub->count;
    uint8_t codes_stack[64];
    mql_sub *subs_stack[64];
    bool existed_stack[64];
    uint8_t *codes = codes_stack;
    mql_sub **subs = subs_stack;
    bool *existed = existed_stack;
    if (n > 64) {
        codes = malloc(n);
        subs = malloc(n * sizeof(*subs));
        existed = malloc(n * sizeof(*existed));
        if (codes == NULL || subs == NULL || existed == NULL) {
            mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
            goto done;
        }
    }
    bool wait = false; /* a kept subscription is on disk before the SUBACK */
    if (c->version == MQL_V5 && (sub->props.present & MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID)) &&
        !b->cfg.subscription_identifiers) {
        /* the CONNACK said Subscription Identifiers Available 0 */
        mql_proto_violation(c, MQL_E_SUBID_UNSUPPORTED,
                            "SUBSCRIBE with a Subscription Identifier, which "
                            "this server does not support (0xA1)");
        goto done;
    }
    uint32_t sub_id = 0;
    if (c->version == MQL_V5 && (sub->props.present & MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID)))
        sub_id = sub->props.sub_id;
    uint32_t pos = 0;
    mql_sub_entry e;
    for (uint32_t i = 0; i < n && mql_subscribe_next(sub, c->version, &pos, &e); i++) {
        codes[i] = subscribe_one(c, &e, sub_id, &subs[i], &existed[i], &wait);
        if (codes[i] == 0xFF) {
            mql_proto_violation(c, MQL_E_TOPIC_FILTER_INVALID,
                                "invalid topic filter in SUBSCRIBE [v3.1.1 MQTT-4.7.1-2] "
                                "[v3.1.1 MQTT-4.7.1-3] [v3.1.1 MQTT-4.8.0-1]");
            goto done;
        }
        mql_debug("client.subscribe", "client \"%s\": subscribe \"%.*s\" qos %u -> 0x%02x",
                  c->session->client_id, (int)e.filter.len, e.filter.p, e.qos, codes[i]);
    }
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_SUBACK;
    p.u.suback.packet_id = sub->packet_id; /* [MQTT-3.8.4-2] */
    p.u.suback.count = n;                  /* [MQTT-3.8.4-5] one code per filter */
    p.u.suback.codes = codes;
    mql_proto_queue_packet(c, &p, wait); /* a kept subscription is on disk */
    /* retained messages after the SUBACK [MQTT-3.3.1-9] [MQTT-3.8.4-4] */
    for (uint32_t i = 0; i < n; i++) {
        if (subs[i] == NULL)
            continue;
        uint8_t rh = subs[i]->retain_handling;
        if (rh == 2 || (rh == 1 && existed[i]))
            continue; /* [MQTT-3.3.1-10] [MQTT-3.3.1-11] */
        if (subs[i]->share != NULL)
            continue; /* no retained messages for shared subscriptions [MQTT-4.8.2-?] */
        struct retained_ctx rc = {.c = c, .sub = subs[i]};
        mql_bytes f = {.p = (const uint8_t *)subs[i]->filter, .len = subs[i]->filter_len};
        mql_topics_retained(b->core.topics, f, retained_cb, &rc);
    }
done:
    if (codes != codes_stack)
        free(codes);
    if (subs != subs_stack)
        free(subs);
    if (existed != existed_stack)
        free(existed);
}

static void handle_unsubscribe(mql_conn *c, const mql_unsubscribe *un)
{
    mql_broker *b = c->b;
    mql_session *s = c->session;
    uint8_t codes_stack[64];
    uint8_t *codes = un->count > 64 ? malloc(un->count) : codes_stack;
    if (codes == NULL) {
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
        return;
    }
    bool wait = false;
    uint32_t pos = 0;
    mql_bytes f;
    for (uint32_t i = 0; i < un->count && mql_unsubscribe_next(un, &pos, &f); i++) {
        mql_sub *sub = mql_topics_find(b->core.topics, f, s);
        if (sub == NULL) {
            codes[i] = 0x11; /* No subscription existed */
            continue;
        }
        mql_session_unlink_sub(s, sub);
        wait = mql_session_mirror_sub_del(&b->core, s, sub->filter) || wait;
        mql_topics_remove(b->core.topics, sub); /* [MQTT-3.10.4-1] */
        codes[i] = 0;
    }
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_UNSUBACK; /* [MQTT-3.10.4-4] */
    p.u.suback.packet_id = un->packet_id;
    p.u.suback.count = un->count;
    p.u.suback.codes = codes;
    mql_proto_queue_packet(c, &p, wait);
    if (codes != codes_stack)
        free(codes);
}

static void handle_disconnect(mql_conn *c, const mql_disconnect *d)
{
    mql_session *s = c->session;
    if (c->version == MQL_V5) {
        if (d->props.present & MQL_PBIT(MQL_PROP_SESSION_EXPIRY)) {
            if (s->expiry == 0 && d->props.session_expiry != 0) {
                mql_proto_violation(c, MQL_E_PROTOCOL,
                                    "DISCONNECT sets a Session Expiry Interval but "
                                    "CONNECT had 0 [MQTT-3.14.2-2]");
                return;
            }
            s->expiry = d->props.session_expiry;
        }
        mql_client_of(c)->will_suppressed =
            d->reason != 0x04; /* 0x04: disconnect with will message */
    } else {
        mql_client_of(c)->will_suppressed = true; /* [v3.1.1 MQTT-3.1.2-10] */
    }
    mql_proto_close(c, MQL_CLOSE_ABORT, MQL_OK, "client sent DISCONNECT"); /* [MQTT-3.14.4-1] */
}

static void handle_packet(mql_conn *c, mql_packet *p)
{
    if (c->state == CS_NEW) {
        if (p->type != MQL_CONNECT) {
            mql_proto_violation(c, MQL_E_PROTOCOL,
                                "the first packet must be CONNECT [MQTT-3.1.0-1]");
            return;
        }
        mql_conn_connect(c, &p->u.connect);
        return;
    }
    switch (p->type) {
    case MQL_CONNECT:
        mql_proto_violation(c, MQL_E_PROTOCOL, "second CONNECT on one connection [MQTT-3.1.0-2]");
        break;
    case MQL_PUBLISH:
        mql_flow_publish_in(c, &p->u.publish);
        break;
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
        mql_flow_ack_in(c, p->type, &p->u.ack);
        break;
    case MQL_SUBSCRIBE:
        handle_subscribe(c, &p->u.subscribe);
        break;
    case MQL_UNSUBSCRIBE:
        handle_unsubscribe(c, &p->u.unsubscribe);
        break;
    case MQL_PINGREQ: {
        mql_packet r = {.type = MQL_PINGRESP};
        (void)mql_proto_send_packet(c, &r); /* [MQTT-3.12.4-1] */
        break;
    }
    case MQL_DISCONNECT:
        handle_disconnect(c, &p->u.disconnect);
        break;
    case MQL_AUTH:
        mql_proto_violation(c, MQL_E_PROTOCOL,
                            "AUTH without an Authentication Method in CONNECT "
                            "[MQTT-4.12.0-1]");
        break;
    default:
        mql_proto_violation(c, MQL_E_PROTOCOL, "a packet type only a server may send");
        break;
    }
}

/* The peer address without its port ("10.0.0.8", "::1"), for the login rate limiter. */
static void peer_host(const char *peer, char *out, size_t cap)
{
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
    if (n >= 2 && peer[0] == '[' && peer[n - 1] == ']') {
        peer++;
        n -= 2;
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(out, peer, n);
    out[n] = '\0';
}

/*
 * Before the broker lock is taken for a connection's first packet: when it is a CONNECT
 * with a user name and a password file is configured, check the password here. PBKDF2 is
 * deliberately slow (tens of ms on a gateway), and holding the broker lock meanwhile would
 * stall every other client. The result waits in mql_client_of(c)->auth for handle_connect.
 */
static void precheck_password(mql_conn *c, const uint8_t *buf, size_t len)
{
    mql_broker *b = c->b;
    mql_frame fr;
    mql_err err;
    if (mql_frame_scan(buf, len, MQL_PRECONNECT_MAX, &fr, &err) != MQL_SCAN_COMPLETE ||
        fr.type != MQL_CONNECT)
        return;
    mql_packet p;
    memset(&p, 0, sizeof(p));
    const char *why;
    if (mql_decode(buf, fr.total, 0, &p, &why) != MQL_OK || !p.u.connect.has_username)
        return;
    if (mql_client_of(c)->listener >= 0 &&
        b->cfg.listeners[mql_client_of(c)->listener].use_identity_as_username)
        return; /* the certificate names the user; the password is not checked */
    const mql_connect *cn = &p.u.connect;
    pthread_rwlock_rdlock(&b->auth_lock);
    bool have_passwd = b->passwd != NULL;
    pthread_rwlock_unlock(&b->auth_lock);
    if (!have_passwd)
        return;
    char host[64], user[256];
    peer_host(c->peer, host, sizeof(host));
    if (cn->username.len >= sizeof(user)) {
        mql_client_of(c)->auth = AUTH_BAD;
        return;
    }
    memcpy(user, cn->username.p, cn->username.len);
    user[cn->username.len] = '\0';
    pthread_mutex_lock(&b->lock);
    bool allowed = mql_ratelimit_allow(b->ratelimit, host, mql_now_ms());
    pthread_mutex_unlock(&b->lock);
    if (!allowed) {
        mql_client_of(c)->auth = AUTH_BLOCKED;
        return;
    }
    pthread_rwlock_rdlock(&b->auth_lock);
    if (b->passwd != NULL)
        mql_client_of(c)->auth =
            cn->has_password && mql_passwd_check(b->passwd, user, cn->password.p, cn->password.len)
                ? AUTH_OK
                : AUTH_BAD;
    pthread_rwlock_unlock(&b->auth_lock);
    pthread_mutex_lock(&b->lock);
    if (mql_client_of(c)->auth == AUTH_BAD)
        mql_ratelimit_fail(b->ratelimit, host, mql_now_ms());
    else if (mql_client_of(c)->auth == AUTH_OK)
        mql_ratelimit_ok(b->ratelimit, host);
    pthread_mutex_unlock(&b->lock);
}

/*
 * A client that keeps sending while it does not read its socket: every PINGREQ, QoS 1/2
 * PUBLISH or SUBSCRIBE adds a reply to its unsent output, which would grow without bound.
 * Deliveries are bounded elsewhere (QoS 0 by MQL_QOS0_BACKLOG_MAX, QoS 1/2 by the in-flight
 * window), so when input arrives the unsent output may be up to MQL_UNREAD_BACKLOG_MAX
 * plus the in-flight deliveries (which a slow but honest subscriber may legitimately leave
 * unsent); beyond that the connection is aborted (no DISCONNECT: it would only join the
 * unread backlog). Checked on input, because only input makes replies: a subscriber that
 * merely reads slowly is never cut by this. Under broker->lock.
 */
static bool unread_backlog_exceeded(mql_conn *c)
{
    size_t backlog = mql_link_backlog(c->link);
    if (backlog <= MQL_UNREAD_BACKLOG_MAX)
        return false;
    uint64_t allowed = MQL_UNREAD_BACKLOG_MAX;
    if (c->session != NULL) { /* rare: only walked once the backlog is this large */
        for (out_msg *o = c->session->inflight.head; o != NULL; o = o->next)
            allowed += o->msg->topic.len + o->msg->payload.len +
                       mql_props_encode(NULL, 0, &o->msg->props) + 32;
    }
    if (backlog <= allowed)
        return false;
    mql_warning("client.unread",
                "client \"%s\" (%s): %zu bytes of output unsent while it keeps sending (it "
                "does not read its socket); closing",
                cid(c), c->peer, backlog);
    char why[64];
    snprintf(why, sizeof(why), "%zu bytes of output left unread", backlog);
    mql_proto_close(c, MQL_CLOSE_ABORT, MQL_OK, why);
    return true;
}

/*
 * Input of a connection that was taken over while its will was pending: complete frames
 * are looked at only for a DISCONNECT, which (0x00, or any in 3.1.1) deletes the will as
 * it would have before the takeover [MQTT-3.1.2-10] [MQTT-3.14.4-3]. Returns the bytes
 * used. Under broker->lock.
 */
static size_t drain_for_disconnect(mql_conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        mql_frame fr;
        mql_err err = MQL_OK;
        mql_scan sc = mql_frame_scan(buf + off, len - off, c->b->cfg.max_packet_size, &fr, &err);
        if (sc == MQL_SCAN_NEED_MORE)
            return off;
        if (sc == MQL_SCAN_ERROR)
            return len;
        mql_packet p;
        if (fr.type == MQL_DISCONNECT &&
            mql_decode(buf + off, fr.total, c->version, &p, NULL) == MQL_OK &&
            (c->version != MQL_V5 || p.u.disconnect.reason == 0x00)) {
            mql_client_of(c)->will_suppressed = true;
            mql_debug("client.will",
                      "connection %s, taken over: its DISCONNECT arrived after the new "
                      "connection's CONNECT; no will",
                      c->peer);
            return len;
        }
        off += fr.total;
    }
    return off;
}

/* mql_proto_role.intercept of client connections: input that is not read as packets. */
static bool conn_intercept(mql_conn *c, const uint8_t *buf, size_t len, size_t *used)
{
    if (c->state == CS_ACTIVE && unread_backlog_exceeded(c)) {
        *used = len;
        return true;
    }
    if (c->state == CS_CLOSING && mql_client_of(c)->will_deferred &&
        mql_client_of(c)->drain_until != 0) {
        *used = drain_for_disconnect(c, buf, len);
        return true;
    }
    return false;
}

/* mql_proto_role.violation of client connections. */
static void conn_violation(mql_conn *c, mql_err err, const char *why)
{
    mql_notice("client.violation", "client \"%s\" (%s): %s: %s; closing the connection", cid(c),
               c->peer, mql_err_str(err), why ? why : "no detail");
}

static const mql_proto_role server_role = {
    .server = true,
    .intercept = conn_intercept,
    .packet = handle_packet,
    .violation = conn_violation,
};

/* mql_link_ops.data: a first CONNECT's password is checked before the lock is taken. */
static size_t conn_data(void *ctx, const uint8_t *buf, size_t len, size_t *want)
{
    mql_conn *c = ctx;
    if (!mql_client_of(c)
             ->prechecked) { /* only this (serialised) receive path touches prechecked */
        mql_client_of(c)->prechecked = true;
        precheck_password(c, buf, len);
    }
    return mql_proto_data(c, buf, len, want);
}

static void conn_closed(void *ctx)
{
    mql_conn *c = ctx;
    mql_broker *b = c->b;
    pthread_mutex_lock(&b->lock);
    mql_session *s = c->session;
    if (s != NULL && s->sink_ctx == c) {
        b->core.stats.clients_connected--;
        mql_session_detach(s);
        s->disconnected_at = mql_now_ms();
        bool ends = s->expiry == 0;
        mql_conn_release_will(b, c, s, !ends);
        mql_notice("client.disconnect", "client \"%s\" (%s) disconnected: %s%s", s->client_id,
                   c->peer, c->why[0] ? c->why : "connection closed by peer",
                   ends ? "" : "; session kept");
        if (ends)
            mql_clients_end(&b->core, s); /* [MQTT-3.1.2-23] [v3.1.1 MQTT-3.1.2-6] */
        else
            (void)mql_session_mirror(&b->core, s); /* disconnect time, expiry from DISCONNECT */
    } else if (c->state == CS_NEW) {
        mql_debug("conn.close", "connection from %s closed before CONNECT", c->peer);
    } else if (mql_client_of(c)->will_deferred) {
        mql_conn_release_will(b, c, NULL, false); /* taken over: published unless DISCONNECT came */
    }
    mql_msg_unref(mql_client_of(c)->will);
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->nconns--;
    b->listeners[mql_client_of(c)->listener].nconns--;
    count_closed(b, mql_client_of(c)->listener);
    mql_proto_link_closed(c);
    pthread_cond_broadcast(&b->tick_cv);
    pthread_mutex_unlock(&b->lock);
}

void mql_conn_listener_started(mql_broker *b, int i, const char *url)
{
    snprintf(b->listeners[i].url, sizeof(b->listeners[i].url), "%s", url);
}

void mql_conn_shutdown_all(mql_broker *b)
{
    for (mql_conn *c = b->conns; c != NULL; c = c->next)
        mql_proto_close(c, MQL_CLOSE_ABORT, c->state == CS_ACTIVE ? MQL_E_SHUTDOWN : MQL_OK,
                        "server shutting down");
}

void mql_conn_tick(mql_broker *b, uint64_t now)
{
    for (mql_conn *c = b->conns; c != NULL; c = c->next) {
        switch (c->state) {
        case CS_NEW:
            /* Counted from accept (created_at), never from the last byte received: a client
             * that trickles a CONNECT one byte at a time (slowloris) is cut all the same. */
            if (now - c->created_at > (uint64_t)b->cfg.connect_timeout * 1000u) {
                mql_notice("conn.timeout",
                           "connection from %s sent no complete CONNECT in %u s "
                           "(connect_timeout); closing",
                           c->peer, b->cfg.connect_timeout);
                c->version = 0;
                mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_MAX_CONNECT_TIME, "no CONNECT in time");
            }
            break;
        case CS_ACTIVE:
            /* one and a half times the keep alive [MQTT-3.1.2-22] [v3.1.1 MQTT-3.1.2-24] */
            if (c->keepalive != 0 && now - c->last_rx > (uint64_t)c->keepalive * 1500u) {
                mql_notice("client.keepalive",
                           "client \"%s\" (%s): nothing received for 1.5 x keepalive (%u s); "
                           "closing",
                           cid(c), c->peer, c->keepalive);
                mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_KEEPALIVE, "keep alive timeout");
            }
            break;
        case CS_CLOSING:
            if (mql_client_of(c)->drain_until != 0 && now >= mql_client_of(c)->drain_until) {
                mql_client_of(c)->drain_until = 0; /* taken over: the drain is over, close */
                mql_link_close(c->link, true);
            }
            if (now - c->closing_since > MQL_CLOSE_FLUSH_MS)
                mql_link_close(c->link, false);
            break;
        }
    }
}

const mql_link_ops mql_conn_link_ops = {
    .open = conn_open,
    .data = conn_data,
    .closed = conn_closed,
};
