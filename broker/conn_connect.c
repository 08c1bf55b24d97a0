/*
 * conn_connect.c - CONNECT -> CONNACK on the server side, as short steps: check the
 * properties, the ClientID, authorize, keep alive, find or take over the session (the
 * ClientID table decides [MQTT-3.1.4-3]), attach it, the CONNACK's properties, send. Every
 * refusal before CONNACK goes through one function (refuse). Also the sink that attaches a
 * client's session to its connection, and what happens to a connection's will when it
 * ends or is replaced.
 *
 * Locking: everything here runs under broker->lock (from conn.c's packet handler or
 * conn_closed). Performance assumption: a CONNECT costs a few allocations (user name,
 * will, alias tables); the password check itself ran before the lock (conn.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_connect.h"

#include "broker_int.h"
#include "clients.h"
#include "router.h"
#include "platform/clock.h"
#include "platform/log.h"

#define TAKEOVER_DRAIN_MS 500 /* see take_over */

static const char *vname(uint8_t v)
{
    return v == MQL_V5 ? "v5" : v == MQL_V311 ? "v3.1.1" : v == MQL_V31 ? "v3.1" : "v?";
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

static mql_msg *make_will(const mql_connect *cn, uint64_t now)
{
    return mql_msg_new(cn->will_topic, cn->will_payload, cn->will_qos, cn->will_retain,
                       cn->version == MQL_V5 ? &cn->will_props : NULL, now);
}

void mql_conn_release_will(mql_broker *b, mql_conn *c, mql_session *s, bool session_goes_on)
{
    mql_msg *will = mql_client_of(c)->will;
    mql_client_of(c)->will = NULL;
    if (will == NULL)
        return;
    if (mql_client_of(c)->will_suppressed) {
        mql_msg_unref(will); /* DISCONNECT 0x00 deletes the will [MQTT-3.1.2-10] */
        return;
    }
    if (mql_client_of(c)->will_delay > 0 && session_goes_on && s != NULL) {
        mql_msg_unref(s->will);
        s->will = will; /* published when the delay passes, unless the client returns */
        s->will_at = mql_now_ms() + (uint64_t)mql_client_of(c)->will_delay * 1000u;
        return;
    }
    mql_router_publish_will(&b->core, will); /* [MQTT-3.1.2-8] */
    mql_msg_unref(will);
}

static void takeover_diagnostics(mql_broker *b, mql_session *s, const mql_conn *old,
                                 const mql_conn *c)
{
    uint64_t now = mql_now_ms();
    b->core.stats.takeovers++;
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
    mql_link_last_words(c->link);
    mql_link_close(c->link, true);
}

/* CONNECT's level and properties, and what MQTT 5 refuses before anything else. False when
 * c was closed. */
static bool check_properties(mql_conn *c, const mql_connect *cn)
{
    const mql_broker *b = c->b;
    c->version = cn->version;
    mql_client_of(c)->peer_bridge = cn->bridge;
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
    if (b->cfg.listeners[mql_client_of(c)->listener].use_identity_as_username) {
        mql_tls_peer tp = mql_link_peer_cn(c->link, identity, cap);
        *why = mql_tls_peer_str(tp);
        return tp == MQL_TLS_PEER_OK ? MQL_OK : MQL_E_NOT_AUTHORIZED;
    }
    if (cn->has_username && b->passwd != NULL) {
        if (mql_client_of(c)->auth == AUTH_BLOCKED) {
            *why = "too many failed logins from this address (rate limited)";
            return MQL_E_NOT_AUTHORIZED;
        }
        *why = "wrong user name or password";
        return mql_client_of(c)->auth != AUTH_OK ? MQL_E_BAD_USER_PASS : MQL_OK;
    }
    if (!cn->has_username && !mql_config_allow_anonymous(&b->cfg, mql_client_of(c)->listener)) {
        *why = b->cfg.listeners[mql_client_of(c)->listener].allow_anonymous == 0
                   ? "no user name and this listener has allow_anonymous false"
                   : "no user name and allow_anonymous is false";
        return MQL_E_NOT_AUTHORIZED;
    }
    if (cn->has_username && !mql_config_allow_anonymous(&b->cfg, mql_client_of(c)->listener)) {
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
    if (b->cfg.listeners[mql_client_of(c)->listener].use_identity_as_username) {
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
    b->core.stats.clients_connected--; /* the old connection no longer counts */
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
    if (mql_client_of(old)->will != NULL && !mql_client_of(old)->will_suppressed &&
        !(mql_client_of(old)->will_delay > 0 && goes_on)) {
        mql_client_of(old)->will_deferred = true;
        mql_client_of(old)->drain_until = now + TAKEOVER_DRAIN_MS;
    } else {
        mql_conn_release_will(b, old, s, goes_on);
    }
    snprintf(old->why, sizeof(old->why), "session taken over by %s", c->peer);
    if (old->version == MQL_V5 && old->state == CS_ACTIVE) {
        mql_proto_send_disconnect(old, mql_err_reason(MQL_E_TAKEN_OVER), "session taken over");
        mql_link_last_words(old->link);
    }
    old->state = CS_CLOSING;
    old->closing_since = now;
    /* flush: what it was already sent (its CONNACK, say) still reaches it; a draining
     * connection is closed when its drain ends (mql_conn_tick) or by its peer */
    if (!mql_client_of(old)->will_deferred)
        mql_link_close(old->link, true);
}

/* The ClientID table decides: takeover, resume or new [MQTT-3.1.4-3]. Returns the session
 * for c (OUT: *present, whether it existed), or NULL when c was refused or closed. */
static mql_session *find_session(mql_conn *c, const mql_connect *cn, mql_bytes id, uint64_t now,
                                 bool *present)
{
    mql_broker *b = c->b;
    mql_session *s = mql_clients_find(&b->core, id.p, id.len);
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
        mql_clients_end(&b->core, s);
        s = NULL;
    }
    if (s != NULL && cn->clean_start) {
        mql_clients_end(&b->core, s); /* [MQTT-3.1.2-4] [v3.1.1 MQTT-3.1.2-6] */
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
    if ((s = mql_clients_new(&b->core, id.p, id.len)) == NULL)
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
        mql_client_of(c)->will = make_will(cn, now);
        if (mql_client_of(c)->will == NULL) {
            mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
            return false;
        }
        if (cn->version == MQL_V5 && (cn->will_props.present & MQL_PBIT(MQL_PROP_WILL_DELAY)))
            mql_client_of(c)->will_delay = cn->will_props.will_delay;
    }
    mql_session_attach(s, &client_sink, c, c->client_receive_max, 2);
    c->session = s;
    c->state = CS_ACTIVE;
    free(s->username);
    s->username = c->username ? strdup(c->username) : NULL;
    (void)mql_session_mirror(&b->core, s);
    b->core.stats.connects_total++;
    b->core.stats.clients_connected++;
    if (b->core.stats.clients_connected > b->core.stats.clients_max)
        b->core.stats.clients_max = b->core.stats.clients_connected;
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
    mql_client_of(c)->will_suppressed = true;
    mql_proto_close(c, MQL_CLOSE_ABORT, MQL_OK, "Maximum Packet Size too small for the CONNACK");
    return false;
}

void mql_conn_connect(mql_conn *c, const mql_connect *cn)
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
    mql_session_resume(&b->core, s);
}
