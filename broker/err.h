/*
 * err.h - the one error enum of mqlite.
 *
 * Every function that can fail returns an mql_err. Errors are never flattened: a malformed
 * packet (0x81) is not a protocol error (0x82). mql_err_reason() is the single place that maps
 * an error to an MQTT 5 reason code; mql_err_reason_v3() maps CONNECT refusals to MQTT 3.1.1
 * CONNACK return codes.
 */
#ifndef MQL_ERR_H
#define MQL_ERR_H

#include <stdint.h>

#if defined(__GNUC__)
#define MQL_MUST_CHECK __attribute__((warn_unused_result))
#else
#define MQL_MUST_CHECK
#endif

typedef enum mql_err {
    MQL_OK = 0,
    /* protocol errors (client input) */
    MQL_E_MALFORMED,            /* 0x81 Malformed Packet */
    MQL_E_PROTOCOL,             /* 0x82 Protocol Error */
    MQL_E_BAD_VERSION,          /* 0x84 Unsupported Protocol Version / v3 0x01 */
    MQL_E_CLIENT_ID_INVALID,    /* 0x85 Client Identifier not valid / v3 0x02 */
    MQL_E_BAD_USER_PASS,        /* 0x86 Bad User Name or Password / v3 0x04 */
    MQL_E_NOT_AUTHORIZED,       /* 0x87 Not authorized / v3 0x05 */
    MQL_E_SERVER_UNAVAILABLE,   /* 0x88 Server unavailable / v3 0x03 */
    MQL_E_BUSY,                 /* 0x89 Server busy / v3 0x03 */
    MQL_E_BAD_AUTH_METHOD,      /* 0x8C Bad authentication method */
    MQL_E_KEEPALIVE,            /* 0x8D Keep Alive timeout */
    MQL_E_TAKEN_OVER,           /* 0x8E Session taken over */
    MQL_E_TOPIC_FILTER_INVALID, /* 0x8F Topic Filter invalid */
    MQL_E_TOPIC_NAME_INVALID,   /* 0x90 Topic Name invalid */
    MQL_E_PACKET_ID_IN_USE,     /* 0x91 Packet Identifier in use */
    MQL_E_PACKET_ID_NOT_FOUND,  /* 0x92 Packet Identifier not found */
    MQL_E_RECEIVE_MAX,          /* 0x93 Receive Maximum exceeded */
    MQL_E_TOPIC_ALIAS_INVALID,  /* 0x94 Topic Alias invalid */
    MQL_E_TOO_LARGE,            /* 0x95 Packet too large */
    MQL_E_QUOTA,                /* 0x97 Quota exceeded */
    MQL_E_ADMIN,                /* 0x98 Administrative action */
    MQL_E_PAYLOAD_FORMAT,       /* 0x99 Payload format invalid */
    MQL_E_RETAIN_UNSUPPORTED,   /* 0x9A Retain not supported */
    MQL_E_QOS_UNSUPPORTED,      /* 0x9B QoS not supported */
    MQL_E_SHARED_UNSUPPORTED,   /* 0x9E Shared Subscriptions not supported */
    MQL_E_CONN_RATE,            /* 0x9F Connection rate exceeded */
    MQL_E_MAX_CONNECT_TIME,     /* 0xA0 Maximum connect time */
    MQL_E_SUBID_UNSUPPORTED,    /* 0xA1 Subscription Identifiers not supported */
    MQL_E_WILDCARD_UNSUPPORTED, /* 0xA2 Wildcard Subscriptions not supported */
    MQL_E_SHUTDOWN,             /* 0x8B Server shutting down */
    /* local failures */
    MQL_E_NOMEM,  /* out of memory (0x80 on the wire) */
    MQL_E_IO,     /* socket / file I/O failed */
    MQL_E_CONFIG, /* bad configuration */
    MQL_E_STORE,  /* persistent store failed */
    MQL_E_CLOSED, /* the connection is closed */
    MQL_E_INTERNAL,
} mql_err;

/* The MQTT 5 reason code for err (0x80 Unspecified error for local failures). */
uint8_t mql_err_reason(mql_err err);

/* The MQTT 3.1.1 CONNACK return code for a refused CONNECT (0x01..0x05). Errors with no
 * 3.1.1 equivalent map to 0x03 Server unavailable. */
uint8_t mql_err_reason_v3(mql_err err);

/* A short constant English name for err, for logs ("malformed packet"). Never NULL. */
const char *mql_err_str(mql_err err);

#endif
