/*
 * test_codec.c - byte-vector tests of broker/codec (MQTT 3.1.1 and 5.0 packets).
 *
 * Every vector is written from the specifications (figures and tables of sections 2 and 3).
 * For each packet type of both versions there is a decode test and an exact-bytes encode test;
 * then round trips, every property identifier, Variable Byte Integer boundaries, one test per
 * malformed / protocol-error rule (asserting the exact mql_err and that `why` names the rule),
 * and the topic / UTF-8 helpers. Tests are tagged with the normative ids they cover: v5 ids as
 * [MQTT-x.y.z-n], 3.1.1 ids as [v3.1.1 MQTT-x.y.z-n].
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "broker/codec.h"

#define U8(...) ((const uint8_t[]){__VA_ARGS__})
#define N(...) sizeof((const uint8_t[]){__VA_ARGS__})

/* The frame under test lives here so decoded slices stay valid for the whole test. */
static uint8_t G[70000];
static size_t GN;
static mql_packet P;
static const char *WHY;

static size_t build(uint8_t *out, uint8_t b0, const uint8_t *body, size_t n)
{
    out[0] = b0;
    size_t hl = 1 + mql_vbi_encode(out + 1, (uint32_t)n);
    if (n)
        memcpy(out + hl, body, n);
    return hl + n;
}

/* Decode a whole frame given byte by byte. */
static mql_err decode_frame(uint8_t ver, const uint8_t *f, size_t n)
{
    memcpy(G, f, n);
    GN = n;
    WHY = NULL;
    return mql_decode(G, GN, ver, &P, &WHY);
}

/* Decode first byte b0 + computed Remaining Length + body. */
static mql_err decode_body(uint8_t ver, uint8_t b0, const uint8_t *body, size_t n)
{
    GN = build(G, b0, body, n);
    WHY = NULL;
    return mql_decode(G, GN, ver, &P, &WHY);
}

#define DECF(ver, ...) decode_frame((ver), U8(__VA_ARGS__), N(__VA_ARGS__))
#define DECB(ver, b0, ...) decode_body((ver), (b0), U8(__VA_ARGS__), N(__VA_ARGS__))

static void expect_ok(mql_err e, int line)
{
    cr_assert_eq(e, MQL_OK, "line %d: decode failed: %s (%s)", line, mql_err_str(e),
                 WHY ? WHY : "no why");
}
#define OK(e) expect_ok((e), __LINE__)

/* The decode must fail with `want`, and `why` must name the rule (contain `tag`). */
static void expect_err(mql_err got, mql_err want, const char *tag, int line)
{
    cr_assert_eq(got, want, "line %d: got %s, want %s (why: %s)", line, mql_err_str(got),
                 mql_err_str(want), WHY ? WHY : "NULL");
    cr_assert_not_null(WHY, "line %d: why is NULL", line);
    cr_assert(strstr(WHY, tag) != NULL, "line %d: why \"%s\" does not mention \"%s\"", line, WHY,
              tag);
}
#define ERRF(ver, want, tag, ...) expect_err(DECF((ver), __VA_ARGS__), (want), (tag), __LINE__)
#define ERRB(ver, b0, want, tag, ...)                                                              \
    expect_err(DECB((ver), (b0), __VA_ARGS__), (want), (tag), __LINE__)

static bool bytes_is(mql_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.p, s, n) == 0);
}
#define STR_EQ(b, s) cr_assert(bytes_is((b), (s)), "line %d: slice is not \"%s\"", __LINE__, (s))

static void expect_bytes(const uint8_t *got, size_t gotn, const uint8_t *want, size_t wantn,
                         int line)
{
    if (gotn == wantn && memcmp(got, want, wantn) == 0)
        return;
    char msg[2048];
    size_t o = (size_t)snprintf(msg, sizeof(msg), "got %zu:", gotn);
    for (size_t i = 0; i < gotn && o < 1000; i++)
        o += (size_t)snprintf(msg + o, sizeof(msg) - o, " %02X", got[i]);
    o += (size_t)snprintf(msg + o, sizeof(msg) - o, " / want %zu:", wantn);
    for (size_t i = 0; i < wantn && o < 2000; i++)
        o += (size_t)snprintf(msg + o, sizeof(msg) - o, " %02X", want[i]);
    cr_assert_fail("line %d: %s", line, msg);
}

static uint8_t E[70000];
static size_t EN;

/* Encode pkt and compare with the expected bytes; also checks sizing with cap 0 and that a
 * too-small buffer is left untouched. */
static void expect_enc(const mql_packet *pkt, uint8_t ver, const uint8_t *want, size_t wantn,
                       int line)
{
    size_t need = mql_encode(NULL, 0, pkt, ver);
    cr_assert_eq(need, wantn, "line %d: sizing says %zu, want %zu", line, need, wantn);
    memset(E, 0xA5, sizeof(E));
    cr_assert_eq(mql_encode(E, wantn - 1, pkt, ver), wantn, "line %d", line);
    for (size_t i = 0; i < wantn; i++)
        cr_assert_eq(E[i], 0xA5, "line %d: encode wrote into a too-small buffer", line);
    EN = mql_encode(E, sizeof(E), pkt, ver);
    expect_bytes(E, EN, want, wantn, line);
}
#define ENC(pkt, ver, ...) expect_enc((pkt), (ver), U8(__VA_ARGS__), N(__VA_ARGS__), __LINE__)

/* ------------------------------------------------------------------------------------------ */
/* Round trip: decode -> encode (lists rebuilt from the iterators) -> identical bytes.         */

static mql_sub_entry RT_SUBS[64];
static mql_bytes RT_UNSUBS[64];
static uint32_t RT_IDS[3][64];
static uint8_t RT_USER[3][4096];

static void rebuild_props(mql_props *pr, int slot)
{
    uint32_t pos = 0, n = 0, id;
    while (mql_props_next_sub_id(pr, &pos, &id))
        RT_IDS[slot][n++] = id;
    cr_assert_eq(n, pr->n_sub_ids);
    if (n)
        pr->sub_ids = RT_IDS[slot];
    mql_bytes k, v;
    size_t len = 0;
    pos = 0;
    n = 0;
    while (mql_props_next_user(pr, &pos, &k, &v)) {
        len += mql_user_prop_encode(RT_USER[slot] + len, sizeof(RT_USER[slot]) - len, k, v);
        n++;
    }
    cr_assert_eq(n, pr->n_user);
    pr->user_raw.p = RT_USER[slot];
    pr->user_raw.len = (uint32_t)len;
}

static void roundtrip(uint8_t ver, const uint8_t *f, size_t n, int line)
{
    mql_err e = decode_frame(ver, f, n);
    cr_assert_eq(e, MQL_OK, "line %d: %s (%s)", line, mql_err_str(e), WHY ? WHY : "");
    mql_packet q = P;
    uint8_t ev = ver;
    uint32_t pos = 0, i = 0;
    switch (q.type) {
    case MQL_CONNECT:
        ev = q.u.connect.version;
        rebuild_props(&q.u.connect.props, 0);
        rebuild_props(&q.u.connect.will_props, 1);
        break;
    case MQL_CONNACK:
        rebuild_props(&q.u.connack.props, 0);
        break;
    case MQL_PUBLISH:
        rebuild_props(&q.u.publish.props, 0);
        break;
    case MQL_SUBSCRIBE:
        rebuild_props(&q.u.subscribe.props, 0);
        while (mql_subscribe_next(&q.u.subscribe, ver, &pos, &RT_SUBS[i]))
            i++;
        cr_assert_eq(i, q.u.subscribe.count);
        q.u.subscribe.list = RT_SUBS;
        break;
    case MQL_UNSUBSCRIBE:
        rebuild_props(&q.u.unsubscribe.props, 0);
        while (mql_unsubscribe_next(&q.u.unsubscribe, &pos, &RT_UNSUBS[i]))
            i++;
        cr_assert_eq(i, q.u.unsubscribe.count);
        q.u.unsubscribe.list = RT_UNSUBS;
        break;
    case MQL_SUBACK:
    case MQL_UNSUBACK:
        rebuild_props(&q.u.suback.props, 0);
        break;
    case MQL_DISCONNECT:
    case MQL_AUTH:
        rebuild_props(&q.u.disconnect.props, 0);
        break;
    default:
        if (q.type >= MQL_PUBACK && q.type <= MQL_PUBCOMP)
            rebuild_props(&q.u.ack.props, 0);
        break;
    }
    expect_enc(&q, ev, f, n, line);
}
#define RT(ver, ...) roundtrip((ver), U8(__VA_ARGS__), N(__VA_ARGS__), __LINE__)

/* ------------------------------------------------------------------------------------------ */
/* Canonical vectors shared by decode, encode and round-trip tests.                           */

/* v3.1.1 CONNECT, figure 3.1 layout: every flag set, Will QoS 1. */
#define V3_CONNECT_FULL                                                                            \
    0x10, 0x1F, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0xEE, 0x00, 0x3C, 0x00, 0x03, 'c', 'i', 'd', \
        0x00, 0x03, 'w', '/', 't', 0x00, 0x02, 'h', 'i', 0x00, 0x01, 'u', 0x00, 0x02, 'p', 'w'

/* v5 CONNECT with every CONNECT property and every Will property. */
#define V5_CONNECT_FULL                                                                            \
    0x10, 0x6B, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0xEE, 0x00, 0x3C, /* props: */ 0x25, 0x11,   \
        0x00, 0x00, 0x0E, 0x10, 0x15, 0x00, 0x02, 'a', 'm', 0x16, 0x00, 0x02, 0x01, 0x02, 0x17,    \
        0x00, 0x19, 0x01, 0x21, 0x00, 0x0A, 0x22, 0x00, 0x05, 0x27, 0x00, 0x00, 0x10, 0x00, 0x26,  \
        0x00, 0x01, 'k', 0x00, 0x01, 'v', /* client id */ 0x00, 0x03, 'c', 'i', 'd',               \
        /* will props: */ 0x25, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x3C, 0x03, 0x00, 0x04, 't',   \
        'e', 'x', 't', 0x08, 0x00, 0x03, 'r', '/', 't', 0x09, 0x00, 0x02, 0xCA, 0xFE, 0x18, 0x00,  \
        0x00, 0x00, 0x05, 0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', /* will topic */ 0x00, 0x03,     \
        'w', '/', 't', 0x00, 0x02, 'h', 'i', 0x00, 0x01, 'u', 0x00, 0x02, 'p', 'w'

/* v5 CONNACK with every CONNACK property, in the encoder's CONNACK order (mosquitto's). */
#define V5_CONNACK_FULL                                                                            \
    0x20, 0x42, 0x01, 0x00, 0x3F, 0x22, 0x00, 0x0A, 0x13, 0x00, 0x1E, 0x12, 0x00, 0x02, 'i', 'd',  \
        0x15, 0x00, 0x02, 'a', 'm', 0x16, 0x00, 0x01, 0x07, 0x25, 0x00, 0x27, 0x00, 0x01, 0x00,    \
        0x00, 0x21, 0x00, 0x14, 0x24, 0x01, 0x11, 0x00, 0x00, 0x00, 0x78, 0x28, 0x01, 0x29, 0x00,  \
        0x2A, 0x01, 0x1A, 0x00, 0x01, 'r', 0x1C, 0x00, 0x01, 's', 0x1F, 0x00, 0x02, 'o', 'k',      \
        0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'

/* v5 PUBLISH (server to client) with every PUBLISH property, two Subscription Identifiers and
 * two User Properties with the same name. DUP + QoS 1 + RETAIN. */
#define V5_PUBLISH_FULL                                                                            \
    0x3B, 0x3E, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x07, 0x31, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00,   \
        0x0A, 0x03, 0x00, 0x04, 'j', 's', 'o', 'n', 0x08, 0x00, 0x03, 'r', '/', 'x', 0x09, 0x00,   \
        0x02, 0x01, 0x02, 0x0B, 0x05, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F, 0x23, 0x00, 0x03, 0x26, 0x00,  \
        0x01, 'k', 0x00, 0x01, 'v', 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'w', 'h', 'e', 'l', 'l',    \
        'o'

#define V5_SUBSCRIBE_FULL                                                                          \
    0x82, 0x24, 0x00, 0x0A, 0x0A, 0x0B, 0x80, 0x01, 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', 0x00,  \
        0x03, 'a', '/', '+', 0x2D, 0x00, 0x01, '#', 0x00, 0x00, 0x0A, '$', 's', 'h', 'a', 'r',     \
        'e', '/', 'g', '/', 't', 0x12

#define V5_DISCONNECT_FULL                                                                         \
    0xE0, 0x16, 0x04, 0x14, 0x11, 0x00, 0x00, 0x00, 0x00, 0x1C, 0x00, 0x01, 's', 0x1F, 0x00, 0x01, \
        'r', 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'

#define V5_AUTH_FULL                                                                               \
    0xF0, 0x17, 0x18, 0x15, 0x15, 0x00, 0x02, 'a', 'm', 0x16, 0x00, 0x02, 0x01, 0x02, 0x1F, 0x00,  \
        0x01, 'r', 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'

static void expect_user(const mql_props *pr, const char *const *kv, uint32_t n)
{
    uint32_t pos = 0, i = 0;
    mql_bytes k, v;
    while (mql_props_next_user(pr, &pos, &k, &v)) {
        cr_assert_lt(i, n);
        STR_EQ(k, kv[2 * i]);
        STR_EQ(v, kv[2 * i + 1]);
        i++;
    }
    cr_assert_eq(i, n);
    cr_assert_eq(pr->n_user, n);
}

/* ========================================================================================== */
/* Frame scanning and Variable Byte Integers [MQTT-1.5.5-1]                                   */

Test(frame_scan, need_more_is_not_an_error)
{
    mql_frame f;
    mql_err e = MQL_OK;
    cr_assert_eq(mql_frame_scan(U8(0x30), 0, 0, &f, &e), MQL_SCAN_NEED_MORE);
    cr_assert_eq(mql_frame_scan(U8(0x30), 1, 0, &f, &e), MQL_SCAN_NEED_MORE);
    cr_assert_eq(f.header_len, 0);
    cr_assert_eq(mql_frame_scan(U8(0x30, 0x80), 2, 0, &f, &e), MQL_SCAN_NEED_MORE);
    cr_assert_eq(f.header_len, 0, "header incomplete: out zeroed");
    /* Header complete, body incomplete: out is filled. */
    cr_assert_eq(mql_frame_scan(U8(0x32, 0x05, 0x00, 0x01), 4, 0, &f, &e), MQL_SCAN_NEED_MORE);
    cr_assert_eq(f.header_len, 2);
    cr_assert_eq(f.remaining, 5);
    cr_assert_eq(f.total, 7);
    cr_assert_eq(f.type, MQL_PUBLISH);
    cr_assert_eq(f.flags, 2);
    cr_assert_eq(e, MQL_OK, "err untouched on NEED_MORE");
}

Test(frame_scan, complete_with_trailing_stream_bytes)
{
    mql_frame f;
    mql_err e = MQL_OK;
    const uint8_t b[] = {0xC0, 0x00, 0xD0, 0x00, 0x30};
    cr_assert_eq(mql_frame_scan(b, sizeof(b), 0, &f, &e), MQL_SCAN_COMPLETE);
    cr_assert_eq(f.total, 2);
    cr_assert_eq(f.type, MQL_PINGREQ);
    cr_assert_eq(mql_frame_scan(b + 2, 3, 0, &f, &e), MQL_SCAN_COMPLETE);
    cr_assert_eq(f.type, MQL_PINGRESP);
}

Test(frame_scan, remaining_length_boundaries)
{
    static const struct {
        uint32_t v;
        uint8_t n;
        uint8_t b[4];
    } cases[] = {
        {0, 1, {0x00}},
        {127, 1, {0x7F}},
        {128, 2, {0x80, 0x01}},
        {16383, 2, {0xFF, 0x7F}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {2097151, 3, {0xFF, 0xFF, 0x7F}},
        {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
        {268435455, 4, {0xFF, 0xFF, 0xFF, 0x7F}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[6] = {0x30};
        memcpy(buf + 1, cases[i].b, cases[i].n);
        mql_frame f;
        mql_err e = MQL_OK;
        mql_scan s = mql_frame_scan(buf, 1 + cases[i].n, 0, &f, &e);
        cr_assert_eq(s, cases[i].v == 0 ? MQL_SCAN_COMPLETE : MQL_SCAN_NEED_MORE);
        cr_assert_eq(f.remaining, cases[i].v);
        cr_assert_eq(f.header_len, 1 + cases[i].n);
        cr_assert_eq(f.total, 1 + cases[i].n + cases[i].v);
    }
}

Test(frame_scan, five_byte_remaining_length_is_malformed)
{
    mql_frame f;
    mql_err e = MQL_OK;
    cr_assert_eq(mql_frame_scan(U8(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01), 6, 0, &f, &e),
                 MQL_SCAN_ERROR);
    cr_assert_eq(e, MQL_E_MALFORMED);
    /* Known as soon as the fourth byte has its continuation bit set. */
    e = MQL_OK;
    cr_assert_eq(mql_frame_scan(U8(0x30, 0x80, 0x80, 0x80, 0x80), 5, 0, &f, &e), MQL_SCAN_ERROR);
    cr_assert_eq(e, MQL_E_MALFORMED);
}

Test(frame_scan, too_large_before_the_body_arrives)
{
    mql_frame f;
    mql_err e = MQL_OK;
    /* Remaining Length 16384: refused with only the 4 header bytes received. */
    cr_assert_eq(mql_frame_scan(U8(0x30, 0x80, 0x80, 0x01), 4, 1000, &f, &e), MQL_SCAN_ERROR);
    cr_assert_eq(e, MQL_E_TOO_LARGE);
    /* Exactly max_size is fine. */
    e = MQL_OK;
    cr_assert_eq(mql_frame_scan(U8(0x30, 0x08), 2, 10, &f, &e), MQL_SCAN_NEED_MORE);
    cr_assert_eq(mql_frame_scan(U8(0x30, 0x09), 2, 10, &f, &e), MQL_SCAN_ERROR);
    cr_assert_eq(e, MQL_E_TOO_LARGE);
    /* max_size 0: only the protocol limit. */
    e = MQL_OK;
    cr_assert_eq(mql_frame_scan(U8(0x30, 0xFF, 0xFF, 0xFF, 0x7F), 5, 0, &f, &e),
                 MQL_SCAN_NEED_MORE);
    cr_assert_eq(f.total, 268435460u);
}

Test(vbi, encode_and_size_at_boundaries)
{
    static const struct {
        uint32_t v;
        uint8_t n;
        uint8_t b[4];
    } cases[] = {
        {0, 1, {0x00}},
        {127, 1, {0x7F}},
        {128, 2, {0x80, 0x01}},
        {16383, 2, {0xFF, 0x7F}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {2097151, 3, {0xFF, 0xFF, 0x7F}},
        {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
        {268435455, 4, {0xFF, 0xFF, 0xFF, 0x7F}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[4] = {0};
        cr_assert_eq(mql_vbi_size(cases[i].v), cases[i].n);
        cr_assert_eq(mql_vbi_encode(buf, cases[i].v), cases[i].n);
        expect_bytes(buf, cases[i].n, cases[i].b, cases[i].n, __LINE__);
    }
    uint8_t buf[4];
    cr_assert_eq(mql_vbi_size(268435456u), 0, "beyond four bytes cannot be encoded");
    cr_assert_eq(mql_vbi_encode(buf, 268435456u), 0);
}

Test(vbi, decode_remaining_length_multi_byte)
{
    /* PUBLISH with a 200-byte payload: Remaining Length 0xCF 0x01 (207). */
    uint8_t body[207] = {0x00, 0x03, 'a', '/', 'b', 0x00};
    memset(body + 6, 'x', 201);
    GN = build(G, 0x30, body, sizeof(body));
    cr_assert_eq(G[1], 0xCF);
    cr_assert_eq(G[2], 0x01);
    OK(mql_decode(G, GN, MQL_V311, &P, &WHY));
    cr_assert_eq(P.u.publish.payload.len, 202, "3.1.1: the 0x00 is payload");
    OK(mql_decode(G, GN, MQL_V5, &P, &WHY));
    cr_assert_eq(P.u.publish.payload.len, 201, "v5: the 0x00 is the Property Length");
}

Test(vbi, subscription_identifier_boundaries)
{
    /* Subscription Identifier (a VBI property) at each width boundary. */
    static const struct {
        uint32_t v;
        uint8_t n;
        uint8_t b[4];
    } cases[] = {
        {1, 1, {0x01}},
        {127, 1, {0x7F}},
        {128, 2, {0x80, 0x01}},
        {16383, 2, {0xFF, 0x7F}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {2097151, 3, {0xFF, 0xFF, 0x7F}},
        {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
        {268435455, 4, {0xFF, 0xFF, 0xFF, 0x7F}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t body[32] = {0x00, 0x01, (uint8_t)(1 + cases[i].n), 0x0B};
        memcpy(body + 4, cases[i].b, cases[i].n);
        size_t n = 4 + cases[i].n;
        body[n++] = 0x00;
        body[n++] = 0x01;
        body[n++] = '#';
        body[n++] = 0x00;
        OK(decode_body(MQL_V5, 0x82, body, n));
        cr_assert_eq(P.u.subscribe.props.sub_id, cases[i].v);
        cr_assert_eq(P.u.subscribe.props.n_sub_ids, 1);
    }
}

Test(vbi, five_byte_and_non_minimal_property_vbi_are_malformed)
{
    /* [MQTT-1.5.5-1] Subscription Identifier 1 encoded as 0x81 0x00. */
    ERRB(MQL_V5, 0x82, MQL_E_MALFORMED, "MQTT-1.5.5-1", 0x00, 0x01, 0x03, 0x0B, 0x81, 0x00, 0x00,
         0x01, '#', 0x00);
    /* Five bytes. */
    ERRB(MQL_V5, 0x82, MQL_E_MALFORMED, "MQTT-1.5.5-1", 0x00, 0x01, 0x06, 0x0B, 0xFF, 0xFF, 0xFF,
         0xFF, 0x01, 0x00, 0x01, '#', 0x00);
    /* Property Length 0 encoded as 0x80 0x00. */
    ERRB(MQL_V5, 0x82, MQL_E_MALFORMED, "MQTT-1.5.5-1", 0x00, 0x01, 0x80, 0x00, 0x00, 0x01, '#',
         0x00);
}

Test(vbi, non_minimal_remaining_length)
{
    /* [MQTT-1.5.5-1] applies to v5; 3.1.1 has no such rule. */
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-1.5.5-1", 0xC0, 0x80, 0x00);
    OK(DECF(MQL_V311, 0xC0, 0x80, 0x00));
    cr_assert_eq(P.type, MQL_PINGREQ);
}

Test(vbi, five_byte_remaining_length_in_decode)
{
    ERRF(MQL_V5, MQL_E_MALFORMED, "four bytes", 0xC0, 0x80, 0x80, 0x80, 0x80, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0xC0, 0x80);
}

/* ========================================================================================== */
/* MQTT 3.1.1: decode and encode of each packet type                                          */

Test(v311, connect_decode)
{
    OK(DECF(0, V3_CONNECT_FULL));
    const mql_connect *c = &P.u.connect;
    cr_assert_eq(P.type, MQL_CONNECT);
    STR_EQ(c->protocol_name, "MQTT");
    cr_assert_eq(c->version, MQL_V311);
    cr_assert(c->clean_start && c->will && c->will_retain && c->has_username && c->has_password);
    cr_assert_eq(c->will_qos, 1);
    cr_assert_eq(c->keep_alive, 60);
    STR_EQ(c->client_id, "cid");
    STR_EQ(c->will_topic, "w/t");
    STR_EQ(c->will_payload, "hi");
    STR_EQ(c->username, "u");
    STR_EQ(c->password, "pw");
    cr_assert_eq(c->props.present, 0);
}

Test(v311, connect_minimal_decode)
{
    OK(DECF(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01,
            'a'));
    cr_assert(P.u.connect.clean_start);
    cr_assert(!P.u.connect.will && !P.u.connect.has_username && !P.u.connect.has_password);
    STR_EQ(P.u.connect.client_id, "a");
}

Test(v311, connect_encode)
{
    mql_packet p = {.type = MQL_CONNECT};
    mql_connect *c = &p.u.connect;
    c->clean_start = c->will = c->will_retain = c->has_username = c->has_password = true;
    c->will_qos = 1;
    c->keep_alive = 60;
    c->client_id = (mql_bytes){(const uint8_t *)"cid", 3};
    c->will_topic = (mql_bytes){(const uint8_t *)"w/t", 3};
    c->will_payload = (mql_bytes){(const uint8_t *)"hi", 2};
    c->username = (mql_bytes){(const uint8_t *)"u", 1};
    c->password = (mql_bytes){(const uint8_t *)"pw", 2};
    /* Properties are v5-only and left out. */
    c->props.present = MQL_PBIT(MQL_PROP_SESSION_EXPIRY);
    c->props.session_expiry = 99;
    ENC(&p, MQL_V311, V3_CONNECT_FULL);
}

Test(v311, mqtt31_connect_mqisdp_level3)
{
    /* MQTT 3.1: protocol name "MQIsdp", level 3, decoded with 3.1.1 rules. */
    OK(DECF(0, 0x10, 0x0F, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0x02, 0x00, 0x0A, 0x00,
            0x01, 'x'));
    cr_assert_eq(P.u.connect.version, MQL_V31);
    STR_EQ(P.u.connect.protocol_name, "MQIsdp");
    mql_packet p = {.type = MQL_CONNECT};
    p.u.connect.clean_start = true;
    p.u.connect.keep_alive = 10;
    p.u.connect.client_id = (mql_bytes){(const uint8_t *)"x", 1};
    ENC(&p, MQL_V31, 0x10, 0x0F, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0x02, 0x00, 0x0A,
        0x00, 0x01, 'x');
}

Test(v311, connect_bridge_bit)
{
    /* mosquitto's bridges set bit 7 of a 3.1 / 3.1.1 Protocol Level (try_private): decoded
     * as that version with `bridge`, and encoded back the same way. */
    OK(DECF(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x84, 0x02, 0x00, 0x3C, 0x00, 0x01,
            'a'));
    cr_assert_eq(P.u.connect.version, MQL_V311);
    cr_assert(P.u.connect.bridge);
    mql_packet p = {.type = MQL_CONNECT};
    p.u.connect.bridge = p.u.connect.clean_start = true;
    p.u.connect.keep_alive = 60;
    p.u.connect.client_id = (mql_bytes){(const uint8_t *)"a", 1};
    ENC(&p, MQL_V311, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x84, 0x02, 0x00, 0x3C, 0x00,
        0x01, 'a');
    OK(DECF(0, 0x10, 0x0F, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x83, 0x02, 0x00, 0x0A, 0x00,
            0x01, 'x'));
    cr_assert_eq(P.u.connect.version, MQL_V31);
    cr_assert(P.u.connect.bridge);
    /* not for MQTT 5, which has No Local instead [MQTT-3.1.2-2] */
    ERRF(0, MQL_E_BAD_VERSION, "MQTT-3.1.2-2", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x85,
         0x02, 0x00, 0x3C, 0x00, 0x01, 'a');
}

Test(v311, connack_decode_and_encode)
{
    OK(DECF(MQL_V311, 0x20, 0x02, 0x01, 0x00));
    cr_assert_eq(P.type, MQL_CONNACK);
    cr_assert(P.u.connack.session_present);
    cr_assert_eq(P.u.connack.reason, 0);
    OK(DECF(MQL_V311, 0x20, 0x02, 0x00, 0x05));
    cr_assert_eq(P.u.connack.reason, 5);

    /* 3.1.1 CONNACK is exactly flags + return code; properties are left out. */
    mql_packet p = {.type = MQL_CONNACK};
    p.u.connack.session_present = true;
    p.u.connack.props.present = MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM);
    p.u.connack.props.receive_maximum = 5;
    ENC(&p, MQL_V311, 0x20, 0x02, 0x01, 0x00);
    p.u.connack.session_present = false;
    p.u.connack.reason = 0x02;
    ENC(&p, MQL_V311, 0x20, 0x02, 0x00, 0x02);
}

Test(v311, publish_qos0_decode_and_encode)
{
    OK(DECF(MQL_V311, 0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o'));
    const mql_publish *pub = &P.u.publish;
    cr_assert_eq(P.type, MQL_PUBLISH);
    cr_assert_eq(pub->qos, 0);
    cr_assert(!pub->dup && !pub->retain);
    cr_assert_eq(pub->packet_id, 0);
    STR_EQ(pub->topic, "a/b");
    STR_EQ(pub->payload, "hello");

    mql_packet p = {.type = MQL_PUBLISH};
    p.u.publish.topic = (mql_bytes){(const uint8_t *)"a/b", 3};
    p.u.publish.payload = (mql_bytes){(const uint8_t *)"hello", 5};
    p.u.publish.packet_id = 77; /* not written for QoS 0 [v3.1.1 MQTT-2.3.1-5] */
    ENC(&p, MQL_V311, 0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o');
}

Test(v311, publish_qos2_dup_retain_decode_and_encode)
{
    OK(DECF(MQL_V311, 0x3D, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 'x'));
    const mql_publish *pub = &P.u.publish;
    cr_assert_eq(pub->qos, 2);
    cr_assert(pub->dup && pub->retain);
    cr_assert_eq(pub->packet_id, 0x1234);
    STR_EQ(pub->payload, "x");

    mql_packet p = {.type = MQL_PUBLISH};
    p.u.publish.qos = 2;
    p.u.publish.dup = p.u.publish.retain = true;
    p.u.publish.packet_id = 0x1234;
    p.u.publish.topic = (mql_bytes){(const uint8_t *)"a/b", 3};
    p.u.publish.payload = (mql_bytes){(const uint8_t *)"x", 1};
    /* v5 properties are left out for 3.1.1. */
    p.u.publish.props.present = MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY);
    ENC(&p, MQL_V311, 0x3D, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 'x');
}

Test(v311, publish_empty_payload)
{
    OK(DECF(MQL_V311, 0x31, 0x03, 0x00, 0x01, 't'));
    cr_assert(P.u.publish.retain);
    cr_assert_eq(P.u.publish.payload.len, 0);
}

Test(v311, acks_decode_and_encode)
{
    static const uint8_t b0[] = {0x40, 0x50, 0x62, 0x70};
    for (unsigned t = MQL_PUBACK; t <= MQL_PUBCOMP; t++) {
        uint8_t f[4] = {b0[t - MQL_PUBACK], 0x02, 0x00, (uint8_t)t};
        OK(decode_frame(MQL_V311, f, 4));
        cr_assert_eq(P.type, t);
        cr_assert_eq(P.u.ack.packet_id, t);
        cr_assert_eq(P.u.ack.reason, 0);
        mql_packet p = {.type = (uint8_t)t};
        p.u.ack.packet_id = (uint16_t)t;
        p.u.ack.reason = 0x80; /* v5 reason codes are left out */
        expect_enc(&p, MQL_V311, f, 4, __LINE__);
    }
}

Test(v311, subscribe_decode_and_encode)
{
    OK(DECF(MQL_V311, 0x82, 0x0C, 0x00, 0x01, 0x00, 0x03, 'a', '/', '+', 0x01, 0x00, 0x01, '#',
            0x02));
    const mql_subscribe *s = &P.u.subscribe;
    cr_assert_eq(P.type, MQL_SUBSCRIBE);
    cr_assert_eq(s->packet_id, 1);
    cr_assert_eq(s->count, 2);
    uint32_t pos = 0;
    mql_sub_entry e;
    cr_assert(mql_subscribe_next(s, MQL_V311, &pos, &e));
    STR_EQ(e.filter, "a/+");
    cr_assert_eq(e.qos, 1);
    cr_assert(mql_subscribe_next(s, MQL_V311, &pos, &e));
    STR_EQ(e.filter, "#");
    cr_assert_eq(e.qos, 2);
    cr_assert(!e.no_local && !e.retain_as_published && e.retain_handling == 0);
    cr_assert(!mql_subscribe_next(s, MQL_V311, &pos, &e));

    mql_sub_entry list[2] = {
        {.filter = {(const uint8_t *)"a/+", 3}, .qos = 1, .no_local = true, .retain_handling = 2},
        {.filter = {(const uint8_t *)"#", 1}, .qos = 2},
    };
    mql_packet p = {.type = MQL_SUBSCRIBE};
    p.u.subscribe.packet_id = 1;
    p.u.subscribe.count = 2;
    p.u.subscribe.list = list;
    /* v5 options (No Local, Retain Handling) are not written for 3.1.1. */
    ENC(&p, MQL_V311, 0x82, 0x0C, 0x00, 0x01, 0x00, 0x03, 'a', '/', '+', 0x01, 0x00, 0x01, '#',
        0x02);
}

Test(v311, suback_decode_and_encode)
{
    OK(DECF(MQL_V311, 0x90, 0x04, 0x00, 0x01, 0x01, 0x80));
    cr_assert_eq(P.type, MQL_SUBACK);
    cr_assert_eq(P.u.suback.packet_id, 1);
    cr_assert_eq(P.u.suback.count, 2);
    cr_assert_eq(P.u.suback.codes[0], 0x01);
    cr_assert_eq(P.u.suback.codes[1], 0x80);

    static const uint8_t codes[] = {0x01, 0x80};
    mql_packet p = {.type = MQL_SUBACK};
    p.u.suback.packet_id = 1;
    p.u.suback.count = 2;
    p.u.suback.codes = codes;
    ENC(&p, MQL_V311, 0x90, 0x04, 0x00, 0x01, 0x01, 0x80);
}

Test(v311, unsubscribe_decode_and_encode)
{
    OK(DECF(MQL_V311, 0xA2, 0x0A, 0x00, 0x02, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, '#'));
    const mql_unsubscribe *u = &P.u.unsubscribe;
    cr_assert_eq(P.type, MQL_UNSUBSCRIBE);
    cr_assert_eq(u->packet_id, 2);
    cr_assert_eq(u->count, 2);
    uint32_t pos = 0;
    mql_bytes f;
    cr_assert(mql_unsubscribe_next(u, &pos, &f));
    STR_EQ(f, "a/b");
    cr_assert(mql_unsubscribe_next(u, &pos, &f));
    STR_EQ(f, "#");
    cr_assert(!mql_unsubscribe_next(u, &pos, &f));

    mql_bytes list[2] = {{(const uint8_t *)"a/b", 3}, {(const uint8_t *)"#", 1}};
    mql_packet p = {.type = MQL_UNSUBSCRIBE};
    p.u.unsubscribe.packet_id = 2;
    p.u.unsubscribe.count = 2;
    p.u.unsubscribe.list = list;
    ENC(&p, MQL_V311, 0xA2, 0x0A, 0x00, 0x02, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, '#');
}

Test(v311, unsuback_has_no_payload)
{
    OK(DECF(MQL_V311, 0xB0, 0x02, 0x00, 0x02));
    cr_assert_eq(P.type, MQL_UNSUBACK);
    cr_assert_eq(P.u.suback.packet_id, 2);
    cr_assert_eq(P.u.suback.count, 0);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0xB0, 0x03, 0x00, 0x02, 0x00);

    static const uint8_t codes[] = {0x00};
    mql_packet p = {.type = MQL_UNSUBACK};
    p.u.suback.packet_id = 2;
    p.u.suback.count = 1;
    p.u.suback.codes = codes; /* v5 reason codes are left out */
    ENC(&p, MQL_V311, 0xB0, 0x02, 0x00, 0x02);
}

Test(v311, ping_and_disconnect)
{
    OK(DECF(MQL_V311, 0xC0, 0x00));
    cr_assert_eq(P.type, MQL_PINGREQ);
    OK(DECF(MQL_V311, 0xD0, 0x00));
    cr_assert_eq(P.type, MQL_PINGRESP);
    OK(DECF(MQL_V311, 0xE0, 0x00));
    cr_assert_eq(P.type, MQL_DISCONNECT);

    mql_packet p = {.type = MQL_PINGREQ};
    ENC(&p, MQL_V311, 0xC0, 0x00);
    p.type = MQL_PINGRESP;
    ENC(&p, MQL_V311, 0xD0, 0x00);
    p.type = MQL_DISCONNECT;
    p.u.disconnect.reason = 0x8E; /* v5 only: 3.1.1 DISCONNECT has no body */
    ENC(&p, MQL_V311, 0xE0, 0x00);
}

/* ========================================================================================== */
/* MQTT 5.0: decode and encode of each packet type, every property                            */

Test(v5, connect_decode_every_property)
{
    OK(DECF(0, V5_CONNECT_FULL));
    const mql_connect *c = &P.u.connect;
    cr_assert_eq(c->version, MQL_V5);
    STR_EQ(c->protocol_name, "MQTT");
    cr_assert(c->clean_start && c->will && c->will_retain && c->has_username && c->has_password);
    cr_assert_eq(c->will_qos, 1);
    cr_assert_eq(c->keep_alive, 60);
    const mql_props *pr = &c->props;
    cr_assert_eq(pr->present,
                 MQL_PBIT(MQL_PROP_SESSION_EXPIRY) | MQL_PBIT(MQL_PROP_AUTH_METHOD) |
                     MQL_PBIT(MQL_PROP_AUTH_DATA) | MQL_PBIT(MQL_PROP_REQUEST_PROBLEM_INFO) |
                     MQL_PBIT(MQL_PROP_REQUEST_RESPONSE_INFO) | MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM) |
                     MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM) |
                     MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE) | MQL_PBIT(MQL_PROP_USER));
    cr_assert_eq(pr->session_expiry, 3600);
    STR_EQ(pr->auth_method, "am");
    STR_EQ(pr->auth_data, "\x01\x02");
    cr_assert_eq(pr->request_problem_info, 0);
    cr_assert_eq(pr->request_response_info, 1);
    cr_assert_eq(pr->receive_maximum, 10);
    cr_assert_eq(pr->topic_alias_maximum, 5);
    cr_assert_eq(pr->maximum_packet_size, 4096);
    cr_assert_eq(pr->raw.len, 0x25);
    cr_assert_eq(pr->user_raw.len, 0, "user_raw is left empty by the decoder");
    expect_user(pr, (const char *const[]){"k", "v"}, 1);
    STR_EQ(c->client_id, "cid");
    const mql_props *w = &c->will_props;
    cr_assert_eq(w->present, MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT) | MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY) |
                                 MQL_PBIT(MQL_PROP_CONTENT_TYPE) |
                                 MQL_PBIT(MQL_PROP_RESPONSE_TOPIC) |
                                 MQL_PBIT(MQL_PROP_CORRELATION_DATA) |
                                 MQL_PBIT(MQL_PROP_WILL_DELAY) | MQL_PBIT(MQL_PROP_USER));
    cr_assert_eq(w->payload_format, 1);
    cr_assert_eq(w->message_expiry, 60);
    STR_EQ(w->content_type, "text");
    STR_EQ(w->response_topic, "r/t");
    STR_EQ(w->correlation_data, "\xCA\xFE");
    cr_assert_eq(w->will_delay, 5);
    expect_user(w, (const char *const[]){"a", "b"}, 1);
    STR_EQ(c->will_topic, "w/t");
    STR_EQ(c->will_payload, "hi");
    STR_EQ(c->username, "u");
    STR_EQ(c->password, "pw");
}

Test(v5, connect_encode_every_property)
{
    static const uint8_t user1[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
    static const uint8_t user2[] = {0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b'};
    mql_packet p = {.type = MQL_CONNECT};
    mql_connect *c = &p.u.connect;
    c->clean_start = c->will = c->will_retain = c->has_username = c->has_password = true;
    c->will_qos = 1;
    c->keep_alive = 60;
    mql_props *pr = &c->props;
    pr->present = MQL_PBIT(MQL_PROP_SESSION_EXPIRY) | MQL_PBIT(MQL_PROP_AUTH_METHOD) |
                  MQL_PBIT(MQL_PROP_AUTH_DATA) | MQL_PBIT(MQL_PROP_REQUEST_PROBLEM_INFO) |
                  MQL_PBIT(MQL_PROP_REQUEST_RESPONSE_INFO) | MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM) |
                  MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM) | MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE);
    pr->session_expiry = 3600;
    pr->auth_method = (mql_bytes){(const uint8_t *)"am", 2};
    pr->auth_data = (mql_bytes){(const uint8_t *)"\x01\x02", 2};
    pr->request_problem_info = 0;
    pr->request_response_info = 1;
    pr->receive_maximum = 10;
    pr->topic_alias_maximum = 5;
    pr->maximum_packet_size = 4096;
    pr->user_raw = (mql_bytes){user1, sizeof(user1)};
    c->client_id = (mql_bytes){(const uint8_t *)"cid", 3};
    mql_props *w = &c->will_props;
    w->present = MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT) | MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY) |
                 MQL_PBIT(MQL_PROP_CONTENT_TYPE) | MQL_PBIT(MQL_PROP_RESPONSE_TOPIC) |
                 MQL_PBIT(MQL_PROP_CORRELATION_DATA) | MQL_PBIT(MQL_PROP_WILL_DELAY);
    w->payload_format = 1;
    w->message_expiry = 60;
    w->content_type = (mql_bytes){(const uint8_t *)"text", 4};
    w->response_topic = (mql_bytes){(const uint8_t *)"r/t", 3};
    w->correlation_data = (mql_bytes){(const uint8_t *)"\xCA\xFE", 2};
    w->will_delay = 5;
    w->user_raw = (mql_bytes){user2, sizeof(user2)};
    c->will_topic = (mql_bytes){(const uint8_t *)"w/t", 3};
    c->will_payload = (mql_bytes){(const uint8_t *)"hi", 2};
    c->username = (mql_bytes){(const uint8_t *)"u", 1};
    c->password = (mql_bytes){(const uint8_t *)"pw", 2};
    ENC(&p, MQL_V5, V5_CONNECT_FULL);
    /* version 0 takes the level from the struct */
    c->version = MQL_V5;
    ENC(&p, 0, V5_CONNECT_FULL);
}

Test(v5, connect_minimal_decode_and_encode)
{
    OK(DECF(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00));
    cr_assert_eq(P.u.connect.version, MQL_V5);
    cr_assert(!P.u.connect.clean_start);
    cr_assert_eq(P.u.connect.client_id.len, 0);
    cr_assert_eq(P.u.connect.props.present, 0);
    mql_packet p = {.type = MQL_CONNECT};
    ENC(&p, MQL_V5, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00);
}

Test(v5, connack_decode_every_property)
{
    OK(DECF(MQL_V5, V5_CONNACK_FULL));
    const mql_connack *c = &P.u.connack;
    cr_assert(c->session_present);
    cr_assert_eq(c->reason, 0);
    const mql_props *pr = &c->props;
    cr_assert_eq(pr->session_expiry, 120);
    STR_EQ(pr->assigned_client_id, "id");
    cr_assert_eq(pr->server_keep_alive, 30);
    STR_EQ(pr->auth_method, "am");
    STR_EQ(pr->auth_data, "\x07");
    STR_EQ(pr->response_info, "r");
    STR_EQ(pr->server_reference, "s");
    STR_EQ(pr->reason_string, "ok");
    cr_assert_eq(pr->receive_maximum, 20);
    cr_assert_eq(pr->topic_alias_maximum, 10);
    cr_assert_eq(pr->maximum_qos, 1);
    cr_assert_eq(pr->retain_available, 0);
    cr_assert_eq(pr->maximum_packet_size, 65536);
    cr_assert_eq(pr->wildcard_sub_available, 1);
    cr_assert_eq(pr->sub_id_available, 0);
    cr_assert_eq(pr->shared_sub_available, 1);
    cr_assert(pr->present & MQL_PBIT(MQL_PROP_RETAIN_AVAILABLE), "present even when 0");
    cr_assert(pr->present & MQL_PBIT(MQL_PROP_SUB_ID_AVAILABLE));
    expect_user(pr, (const char *const[]){"k", "v"}, 1);
}

Test(v5, connack_encode_every_property)
{
    static const uint8_t user[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
    mql_packet p = {.type = MQL_CONNACK};
    mql_connack *c = &p.u.connack;
    c->session_present = true;
    mql_props *pr = &c->props;
    pr->present = MQL_PBIT(MQL_PROP_SESSION_EXPIRY) | MQL_PBIT(MQL_PROP_ASSIGNED_CLIENT_ID) |
                  MQL_PBIT(MQL_PROP_SERVER_KEEP_ALIVE) | MQL_PBIT(MQL_PROP_AUTH_METHOD) |
                  MQL_PBIT(MQL_PROP_AUTH_DATA) | MQL_PBIT(MQL_PROP_RESPONSE_INFO) |
                  MQL_PBIT(MQL_PROP_SERVER_REFERENCE) | MQL_PBIT(MQL_PROP_REASON_STRING) |
                  MQL_PBIT(MQL_PROP_RECEIVE_MAXIMUM) | MQL_PBIT(MQL_PROP_TOPIC_ALIAS_MAXIMUM) |
                  MQL_PBIT(MQL_PROP_MAXIMUM_QOS) | MQL_PBIT(MQL_PROP_RETAIN_AVAILABLE) |
                  MQL_PBIT(MQL_PROP_MAXIMUM_PACKET_SIZE) |
                  MQL_PBIT(MQL_PROP_WILDCARD_SUB_AVAILABLE) | MQL_PBIT(MQL_PROP_SUB_ID_AVAILABLE) |
                  MQL_PBIT(MQL_PROP_SHARED_SUB_AVAILABLE);
    pr->session_expiry = 120;
    pr->assigned_client_id = (mql_bytes){(const uint8_t *)"id", 2};
    pr->server_keep_alive = 30;
    pr->auth_method = (mql_bytes){(const uint8_t *)"am", 2};
    pr->auth_data = (mql_bytes){(const uint8_t *)"\x07", 1};
    pr->response_info = (mql_bytes){(const uint8_t *)"r", 1};
    pr->server_reference = (mql_bytes){(const uint8_t *)"s", 1};
    pr->reason_string = (mql_bytes){(const uint8_t *)"ok", 2};
    pr->receive_maximum = 20;
    pr->topic_alias_maximum = 10;
    pr->maximum_qos = 1;
    pr->retain_available = 0;
    pr->maximum_packet_size = 65536;
    pr->wildcard_sub_available = 1;
    pr->sub_id_available = 0;
    pr->shared_sub_available = 1;
    pr->user_raw = (mql_bytes){user, sizeof(user)};
    ENC(&p, MQL_V5, V5_CONNACK_FULL);
}

Test(v5, connack_minimal)
{
    OK(DECF(MQL_V5, 0x20, 0x03, 0x00, 0x87, 0x00));
    cr_assert_eq(P.u.connack.reason, 0x87);
    mql_packet p = {.type = MQL_CONNACK};
    p.u.connack.reason = 0x84;
    ENC(&p, MQL_V5, 0x20, 0x03, 0x00, 0x84, 0x00);
}

Test(v5, publish_decode_every_property)
{
    OK(DECF(MQL_V5, V5_PUBLISH_FULL));
    const mql_publish *pub = &P.u.publish;
    cr_assert(pub->dup && pub->retain);
    cr_assert_eq(pub->qos, 1);
    cr_assert_eq(pub->packet_id, 7);
    STR_EQ(pub->topic, "a/b");
    STR_EQ(pub->payload, "hello");
    const mql_props *pr = &pub->props;
    cr_assert_eq(pr->payload_format, 1);
    cr_assert_eq(pr->message_expiry, 10);
    STR_EQ(pr->content_type, "json");
    STR_EQ(pr->response_topic, "r/x");
    STR_EQ(pr->correlation_data, "\x01\x02");
    cr_assert_eq(pr->topic_alias, 3);
    /* Several Subscription Identifiers: first in sub_id, all via the iterator [MQTT-3.3.4-3]. */
    cr_assert_eq(pr->n_sub_ids, 2);
    cr_assert_eq(pr->sub_id, 5);
    uint32_t pos = 0, id;
    cr_assert(mql_props_next_sub_id(pr, &pos, &id));
    cr_assert_eq(id, 5);
    cr_assert(mql_props_next_sub_id(pr, &pos, &id));
    cr_assert_eq(id, 268435455);
    cr_assert(!mql_props_next_sub_id(pr, &pos, &id));
    /* User properties in order, same name twice [MQTT-3.3.2-18]. */
    expect_user(pr, (const char *const[]){"k", "v", "k", "w"}, 2);
}

Test(v5, publish_encode_every_property)
{
    static const uint32_t ids[] = {5, 268435455};
    static const uint8_t user[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v',
                                   0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'w'};
    mql_packet p = {.type = MQL_PUBLISH};
    mql_publish *pub = &p.u.publish;
    pub->dup = pub->retain = true;
    pub->qos = 1;
    pub->packet_id = 7;
    pub->topic = (mql_bytes){(const uint8_t *)"a/b", 3};
    pub->payload = (mql_bytes){(const uint8_t *)"hello", 5};
    mql_props *pr = &pub->props;
    pr->present = MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT) | MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY) |
                  MQL_PBIT(MQL_PROP_CONTENT_TYPE) | MQL_PBIT(MQL_PROP_RESPONSE_TOPIC) |
                  MQL_PBIT(MQL_PROP_CORRELATION_DATA) | MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID) |
                  MQL_PBIT(MQL_PROP_TOPIC_ALIAS) | MQL_PBIT(MQL_PROP_USER);
    pr->payload_format = 1;
    pr->message_expiry = 10;
    pr->content_type = (mql_bytes){(const uint8_t *)"json", 4};
    pr->response_topic = (mql_bytes){(const uint8_t *)"r/x", 3};
    pr->correlation_data = (mql_bytes){(const uint8_t *)"\x01\x02", 2};
    pr->sub_ids = ids;
    pr->n_sub_ids = 2;
    pr->topic_alias = 3;
    pr->user_raw = (mql_bytes){user, sizeof(user)};
    ENC(&p, MQL_V5, V5_PUBLISH_FULL);
}

Test(v5, publish_single_sub_id_without_array)
{
    mql_packet p = {.type = MQL_PUBLISH};
    p.u.publish.topic = (mql_bytes){(const uint8_t *)"t", 1};
    p.u.publish.props.present = MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID);
    p.u.publish.props.sub_id = 128;
    ENC(&p, MQL_V5, 0x30, 0x07, 0x00, 0x01, 't', 0x03, 0x0B, 0x80, 0x01);
}

Test(v5, publish_qos0_no_properties)
{
    OK(DECF(MQL_V5, 0x30, 0x06, 0x00, 0x01, 't', 0x00, 'h', 'i'));
    cr_assert_eq(P.u.publish.props.present, 0);
    cr_assert_eq(P.u.publish.props.raw.len, 0);
    STR_EQ(P.u.publish.payload, "hi");
    mql_packet p = {.type = MQL_PUBLISH};
    p.u.publish.topic = (mql_bytes){(const uint8_t *)"t", 1};
    p.u.publish.payload = (mql_bytes){(const uint8_t *)"hi", 2};
    ENC(&p, MQL_V5, 0x30, 0x06, 0x00, 0x01, 't', 0x00, 'h', 'i');
}

Test(v5, publish_empty_topic_with_topic_alias)
{
    /* [MQTT-3.3.2-1] section 3.3.2.3.4: a zero-length Topic Name is fine with a Topic Alias. */
    OK(DECF(MQL_V5, 0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 'x'));
    cr_assert_eq(P.u.publish.topic.len, 0);
    cr_assert_eq(P.u.publish.props.topic_alias, 1);
}

Test(v5, acks_decode_with_reason_and_properties)
{
    static const uint8_t b0[] = {0x40, 0x50, 0x62, 0x70};
    static const uint8_t rc[] = {0x10, 0x80, 0x92, 0x92};
    for (unsigned t = MQL_PUBACK; t <= MQL_PUBCOMP; t++) {
        uint8_t f[] = {b0[t - MQL_PUBACK],
                       0x10,
                       0x00,
                       0x01,
                       rc[t - MQL_PUBACK],
                       0x0C,
                       0x1F,
                       0x00,
                       0x02,
                       'n',
                       'o',
                       0x26,
                       0x00,
                       0x01,
                       'k',
                       0x00,
                       0x01,
                       'v'};
        OK(decode_frame(MQL_V5, f, sizeof(f)));
        cr_assert_eq(P.type, t);
        cr_assert_eq(P.u.ack.packet_id, 1);
        cr_assert_eq(P.u.ack.reason, rc[t - MQL_PUBACK]);
        STR_EQ(P.u.ack.props.reason_string, "no");
        expect_user(&P.u.ack.props, (const char *const[]){"k", "v"}, 1);

        static const uint8_t user[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
        mql_packet p = {.type = (uint8_t)t};
        p.u.ack.packet_id = 1;
        p.u.ack.reason = rc[t - MQL_PUBACK];
        p.u.ack.props.present = MQL_PBIT(MQL_PROP_REASON_STRING);
        p.u.ack.props.reason_string = (mql_bytes){(const uint8_t *)"no", 2};
        p.u.ack.props.user_raw = (mql_bytes){user, sizeof(user)};
        expect_enc(&p, MQL_V5, f, sizeof(f), __LINE__);
    }
}

Test(v5, acks_short_forms)
{
    /* Sections 3.4.2.1 .. 3.7.2.1: Remaining Length 2 means reason 0 and no properties;
     * Remaining Length 3 means no Property Length. */
    OK(DECF(MQL_V5, 0x40, 0x02, 0x00, 0x09));
    cr_assert_eq(P.u.ack.packet_id, 9);
    cr_assert_eq(P.u.ack.reason, 0);
    cr_assert_eq(P.u.ack.props.present, 0);
    OK(DECF(MQL_V5, 0x50, 0x03, 0x00, 0x09, 0x10));
    cr_assert_eq(P.u.ack.reason, 0x10);
    OK(DECF(MQL_V5, 0x62, 0x04, 0x00, 0x09, 0x92, 0x00));
    cr_assert_eq(P.u.ack.reason, 0x92);
    OK(DECF(MQL_V5, 0x70, 0x04, 0x00, 0x09, 0x00, 0x00));

    mql_packet p = {.type = MQL_PUBACK};
    p.u.ack.packet_id = 9;
    ENC(&p, MQL_V5, 0x40, 0x02, 0x00, 0x09);
    p.type = MQL_PUBREL;
    ENC(&p, MQL_V5, 0x62, 0x02, 0x00, 0x09);
    p.type = MQL_PUBREC;
    p.u.ack.reason = 0x10;
    ENC(&p, MQL_V5, 0x50, 0x03, 0x00, 0x09, 0x10);
    /* A property not allowed in acks is not written, so the short form stays. */
    p.type = MQL_PUBCOMP;
    p.u.ack.reason = 0;
    p.u.ack.props.present = MQL_PBIT(MQL_PROP_TOPIC_ALIAS);
    p.u.ack.props.topic_alias = 4;
    ENC(&p, MQL_V5, 0x70, 0x02, 0x00, 0x09);
}

Test(v5, subscribe_decode_and_encode)
{
    OK(DECF(MQL_V5, V5_SUBSCRIBE_FULL));
    const mql_subscribe *s = &P.u.subscribe;
    cr_assert_eq(s->packet_id, 10);
    cr_assert_eq(s->props.sub_id, 128);
    cr_assert_eq(s->props.n_sub_ids, 1);
    expect_user(&s->props, (const char *const[]){"k", "v"}, 1);
    cr_assert_eq(s->count, 3);
    uint32_t pos = 0;
    mql_sub_entry e;
    cr_assert(mql_subscribe_next(s, MQL_V5, &pos, &e));
    STR_EQ(e.filter, "a/+");
    cr_assert_eq(e.qos, 1);
    cr_assert(e.no_local && e.retain_as_published);
    cr_assert_eq(e.retain_handling, 2);
    cr_assert(mql_subscribe_next(s, MQL_V5, &pos, &e));
    STR_EQ(e.filter, "#");
    cr_assert_eq(e.qos, 0);
    cr_assert(!e.no_local && !e.retain_as_published && e.retain_handling == 0);
    cr_assert(mql_subscribe_next(s, MQL_V5, &pos, &e));
    STR_EQ(e.filter, "$share/g/t");
    cr_assert_eq(e.qos, 2);
    cr_assert_eq(e.retain_handling, 1);
    cr_assert(!mql_subscribe_next(s, MQL_V5, &pos, &e));

    static const uint8_t user[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
    mql_sub_entry list[3] = {
        {.filter = {(const uint8_t *)"a/+", 3},
         .qos = 1,
         .no_local = true,
         .retain_as_published = true,
         .retain_handling = 2},
        {.filter = {(const uint8_t *)"#", 1}},
        {.filter = {(const uint8_t *)"$share/g/t", 10}, .qos = 2, .retain_handling = 1},
    };
    mql_packet p = {.type = MQL_SUBSCRIBE};
    p.u.subscribe.packet_id = 10;
    p.u.subscribe.props.present = MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID);
    p.u.subscribe.props.sub_id = 128;
    p.u.subscribe.props.user_raw = (mql_bytes){user, sizeof(user)};
    p.u.subscribe.count = 3;
    p.u.subscribe.list = list;
    ENC(&p, MQL_V5, V5_SUBSCRIBE_FULL);
}

Test(v5, suback_decode_and_encode)
{
    OK(DECF(MQL_V5, 0x90, 0x0D, 0x00, 0x0A, 0x04, 0x1F, 0x00, 0x01, 'x', 0x01, 0x00, 0x02, 0x80,
            0x8F, 0xA2));
    const mql_suback *s = &P.u.suback;
    cr_assert_eq(s->packet_id, 10);
    STR_EQ(s->props.reason_string, "x");
    cr_assert_eq(s->count, 6);
    cr_assert_eq(memcmp(s->codes, U8(0x01, 0x00, 0x02, 0x80, 0x8F, 0xA2), 6), 0);

    static const uint8_t codes[] = {0x01, 0x00, 0x02, 0x80, 0x8F, 0xA2};
    mql_packet p = {.type = MQL_SUBACK};
    p.u.suback.packet_id = 10;
    p.u.suback.props.present = MQL_PBIT(MQL_PROP_REASON_STRING);
    p.u.suback.props.reason_string = (mql_bytes){(const uint8_t *)"x", 1};
    p.u.suback.count = 6;
    p.u.suback.codes = codes;
    ENC(&p, MQL_V5, 0x90, 0x0D, 0x00, 0x0A, 0x04, 0x1F, 0x00, 0x01, 'x', 0x01, 0x00, 0x02, 0x80,
        0x8F, 0xA2);
}

Test(v5, unsubscribe_decode_and_encode)
{
    OK(DECF(MQL_V5, 0xA2, 0x12, 0x00, 0x0B, 0x07, 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', 0x00,
            0x03, 'a', '/', 'b', 0x00, 0x01, '#'));
    const mql_unsubscribe *u = &P.u.unsubscribe;
    cr_assert_eq(u->packet_id, 11);
    cr_assert_eq(u->count, 2);
    expect_user(&u->props, (const char *const[]){"k", "v"}, 1);
    uint32_t pos = 0;
    mql_bytes f;
    cr_assert(mql_unsubscribe_next(u, &pos, &f));
    STR_EQ(f, "a/b");
    cr_assert(mql_unsubscribe_next(u, &pos, &f));
    STR_EQ(f, "#");

    static const uint8_t user[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
    mql_bytes list[2] = {{(const uint8_t *)"a/b", 3}, {(const uint8_t *)"#", 1}};
    mql_packet p = {.type = MQL_UNSUBSCRIBE};
    p.u.unsubscribe.packet_id = 11;
    p.u.unsubscribe.props.user_raw = (mql_bytes){user, sizeof(user)};
    p.u.unsubscribe.count = 2;
    p.u.unsubscribe.list = list;
    ENC(&p, MQL_V5, 0xA2, 0x12, 0x00, 0x0B, 0x07, 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', 0x00,
        0x03, 'a', '/', 'b', 0x00, 0x01, '#');
}

Test(v5, unsuback_decode_and_encode)
{
    OK(DECF(MQL_V5, 0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11));
    cr_assert_eq(P.u.suback.packet_id, 11);
    cr_assert_eq(P.u.suback.count, 2);
    cr_assert_eq(P.u.suback.codes[1], 0x11);
    static const uint8_t codes[] = {0x00, 0x11};
    mql_packet p = {.type = MQL_UNSUBACK};
    p.u.suback.packet_id = 11;
    p.u.suback.count = 2;
    p.u.suback.codes = codes;
    ENC(&p, MQL_V5, 0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11);
}

Test(v5, ping)
{
    OK(DECF(MQL_V5, 0xC0, 0x00));
    cr_assert_eq(P.type, MQL_PINGREQ);
    OK(DECF(MQL_V5, 0xD0, 0x00));
    cr_assert_eq(P.type, MQL_PINGRESP);
    mql_packet p = {.type = MQL_PINGREQ};
    ENC(&p, MQL_V5, 0xC0, 0x00);
    p.type = MQL_PINGRESP;
    ENC(&p, MQL_V5, 0xD0, 0x00);
}

Test(v5, disconnect_decode_and_encode)
{
    OK(DECF(MQL_V5, V5_DISCONNECT_FULL));
    const mql_disconnect *d = &P.u.disconnect;
    cr_assert_eq(d->reason, 0x04);
    cr_assert(d->props.present & MQL_PBIT(MQL_PROP_SESSION_EXPIRY));
    cr_assert_eq(d->props.session_expiry, 0);
    STR_EQ(d->props.server_reference, "s");
    STR_EQ(d->props.reason_string, "r");
    expect_user(&d->props, (const char *const[]){"k", "v"}, 1);

    static const uint8_t user[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
    mql_packet p = {.type = MQL_DISCONNECT};
    p.u.disconnect.reason = 0x04;
    mql_props *pr = &p.u.disconnect.props;
    pr->present = MQL_PBIT(MQL_PROP_SESSION_EXPIRY) | MQL_PBIT(MQL_PROP_SERVER_REFERENCE) |
                  MQL_PBIT(MQL_PROP_REASON_STRING);
    pr->server_reference = (mql_bytes){(const uint8_t *)"s", 1};
    pr->reason_string = (mql_bytes){(const uint8_t *)"r", 1};
    pr->user_raw = (mql_bytes){user, sizeof(user)};
    ENC(&p, MQL_V5, V5_DISCONNECT_FULL);
}

Test(v5, disconnect_short_forms)
{
    /* Section 3.14.2.1: Remaining Length 0 = Normal disconnection; 1 = no Property Length. */
    OK(DECF(MQL_V5, 0xE0, 0x00));
    cr_assert_eq(P.u.disconnect.reason, 0);
    OK(DECF(MQL_V5, 0xE0, 0x01, 0x8E));
    cr_assert_eq(P.u.disconnect.reason, 0x8E);
    OK(DECF(MQL_V5, 0xE0, 0x02, 0x00, 0x00));

    mql_packet p = {.type = MQL_DISCONNECT};
    ENC(&p, MQL_V5, 0xE0, 0x00);
    p.u.disconnect.reason = 0x8E;
    ENC(&p, MQL_V5, 0xE0, 0x01, 0x8E);
}

Test(v5, auth_decode_and_encode)
{
    OK(DECF(MQL_V5, V5_AUTH_FULL));
    cr_assert_eq(P.type, MQL_AUTH);
    const mql_disconnect *a = &P.u.disconnect;
    cr_assert_eq(a->reason, 0x18);
    STR_EQ(a->props.auth_method, "am");
    STR_EQ(a->props.auth_data, "\x01\x02");
    STR_EQ(a->props.reason_string, "r");
    expect_user(&a->props, (const char *const[]){"k", "v"}, 1);

    static const uint8_t user[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
    mql_packet p = {.type = MQL_AUTH};
    p.u.disconnect.reason = 0x18;
    mql_props *pr = &p.u.disconnect.props;
    pr->present = MQL_PBIT(MQL_PROP_AUTH_METHOD) | MQL_PBIT(MQL_PROP_AUTH_DATA) |
                  MQL_PBIT(MQL_PROP_REASON_STRING);
    pr->auth_method = (mql_bytes){(const uint8_t *)"am", 2};
    pr->auth_data = (mql_bytes){(const uint8_t *)"\x01\x02", 2};
    pr->reason_string = (mql_bytes){(const uint8_t *)"r", 1};
    pr->user_raw = (mql_bytes){user, sizeof(user)};
    ENC(&p, MQL_V5, V5_AUTH_FULL);
}

Test(v5, auth_short_form)
{
    /* Section 3.15.2.1: Remaining Length 0 means Success and no properties. */
    OK(DECF(MQL_V5, 0xF0, 0x00));
    cr_assert_eq(P.type, MQL_AUTH);
    cr_assert_eq(P.u.disconnect.reason, 0);
    mql_packet p = {.type = MQL_AUTH};
    ENC(&p, MQL_V5, 0xF0, 0x00);
}

/* ========================================================================================== */
/* Round trips: decode -> encode gives the same bytes                                         */

Test(roundtrip, v311_every_type)
{
    RT(0, V3_CONNECT_FULL);
    RT(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'a');
    RT(MQL_V311, 0x20, 0x02, 0x01, 0x00);
    RT(MQL_V311, 0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o');
    RT(MQL_V311, 0x3D, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 'x');
    RT(MQL_V311, 0x40, 0x02, 0x00, 0x01);
    RT(MQL_V311, 0x50, 0x02, 0x00, 0x02);
    RT(MQL_V311, 0x62, 0x02, 0x00, 0x03);
    RT(MQL_V311, 0x70, 0x02, 0x00, 0x04);
    RT(MQL_V311, 0x82, 0x0C, 0x00, 0x01, 0x00, 0x03, 'a', '/', '+', 0x01, 0x00, 0x01, '#', 0x02);
    RT(MQL_V311, 0x90, 0x04, 0x00, 0x01, 0x01, 0x80);
    RT(MQL_V311, 0xA2, 0x0A, 0x00, 0x02, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, '#');
    RT(MQL_V311, 0xB0, 0x02, 0x00, 0x02);
    RT(MQL_V311, 0xC0, 0x00);
    RT(MQL_V311, 0xD0, 0x00);
    RT(MQL_V311, 0xE0, 0x00);
}

Test(roundtrip, v5_every_type)
{
    RT(0, V5_CONNECT_FULL);
    RT(MQL_V5, V5_CONNACK_FULL);
    RT(MQL_V5, V5_PUBLISH_FULL);
    RT(MQL_V5, 0x40, 0x02, 0x00, 0x09);
    RT(MQL_V5, 0x50, 0x03, 0x00, 0x09, 0x80);
    RT(MQL_V5, 0x62, 0x08, 0x00, 0x09, 0x92, 0x04, 0x1F, 0x00, 0x01, 'x');
    RT(MQL_V5, 0x70, 0x02, 0x00, 0x09);
    RT(MQL_V5, V5_SUBSCRIBE_FULL);
    RT(MQL_V5, 0x90, 0x0D, 0x00, 0x0A, 0x04, 0x1F, 0x00, 0x01, 'x', 0x01, 0x00, 0x02, 0x80, 0x8F,
       0xA2);
    RT(MQL_V5, 0xA2, 0x12, 0x00, 0x0B, 0x07, 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', 0x00, 0x03,
       'a', '/', 'b', 0x00, 0x01, '#');
    RT(MQL_V5, 0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11);
    RT(MQL_V5, 0xC0, 0x00);
    RT(MQL_V5, 0xD0, 0x00);
    RT(MQL_V5, V5_DISCONNECT_FULL);
    RT(MQL_V5, 0xE0, 0x00);
    RT(MQL_V5, 0xE0, 0x01, 0x8E);
    RT(MQL_V5, V5_AUTH_FULL);
    RT(MQL_V5, 0xF0, 0x00);
}

Test(roundtrip, large_publish_three_byte_length)
{
    static uint8_t body[20000];
    body[0] = 0x00;
    body[1] = 0x01;
    body[2] = 't';
    body[3] = 0x00;
    memset(body + 4, 'p', sizeof(body) - 4);
    static uint8_t f[20010];
    size_t n = build(f, 0x30, body, sizeof(body));
    cr_assert_eq(n, 1 + 3 + sizeof(body));
    roundtrip(MQL_V5, f, n, __LINE__);
    cr_assert_eq(P.u.publish.payload.len, sizeof(body) - 4);
}

/* ========================================================================================== */
/* Fixed header rules                                                                          */

Test(rules, fixed_header_flags_v5) /* [MQTT-2.1.3-1] */
{
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0x60, 0x02, 0x00, 0x01); /* PUBREL 0000 */
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0x42, 0x02, 0x00, 0x01); /* PUBACK 0010 */
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, '#');
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0xA0, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, '#');
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0xC1, 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0xE8, 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0xF1, 0x00); /* [MQTT-3.15.1-1] */
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0x21, 0x03, 0x00, 0x00, 0x00); /* CONNACK */
}

Test(rules, fixed_header_flags_v311) /* [v3.1.1 MQTT-2.2.2-1] [v3.1.1 MQTT-2.2.2-2] */
{
    /* [v3.1.1 MQTT-3.6.1-1] PUBREL, [v3.1.1 MQTT-3.8.1-1] SUBSCRIBE,
     * [v3.1.1 MQTT-3.10.1-1] UNSUBSCRIBE, [v3.1.1 MQTT-3.14.1-1] DISCONNECT */
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-2.2.2-1", 0x60, 0x02, 0x00, 0x01);
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-2.2.2-1", 0x80, 0x06, 0x00, 0x01, 0x00, 0x01, '#',
         0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-2.2.2-1", 0xA3, 0x05, 0x00, 0x01, 0x00, 0x01, '#');
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-2.2.2-1", 0xE1, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-2.2.2-1", 0x44, 0x02, 0x00, 0x01);
}

Test(rules, connect_fixed_header_flags) /* [MQTT-2.1.3-1] [v3.1.1 MQTT-2.2.2-1] */
{
    ERRF(0, MQL_E_MALFORMED, "MQTT-2.1.3-1", 0x12, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
         0x00, 0x3C, 0x00, 0x01, 'a');
}

Test(rules, reserved_packet_type_0)
{
    ERRF(MQL_V5, MQL_E_MALFORMED, "reserved", 0x00, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "reserved", 0x00, 0x00);
}

Test(rules, auth_is_v5_only)
{
    /* Type 15 is reserved ("Forbidden") in 3.1.1, section 2.2.1. */
    ERRF(MQL_V311, MQL_E_MALFORMED, "reserved", 0xF0, 0x00);
    mql_packet p = {.type = MQL_AUTH};
    cr_assert_eq(mql_encode(E, sizeof(E), &p, MQL_V311), 0);
}

Test(rules, non_connect_before_connect) /* [MQTT-3.1.0-1] */
{
    ERRF(0, MQL_E_PROTOCOL, "MQTT-3.1.0-1", 0xC0, 0x00);
}

Test(rules, length_disagrees_with_remaining_length)
{
    /* trailing byte after the last field */
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0x40, 0x03, 0x00, 0x01, 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "Remaining Length", 0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0xC0, 0x01, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0xD0, 0x01, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0xE0, 0x01, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0x20, 0x03, 0x00, 0x00, 0x00);
    ERRF(0, MQL_E_MALFORMED, "Remaining Length", 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
         0x02, 0x00, 0x3C, 0x00, 0x01, 'a', 'b');
    /* the frame is longer or shorter than header + Remaining Length */
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0x40, 0x02, 0x00, 0x01, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Remaining Length", 0x40, 0x02, 0x00);
}

Test(rules, missing_bytes)
{
    ERRF(MQL_V311, MQL_E_MALFORMED, "Packet Identifier", 0x40, 0x01, 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "Packet Identifier", 0x40, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "CONNACK", 0x20, 0x01, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Topic Name", 0x30, 0x02, 0x00, 0x05);
    ERRF(MQL_V5, MQL_E_MALFORMED, "Packet Identifier", 0x32, 0x04, 0x00, 0x01, 't', 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "Property Length", 0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x01);
    ERRF(MQL_V5, MQL_E_MALFORMED, "Property Length", 0x32, 0x06, 0x00, 0x01, 't', 0x00, 0x01, 0x05);
    ERRF(MQL_V5, MQL_E_MALFORMED, "options", 0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 'a');
    ERRF(MQL_V5, MQL_E_MALFORMED, "Topic Filter", 0xA2, 0x06, 0x00, 0x01, 0x00, 0x00, 0x02, 'a');
    /* CONNECT payload fields missing [MQTT-3.1.2-9] [MQTT-3.1.2-17] [MQTT-3.1.2-19] */
    ERRF(0, MQL_E_MALFORMED, "MQTT-3.1.3-3", 0x10, 0x0A, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
         0x00, 0x3C);
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-9", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, 'a');
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-9", 0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, 'a', 0x00, 0x01, 't', 0x00);
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-19", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x82, 0x00, 0x3C, 0x00, 0x01, 'a');
    ERRF(0, MQL_E_MALFORMED, "MQTT-3.1.2-19", 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x42, 0x00, 0x3C, 0x00, 0x00, 0x01, 'a');
    ERRF(0, MQL_E_MALFORMED, "Property Length", 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x06, 0x00, 0x3C, 0x00, 0x00, 0x01, 'a');
}

/* ========================================================================================== */
/* CONNECT rules                                                                               */

Test(rules, connect_bad_protocol_name) /* [MQTT-3.1.2-1] [v3.1.1 MQTT-3.1.2-1] */
{
    ERRF(0, MQL_E_BAD_VERSION, "MQTT-3.1.2-1", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 't', 0x04,
         0x02, 0x00, 0x3C, 0x00, 0x01, 'a');
    cr_assert_eq(P.type, MQL_CONNECT);
    STR_EQ(P.u.connect.protocol_name, "MQTt");
    cr_assert_eq(P.u.connect.version, 4);
}

Test(rules, connect_unsupported_level) /* [MQTT-3.1.2-2] [v3.1.1 MQTT-3.1.2-2] */
{
    ERRF(0, MQL_E_BAD_VERSION, "MQTT-3.1.2-2", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x06,
         0x02, 0x00, 0x3C, 0x00, 0x01, 'a');
    cr_assert_eq(P.u.connect.version, 6, "version filled for the CONNACK format");
    STR_EQ(P.u.connect.protocol_name, "MQTT");
    /* "MQTT" with level 3 and "MQIsdp" with level 4 are not valid pairs. */
    ERRF(0, MQL_E_BAD_VERSION, "MQTT-3.1.2-2", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x03,
         0x02, 0x00, 0x3C, 0x00, 0x01, 'a');
    ERRF(0, MQL_E_BAD_VERSION, "MQTT-3.1.2-2", 0x10, 0x0F, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p',
         0x04, 0x02, 0x00, 0x0A, 0x00, 0x01, 'x');
    cr_assert_eq(P.u.connect.version, 4);
}

Test(rules, connect_reserved_flag) /* [MQTT-3.1.2-3] [v3.1.1 MQTT-3.1.2-3] */
{
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-3", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x03, 0x00, 0x3C, 0x00, 0x01, 'a');
    ERRF(0, MQL_E_MALFORMED, "[MQTT-3.1.2-3]", 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x01, 0x00, 0x3C, 0x00, 0x00, 0x01, 'a');
}

Test(rules, will_qos_without_will_flag) /* [MQTT-3.1.2-11] [v3.1.1 MQTT-3.1.2-13] */
{
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-13", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x0A, 0x00, 0x3C, 0x00, 0x01, 'a');
    ERRF(0, MQL_E_MALFORMED, "[MQTT-3.1.2-11]", 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x12, 0x00, 0x3C, 0x00, 0x00, 0x01, 'a');
}

Test(rules, will_retain_without_will_flag) /* [MQTT-3.1.2-13] [v3.1.1 MQTT-3.1.2-15] */
{
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-15", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x22, 0x00, 0x3C, 0x00, 0x01, 'a');
    ERRF(0, MQL_E_MALFORMED, "[MQTT-3.1.2-13]", 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x20, 0x00, 0x3C, 0x00, 0x00, 0x01, 'a');
}

Test(rules, will_qos_3) /* [MQTT-3.1.2-12] [v3.1.1 MQTT-3.1.2-14] */
{
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-14", 0x10, 0x13, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x1E, 0x00, 0x3C, 0x00, 0x01, 'a', 0x00, 0x01, 't', 0x00, 0x01, 'p');
    ERRF(0, MQL_E_MALFORMED, "[MQTT-3.1.2-12]", 0x10, 0x15, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x1E, 0x00, 0x3C, 0x00, 0x00, 0x01, 'a', 0x00, 0x00, 0x01, 't', 0x00, 0x01, 'p');
}

Test(rules, password_without_user_name) /* [v3.1.1 MQTT-3.1.2-22] */
{
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-3.1.2-22", 0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x42, 0x00, 0x3C, 0x00, 0x01, 'a', 0x00, 0x02, 'p', 'w');
    /* MQTT 5 allows a password without a user name (section 3.1.2.9). */
    OK(DECF(0, 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x01,
            'a', 0x00, 0x02, 'p', 'w'));
    cr_assert(P.u.connect.has_password && !P.u.connect.has_username);
    STR_EQ(P.u.connect.password, "pw");
}

Test(rules, connect_client_id_utf8) /* [MQTT-3.1.3-4] [v3.1.1 MQTT-3.1.3-4] [MQTT-1.5.4-1] */
{
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-1.5.3-1", 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 0xFF);
    ERRF(0, MQL_E_MALFORMED, "MQTT-1.5.4-2", 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02,
         0x00, 0x3C, 0x00, 0x00, 0x01, 0x00);
}

Test(rules, connect_user_name_utf8) /* [MQTT-3.1.3-12] [v3.1.1 MQTT-3.1.3-11] */
{
    ERRF(0, MQL_E_MALFORMED, "v3.1.1 MQTT-1.5.3", 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
         0x82, 0x00, 0x3C, 0x00, 0x01, 'a', 0x00, 0x01, 0xC0);
}

Test(rules, will_topic_invalid) /* [MQTT-4.7.0-1] [MQTT-4.7.3-1] [v3.1.1 MQTT-4.7.1-1] */
{
    ERRF(0, MQL_E_TOPIC_NAME_INVALID, "v3.1.1 MQTT-4.7.1-1", 0x10, 0x13, 0x00, 0x04, 'M', 'Q', 'T',
         'T', 0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, 'a', 0x00, 0x01, '#', 0x00, 0x01, 'p');
    ERRF(0, MQL_E_TOPIC_NAME_INVALID, "MQTT-4.7.3-1", 0x10, 0x13, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x05, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x01, 'a', 0x00, 0x00, 0x00, 0x00, 0x00);
    ERRF(0, MQL_E_MALFORMED, "MQTT-1.5.4-1", 0x10, 0x14, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x06,
         0x00, 0x3C, 0x00, 0x00, 0x01, 'a', 0x00, 0x00, 0x01, 0xED, 0x00, 0x00);
}

Test(rules, connect_auth_data_without_method) /* section 3.1.2.11.10 */
{
    ERRF(0, MQL_E_PROTOCOL, "Authentication Method", 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x05, 0x02, 0x00, 0x3C, 0x04, 0x16, 0x00, 0x01, 0x07, 0x00, 0x01, 'a');
}

/* ========================================================================================== */
/* PUBLISH rules                                                                               */

Test(rules, publish_qos_3) /* [MQTT-3.3.1-4] [v3.1.1 MQTT-3.3.1-4] */
{
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-3.3.1-4", 0x36, 0x05, 0x00, 0x01, 't', 0x00, 0x01);
    ERRF(MQL_V5, MQL_E_MALFORMED, "[MQTT-3.3.1-4]", 0x36, 0x06, 0x00, 0x01, 't', 0x00, 0x01, 0x00);
}

Test(rules, publish_dup_with_qos0) /* [MQTT-3.3.1-2] [v3.1.1 MQTT-3.3.1-2] */
{
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-3.3.1-2", 0x38, 0x03, 0x00, 0x01, 't');
    ERRF(MQL_V5, MQL_E_MALFORMED, "[MQTT-3.3.1-2]", 0x38, 0x04, 0x00, 0x01, 't', 0x00);
}

Test(rules, publish_topic_wildcards) /* [MQTT-3.3.2-2] [v3.1.1 MQTT-3.3.2-2] */
{
    ERRF(MQL_V311, MQL_E_TOPIC_NAME_INVALID, "v3.1.1 MQTT-3.3.2-2", 0x30, 0x05, 0x00, 0x03, 'a',
         '/', '+');
    ERRF(MQL_V311, MQL_E_TOPIC_NAME_INVALID, "v3.1.1 MQTT-3.3.2-2", 0x30, 0x03, 0x00, 0x01, '#');
    ERRF(MQL_V5, MQL_E_TOPIC_NAME_INVALID, "[MQTT-3.3.2-2]", 0x30, 0x06, 0x00, 0x03, 'a', '#', 'b',
         0x00);
    ERRF(MQL_V5, MQL_E_TOPIC_NAME_INVALID, "[MQTT-3.3.2-2]", 0x30, 0x04, 0x00, 0x01, '+', 0x00);
}

Test(rules, publish_empty_topic_v311) /* [v3.1.1 MQTT-4.7.3-1] */
{
    ERRF(MQL_V311, MQL_E_TOPIC_NAME_INVALID, "v3.1.1 MQTT-4.7.3-1", 0x30, 0x04, 0x00, 0x00, 'h',
         'i');
}

Test(rules, publish_empty_topic_without_alias_v5) /* section 3.3.2.1 */
{
    ERRF(MQL_V5, MQL_E_PROTOCOL, "Topic Alias", 0x30, 0x03, 0x00, 0x00, 0x00);
}

Test(rules, publish_topic_utf8) /* [MQTT-3.3.2-1] [v3.1.1 MQTT-3.3.2-1] */
{
    ERRF(MQL_V311, MQL_E_MALFORMED, "v3.1.1 MQTT-1.5.3-1", 0x30, 0x04, 0x00, 0x02, 0xC3, 'x');
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-1.5.4-1", 0x30, 0x06, 0x00, 0x03, 0xED, 0xBF, 0xBF, 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-1.5.4-2", 0x30, 0x05, 0x00, 0x02, 'a', 0x00, 0x00);
}

Test(rules, publish_packet_id_zero) /* [MQTT-2.2.1-3] [v3.1.1 MQTT-2.3.1-1] */
{
    ERRF(MQL_V311, MQL_E_PROTOCOL, "v3.1.1 MQTT-2.3.1-1", 0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x00);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-2.2.1-3", 0x34, 0x06, 0x00, 0x01, 't', 0x00, 0x00, 0x00);
}

Test(rules, packet_id_zero_elsewhere) /* [MQTT-2.2.1-3] [v3.1.1 MQTT-2.3.1-1] */
{
    ERRF(MQL_V311, MQL_E_PROTOCOL, "v3.1.1 MQTT-2.3.1-1", 0x82, 0x06, 0x00, 0x00, 0x00, 0x01, '#',
         0x00);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-2.2.1-3", 0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, '#',
         0x00);
    ERRF(MQL_V311, MQL_E_PROTOCOL, "v3.1.1 MQTT-2.3.1-1", 0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, '#');
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-2.2.1", 0xA2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, '#');
    /* Acks carry the id of a PUBLISH, which is never 0 [MQTT-2.2.1-5] [v3.1.1 MQTT-2.3.1-6]. */
    ERRF(MQL_V311, MQL_E_PROTOCOL, "Packet Identifier is 0", 0x40, 0x02, 0x00, 0x00);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "Packet Identifier is 0", 0x62, 0x02, 0x00, 0x00);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "Packet Identifier is 0", 0x90, 0x04, 0x00, 0x00, 0x00, 0x00);
    ERRF(MQL_V311, MQL_E_PROTOCOL, "Packet Identifier is 0", 0xB0, 0x02, 0x00, 0x00);
}

/* ========================================================================================== */
/* SUBSCRIBE / UNSUBSCRIBE rules                                                               */

Test(rules, subscribe_v5_reserved_option_bits) /* [MQTT-3.8.3-5] */
{
    ERRB(MQL_V5, 0x82, MQL_E_MALFORMED, "MQTT-3.8.3-5", 0x00, 0x01, 0x00, 0x00, 0x01, '#', 0x40);
    ERRB(MQL_V5, 0x82, MQL_E_MALFORMED, "MQTT-3.8.3-5", 0x00, 0x01, 0x00, 0x00, 0x01, '#', 0x80);
}

Test(rules, subscribe_v5_qos_3) /* section 3.8.3.1 */
{
    ERRB(MQL_V5, 0x82, MQL_E_PROTOCOL, "Maximum QoS is 3", 0x00, 0x01, 0x00, 0x00, 0x01, '#', 0x03);
}

Test(rules, subscribe_v5_retain_handling_3) /* section 3.8.3.1 */
{
    ERRB(MQL_V5, 0x82, MQL_E_PROTOCOL, "Retain Handling is 3", 0x00, 0x01, 0x00, 0x00, 0x01, '#',
         0x30);
}

Test(rules, subscribe_v5_no_local_on_shared) /* [MQTT-3.8.3-4] */
{
    ERRB(MQL_V5, 0x82, MQL_E_PROTOCOL, "MQTT-3.8.3-4", 0x00, 0x01, 0x00, 0x00, 0x09, '$', 's', 'h',
         'a', 'r', 'e', '/', 'g', '/', 0x04);
    /* "$share" without the slash is an ordinary filter */
    OK(DECB(MQL_V5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x06, '$', 's', 'h', 'a', 'r', 'e', 0x04));
}

Test(rules, subscribe_v311_requested_qos_byte) /* [v3.1.1 MQTT-3.8.3-4] ("MQTT-3-8.3-4") */
{
    ERRB(MQL_V311, 0x82, MQL_E_MALFORMED, "v3.1.1 MQTT-3.8.3-4", 0x00, 0x01, 0x00, 0x01, '#', 0x04);
    ERRB(MQL_V311, 0x82, MQL_E_MALFORMED, "v3.1.1 MQTT-3.8.3-4", 0x00, 0x01, 0x00, 0x01, '#', 0x80);
    ERRB(MQL_V311, 0x82, MQL_E_MALFORMED, "v3.1.1 MQTT-3.8.3-4", 0x00, 0x01, 0x00, 0x01, '#', 0x03);
}

Test(rules, subscribe_no_entries) /* [MQTT-3.8.3-2] [v3.1.1 MQTT-3.8.3-3] */
{
    ERRB(MQL_V311, 0x82, MQL_E_PROTOCOL, "v3.1.1 MQTT-3.8.3-3", 0x00, 0x01);
    ERRB(MQL_V5, 0x82, MQL_E_PROTOCOL, "[MQTT-3.8.3-2]", 0x00, 0x01, 0x00);
}

Test(rules, subscribe_filter_utf8) /* [MQTT-3.8.3-1] [v3.1.1 MQTT-3.8.3-1] */
{
    ERRB(MQL_V311, 0x82, MQL_E_MALFORMED, "v3.1.1 MQTT-1.5.3", 0x00, 0x01, 0x00, 0x01, 0x80, 0x00);
    ERRB(MQL_V5, 0x82, MQL_E_MALFORMED, "MQTT-1.5.4", 0x00, 0x01, 0x00, 0x00, 0x02, 0xC0, 0xAF,
         0x00);
}

Test(rules, subscribe_filter_syntax_is_not_checked_by_decode)
{
    /* Wildcard placement is the caller's job (mql_topic_filter_valid -> SUBACK 0x8F). */
    OK(DECB(MQL_V5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '#', 'b', 0x00));
    OK(DECB(MQL_V311, 0x82, 0x00, 0x01, 0x00, 0x00, 0x00));
}

Test(rules, unsubscribe_no_entries) /* [MQTT-3.10.3-2] [v3.1.1 MQTT-3.10.3-2] */
{
    ERRB(MQL_V311, 0xA2, MQL_E_PROTOCOL, "v3.1.1 MQTT-3.10.3-2", 0x00, 0x01);
    ERRB(MQL_V5, 0xA2, MQL_E_PROTOCOL, "[MQTT-3.10.3-2]", 0x00, 0x01, 0x00);
}

Test(rules, unsubscribe_filter_utf8) /* [MQTT-3.10.3-1] */
{
    ERRB(MQL_V5, 0xA2, MQL_E_MALFORMED, "MQTT-1.5.4", 0x00, 0x01, 0x00, 0x00, 0x01, 0x00);
}

Test(rules, suback_and_unsuback_codes) /* [MQTT-3.9.3-2] [v3.1.1 MQTT-3.9.3-2] [MQTT-3.11.3-2] */
{
    ERRF(MQL_V311, MQL_E_PROTOCOL, "v3.1.1 MQTT-3.9.3-2", 0x90, 0x03, 0x00, 0x01, 0x03);
    ERRF(MQL_V311, MQL_E_PROTOCOL, "v3.1.1 MQTT-3.9.3-2", 0x90, 0x03, 0x00, 0x01, 0x8F);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "[MQTT-3.9.3-2]", 0x90, 0x04, 0x00, 0x01, 0x00, 0x03);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-3.11.3-2", 0xB0, 0x04, 0x00, 0x01, 0x00, 0x01);
    ERRF(MQL_V311, MQL_E_PROTOCOL, "SUBACK", 0x90, 0x02, 0x00, 0x01);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "UNSUBACK", 0xB0, 0x03, 0x00, 0x01, 0x00);
}

/* ========================================================================================== */
/* Reason codes and CONNACK                                                                    */

Test(rules, invalid_reason_codes) /* [MQTT-3.4.2-1] .. [MQTT-3.15.2-1] */
{
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-3.4.2-1", 0x40, 0x03, 0x00, 0x01, 0x01);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-3.5.2-1", 0x50, 0x03, 0x00, 0x01, 0x92);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-3.6.2-1", 0x62, 0x03, 0x00, 0x01, 0x10);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-3.7.2-1", 0x70, 0x03, 0x00, 0x01, 0x80);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-3.14.2-1", 0xE0, 0x01, 0x01);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "MQTT-3.15.2-1", 0xF0, 0x07, 0x01, 0x05, 0x15, 0x00, 0x02, 'a',
         'm');
    ERRF(MQL_V5, MQL_E_PROTOCOL, "CONNACK Reason Code", 0x20, 0x03, 0x00, 0x01, 0x00);
}

Test(rules, connack_flags_and_return_code) /* [MQTT-3.2.2-1], v3.1.1 section 3.2.2 */
{
    ERRF(MQL_V5, MQL_E_MALFORMED, "MQTT-3.2.2-1", 0x20, 0x03, 0x02, 0x00, 0x00);
    ERRF(MQL_V311, MQL_E_MALFORMED, "Acknowledge Flags", 0x20, 0x02, 0x80, 0x00);
    ERRF(MQL_V311, MQL_E_PROTOCOL, "return code", 0x20, 0x02, 0x00, 0x06);
}

Test(rules, auth_without_method) /* section 3.15.2.2.2 */
{
    ERRF(MQL_V5, MQL_E_PROTOCOL, "Authentication Method", 0xF0, 0x02, 0x18, 0x00);
    ERRF(MQL_V5, MQL_E_PROTOCOL, "Authentication Method", 0xF0, 0x01, 0x19);
}

/* ========================================================================================== */
/* Properties                                                                                  */

Test(props, not_allowed_in_packet_type) /* section 2.2.2.2: Malformed Packet */
{
    /* Topic Alias in CONNECT */
    ERRF(0, MQL_E_MALFORMED, "not valid for this packet", 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T',
         'T', 0x05, 0x02, 0x00, 0x3C, 0x03, 0x23, 0x00, 0x01, 0x00, 0x00);
    /* Will Delay Interval belongs to the Will Properties, not the CONNECT properties */
    ERRF(0, MQL_E_MALFORMED, "not valid for this packet", 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T',
         'T', 0x05, 0x02, 0x00, 0x3C, 0x05, 0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00);
    /* Session Expiry Interval in the Will Properties */
    ERRF(0, MQL_E_MALFORMED, "not valid for this packet", 0x10, 0x18, 0x00, 0x04, 'M', 'Q', 'T',
         'T', 0x05, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00,
         0x01, 't', 0x00, 0x00);
    /* Reason String in PUBLISH, Session Expiry in PUBACK, Subscription Identifier in
     * UNSUBSCRIBE, Auth Method in DISCONNECT, Maximum QoS in CONNECT, Payload Format in
     * SUBSCRIBE, Server Keep Alive in AUTH */
    ERRF(MQL_V5, MQL_E_MALFORMED, "not valid", 0x30, 0x08, 0x00, 0x01, 't', 0x04, 0x1F, 0x00, 0x01,
         'x');
    ERRF(MQL_V5, MQL_E_MALFORMED, "not valid", 0x40, 0x09, 0x00, 0x01, 0x00, 0x05, 0x11, 0x00, 0x00,
         0x00, 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "not valid", 0xA2, 0x08, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01,
         '#');
    ERRF(MQL_V5, MQL_E_MALFORMED, "not valid", 0xE0, 0x07, 0x00, 0x05, 0x15, 0x00, 0x02, 'a', 'm');
    ERRF(0, MQL_E_MALFORMED, "not valid", 0x10, 0x0F, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02,
         0x00, 0x3C, 0x02, 0x24, 0x01, 0x00, 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "not valid", 0x82, 0x09, 0x00, 0x01, 0x02, 0x01, 0x01, 0x00, 0x01,
         '#', 0x00);
    ERRF(MQL_V5, MQL_E_MALFORMED, "not valid", 0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x02, 'a', 'm',
         0x13, 0x00, 0x05);
}

Test(props, unknown_identifier) /* section 2.2.2.2 */
{
    static const uint8_t ids[] = {0x00, 0x04, 0x0A, 0x10, 0x14, 0x1B, 0x20, 0x2B, 0x7F, 0x80, 0xFF};
    for (size_t i = 0; i < sizeof(ids); i++) {
        uint8_t body[] = {0x00, 0x01, 't', 0x02, ids[i], 0x00};
        expect_err(decode_body(MQL_V5, 0x30, body, sizeof(body)), MQL_E_MALFORMED,
                   "unknown property", __LINE__);
    }
}

Test(props, included_twice_is_protocol_error) /* "It is a Protocol Error to include ... twice" */
{
    /* Session Expiry Interval twice in CONNECT */
    ERRF(0, MQL_E_PROTOCOL, "more than once", 0x10, 0x17, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x02, 0x00, 0x3C, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x01, 0x11, 0x00, 0x00, 0x00, 0x02, 0x00,
         0x00);
    /* Topic Alias twice in PUBLISH */
    ERRB(MQL_V5, 0x30, MQL_E_PROTOCOL, "more than once", 0x00, 0x01, 't', 0x06, 0x23, 0x00, 0x01,
         0x23, 0x00, 0x02);
    /* Reason String twice in PUBACK */
    ERRB(MQL_V5, 0x40, MQL_E_PROTOCOL, "more than once", 0x00, 0x01, 0x00, 0x08, 0x1F, 0x00, 0x01,
         'a', 0x1F, 0x00, 0x01, 'b');
    /* Subscription Identifier twice in SUBSCRIBE (section 3.8.2.1.2) */
    ERRB(MQL_V5, 0x82, MQL_E_PROTOCOL, "more than once", 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02,
         0x00, 0x01, '#', 0x00);
    /* Payload Format Indicator twice in the Will Properties */
    ERRF(0, MQL_E_PROTOCOL, "more than once", 0x10, 0x17, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x06, 0x00, 0x3C, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x01, 0x01, 0x00, 0x01, 't', 0x00,
         0x00);
    /* Authentication Method twice in AUTH */
    ERRB(MQL_V5, 0xF0, MQL_E_PROTOCOL, "more than once", 0x18, 0x0A, 0x15, 0x00, 0x02, 'a', 'm',
         0x15, 0x00, 0x02, 'a', 'm');
}

Test(props, user_property_may_repeat)
{
    OK(DECB(MQL_V5, 0x40, 0x00, 0x01, 0x00, 0x0C, 0x26, 0x00, 0x01, 'a', 0x00, 0x00, 0x26, 0x00,
            0x01, 'a', 0x00, 0x00));
    cr_assert_eq(P.u.ack.props.n_user, 2);
}

Test(props, value_ranges_are_protocol_errors)
{
    /* CONNECT: Receive Maximum 0, Maximum Packet Size 0, Request Problem / Response Info 2 */
    ERRF(0, MQL_E_PROTOCOL, "Receive Maximum is 0", 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x05, 0x02, 0x00, 0x3C, 0x03, 0x21, 0x00, 0x00, 0x00, 0x00);
    ERRF(0, MQL_E_PROTOCOL, "Maximum Packet Size is 0", 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T',
         0x05, 0x02, 0x00, 0x3C, 0x05, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00);
    ERRF(0, MQL_E_PROTOCOL, "Request Problem Information", 0x10, 0x0F, 0x00, 0x04, 'M', 'Q', 'T',
         'T', 0x05, 0x02, 0x00, 0x3C, 0x02, 0x17, 0x02, 0x00, 0x00);
    ERRF(0, MQL_E_PROTOCOL, "Request Response Information", 0x10, 0x0F, 0x00, 0x04, 'M', 'Q', 'T',
         'T', 0x05, 0x02, 0x00, 0x3C, 0x02, 0x19, 0x02, 0x00, 0x00);
    /* PUBLISH: Payload Format Indicator 2, Subscription Identifier 0 */
    ERRB(MQL_V5, 0x30, MQL_E_PROTOCOL, "Payload Format", 0x00, 0x01, 't', 0x02, 0x01, 0x02);
    ERRB(MQL_V5, 0x30, MQL_E_PROTOCOL, "Subscription Identifier is 0", 0x00, 0x01, 't', 0x02, 0x0B,
         0x00);
    ERRB(MQL_V5, 0x82, MQL_E_PROTOCOL, "Subscription Identifier is 0", 0x00, 0x01, 0x02, 0x0B, 0x00,
         0x00, 0x01, '#', 0x00);
    /* CONNACK: Maximum QoS, Retain / Wildcard / SubId / Shared Available 2, Receive Max 0 */
    ERRB(MQL_V5, 0x20, MQL_E_PROTOCOL, "Maximum QoS", 0x00, 0x00, 0x02, 0x24, 0x02);
    ERRB(MQL_V5, 0x20, MQL_E_PROTOCOL, "Retain Available", 0x00, 0x00, 0x02, 0x25, 0x02);
    ERRB(MQL_V5, 0x20, MQL_E_PROTOCOL, "Wildcard Subscription", 0x00, 0x00, 0x02, 0x28, 0x02);
    ERRB(MQL_V5, 0x20, MQL_E_PROTOCOL, "Subscription Identifier Available", 0x00, 0x00, 0x02, 0x29,
         0x05);
    ERRB(MQL_V5, 0x20, MQL_E_PROTOCOL, "Shared Subscription", 0x00, 0x00, 0x02, 0x2A, 0xFF);
    ERRB(MQL_V5, 0x20, MQL_E_PROTOCOL, "Receive Maximum is 0", 0x00, 0x00, 0x03, 0x21, 0x00, 0x00);
    ERRB(MQL_V5, 0x20, MQL_E_PROTOCOL, "Maximum Packet Size is 0", 0x00, 0x00, 0x05, 0x27, 0x00,
         0x00, 0x00, 0x00);
    /* Will Properties: Payload Format Indicator 2 */
    ERRF(0, MQL_E_PROTOCOL, "Payload Format", 0x10, 0x15, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
         0x06, 0x00, 0x3C, 0x00, 0x00, 0x00, 0x02, 0x01, 0x02, 0x00, 0x01, 't', 0x00, 0x00);
}

Test(props, topic_alias_zero) /* [MQTT-3.3.2-8], section 3.3.4: 0x94 Topic Alias invalid */
{
    ERRB(MQL_V5, 0x30, MQL_E_TOPIC_ALIAS_INVALID, "MQTT-3.3.2-8", 0x00, 0x01, 't', 0x03, 0x23, 0x00,
         0x00);
}

Test(props, response_topic_wildcards) /* [MQTT-3.3.2-14] */
{
    ERRB(MQL_V5, 0x30, MQL_E_PROTOCOL, "MQTT-3.3.2-14", 0x00, 0x01, 't', 0x04, 0x08, 0x00, 0x01,
         '#');
    ERRB(MQL_V5, 0x30, MQL_E_PROTOCOL, "MQTT-3.3.2-14", 0x00, 0x01, 't', 0x03, 0x08, 0x00, 0x00);
}

Test(props, string_values_utf8) /* [MQTT-1.5.4-1] [MQTT-1.5.4-2] [MQTT-1.5.7-1] */
{
    /* Content Type with a surrogate, Reason String with U+0000, User Property value overlong */
    ERRB(MQL_V5, 0x30, MQL_E_MALFORMED, "MQTT-1.5.4-1", 0x00, 0x01, 't', 0x06, 0x03, 0x00, 0x03,
         0xED, 0xA0, 0x80);
    ERRB(MQL_V5, 0x40, MQL_E_MALFORMED, "MQTT-1.5.4-2", 0x00, 0x01, 0x00, 0x04, 0x1F, 0x00, 0x01,
         0x00);
    ERRB(MQL_V5, 0x40, MQL_E_MALFORMED, "MQTT-1.5.4", 0x00, 0x01, 0x00, 0x07, 0x26, 0x00, 0x00,
         0x00, 0x02, 0xC1, 0x81);
    ERRB(MQL_V5, 0x40, MQL_E_MALFORMED, "MQTT-1.5.4", 0x00, 0x01, 0x00, 0x07, 0x26, 0x00, 0x02,
         0xE0, 0x80, 0x00, 0x00);
    /* Binary Data may hold anything (Correlation Data with 0x00 and 0xFF) */
    OK(DECB(MQL_V5, 0x30, 0x00, 0x01, 't', 0x05, 0x09, 0x00, 0x02, 0x00, 0xFF));
    cr_assert_eq(P.u.publish.props.correlation_data.len, 2);
    cr_assert_eq(memcmp(P.u.publish.props.correlation_data.p, "\x00\xFF", 2), 0);
}

Test(props, truncated_values)
{
    /* Property Length covers only part of a Four Byte Integer / string / pair. */
    ERRB(MQL_V5, 0x30, MQL_E_MALFORMED, "truncated", 0x00, 0x01, 't', 0x03, 0x02, 0x00, 0x00, 0x00,
         0x00);
    ERRB(MQL_V5, 0x30, MQL_E_MALFORMED, "truncated", 0x00, 0x01, 't', 0x04, 0x03, 0x00, 0x05, 'a');
    ERRB(MQL_V5, 0x40, MQL_E_MALFORMED, "truncated", 0x00, 0x01, 0x00, 0x05, 0x26, 0x00, 0x01, 'k',
         0x00);
    ERRB(MQL_V5, 0x30, MQL_E_MALFORMED, "truncated", 0x00, 0x01, 't', 0x01, 0x01);
    ERRB(MQL_V5, 0x30, MQL_E_MALFORMED, "truncated", 0x00, 0x01, 't', 0x02, 0x0B, 0x80);
    ERRB(MQL_V5, 0x30, MQL_E_MALFORMED, "Property Length", 0x00, 0x01, 't', 0x10, 0x01, 0x01);
}

Test(props, every_identifier_is_typed)
{
    /* One packet per property id with its type: Byte, Two/Four Byte Integer, VBI, string,
     * binary, string pair (table 2-4). Each decodes and re-encodes to the same bytes. */
    RT(MQL_V5, 0x30, 0x07, 0x00, 0x01, 't', 0x02, 0x01, 0x00, 'p');              /* 0x01 Byte */
    RT(MQL_V5, 0x30, 0x09, 0x00, 0x01, 't', 0x05, 0x02, 0xFF, 0xFF, 0xFF, 0xFF); /* 0x02 u32 */
    RT(MQL_V5, 0x30, 0x08, 0x00, 0x01, 't', 0x04, 0x03, 0x00, 0x01, 'x');        /* 0x03 str */
    RT(MQL_V5, 0x30, 0x08, 0x00, 0x01, 't', 0x04, 0x08, 0x00, 0x01, 'x');        /* 0x08 str */
    RT(MQL_V5, 0x30, 0x07, 0x00, 0x01, 't', 0x03, 0x09, 0x00, 0x00);             /* 0x09 bin */
    RT(MQL_V5, 0x30, 0x06, 0x00, 0x01, 't', 0x02, 0x0B, 0x7F);                   /* 0x0B VBI */
    RT(MQL_V5, 0x30, 0x07, 0x00, 0x01, 't', 0x03, 0x23, 0xFF, 0xFF);             /* 0x23 u16 */
    RT(MQL_V5, 0x20, 0x08, 0x00, 0x00, 0x05, 0x11, 0xFF, 0xFF, 0xFF, 0xFF);      /* 0x11 */
    RT(MQL_V5, 0x20, 0x07, 0x00, 0x00, 0x04, 0x12, 0x00, 0x01, 'c');             /* 0x12 */
    RT(MQL_V5, 0x20, 0x06, 0x00, 0x00, 0x03, 0x13, 0x00, 0x00);                  /* 0x13 */
    RT(MQL_V5, 0x20, 0x07, 0x00, 0x00, 0x04, 0x15, 0x00, 0x01, 'm');             /* 0x15 */
    RT(MQL_V5, 0x20, 0x0B, 0x00, 0x00, 0x08, 0x15, 0x00, 0x01, 'm', 0x16, 0x00, 0x01,
       0x00);                                                                         /* 0x16 */
    RT(MQL_V5, 0x20, 0x07, 0x00, 0x00, 0x04, 0x1A, 0x00, 0x01, 'i');                  /* 0x1A */
    RT(MQL_V5, 0x20, 0x07, 0x00, 0x00, 0x04, 0x1C, 0x00, 0x01, 's');                  /* 0x1C */
    RT(MQL_V5, 0x20, 0x07, 0x00, 0x00, 0x04, 0x1F, 0x00, 0x01, 'r');                  /* 0x1F */
    RT(MQL_V5, 0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0xFF, 0xFF);                       /* 0x21 */
    RT(MQL_V5, 0x20, 0x06, 0x00, 0x00, 0x03, 0x22, 0x00, 0x00);                       /* 0x22 */
    RT(MQL_V5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x00);                             /* 0x24 */
    RT(MQL_V5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x01);                             /* 0x25 */
    RT(MQL_V5, 0x20, 0x0A, 0x00, 0x00, 0x07, 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'); /* 0x26 */
    RT(MQL_V5, 0x20, 0x08, 0x00, 0x00, 0x05, 0x27, 0x00, 0x00, 0x00, 0x01);           /* 0x27 */
    RT(MQL_V5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x28, 0x00);                             /* 0x28 */
    RT(MQL_V5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x29, 0x01);                             /* 0x29 */
    RT(MQL_V5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x2A, 0x00);                             /* 0x2A */
    RT(0, 0x10, 0x0F, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x00, 0x00, 0x00, 0x02, 0x17, 0x01,
       0x00, 0x00); /* 0x17 */
    RT(0, 0x10, 0x0F, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x00, 0x00, 0x00, 0x02, 0x19, 0x00,
       0x00, 0x00); /* 0x19 */
    RT(0, 0x10, 0x18, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
       0x05, 0x18, 0x00, 0x00, 0x00, 0x09, 0x00, 0x01, 't', 0x00, 0x00); /* 0x18 will */
}

Test(props, encode_leaves_out_properties_not_allowed)
{
    /* Session Expiry and Topic Alias are not PUBACK/DISCONNECT... properties: not written. */
    mql_packet p = {.type = MQL_SUBACK};
    static const uint8_t codes[] = {0x00};
    p.u.suback.packet_id = 1;
    p.u.suback.count = 1;
    p.u.suback.codes = codes;
    p.u.suback.props.present = MQL_PBIT(MQL_PROP_SESSION_EXPIRY) | MQL_PBIT(MQL_PROP_TOPIC_ALIAS);
    ENC(&p, MQL_V5, 0x90, 0x04, 0x00, 0x01, 0x00, 0x00);
}

Test(props, user_prop_encode)
{
    uint8_t buf[16];
    mql_bytes k = {(const uint8_t *)"key", 3}, v = {(const uint8_t *)"val", 3};
    cr_assert_eq(mql_user_prop_encode(buf, 4, k, v), 11, "returns the size without writing");
    cr_assert_eq(mql_user_prop_encode(buf, sizeof(buf), k, v), 11);
    expect_bytes(buf, 11, U8(0x26, 0x00, 0x03, 'k', 'e', 'y', 0x00, 0x03, 'v', 'a', 'l'), 11,
                 __LINE__);
    mql_bytes big = {buf, 65536};
    cr_assert_eq(mql_user_prop_encode(NULL, 0, big, v), 0);
}

Test(props, iterators_on_empty_blocks)
{
    mql_props pr = {0};
    uint32_t pos = 0, id;
    mql_bytes k, v;
    cr_assert(!mql_props_next_user(&pr, &pos, &k, &v));
    cr_assert(!mql_props_next_sub_id(&pr, &pos, &id));
}

/* ========================================================================================== */
/* Encoder edge cases                                                                          */

Test(encode, not_encodable_returns_0)
{
    uint8_t big[65536];
    memset(big, 'a', sizeof(big));
    mql_packet p = {.type = MQL_PUBLISH};
    p.u.publish.topic = (mql_bytes){big, 65536};
    cr_assert_eq(mql_encode(E, sizeof(E), &p, MQL_V5), 0, "topic longer than 65,535 bytes");
    p.u.publish.topic.len = 65535;
    cr_assert_eq(mql_encode(NULL, 0, &p, MQL_V5), 1 + 3 + 2 + 65535 + 1);

    mql_packet q = {.type = 0};
    cr_assert_eq(mql_encode(E, sizeof(E), &q, MQL_V5), 0, "type 0");
    q.type = MQL_SUBSCRIBE;
    cr_assert_eq(mql_encode(E, sizeof(E), &q, MQL_V5), 0, "SUBSCRIBE without entries");
    q.type = MQL_UNSUBSCRIBE;
    cr_assert_eq(mql_encode(E, sizeof(E), &q, MQL_V5), 0, "UNSUBSCRIBE without entries");

    mql_packet r = {.type = MQL_PUBLISH};
    r.u.publish.topic = (mql_bytes){(const uint8_t *)"t", 1};
    r.u.publish.props.present = MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID);
    r.u.publish.props.sub_id = 268435456u;
    cr_assert_eq(mql_encode(E, sizeof(E), &r, MQL_V5), 0, "Subscription Identifier too large");

    /* Remaining Length beyond 268,435,455. */
    mql_packet s = {.type = MQL_PUBLISH};
    s.u.publish.topic = (mql_bytes){(const uint8_t *)"t", 1};
    s.u.publish.payload = (mql_bytes){big, 268435455u};
    cr_assert_eq(mql_encode(NULL, 0, &s, MQL_V311), 0);
}

Test(encode, qos_and_flags_masking)
{
    mql_packet p = {.type = MQL_PUBREL};
    p.u.ack.packet_id = 0x0102;
    ENC(&p, MQL_V311, 0x62, 0x02, 0x01, 0x02); /* PUBREL always 0010 */
    mql_sub_entry e = {.filter = {(const uint8_t *)"#", 1}, .qos = 1};
    mql_packet s = {.type = MQL_SUBSCRIBE};
    s.u.subscribe.packet_id = 1;
    s.u.subscribe.count = 1;
    s.u.subscribe.list = &e;
    ENC(&s, MQL_V5, 0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, '#', 0x01);
}

/* ========================================================================================== */
/* UTF-8 and topics [MQTT-1.5.4-1] [MQTT-1.5.4-2] [v3.1.1 MQTT-1.5.3-1] [v3.1.1 MQTT-1.5.3-2]  */

Test(utf8, valid_strings)
{
    cr_assert(mql_utf8_valid(U8(0), 0));
    cr_assert(mql_utf8_valid((const uint8_t *)"plain ascii over eight bytes", 28));
    /* "A" U+2A6D4 (figure 1-2), U+00E9, U+20AC, U+FEFF [MQTT-1.5.4-3], U+10FFFF, U+D7FF, U+E000 */
    cr_assert(mql_utf8_valid(U8('A', 0xF0, 0xAA, 0x9B, 0x94), 5));
    cr_assert(mql_utf8_valid(U8(0xC3, 0xA9), 2));
    cr_assert(mql_utf8_valid(U8(0xE2, 0x82, 0xAC), 3));
    cr_assert(mql_utf8_valid(U8(0xEF, 0xBB, 0xBF), 3));
    cr_assert(mql_utf8_valid(U8(0xF4, 0x8F, 0xBF, 0xBF), 4));
    cr_assert(mql_utf8_valid(U8(0xED, 0x9F, 0xBF), 3));
    cr_assert(mql_utf8_valid(U8(0xEE, 0x80, 0x80), 3));
    /* Control characters and non-characters are only "SHOULD NOT": accepted. */
    cr_assert(mql_utf8_valid(U8(0x01, 0x7F, 0xEF, 0xBF, 0xBF), 5));
}

Test(utf8, invalid_strings)
{
    cr_assert(!mql_utf8_valid(U8(0x00), 1), "U+0000");
    cr_assert(!mql_utf8_valid(U8('a', 'b', 'c', 'd', 'e', 'f', 'g', 0x00, 'h'), 9), "U+0000");
    cr_assert(!mql_utf8_valid(U8(0xC0, 0x80), 2), "overlong U+0000");
    cr_assert(!mql_utf8_valid(U8(0xC1, 0xBF), 2), "overlong");
    cr_assert(!mql_utf8_valid(U8(0xE0, 0x9F, 0xBF), 3), "overlong 3-byte");
    cr_assert(!mql_utf8_valid(U8(0xF0, 0x8F, 0xBF, 0xBF), 4), "overlong 4-byte");
    cr_assert(!mql_utf8_valid(U8(0xED, 0xA0, 0x80), 3), "U+D800 surrogate");
    cr_assert(!mql_utf8_valid(U8(0xED, 0xBF, 0xBF), 3), "U+DFFF surrogate");
    cr_assert(!mql_utf8_valid(U8(0xF4, 0x90, 0x80, 0x80), 4), "beyond U+10FFFF");
    cr_assert(!mql_utf8_valid(U8(0xF5, 0x80, 0x80, 0x80), 4));
    cr_assert(!mql_utf8_valid(U8(0xFF), 1));
    cr_assert(!mql_utf8_valid(U8(0x80), 1), "stray continuation");
    cr_assert(!mql_utf8_valid(U8(0xE2, 0x82), 2), "truncated");
    cr_assert(!mql_utf8_valid(U8(0xE2, 0x82, 0x41), 3), "bad continuation");
    cr_assert(!mql_utf8_valid(U8('a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 0xC3), 9), "truncated");
}

Test(topics, topic_name_valid) /* [MQTT-4.7.0-1] [MQTT-4.7.3-1] [v3.1.1 MQTT-4.7.1-1] */
{
#define TN(s) mql_topic_name_valid((mql_bytes){(const uint8_t *)(s), (uint32_t)strlen(s)})
    cr_assert(TN("a"));
    cr_assert(TN("/"));
    cr_assert(TN("a//b/"));
    cr_assert(TN("$SYS/x"));
    cr_assert(TN("caf\xC3\xA9"));
    cr_assert(!TN(""));
    cr_assert(!TN("a/+"));
    cr_assert(!TN("a/#"));
    cr_assert(!TN("a+b"));
    cr_assert(!TN("\xFF"));
#undef TN
}

Test(topics, topic_filter_valid) /* [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.8.2-1] [MQTT-4.8.2-2] */
{
#define TF(s) mql_topic_filter_valid((mql_bytes){(const uint8_t *)(s), (uint32_t)strlen(s)})
    cr_assert(TF("#"));
    cr_assert(TF("+"));
    cr_assert(TF("a/#"));
    cr_assert(TF("+/+/#"));
    cr_assert(TF("/+"));
    cr_assert(TF("a//b"));
    cr_assert(TF("sport/tennis/+/stats"));
    cr_assert(TF("$share/g/a/#"));
    cr_assert(TF("$share/g//finance"));
    cr_assert(TF("$share"), "no slash after $share: ordinary filter");
    cr_assert(TF("$shared/+"));
    cr_assert(!TF(""));
    cr_assert(!TF("a#"));
    cr_assert(!TF("a/#/b"));
    cr_assert(!TF("#/"));
    cr_assert(!TF("a+"));
    cr_assert(!TF("+a"));
    cr_assert(!TF("a/b+/c"));
    cr_assert(!TF("$share/"));
    cr_assert(!TF("$share//a"), "empty ShareName");
    cr_assert(!TF("$share/g"), "no filter");
    cr_assert(!TF("$share/g/"), "empty filter");
    cr_assert(!TF("$share/g+/a"), "wildcard in ShareName");
    cr_assert(!TF("$share/#/a"));
    cr_assert(!TF("$share/g/a#"));
    cr_assert(!TF("a\xC0\x80"));
#undef TF
}

/* The store keeps a message's forwarded properties as a bare property block. */
Test(props_block, round_trip)
{
    mql_props in;
    memset(&in, 0, sizeof(in));
    uint8_t user[64];
    size_t un = mql_user_prop_encode(user, sizeof(user), (mql_bytes){(const uint8_t *)"k", 1},
                                     (mql_bytes){(const uint8_t *)"v1", 2});
    un += mql_user_prop_encode(user + un, sizeof(user) - un, (mql_bytes){(const uint8_t *)"k", 1},
                               (mql_bytes){(const uint8_t *)"v2", 2});
    in.present = MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT) | MQL_PBIT(MQL_PROP_CONTENT_TYPE) |
                 MQL_PBIT(MQL_PROP_CORRELATION_DATA) | MQL_PBIT(MQL_PROP_USER);
    in.payload_format = 1;
    in.content_type = (mql_bytes){(const uint8_t *)"text/plain", 10};
    in.correlation_data = (mql_bytes){(const uint8_t *)"\x01\x02", 2};
    in.user_raw = (mql_bytes){user, (uint32_t)un};
    uint8_t buf[128];
    size_t n = mql_props_encode(NULL, 0, &in);
    cr_assert(n > 0 && n <= sizeof(buf));
    cr_assert_eq(mql_props_encode(buf, sizeof(buf), &in), n);
    mql_props out;
    const char *why = NULL;
    cr_assert_eq(mql_props_decode(buf, n, &out, &why), MQL_OK, "%s", why ? why : "");
    cr_expect_eq(out.payload_format, 1);
    cr_expect_eq(out.content_type.len, 10);
    cr_expect(memcmp(out.content_type.p, "text/plain", 10) == 0);
    cr_expect(out.content_type.p >= buf && out.content_type.p < buf + n);
    cr_expect_eq(out.n_user, 2);
    uint32_t pos = 0;
    mql_bytes k, v;
    cr_assert(mql_props_next_user(&out, &pos, &k, &v));
    cr_expect(v.len == 2 && memcmp(v.p, "v1", 2) == 0);
    cr_assert(mql_props_next_user(&out, &pos, &k, &v));
    cr_expect(v.len == 2 && memcmp(v.p, "v2", 2) == 0);
    /* a garbage block is refused, not read past its end */
    uint8_t bad[] = {0x03, 0x00, 0x10, 'x'};
    cr_expect_eq(mql_props_decode(bad, sizeof(bad), &out, &why), MQL_E_MALFORMED);
    cr_expect_eq(mql_props_encode(NULL, 0, &(mql_props){0}), 0);
}
