/*
 * codec.h - MQTT 3.1.1 and 5.0 packets: bytes <-> structs.
 *
 * Pure code: no I/O, no globals, no allocation. Decoding fills structs whose mql_bytes
 * fields point into the caller's frame buffer (borrowed slices: valid as long as the frame
 * is). Encoding writes into a caller-sized buffer.
 *
 * Flow for a receiver:
 *   1. mql_frame_scan() on the bytes received so far: NEED_MORE, COMPLETE (with the frame
 *      length) or ERROR (bad Remaining Length, or the frame exceeds max_size; checked as soon
 *      as the length is known, before the body is buffered).
 *   2. mql_decode() on one complete frame: MQL_OK, or a specific error with a constant
 *      explanation naming the rule (`why`).
 *
 * MQTT 5 properties (identifiers, struct mql_props, their iterators and bare property
 * blocks) are declared in codec_props.h, which this header includes.
 *
 * Version numbers are the CONNECT Protocol Level: MQL_V311 (4) or MQL_V5 (5). MQTT 3.1
 * (level 3, "MQIsdp") is decoded too (MQL_V31), with 3.1.1 rules.
 */
#ifndef MQL_CODEC_H
#define MQL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec_props.h"
#include "err.h"

enum { MQL_V31 = 3, MQL_V311 = 4, MQL_V5 = 5 };

/* mql_ptype: the control packet types (fixed header bits 7-4). */
enum mql_ptype {
    MQL_CONNECT = 1,
    MQL_CONNACK = 2,
    MQL_PUBLISH = 3,
    MQL_PUBACK = 4,
    MQL_PUBREC = 5,
    MQL_PUBREL = 6,
    MQL_PUBCOMP = 7,
    MQL_SUBSCRIBE = 8,
    MQL_SUBACK = 9,
    MQL_UNSUBSCRIBE = 10,
    MQL_UNSUBACK = 11,
    MQL_PINGREQ = 12,
    MQL_PINGRESP = 13,
    MQL_DISCONNECT = 14,
    MQL_AUTH = 15, /* MQTT 5 only */
};

typedef struct mql_connect {
    mql_bytes protocol_name; /* "MQTT" (or "MQIsdp" for 3.1) */
    uint8_t version;         /* Protocol Level, without the bridge bit */
    bool bridge;             /* 3.1 / 3.1.1 only: the Protocol Level's top bit (0x80), which
                                mosquitto-style bridges set (try_private) */
    bool clean_start;        /* Clean Session (3.1.1) / Clean Start (5) */
    bool will;
    uint8_t will_qos;
    bool will_retain;
    bool has_username;
    bool has_password;
    uint16_t keep_alive;
    mql_props props;
    mql_bytes client_id;
    mql_props will_props;
    mql_bytes will_topic;
    mql_bytes will_payload;
    mql_bytes username;
    mql_bytes password;
} mql_connect;

typedef struct mql_connack {
    bool session_present;
    uint8_t reason; /* v5 reason code, or v3.1.1 return code */
    mql_props props;
} mql_connack;

typedef struct mql_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    mql_bytes topic;    /* may be empty in v5 when a Topic Alias is present */
    uint16_t packet_id; /* 0 for QoS 0 */
    mql_props props;
    mql_bytes payload;
} mql_publish;

/* mql_ack: PUBACK, PUBREC, PUBREL, PUBCOMP. In v5 a reason of 0 with no properties is encoded in
 * the short 2-byte form. */
typedef struct mql_ack {
    uint16_t packet_id;
    uint8_t reason;
    mql_props props;
} mql_ack;

typedef struct mql_sub_entry {
    mql_bytes filter;
    uint8_t qos;
    bool no_local;            /* v5 */
    bool retain_as_published; /* v5 */
    uint8_t retain_handling;  /* v5: 0, 1 or 2 */
} mql_sub_entry;

/* mql_subscribe: SUBSCRIBE. Decoding: `raw` holds the validated payload, `count` its entries; read
 * them with mql_subscribe_next(). Encoding: `list`/`count`. */
typedef struct mql_subscribe {
    uint16_t packet_id;
    mql_props props;
    uint32_t count;
    mql_bytes raw;
    const mql_sub_entry *list;
} mql_subscribe;

/* mql_subscribe_next: the next entry of a decoded SUBSCRIBE payload of a connection
 * speaking `version`. *pos starts at 0 and is advanced. Returns false when there are no more.
 * OUT: *out (its filter borrows from the frame). */
bool mql_subscribe_next(const mql_subscribe *sub, uint8_t version, uint32_t *pos,
                        mql_sub_entry *out);

/* mql_suback: SUBACK and UNSUBACK: one reason code per filter (UNSUBACK has none in 3.1.1).
 * Decoding points `codes` into the frame. */
typedef struct mql_suback {
    uint16_t packet_id;
    mql_props props;
    uint32_t count;
    const uint8_t *codes;
} mql_suback;

/* mql_unsubscribe: UNSUBSCRIBE. Decoding: `raw`/`count`, read with mql_unsubscribe_next().
 * Encoding: `list`/`count`. */
typedef struct mql_unsubscribe {
    uint16_t packet_id;
    mql_props props;
    uint32_t count;
    mql_bytes raw;
    const mql_bytes *list;
} mql_unsubscribe;

/* mql_unsubscribe_next: the next filter of a decoded UNSUBSCRIBE payload; *pos as for
 * mql_subscribe_next. Returns false when there are no more. OUT: *filter (borrowed). */
bool mql_unsubscribe_next(const mql_unsubscribe *unsub, uint32_t *pos, mql_bytes *filter);

/* mql_disconnect: DISCONNECT and AUTH (v5 reason + properties; v3.1.1 DISCONNECT has no body). */
typedef struct mql_disconnect {
    uint8_t reason;
    mql_props props;
} mql_disconnect;

typedef struct mql_packet {
    uint8_t type; /* enum mql_ptype */
    union {
        mql_connect connect;
        mql_connack connack;
        mql_publish publish;
        mql_ack ack; /* PUBACK PUBREC PUBREL PUBCOMP */
        mql_subscribe subscribe;
        mql_suback suback; /* SUBACK UNSUBACK */
        mql_unsubscribe unsubscribe;
        mql_disconnect disconnect; /* DISCONNECT AUTH */
    } u;
} mql_packet;

typedef enum mql_scan {
    MQL_SCAN_NEED_MORE = 0,
    MQL_SCAN_COMPLETE = 1,
    MQL_SCAN_ERROR = 2,
} mql_scan;

typedef struct mql_frame {
    uint8_t type;       /* bits 7-4 of the first byte */
    uint8_t flags;      /* bits 3-0 */
    uint8_t header_len; /* 2..5 */
    uint32_t remaining; /* Remaining Length */
    uint32_t total;     /* header_len + remaining */
} mql_frame;

/*
 * mql_frame_scan: look at the start of buf (len bytes received so far) for one MQTT frame.
 * Returns NEED_MORE when the fixed header or the body is incomplete (never an error),
 * COMPLETE with *out filled when buf holds the whole frame, ERROR with *err set when the
 * Remaining Length uses more than 4 bytes (MQL_E_MALFORMED) or header + body exceed
 * max_size (MQL_E_TOO_LARGE; 0 means no limit beyond the protocol's 268,435,460 bytes).
 * The size check happens as soon as the Remaining Length is complete, so a caller can
 * refuse a frame before buffering its body. *out is also filled on NEED_MORE once the
 * header is complete (out->header_len != 0), else zeroed.
 */
mql_scan mql_frame_scan(const uint8_t *buf, size_t len, uint32_t max_size, mql_frame *out,
                        mql_err *err);

/*
 * mql_decode: decode one complete frame (as found by mql_frame_scan) of a connection speaking
 * `version`. For CONNECT, pass version 0: the version is read from the packet.
 * Checks every rule the specification makes about the packet's own bytes: fixed header
 * flags, lengths, UTF-8 strings, property ids allowed for the packet type and not repeated,
 * property value ranges, packet ids non-zero where required, non-empty SUBSCRIBE/UNSUBSCRIBE,
 * PUBLISH topic without wildcards, QoS 3, reserved bits.
 *
 * Returns MQL_OK and fills *out (slices into frame), or:
 *   MQL_E_MALFORMED, MQL_E_PROTOCOL, MQL_E_TOPIC_NAME_INVALID (PUBLISH topic with + or #),
 *   MQL_E_BAD_VERSION (CONNECT with an unknown Protocol Level or Name; out->u.connect.version
 *   and protocol_name are filled so the caller can answer in the right format).
 * OUT: *why (may be NULL) is set to a constant sentence naming the broken rule, with its
 * normative id where one exists, e.g. "CONNECT reserved flag is set [MQTT-3.1.2-3]".
 * Topic Filter syntax (wildcard placement) is not checked here: see mql_topic_filter_valid.
 */
MQL_MUST_CHECK mql_err mql_decode(const uint8_t *frame, size_t len, uint8_t version,
                                  mql_packet *out, const char **why);

/*
 * mql_encode: encode pkt for a connection speaking `version` into buf. Returns the total size of
 * the encoded packet; writes only when that size <= cap (so call with cap 0 to size a buffer).
 * v5-only parts (properties, reason codes) are left out for 3.1.1. Returns 0 when pkt
 * cannot be encoded (a length beyond the protocol's limits, or an unknown type; also a
 * SUBSCRIBE/UNSUBSCRIBE without entries and AUTH for 3.1.1).
 * Properties whose bit is set but which the packet type does not allow are not written.
 * CONNECT: version 0 means pkt->u.connect.version; an empty protocol_name is written as
 * "MQTT" ("MQIsdp" for level 3).
 */
size_t mql_encode(uint8_t *buf, size_t cap, const mql_packet *pkt, uint8_t version);

/* mql_vbi_size, mql_vbi_encode: the bytes a Variable Byte Integer takes (1..4), and its
 * encoding into buf (>= 4 bytes; codec_wire.c). Both return 0 for v > 268,435,455, which
 * has no encoding. */
size_t mql_vbi_size(uint32_t v);
size_t mql_vbi_encode(uint8_t *buf, uint32_t v);

/* mql_utf8_valid: true when p[0..len) follows the UTF-8 Encoded String rules [MQTT-1.5.4-1]
 * [MQTT-1.5.4-2]: well-formed, no surrogates, no U+0000, no overlong forms. */
bool mql_utf8_valid(const uint8_t *p, size_t len);

/* mql_topic_name_valid: true when topic follows the Topic Name rules for PUBLISH [MQTT-4.7.3-1]:
 * non-empty, no '+' or '#', valid UTF-8. */
bool mql_topic_name_valid(mql_bytes topic);

/* mql_topic_filter_valid: true when filter follows the Topic Filter rules [MQTT-4.7.1-1..3]
 * [MQTT-4.7.3-1]: non-empty, '#' only as the last level on its own, '+' only as a whole level.
 * Shared subscriptions ($share/GROUP/FILTER) are valid when GROUP is non-empty without wildcards
 * and FILTER is valid. */
bool mql_topic_filter_valid(mql_bytes filter);

#endif
