/*
 * test_keepalive.c - MQTT 3.1.1 Keep Alive and PINGREQ/PINGRESP, black-box.
 *
 * PINGRESP bytes, disconnection after 1.5 x Keep Alive without traffic, any control packet
 * (not only PINGREQ) keeping the connection alive, and Keep Alive 0 turning the mechanism
 * off. Specification sections 3.1.2.10, 3.12, 3.13. Keep Alive is 1 s so the suite stays
 * fast; timing bounds allow 1.5 s of scheduling slack on top of the 1.5 s the specification
 * gives, since a server may check timers at a coarse granularity.
 */
#include <criterion/criterion.h>

#include "harness.h"

TestSuite(keepalive, .fini = tb_fini, .timeout = 30);

/* PINGREQ is answered by PINGRESP 0xD0 0x00, every time. [v3.1.1 MQTT-3.12.4-1] */
Test(keepalive, pingreq_pingresp)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "pinger", true, 60, false);
    static const uint8_t pingreq[] = {0xC0, 0x00};
    static const uint8_t pingresp[] = {0xD0, 0x00};
    for (int i = 0; i < 3; i++) {
        tc_send(c, pingreq, sizeof pingreq);
        tc_expect(c, pingresp, sizeof pingresp, TB_WAIT_MS);
    }
    tc_disconnect(c);
    tb_stop(b);
}

/* Keep Alive 1 s and silence: the server disconnects, not before the Keep Alive period and
 * within 1.5 x Keep Alive (+ slack). [v3.1.1 MQTT-3.1.2-24] */
Test(keepalive, idle_client_disconnected)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "idle", true, 1, false);
    int64_t t0 = tb_now_ms();
    tc_expect_nothing(c, 900);
    tc_expect_closed(c, 3000 - (int)(tb_now_ms() - t0));
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* PINGREQ every 0.5 s keeps a Keep Alive 1 s connection open well past 1.5 s.
 * [v3.1.1 MQTT-3.1.2-24] [v3.1.1 MQTT-3.12.4-1] */
Test(keepalive, pings_keep_connection)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "keep-ping", true, 1, false);
    for (int i = 0; i < 6; i++) {
        tb_sleep_ms(500);
        tc_ping(c);
    }
    tc_disconnect(c);
    tb_stop(b);
}

/* Any control packet counts, not only PINGREQ: QoS 0 PUBLISH every 0.5 s keeps it open.
 * [v3.1.1 MQTT-3.1.2-24] */
Test(keepalive, other_packets_keep_connection)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "keep-pub", true, 1, false);
    for (int i = 0; i < 6; i++) {
        tc_expect_nothing(c, 500);
        tc_sendp(c, PK_PUBLISH(.topic = "ka/t", .payload = "tick"));
    }
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/* Keep Alive 0 turns the mechanism off: a silent client stays connected.
 * (section 3.1.2.10) */
Test(keepalive, zero_disables)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "no-ka", true, 0, false);
    tc_expect_nothing(c, 2600);
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}
