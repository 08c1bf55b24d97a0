/*
 * test_v5_will.c - MQTT 5.0 Will Messages: Will Delay Interval, DISCONNECT reasons, will
 * properties, wills on takeover.
 *
 * Purpose: check when a v5 will is published and what it carries. The will waits for the Will
 * Delay Interval, is cancelled if the client reconnects within it, goes out early when the
 * session ends first; DISCONNECT 0x04 publishes it, DISCONNECT 0x00 deletes it; its
 * properties (Payload Format Indicator, Content Type, Response Topic, Correlation Data, User
 * Properties in order, Message Expiry) reach subscribers. Specification sections 3.1.2.5,
 * 3.1.3.2, 3.1.4, 3.14.
 *
 * Assumptions: an observer client subscribes to the will topic before the will owner goes
 * away; "not published" is checked by waiting past the relevant interval plus slack, and
 * "published after the delay" by measuring the time from the close. The will owner's
 * connection is cut by closing the socket (no DISCONNECT), which the broker sees as a
 * network failure.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(v5_will, .fini = tb_fini, .timeout = 30);

/* Will properties with a Will Delay Interval only. */
static tb_pkt delay_props(uint32_t seconds)
{
    tb_pkt p = {0};
    pk_prop_u32(&p, PK_P_WILL_DELAY, seconds);
    return p;
}

static tb_pkt expiry_props(uint32_t seconds)
{
    tb_pkt p = {0};
    pk_prop_u32(&p, PK_P_SESSION_EXPIRY, seconds);
    return p;
}

/* An observer subscribed (QoS 0) to filter. */
static tc_client *observer(mql_broker *b, const char *id, const char *filter)
{
    tc_client *o =
        tc_open_v5(tb_port(b), false, NULL, .client_id = id, .clean = true, .keepalive = 60);
    tc_sub1_v5(o, 1, filter, 0, 0, 0);
    return o;
}

/*
 * Will Delay Interval 2 s, Session Expiry 60 s: the client's connection breaks and it
 * reconnects (Clean Start 0) within the delay, so the will is never published.
 * [MQTT-3.1.3-9] [MQTT-3.1.2-8]
 */
Test(v5_will, delay_not_sent_if_reconnect_within)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "wd-obs", "wd/#");
    tb_pkt wp = delay_props(2);
    tb_pkt e60 = expiry_props(60);
    tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "wd", .clean = true,
                              .keepalive = 60, .props = &e60, .will_topic = "wd/will",
                              .will_payload = "wd-died", .will_props = &wp);
    tc_close(c);
    tb_sleep_ms(300);
    c = tc_open_v5(tb_port(b), true, NULL, .client_id = "wd", .clean = false, .keepalive = 60,
                   .props = &e60);
    tc_expect_nothing(o, 2700);
    tc_disconnect(c);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * Will Delay Interval 1 s, Session Expiry 60 s: after the connection breaks the will is not
 * published at once, but is published once the delay has passed. [MQTT-3.1.2-8] (3.1.3.2.2)
 */
Test(v5_will, delay_sent_after_delay)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "wa-obs", "wa/#");
    tb_pkt wp = delay_props(1);
    tb_pkt e60 = expiry_props(60);
    tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "wa", .clean = true,
                              .keepalive = 60, .props = &e60, .will_topic = "wa/will",
                              .will_payload = "wa-died", .will_props = &wp);
    int64_t t0 = tb_now_ms();
    tc_close(c);
    tc_expect_nothing(o, 600);
    pk_v5 pub;
    tc_expect_pub_v5(o, &pub, "wa/will", "wa-died", 0, false);
    int64_t dt = tb_now_ms() - t0;
    cr_assert(dt >= 900 && dt <= 3000, "will with delay 1 s published after %lld ms",
              (long long)dt);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * Will Delay Interval 10 s, Session Expiry 1 s: the session ends first, and the will is
 * published then (about 1 s after the close), not after 10 s. [MQTT-3.1.2-8] (3.1.3.2.2)
 */
Test(v5_will, sent_at_session_end_if_first)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "we-obs", "we/#");
    tb_pkt wp = delay_props(10);
    tb_pkt e1 = expiry_props(1);
    tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "we", .clean = true,
                              .keepalive = 60, .props = &e1, .will_topic = "we/will",
                              .will_payload = "we-expired", .will_props = &wp);
    int64_t t0 = tb_now_ms();
    tc_close(c);
    tc_expect_nothing(o, 600);
    pk_v5 pub;
    tc_recv_v5(o, &pub, 4000);
    int64_t dt = tb_now_ms() - t0;
    cr_assert(pub.type == 3 && pk_slice_eqs(pub.topic, "we/will") &&
                  pk_slice_eqs(pub.payload, "we-expired"),
              "will not published when the 1 s session ended (waited %lld ms)", (long long)dt);
    cr_assert(dt >= 900 && dt <= 4600, "will published %lld ms after close, session expiry 1 s",
              (long long)dt);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * Will Delay Interval 10 s, Session Expiry 0: the session ends with the connection, so the
 * will is published at once. [MQTT-3.1.2-8] (3.1.3.2.2)
 */
Test(v5_will, expiry0_sent_at_close_despite_delay)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "w0-obs", "w0/#");
    tb_pkt wp = delay_props(10);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "w0", .clean = true, .keepalive = 60,
                   .will_topic = "w0/will", .will_payload = "w0-died", .will_props = &wp);
    tc_close(c);
    pk_v5 pub;
    tc_expect_pub_v5(o, &pub, "w0/will", "w0-died", 0, false);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will.
 * (3.14.2.1) [MQTT-3.1.2-8]
 */
Test(v5_will, disconnect_0x04_publishes_will)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "w4-obs", "w4/#");
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "w4", .clean = true, .keepalive = 60,
                   .will_topic = "w4/will", .will_payload = "w4-bye", .will_qos = 1);
    tc_sendp(c, pk_disconnect_v5(0x04, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    pk_v5 pub;
    tc_expect_pub_v5(o, &pub, "w4/will", "w4-bye", 0, false);
    tc_expect_nothing(o, TB_QUIET_MS);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * DISCONNECT 0x04 with a Will Delay Interval of 1 s and Session Expiry 60 s: the will is
 * published, but only once the delay has passed (3.1.3.2.2; 3.1.2.5 non-normative comment on
 * combining 0x04 with a delay). [MQTT-3.1.2-8]
 */
Test(v5_will, disconnect_0x04_honours_will_delay)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "w4d-obs", "w4d/#");
    tb_pkt wp = delay_props(1);
    tb_pkt e60 = expiry_props(60);
    tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "w4d", .clean = true,
                              .keepalive = 60, .props = &e60, .will_topic = "w4d/will",
                              .will_payload = "w4d-bye", .will_props = &wp);
    int64_t t0 = tb_now_ms();
    tc_sendp(c, pk_disconnect_v5(0x04, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tc_expect_nothing(o, 600);
    pk_v5 pub;
    tc_expect_pub_v5(o, &pub, "w4d/will", "w4d-bye", 0, false);
    int64_t dt = tb_now_ms() - t0;
    cr_assert(dt >= 900 && dt <= 3000,
              "will with delay 1 s published %lld ms after DISCONNECT "
              "0x04",
              (long long)dt);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * DISCONNECT with reason 0x00 deletes the will: nothing is published, also not after the
 * session ends. [MQTT-3.14.4-3] [MQTT-3.1.2-10]
 */
Test(v5_will, disconnect_0x00_discards_will)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "wn-obs", "wn/#");
    tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "wn", .clean = true,
                              .keepalive = 60, .will_topic = "wn/will", .will_payload = "wn-bye");
    tc_sendp(c, pk_disconnect_v5(0x00, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tc_expect_nothing(o, 500);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * A client that is being sent messages sends DISCONNECT 0x00 and closes its socket at once,
 * with messages still unread: its kernel answers the close with a TCP reset, which reaches
 * the broker after the DISCONNECT bytes. The DISCONNECT was delivered, so the will must not
 * be published. Twenty rounds, since whether the broker has read the DISCONNECT when it
 * notices the reset is a matter of timing. [MQTT-3.14.4-3] [MQTT-3.1.2-10]
 *
 * DISABLED (known limitation, see issue 3's note): nng 1.5.2's TCP stream fails a receive
 * with NNG_ECONNSHUT as soon as poll reports the reset, without reading the bytes that
 * arrived before it, so mqlite never sees the DISCONNECT in about half the rounds. Enable
 * it again when the TCP read path drains the socket before reporting the error.
 */
Test(v5_will, disconnect_0x00_then_reset_no_will, .disabled = true)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "wr-obs", "wr/will");
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "wr-pub", .clean = true);
    int wills = 0;
    for (int round = 0; round < 20; round++) {
        tc_client *c = tc_open_v5(tb_port(b), false, NULL, .client_id = "wr", .clean = true,
                                  .keepalive = 60, .will_topic = "wr/will", .will_payload = "w");
        tc_sub1_v5(c, 1, "wr/busy", 0, 0, 0);
        for (int i = 0; i < 50; i++) {
            tc_publish_v5(p, "wr/busy", "traffic the client never reads", 0, false, NULL);
        }
        tc_sendp(c, pk_disconnect_v5(0x00, NULL));
        tc_close(c);
        uint8_t buf[256];
        if (tc_recv_packet(o, buf, sizeof buf, 200) > 0) {
            wills++;
        }
    }
    cr_assert_eq(wills, 0,
                 "will published in %d of 20 rounds although the client's DISCONNECT 0x00 "
                 "reached the broker before the reset [MQTT-3.14.4-3]",
                 wills);
    tc_disconnect(p);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * Will properties reach the subscriber unaltered: Payload Format Indicator, Content Type,
 * Response Topic, Correlation Data (binary, with a zero byte), User Properties in their order
 * (a repeated name included); a Message Expiry Interval is sent as the remaining lifetime
 * (not more than the one given). The Will Delay Interval is not an Application Message
 * property and is not forwarded. [MQTT-3.1.3-10] [MQTT-3.3.2-4] [MQTT-3.3.2-15]
 * [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20] (3.1.3.2.4)
 */
Test(v5_will, will_properties_forwarded)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "wp-obs", "wp/#");
    static const uint8_t corr[] = {0x01, 0x00, 0xFF, 0x7E};
    tb_pkt users = {0};
    pk_prop_pair(&users, PK_P_USER_PROPERTY, "k1", "v1");
    pk_prop_pair(&users, PK_P_USER_PROPERTY, "k2", "v2");
    pk_prop_pair(&users, PK_P_USER_PROPERTY, "k1", "v3");
    tb_pkt wp = {0};
    pk_prop_u8(&wp, PK_P_PAYLOAD_FORMAT, 1);
    pk_prop_str(&wp, PK_P_CONTENT_TYPE, "text/plain");
    pk_prop_pair(&wp, PK_P_USER_PROPERTY, "k1", "v1");
    pk_prop_str(&wp, PK_P_RESPONSE_TOPIC, "wp/reply");
    pk_prop_pair(&wp, PK_P_USER_PROPERTY, "k2", "v2");
    pk_prop_bin(&wp, PK_P_CORRELATION_DATA, corr, sizeof corr);
    pk_prop_u32(&wp, PK_P_MESSAGE_EXPIRY, 100);
    pk_prop_pair(&wp, PK_P_USER_PROPERTY, "k1", "v3");
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "wp", .clean = true, .keepalive = 60,
                   .will_topic = "wp/will", .will_payload = "wp-utf8", .will_props = &wp);
    tc_close(c);
    pk_v5 pub;
    tc_expect_pub_v5(o, &pub, "wp/will", "wp-utf8", 0, false);
    char hex[1024];
    pk_hex(pub.b, pub.len, hex, sizeof hex);
    uint32_t v = 0;
    pk_slice s;
    cr_assert(pk_prop_int(pub.props, PK_P_PAYLOAD_FORMAT, &v) && v == 1,
              "will lost its Payload Format Indicator [%s]", hex);
    cr_assert(pk_prop_data(pub.props, PK_P_CONTENT_TYPE, &s) && pk_slice_eqs(s, "text/plain"),
              "will lost its Content Type [%s]", hex);
    cr_assert(pk_prop_data(pub.props, PK_P_RESPONSE_TOPIC, &s) && pk_slice_eqs(s, "wp/reply"),
              "will lost its Response Topic [%s]", hex);
    cr_assert(pk_prop_data(pub.props, PK_P_CORRELATION_DATA, &s) &&
                  pk_slice_eq(s, corr, sizeof corr),
              "will lost its Correlation Data [%s]", hex);
    tb_pkt got_users = pk_props_select(pub.props, PK_P_USER_PROPERTY);
    cr_assert(got_users.len == users.len && memcmp(got_users.b, users.b, users.len) == 0,
              "will User Properties not forwarded unaltered and in order [%s]", hex);
    cr_assert(pk_prop_int(pub.props, PK_P_MESSAGE_EXPIRY, &v) && v <= 100 && v >= 95,
              "will Message Expiry Interval missing or wrong (%u) [%s]", v, hex);
    cr_assert_eq(pk_prop_count(pub.props, PK_P_WILL_DELAY), 0);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * Takeover by a Clean Start 0 connection while the old one has a Will Delay Interval (5 s)
 * and a session that outlives the delay: the session continues, so the will is not
 * published (non-normative comment in 3.1.3.2.2). [MQTT-3.1.3-9] [MQTT-3.1.4-3]
 */
Test(v5_will, takeover_clean_start0_with_delay_no_will)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "wt-obs", "wt/#");
    tb_pkt wp = delay_props(5);
    tb_pkt e60 = expiry_props(60);
    tc_client *a = tc_open_v5(tb_port(b), false, NULL, .client_id = "wt", .clean = true,
                              .keepalive = 60, .props = &e60, .will_topic = "wt/will",
                              .will_payload = "wt-old", .will_props = &wp);
    tc_client *c = tc_open_v5(tb_port(b), true, NULL, .client_id = "wt", .clean = false,
                              .keepalive = 60, .props = &e60);
    tc_expect_disconnect_v5(a, 0x8E, TB_WAIT_MS);
    tc_close(a);
    tc_expect_nothing(o, 1000);
    tc_disconnect(c);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * Takeover by a Clean Start 1 connection: the old session ends, so the old connection's will
 * is published even though its Will Delay Interval (5 s) has not passed (3.1.4 non-normative
 * comment; 3.1.3.2.2). [MQTT-3.1.2-8] [MQTT-3.1.4-3]
 */
Test(v5_will, takeover_clean_start1_sends_will)
{
    mql_broker *b = tb_start(NULL);
    tc_client *o = observer(b, "wc-obs", "wc/#");
    tb_pkt wp = delay_props(5);
    tb_pkt e60 = expiry_props(60);
    tc_client *a = tc_open_v5(tb_port(b), false, NULL, .client_id = "wc", .clean = true,
                              .keepalive = 60, .props = &e60, .will_topic = "wc/will",
                              .will_payload = "wc-old", .will_props = &wp);
    tc_client *c =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "wc", .clean = true, .keepalive = 60);
    tc_expect_disconnect_v5(a, 0x8E, TB_WAIT_MS);
    tc_close(a);
    pk_v5 pub;
    tc_expect_pub_v5(o, &pub, "wc/will", "wc-old", 0, false);
    tc_disconnect(c);
    tc_disconnect(o);
    tb_stop(b);
}
