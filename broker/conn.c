/*
 * conn.c - the server side of a client connection: accepting it, CONNECT -> CONNACK,
 * SUBSCRIBE / UNSUBSCRIBE / DISCONNECT / PINGREQ, the sink of its session, keepalive, and
 * what happens to its will and session when it ends.
 *
 * The endpoint mechanics (frames, sending, acks held for the store, closing) are proto.c's
 * and the QoS flows flow.c's; this file fills in the server's mql_proto_role. Every way a
 * connection ends goes through mql_proto_close (we close) or conn_closed (the link is
 * gone), and the decisions about the will and the session are made in exactly one place:
 * conn_closed, or the takeover in handle_connect.
 *
 * Locking: see internal.h. conn_data checks a first CONNECT's password before taking
 * broker->lock (PBKDF2 is slow); mql_proto_data then takes it once per batch of frames,
 * which are decoded and handled under it.
 * Performance assumption: connections are few enough (max_connections) that the ticker
 * walks them all every 250 ms.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "storage/store.h"

static const char *vname(uint8_t v)
{
    return v == MQL_V5 ? "v5" : v == MQL_V311 ? "v3.1.1" : v == MQL_V31 ? "v3.1" : "v?";
}

#define TAKEOVER_DRAIN_MS 500 /* see take_over */
/* A client that sends while this much output (beyond its in-flight QoS 1/2 deliveries)
 * waits unread is closed: see unread_backlog_exceeded. */
#define MQL_UNREAD_BACKLOG_MAX (4u * 1024u * 1024u)

static const mql_proto_role server_role;

static const char *cid(const mql_conn *c)
{
    return mql_proto_client_id(c);
}

/* The sink of a client's session (session.h): ctx is the mql_conn. */
static bool client_ready(void *ctx)
{
    const mql_conn *c = ctx;
    return c->state == CS_ACTIVE;
}

static bool client_publish(void *ctx, mql_msg *msg, uint8_t qos, bool retain, bool dup,
                           uint16_t pid, const uint32_t *ids, uint8_t n_ids)
{
    return mql_proto_send_publish(ctx, msg, msg->topic, qos, retain, dup, pid, ids, n_ids);
}

static void client_ack(void *ctx, uint8_t type, uint16_t pid, uint8_t reason)
{
    mql_proto_send_ack(ctx, type, pid, reason);
}

static size_t client_backlog(void *ctx)
{
    const mql_conn *c = ctx;
    return mql_link_backlog(c->link);
}

static const mql_sink_ops client_sink = {
    .ready = client_ready,
    .publish = client_publish,
    .ack = client_ack,
    .backlog = client_backlog,
};

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
    mql_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->b = b;
    c->role = &server_role;
    c->link = link;
    c->listener = listener_id;
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

/* ---- CONNECT ---- */

static mql_msg *make_will(const mql_connect *cn, uint64_t now)
{
    return mql_msg_new(cn->will_topic, cn->will_payload, cn->will_qos, cn->will_retain,
                       cn->version == MQL_V5 ? &cn->will_props : NULL, now);
}

/* Handle the will of a connection that is being replaced or has closed. `session_goes_on`
 * is false when the session ends with it. */
static void release_will(mql_broker *b, mql_conn *c, mql_session *s, bool session_goes_on)
{
    mql_msg *will = c->will;
    c->will = NULL;
    if (will == NULL)
        return;
    if (c->will_suppressed) {
        mql_msg_unref(will); /* DISCONNECT 0x00 deletes the will [MQTT-3.1.2-10] */
        return;
    }
    if (c->will_delay > 0 && session_goes_on && s != NULL) {
        mql_msg_unref(s->will);
        s->will = will; /* published when the delay passes, unless the client returns */
        s->will_at = mql_now_ms() + (uint64_t)c->will_delay * 1000u;
        return;
    }
    mql_router_publish_will(b, will); /* [MQTT-3.1.2-8] */
    mql_msg_unref(will);
}

static void takeover_diagnostics(mql_broker *b, mql_session *s, const mql_conn *old,
                                 const mql_conn *c)
{
    uint64_t now = mql_now_ms();
    b->stats.takeovers++;
    if (now - s->takeover_window > 10000) {
        s->takeover_window = now;
        s->takeovers = 0;
        s->takeover_warned = false;
    }
    s->takeovers++;
    mql_info("client.takeover",
             "client \"%s\" (%s) took over the session from %s [MQTT-3.1.4-3] "
             "[v3.1.1 MQTT-3.1.4-2]",
             s->client_id, c->peer, old->peer);
    if (s->takeovers >= 3 && !s->takeover_warned) {
        s->takeover_warned = true;
        mql_warning("client.id_conflict",
                    "client id \"%s\" was taken over %u times in 10 s (latest %s replaced "
                    "%s): several clients seem to share this ClientID; give each its own "
                    "id, or set client_id_conflict reject_new",
                    s->client_id, s->takeovers, c->peer, old->peer);
    }
}

/* The one refusal path before CONNACK: an MQTT 5 client gets CONNACK with err's reason code
 * (and why as its Reason String) through mql_proto_close; MQTT 3.1 / 3.1.1 get CONNACK with
 * err's return code. Then the connection closes after the CONNACK is flushed. */
static void refuse(mql_conn *c, mql_err err, const char *why)
{
    if (c->version == MQL_V5) {
        mql_proto_close(c, MQL_CLOSE_ABORT, err, why);
        return;
    }
    c->state = CS_CLOSING;
    (void)mql_proto_send_connack(c, false, mql_err_reason_v3(err), NULL);
    mql_link_close(c->link, true);
}

/* CONNECT's level and properties, and what MQTT 5 refuses before anything else. False when
 * c was closed. */
static bool check_properties(mql_conn *c, const mql_connect *cn)
{
    const mql_broker *b = c->b;
    c->version = cn->version;
    c->peer_bridge = cn->bridge;
    if (cn->version != MQL_V5)
        return true;
    c->request_problem_info = !(cn->props.present & MQL_PBIT(MQL_PROP_REQUEST_PROBLEM_INFO)) ||
                              cn->props.request_problem_info != 0;
    if (cn->props.present & MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM))
        c->client_receive_max = cn->props.receive_maximum;
    if (cn->props.present & MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE))
        c->client_max_packet = cn->props.maximum_packet_size;
    if (cn->props.present & MQL_PBIT(MQL_PROP_AUTH_METHOD)) {
        mql_proto_violation(c, MQL_E_BAD_AUTH_METHOD,
                            "enhanced authentication is not configured on this broker");
        return false;
    }
    /* A will the server could not publish as asked is refused up front, before the
     * session is touched (found by tests/fuzz/fuzz_conn). 3.1.1 has no such rule: its
     * will is delivered at the subscribers' (capped) QoS like any message. */
    if (cn->will && cn->will_qos > b->cfg.max_qos) {
        mql_proto_violation(c, MQL_E_QOS_UNSUPPORTED,
                            "Will QoS above the server's Maximum QoS (max_qos) [MQTT-3.2.2-12]");
        return false;
    }
    if (cn->will && cn->will_retain && !b->cfg.retain_available) {
        mql_proto_violation(c, MQL_E_RETAIN_UNSUPPORTED,
                            "Will Retain 1 while retain_available is false [MQTT-3.2.2-13]");
        return false;
    }
    return true;
}

/* The ClientID: the CONNECT's, or one assigned (into gen, 32 bytes) when it is empty and
 * the level allows that. OUT: *id, *assigned. False when c was refused. */
static bool client_identifier(mql_conn *c, const mql_connect *cn, uint64_t now, char *gen,
                              mql_bytes *id, bool *assigned)
{
    mql_broker *b = c->b;
    *id = cn->client_id;
    *assigned = false;
    if (id->len != 0)
        return true;
    if (cn->version == MQL_V31 || (cn->version != MQL_V5 && !cn->clean_start)) {
        /* [v3.1.1 MQTT-3.1.3-8]; MQTT 3.1 (section 3.1, Client Identifier) requires 1 to
         * 23 characters whatever the clean session flag */
        mql_notice("client.refused",
                   cn->version == MQL_V31
                       ? "client (%s) refused: empty ClientID (MQTT 3.1 needs 1 to 23 "
                         "characters)"
                       : "client (%s) refused: empty ClientID needs clean session 1 "
                         "[v3.1.1 MQTT-3.1.3-8]",
                   c->peer);
        refuse(c, MQL_E_CLIENT_ID_INVALID, NULL);
        return false;
    }
    /* [v3.1.1 MQTT-3.1.3-6] [MQTT-3.1.3-6] */
    snprintf(gen, 32, "mqlite-%08x%04x", (unsigned)now, ++b->id_counter & 0xffff);
    *id = (mql_bytes){(const uint8_t *)gen, (uint32_t)strlen(gen)};
    *assigned = true;
    return true;
}

/* May this connection log in? MQL_OK, or the error to refuse it with (OUT: *why).
 * use_identity_as_username (as mosquitto): the verified client certificate's Common Name
 * (OUT: identity, cap bytes) replaces the CONNECT's user name for authorisation and the
 * ACL; the password file is not consulted. A client without one is not authorised. */
static mql_err login_decision(mql_conn *c, const mql_connect *cn, char *identity, size_t cap,
                              const char **why)
{
    const mql_broker *b = c->b;
    if (b->cfg.listeners[c->listener].use_identity_as_username) {
        mql_tls_peer tp = mql_link_peer_cn(c->link, identity, cap);
        *why = mql_tls_peer_str(tp);
        return tp == MQL_TLS_PEER_OK ? MQL_OK : MQL_E_NOT_AUTHORIZED;
    }
    if (cn->has_username && b->passwd != NULL) {
        if (c->auth == AUTH_BLOCKED) {
            *why = "too many failed logins from this address (rate limited)";
            return MQL_E_NOT_AUTHORIZED;
        }
        *why = "wrong user name or password";
        return c->auth != AUTH_OK ? MQL_E_BAD_USER_PASS : MQL_OK;
    }
    if (!cn->has_username && !mql_config_allow_anonymous(&b->cfg, c->listener)) {
        *why = b->cfg.listeners[c->listener].allow_anonymous == 0
                   ? "no user name and this listener has allow_anonymous false"
                   : "no user name and allow_anonymous is false";
        return MQL_E_NOT_AUTHORIZED;
    }
    if (cn->has_username && !mql_config_allow_anonymous(&b->cfg, c->listener)) {
        *why = "allow_anonymous is false and there is no password_file to check against";
        return MQL_E_BAD_USER_PASS;
    }
    return MQL_OK;
}

/* Authorize the login and keep the user name (the certificate's, or the CONNECT's). False
 * when c was refused or closed. */
static bool authorize(mql_conn *c, const mql_connect *cn, mql_bytes id)
{
    const mql_broker *b = c->b;
    char identity[256];
    const char *why = NULL;
    mql_err err = login_decision(c, cn, identity, sizeof(identity), &why);
    if (err != MQL_OK) {
        mql_notice("client.refused", "client \"%.*s\" (%s) user \"%.*s\" refused: %s", (int)id.len,
                   id.p, c->peer, (int)cn->username.len,
                   cn->username.p ? (const char *)cn->username.p : "", why);
        refuse(c, err, why); /* CONNACK 0x86 / 0x87, or 0x04 / 0x05 */
        return false;
    }
    if (b->cfg.listeners[c->listener].use_identity_as_username) {
        if ((c->username = strdup(identity)) == NULL)
            goto nomem;
        mql_info("client.identity", "client \"%.*s\" (%s): user name \"%s\" from its certificate",
                 (int)id.len, id.p, c->peer, identity);
    } else if (cn->has_username) {
        c->username = malloc((size_t)cn->username.len + 1);
        if (c->username == NULL)
            goto nomem;
        memcpy(c->username, cn->username.p, cn->username.len);
        c->username[cn->username.len] = '\0';
    }
    return true;
nomem:
    mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
    return false;
}

/* The keep alive: the client's, or max_keepalive (MQTT 5 tells it in CONNACK's Server Keep
 * Alive, set in ack; MQTT 3.1.1 is refused above it). False when c was refused. */
static bool negotiate_keepalive(mql_conn *c, const mql_connect *cn, mql_bytes id, mql_props *ack)
{
    const mql_broker *b = c->b;
    uint16_t keepalive = cn->keep_alive;
    /* keepalive 0 ("no keep alive") is overridden only when the operator set a limit */
    if (b->cfg.max_keepalive != 0 &&
        (keepalive > b->cfg.max_keepalive || (keepalive == 0 && b->cfg.max_keepalive < 65535))) {
        if (cn->version == MQL_V5) {
            keepalive = b->cfg.max_keepalive; /* Server Keep Alive [MQTT-3.2.2-21] */
            ack->present |= MQL_PBIT(MQL_PROP_SERVER_KEEP_ALIVE);
            ack->server_keep_alive = keepalive;
        } else if (keepalive > b->cfg.max_keepalive) {
            mql_notice("client.refused",
                       "client \"%.*s\" (%s) refused: keepalive %u exceeds max_keepalive %u",
                       (int)id.len, id.p, c->peer, cn->keep_alive, b->cfg.max_keepalive);
            refuse(c, MQL_E_CLIENT_ID_INVALID, NULL);
            return false;
        }
    }
    c->keepalive = keepalive;
    return true;
}

/* Close the connection `old` whose session c takes over [MQTT-3.1.4-3]. */
static void take_over(mql_conn *c, mql_session *s, mql_conn *old, bool clean_start, uint64_t now)
{
    mql_broker *b = c->b;
    takeover_diagnostics(b, s, old, c);
    b->stats.clients_connected--; /* the old connection no longer counts */
    mql_session_detach(s);
    old->session = NULL;
    s->disconnected_at = now;
    /*
     * A client that sends DISCONNECT and reconnects at once can have its new CONNECT
     * handled before the old connection's DISCONNECT (another thread, or still in the
     * socket): its will would be published although it disconnected normally
     * [MQTT-3.1.2-10]. So a will that would be published now waits: the old connection
     * is read for TAKEOVER_DRAIN_MS more (only a DISCONNECT counts, see
     * drain_for_disconnect), and the will goes out when it closes (conn_closed) unless
     * a DISCONNECT 0x00 came. A will that is not published anyway (delayed, and the
     * session goes on) is dropped now.
     */
    bool goes_on = !clean_start;
    if (old->will != NULL && !old->will_suppressed && !(old->will_delay > 0 && goes_on)) {
        old->will_deferred = true;
        old->drain_until = now + TAKEOVER_DRAIN_MS;
    } else {
        release_will(b, old, s, goes_on);
    }
    snprintf(old->why, sizeof(old->why), "session taken over by %s", c->peer);
    if (old->version == MQL_V5 && old->state == CS_ACTIVE)
        mql_proto_send_disconnect(old, mql_err_reason(MQL_E_TAKEN_OVER), "session taken over");
    old->state = CS_CLOSING;
    old->closing_since = now;
    /* flush: what it was already sent (its CONNACK, say) still reaches it; a draining
     * connection is closed when its drain ends (mql_conn_tick) or by its peer */
    if (!old->will_deferred)
        mql_link_close(old->link, true);
}

/* The ClientID table decides: takeover, resume or new [MQTT-3.1.4-3]. Returns the session
 * for c (OUT: *present, whether it existed), or NULL when c was refused or closed. */
static mql_session *find_session(mql_conn *c, const mql_connect *cn, mql_bytes id, uint64_t now,
                                 bool *present)
{
    mql_broker *b = c->b;
    mql_session *s = mql_clients_find(b, id.p, id.len);
    *present = false;
    if (s != NULL && s->bridge != NULL) {
        mql_warning("client.refused",
                    "client \"%s\" (%s) refused: the ClientID is the local session of bridge "
                    "\"%s\"",
                    s->client_id, c->peer, s->bridge_name);
        refuse(c, MQL_E_CLIENT_ID_INVALID, "ClientID reserved for a bridge");
        return NULL;
    }
    if (s != NULL && mql_session_attached(s)) {
        mql_conn *old = s->sink_ctx; /* a client's session: its sink is a connection */
        if (b->cfg.client_id_conflict == MQL_CONFLICT_REJECT_NEW) {
            mql_warning("client.id_conflict",
                        "client \"%s\" (%s) refused: ClientID in use by %s "
                        "(client_id_conflict reject_new)",
                        s->client_id, c->peer, old->peer);
            refuse(c, MQL_E_CLIENT_ID_INVALID, "ClientID in use");
            return NULL;
        }
        take_over(c, s, old, cn->clean_start, now);
    }
    if (s != NULL && !mql_session_attached(s) && s->expiry == 0) {
        /* taken over: a session with expiry 0 ended with its connection [MQTT-3.1.2-23] */
        mql_clients_end(b, s);
        s = NULL;
    }
    if (s != NULL && cn->clean_start) {
        mql_clients_end(b, s); /* [MQTT-3.1.2-4] [v3.1.1 MQTT-3.1.2-6] */
        s = NULL;
    }
    if (s != NULL) {
        *present = true; /* [MQTT-3.2.2-3] [v3.1.1 MQTT-3.2.2-2] */
        if (s->will != NULL) {
            mql_msg_unref(s->will); /* back before the will delay: no will [MQTT-3.1.3-9] */
            s->will = NULL;
        }
        return s;
    }
    if ((s = mql_clients_new(b, id.p, id.len)) == NULL)
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
    return s;
}

/* Attach c to s with the CONNECT's expiry and will. False when c was closed. */
static bool attach_session(mql_conn *c, mql_session *s, const mql_connect *cn, uint64_t now)
{
    mql_broker *b = c->b;
    s->version = cn->version;
    if (cn->version == MQL_V5) {
        s->expiry =
            (cn->props.present & MQL_PBIT(MQL_PROP_SESSION_EXPIRY)) ? cn->props.session_expiry : 0;
    } else {
        s->expiry = cn->clean_start             ? 0
                    : b->cfg.max_session_expiry ? b->cfg.max_session_expiry
                                                : MQL_SESSION_NEVER;
    }
    if (cn->will) {
        c->will = make_will(cn, now);
        if (c->will == NULL) {
            mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
            return false;
        }
        if (cn->version == MQL_V5 && (cn->will_props.present & MQL_PBIT(MQL_PROP_WILL_DELAY)))
            c->will_delay = cn->will_props.will_delay;
    }
    mql_session_attach(s, &client_sink, c, c->client_receive_max, 2);
    c->session = s;
    c->state = CS_ACTIVE;
    free(s->username);
    s->username = c->username ? strdup(c->username) : NULL;
    (void)mql_session_mirror(b, s);
    b->stats.connects_total++;
    b->stats.clients_connected++;
    if (b->stats.clients_connected > b->stats.clients_max)
        b->stats.clients_max = b->stats.clients_connected;
    return true;
}

/* Topic aliases both ways (MQTT 5): ours in ack, the client's limit for ours. */
static void negotiate_aliases(mql_conn *c, const mql_connect *cn, mql_props *ack)
{
    const mql_broker *b = c->b;
    c->alias_max = b->cfg.max_topic_alias;
    ack->topic_alias_maximum = c->alias_max;
    if (c->alias_max == 0)
        ack->present &= ~MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM);
    if (cn->props.present & MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM)) {
        c->out_alias_max = cn->props.topic_alias_maximum < b->cfg.max_topic_alias_broker
                               ? cn->props.topic_alias_maximum
                               : b->cfg.max_topic_alias_broker;
        if (c->out_alias_max > 0) {
            c->out_aliases = calloc((size_t)c->out_alias_max + 1, sizeof(mql_bytes));
            if (c->out_aliases == NULL)
                c->out_alias_max = 0;
        }
    }
}

/* The MQTT 5 CONNACK properties (into ack; respinfo, 160 bytes, holds the Response
 * Information): what this server supports, limits, an assigned ClientID. */
static void connack_properties(mql_conn *c, const mql_connect *cn, const mql_session *s,
                               bool assigned, mql_props *ack, char *respinfo)
{
    const mql_broker *b = c->b;
    ack->present |= MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM) | MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM);
    /* absent means available [MQTT-3.2.2-?]: say so only for what is switched off */
    if (!b->cfg.shared_subscriptions) {
        ack->present |= MQL_PBIT(MQL_PROP_SHARED_SUB_AVAILABLE);
        ack->shared_sub_available = 0;
    }
    if (!b->cfg.subscription_identifiers) {
        ack->present |= MQL_PBIT(MQL_PROP_SUB_ID_AVAILABLE);
        ack->sub_id_available = 0;
    }
    if (!b->cfg.wildcard_subscriptions) {
        ack->present |= MQL_PBIT(MQL_PROP_WILDCARD_SUB_AVAILABLE);
        ack->wildcard_sub_available = 0;
    }
    /* our Receive Maximum, as mosquitto: max_inflight_messages (0: no limit) */
    ack->receive_maximum =
        b->cfg.max_inflight_messages ? (uint16_t)b->cfg.max_inflight_messages : 65535;
    negotiate_aliases(c, cn, ack);
    if (b->cfg.max_qos < 2) {
        ack->present |= MQL_PBIT(MQL_PROP_MAXIMUM_QOS);
        ack->maximum_qos = b->cfg.max_qos;
    }
    if (!b->cfg.retain_available) {
        ack->present |= MQL_PBIT(MQL_PROP_RETAIN_AVAILABLE);
        ack->retain_available = 0;
    }
    if (b->cfg.max_packet_size != 0) {
        ack->present |= MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE);
        ack->maximum_packet_size = b->cfg.max_packet_size;
    }
    if (assigned) {
        ack->present |= MQL_PBIT(MQL_PROP_ASSIGNED_CLIENT_ID); /* [MQTT-3.2.2-16] */
        ack->assigned_client_id = (mql_bytes){(const uint8_t *)s->client_id, s->client_id_len};
    }
    if ((cn->props.present & MQL_PBIT(MQL_PROP_REQUEST_RESPONSE_INFO)) &&
        cn->props.request_response_info == 1) {
        /* a topic prefix of the client's own for Response Topics (section 4.10) */
        int n = snprintf(respinfo, 160, "response/%s", s->client_id);
        if (n > 0 && n < 160) {
            ack->present |= MQL_PBIT(MQL_PROP_RESPONSE_INFO);
            ack->response_info = (mql_bytes){(const uint8_t *)respinfo, (uint32_t)n};
        }
    }
    c->aliases = calloc((size_t)c->alias_max + 1, sizeof(mql_bytes));
    if (c->aliases == NULL)
        c->alias_max = 0;
}

/* Send the CONNACK (ack: MQTT 5 properties). False when not even the plain CONNACK fits
 * the client's Maximum Packet Size: then c is closed. */
static bool send_connack(mql_conn *c, const mql_session *s, bool present, mql_props *ack)
{
    enum mql_send_result sent =
        mql_proto_send_connack(c, present, 0, c->version == MQL_V5 ? ack : NULL);
    if (sent == MQL_SEND_TOO_LARGE && (ack->present & MQL_PBIT(MQL_PROP_RESPONSE_INFO))) {
        /* Response Information is optional: leave it out rather than exceed the client's
         * Maximum Packet Size [MQTT-3.1.2-24] */
        ack->present &= ~MQL_PBIT(MQL_PROP_RESPONSE_INFO);
        sent = mql_proto_send_connack(c, present, 0, ack);
    }
    if (sent != MQL_SEND_TOO_LARGE)
        return true;
    /* Even the plain CONNACK exceeds it: the client cannot take part in MQTT with us.
     * Close without CONNACK (nothing else may precede it [MQTT-3.2.0-1]) and without
     * the will, as for a refused connection. Before this check the broker kept such a
     * connection open without a CONNACK (found by tests/fuzz/fuzz_conn). */
    mql_notice("client.refused",
               "client \"%s\" (%s) refused: its Maximum Packet Size %u is smaller than the "
               "CONNACK; closing [MQTT-3.1.2-24]",
               s->client_id, c->peer, c->client_max_packet);
    c->will_suppressed = true;
    mql_proto_close(c, MQL_CLOSE_ABORT, MQL_OK, "Maximum Packet Size too small for the CONNACK");
    return false;
}

/* CONNECT -> CONNACK: check, identify, authorize, keep alive, session, CONNACK, resume. */
static void handle_connect(mql_conn *c, const mql_connect *cn)
{
    mql_broker *b = c->b;
    char gen[32], respinfo[160];
    mql_bytes id;
    bool assigned, present;
    uint64_t now = mql_now_ms();
    mql_props ack;
    memset(&ack, 0, sizeof(ack));
    if (!check_properties(c, cn) || !client_identifier(c, cn, now, gen, &id, &assigned) ||
        !authorize(c, cn, id) || !negotiate_keepalive(c, cn, id, &ack))
        return;
    mql_session *s = find_session(c, cn, id, now, &present);
    if (s == NULL || !attach_session(c, s, cn, now))
        return;
    if (cn->version == MQL_V5)
        connack_properties(c, cn, s, assigned, &ack, respinfo);
    if (!send_connack(c, s, present, &ack))
        return;
    mql_notice("client.connect",
               "client \"%s\" (%s) connected: %s%s, clean %s %d, keepalive %u, session %s%s",
               s->client_id, c->peer, vname(cn->version), cn->bridge ? " bridge" : "",
               cn->version == MQL_V5 ? "start" : "session", cn->clean_start, c->keepalive,
               present ? "resumed" : "new", cn->will ? ", with will" : "");
    if (cn->version == MQL_V5)
        mql_debug("client.negotiated",
                  "client \"%s\": session expiry %u, receive maximum %u, maximum packet "
                  "size %u, topic alias maximum %u, problem info %d",
                  s->client_id, s->expiry, c->client_receive_max, c->client_max_packet,
                  c->alias_max, c->request_problem_info);
    mql_session_resume(b, s);
}

/* ---- PUBLISH and acknowledgements ---- */

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
    (void)mql_router_deliver(rc->c->b, rc->c->session, msg, qos, true, &id, id ? 1 : 0, NULL,
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
    if (b->acl != NULL && !mql_acl_can_subscribe(b->acl, c->username, s->client_id, e->filter)) {
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
    } else if (c->peer_bridge) {
        /* what mosquitto gives a bridge: its own messages are not echoed back to it (no
         * loop), retain flags arrive as published */
        tmpl.no_local = true;
        tmpl.retain_as_published = true;
    }
    mql_sub *sub = mql_topics_subscribe(b->topics, e->filter, &tmpl, existed);
    if (sub == NULL)
        return 0x80;
    if (!*existed)
        mql_session_link_sub(s, sub);
    *wait = mql_session_mirror_sub(b, s, sub) || *wait;
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
        mql_topics_retained(b->topics, f, retained_cb, &rc);
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
        mql_sub *sub = mql_topics_find(b->topics, f, s);
        if (sub == NULL) {
            codes[i] = 0x11; /* No subscription existed */
            continue;
        }
        mql_session_unlink_sub(s, sub);
        wait = mql_session_mirror_sub_del(b, s, sub->filter) || wait;
        mql_topics_remove(b->topics, sub); /* [MQTT-3.10.4-1] */
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
        c->will_suppressed = d->reason != 0x04; /* 0x04: disconnect with will message */
    } else {
        c->will_suppressed = true; /* [v3.1.1 MQTT-3.1.2-10] */
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
        handle_connect(c, &p->u.connect);
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
 * stall every other client. The result waits in c->auth for handle_connect.
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
    if (c->listener >= 0 && b->cfg.listeners[c->listener].use_identity_as_username)
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
        c->auth = AUTH_BAD;
        return;
    }
    memcpy(user, cn->username.p, cn->username.len);
    user[cn->username.len] = '\0';
    pthread_mutex_lock(&b->lock);
    bool allowed = mql_ratelimit_allow(b->ratelimit, host, mql_now_ms());
    pthread_mutex_unlock(&b->lock);
    if (!allowed) {
        c->auth = AUTH_BLOCKED;
        return;
    }
    pthread_rwlock_rdlock(&b->auth_lock);
    if (b->passwd != NULL)
        c->auth =
            cn->has_password && mql_passwd_check(b->passwd, user, cn->password.p, cn->password.len)
                ? AUTH_OK
                : AUTH_BAD;
    pthread_rwlock_unlock(&b->auth_lock);
    pthread_mutex_lock(&b->lock);
    if (c->auth == AUTH_BAD)
        mql_ratelimit_fail(b->ratelimit, host, mql_now_ms());
    else if (c->auth == AUTH_OK)
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
            c->will_suppressed = true;
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
    if (c->state == CS_CLOSING && c->will_deferred && c->drain_until != 0) {
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
    if (!c->prechecked) { /* only this (serialised) receive path touches prechecked */
        c->prechecked = true;
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
        b->stats.clients_connected--;
        mql_session_detach(s);
        s->disconnected_at = mql_now_ms();
        bool ends = s->expiry == 0;
        release_will(b, c, s, !ends);
        mql_notice("client.disconnect", "client \"%s\" (%s) disconnected: %s%s", s->client_id,
                   c->peer, c->why[0] ? c->why : "connection closed by peer",
                   ends ? "" : "; session kept");
        if (ends)
            mql_clients_end(b, s); /* [MQTT-3.1.2-23] [v3.1.1 MQTT-3.1.2-6] */
        else
            (void)mql_session_mirror(b, s); /* disconnect time, expiry from DISCONNECT */
    } else if (c->state == CS_NEW) {
        mql_debug("conn.close", "connection from %s closed before CONNECT", c->peer);
    } else if (c->will_deferred) {
        release_will(b, c, NULL, false); /* taken over: published unless DISCONNECT came */
    }
    mql_msg_unref(c->will);
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->nconns--;
    b->listeners[c->listener].nconns--;
    count_closed(b, c->listener);
    mql_proto_link_closed(c);
    pthread_cond_broadcast(&b->tick_cv);
    pthread_mutex_unlock(&b->lock);
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
            if (c->drain_until != 0 && now >= c->drain_until) {
                c->drain_until = 0; /* taken over: the drain is over, close */
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
