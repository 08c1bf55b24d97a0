/*
 * test_will.c - MQTT 3.1.1 Will Messages, black-box.
 *
 * The will is published when the network connection ends without DISCONNECT: client closes
 * the socket, keepalive expires, the server closes on a protocol error, or a takeover closes
 * the old connection; it is discarded on DISCONNECT; Will Retain and Will QoS are honoured.
 * Specification section 3.1.2.5 - 3.1.2.7 and 3.14.4.
 */
#include <criterion/criterion.h>

#include "harness.h"

TestSuite(will, .fini = tb_fini, .timeout = 30);

static tc_client *open_with_will(mql_broker *b, const char *cid, uint16_t keepalive,
                                 const char *topic, const char *payload, uint8_t qos, bool retain)
{
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, PK_CONNECT(.client_id = cid, .clean = true, .keepalive = keepalive,
                           .will_topic = topic, .will_payload = payload, .will_qos = qos,
                           .will_retain = retain));
    tc_expectp(c, pk_connack(false, 0), TB_WAIT_MS);
    return c;
}

/* Socket closed without DISCONNECT: the will is published, as a non-retained message.
 * [v3.1.1 MQTT-3.1.2-8] [v3.1.1 MQTT-3.1.2-16] */
Test(will, published_on_abnormal_close)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "will-sub", true, 60, false);
    tc_subscribe(s, 1, "will/t", 0, 0);
    tc_client *w = open_with_will(b, "will-client", 60, "will/t", "gone", 0, false);
    tc_close(w);
    static const uint8_t want[] = {0x30, 0x0C, 0x00, 0x06, 'w', 'i', 'l',
                                   'l',  '/',  't',  'g',  'o', 'n', 'e'};
    tc_expect(s, want, sizeof want, TB_WAIT_MS);
    tc_expect_nothing(s, TB_QUIET_MS);
    /* Not retained: a later subscriber gets nothing. */
    tc_client *s2 = tc_open(tb_port(b), "will-sub2", true, 60, false);
    tc_subscribe(s2, 1, "will/t", 0, 0);
    tc_expect_nothing(s2, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(s2);
    tb_stop(b);
}

/* DISCONNECT discards the will. [v3.1.1 MQTT-3.1.2-10] [v3.1.1 MQTT-3.14.4-3] */
Test(will, not_published_on_disconnect)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "nw-sub", true, 60, false);
    tc_subscribe(s, 1, "will/nw", 0, 0);
    tc_client *w = open_with_will(b, "nw-client", 60, "will/nw", "gone", 0, false);
    tc_disconnect(w);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/* Will Retain 1: published as a retained message (existing subscribers see RETAIN 0, a later
 * subscriber gets it with RETAIN 1). [v3.1.1 MQTT-3.1.2-17] [v3.1.1 MQTT-3.3.1-8]
 * [v3.1.1 MQTT-3.3.1-9] */
Test(will, retained_will)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "rw-sub", true, 60, false);
    tc_subscribe(s, 1, "will/r", 1, 1);
    tc_client *w = open_with_will(b, "rw-client", 60, "will/r", "bye", 1, true);
    tc_close(w);
    uint16_t id = tc_expect_publish(s, TB_WAIT_MS, .topic = "will/r", .payload = "bye", .qos = 1);
    tc_sendp(s, pk_puback(id));
    tc_client *s2 = tc_open(tb_port(b), "rw-sub2", true, 60, false);
    tc_subscribe(s2, 1, "will/r", 1, 1);
    id = tc_expect_publish(s2, TB_WAIT_MS, .topic = "will/r", .payload = "bye", .qos = 1,
                           .retain = true);
    tc_sendp(s2, pk_puback(id));
    tc_disconnect(s);
    tc_disconnect(s2);
    tb_stop(b);
}

/* Will QoS is used for the will publication, downgraded to the subscription's QoS.
 * [v3.1.1 MQTT-3.1.2-14] [v3.1.1 MQTT-3.8.4-6] */
Test(will, will_qos)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s2 = tc_open(tb_port(b), "wq-sub2", true, 60, false);
    tc_subscribe(s2, 1, "will/q", 2, 2);
    tc_client *s1 = tc_open(tb_port(b), "wq-sub1", true, 60, false);
    tc_subscribe(s1, 1, "will/q", 1, 1);
    tc_client *w = open_with_will(b, "wq-client", 60, "will/q", "q2", 2, false);
    tc_close(w);
    uint16_t id = tc_expect_publish(s2, TB_WAIT_MS, .topic = "will/q", .payload = "q2", .qos = 2);
    tc_sendp(s2, pk_pubrec(id));
    tc_expectp(s2, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s2, pk_pubcomp(id));
    id = tc_expect_publish(s1, TB_WAIT_MS, .topic = "will/q", .payload = "q2", .qos = 1);
    tc_sendp(s1, pk_puback(id));
    tc_disconnect(s1);
    tc_disconnect(s2);
    tb_stop(b);
}

/* Keepalive expiry (1 s, nothing sent): the server closes the connection and publishes the
 * will. [v3.1.1 MQTT-3.1.2-24] [v3.1.1 MQTT-3.1.2-8] */
Test(will, published_on_keepalive_timeout)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "kw-sub", true, 60, false);
    tc_subscribe(s, 1, "will/ka", 0, 0);
    tc_client *w = open_with_will(b, "kw-client", 1, "will/ka", "timeout", 0, false);
    tc_expect_publish(s, 3500, .topic = "will/ka", .payload = "timeout");
    tc_expect_closed(w, TB_WAIT_MS);
    tc_close(w);
    tc_disconnect(s);
    tb_stop(b);
}

/* The server closes the connection because of a protocol error (a PUBLISH with QoS 3): the
 * will is published. [v3.1.1 MQTT-3.1.2-8] [v3.1.1 MQTT-3.3.1-4] */
Test(will, published_on_protocol_error)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "pw-sub", true, 60, false);
    tc_subscribe(s, 1, "will/pe", 0, 0);
    tc_client *w = open_with_will(b, "pw-client", 60, "will/pe", "violation", 0, false);
    static const uint8_t qos3[] = {0x36, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01};
    tc_send(w, qos3, sizeof qos3);
    tc_expect_closed(w, TB_WAIT_MS);
    tc_close(w);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "will/pe", .payload = "violation");
    tc_disconnect(s);
    tb_stop(b);
}

/* A takeover closes the old network connection without DISCONNECT: its will is published
 * (once); the new connection's own will is not. [v3.1.1 MQTT-3.1.4-2] [v3.1.1 MQTT-3.1.2-8] */
Test(will, published_on_takeover)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "tw-sub", true, 60, false);
    tc_subscribe(s, 1, "will/tk", 0, 0);
    tc_client *w1 = open_with_will(b, "tw-client", 60, "will/tk", "old", 0, false);
    tc_client *w2 = open_with_will(b, "tw-client", 60, "will/tk", "new", 0, false);
    tc_expect_closed(w1, TB_WAIT_MS);
    tc_close(w1);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "will/tk", .payload = "old");
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(w2);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/* A client that sends DISCONNECT and reconnects at once can have its new CONNECT handled
 * before the old connection's DISCONNECT: that DISCONNECT, arriving on the old connection
 * right after the takeover, still deletes its will (the broker reads the old connection a
 * little longer before it publishes the will). mosquitto's test suite checks the same
 * (07-will-reconnect-1273). [v3.1.1 MQTT-3.1.2-10] [MQTT-3.14.4-3] */
Test(will, disconnect_right_after_takeover_no_will)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "tr-sub", true, 60, false);
    tc_subscribe(s, 1, "will/tr", 0, 0);
    tc_client *w1 = open_with_will(b, "tr-client", 60, "will/tr", "old", 0, false);
    tc_client *w2 = open_with_will(b, "tr-client", 60, "will/tr", "new", 0, false);
    tc_sendp(w1, pk_disconnect()); /* after the takeover */
    tc_expect_closed(w1, TB_WAIT_MS);
    tc_close(w1);
    tc_expect_nothing(s, 1000);
    tc_disconnect(w2);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/* A zero-length will message is allowed and published as an empty PUBLISH; once published
 * the will is gone (a later clean close of the same ClientID without will sends nothing).
 * [v3.1.1 MQTT-3.1.2-8] [v3.1.1 MQTT-3.1.2-10] [v3.1.1 MQTT-3.1.2-12] */
Test(will, empty_will_payload_and_removed_after_publish)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "ew-sub", true, 60, false);
    tc_subscribe(s, 1, "will/e", 0, 0);
    tc_client *w = open_with_will(b, "ew-client", 60, "will/e", NULL, 0, false);
    tc_close(w);
    static const uint8_t want[] = {0x30, 0x08, 0x00, 0x06, 'w', 'i', 'l', 'l', '/', 'e'};
    tc_expect(s, want, sizeof want, TB_WAIT_MS);
    w = tc_open(tb_port(b), "ew-client", true, 60, false);
    tc_close(w);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}
