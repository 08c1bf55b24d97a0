/*
 * test_connect.c - MQTT 3.1.1 CONNECT / CONNACK, black-box against the broker binary.
 *
 * Each test starts its own broker (tests/support/harness.h), sends raw bytes and asserts the
 * exact bytes that come back, or that the connection is closed with nothing sent. Covers
 * sections 3.1 and 3.2 of the specification: accepted CONNECT, protocol name and level,
 * Connect Flags validation, ClientID rules, a second CONNECT, packets before CONNECT, and
 * pipelining after CONNECT. Requirement ids are written [v3.1.1 MQTT-x.y.z-n] because v5
 * reuses the ids with other meanings.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(connect, .fini = tb_fini, .timeout = 30);

/* CONNECT body pieces for hand-made packets: protocol name "MQTT", level, flags, keepalive. */
static tb_pkt connect_head(uint8_t level, uint8_t flags)
{
    tb_pkt body = {0};
    pk_put_str(&body, "MQTT");
    pk_put_u8(&body, level);
    pk_put_u8(&body, flags);
    pk_put_u16(&body, 60);
    return body;
}

/* Send p on a fresh connection and assert the broker closes it without sending anything
 * (in particular no CONNACK [v3.1.1 MQTT-3.1.4-1]). */
static void expect_closed_without_connack(mql_broker *b, tb_pkt p)
{
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, p);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
}

/*
 * A well-formed CONNECT (written out byte by byte here, independent of the builders) with
 * clean session 1 is accepted: CONNACK 0x20 0x02 0x00 0x00 is the first packet, Session
 * Present 0. [v3.1.1 MQTT-3.1.4-4] [v3.1.1 MQTT-3.2.0-1] [v3.1.1 MQTT-3.2.2-1]
 */
Test(connect, accepted_exact_bytes)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    static const uint8_t connect[] = {0x10, 0x0E, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                                      0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, 'c', '1'};
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    tc_send(c, connect, sizeof connect);
    tc_expect(c, connack, sizeof connack, TB_WAIT_MS);
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/* The builder's CONNECT with user name, password and will is accepted (anonymous access on,
 * no password file). [v3.1.1 MQTT-3.1.2-9] [v3.1.1 MQTT-3.1.2-19] [v3.1.1 MQTT-3.1.2-21]
 * [v3.1.1 MQTT-3.1.3-1] */
Test(connect, accepted_with_will_and_credentials)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, PK_CONNECT(.client_id = "full", .clean = true, .keepalive = 30,
                           .will_topic = "w/full", .will_payload = "bye", .will_qos = 1,
                           .will_retain = false, .username = "user", .password = "secret"));
    tc_expectp(c, pk_connack(false, 0), TB_WAIT_MS);
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/* A 23-byte ClientID of 0-9a-zA-Z MUST be allowed. [v3.1.1 MQTT-3.1.3-5] */
Test(connect, client_id_23_chars_accepted)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "aZ0123456789bcdefghijkY", true, 60, false);
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/* An unsupported protocol level gets CONNACK 0x01 (Session Present 0), then the connection
 * is closed. [v3.1.1 MQTT-3.1.2-2] [v3.1.1 MQTT-3.2.2-4] */
Test(connect, bad_protocol_level)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, pk_connect_raw("MQTT", 0x06, 0x02, 60, "lvl"));
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x01};
    tc_expect(c, connack, sizeof connack, TB_WAIT_MS);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* A wrong protocol name: the server MAY close, and MUST NOT go on as MQTT 3.1.1, so there is
 * never a CONNACK 0x00; a refusing CONNACK (non-zero code) before the close is tolerated.
 * [v3.1.1 MQTT-3.1.2-1] */
Test(connect, bad_protocol_name)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, pk_connect_raw("MQTX", 4, 0x02, 60, "name"));
    uint8_t buf[64];
    int r = tc_recv_packet(c, buf, sizeof buf, TB_WAIT_MS);
    if (r >= 0) {
        cr_assert(r == 4 && buf[0] == 0x20 && buf[1] == 0x02 && buf[2] == 0x00 && buf[3] != 0,
                  "expected close or a refusing CONNACK, got a %d-byte packet type 0x%02x", r,
                  buf[0]);
        tc_expect_closed(c, TB_WAIT_MS);
    } else {
        cr_assert_eq(r, TC_CLOSED, "expected the broker to close the connection");
    }
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* A second CONNECT on the same connection is a protocol violation: closed.
 * [v3.1.1 MQTT-3.1.0-2] [v3.1.1 MQTT-4.8.0-1] */
Test(connect, second_connect_closes)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "twice", true, 60, false);
    tc_sendp(c, PK_CONNECT(.client_id = "twice", .clean = true, .keepalive = 60));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* The first packet MUST be CONNECT: anything else is closed with nothing sent.
 * [v3.1.1 MQTT-3.1.0-1] [v3.1.1 MQTT-3.2.0-1] */
Test(connect, first_packet_not_connect)
{
    mql_broker *b = tb_start(NULL);
    expect_closed_without_connack(b, pk_pingreq());
    expect_closed_without_connack(b, pk_subscribe1(1, "a/b", 0));
    expect_closed_without_connack(b, PK_PUBLISH(.topic = "a/b", .payload = "x"));
    expect_closed_without_connack(b, PK_PUBLISH(.topic = "a/b", .payload = "x", .qos = 1, .id = 1));
    expect_closed_without_connack(b, pk_disconnect());
    tb_assert_serves(b);
    tb_stop(b);
}

/* The reserved Connect Flags bit 0 MUST be zero; otherwise the connection is closed without
 * CONNACK. [v3.1.1 MQTT-3.1.2-3] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, reserved_flag_closes)
{
    mql_broker *b = tb_start(NULL);
    expect_closed_without_connack(b, pk_connect_raw("MQTT", 4, 0x03, 60, "rsv"));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Empty ClientID with clean session 0: CONNACK 0x02, then close.
 * [v3.1.1 MQTT-3.1.3-8] [v3.1.1 MQTT-3.2.2-4] */
Test(connect, empty_client_id_clean0_rejected)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, PK_CONNECT(.client_id = "", .clean = false, .keepalive = 60));
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x02};
    tc_expect(c, connack, sizeof connack, TB_WAIT_MS);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* Empty ClientID with clean session 1 is accepted and each such client gets its own unique
 * id: two of them stay connected side by side and both are served (a shared id would make
 * the second take over the first). [v3.1.1 MQTT-3.1.3-6] [v3.1.1 MQTT-3.1.3-7] */
Test(connect, empty_client_id_clean1_accepted)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c1 = tc_open(tb_port(b), "", true, 60, false);
    tc_client *c2 = tc_open(tb_port(b), "", true, 60, false);
    tc_subscribe(c1, 1, "anon/t", 0, 0);
    tc_subscribe(c2, 1, "anon/t", 0, 0);
    tc_ping(c1);
    tc_ping(c2);
    tc_client *p = tc_open(tb_port(b), "anon-pub", true, 60, false);
    tc_publish(p, "anon/t", "hi", 1, false);
    tc_expect_publish(c1, TB_WAIT_MS, .topic = "anon/t", .payload = "hi");
    tc_expect_publish(c2, TB_WAIT_MS, .topic = "anon/t", .payload = "hi");
    tc_disconnect(c1);
    tc_disconnect(c2);
    tc_disconnect(p);
    tb_stop(b);
}

/* Password Flag set without User Name Flag: not a valid CONNECT, closed without CONNACK.
 * [v3.1.1 MQTT-3.1.2-22] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, password_without_username_closes)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt body = connect_head(4, 0x42);
    pk_put_str(&body, "pwonly");
    pk_put_str(&body, "secret");
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Will Flag 0 with Will QoS 1 set: closed without CONNACK.
 * [v3.1.1 MQTT-3.1.2-11] [v3.1.1 MQTT-3.1.2-13] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, will_qos_without_will_flag_closes)
{
    mql_broker *b = tb_start(NULL);
    expect_closed_without_connack(b, pk_connect_raw("MQTT", 4, 0x0A, 60, "wq"));
    expect_closed_without_connack(b, pk_connect_raw("MQTT", 4, 0x12, 60, "wq2"));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Will Flag 0 with Will Retain set: closed without CONNACK.
 * [v3.1.1 MQTT-3.1.2-15] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, will_retain_without_will_flag_closes)
{
    mql_broker *b = tb_start(NULL);
    expect_closed_without_connack(b, pk_connect_raw("MQTT", 4, 0x22, 60, "wr"));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Will QoS 3 is invalid. [v3.1.1 MQTT-3.1.2-14] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, will_qos3_closes)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt body = connect_head(4, 0x1E);
    pk_put_str(&body, "wq3");
    pk_put_str(&body, "will/t");
    pk_put_str(&body, "x");
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Flags announce fields the payload does not have (ClientID, Will, User Name, Password):
 * malformed, closed without CONNACK. [v3.1.1 MQTT-3.1.3-3] [v3.1.1 MQTT-3.1.2-9]
 * [v3.1.1 MQTT-3.1.2-19] [v3.1.1 MQTT-3.1.2-21] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, missing_payload_fields_close)
{
    mql_broker *b = tb_start(NULL);
    /* No payload at all: the ClientID MUST be present [v3.1.1 MQTT-3.1.3-3]. */
    tb_pkt noid = connect_head(4, 0x02);
    expect_closed_without_connack(b, pk_frame(0x10, &noid));
    expect_closed_without_connack(b, pk_connect_raw("MQTT", 4, 0x06, 60, "nowill"));
    expect_closed_without_connack(b, pk_connect_raw("MQTT", 4, 0x82, 60, "nouser"));
    tb_pkt body = connect_head(4, 0xC2);
    pk_put_str(&body, "nopass");
    pk_put_str(&body, "user");
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Flags say no User Name / Password but the payload has extra bytes: a field that MUST NOT be
 * present, closed without CONNACK. [v3.1.1 MQTT-3.1.2-18] [v3.1.1 MQTT-3.1.2-20]
 * [v3.1.1 MQTT-3.1.4-1] */
Test(connect, extra_payload_bytes_close)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt body = connect_head(4, 0x02);
    pk_put_str(&body, "extra");
    pk_put_str(&body, "user");
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    tb_assert_serves(b);
    tb_stop(b);
}

/* A ClientID that is not well-formed UTF-8, or holds U+0000: closed without CONNACK.
 * [v3.1.1 MQTT-1.5.3-1] [v3.1.1 MQTT-1.5.3-2] [v3.1.1 MQTT-3.1.3-4] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, invalid_utf8_client_id_closes)
{
    mql_broker *b = tb_start(NULL);
    static const char *const bad[] = {"id\xFF", "id\xC0\xAF", "id\xED\xA0\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_closed_without_connack(b, pk_connect_raw("MQTT", 4, 0x02, 60, bad[i]));
    }
    tb_pkt body = connect_head(4, 0x02);
    pk_put_bin(&body, "a\0b", 3);
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Will Topic and User Name MUST be UTF-8 too: ill-formed ones are closed without CONNACK.
 * [v3.1.1 MQTT-3.1.3-10] [v3.1.1 MQTT-3.1.3-11] [v3.1.1 MQTT-1.5.3-1] [v3.1.1 MQTT-3.1.4-1] */
Test(connect, invalid_utf8_will_topic_or_username_closes)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt body = connect_head(4, 0x06);
    pk_put_str(&body, "badwill");
    pk_put_str(&body, "will/\xFF");
    pk_put_str(&body, "x");
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    body = connect_head(4, 0x82);
    pk_put_str(&body, "baduser");
    pk_put_str(&body, "user\xC0\xAF");
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    tb_assert_serves(b);
    tb_stop(b);
}

/* A CONNECT cut short (ClientID length beyond the packet end): closed without CONNACK.
 * [v3.1.1 MQTT-3.1.4-1] */
Test(connect, truncated_connect_closes)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt body = connect_head(4, 0x02);
    pk_put_u16(&body, 10);
    pk_put_bytes(&body, "abc", 3);
    expect_closed_without_connack(b, pk_frame(0x10, &body));
    /* Remaining Length too short for the variable header. */
    static const uint8_t shortvh[] = {0x10, 0x04, 0x00, 0x04, 'M', 'Q'};
    expect_closed_without_connack(b, pk_bytes(shortvh, sizeof shortvh));
    tb_assert_serves(b);
    tb_stop(b);
}

/* Clients need not wait for CONNACK: CONNECT, SUBSCRIBE and PINGREQ in one write are answered
 * in order, CONNACK first. [v3.1.1 MQTT-3.2.0-1] [v3.1.1 MQTT-3.8.4-1] [v3.1.1 MQTT-3.12.4-1] */
Test(connect, pipelined_after_connect)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tb_pkt all = PK_CONNECT(.client_id = "pipe", .clean = true, .keepalive = 60);
    tb_pkt sub = pk_subscribe1(0x0A0B, "pipe/t", 1);
    tb_pkt ping = pk_pingreq();
    pk_put_bytes(&all, sub.b, sub.len);
    pk_put_bytes(&all, ping.b, ping.len);
    tc_sendp(c, all);
    tc_expectp(c, pk_connack(false, 0), TB_WAIT_MS);
    static const uint8_t suback[] = {0x90, 0x03, 0x0A, 0x0B, 0x01};
    tc_expect(c, suback, sizeof suback, TB_WAIT_MS);
    tc_expectp(c, pk_pingresp(), TB_WAIT_MS);
    tc_disconnect(c);
    tb_stop(b);
}

/* After a refused CONNECT nothing the client sent behind it is processed: a retained PUBLISH
 * pipelined after a CONNECT with a bad protocol level is not stored.
 * [v3.1.1 MQTT-3.1.4-5] [v3.1.1 MQTT-3.1.2-2] */
Test(connect, refused_connect_ignores_following_data)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tb_pkt all = pk_connect_raw("MQTT", 0x06, 0x02, 60, "refused");
    tb_pkt pub = PK_PUBLISH(.topic = "refused/t", .payload = "must not be kept", .retain = true);
    pk_put_bytes(&all, pub.b, pub.len);
    tc_sendp(c, all);
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x01};
    tc_expect(c, connack, sizeof connack, TB_WAIT_MS);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tc_client *s = tc_open(tb_port(b), "refused-check", true, 60, false);
    tc_subscribe(s, 1, "refused/t", 0, 0);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/* DISCONNECT ends the connection: the broker closes it and sends nothing.
 * [v3.1.1 MQTT-3.14.4-1] [v3.1.1 MQTT-3.14.4-2] */
Test(connect, disconnect_closes)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "bye", true, 60, false);
    tc_sendp(c, pk_disconnect());
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_stop(b);
}

/* SIGTERM shuts the broker down cleanly (exit status 0) while clients are connected.
 * (Operational requirement from DESIGN.md, not from the MQTT specification.) */
Test(connect, sigterm_exits_zero)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "term", false, 60, false);
    tc_subscribe(c, 1, "term/t", 1, 1);
    cr_assert_eq(tb_stop(b), 0, "broker exit status after SIGTERM");
    tc_close(c);
}
