/*
 * test_v5_session.c - MQTT 5.0 sessions: Clean Start, Session Expiry Interval, takeover.
 *
 * Purpose: check the v5 session lifecycle black-box. Session Present follows Clean Start and
 * whether a session survived (Session Expiry 0 ends it with the connection; N seconds keeps it
 * N seconds and no longer); DISCONNECT may raise or clear a non-zero expiry but may not turn 0
 * into non-zero (Protocol Error, DISCONNECT 0x82); a takeover with Clean Start 0 resumes the
 * session, with Clean Start 1 discards it. Specification sections 3.1.2.4, 3.1.2.11.2,
 * 3.1.4, 3.2.2.1.1, 3.14.2.2.2, 4.1.
 *
 * Assumptions: expiry tests use 1-2 s intervals and allow generous slack on the "gone after"
 * side (a server may check expiry on a timer); the "still there" side reconnects well within
 * the interval. A surviving session is detected both by Session Present and by its
 * subscription delivering; a queued QoS 1 message shows its offline queue survived.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(v5_session, .fini = tb_fini, .timeout = 30);

/* Properties block with just a Session Expiry Interval. */
static tb_pkt expiry_props(uint32_t seconds)
{
    tb_pkt p = {0};
    pk_prop_u32(&p, PK_P_SESSION_EXPIRY, seconds);
    return p;
}

/*
 * Session Present: Clean Start 1 always gives 0; Clean Start 0 gives 1 only when a session
 * exists (kept by a non-zero Session Expiry Interval). [MQTT-3.2.2-2] [MQTT-3.2.2-3]
 * [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.1.2-6] [MQTT-3.1.2-23]
 */
Test(v5_session, session_present_per_clean_start_and_expiry)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tb_pkt e60 = expiry_props(60);
    /* No session yet: Clean Start 0 creates one, Session Present 0. */
    tc_client *c = tc_open_v5(port, false, NULL, .client_id = "sp5", .clean = false,
                              .keepalive = 60, .props = &e60);
    tc_disconnect(c);
    /* Kept (expiry 60): Clean Start 0 resumes it. */
    c = tc_open_v5(port, true, NULL, .client_id = "sp5", .clean = false, .keepalive = 60,
                   .props = &e60);
    tc_disconnect(c);
    /* Clean Start 1 discards it: Session Present 0 even though one existed. This connection
     * has expiry 0 (absent), so its session ends when it closes. */
    c = tc_open_v5(port, false, NULL, .client_id = "sp5", .clean = true, .keepalive = 60);
    tc_disconnect(c);
    /* Nothing left: Clean Start 0 finds no session. */
    c = tc_open_v5(port, false, NULL, .client_id = "sp5", .clean = false, .keepalive = 60);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * Session Expiry Interval 0 (absent): the session ends when the connection closes. A Clean
 * Start 0 reconnect gets Session Present 0, and neither the old subscription nor a message
 * published meanwhile reaches it. [MQTT-3.1.2-23] [MQTT-4.1.0-2] [MQTT-3.2.2-3]
 */
Test(v5_session, expiry_zero_session_gone)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tc_client *s =
        tc_open_v5(port, false, NULL, .client_id = "se0", .clean = false, .keepalive = 60);
    tc_sub1_v5(s, 1, "se0/t", 1, 0, 1);
    tc_sendp(s, pk_disconnect_v5(0, NULL));
    tc_expect_closed(s, TB_WAIT_MS);
    tc_close(s);
    tc_client *p = tc_open_v5(port, false, NULL, .client_id = "se0-pub", .clean = true);
    tc_publish_v5(p, "se0/t", "while-away", 1, false, NULL);
    s = tc_open_v5(port, false, NULL, .client_id = "se0", .clean = false, .keepalive = 60);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_publish_v5(p, "se0/t", "after", 1, false, NULL);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/*
 * Session Expiry Interval 2 s: reconnecting within it resumes the session (Session Present 1,
 * the QoS 1 message queued meanwhile is delivered, the subscription still works); after the
 * interval has passed the session is gone (Session Present 0, nothing delivered).
 * [MQTT-3.1.2-23] [MQTT-4.1.0-2] [MQTT-3.1.2-5] [MQTT-3.2.2-3]
 */
Test(v5_session, expiry_n_seconds_resumed_within_gone_after)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tb_pkt e2 = expiry_props(2);
    tc_client *s = tc_open_v5(port, false, NULL, .client_id = "se2", .clean = true, .keepalive = 60,
                              .props = &e2);
    tc_sub1_v5(s, 1, "se2/t", 1, 0, 1);
    tc_sendp(s, pk_disconnect_v5(0, NULL));
    tc_expect_closed(s, TB_WAIT_MS);
    tc_close(s);
    tc_client *p = tc_open_v5(port, false, NULL, .client_id = "se2-pub", .clean = true);
    tc_publish_v5(p, "se2/t", "queued", 1, false, NULL);

    /* Within the interval. */
    s = tc_open_v5(port, true, NULL, .client_id = "se2", .clean = false, .keepalive = 60,
                   .props = &e2);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "se2/t", "queued", 1, false);
    tc_ack_v5(s, &pub);
    tc_publish_v5(p, "se2/t", "live", 0, false, NULL);
    tc_expect_pub_v5(s, &pub, "se2/t", "live", 0, false);
    tc_sendp(s, pk_disconnect_v5(0, NULL));
    tc_expect_closed(s, TB_WAIT_MS);
    tc_close(s);

    /* Queue one more, then wait past the interval. */
    tc_publish_v5(p, "se2/t", "expired-with-session", 1, false, NULL);
    tb_sleep_ms(3500);
    s = tc_open_v5(port, false, NULL, .client_id = "se2", .clean = false, .keepalive = 60,
                   .props = &e2);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_publish_v5(p, "se2/t", "no-subscription", 0, false, NULL);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/*
 * CONNECT with Session Expiry 0, then DISCONNECT carrying a non-zero Session Expiry Interval:
 * a Protocol Error (3.14.2.2.2); the server answers DISCONNECT 0x82 (without a Session
 * Expiry Interval of its own [MQTT-3.14.2-2]) and closes, and the session is not kept.
 * [MQTT-4.13.1-1]
 */
Test(v5_session, disconnect_expiry_from_zero_protocol_error)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tc_client *c = tc_open_v5(port, false, NULL, .client_id = "dz", .clean = true, .keepalive = 60);
    tc_sub1_v5(c, 1, "dz/t", 1, 0, 1);
    tb_pkt e60 = expiry_props(60);
    tc_sendp(c, pk_disconnect_v5(0, &e60));
    tc_expect_disconnect_v5(c, 0x82, TB_WAIT_MS);
    tc_close(c);
    c = tc_open_v5(port, false, NULL, .client_id = "dz", .clean = false, .keepalive = 60);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * An invalid DISCONNECT (expiry 0 -> non-zero) is not treated as a valid DISCONNECT
 * (3.14.2.2.2), so it does not delete the Will Message: the server closes the connection
 * without having received a valid DISCONNECT 0x00 and publishes the will. [MQTT-3.1.2-8]
 */
Test(v5_session, invalid_disconnect_keeps_will)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tc_client *o = tc_open_v5(port, false, NULL, .client_id = "dzw-obs", .clean = true);
    tc_sub1_v5(o, 1, "dzw/will", 0, 0, 0);
    tc_client *c = tc_open_v5(port, false, NULL, .client_id = "dzw", .clean = true, .keepalive = 60,
                              .will_topic = "dzw/will", .will_payload = "gone");
    tb_pkt e60 = expiry_props(60);
    tc_sendp(c, pk_disconnect_v5(0, &e60));
    tc_expect_disconnect_v5(c, 0x82, TB_WAIT_MS);
    tc_close(c);
    pk_v5 pub;
    tc_expect_pub_v5(o, &pub, "dzw/will", "gone", 0, false);
    tc_disconnect(o);
    tb_stop(b);
}

/*
 * DISCONNECT raising a non-zero Session Expiry Interval (1 s -> 60 s) is honoured: after more
 * than the original second the session is still there (Session Present 1) and its
 * subscription delivers. (3.14.2.2.2) [MQTT-3.1.2-23]
 */
Test(v5_session, disconnect_raises_expiry)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tb_pkt e1 = expiry_props(1);
    tc_client *s = tc_open_v5(port, false, NULL, .client_id = "dr", .clean = true, .keepalive = 60,
                              .props = &e1);
    tc_sub1_v5(s, 1, "dr/t", 1, 0, 1);
    tb_pkt e60 = expiry_props(60);
    tc_sendp(s, pk_disconnect_v5(0, &e60));
    tc_expect_closed(s, TB_WAIT_MS);
    tc_close(s);
    tb_sleep_ms(2500);
    s = tc_open_v5(port, true, NULL, .client_id = "dr", .clean = false, .keepalive = 60,
                   .props = &e60);
    tc_client *p = tc_open_v5(port, false, NULL, .client_id = "dr-pub", .clean = true);
    tc_publish_v5(p, "dr/t", "kept", 0, false, NULL);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "dr/t", "kept", 0, false);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * DISCONNECT with Session Expiry Interval 0 after a CONNECT with 60 ends the session with
 * the connection: Session Present 0 on the next Clean Start 0 connect. (3.14.2.2.2)
 * [MQTT-4.1.0-2]
 */
Test(v5_session, disconnect_expiry_zero_ends_session)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tb_pkt e60 = expiry_props(60);
    tc_client *s = tc_open_v5(port, false, NULL, .client_id = "dx0", .clean = true, .keepalive = 60,
                              .props = &e60);
    tc_sub1_v5(s, 1, "dx0/t", 1, 0, 1);
    tb_pkt e0 = expiry_props(0);
    tc_sendp(s, pk_disconnect_v5(0, &e0));
    tc_expect_closed(s, TB_WAIT_MS);
    tc_close(s);
    tb_sleep_ms(100);
    s = tc_open_v5(port, false, NULL, .client_id = "dx0", .clean = false, .keepalive = 60,
                   .props = &e60);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Takeover with Clean Start 0 resumes the session of the connection it replaces: the old
 * connection gets DISCONNECT 0x8E, the new one Session Present 1 and the old subscription.
 * [MQTT-3.1.4-3] [MQTT-3.1.2-5] [MQTT-3.2.2-3]
 */
Test(v5_session, takeover_clean_start0_resumes)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tb_pkt e60 = expiry_props(60);
    tc_client *a = tc_open_v5(port, false, NULL, .client_id = "tk5", .clean = true, .keepalive = 60,
                              .props = &e60);
    tc_sub1_v5(a, 1, "tk5/t", 1, 0, 1);
    tc_client *c = tc_open_v5(port, true, NULL, .client_id = "tk5", .clean = false, .keepalive = 60,
                              .props = &e60);
    tc_expect_disconnect_v5(a, 0x8E, TB_WAIT_MS);
    tc_close(a);
    tc_client *p = tc_open_v5(port, false, NULL, .client_id = "tk5-pub", .clean = true);
    tc_publish_v5(p, "tk5/t", "to-new", 1, false, NULL);
    pk_v5 pub;
    tc_expect_pub_v5(c, &pub, "tk5/t", "to-new", 1, false);
    tc_ack_v5(c, &pub);
    tc_disconnect(p);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * Takeover with Clean Start 1 discards the old session: DISCONNECT 0x8E to the old
 * connection, Session Present 0 and no subscription on the new one. [MQTT-3.1.4-3]
 * [MQTT-3.1.2-4] [MQTT-3.2.2-2]
 */
Test(v5_session, takeover_clean_start1_discards)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tb_pkt e60 = expiry_props(60);
    tc_client *a = tc_open_v5(port, false, NULL, .client_id = "tk5c", .clean = true,
                              .keepalive = 60, .props = &e60);
    tc_sub1_v5(a, 1, "tk5c/t", 1, 0, 1);
    tc_client *c = tc_open_v5(port, false, NULL, .client_id = "tk5c", .clean = true,
                              .keepalive = 60, .props = &e60);
    tc_expect_disconnect_v5(a, 0x8E, TB_WAIT_MS);
    tc_close(a);
    tc_client *p = tc_open_v5(port, false, NULL, .client_id = "tk5c-pub", .clean = true);
    tc_publish_v5(p, "tk5c/t", "nobody", 1, false, NULL);
    tc_expect_nothing(c, TB_QUIET_MS);
    tc_disconnect(p);
    tc_disconnect(c);
    tb_stop(b);
}
