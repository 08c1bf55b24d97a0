/*
 * test_v5_publish.c - MQTT 5.0 PUBLISH: properties, message expiry, topic aliases, mixed
 * protocol versions.
 *
 * Purpose: check what happens to an Application Message's v5 properties between publisher
 * and subscriber: the Payload Format Indicator is checked (invalid UTF-8 -> PUBACK 0x99) and
 * forwarded; Response Topic, Correlation Data, Content Type and User Properties (order kept)
 * arrive unaltered; a Message Expiry Interval makes a queued message expire and is sent as the
 * remaining lifetime. Topic aliases in both directions: client-to-server mappings set and
 * used, invalid aliases answered by DISCONNECT 0x94 / 0x82; server-to-client aliases only
 * within the client's Topic Alias Maximum and never without one. A v3.1.1 and a v5
 * subscriber both receive a v5 publisher's message. Specification sections 3.3, 4.13.
 *
 * Assumptions: a subscriber that set no Topic Alias Maximum gets full topic names, so the
 * tests compare topics directly; the server-alias tests resolve aliases as a client would.
 * Where mqlite's design goes beyond a MAY of the specification (reusing an alias for a
 * repeated topic, PUBACK 0x99 rather than DISCONNECT 0x99), the test comment says so.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "harness.h"

TestSuite(v5_publish, .fini = tb_fini, .timeout = 30);

/* A subscriber with Session Expiry 60 s (so it can go offline and keep its queue). */
static tc_client *persistent_sub(mql_broker *b, const char *id, const char *filter, bool present)
{
    tb_pkt e = {0};
    pk_prop_u32(&e, PK_P_SESSION_EXPIRY, 60);
    tc_client *s = tc_open_v5(tb_port(b), present, NULL, .client_id = id, .clean = !present,
                              .keepalive = 60, .props = &e);
    if (filter != NULL) {
        tc_sub1_v5(s, 1, filter, 1, 0, 1);
    }
    return s;
}

/*
 * Payload Format Indicator 1 with a payload that is not UTF-8 (C3 28): the server may check
 * it; mqlite's design does and answers the QoS 1 PUBLISH with PUBACK 0x99 (Payload format
 * invalid), does not forward it, and keeps the connection. A well-formed UTF-8 payload with
 * the indicator is forwarded with the indicator unaltered. [MQTT-3.3.2-4] [MQTT-3.4.2-1]
 */
Test(v5_publish, pfi_invalid_utf8_puback_0x99)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "pfi-sub", .clean = true);
    tc_sub1_v5(s, 1, "pfi/#", 1, 0, 1);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "pfi-pub", .clean = true);
    tb_pkt props = {0};
    pk_prop_u8(&props, PK_P_PAYLOAD_FORMAT, 1);
    static const uint8_t bad[] = {'o', 'k', 0xC3, 0x28};
    tc_sendp(p, PK_PUBLISH(.topic = "pfi/t", .payload = bad, .payload_len = sizeof bad, .qos = 1,
                           .id = 7, .v5 = true, .props = &props));
    tc_expect_ack_v5(p, 4, 7, 0x99);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_ping(p);

    tc_publish_v5(p, "pfi/t", "h\xC3\xA9llo", 1, false, &props);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "pfi/t", "h\xC3\xA9llo", 1, false);
    uint32_t v = 0;
    cr_assert(pk_prop_int(pub.props, PK_P_PAYLOAD_FORMAT, &v) && v == 1,
              "Payload Format Indicator not forwarded [MQTT-3.3.2-4]");
    tc_ack_v5(s, &pub);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Response Topic, Correlation Data (binary with a zero byte), Content Type and User
 * Properties (a repeated name, order significant) reach the subscriber unaltered, the User
 * Properties in the order sent, for QoS 0 and QoS 1. [MQTT-3.3.2-15] [MQTT-3.3.2-16]
 * [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]
 */
Test(v5_publish, properties_forwarded_unaltered)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "pp-sub", .clean = true);
    tc_sub1_v5(s, 1, "pp/#", 2, 0, 2);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "pp-pub", .clean = true);
    static const uint8_t corr[] = {0xDE, 0xAD, 0x00, 0xBE, 0xEF};
    tb_pkt users = {0};
    pk_prop_pair(&users, PK_P_USER_PROPERTY, "z", "1");
    pk_prop_pair(&users, PK_P_USER_PROPERTY, "a", "2");
    pk_prop_pair(&users, PK_P_USER_PROPERTY, "z", "3");
    pk_prop_pair(&users, PK_P_USER_PROPERTY, "empty", "");
    tb_pkt props = {0};
    pk_prop_pair(&props, PK_P_USER_PROPERTY, "z", "1");
    pk_prop_str(&props, PK_P_RESPONSE_TOPIC, "pp/reply/42");
    pk_prop_pair(&props, PK_P_USER_PROPERTY, "a", "2");
    pk_prop_bin(&props, PK_P_CORRELATION_DATA, corr, sizeof corr);
    pk_prop_pair(&props, PK_P_USER_PROPERTY, "z", "3");
    pk_prop_str(&props, PK_P_CONTENT_TYPE, "application/json");
    pk_prop_pair(&props, PK_P_USER_PROPERTY, "empty", "");
    for (uint8_t qos = 0; qos <= 1; qos++) {
        tc_publish_v5(p, "pp/req", "{}", qos, false, &props);
        pk_v5 pub;
        tc_expect_pub_v5(s, &pub, "pp/req", "{}", qos, false);
        char hex[1024];
        pk_hex(pub.b, pub.len, hex, sizeof hex);
        pk_slice v;
        cr_assert(pk_prop_data(pub.props, PK_P_RESPONSE_TOPIC, &v) &&
                      pk_slice_eqs(v, "pp/reply/42"),
                  "Response Topic not forwarded unaltered [%s] [MQTT-3.3.2-15]", hex);
        cr_assert(pk_prop_data(pub.props, PK_P_CORRELATION_DATA, &v) &&
                      pk_slice_eq(v, corr, sizeof corr),
                  "Correlation Data not forwarded unaltered [%s] [MQTT-3.3.2-16]", hex);
        cr_assert(pk_prop_data(pub.props, PK_P_CONTENT_TYPE, &v) &&
                      pk_slice_eqs(v, "application/json"),
                  "Content Type not forwarded unaltered [%s] [MQTT-3.3.2-20]", hex);
        tb_pkt got = pk_props_select(pub.props, PK_P_USER_PROPERTY);
        cr_assert(got.len == users.len && memcmp(got.b, users.b, users.len) == 0,
                  "User Properties not forwarded unaltered and in order [%s] "
                  "[MQTT-3.3.2-17] [MQTT-3.3.2-18]",
                  hex);
        cr_assert_eq(pk_prop_count(pub.props, PK_P_PAYLOAD_FORMAT), 0,
                     "a Payload Format Indicator appeared from nowhere [%s]", hex);
        tc_ack_v5(s, &pub);
    }
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * A QoS 1 message with Message Expiry Interval 1 s, queued for an offline session, has
 * expired when the session reconnects 2.5 s later and is not delivered; a message without an
 * expiry queued at the same time is. [MQTT-3.3.2-5]
 */
Test(v5_publish, message_expiry_queued_message_expires)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = persistent_sub(b, "mx-sub", "mx/t", false);
    tc_sendp(s, pk_disconnect_v5(0, NULL));
    tc_expect_closed(s, TB_WAIT_MS);
    tc_close(s);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "mx-pub", .clean = true);
    tb_pkt e1 = {0};
    pk_prop_u32(&e1, PK_P_MESSAGE_EXPIRY, 1);
    tc_publish_v5(p, "mx/t", "short-lived", 1, false, &e1);
    tc_publish_v5(p, "mx/t", "durable", 1, false, NULL);
    tb_sleep_ms(2500);
    s = persistent_sub(b, "mx-sub", NULL, true);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "mx/t", "durable", 1, false);
    cr_assert_eq(pk_prop_count(pub.props, PK_P_MESSAGE_EXPIRY), 0,
                 "a Message Expiry Interval appeared on a message sent without one");
    tc_ack_v5(s, &pub);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/*
 * A delivered message carries the Message Expiry Interval it was sent with minus the time it
 * waited in the server: sent with 10 s, queued for an offline session for 1.5 s, it arrives
 * with less than 10 (and more than 0). A message delivered at once carries at most the value
 * sent. [MQTT-3.3.2-6]
 */
Test(v5_publish, message_expiry_remaining_interval)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = persistent_sub(b, "mr-sub", "mr/t", false);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "mr-pub", .clean = true);
    tb_pkt e10 = {0};
    pk_prop_u32(&e10, PK_P_MESSAGE_EXPIRY, 10);
    uint32_t v = 0;
    pk_v5 pub;

    tc_publish_v5(p, "mr/t", "live", 1, false, &e10);
    tc_expect_pub_v5(s, &pub, "mr/t", "live", 1, false);
    cr_assert(pk_prop_int(pub.props, PK_P_MESSAGE_EXPIRY, &v) && v >= 9 && v <= 10,
              "live message: Message Expiry Interval %u, want 9..10 [MQTT-3.3.2-6]", v);
    tc_ack_v5(s, &pub);
    /* Let the PUBACK be processed before the DISCONNECT (see
     * v5_session::acked_message_not_resent_after_reconnect for what happens otherwise). */
    tc_ping(s);

    tc_sendp(s, pk_disconnect_v5(0, NULL));
    tc_expect_closed(s, TB_WAIT_MS);
    tc_close(s);
    tc_publish_v5(p, "mr/t", "waited", 1, false, &e10);
    tb_sleep_ms(1500);
    s = persistent_sub(b, "mr-sub", NULL, true);
    tc_expect_pub_v5(s, &pub, "mr/t", "waited", 1, false);
    v = 0;
    cr_assert(pk_prop_int(pub.props, PK_P_MESSAGE_EXPIRY, &v),
              "queued message lost its Message Expiry Interval [MQTT-3.3.2-6]");
    cr_assert(v < 10 && v >= 5,
              "message waited 1.5 s of its 10 s, but arrives with Message Expiry Interval %u "
              "[MQTT-3.3.2-6]",
              v);
    tc_ack_v5(s, &pub);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}

/* The server's Topic Alias Maximum from a CONNACK; fails the test if there is none. */
static uint16_t server_alias_max(pk_v5 *ack)
{
    uint32_t tam = 0;
    cr_assert(pk_prop_int(ack->props, PK_P_TOPIC_ALIAS_MAXIMUM, &tam) && tam > 0,
              "server announces no Topic Alias Maximum: a client may not send aliases "
              "[MQTT-3.2.2-18]");
    return (uint16_t)tam;
}

static tb_pkt alias_props(uint16_t alias)
{
    tb_pkt p = {0};
    pk_prop_u16(&p, PK_P_TOPIC_ALIAS, alias);
    return p;
}

/*
 * Client-to-server topic alias: a PUBLISH with topic and alias 1 sets the mapping and is
 * delivered; PUBLISH with an empty topic and alias 1 is delivered under that topic; a new
 * topic with alias 1 changes the mapping; the highest alias the server announced works too.
 * [MQTT-3.3.2-12] (3.3.2.3.4, 3.3.4)
 */
Test(v5_publish, topic_alias_from_client)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "ta-sub", .clean = true);
    tc_sub1_v5(s, 1, "ta/#", 1, 0, 1);
    pk_v5 ack;
    tc_client *p =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "ta-pub", .clean = true, .keepalive = 60);
    uint16_t max = server_alias_max(&ack);
    tb_pkt a1 = alias_props(1);
    tb_pkt amax = alias_props(max);
    pk_v5 pub;

    tc_publish_v5(p, "ta/one", "m1", 1, false, &a1);
    tc_expect_pub_v5(s, &pub, "ta/one", "m1", 1, false);
    tc_ack_v5(s, &pub);
    tc_publish_v5(p, "", "m2", 1, false, &a1);
    tc_expect_pub_v5(s, &pub, "ta/one", "m2", 1, false);
    tc_ack_v5(s, &pub);
    tc_publish_v5(p, "ta/two", "m3", 0, false, &a1);
    tc_expect_pub_v5(s, &pub, "ta/two", "m3", 0, false);
    tc_publish_v5(p, "", "m4", 0, false, &a1);
    tc_expect_pub_v5(s, &pub, "ta/two", "m4", 0, false);
    tc_publish_v5(p, "ta/max", "m5", 0, false, &amax);
    tc_publish_v5(p, "", "m6", 0, false, &amax);
    tc_expect_pub_v5(s, &pub, "ta/max", "m5", 0, false);
    tc_expect_pub_v5(s, &pub, "ta/max", "m6", 0, false);
    tc_ping(p);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/* Topic Alias 0 is not permitted: DISCONNECT 0x94 (Topic Alias invalid), then close.
 * [MQTT-3.3.2-8] (3.3.4) [MQTT-4.13.1-1] */
Test(v5_publish, topic_alias_zero_disconnect_0x94)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "ta0", .clean = true, .keepalive = 60);
    tb_pkt a0 = alias_props(0);
    tc_sendp(p, PK_PUBLISH(.topic = "ta0/t", .payload = "x", .v5 = true, .props = &a0));
    tc_expect_disconnect_v5(p, 0x94, TB_WAIT_MS);
    tc_close(p);
    tb_assert_serves(b);
    tb_stop(b);
}

/* A Topic Alias above the server's Topic Alias Maximum: DISCONNECT 0x94, then close.
 * [MQTT-3.3.2-9] (3.3.4) [MQTT-4.13.1-1] */
Test(v5_publish, topic_alias_above_max_disconnect_0x94)
{
    mql_broker *b = tb_start(NULL);
    pk_v5 ack;
    tc_client *p =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "tabig", .clean = true, .keepalive = 60);
    uint16_t max = server_alias_max(&ack);
    cr_assert(max < 65535);
    tb_pkt abig = alias_props((uint16_t)(max + 1));
    tc_sendp(p, PK_PUBLISH(.topic = "tabig/t", .payload = "x", .v5 = true, .props = &abig));
    tc_expect_disconnect_v5(p, 0x94, TB_WAIT_MS);
    tc_close(p);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * An empty topic with an alias that has no mapping: DISCONNECT 0x82 (Protocol Error), then
 * close. Mappings do not outlive their connection: an alias set on one connection is unknown
 * on the next one of the same client. [MQTT-3.3.2-7] (3.3.4 step 3a) [MQTT-4.13.1-1]
 */
Test(v5_publish, topic_alias_unknown_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "taun", .clean = true, .keepalive = 60);
    tb_pkt a1 = alias_props(1);
    tc_sendp(p, PK_PUBLISH(.topic = "", .payload = "x", .v5 = true, .props = &a1));
    tc_expect_disconnect_v5(p, 0x82, TB_WAIT_MS);
    tc_close(p);

    tb_pkt e60 = {0};
    pk_prop_u32(&e60, PK_P_SESSION_EXPIRY, 60);
    p = tc_open_v5(tb_port(b), false, NULL, .client_id = "taun2", .clean = true, .keepalive = 60,
                   .props = &e60);
    tc_publish_v5(p, "taun/t", "sets-alias", 1, false, &a1);
    tc_disconnect(p);
    p = tc_open_v5(tb_port(b), true, NULL, .client_id = "taun2", .clean = false, .keepalive = 60,
                   .props = &e60);
    tc_sendp(p, PK_PUBLISH(.topic = "", .payload = "stale", .qos = 1, .id = 3, .v5 = true,
                           .props = &a1));
    tc_expect_disconnect_v5(p, 0x82, TB_WAIT_MS);
    tc_close(p);
    tb_assert_serves(b);
    tb_stop(b);
}

/* Client-side view of server-to-client topic aliases: resolves every PUBLISH's topic and
 * checks the rules a receiver relies on. */
typedef struct alias_map {
    uint16_t max;
    char topic[8][64];
} alias_map;

/* Resolve pub's topic into out (NUL-terminated); returns the alias used (0: none). */
static uint16_t resolve(alias_map *m, const pk_v5 *pub, char *out, size_t cap)
{
    uint32_t alias = 0;
    bool has = pk_prop_int(pub->props, PK_P_TOPIC_ALIAS, &alias);
    cr_assert(!has || (alias >= 1 && alias <= m->max),
              "server sent Topic Alias %u, client's Topic Alias Maximum is %u [MQTT-3.3.2-11] "
              "[MQTT-3.1.2-26] [MQTT-3.1.2-27]",
              alias, m->max);
    cr_assert(alias < 8 && cap > 0);
    if (pub->topic.n > 0) {
        cr_assert(pub->topic.n < sizeof m->topic[0] && pub->topic.n < cap);
        memcpy(out, pub->topic.p, pub->topic.n);
        out[pub->topic.n] = '\0';
        if (has) {
            strcpy(m->topic[alias], out);
        }
    } else {
        cr_assert(has && m->topic[alias][0] != '\0',
                  "empty topic with Topic Alias %u that the server never mapped (3.3.4)", alias);
        strcpy(out, m->topic[alias]);
    }
    return (uint16_t)alias;
}

/*
 * Server-to-client aliases stay within the client's Topic Alias Maximum (1 here) and always
 * resolve: messages alternating between three topics all arrive under their own topic as a
 * receiver following 3.3.4 would resolve them. [MQTT-3.3.2-11] [MQTT-3.1.2-26]
 */
Test(v5_publish, server_topic_aliases_within_max_and_resolvable)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt tam = {0};
    pk_prop_u16(&tam, PK_P_TOPIC_ALIAS_MAXIMUM, 1);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "sta-sub", .clean = true,
                              .keepalive = 60, .props = &tam);
    tc_sub1_v5(s, 1, "sta/#", 0, 0, 0);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "sta-pub", .clean = true);
    static const char *const topics[] = {"sta/a", "sta/b", "sta/a", "sta/c", "sta/a", "sta/a"};
    alias_map m = {.max = 1};
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        tc_publish_v5(p, topics[i], "x", 0, false, NULL);
        pk_v5 pub;
        tc_expect_v5(s, &pub, 3, TB_WAIT_MS);
        char t[64];
        resolve(&m, &pub, t, sizeof t);
        cr_assert_str_eq(t, topics[i], "message %zu arrived under '%s', published to '%s'", i, t,
                         topics[i]);
    }
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * mqlite's design (the specification lets the sender decide): when the subscriber's CONNECT
 * has Topic Alias Maximum > 0, the second message on a topic arrives with the alias set by
 * the first and an empty Topic Name. [MQTT-3.3.2-11] (3.3.2.3.4)
 */
Test(v5_publish, server_topic_alias_used_for_repeated_topic)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt tam = {0};
    pk_prop_u16(&tam, PK_P_TOPIC_ALIAS_MAXIMUM, 5);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "stu-sub", .clean = true,
                              .keepalive = 60, .props = &tam);
    tc_sub1_v5(s, 1, "stu/#", 1, 0, 1);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "stu-pub", .clean = true);
    alias_map m = {.max = 5};
    char t[64];
    pk_v5 pub;
    char hex[512];

    tc_publish_v5(p, "stu/long/topic/name", "first", 1, false, NULL);
    tc_expect_v5(s, &pub, 3, TB_WAIT_MS);
    resolve(&m, &pub, t, sizeof t);
    cr_assert_str_eq(t, "stu/long/topic/name");
    cr_assert(pk_slice_eqs(pub.payload, "first"));
    tc_ack_v5(s, &pub);

    tc_publish_v5(p, "stu/long/topic/name", "second", 1, false, NULL);
    tc_expect_v5(s, &pub, 3, TB_WAIT_MS);
    pk_hex(pub.b, pub.len, hex, sizeof hex);
    uint16_t alias = resolve(&m, &pub, t, sizeof t);
    cr_assert_str_eq(t, "stu/long/topic/name");
    cr_assert(pk_slice_eqs(pub.payload, "second"));
    cr_assert(alias != 0 && pub.topic.n == 0,
              "second message on a topic: expected a Topic Alias and an empty Topic Name, got "
              "[%s]",
              hex);
    tc_ack_v5(s, &pub);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * A subscriber whose CONNECT has no Topic Alias Maximum never gets a Topic Alias, however
 * often a topic repeats; every PUBLISH carries the full Topic Name. [MQTT-3.1.2-27]
 */
Test(v5_publish, no_server_topic_alias_without_max)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "nta-sub", .clean = true);
    tc_sub1_v5(s, 1, "nta/#", 1, 0, 1);
    tb_pkt zero = {0};
    pk_prop_u16(&zero, PK_P_TOPIC_ALIAS_MAXIMUM, 0);
    tc_client *z =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "nta-sub0", .clean = true, .props = &zero);
    tc_sub1_v5(z, 1, "nta/#", 1, 0, 1);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "nta-pub", .clean = true);
    for (int i = 0; i < 4; i++) {
        tc_publish_v5(p, "nta/same/topic", "again", 1, false, NULL);
        tc_client *subs[2] = {s, z};
        for (int k = 0; k < 2; k++) {
            pk_v5 pub;
            tc_expect_pub_v5(subs[k], &pub, "nta/same/topic", "again", 1, false);
            cr_assert_eq(pk_prop_count(pub.props, PK_P_TOPIC_ALIAS), 0,
                         "Topic Alias sent to a client without Topic Alias Maximum "
                         "[MQTT-3.1.2-27]");
            tc_ack_v5(subs[k], &pub);
        }
    }
    tc_disconnect(p);
    tc_disconnect(z);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * A PUBLISH from a client must not contain a Subscription Identifier: Protocol Error,
 * DISCONNECT 0x82 then close. [MQTT-3.3.4-6] [MQTT-4.13.1-1]
 */
Test(v5_publish, subscription_id_from_client_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "sidpub", .clean = true, .keepalive = 60);
    tb_pkt props = {0};
    pk_prop_varint(&props, PK_P_SUBSCRIPTION_ID, 5);
    tc_sendp(p, PK_PUBLISH(.topic = "sid/t", .payload = "x", .qos = 1, .id = 1, .v5 = true,
                           .props = &props));
    tc_expect_disconnect_v5(p, 0x82, TB_WAIT_MS);
    tc_close(p);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * Mixed versions: a v3.1.1 and a v5 subscriber on one topic both receive a v5 publisher's
 * message; the v3.1.1 one gets a v3.1.1 PUBLISH (no property block: the payload is exactly
 * what was published), the v5 one gets the properties. (3.3.4 non-normative comment)
 * [MQTT-3.3.2-17] [v3.1.1 MQTT-3.3.1-1]
 */
Test(v5_publish, mixed_versions_both_receive)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s3 = tc_open(tb_port(b), "mix-v3", true, 60, false);
    tc_subscribe(s3, 1, "mix/t", 1, 1);
    tc_client *s5 = tc_open_v5(tb_port(b), false, NULL, .client_id = "mix-v5", .clean = true);
    tc_sub1_v5(s5, 1, "mix/t", 1, 0, 1);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "mix-pub", .clean = true);
    tb_pkt props = {0};
    pk_prop_pair(&props, PK_P_USER_PROPERTY, "origin", "v5");
    pk_prop_str(&props, PK_P_CONTENT_TYPE, "text/plain");
    tc_publish_v5(p, "mix/t", "both", 1, false, &props);

    uint16_t id = tc_expect_publish(s3, TB_WAIT_MS, .topic = "mix/t", .payload = "both", .qos = 1);
    tc_sendp(s3, pk_puback(id));
    pk_v5 pub;
    tc_expect_pub_v5(s5, &pub, "mix/t", "both", 1, false);
    tb_pkt got = pk_props_select(pub.props, PK_P_USER_PROPERTY);
    tb_pkt want = {0};
    pk_prop_pair(&want, PK_P_USER_PROPERTY, "origin", "v5");
    cr_assert(got.len == want.len && memcmp(got.b, want.b, want.len) == 0,
              "v5 subscriber lost the User Property");
    tc_ack_v5(s5, &pub);

    /* And the other way round: a v3.1.1 publisher reaches both. */
    tc_client *p3 = tc_open(tb_port(b), "mix-pub3", true, 60, false);
    tc_publish(p3, "mix/t", "from-v3", 1, false);
    id = tc_expect_publish(s3, TB_WAIT_MS, .topic = "mix/t", .payload = "from-v3", .qos = 1);
    tc_sendp(s3, pk_puback(id));
    tc_expect_pub_v5(s5, &pub, "mix/t", "from-v3", 1, false);
    tc_ack_v5(s5, &pub);
    tc_disconnect(p3);
    tc_disconnect(p);
    tc_disconnect(s5);
    tc_disconnect(s3);
    tb_stop(b);
}

/* A PUBLISH with an empty Topic Name and no Topic Alias is a Protocol Error (3.3.2.1):
 * DISCONNECT 0x82, then close. [MQTT-4.13.1-1] */
Test(v5_publish, empty_topic_without_alias_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p =
        tc_open_v5(tb_port(b), false, NULL, .client_id = "etopic", .clean = true, .keepalive = 60);
    tc_sendp(p, PK_PUBLISH(.topic = "", .payload = "x", .qos = 1, .id = 1, .v5 = true));
    tc_expect_disconnect_v5(p, 0x82, TB_WAIT_MS);
    tc_close(p);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * Server-to-client alias mappings end with the connection: after the subscriber reconnects
 * (resuming its session, again with Topic Alias Maximum 5) the first message on a topic it
 * had an alias for carries the full Topic Name, never an empty one relying on the old
 * mapping. [MQTT-3.3.2-7]
 */
Test(v5_publish, server_topic_alias_not_carried_to_new_connection)
{
    mql_broker *b = tb_start(NULL);
    tb_pkt props = {0};
    pk_prop_u16(&props, PK_P_TOPIC_ALIAS_MAXIMUM, 5);
    pk_prop_u32(&props, PK_P_SESSION_EXPIRY, 60);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "stn-sub", .clean = true,
                              .keepalive = 60, .props = &props);
    tc_sub1_v5(s, 1, "stn/#", 0, 0, 0);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "stn-pub", .clean = true);
    alias_map m = {.max = 5};
    char t[64];
    pk_v5 pub;
    for (int i = 0; i < 3; i++) {
        tc_publish_v5(p, "stn/topic", "x", 0, false, NULL);
        tc_expect_v5(s, &pub, 3, TB_WAIT_MS);
        resolve(&m, &pub, t, sizeof t);
        cr_assert_str_eq(t, "stn/topic");
    }
    tc_disconnect(s);
    s = tc_open_v5(tb_port(b), true, NULL, .client_id = "stn-sub", .clean = false, .keepalive = 60,
                   .props = &props);
    alias_map fresh = {.max = 5};
    tc_publish_v5(p, "stn/topic", "y", 0, false, NULL);
    tc_expect_v5(s, &pub, 3, TB_WAIT_MS);
    cr_assert(pub.topic.n > 0, "first PUBLISH on a new connection relies on an alias mapping "
                               "from the previous connection [MQTT-3.3.2-7]");
    resolve(&fresh, &pub, t, sizeof t);
    cr_assert_str_eq(t, "stn/topic");
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Message expiry applies to retained messages too: a retained message sent with Message
 * Expiry Interval 1 s is gone 2.5 s later (a new subscriber gets nothing, 3.3.1.3); one sent
 * with 10 s is delivered to a subscriber 2.5 s later with less than 10 s left.
 * [MQTT-3.3.2-5] [MQTT-3.3.2-6]
 */
Test(v5_publish, retained_message_expiry)
{
    mql_broker *b = tb_start(NULL);
    tc_client *p = tc_open_v5(tb_port(b), false, NULL, .client_id = "rx-pub", .clean = true);
    tb_pkt e1 = {0};
    pk_prop_u32(&e1, PK_P_MESSAGE_EXPIRY, 1);
    tb_pkt e10 = {0};
    pk_prop_u32(&e10, PK_P_MESSAGE_EXPIRY, 10);
    tc_publish_v5(p, "rx/short", "short", 1, true, &e1);
    tc_publish_v5(p, "rx/long", "long", 1, true, &e10);
    tb_sleep_ms(2500);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "rx-sub", .clean = true);
    tc_sub1_v5(s, 1, "rx/short", 1, 0, 1);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_sub1_v5(s, 2, "rx/long", 1, 0, 1);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "rx/long", "long", 1, true);
    uint32_t v = 0;
    cr_assert(pk_prop_int(pub.props, PK_P_MESSAGE_EXPIRY, &v) && v < 10 && v >= 5,
              "retained message 2.5 s into its 10 s: Message Expiry Interval %u [MQTT-3.3.2-6]", v);
    tc_ack_v5(s, &pub);
    tc_disconnect(s);
    tc_disconnect(p);
    tb_stop(b);
}
