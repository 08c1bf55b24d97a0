/*
 * fuzz_conn.c - libFuzzer target: whole connections through the real broker core.
 *
 * The broker core (conn.c, session.c, broker.c, topic.c, msg.c, auth.c ...) is linked with
 * fake_net.c instead of platform/net.c, and with a clock the test drives (MQL_TEST_CLOCK,
 * see platform/clock.h), so one input is one reproducible story: a broker is made from a
 * configuration chosen by the input (no listeners, no ticker thread, no persistence; a
 * password file and an ACL when the input asks), up to four client links are opened, fed
 * and closed, time passes only when the input says so (then the housekeeping of the ticker
 * runs: keepalive, CONNECT timeout, will delay, session expiry, $SYS), and at the end the
 * broker shuts down and is freed (LeakSanitizer checks that nothing is left).
 *
 * Input format (every field is optional; a short input simply ends early):
 *   bytes 0-2   broker configuration bits (see make_config)
 *   then records  OP LEN DATA[LEN]   (LEN is cut to what is left)
 *     slot = OP & 3 (one of four client links), kind = OP >> 2 & 7:
 *     0, 1  FEED   DATA goes to the slot's link as raw bytes; a slot without a link gets a
 *                  new one first (so the bytes before CONNECT are fuzzed too)
 *     2     PACKET DATA describes one packet that is encoded for the slot (see build_packet)
 *     3     CONNECT the slot's old link (if any) is closed by the peer; a new link is opened
 *                  and sent a valid CONNECT built from DATA (see build_connect)
 *     4     CLOSE  the peer closes the slot's link
 *     5     TIME   the clock advances (see advance) and the housekeeping runs
 *     6     BACKLOG the slot's link reports a send backlog above or below the QoS 0 limit
 *     7     TRICKLE like FEED, one byte per receive
 *   Links the broker closed are finished (their `closed` callback runs) at CONNECT, CLOSE and
 *   TIME records, so a closing connection lingers for a while, as one flushing its output
 *   does on a real socket.
 *
 * The oracle, besides the sanitizers: every buffer the broker sends must be a sequence of
 * whole packets that decode cleanly for the connection's version, CONNACK first and only
 * once [MQTT-3.2.0-1] [MQTT-3.2.0-2], nothing after a refusing CONNACK or a DISCONNECT
 * [MQTT-3.2.2-7] [MQTT-3.14.4-1], no DISCONNECT to 3.1.1 clients, only packet types a
 * server sends, every packet within the client's Maximum Packet Size [MQTT-3.1.2-24], a v5
 * Will the server cannot honour refused [MQTT-3.2.2-12] [MQTT-3.2.2-13], PUBLISH QoS within
 * max_qos, and Topic Aliases within the client's Topic Alias Maximum [MQTT-3.3.2-11] and
 * set on the link before they are used without a topic (3.3.2.3.4). A failed check
 * abort()s.
 *
 * Also linked with replay.c (gcc, no libFuzzer) as fuzz_conn_replay, which the unit suite
 * runs on corpus/conn. FUZZ_CONN_LOG=1 in the environment prints the broker's log and every
 * packet it sends (to see what a seed does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/auth.h"
#include "broker/broker_int.h"
#include "fake_net.h"
#include "platform/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_conn: check failed at line %d: %s\n", __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define NSLOTS 4
#define START_MS 1000000u

/* ---- the clock the broker sees (MQL_TEST_CLOCK) ---- */

static uint64_t now_ms = START_MS;

uint64_t mql_test_now_ms(void)
{
    return now_ms;
}

/* ---- one-time setup: log sink, password and ACL files ---- */

static bool trace; /* FUZZ_CONN_LOG: also print every packet the broker sends */
static char dir[64];
static char passwd_path[128];
static char acl_path[128];

/* Users "u" (password "p") and "v" (password "q"), one PBKDF2 iteration so that a CONNECT
 * with a password costs microseconds. */
static void write_passwd(void)
{
    static const struct {
        const char *user, *pass;
    } users[] = {{"u", "p"}, {"v", "q"}};
    FILE *f = fopen(passwd_path, "w");
    CHECK(f != NULL);
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        char line[MQL_PASSWD_LINE_MAX(8)];
        const char *why = NULL;
        const uint8_t salt[4] = {1, 2, 3, (uint8_t)i};
        CHECK(mql_passwd_format_line(line, sizeof(line), users[i].user,
                                     (const uint8_t *)users[i].pass, strlen(users[i].pass), 1, salt,
                                     sizeof(salt), &why) == MQL_OK);
        fprintf(f, "%s\n", line);
    }
    CHECK(fclose(f) == 0);
}

/* Rules for anonymous clients, users u and v, and patterns with %u and %c. */
static void write_acl(void)
{
    FILE *f = fopen(acl_path, "w");
    CHECK(f != NULL);
    fputs("topic readwrite a/#\n"
          "topic read $SYS/#\n"
          "topic deny a/secret\n"
          "user u\n"
          "topic readwrite #\n"
          "topic deny secret/#\n"
          "user v\n"
          "topic read a/#\n"
          "topic write w/#\n"
          "pattern readwrite dev/%c/#\n"
          "pattern write out/%u/#\n",
          f);
    CHECK(fclose(f) == 0);
}

static void cleanup(void)
{
    unlink(passwd_path);
    unlink(acl_path);
    rmdir(dir);
}

static void init_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    /* every level is formatted (the log calls are part of what is fuzzed), written nowhere
     * unless asked */
    mql_log_conf lc = {.dests = 0, .n_files = 0}; /* nowhere */
    char err[256];
    trace = getenv("FUZZ_CONN_LOG") != NULL;
    if (!trace) {
        CHECK(mql_log_open(&lc, err, sizeof(err)) == MQL_OK);
    }
    mql_log_set_types(MQL_LOGT(MQL_LOG_ERROR) | MQL_LOGT(MQL_LOG_WARNING) |
                      MQL_LOGT(MQL_LOG_NOTICE) | MQL_LOGT(MQL_LOG_INFO) | MQL_LOGT(MQL_LOG_DEBUG));
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof(dir), "%.40s/fuzz_conn.XXXXXX", tmp);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(passwd_path, sizeof(passwd_path), "%s/passwd", dir);
    snprintf(acl_path, sizeof(acl_path), "%s/acl", dir);
    write_passwd();
    write_acl();
    atexit(cleanup);
}

/* ---- input reading ---- */

typedef struct input {
    const uint8_t *p;
    size_t len, off;
} input;

static uint8_t take(input *in)
{
    return in->off < in->len ? in->p[in->off++] : 0;
}

/* DATA of a record: byte i, or 0 past its end. */
static uint8_t at(const uint8_t *d, size_t n, size_t i)
{
    return i < n ? d[i] : 0;
}

/* ---- the broker's configuration ---- */

static void make_config(mql_config *cfg, uint8_t c0, uint8_t c1, uint8_t c2)
{
    static const uint32_t inflight[] = {20, 1, 2, 0};
    static const uint32_t queued[] = {1000, 1, 3, 0};
    static const uint16_t alias[] = {10, 0, 1, 65535};
    static const uint8_t max_qos[] = {2, 1, 0, 2};
    mql_config_defaults(cfg);
    /* one listener in the configuration (nothing listens): links say they came from it */
    mql_listener_defaults(&cfg->listeners[cfg->n_listeners++], 1883, "", 0);
    cfg->allow_anonymous = !(c0 & 0x01);
    cfg->max_qos = max_qos[(c0 >> 2) & 3];
    cfg->retain_available = !(c0 & 0x10);
    cfg->shared_subscriptions = !(c0 & 0x20);
    cfg->subscription_identifiers = !(c0 & 0x40);
    cfg->wildcard_subscriptions = !(c0 & 0x80);
    cfg->max_inflight_messages = inflight[c1 & 3];
    cfg->max_queued_messages = queued[(c1 >> 2) & 3];
    cfg->max_packet_size = (c1 & 0x10) ? 64 : 0;
    cfg->client_id_conflict = (c1 & 0x20) ? MQL_CONFLICT_REJECT_NEW : MQL_CONFLICT_TAKEOVER;
    cfg->max_keepalive = (c1 & 0x40) ? 10 : 65535;
    cfg->sys_interval = (c1 & 0x80) ? 1 : 0;
    cfg->max_topic_alias = alias[c2 & 3];
    cfg->max_topic_alias_broker = alias[(c2 >> 2) & 3];
    cfg->max_queued_bytes = (c2 & 0x10) ? 100 : 0;
    cfg->max_session_expiry = (c2 & 0x20) ? 5 : 0;
    cfg->max_connections = (c2 & 0x40) ? 2 : -1;
    cfg->store_sync = (c2 & 0x80) ? MQL_STORE_SYNC_OFF : MQL_STORE_SYNC_FULL;
}

/* ---- the client side of each link ---- */

typedef struct peer {
    mql_link *link;   /* NULL: none yet */
    uint8_t version;  /* what this side speaks (for building packets) */
    bool got_connack; /* the broker sent CONNACK */
    bool ended;       /* a refusing CONNACK or a DISCONNECT was sent: nothing may follow */
    bool must_refuse; /* the CONNECT asked for a will the server cannot honour (v5) */
    uint8_t aliases[65536 / 8]; /* Topic Aliases the broker has set on this link */
} peer;

static peer peers[NSLOTS];

/* The checks on one packet the broker sent to the client of `pe`. */
static void check_sent(peer *pe, const mql_conn *c, uint8_t v, const mql_packet *p, size_t size)
{
    CHECK(!pe->ended); /* [MQTT-3.2.2-7] [v3.1.1 MQTT-3.2.2-5] [MQTT-3.14.4-1] */
    if (c->client_max_packet != 0)
        CHECK(size <= c->client_max_packet); /* [MQTT-3.1.2-24] */
    if (!pe->got_connack) {
        CHECK(p->type == MQL_CONNACK); /* [MQTT-3.2.0-1] */
        pe->got_connack = true;
        const mql_connack *ca = &p->u.connack;
        CHECK(!(ca->session_present && ca->reason != 0)); /* [MQTT-3.2.2-6] */
        if (pe->must_refuse)
            CHECK(ca->reason >= 0x80); /* [MQTT-3.2.2-12] [MQTT-3.2.2-13] */
        if (ca->reason != 0)
            pe->ended = true;
        return;
    }
    switch (p->type) {
    case MQL_CONNACK:
        CHECK(!"a second CONNACK"); /* [MQTT-3.2.0-2] */
        break;
    case MQL_PUBLISH: {
        const mql_publish *pub = &p->u.publish;
        if (pub->props.present & MQL_PBIT(MQL_PROP_TOPIC_ALIAS)) {
            uint16_t a = pub->props.topic_alias;
            CHECK(v == MQL_V5 && a >= 1 && a <= c->out_alias_max); /* [MQTT-3.3.2-11] */
            if (pub->topic.len == 0)
                CHECK(pe->aliases[a / 8] & (1u << (a % 8))); /* set on this link first */
            else
                pe->aliases[a / 8] |= (uint8_t)(1u << (a % 8));
        } else {
            CHECK(pub->topic.len > 0);
        }
        CHECK(pub->qos <= c->b->cfg.max_qos);
        break;
    }
    case MQL_DISCONNECT:
        CHECK(v == MQL_V5); /* a 3.1.1 server never sends DISCONNECT */
        pe->ended = true;
        break;
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
    case MQL_SUBACK:
    case MQL_UNSUBACK:
    case MQL_PINGRESP:
        break;
    default:
        CHECK(!"a packet type the server must not send");
    }
}

static void trace_sent(const peer *pe, const mql_packet *p)
{
    static const char *const names[16] = {"?",         "CONNECT",  "CONNACK",     "PUBLISH",
                                          "PUBACK",    "PUBREC",   "PUBREL",      "PUBCOMP",
                                          "SUBSCRIBE", "SUBACK",   "UNSUBSCRIBE", "UNSUBACK",
                                          "PINGREQ",   "PINGRESP", "DISCONNECT",  "AUTH"};
    fprintf(stderr, "fuzz_conn: slot %d <- %s", (int)(pe - peers), names[p->type & 15]);
    if (p->type == MQL_PUBLISH)
        fprintf(stderr, " \"%.*s\" qos %u id %u%s%s (%u bytes)", (int)p->u.publish.topic.len,
                (const char *)p->u.publish.topic.p, p->u.publish.qos, p->u.publish.packet_id,
                p->u.publish.retain ? " retain" : "", p->u.publish.dup ? " dup" : "",
                p->u.publish.payload.len);
    else if (p->type == MQL_CONNACK || p->type == MQL_DISCONNECT)
        fprintf(stderr, " 0x%02x",
                p->type == MQL_CONNACK ? p->u.connack.reason : p->u.disconnect.reason);
    else if (p->type >= MQL_PUBACK && p->type <= MQL_PUBCOMP)
        fprintf(stderr, " id %u 0x%02x", p->u.ack.packet_id, p->u.ack.reason);
    else if (p->type == MQL_SUBACK || p->type == MQL_UNSUBACK)
        for (uint32_t i = 0; i < p->u.suback.count; i++)
            fprintf(stderr, " 0x%02x", p->u.suback.codes[i]);
    fputc('\n', stderr);
}

/* fake_net sink: everything the broker sends. */
static void sink(void *user, void *ctx, const uint8_t *buf, size_t len)
{
    peer *pe = user;
    const mql_conn *c = ctx;
    uint8_t v = c->version ? c->version : MQL_V311; /* as conn.c encodes */
    size_t off = 0;
    CHECK(len > 0);
    while (off < len) {
        mql_frame f;
        mql_err err = MQL_OK;
        CHECK(mql_frame_scan(buf + off, len - off, 0, &f, &err) == MQL_SCAN_COMPLETE);
        mql_packet p;
        const char *why = NULL;
        err = mql_decode(buf + off, f.total, v, &p, &why);
        if (err != MQL_OK) {
            fprintf(stderr,
                    "fuzz_conn: the broker sent a packet (type %u) that does not decode: %s (%s)\n",
                    f.type, mql_err_str(err), why ? why : "");
            abort();
        }
        if (trace)
            trace_sent(pe, &p);
        check_sent(pe, c, v, &p, f.total);
        off += f.total;
    }
}

/* ---- building packets from a few bytes ---- */

static const char *const client_ids[] = {"a", "b", "", "dev-1", "a", "c", "x/y", "b"};
static const char *const topics[] = {"a/b",     "a/c",      "a/secret", "$SYS/broker/uptime",
                                     "dev/a/x", "secret/x", "out/u/x",  "w/a"};
static const char *const filters[] = {
    "#",       "a/#",      "a/+", "+/b",   "a/b",       "$share/g/a/#", "$SYS/#",  "$share/g/#",
    "dev/a/#", "secret/#", "+",   "a/#/b", "$share/g/", "w/#",          "out/+/#", "a/b/c"};
static const char *const users[] = {"u", "v", "x", "u"};
static const char *const passwords[] = {"p", "q", "wrong", ""};

static mql_bytes str(const char *s)
{
    return (mql_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

/* Encode pkt for version v and feed it to the slot's link. */
static void send_packet(peer *pe, const mql_packet *pkt, uint8_t v)
{
    uint8_t stack[1024];
    size_t n = mql_encode(NULL, 0, pkt, v);
    if (n == 0)
        return; /* not encodable for this version (AUTH for 3.1.1, say) */
    uint8_t *buf = n <= sizeof(stack) ? stack : malloc(n);
    CHECK(buf != NULL);
    CHECK(mql_encode(buf, n, pkt, v) == n);
    fake_link_feed(pe->link, buf, n);
    if (buf != stack)
        free(buf);
}

/*
 * CONNECT from DATA:
 *   d0  bits 0-1 version (3.1.1, 5, 3.1, 5), 2 clean start, 3 will, 4-5 will QoS (3 -> 0),
 *       6 will retain, 7 user name (and password)
 *   d1  bits 0-2 client id, 3-4 user name, 5-6 password, 7 omit the password
 *   d2  keep alive in seconds
 *   d3  v5 properties present: 0 session expiry, 1 receive maximum, 2 maximum packet size,
 *       3 topic alias maximum, 4 request problem information 0, 5 request response
 *       information 1, 6 will delay, 7 a user property and will properties
 *   d4  bits 0-1 session expiry (0, 1, 60, never), 2-3 receive maximum (1, 2, 3, 65535),
 *       4-5 maximum packet size (30, 64, 300, 1 MB), 6-7 topic alias maximum (0, 1, 2, 10)
 *   d5  bits 0-1 will delay (0, 1, 5, 3600), 2-4 will topic
 */
static void build_connect(peer *pe, const uint8_t *d, size_t n, const mql_config *cfg)
{
    static const uint8_t versions[] = {MQL_V311, MQL_V5, MQL_V31, MQL_V5};
    static const uint32_t expiry[] = {0, 1, 60, UINT32_MAX};
    static const uint16_t recv_max[] = {1, 2, 3, 65535};
    static const uint32_t max_packet[] = {30, 64, 300, 1u << 20};
    static const uint16_t alias_max[] = {0, 1, 2, 10};
    static const uint32_t will_delay[] = {0, 1, 5, 3600};
    uint8_t d0 = at(d, n, 0), d1 = at(d, n, 1), d3 = at(d, n, 3), d4 = at(d, n, 4),
            d5 = at(d, n, 5);
    uint8_t v = versions[d0 & 3];
    uint8_t user_raw[32];

    mql_packet pkt;
    memset(&pkt, 0, sizeof(pkt));
    pkt.type = MQL_CONNECT;
    mql_connect *cn = &pkt.u.connect;
    cn->version = v;
    cn->clean_start = (d0 >> 2) & 1;
    cn->will = (d0 >> 3) & 1;
    if (cn->will) {
        cn->will_qos = (d0 >> 4) & 3;
        if (cn->will_qos == 3)
            cn->will_qos = 0;
        cn->will_retain = (d0 >> 6) & 1;
        cn->will_topic = str(topics[(d5 >> 2) & 7]);
        cn->will_payload = str("gone");
    }
    if (d0 & 0x80) {
        cn->has_username = true;
        cn->username = str(users[(d1 >> 3) & 3]);
        if (!(d1 & 0x80)) {
            cn->has_password = true;
            cn->password = str(passwords[(d1 >> 5) & 3]);
        }
    }
    cn->keep_alive = at(d, n, 2);
    cn->client_id = str(client_ids[d1 & 7]);
    if (v == MQL_V5) {
        mql_props *pr = &cn->props;
        if (d3 & 0x01) {
            pr->present |= MQL_PBIT(MQL_PROP_SESSION_EXPIRY);
            pr->session_expiry = expiry[d4 & 3];
        }
        if (d3 & 0x02) {
            pr->present |= MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM);
            pr->receive_maximum = recv_max[(d4 >> 2) & 3];
        }
        if (d3 & 0x04) {
            pr->present |= MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE);
            pr->maximum_packet_size = max_packet[(d4 >> 4) & 3];
        }
        if (d3 & 0x08) {
            pr->present |= MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM);
            pr->topic_alias_maximum = alias_max[(d4 >> 6) & 3];
        }
        if (d3 & 0x10) {
            pr->present |= MQL_PBIT(MQL_PROP_REQUEST_PROBLEM_INFO);
            pr->request_problem_info = 0;
        }
        if (d3 & 0x20) {
            pr->present |= MQL_PBIT(MQL_PROP_REQUEST_RESPONSE_INFO);
            pr->request_response_info = 1;
        }
        if (d3 & 0x80) {
            size_t ul = mql_user_prop_encode(user_raw, sizeof(user_raw), str("k"), str("v"));
            CHECK(ul > 0 && ul <= sizeof(user_raw));
            pr->present |= MQL_PBIT(MQL_PROP_USER);
            pr->user_raw = (mql_bytes){user_raw, (uint32_t)ul};
            if (cn->will) {
                cn->will_props.present |= MQL_PBIT(MQL_PROP_USER) |
                                          MQL_PBIT(MQL_PROP_CONTENT_TYPE) |
                                          MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY);
                cn->will_props.user_raw = pr->user_raw;
                cn->will_props.content_type = str("text/plain");
                cn->will_props.message_expiry = 2;
            }
        }
        if ((d3 & 0x40) && cn->will) {
            cn->will_props.present |= MQL_PBIT(MQL_PROP_WILL_DELAY);
            cn->will_props.will_delay = will_delay[d5 & 3];
        }
    }
    pe->version = v;
    /* A v5 server refuses a Will QoS above its Maximum QoS and a Will Retain it does not
     * support. Checked only for the first packet of a fresh link (see record()). */
    if (cfg != NULL && v == MQL_V5 && cn->will &&
        (cn->will_qos > cfg->max_qos || (cn->will_retain && !cfg->retain_available)))
        pe->must_refuse = true;
    send_packet(pe, &pkt, v);
}

/*
 * One packet from DATA (d0 bits 0-3 choose the type), for the version the slot speaks:
 *   PUBLISH      d0 bits 4-5 QoS, 6 retain, 7 dup; d1 topic (bits 0-2), bit 3 topic alias
 *                (d2 & 15), bit 4 alias only (empty topic), bit 5 payload format 1, bit 6
 *                message expiry (d2 >> 4 seconds), bit 7 response topic + correlation data;
 *                d3 d4 packet id; d5 * 4 payload bytes (from the rest of DATA, or 0xC3)
 *   SUBSCRIBE    d1 d2 filters (4 bits each: one or two entries, d0 bit 4), d3 options
 *                (QoS, no local, retain as published, retain handling), d4 subscription id,
 *                d5 packet id
 *   UNSUBSCRIBE  d1 d2 filters, d5 packet id
 *   PUBACK PUBREC PUBREL PUBCOMP  d1 d2 packet id, d3 reason (v5)
 *   PINGREQ, DISCONNECT (d1 reason, d2 bit 0 session expiry d3), AUTH
 */
static void build_packet(peer *pe, const uint8_t *d, size_t n)
{
    static const uint8_t types[16] = {MQL_PUBLISH,    MQL_PUBLISH,   MQL_PUBLISH,     MQL_PUBLISH,
                                      MQL_SUBSCRIBE,  MQL_SUBSCRIBE, MQL_UNSUBSCRIBE, MQL_PUBACK,
                                      MQL_PUBREC,     MQL_PUBREL,    MQL_PUBCOMP,     MQL_PINGREQ,
                                      MQL_DISCONNECT, MQL_AUTH,      MQL_CONNECT,     MQL_PUBLISH};
    uint8_t d0 = at(d, n, 0), d1 = at(d, n, 1), d2 = at(d, n, 2), d3 = at(d, n, 3),
            d4 = at(d, n, 4), d5 = at(d, n, 5);
    uint8_t v = pe->version ? pe->version : MQL_V311;
    uint8_t user_raw[32];
    uint8_t *payload = NULL;
    mql_sub_entry entries[2];
    mql_bytes unsubs[2];
    uint32_t sub_id;

    mql_packet pkt;
    memset(&pkt, 0, sizeof(pkt));
    pkt.type = types[d0 & 15];
    switch (pkt.type) {
    case MQL_PUBLISH: {
        mql_publish *pub = &pkt.u.publish;
        pub->qos = (d0 >> 4) & 3;
        if (pub->qos == 3)
            pub->qos = 1;
        pub->retain = (d0 >> 6) & 1;
        pub->dup = pub->qos > 0 && (d0 >> 7);
        pub->topic = str(topics[d1 & 7]);
        pub->packet_id = pub->qos ? (uint16_t)(((d3 << 8) | d4) ? ((d3 << 8) | d4) : 1) : 0;
        if (v == MQL_V5) {
            mql_props *pr = &pub->props;
            if (d1 & 0x08) {
                pr->present |= MQL_PBIT(MQL_PROP_TOPIC_ALIAS);
                pr->topic_alias = d2 & 15;
                if (d1 & 0x10)
                    pub->topic.len = 0;
            }
            if (d1 & 0x20) {
                pr->present |= MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT);
                pr->payload_format = 1;
            }
            if (d1 & 0x40) {
                pr->present |= MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY);
                pr->message_expiry = d2 >> 4;
            }
            if (d1 & 0x80) {
                size_t ul = mql_user_prop_encode(user_raw, sizeof(user_raw), str("k"), str("v"));
                pr->present |= MQL_PBIT(MQL_PROP_RESPONSE_TOPIC) |
                               MQL_PBIT(MQL_PROP_CORRELATION_DATA) | MQL_PBIT(MQL_PROP_USER);
                pr->response_topic = str("a/reply");
                pr->correlation_data = str("\x01\x02");
                pr->user_raw = (mql_bytes){user_raw, (uint32_t)ul};
            }
        }
        size_t plen = (size_t)d5 * 4;
        payload = malloc(plen ? plen : 1);
        CHECK(payload != NULL);
        for (size_t i = 0; i < plen; i++)
            payload[i] = 6 + i < n ? d[6 + i] : 0xC3;
        pub->payload = (mql_bytes){payload, (uint32_t)plen};
        break;
    }
    case MQL_SUBSCRIBE: {
        mql_subscribe *s = &pkt.u.subscribe;
        s->packet_id = d5 ? d5 : 1;
        s->count = (d0 & 0x10) ? 2 : 1;
        for (uint32_t i = 0; i < s->count; i++) {
            entries[i].filter = str(filters[((i ? d2 : d1) >> (i ? 0 : 4)) & 15]);
            entries[i].qos = d3 & 3;
            if (entries[i].qos == 3)
                entries[i].qos = 2;
            if (v == MQL_V5) {
                entries[i].no_local = (d3 >> 2) & 1;
                entries[i].retain_as_published = (d3 >> 3) & 1;
                entries[i].retain_handling = ((d3 >> 4) & 3) == 3 ? 0 : (d3 >> 4) & 3;
            }
        }
        s->list = entries;
        if (v == MQL_V5 && d4 != 0) {
            sub_id = d4;
            s->props.present |= MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID);
            s->props.sub_id = sub_id;
            s->props.sub_ids = &sub_id;
            s->props.n_sub_ids = 1;
        }
        break;
    }
    case MQL_UNSUBSCRIBE: {
        mql_unsubscribe *u = &pkt.u.unsubscribe;
        u->packet_id = d5 ? d5 : 1;
        u->count = (d0 & 0x10) ? 2 : 1;
        unsubs[0] = str(filters[(d1 >> 4) & 15]);
        unsubs[1] = str(filters[d2 & 15]);
        u->list = unsubs;
        break;
    }
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP: {
        uint16_t pid = (uint16_t)((d1 << 8) | d2);
        pkt.u.ack.packet_id = pid ? pid : 1;
        if (v == MQL_V5)
            pkt.u.ack.reason = d3 < 0x80 ? 0 : 0x80;
        break;
    }
    case MQL_DISCONNECT:
        if (v == MQL_V5) {
            pkt.u.disconnect.reason = d1 & 1 ? 0x04 : 0;
            if (d2 & 1) {
                pkt.u.disconnect.props.present |= MQL_PBIT(MQL_PROP_SESSION_EXPIRY);
                pkt.u.disconnect.props.session_expiry = d3;
            }
        }
        break;
    case MQL_AUTH:
        pkt.u.disconnect.reason = 0x18;
        pkt.u.disconnect.props.present |= MQL_PBIT(MQL_PROP_AUTH_METHOD);
        pkt.u.disconnect.props.auth_method = str("SCRAM-SHA-1");
        break;
    case MQL_CONNECT: /* a second CONNECT, or a first one on a raw link */
        build_connect(pe, d + 1, n ? n - 1 : 0, NULL);
        return;
    default: /* PINGREQ */
        break;
    }
    send_packet(pe, &pkt, v);
    free(payload);
}

/* ---- the story ---- */

/* A new link in slot i (the old one, if any, is closed by its peer first). */
static void open_link(mql_broker *b, int i)
{
    static const char *const names[NSLOTS] = {"10.0.0.1:50001", "10.0.0.2:50002", "10.0.0.1:50003",
                                              "[fd00::4]:50004"};
    peer *pe = &peers[i];
    if (pe->link != NULL)
        fake_link_peer_close(pe->link);
    fake_net_reap(b->net);
    memset(pe, 0, sizeof(*pe));
    pe->link = fake_link_open(b->net, names[i], pe);
    CHECK(pe->link != NULL);
}

/* TIME: d0 quarter seconds plus d1 minutes (at least one tick), then the housekeeping. */
static void advance(mql_broker *b, const uint8_t *d, size_t n)
{
    now_ms += 250u * ((uint64_t)at(d, n, 0) + 1) + 60000u * (uint64_t)at(d, n, 1);
    pthread_mutex_lock(&b->lock);
    mql_broker_tick(b, now_ms);
    pthread_mutex_unlock(&b->lock);
    fake_net_reap(b->net);
}

static void record(mql_broker *b, uint8_t op, const uint8_t *d, size_t n)
{
    int slot = op & 3;
    peer *pe = &peers[slot];
    switch ((op >> 2) & 7) {
    case 0:
    case 1:
        if (pe->link == NULL)
            open_link(b, slot);
        fake_link_feed(pe->link, d, n);
        break;
    case 2:
        if (pe->link == NULL)
            open_link(b, slot);
        build_packet(pe, d, n);
        break;
    case 3:
        open_link(b, slot);
        build_connect(pe, d, n, &b->cfg);
        break;
    case 4:
        if (pe->link != NULL)
            fake_link_peer_close(pe->link);
        fake_net_reap(b->net);
        break;
    case 5:
        advance(b, d, n);
        break;
    case 6:
        if (pe->link != NULL)
            fake_link_set_backlog(pe->link, at(d, n, 0) & 1 ? MQL_QOS0_BACKLOG_MAX + 1 : 0);
        break;
    default:
        if (pe->link == NULL)
            open_link(b, slot);
        for (size_t i = 0; i < n; i++)
            fake_link_feed(pe->link, d + i, 1);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    input in = {data, size, 0};
    uint8_t c0 = take(&in), c1 = take(&in), c2 = take(&in);
    mql_config cfg;
    make_config(&cfg, c0, c1, c2);
    now_ms = START_MS;
    memset(peers, 0, sizeof(peers));

    mql_broker *b = NULL;
    CHECK(mql_broker_alloc(&b, &cfg) == MQL_OK);
    fake_net_set_sink(b->net, sink);
    b->started_at = now_ms;
    char err[512];
    /* a password file when anonymous clients are refused; the ACL on bit 1 */
    CHECK(mql_broker_load_auth(b, cfg.allow_anonymous ? NULL : passwd_path,
                               (c0 & 0x02) ? acl_path : NULL, err, sizeof(err)) == MQL_OK);

    while (in.off + 1 < in.len) {
        uint8_t op = take(&in);
        size_t n = take(&in);
        if (n > in.len - in.off)
            n = in.len - in.off;
        record(b, op, in.p + in.off, n);
        in.off += n;
    }

    for (int i = 0; i < NSLOTS; i++)
        if (peers[i].link != NULL)
            fake_link_peer_close(peers[i].link);
    fake_net_reap(b->net);
    mql_broker_shutdown(b);
    mql_broker_free(b);
    return 0;
}
