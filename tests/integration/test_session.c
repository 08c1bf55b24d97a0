/*
 * test_session.c - MQTT 3.1.1 ClientID and session semantics, black-box.
 *
 * Covers the part of mqlite that DESIGN.md calls "the part users came for": one live
 * connection per ClientID (takeover), persistent sessions with clean session 0 (subscriptions
 * and queued QoS 1/2 messages survive a reconnect, Session Present 1), clean session 1
 * discarding state, and a concurrent storm of connections reusing one ClientID after which
 * exactly one connection is live. Specification sections 3.1.2.4, 3.1.4, 3.2.2.2, 4.1.
 * The storm uses threads that only call the non-asserting tc_* functions; the main thread
 * asserts afterwards.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "harness.h"

TestSuite(session, .fini = tb_fini, .timeout = 30);

/* A second connection with the same ClientID makes the broker close the first one; the
 * second stays connected and served. [v3.1.1 MQTT-3.1.4-2] */
Test(session, takeover_closes_first)
{
    mql_broker *b = tb_start(NULL);
    tc_client *a = tc_open(tb_port(b), "dup-id", true, 60, false);
    tc_client *c = tc_open(tb_port(b), "dup-id", true, 60, false);
    tc_expect_closed(a, TB_WAIT_MS);
    tc_close(a);
    tc_ping(c);
    tc_expect_nothing(c, TB_QUIET_MS);
    tc_ping(c);
    tc_disconnect(c);
    tb_stop(b);
}

/* Takeover with clean session 0 resumes the session of the connection it replaces: Session
 * Present 1 and its subscription delivers to the new connection.
 * [v3.1.1 MQTT-3.1.4-2] [v3.1.1 MQTT-3.1.2-4] [v3.1.1 MQTT-3.2.2-2] */
Test(session, takeover_resumes_persistent_session)
{
    mql_broker *b = tb_start(NULL);
    tc_client *a = tc_open(tb_port(b), "tk-persist", false, 60, false);
    tc_subscribe(a, 1, "tk/t", 1, 1);
    tc_client *c = tc_open(tb_port(b), "tk-persist", false, 60, true);
    tc_expect_closed(a, TB_WAIT_MS);
    tc_close(a);
    tc_client *p = tc_open(tb_port(b), "tk-pub", true, 60, false);
    tc_publish(p, "tk/t", "after takeover", 1, false);
    uint16_t id =
        tc_expect_publish(c, TB_WAIT_MS, .topic = "tk/t", .payload = "after takeover", .qos = 1);
    tc_sendp(c, pk_puback(id));
    tc_disconnect(c);
    tc_disconnect(p);
    tb_stop(b);
}

/* A new ClientID with clean session 0 has no stored session: Session Present 0.
 * [v3.1.1 MQTT-3.2.2-3] */
Test(session, new_persistent_session_present0)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_connect(tb_port(b));
    tc_sendp(c, PK_CONNECT(.client_id = "fresh-persist", .clean = false, .keepalive = 60));
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    tc_expect(c, connack, sizeof connack, TB_WAIT_MS);
    tc_disconnect(c);
    tb_stop(b);
}

/*
 * Clean session 0: after a disconnect the subscription survives and QoS 1 and QoS 2
 * messages published meanwhile are queued and delivered on reconnect (with DUP 0: they were
 * never sent before), CONNACK 0x20 0x02 0x01 0x00, and the subscription still delivers.
 * [v3.1.1 MQTT-3.1.2-4] [v3.1.1 MQTT-3.1.4-3] [v3.1.1 MQTT-3.2.2-2] [v3.1.1 MQTT-4.1.0-1]
 * [v3.1.1 MQTT-4.5.0-1] [v3.1.1 MQTT-3.3.1-1]
 */
Test(session, persistent_session_survives_reconnect)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "persist", false, 60, false);
    tc_subscribe(s, 1, "ps/#", 2, 2);
    tc_disconnect(s);

    tc_client *p = tc_open(tb_port(b), "persist-pub", true, 60, false);
    tc_publish(p, "ps/q1", "m1", 1, false);
    tc_publish(p, "ps/q2", "m2", 2, false);

    s = tc_connect(tb_port(b));
    tc_sendp(s, PK_CONNECT(.client_id = "persist", .clean = false, .keepalive = 60));
    static const uint8_t connack[] = {0x20, 0x02, 0x01, 0x00};
    tc_expect(s, connack, sizeof connack, TB_WAIT_MS);

    /* The two queued messages, in either order (different topics and QoS). */
    bool got1 = false;
    bool got2 = false;
    for (int i = 0; i < 2; i++) {
        uint8_t buf[256];
        pk_publish_info in;
        cr_assert(tc_recv_publish(s, buf, sizeof buf, &in, TB_WAIT_MS),
                  "queued message %d not delivered after reconnect", i + 1);
        cr_assert_not(in.dup, "a queued message never sent before must have DUP 0");
        if (in.qos == 1) {
            cr_assert(!got1 && in.topic_len == 5 && memcmp(in.topic, "ps/q1", 5) == 0 &&
                      in.payload_len == 2 && memcmp(in.payload, "m1", 2) == 0);
            got1 = true;
            tc_sendp(s, pk_puback(in.id));
        } else {
            cr_assert(!got2 && in.qos == 2 && in.topic_len == 5 &&
                      memcmp(in.topic, "ps/q2", 5) == 0 && in.payload_len == 2 &&
                      memcmp(in.payload, "m2", 2) == 0);
            got2 = true;
            tc_sendp(s, pk_pubrec(in.id));
            tc_expectp(s, pk_pubrel(in.id), TB_WAIT_MS);
            tc_sendp(s, pk_pubcomp(in.id));
        }
    }
    tc_expect_nothing(s, TB_QUIET_MS);

    /* The subscription itself survived. */
    tc_publish(p, "ps/live", "m3", 0, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "ps/live", .payload = "m3");
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/*
 * Clean session 1 after a persistent session discards it: Session Present 0, no queued
 * messages, no subscription; and a later clean session 0 connect finds no session (Session
 * Present 0). [v3.1.1 MQTT-3.1.2-6] [v3.1.1 MQTT-3.1.4-3] [v3.1.1 MQTT-3.2.2-1]
 * [v3.1.1 MQTT-3.2.2-3]
 */
Test(session, clean_session_deletes_persistent_session)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "cs-del", false, 60, false);
    tc_subscribe(s, 1, "csd/t", 1, 1);
    tc_disconnect(s);
    tc_client *p = tc_open(tb_port(b), "cs-del-pub", true, 60, false);
    tc_publish(p, "csd/t", "queued", 1, false);

    s = tc_open(tb_port(b), "cs-del", true, 60, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_publish(p, "csd/t", "live", 1, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);

    s = tc_open(tb_port(b), "cs-del", false, 60, false);
    tc_publish(p, "csd/t", "later", 1, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* A clean session 1 session lasts only as long as its connection: subscriptions made in it
 * are gone for the next clean session 0 connect, which gets Session Present 0.
 * [v3.1.1 MQTT-3.1.2-6] [v3.1.1 MQTT-3.2.2-3] */
Test(session, clean_session_not_kept)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "cs-tmp", true, 60, false);
    tc_subscribe(s, 1, "cst/t", 1, 1);
    tc_disconnect(s);
    s = tc_open(tb_port(b), "cs-tmp", false, 60, false);
    tc_client *p = tc_open(tb_port(b), "cs-tmp-pub", true, 60, false);
    tc_publish(p, "cst/t", "x", 1, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* Persistent session kept while its client is away, resumed twice in a row (Session Present
 * stays 1 for as long as the session exists). [v3.1.1 MQTT-3.2.2-2] [v3.1.1 MQTT-4.1.0-1] */
Test(session, persistent_session_present_repeatedly)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "again", false, 60, false);
    tc_disconnect(s);
    s = tc_open(tb_port(b), "again", false, 60, true);
    tc_close(s); /* abnormal close keeps the session too */
    s = tc_open(tb_port(b), "again", false, 60, true);
    tc_disconnect(s);
    tb_stop(b);
}

/* ---- concurrent reuse of one ClientID ------------------------------------------------- */

#define STORM_THREADS 4
#define STORM_MS 2500

struct storm {
    uint16_t port;
    atomic_bool *stop;
    int seq;
    int connacks;    /* CONNACK 0 received */
    int refused;     /* other CONNACK, or closed before CONNACK */
    tc_client *last; /* the final connection, left open; its CONNECT was answered */
};

static void *storm_worker(void *arg)
{
    struct storm *st = arg;
    uint8_t buf[64];
    while (!atomic_load(st->stop)) {
        tc_client *c = tc_connect_try(st->port);
        if (c == NULL) {
            st->refused++;
            tb_sleep_ms(5);
            continue;
        }
        bool clean = (st->seq++ % 2) == 0;
        tc_sendp(c, PK_CONNECT(.client_id = "storm-id", .clean = clean, .keepalive = 30));
        int r = tc_recv_packet(c, buf, sizeof buf, 2000);
        bool ok = r == 4 && buf[0] == 0x20 && buf[1] == 0x02 && buf[3] == 0x00;
        if (ok) {
            st->connacks++;
        } else {
            st->refused++;
        }
        if (atomic_load(st->stop) && ok) {
            st->last = c; /* the broker has processed this CONNECT */
            break;
        }
        /* Stay a little (or until taken over), sometimes leave without DISCONNECT. */
        if (ok && tc_recv_packet(c, buf, sizeof buf, 10) == TC_TIMEOUT && (st->seq % 3) == 0) {
            tc_sendp(c, pk_disconnect());
        }
        tc_close(c);
    }
    return NULL;
}

/*
 * Four threads connect with the same ClientID in a loop for ~2.5 s (alternating clean
 * session 0 and 1, leaving with and without DISCONNECT). Afterwards the broker is alive, a
 * fresh client with that ClientID connects, every connection the threads left open is
 * closed by the broker, and only the fresh one is live and served.
 * [v3.1.1 MQTT-3.1.4-2] [v3.1.1 MQTT-3.1.4-4]
 */
Test(session, concurrent_client_id_storm)
{
    mql_broker *b = tb_start(NULL);
    atomic_bool stop = false;
    struct storm st[STORM_THREADS];
    pthread_t th[STORM_THREADS];
    for (int i = 0; i < STORM_THREADS; i++) {
        st[i] = (struct storm){.port = tb_port(b), .stop = &stop, .seq = i};
        cr_assert_eq(pthread_create(&th[i], NULL, storm_worker, &st[i]), 0);
    }
    tb_sleep_ms(STORM_MS);
    atomic_store(&stop, true);
    int connacks = 0;
    for (int i = 0; i < STORM_THREADS; i++) {
        pthread_join(th[i], NULL);
        connacks += st[i].connacks;
    }
    cr_assert(tb_alive(b), "broker died during the ClientID storm");
    cr_assert_geq(connacks, STORM_THREADS, "too few accepted CONNECTs (%d) during the storm",
                  connacks);

    tc_client *fresh = tc_open(tb_port(b), "storm-id", true, 60, false);
    for (int i = 0; i < STORM_THREADS; i++) {
        if (st[i].last != NULL) {
            tc_expect_closed(st[i].last, TB_WAIT_MS);
            tc_close(st[i].last);
        }
    }
    tc_ping(fresh);
    tc_expect_nothing(fresh, TB_QUIET_MS);
    tc_ping(fresh);
    cr_assert(tb_alive(b), "broker died after the ClientID storm");
    tb_assert_serves(b);
    tc_disconnect(fresh);
    tb_stop(b);
}
