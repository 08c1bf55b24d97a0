/*
 * codec_wire.c - the wire format's primitive types: UTF-8 Encoded Strings (section 1.5.4)
 * and Variable Byte Integers (section 1.5.5).
 *
 * Below codec.c and codec_props.c, which both use them. Pure code: no I/O, no globals, no
 * allocation, no locking (reentrant). Performance: mql_utf8_valid runs over every string
 * of every packet, so it checks eight ASCII bytes at a time.
 */
#include "codec.h"

#include <string.h>

#include "codec_wire.h"

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
