/*
 * conn.c - one client connection's protocol state machine, from CONNECT to close.
 *
 * The link delivers raw bytes (conn_data). Complete frames are found with mql_frame_scan,
 * decoded with mql_decode outside the broker lock, and handled under it, one handler per
 * packet type. Every way a connection ends goes through mql_conn_close (we close) or
 * conn_closed (the link is gone), and the decisions about the will and the session are
 * made in exactly one place: conn_closed, or the takeover in handle_connect.
 *
 * Protocol violations: MQTT 3.1.1 closes the network connection [v3.1.1 MQTT-4.8.0-1];
 * MQTT 5 first sends CONNACK (before CONNECT is accepted) or DISCONNECT with the reason
 * code [MQTT-4.13.1-1], then closes.
 *
 * Locking: see internal.h. conn_data takes broker->lock once per batch of frames.
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

static const char *cid(const mql_conn *c)
{
    return c->session ? c->session->client_id : "";
}

enum send_result { SEND_FAILED = 0, SEND_OK, SEND_TOO_LARGE };

/* Encode pkt and queue it on the link. A packet larger than the client's Maximum Packet
 * Size is not sent [MQTT-3.1.2-24] (SEND_TOO_LARGE). */
static enum send_result send_packet(mql_conn *c, const mql_packet *pkt)
{
    uint8_t stack[512];
    uint8_t version = c->version ? c->version : MQL_V311;
    size_t n = mql_encode(stack, sizeof(stack), pkt, version);
    if (n == 0)
        return SEND_FAILED;
    if (c->client_max_packet != 0 && n > c->client_max_packet)
        return SEND_TOO_LARGE;
    uint8_t *buf = stack;
    if (n > sizeof(stack)) {
        buf = malloc(n);
        if (buf == NULL)
            return SEND_FAILED;
        (void)mql_encode(buf, n, pkt, version);
    }
    bool ok = mql_link_send(c->link, buf, n) == MQL_OK;
    if (ok)
        c->b->stats.bytes_sent += n;
    if (buf != stack)
        free(buf);
    return ok ? SEND_OK : SEND_FAILED;
}

bool mql_conn_send_packet(mql_conn *c, const mql_packet *pkt)
{
    return send_packet(c, pkt) == SEND_OK;
}

void mql_conn_send_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = type;
    p.u.ack.packet_id = pid;
    p.u.ack.reason = reason;
    (void)send_packet(c, &p);
}

bool mql_conn_send_publish(mql_conn *c, mql_msg *msg, uint8_t qos, bool retain, bool dup,
                           uint16_t pid, const uint32_t *ids, uint8_t n_ids)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_PUBLISH;
    mql_publish *pub = &p.u.publish;
    pub->qos = qos;
    pub->dup = dup;
    pub->retain = retain;
    pub->topic = msg->topic;
    pub->packet_id = pid;
    pub->payload = msg->payload;
    char remote[512];
    char *remote_heap = NULL; /* a mapped topic longer than `remote` */
    if (c->bridge != NULL && !mql_bridge_map_out(c->bridge, msg->topic, remote, sizeof(remote),
                                                 &remote_heap, &pub->topic))
        return true; /* no rule sends it (the configuration changed): nothing to deliver */
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
            if (a.len == msg->topic.len && memcmp(a.p, msg->topic.p, a.len) == 0) {
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
    enum send_result r = send_packet(c, &p);
    free(remote_heap);
    if (r == SEND_OK && new_alias) {
        uint8_t *copy = malloc(msg->topic.len);
        if (copy != NULL) {
            memcpy(copy, msg->topic.p, msg->topic.len);
            c->out_aliases[alias] = (mql_bytes){.p = copy, .len = msg->topic.len};
            c->out_alias_used = alias;
        } else {
            c->out_alias_max = 0; /* cannot remember it: stop using aliases */
        }
    }
    if (r == SEND_OK) {
        c->b->stats.msgs_sent++;
    } else if (r == SEND_TOO_LARGE) {
        c->b->stats.msgs_dropped++;
        mql_info("client.too_large",
                 "client \"%s\" (%s): message on \"%.*s\" (%u byte payload) exceeds the "
                 "client's Maximum Packet Size %u; discarded [MQTT-3.1.2-25]",
                 cid(c), c->peer, (int)msg->topic.len, msg->topic.p, msg->payload.len,
                 c->client_max_packet);
        return false;
    }
    return true;
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
    return mql_conn_send_publish(ctx, msg, qos, retain, dup, pid, ids, n_ids);
}

static void client_ack(void *ctx, uint8_t type, uint16_t pid, uint8_t reason)
{
    mql_conn_send_ack(ctx, type, pid, reason);
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

static void send_disconnect(mql_conn *c, uint8_t reason, const char *why)
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
    (void)send_packet(c, &p);
}

static enum send_result send_connack(mql_conn *c, bool present, uint8_t reason,
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
    return send_packet(c, &p);
}

void mql_conn_close(mql_conn *c, mql_err reason, const char *why)
{
    if (c->state == CS_CLOSING)
        return;
    if (why != NULL)
        snprintf(c->why, sizeof(c->why), "%s", why);
    else
        snprintf(c->why, sizeof(c->why), "%s", mql_err_str(reason));
    bool flush = false;
    if (c->version == MQL_V5 && reason != MQL_OK) {
        if (c->state != CS_NEW)
            send_disconnect(c, mql_err_reason(reason), why);
        else if (c->bridge == NULL) /* a bridge's uplink is the client side */
            send_connack(c, false, mql_err_reason(reason), NULL); /* [MQTT-4.13.1-1] */
        flush = true;
    }
    c->state = CS_CLOSING;
    c->closing_since = mql_now_ms();
    mql_link_close(c->link, flush);
}

/* A protocol violation by the peer (a client, or the remote broker of a bridge's uplink):
 * log it in plain words and close. */
void mql_conn_violation(mql_conn *c, mql_err err, const char *why)
{
    if (c->bridge != NULL)
        mql_warning("bridge.violation", "bridge \"%s\" (%s): the remote broker: %s: %s; closing",
                    c->bridge->conf->name, c->peer, mql_err_str(err), why ? why : "no detail");
    else
        mql_notice("client.violation", "client \"%s\" (%s): %s: %s; closing the connection", cid(c),
                   c->peer, mql_err_str(err), why ? why : "no detail");
    mql_conn_close(c, err, why);
}

#define violation mql_conn_violation

/* Reason Code 0x10 of PUBACK/PUBREC: accepted, but no subscriber matched (not an error). */
#define MQL_RC_NO_MATCHING_SUBSCRIBERS 0x10

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

static void handle_connect(mql_conn *c, const mql_connect *cn)
{
    mql_broker *b = c->b;
    char gen[32];
    char respinfo[160];
    mql_bytes id = cn->client_id;
    bool assigned = false;
    uint64_t now = mql_now_ms();
    mql_props ack;
    memset(&ack, 0, sizeof(ack));

    c->version = cn->version;
    c->peer_bridge = cn->bridge;
    if (cn->version == MQL_V5) {
        c->request_problem_info = !(cn->props.present & MQL_PBIT(MQL_PROP_REQUEST_PROBLEM_INFO)) ||
                                  cn->props.request_problem_info != 0;
        if (cn->props.present & MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM))
            c->client_receive_max = cn->props.receive_maximum;
        if (cn->props.present & MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE))
            c->client_max_packet = cn->props.maximum_packet_size;
        if (cn->props.present & MQL_PBIT(MQL_PROP_AUTH_METHOD)) {
            violation(c, MQL_E_BAD_AUTH_METHOD,
                      "enhanced authentication is not configured on this broker");
            return;
        }
        /* A will the server could not publish as asked is refused up front, before the
         * session is touched (found by tests/fuzz/fuzz_conn). 3.1.1 has no such rule: its
         * will is delivered at the subscribers' (capped) QoS like any message. */
        if (cn->will && cn->will_qos > b->cfg.max_qos) {
            violation(c, MQL_E_QOS_UNSUPPORTED,
                      "Will QoS above the server's Maximum QoS (max_qos) [MQTT-3.2.2-12]");
            return;
        }
        if (cn->will && cn->will_retain && !b->cfg.retain_available) {
            violation(c, MQL_E_RETAIN_UNSUPPORTED,
                      "Will Retain 1 while retain_available is false [MQTT-3.2.2-13]");
            return;
        }
    }
    if (id.len == 0) {
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
            c->state = CS_CLOSING;
            send_connack(c, false, mql_err_reason_v3(MQL_E_CLIENT_ID_INVALID), NULL);
            mql_link_close(c->link, true);
            return;
        }
        /* [v3.1.1 MQTT-3.1.3-6] [MQTT-3.1.3-6] */
        snprintf(gen, sizeof(gen), "mqlite-%08x%04x", (unsigned)now, ++b->id_counter & 0xffff);
        id.p = (const uint8_t *)gen;
        id.len = (uint32_t)strlen(gen);
        assigned = true;
    }
    mql_err refuse = MQL_OK;
    const char *refuse_why = NULL;
    /* use_identity_as_username (as mosquitto): the verified client certificate's Common
     * Name replaces the CONNECT's user name for authorisation and the ACL; the password
     * file is not consulted. A client without one is not authorised. */
    char identity[256];
    bool by_cert = b->cfg.listeners[c->listener].use_identity_as_username;
    if (by_cert) {
        mql_tls_peer tp = mql_link_peer_cn(c->link, identity, sizeof(identity));
        if (tp != MQL_TLS_PEER_OK) {
            refuse = MQL_E_NOT_AUTHORIZED;
            refuse_why = mql_tls_peer_str(tp);
        }
    } else if (cn->has_username && b->passwd != NULL) {
        if (c->auth == AUTH_BLOCKED) {
            refuse = MQL_E_NOT_AUTHORIZED;
            refuse_why = "too many failed logins from this address (rate limited)";
        } else if (c->auth != AUTH_OK) {
            refuse = MQL_E_BAD_USER_PASS;
            refuse_why = "wrong user name or password";
        }
    } else if (!cn->has_username && !mql_config_allow_anonymous(&b->cfg, c->listener)) {
        refuse = MQL_E_NOT_AUTHORIZED;
        refuse_why = b->cfg.listeners[c->listener].allow_anonymous == 0
                         ? "no user name and this listener has allow_anonymous false"
                         : "no user name and allow_anonymous is false";
    } else if (cn->has_username && !mql_config_allow_anonymous(&b->cfg, c->listener)) {
        refuse = MQL_E_BAD_USER_PASS;
        refuse_why = "allow_anonymous is false and there is no password_file to check against";
    }
    if (refuse != MQL_OK) {
        mql_notice("client.refused", "client \"%.*s\" (%s) user \"%.*s\" refused: %s", (int)id.len,
                   id.p, c->peer, (int)cn->username.len,
                   cn->username.p ? (const char *)cn->username.p : "", refuse_why);
        if (cn->version == MQL_V5) {
            mql_conn_close(c, refuse, refuse_why); /* CONNACK 0x86 / 0x87 */
        } else {
            c->state = CS_CLOSING;
            send_connack(c, false, mql_err_reason_v3(refuse), NULL); /* 0x04 / 0x05 */
            mql_link_close(c->link, true);
        }
        return;
    }
    if (by_cert) {
        if ((c->username = strdup(identity)) == NULL) {
            mql_conn_close(c, MQL_E_NOMEM, "out of memory");
            return;
        }
        mql_info("client.identity", "client \"%.*s\" (%s): user name \"%s\" from its certificate",
                 (int)id.len, id.p, c->peer, identity);
    } else if (cn->has_username) {
        c->username = malloc((size_t)cn->username.len + 1);
        if (c->username == NULL) {
            mql_conn_close(c, MQL_E_NOMEM, "out of memory");
            return;
        }
        memcpy(c->username, cn->username.p, cn->username.len);
        c->username[cn->username.len] = '\0';
    }
    uint16_t keepalive = cn->keep_alive;
    /* keepalive 0 ("no keep alive") is overridden only when the operator set a limit */
    if (b->cfg.max_keepalive != 0 &&
        (keepalive > b->cfg.max_keepalive || (keepalive == 0 && b->cfg.max_keepalive < 65535))) {
        if (cn->version == MQL_V5) {
            keepalive = b->cfg.max_keepalive; /* Server Keep Alive [MQTT-3.2.2-21] */
            ack.present |= MQL_PBIT(MQL_PROP_SERVER_KEEP_ALIVE);
            ack.server_keep_alive = keepalive;
        } else if (keepalive > b->cfg.max_keepalive) {
            mql_notice("client.refused",
                       "client \"%.*s\" (%s) refused: keepalive %u exceeds max_keepalive %u",
                       (int)id.len, id.p, c->peer, cn->keep_alive, b->cfg.max_keepalive);
            c->state = CS_CLOSING;
            send_connack(c, false, mql_err_reason_v3(MQL_E_CLIENT_ID_INVALID), NULL);
            mql_link_close(c->link, true);
            return;
        }
    }
    c->keepalive = keepalive;

    /* The ClientID table decides: takeover, resume or new [MQTT-3.1.4-3]. */
    mql_session *s = mql_session_find(b, id.p, id.len);
    if (s != NULL && s->bridge != NULL) {
        mql_warning("client.refused",
                    "client \"%s\" (%s) refused: the ClientID is the local session of bridge "
                    "\"%s\"",
                    s->client_id, c->peer, s->bridge->conf->name);
        if (cn->version == MQL_V5) {
            mql_conn_close(c, MQL_E_CLIENT_ID_INVALID, "ClientID reserved for a bridge");
        } else {
            c->state = CS_CLOSING;
            send_connack(c, false, mql_err_reason_v3(MQL_E_CLIENT_ID_INVALID), NULL);
            mql_link_close(c->link, true);
        }
        return;
    }
    if (s != NULL && mql_session_attached(s)) {
        mql_conn *old = s->sink_ctx; /* a client's session: its sink is a connection */
        if (b->cfg.client_id_conflict == MQL_CONFLICT_REJECT_NEW) {
            mql_warning("client.id_conflict",
                        "client \"%s\" (%s) refused: ClientID in use by %s "
                        "(client_id_conflict reject_new)",
                        s->client_id, c->peer, old->peer);
            if (cn->version == MQL_V5) {
                mql_conn_close(c, MQL_E_CLIENT_ID_INVALID, "ClientID in use");
            } else {
                c->state = CS_CLOSING;
                send_connack(c, false, mql_err_reason_v3(MQL_E_CLIENT_ID_INVALID), NULL);
                mql_link_close(c->link, true);
            }
            return;
        }
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
        bool goes_on = !cn->clean_start;
        if (old->will != NULL && !old->will_suppressed && !(old->will_delay > 0 && goes_on)) {
            old->will_deferred = true;
            old->drain_until = now + TAKEOVER_DRAIN_MS;
        } else {
            release_will(b, old, s, goes_on);
        }
        snprintf(old->why, sizeof(old->why), "session taken over by %s", c->peer);
        if (old->version == MQL_V5 && old->state == CS_ACTIVE)
            send_disconnect(old, mql_err_reason(MQL_E_TAKEN_OVER), "session taken over");
        old->state = CS_CLOSING;
        old->closing_since = now;
        /* flush: what it was already sent (its CONNACK, say) still reaches it; a draining
         * connection is closed when its drain ends (mql_conn_tick) or by its peer */
        if (!old->will_deferred)
            mql_link_close(old->link, true);
    }
    bool present = false;
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
        present = true; /* [MQTT-3.2.2-3] [v3.1.1 MQTT-3.2.2-2] */
        if (s->will != NULL) {
            mql_msg_unref(s->will); /* back before the will delay: no will [MQTT-3.1.3-9] */
            s->will = NULL;
        }
    } else {
        s = mql_session_new(b, id.p, id.len);
        if (s == NULL) {
            mql_conn_close(c, MQL_E_NOMEM, "out of memory");
            return;
        }
    }
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
            mql_conn_close(c, MQL_E_NOMEM, "out of memory");
            return;
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

    if (cn->version == MQL_V5) {
        ack.present |= MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM) | MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM);
        /* absent means available [MQTT-3.2.2-?]: say so only for what is switched off */
        if (!b->cfg.shared_subscriptions) {
            ack.present |= MQL_PBIT(MQL_PROP_SHARED_SUB_AVAILABLE);
            ack.shared_sub_available = 0;
        }
        if (!b->cfg.subscription_identifiers) {
            ack.present |= MQL_PBIT(MQL_PROP_SUB_ID_AVAILABLE);
            ack.sub_id_available = 0;
        }
        if (!b->cfg.wildcard_subscriptions) {
            ack.present |= MQL_PBIT(MQL_PROP_WILDCARD_SUB_AVAILABLE);
            ack.wildcard_sub_available = 0;
        }
        /* our Receive Maximum, as mosquitto: max_inflight_messages (0: no limit) */
        ack.receive_maximum =
            b->cfg.max_inflight_messages ? (uint16_t)b->cfg.max_inflight_messages : 65535;
        c->alias_max = b->cfg.max_topic_alias;
        ack.topic_alias_maximum = c->alias_max;
        if (c->alias_max == 0)
            ack.present &= ~MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM);
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
        if (b->cfg.max_qos < 2) {
            ack.present |= MQL_PBIT(MQL_PROP_MAXIMUM_QOS);
            ack.maximum_qos = b->cfg.max_qos;
        }
        if (!b->cfg.retain_available) {
            ack.present |= MQL_PBIT(MQL_PROP_RETAIN_AVAILABLE);
            ack.retain_available = 0;
        }
        if (b->cfg.max_packet_size != 0) {
            ack.present |= MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE);
            ack.maximum_packet_size = b->cfg.max_packet_size;
        }
        if (assigned) {
            ack.present |= MQL_PBIT(MQL_PROP_ASSIGNED_CLIENT_ID); /* [MQTT-3.2.2-16] */
            ack.assigned_client_id = id;
        }
        if ((cn->props.present & MQL_PBIT(MQL_PROP_REQUEST_RESPONSE_INFO)) &&
            cn->props.request_response_info == 1) {
            /* a topic prefix of the client's own for Response Topics (section 4.10) */
            int n = snprintf(respinfo, sizeof(respinfo), "response/%s", s->client_id);
            if (n > 0 && (size_t)n < sizeof(respinfo)) {
                ack.present |= MQL_PBIT(MQL_PROP_RESPONSE_INFO);
                ack.response_info = (mql_bytes){(const uint8_t *)respinfo, (uint32_t)n};
            }
        }
        c->aliases = calloc((size_t)c->alias_max + 1, sizeof(mql_bytes));
        if (c->aliases == NULL)
            c->alias_max = 0;
    }
    enum send_result sent = send_connack(c, present, 0, cn->version == MQL_V5 ? &ack : NULL);
    if (sent == SEND_TOO_LARGE && (ack.present & MQL_PBIT(MQL_PROP_RESPONSE_INFO))) {
        /* Response Information is optional: leave it out rather than exceed the client's
         * Maximum Packet Size [MQTT-3.1.2-24] */
        ack.present &= ~MQL_PBIT(MQL_PROP_RESPONSE_INFO);
        sent = send_connack(c, present, 0, &ack);
    }
    if (sent == SEND_TOO_LARGE) {
        /* Even the plain CONNACK exceeds it: the client cannot take part in MQTT with us.
         * Close without CONNACK (nothing else may precede it [MQTT-3.2.0-1]) and without
         * the will, as for a refused connection. Before this check the broker kept such a
         * connection open without a CONNACK (found by tests/fuzz/fuzz_conn). */
        mql_notice("client.refused",
                   "client \"%s\" (%s) refused: its Maximum Packet Size %u is smaller than the "
                   "CONNACK; closing [MQTT-3.1.2-24]",
                   s->client_id, c->peer, c->client_max_packet);
        snprintf(c->why, sizeof(c->why), "Maximum Packet Size too small for the CONNACK");
        c->will_suppressed = true;
        c->state = CS_CLOSING;
        c->closing_since = now;
        mql_link_close(c->link, false);
        return;
    }
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

/*
 * Acknowledge a PUBLISH (PUBACK/PUBREC). When handling it queued store operations that must
 * be durable first (`durable`), the ack waits in c->batch for a store barrier, which
 * conn_data requests once per batch of packets. Acks are sent in the order of their
 * PUBLISHes [MQTT-4.6.0-2] [MQTT-4.6.0-3]: once any ack waits, later ones wait behind it.
 */
static void queue_packet(mql_conn *c, const mql_packet *pkt, bool durable)
{
    if (!durable && c->batch == NULL && c->acks_waiting == 0) {
        (void)send_packet(c, pkt);
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
            mql_conn_close(c, MQL_E_NOMEM, "out of memory");
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

static void queue_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason, bool durable)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = type;
    p.u.ack.packet_id = pid;
    p.u.ack.reason = reason;
    queue_packet(c, &p, durable);
}

/* True when the store got operations since `before` that must be durable before the client
 * hears that they happened. */

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
                (void)mql_session_mirror_qos2(c->b, c->session, p.u.ack.packet_id, false);
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
    mql_broker *b = c->b;
    size_t len = 0;
    uint32_t refused = 0;
    uint8_t *out = c->version == MQL_V5 ? refuse_acks(c, ab, err, &len, &refused) : NULL;
    bool closing = out == NULL;
    if (!b->store_refusing) {
        b->store_refusing = true;
        mql_error("store.refused",
                  "the store cannot commit (%s, see store.commit): QoS 1/2 messages that must "
                  "be stored are not acknowledged as received: MQTT 5 publishers get "
                  "PUBACK/PUBREC 0x%02X, MQTT 3.1.1 connections are closed so that they "
                  "re-send; first: client \"%s\" (%s)%s",
                  mql_err_str(err), mql_err_reason(err), cid(c), c->peer,
                  closing ? ", closed" : "");
    } else {
        mql_debug("store.refused", "client \"%s\" (%s): %u acknowledgements %s", cid(c), c->peer,
                  ab->n, closing ? "withheld, closing" : "sent as refusals");
    }
    b->stats.store_refused += closing ? ab->n : refused;
    if (closing) {
        mql_conn_close(c, MQL_E_STORE, "store commit failed");
        return;
    }
    if (mql_link_send(c->link, out, len) == MQL_OK)
        b->stats.bytes_sent += len;
    free(out);
}

/* Store barrier callback (store thread): the batch's messages are on disk, or not. */
static void acks_done(void *arg, mql_err err)
{
    ack_batch *ab = arg;
    mql_conn *c = ab->c;
    mql_broker *b = c->b;
    pthread_mutex_lock(&b->lock);
    c->acks_waiting--;
    if (err == MQL_OK && b->store_refusing) {
        b->store_refusing = false;
        mql_notice("store.refused", "the store commits again: QoS 1/2 messages are "
                                    "acknowledged again");
    }
    if (!c->link_gone && c->state != CS_CLOSING) {
        if (err == MQL_OK) {
            if (mql_link_send(c->link, ab->bytes, ab->len) == MQL_OK)
                b->stats.bytes_sent += ab->len;
        } else {
            ack_commit_failed(c, ab, err);
        }
    }
    mql_conn_unref(c);
    pthread_mutex_unlock(&b->lock);
    free(ab);
}

/* End of a conn_data batch: hand the collected acks to the store. Under broker->lock. */
void mql_conn_flush_acks(mql_conn *c)
{
    ack_batch *ab = c->batch;
    if (ab == NULL)
        return;
    c->batch = NULL;
    if (c->b->store == NULL) {
        if (mql_link_send(c->link, ab->bytes, ab->len) == MQL_OK)
            c->b->stats.bytes_sent += ab->len;
        free(ab);
        return;
    }
    c->refs++;
    c->acks_waiting++;
    if (mql_store_barrier(c->b->store, acks_done, ab) != MQL_OK) {
        c->refs--;
        c->acks_waiting--;
        free(ab);
        mql_conn_close(c, MQL_E_NOMEM, "out of memory");
    }
}

static mql_err resolve_alias(mql_conn *c, mql_publish *pub, const char **why)
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

void mql_conn_handle_publish(mql_conn *c, mql_publish *pub)
{
    mql_broker *b = c->b;
    mql_session *s = c->session;
    const char *why = NULL;
    mql_err err = MQL_OK;

    if (c->version == MQL_V5 && (pub->props.present & MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID))) {
        violation(c, MQL_E_PROTOCOL,
                  "a PUBLISH from a client must not carry a Subscription Identifier "
                  "[MQTT-3.3.4-6]");
        return;
    }
    if (c->version == MQL_V5 && (err = resolve_alias(c, pub, &why)) != MQL_OK) {
        violation(c, err, why);
        return;
    }
    if (pub->qos > b->cfg.max_qos) {
        violation(c, MQL_E_QOS_UNSUPPORTED,
                  "PUBLISH QoS above the server's Maximum QoS "
                  "[MQTT-3.2.2-11]");
        return;
    }
    if (pub->retain && !b->cfg.retain_available) {
        violation(c, MQL_E_RETAIN_UNSUPPORTED,
                  "retained PUBLISH while Retain Available is 0 "
                  "[MQTT-3.2.2-14]");
        return;
    }
    b->stats.msgs_received++;
    /* a bridge's inbound messages are the operator's own configuration, not a client's */
    if (b->acl != NULL && c->bridge == NULL &&
        !mql_acl_can_write(b->acl, c->username, s->client_id, pub->topic)) {
        /* not routed, not retained; QoS 0 is dropped silently as the spec allows */
        mql_notice("client.acl",
                   "client \"%s\" (%s) user \"%s\": PUBLISH to \"%.*s\" denied "
                   "by the ACL",
                   s->client_id, c->peer, c->username ? c->username : "", (int)pub->topic.len,
                   pub->topic.p);
        uint8_t rc = c->version == MQL_V5 ? mql_err_reason(MQL_E_NOT_AUTHORIZED) : 0;
        if (pub->qos == 1)
            queue_ack(c, MQL_PUBACK, pub->packet_id, rc, false);
        else if (pub->qos == 2)
            queue_ack(c, MQL_PUBREC, pub->packet_id, rc, false);
        return;
    }
    bool payload_ok = true;
    if (c->version == MQL_V5 && (pub->props.present & MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT)) &&
        pub->props.payload_format == 1 && !mql_utf8_valid(pub->payload.p, pub->payload.len)) {
        payload_ok = false; /* [MQTT-3.3.2-4] */
    }
    if (pub->qos == 2 && mql_session_qos2_has(s, pub->packet_id)) {
        /* a re-sent PUBLISH before PUBREL: acknowledge again, deliver once [MQTT-4.3.3-10].
         * Its first PUBREC may have been withheld because the store failed: this one, too,
         * waits until everything the first one needed is on disk. */
        queue_ack(c, MQL_PUBREC, pub->packet_id, 0,
                  s->stored && b->store != NULL && b->cfg.store_sync != MQL_STORE_SYNC_OFF);
        return;
    }
    if (!payload_ok) {
        if (pub->qos == 0) {
            violation(c, MQL_E_PAYLOAD_FORMAT,
                      "payload is not valid UTF-8 but Payload Format Indicator is 1");
        } else {
            mql_notice("client.payload_format",
                       "client \"%s\" (%s): PUBLISH to \"%.*s\" refused: payload is not UTF-8 "
                       "but Payload Format Indicator is 1 [MQTT-3.3.2-4]",
                       s->client_id, c->peer, (int)pub->topic.len, pub->topic.p);
            queue_ack(c, pub->qos == 1 ? MQL_PUBACK : MQL_PUBREC, pub->packet_id,
                      mql_err_reason(MQL_E_PAYLOAD_FORMAT), false);
        }
        return;
    }
    uint32_t recv_max = b->cfg.max_inflight_messages ? b->cfg.max_inflight_messages : 65535;
    if (pub->qos == 2 && c->version == MQL_V5 && s->n_qos2_in >= recv_max) {
        violation(c, MQL_E_RECEIVE_MAX,
                  "more QoS 2 PUBLISH awaiting PUBREL than Receive "
                  "Maximum [MQTT-3.3.4-8]");
        return;
    }
    mql_msg *msg = mql_msg_new(pub->topic, pub->payload, pub->qos, pub->retain,
                               c->version == MQL_V5 ? &pub->props : NULL, mql_now_ms());
    if (msg == NULL) {
        mql_conn_close(c, MQL_E_NOMEM, "out of memory");
        return;
    }
    /* retained set/clear [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7], then the subscribers */
    mql_route_result routed = mql_router_publish(b, msg, s, cid(c));
    mql_msg_unref(msg);
    /* v5: tell the publisher when a persistent subscriber's quota refused it, or in a
     * PUBACK that nobody subscribed (0x10, which the Server MAY use instead of 0x00,
     * section 3.4.2.1; mosquitto does so for PUBACK only, and clients written against it
     * expect that) */
    uint8_t rc = 0;
    if (c->version == MQL_V5 && routed.refused)
        rc = mql_err_reason(MQL_E_QUOTA);
    else if (c->version == MQL_V5 && pub->qos == 1 && routed.matched == 0)
        rc = MQL_RC_NO_MATCHING_SUBSCRIBERS;
    if (pub->qos == 2) {
        if (mql_session_qos2_add(s, pub->packet_id) != MQL_OK) {
            mql_conn_close(c, MQL_E_NOMEM, "out of memory");
            return;
        }
        routed.wait = mql_session_mirror_qos2(b, s, pub->packet_id, true) || routed.wait;
    }
    bool durable = routed.wait;
    if (pub->qos == 1)
        queue_ack(c, MQL_PUBACK, pub->packet_id, rc, durable); /* [MQTT-4.3.2-4] */
    else if (pub->qos == 2)
        queue_ack(c, MQL_PUBREC, pub->packet_id, rc, durable); /* [MQTT-4.3.3-9] */
}

void mql_conn_handle_ack(mql_conn *c, uint8_t type, const mql_ack *ack)
{
    mql_broker *b = c->b;
    mql_session *s = c->session;
    if (type == MQL_PUBREL) {
        bool found = mql_session_qos2_remove(s, ack->packet_id);
        if (found)
            (void)mql_session_mirror_qos2(b, s, ack->packet_id, false);
        /* [MQTT-4.3.3-11] */
        mql_conn_send_ack(
            c, MQL_PUBCOMP, ack->packet_id,
            found || c->version != MQL_V5 ? 0 : mql_err_reason(MQL_E_PACKET_ID_NOT_FOUND));
        return;
    }
    out_msg *o = mql_session_inflight_find(s, ack->packet_id);
    if (o == NULL) {
        if (type == MQL_PUBREC && c->version == MQL_V5)
            mql_conn_send_ack(c, MQL_PUBREL, ack->packet_id,
                              mql_err_reason(MQL_E_PACKET_ID_NOT_FOUND));
        mql_debug("client.unknown_ack", "client \"%s\" (%s): %s for unknown packet id %u",
                  s->client_id, c->peer,
                  type == MQL_PUBACK   ? "PUBACK"
                  : type == MQL_PUBREC ? "PUBREC"
                                       : "PUBCOMP",
                  ack->packet_id);
        return;
    }
    /* An acknowledgement of the wrong kind for a message in flight (PUBACK for QoS 2,
     * PUBREC or PUBCOMP for QoS 1, PUBCOMP before PUBREC) breaks the flows of sections 4.3.2
     * and 4.3.3: a Protocol Error (section 4.13), not something to guess the meaning of. */
    const char *wrong = NULL;
    if (type == MQL_PUBACK && o->qos != 1)
        wrong = "PUBACK for a QoS 2 message (section 4.3.3)";
    else if (type == MQL_PUBREC && o->qos != 2)
        wrong = "PUBREC for a QoS 1 message (section 4.3.2)";
    else if (type == MQL_PUBCOMP && o->qos != 2)
        wrong = "PUBCOMP for a QoS 1 message (section 4.3.2)";
    else if (type == MQL_PUBCOMP && o->state != OUT_PUBREL_SENT)
        wrong = "PUBCOMP before PUBREC (section 4.3.3)";
    if (wrong != NULL) {
        violation(c, MQL_E_PROTOCOL, wrong);
        return;
    }
    switch (type) {
    case MQL_PUBACK:
        if (o->state == OUT_PUBLISH_SENT)
            mql_session_inflight_done(b, s, o); /* [MQTT-4.3.2-*] */
        break;
    case MQL_PUBREC:
        if (c->version == MQL_V5 && ack->reason >= 0x80) {
            mql_session_inflight_done(b, s, o); /* the flow ends [MQTT-4.3.3-?] */
            break;
        }
        o->state = OUT_PUBREL_SENT; /* [MQTT-4.3.3-3] */
        (void)mql_session_mirror_out_state(b, s, o);
        mql_conn_send_ack(c, MQL_PUBREL, o->packet_id, 0);
        break;
    case MQL_PUBCOMP:
        mql_session_inflight_done(b, s, o);
        break;
    }
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
            mql_conn_close(c, MQL_E_NOMEM, "out of memory");
            goto done;
        }
    }
    bool wait = false; /* a kept subscription is on disk before the SUBACK */
    if (c->version == MQL_V5 && (sub->props.present & MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID)) &&
        !b->cfg.subscription_identifiers) {
        /* the CONNACK said Subscription Identifiers Available 0 */
        violation(c, MQL_E_SUBID_UNSUPPORTED,
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
            violation(c, MQL_E_TOPIC_FILTER_INVALID,
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
    queue_packet(c, &p, wait); /* a kept subscription is on disk */
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
        mql_conn_close(c, MQL_E_NOMEM, "out of memory");
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
    queue_packet(c, &p, wait);
    if (codes != codes_stack)
        free(codes);
}

static void handle_disconnect(mql_conn *c, const mql_disconnect *d)
{
    mql_session *s = c->session;
    if (c->version == MQL_V5) {
        if (d->props.present & MQL_PBIT(MQL_PROP_SESSION_EXPIRY)) {
            if (s->expiry == 0 && d->props.session_expiry != 0) {
                violation(c, MQL_E_PROTOCOL,
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
    snprintf(c->why, sizeof(c->why), "client sent DISCONNECT");
    c->state = CS_CLOSING;
    c->closing_since = mql_now_ms();
    mql_link_close(c->link, false); /* [MQTT-3.14.4-1] */
}

static void handle_packet(mql_conn *c, mql_packet *p)
{
    if (c->state == CS_NEW) {
        if (p->type != MQL_CONNECT) {
            violation(c, MQL_E_PROTOCOL, "the first packet must be CONNECT [MQTT-3.1.0-1]");
            return;
        }
        handle_connect(c, &p->u.connect);
        return;
    }
    switch (p->type) {
    case MQL_CONNECT:
        violation(c, MQL_E_PROTOCOL, "second CONNECT on one connection [MQTT-3.1.0-2]");
        break;
    case MQL_PUBLISH:
        mql_conn_handle_publish(c, &p->u.publish);
        break;
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
        mql_conn_handle_ack(c, p->type, &p->u.ack);
        break;
    case MQL_SUBSCRIBE:
        handle_subscribe(c, &p->u.subscribe);
        break;
    case MQL_UNSUBSCRIBE:
        handle_unsubscribe(c, &p->u.unsubscribe);
        break;
    case MQL_PINGREQ: {
        mql_packet r = {.type = MQL_PINGRESP};
        (void)send_packet(c, &r); /* [MQTT-3.12.4-1] */
        break;
    }
    case MQL_DISCONNECT:
        handle_disconnect(c, &p->u.disconnect);
        break;
    case MQL_AUTH:
        violation(c, MQL_E_PROTOCOL,
                  "AUTH without an Authentication Method in CONNECT "
                  "[MQTT-4.12.0-1]");
        break;
    default:
        violation(c, MQL_E_PROTOCOL, "a packet type only a server may send");
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
    snprintf(c->why, sizeof(c->why), "%zu bytes of output left unread", backlog);
    c->state = CS_CLOSING;
    c->closing_since = mql_now_ms();
    mql_link_close(c->link, false);
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

/* Bytes from the peer, for client connections and bridge uplinks alike: frames are
 * scanned and decoded here, and each packet goes to handle_packet (we are the server) or
 * mql_bridge_packet (we are the client). */
size_t mql_conn_data(void *ctx, const uint8_t *buf, size_t len, size_t *want)
{
    mql_conn *c = ctx;
    mql_broker *b = c->b;
    size_t off = 0;
    if (!c->prechecked) { /* only this (serialised) receive path touches prechecked */
        c->prechecked = true;
        precheck_password(c, buf, len);
    }
    mql_net_defer_begin(); /* the writes start after the broker lock is released */
    pthread_mutex_lock(&b->lock);
    c->last_rx = mql_now_ms();
    b->stats.bytes_received += len;
    if (c->state == CS_ACTIVE && c->bridge == NULL && unread_backlog_exceeded(c)) {
        pthread_mutex_unlock(&b->lock);
        mql_net_defer_end();
        return len;
    }
    if (c->state == CS_CLOSING && c->will_deferred && c->drain_until != 0) {
        size_t used = drain_for_disconnect(c, buf, len);
        pthread_mutex_unlock(&b->lock);
        mql_net_defer_end();
        return used;
    }
    while (c->state != CS_CLOSING) {
        mql_frame fr;
        mql_err err = MQL_OK;
        uint32_t max = b->cfg.max_packet_size;
        if (c->state == CS_NEW && (max == 0 || max > MQL_PRECONNECT_MAX))
            max = MQL_PRECONNECT_MAX;
        mql_scan sc = mql_frame_scan(buf + off, len - off, max, &fr, &err);
        if (sc == MQL_SCAN_NEED_MORE) {
            if (fr.header_len != 0)
                *want = fr.total;
            break;
        }
        if (sc == MQL_SCAN_ERROR) {
            violation(c, err,
                      err == MQL_E_TOO_LARGE ? "packet larger than the maximum packet size"
                                             : "invalid Remaining Length [MQTT-1.5.5-1]");
            break;
        }
        mql_packet p;
        const char *why = NULL;
        if (c->state == CS_NEW)
            memset(&p, 0, sizeof(p));
        /* before CONNECT the level is not known yet; a bridge knows its own from the start */
        uint8_t level = c->state == CS_NEW && c->bridge == NULL ? 0 : c->version;
        err = mql_decode(buf + off, fr.total, level, &p, &why);
        if (err != MQL_OK) {
            if (c->state != CS_NEW && fr.type == MQL_CONNECT) {
                /* Any second CONNECT is a Protocol Error [MQTT-3.1.0-2], well-formed or not.
                 * Its own decode error may be a CONNACK-only reason code (0x84 for a bad
                 * level), which is not valid in DISCONNECT (found by tests/fuzz/fuzz_conn). */
                err = MQL_E_PROTOCOL;
                why = "second CONNECT on one connection [MQTT-3.1.0-2]";
            }
            if (c->state == CS_NEW && fr.type == MQL_CONNECT && c->bridge == NULL) {
                /* an unknown level gets 3.1.1's CONNACK 0x01: its rule is a MUST
                 * [v3.1.1 MQTT-3.1.2-2], MQTT 5's 0x84 a MAY [MQTT-3.1.2-2] */
                c->version = p.u.connect.version == MQL_V5 ? MQL_V5 : MQL_V311;
                if (err == MQL_E_BAD_VERSION && c->version != MQL_V5) {
                    /* [v3.1.1 MQTT-3.1.2-2] */
                    mql_notice("client.refused", "connection from %s refused: %s", c->peer,
                               why ? why : "unsupported protocol version");
                    c->state = CS_CLOSING;
                    send_connack(c, false, 0x01, NULL);
                    mql_link_close(c->link, true);
                    break;
                }
            }
            violation(c, err, why);
            break;
        }
        if (c->bridge != NULL)
            mql_bridge_packet(c, &p);
        else
            handle_packet(c, &p);
        off += fr.total;
    }
    mql_conn_flush_acks(c);
    bool closing = c->state == CS_CLOSING;
    pthread_mutex_unlock(&b->lock);
    mql_net_defer_end();
    return closing ? len : off;
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
    c->link_gone = true;
    c->session = NULL;
    free(c->batch);
    c->batch = NULL;
    mql_conn_unref(c);
    pthread_cond_broadcast(&b->tick_cv);
    pthread_mutex_unlock(&b->lock);
}

/* Drop a reference; the last one frees the connection. Under broker->lock. */
void mql_conn_unref(mql_conn *c)
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
                mql_conn_close(c, MQL_E_MAX_CONNECT_TIME, "no CONNECT in time");
            }
            break;
        case CS_ACTIVE:
            /* one and a half times the keep alive [MQTT-3.1.2-22] [v3.1.1 MQTT-3.1.2-24] */
            if (c->keepalive != 0 && now - c->last_rx > (uint64_t)c->keepalive * 1500u) {
                mql_notice("client.keepalive",
                           "client \"%s\" (%s): nothing received for 1.5 x keepalive (%u s); "
                           "closing",
                           cid(c), c->peer, c->keepalive);
                mql_conn_close(c, MQL_E_KEEPALIVE, "keep alive timeout");
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
    .data = mql_conn_data,
    .closed = conn_closed,
};
