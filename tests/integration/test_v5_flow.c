/*
 * test_v5_flow.c - MQTT 5.0 flow control, packet size limits and server-initiated
 * DISCONNECT reasons.
 *
 * Purpose: check that the broker honours the limits a v5 client declares in its CONNECT
 * (Receive Maximum: never more unacknowledged QoS 1/2 PUBLISHes in flight than that, quota
 * given back by PUBACK / PUBCOMP only; Maximum Packet Size: a message too large for the client
 * is dropped, smaller ones still flow) and the server's own Receive Maximum; and that it tells
 * the client why it closes a connection: keep alive timeout 0x8D (also when the keep alive
 * came from Server Keep Alive), shutdown 0x8B on SIGTERM, Malformed Packet 0x81 after CONNACK;
 * and that a PUBREL for an unknown packet id is answered by PUBCOMP 0x92. Specification
 * sections 3.1.2.10, 3.1.2.11, 3.3.4, 3.6, 3.7, 3.14, 4.3.3, 4.9, 4.13.
 *
 * Assumptions: in-flight limits are observed as "no further PUBLISH within TB_QUIET_MS";
 * keep alive timing allows 1.5 x keep alive plus generous slack for timer granularity.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "harness.h"

TestSuite(v5_flow, .fini = tb_fini, .timeout = 30);

/* A v5 subscriber to filter at QoS qos with the given CONNECT properties (may be NULL). */
static tc_client *sub_with(mql_broker *b, const char *id, const tb_pkt *props, pk_v5 *ack,
                           const char *filter, uint8_t qos)
{
    tc_client *s = tc_open_v5(tb_port(b), false, ack, .client_id = id, .clean = true,
                              .keepalive = 60, .props = props);
    tc_sub1_v5(s, 1, filter, qos, 0, qos);
    return s;
}

/* Publish n messages "m0".."m<n-1>" to topic at qos from a fresh v5 client. */
static tc_client *publish_n(mql_broker *b, const char *topic, int n, uint8_t qos)
{
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "flow-pub", .clean = true);
    for (int i = 0; i < n; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        tc_publish_v5(p, topic, payload, qos, false, NULL);
    }
    return p;
}

/*
 * Client Receive Maximum 2, six QoS 1 messages: the broker sends two, then nothing until a
 * PUBACK, then exactly one more per PUBACK; all six arrive, in order; PINGREQ is still
 * answered while the quota is used up. [MQTT-3.3.4-9] [MQTT-4.9.0-2] [MQTT-3.3.4-10]
 * [MQTT-4.9.0-3] [MQTT-4.6.0-6]
 */
Test(v5_flow, receive_maximum_qos1)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u16(&props, PK_P_RECEIVE_MAXIMUM, 2);
    tc_client *s = sub_with(b, "rm1", &props, NULL, "rm/t", 1);
    tc_client *p = publish_n(b, "rm/t", 6, 1);
    pk_v5 pub[6];
    tc_expect_pub_v5(s, &pub[0], "rm/t", "m0", 1, false);
    tc_expect_pub_v5(s, &pub[1], "rm/t", "m1", 1, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_ping(s);
    for (int i = 2; i < 6; i++) {
        tc_ack_v5(s, &pub[i - 2]);
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        tc_expect_pub_v5(s, &pub[i], "rm/t", payload, 1, false);
        tc_expect_nothing(s, i < 5 ? 150 : 1);
    }
    tc_ack_v5(s, &pub[4]);
    tc_ack_v5(s, &pub[5]);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Client Receive Maximum 1 with QoS 2: the send quota comes back with PUBCOMP, not with a
 * successful PUBREC, so the second message follows only the PUBCOMP of the first.
 * [MQTT-3.3.4-9] [MQTT-4.9.0-2] (4.9)
 */
Test(v5_flow, receive_maximum_qos2_quota_back_on_pubcomp)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u16(&props, PK_P_RECEIVE_MAXIMUM, 1);
    tc_client *s = sub_with(b, "rm2", &props, NULL, "rm2/t", 2);
    tc_client *p = publish_n(b, "rm2/t", 3, 2);
    pk_v5 pub;
    for (int i = 0; i < 3; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        tc_expect_pub_v5(s, &pub, "rm2/t", payload, 2, false);
        tc_expect_nothing(s, 150);
        tc_sendp(s, pk_pubrec(pub.id));
        tc_expect_ack_v5(s, 6, pub.id, 0);
        tc_expect_nothing(s, 150);
        tc_sendp(s, pk_pubcomp(pub.id));
    }
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Receive Maximum also governs the messages queued while the session was offline: the
 * subscriber comes back with Receive Maximum 2 and five queued QoS 1 messages; the broker
 * sends two, then one more per PUBACK, in order. [MQTT-3.3.4-9] [MQTT-4.9.0-2] [MQTT-4.6.0-6]
 */
Test(v5_flow, receive_maximum_on_session_resume)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u32(&props, PK_P_SESSION_EXPIRY, 60);
    pk_prop_u16(&props, PK_P_RECEIVE_MAXIMUM, 2);
    tc_client *s = sub_with(b, "rmr", &props, NULL, "rmr/t", 1);
    tc_disconnect(s);
    tc_client *p = publish_n(b, "rmr/t", 5, 1);
    s = tc_open_v5(tb_port(b), true, NULL, .client_id = "rmr", .clean = false, .keepalive = 60,
                   .props = &props);
    pk_v5 pub[5];
    tc_expect_pub_v5(s, &pub[0], "rmr/t", "m0", 1, false);
    tc_expect_pub_v5(s, &pub[1], "rmr/t", "m1", 1, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    for (int i = 2; i < 5; i++) {
        tc_ack_v5(s, &pub[i - 2]);
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        tc_expect_pub_v5(s, &pub[i], "rmr/t", payload, 1, false);
        tc_expect_nothing(s, 150);
    }
    tc_ack_v5(s, &pub[3]);
    tc_ack_v5(s, &pub[4]);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * The server's own limit, `max_packet_size 200`: it is announced as Maximum Packet Size 200
 * in the CONNACK, and a PUBLISH larger than that is answered by DISCONNECT 0x95 (Packet too
 * large) and a close. (3.2.2.3.6) [MQTT-4.13.1-1]
 */
Test(v5_flow, server_maximum_packet_size_disconnect_0x95)
{
    mql_broker *b = tb_start("max_packet_size 200");
    pk_v5 ack;
    tc_client *c =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "smps", .clean = true, .keepalive = 60);
    uint32_t mps = 0;
    cr_assert(pk_prop_int(ack.props, PK_P_MAXIMUM_PACKET_SIZE, &mps) && mps == 200,
              "CONNACK Maximum Packet Size %u, want 200 (max_packet_size 200)", mps);
    tc_publish_v5(c, "smps/t", "fits", 1, false, NULL);
    char big[301];
    memset(big, 'B', 300);
    big[300] = '\0';
    tc_sendp(c, PK_PUBLISH(.topic = "smps/t", .payload = big, .qos = 1, .id = 9, .v5 = true));
    tc_expect_disconnect_v5(c, 0x95, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * Client Maximum Packet Size 64: a message whose PUBLISH would exceed it is not sent (and the
 * QoS 1 flow does not stall on it), smaller ones before and after are; nothing the broker
 * sends to this client exceeds 64 bytes, its CONNACK included. [MQTT-3.1.2-24]
 * [MQTT-3.1.2-25]
 */
Test(v5_flow, maximum_packet_size_respected)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u32(&props, PK_P_MAXIMUM_PACKET_SIZE, 64);
    pk_v5 ack;
    tc_client *s = sub_with(b, "mps", &props, &ack, "mps/t", 1);
    cr_assert(ack.len <= 64, "CONNACK of %zu bytes to a client with Maximum Packet Size 64",
              ack.len);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "mps-pub", .clean = true);
    char big[201];
    memset(big, 'B', 200);
    big[200] = '\0';
    tc_publish_v5(p, "mps/t", "small-1", 1, false, NULL);
    tc_publish_v5(p, "mps/t", big, 1, false, NULL);
    tc_publish_v5(p, "mps/t", "small-2", 1, false, NULL);
    tc_publish_v5(p, "mps/t", big, 0, false, NULL);
    tc_publish_v5(p, "mps/t", "small-3", 0, false, NULL);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "mps/t", "small-1", 1, false);
    tc_ack_v5(s, &pub);
    tc_expect_pub_v5(s, &pub, "mps/t", "small-2", 1, false);
    cr_assert(pub.len <= 64);
    tc_ack_v5(s, &pub);
    tc_expect_pub_v5(s, &pub, "mps/t", "small-3", 0, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * A client that sends more unacknowledged QoS 2 PUBLISHes than the server's Receive Maximum
 * (from its CONNACK) gets DISCONNECT 0x93 (Receive Maximum exceeded). Skipped when the server
 * announces more than 1000. [MQTT-3.3.4-7] (3.3.4) [MQTT-4.13.1-1]
 */
Test(v5_flow, server_receive_maximum_exceeded_disconnect_0x93)
{
    mql_broker *b = tb_start(NULL);
    pk_v5 ack;
    tc_client *p =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "rmx", .clean = true, .keepalive = 60);
    uint32_t rm = 65535;
    (void)pk_prop_int(ack.props, PK_P_RECEIVE_MAXIMUM, &rm);
    if (rm > 1000) {
        tc_disconnect(p);
        tb_stop(b);
        cr_skip_test("server Receive Maximum %u is too large to exceed here", rm);
    }
    for (uint32_t i = 1; i <= rm; i++) {
        tc_sendp(p, PK_PUBLISH(.topic = "rmx/t", .payload = "x", .qos = 2, .id = (uint16_t)i,
                               .v5 = true));
        pk_v5 rec;
        tc_expect_v5(p, &rec, 5, TB_WAIT_MS);
        cr_assert(rec.id == i && rec.reason < 0x80, "PUBREC %u: id %u reason 0x%02x", i, rec.id,
                  rec.reason);
    }
    tc_sendp(p, PK_PUBLISH(.topic = "rmx/t", .payload = "x", .qos = 2, .id = (uint16_t)(rm + 1),
                           .v5 = true));
    tc_expect_disconnect_v5(p, 0x93, TB_WAIT_MS);
    tc_close(p);
    tb_stop(b);
}

/*
 * Keep alive 1 s and a silent client: the broker closes the connection after 1.5 s (not
 * before 1 s, not much after), sending DISCONNECT 0x8D (Keep Alive timeout) first.
 * [MQTT-3.1.2-22] [MQTT-4.13.2-1]
 */
Test(v5_flow, keep_alive_timeout_disconnect_0x8d)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "ka1", .clean = true, .keepalive = 1);
    int64_t t0 = tb_now_ms();
    tc_expect_disconnect_v5(c, 0x8D, 4000);
    int64_t dt = tb_now_ms() - t0;
    cr_assert(dt >= 1000 && dt <= 3500, "keep alive 1 s: closed after %lld ms", (long long)dt);
    tc_close(c);
    tb_stop(b);
}

/*
 * The broker enforces the Server Keep Alive it assigned: `max_keepalive 1`, client asks for
 * 60 s, gets Server Keep Alive 1 and, staying silent, DISCONNECT 0x8D within about 1.5 s.
 * [MQTT-3.2.2-21] [MQTT-3.1.2-22]
 */
Test(v5_flow, server_keep_alive_enforced)
{
    mql_broker *b = tb_start("max_keepalive 1");
    pk_v5 ack;
    tc_client *c =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "ska1", .clean = true, .keepalive = 60);
    uint32_t ska = 0;
    cr_assert(pk_prop_int(ack.props, PK_P_SERVER_KEEP_ALIVE, &ska) && ska == 1,
              "no Server Keep Alive 1 in CONNACK (got %u)", ska);
    int64_t t0 = tb_now_ms();
    tc_expect_disconnect_v5(c, 0x8D, 4000);
    int64_t dt = tb_now_ms() - t0;
    cr_assert(dt >= 1000 && dt <= 3500, "Server Keep Alive 1 s: closed after %lld ms",
              (long long)dt);
    tc_close(c);
    tb_stop(b);
}

/*
 * SIGTERM: the broker tells connected v5 clients DISCONNECT 0x8B (Server shutting down)
 * before closing their connections. (3.14.2.1) [MQTT-3.14.4-2]
 */
Test(v5_flow, shutdown_disconnect_0x8b)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "bye", .clean = true, .keepalive = 60);
    tc_ping(c);
    int st = tb_stop(b);
    cr_assert_eq(st, 0, "broker exit status %d after SIGTERM", st);
    tc_expect_disconnect_v5(c, 0x8B, TB_WAIT_MS);
    tc_close(c);
}

/* PUBLISH with both QoS bits set after CONNACK: Malformed Packet, DISCONNECT 0x81 then close.
 * [MQTT-3.3.1-4] [MQTT-4.13.1-1] */
Test(v5_flow, publish_qos3_disconnect_0x81)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "q3", .clean = true, .keepalive = 60);
    tc_sendp(c, PK_PUBLISH(.topic = "q3/t", .payload = "x", .qos = 3, .id = 1, .v5 = true));
    tc_expect_disconnect_v5(c, 0x81, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* A PUBLISH whose Property Length runs past the packet: Malformed Packet, DISCONNECT 0x81.
 * (2.2.2.1) [MQTT-4.13.1-1] */
Test(v5_flow, publish_property_overrun_disconnect_0x81)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "povr", .clean = true, .keepalive = 60);
    /* Topic "t", QoS 0, Property Length 10 but only 2 bytes follow. */
    static const uint8_t bad[] = {0x30, 0x06, 0x00, 0x01, 't', 0x0A, 0x01, 0x01};
    tc_send(c, bad, sizeof bad);
    tc_expect_disconnect_v5(c, 0x81, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* A DISCONNECT from the client with reserved fixed-header bits set: the server answers
 * DISCONNECT 0x81 and closes. [MQTT-3.14.1-1] */
Test(v5_flow, disconnect_reserved_bits_disconnect_0x81)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "dresv", .clean = true, .keepalive = 60);
    static const uint8_t bad[] = {0xE1, 0x00};
    tc_send(c, bad, sizeof bad);
    tc_expect_disconnect_v5(c, 0x81, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * PUBREL for a packet id the server has no QoS 2 state for: PUBCOMP with the same id and
 * reason 0x92 (Packet Identifier not found); the connection stays up.
 * [MQTT-4.3.3-11] [MQTT-3.7.2-1] (3.7.2.1)
 */
Test(v5_flow, pubrel_unknown_id_pubcomp_0x92)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "prel", .clean = true, .keepalive = 60);
    tc_sendp(c, pk_pubrel(0x4D));
    tc_expect_ack_v5(c, 7, 0x4D, 0x92);
    tc_ping(c);
    /* And a known one completes normally. */
    tc_publish_v5(c, "prel/t", "x", 2, false, NULL);
    tc_disconnect(c);
    tb_stop(b);
}
