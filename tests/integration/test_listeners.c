/*
 * test_listeners.c - per-listener settings as mosquitto 2.0 users know them (DESIGN.md
 * "Operations"), against the real binary, over the transport under test.
 *
 * - `max_connections` inside a listener block limits that listener: a connection beyond it
 *   is closed before anything is read from it (no CONNACK), other listeners keep
 *   accepting, the refusal is logged once per episode naming the listener, and the end of
 *   the episode is logged when a connection closes. Before the first listener it limits the
 *   whole broker, across listeners; both limits apply.
 * - `per_listener_settings true`: `allow_anonymous` inside a listener block applies to that
 *   listener only (CONNACK 0x05 / 0x87 there, accepted on the other); before the first
 *   listener it is the value of listeners that set none. With the default (false) it is
 *   global wherever it stands.
 *
 * The second listener of a test is made with tb_listener_conf, so it speaks the same
 * transport and tc_* clients reach it the same way.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "harness.h"

TestSuite(listeners, .fini = tb_fini, .timeout = 60);

#define READY_MS 20000 /* start(): generous for a broker under qemu-user */

/* A connection the broker must refuse at once: either the transport already fails to
 * connect (a WebSocket upgrade can be cut short), or the connection is closed without any
 * byte in reply, even to a CONNECT. */
static void expect_refused(uint16_t port, const char *client_id)
{
    tc_client *c = tc_connect_try(port);
    if (c == NULL) {
        return;
    }
    tc_sendp(c, PK_CONNECT(.client_id = client_id, .clean = true, .keepalive = 60));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
}

/*
 * Start a broker for these tests and wait until it is ready for exact counting: every
 * listener open (tb_start waits for the harness's listener only; the broker logs
 * [broker.start] after the last one), and the connection of tb_start's readiness probe
 * gone, since until the broker has seen it close it takes a max_connections slot (a
 * broker under an emulator may take a while). The broker logs at debug level for that:
 * every [conn.open] of a connection that never sent CONNECT has its "closed before
 * CONNECT" (over ws/wss the probe never gets past nng's HTTP server: no line at all).
 */
static mql_broker *start(const char *pre_conf, const char *extra_conf)
{
    char conf[2048];
    snprintf(conf, sizeof conf, "log_type all\n%s", extra_conf != NULL ? extra_conf : "");
    mql_broker *b = tb_start_with(pre_conf, conf);
    cr_assert(tb_log_contains(b, "[broker.start]", READY_MS), "no [broker.start] in the log");
    int64_t deadline = tb_now_ms() + READY_MS;
    while (tb_log_count(b, "[conn.open]") > tb_log_count(b, "closed before CONNECT") &&
           tb_now_ms() < deadline)
        tb_sleep_ms(20);
    cr_assert_eq(tb_log_count(b, "[conn.open]"), tb_log_count(b, "closed before CONNECT"),
                 "the readiness probe's connection did not close");
    return b;
}

/* extra_conf for a second listener on port, followed by `after` (may be ""). */
static const char *second_listener(uint16_t port, const char *after, char *out, size_t cap)
{
    char l[512];
    snprintf(out, cap, "%s%s", tb_listener_conf(port, l, sizeof l), after);
    return out;
}

Test(listeners, max_connections_per_listener)
{
    uint16_t port2 = tb_free_port();
    char extra[1024], l2[512];
    snprintf(extra, sizeof extra, "max_connections 2\n%s",
             second_listener(port2, "", l2, sizeof l2));
    mql_broker *b = start(NULL, extra);
    uint16_t port1 = tb_port(b);
    char url[128];
    snprintf(url, sizeof url, "127.0.0.1:%u", port1);

    tc_client *c1 = tc_open(port1, "lim-1", true, 60, false);
    tc_client *c2 = tc_open(port1, "lim-2", true, 60, false);
    expect_refused(port1, "lim-3");
    expect_refused(port1, "lim-4");
    cr_assert(tb_log_contains(b, "has reached its max_connections 2", TB_WAIT_MS),
              "the refusal is not logged");
    cr_assert_eq(tb_log_count(b, "has reached its max_connections 2"), 1,
                 "the episode must be logged once, not per refused connection");
    cr_assert(tb_log_contains(b, url, 0), "the message does not name the listener %s", url);
    cr_assert_eq(tb_log_count(b, "\"lim-3\""), 0, "a refused connection's CONNECT was read");

    /* the other listener has no limit */
    tc_client *o1 = tc_open(port2, "other-1", true, 60, false);
    tc_client *o2 = tc_open(port2, "other-2", true, 60, false);
    tc_ping(o1);
    tc_ping(c1);

    /* room again: logged, and a new client is accepted */
    tc_disconnect(c2);
    cr_assert(tb_log_contains(b, "is below its max_connections 2 again", TB_WAIT_MS),
              "the end of the episode is not logged");
    c2 = tc_open(port1, "lim-5", true, 60, false);
    tc_ping(c2);
    /* a new episode is logged again */
    expect_refused(port1, "lim-6");
    cr_assert(tb_log_contains(b, "has reached its max_connections 2", 0));
    int64_t deadline = tb_now_ms() + TB_WAIT_MS;
    while (tb_log_count(b, "has reached its max_connections 2") < 2 && tb_now_ms() < deadline)
        tb_sleep_ms(20);
    cr_assert_eq(tb_log_count(b, "has reached its max_connections 2"), 2);

    tc_disconnect(c1);
    tc_disconnect(c2);
    tc_disconnect(o1);
    tc_disconnect(o2);
    tb_stop(b);
}

/* max_connections 0 on a listener: nobody gets in there. */
Test(listeners, max_connections_zero)
{
    mql_broker *b = start(NULL, "max_connections 0\n");
    expect_refused(tb_port(b), "zero");
    cr_assert(tb_log_contains(b, "has reached its max_connections 0", TB_WAIT_MS));
    tb_stop(b);
}

/* Before the first listener: a limit for the whole broker, whatever the listener. */
Test(listeners, max_connections_global_across_listeners)
{
    uint16_t port2 = tb_free_port();
    char l2[512];
    mql_broker *b = start("max_connections 3\n", second_listener(port2, "", l2, sizeof l2));
    uint16_t port1 = tb_port(b);
    tc_client *a = tc_open(port1, "g-1", true, 60, false);
    tc_client *c = tc_open(port2, "g-2", true, 60, false);
    tc_client *d = tc_open(port1, "g-3", true, 60, false);
    expect_refused(port2, "g-4");
    expect_refused(port1, "g-5");
    cr_assert(tb_log_contains(b, "the broker has reached max_connections 3", TB_WAIT_MS));
    cr_assert_eq(tb_log_count(b, "the broker has reached max_connections 3"), 1);
    tc_disconnect(c);
    cr_assert(tb_log_contains(b, "the broker is below max_connections 3 again", TB_WAIT_MS));
    c = tc_open(port2, "g-6", true, 60, false);
    tc_ping(c);
    tc_disconnect(a);
    tc_disconnect(c);
    tc_disconnect(d);
    tb_stop(b);
}

/* Both limits at once: the listener's is the tighter one here. */
Test(listeners, max_connections_listener_and_global)
{
    uint16_t port2 = tb_free_port();
    char extra[1024], l2[512];
    snprintf(extra, sizeof extra, "max_connections 1\n%s",
             second_listener(port2, "", l2, sizeof l2));
    mql_broker *b = start("max_connections 2\n", extra);
    tc_client *a = tc_open(tb_port(b), "both-1", true, 60, false);
    expect_refused(tb_port(b), "both-2"); /* the listener's limit */
    tc_client *c = tc_open(port2, "both-3", true, 60, false);
    expect_refused(port2, "both-4"); /* the broker's limit */
    cr_assert(tb_log_contains(b, "has reached its max_connections 1", TB_WAIT_MS));
    cr_assert(tb_log_contains(b, "the broker has reached max_connections 2", TB_WAIT_MS));
    tc_disconnect(a);
    tc_disconnect(c);
    tb_stop(b);
}

/* CONNECT without a user name, v3.1.1 and v5, must be refused (0x05 / 0x87) on port. */
static void expect_anonymous_refused(uint16_t port, const char *client_id)
{
    tc_client *c = tc_connect(port);
    tc_sendp(c, PK_CONNECT(.client_id = client_id, .clean = true, .keepalive = 60));
    tc_expectp(c, pk_connack(false, 0x05), TB_WAIT_MS);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    c = tc_connect(port);
    tc_sendp(c, PK_CONNECT(.version = 5, .client_id = client_id, .clean = true, .keepalive = 60));
    tc_expect_connack_v5(c, false, 0x87, NULL);
    tc_close(c);
}

static void expect_anonymous_accepted(uint16_t port, const char *client_id)
{
    tc_client *c = tc_open(port, client_id, true, 60, false);
    tc_ping(c);
    tc_disconnect(c);
    c = tc_open_v5(port, false, NULL, .client_id = client_id, .clean = true, .keepalive = 60);
    tc_disconnect(c);
}

/* per_listener_settings true: allow_anonymous false in the harness's listener block, true
 * in the second one. [MQTT-3.1.4-2] (the Server MAY refuse a client it does not admit) */
Test(listeners, allow_anonymous_per_listener)
{
    uint16_t port2 = tb_free_port();
    char extra[1024], l2[512];
    snprintf(extra, sizeof extra, "allow_anonymous false\n%s",
             second_listener(port2, "allow_anonymous true\n", l2, sizeof l2));
    mql_broker *b = start("per_listener_settings true\n", extra);
    expect_anonymous_refused(tb_port(b), "anon-a");
    cr_assert(tb_log_contains(b, "this listener has allow_anonymous false", TB_WAIT_MS));
    expect_anonymous_accepted(port2, "anon-b");
    tb_stop(b);
}

/* per_listener_settings true: the value before the first listener is the default of a
 * listener that sets none (the harness's listener sets true). */
Test(listeners, allow_anonymous_global_default_per_listener)
{
    uint16_t port2 = tb_free_port();
    char l2[512];
    mql_broker *b = start("per_listener_settings true\nallow_anonymous false\n",
                          second_listener(port2, "", l2, sizeof l2));
    expect_anonymous_accepted(tb_port(b), "dflt-a");
    expect_anonymous_refused(port2, "dflt-b");
    tb_stop(b);
}

/* Without per_listener_settings, allow_anonymous is global wherever it stands (mosquitto
 * 2.0's default): false in a listener block refuses anonymous clients on every listener. */
Test(listeners, allow_anonymous_global_by_default)
{
    uint16_t port2 = tb_free_port();
    char extra[1024], l2[512];
    snprintf(extra, sizeof extra, "allow_anonymous false\n%s",
             second_listener(port2, "", l2, sizeof l2));
    mql_broker *b = start(NULL, extra);
    expect_anonymous_refused(tb_port(b), "glob-a");
    expect_anonymous_refused(port2, "glob-b");
    tb_stop(b);
}
