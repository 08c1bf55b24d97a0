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
 * - Properties live in codec_props.c (one table row per property), UTF-8 and Variable Byte
 *   Integers in codec_wire.c; the reader and writer all three share are in codec_wire.h.
 * - Performance: the decoder is on the hot path. It is a single forward pass with no
 *   backtracking; duplicate properties are found with the `present` bitmask, UTF-8 is checked
 *   eight ASCII bytes at a time. A small PUBLISH decodes in well under a microsecond.
 * - Encoding computes sizes first (a writer with a NULL buffer only counts) and writes in a
 *   second pass, so nothing is written unless the whole packet fits.
 */
#include "codec.h"

#include <string.h>

#include "codec_wire.h"

/* ------------------------------------------------------------------------------------------ */
/* Constant tables                                                                             */

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
/* Topic Names and Topic Filters                                                               */

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
        TRY(mql_props_read(r, &c->props, mql_props_allowed(MQL_CONNECT), false, why));
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
            TRY(mql_props_read(r, &c->will_props, MQL_PROPS_WILL, false, why));
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
        TRY(mql_props_read(r, &c->props, mql_props_allowed(MQL_CONNACK), false, why));
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
        TRY(mql_props_read(r, &p->props, mql_props_allowed(MQL_PUBLISH), true, why));
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
        TRY(mql_props_read(r, &a->props, MQL_PROPS_ACK, false, why));
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
        TRY(mql_props_read(r, &s->props, mql_props_allowed(MQL_SUBSCRIBE), false, why));
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
        TRY(mql_props_read(r, &s->props, MQL_PROPS_ACK, false, why));
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
        TRY(mql_props_read(r, &u->props, mql_props_allowed(MQL_UNSUBSCRIBE), false, why));
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
        TRY(mql_props_read(r, &d->props, mql_props_allowed(type), false, why));
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
/* Encoding, one function per packet                                                           */

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
    if (v5 && !mql_props_put(w, &c->props, mql_props_allowed(MQL_CONNECT)))
        return false;
    if (!put_bytes(w, c->client_id))
        return false;
    if (c->will) {
        if (v5 && !mql_props_put(w, &c->will_props, MQL_PROPS_WILL))
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

static bool enc_publish(wr *w, const mql_publish *p, bool v5, uint8_t *flags)
{
    *flags = (uint8_t)((p->dup ? 0x08 : 0) | ((p->qos & 0x03) << 1) | (p->retain ? 1 : 0));
    if (!put_bytes(w, p->topic))
        return false;
    if (p->qos > 0)
        put_u16(w, p->packet_id);
    if (v5 && !mql_props_put(w, &p->props, mql_props_allowed(MQL_PUBLISH)))
        return false;
    put_raw(w, p->payload.p, p->payload.len);
    return true;
}

/* The v5 tail of the acks, DISCONNECT and AUTH: a reason code and properties, left out
 * from the end while they are 0 and empty (the short forms). */
static bool enc_reason_props(wr *w, uint8_t reason, const mql_props *props, uint64_t allowed)
{
    uint64_t pn = mql_props_body_size(props, allowed);
    if (pn == UINT64_MAX)
        return false;
    if (reason != 0 || pn != 0)
        put_u8(w, reason);
    return pn == 0 || mql_props_put(w, props, allowed);
}

static bool enc_subscribe(wr *w, const mql_subscribe *s, bool v5)
{
    if (s->count == 0 || s->list == NULL)
        return false;
    put_u16(w, s->packet_id);
    if (v5 && !mql_props_put(w, &s->props, mql_props_allowed(MQL_SUBSCRIBE)))
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

/* SUBACK and UNSUBACK (no reason codes in a 3.1.1 UNSUBACK). */
static bool enc_suback(wr *w, const mql_suback *s, uint8_t type, bool v5)
{
    put_u16(w, s->packet_id);
    if (type == MQL_UNSUBACK && !v5)
        return true;
    if (v5 && !mql_props_put(w, &s->props, MQL_PROPS_ACK))
        return false;
    if (s->count != 0 && s->codes == NULL)
        return false;
    put_raw(w, s->codes, s->count);
    return true;
}

static bool enc_unsubscribe(wr *w, const mql_unsubscribe *u, bool v5)
{
    if (u->count == 0 || u->list == NULL)
        return false;
    put_u16(w, u->packet_id);
    if (v5 && !mql_props_put(w, &u->props, mql_props_allowed(MQL_UNSUBSCRIBE)))
        return false;
    for (uint32_t i = 0; i < u->count; i++) {
        if (!put_bytes(w, u->list[i]))
            return false;
    }
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
    case MQL_CONNACK:
        put_u8(w, pkt->u.connack.session_present ? 1 : 0);
        put_u8(w, pkt->u.connack.reason);
        return !v5 || mql_props_put(w, &pkt->u.connack.props, mql_props_allowed(MQL_CONNACK));
    case MQL_PUBLISH:
        return enc_publish(w, &pkt->u.publish, v5, flags);
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
        put_u16(w, pkt->u.ack.packet_id);
        return !v5 || enc_reason_props(w, pkt->u.ack.reason, &pkt->u.ack.props, MQL_PROPS_ACK);
    case MQL_SUBSCRIBE:
        return enc_subscribe(w, &pkt->u.subscribe, v5);
    case MQL_SUBACK:
    case MQL_UNSUBACK:
        return enc_suback(w, &pkt->u.suback, pkt->type, v5);
    case MQL_UNSUBSCRIBE:
        return enc_unsubscribe(w, &pkt->u.unsubscribe, v5);
    case MQL_PINGREQ:
    case MQL_PINGRESP:
        return true;
    case MQL_DISCONNECT:
    case MQL_AUTH:
        if (!v5)
            return pkt->type == MQL_DISCONNECT;
        return enc_reason_props(w, pkt->u.disconnect.reason, &pkt->u.disconnect.props,
                                mql_props_allowed(pkt->type));
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
