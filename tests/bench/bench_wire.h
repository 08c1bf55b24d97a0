/*
 * bench_wire: the few MQTT 3.1.1 packets the load generator needs, encoded and scanned
 * here on purpose instead of with the broker's codec, so that mqbench stays an independent
 * measurement (a codec bug shared by both sides would cancel out and hide).
 *
 * Pure code: no I/O, no globals, no allocation. Encoders write into a caller-sized buffer
 * and return the bytes written, or 0 when the buffer is too small. The scanner says
 * COMPLETE / NEED_MORE / MALFORMED over borrowed bytes; "need more" is not an error.
 */
#ifndef MQB_WIRE_H
#define MQB_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    MQW_CONNECT = 1,
    MQW_CONNACK = 2,
    MQW_PUBLISH = 3,
    MQW_PUBACK = 4,
    MQW_SUBSCRIBE = 8,
    MQW_SUBACK = 9,
    MQW_PINGREQ = 12,
    MQW_PINGRESP = 13,
    MQW_DISCONNECT = 14,
};

/* Largest fixed header: one type byte and four Remaining Length bytes. */
#define MQW_MAX_HEAD 5

typedef enum { MQW_COMPLETE, MQW_NEED_MORE, MQW_MALFORMED } mqw_scan_rc;

/* One control packet found in a byte stream. body points into the caller's bytes. */
typedef struct {
    uint8_t type;        /* high nibble of the first byte */
    uint8_t flags;       /* low nibble of the first byte */
    const uint8_t *body; /* variable header + payload */
    size_t body_len;
    size_t total; /* bytes the whole packet takes in the stream */
} mqw_frame;

/* A decoded PUBLISH; slices point into the frame's body. */
typedef struct {
    const uint8_t *topic;
    size_t topic_len;
    uint8_t qos;
    bool retain;
    bool dup;
    uint16_t pid; /* 0 for QoS 0 */
    const uint8_t *payload;
    size_t payload_len;
} mqw_publish;

/* Looks for one packet at the start of p[0..len). COMPLETE fills OUT: f; NEED_MORE when the
 * packet is not all there yet; MALFORMED when the Remaining Length takes more than four
 * bytes [v3.1.1 MQTT-2.2.3]. */
mqw_scan_rc mqw_scan(const uint8_t *p, size_t len, mqw_frame *f);

/* Decodes a PUBLISH frame into OUT: pub. Returns false when it is malformed (QoS 3, topic
 * longer than the body, QoS > 0 without a packet id). */
bool mqw_decode_publish(const mqw_frame *f, mqw_publish *pub);

/* CONNECT, protocol level 4, no will, no credentials. */
size_t mqw_connect(uint8_t *out, size_t cap, const char *client_id, bool clean, uint16_t keepalive);

/* SUBSCRIBE with one filter. */
size_t mqw_subscribe(uint8_t *out, size_t cap, uint16_t pid, const char *filter, uint8_t qos);

/* PUBLISH fixed + variable header only, for a payload of payload_len bytes that the caller
 * writes right after the returned length. pid is ignored for QoS 0. */
size_t mqw_publish_head(uint8_t *out, size_t cap, const char *topic, size_t topic_len, uint8_t qos,
                        bool retain, uint16_t pid, size_t payload_len);

/* PUBACK, PINGREQ and DISCONNECT (2 or 4 bytes). */
size_t mqw_puback(uint8_t *out, size_t cap, uint16_t pid);
size_t mqw_pingreq(uint8_t *out, size_t cap);
size_t mqw_disconnect(uint8_t *out, size_t cap);

#endif
