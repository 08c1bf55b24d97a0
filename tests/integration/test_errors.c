/*
 * test_errors.c - malformed packets and protocol violations after CONNECT, black-box.
 *
 * Every case: a connected client sends bad bytes, the broker MUST close that connection
 * (sending nothing), and afterwards still serves a new client; a bystander connected before
 * the errors keeps working. Cases are grouped by kind, one broker per test, one fresh
 * connection per case. Specification sections 1.5.3, 2.2, 2.3, 3.3, 3.6, 3.8, 3.10, 3.14,
 * 4.7, 4.8.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "harness.h"

TestSuite(errors, .fini = tb_fini, .timeout = 30);

struct bad_case {
    const char *what;
    tb_pkt pkt;
};

/* Run each case on its own logged-in connection and expect the broker to close it
 * [v3.1.1 MQTT-4.8.0-1]. All cases run even when one fails, and the failure lists every case
 * that was not closed. A bystander subscribed before the first case must still receive
 * afterwards: an error closes only the connection it came on (4.8.0-1 names "the Network
 * Connection on which it received" the packet). */
static void run_cases(const struct bad_case *cases, size_t n)
{
    mql_broker *b = tb_start(NULL);
    tc_client *by = tc_open(tb_port(b), "bystander", true, 60, false);
    tc_subscribe(by, 1, "by/t", 0, 0);
    char failures[2048] = "";
    size_t flen = 0;
    for (size_t i = 0; i < n; i++) {
        tc_client *c = tc_open(tb_port(b), "offender", true, 60, false);
        tc_sendp(c, cases[i].pkt);
        uint8_t buf[256];
        char hex[128];
        int r = tc_recv_packet(c, buf, sizeof buf, 1000);
        if (r != TC_CLOSED && flen < sizeof failures) {
            flen +=
                (size_t)snprintf(failures + flen, sizeof failures - flen,
                                 "\n  %s: not closed, got %s", cases[i].what,
                                 r >= 0 ? pk_hex(buf, (size_t)r, hex, sizeof hex)
                                        : (r == TC_TIMEOUT ? "nothing (still open)" : "an error"));
        }
        tc_close(c);
    }
    cr_assert(failures[0] == '\0', "the broker did not close the connection:%s", failures);
    tb_assert_serves(b);
    tc_client *p = tc_open(tb_port(b), "by-pub", true, 60, false);
    tc_publish(p, "by/t", "still here", 1, false);
    tc_expect_publish(by, TB_WAIT_MS, .topic = "by/t", .payload = "still here");
    tc_disconnect(p);
    tc_disconnect(by);
    tb_stop(b);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define RAW(...) pk_bytes((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

/* Remaining Length with a fifth continuation byte; a packet shorter than its Remaining Length
 * followed by a close is covered in truncated_then_close. [v3.1.1 MQTT-4.8.0-1] */
Test(errors, bad_remaining_length)
{
    struct bad_case cases[] = {
        {"RL 5 bytes (PUBLISH)", RAW(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00)},
        {"RL 5 bytes (PINGREQ)", RAW(0xC0, 0x80, 0x80, 0x80, 0x80, 0x01)},
        {"PINGREQ with RL 1", RAW(0xC0, 0x01, 0x00)},
        {"DISCONNECT with RL 1", RAW(0xE0, 0x01, 0x00)},
        {"PUBACK with RL 3", RAW(0x40, 0x03, 0x00, 0x01, 0x00)},
        {"PUBLISH RL shorter than topic length", RAW(0x30, 0x01, 0x00)},
    };
    run_cases(cases, N(cases));
}

/* A string length pointing past the end of the packet. [v3.1.1 MQTT-4.8.0-1]
 * [v3.1.1 MQTT-3.3.2-1] [v3.1.1 MQTT-3.8.3-1] [v3.1.1 MQTT-3.10.3-1] */
Test(errors, truncated_strings)
{
    struct bad_case cases[] = {
        {"PUBLISH topic length 10, 3 bytes", RAW(0x30, 0x05, 0x00, 0x0A, 'a', 'b', 'c')},
        {"SUBSCRIBE filter length 10, 3 bytes",
         RAW(0x82, 0x08, 0x00, 0x01, 0x00, 0x0A, 'a', 'b', 'c', 0x00)},
        {"SUBSCRIBE filter without QoS byte", RAW(0x82, 0x06, 0x00, 0x01, 0x00, 0x02, 'a', 'b')},
        {"UNSUBSCRIBE filter length 10, 3 bytes",
         RAW(0xA2, 0x07, 0x00, 0x01, 0x00, 0x0A, 'a', 'b', 'c')},
        {"PUBLISH QoS 1 without packet id", RAW(0x32, 0x04, 0x00, 0x02, 'a', 'b')},
    };
    run_cases(cases, N(cases));
}

/* Ill-formed UTF-8 or U+0000 in a topic name or filter: close.
 * [v3.1.1 MQTT-1.5.3-1] [v3.1.1 MQTT-1.5.3-2] [v3.1.1 MQTT-4.7.3-2] [v3.1.1 MQTT-3.3.2-1] */
Test(errors, invalid_utf8_topic)
{
    struct bad_case cases[] = {
        {"topic 0xFF", PK_PUBLISH(.topic = "a/\xFF", .payload = "x")},
        {"topic overlong '/'", PK_PUBLISH(.topic = "a\xC0\xAF"
                                                   "b",
                                          .payload = "x")},
        {"topic truncated sequence", PK_PUBLISH(.topic = "a/\xC3", .payload = "x")},
        {"topic surrogate U+D800", PK_PUBLISH(.topic = "a/\xED\xA0\x80", .payload = "x")},
        {"topic U+0000", PK_PUBLISH(.topic = "a\0b", .topic_len = 3, .payload = "x")},
        {"filter 0xFF", pk_subscribe1(1, "a/\xFF", 0)},
        {"filter surrogate U+DFFF", pk_subscribe1(1, "a/\xED\xBF\xBF", 0)},
        {"unsubscribe filter 0xFE", pk_unsubscribe1(1, "a/\xFE")},
    };
    run_cases(cases, N(cases));
}

/* U+0000 inside a SUBSCRIBE filter. [v3.1.1 MQTT-1.5.3-2] [v3.1.1 MQTT-4.7.3-2] */
Test(errors, nul_in_filter)
{
    struct bad_case cases[] = {
        {"filter U+0000", RAW(0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', 0x00, 'b', 0x00)},
    };
    run_cases(cases, N(cases));
}

/* Wildcards in a PUBLISH topic name, an empty topic name. [v3.1.1 MQTT-3.3.2-2]
 * [v3.1.1 MQTT-4.7.1-1] [v3.1.1 MQTT-4.7.3-1] */
Test(errors, bad_publish_topic)
{
    struct bad_case cases[] = {
        {"topic a/+", PK_PUBLISH(.topic = "a/+", .payload = "x")},
        {"topic a/#", PK_PUBLISH(.topic = "a/#", .payload = "x")},
        {"topic #", PK_PUBLISH(.topic = "#", .payload = "x")},
        {"topic +", PK_PUBLISH(.topic = "+", .payload = "x", .qos = 1, .id = 1)},
        {"topic a+b", PK_PUBLISH(.topic = "a+b", .payload = "x")},
        {"empty topic", PK_PUBLISH(.topic = "", .payload = "x")},
    };
    run_cases(cases, N(cases));
}

/* PUBLISH QoS 3, QoS 0 with DUP, QoS > 0 with packet id 0.
 * [v3.1.1 MQTT-3.3.1-4] [v3.1.1 MQTT-3.3.1-2] [v3.1.1 MQTT-2.3.1-1] */
Test(errors, bad_publish_flags_and_ids)
{
    struct bad_case cases[] = {
        {"QoS 3", PK_PUBLISH(.topic = "a/b", .payload = "x", .qos = 3, .id = 1)},
        {"QoS 3 retain",
         PK_PUBLISH(.topic = "a/b", .payload = "x", .qos = 3, .id = 1, .retain = true)},
        {"QoS 0 with DUP", PK_PUBLISH(.topic = "a/b", .payload = "x", .dup = true)},
        {"QoS 1 packet id 0", PK_PUBLISH(.topic = "a/b", .payload = "x", .qos = 1, .id = 0)},
        {"QoS 2 packet id 0", PK_PUBLISH(.topic = "a/b", .payload = "x", .qos = 2, .id = 0)},
        {"SUBSCRIBE packet id 0", pk_subscribe1(0, "a/b", 0)},
        {"UNSUBSCRIBE packet id 0", pk_unsubscribe1(0, "a/b")},
    };
    run_cases(cases, N(cases));
}

/* Reserved fixed-header flag bits with the wrong value.
 * [v3.1.1 MQTT-2.2.2-1] [v3.1.1 MQTT-2.2.2-2] [v3.1.1 MQTT-3.6.1-1] [v3.1.1 MQTT-3.8.1-1]
 * [v3.1.1 MQTT-3.10.1-1] [v3.1.1 MQTT-3.14.1-1] */
Test(errors, bad_fixed_header_flags)
{
    struct bad_case cases[] = {
        {"SUBSCRIBE flags 0000", RAW(0x80, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x00)},
        {"SUBSCRIBE flags 0011", RAW(0x83, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x00)},
        {"UNSUBSCRIBE flags 0000", RAW(0xA0, 0x07, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b')},
        {"PUBREL flags 0000", RAW(0x60, 0x02, 0x00, 0x01)},
        {"PUBACK flags 0001", RAW(0x41, 0x02, 0x00, 0x01)},
        {"PUBREC flags 0010", RAW(0x52, 0x02, 0x00, 0x01)},
        {"PUBCOMP flags 1000", RAW(0x78, 0x02, 0x00, 0x01)},
        {"PINGREQ flags 0001", RAW(0xC1, 0x00)},
        {"DISCONNECT flags 0010", RAW(0xE2, 0x00)},
    };
    run_cases(cases, N(cases));
}

/* Reserved packet types and packets only a server may send. [v3.1.1 MQTT-4.8.0-1]
 * [v3.1.1 MQTT-2.2.2-2] */
Test(errors, wrong_packet_types)
{
    struct bad_case cases[] = {
        {"type 0 (reserved)", RAW(0x00, 0x00)},
        {"type 15 (reserved)", RAW(0xF0, 0x00)},
        {"CONNACK from client", RAW(0x20, 0x02, 0x00, 0x00)},
        {"SUBACK from client", RAW(0x90, 0x03, 0x00, 0x01, 0x00)},
        {"UNSUBACK from client", RAW(0xB0, 0x02, 0x00, 0x01)},
        {"PINGRESP from client", RAW(0xD0, 0x00)},
    };
    run_cases(cases, N(cases));
}

/* A client that sends half a packet and closes, or sends garbage, does not hurt the broker;
 * garbage as the first bytes is closed. [v3.1.1 MQTT-3.1.0-1] [v3.1.1 MQTT-4.8.0-1] */
Test(errors, truncated_then_close)
{
    mql_broker *b = tb_start(NULL);
    static const uint8_t partial_connect[] = {0x10, 0x20, 0x00, 0x04, 'M', 'Q'};
    tc_client *c = tc_connect(tb_port(b));
    tc_send(c, partial_connect, sizeof partial_connect);
    tc_close(c);
    c = tc_open(tb_port(b), "half", true, 60, false);
    static const uint8_t partial_publish[] = {0x30, 0x7F, 0x00, 0x03, 'a', '/', 'b', 'x'};
    tc_send(c, partial_publish, sizeof partial_publish);
    tc_close(c);
    c = tc_connect(tb_port(b));
    static const uint8_t garbage[] = {0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0xFF, 0x13, 0x37};
    tc_send(c, garbage, sizeof garbage);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* A Remaining Length announcing more than the client ever sends: the broker waits for the
 * rest (no reply, no crash); Keep Alive still ends the connection, and the broker serves
 * others meanwhile. [v3.1.1 MQTT-3.1.2-24] */
Test(errors, incomplete_packet_times_out)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "stall", true, 1, false);
    static const uint8_t head[] = {0x30, 0xFF, 0xFF, 0x03, 0x00, 0x03, 'a', '/', 'b'};
    tc_send(c, head, sizeof head);
    tb_assert_serves(b);
    tc_expect_closed(c, 3500);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * A client announces a PUBLISH with a Remaining Length of 256 MB and sends only 64 KB of it:
 * the broker's memory follows what arrived, not what was announced, and it keeps serving
 * others meanwhile (with max_packet_size unset, the protocol maximum applies).
 */
Test(errors, huge_remaining_length_costs_only_what_arrives)
{
    mql_broker *b = tb_start(NULL);
    long before = tb_rss_kib(b);
    tc_client *c = tc_open(tb_port(b), "huge", true, 60, false);
    static uint8_t chunk[65536];
    /* PUBLISH QoS 0, Remaining Length 268435455 (0xFF 0xFF 0xFF 0x7F), topic "h" */
    static const uint8_t hdr[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 'h'};
    tc_send(c, hdr, sizeof(hdr));
    tc_send(c, chunk, sizeof(chunk));
    tb_sleep_ms(300);
    long after = tb_rss_kib(b);
    tb_assert_serves(b);
    /* ThreadSanitizer's shadow memory grows with whatever memory the broker touches */
    bool tsan = tb_sanitizer(b) != NULL && strcmp(tb_sanitizer(b), "thread") == 0;
    if (before > 0 && after > 0 && !tsan)
        cr_assert_lt(after - before, 16 * 1024,
                     "RSS grew by %ld KiB for a frame of which 64 KiB arrived", after - before);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* RSS may grow this much (KiB) while a refused 256 MB frame is being sent: far less than
 * any buffer sized by the announcement, room for allocator noise. */
#define REFUSED_FRAME_RSS_KIB 2048

/* Send a 256 MB announcement and then 1 MiB of its body as fast as the broker takes it
 * (the connection is closed early on), and assert RSS did not jump. */
static void refused_before_allocation(mql_broker *b, tc_client *c, const uint8_t *hdr, size_t n)
{
    long before = tb_rss_kib(b);
    tc_send(c, hdr, n);
    static uint8_t chunk[65536];
    for (int i = 0; i < 16 && tc_send(c, chunk, sizeof(chunk)) == 0; i++) {
    }
    tc_expect_closed(c, TB_WAIT_MS);
    long after = tb_rss_kib(b);
    bool tsan = tb_sanitizer(b) != NULL && strcmp(tb_sanitizer(b), "thread") == 0;
    if (before > 0 && after > 0 && !tsan)
        cr_assert_lt(after - before, REFUSED_FRAME_RSS_KIB,
                     "RSS grew by %ld KiB for a refused 256 MB frame", after - before);
}

/* With max_packet_size set, the same announcement is refused as soon as its Remaining
 * Length is read, before any of its body is buffered: the connection is closed and the
 * broker's memory does not move. */
Test(errors, remaining_length_over_max_packet_size_closes)
{
    mql_broker *b = tb_start("max_packet_size 1024\n");
    tb_assert_serves(b);
    tc_client *c = tc_open(tb_port(b), "toobig", true, 60, false);
    static const uint8_t hdr[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 'h'};
    refused_before_allocation(b, c, hdr, sizeof(hdr));
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* Before CONNECT a smaller limit applies whatever max_packet_size says (256 KiB): a first
 * packet announcing 256 MB is refused when its Remaining Length is read, and RSS does not
 * jump. */
Test(errors, remaining_length_256mb_before_connect_closes)
{
    mql_broker *b = tb_start(NULL);
    tb_assert_serves(b);
    tc_client *c = tc_connect(tb_port(b));
    static const uint8_t hdr[] = {0x10, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x04, 'M', 'Q', 'T', 'T'};
    refused_before_allocation(b, c, hdr, sizeof(hdr));
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* A subscriber that answers a delivery with the wrong kind of acknowledgement. */
static void wrong_ack(bool v5, uint8_t qos, tb_pkt (*ack)(uint16_t))
{
    mql_broker *b = tb_start(NULL);
    tc_client *s;
    uint16_t id;
    pk_v5 pub;
    if (v5) {
        s = tc_open_v5(tb_port(b), false, NULL, .client_id = "wrong-ack", .clean = true);
        tc_sub1_v5(s, 1, "wa/t", qos, 0, qos);
    } else {
        s = tc_open(tb_port(b), "wrong-ack", true, 60, false);
        tc_subscribe(s, 1, "wa/t", qos, qos);
    }
    tc_client *p = tc_open(tb_port(b), "wrong-ack-pub", true, 60, false);
    tc_publish(p, "wa/t", "m", qos, false);
    if (v5) {
        tc_expect_pub_v5(s, &pub, "wa/t", "m", qos, false);
        id = pub.id;
    } else {
        id = tc_expect_publish(s, TB_WAIT_MS, .topic = "wa/t", .payload = "m", .qos = qos);
    }
    tc_sendp(s, ack(id));
    if (v5)
        tc_expect_disconnect_v5(s, 0x82, TB_WAIT_MS); /* Protocol Error [MQTT-4.13.1-1] */
    else
        tc_expect_closed(s, TB_WAIT_MS); /* [v3.1.1 MQTT-4.8.0-1] */
    tc_close(s);
    cr_assert(tb_log_contains(b, "[client.violation]", TB_WAIT_MS));
    tc_disconnect(p);
    cr_assert_eq(tb_stop(b), 0);
}

/* PUBACK for a QoS 2 delivery, PUBREC for a QoS 1 one: the flows of sections 4.3.2 and
 * 4.3.3 are broken, which is a Protocol Error; the broker closes the connection (MQTT 5
 * with DISCONNECT 0x82) instead of guessing. */
Test(errors, wrong_kind_of_ack_v311)
{
    wrong_ack(false, 2, pk_puback);
}

Test(errors, wrong_kind_of_ack_v5_pubrec_for_qos1)
{
    wrong_ack(true, 1, pk_pubrec);
}

Test(errors, wrong_kind_of_ack_v5_pubcomp_before_pubrec)
{
    wrong_ack(true, 2, pk_pubcomp);
}

/* The broker closes a connection after its DISCONNECT while the client is still sending
 * (here: a malformed PUBLISH, then 512 KiB more over a third of a second). It must not reset the
 * connection under the client: a reset makes the client's sends fail and can discard the
 * DISCONNECT before the client reads its reason code. The broker reads and discards what
 * follows until the client stops or closes (bounded), so every send succeeds and the
 * client reads DISCONNECT 0x81 [MQTT-3.3.1-4] [MQTT-4.13.1-1], on every transport. */
Test(errors, disconnect_reaches_a_client_that_keeps_sending)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "keeps-sending", .clean = true);
    /* PUBLISH with both QoS bits set: topic "a", no properties (a Malformed Packet) */
    static const uint8_t bad[] = {0x36, 0x04, 0x00, 0x01, 'a', 0x00};
    /* QoS 0 PUBLISH, topic "f", no properties, 16 KiB of payload */
    enum { PAYLOAD = 16 * 1024, REPEAT = 32 };
    static uint8_t flood[7 + PAYLOAD];
    size_t rl = 2 + 1 + 1 + PAYLOAD;
    flood[0] = 0x30;
    flood[1] = (uint8_t)(0x80 | (rl & 0x7f));
    flood[2] = (uint8_t)(0x80 | ((rl >> 7) & 0x7f));
    flood[3] = (uint8_t)(rl >> 14);
    flood[4] = 0x00;
    flood[5] = 0x01;
    flood[6] = 'f';
    /* flood[7] = 0 is the property length; the payload is zeros */
    cr_assert_eq(tc_send(c, bad, sizeof bad), 0);
    int sent = 0;
    for (int i = 0; i < REPEAT && tc_send(c, flood, sizeof flood) == 0; i++) {
        sent++;
        tb_sleep_ms(10); /* still sending when the broker has long sent its DISCONNECT */
    }
    cr_assert_eq(sent, REPEAT,
                 "the connection failed under the client after %d of %d packets (reset "
                 "instead of a close after reading what it sent)",
                 sent, REPEAT);
    tc_expect_disconnect_v5(c, 0x81, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    cr_assert_eq(tb_stop(b), 0);
}
