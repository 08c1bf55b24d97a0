/*
 * test_publish.c - MQTT 3.1.1 PUBLISH and the QoS 0/1/2 flows, black-box.
 *
 * Both directions of every QoS level with exact acknowledgement bytes, QoS downgrade to the
 * granted maximum, DUP handling, redelivery of unacknowledged PUBLISH and PUBREL packets on
 * reconnect of a clean session 0 client, QoS 2 exactly-once on re-sent PUBLISH, message
 * ordering, overlapping subscriptions and payload sizes that need 1-, 2- and 3-byte Remaining
 * Length. Specification sections 3.3-3.7, 4.3, 4.4, 4.6. Packet ids chosen by the broker are
 * never assumed: they are read from what arrives and echoed back.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(publish, .fini = tb_fini, .timeout = 30);

/* QoS 0 round trip with exact bytes on both sides (no packet id, DUP 0).
 * [v3.1.1 MQTT-4.3.1-1] [v3.1.1 MQTT-2.3.1-5] [v3.1.1 MQTT-3.3.2-3] [v3.1.1 MQTT-3.3.1-9] */
Test(publish, qos0_roundtrip_exact)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "q0-sub", true, 60, false);
    tc_subscribe(s, 1, "a/b", 0, 0);
    tc_client *p = tc_open(tb_port(b), "q0-pub", true, 60, false);
    static const uint8_t pub[] = {0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o'};
    tc_send(p, pub, sizeof pub);
    tc_expect(s, pub, sizeof pub, TB_WAIT_MS);
    tc_expect_nothing(p, TB_QUIET_MS); /* no acknowledgement for QoS 0 */
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* QoS 1: PUBACK with the publisher's packet id; the subscriber gets QoS 1, DUP 0, a non-zero
 * id, and nothing more once it has acknowledged. [v3.1.1 MQTT-4.3.2-1] [v3.1.1 MQTT-4.3.2-2]
 * [v3.1.1 MQTT-2.3.1-6] [v3.1.1 MQTT-3.3.4-1] */
Test(publish, qos1_flow)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "q1-sub", true, 60, false);
    tc_subscribe(s, 1, "q1/t", 1, 1);
    tc_client *p = tc_open(tb_port(b), "q1-pub", true, 60, false);
    tc_sendp(p, PK_PUBLISH(.topic = "q1/t", .payload = "one", .qos = 1, .id = 7));
    static const uint8_t puback[] = {0x40, 0x02, 0x00, 0x07};
    tc_expect(p, puback, sizeof puback, TB_WAIT_MS);
    uint16_t id = tc_expect_publish(s, TB_WAIT_MS, .topic = "q1/t", .payload = "one", .qos = 1);
    tc_sendp(s, pk_puback(id));
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_ping(s);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* QoS 2 inbound (PUBREC, then PUBCOMP for the client's PUBREL) and outbound (the broker
 * sends PUBREL 0x62 with the id after the subscriber's PUBREC, and nothing after PUBCOMP).
 * [v3.1.1 MQTT-4.3.3-1] [v3.1.1 MQTT-4.3.3-2] [v3.1.1 MQTT-2.3.1-6] [v3.1.1 MQTT-3.6.1-1] */
Test(publish, qos2_flow)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "q2-sub", true, 60, false);
    tc_subscribe(s, 1, "q2/t", 2, 2);
    tc_client *p = tc_open(tb_port(b), "q2-pub", true, 60, false);
    tc_sendp(p, PK_PUBLISH(.topic = "q2/t", .payload = "two", .qos = 2, .id = 9));
    static const uint8_t pubrec[] = {0x50, 0x02, 0x00, 0x09};
    tc_expect(p, pubrec, sizeof pubrec, TB_WAIT_MS);
    static const uint8_t pubrel[] = {0x62, 0x02, 0x00, 0x09};
    tc_send(p, pubrel, sizeof pubrel);
    static const uint8_t pubcomp[] = {0x70, 0x02, 0x00, 0x09};
    tc_expect(p, pubcomp, sizeof pubcomp, TB_WAIT_MS);

    uint16_t id = tc_expect_publish(s, TB_WAIT_MS, .topic = "q2/t", .payload = "two", .qos = 2);
    tc_sendp(s, pk_pubrec(id));
    tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s, pk_pubcomp(id));
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* QoS 2 exactly once: a PUBLISH re-sent with the same id before PUBREL is acknowledged with
 * PUBREC again and not delivered twice; after PUBCOMP the same id is a new message.
 * [v3.1.1 MQTT-4.3.3-2] */
Test(publish, qos2_resend_before_pubrel_delivered_once)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "eo-sub", true, 60, false);
    tc_subscribe(s, 1, "eo/t", 2, 2);
    tc_client *p = tc_open(tb_port(b), "eo-pub", true, 60, false);
    tc_sendp(p, PK_PUBLISH(.topic = "eo/t", .payload = "first", .qos = 2, .id = 5));
    tc_expectp(p, pk_pubrec(5), TB_WAIT_MS);
    tc_sendp(p, PK_PUBLISH(.topic = "eo/t", .payload = "first", .qos = 2, .id = 5, .dup = true));
    tc_expectp(p, pk_pubrec(5), TB_WAIT_MS);
    tc_sendp(p, pk_pubrel(5));
    tc_expectp(p, pk_pubcomp(5), TB_WAIT_MS);

    uint16_t id = tc_expect_publish(s, TB_WAIT_MS, .topic = "eo/t", .payload = "first", .qos = 2);
    tc_sendp(s, pk_pubrec(id));
    tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s, pk_pubcomp(id));
    tc_expect_nothing(s, TB_QUIET_MS);

    tc_sendp(p, PK_PUBLISH(.topic = "eo/t", .payload = "second", .qos = 2, .id = 5));
    tc_expectp(p, pk_pubrec(5), TB_WAIT_MS);
    tc_sendp(p, pk_pubrel(5));
    tc_expectp(p, pk_pubcomp(5), TB_WAIT_MS);
    id = tc_expect_publish(s, TB_WAIT_MS, .topic = "eo/t", .payload = "second", .qos = 2);
    tc_sendp(s, pk_pubrec(id));
    tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s, pk_pubcomp(id));
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* QoS 1: after PUBACK, a PUBLISH with the same id is a new publication, whatever its DUP
 * flag; the incoming DUP is not propagated to subscribers.
 * [v3.1.1 MQTT-4.3.2-2] [v3.1.1 MQTT-3.3.1-3] */
Test(publish, qos1_same_id_after_puback_is_new)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "nid-sub", true, 60, false);
    tc_subscribe(s, 1, "nid/t", 1, 1);
    tc_client *p = tc_open(tb_port(b), "nid-pub", true, 60, false);
    static const char *const payloads[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        tc_sendp(p, PK_PUBLISH(.topic = "nid/t", .payload = payloads[i], .qos = 1, .id = 3,
                               .dup = i == 2));
        tc_expectp(p, pk_puback(3), TB_WAIT_MS);
        uint16_t id =
            tc_expect_publish(s, TB_WAIT_MS, .topic = "nid/t", .payload = payloads[i], .qos = 1);
        tc_sendp(s, pk_puback(id));
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* Delivery QoS is min(published QoS, granted QoS): downgraded, never upgraded.
 * [v3.1.1 MQTT-3.8.4-6] */
Test(publish, qos_downgrade_to_granted)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "dg-sub", true, 60, false);
    tc_subscribe(s, 1, "dg/0", 0, 0);
    tc_subscribe(s, 2, "dg/1", 1, 1);
    tc_subscribe(s, 3, "dg/2", 2, 2);
    tc_client *p = tc_open(tb_port(b), "dg-pub", true, 60, false);
    static const struct {
        const char *topic;
        uint8_t pub_qos;
        uint8_t want_qos;
    } cases[] = {
        {"dg/0", 2, 0}, {"dg/0", 1, 0}, {"dg/1", 2, 1}, {"dg/1", 0, 0},
        {"dg/2", 1, 1}, {"dg/2", 0, 0}, {"dg/2", 2, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "case-%zu", i);
        tc_publish(p, cases[i].topic, payload, cases[i].pub_qos, false);
        uint16_t id = tc_expect_publish(s, TB_WAIT_MS, .topic = cases[i].topic, .payload = payload,
                                        .qos = cases[i].want_qos);
        if (cases[i].want_qos == 1) {
            tc_sendp(s, pk_puback(id));
        } else if (cases[i].want_qos == 2) {
            tc_sendp(s, pk_pubrec(id));
            tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
            tc_sendp(s, pk_pubcomp(id));
        }
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* A publisher with no matching subscriber still gets the full acknowledgement flow.
 * [v3.1.1 MQTT-3.3.4-1] [v3.1.1 MQTT-3.3.5-2] */
Test(publish, no_subscribers_still_acked)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "lonely", true, 60, false);
    tc_publish(p, "nobody/listens", "x", 1, false);
    tc_publish(p, "nobody/listens", "y", 2, false);
    tc_disconnect(p);
    tb_stop(b);
}

/* A client subscribed to a topic receives its own publications (v3.1.1 has no No Local).
 * [v3.1.1 MQTT-4.5.0-1] */
Test(publish, own_messages_delivered)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "echo", true, 60, false);
    tc_subscribe(c, 1, "echo/t", 0, 0);
    tc_sendp(c, PK_PUBLISH(.topic = "echo/t", .payload = "me"));
    tc_expect_publish(c, TB_WAIT_MS, .topic = "echo/t", .payload = "me");
    tc_disconnect(c);
    tb_stop(b);
}

/* Open a persistent subscriber, have a message published to it at qos, and return the
 * subscriber (the message is received and NOT acknowledged). */
static tc_client *unacked_delivery(mql_broker *b, const char *cid, const char *topic, uint8_t qos,
                                   uint16_t *id_out)
{
    tc_client *s = tc_open(tb_port(b), cid, false, 60, false);
    tc_subscribe(s, 1, topic, qos, qos);
    tc_client *p = tc_open(tb_port(b), "redeliver-pub", true, 60, false);
    tc_publish(p, topic, "again", qos, false);
    tc_disconnect(p);
    *id_out = tc_expect_publish(s, TB_WAIT_MS, .topic = topic, .payload = "again", .qos = qos);
    return s;
}

/* An unacknowledged QoS 1 PUBLISH is re-sent on reconnect with clean session 0, with the
 * same packet id and DUP 1, and not again after PUBACK.
 * [v3.1.1 MQTT-4.4.0-1] [v3.1.1 MQTT-3.3.1-1] [v3.1.1 MQTT-2.3.1-3] */
Test(publish, qos1_redelivered_with_dup_on_reconnect)
{
    mql_broker *b = tb_start(NULL);
    uint16_t id;
    tc_client *s = unacked_delivery(b, "rd-q1", "rd/q1", 1, &id);
    tc_close(s);
    s = tc_open(tb_port(b), "rd-q1", false, 60, true);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "rd/q1", .payload = "again", .qos = 1, .dup = true,
                      .id = id);
    tc_sendp(s, pk_puback(id));
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    /* And once acknowledged it is gone for good. */
    s = tc_open(tb_port(b), "rd-q1", false, 60, true);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/* An unacknowledged QoS 2 PUBLISH (no PUBREC yet) is re-sent on reconnect with DUP 1 and the
 * same id. [v3.1.1 MQTT-4.4.0-1] [v3.1.1 MQTT-3.3.1-1] */
Test(publish, qos2_redelivered_with_dup_on_reconnect)
{
    mql_broker *b = tb_start(NULL);
    uint16_t id;
    tc_client *s = unacked_delivery(b, "rd-q2", "rd/q2", 2, &id);
    tc_close(s);
    s = tc_open(tb_port(b), "rd-q2", false, 60, true);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "rd/q2", .payload = "again", .qos = 2, .dup = true,
                      .id = id);
    tc_sendp(s, pk_pubrec(id));
    tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s, pk_pubcomp(id));
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/* After PUBREC the broker has sent PUBREL; on reconnect it re-sends the PUBREL (same id),
 * never the PUBLISH. [v3.1.1 MQTT-4.4.0-1] [v3.1.1 MQTT-4.3.3-1] */
Test(publish, pubrel_redelivered_on_reconnect)
{
    mql_broker *b = tb_start(NULL);
    uint16_t id;
    tc_client *s = unacked_delivery(b, "rd-rel", "rd/rel", 2, &id);
    tc_sendp(s, pk_pubrec(id));
    tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
    tc_close(s);
    s = tc_open(tb_port(b), "rd-rel", false, 60, true);
    tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s, pk_pubcomp(id));
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/* Re-sent PUBLISH packets come in the order of the originals, with their original ids; ids
 * of messages in flight together are distinct.
 * [v3.1.1 MQTT-4.6.0-1] [v3.1.1 MQTT-4.4.0-1] [v3.1.1 MQTT-2.3.1-4] */
Test(publish, redelivery_keeps_order)
{
    /* Three messages must be in flight at once (3.1.1 has no Receive Maximum). */
    mql_broker *b = tb_start("max_inflight_messages 20");
    tc_client *s = tc_open(tb_port(b), "rd-order", false, 60, false);
    tc_subscribe(s, 1, "rdo/t", 1, 1);
    tc_client *p = tc_open(tb_port(b), "rd-order-pub", true, 60, false);
    static const char *const payloads[] = {"m1", "m2", "m3"};
    uint16_t ids[3];
    for (int i = 0; i < 3; i++) {
        tc_publish(p, "rdo/t", payloads[i], 1, false);
    }
    for (int i = 0; i < 3; i++) {
        ids[i] =
            tc_expect_publish(s, TB_WAIT_MS, .topic = "rdo/t", .payload = payloads[i], .qos = 1);
        for (int k = 0; k < i; k++) {
            cr_assert_neq(ids[i], ids[k], "packet id %u used twice while in flight", ids[i]);
        }
    }
    tc_close(s);
    s = tc_open(tb_port(b), "rd-order", false, 60, true);
    for (int i = 0; i < 3; i++) {
        tc_expect_publish(s, TB_WAIT_MS, .topic = "rdo/t", .payload = payloads[i], .qos = 1,
                          .dup = true, .id = ids[i]);
    }
    for (int i = 0; i < 3; i++) {
        tc_sendp(s, pk_puback(ids[i]));
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

#define ORDER_N 20

/* Twenty pipelined QoS 1 PUBLISH: PUBACKs in order, and the subscriber receives them in
 * order. [v3.1.1 MQTT-4.6.0-2] [v3.1.1 MQTT-4.6.0-5] [v3.1.1 MQTT-4.6.0-6] */
Test(publish, qos1_ordering)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "ord1-sub", true, 60, false);
    tc_subscribe(s, 1, "ord/1", 1, 1);
    tc_client *p = tc_open(tb_port(b), "ord1-pub", true, 60, false);
    tb_pkt burst = {0};
    for (int i = 0; i < ORDER_N; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "n%02d", i);
        tb_pkt one =
            PK_PUBLISH(.topic = "ord/1", .payload = payload, .qos = 1, .id = (uint16_t)(100 + i));
        pk_put_bytes(&burst, one.b, one.len);
    }
    tc_sendp(p, burst);
    for (int i = 0; i < ORDER_N; i++) {
        tc_expectp(p, pk_puback((uint16_t)(100 + i)), TB_WAIT_MS);
    }
    for (int i = 0; i < ORDER_N; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "n%02d", i);
        uint16_t id =
            tc_expect_publish(s, TB_WAIT_MS, .topic = "ord/1", .payload = payload, .qos = 1);
        tc_sendp(s, pk_puback(id));
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/*
 * Ten pipelined QoS 2 PUBLISH: PUBRECs in order; the subscriber receives them in order and
 * the broker's PUBRELs come in the order of the subscriber's PUBRECs. The subscriber
 * acknowledges as packets arrive, so any in-flight window size works.
 * [v3.1.1 MQTT-4.6.0-3] [v3.1.1 MQTT-4.6.0-4] [v3.1.1 MQTT-4.6.0-6]
 */
Test(publish, qos2_ordering)
{
    enum { N = 10 };
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "ord2-sub", true, 60, false);
    tc_subscribe(s, 1, "ord/2", 2, 2);
    tc_client *p = tc_open(tb_port(b), "ord2-pub", true, 60, false);
    tb_pkt burst = {0};
    for (int i = 0; i < N; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "n%02d", i);
        tb_pkt one =
            PK_PUBLISH(.topic = "ord/2", .payload = payload, .qos = 2, .id = (uint16_t)(200 + i));
        pk_put_bytes(&burst, one.b, one.len);
    }
    tc_sendp(p, burst);
    for (int i = 0; i < N; i++) {
        tc_expectp(p, pk_pubrec((uint16_t)(200 + i)), TB_WAIT_MS);
    }
    tb_pkt rels = {0};
    for (int i = 0; i < N; i++) {
        tb_pkt one = pk_pubrel((uint16_t)(200 + i));
        pk_put_bytes(&rels, one.b, one.len);
    }
    tc_sendp(p, rels);
    /* PUBCOMP order is not mandated: collect the set. */
    bool comp[N] = {false};
    for (int i = 0; i < N; i++) {
        uint8_t buf[16];
        int r = tc_recv_packet(p, buf, sizeof buf, TB_WAIT_MS);
        cr_assert(r == 4 && buf[0] == 0x70 && buf[1] == 0x02, "expected PUBCOMP, got %d", r);
        int k = ((buf[2] << 8) | buf[3]) - 200;
        cr_assert(k >= 0 && k < N && !comp[k], "unexpected PUBCOMP id %d", k + 200);
        comp[k] = true;
    }

    uint16_t rec_order[N];
    int n_pub = 0;
    int n_rel = 0;
    while (n_pub < N || n_rel < N) {
        uint8_t buf[128];
        int r = tc_recv_packet(s, buf, sizeof buf, TB_WAIT_MS);
        cr_assert(r > 0, "subscriber: expected PUBLISH or PUBREL (%d of each so far)", n_pub);
        if ((buf[0] >> 4) == 3) {
            pk_publish_info in;
            char want[16];
            snprintf(want, sizeof want, "n%02d", n_pub);
            cr_assert(pk_parse_publish(buf, (size_t)r, &in) && in.qos == 2 && !in.dup);
            cr_assert(in.payload_len == 3 && memcmp(in.payload, want, 3) == 0,
                      "message %d out of order: got '%.*s'", n_pub, (int)in.payload_len,
                      (const char *)in.payload);
            rec_order[n_pub++] = in.id;
            tc_sendp(s, pk_pubrec(in.id));
        } else {
            cr_assert(r == 4 && buf[0] == 0x62 && buf[1] == 0x02, "expected PUBREL, got 0x%02x",
                      buf[0]);
            uint16_t id = (uint16_t)((buf[2] << 8) | buf[3]);
            cr_assert(n_rel < n_pub && id == rec_order[n_rel],
                      "PUBREL %u not in the order of the PUBRECs", id);
            n_rel++;
            tc_sendp(s, pk_pubcomp(id));
        }
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/*
 * Overlapping subscriptions (a/+ QoS 0, a/# QoS 2, a/x QoS 1): the message is delivered
 * respecting the maximum QoS of the matches, so at least one copy has QoS 2; the server MAY
 * send one copy per matching subscription, each at most at that subscription's QoS.
 * [v3.1.1 MQTT-3.3.5-1]
 */
Test(publish, overlapping_subscriptions_max_qos)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "ovl-sub", true, 60, false);
    tc_subscribe(s, 1, "ovl/+", 0, 0);
    tc_subscribe(s, 2, "ovl/#", 2, 2);
    tc_subscribe(s, 3, "ovl/x", 1, 1);
    tc_client *p = tc_open(tb_port(b), "ovl-pub", true, 60, false);
    tc_publish(p, "ovl/x", "multi", 2, false);

    int copies = 0;
    int max_qos = -1;
    for (;;) {
        uint8_t buf[128];
        pk_publish_info in;
        if (!tc_recv_publish(s, buf, sizeof buf, &in, copies == 0 ? TB_WAIT_MS : TB_QUIET_MS)) {
            break;
        }
        copies++;
        cr_assert(in.topic_len == 5 && memcmp(in.topic, "ovl/x", 5) == 0 && in.payload_len == 5 &&
                  memcmp(in.payload, "multi", 5) == 0 && !in.retain);
        if (in.qos > max_qos) {
            max_qos = in.qos;
        }
        if (in.qos == 1) {
            tc_sendp(s, pk_puback(in.id));
        } else if (in.qos == 2) {
            tc_sendp(s, pk_pubrec(in.id));
            tc_expectp(s, pk_pubrel(in.id), TB_WAIT_MS);
            tc_sendp(s, pk_pubcomp(in.id));
        }
    }
    cr_assert_geq(copies, 1, "message not delivered");
    cr_assert_leq(copies, 3, "more copies (%d) than matching subscriptions", copies);
    cr_assert_eq(max_qos, 2, "no copy at the maximum QoS of the matching subscriptions");
    tc_ping(s);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* Payloads of 0, 300 (2-byte Remaining Length) and 20000 bytes (3-byte Remaining Length),
 * binary with NUL bytes, arrive byte for byte. [v3.1.1 MQTT-3.3.2-3] */
Test(publish, payload_sizes)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "size-sub", true, 60, false);
    tc_subscribe(s, 1, "size/t", 0, 0);
    tc_client *p = tc_open(tb_port(b), "size-pub", true, 60, false);
    static const size_t sizes[] = {0, 1, 300, 20000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        uint8_t *payload = malloc(n + 1);
        size_t cap = n + 64;
        uint8_t *pkt = malloc(cap);
        cr_assert(payload != NULL && pkt != NULL);
        for (size_t k = 0; k < n; k++) {
            payload[k] = (uint8_t)(k * 7);
        }
        size_t len = pk_publish_into(
            pkt, cap,
            &(pk_publish_opts){.topic = "size/t", .payload = n ? payload : NULL, .payload_len = n});
        cr_assert(len > 0);
        tc_send(p, pkt, len);
        tc_expect(s, pkt, len, TB_WAIT_MS);
        free(payload);
        free(pkt);
    }
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}
