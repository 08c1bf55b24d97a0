/*
 * codec_wire.h - private to the codec files (codec.c, codec_props.c, codec_wire.c): the
 * byte reader and writer they share, and what codec.c asks of codec_props.c. Nothing outside
 * those files includes it; the public interface is codec.h.
 *
 * The readers and writers are static inline: they run for every field of every packet.
 */
#ifndef MQL_CODEC_WIRE_H
#define MQL_CODEC_WIRE_H

#include <string.h>

#include "codec.h"

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

/* The presence bit of a property by its short name: B(TOPIC_ALIAS). */
#define B(id) MQL_PBIT(MQL_PROP_##id)

/* Table 2-4, last column, for a CONNECT's will and for the four acks, SUBACK and UNSUBACK. */
#define MQL_PROPS_WILL                                                                             \
    (B(PAYLOAD_FORMAT) | B(MESSAGE_EXPIRY) | B(CONTENT_TYPE) | B(RESPONSE_TOPIC) |                 \
     B(CORRELATION_DATA) | B(WILL_DELAY) | B(USER))
#define MQL_PROPS_ACK (B(REASON_STRING) | B(USER))

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
static inline int rd_vbi(rd *r, uint32_t *v)
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

/* A UTF-8 Encoded String; `truncated` is the sentence when its bytes run out. */
static inline mql_err rd_str(rd *r, mql_bytes *s, bool v5, const char *truncated, const char **why)
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

/* True when p[0..len) holds '+' or '#'. */
static inline bool has_wildcard(const uint8_t *p, size_t len)
{
    return len != 0 && (memchr(p, '+', len) != NULL || memchr(p, '#', len) != NULL);
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

/* ------------------------------------------------------------------------------------------ */
/* What codec.c uses of codec_props.c                                                          */

/* mql_props_allowed: the properties a packet of `type` (enum mql_ptype, < 16) may carry
 * (table 2-4); 0 for a type that carries none. */
uint64_t mql_props_allowed(uint8_t type);

/* mql_props_read: read a property block (Property Length + properties) at r of a packet that
 * allows `allowed` into *pr (which the caller zeroed); `many_sub_ids`: the Subscription
 * Identifier may repeat (PUBLISH). Advances r past the block. Returns MQL_OK or
 * MQL_E_MALFORMED / MQL_E_PROTOCOL / MQL_E_TOPIC_ALIAS_INVALID. OUT: *why names the rule. */
MQL_MUST_CHECK mql_err mql_props_read(rd *r, mql_props *pr, uint64_t allowed, bool many_sub_ids,
                                      const char **why);

/* mql_props_body_size: bytes of the properties of pr that a packet allowing `allowed`
 * carries, without the Property Length (0: none); UINT64_MAX when they cannot be encoded. */
uint64_t mql_props_body_size(const mql_props *pr, uint64_t allowed);

/* mql_props_put: write Property Length + the properties of pr that `allowed` lets through.
 * Returns false when they cannot be encoded (a value over its wire limit). */
bool mql_props_put(wr *w, const mql_props *pr, uint64_t allowed);

#endif
