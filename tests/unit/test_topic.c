/*
 * test_topic.c - the topic tree and the pairwise matchers (mql_topic_matches, _covers,
 * _intersects): wildcard matching [MQTT-4.7.1-*], $-topics [MQTT-4.7.2-1],
 * subscription replace [MQTT-3.8.4-3], retained set/replace/clear [MQTT-3.3.1-10/11] and
 * retained lookup by filter.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "broker/topic.h"

static mql_bytes B(const char *s)
{
    return (mql_bytes){.p = (const uint8_t *)s, .len = (uint32_t)strlen(s)};
}

/* Fake sessions: only their addresses matter to the tree. */
static int sess[4];
#define S(i) ((struct mql_session *)&sess[i])

struct hits {
    int n;
    const mql_sub *subs[16];
};

static void collect(void *arg, const mql_sub *sub)
{
    struct hits *h = arg;
    if (h->n < 16)
        h->subs[h->n] = sub;
    h->n++;
}

static mql_topics *t;

static void setup(void)
{
    cr_assert_eq(mql_topics_alloc(&t), MQL_OK);
}

static void teardown(void)
{
    mql_topics_free(t);
}

static mql_sub *sub(const char *filter, int s, uint8_t qos)
{
    mql_sub tmpl;
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.session = S(s);
    tmpl.qos = qos;
    bool existed;
    mql_sub *r = mql_topics_subscribe(t, B(filter), &tmpl, &existed);
    cr_assert_not_null(r);
    return r;
}

static int matches(const char *topic)
{
    struct hits h = {0};
    mql_topics_match(t, B(topic), collect, NULL, &h);
    return h.n;
}

TestSuite(topic, .init = setup, .fini = teardown);

/* [MQTT-4.7.1-2] '#' matches the parent and any number of child levels */
Test(topic, hash_matches_parent_and_children)
{
    sub("sport/tennis/player1/#", 0, 0);
    cr_expect_eq(matches("sport/tennis/player1"), 1);
    cr_expect_eq(matches("sport/tennis/player1/ranking"), 1);
    cr_expect_eq(matches("sport/tennis/player1/score/wimbledon"), 1);
    cr_expect_eq(matches("sport/tennis/player2"), 0);
    cr_expect_eq(matches("sport/tennis"), 0);
}

/* [MQTT-4.7.1-3] '+' matches exactly one level, including an empty one */
Test(topic, plus_matches_one_level)
{
    sub("sport/tennis/+", 0, 0);
    cr_expect_eq(matches("sport/tennis/player1"), 1);
    cr_expect_eq(matches("sport/tennis/player1/ranking"), 0);
    cr_expect_eq(matches("sport/tennis"), 0);
    cr_expect_eq(matches("sport/tennis/"), 1);
}

Test(topic, plus_and_empty_levels)
{
    sub("+/+", 0, 0);
    sub("/+", 1, 0);
    cr_expect_eq(matches("/finance"), 2);
    cr_expect_eq(matches("a/b"), 1);
    cr_expect_eq(matches("a"), 0);
    cr_expect_eq(matches("a//b"), 0);
}

Test(topic, root_hash_matches_everything_but_dollar)
{
    sub("#", 0, 0);
    cr_expect_eq(matches("a"), 1);
    cr_expect_eq(matches("a/b/c"), 1);
    cr_expect_eq(matches("/"), 1);
    cr_expect_eq(matches("$SYS/broker/uptime"), 0); /* [MQTT-4.7.2-1] */
}

/* [MQTT-4.7.2-1] */
Test(topic, dollar_topics_need_literal_first_level)
{
    sub("+/monitor/Clients", 0, 0);
    sub("$SYS/#", 1, 0);
    sub("$SYS/monitor/+", 2, 0);
    cr_expect_eq(matches("$SYS/monitor/Clients"), 2);
    cr_expect_eq(matches("x/monitor/Clients"), 1);
}

Test(topic, exact_and_case_sensitive)
{
    sub("ACCOUNTS", 0, 0);
    cr_expect_eq(matches("ACCOUNTS"), 1);
    cr_expect_eq(matches("Accounts"), 0);
    cr_expect_eq(matches("ACCOUNTS/x"), 0);
}

/* [MQTT-3.8.4-3] a repeated subscription replaces, never duplicates */
Test(topic, resubscribe_replaces)
{
    mql_sub *a = sub("a/+", 0, 0);
    mql_sub tmpl;
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.session = S(0);
    tmpl.qos = 2;
    bool existed = false;
    mql_sub *b = mql_topics_subscribe(t, B("a/+"), &tmpl, &existed);
    cr_expect(existed);
    cr_expect_eq(a, b);
    cr_expect_eq(b->qos, 2);
    cr_expect_eq(matches("a/x"), 1);
    cr_expect_eq(mql_topics_sub_count(t), 1);
}

Test(topic, overlapping_subscriptions_report_each_filter)
{
    sub("a/#", 0, 0);
    sub("a/+", 0, 1);
    sub("a/b", 1, 2);
    cr_expect_eq(matches("a/b"), 3);
}

Test(topic, remove_prunes_and_stops_matching)
{
    mql_sub *a = sub("x/y/z", 0, 0);
    sub("x/#", 1, 0);
    mql_topics_remove(t, a);
    cr_expect_eq(matches("x/y/z"), 1);
    cr_expect_null(mql_topics_find(t, B("x/y/z"), S(0)));
    cr_expect_not_null(mql_topics_find(t, B("x/#"), S(1)));
    cr_expect_eq(mql_topics_sub_count(t), 1);
}

Test(topic, many_siblings)
{
    char f[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(f, sizeof(f), "dev/%d/temp", i);
        sub(f, i % 4, 0);
    }
    cr_expect_eq(matches("dev/999/temp"), 1);
    cr_expect_eq(matches("dev/1000/temp"), 0);
    cr_expect_eq(mql_topics_sub_count(t), 1000);
}

struct rhits {
    int n;
    char topics[16][32];
};

static void rcollect(void *arg, mql_msg *m)
{
    struct rhits *h = arg;
    if (h->n < 16)
        snprintf(h->topics[h->n], 32, "%.*s", (int)m->topic.len, m->topic.p);
    h->n++;
}

static void retain(const char *topic, const char *payload)
{
    mql_msg *m = mql_msg_new(B(topic), B(payload), 1, true, NULL, 0);
    cr_assert_not_null(m);
    cr_assert_eq(mql_topics_retain(t, B(topic), m), MQL_OK);
    mql_msg_unref(m);
}

static int retained(const char *filter)
{
    struct rhits h = {0};
    mql_topics_retained(t, B(filter), rcollect, &h);
    return h.n;
}

/* [MQTT-3.3.1-5] store, replace; [MQTT-3.3.1-10]/[MQTT-3.3.1-11] empty payload clears */
Test(topic, retained_set_replace_clear)
{
    retain("a/b", "1");
    retain("a/b", "2");
    cr_expect_eq(mql_topics_retained_count(t), 1);
    struct rhits h = {0};
    mql_topics_retained(t, B("a/b"), rcollect, &h);
    cr_assert_eq(h.n, 1);
    retain("a/b", "");
    cr_expect_eq(mql_topics_retained_count(t), 0);
    cr_expect_eq(retained("a/b"), 0);
    cr_expect_eq(retained("#"), 0);
}

Test(topic, retained_wildcards)
{
    retain("a", "x");
    retain("a/b", "x");
    retain("a/b/c", "x");
    retain("a/d", "x");
    retain("$SYS/x", "x");
    cr_expect_eq(retained("#"), 4);
    cr_expect_eq(retained("a/#"), 4);
    cr_expect_eq(retained("a/+"), 2);
    cr_expect_eq(retained("+/b/+"), 1);
    cr_expect_eq(retained("+"), 1);
    cr_expect_eq(retained("$SYS/#"), 1);
    cr_expect_eq(retained("+/x"), 0); /* [MQTT-4.7.2-1] */
}

Test(topic, retained_survives_subscription_removal)
{
    retain("k/v", "x");
    mql_sub *s = sub("k/v", 0, 1);
    mql_topics_remove(t, s);
    cr_expect_eq(retained("k/v"), 1);
}

/* ------------------------------------------------------------------------------------------ */
/* The pairwise matchers (no tree): mql_topic_matches, mql_topic_covers, mql_topic_intersects */

static bool M(const char *filter, const char *topic)
{
    return mql_topic_matches(B(filter), B(topic));
}

Test(matches, literal_levels_byte_for_byte)
{
    cr_expect(M("a/b", "a/b"));
    cr_expect(M("/", "/"));
    cr_expect_not(M("a/b", "a/c"));
    cr_expect_not(M("a/b", "A/b")); /* case-sensitive [MQTT-4.7.3-4] */
    cr_expect_not(M("a/b", "a/b/c"));
    cr_expect_not(M("a/b/c", "a/b"));
    cr_expect_not(M("ab", "a"));
    cr_expect_not(M("a", "ab"));
    cr_expect_not(M("a/b", "a/b/"));
    cr_expect_not(M("a", "/a"));
}

Test(matches, plus_is_exactly_one_level) /* [MQTT-4.7.1-3] */
{
    cr_expect(M("a/+", "a/b"));
    cr_expect(M("a/+", "a/")); /* an empty level is a level */
    cr_expect(M("+/+", "/x"));
    cr_expect(M("+", "x"));
    cr_expect(M("a/+/c", "a/b/c"));
    cr_expect_not(M("a/+", "a"));
    cr_expect_not(M("a/+", "a/b/c"));
    cr_expect_not(M("+", "a/b"));
    cr_expect_not(M("+", "/x"));
    cr_expect_not(M("a/+/c", "a/b/d"));
}

Test(matches, hash_is_parent_and_everything_below) /* [MQTT-4.7.1-2] */
{
    cr_expect(M("#", "a"));
    cr_expect(M("#", "a/b/c"));
    cr_expect(M("#", "/"));
    cr_expect(M("a/#", "a"));
    cr_expect(M("a/#", "a/b"));
    cr_expect(M("a/#", "a/b/c"));
    cr_expect(M("a/#", "a/"));
    cr_expect(M("+/#", "a/b"));
    cr_expect_not(M("a/#", "b"));
    cr_expect_not(M("a/#", "ab"));
    cr_expect_not(M("a/b/#", "a"));
}

Test(matches, dollar_topics_need_a_literal_first_level) /* [MQTT-4.7.2-1] */
{
    cr_expect_not(M("#", "$SYS/x"));
    cr_expect_not(M("+/x", "$SYS/x"));
    cr_expect_not(M("+", "$x"));
    cr_expect_not(M("+/#", "$SYS/x"));
    cr_expect(M("$SYS/#", "$SYS/broker/uptime"));
    cr_expect(M("$SYS/+", "$SYS/a"));
    cr_expect(M("$SYS", "$SYS"));
    cr_expect(M("a/+", "a/$b")); /* only the first level is special */
    cr_expect(M("#", "a/$b"));
}

Test(matches, covers)
{
    cr_expect(mql_topic_covers(B("a/#"), B("a/+/b")));
    cr_expect(mql_topic_covers(B("a/#"), B("a/#")));
    cr_expect(mql_topic_covers(B("a/#"), B("a")));
    cr_expect(mql_topic_covers(B("#"), B("+/x")));
    cr_expect(mql_topic_covers(B("+/#"), B("#")));
    cr_expect(mql_topic_covers(B("$SYS/#"), B("$SYS/broker/uptime")));
    cr_expect(mql_topic_covers(B("a/+"), B("a/b")));
    cr_expect_not(mql_topic_covers(B("a/+/b"), B("a/#")));
    cr_expect_not(mql_topic_covers(B("#"), B("$SYS/#")));
    cr_expect_not(mql_topic_covers(B("a/b"), B("a/+")));
    cr_expect_not(mql_topic_covers(B("a/+/#"), B("a/#"))); /* a/# also matches "a" */
    cr_expect_not(mql_topic_covers(B("a"), B("a/#")));
}

Test(matches, intersects)
{
    cr_expect(mql_topic_intersects(B("a/+"), B("+/b")));
    cr_expect(mql_topic_intersects(B("#"), B("a/b")));
    cr_expect(mql_topic_intersects(B("secret/#"), B("#")));
    cr_expect(mql_topic_intersects(B("a/#"), B("a")));
    cr_expect(mql_topic_intersects(B("$SYS/#"), B("$SYS/+")));
    cr_expect_not(mql_topic_intersects(B("#"), B("$SYS/x")));
    cr_expect_not(mql_topic_intersects(B("$SYS/x"), B("+/x")));
    cr_expect_not(mql_topic_intersects(B("a/b"), B("a/c")));
    cr_expect_not(mql_topic_intersects(B("a/+"), B("a/b/c")));
}

/* The level match alone (a bridge's pattern after its prefix): no '$' rule, the rest the
 * same as mql_topic_matches. */
Test(topic, matches_levels_has_no_dollar_rule)
{
    cr_assert_not(mql_topic_matches(B("#"), B("$x/y")));
    cr_assert(mql_topic_matches_levels(B("#"), B("$x/y")));
    cr_assert(mql_topic_matches_levels(B("+/y"), B("$x/y")));
    cr_assert(mql_topic_matches_levels(B("a/#"), B("a")));
    cr_assert(mql_topic_matches_levels(B("+"), B("")));
    cr_assert_not(mql_topic_matches_levels(B("a/+"), B("a")));
    cr_assert_not(mql_topic_matches_levels(B("a/b"), B("a/bc")));
}
