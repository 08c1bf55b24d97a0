/*
 * test_v5_connect.c - MQTT 5.0 CONNECT / CONNACK behaviour, black-box.
 *
 * Purpose: check what a v5 client sees when it connects: a well-formed CONNACK whose
 * properties announce the server's limits (Receive Maximum, Topic Alias Maximum), an
 * Assigned Client Identifier for an empty ClientID, a Server Keep Alive when the operator
 * caps the keep alive (`max_keepalive`), the reason codes of rejected CONNECTs (0x84
 * unsupported version, 0x81 malformed, 0x82 protocol error, 0x8C bad authentication method)
 * followed by a close, a second CONNECT answered by DISCONNECT 0x82, and a takeover answered
 * by DISCONNECT 0x8E to the old connection. Specification sections 3.1, 3.2, 3.14, 4.12, 4.13.
 *
 * Assumptions: every CONNACK and DISCONNECT the broker sends is parsed strictly by the
 * harness (pk_v5_parse), so a malformed property block fails whichever test receives it.
 * Where the specification only permits a reason code (MAY send CONNACK 0x81 ...), the tests
 * assert the code mqlite's design promises and say so; the close that follows is a MUST.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(v5_connect, .fini = tb_fini, .timeout = 30);

/* Offsets in a CONNECT built by pk_connect with a Remaining Length below 128: fixed header
 * (2), protocol name (6), level, flags, keep alive (2), property length. */
#define CONNECT_FLAGS_AT 9
#define CONNECT_PROPLEN_AT 12

/*
 * A plain v5 CONNECT is accepted with CONNACK 0x00, reserved acknowledge flags 0, Session
 * Present 0 for Clean Start 1, and a well-formed property block that announces Receive
 * Maximum (non-zero) and Topic Alias Maximum (non-zero). The specification lets a server omit
 * both (defaults 65535 and 0); mqlite's design announces them, and the topic alias tests rely
 * on a non-zero Topic Alias Maximum. No Assigned Client Identifier for a ClientID the client
 * chose. [MQTT-3.2.2-1] [MQTT-3.2.2-2] [MQTT-3.1.4-5] [MQTT-3.2.0-1]
 */
Test(v5_connect, connack_properties)
{
    mql_broker *b = tb_start(NULL);
    pk_v5 ack;
    tc_client *c = tc_open_v5(tb_port(b), false, &ack, .client_id = "v5-props", .clean = true,
                              .keepalive = 60);
    char hex[512];
    pk_hex(ack.b, ack.len, hex, sizeof hex);
    uint32_t rm = 0;
    uint32_t tam = 0;
    cr_assert(pk_prop_int(ack.props, PK_P_RECEIVE_MAXIMUM, &rm) && rm > 0,
              "CONNACK has no Receive Maximum [%s]", hex);
    cr_assert(pk_prop_int(ack.props, PK_P_TOPIC_ALIAS_MAXIMUM, &tam) && tam > 0,
              "CONNACK has no (or a zero) Topic Alias Maximum [%s]", hex);
    cr_assert_eq(pk_prop_count(ack.props, PK_P_ASSIGNED_CLIENT_ID), 0,
                 "Assigned Client Identifier for a client-chosen ClientID [%s]", hex);
    tc_ping(c);
    tc_sendp(c, pk_disconnect_v5(0, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_stop(b);
}

/*
 * Request Response Information absent (0): the CONNACK carries no Response Information
 * [MQTT-3.1.2-28]. Request Problem Information 0: no Reason String or User Property on
 * packets other than PUBLISH, CONNACK and DISCONNECT, here an UNSUBACK 0x11 and a SUBACK
 * refusing a filter, which are where a server would explain itself. [MQTT-3.1.2-29]
 */
Test(v5_connect, problem_and_response_information_not_requested)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u8(&props, PK_P_REQUEST_PROBLEM_INFO, 0);
    pk_v5 ack;
    tc_client *c = tc_open_v5(tb_port(b), false, &ack, .client_id = "rpi0", .clean = true,
                              .keepalive = 60, .props = &props);
    cr_assert_eq(pk_prop_count(ack.props, PK_P_RESPONSE_INFO), 0,
                 "Response Information sent without being requested [MQTT-3.1.2-28]");
    tc_sendp(c, pk_unsubscribe_v5(3, NULL, 1, (const char *const[]){"rpi/none"}));
    pk_v5 p;
    tc_expect_v5(c, &p, 11, TB_WAIT_MS);
    char hex[256];
    pk_hex(p.b, p.len, hex, sizeof hex);
    cr_assert(pk_prop_count(p.props, PK_P_REASON_STRING) == 0 &&
                  pk_prop_count(p.props, PK_P_USER_PROPERTY) == 0,
              "UNSUBACK with Reason String / User Property although Request Problem "
              "Information is 0 [%s] [MQTT-3.1.2-29]",
              hex);
    pk_sub sub = {"rpi/#/bad", 0};
    tc_sendp(c, pk_subscribe_v5(4, NULL, 1, &sub));
    int r = tc_recv_v5(c, &p, TB_WAIT_MS);
    if (r > 0 && p.type == 9) {
        pk_hex(p.b, p.len, hex, sizeof hex);
        cr_assert(pk_prop_count(p.props, PK_P_REASON_STRING) == 0 &&
                      pk_prop_count(p.props, PK_P_USER_PROPERTY) == 0,
                  "SUBACK with Reason String / User Property although Request Problem "
                  "Information is 0 [%s] [MQTT-3.1.2-29]",
                  hex);
    }
    tc_close(c);
    tb_stop(b);
}

/*
 * An empty ClientID gets an Assigned Client Identifier in the CONNACK: non-empty, and
 * different for two concurrent clients, which both stay connected (neither takes the other
 * over). [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16]
 */
Test(v5_connect, empty_client_id_gets_assigned_id)
{
    mql_broker *b = tb_start(NULL);
    pk_v5 ack1;
    pk_v5 ack2;
    tc_client *c1 = tc_open_v5(tb_port(b), false, &ack1, .clean = true, .keepalive = 60);
    tc_client *c2 = tc_open_v5(tb_port(b), false, &ack2, .clean = true, .keepalive = 60);
    pk_slice id1;
    pk_slice id2;
    cr_assert(pk_prop_data(ack1.props, PK_P_ASSIGNED_CLIENT_ID, &id1) && id1.n > 0,
              "no Assigned Client Identifier for an empty ClientID [MQTT-3.2.2-16]");
    cr_assert(pk_prop_data(ack2.props, PK_P_ASSIGNED_CLIENT_ID, &id2) && id2.n > 0,
              "no Assigned Client Identifier for an empty ClientID [MQTT-3.2.2-16]");
    cr_assert(!pk_slice_eq(id1, id2.p, id2.n), "two clients were assigned the same ClientID '%.*s'",
              (int)id1.n, (const char *)id1.p);
    tc_ping(c1);
    tc_ping(c2);
    tc_disconnect(c1);
    tc_disconnect(c2);
    tb_stop(b);
}

/*
 * The Assigned Client Identifier names the session: a client that connected with an empty
 * ClientID and Session Expiry 60 can come back under the assigned id and finds its session
 * (Session Present 1) and its subscription. [MQTT-3.1.3-7] [MQTT-3.2.2-3]
 */
Test(v5_connect, assigned_id_names_the_session)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u32(&props, PK_P_SESSION_EXPIRY, 60);
    pk_v5 ack;
    tc_client *c =
        tc_open_v5(tb_port(b), false, &ack, .clean = true, .keepalive = 60, .props = &props);
    pk_slice id;
    cr_assert(pk_prop_data(ack.props, PK_P_ASSIGNED_CLIENT_ID, &id) && id.n > 0 && id.n < 128,
              "no Assigned Client Identifier [MQTT-3.2.2-16]");
    char assigned[128];
    memcpy(assigned, id.p, id.n);
    assigned[id.n] = '\0';
    tc_sub1_v5(c, 1, "aid/t", 1, 0, 1);
    tc_sendp(c, pk_disconnect_v5(0, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);

    c = tc_open_v5(tb_port(b), true, NULL, .client_id = assigned, .clean = false, .keepalive = 60,
                   .props = &props);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "aid-pub", .clean = true);
    tc_publish_v5(p, "aid/t", "to-assigned", 0, false, NULL);
    pk_v5 pub;
    tc_expect_pub_v5(c, &pub, "aid/t", "to-assigned", 0, false);
    tc_disconnect(p);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * With `max_keepalive 10`, a client asking for 60 s gets Server Keep Alive 10 in the CONNACK
 * (the client must then use it [MQTT-3.2.2-21]); a client asking for 5 s gets either no
 * Server Keep Alive (the server uses the client's value [MQTT-3.2.2-22]) or 5.
 */
Test(v5_connect, server_keep_alive_when_capped)
{
    mql_broker *b = tb_start("max_keepalive 10");
    pk_v5 ack;
    uint32_t ska = 0;
    tc_client *c =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "ska-60", .clean = true, .keepalive = 60);
    char hex[512];
    cr_assert(pk_prop_int(ack.props, PK_P_SERVER_KEEP_ALIVE, &ska),
              "keep alive 60 above max_keepalive 10, but no Server Keep Alive in CONNACK [%s] "
              "[MQTT-3.2.2-21]",
              pk_hex(ack.b, ack.len, hex, sizeof hex));
    cr_assert_eq(ska, 10, "Server Keep Alive %u, want 10", ska);
    tc_ping(c);

    tc_client *d =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "ska-5", .clean = true, .keepalive = 5);
    if (pk_prop_int(ack.props, PK_P_SERVER_KEEP_ALIVE, &ska)) {
        cr_assert_eq(ska, 5, "keep alive 5 within max_keepalive 10 changed to %u", ska);
    }
    tc_ping(d);
    tc_disconnect(d);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * Protocol level 6 is not a version the server supports: the connection is closed, after at
 * most one CONNACK refusing the version. MQTT 5 allows 0x84 [MQTT-3.1.2-2] (v5 layout
 * 20 03 00 84 00 or short 20 02 00 84); MQTT 3.1.1 requires 0x01 in its own layout
 * [v3.1.1 MQTT-3.1.2-2], which mqlite sends, since a server cannot know the layout of an
 * unknown version and 3.1.1's rule is the MUST. [MQTT-3.2.2-7]
 */
Test(v5_connect, bad_protocol_version_connack_0x84)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, pk_connect_raw("MQTT", 6, 0x02, 60, "bad-level"));
    uint8_t got[64];
    char hex[256];
    int r = tc_recv_packet(c, got, sizeof got, TB_WAIT_MS);
    cr_assert(r > 0, "no CONNACK 0x84 for protocol level 6 (connection %s)",
              r == TC_CLOSED ? "closed" : "timed out");
    static const uint8_t v5[] = {0x20, 0x03, 0x00, 0x84, 0x00};
    static const uint8_t shortv[] = {0x20, 0x02, 0x00, 0x84};
    static const uint8_t v311[] = {0x20, 0x02, 0x00, 0x01};
    bool ok = ((size_t)r == sizeof v5 && memcmp(got, v5, sizeof v5) == 0) ||
              ((size_t)r == sizeof shortv && memcmp(got, shortv, sizeof shortv) == 0) ||
              ((size_t)r == sizeof v311 && memcmp(got, v311, sizeof v311) == 0);
    cr_assert(ok, "protocol level 6: expected CONNACK 0x84 or 3.1.1's 0x01, got [%s]",
              pk_hex(got, (size_t)r, hex, sizeof hex));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * A protocol name other than "MQTT" with level 5: the server closes the connection, after
 * at most a CONNACK 0x84. [MQTT-3.1.2-1]
 */
Test(v5_connect, bad_protocol_name_closed)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(
        c, PK_CONNECT(.version = 5, .proto_name = "MQTX", .client_id = "bad-name", .clean = true));
    pk_v5 p;
    int r = tc_recv_v5(c, &p, TB_WAIT_MS);
    if (r > 0) {
        cr_assert(p.type == 2 && p.reason == 0x84,
                  "protocol name MQTX: only CONNACK 0x84 may precede the close, got type %u "
                  "reason 0x%02x",
                  p.type, p.reason);
        tc_expect_closed(c, TB_WAIT_MS);
    } else {
        cr_assert_eq(r, TC_CLOSED, "protocol name MQTX: connection neither answered nor closed");
    }
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* Send bytes as a CONNECT and expect CONNACK with this reason code, then the close. */
static void expect_connect_rejected(mql_broker *b, tb_pkt pkt, uint8_t rc)
{
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, pkt);
    tc_expect_connack_v5(c, false, rc, NULL);
    tc_close(c);
    tb_assert_serves(b);
}

/*
 * The reserved bit of the Connect Flags set: Malformed Packet, CONNACK 0x81 then close.
 * [MQTT-3.1.2-3] [MQTT-3.1.4-1] [MQTT-3.2.2-6] [MQTT-3.2.2-7]
 */
Test(v5_connect, reserved_flag_connack_0x81)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "resv", .clean = true, .keepalive = 60);
    cr_assert_eq(p.b[CONNECT_FLAGS_AT], 0x02);
    p.b[CONNECT_FLAGS_AT] |= 0x01;
    expect_connect_rejected(b, p, 0x81);
    tb_stop(b);
}

/*
 * A CONNECT Property Length that runs past the end of the packet: Malformed Packet, CONNACK
 * 0x81 then close. [MQTT-3.1.4-1] (2.2.2.1)
 */
Test(v5_connect, property_length_overrun_connack_0x81)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "overrun", .clean = true, .keepalive = 60);
    cr_assert_eq(p.b[CONNECT_PROPLEN_AT], 0x00);
    p.b[CONNECT_PROPLEN_AT] = 0x40;
    expect_connect_rejected(b, p, 0x81);
    tb_stop(b);
}

/*
 * Will QoS 3 is a Malformed Packet: CONNACK 0x81 then close. [MQTT-3.1.2-12] [MQTT-3.1.4-1]
 */
Test(v5_connect, will_qos3_connack_0x81)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "wq3", .clean = true, .keepalive = 60,
                          .will_topic = "wq3/will", .will_payload = "x", .will_qos = 3);
    expect_connect_rejected(b, p, 0x81);
    tb_stop(b);
}

/*
 * A property that is not valid in CONNECT (Payload Format Indicator, id 0x01) makes it a
 * Malformed Packet (2.2.2.2): CONNACK 0x81 then close. [MQTT-3.1.4-1]
 */
Test(v5_connect, property_not_for_connect_connack_0x81)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u8(&props, PK_P_PAYLOAD_FORMAT, 1);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "badprop", .clean = true, .keepalive = 60,
                          .props = &props);
    expect_connect_rejected(b, p, 0x81);
    tb_stop(b);
}

/*
 * Session Expiry Interval twice is a Protocol Error (3.1.2.11.2): CONNACK 0x82 then close.
 * [MQTT-3.1.4-1] [MQTT-4.13.1-1]
 */
Test(v5_connect, duplicate_property_connack_0x82)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u32(&props, PK_P_SESSION_EXPIRY, 10);
    pk_prop_u32(&props, PK_P_SESSION_EXPIRY, 20);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "dupprop", .clean = true, .keepalive = 60,
                          .props = &props);
    expect_connect_rejected(b, p, 0x82);
    tb_stop(b);
}

/*
 * Receive Maximum 0 is a Protocol Error (3.1.2.11.3): CONNACK 0x82 then close.
 * [MQTT-3.1.4-1] [MQTT-4.13.1-1]
 */
Test(v5_connect, receive_maximum_zero_connack_0x82)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u16(&props, PK_P_RECEIVE_MAXIMUM, 0);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "rm0", .clean = true, .keepalive = 60,
                          .props = &props);
    expect_connect_rejected(b, p, 0x82);
    tb_stop(b);
}

/*
 * An Authentication Method the server does not support: CONNACK 0x8C (Bad authentication
 * method) then close. The specification also permits 0x87; mqlite's design answers 0x8C.
 * [MQTT-4.12.0-1] [MQTT-3.2.2-7]
 */
Test(v5_connect, auth_method_connack_0x8c)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_str(&props, PK_P_AUTH_METHOD, "SCRAM-SHA-1");
    pk_prop_bin(&props, PK_P_AUTH_DATA, "client-first", 12);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "authm", .clean = true, .keepalive = 60,
                          .props = &props);
    expect_connect_rejected(b, p, 0x8C);
    tb_stop(b);
}

/*
 * With `max_qos 1`, a will at QoS 2 exceeds the server's capabilities: CONNACK 0x9B (QoS not
 * supported) then close; the same will at QoS 1 is accepted. No will is published for the
 * refused connection (an observer on the will topic gets nothing). [MQTT-3.2.2-12]
 * (Regression: found by tests/fuzz/fuzz_conn; the broker used to accept it.)
 */
Test(v5_connect, will_qos_above_max_qos_connack_0x9b)
{
    mql_broker *b = tb_start("max_qos 1\n");
    tc_client *o =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "wmq-obs", .clean = true, .keepalive = 60);
    tc_sub1_v5(o, 1, "wmq/will", 1, 0, 1);
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "wmq", .clean = true, .keepalive = 60,
                          .will_topic = "wmq/will", .will_payload = "x", .will_qos = 2);
    expect_connect_rejected(b, p, 0x9B);
    tc_expect_nothing(o, TB_QUIET_MS);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "wmq", .clean = true, .keepalive = 60,
                   .will_topic = "wmq/will", .will_payload = "x", .will_qos = 1);
    tc_ping(c);
    tc_disconnect(c);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * With `retain_available false`, a will with Will Retain 1 cannot be honoured: CONNACK 0x9A
 * (Retain not supported) then close; the same will without retain is accepted.
 * [MQTT-3.2.2-13] (Regression: found by tests/fuzz/fuzz_conn.)
 */
Test(v5_connect, will_retain_unsupported_connack_0x9a)
{
    mql_broker *b = tb_start("retain_available false\n");
    tb_pkt p = PK_CONNECT(.version = 5, .client_id = "wru", .clean = true, .keepalive = 60,
                          .will_topic = "wru/will", .will_payload = "x", .will_retain = true);
    expect_connect_rejected(b, p, 0x9A);
    tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "wru", .clean = true,
                              .keepalive = 60, .will_topic = "wru/will", .will_payload = "x");
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * The CONNACK respects the client's Maximum Packet Size [MQTT-3.1.2-24]: with Maximum Packet
 * Size 20 and Request Response Information 1, the optional Response Information (which would
 * make the CONNACK 27 bytes) is left out and the CONNACK (0x00) arrives within 20 bytes; the
 * connection works. (Regression: found by tests/fuzz/fuzz_conn; the broker used to drop the
 * whole CONNACK and keep the connection open without it.)
 */
Test(v5_connect, response_information_left_out_to_fit_maximum_packet_size)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u32(&props, PK_P_MAXIMUM_PACKET_SIZE, 20);
    pk_prop_u8(&props, PK_P_REQUEST_RESPONSE_INFO, 1);
    pk_v5 ack;
    tc_client *c = tc_open_v5(tb_port(b), false, &ack, .client_id = "mps", .clean = true,
                              .keepalive = 60, .props = &props);
    char hex[512];
    cr_assert(ack.len <= 20, "CONNACK of %zu bytes exceeds Maximum Packet Size 20 [%s]", ack.len,
              pk_hex(ack.b, ack.len, hex, sizeof hex));
    cr_assert_eq(pk_prop_count(ack.props, PK_P_RESPONSE_INFO), 0);
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * A Maximum Packet Size smaller than even the plain CONNACK (8 bytes; it is 11): nothing may
 * be sent before a CONNACK [MQTT-3.2.0-1] and the CONNACK may not be sent [MQTT-3.1.2-24], so
 * the broker closes the connection without a packet; it keeps serving others.
 */
Test(v5_connect, maximum_packet_size_below_connack_closed)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u32(&props, PK_P_MAXIMUM_PACKET_SIZE, 8);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, PK_CONNECT(.version = 5, .client_id = "mps8", .clean = true, .keepalive = 60,
                           .props = &props));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * A second CONNECT on a connection is a Protocol Error: DISCONNECT 0x82 then close; the
 * session's ClientID is free again afterwards. [MQTT-3.1.0-2] [MQTT-4.13.1-1]
 */
Test(v5_connect, second_connect_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "twice", .clean = true, .keepalive = 60);
    tc_sendp(c, PK_CONNECT(.version = 5, .client_id = "twice", .clean = true, .keepalive = 60));
    tc_expect_disconnect_v5(c, 0x82, TB_WAIT_MS);
    tc_close(c);
    c = tc_open_v5(tb_port(b), false, NULL, .client_id = "twice", .clean = true, .keepalive = 60);
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * A second CONNECT that would not even decode (protocol level 6) is still a Protocol Error:
 * DISCONNECT 0x82, not the CONNACK-only 0x84, which table 3-10 does not allow in DISCONNECT.
 * [MQTT-3.1.0-2] [MQTT-3.14.2-1] (Regression: found by tests/fuzz/fuzz_conn.)
 */
Test(v5_connect, second_connect_bad_level_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "twice6", .clean = true, .keepalive = 60);
    tc_sendp(c, pk_connect_raw("MQTT", 6, 0x02, 60, "twice6"));
    tc_expect_disconnect_v5(c, 0x82, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * Takeover: a second connection with the same ClientID makes the broker send DISCONNECT
 * 0x8E (Session taken over) to the first and close it; the second stays connected.
 * [MQTT-3.1.4-3]
 */
Test(v5_connect, takeover_disconnect_0x8e)
{
    mql_broker *b = tb_start(NULL);
    tc_client *a =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "v5-dup", .clean = true, .keepalive = 60);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "v5-dup", .clean = true, .keepalive = 60);
    tc_expect_disconnect_v5(a, 0x8E, TB_WAIT_MS);
    tc_close(a);
    tc_ping(c);
    tc_expect_nothing(c, TB_QUIET_MS);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * Request Response Information 1: the CONNACK carries Response Information, a topic prefix
 * of the client's own ("response/CLIENTID"), that it can use to build Response Topics
 * (section 4.10). [MQTT-3.1.2-28]
 */
Test(v5_connect, response_information_when_requested)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u8(&props, PK_P_REQUEST_RESPONSE_INFO, 1);
    pk_v5 ack;
    tc_client *c = tc_open_v5(tb_port(b), false, &ack, .client_id = "asker", .clean = true,
                              .keepalive = 60, .props = &props);
    pk_slice ri;
    cr_assert(pk_prop_data(ack.props, PK_P_RESPONSE_INFO, &ri), "no Response Information");
    cr_assert(ri.n == 14 && memcmp(ri.p, "response/asker", 14) == 0, "Response Information '%.*s'",
              (int)ri.n, (const char *)ri.p);
    tc_sendp(c, pk_disconnect_v5(0, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_stop(b);
}
