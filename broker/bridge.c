/*
 * bridge.c - bridges: the gateway as a client of remote ("cloud") brokers.
 *
 * A bridge has two halves that meet in one session:
 * - Local side: a session of its own (ClientID `local_clientid`, default "$bridge/NAME")
 *   subscribed to the `out` rules' local filters with No Local set. Messages for the remote
 *   are delivered to it like to any persistent session: queued while the uplink is down,
 *   mirrored in the store (so acknowledged QoS 1/2 survive kill -9 and power loss), and
 *   removed only when the remote broker acknowledged them. Local publishers never wait for
 *   the uplink: the session's queue absorbs outages up to bridge_queue_max_bytes.
 * - Uplink: an mql_conn (proto.h) on a dialed link where we are the client, with this
 *   file's mql_proto_role. What both sides share is proto.c's and flow.c's (sending
 *   PUBLISH from the session's window, PUBACK/PUBREC/PUBCOMP handling, inbound PUBLISH
 *   with store-before-ack); here is what is not: CONNECT/CONNACK, SUBSCRIBE/SUBACK,
 *   PINGREQ, and topic mapping (outgoing in the local session's sink, uplink_publish).
 *
 * Loop prevention: messages that come in are routed with the bridge session as their
 * publisher, and its own subscriptions have No Local, so they never go back out. Towards
 * the remote, MQTT 5 subscriptions carry No Local [MQTT-3.8.3-3]; for MQTT 3.1.1 the
 * CONNECT's protocol level has bit 7 set (`try_private`), which mosquitto (and mqlite, see
 * conn.c) read as "a bridge: do not echo its own messages back and keep retain flags".
 *
 * Reconnects back off exponentially with jitter between restart_timeout's two values; each
 * dial resolves the host name again (nng does that per dial) and tries the next address.
 *
 * Threading: dial results and link callbacks arrive on nng threads and take broker->lock;
 * the ticker drives timers under the same lock. Nothing here blocks under the lock.
 * Performance assumption: a few bridges with a few topic rules each; mapping a topic is a
 * linear pass over the rules, and a mapped topic longer than 512 bytes costs one
 * allocation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_int.h"
#include "clients.h"
#include "flow.h"
#include "router.h"
#include "startup.h"
#include "sys.h"
#include "bridge.h"
#include "platform/clock.h"
#include "platform/log.h"

/* A bridge: the local session that collects what goes out, the uplink
 * connection to the remote broker (we are its client), reconnect state. */
enum bridge_state {
    BR_IDLE = 0,   /* waiting for next_attempt */
    BR_DIALING,    /* TCP/TLS connect in progress */
    BR_CONNECTING, /* CONNECT sent, waiting for CONNACK */
    BR_UP,         /* CONNACK 0 received */
};

typedef struct mql_bridge {
    mql_broker *b;
    const mql_bridge_conf *conf; /* in b->cfg */
    mql_session *s;
    mql_conn *c; /* the uplink while dialed, else NULL */
    mql_dialer *dialers[MQL_MAX_BRIDGE_ADDRS];
    int addr; /* the address of the current or next attempt */
    enum bridge_state state;
    uint64_t next_attempt; /* mql_now_ms() of the next dial (BR_IDLE) */
    uint32_t failures;     /* attempts since the link was last up, for the backoff */
    uint64_t last_ping;
    uint16_t sub_pid;       /* packet id of our SUBSCRIBE */
    uint8_t remote_max_qos; /* from a v5 CONNACK, default 2 */
    bool warned;            /* the current outage was logged at warning level */
    bool stopped;
    char state_topic[128]; /* $SYS/broker/bridge/NAME/state */
    char remote_id[200];   /* remote_clientid, or mosquitto's default HOSTNAME.NAME */
    char note_topic[300];  /* notifications: "1"/"0" (mosquitto's), empty when off */
} mql_bridge;

#define CONNACK_TIMEOUT_MS 10000

static const mql_proto_role uplink_role;

static const char *bname(const mql_bridge *br)
{
    return br->conf->name;
}

/* ---- topic mapping ---- */

/* Map topic through rule r: from its `from` prefix to its `to` prefix. */
static bool map_rule(const mql_bridge_topic *r, const char *from, const char *to, mql_bytes topic,
                     char *buf, size_t cap, char **heap, mql_bytes *out)
{
    size_t fl = strlen(from);
    if (topic.len < fl || memcmp(topic.p, from, fl) != 0)
        return false;
    const uint8_t *rest = topic.p + fl;
    size_t rl = topic.len - fl;
    /* the pattern against what follows the prefix; topic.c's matcher, without the '$' rule
     * (rest is not the start of a topic name) */
    mql_bytes pat = {(const uint8_t *)r->pattern, (uint32_t)strlen(r->pattern)};
    if (r->pattern[0] == '\0' ? rl != 0
                              : !mql_topic_matches_levels(pat, (mql_bytes){rest, (uint32_t)rl}))
        return false;
    size_t tl = strlen(to);
    char *dst = buf;
    if (tl + rl > cap) {
        if ((*heap = malloc(tl + rl)) == NULL)
            return false;
        dst = *heap;
    }
    memcpy(dst, to, tl);
    memcpy(dst + tl, rest, rl);
    *out = (mql_bytes){(const uint8_t *)dst, (uint32_t)(tl + rl)};
    return true;
}

static bool map_out(const mql_bridge *br, mql_bytes topic, char *buf, size_t cap, char **heap,
                    mql_bytes *out)
{
    for (int i = 0; i < br->conf->n_topics; i++) {
        const mql_bridge_topic *r = &br->conf->topics[i];
        if ((r->dir & MQL_BRIDGE_OUT) &&
            map_rule(r, r->local_prefix, r->remote_prefix, topic, buf, cap, heap, out))
            return true;
    }
    return false;
}

static bool map_in(const mql_bridge *br, mql_bytes topic, char *buf, size_t cap, char **heap,
                   mql_bytes *out)
{
    for (int i = 0; i < br->conf->n_topics; i++) {
        const mql_bridge_topic *r = &br->conf->topics[i];
        if ((r->dir & MQL_BRIDGE_IN) &&
            map_rule(r, r->remote_prefix, r->local_prefix, topic, buf, cap, heap, out))
            return true;
    }
    return false;
}

/* prefix + pattern (or the prefix alone for an empty pattern) into buf. */
static mql_bytes rule_filter(const mql_bridge_topic *r, const char *prefix, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s%s", prefix, r->pattern);
    return (mql_bytes){(const uint8_t *)buf, (uint32_t)(n < 0 ? 0 : n)};
}

/* ---- state ---- */

/* The retained $SYS/broker/bridge/NAME/state value, and mosquitto's local notification
 * ("1" connected, "0" not) when notifications are on. */
static void publish_state(mql_bridge *br, const char *state)
{
    mql_sys_set(&br->b->core, br->state_topic, state);
    if (br->note_topic[0] != '\0')
        mql_sys_set(&br->b->core, br->note_topic, strcmp(state, "connected") == 0 ? "1" : "0");
}

/* Whether the remote broker gets the notifications too (a will of "0" in CONNECT, "1" once
 * connected, "0" before a clean disconnect). */
static bool notify_remote(const mql_bridge *br)
{
    return br->note_topic[0] != '\0' && !br->conf->notifications_local_only;
}

/* A retained QoS 0 notification to the remote broker. QoS 0 keeps it out of the bridge
 * session's packet ids; on a live link it is as good as QoS 1, and should the link die
 * before it arrives, the will ("0") tells the truth anyway. */
static void notify_remote_send(mql_bridge *br, mql_conn *c, const char *value)
{
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_PUBLISH;
    p.u.publish.retain = true;
    p.u.publish.topic =
        (mql_bytes){(const uint8_t *)br->note_topic, (uint32_t)strlen(br->note_topic)};
    p.u.publish.payload = (mql_bytes){(const uint8_t *)value, (uint32_t)strlen(value)};
    (void)mql_proto_send_packet(c, &p);
}

/* Milliseconds until the next attempt after br->failures failed ones: restart_timeout BASE
 * alone is a fixed delay; BASE CAP doubles from BASE up to CAP, with jitter in the upper
 * half so that many gateways do not reconnect in step after a cloud outage. */
static uint64_t backoff_ms(mql_bridge *br)
{
    uint64_t base = (uint64_t)br->conf->restart_min * 1000u;
    uint64_t cap = (uint64_t)br->conf->restart_max * 1000u;
    if (cap <= base)
        return base;
    uint32_t shift = br->failures > 20 ? 20 : br->failures;
    uint64_t d = base << shift;
    if (d > cap)
        d = cap;
    uint64_t lo = d / 2 < base ? base : d / 2;
    return lo + (uint64_t)rand() % (d - lo + 1);
}

/* The attempt failed or the link ended: wait, then try the next address. */
static void schedule_retry(mql_bridge *br, const char *why, bool was_up)
{
    uint64_t delay = backoff_ms(br);
    br->state = BR_IDLE;
    br->next_attempt = mql_now_ms() + delay;
    const char *addr = br->conf->addresses[br->addr];
    if (was_up) {
        mql_warning("bridge.down",
                    "bridge \"%s\": connection to %s lost: %s; reconnecting in %.1f s", bname(br),
                    addr, why, (double)delay / 1000.0);
        publish_state(br, "disconnected");
    } else if (!br->warned) {
        br->warned = true;
        mql_warning("bridge.connect",
                    "bridge \"%s\": cannot connect to %s: %s; retrying in %.1f s (with backoff, "
                    "logged again when connected)",
                    bname(br), addr, why, (double)delay / 1000.0);
    } else {
        mql_info("bridge.connect", "bridge \"%s\": cannot connect to %s: %s; retrying in %.1f s",
                 bname(br), addr, why, (double)delay / 1000.0);
    }
    br->failures++;
    if (br->conf->n_addresses > 1)
        br->addr = (br->addr + 1) % br->conf->n_addresses;
}

/* ---- the uplink: connecting ---- */

static void send_connect(mql_bridge *br, mql_conn *c)
{
    const mql_bridge_conf *bc = br->conf;
    mql_broker *b = br->b;
    const char *id = br->remote_id;
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_CONNECT;
    mql_connect *cn = &p.u.connect;
    cn->version = bc->protocol_version;
    cn->bridge = cn->version == MQL_V311 && bc->try_private; /* the Protocol Level's bit 7 */
    cn->clean_start = bc->cleansession;
    cn->keep_alive = bc->keepalive;
    cn->client_id = (mql_bytes){(const uint8_t *)id, (uint32_t)strlen(id)};
    if (bc->has_username) {
        cn->has_username = true;
        cn->username = (mql_bytes){(const uint8_t *)bc->remote_username,
                                   (uint32_t)strlen(bc->remote_username)};
    }
    if (bc->has_password) {
        cn->has_password = true;
        cn->password = (mql_bytes){(const uint8_t *)bc->remote_password,
                                   (uint32_t)strlen(bc->remote_password)};
    }
    if (notify_remote(br)) { /* the remote says "0" for us when the link dies */
        cn->will = true;
        cn->will_qos = 1;
        cn->will_retain = true;
        cn->will_topic =
            (mql_bytes){(const uint8_t *)br->note_topic, (uint32_t)strlen(br->note_topic)};
        cn->will_payload = (mql_bytes){(const uint8_t *)"0", 1};
    }
    if (cn->version == MQL_V5) {
        if (!bc->cleansession && bc->session_expiry != 0) {
            cn->props.present |= MQL_PBIT(MQL_PROP_SESSION_EXPIRY);
            cn->props.session_expiry = bc->session_expiry;
        }
        if (b->cfg.max_inflight_messages != 0) {
            cn->props.present |= MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM);
            cn->props.receive_maximum = (uint16_t)b->cfg.max_inflight_messages;
        }
        if (b->cfg.max_packet_size != 0) {
            cn->props.present |= MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE);
            cn->props.maximum_packet_size = b->cfg.max_packet_size;
        }
    }
    uint8_t buf[1024];
    size_t n = mql_encode(buf, sizeof(buf), &p, cn->version);
    if (n == 0) {
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_CONFIG, "cannot encode CONNECT");
        return;
    }
    if (mql_link_send(c->link, buf, n) == MQL_OK)
        b->core.stats.bytes_sent += n;
}

static void *bridge_open(void *arg, mql_link *link, const char *peer, int listener_id)
{
    (void)listener_id; /* -1: a dialed link */
    mql_bridge *br = arg;
    mql_broker *b = br->b;
    mql_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    pthread_mutex_lock(&b->lock);
    if (b->stopping || br->stopped || br->state != BR_DIALING) {
        pthread_mutex_unlock(&b->lock);
        free(c);
        return NULL;
    }
    c->b = b;
    c->core = &b->core;
    c->cfg = &b->cfg;
    c->lock = &b->lock;
    c->link = link;
    c->role = &uplink_role;
    c->owner = br;
    c->refs = 1;
    c->version = br->conf->protocol_version;
    c->keepalive = br->conf->keepalive;
    c->session = br->s;
    c->state = CS_NEW;
    c->request_problem_info = true;
    c->client_receive_max = 65535;
    c->created_at = c->last_rx = mql_now_ms();
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    br->c = c;
    br->state = BR_CONNECTING;
    br->remote_max_qos = 2;
    send_connect(br, c);
    pthread_mutex_unlock(&b->lock);
    mql_debug("bridge.dialed", "bridge \"%s\": connected to %s (%s), CONNECT sent", bname(br),
              br->conf->addresses[br->addr], peer);
    return c;
}

static void dial_failed(void *arg, const char *why)
{
    mql_bridge *br = arg;
    mql_broker *b = br->b;
    pthread_mutex_lock(&b->lock);
    if (!br->stopped && br->state == BR_DIALING)
        schedule_retry(br, why, false);
    pthread_mutex_unlock(&b->lock);
}

/* SUBSCRIBE to the remote side of every in/both rule. */
static void send_subscribe(mql_bridge *br, mql_conn *c)
{
    const mql_bridge_conf *bc = br->conf;
    mql_sub_entry list[MQL_MAX_BRIDGE_TOPICS];
    char filters[MQL_MAX_BRIDGE_TOPICS][MQL_BRIDGE_PREFIX_MAX + MQL_BRIDGE_PATTERN_MAX];
    uint32_t n = 0;
    for (int i = 0; i < bc->n_topics; i++) {
        const mql_bridge_topic *r = &bc->topics[i];
        if (!(r->dir & MQL_BRIDGE_IN))
            continue;
        memset(&list[n], 0, sizeof(list[n]));
        list[n].filter = rule_filter(r, r->remote_prefix, filters[n], sizeof(filters[n]));
        list[n].qos = r->qos;
        list[n].no_local = true;            /* what we publish does not come back */
        list[n].retain_as_published = true; /* retained stays retained locally */
        n++;
    }
    if (n == 0)
        return;
    br->sub_pid = br->sub_pid == 65535 ? 1 : (uint16_t)(br->sub_pid + 1);
    mql_packet p;
    memset(&p, 0, sizeof(p));
    p.type = MQL_SUBSCRIBE;
    p.u.subscribe.packet_id = br->sub_pid;
    p.u.subscribe.count = n;
    p.u.subscribe.list = list;
    if (mql_proto_send_packet(c, &p) != MQL_SEND_OK)
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "cannot send SUBSCRIBE");
}

/* The sink of the bridge's local session (session.h) while the uplink is up: ctx is the
 * uplink's mql_conn. */
static bool uplink_ready(void *ctx)
{
    const mql_conn *c = ctx;
    return c->state == CS_ACTIVE;
}

static bool uplink_publish(void *ctx, mql_msg *msg, uint8_t qos, bool retain, bool dup,
                           uint16_t pid, const uint32_t *ids, uint8_t n_ids)
{
    mql_conn *c = ctx;
    const mql_bridge *br = c->owner;
    char remote[512];
    char *remote_heap = NULL; /* a mapped topic longer than `remote` */
    mql_bytes topic;
    if (!map_out(br, msg->topic, remote, sizeof(remote), &remote_heap, &topic))
        return true; /* no rule sends it (the configuration changed): nothing to deliver */
    bool sent = mql_proto_send_publish(c, msg, topic, qos, retain, dup, pid, ids, n_ids);
    free(remote_heap);
    return sent;
}

static void uplink_ack(void *ctx, uint8_t type, uint16_t pid, uint8_t reason)
{
    mql_proto_send_ack(ctx, type, pid, reason);
}

static size_t uplink_backlog(void *ctx)
{
    const mql_conn *c = ctx;
    return mql_link_backlog(c->link);
}

static const mql_sink_ops bridge_sink = {
    .ready = uplink_ready,
    .publish = uplink_publish,
    .ack = uplink_ack,
    .backlog = uplink_backlog,
};

static void handle_connack(mql_bridge *br, mql_conn *c, const mql_connack *ack)
{
    mql_broker *b = br->b;
    if (ack->reason != 0) {
        char why[96];
        snprintf(why, sizeof(why), "the remote broker refused the connection: %s 0x%02x",
                 c->version == MQL_V5 ? "reason code" : "return code", ack->reason);
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_OK, why);
        return;
    }
    const mql_props *pr = &ack->props;
    if (c->version == MQL_V5) {
        if (pr->present & MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM))
            c->client_receive_max = pr->receive_maximum; /* [MQTT-3.3.4-9] */
        if (pr->present & MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE))
            c->client_max_packet = pr->maximum_packet_size; /* [MQTT-3.1.2-24] */
        if (pr->present & MQL_PBIT(MQL_PROP_MAXIMUM_QOS))
            br->remote_max_qos = pr->maximum_qos;
        if (pr->present & MQL_PBIT(MQL_PROP_SERVER_KEEP_ALIVE))
            c->keepalive = pr->server_keep_alive; /* [MQTT-3.1.2-21] */
    }
    c->state = CS_ACTIVE;
    br->state = BR_UP;
    br->failures = 0;
    br->warned = false;
    br->last_ping = mql_now_ms();
    mql_session_attach(br->s, &bridge_sink, c, c->client_receive_max, br->remote_max_qos);
    mql_notice("bridge.up",
               "bridge \"%s\": connected to %s as %s client (session present %d, %u queued, %u "
               "in flight)",
               bname(br), br->conf->addresses[br->addr], c->version == MQL_V5 ? "v5" : "v3.1.1",
               ack->session_present, br->s->queue.count, br->s->inflight.count);
    if (c->version == MQL_V5)
        mql_debug("bridge.negotiated",
                  "bridge \"%s\": remote receive maximum %u, maximum packet size %u, maximum "
                  "QoS %u, keepalive %u",
                  bname(br), c->client_receive_max, c->client_max_packet, br->remote_max_qos,
                  c->keepalive);
    send_subscribe(br, c);
    if (notify_remote(br))
        notify_remote_send(br, c, "1");
    publish_state(br, "connected");
    mql_session_resume(&b->core, br->s); /* in-flight again with DUP, then the queue in order */
}

static void handle_suback(mql_bridge *br, const mql_suback *sa)
{
    if (sa->packet_id != br->sub_pid)
        return;
    for (uint32_t i = 0; i < sa->count; i++)
        if (sa->codes[i] >= 0x80)
            mql_warning("bridge.subscribe",
                        "bridge \"%s\": the remote broker refused subscription %u of the in/both "
                        "topic rules (code 0x%02x): messages on it will not come in",
                        bname(br), i + 1, sa->codes[i]);
}

static void handle_inbound(mql_bridge *br, mql_conn *c, mql_publish *pub)
{
    char buf[512];
    char *heap = NULL;
    mql_bytes local;
    if (!map_in(br, pub->topic, buf, sizeof(buf), &heap, &local)) {
        /* not ours (an old subscription of the remote session): acknowledge, drop */
        mql_debug("bridge.unmapped", "bridge \"%s\": no in rule for \"%.*s\"; dropped", bname(br),
                  (int)pub->topic.len, pub->topic.p);
        if (pub->qos == 1)
            mql_proto_send_ack(c, MQL_PUBACK, pub->packet_id, 0);
        else if (pub->qos == 2)
            mql_proto_send_ack(c, MQL_PUBREC, pub->packet_id, 0);
        return;
    }
    pub->topic = local;
    mql_flow_publish_in(c, pub);
    free(heap);
}

/* mql_proto_role.packet of the uplink: one packet from the remote broker. */
static void bridge_packet(mql_conn *c, mql_packet *p)
{
    mql_bridge *br = c->owner;
    if (c->state == CS_NEW) {
        if (p->type != MQL_CONNACK) {
            mql_proto_violation(c, MQL_E_PROTOCOL, "sent another packet before CONNACK");
            return;
        }
        handle_connack(br, c, &p->u.connack);
        return;
    }
    switch (p->type) {
    case MQL_PUBLISH:
        handle_inbound(br, c, &p->u.publish);
        break;
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
        mql_flow_ack_in(c, p->type, &p->u.ack);
        break;
    case MQL_SUBACK:
        handle_suback(br, &p->u.suback);
        break;
    case MQL_UNSUBACK:
    case MQL_PINGRESP:
        break;
    case MQL_DISCONNECT: {
        const mql_disconnect *d = &p->u.disconnect;
        char why[sizeof(c->why)];
        snprintf(why, sizeof(why), "the remote broker sent DISCONNECT 0x%02x%s%.*s", d->reason,
                 d->props.reason_string.len ? ": " : "",
                 (int)(d->props.reason_string.len > 100 ? 100 : d->props.reason_string.len),
                 d->props.reason_string.p ? (const char *)d->props.reason_string.p : "");
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_OK, why);
        break;
    }
    default:
        mql_proto_violation(c, MQL_E_PROTOCOL, "sent a packet type a server must not send");
        break;
    }
}

/* mql_proto_role.violation of the uplink. */
static void bridge_violation(mql_conn *c, mql_err err, const char *why)
{
    const mql_bridge *br = c->owner;
    mql_warning("bridge.violation", "bridge \"%s\" (%s): the remote broker: %s: %s; closing",
                bname(br), c->peer, mql_err_str(err), why ? why : "no detail");
}

static const mql_proto_role uplink_role = {
    .server = false,
    .packet = bridge_packet,
    .violation = bridge_violation,
};

static void bridge_closed(void *ctx)
{
    mql_conn *c = ctx;
    mql_broker *b = c->b;
    mql_bridge *br = c->owner;
    pthread_mutex_lock(&b->lock);
    bool was_up = br->state == BR_UP && br->c == c;
    if (br->s->sink_ctx == c) {
        mql_session_detach(br->s);
        br->s->disconnected_at = mql_now_ms();
    }
    if (br->c == c) {
        br->c = NULL;
        const char *why = c->why[0] ? c->why : "closed by the remote broker";
        if (br->stopped) {
            br->state = BR_IDLE;
            mql_info("bridge.stop", "bridge \"%s\": disconnected (%s)", bname(br), why);
        } else {
            if (!was_up && c->state == CS_NEW && c->why[0] == '\0')
                why = br->conf->cafile[0] || br->conf->capath[0]
                          ? "closed before CONNACK: the TLS handshake failed (certificate not "
                            "signed by bridge_cafile, host name not in the certificate, client "
                            "certificate refused) or the remote refused the connection"
                          : "closed before CONNACK (wrong credentials or ClientID refused?)";
            schedule_retry(br, why, was_up);
        }
    }
    mql_proto_link_closed(c);
    pthread_mutex_unlock(&b->lock);
}

static const mql_link_ops bridge_ops = {
    .open = bridge_open,
    .data = mql_proto_data,
    .closed = bridge_closed,
};

/* ---- the local side ---- */

struct retained_ctx {
    mql_broker *b;
    mql_session *s;
    uint8_t qos;
    bool retain;
};

static void retained_cb(void *arg, mql_msg *msg)
{
    struct retained_ctx *rc = arg;
    if (mql_msg_expired(msg, mql_now_ms()))
        return;
    uint8_t qos = msg->qos < rc->qos ? msg->qos : rc->qos;
    bool wait = false; /* nothing to acknowledge */
    (void)mql_router_deliver(&rc->b->core, rc->s, msg, qos, rc->retain, NULL, 0, NULL, &wait);
}

/* Make the session's subscriptions exactly the out rules' local filters (a restored session
 * may hold those of an older configuration). New ones get the retained messages. */
static mql_err local_subscriptions(mql_bridge *br)
{
    mql_broker *b = br->b;
    const mql_bridge_conf *bc = br->conf;
    char f[MQL_BRIDGE_PREFIX_MAX + MQL_BRIDGE_PATTERN_MAX];
    char g[MQL_BRIDGE_PREFIX_MAX + MQL_BRIDGE_PATTERN_MAX];
    mql_sub *sub = br->s->subs;
    while (sub != NULL) { /* drop what no rule asks for */
        mql_sub *next = sub->snext;
        bool wanted = false;
        for (int i = 0; i < bc->n_topics && !wanted; i++) {
            const mql_bridge_topic *r = &bc->topics[i];
            mql_bytes rf = rule_filter(r, r->local_prefix, f, sizeof(f));
            wanted = (r->dir & MQL_BRIDGE_OUT) && rf.len == sub->filter_len &&
                     memcmp(rf.p, sub->filter, rf.len) == 0;
        }
        if (!wanted) {
            (void)mql_session_mirror_sub_del(&b->core, br->s, sub->filter);
            mql_session_unlink_sub(br->s, sub);
            mql_topics_remove(b->core.topics, sub);
        }
        sub = next;
    }
    for (int i = 0; i < bc->n_topics; i++) {
        const mql_bridge_topic *r = &bc->topics[i];
        if (!(r->dir & MQL_BRIDGE_OUT))
            continue;
        mql_bytes rf = rule_filter(r, r->local_prefix, f, sizeof(f));
        uint8_t qos = 0; /* several rules on one filter: the highest QoS */
        for (int j = 0; j < bc->n_topics; j++) {
            const mql_bridge_topic *o = &bc->topics[j];
            mql_bytes of = rule_filter(o, o->local_prefix, g, sizeof(g));
            if ((o->dir & MQL_BRIDGE_OUT) && of.len == rf.len && memcmp(of.p, rf.p, rf.len) == 0 &&
                o->qos > qos)
                qos = o->qos;
        }
        mql_sub tmpl;
        memset(&tmpl, 0, sizeof(tmpl));
        tmpl.session = br->s;
        tmpl.qos = qos;
        tmpl.no_local = true; /* what came in through this bridge does not go back out */
        tmpl.retain_as_published = bc->outgoing_retain;
        bool existed;
        mql_sub *ns = mql_topics_subscribe(b->core.topics, rf, &tmpl, &existed);
        if (ns == NULL)
            return MQL_E_NOMEM;
        if (!existed) {
            mql_session_link_sub(br->s, ns);
            struct retained_ctx rc = {b, br->s, qos, bc->outgoing_retain};
            mql_topics_retained(b->core.topics, rf, retained_cb, &rc);
        }
        (void)mql_session_mirror_sub(&b->core, br->s, ns);
    }
    return MQL_OK;
}

static mql_err bridge_init(mql_broker *b, mql_bridge *br, const mql_bridge_conf *bc, char *errbuf,
                           size_t errlen)
{
    br->b = b;
    br->conf = bc;
    br->remote_max_qos = 2;
    snprintf(br->state_topic, sizeof(br->state_topic), "$SYS/broker/bridge/%s/state", bc->name);
    if (bc->remote_clientid[0] != '\0') {
        snprintf(br->remote_id, sizeof(br->remote_id), "%s", bc->remote_clientid);
    } else { /* mosquitto's default: HOSTNAME.NAME */
        char host[64] = "mqlite";
        (void)gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(br->remote_id, sizeof(br->remote_id), "%s.%s", host, bc->name);
    }
    if (bc->notifications && bc->notification_topic[0] != '\0')
        snprintf(br->note_topic, sizeof(br->note_topic), "%s", bc->notification_topic);
    else if (bc->notifications)
        snprintf(br->note_topic, sizeof(br->note_topic), "$SYS/broker/connection/%s/state",
                 br->remote_id);
    for (int i = 0; i < bc->n_addresses; i++) {
        char url[200], host[128];
        mql_dial_opts o;
        mql_startup_dial_opts(bc, i, url, sizeof(url), host, sizeof(host), &o);
        char why[400];
        mql_err err = mql_dialer_alloc(&br->dialers[i], b->net, &o, &bridge_ops, br, dial_failed,
                                       why, sizeof(why));
        if (err != MQL_OK) {
            snprintf(errbuf, errlen, "bridge %s (line %d): %s", bc->name, bc->line, why);
            return err;
        }
    }

    char idbuf[sizeof(bc->local_clientid) + 16];
    const char *lid = bc->local_clientid;
    if (lid[0] == '\0') {
        snprintf(idbuf, sizeof(idbuf), "$bridge/%s", bc->name);
        lid = idbuf;
    }
    mql_session *s = mql_clients_find(&b->core, (const uint8_t *)lid, (uint32_t)strlen(lid));
    if (s != NULL && s->bridge != NULL) {
        snprintf(errbuf, errlen, "bridge %s (line %d): local_clientid '%s' is bridge %s's already",
                 bc->name, bc->line, lid, s->bridge->conf->name);
        return MQL_E_CONFIG;
    }
    if (s == NULL &&
        (s = mql_clients_new(&b->core, (const uint8_t *)lid, (uint32_t)strlen(lid))) == NULL)
        return MQL_E_NOMEM;
    br->s = s;
    s->bridge = br;
    s->bridge_name = bc->name;
    s->max_inflight = bc->max_inflight;
    s->max_queued_messages = bc->queue_max_messages;
    s->max_queued_bytes = bc->queue_max_bytes;
    s->version = bc->protocol_version;
    s->expiry = MQL_SESSION_NEVER; /* its queue is the store-and-forward buffer */
    s->disconnected_at = mql_now_ms();
    (void)mql_session_mirror(&b->core, s);
    mql_err err = local_subscriptions(br);
    if (err != MQL_OK) {
        snprintf(errbuf, errlen, "bridge %s: out of memory", bc->name);
        return err;
    }
    /* Restored queued messages may have gone out just before a crash (their state change
     * was in the last commit window): their first send is marked as a possible
     * re-delivery. */
    for (out_msg *o = s->queue.head; o != NULL; o = o->next)
        o->dup = true;
    if (s->queue.count + s->inflight.count > 0)
        mql_notice("bridge.restore", "bridge \"%s\": %u messages waiting from before the restart",
                   bc->name, s->queue.count + s->inflight.count);
    publish_state(br, "disconnected");
    br->state = BR_IDLE;
    br->next_attempt = 0; /* at the first tick */
    return MQL_OK;
}

mql_err mql_bridges_start(mql_broker *b, char *errbuf, size_t errlen)
{
    if (b->cfg.n_bridges == 0)
        return MQL_OK;
    b->bridges = calloc((size_t)b->cfg.n_bridges, sizeof(*b->bridges));
    if (b->bridges == NULL)
        return MQL_E_NOMEM;
    srand((unsigned)mql_now_ms() ^ (unsigned)getpid());
    pthread_mutex_lock(&b->lock);
    mql_err err = MQL_OK;
    for (int i = 0; i < b->cfg.n_bridges && err == MQL_OK; i++)
        err = bridge_init(b, &b->bridges[i], &b->cfg.bridges[i], errbuf, errlen);
    pthread_mutex_unlock(&b->lock);
    return err;
}

void mql_bridges_sys_publish(mql_broker *b)
{
    for (int i = 0; b->bridges != NULL && i < b->cfg.n_bridges; i++) {
        const mql_bridge *br = &b->bridges[i];
        char t[160], v[16];
        snprintf(t, sizeof(t), "$SYS/broker/bridge/%s/queued", br->conf->name);
        snprintf(v, sizeof(v), "%u", br->s->queue.count + br->s->inflight.count);
        mql_sys_set(&b->core, t, v);
    }
}

void mql_bridges_tick(mql_broker *b, uint64_t now)
{
    for (int i = 0; b->bridges != NULL && i < b->cfg.n_bridges; i++) {
        mql_bridge *br = &b->bridges[i];
        mql_conn *c = br->c;
        if (br->stopped)
            continue;
        switch (br->state) {
        case BR_IDLE:
            if (now >= br->next_attempt && br->dialers[br->addr] != NULL) {
                br->state = BR_DIALING;
                mql_debug("bridge.dial", "bridge \"%s\": connecting to %s", bname(br),
                          br->conf->addresses[br->addr]);
                mql_dialer_dial(br->dialers[br->addr]);
            }
            break;
        case BR_DIALING:
            break;
        case BR_CONNECTING:
            if (c->state == CS_NEW && now - c->created_at > CONNACK_TIMEOUT_MS)
                mql_proto_violation(c, MQL_E_PROTOCOL, "sent no CONNACK within 10 s");
            break;
        case BR_UP:
            if (c->state != CS_ACTIVE)
                break;
            if (c->keepalive != 0 && now - c->last_rx > (uint64_t)c->keepalive * 1500u) {
                mql_proto_violation(c, MQL_E_KEEPALIVE, "answered nothing for 1.5 x keepalive");
                break;
            }
            if (c->keepalive != 0 && now - br->last_ping >= (uint64_t)c->keepalive * 1000u) {
                mql_packet p = {.type = MQL_PINGREQ};
                (void)mql_proto_send_packet(c, &p);
                br->last_ping = now;
            }
            mql_session_pump(&b->core, br->s); /* queued QoS 0 waits for socket room */
            break;
        }
        if (c != NULL && c->state == CS_CLOSING && now - c->closing_since > MQL_CLOSE_FLUSH_MS)
            mql_link_close(c->link, false);
    }
}

void mql_bridges_stop(mql_broker *b)
{
    for (int i = 0; b->bridges != NULL && i < b->cfg.n_bridges; i++) {
        mql_bridge *br = &b->bridges[i];
        br->stopped = true;
        mql_conn *c = br->c;
        if (c == NULL || c->state == CS_CLOSING)
            continue;
        if (c->state == CS_ACTIVE) {
            if (notify_remote(br)) /* a normal DISCONNECT discards the will */
                notify_remote_send(br, c, "0");
            mql_packet p;
            memset(&p, 0, sizeof(p));
            p.type = MQL_DISCONNECT; /* normal: the remote session stays, no will */
            (void)mql_proto_send_packet(c, &p);
        }
        mql_proto_close(c, MQL_CLOSE_FLUSH, MQL_OK, "server shutting down");
    }
}

void mql_bridges_free(mql_broker *b)
{
    for (int i = 0; b->bridges != NULL && i < b->cfg.n_bridges; i++)
        for (int j = 0; j < MQL_MAX_BRIDGE_ADDRS; j++) {
            mql_dialer_free(b->bridges[i].dialers[j]);
            b->bridges[i].dialers[j] = NULL;
        }
}
