/*
 * bench_wire: minimal MQTT 3.1.1 encoder and scanner for mqbench (see bench_wire.h).
 *
 * It only has to be correct for the packets mqbench sends and the ones a broker sends
 * back to it; it is not a general codec and does not validate what it is not told to.
 * Assumes no allocation and no I/O: the caller owns every buffer.
 */
#include "bench_wire.h"

#include <string.h>

static size_t put_remlen(uint8_t *p, size_t v)
{
    size_t n = 0;
    do {
        uint8_t b = (uint8_t)(v % 128);
        v /= 128;
        if (v > 0)
            b |= 0x80;
        p[n++] = b;
    } while (v > 0 && n < 4);
    return n;
}

static size_t remlen_size(size_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

mqw_scan_rc mqw_scan(const uint8_t *p, size_t len, mqw_frame *f)
{
    size_t rl = 0, mul = 1, i = 1;
    for (;;) {
        if (i > 4)
            return MQW_MALFORMED;
        if (i >= len)
            return MQW_NEED_MORE;
        rl += (size_t)(p[i] & 0x7f) * mul;
        mul *= 128;
        if ((p[i++] & 0x80) == 0)
            break;
    }
    if (len - i < rl)
        return MQW_NEED_MORE;
    f->type = p[0] >> 4;
    f->flags = p[0] & 0x0f;
    f->body = p + i;
    f->body_len = rl;
    f->total = i + rl;
    return MQW_COMPLETE;
}

bool mqw_decode_publish(const mqw_frame *f, mqw_publish *pub)
{
    const uint8_t *b = f->body;
    size_t n = f->body_len, off;
    pub->qos = (f->flags >> 1) & 3;
    pub->retain = f->flags & 1;
    pub->dup = (f->flags >> 3) & 1;
    if (pub->qos == 3 || n < 2)
        return false;
    pub->topic_len = get_u16(b);
    off = 2 + pub->topic_len;
    if (off > n)
        return false;
    pub->topic = b + 2;
    pub->pid = 0;
    if (pub->qos > 0) {
        if (off + 2 > n)
            return false;
        pub->pid = get_u16(b + off);
        off += 2;
    }
    pub->payload = b + off;
    pub->payload_len = n - off;
    return true;
}

size_t mqw_connect(uint8_t *out, size_t cap, const char *client_id, bool clean, uint16_t keepalive)
{
    static const uint8_t proto[] = {0, 4, 'M', 'Q', 'T', 'T', 4};
    size_t idlen = strlen(client_id);
    size_t rl = sizeof(proto) + 1 + 2 + 2 + idlen;
    size_t need = 1 + remlen_size(rl) + rl, n = 0;
    if (idlen > 65535 || need > cap)
        return 0;
    out[n++] = MQW_CONNECT << 4;
    n += put_remlen(out + n, rl);
    memcpy(out + n, proto, sizeof(proto));
    n += sizeof(proto);
    out[n++] = clean ? 0x02 : 0x00;
    put_u16(out + n, keepalive);
    n += 2;
    put_u16(out + n, (uint16_t)idlen);
    n += 2;
    memcpy(out + n, client_id, idlen);
    return n + idlen;
}

size_t mqw_subscribe(uint8_t *out, size_t cap, uint16_t pid, const char *filter, uint8_t qos)
{
    size_t flen = strlen(filter);
    size_t rl = 2 + 2 + flen + 1;
    size_t need = 1 + remlen_size(rl) + rl, n = 0;
    if (flen > 65535 || need > cap)
        return 0;
    out[n++] = (MQW_SUBSCRIBE << 4) | 0x02; /* [v3.1.1 MQTT-3.8.1-1] */
    n += put_remlen(out + n, rl);
    put_u16(out + n, pid);
    n += 2;
    put_u16(out + n, (uint16_t)flen);
    n += 2;
    memcpy(out + n, filter, flen);
    n += flen;
    out[n++] = qos;
    return n;
}

size_t mqw_publish_head(uint8_t *out, size_t cap, const char *topic, size_t topic_len, uint8_t qos,
                        bool retain, uint16_t pid, size_t payload_len)
{
    size_t rl = 2 + topic_len + (qos > 0 ? 2 : 0) + payload_len;
    size_t head = 1 + remlen_size(rl) + rl - payload_len, n = 0;
    if (topic_len > 65535 || rl > 268435455 || head > cap)
        return 0;
    out[n++] = (uint8_t)((MQW_PUBLISH << 4) | (qos << 1) | (retain ? 1 : 0));
    n += put_remlen(out + n, rl);
    put_u16(out + n, (uint16_t)topic_len);
    n += 2;
    memcpy(out + n, topic, topic_len);
    n += topic_len;
    if (qos > 0) {
        put_u16(out + n, pid);
        n += 2;
    }
    return n;
}

size_t mqw_puback(uint8_t *out, size_t cap, uint16_t pid)
{
    if (cap < 4)
        return 0;
    out[0] = MQW_PUBACK << 4;
    out[1] = 2;
    put_u16(out + 2, pid);
    return 4;
}

size_t mqw_pingreq(uint8_t *out, size_t cap)
{
    if (cap < 2)
        return 0;
    out[0] = MQW_PINGREQ << 4;
    out[1] = 0;
    return 2;
}

size_t mqw_disconnect(uint8_t *out, size_t cap)
{
    if (cap < 2)
        return 0;
    out[0] = MQW_DISCONNECT << 4;
    out[1] = 0;
    return 2;
}
