/*
 * test_router.c - broker/router.c through router.h, single-threaded on a core of its own
 * (core_fixture.h: no network, no store): one PUBLISH in -> the sessions it goes to. One
 * copy per session at the highest QoS its matching subscriptions granted with all their
 * Subscription Identifiers, No Local, Retain As Published, the shared group's round robin
 * among live members, the read ACL, retained set/replace/clear, and the outcome returned
 * (matched count, refused).
 */
#include "core_fixture.h"

#include "broker/router.h"

#define NS 4
static mql_session *ss[NS];
static rec_sink rs[NS];

static void setup(void)
{
    core_setup();
    for (int i = 0; i < NS; i++) {
        char id[8];
        snprintf(id, sizeof(id), "c%d", i);
        ss[i] = mql_session_alloc((const uint8_t *)id, (uint32_t)strlen(id));
        cr_assert_not_null(ss[i]);
        attach(ss[i], &rs[i], 100, 2);
    }
}

static void teardown(void)
{
    for (int i = 0; i < NS; i++) {
        mql_session_detach(ss[i]);
        mql_session_free(&core, ss[i]);
    }
    mql_topics_free(core.topics);
    mql_acl_free(core.acl);
    free(core.route);
}

TestSuite(router, .init = setup, .fini = teardown);

static mql_route_result route(const char *topic, uint8_t qos, bool retain, mql_session *from)
{
    mql_msg *m = msg_of(topic, "p", qos, retain);
    mql_route_result r = mql_router_route(&core, m, from);
    mql_msg_unref(m);
    return r;
}

/* Overlapping subscriptions of one session: one copy, the highest granted QoS, every
 * Subscription Identifier [MQTT-3.3.4-2] [MQTT-3.3.4-3]. */
Test(router, overlapping_subscriptions_give_one_copy_at_the_highest_qos)
{
    /* both ways round, so the result cannot depend on the order the tree reports them */
    (void)subscribe(ss[0], "a/+", 1, 7, false, false);
    (void)subscribe(ss[0], "a/#", 2, 9, false, false);
    (void)subscribe(ss[0], "x/#", 2, 0, false, false);
    (void)subscribe(ss[1], "a/+", 2, 7, false, false);
    (void)subscribe(ss[1], "a/#", 1, 9, false, false);
    mql_route_result r = route("a/b", 2, false, NULL);
    cr_assert_eq(r.matched, 4);
    cr_assert_not(r.refused);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(rs[i].n, 1, "session %d: one copy", i);
        cr_assert_eq(rs[i].p[0].qos, 2, "session %d: the highest granted QoS", i);
        cr_assert_eq(rs[i].p[0].n_ids, 2);
        cr_assert_eq(rs[i].p[0].ids[0] + rs[i].p[0].ids[1], 16);
    }
}

/* Delivered at the lower of the message's QoS and the granted QoS [MQTT-3.8.4-8]. */
Test(router, delivered_at_the_granted_qos)
{
    (void)subscribe(ss[0], "a", 0, 0, false, false);
    (void)subscribe(ss[1], "a", 1, 0, false, false);
    mql_route_result r = route("a", 2, false, NULL);
    cr_assert_eq(r.matched, 2);
    cr_assert_eq(rs[0].p[0].qos, 0);
    cr_assert_eq(rs[1].p[0].qos, 1);
}

/* No Local: not sent back to the session that published it, but still a match
 * [MQTT-3.8.3-3]. */
Test(router, no_local_skips_the_publisher)
{
    (void)subscribe(ss[0], "a", 1, 0, true, false);
    (void)subscribe(ss[1], "a", 1, 0, true, false);
    mql_route_result r = route("a", 1, false, ss[0]);
    cr_assert_eq(r.matched, 2);
    cr_assert_eq(rs[0].n, 0);
    cr_assert_eq(rs[1].n, 1);
}

/* Retain As Published keeps the retain flag; without it the flag is 0 [MQTT-3.3.1-12]
 * [MQTT-3.3.1-13]. */
Test(router, retain_as_published)
{
    (void)subscribe(ss[0], "a", 1, 0, false, true);
    (void)subscribe(ss[1], "a", 1, 0, false, false);
    (void)route("a", 1, true, NULL);
    cr_assert_eq(rs[0].p[0].retain, true);
    cr_assert_eq(rs[1].p[0].retain, false);
}

/* A shared group: each message to one member, in turn among the live ones (MQTT 5 4.8.2:
 * the Server picks one of the sessions in the group). */
Test(router, shared_group_round_robin_among_live_members)
{
    for (int i = 0; i < 3; i++)
        (void)subscribe(ss[i], "$share/g/s/+", 1, 0, false, false);
    mql_session_detach(ss[2]); /* offline, and ends with its connection: never picked */
    for (int k = 0; k < 6; k++) {
        mql_route_result r = route("s/x", 1, false, NULL);
        cr_assert_eq(r.matched, 1, "a group counts as one match");
    }
    cr_assert_eq(rs[0].n + rs[1].n, 6, "each message to exactly one member");
    cr_assert_gt(rs[0].n, 0);
    cr_assert_gt(rs[1].n, 0);
    cr_assert_eq(rs[2].n, 0);
    cr_assert_eq(ss[2]->queue.count, 0);
}

Test(router, shared_group_takes_turns)
{
    for (int i = 0; i < 3; i++)
        (void)subscribe(ss[i], "$share/g/s", 1, 0, false, false);
    (void)subscribe(ss[3], "s", 1, 0, false, false); /* non-shared: gets every message */
    for (int k = 0; k < 6; k++)
        cr_assert_eq(route("s", 1, false, NULL).matched, 2);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rs[i].n, 2, "member %d: two of six", i);
    cr_assert_eq(rs[3].n, 6);
}

/* The read ACL is checked at delivery (it may change after the subscription). */
Test(router, read_acl_refusal)
{
    char err[128];
    const char *acl = "topic read public/#\n";
    cr_assert_eq(mql_acl_parse(&core.acl, acl, strlen(acl), "acl", err, sizeof(err)), MQL_OK);
    (void)subscribe(ss[0], "#", 1, 0, false, false);
    mql_route_result r = route("secret/x", 1, false, NULL);
    cr_assert_eq(r.matched, 1);
    cr_assert_not(r.refused, "an ACL drop is not a quota refusal");
    cr_assert_eq(rs[0].n, 0);
    (void)route("public/x", 1, false, NULL);
    cr_assert_eq(rs[0].n, 1);
}

static void count_retained(void *arg, mql_msg *m)
{
    mql_msg **last = arg;
    *last = m;
}

/* Retained: kept [MQTT-3.3.1-5], replaced [MQTT-3.3.1-10], cleared by an empty payload
 * [MQTT-3.3.1-6] [MQTT-3.3.1-11]; a retained PUBLISH is routed too. */
Test(router, retained_set_replace_clear)
{
    (void)subscribe(ss[0], "r", 1, 0, false, false);
    mql_msg *m1 = mql_msg_new(B("r"), B("one"), 1, true, NULL, 0);
    mql_msg *m2 = mql_msg_new(B("r"), B("two"), 1, true, NULL, 0);
    mql_msg *m3 = mql_msg_new(B("r"), B(""), 1, true, NULL, 0);
    mql_route_result r = mql_router_publish(&core, m1, NULL, "pub");
    cr_assert_eq(r.matched, 1);
    cr_assert_eq(rs[0].n, 1);
    cr_assert_eq(mql_topics_retained_count(core.topics), 1);
    (void)mql_router_publish(&core, m2, NULL, "pub");
    mql_msg *kept = NULL;
    mql_topics_retained(core.topics, B("r"), count_retained, &kept);
    cr_assert_eq(kept, m2, "the newer message replaces the retained one");
    cr_assert_eq(mql_topics_retained_count(core.topics), 1);
    (void)mql_router_publish(&core, m3, NULL, "pub");
    cr_assert_eq(mql_topics_retained_count(core.topics), 0);
    mql_msg_unref(m1);
    mql_msg_unref(m2);
    mql_msg_unref(m3);
}

/* The outcome: a session that outlives its connection with a full queue refuses QoS 1;
 * with no subscriber nothing matched. */
Test(router, outcome_counts_matches_and_reports_refusal)
{
    mql_route_result r = route("nobody", 1, false, NULL);
    cr_assert_eq(r.matched, 0);
    cr_assert_not(r.refused);
    (void)subscribe(ss[0], "q", 1, 0, false, false);
    mql_session_detach(ss[0]);
    ss[0]->expiry = 60;
    ss[0]->max_queued_messages = 1;
    r = route("q", 1, false, NULL);
    cr_assert_eq(r.matched, 1);
    cr_assert_not(r.refused);
    r = route("q", 1, false, NULL);
    cr_assert_eq(r.matched, 1);
    cr_assert(r.refused, "queue full: refused (0x97 for MQTT 5 publishers)");
}

/* A full store: a new retained message is delivered but not kept, and reported refused. */
Test(router, full_store_refuses_a_new_retained_message)
{
    core.store = fake_store_handle();
    core.store_full = true;
    (void)subscribe(ss[0], "r", 1, 0, false, false);
    mql_msg *m = mql_msg_new(B("r"), B("one"), 1, true, NULL, 0);
    mql_route_result r = mql_router_publish(&core, m, NULL, "pub");
    cr_assert(r.refused);
    cr_assert_eq(rs[0].n, 1, "still delivered");
    cr_assert_eq(mql_topics_retained_count(core.topics), 0);
    cr_assert_eq(fake_store_calls.retain_put, 0);
    mql_msg_unref(m);
    core.store = NULL;
}
