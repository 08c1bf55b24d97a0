/*
 * test_v5_subscribe.c - MQTT 5.0 SUBSCRIBE / UNSUBSCRIBE: subscription options, Subscription
 * Identifiers, SUBACK / UNSUBACK reason codes, shared subscriptions.
 *
 * Purpose: check the v5 subscription options black-box: No Local, Retain As Published,
 * Retain Handling 0/1/2; Subscription Identifiers on delivered messages, also for
 * overlapping subscriptions; a reason code per filter in SUBACK (granted QoS, 0x8F for an
 * invalid filter) and UNSUBACK (0x11 when there was no subscription); invalid options as
 * Malformed Packet / Protocol Error; shared subscriptions ($share/g/t) splitting messages
 * between members without duplicates, sending no retained messages, and refusing No Local.
 * Specification sections 3.3.1.3, 3.3.4, 3.8, 3.9, 3.10, 3.11, 4.8.
 *
 * Assumptions: retained messages are set by a separate publisher before the subscription
 * under test; "nothing arrives" waits TB_QUIET_MS. Shared-subscription counting alternates
 * short receives on both members until the expected total arrived or a deadline passed.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "harness.h"

TestSuite(v5_subscribe, .fini = tb_fini, .timeout = 30);

static tc_client *open5(mql_broker *b, const char *id)
{
    return tc_open_v5(tb_port(b), false, NULL, .client_id = id, .clean = true, .keepalive = 60);
}

/*
 * No Local: a client subscribed with No Local 1 does not get its own messages, but gets
 * those of other clients; another client subscribed without No Local gets the messages of
 * the first. [MQTT-3.8.3-3]
 */
Test(v5_subscribe, no_local)
{
    mql_broker *b = tb_start(NULL);
    tc_client *a = open5(b, "nl-a");
    tc_sub1_v5(a, 1, "nl/t", 1 | PK_SUB_NO_LOCAL, 0, 1);
    tc_client *o = open5(b, "nl-o");
    tc_sub1_v5(o, 1, "nl/t", 1, 0, 1);
    tc_client *p = open5(b, "nl-p");
    pk_v5 pub;

    /* a's own message: only o gets it. a publishes QoS 0 so no PUBACK can interleave. */
    tc_publish_v5(a, "nl/t", "from-a", 0, false, NULL);
    tc_expect_pub_v5(o, &pub, "nl/t", "from-a", 0, false);
    tc_expect_nothing(a, TB_QUIET_MS);

    /* Someone else's message: both get it. */
    tc_publish_v5(p, "nl/t", "from-p", 1, false, NULL);
    tc_expect_pub_v5(a, &pub, "nl/t", "from-p", 1, false);
    tc_ack_v5(a, &pub);
    tc_expect_pub_v5(o, &pub, "nl/t", "from-p", 1, false);
    tc_ack_v5(o, &pub);
    tc_disconnect(p);
    tc_disconnect(o);
    tc_disconnect(a);
    tb_stop(b);
}

/*
 * Retain As Published: a live retained message is forwarded with RETAIN 1 on a subscription
 * with the option set and RETAIN 0 on one without; a retained message sent because of a new
 * subscription has RETAIN 1 either way (3.8.3.1). [MQTT-3.3.1-12] [MQTT-3.3.1-13]
 */
Test(v5_subscribe, retain_as_published)
{
    mql_broker *b = tb_start(NULL);
    tc_client *rap = open5(b, "rap-1");
    tc_sub1_v5(rap, 1, "rap/t", 0 | PK_SUB_RAP, 0, 0);
    tc_client *plain = open5(b, "rap-0");
    tc_sub1_v5(plain, 1, "rap/t", 0, 0, 0);
    tc_client *p = open5(b, "rap-p");
    pk_v5 pub;
    tc_publish_v5(p, "rap/t", "kept", 0, true, NULL);
    tc_expect_pub_v5(rap, &pub, "rap/t", "kept", 0, true);
    tc_expect_pub_v5(plain, &pub, "rap/t", "kept", 0, false);
    tc_publish_v5(p, "rap/t", "not-retained", 0, false, NULL);
    tc_expect_pub_v5(rap, &pub, "rap/t", "not-retained", 0, false);
    tc_expect_pub_v5(plain, &pub, "rap/t", "not-retained", 0, false);

    tc_client *late = open5(b, "rap-late");
    tc_sub1_v5(late, 1, "rap/t", 0, 0, 0);
    tc_expect_pub_v5(late, &pub, "rap/t", "kept", 0, true);
    tc_disconnect(late);
    tc_disconnect(p);
    tc_disconnect(plain);
    tc_disconnect(rap);
    tb_stop(b);
}

/* Publish a retained message from a separate client. */
static void set_retained(mql_broker *b, const char *topic, const char *payload)
{
    tc_client *p = open5(b, "retainer");
    tc_publish_v5(p, topic, payload, 1, true, NULL);
    tc_disconnect(p);
}

/*
 * Retain Handling 0: the retained message is sent at subscribe, and again when the same
 * subscription is made a second time. [MQTT-3.3.1-9] [MQTT-3.8.4-4]
 */
Test(v5_subscribe, retain_handling_0)
{
    mql_broker *b = tb_start(NULL);
    set_retained(b, "rh0/t", "r0");
    tc_client *s = open5(b, "rh0");
    pk_v5 pub;
    tc_sub1_v5(s, 1, "rh0/t", 1 | PK_SUB_RH(0), 0, 1);
    tc_expect_pub_v5(s, &pub, "rh0/t", "r0", 1, true);
    tc_ack_v5(s, &pub);
    tc_sub1_v5(s, 2, "rh0/t", 1 | PK_SUB_RH(0), 0, 1);
    tc_expect_pub_v5(s, &pub, "rh0/t", "r0", 1, true);
    tc_ack_v5(s, &pub);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Retain Handling 1: the retained message is sent when the subscription is new, not when it
 * already existed. [MQTT-3.3.1-10]
 */
Test(v5_subscribe, retain_handling_1)
{
    mql_broker *b = tb_start(NULL);
    set_retained(b, "rh1/t", "r1");
    tc_client *s = open5(b, "rh1");
    pk_v5 pub;
    tc_sub1_v5(s, 1, "rh1/t", 1 | PK_SUB_RH(1), 0, 1);
    tc_expect_pub_v5(s, &pub, "rh1/t", "r1", 1, true);
    tc_ack_v5(s, &pub);
    tc_sub1_v5(s, 2, "rh1/t", 1 | PK_SUB_RH(1), 0, 1);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Retain Handling 2: no retained message at subscribe; later messages are delivered as usual.
 * [MQTT-3.3.1-11]
 */
Test(v5_subscribe, retain_handling_2)
{
    mql_broker *b = tb_start(NULL);
    set_retained(b, "rh2/t", "r2");
    tc_client *s = open5(b, "rh2");
    tc_sub1_v5(s, 1, "rh2/t", 1 | PK_SUB_RH(2), 0, 1);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_client *p = open5(b, "rh2-p");
    tc_publish_v5(p, "rh2/t", "live", 1, false, NULL);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "rh2/t", "live", 1, false);
    tc_ack_v5(s, &pub);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * The Subscription Identifier of the SUBSCRIBE comes back on every message the subscription
 * delivers (also a multi-byte value); re-subscribing the same filter without one stores the
 * absence, so later messages carry none. [MQTT-3.3.4-3] (3.8.2.1.2) [MQTT-3.8.4-3]
 */
Test(v5_subscribe, subscription_identifier_delivered)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "sid");
    tc_sub1_v5(s, 1, "sid/+", 1, 300000, 1);
    tc_client *p = open5(b, "sid-p");
    pk_v5 pub;
    uint32_t ids[4];
    tc_publish_v5(p, "sid/x", "one", 1, false, NULL);
    tc_expect_pub_v5(s, &pub, "sid/x", "one", 1, false);
    size_t n = pk_prop_ints(pub.props, PK_P_SUBSCRIPTION_ID, ids, 4);
    cr_assert(n == 1 && ids[0] == 300000,
              "expected Subscription Identifier 300000 once, got %zu identifiers (first %u)", n,
              n ? ids[0] : 0);
    tc_ack_v5(s, &pub);

    tc_sub1_v5(s, 2, "sid/+", 1, 0, 1);
    tc_publish_v5(p, "sid/y", "two", 1, false, NULL);
    tc_expect_pub_v5(s, &pub, "sid/y", "two", 1, false);
    cr_assert_eq(pk_prop_count(pub.props, PK_P_SUBSCRIPTION_ID), 0,
                 "subscription replaced without an identifier still delivers one");
    tc_ack_v5(s, &pub);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * A retained message sent because of a new subscription carries that subscription's
 * identifier (3.3.4: "The PUBLISH packet includes the Subscription Identifier carried in the
 * SUBSCRIBE packet"); the identifier is part of the session state and still comes back after
 * the session is resumed on a new connection (4.1). [MQTT-3.3.4-3]
 */
Test(v5_subscribe, subscription_identifier_on_retained_and_resumed_session)
{
    mql_broker *b = tb_start(NULL);
    set_retained(b, "sir/t", "ret");
    tb_pkt e60 = {0};
    pk_prop_u32(&e60, PK_P_SESSION_EXPIRY, 60);
    tc_client *s = tc_open_v5(tb_port(b), false, NULL, .client_id = "sir", .clean = true,
                              .keepalive = 60, .props = &e60);
    tc_sub1_v5(s, 1, "sir/#", 1, 77, 1);
    pk_v5 pub;
    uint32_t id = 0;
    tc_expect_pub_v5(s, &pub, "sir/t", "ret", 1, true);
    cr_assert(pk_prop_int(pub.props, PK_P_SUBSCRIPTION_ID, &id) && id == 77,
              "retained message at subscribe: Subscription Identifier %u, want 77", id);
    tc_ack_v5(s, &pub);
    tc_disconnect(s);

    s = tc_open_v5(tb_port(b), true, NULL, .client_id = "sir", .clean = false, .keepalive = 60,
                   .props = &e60);
    tc_client *p = open5(b, "sir-p");
    tc_publish_v5(p, "sir/u", "after-resume", 1, false, NULL);
    tc_expect_pub_v5(s, &pub, "sir/u", "after-resume", 1, false);
    id = 0;
    cr_assert(pk_prop_int(pub.props, PK_P_SUBSCRIPTION_ID, &id) && id == 77,
              "resumed session: Subscription Identifier %u, want 77 (4.1)", id);
    tc_ack_v5(s, &pub);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * Overlapping subscriptions "so/#" (id 1, QoS 0), "so/+" (id 2, QoS 1) and "so/x" (no id,
 * QoS 1) all match "so/x": whether the server sends one copy (with ids 1 and 2) or one per
 * subscription (each with its own id), the union of identifiers is {1, 2}, no copy carries an
 * identifier of a subscription it does not stand for, and the maximum QoS of the matching
 * subscriptions is respected. [MQTT-3.3.4-2] [MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-5]
 */
Test(v5_subscribe, subscription_identifiers_overlapping)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "sio");
    tc_sub1_v5(s, 1, "so/#", 0, 1, 0);
    tc_sub1_v5(s, 2, "so/+", 1, 2, 1);
    tc_sub1_v5(s, 3, "so/x", 1, 0, 1);
    tc_client *p = open5(b, "sio-p");
    tc_publish_v5(p, "so/x", "overlap", 1, false, NULL);
    bool seen1 = false;
    bool seen2 = false;
    int copies = 0;
    int max_qos = -1;
    pk_v5 pub;
    while (tc_recv_v5(s, &pub, copies == 0 ? TB_WAIT_MS : TB_QUIET_MS) > 0) {
        cr_assert_eq(pub.type, 3, "unexpected packet type %u", pub.type);
        cr_assert(pk_slice_eqs(pub.topic, "so/x") && pk_slice_eqs(pub.payload, "overlap"));
        copies++;
        if ((int)pub.qos > max_qos) {
            max_qos = pub.qos;
        }
        uint32_t ids[8];
        size_t n = pk_prop_ints(pub.props, PK_P_SUBSCRIPTION_ID, ids, 8);
        cr_assert(n <= 2, "copy %d carries %zu Subscription Identifiers", copies, n);
        for (size_t i = 0; i < n; i++) {
            cr_assert(ids[i] == 1 || ids[i] == 2, "unknown Subscription Identifier %u", ids[i]);
            seen1 |= ids[i] == 1;
            seen2 |= ids[i] == 2;
        }
        tc_ack_v5(s, &pub);
    }
    cr_assert(copies >= 1 && copies <= 3, "%d copies for 3 matching subscriptions", copies);
    cr_assert(seen1 && seen2,
              "Subscription Identifiers delivered: 1 %s, 2 %s (want both) [MQTT-3.3.4-3]",
              seen1 ? "yes" : "no", seen2 ? "yes" : "no");
    cr_assert_eq(max_qos, 1,
                 "maximum QoS of the matching subscriptions not respected "
                 "[MQTT-3.3.4-2]");
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/*
 * One SUBACK reason code per filter, in order: the granted QoS for valid filters and 0x8F
 * (Topic Filter invalid) for "sr/#/bad" ('#' not last [MQTT-4.7.1-1]); the valid ones work,
 * each at min(published QoS, granted QoS), and the connection stays up. [MQTT-3.8.4-5]
 * [MQTT-3.8.4-6] [MQTT-3.8.4-7] [MQTT-3.8.4-8] [MQTT-3.9.3-1] [MQTT-3.9.3-2]
 */
Test(v5_subscribe, suback_reason_codes_per_filter)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "sr");
    static const pk_sub subs[] = {
        {"sr/q0", 0}, {"sr/q1", 1}, {"sr/q2", 2}, {"sr/#/bad", 2}, {"sr/plus/+", 1},
    };
    static const uint8_t codes[] = {0x00, 0x01, 0x02, 0x8F, 0x01};
    tc_subscribe_v5(s, 9, NULL, 5, subs, codes);
    tc_client *p = open5(b, "sr-p");
    pk_v5 pub;
    tc_publish_v5(p, "sr/q0", "a", 2, false, NULL);
    tc_expect_pub_v5(s, &pub, "sr/q0", "a", 0, false);
    tc_publish_v5(p, "sr/q1", "b", 2, false, NULL);
    tc_expect_pub_v5(s, &pub, "sr/q1", "b", 1, false);
    tc_ack_v5(s, &pub);
    tc_publish_v5(p, "sr/q2", "c", 2, false, NULL);
    tc_expect_pub_v5(s, &pub, "sr/q2", "c", 2, false);
    tc_ack_v5(s, &pub);
    tc_publish_v5(p, "sr/plus/x", "d", 1, false, NULL);
    tc_expect_pub_v5(s, &pub, "sr/plus/x", "d", 1, false);
    tc_ack_v5(s, &pub);
    tc_ping(s);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/* Reserved bits 6-7 of the Subscription Options set: Malformed Packet, DISCONNECT 0x81.
 * [MQTT-3.8.3-5] [MQTT-4.13.1-1] */
Test(v5_subscribe, reserved_option_bits_disconnect_0x81)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "sresv");
    pk_sub sub = {"resv/t", 0x41};
    tc_sendp(s, pk_subscribe_v5(1, NULL, 1, &sub));
    tc_expect_disconnect_v5(s, 0x81, TB_WAIT_MS);
    tc_close(s);
    tb_assert_serves(b);
    tb_stop(b);
}

/* Retain Handling 3 is a Protocol Error (3.8.3.1): DISCONNECT 0x82. [MQTT-4.13.1-1] */
Test(v5_subscribe, retain_handling_3_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "srh3");
    pk_sub sub = {"rh3/t", PK_SUB_RH(3) | 1};
    tc_sendp(s, pk_subscribe_v5(1, NULL, 1, &sub));
    tc_expect_disconnect_v5(s, 0x82, TB_WAIT_MS);
    tc_close(s);
    tb_assert_serves(b);
    tb_stop(b);
}

/* Maximum QoS 3 in the Subscription Options is a Protocol Error (3.8.3.1): DISCONNECT 0x82.
 * [MQTT-4.13.1-1] */
Test(v5_subscribe, qos3_option_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "sq3");
    pk_sub sub = {"q3/t", 3};
    tc_sendp(s, pk_subscribe_v5(1, NULL, 1, &sub));
    tc_expect_disconnect_v5(s, 0x82, TB_WAIT_MS);
    tc_close(s);
    tb_assert_serves(b);
    tb_stop(b);
}

/* Subscription Identifier 0 is a Protocol Error (3.8.2.1.2): DISCONNECT 0x82.
 * [MQTT-4.13.1-1] */
Test(v5_subscribe, subscription_id_zero_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "sid0");
    tb_pkt props = {0};
    pk_prop_varint(&props, PK_P_SUBSCRIPTION_ID, 0);
    pk_sub sub = {"sid0/t", 1};
    tc_sendp(s, pk_subscribe_v5(1, &props, 1, &sub));
    tc_expect_disconnect_v5(s, 0x82, TB_WAIT_MS);
    tc_close(s);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * UNSUBACK has one reason code per filter, in order: 0x00 for a filter that was subscribed,
 * 0x11 (No subscription existed) for one that was not; the first subscription is gone.
 * [MQTT-3.10.4-1] [MQTT-3.10.4-5] [MQTT-3.10.4-6] [MQTT-3.11.3-1] [MQTT-3.11.3-2]
 */
Test(v5_subscribe, unsuback_reason_codes)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "us");
    tc_sub1_v5(s, 1, "us/a", 1, 0, 1);
    static const char *const filters[] = {"us/a", "us/none"};
    tc_sendp(s, pk_unsubscribe_v5(5, NULL, 2, filters));
    pk_v5 ack;
    tc_expect_v5(s, &ack, 11, TB_WAIT_MS);
    static const uint8_t want[] = {0x00, 0x11};
    char hex[256];
    cr_assert(ack.id == 5 && pk_slice_eq(ack.payload, want, 2),
              "expected UNSUBACK id 5 codes [00 11], got [%s]",
              pk_hex(ack.b, ack.len, hex, sizeof hex));
    tc_client *p = open5(b, "us-p");
    tc_publish_v5(p, "us/a", "gone", 1, false, NULL);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/* Receive from either of two clients for up to ms, acknowledging; counts per payload index
 * ("m<i>") into counts[who][i]. Stops early once total messages arrived. Member k's
 * messages must carry exactly its own Subscription Identifier sub_ids[k]. */
static void collect_shared(tc_client *m[2], const uint32_t sub_ids[2], int n, int counts[2][64],
                           int total, int ms)
{
    int got = 0;
    int64_t deadline = tb_now_ms() + ms;
    while (got < total && tb_now_ms() < deadline) {
        for (int k = 0; k < 2; k++) {
            pk_v5 pub;
            int r = tc_recv_v5(m[k], &pub, 20);
            if (r <= 0) {
                continue;
            }
            cr_assert_eq(pub.type, 3, "member %d: unexpected packet type %u", k, pub.type);
            cr_assert(pk_slice_eqs(pub.topic, "sh/t"), "member %d: wrong topic", k);
            int i = -1;
            char buf[16] = {0};
            memcpy(buf, pub.payload.p, pub.payload.n < 15 ? pub.payload.n : 15);
            cr_assert(sscanf(buf, "m%d", &i) == 1 && i >= 0 && i < n, "bad payload '%s'", buf);
            uint32_t ids[4];
            size_t nids = pk_prop_ints(pub.props, PK_P_SUBSCRIPTION_ID, ids, 4);
            cr_assert(nids == 1 && ids[0] == sub_ids[k],
                      "member %d (Subscription Identifier %u) got a message with %zu "
                      "identifiers, first %u (4.8.2: only the receiver's own)",
                      k, sub_ids[k], nids, nids ? ids[0] : 0);
            counts[k][i]++;
            got++;
            tc_ack_v5(m[k], &pub);
        }
    }
}

/*
 * Shared subscription "$share/g/sh/t" with two members: each of 20 QoS 1 messages goes to
 * exactly one member (no duplicates, none lost), carrying only the receiving member's own
 * Subscription Identifier (4.8.2, 3.3.4). That each member gets some is mqlite's design (the
 * specification lets the server choose freely).
 */
Test(v5_subscribe, shared_distribution)
{
    mql_broker *b = tb_start(NULL);
    tc_client *m[2] = {open5(b, "sh-a"), open5(b, "sh-b")};
    static const uint32_t sub_ids[2] = {11, 22};
    tc_sub1_v5(m[0], 1, "$share/g/sh/t", 1, sub_ids[0], 1);
    tc_sub1_v5(m[1], 1, "$share/g/sh/t", 1, sub_ids[1], 1);
    tc_client *p = open5(b, "sh-p");
    enum { N = 20 };
    for (int i = 0; i < N; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", i);
        tc_publish_v5(p, "sh/t", payload, 1, false, NULL);
    }
    int counts[2][64] = {{0}};
    collect_shared(m, sub_ids, N, counts, N, 4000);
    /* Anything beyond N would be a duplicate: give it a moment to show up. */
    collect_shared(m, sub_ids, N, counts, 1, TB_QUIET_MS);
    int per[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        int total = counts[0][i] + counts[1][i];
        cr_assert_eq(total, 1, "message m%d delivered %d times to the shared subscription", i,
                     total);
        per[0] += counts[0][i];
        per[1] += counts[1][i];
    }
    cr_assert(per[0] > 0 && per[1] > 0, "one member got all %d messages (%d / %d)", N, per[0],
              per[1]);
    tc_disconnect(p);
    tc_disconnect(m[0]);
    tc_disconnect(m[1]);
    tb_stop(b);
}

/*
 * A shared subscription gets no retained messages when it is made, only later messages
 * (3.8.4, 4.8.2).
 */
Test(v5_subscribe, shared_no_retained_on_subscribe)
{
    mql_broker *b = tb_start(NULL);
    set_retained(b, "shr/t", "old");
    tc_client *s = open5(b, "shr");
    tc_sub1_v5(s, 1, "$share/g/shr/t", 1, 0, 1);
    tc_expect_nothing(s, TB_QUIET_MS);
    tc_client *p = open5(b, "shr-p");
    tc_publish_v5(p, "shr/t", "new", 1, false, NULL);
    pk_v5 pub;
    tc_expect_pub_v5(s, &pub, "shr/t", "new", 1, false);
    tc_ack_v5(s, &pub);
    tc_disconnect(p);
    tc_disconnect(s);
    tb_stop(b);
}

/* No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82, then close.
 * [MQTT-3.8.3-4] [MQTT-4.13.1-1] */
Test(v5_subscribe, shared_no_local_disconnect_0x82)
{
    mql_broker *b = tb_start(NULL);
    tc_client *s = open5(b, "shnl");
    pk_sub sub = {"$share/g/shnl/t", 1 | PK_SUB_NO_LOCAL};
    tc_sendp(s, pk_subscribe_v5(1, NULL, 1, &sub));
    tc_expect_disconnect_v5(s, 0x82, TB_WAIT_MS);
    tc_close(s);
    tb_assert_serves(b);
    tb_stop(b);
}

/*
 * With shared_subscriptions, wildcard_subscriptions and subscription_identifiers switched
 * off, CONNACK says so (Shared / Wildcard / Subscription Identifier Available 0) and a
 * SUBSCRIBE using them gets 0x9E / 0xA2 per filter, or DISCONNECT 0xA1 for a Subscription
 * Identifier (sections 3.2.2.3.11 to 3.2.2.3.13, 3.8.4).
 */
Test(v5_subscribe, features_switched_off)
{
    mql_broker *b = tb_start("shared_subscriptions false\nwildcard_subscriptions false\n"
                             "subscription_identifiers false\n");
    pk_v5 ack;
    tc_client *c = tc_open_v5(tb_port(b), false, &ack, .client_id = "feat-off", .clean = true,
                              .keepalive = 60);
    uint32_t v = 1;
    cr_assert(pk_prop_int(ack.props, PK_P_SHARED_SUB_AVAILABLE, &v) && v == 0);
    cr_assert(pk_prop_int(ack.props, PK_P_WILDCARD_SUB_AVAILABLE, &v) && v == 0);
    cr_assert(pk_prop_int(ack.props, PK_P_SUB_ID_AVAILABLE, &v) && v == 0);
    tc_sub1_v5(c, 1, "$share/g/t", 1, 0, 0x9E);
    tc_sub1_v5(c, 2, "plant/+/temp", 1, 0, 0xA2);
    tc_sub1_v5(c, 3, "plant/#", 1, 0, 0xA2);
    tc_sub1_v5(c, 4, "plant/line1/temp", 1, 0, 1);
    tc_sendp(c, pk_disconnect_v5(0, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    c = tc_open_v5(tb_port(b), false, NULL, .client_id = "feat-off2", .clean = true,
                   .keepalive = 60);
    tb_pkt props = {0};
    pk_prop_varint(&props, PK_P_SUBSCRIPTION_ID, 7);
    pk_sub sub = {.filter = "plant/line1/temp", .options = 1};
    tc_sendp(c, pk_subscribe_v5(6, &props, 1, &sub));
    tc_expect_disconnect_v5(c, 0xA1, TB_WAIT_MS);
    tc_close(c);
    tb_assert_serves(b);
    tb_stop(b);
}

/* By default CONNACK leaves the three Available properties out: all are available. */
Test(v5_subscribe, features_available_by_default)
{
    mql_broker *b = tb_start(NULL);
    pk_v5 ack;
    tc_client *c =
        tc_open_v5(tb_port(b), false, &ack, .client_id = "feat-on", .clean = true, .keepalive = 60);
    cr_assert_eq(pk_prop_count(ack.props, PK_P_SHARED_SUB_AVAILABLE), 0);
    cr_assert_eq(pk_prop_count(ack.props, PK_P_WILDCARD_SUB_AVAILABLE), 0);
    cr_assert_eq(pk_prop_count(ack.props, PK_P_SUB_ID_AVAILABLE), 0);
    tc_sub1_v5(c, 1, "$share/g/t", 1, 0, 1);
    tc_sub1_v5(c, 2, "plant/#", 1, 7, 1);
    tc_sendp(c, pk_disconnect_v5(0, NULL));
    tc_expect_closed(c, TB_WAIT_MS);
    tc_close(c);
    tb_stop(b);
}
