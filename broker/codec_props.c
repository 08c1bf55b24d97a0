/*
 * codec_props.c - MQTT 5 properties (section 2.2.2): decode, encode, iterate.
 *
 * Purpose: everything the codec knows about properties sits in one table, props_table, one
 * row per property identifier: its data type (table 2-4), the field of mql_props it fills,
 * and the check its value must pass. Which packets allow which property is allowed_props;
 * the order the encoder writes them in is prop_order (connack_prop_order for CONNACK).
 * Decoding and encoding walk those tables instead of one switch case per property.
 *
 * Pure code: no I/O, no globals except constant tables, no allocation, no locking (every
 * function is reentrant). Decoded slices borrow from the caller's frame.
 * Performance: on the hot path with the rest of the decoder. One forward pass; duplicates
 * are found with the `present` bitmask; a table lookup per property.
 */
#include "codec_props.h"

#include <stddef.h>
#include <string.h>

#include "codec_wire.h"

enum ptype { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VBI, PT_STR, PT_BIN, PT_PAIR };

/* The check a decoded value must pass: none, 0 or 1, non-zero, a Topic Name. */
enum pcheck { CK_NONE, CK_BOOL, CK_NONZERO, CK_TOPIC };

typedef struct prop_row {
    uint8_t type;    /* enum ptype; PT_NONE: no such property */
    uint8_t check;   /* enum pcheck */
    uint8_t err;     /* mql_err of a failed CK_NONZERO (CK_BOOL, CK_TOPIC: MQL_E_PROTOCOL) */
    uint16_t field;  /* offset of the value in mql_props (not used for SUBSCRIPTION_ID, USER) */
    const char *bad; /* why, when the check fails */
} prop_row;

#define ROW(id, t, ck, e, f, text)                                                                 \
    [MQL_PROP_##id] = {                                                                            \
        .type = (t), .check = (ck), .err = (e), .field = offsetof(mql_props, f), .bad = (text)}
#define BOOL_ROW(id, f, text) ROW(id, PT_BYTE, CK_BOOL, MQL_E_PROTOCOL, f, text)
#define PLAIN_ROW(id, t, f) ROW(id, t, CK_NONE, MQL_OK, f, NULL)

/* Table 2-4 and the value rules of section 3, one row per property identifier. */
static const prop_row props_table[MQL_PROP_SHARED_SUB_AVAILABLE + 1] = {
    BOOL_ROW(PAYLOAD_FORMAT, payload_format,
             "Payload Format Indicator is not 0 or 1 (section 3.3.2.3.2)"),
    PLAIN_ROW(MESSAGE_EXPIRY, PT_U32, message_expiry),
    PLAIN_ROW(CONTENT_TYPE, PT_STR, content_type),
    ROW(RESPONSE_TOPIC, PT_STR, CK_TOPIC, MQL_E_PROTOCOL, response_topic,
        "Response Topic is empty or contains wildcards [MQTT-3.3.2-14] [MQTT-4.7.3-1]"),
    PLAIN_ROW(CORRELATION_DATA, PT_BIN, correlation_data),
    ROW(SUBSCRIPTION_ID, PT_VBI, CK_NONZERO, MQL_E_PROTOCOL, sub_id,
        "Subscription Identifier is 0 (section 3.3.2.3.8, 3.8.2.1.2)"),
    PLAIN_ROW(SESSION_EXPIRY, PT_U32, session_expiry),
    PLAIN_ROW(ASSIGNED_CLIENT_ID, PT_STR, assigned_client_id),
    PLAIN_ROW(SERVER_KEEP_ALIVE, PT_U16, server_keep_alive),
    PLAIN_ROW(AUTH_METHOD, PT_STR, auth_method),
    PLAIN_ROW(AUTH_DATA, PT_BIN, auth_data),
    BOOL_ROW(REQUEST_PROBLEM_INFO, request_problem_info,
             "Request Problem Information is not 0 or 1 (section 3.1.2.11.7)"),
    PLAIN_ROW(WILL_DELAY, PT_U32, will_delay),
    BOOL_ROW(REQUEST_RESPONSE_INFO, request_response_info,
             "Request Response Information is not 0 or 1 (section 3.1.2.11.6)"),
    PLAIN_ROW(RESPONSE_INFO, PT_STR, response_info),
    PLAIN_ROW(SERVER_REFERENCE, PT_STR, server_reference),
    PLAIN_ROW(REASON_STRING, PT_STR, reason_string),
    ROW(RECEIVE_MAXIMUM, PT_U16, CK_NONZERO, MQL_E_PROTOCOL, receive_maximum,
        "Receive Maximum is 0 (section 3.1.2.11.3, 3.2.2.3.3)"),
    PLAIN_ROW(TOPIC_ALIAS_MAXIMUM, PT_U16, topic_alias_maximum),
    ROW(TOPIC_ALIAS, PT_U16, CK_NONZERO, MQL_E_TOPIC_ALIAS_INVALID, topic_alias,
        "Topic Alias is 0 [MQTT-3.3.2-8] (section 3.3.4)"),
    BOOL_ROW(MAXIMUM_QOS, maximum_qos, "Maximum QoS is not 0 or 1 (section 3.2.2.3.4)"),
    BOOL_ROW(RETAIN_AVAILABLE, retain_available,
             "Retain Available is not 0 or 1 (section 3.2.2.3.5)"),
    PLAIN_ROW(USER, PT_PAIR, n_user),
    ROW(MAXIMUM_PACKET_SIZE, PT_U32, CK_NONZERO, MQL_E_PROTOCOL, maximum_packet_size,
        "Maximum Packet Size is 0 (section 3.1.2.11.4, 3.2.2.3.6)"),
    BOOL_ROW(WILDCARD_SUB_AVAILABLE, wildcard_sub_available,
             "Wildcard Subscription Available is not 0 or 1 (section 3.2.2.3.11)"),
    BOOL_ROW(SUB_ID_AVAILABLE, sub_id_available,
             "Subscription Identifier Available is not 0 or 1 (section 3.2.2.3.12)"),
    BOOL_ROW(SHARED_SUB_AVAILABLE, shared_sub_available,
             "Shared Subscription Available is not 0 or 1 (section 3.2.2.3.13)"),
};
#define PROP_ROWS (sizeof(props_table) / sizeof(props_table[0]))

/* Property ids in the order the encoder writes them (user properties come last, from
 * user_raw). */
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

/* Table 2-4, last column: which properties each packet may carry. */
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
    [MQL_PUBACK] = MQL_PROPS_ACK,
    [MQL_PUBREC] = MQL_PROPS_ACK,
    [MQL_PUBREL] = MQL_PROPS_ACK,
    [MQL_PUBCOMP] = MQL_PROPS_ACK,
    [MQL_SUBSCRIBE] = B(SUBSCRIPTION_ID) | B(USER),
    [MQL_SUBACK] = MQL_PROPS_ACK,
    [MQL_UNSUBSCRIBE] = B(USER),
    [MQL_UNSUBACK] = MQL_PROPS_ACK,
    [MQL_DISCONNECT] = B(SESSION_EXPIRY) | B(SERVER_REFERENCE) | B(REASON_STRING) | B(USER),
    [MQL_AUTH] = B(AUTH_METHOD) | B(AUTH_DATA) | B(REASON_STRING) | B(USER),
};

uint64_t mql_props_allowed(uint8_t type)
{
    return type < 16 ? allowed_props[type] : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */

/* The row of property id, or NULL when no property has that id (a byte >= 0x80 starts an
 * identifier no table has: all identifiers are one byte). */
static const prop_row *row_of(uint8_t id)
{
    if (id >= PROP_ROWS || props_table[id].type == PT_NONE)
        return NULL;
    return &props_table[id];
}

/* Read one value of type t: numbers into *num, strings and binary data into *s (a user
 * property's key into *s, its value into *v). */
static mql_err read_value(rd *q, uint8_t t, uint32_t *num, mql_bytes *s, mql_bytes *v,
                          const char **why)
{
    static const char truncated[] = "property value is truncated (section 2.2.2.2)";
    uint8_t u8 = 0;
    uint16_t u16 = 0;
    bool ok = true;
    switch (t) {
    case PT_BYTE:
        ok = rd_u8(q, &u8);
        *num = u8;
        break;
    case PT_U16:
        ok = rd_u16(q, &u16);
        *num = u16;
        break;
    case PT_U32:
        ok = rd_u32(q, num);
        break;
    case PT_VBI: {
        int vr = rd_vbi(q, num);
        if (vr == VBI_BAD)
            return BAD(MQL_E_MALFORMED, "property value is not a minimal Variable Byte "
                                        "Integer [MQTT-1.5.5-1]");
        ok = vr == VBI_OK;
        break;
    }
    case PT_BIN:
        ok = rd_bin(q, s);
        break;
    case PT_STR:
        TRY(rd_str(q, s, true, truncated, why));
        break;
    default: /* PT_PAIR */
        TRY(rd_str(q, s, true, truncated, why));
        TRY(rd_str(q, v, true, truncated, why));
        break;
    }
    return ok ? MQL_OK : BAD(MQL_E_MALFORMED, truncated);
}

/* The value rule of row (section 3 of each packet). */
static mql_err check_value(const prop_row *row, uint32_t num, mql_bytes s, const char **why)
{
    switch (row->check) {
    case CK_BOOL:
        return num > 1 ? BAD(MQL_E_PROTOCOL, row->bad) : MQL_OK;
    case CK_NONZERO:
        return num == 0 ? BAD((mql_err)row->err, row->bad) : MQL_OK;
    case CK_TOPIC:
        return s.len == 0 || has_wildcard(s.p, s.len) ? BAD(MQL_E_PROTOCOL, row->bad) : MQL_OK;
    default:
        return MQL_OK;
    }
}

/* Keep a checked value in its field of pr. */
static void store_value(mql_props *pr, uint8_t id, const prop_row *row, uint32_t num, mql_bytes s)
{
    char *field = (char *)pr + row->field;
    if (id == MQL_PROP_SUBSCRIPTION_ID) {
        if (pr->n_sub_ids == 0)
            pr->sub_id = num;
        pr->n_sub_ids++;
        return;
    }
    if (id == MQL_PROP_USER) {
        pr->n_user++; /* read back with mql_props_next_user */
        return;
    }
    switch (row->type) {
    case PT_BYTE:
        *(uint8_t *)field = (uint8_t)num;
        break;
    case PT_U16:
        *(uint16_t *)field = (uint16_t)num;
        break;
    case PT_U32:
        *(uint32_t *)field = num;
        break;
    default: /* PT_STR, PT_BIN */
        *(mql_bytes *)field = s;
        break;
    }
}

/* One property at q: identifier known and allowed, not repeated (user properties and a
 * PUBLISH's Subscription Identifiers may be), value well-formed and within its rule. */
static mql_err dec_prop(rd *q, mql_props *pr, uint64_t allowed, bool many_sub_ids, const char **why)
{
    uint8_t id = *q->p++;
    const prop_row *row = row_of(id);
    if (row == NULL)
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
    uint32_t num = 0;
    mql_bytes s = {0};
    mql_bytes v = {0};
    TRY(read_value(q, row->type, &num, &s, &v, why));
    TRY(check_value(row, num, s, why));
    store_value(pr, id, row, num, s);
    return MQL_OK;
}

/* The properties themselves, [q.p, q.end). */
static mql_err dec_props_body(rd q, mql_props *pr, uint64_t allowed, bool many_sub_ids,
                              const char **why)
{
    pr->raw.p = q.p;
    pr->raw.len = (uint32_t)(q.end - q.p);
    while (q.p != q.end)
        TRY(dec_prop(&q, pr, allowed, many_sub_ids, why));
    return MQL_OK;
}

mql_err mql_props_read(rd *r, mql_props *pr, uint64_t allowed, bool many_sub_ids, const char **why)
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

/* ------------------------------------------------------------------------------------------ */
/* Iteration over a decoded (validated) block                                                  */

/* Skip one property of a validated block; fills key/val for user properties and *num for
 * Subscription Identifiers. Bounds-checked so a hand-made block cannot make it overread. */
static bool next_prop(rd *q, uint8_t *id, mql_bytes *key, mql_bytes *val, uint32_t *num)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    mql_bytes s;
    if (!rd_u8(q, id) || *id >= PROP_ROWS)
        return false;
    switch (props_table[*id].type) {
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
/* Encoding                                                                                    */

/* The Subscription Identifiers of pr: every one of sub_ids, or sub_id once. */
static bool put_sub_ids(wr *w, const mql_props *pr)
{
    uint32_t n = pr->sub_ids ? pr->n_sub_ids : 1;
    for (uint32_t k = 0; k < n; k++) {
        put_u8(w, MQL_PROP_SUBSCRIPTION_ID);
        if (!put_vbi(w, pr->sub_ids ? pr->sub_ids[k] : pr->sub_id))
            return false;
    }
    return true;
}

/* Identifier and value of one property (not a Subscription Identifier, not a user one). */
static bool put_prop(wr *w, const mql_props *pr, uint8_t id)
{
    const prop_row *row = &props_table[id];
    const char *field = (const char *)pr + row->field;
    put_u8(w, id);
    switch (row->type) {
    case PT_BYTE:
        put_u8(w, *(const uint8_t *)field);
        return true;
    case PT_U16:
        put_u16(w, *(const uint16_t *)field);
        return true;
    case PT_U32:
        put_u32(w, *(const uint32_t *)field);
        return true;
    default: /* PT_STR, PT_BIN */
        return put_bytes(w, *(const mql_bytes *)field);
    }
}

/* The properties themselves (no Property Length), in prop_order (connack_prop_order for a
 * CONNACK, the only packet whose properties are allowed_props[MQL_CONNACK]); user
 * properties last, from user_raw. */
static bool put_props_body(wr *w, const mql_props *pr, uint64_t allowed)
{
    uint64_t m = pr->present & allowed & ~B(USER);
    const uint8_t *order = allowed == allowed_props[MQL_CONNACK] ? connack_prop_order : prop_order;
    for (size_t i = 0; m != 0 && i < sizeof(prop_order); i++) {
        uint8_t id = order[i];
        if ((m & MQL_PBIT(id)) == 0)
            continue;
        m &= ~MQL_PBIT(id);
        bool ok = id == MQL_PROP_SUBSCRIPTION_ID ? put_sub_ids(w, pr) : put_prop(w, pr, id);
        if (!ok)
            return false;
    }
    if ((allowed & B(USER)) != 0)
        put_raw(w, pr->user_raw.p, pr->user_raw.len);
    return true;
}

uint64_t mql_props_body_size(const mql_props *pr, uint64_t allowed)
{
    wr s = {NULL, 0};
    return put_props_body(&s, pr, allowed) ? s.n : UINT64_MAX;
}

bool mql_props_put(wr *w, const mql_props *pr, uint64_t allowed)
{
    uint64_t n = mql_props_body_size(pr, allowed);
    if (!put_vbi(w, n))
        return false;
    if (w->p == NULL) {
        w->n += n; /* sizing pass: the body was just measured */
        return true;
    }
    return put_props_body(w, pr, allowed);
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

size_t mql_props_encode(uint8_t *buf, size_t cap, const mql_props *props)
{
    uint64_t n = mql_props_body_size(props, allowed_props[MQL_PUBLISH]);
    if (n == UINT64_MAX || n > UINT32_MAX)
        return 0;
    if (n <= cap && buf != NULL) {
        wr w = {buf, 0};
        (void)put_props_body(&w, props, allowed_props[MQL_PUBLISH]);
    }
    return (size_t)n;
}
