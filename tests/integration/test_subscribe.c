/*
 * test_subscribe.c - MQTT 3.1.1 SUBSCRIBE / UNSUBSCRIBE and topic matching, black-box.
 *
 * SUBACK contents, the '+' and '#' wildcards (the examples of section 4.7 as a table),
 * '$' topics hidden from leading wildcards, invalid filters, UNSUBACK and the end of
 * delivery after UNSUBSCRIBE, subscription replacement without duplicates, and the absence of
 * any normalisation in matching. Specification sections 3.8-3.11, 4.7.
 *
 * Invalid topic filters: MQTT 3.1.1 has no "stated otherwise" for them, so a filter that
 * breaks 4.7.1 is a protocol violation and the connection MUST be closed [MQTT-4.8.0-1];
 * these tests require the close (a SUBACK 0x80 is not accepted).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "harness.h"

TestSuite(subscribe, .fini = tb_fini, .timeout = 30);

/* One SUBACK for several filters, same packet id, one return code per filter in order, each
 * the granted QoS. [v3.1.1 MQTT-3.8.4-1] [v3.1.1 MQTT-3.8.4-2] [v3.1.1 MQTT-3.8.4-4]
 * [v3.1.1 MQTT-3.8.4-5] [v3.1.1 MQTT-3.9.3-1] [v3.1.1 MQTT-3.9.3-2] [v3.1.1 MQTT-2.3.1-7] */
Test(subscribe, suback_granted_qos)
{
    mql_broker *b = tb_start(NULL);
    tc_client *c = tc_open(tb_port(b), "suback", true, 60, false);
    static const pk_sub subs[] = {{"s/0", 0}, {"s/1", 1}, {"s/2", 2}};
    tc_sendp(c, pk_subscribe(0x1234, 3, subs));
    static const uint8_t suback[] = {0x90, 0x05, 0x12, 0x34, 0x00, 0x01, 0x02};
    tc_expect(c, suback, sizeof suback, TB_WAIT_MS);
    tc_disconnect(c);
    tb_stop(b);
}

struct match_case {
    const char *filter;
    const char *expect[16]; /* topics that must arrive, NULL-terminated */
};

static const char *const match_topics[] = {
    "sport",
    "sport/",
    "sport/tennis",
    "sport/tennis/player1",
    "sport/tennis/player2",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "/finance",
    "finance",
    "Sport/tennis",
    "a/b/c/d",
    "/",
};
#define N_TOPICS (sizeof match_topics / sizeof match_topics[0])

static const struct match_case match_cases[] = {
    {"sport/tennis/player1/#",
     {"sport/tennis/player1", "sport/tennis/player1/ranking",
      "sport/tennis/player1/score/wimbledon"}},
    {"sport/#",
     {"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player2",
      "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"}},
    {"sport/tennis/+", {"sport/tennis/player1", "sport/tennis/player2"}},
    {"sport/+", {"sport/", "sport/tennis"}},
    {"+", {"sport", "finance"}},
    {"+/+", {"sport/", "sport/tennis", "/finance", "Sport/tennis", "/"}},
    {"/+", {"/finance", "/"}},
    {"#",
     {"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player2",
      "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon", "/finance", "finance",
      "Sport/tennis", "a/b/c/d", "/"}},
    {"+/tennis/#",
     {"sport/tennis", "sport/tennis/player1", "sport/tennis/player2",
      "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon", "Sport/tennis"}},
    {"sport/tennis", {"sport/tennis"}},
    {"+/+/+/+", {"sport/tennis/player1/ranking", "a/b/c/d"}},
    {"a/+/c/#", {"a/b/c/d"}},
    {"/", {"/"}},
};
#define N_CASES (sizeof match_cases / sizeof match_cases[0])

/*
 * Wildcard matching, the examples of section 4.7 and a few more: one subscriber per filter,
 * every topic published once (QoS 1, so the broker has routed it when PUBACK comes), then
 * each subscriber must hold exactly the expected set. Also case sensitivity and that a
 * leading or trailing '/' makes a distinct topic.
 * [v3.1.1 MQTT-4.7.1-2] [v3.1.1 MQTT-4.7.1-3] [v3.1.1 MQTT-3.3.2-3] [v3.1.1 MQTT-4.7.3-4]
 */
Test(subscribe, wildcard_matching)
{
    mql_broker *b = tb_start(NULL);
    tc_client *subs[N_CASES];
    for (size_t i = 0; i < N_CASES; i++) {
        char cid[16];
        snprintf(cid, sizeof cid, "match-%zu", i);
        subs[i] = tc_open(tb_port(b), cid, true, 60, false);
        tc_subscribe(subs[i], 1, match_cases[i].filter, 0, 0);
    }
    tc_client *p = tc_open(tb_port(b), "match-pub", true, 60, false);
    for (size_t t = 0; t < N_TOPICS; t++) {
        tc_publish(p, match_topics[t], match_topics[t], 1, false);
    }
    tb_sleep_ms(TB_QUIET_MS);
    for (size_t i = 0; i < N_CASES; i++) {
        bool got[N_TOPICS] = {false};
        uint8_t buf[256];
        pk_publish_info in;
        while (tc_recv_publish(subs[i], buf, sizeof buf, &in, 50)) {
            size_t t = 0;
            while (t < N_TOPICS && !(strlen(match_topics[t]) == in.topic_len &&
                                     memcmp(match_topics[t], in.topic, in.topic_len) == 0)) {
                t++;
            }
            cr_assert(t < N_TOPICS, "filter '%s': unknown topic '%.*s'", match_cases[i].filter,
                      (int)in.topic_len, (const char *)in.topic);
            cr_assert(!got[t], "filter '%s': topic '%s' delivered twice", match_cases[i].filter,
                      match_topics[t]);
            got[t] = true;
        }
        for (size_t t = 0; t < N_TOPICS; t++) {
            bool want = false;
            for (size_t k = 0; match_cases[i].expect[k] != NULL; k++) {
                want = want || strcmp(match_cases[i].expect[k], match_topics[t]) == 0;
            }
            cr_assert_eq(got[t], want, "filter '%s' %s topic '%s'", match_cases[i].filter,
                         want ? "did not receive" : "wrongly received", match_topics[t]);
        }
        tc_disconnect(subs[i]);
    }
    tc_disconnect(p);
    tb_stop(b);
}

/*
 * Topics starting with '$' are not matched by filters starting with a wildcard: '#', '+',
 * '+/x' and '+/+' see nothing of "$test/x" and "$test", while a later ordinary message
 * arrives. (Delivery of '$' topics to "$test/#" is not required: a server SHOULD keep
 * clients from using '$' topics, so that is not asserted.) [v3.1.1 MQTT-4.7.2-1]
 */
Test(subscribe, dollar_topics_not_matched_by_leading_wildcards)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "dollar-sub", true, 60, false);
    static const pk_sub filters[] = {{"#", 0}, {"+", 0}, {"+/x", 0}, {"+/+", 0}};
    tc_sendp(s, pk_subscribe(1, 4, filters));
    static const uint8_t suback[] = {0x90, 0x06, 0x00, 0x01, 0, 0, 0, 0};
    tc_expect(s, suback, sizeof suback, TB_WAIT_MS);
    tc_client *p = tc_open(tb_port(b), "dollar-pub", true, 60, false);
    tc_sendp(p, PK_PUBLISH(.topic = "$test/x", .payload = "hidden"));
    tc_sendp(p, PK_PUBLISH(.topic = "$test", .payload = "hidden"));
    tc_close(p);
    tc_client *p2 = tc_open(tb_port(b), "dollar-pub2", true, 60, false);
    tc_publish(p2, "plain", "visible", 1, false);
    /* "plain" matches '#' and '+': one or two copies, never a '$' topic. */
    uint8_t buf[128];
    pk_publish_info in;
    int plain = 0;
    while (tc_recv_publish(s, buf, sizeof buf, &in, plain == 0 ? TB_WAIT_MS : TB_QUIET_MS)) {
        cr_assert(in.topic_len > 0 && in.topic[0] != '$', "'$' topic '%.*s' matched a wildcard",
                  (int)in.topic_len, (const char *)in.topic);
        plain++;
    }
    cr_assert_geq(plain, 1, "the ordinary message did not arrive");
    tc_disconnect(s);
    tc_disconnect(p2);
    tb_stop(b);
}

/* Filters that break the wildcard rules, or are empty: protocol violation, the connection
 * is closed; the broker goes on serving others.
 * [v3.1.1 MQTT-4.7.1-2] [v3.1.1 MQTT-4.7.1-3] [v3.1.1 MQTT-4.7.3-1] [v3.1.1 MQTT-4.8.0-1] */
Test(subscribe, invalid_filters_close)
{
    mql_broker *b = tb_start(NULL);
    static const char *const bad[] = {"a/#/b", "a+", "#a", "a/b#", "+a/b", "a/+b", "a/##", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tc_client *c = tc_open(tb_port(b), "badfilter", true, 60, false);
        tc_sendp(c, pk_subscribe1(1, bad[i], 0));
        uint8_t buf[64];
        int r = tc_recv_packet(c, buf, sizeof buf, TB_WAIT_MS);
        char hex[64];
        cr_assert_eq(r, TC_CLOSED, "filter '%s': expected close, got %s", bad[i],
                     r >= 0 ? pk_hex(buf, (size_t)r, hex, sizeof hex) : "timeout or error");
        tc_close(c);
    }
    tb_assert_serves(b);
    tb_stop(b);
}

/* Requested QoS 3, or reserved bits set in the QoS byte: malformed, closed.
 * [v3.1.1 MQTT-3.8.3-4] (printed "MQTT-3-8.3-4" in the specification) */
Test(subscribe, invalid_requested_qos_closes)
{
    mql_broker *b = tb_start(NULL);
    static const uint8_t bad_qos[] = {0x03, 0x04, 0x41, 0x80};
    for (size_t i = 0; i < sizeof bad_qos; i++) {
        tc_client *c = tc_open(tb_port(b), "badqos", true, 60, false);
        tc_sendp(c, pk_subscribe1(1, "q/t", bad_qos[i]));
        tc_expect_closed(c, TB_WAIT_MS);
        tc_close(c);
    }
    tb_assert_serves(b);
    tb_stop(b);
}

/* UNSUBSCRIBE: UNSUBACK with the same id; the removed filter delivers nothing more, others
 * keep delivering. [v3.1.1 MQTT-3.10.4-1] [v3.1.1 MQTT-3.10.4-2] [v3.1.1 MQTT-3.10.4-4] */
Test(subscribe, unsubscribe_stops_delivery)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "unsub", true, 60, false);
    tc_subscribe(s, 1, "u/1", 1, 1);
    tc_subscribe(s, 2, "u/2", 0, 0);
    tc_sendp(s, pk_unsubscribe1(0x0102, "u/1"));
    static const uint8_t unsuback[] = {0xB0, 0x02, 0x01, 0x02};
    tc_expect(s, unsuback, sizeof unsuback, TB_WAIT_MS);
    tc_client *p = tc_open(tb_port(b), "unsub-pub", true, 60, false);
    tc_publish(p, "u/1", "gone", 1, false);
    tc_publish(p, "u/2", "kept", 1, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "u/2", .payload = "kept");
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* A QoS 2 delivery started before UNSUBSCRIBE is completed after it: the PUBREC sent after
 * the UNSUBACK still gets its PUBREL, and later messages are not delivered.
 * [v3.1.1 MQTT-3.10.4-2] [v3.1.1 MQTT-3.10.4-3] */
Test(subscribe, unsubscribe_completes_inflight)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "unsub-fl", true, 60, false);
    tc_subscribe(s, 1, "fl/t", 2, 2);
    tc_client *p = tc_open(tb_port(b), "unsub-fl-pub", true, 60, false);
    tc_publish(p, "fl/t", "inflight", 2, false);
    uint16_t id =
        tc_expect_publish(s, TB_WAIT_MS, .topic = "fl/t", .payload = "inflight", .qos = 2);
    tc_sendp(s, pk_unsubscribe1(2, "fl/t"));
    tc_expectp(s, pk_unsuback(2), TB_WAIT_MS);
    tc_sendp(s, pk_pubrec(id));
    tc_expectp(s, pk_pubrel(id), TB_WAIT_MS);
    tc_sendp(s, pk_pubcomp(id));
    tc_publish(p, "fl/t", "after", 2, false);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* UNSUBACK even when nothing was subscribed. [v3.1.1 MQTT-3.10.4-5] */
Test(subscribe, unsubscribe_unknown_still_acked)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "unsub-none", true, 60, false);
    tc_sendp(s, pk_unsubscribe1(77, "never/subscribed"));
    tc_expectp(s, pk_unsuback(77), TB_WAIT_MS);
    tc_ping(s);
    tc_disconnect(s);
    tb_stop(b);
}

/* UNSUBSCRIBE compares filters character by character: "lit/x" does not remove "lit/+".
 * [v3.1.1 MQTT-3.10.4-1] */
Test(subscribe, unsubscribe_is_literal)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "unsub-lit", true, 60, false);
    tc_subscribe(s, 1, "lit/+", 0, 0);
    tc_sendp(s, pk_unsubscribe1(2, "lit/x"));
    tc_expectp(s, pk_unsuback(2), TB_WAIT_MS);
    tc_client *p = tc_open(tb_port(b), "unsub-lit-pub", true, 60, false);
    tc_publish(p, "lit/x", "still", 1, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "lit/x", .payload = "still");
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* Several filters in one UNSUBSCRIBE: handled as a sequence, one UNSUBACK.
 * [v3.1.1 MQTT-3.10.4-6] */
Test(subscribe, unsubscribe_multiple)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "unsub-multi", true, 60, false);
    static const pk_sub subs[] = {{"m/a", 0}, {"m/b", 0}, {"m/c", 0}};
    tc_sendp(s, pk_subscribe(1, 3, subs));
    static const uint8_t codes[] = {0, 0, 0};
    tc_expectp(s, pk_suback(1, 3, codes), TB_WAIT_MS);
    static const char *const gone[] = {"m/a", "m/b"};
    tc_sendp(s, pk_unsubscribe(9, 2, gone));
    tc_expectp(s, pk_unsuback(9), TB_WAIT_MS);
    tc_client *p = tc_open(tb_port(b), "unsub-multi-pub", true, 60, false);
    tc_publish(p, "m/a", "a", 1, false);
    tc_publish(p, "m/b", "b", 1, false);
    tc_publish(p, "m/c", "c", 1, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "m/c", .payload = "c");
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* Subscribing again to an identical filter replaces the subscription: one copy per message,
 * at the new maximum QoS. [v3.1.1 MQTT-3.8.4-3] */
Test(subscribe, resubscribe_replaces)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "resub", true, 60, false);
    tc_subscribe(s, 1, "re/x", 1, 1);
    tc_subscribe(s, 2, "re/x", 0, 0);
    tc_client *p = tc_open(tb_port(b), "resub-pub", true, 60, false);
    tc_publish(p, "re/x", "once", 1, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "re/x", .payload = "once", .qos = 0);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* The same filter twice in one SUBSCRIBE: as if two SUBSCRIBE packets in sequence, so the
 * second replaces the first; one SUBACK with a code for each. [v3.1.1 MQTT-3.8.4-4]
 * [v3.1.1 MQTT-3.8.4-3] [v3.1.1 MQTT-3.9.3-1] */
Test(subscribe, duplicate_filter_in_one_subscribe)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "dupf", true, 60, false);
    static const pk_sub subs[] = {{"df/a", 1}, {"df/b", 2}, {"df/a", 0}};
    tc_sendp(s, pk_subscribe(4, 3, subs));
    static const uint8_t codes[] = {1, 2, 0};
    tc_expectp(s, pk_suback(4, 3, codes), TB_WAIT_MS);
    tc_client *p = tc_open(tb_port(b), "dupf-pub", true, 60, false);
    tc_publish(p, "df/a", "x", 2, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "df/a", .payload = "x", .qos = 0);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* No normalisation in matching: precomposed and decomposed "cafe" with an accent are
 * different topics; a leading U+FEFF is kept, not stripped.
 * [v3.1.1 MQTT-4.7.3-4] [v3.1.1 MQTT-1.5.3-3] */
Test(subscribe, no_normalisation)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open(tb_port(b), "norm", true, 60, false);
    tc_subscribe(s, 1, "caf\xC3\xA9", 0, 0);
    tc_subscribe(s, 2,
                 "\xEF\xBB\xBF"
                 "bom",
                 0, 0);
    tc_client *p = tc_open(tb_port(b), "norm-pub", true, 60, false);
    tc_publish(p, "cafe\xCC\x81", "decomposed", 1, false);
    tc_publish(p, "bom", "no-bom", 1, false);
    tc_publish(p, "caf\xC3\xA9", "precomposed", 1, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "caf\xC3\xA9", .payload = "precomposed");
    tc_publish(p,
               "\xEF\xBB\xBF"
               "bom",
               "with-bom", 1, false);
    tc_expect_publish(s, TB_WAIT_MS,
                      .topic = "\xEF\xBB\xBF"
                               "bom",
                      .payload = "with-bom");
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* SUBSCRIBE without any filter, UNSUBSCRIBE without any filter: protocol violations, closed.
 * [v3.1.1 MQTT-3.8.3-3] [v3.1.1 MQTT-3.10.3-2] */
Test(subscribe, empty_payload_closes)
{
    mql_broker *b = tb_start(NULL);
    static const uint8_t sub_empty[] = {0x82, 0x02, 0x00, 0x01};
    static const uint8_t unsub_empty[] = {0xA2, 0x02, 0x00, 0x01};
    tc_client *c = tc_open(tb_port(b), "empty-sub", true, 60, false);
    tc_send(c, sub_empty, sizeof sub_empty);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    c = tc_open(tb_port(b), "empty-unsub", true, 60, false);
    tc_send(c, unsub_empty, sizeof unsub_empty);
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}
