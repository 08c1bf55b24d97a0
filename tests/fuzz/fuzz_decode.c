/*
 * fuzz_decode.c - libFuzzer target for broker/codec, and its corpus replay program.
 *
 * For one input: mql_frame_scan() on the bytes (a complete frame must also be NEED_MORE one
 * byte short and TOO_LARGE one byte under its size), then mql_decode() of the frame as a
 * CONNECT (version 0) and as MQTT 3.1, 3.1.1 and 5.0. Every successful decode is re-encoded
 * (SUBSCRIBE/UNSUBSCRIBE entries, user properties and Subscription Identifiers rebuilt through
 * the public iterators, as a broker would) and decoded again: the two decodes must agree
 * field by field, and encoding the second decode must give the same bytes. Any disagreement
 * abort()s so libFuzzer reports it; a failed decode must say why.
 *
 * Built two ways by tests/fuzz/meson.build: with -fsanitize=fuzzer,address,undefined as the
 * libFuzzer target `fuzz_decode`, and linked with replay.c as `fuzz_decode_replay`, a plain
 * program that runs every file of the seed corpus through the same checks (the unit suite
 * runs it, so the corpus is a regression test under gcc too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_decode: check failed at line %d: %s\n", __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool same_bytes(mql_bytes a, mql_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void check_props(const mql_props *a, const mql_props *b)
{
    CHECK(a->present == b->present);
    CHECK(a->payload_format == b->payload_format);
    CHECK(a->request_problem_info == b->request_problem_info);
    CHECK(a->request_response_info == b->request_response_info);
    CHECK(a->maximum_qos == b->maximum_qos);
    CHECK(a->retain_available == b->retain_available);
    CHECK(a->wildcard_sub_available == b->wildcard_sub_available);
    CHECK(a->sub_id_available == b->sub_id_available);
    CHECK(a->shared_sub_available == b->shared_sub_available);
    CHECK(a->server_keep_alive == b->server_keep_alive);
    CHECK(a->receive_maximum == b->receive_maximum);
    CHECK(a->topic_alias_maximum == b->topic_alias_maximum);
    CHECK(a->topic_alias == b->topic_alias);
    CHECK(a->message_expiry == b->message_expiry);
    CHECK(a->session_expiry == b->session_expiry);
    CHECK(a->will_delay == b->will_delay);
    CHECK(a->maximum_packet_size == b->maximum_packet_size);
    CHECK(a->sub_id == b->sub_id);
    CHECK(a->n_sub_ids == b->n_sub_ids);
    CHECK(a->n_user == b->n_user);
    CHECK(same_bytes(a->content_type, b->content_type));
    CHECK(same_bytes(a->response_topic, b->response_topic));
    CHECK(same_bytes(a->correlation_data, b->correlation_data));
    CHECK(same_bytes(a->assigned_client_id, b->assigned_client_id));
    CHECK(same_bytes(a->auth_method, b->auth_method));
    CHECK(same_bytes(a->auth_data, b->auth_data));
    CHECK(same_bytes(a->response_info, b->response_info));
    CHECK(same_bytes(a->server_reference, b->server_reference));
    CHECK(same_bytes(a->reason_string, b->reason_string));

    uint32_t pa = 0, pb = 0, ia, ib, n = 0;
    while (mql_props_next_sub_id(a, &pa, &ia)) {
        CHECK(mql_props_next_sub_id(b, &pb, &ib));
        CHECK(ia == ib);
        n++;
    }
    CHECK(!mql_props_next_sub_id(b, &pb, &ib));
    CHECK(n == a->n_sub_ids);

    mql_bytes ka, va, kb, vb;
    pa = pb = n = 0;
    while (mql_props_next_user(a, &pa, &ka, &va)) {
        CHECK(mql_props_next_user(b, &pb, &kb, &vb));
        CHECK(same_bytes(ka, kb) && same_bytes(va, vb));
        n++;
    }
    CHECK(!mql_props_next_user(b, &pb, &kb, &vb));
    CHECK(n == a->n_user);
}

static void check_same(const mql_packet *a, const mql_packet *b, uint8_t version)
{
    CHECK(a->type == b->type);
    switch (a->type) {
    case MQL_CONNECT: {
        const mql_connect *x = &a->u.connect, *y = &b->u.connect;
        CHECK(same_bytes(x->protocol_name, y->protocol_name));
        CHECK(x->version == y->version);
        CHECK(x->clean_start == y->clean_start && x->will == y->will);
        CHECK(x->will_qos == y->will_qos && x->will_retain == y->will_retain);
        CHECK(x->has_username == y->has_username && x->has_password == y->has_password);
        CHECK(x->keep_alive == y->keep_alive);
        check_props(&x->props, &y->props);
        check_props(&x->will_props, &y->will_props);
        CHECK(same_bytes(x->client_id, y->client_id));
        CHECK(same_bytes(x->will_topic, y->will_topic));
        CHECK(same_bytes(x->will_payload, y->will_payload));
        CHECK(same_bytes(x->username, y->username));
        CHECK(same_bytes(x->password, y->password));
        break;
    }
    case MQL_CONNACK:
        CHECK(a->u.connack.session_present == b->u.connack.session_present);
        CHECK(a->u.connack.reason == b->u.connack.reason);
        check_props(&a->u.connack.props, &b->u.connack.props);
        break;
    case MQL_PUBLISH: {
        const mql_publish *x = &a->u.publish, *y = &b->u.publish;
        CHECK(x->qos == y->qos && x->dup == y->dup && x->retain == y->retain);
        CHECK(same_bytes(x->topic, y->topic));
        CHECK(x->packet_id == y->packet_id);
        check_props(&x->props, &y->props);
        CHECK(same_bytes(x->payload, y->payload));
        /* A decoded non-empty topic passed every Topic Name rule. */
        CHECK(x->topic.len == 0 || mql_topic_name_valid(x->topic));
        break;
    }
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
        CHECK(a->u.ack.packet_id == b->u.ack.packet_id);
        CHECK(a->u.ack.reason == b->u.ack.reason);
        check_props(&a->u.ack.props, &b->u.ack.props);
        break;
    case MQL_SUBSCRIBE: {
        const mql_subscribe *x = &a->u.subscribe, *y = &b->u.subscribe;
        CHECK(x->packet_id == y->packet_id && x->count == y->count);
        check_props(&x->props, &y->props);
        uint32_t px = 0, py = 0;
        mql_sub_entry ex, ey;
        while (mql_subscribe_next(x, version, &px, &ex)) {
            CHECK(mql_subscribe_next(y, version, &py, &ey));
            CHECK(same_bytes(ex.filter, ey.filter));
            CHECK(ex.qos == ey.qos && ex.no_local == ey.no_local);
            CHECK(ex.retain_as_published == ey.retain_as_published);
            CHECK(ex.retain_handling == ey.retain_handling);
            (void)mql_topic_filter_valid(ex.filter);
        }
        CHECK(!mql_subscribe_next(y, version, &py, &ey));
        break;
    }
    case MQL_SUBACK:
    case MQL_UNSUBACK:
        CHECK(a->u.suback.packet_id == b->u.suback.packet_id);
        CHECK(a->u.suback.count == b->u.suback.count);
        CHECK(a->u.suback.count == 0 ||
              memcmp(a->u.suback.codes, b->u.suback.codes, a->u.suback.count) == 0);
        check_props(&a->u.suback.props, &b->u.suback.props);
        break;
    case MQL_UNSUBSCRIBE: {
        const mql_unsubscribe *x = &a->u.unsubscribe, *y = &b->u.unsubscribe;
        CHECK(x->packet_id == y->packet_id && x->count == y->count);
        check_props(&x->props, &y->props);
        uint32_t px = 0, py = 0;
        mql_bytes fx, fy;
        while (mql_unsubscribe_next(x, &px, &fx)) {
            CHECK(mql_unsubscribe_next(y, &py, &fy));
            CHECK(same_bytes(fx, fy));
            (void)mql_topic_filter_valid(fx);
        }
        CHECK(!mql_unsubscribe_next(y, &py, &fy));
        break;
    }
    case MQL_DISCONNECT:
    case MQL_AUTH:
        CHECK(a->u.disconnect.reason == b->u.disconnect.reason);
        check_props(&a->u.disconnect.props, &b->u.disconnect.props);
        break;
    default: /* PINGREQ, PINGRESP */
        break;
    }
}

/* Everything re-encoding one decoded packet needs, allocated per packet. */
typedef struct rebuild {
    void *blocks[8];
    int n;
} rebuild;

static void *take(rebuild *rb, size_t size)
{
    CHECK(rb->n < 8);
    void *p = malloc(size ? size : 1);
    CHECK(p != NULL);
    rb->blocks[rb->n++] = p;
    return p;
}

static void rebuild_free(rebuild *rb)
{
    for (int i = 0; i < rb->n; i++)
        free(rb->blocks[i]);
    rb->n = 0;
}

/* Turn decoded properties into encodable ones: user_raw and sub_ids from the iterators. */
static void rebuild_props(rebuild *rb, mql_props *pr)
{
    uint32_t *ids = take(rb, (size_t)pr->n_sub_ids * sizeof(uint32_t));
    uint32_t pos = 0, n = 0, id;
    while (mql_props_next_sub_id(pr, &pos, &id))
        ids[n++] = id;
    CHECK(n == pr->n_sub_ids);
    pr->sub_ids = n ? ids : NULL;

    uint8_t *user = take(rb, pr->raw.len);
    size_t len = 0;
    mql_bytes k, v;
    pos = n = 0;
    while (mql_props_next_user(pr, &pos, &k, &v)) {
        size_t need = mql_user_prop_encode(user + len, pr->raw.len - len, k, v);
        CHECK(need != 0 && len + need <= pr->raw.len);
        len += need;
        n++;
    }
    CHECK(n == pr->n_user);
    pr->user_raw.p = user;
    pr->user_raw.len = (uint32_t)len;
}

static void rebuild_packet(rebuild *rb, mql_packet *q, uint8_t version)
{
    uint32_t pos = 0, i = 0;
    switch (q->type) {
    case MQL_CONNECT:
        rebuild_props(rb, &q->u.connect.props);
        rebuild_props(rb, &q->u.connect.will_props);
        break;
    case MQL_CONNACK:
        rebuild_props(rb, &q->u.connack.props);
        break;
    case MQL_PUBLISH:
        rebuild_props(rb, &q->u.publish.props);
        break;
    case MQL_PUBACK:
    case MQL_PUBREC:
    case MQL_PUBREL:
    case MQL_PUBCOMP:
        rebuild_props(rb, &q->u.ack.props);
        break;
    case MQL_SUBSCRIBE: {
        mql_subscribe *s = &q->u.subscribe;
        rebuild_props(rb, &s->props);
        mql_sub_entry *list = take(rb, (size_t)s->count * sizeof(*list));
        while (i < s->count && mql_subscribe_next(s, version, &pos, &list[i]))
            i++;
        CHECK(i == s->count);
        s->list = list;
        break;
    }
    case MQL_SUBACK:
    case MQL_UNSUBACK:
        rebuild_props(rb, &q->u.suback.props);
        break;
    case MQL_UNSUBSCRIBE: {
        mql_unsubscribe *u = &q->u.unsubscribe;
        rebuild_props(rb, &u->props);
        mql_bytes *list = take(rb, (size_t)u->count * sizeof(*list));
        while (i < u->count && mql_unsubscribe_next(u, &pos, &list[i]))
            i++;
        CHECK(i == u->count);
        u->list = list;
        break;
    }
    case MQL_DISCONNECT:
    case MQL_AUTH:
        rebuild_props(rb, &q->u.disconnect.props);
        break;
    default:
        break;
    }
}

/* Encode a decoded packet into a fresh buffer (caller frees); checks sizing and framing. */
static uint8_t *encode(const mql_packet *p, uint8_t version, size_t *len)
{
    rebuild rb = {.n = 0};
    mql_packet q = *p;
    rebuild_packet(&rb, &q, version);
    size_t need = mql_encode(NULL, 0, &q, version);
    CHECK(need >= 2);
    uint8_t *buf = malloc(need);
    CHECK(buf != NULL);
    CHECK(mql_encode(buf, need, &q, version) == need);
    rebuild_free(&rb);

    mql_frame f;
    mql_err err = MQL_OK;
    CHECK(mql_frame_scan(buf, need, 0, &f, &err) == MQL_SCAN_COMPLETE);
    CHECK(f.total == need);
    *len = need;
    return buf;
}

static void one_version(const uint8_t *frame, size_t n, uint8_t version)
{
    mql_packet a;
    const char *why = NULL;
    mql_err err = mql_decode(frame, n, version, &a, &why);
    if (err != MQL_OK) {
        CHECK(why != NULL);
        return;
    }
    /* CONNECT carries its version; everything else is decoded with the connection's. */
    uint8_t ev = a.type == MQL_CONNECT ? a.u.connect.version : version;
    uint8_t dv = a.type == MQL_CONNECT ? 0 : version;

    size_t len1, len2;
    uint8_t *buf1 = encode(&a, ev, &len1);
    mql_packet b;
    why = NULL;
    err = mql_decode(buf1, len1, dv, &b, &why);
    if (err != MQL_OK) {
        fprintf(stderr, "fuzz_decode: re-encoded packet does not decode: %s (%s)\n",
                mql_err_str(err), why ? why : "");
        abort();
    }
    check_same(&a, &b, ev);

    uint8_t *buf2 = encode(&b, ev, &len2);
    CHECK(len1 == len2 && memcmp(buf1, buf2, len1) == 0);
    free(buf1);
    free(buf2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mql_frame f;
    mql_err err = MQL_OK;
    mql_scan s = mql_frame_scan(data, size, 0, &f, &err);
    if (s == MQL_SCAN_ERROR)
        CHECK(err == MQL_E_MALFORMED);
    if (s != MQL_SCAN_COMPLETE)
        return 0;
    CHECK(f.total <= size && f.total == f.header_len + f.remaining);

    mql_frame g;
    CHECK(mql_frame_scan(data, f.total - 1, 0, &g, &err) == MQL_SCAN_NEED_MORE);
    CHECK(mql_frame_scan(data, f.total, f.total - 1, &g, &err) == MQL_SCAN_ERROR);
    CHECK(err == MQL_E_TOO_LARGE);

    static const uint8_t versions[] = {0, MQL_V31, MQL_V311, MQL_V5};
    for (size_t i = 0; i < sizeof(versions); i++)
        one_version(data, f.total, versions[i]);
    return 0;
}
