/*
 * codec_props.h - MQTT 5 properties (section 2.2.2): their identifiers, the struct a packet's
 * properties decode into, the iterators over user properties and Subscription Identifiers,
 * and bare property blocks as the store keeps them. Part of the codec's interface: codec.h
 * includes it. Pure code like the rest of the codec: no I/O, no globals, no allocation.
 */
#ifndef MQL_CODEC_PROPS_H
#define MQL_CODEC_PROPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* mql_prop_id: the MQTT 5 property identifiers (table 2-4). */
enum mql_prop_id {
    MQL_PROP_PAYLOAD_FORMAT = 0x01,
    MQL_PROP_MESSAGE_EXPIRY = 0x02,
    MQL_PROP_CONTENT_TYPE = 0x03,
    MQL_PROP_RESPONSE_TOPIC = 0x08,
    MQL_PROP_CORRELATION_DATA = 0x09,
    MQL_PROP_SUBSCRIPTION_ID = 0x0B,
    MQL_PROP_SESSION_EXPIRY = 0x11,
    MQL_PROP_ASSIGNED_CLIENT_ID = 0x12,
    MQL_PROP_SERVER_KEEP_ALIVE = 0x13,
    MQL_PROP_AUTH_METHOD = 0x15,
    MQL_PROP_AUTH_DATA = 0x16,
    MQL_PROP_REQUEST_PROBLEM_INFO = 0x17,
    MQL_PROP_WILL_DELAY = 0x18,
    MQL_PROP_REQUEST_RESPONSE_INFO = 0x19,
    MQL_PROP_RESPONSE_INFO = 0x1A,
    MQL_PROP_SERVER_REFERENCE = 0x1C,
    MQL_PROP_REASON_STRING = 0x1F,
    MQL_PROP_RECEIVE_MAXIMUM = 0x21,
    MQL_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    MQL_PROP_TOPIC_ALIAS = 0x23,
    MQL_PROP_MAXIMUM_QOS = 0x24,
    MQL_PROP_RETAIN_AVAILABLE = 0x25,
    MQL_PROP_USER = 0x26,
    MQL_PROP_MAXIMUM_PACKET_SIZE = 0x27,
    MQL_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
    MQL_PROP_SUB_ID_AVAILABLE = 0x29,
    MQL_PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

/* MQL_PBIT: the bit for property id in mql_props.present: MQL_PBIT(MQL_PROP_TOPIC_ALIAS). */
#define MQL_PBIT(id) (UINT64_C(1) << (id))

/* mql_bytes: a borrowed byte slice (UTF-8 string or binary data). Never NUL-terminated. */
typedef struct mql_bytes {
    const uint8_t *p;
    uint32_t len;
} mql_bytes;

/*
 * mql_props: the MQTT 5 properties of one packet (or of a CONNECT's will). A field is meaningful
 * only when its bit is set in `present`.
 *
 * Decoding: `raw` is the whole property block (without its length), validated; user
 * properties and repeated subscription identifiers are read back with the iterators below.
 * `sub_id` holds the first Subscription Identifier, `n_sub_ids` how many there were.
 * `user_raw` is left empty by the decoder.
 *
 * Encoding: `raw` is ignored. `user_raw` is a run of already-encoded user properties (each
 * 0x26 + key string + value string) written in order; `sub_ids`/`n_sub_ids` give the
 * Subscription Identifiers to write (PUBLISH to a client may carry several); when `sub_ids`
 * is NULL and the bit is present, `sub_id` is written once.
 */
typedef struct mql_props {
    uint64_t present;
    uint8_t payload_format;
    uint8_t request_problem_info;
    uint8_t request_response_info;
    uint8_t maximum_qos;
    uint8_t retain_available;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;
    uint16_t server_keep_alive;
    uint16_t receive_maximum;
    uint16_t topic_alias_maximum;
    uint16_t topic_alias;
    uint32_t message_expiry;
    uint32_t session_expiry;
    uint32_t will_delay;
    uint32_t maximum_packet_size;
    uint32_t sub_id;
    uint32_t n_sub_ids;
    const uint32_t *sub_ids;
    mql_bytes content_type;
    mql_bytes response_topic;
    mql_bytes correlation_data;
    mql_bytes assigned_client_id;
    mql_bytes auth_method;
    mql_bytes auth_data;
    mql_bytes response_info;
    mql_bytes server_reference;
    mql_bytes reason_string;
    uint32_t n_user;    /* number of user properties (decoded) */
    mql_bytes user_raw; /* encode: encoded user properties, in order */
    mql_bytes raw;      /* decode: the property block */
} mql_props;

/* mql_props_next_user: the next user property of a decoded property block, in order.
 * *pos starts at 0 and is advanced by each call. Returns false when there are no more.
 * OUT: *key and *val point into the block (borrowed, like props->raw). */
bool mql_props_next_user(const mql_props *props, uint32_t *pos, mql_bytes *key, mql_bytes *val);

/* mql_props_next_sub_id: the next Subscription Identifier of a decoded property block, in
 * order; *pos as for mql_props_next_user. Returns false when there are no more.
 * OUT: *id. */
bool mql_props_next_sub_id(const mql_props *props, uint32_t *pos, uint32_t *id);

/* mql_user_prop_encode: append one encoded user property (0x26, key, value) to buf. Returns the
 * bytes it needs (5 + key.len + val.len); writes only when that fits in cap. Returns 0 when key or
 * val is longer than 65,535 bytes. */
size_t mql_user_prop_encode(uint8_t *buf, size_t cap, mql_bytes key, mql_bytes val);

/* mql_props_encode: encode the PUBLISH-allowed properties of props as a bare property block (no
 * Property Length), as the store keeps them. Returns the size; writes only when it fits in cap; 0
 * for no properties (or when they cannot be encoded). */
size_t mql_props_encode(uint8_t *buf, size_t cap, const mql_props *props);

/* mql_props_decode: decode a bare property block written by mql_props_encode, checked
 * as a PUBLISH's properties. Returns MQL_OK or MQL_E_MALFORMED / MQL_E_PROTOCOL /
 * MQL_E_TOPIC_ALIAS_INVALID. OUT: *out (zeroed first; its slices point into p, which the
 * caller keeps), *why (may be NULL) names the broken rule. */
MQL_MUST_CHECK mql_err mql_props_decode(const uint8_t *p, size_t len, mql_props *out,
                                        const char **why);

#endif
