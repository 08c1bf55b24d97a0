/*
 * test_persist.c - persistent sessions and retained messages across restarts, kill -9 and
 * a corrupt store, against the real binary with `persistence true`.
 *
 * The kill -9 test is the durability promise: every QoS 1 message the publisher got a
 * PUBACK for is delivered after any number of SIGKILLs, in order. It prints its counts.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

#define PERSIST "persistence true\npersistence_location %DIR%\nmax_queued_messages 0\n"

TestSuite(persist, .fini = tb_fini, .timeout = 120);

/* A persistent session with a subscription and queued QoS 1 messages survives a clean
 * restart (SIGTERM, start again on the same port); so does a retained message.
 * [v3.1.1 MQTT-4.1.0-1] [v3.1.1 MQTT-3.2.2-2] [v3.1.1 MQTT-3.3.1-5] */
Test(persist, restart_keeps_session_queue_and_retained)
{
    mql_broker *b = tb_start(PERSIST);
    tc_client *s = tc_open(tb_port(b), "restart-sub", false, 60, false);
    tc_subscribe(s, 1, "rs/t", 1, 1);
    tc_disconnect(s);
    tc_client *p = tc_open(tb_port(b), "restart-pub", true, 60, false);
    tc_publish(p, "rs/t", "kept1", 1, false);
    tc_publish(p, "rs/t", "kept2", 1, false);
    tc_publish(p, "rs/r", "retained", 1, true);
    tc_disconnect(p);
    tb_restart(b);
    s = tc_open(tb_port(b), "restart-sub", false, 60, true);
    uint16_t id = tc_expect_publish(s, TB_WAIT_MS, .topic = "rs/t", .payload = "kept1", .qos = 1);
    tc_sendp(s, pk_puback(id));
    id = tc_expect_publish(s, TB_WAIT_MS, .topic = "rs/t", .payload = "kept2", .qos = 1);
    tc_sendp(s, pk_puback(id));
    tc_disconnect(s);
    tc_client *r = tc_open(tb_port(b), "restart-ret", true, 60, false);
    tc_subscribe(r, 1, "rs/r", 0, 0);
    tc_expect_publish(r, TB_WAIT_MS, .topic = "rs/r", .payload = "retained", .qos = 0,
                      .retain = true);
    tc_disconnect(r);
    /* acknowledged messages are gone from the store too */
    tb_restart(b);
    s = tc_open(tb_port(b), "restart-sub", false, 60, true);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    cr_assert_eq(tb_stop(b), 0);
}

/* The subscription of a restored session matches new messages without resubscribing. */
Test(persist, restored_subscription_routes_new_messages)
{
    mql_broker *b = tb_start(PERSIST);
    tc_client *s = tc_open(tb_port(b), "route-sub", false, 60, false);
    tc_subscribe(s, 1, "rt/+", 1, 1);
    tc_disconnect(s);
    tb_restart(b);
    s = tc_open(tb_port(b), "route-sub", false, 60, true);
    tc_client *p = tc_open(tb_port(b), "route-pub", true, 60, false);
    tc_publish(p, "rt/x", "after", 1, false);
    uint16_t id = tc_expect_publish(s, TB_WAIT_MS, .topic = "rt/x", .payload = "after", .qos = 1);
    tc_sendp(s, pk_puback(id));
    tc_disconnect(p);
    tc_disconnect(s);
    cr_assert_eq(tb_stop(b), 0);
}

/* Clean sessions are not kept across a restart [v3.1.1 MQTT-3.1.2-6]. */
Test(persist, clean_session_not_kept)
{
    mql_broker *b = tb_start(PERSIST);
    tc_client *s = tc_open(tb_port(b), "clean-sub", true, 60, false);
    tc_subscribe(s, 1, "cs/t", 1, 1);
    tc_disconnect(s);
    tb_restart(b);
    s = tc_open(tb_port(b), "clean-sub", false, 60, false);
    tc_disconnect(s);
    cr_assert_eq(tb_stop(b), 0);
}

static uint16_t parse_puback(const uint8_t *buf, int n)
{
    if (n == 4 && buf[0] == 0x40 && buf[1] == 2)
        return (uint16_t)(buf[2] << 8 | buf[3]);
    return 0;
}

/*
 * kill -9 under load: a publisher streams QoS 1 messages to an offline persistent subscriber
 * and the broker is SIGKILLed at random points, 20 times. Afterwards every message whose
 * PUBACK reached the publisher is delivered, in publish order.
 */
Test(persist, kill9_loses_nothing_acknowledged)
{
    enum { CYCLES = 20, PER_CYCLE_MAX = 400, MAXMSG = CYCLES * PER_CYCLE_MAX };
    static bool acked[MAXMSG + 1];
    static bool got[MAXMSG + 1];
    uint32_t pid_seq[65536];
    memset(acked, 0, sizeof(acked));
    memset(got, 0, sizeof(got));
    srand((unsigned)tb_now_ms());

    mql_broker *b = tb_start(PERSIST);
    tc_client *s = tc_open(tb_port(b), "k9-sub", false, 60, false);
    tc_subscribe(s, 1, "k9/t", 1, 1);
    tc_disconnect(s);

    uint32_t seq = 0, n_acked = 0;
    uint16_t pid = 0;
    /* often mid-commit; an emulated broker (MQLITE_WRAPPER, qemu) or one built with
     * ThreadSanitizer is ~10x slower */
    const char *san = tb_sanitizer(b);
    int64_t scale = getenv("MQLITE_WRAPPER") || (san && strcmp(san, "thread") == 0) ? 10 : 1;
    for (int cycle = 0; cycle < CYCLES; cycle++) {
        tc_client *p = tc_open(tb_port(b), "k9-pub", true, 60, false);
        int64_t stop_at = tb_now_ms() + scale * (2 + rand() % 40);
        int sent = 0;
        uint8_t buf[64];
        while (tb_now_ms() < stop_at) {
            if (sent >= PER_CYCLE_MAX) { /* keep collecting PUBACKs until the kill */
                int n = tc_recv_packet(p, buf, sizeof(buf), 5);
                uint16_t a = n > 0 ? parse_puback(buf, n) : 0;
                if (a && !acked[pid_seq[a]]) {
                    acked[pid_seq[a]] = true;
                    n_acked++;
                }
                continue;
            }
            char payload[16];
            seq++;
            pid = (uint16_t)(pid % 65535 + 1);
            pid_seq[pid] = seq;
            snprintf(payload, sizeof(payload), "%08u", seq);
            tc_sendp(p, PK_PUBLISH(.topic = "k9/t", .payload = payload, .qos = 1, .id = pid));
            sent++;
            int n;
            while ((n = tc_recv_packet(p, buf, sizeof(buf), 0)) > 0) {
                uint16_t a = parse_puback(buf, n);
                if (a && !acked[pid_seq[a]]) {
                    acked[pid_seq[a]] = true;
                    n_acked++;
                }
            }
        }
        tb_kill(b);
        /* PUBACKs the broker wrote before it died count too */
        int n;
        while ((n = tc_recv_packet(p, buf, sizeof(buf), 200)) > 0) {
            uint16_t a = parse_puback(buf, n);
            if (a && !acked[pid_seq[a]]) {
                acked[pid_seq[a]] = true;
                n_acked++;
            }
        }
        tc_close(p);
        tb_restart(b);
    }

    s = tc_open(tb_port(b), "k9-sub", false, 60, true);
    uint32_t n_got = 0, n_acked_got = 0, last = 0, dups = 0;
    uint8_t buf[256];
    pk_publish_info info;
    /* until every acknowledged message is in, a slow (emulated) broker gets long gaps; after
     * that, a short quiet gap ends the drain */
    while (tc_recv_publish(s, buf, sizeof(buf), &info,
                           n_acked_got < n_acked ? (int)(1500 * scale) : 500)) {
        char tmp[16] = {0};
        memcpy(tmp, info.payload, info.payload_len < 15 ? info.payload_len : 15);
        uint32_t v = (uint32_t)strtoul(tmp, NULL, 10);
        cr_assert(v >= 1 && v <= seq, "unexpected payload %s", tmp);
        if (got[v]) {
            dups++;
        } else {
            cr_assert_gt(v, last, "message %u delivered after %u: out of order", v, last);
            got[v] = true;
            n_got++;
            n_acked_got += acked[v];
            last = v;
        }
        tc_sendp(s, pk_puback(info.id));
    }
    uint32_t lost = 0;
    for (uint32_t i = 1; i <= seq; i++)
        if (acked[i] && !got[i])
            lost++;
    fprintf(stderr,
            "kill9: %d SIGKILLs, %u published, %u acknowledged, %u delivered, %u duplicates, "
            "%u acknowledged but lost\n",
            CYCLES, seq, n_acked, n_got, dups, lost);
    cr_assert_eq(lost, 0, "%u acknowledged messages were lost", lost);
    cr_assert_gt(n_acked, 0, "the publisher never got a PUBACK: the test proved nothing");
    tc_disconnect(s);
    cr_assert_eq(tb_stop(b), 0);
}

static tb_pkt props_u32(uint8_t id, uint32_t v)
{
    tb_pkt p = {0};
    pk_prop_u32(&p, id, v);
    return p;
}

/* CONNECT v5 with a Session Expiry Interval; returns the Session Present flag. */
static bool connect_v5(tc_client *c, const char *id, bool clean, uint32_t expiry)
{
    tb_pkt props = props_u32(0x11, expiry);
    tc_sendp(c, PK_CONNECT(.client_id = id, .clean = clean, .keepalive = 60, .version = 5,
                           .props = &props));
    uint8_t buf[256];
    int n = tc_recv_packet(c, buf, sizeof(buf), TB_WAIT_MS);
    cr_assert(n >= 4 && buf[0] == 0x20, "no CONNACK");
    cr_assert_eq(buf[3], 0, "CONNACK reason 0x%02x", buf[3]);
    return (buf[2] & 1) != 0;
}

/* Session Expiry counts the time the broker was down: a 2 s session is gone after a 3 s
 * outage, a 0xFFFFFFFF one is not, and a 3.1.1 clean-session-0 one is kept.
 * [MQTT-3.1.2-23] [MQTT-3.2.2-3] */
Test(persist, session_expiry_counts_downtime)
{
    mql_broker *b = tb_start(PERSIST);
    tc_client *c = tc_connect(tb_port(b));
    cr_assert(!connect_v5(c, "exp-short", false, 2));
    tc_close(c);
    c = tc_connect(tb_port(b));
    cr_assert(!connect_v5(c, "exp-never", false, 0xFFFFFFFFu));
    tc_close(c);
    tc_client *v3 = tc_open(tb_port(b), "exp-v311", false, 60, false);
    tc_disconnect(v3);
    cr_assert_eq(tb_halt(b), 0);
    tb_sleep_ms(3000);
    tb_restart(b);
    c = tc_connect(tb_port(b));
    cr_assert(!connect_v5(c, "exp-short", false, 2), "expired session was resumed");
    tc_close(c);
    c = tc_connect(tb_port(b));
    cr_assert(connect_v5(c, "exp-never", false, 0xFFFFFFFFu), "non-expiring session lost");
    tc_close(c);
    v3 = tc_open(tb_port(b), "exp-v311", false, 60, true);
    tc_disconnect(v3);
    cr_assert_eq(tb_stop(b), 0);
}

/* A store file that is not a database: the broker says so, moves it aside and starts. */
Test(persist, corrupt_store_is_moved_aside)
{
    mql_broker *b = tb_start(PERSIST);
    tc_client *s = tc_open(tb_port(b), "corrupt-sub", false, 60, false);
    tc_disconnect(s);
    cr_assert_eq(tb_halt(b), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/mqlite.db", tb_dir(b));
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 8192; i++)
        fputc(rand() & 0xff, f);
    fclose(f);
    tb_restart(b);
    cr_assert(tb_log_contains(b, "corrupt", TB_WAIT_MS), "no log line about the corrupt store");
    tb_assert_serves(b);
    DIR *d = opendir(tb_dir(b));
    cr_assert_not_null(d);
    bool aside = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "mqlite.db.corrupt-", 18) == 0)
            aside = true;
    closedir(d);
    cr_assert(aside, "the corrupt file was not kept aside");
    cr_assert_eq(tb_stop(b), 0);
}

/* A persistence_location that does not exist stops the broker with a clear error. */
Test(persist, missing_directory_is_a_clear_error)
{
    char dir[] = "/tmp/mqlite-persist-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char conf[600];
    snprintf(conf, sizeof(conf), "%s/m.conf", dir);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "listener 1 127.0.0.1\nallow_anonymous true\nuser root\npersistence "
            "true\npersistence_location %s/nowhere\n",
            dir);
    fclose(f);
    char text[4096];
    int status = tb_run_config(conf, text, sizeof(text));
    cr_assert_eq(status, 1, "exit status %d; output: %s", status, text);
    cr_assert(strstr(text, "nowhere") != NULL, "the message does not name the path: %s", text);
    unlink(conf);
    rmdir(dir);
}

/*
 * After a SIGKILL, a restored queued message that might have been sent before the crash
 * (its move to "in flight" is committed after the send) goes out with DUP 1 [MQTT-3.3.1-1]:
 * only for a session that was connected when the broker died, and only as many as its
 * in-flight window could hold. Here max_inflight_messages 3 and a subscriber whose Receive
 * Maximum 1 keeps one message in flight and four queued: after the restart the in-flight
 * one and the next two queued say DUP 1, the last two DUP 0. A session that was offline
 * gets its queue with DUP 0.
 */
Test(persist, restored_maybe_sent_messages_marked_dup)
{
    mql_broker *b = tb_start(PERSIST "max_inflight_messages 3\n");
    tb_pkt props = {0};
    pk_prop_u32(&props, PK_P_SESSION_EXPIRY, 600);
    tb_pkt rm1 = props;
    pk_prop_u16(&rm1, PK_P_RECEIVE_MAXIMUM, 1);
    tc_client *off = tc_open_v5(tb_port(b), false, NULL, .client_id = "dup-off", .clean = true,
                                .keepalive = 60, .props = &props);
    tc_sub1_v5(off, 1, "dup/t", 1, 0, 1);
    tc_disconnect(off);
    tc_client *on = tc_open_v5(tb_port(b), false, NULL, .client_id = "dup-on", .clean = true,
                               .keepalive = 60, .props = &rm1);
    tc_sub1_v5(on, 1, "dup/t", 1, 0, 1);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "dup-pub", .clean = true);
    for (int i = 0; i < 5; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        tc_publish_v5(p, "dup/t", payload, 1, false, NULL); /* waits for the PUBACK: stored */
    }
    pk_v5 first;
    tc_expect_pub_v5(on, &first, "dup/t", "m0", 1, false);
    cr_assert(!first.dup);
    tc_expect_nothing(on, TB_QUIET_MS); /* its Receive Maximum: m1..m4 stay queued */
    tb_kill(b);
    tc_close(on);
    tc_close(p);
    tb_restart(b);

    on = tc_open_v5(tb_port(b), true, NULL, .client_id = "dup-on", .clean = false, .keepalive = 60,
                    .props = &props);
    const bool want_dup[5] = {true, true, true, false, false};
    for (int i = 0; i < 5; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        pk_v5 got;
        tc_expect_v5(on, &got, 3, TB_WAIT_MS); /* a PUBLISH, DUP either way */
        cr_assert(pk_slice_eqs(got.topic, "dup/t") && pk_slice_eqs(got.payload, payload),
                  "expected %s, got '%.*s'", payload, (int)got.payload.n,
                  (const char *)got.payload.p);
        cr_assert_eq(got.dup, want_dup[i], "%s: DUP %d, expected %d", payload, got.dup,
                     want_dup[i]);
        tc_ack_v5(on, &got);
    }
    off = tc_open_v5(tb_port(b), true, NULL, .client_id = "dup-off", .clean = false,
                     .keepalive = 60, .props = &props);
    for (int i = 0; i < 5; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        pk_v5 got;
        tc_expect_pub_v5(off, &got, "dup/t", payload, 1, false);
        cr_assert(!got.dup, "%s went to a session that was offline with DUP 1", payload);
        tc_ack_v5(off, &got);
    }
    tc_disconnect(on);
    tc_disconnect(off);
    cr_assert_eq(tb_stop(b), 0);
}
