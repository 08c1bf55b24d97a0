/*
 * test_retain.c - MQTT 3.1.1 retained messages, black-box.
 *
 * Storing, replacing and clearing retained messages, the RETAIN flag on delivery (1 for a
 * new subscription, 0 for established ones), QoS of retained deliveries, wildcard
 * subscriptions collecting several retained messages and re-sending on re-subscribe.
 * Specification sections 3.3.1.3 and 3.8.4. To know a QoS 0 PUBLISH has been processed
 * before subscribing, the publisher follows it with PINGREQ and waits for PINGRESP (packets
 * of one connection are handled in order).
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(retain, .fini = tb_fini, .timeout = 30);

/* Publish a retained message at qos and wait until the broker has processed it. */
static void put_retained(tc_client *p, const char *topic, const char *payload, uint8_t qos)
{
    tc_publish(p, topic, payload, qos, true);
    tc_ping(p);
}

/* A retained message is stored and sent to a new subscriber with RETAIN 1 (exact bytes).
 * [v3.1.1 MQTT-3.3.1-5] [v3.1.1 MQTT-3.3.1-6] [v3.1.1 MQTT-3.3.1-8] */
Test(retain, delivered_on_subscribe_with_retain_flag)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "ret-pub", true, 60, false);
    put_retained(p, "r/a", "v1", 0);
    tc_client *s = tc_open(tb_port(b), "ret-sub", true, 60, false);
    tc_subscribe(s, 1, "r/a", 1, 1);
    static const uint8_t want[] = {0x31, 0x07, 0x00, 0x03, 'r', '/', 'a', 'v', '1'};
    tc_expect(s, want, sizeof want, TB_WAIT_MS);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* An established subscriber gets a retained PUBLISH with RETAIN 0.
 * [v3.1.1 MQTT-3.3.1-9] */
Test(retain, established_subscriber_gets_retain0)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "ret-live", true, 60, false);
    tc_subscribe(s, 1, "r/live", 0, 0);
    tc_client *p = tc_open(tb_port(b), "ret-live-pub", true, 60, false);
    put_retained(p, "r/live", "now", 1);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "r/live", .payload = "now", .retain = false);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* A new retained message replaces the old one. [v3.1.1 MQTT-3.3.1-5] */
Test(retain, replace)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "rep-pub", true, 60, false);
    put_retained(p, "r/rep", "v1", 1);
    put_retained(p, "r/rep", "v2", 1);
    tc_client *s = tc_open(tb_port(b), "rep-sub", true, 60, false);
    tc_subscribe(s, 1, "r/rep", 0, 0);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "r/rep", .payload = "v2", .retain = true);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* A retained PUBLISH with an empty payload goes to existing subscribers as normal (RETAIN 0,
 * empty payload), and removes the retained message: a new subscriber gets nothing.
 * [v3.1.1 MQTT-3.3.1-10] [v3.1.1 MQTT-3.3.1-11] */
Test(retain, clear_with_empty_payload)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "clr-pub", true, 60, false);
    put_retained(p, "r/clr", "v1", 1);
    tc_client *s1 = tc_open(tb_port(b), "clr-sub1", true, 60, false);
    tc_subscribe(s1, 1, "r/clr", 0, 0);
    tc_expect_publish(s1, TB_WAIT_MS, .topic = "r/clr", .payload = "v1", .retain = true);
    put_retained(p, "r/clr", "", 1);
    static const uint8_t empty[] = {0x30, 0x07, 0x00, 0x05, 'r', '/', 'c', 'l', 'r'};
    tc_expect(s1, empty, sizeof empty, TB_WAIT_MS);
    tc_client *s2 = tc_open(tb_port(b), "clr-sub2", true, 60, false);
    tc_subscribe(s2, 1, "r/clr", 0, 0);
    tc_expect_nothing(s2, TB_QUIET_MS);
    tc_disconnect(s1);
    tc_disconnect(s2);
    tc_disconnect(p);
    tb_stop(b);
}

/* An empty retained message on a topic with nothing retained is not stored either.
 * [v3.1.1 MQTT-3.3.1-11] */
Test(retain, empty_never_stored)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "emp-pub", true, 60, false);
    put_retained(p, "r/emp", "", 0);
    tc_client *s = tc_open(tb_port(b), "emp-sub", true, 60, false);
    tc_subscribe(s, 1, "r/emp", 0, 0);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* A PUBLISH with RETAIN 0 neither stores nor replaces nor removes the retained message.
 * [v3.1.1 MQTT-3.3.1-12] */
Test(retain, retain0_does_not_touch_retained)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "keep-pub", true, 60, false);
    put_retained(p, "r/keep", "keep", 1);
    tc_publish(p, "r/keep", "transient", 1, false);
    tc_publish(p, "r/keep", "", 1, false);
    tc_publish(p, "r/none", "transient", 1, false);
    tc_client *s = tc_open(tb_port(b), "keep-sub", true, 60, false);
    tc_subscribe(s, 1, "r/keep", 0, 0);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "r/keep", .payload = "keep", .retain = true);
    tc_subscribe(s, 2, "r/none", 0, 0);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* The retained message keeps its QoS; delivery is at min(stored QoS, granted QoS).
 * [v3.1.1 MQTT-3.3.1-5] [v3.1.1 MQTT-3.8.4-6] */
Test(retain, qos_downgraded_on_delivery)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "rq-pub", true, 60, false);
    put_retained(p, "r/q2", "two", 2);
    put_retained(p, "r/q1", "one", 1);

    tc_client *s0 = tc_open(tb_port(b), "rq-s0", true, 60, false);
    tc_subscribe(s0, 1, "r/q2", 0, 0);
    tc_expect_publish(s0, TB_WAIT_MS, .topic = "r/q2", .payload = "two", .qos = 0, .retain = true);

    tc_client *s1 = tc_open(tb_port(b), "rq-s1", true, 60, false);
    tc_subscribe(s1, 1, "r/q2", 1, 1);
    uint16_t id = tc_expect_publish(s1, TB_WAIT_MS, .topic = "r/q2", .payload = "two", .qos = 1,
                                    .retain = true);
    tc_sendp(s1, pk_puback(id));

    tc_client *s2 = tc_open(tb_port(b), "rq-s2", true, 60, false);
    tc_subscribe(s2, 1, "r/q2", 2, 2);
    id = tc_expect_publish(s2, TB_WAIT_MS, .topic = "r/q2", .payload = "two", .qos = 2,
                           .retain = true);
    tc_sendp(s2, pk_pubrec(id));
    tc_expectp(s2, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s2, pk_pubcomp(id));
    tc_subscribe(s2, 2, "r/q1", 2, 2);
    id = tc_expect_publish(s2, TB_WAIT_MS, .topic = "r/q1", .payload = "one", .qos = 1,
                           .retain = true);
    tc_sendp(s2, pk_puback(id));
    tc_expect_nothing(s2, TB_QUIET_MS);

    tc_disconnect(s0);
    tc_disconnect(s1);
    tc_disconnect(s2);
    tc_disconnect(p);
    tb_stop(b);
}

/* A retained QoS 0 message discards the one retained before; the server SHOULD keep the new
 * one but MAY drop it, so a new subscriber gets "new" or nothing, never "old".
 * [v3.1.1 MQTT-3.3.1-7] */
Test(retain, qos0_retained_discards_previous)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "r0-pub", true, 60, false);
    put_retained(p, "r/q0", "old", 1);
    put_retained(p, "r/q0", "new", 0);
    tc_client *s = tc_open(tb_port(b), "r0-sub", true, 60, false);
    tc_subscribe(s, 1, "r/q0", 1, 1);
    uint8_t buf[128];
    pk_publish_info in;
    if (tc_recv_publish(s, buf, sizeof buf, &in, TB_QUIET_MS)) {
        cr_assert(
            in.payload_len == 3 && memcmp(in.payload, "new", 3) == 0 && in.retain && in.qos == 0,
            "got retained '%.*s' qos %u", (int)in.payload_len, (const char *)in.payload, in.qos);
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* A wildcard subscription gets the retained message of every matching topic (in any order)
 * and none of the others. [v3.1.1 MQTT-3.3.1-6] */
Test(retain, wildcard_subscription_gets_all_matching)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "rw-pub", true, 60, false);
    put_retained(p, "w/1", "one", 1);
    put_retained(p, "w/2", "two", 1);
    put_retained(p, "w/3/x", "deep", 1);
    put_retained(p, "other", "no", 1);
    tc_client *s = tc_open(tb_port(b), "rw-sub", true, 60, false);
    tc_subscribe(s, 1, "w/+", 0, 0);
    bool got1 = false;
    bool got2 = false;
    for (int i = 0; i < 2; i++) {
        uint8_t buf[128];
        pk_publish_info in;
        cr_assert(tc_recv_publish(s, buf, sizeof buf, &in, TB_WAIT_MS), "retained %d missing", i);
        cr_assert(in.retain && in.qos == 0 && in.topic_len == 3);
        if (memcmp(in.topic, "w/1", 3) == 0) {
            cr_assert(!got1 && in.payload_len == 3 && memcmp(in.payload, "one", 3) == 0);
            got1 = true;
        } else {
            cr_assert(!got2 && memcmp(in.topic, "w/2", 3) == 0 && in.payload_len == 3 &&
                      memcmp(in.payload, "two", 3) == 0);
            got2 = true;
        }
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* Subscribing again to an identical filter re-sends the matching retained messages.
 * [v3.1.1 MQTT-3.8.4-3] */
Test(retain, resubscribe_resends_retained)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open(tb_port(b), "rr-pub", true, 60, false);
    put_retained(p, "r/rr", "again", 0);
    tc_client *s = tc_open(tb_port(b), "rr-sub", true, 60, false);
    tc_subscribe(s, 1, "r/rr", 0, 0);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "r/rr", .payload = "again", .retain = true);
    tc_subscribe(s, 2, "r/rr", 0, 0);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "r/rr", .payload = "again", .retain = true);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}
