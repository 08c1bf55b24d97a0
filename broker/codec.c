/*
 * codec.c - MQTT 3.1.1 and 5.0 control packets: bytes <-> structs.
 *
 * Purpose: the only place in mqlite that knows the wire format. mql_frame_scan() finds
 * frame boundaries in a byte stream, mql_decode() checks every rule the specifications make
 * about a packet's own bytes and fills a struct of slices into the frame, mql_encode() writes
 * a struct into a caller-sized buffer.
 *
 * Assumptions and rules:
 * - Pure code: no I/O, no globals except constant tables, no allocation, no locking (every
 *   function is reentrant). Decoded mql_bytes borrow from the caller's frame.
 * - Decoding is strict. A packet that cannot be parsed is MQL_E_MALFORMED; a packet that
 *   parses but carries data the protocol forbids is MQL_E_PROTOCOL, following the definitions
 *   in MQTT 5.0 section 1.2 and the wording of each rule; a few rules name a more specific
 *   reason code (Topic Name invalid 0x90, Topic Alias invalid 0x94). Every error sets a
 *   constant `why` naming the rule: v5 ids as [MQTT-x.y.z-n], 3.1.1 ids as
 *   [v3.1.1 MQTT-x.y.z-n], or the section when the text gives no id.
 * - Performance: the decoder is on the hot path. It is a single forward pass with no
 *   backtracking; duplicate properties are found with the `present` bitmask, UTF-8 is checked
 *   eight ASCII bytes at a time. A small PUBLISH decodes in well under a microsecond.
 * - Encoding computes sizes first (a writer with a NULL buffer only counts) and writes in a
 *   second pass, so nothing is written unless the whole packet fits.
 */
#include "codec.h"

#include <string.h>

#define VBI_MAX 268435455u
#define MAX_FRAME (5u + VBI_MAX)

/* Set *why and yield err: `return BAD(MQL_E_MALFORMED, "...");` */
#define BAD(err, text) (*why = (text), (err))
/* Pick the sentence of the version being decoded. */
#define V(v5, text5, text3) ((v5) ? (text5) : (text3))
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        mql_err try_err_ = (expr);                                                                 \
        if (try_err_ != MQL_OK)                                                                    \
            return try_err_;                                                                       \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Constant tables                                                                             */

enum ptype { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VBI, PT_STR, PT_BIN, PT_PAIR };

/* Table 2-4: data type of each property identifier. */
static const uint8_t prop_type[MQL_PROP_SHARED_SUB_AVAILABLE + 1] = {
    [MQL_PROP_PAYLOAD_FORMAT] = PT_BYTE,
    [MQL_PROP_MESSAGE_EXPIRY] = PT_U32,
    [MQL_PROP_CONTENT_TYPE] = PT_STR,
    [MQL_PROP_RESPONSE_TOPIC] = PT_STR,
    [MQL_PROP_CORRELATION_DATA] = PT_BIN,
    [MQL_PROP_SUBSCRIPTION_ID] = PT_VBI,
    [MQL_PROP_SESSION_EXPIRY] = PT_U32,
    [MQL_PROP_ASSIGNED_CLIENT_ID] = PT_STR,
    [MQL_PROP_SERVER_KEEP_ALIVE] = PT_U16,
    [MQL_PROP_AUTH_METHOD] = PT_STR,
    [MQL_PROP_AUTH_DATA] = PT_BIN,
    [MQL_PROP_REQUEST_PROBLEM_INFO] = PT_BYTE,
    [MQL_PROP_WILL_DELAY] = PT_U32,
    [MQL_PROP_REQUEST_RESPONSE_INFO] = PT_BYTE,
    [MQL_PROP_RESPONSE_INFO] = PT_STR,
    [MQL_PROP_SERVER_REFERENCE] = PT_STR,
    [MQL_PROP_REASON_STRING] = PT_STR,
    [MQL_PROP_RECEIVE_MAXIMUM] = PT_U16,
    [MQL_PROP_TOPIC_ALIAS_MAXIMUM] = PT_U16,
    [MQL_PROP_TOPIC_ALIAS] = PT_U16,
    [MQL_PROP_MAXIMUM_QOS] = PT_BYTE,
    [MQL_PROP_RETAIN_AVAILABLE] = PT_BYTE,
    [MQL_PROP_USER] = PT_PAIR,
    [MQL_PROP_MAXIMUM_PACKET_SIZE] = PT_U32,
    [MQL_PROP_WILDCARD_SUB_AVAILABLE] = PT_BYTE,
    [MQL_PROP_SUB_ID_AVAILABLE] = PT_BYTE,
    [MQL_PROP_SHARED_SUB_AVAILABLE] = PT_BYTE,
};

/* Property ids in the order the encoder writes them. */
static const uint8_t prop_order[] = {
    MQL_PROP_PAYLOAD_FORMAT,      MQL_PROP_MESSAGE_EXPIRY,
    MQL_PROP_CONTENT_TYPE,        MQL_PROP_RESPONSE_TOPIC,
    MQL_PROP_CORRELATION_DATA,    MQL_PROP_SUBSCRIPTION_ID,
    MQL_PROP_SESSION_EXPIRY,      MQL_PROP_ASSIGNED_CLIENT_ID,
    MQL_PROP_SERVER_KEEP_ALIVE,   MQL_PROP_AUTH_METHOD,
    MQL_PROP_AUTH_DATA,           MQL_PROP_REQUEST_PROBLEM_INFO,
    MQL_PROP_WILL_DELAY,          MQL_PROP_REQUEST_RESPONSE_INFO,
    MQL_PROP_RESPONSE_INFO,       MQL_PROP_SERVER_REFERENCE,
    MQL_PROP_REASON_STRING,       MQL_PROP_RECEIVE_MAXIMUM,
    MQL_PROP_TOPIC_ALIAS_MAXIMUM, MQL_PROP_TOPIC_ALIAS,
    MQL_PROP_MAXIMUM_QOS,         MQL_PROP_RETAIN_AVAILABLE,
    MQL_PROP_MAXIMUM_PACKET_SIZE, MQL_PROP_WILDCARD_SUB_AVAILABLE,
    MQL_PROP_SUB_ID_AVAILABLE,    MQL_PROP_SHARED_SUB_AVAILABLE,
};

/* The same ids in the order a CONNACK carries them. The specification leaves the order of
 * properties open; this is the order mosquitto uses, because clients and test suites written
 * against mosquitto (its own broker tests among them) compare CONNACKs byte for byte. */
static const uint8_t connack_prop_order[] = {
    MQL_PROP_TOPIC_ALIAS_MAXIMUM,
    MQL_PROP_SERVER_KEEP_ALIVE,
    MQL_PROP_ASSIGNED_CLIENT_ID,
    MQL_PROP_AUTH_METHOD,
    MQL_PROP_AUTH_DATA,
    MQL_PROP_RETAIN_AVAILABLE,
    MQL_PROP_MAXIMUM_PACKET_SIZE,
    MQL_PROP_RECEIVE_MAXIMUM,
    MQL_PROP_MAXIMUM_QOS,
    MQL_PROP_SESSION_EXPIRY,
    MQL_PROP_WILDCARD_SUB_AVAILABLE,
    MQL_PROP_SUB_ID_AVAILABLE,
    MQL_PROP_SHARED_SUB_AVAILABLE,
    MQL_PROP_RESPONSE_INFO,
    MQL_PROP_SERVER_REFERENCE,
    MQL_PROP_REASON_STRING,
    MQL_PROP_PAYLOAD_FORMAT,
    MQL_PROP_MESSAGE_EXPIRY,
    MQL_PROP_CONTENT_TYPE,
    MQL_PROP_RESPONSE_TOPIC,
    MQL_PROP_CORRELATION_DATA,
    MQL_PROP_SUBSCRIPTION_ID,
    MQL_PROP_REQUEST_PROBLEM_INFO,
    MQL_PROP_WILL_DELAY,
    MQL_PROP_REQUEST_RESPONSE_INFO,
    MQL_PROP_TOPIC_ALIAS,
};
_Static_assert(sizeof(connack_prop_order) == sizeof(prop_order),
               "connack_prop_order lists every property once");

#define B(id) MQL_PBIT(MQL_PROP_##id)

/* Table 2-4, last column: which properties each packet (and a CONNECT's will) may carry. */
#define WILL_PROPS                                                                                 \
    (B(PAYLOAD_FORMAT) | B(MESSAGE_EXPIRY) | B(CONTENT_TYPE) | B(RESPONSE_TOPIC) |                 \
     B(CORRELATION_DATA) | B(WILL_DELAY) | B(USER))
#define ACK_PROPS (B(REASON_STRING) | B(USER))

static const uint64_t allowed_props[16] = {
    [MQL_CONNECT] = B(SESSION_EXPIRY) | B(AUTH_METHOD) | B(AUTH_DATA) | B(REQUEST_PROBLEM_INFO) |
                    B(REQUEST_RESPONSE_INFO) | B(RECEIVE_MAXIMUM) | B(TOPIC_ALIAS_MAXIMUM) |
                    B(USER) | B(MAXIMUM_PACKET_SIZE),
    [MQL_CONNACK] = B(SESSION_EXPIRY) | B(ASSIGNED_CLIENT_ID) | B(SERVER_KEEP_ALIVE) |
                    B(AUTH_METHOD) | B(AUTH_DATA) | B(RESPONSE_INFO) | B(SERVER_REFERENCE) |
                    B(REASON_STRING) | B(RECEIVE_MAXIMUM) | B(TOPIC_ALIAS_MAXIMUM) |
                    B(MAXIMUM_QOS) | B(RETAIN_AVAILABLE) | B(USER) | B(MAXIMUM_PACKET_SIZE) |
                    B(WILDCARD_SUB_AVAILABLE) | B(SUB_ID_AVAILABLE) | B(SHARED_SUB_AVAILABLE),
    [MQL_PUBLISH] = B(PAYLOAD_FORMAT) | B(MESSAGE_EXPIRY) | B(CONTENT_TYPE) | B(RESPONSE_TOPIC) |
                    B(CORRELATION_DATA) | B(SUBSCRIPTION_ID) | B(TOPIC_ALIAS) | B(USER),
    [MQL_PUBACK] = ACK_PROPS,
    [MQL_PUBREC] = ACK_PROPS,
    [MQL_PUBREL] = ACK_PROPS,
    [MQL_PUBCOMP] = ACK_PROPS,
    [MQL_SUBSCRIBE] = B(SUBSCRIPTION_ID) | B(USER),
    [MQL_SUBACK] = ACK_PROPS,
    [MQL_UNSUBSCRIBE] = B(USER),
    [MQL_UNSUBACK] = ACK_PROPS,
    [MQL_DISCONNECT] = B(SESSION_EXPIRY) | B(SERVER_REFERENCE) | B(REASON_STRING) | B(USER),
    [MQL_AUTH] = B(AUTH_METHOD) | B(AUTH_DATA) | B(REASON_STRING) | B(USER),
};

/* Fixed header flags of every type but PUBLISH: [MQTT-2.1.3-1] [v3.1.1 MQTT-2.2.2-1]. */
static const uint8_t fixed_flags[16] = {
    [MQL_PUBREL] = 0x2,
    [MQL_SUBSCRIBE] = 0x2,
    [MQL_UNSUBSCRIBE] = 0x2,
};

/* Reason codes each v5 packet may carry (tables 3-1, 3-4 .. 3-11). */
static const uint8_t rc_connack5[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                      0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                      0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
static const uint8_t rc_puback[] = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
static const uint8_t rc_pubrel[] = {0x00, 0x92};
static const uint8_t rc_suback5[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                     0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t rc_suback3[] = {0x00, 0x01, 0x02, 0x80};
static const uint8_t rc_unsuback[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
static const uint8_t rc_disconnect[] = {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
                                        0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
                                        0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
static const uint8_t rc_auth[] = {0x00, 0x18, 0x19};

static bool rc_in(const uint8_t *set, size_t n, uint8_t rc)
{
    for (size_t i = 0; i < n; i++) {
        if (set[i] == rc)
            return true;
    }
    return false;
}
#define RC_OK(set, rc) rc_in((set), sizeof(set), (rc))

/* ------------------------------------------------------------------------------------------ */
/* UTF-8, topics, VBI                                                                          */

bool mql_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            /* No byte with the high bit set and no zero byte: eight plain ASCII characters. */
            if (((w | (w - UINT64_C(0x0101010101010101))) & UINT64_C(0x8080808080808080)) == 0) {
                i += 8;
                continue;
            }
        }
        uint8_t c = p[i];
        if (c < 0x80) {
            if (c == 0)
                return false; /* U+0000 [MQTT-1.5.4-2] [v3.1.1 MQTT-1.5.3-2] */
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0xC2) {
            return false; /* stray continuation byte, or overlong C0/C1 lead */
        } else if (c < 0xE0) {
            n = 1;
        } else if (c < 0xF0) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* U+D800..U+DFFF [MQTT-1.5.4-1] */
        } else if (c < 0xF5) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* beyond U+10FFFF */
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += n + 1;
    }
    return true;
}

static bool has_wildcard(const uint8_t *p, size_t len)
{
    return len != 0 && (memchr(p, '+', len) != NULL || memchr(p, '#', len) != NULL);
}

bool mql_topic_name_valid(mql_bytes topic)
{
    /* [MQTT-4.7.3-1] non-empty, [MQTT-4.7.0-1] [v3.1.1 MQTT-4.7.1-1] no wildcards,
     * [MQTT-4.7.3-3] at most 65,535 bytes. */
    if (topic.len == 0 || topic.len > 65535)
        return false;
    return !has_wildcard(topic.p, topic.len) && mql_utf8_valid(topic.p, topic.len);
}

/* Wildcard placement of a plain filter: '#' alone in the last level [MQTT-4.7.1-1]
 * [v3.1.1 MQTT-4.7.1-2], '+' alone in its level [MQTT-4.7.1-2] [v3.1.1 MQTT-4.7.1-3]. */
static bool filter_levels_valid(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '+' && p[i] != '#')
            continue;
        bool level_start = i == 0 || p[i - 1] == '/';
        bool level_end = i + 1 == len || p[i + 1] == '/';
        if (!level_start || !level_end)
            return false;
        if (p[i] == '#' && i + 1 != len)
            return false;
    }
    return true;
}

static bool is_shared(const uint8_t *p, size_t len)
{
    return len >= 7 && memcmp(p, "$share/", 7) == 0;
}

bool mql_topic_filter_valid(mql_bytes filter)
{
    if (filter.len == 0 || filter.len > 65535 || !mql_utf8_valid(filter.p, filter.len))
        return false;
    const uint8_t *p = filter.p;
    size_t len = filter.len;
    if (is_shared(p, len)) {
        /* $share/{ShareName}/{filter} [MQTT-4.8.2-1] [MQTT-4.8.2-2] */
        const uint8_t *name = p + 7;
        const uint8_t *slash = memchr(name, '/', len - 7);
        if (slash == NULL || slash == name || has_wildcard(name, (size_t)(slash - name)))
            return false;
        p = slash + 1;
        len = (size_t)(filter.p + filter.len - p);
        if (len == 0)
            return false;
    }
    return filter_levels_valid(p, len);
}

size_t mql_vbi_size(uint32_t v)
{
    if (v < 128u)
        return 1;
    if (v < 16384u)
        return 2;
    if (v < 2097152u)
        return 3;
    if (v <= VBI_MAX)
        return 4;
    return 0;
}

size_t mql_vbi_encode(uint8_t *buf, uint32_t v)
{
    if (v > VBI_MAX)
        return 0;
    size_t n = 0;
    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        if (v != 0)
            b |= 0x80;
        buf[n++] = b;
    } while (v != 0);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Frame scanning                                                                              */

mql_scan mql_frame_scan(const uint8_t *buf, size_t len, uint32_t max_size, mql_frame *out,
                        mql_err *err)
{
    memset(out, 0, sizeof(*out));
    if (len < 2)
        return MQL_SCAN_NEED_MORE;
    uint32_t rl = 0;
    size_t i = 1;
    for (;;) {
        if (i >= len)
            return MQL_SCAN_NEED_MORE;
        uint8_t b = buf[i];
        rl |= (uint32_t)(b & 0x7F) << (7 * (i - 1));
        i++;
        if ((b & 0x80) == 0)
            break;
        if (i == 5) {
            /* A fifth Remaining Length byte would follow: at most four [MQTT-1.5.5]. */
            *err = MQL_E_MALFORMED;
            return MQL_SCAN_ERROR;
        }
    }
    out->type = buf[0] >> 4;
    out->flags = buf[0] & 0x0F;
    out->header_len = (uint8_t)i;
    out->remaining = rl;
    out->total = (uint32_t)i + rl;
    if (out->total > (max_size != 0 ? max_size : MAX_FRAME)) {
        *err = MQL_E_TOO_LARGE;
        return MQL_SCAN_ERROR;
    }
    return len >= out->total ? MQL_SCAN_COMPLETE : MQL_SCAN_NEED_MORE;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding primitives: a reader over [p, end). All return false when the bytes run out.       */

typedef struct rd {
    const uint8_t *p;
    const uint8_t *end;
} rd;

static inline size_t rd_left(const rd *r)
{
    return (size_t)(r->end - r->p);
}

static inline bool rd_u8(rd *r, uint8_t *v)
{
    if (r->p == r->end)
        return false;
    *v = *r->p++;
    return true;
}

static inline bool rd_u16(rd *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return false;
    *v = (uint16_t)((r->p[0] << 8) | r->p[1]);
    r->p += 2;
    return true;
}

static inline bool rd_u32(rd *r, uint32_t *v)
{
    if (rd_left(r) < 4)
        return false;
    *v = ((uint32_t)r->p[0] << 24) | ((uint32_t)r->p[1] << 16) | ((uint32_t)r->p[2] << 8) | r->p[3];
    r->p += 4;
    return true;
}

/* Two Byte Integer length + bytes (Binary Data, or a string before its UTF-8 check). */
static inline bool rd_bin(rd *r, mql_bytes *b)
{
    uint16_t n;
    if (!rd_u16(r, &n) || rd_left(r) < n)
        return false;
    b->p = r->p;
    b->len = n;
    r->p += n;
    return true;
}

enum { VBI_OK, VBI_SHORT, VBI_BAD };

/* Variable Byte Integer: at most four bytes and minimal [MQTT-1.5.5-1]. */
static int rd_vbi(rd *r, uint32_t *v)
{
    uint32_t val = 0;
    for (unsigned i = 0; i < 4; i++) {
        uint8_t b;
        if (!rd_u8(r, &b))
            return VBI_SHORT;
        val |= (uint32_t)(b & 0x7F) << (7 * i);
        if ((b & 0x80) == 0) {
            if (i > 0 && b == 0)
                return VBI_BAD;
            *v = val;
            return VBI_OK;
        }
    }
    return VBI_BAD;
}

/* A UTF-8 Encoded String. */
static mql_err rd_str(rd *r, mql_bytes *s, bool v5, const char *truncated, const char **why)
{
    if (!rd_bin(r, s))
        return BAD(MQL_E_MALFORMED, truncated);
    if (!mql_utf8_valid(s->p, s->len))
        return BAD(MQL_E_MALFORMED,
                   V(v5,
                     "string is not well-formed UTF-8 or contains U+0000 [MQTT-1.5.4-1] "
                     "[MQTT-1.5.4-2]",
                     "string is not well-formed UTF-8 or contains U+0000 [v3.1.1 MQTT-1.5.3-1] "
                     "[v3.1.1 MQTT-1.5.3-2]"));
    return MQL_OK;
}

static mql_err rd_pid(rd *r, uint16_t *pid, bool v5, const char **why)
{
    if (!rd_u16(r, pid))
        return BAD(MQL_E_MALFORMED, "Packet Identifier is truncated (section 2.2.1)");
    if (*pid == 0)
        return BAD(MQL_E_PROTOCOL, V(v5, "Packet Identifier is 0 [MQTT-2.2.1-3] [MQTT-2.2.1-4]",
                                     "Packet Identifier is 0 [v3.1.1 MQTT-2.3.1-1]"));
    return MQL_OK;
}

static mql_err rd_end(const rd *r, const char **why)
{
    if (r->p != r->end)
        return BAD(MQL_E_MALFORMED, "bytes left over after the last field: lengths disagree "
                                    "with the Remaining Length (section 2.1.4)");
    return MQL_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Properties                                                                                  */

static mql_err bool_byte(uint8_t v, const char *text, const char **why)
{
    return v > 1 ? BAD(MQL_E_PROTOCOL, text) : MQL_OK;
}

static mql_err dec_props_body(rd q, mql_props *pr, uint64_t allowed, bool many_sub_ids,
                              const char **why);

/* Decode a property block (Property Length + properties) of a packet that allows `allowed`.
 * `many_sub_ids`: PUBLISH may repeat the Subscription Identifier. */
static mql_err dec_props(rd *r, mql_props *pr, uint64_t allowed, bool many_sub_ids,
                         const char **why)
{
    uint32_t plen;
    int vr = rd_vbi(r, &plen);
    if (vr == VBI_SHORT)
        return BAD(MQL_E_MALFORMED, "Property Length is truncated (section 2.2.2.1)");
    if (vr == VBI_BAD)
        return BAD(MQL_E_MALFORMED,
                   "Property Length is not a minimal Variable Byte Integer [MQTT-1.5.5-1]");
    if (plen > rd_left(r))
        return BAD(MQL_E_MALFORMED, "Property Length runs past the end of the packet "
                                    "(section 2.2.2.1)");
    rd q = {r->p, r->p + plen};
    r->p += plen;
    return dec_props_body(q, pr, allowed, many_sub_ids, why);
}

/* The properties themselves, [q.p, q.end). */
static mql_err dec_props_body(rd q, mql_props *pr, uint64_t allowed, bool many_sub_ids,
                              const char **why)
{
    pr->raw.p = q.p;
    pr->raw.len = (uint32_t)(q.end - q.p);
    while (q.p != q.end) {
        uint8_t id = *q.p++;
        /* All identifiers are one byte; a byte >= 0x80 starts an identifier no table has. */
        uint8_t t = id < sizeof(prop_type) ? prop_type[id] : PT_NONE;
        if (t == PT_NONE)
            return BAD(MQL_E_MALFORMED, "unknown property identifier (section 2.2.2.2)");
        uint64_t bit = MQL_PBIT(id);
        if ((allowed & bit) == 0)
            return BAD(MQL_E_MALFORMED, "property is not valid for this packet type "
                                        "(section 2.2.2.2)");
        if ((pr->present & bit) != 0 && id != MQL_PROP_USER &&
            !(id == MQL_PROP_SUBSCRIPTION_ID && many_sub_ids))
            return BAD(MQL_E_PROTOCOL, "property included more than once (it is a Protocol "
                                       "Error to include it more than once, section 3)");
        pr->present |= bit;

        uint8_t u8 = 0;
        uint16_t u16 = 0;
        uint32_t u32 = 0;
        mql_bytes s = {0};
        mql_bytes v = {0};
        bool ok = true;
        switch (t) {
        case PT_BYTE:
            ok = rd_u8(&q, &u8);
            break;
        case PT_U16:
            ok = rd_u16(&q, &u16);
            break;
        case PT_U32:
            ok = rd_u32(&q, &u32);
            break;
        case PT_VBI: {
            int vr = rd_vbi(&q, &u32);
            if (vr == VBI_BAD)
                return BAD(MQL_E_MALFORMED, "property value is not a minimal Variable Byte "
                                            "Integer [MQTT-1.5.5-1]");
            ok = vr == VBI_OK;
            break;
        }
        case PT_BIN:
            ok = rd_bin(&q, &s);
            break;
        case PT_STR:
            TRY(rd_str(&q, &s, true, "property value is truncated (section 2.2.2.2)", why));
            break;
        default: /* PT_PAIR */
            TRY(rd_str(&q, &s, true, "property value is truncated (section 2.2.2.2)", why));
            TRY(rd_str(&q, &v, true, "property value is truncated (section 2.2.2.2)", why));
            break;
        }
        if (!ok)
            return BAD(MQL_E_MALFORMED, "property value is truncated (section 2.2.2.2)");

        switch (id) {
        case MQL_PROP_PAYLOAD_FORMAT:
            TRY(bool_byte(u8, "Payload Format Indicator is not 0 or 1 (section 3.3.2.3.2)", why));
            pr->payload_format = u8;
            break;
        case MQL_PROP_MESSAGE_EXPIRY:
            pr->message_expiry = u32;
            break;
        case MQL_PROP_CONTENT_TYPE:
            pr->content_type = s;
            break;
        case MQL_PROP_RESPONSE_TOPIC:
            if (s.len == 0 || has_wildcard(s.p, s.len))
                return BAD(MQL_E_PROTOCOL, "Response Topic is empty or contains wildcards "
                                           "[MQTT-3.3.2-14] [MQTT-4.7.3-1]");
            pr->response_topic = s;
            break;
        case MQL_PROP_CORRELATION_DATA:
            pr->correlation_data = s;
            break;
        case MQL_PROP_SUBSCRIPTION_ID:
            if (u32 == 0)
                return BAD(MQL_E_PROTOCOL, "Subscription Identifier is 0 (section 3.3.2.3.8, "
                                           "3.8.2.1.2)");
            if (pr->n_sub_ids == 0)
                pr->sub_id = u32;
            pr->n_sub_ids++;
            break;
        case MQL_PROP_SESSION_EXPIRY:
            pr->session_expiry = u32;
            break;
        case MQL_PROP_ASSIGNED_CLIENT_ID:
            pr->assigned_client_id = s;
            break;
        case MQL_PROP_SERVER_KEEP_ALIVE:
            pr->server_keep_alive = u16;
            break;
        case MQL_PROP_AUTH_METHOD:
            pr->auth_method = s;
            break;
        case MQL_PROP_AUTH_DATA:
            pr->auth_data = s;
            break;
        case MQL_PROP_REQUEST_PROBLEM_INFO:
            TRY(bool_byte(u8, "Request Problem Information is not 0 or 1 (section 3.1.2.11.7)",
                          why));
            pr->request_problem_info = u8;
            break;
        case MQL_PROP_WILL_DELAY:
            pr->will_delay = u32;
            break;
        case MQL_PROP_REQUEST_RESPONSE_INFO:
            TRY(bool_byte(u8, "Request Response Information is not 0 or 1 (section 3.1.2.11.6)",
                          why));
            pr->request_response_info = u8;
            break;
        case MQL_PROP_RESPONSE_INFO:
            pr->response_info = s;
            break;
        case MQL_PROP_SERVER_REFERENCE:
            pr->server_reference = s;
            break;
        case MQL_PROP_REASON_STRING:
            pr->reason_string = s;
            break;
        case MQL_PROP_RECEIVE_MAXIMUM:
            if (u16 == 0)
                return BAD(MQL_E_PROTOCOL, "Receive Maximum is 0 (section 3.1.2.11.3, 3.2.2.3.3)");
            pr->receive_maximum = u16;
            break;
        case MQL_PROP_TOPIC_ALIAS_MAXIMUM:
            pr->topic_alias_maximum = u16;
            break;
        case MQL_PROP_TOPIC_ALIAS:
            if (u16 == 0)
                return BAD(MQL_E_TOPIC_ALIAS_INVALID, "Topic Alias is 0 [MQTT-3.3.2-8] "
                                                      "(section 3.3.4)");
            pr->topic_alias = u16;
            break;
        case MQL_PROP_MAXIMUM_QOS:
            TRY(bool_byte(u8, "Maximum QoS is not 0 or 1 (section 3.2.2.3.4)", why));
            pr->maximum_qos = u8;
            break;
        case MQL_PROP_RETAIN_AVAILABLE:
            TRY(bool_byte(u8, "Retain Available is not 0 or 1 (section 3.2.2.3.5)", why));
            pr->retain_available = u8;
            break;
        case MQL_PROP_USER:
            pr->n_user++;
            break;
        case MQL_PROP_MAXIMUM_PACKET_SIZE:
            if (u32 == 0)
                return BAD(MQL_E_PROTOCOL, "Maximum Packet Size is 0 (section 3.1.2.11.4, "
                                           "3.2.2.3.6)");
            pr->maximum_packet_size = u32;
            break;
        case MQL_PROP_WILDCARD_SUB_AVAILABLE:
            TRY(bool_byte(u8, "Wildcard Subscription Available is not 0 or 1 (section 3.2.2.3.11)",
                          why));
            pr->wildcard_sub_available = u8;
            break;
        case MQL_PROP_SUB_ID_AVAILABLE:
            TRY(bool_byte(
                u8, "Subscription Identifier Available is not 0 or 1 (section 3.2.2.3.12)", why));
            pr->sub_id_available = u8;
            break;
        default: /* MQL_PROP_SHARED_SUB_AVAILABLE */
            TRY(bool_byte(u8, "Shared Subscription Available is not 0 or 1 (section 3.2.2.3.13)",
                          why));
            pr->shared_sub_available = u8;
            break;
        }
    }
    return MQL_OK;
}

/* Skip one property of a validated block; fills key/val for user properties and *num for
 * Subscription Identifiers. Bounds-checked so a hand-made block cannot make it overread. */
static bool next_prop(rd *q, uint8_t *id, mql_bytes *key, mql_bytes *val, uint32_t *num)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    mql_bytes s;
    if (!rd_u8(q, id) || *id >= sizeof(prop_type))
        return false;
    switch (prop_type[*id]) {
    case PT_BYTE:
        return rd_u8(q, &u8);
    case PT_U16:
        return rd_u16(q, &u16);
    case PT_U32:
        return rd_u32(q, &u32);
    case PT_VBI:
        return rd_vbi(q, num) == VBI_OK;
    case PT_STR:
    case PT_BIN:
        return rd_bin(q, &s);
    case PT_PAIR:
        return rd_bin(q, key) && rd_bin(q, val);
    default:
        return false;
    }
}

bool mql_props_next_user(const mql_props *props, uint32_t *pos, mql_bytes *key, mql_bytes *val)
{
    if (*pos >= props->raw.len)
        return false;
    rd q = {props->raw.p + *pos, props->raw.p + props->raw.len};
    uint8_t id;
    uint32_t num;
    while (q.p != q.end) {
        if (!next_prop(&q, &id, key, val, &num))
            break;
        if (id == MQL_PROP_USER) {
            *pos = (uint32_t)(q.p - props->raw.p);
            return true;
        }
    }
    *pos = props->raw.len;
    return false;
}

bool mql_props_next_sub_id(const mql_props *props, uint32_t *pos, uint32_t *id_out)
{
    if (*pos >= props->raw.len)
        return false;
    rd q = {props->raw.p + *pos, props->raw.p + props->raw.len};
    uint8_t id;
    mql_bytes key, val;
    while (q.p != q.end) {
        if (!next_prop(&q, &id, &key, &val, id_out))
            break;
        if (id == MQL_PROP_SUBSCRIPTION_ID) {
            *pos = (uint32_t)(q.p - props->raw.p);
            return true;
        }
    }
    *pos = props->raw.len;
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding, one function per packet                                                           */

static bool bytes_eq(mql_bytes b, const char *s, size_t n)
{
    return b.len == n && memcmp(b.p, s, n) == 0;
}

static mql_err dec_connect(rd *r, uint8_t flags, bool rl_minimal, mql_connect *c, const char **why)
{
    if (flags != 0)
        return BAD(MQL_E_MALFORMED,
                   "CONNECT fixed header flags are not 0 [MQTT-2.1.3-1] [v3.1.1 MQTT-2.2.2-1]");
    if (!rd_bin(r, &c->protocol_name) || !rd_u8(r, &c->version))
        return BAD(MQL_E_MALFORMED, "CONNECT Protocol Name or Level is truncated (section 3.1.2)");
    bool mqtt = bytes_eq(c->protocol_name, "MQTT", 4);
    bool isdp = bytes_eq(c->protocol_name, "MQIsdp", 6);
    /* Not in either specification: bridges of mosquitto (and ours, try_private) announce
     * themselves with the top bit of a 3.1 / 3.1.1 Protocol Level, as mosquitto accepts. */
    if ((c->version == (0x80 | MQL_V311) || c->version == (0x80 | MQL_V31))) {
        c->bridge = true;
        c->version &= 0x7F;
    }
    if (!mqtt && !isdp)
        return BAD(MQL_E_BAD_VERSION,
                   "CONNECT Protocol Name is not \"MQTT\" [MQTT-3.1.2-1] [v3.1.1 MQTT-3.1.2-1]");
    if (!(mqtt && (c->version == MQL_V311 || c->version == MQL_V5)) &&
        !(isdp && c->version == MQL_V31))
        return BAD(MQL_E_BAD_VERSION,
                   "CONNECT Protocol Level is not supported [MQTT-3.1.2-2] [v3.1.1 MQTT-3.1.2-2]");
    bool v5 = c->version == MQL_V5;
    if (v5 && !rl_minimal)
        return BAD(MQL_E_MALFORMED, "Remaining Length is not minimal [MQTT-1.5.5-1]");

    uint8_t cf;
    if (!rd_u8(r, &cf) || !rd_u16(r, &c->keep_alive))
        return BAD(MQL_E_MALFORMED, "CONNECT variable header is truncated (section 3.1.2)");
    if (cf & 0x01)
        return BAD(MQL_E_MALFORMED, V(v5, "CONNECT reserved flag is set [MQTT-3.1.2-3]",
                                      "CONNECT reserved flag is set [v3.1.1 MQTT-3.1.2-3]"));
    c->clean_start = (cf & 0x02) != 0;
    c->will = (cf & 0x04) != 0;
    c->will_qos = (cf >> 3) & 0x03;
    c->will_retain = (cf & 0x20) != 0;
    c->has_password = (cf & 0x40) != 0;
    c->has_username = (cf & 0x80) != 0;
    if (!c->will && c->will_qos != 0)
        return BAD(MQL_E_MALFORMED,
                   V(v5, "Will QoS is not 0 while the Will Flag is 0 [MQTT-3.1.2-11]",
                     "Will QoS is not 0 while the Will Flag is 0 [v3.1.1 MQTT-3.1.2-13]"));
    if (!c->will && c->will_retain)
        return BAD(MQL_E_MALFORMED,
                   V(v5, "Will Retain is set while the Will Flag is 0 [MQTT-3.1.2-13]",
                     "Will Retain is set while the Will Flag is 0 [v3.1.1 MQTT-3.1.2-15]"));
    if (c->will_qos == 3)
        return BAD(MQL_E_MALFORMED,
                   V(v5, "Will QoS is 3 [MQTT-3.1.2-12]", "Will QoS is 3 [v3.1.1 MQTT-3.1.2-14]"));
    if (!v5 && c->has_password && !c->has_username)
        return BAD(MQL_E_MALFORMED,
                   "Password Flag is set without the User Name Flag [v3.1.1 MQTT-3.1.2-22]");

    if (v5) {
        TRY(dec_props(r, &c->props, allowed_props[MQL_CONNECT], false, why));
        if ((c->props.present & B(AUTH_DATA)) && !(c->props.present & B(AUTH_METHOD)))
            return BAD(MQL_E_PROTOCOL, "Authentication Data without Authentication Method "
                                       "(section 3.1.2.11.10)");
    }

    /* Payload: Client Identifier, [Will Properties, Will Topic, Will Payload], [User Name],
     * [Password] [MQTT-3.1.3-1] [v3.1.1 MQTT-3.1.3-1]. */
    TRY(rd_str(r, &c->client_id, v5,
               V(v5, "CONNECT Client Identifier is missing [MQTT-3.1.3-3]",
                 "CONNECT Client Identifier is missing [v3.1.1 MQTT-3.1.3-3]"),
               why));
    if (c->will) {
        if (v5)
            TRY(dec_props(r, &c->will_props, WILL_PROPS, false, why));
        TRY(rd_str(r, &c->will_topic, v5,
                   V(v5, "CONNECT Will Topic is missing [MQTT-3.1.2-9]",
                     "CONNECT Will Topic is missing [v3.1.1 MQTT-3.1.2-9]"),
                   why));
        if (c->will_topic.len == 0 || has_wildcard(c->will_topic.p, c->will_topic.len))
            return BAD(MQL_E_TOPIC_NAME_INVALID,
                       V(v5,
                         "Will Topic is empty or contains wildcards [MQTT-4.7.3-1] "
                         "[MQTT-4.7.0-1]",
                         "Will Topic is empty or contains wildcards [v3.1.1 MQTT-4.7.3-1] "
                         "[v3.1.1 MQTT-4.7.1-1]"));
        if (!rd_bin(r, &c->will_payload))
            return BAD(MQL_E_MALFORMED, V(v5, "CONNECT Will Payload is missing [MQTT-3.1.2-9]",
                                          "CONNECT Will Message is missing [v3.1.1 MQTT-3.1.2-9]"));
    }
    if (c->has_username)
        TRY(rd_str(r, &c->username, v5,
                   V(v5, "CONNECT User Name is missing [MQTT-3.1.2-17]",
                     "CONNECT User Name is missing [v3.1.1 MQTT-3.1.2-19]"),
                   why));
    if (c->has_password && !rd_bin(r, &c->password))
        return BAD(MQL_E_MALFORMED, V(v5, "CONNECT Password is missing [MQTT-3.1.2-19]",
                                      "CONNECT Password is missing [v3.1.1 MQTT-3.1.2-21]"));
    return rd_end(r, why);
}

static mql_err dec_connack(rd *r, bool v5, mql_connack *c, const char **why)
{
    uint8_t af;
    if (!rd_u8(r, &af) || !rd_u8(r, &c->reason))
        return BAD(MQL_E_MALFORMED, "CONNACK variable header is truncated (section 3.2.2)");
    if (af & 0xFE)
        return BAD(MQL_E_MALFORMED,
                   V(v5, "CONNACK Acknowledge Flags bits 7-1 are not 0 [MQTT-3.2.2-1]",
                     "CONNACK Acknowledge Flags bits 7-1 are not 0 (section 3.2.2.1)"));
    c->session_present = af & 0x01;
    if (v5) {
        if (!RC_OK(rc_connack5, c->reason))
            return BAD(MQL_E_PROTOCOL, "CONNACK Reason Code is not in table 3-1 "
                                       "(section 3.2.2.2)");
        TRY(dec_props(r, &c->props, allowed_props[MQL_CONNACK], false, why));
    } else if (c->reason > 5) {
        return BAD(MQL_E_PROTOCOL, "CONNACK return code is reserved (section 3.2.2.3)");
    }
    return rd_end(r, why);
}

static mql_err dec_publish(rd *r, uint8_t flags, bool v5, mql_publish *p, const char **why)
{
    p->retain = flags & 0x01;
    p->qos = (flags >> 1) & 0x03;
    p->dup = (flags & 0x08) != 0;
    if (p->qos == 3)
        return BAD(MQL_E_MALFORMED, V(v5, "PUBLISH QoS is 3 [MQTT-3.3.1-4]",
                                      "PUBLISH QoS is 3 [v3.1.1 MQTT-3.3.1-4]"));
    if (p->dup && p->qos == 0)
        return BAD(MQL_E_MALFORMED, V(v5, "PUBLISH DUP is set with QoS 0 [MQTT-3.3.1-2]",
                                      "PUBLISH DUP is set with QoS 0 [v3.1.1 MQTT-3.3.1-2]"));
    TRY(rd_str(r, &p->topic, v5,
               V(v5, "PUBLISH Topic Name is missing [MQTT-3.3.2-1]",
                 "PUBLISH Topic Name is missing [v3.1.1 MQTT-3.3.2-1]"),
               why));
    if (has_wildcard(p->topic.p, p->topic.len))
        return BAD(MQL_E_TOPIC_NAME_INVALID,
                   V(v5, "PUBLISH Topic Name contains wildcards [MQTT-3.3.2-2]",
                     "PUBLISH Topic Name contains wildcards [v3.1.1 MQTT-3.3.2-2]"));
    if (p->qos > 0)
        TRY(rd_pid(r, &p->packet_id, v5, why));
    if (v5) {
        TRY(dec_props(r, &p->props, allowed_props[MQL_PUBLISH], true, why));
        if (p->topic.len == 0 && !(p->props.present & B(TOPIC_ALIAS)))
            return BAD(MQL_E_PROTOCOL, "PUBLISH Topic Name is empty and there is no Topic Alias "
                                       "(section 3.3.2.1)");
    } else if (p->topic.len == 0) {
        return BAD(MQL_E_TOPIC_NAME_INVALID, "PUBLISH Topic Name is empty [v3.1.1 MQTT-4.7.3-1]");
    }
    p->payload.p = r->p;
    p->payload.len = (uint32_t)rd_left(r);
    return MQL_OK;
}

static mql_err dec_ack(rd *r, uint8_t type, bool v5, mql_ack *a, const char **why)
{
    TRY(rd_pid(r, &a->packet_id, v5, why));
    if (!v5)
        return rd_end(r, why);
    /* Remaining Length 2: reason 0, no properties; 3: no Property Length (section 3.4.2.1). */
    if (rd_u8(r, &a->reason) && r->p != r->end)
        TRY(dec_props(r, &a->props, ACK_PROPS, false, why));
    bool ok = type == MQL_PUBACK || type == MQL_PUBREC ? RC_OK(rc_puback, a->reason)
                                                       : RC_OK(rc_pubrel, a->reason);
    if (!ok) {
        static const char *const text[] = {
            "PUBACK Reason Code is not in table 3-4 [MQTT-3.4.2-1]",
            "PUBREC Reason Code is not in table 3-5 [MQTT-3.5.2-1]",
            "PUBREL Reason Code is not in table 3-6 [MQTT-3.6.2-1]",
            "PUBCOMP Reason Code is not in table 3-7 [MQTT-3.7.2-1]",
        };
        return BAD(MQL_E_PROTOCOL, text[type - MQL_PUBACK]);
    }
    return rd_end(r, why);
}

static mql_err dec_subscribe(rd *r, bool v5, mql_subscribe *s, const char **why)
{
    TRY(rd_pid(r, &s->packet_id, v5, why));
    if (v5)
        TRY(dec_props(r, &s->props, allowed_props[MQL_SUBSCRIBE], false, why));
    s->raw.p = r->p;
    s->raw.len = (uint32_t)rd_left(r);
    while (r->p != r->end) {
        mql_bytes f;
        uint8_t o;
        TRY(rd_str(r, &f, v5,
                   V(v5, "SUBSCRIBE Topic Filter is truncated [MQTT-3.8.3-1]",
                     "SUBSCRIBE Topic Filter is truncated [v3.1.1 MQTT-3.8.3-1]"),
                   why));
        if (!rd_u8(r, &o))
            return BAD(MQL_E_MALFORMED, "SUBSCRIBE options byte is missing (section 3.8.3)");
        if (v5) {
            if (o & 0xC0)
                return BAD(MQL_E_MALFORMED,
                           "SUBSCRIBE options reserved bits are not 0 [MQTT-3.8.3-5]");
            if ((o & 0x03) == 3)
                return BAD(MQL_E_PROTOCOL, "SUBSCRIBE Maximum QoS is 3 (section 3.8.3.1)");
            if (((o >> 4) & 0x03) == 3)
                return BAD(MQL_E_PROTOCOL, "SUBSCRIBE Retain Handling is 3 (section 3.8.3.1)");
            if ((o & 0x04) && is_shared(f.p, f.len))
                return BAD(MQL_E_PROTOCOL,
                           "No Local is set on a Shared Subscription [MQTT-3.8.3-4]");
        } else if ((o & 0xFC) || o == 3) {
            /* The 3.1.1 text spells this id "MQTT-3-8.3-4". */
            return BAD(MQL_E_MALFORMED, "SUBSCRIBE Requested QoS reserved bits are set or QoS is 3 "
                                        "[v3.1.1 MQTT-3.8.3-4]");
        }
        s->count++;
    }
    if (s->count == 0)
        return BAD(MQL_E_PROTOCOL, V(v5, "SUBSCRIBE has no Topic Filter [MQTT-3.8.3-2]",
                                     "SUBSCRIBE has no Topic Filter [v3.1.1 MQTT-3.8.3-3]"));
    return MQL_OK;
}

static mql_err dec_suback(rd *r, uint8_t type, bool v5, mql_suback *s, const char **why)
{
    TRY(rd_pid(r, &s->packet_id, v5, why));
    if (type == MQL_UNSUBACK && !v5)
        return rd_end(r, why);
    if (v5)
        TRY(dec_props(r, &s->props, ACK_PROPS, false, why));
    s->codes = r->p;
    s->count = (uint32_t)rd_left(r);
    if (s->count == 0)
        return BAD(MQL_E_PROTOCOL, type == MQL_SUBACK
                                       ? V(v5, "SUBACK has no Reason Code [MQTT-3.9.3-1]",
                                           "SUBACK has no return code [v3.1.1 MQTT-3.9.3-1]")
                                       : "UNSUBACK has no Reason Code [MQTT-3.11.3-1]");
    for (uint32_t i = 0; i < s->count; i++) {
        uint8_t rc = s->codes[i];
        if (type == MQL_UNSUBACK) {
            if (!RC_OK(rc_unsuback, rc))
                return BAD(MQL_E_PROTOCOL, "UNSUBACK Reason Code is not in table 3-9 "
                                           "[MQTT-3.11.3-2]");
        } else if (v5 ? !RC_OK(rc_suback5, rc) : !RC_OK(rc_suback3, rc)) {
            return BAD(MQL_E_PROTOCOL,
                       V(v5, "SUBACK Reason Code is not in table 3-8 [MQTT-3.9.3-2]",
                         "SUBACK return code is reserved [v3.1.1 MQTT-3.9.3-2]"));
        }
    }
    r->p = r->end;
    return MQL_OK;
}

static mql_err dec_unsubscribe(rd *r, bool v5, mql_unsubscribe *u, const char **why)
{
    TRY(rd_pid(r, &u->packet_id, v5, why));
    if (v5)
        TRY(dec_props(r, &u->props, allowed_props[MQL_UNSUBSCRIBE], false, why));
    u->raw.p = r->p;
    u->raw.len = (uint32_t)rd_left(r);
    while (r->p != r->end) {
        mql_bytes f;
        TRY(rd_str(r, &f, v5,
                   V(v5, "UNSUBSCRIBE Topic Filter is truncated [MQTT-3.10.3-1]",
                     "UNSUBSCRIBE Topic Filter is truncated [v3.1.1 MQTT-3.10.3-1]"),
                   why));
        u->count++;
    }
    if (u->count == 0)
        return BAD(MQL_E_PROTOCOL, V(v5, "UNSUBSCRIBE has no Topic Filter [MQTT-3.10.3-2]",
                                     "UNSUBSCRIBE has no Topic Filter [v3.1.1 MQTT-3.10.3-2]"));
    return MQL_OK;
}

/* DISCONNECT and AUTH: Remaining Length 0 means reason 0 and no properties; 1 means no
 * Property Length (sections 3.14.2, 3.15.2). */
static mql_err dec_disconnect(rd *r, uint8_t type, bool v5, mql_disconnect *d, const char **why)
{
    bool empty = r->p == r->end;
    if (!v5)
        return empty ? MQL_OK
                     : BAD(MQL_E_MALFORMED, "DISCONNECT Remaining Length is not 0 (section 3.14)");
    if (rd_u8(r, &d->reason) && r->p != r->end)
        TRY(dec_props(r, &d->props, allowed_props[type], false, why));
    if (type == MQL_DISCONNECT) {
        if (!RC_OK(rc_disconnect, d->reason))
            return BAD(MQL_E_PROTOCOL, "DISCONNECT Reason Code is not in table 3-10 "
                                       "[MQTT-3.14.2-1]");
    } else {
        if (!RC_OK(rc_auth, d->reason))
            return BAD(MQL_E_PROTOCOL, "AUTH Reason Code is not in table 3-11 [MQTT-3.15.2-1]");
        if (!empty && !(d->props.present & B(AUTH_METHOD)))
            return BAD(MQL_E_PROTOCOL, "AUTH has no Authentication Method (section 3.15.2.2.2)");
    }
    return rd_end(r, why);
}

mql_err mql_decode(const uint8_t *frame, size_t len, uint8_t version, mql_packet *out,
                   const char **why)
{
    const char *why_unused;
    if (why == NULL)
        why = &why_unused;
    *why = NULL;
    memset(out, 0, sizeof(*out));
    if (len < 2)
        return BAD(MQL_E_MALFORMED, "frame is shorter than a fixed header (section 2.1.1)");

    uint8_t type = frame[0] >> 4;
    uint8_t flags = frame[0] & 0x0F;
    out->type = type;
    uint32_t rl = 0;
    size_t hl = 1;
    for (;;) {
        if (hl >= len)
            return BAD(MQL_E_MALFORMED, "Remaining Length is truncated (section 2.1.4)");
        uint8_t b = frame[hl];
        rl |= (uint32_t)(b & 0x7F) << (7 * (hl - 1));
        hl++;
        if ((b & 0x80) == 0)
            break;
        if (hl == 5)
            return BAD(MQL_E_MALFORMED, "Remaining Length is longer than four bytes "
                                        "(section 1.5.5)");
    }
    bool rl_minimal = hl == 2 || frame[hl - 1] != 0;
    if ((size_t)rl != len - hl)
        return BAD(MQL_E_MALFORMED, "frame size disagrees with its Remaining Length "
                                    "(section 2.1.4)");
    rd r = {frame + hl, frame + len};

    if (type == MQL_CONNECT)
        return dec_connect(&r, flags, rl_minimal, &out->u.connect, why);

    bool v5;
    if (version == MQL_V5)
        v5 = true;
    else if (version == MQL_V311 || version == MQL_V31)
        v5 = false;
    else
        return BAD(MQL_E_PROTOCOL, "first packet is not CONNECT [MQTT-3.1.0-1] "
                                   "[v3.1.1 MQTT-3.1.0-1]");
    if (v5 && !rl_minimal)
        return BAD(MQL_E_MALFORMED, "Remaining Length is not minimal [MQTT-1.5.5-1]");
    if (type == 0 || (type == MQL_AUTH && !v5))
        return BAD(MQL_E_MALFORMED, V(v5, "packet type 0 is reserved (section 2.1.2)",
                                      "packet type 0 and 15 are reserved (section 2.2.1)"));
    /* MQTT 3.1 (section 2.1, DUP) lets a re-sent PUBREL, SUBSCRIBE or UNSUBSCRIBE carry
     * DUP 1, which 3.1.1 reserves: accept it from 3.1 clients only */
    bool v31_dup = version == MQL_V31 && flags == (fixed_flags[type] | 0x08) &&
                   (type == MQL_PUBREL || type == MQL_SUBSCRIBE || type == MQL_UNSUBSCRIBE);
    if (type != MQL_PUBLISH && flags != fixed_flags[type] && !v31_dup)
        return BAD(MQL_E_MALFORMED,
                   V(v5, "fixed header flags differ from table 2-2 [MQTT-2.1.3-1]",
                     "fixed header flags differ from table 2.2 [v3.1.1 MQTT-2.2.2-1] "
                     "[v3.1.1 MQTT-2.2.2-2]"));

    switch (type) {
    case MQL_CONNACK:
        return dec_connack(&r, v5, &out->u.connack, why);
    case MQL_PUBLISH:
        return dec_publish(&r, flags, v5, &out->u.publish, why);
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
        return dec_ack(&r, type, v5, &out->u.ack, why);
    case MQL_SUBSCRIBE:
        return dec_subscribe(&r, v5, &out->u.subscribe, why);
    case MQL_SUBACK:
    case MQL_UNSUBACK:
        return dec_suback(&r, type, v5, &out->u.suback, why);
    case MQL_UNSUBSCRIBE:
        return dec_unsubscribe(&r, v5, &out->u.unsubscribe, why);
    case MQL_PINGREQ:
    case MQL_PINGRESP:
        return r.p == r.end ? MQL_OK
                            : BAD(MQL_E_MALFORMED, "PINGREQ/PINGRESP Remaining Length is not 0 "
                                                   "(section 3.12, 3.13)");
    default: /* MQL_DISCONNECT, MQL_AUTH */
        return dec_disconnect(&r, type, v5, &out->u.disconnect, why);
    }
}

bool mql_subscribe_next(const mql_subscribe *sub, uint8_t version, uint32_t *pos,
                        mql_sub_entry *out)
{
    if (*pos >= sub->raw.len)
        return false;
    rd r = {sub->raw.p + *pos, sub->raw.p + sub->raw.len};
    uint8_t o;
    if (!rd_bin(&r, &out->filter) || !rd_u8(&r, &o)) {
        *pos = sub->raw.len;
        return false;
    }
    *pos = (uint32_t)(r.p - sub->raw.p);
    out->qos = o & 0x03;
    bool v5 = version == MQL_V5;
    out->no_local = v5 && (o & 0x04) != 0;
    out->retain_as_published = v5 && (o & 0x08) != 0;
    out->retain_handling = v5 ? (o >> 4) & 0x03 : 0;
    return true;
}

bool mql_unsubscribe_next(const mql_unsubscribe *unsub, uint32_t *pos, mql_bytes *filter)
{
    if (*pos >= unsub->raw.len)
        return false;
    rd r = {unsub->raw.p + *pos, unsub->raw.p + unsub->raw.len};
    if (!rd_bin(&r, filter)) {
        *pos = unsub->raw.len;
        return false;
    }
    *pos = (uint32_t)(r.p - unsub->raw.p);
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding: a writer that only counts while p is NULL                                        */

typedef struct wr {
    uint8_t *p;
    uint64_t n; /* 64 bits so that sizing cannot wrap on 32-bit targets */
} wr;

static inline void put_u8(wr *w, uint8_t v)
{
    if (w->p)
        w->p[w->n] = v;
    w->n++;
}

static inline void put_u16(wr *w, uint16_t v)
{
    put_u8(w, (uint8_t)(v >> 8));
    put_u8(w, (uint8_t)v);
}

static inline void put_u32(wr *w, uint32_t v)
{
    put_u16(w, (uint16_t)(v >> 16));
    put_u16(w, (uint16_t)v);
}

static inline void put_raw(wr *w, const uint8_t *src, size_t len)
{
    if (w->p && len != 0)
        memcpy(w->p + w->n, src, len);
    w->n += len;
}

static inline bool put_bytes(wr *w, mql_bytes b)
{
    if (b.len > 65535)
        return false;
    put_u16(w, (uint16_t)b.len);
    put_raw(w, b.p, b.len);
    return true;
}

static inline bool put_vbi(wr *w, uint64_t v)
{
    if (v > VBI_MAX)
        return false;
    if (w->p)
        w->n += mql_vbi_encode(w->p + w->n, (uint32_t)v);
    else
        w->n += mql_vbi_size((uint32_t)v);
    return true;
}

/* The properties themselves (no Property Length), in prop_order (connack_prop_order for a
 * CONNACK, the only packet whose properties are allowed_props[MQL_CONNACK]). */
static bool put_props_body(wr *w, const mql_props *pr, uint64_t allowed)
{
    uint64_t m = pr->present & allowed;
    const uint8_t *order = allowed == allowed_props[MQL_CONNACK] ? connack_prop_order : prop_order;
    for (size_t i = 0; m != 0 && i < sizeof(prop_order); i++) {
        uint8_t id = order[i];
        if ((m & MQL_PBIT(id)) == 0)
            continue;
        m &= ~MQL_PBIT(id);
        bool ok = true;
        if (id == MQL_PROP_SUBSCRIPTION_ID) {
            uint32_t n = pr->sub_ids ? pr->n_sub_ids : 1;
            for (uint32_t k = 0; k < n && ok; k++) {
                put_u8(w, id);
                ok = put_vbi(w, pr->sub_ids ? pr->sub_ids[k] : pr->sub_id);
            }
            if (!ok)
                return false;
            continue;
        }
        put_u8(w, id);
        switch (id) {
        case MQL_PROP_PAYLOAD_FORMAT:
            put_u8(w, pr->payload_format);
            break;
        case MQL_PROP_MESSAGE_EXPIRY:
            put_u32(w, pr->message_expiry);
            break;
        case MQL_PROP_CONTENT_TYPE:
            ok = put_bytes(w, pr->content_type);
            break;
        case MQL_PROP_RESPONSE_TOPIC:
            ok = put_bytes(w, pr->response_topic);
            break;
        case MQL_PROP_CORRELATION_DATA:
            ok = put_bytes(w, pr->correlation_data);
            break;
        case MQL_PROP_SESSION_EXPIRY:
            put_u32(w, pr->session_expiry);
            break;
        case MQL_PROP_ASSIGNED_CLIENT_ID:
            ok = put_bytes(w, pr->assigned_client_id);
            break;
        case MQL_PROP_SERVER_KEEP_ALIVE:
            put_u16(w, pr->server_keep_alive);
            break;
        case MQL_PROP_AUTH_METHOD:
            ok = put_bytes(w, pr->auth_method);
            break;
        case MQL_PROP_AUTH_DATA:
            ok = put_bytes(w, pr->auth_data);
            break;
        case MQL_PROP_REQUEST_PROBLEM_INFO:
            put_u8(w, pr->request_problem_info);
            break;
        case MQL_PROP_WILL_DELAY:
            put_u32(w, pr->will_delay);
            break;
        case MQL_PROP_REQUEST_RESPONSE_INFO:
            put_u8(w, pr->request_response_info);
            break;
        case MQL_PROP_RESPONSE_INFO:
            ok = put_bytes(w, pr->response_info);
            break;
        case MQL_PROP_SERVER_REFERENCE:
            ok = put_bytes(w, pr->server_reference);
            break;
        case MQL_PROP_REASON_STRING:
            ok = put_bytes(w, pr->reason_string);
            break;
        case MQL_PROP_RECEIVE_MAXIMUM:
            put_u16(w, pr->receive_maximum);
            break;
        case MQL_PROP_TOPIC_ALIAS_MAXIMUM:
            put_u16(w, pr->topic_alias_maximum);
            break;
        case MQL_PROP_TOPIC_ALIAS:
            put_u16(w, pr->topic_alias);
            break;
        case MQL_PROP_MAXIMUM_QOS:
            put_u8(w, pr->maximum_qos);
            break;
        case MQL_PROP_RETAIN_AVAILABLE:
            put_u8(w, pr->retain_available);
            break;
        case MQL_PROP_MAXIMUM_PACKET_SIZE:
            put_u32(w, pr->maximum_packet_size);
            break;
        case MQL_PROP_WILDCARD_SUB_AVAILABLE:
            put_u8(w, pr->wildcard_sub_available);
            break;
        case MQL_PROP_SUB_ID_AVAILABLE:
            put_u8(w, pr->sub_id_available);
            break;
        default: /* MQL_PROP_SHARED_SUB_AVAILABLE */
            put_u8(w, pr->shared_sub_available);
            break;
        }
        if (!ok)
            return false;
    }
    if ((allowed & B(USER)) != 0)
        put_raw(w, pr->user_raw.p, pr->user_raw.len);
    return true;
}

/* Bytes of the properties of pr that a packet allowing `allowed` carries (0: none);
 * UINT64_MAX when they cannot be encoded. */
static uint64_t props_body_size(const mql_props *pr, uint64_t allowed)
{
    wr s = {NULL, 0};
    return put_props_body(&s, pr, allowed) ? s.n : UINT64_MAX;
}

/* Property Length + properties. */
static bool put_props(wr *w, const mql_props *pr, uint64_t allowed)
{
    uint64_t n = props_body_size(pr, allowed);
    if (!put_vbi(w, n))
        return false;
    if (w->p == NULL) {
        w->n += n; /* sizing pass: the body was just measured */
        return true;
    }
    return put_props_body(w, pr, allowed);
}

static bool enc_connect(wr *w, const mql_connect *c, uint8_t version)
{
    bool v5 = version == MQL_V5;
    mql_bytes name = c->protocol_name;
    if (name.len == 0) {
        name.p = (const uint8_t *)(version == MQL_V31 ? "MQIsdp" : "MQTT");
        name.len = version == MQL_V31 ? 6 : 4;
    }
    if (!put_bytes(w, name))
        return false;
    put_u8(w, (uint8_t)(version | (c->bridge && !v5 ? 0x80 : 0)));
    uint8_t cf = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
                           (c->clean_start ? 0x02 : 0));
    if (c->will)
        cf |= (uint8_t)((c->will_retain ? 0x20 : 0) | ((c->will_qos & 0x03) << 3) | 0x04);
    put_u8(w, cf);
    put_u16(w, c->keep_alive);
    if (v5 && !put_props(w, &c->props, allowed_props[MQL_CONNECT]))
        return false;
    if (!put_bytes(w, c->client_id))
        return false;
    if (c->will) {
        if (v5 && !put_props(w, &c->will_props, WILL_PROPS))
            return false;
        if (!put_bytes(w, c->will_topic) || !put_bytes(w, c->will_payload))
            return false;
    }
    if (c->has_username && !put_bytes(w, c->username))
        return false;
    if (c->has_password && !put_bytes(w, c->password))
        return false;
    return true;
}

/* Variable header + payload of pkt; *flags gets the fixed header flags. */
static bool enc_body(wr *w, const mql_packet *pkt, uint8_t version, uint8_t *flags)
{
    bool v5 = version == MQL_V5;
    *flags = pkt->type < 16 ? fixed_flags[pkt->type] : 0;
    switch (pkt->type) {
    case MQL_CONNECT:
        return enc_connect(w, &pkt->u.connect, version);
    case MQL_CONNACK: {
        const mql_connack *c = &pkt->u.connack;
        put_u8(w, c->session_present ? 1 : 0);
        put_u8(w, c->reason);
        return !v5 || put_props(w, &c->props, allowed_props[MQL_CONNACK]);
    }
    case MQL_PUBLISH: {
        const mql_publish *p = &pkt->u.publish;
        *flags = (uint8_t)((p->dup ? 0x08 : 0) | ((p->qos & 0x03) << 1) | (p->retain ? 1 : 0));
        if (!put_bytes(w, p->topic))
            return false;
        if (p->qos > 0)
            put_u16(w, p->packet_id);
        if (v5 && !put_props(w, &p->props, allowed_props[MQL_PUBLISH]))
            return false;
        put_raw(w, p->payload.p, p->payload.len);
        return true;
    }
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP: {
        const mql_ack *a = &pkt->u.ack;
        put_u16(w, a->packet_id);
        if (!v5)
            return true;
        uint64_t pn = props_body_size(&a->props, ACK_PROPS);
        if (pn == UINT64_MAX)
            return false;
        if (a->reason != 0 || pn != 0)
            put_u8(w, a->reason);
        return pn == 0 || put_props(w, &a->props, ACK_PROPS);
    }
    case MQL_SUBSCRIBE: {
        const mql_subscribe *s = &pkt->u.subscribe;
        if (s->count == 0 || s->list == NULL)
            return false;
        put_u16(w, s->packet_id);
        if (v5 && !put_props(w, &s->props, allowed_props[MQL_SUBSCRIBE]))
            return false;
        for (uint32_t i = 0; i < s->count; i++) {
            const mql_sub_entry *e = &s->list[i];
            if (!put_bytes(w, e->filter))
                return false;
            uint8_t o = e->qos & 0x03;
            if (v5)
                o |= (uint8_t)((e->no_local ? 0x04 : 0) | (e->retain_as_published ? 0x08 : 0) |
                               ((e->retain_handling & 0x03) << 4));
            put_u8(w, o);
        }
        return true;
    }
    case MQL_SUBACK:
    case MQL_UNSUBACK: {
        const mql_suback *s = &pkt->u.suback;
        put_u16(w, s->packet_id);
        if (pkt->type == MQL_UNSUBACK && !v5)
            return true;
        if (v5 && !put_props(w, &s->props, ACK_PROPS))
            return false;
        if (s->count != 0 && s->codes == NULL)
            return false;
        put_raw(w, s->codes, s->count);
        return true;
    }
    case MQL_UNSUBSCRIBE: {
        const mql_unsubscribe *u = &pkt->u.unsubscribe;
        if (u->count == 0 || u->list == NULL)
            return false;
        put_u16(w, u->packet_id);
        if (v5 && !put_props(w, &u->props, allowed_props[MQL_UNSUBSCRIBE]))
            return false;
        for (uint32_t i = 0; i < u->count; i++) {
            if (!put_bytes(w, u->list[i]))
                return false;
        }
        return true;
    }
    case MQL_PINGREQ:
    case MQL_PINGRESP:
        return true;
    case MQL_DISCONNECT:
    case MQL_AUTH: {
        if (!v5)
            return pkt->type == MQL_DISCONNECT;
        const mql_disconnect *d = &pkt->u.disconnect;
        uint64_t pn = props_body_size(&d->props, allowed_props[pkt->type]);
        if (pn == UINT64_MAX)
            return false;
        if (d->reason != 0 || pn != 0)
            put_u8(w, d->reason);
        return pn == 0 || put_props(w, &d->props, allowed_props[pkt->type]);
    }
    default:
        return false;
    }
}

/*
 * Encode pkt (see codec.h). Beyond the header's contract:
 * - properties whose bit is set but which the packet type does not allow (table 2-4) are
 *   not written; user properties come from props.user_raw;
 * - for CONNECT, `version` 0 means pkt->u.connect.version; an empty protocol_name is
 *   written as "MQTT" ("MQIsdp" for level 3);
 * - SUBSCRIBE/UNSUBSCRIBE without entries, and AUTH for 3.1.1, cannot be encoded (0).
 */
size_t mql_encode(uint8_t *buf, size_t cap, const mql_packet *pkt, uint8_t version)
{
    if (pkt->type == MQL_CONNECT && version == 0)
        version = pkt->u.connect.version;
    uint8_t flags;
    wr w = {NULL, 0};
    if (!enc_body(&w, pkt, version, &flags) || w.n > VBI_MAX)
        return 0;
    uint32_t body = (uint32_t)w.n;
    size_t total = 1 + mql_vbi_size(body) + body;
    if (total > cap)
        return total;
    buf[0] = (uint8_t)(pkt->type << 4 | flags);
    size_t hl = 1 + mql_vbi_encode(buf + 1, body);
    w.p = buf + hl;
    w.n = 0;
    (void)enc_body(&w, pkt, version, &flags);
    return total;
}

size_t mql_user_prop_encode(uint8_t *buf, size_t cap, mql_bytes key, mql_bytes val)
{
    if (key.len > 65535 || val.len > 65535)
        return 0;
    size_t need = 5 + (size_t)key.len + val.len;
    if (need > cap)
        return need;
    wr w = {buf, 0};
    put_u8(&w, MQL_PROP_USER);
    (void)put_bytes(&w, key);
    (void)put_bytes(&w, val);
    return need;
}

/* ------------------------------------------------------------------------------------------ */
/* Property blocks on their own (the store keeps a message's forwarded properties this way)    */

size_t mql_props_encode(uint8_t *buf, size_t cap, const mql_props *props)
{
    uint64_t n = props_body_size(props, allowed_props[MQL_PUBLISH]);
    if (n == UINT64_MAX || n > UINT32_MAX)
        return 0;
    if (n <= cap && buf != NULL) {
        wr w = {buf, 0};
        (void)put_props_body(&w, props, allowed_props[MQL_PUBLISH]);
    }
    return (size_t)n;
}

mql_err mql_props_decode(const uint8_t *p, size_t len, mql_props *out, const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    memset(out, 0, sizeof(*out));
    if (len > 268435455u) {
        *why = "property block too long";
        return MQL_E_MALFORMED;
    }
    rd q = {p, p + len};
    return dec_props_body(q, out, allowed_props[MQL_PUBLISH], true, why);
}
