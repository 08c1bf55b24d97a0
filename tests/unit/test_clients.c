/*
 * test_clients.c - broker/clients.c through clients.h, single-threaded on a core of its own
 * (core_fixture.h: no network, no store): the ClientID table (find / new, one entry per
 * ClientID, the session limits a new session gets), ending a session (its will published,
 * its subscriptions gone, shared messages it owed given to another member) and the expiry
 * scan (sessions past their Session Expiry Interval end, the others stay; delayed wills).
 */
#include "core_fixture.h"

#include "broker/clients.h"
#include "broker/router.h"

static void setup(void)
{
    core_setup();
    core.max_inflight = 20;
    core.max_queued_messages = 100;
    core.max_queued_bytes = 4096;
}

static void teardown(void)
{
    /* detach all first: the tests' sinks are gone, and an ending session's will would
     * otherwise reach them */
    for (mql_session *s = core.sessions; s != NULL; s = s->next)
        mql_session_detach(s);
    while (core.sessions != NULL)
        mql_clients_end(&core, core.sessions);
    mql_topics_free(core.topics);
    free(core.slots);
    free(core.route);
}

TestSuite(clients, .init = setup, .fini = teardown);

static mql_session *new_client(const char *id)
{
    cr_assert_null(mql_clients_find(&core, (const uint8_t *)id, (uint32_t)strlen(id)));
    mql_session *s = mql_clients_new(&core, (const uint8_t *)id, (uint32_t)strlen(id));
    cr_assert_not_null(s);
    return s;
}

static mql_session *find(const char *id)
{
    return mql_clients_find(&core, (const uint8_t *)id, (uint32_t)strlen(id));
}

Test(clients, find_and_new)
{
    cr_assert_null(find("plc-7"));
    mql_session *s = new_client("plc-7");
    cr_assert_eq(find("plc-7"), s);
    cr_assert_str_eq(s->client_id, "plc-7");
    cr_assert_null(find("plc-8"));
    cr_assert_null(find("plc-"), "a prefix is another ClientID");
    /* the broker's limits */
    cr_assert_eq(s->max_inflight, 20);
    cr_assert_eq(s->max_queued_messages, 100);
    cr_assert_eq(s->max_queued_bytes, 4096);
    cr_assert_eq(core.nsessions, 1);
}

/* One entry per ClientID, however many (the table grows), each found again: the ClientID
 * identifies the session state [MQTT-3.1.3-2]. */
Test(clients, one_entry_per_client_id)
{
    char id[32];
    mql_session *first[500];
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof(id), "dev-%d", i);
        first[i] = new_client(id);
    }
    cr_assert_eq(core.nsessions, 500);
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof(id), "dev-%d", i);
        cr_assert_eq(find(id), first[i], "%s", id);
    }
    mql_clients_end(&core, first[42]);
    cr_assert_null(find("dev-42"));
    cr_assert_eq(find("dev-43"), first[43]);
    cr_assert_eq(core.nsessions, 499);
}

/* Ending a session publishes the will it still holds (the session ends before the Will
 * Delay Interval [MQTT-3.1.3-9]) and removes its subscriptions. */
Test(clients, end_publishes_the_will_and_drops_subscriptions)
{
    mql_session *watcher = new_client("watcher");
    rec_sink r;
    attach(watcher, &r, 10, 2);
    (void)subscribe(watcher, "will/#", 1, 0, false, false);
    mql_session *s = new_client("dying");
    (void)subscribe(s, "cmd/#", 1, 0, false, false);
    s->will = msg_of("will/dying", "gone", 1, false);
    s->will_at = UINT64_MAX;
    cr_assert_eq(mql_topics_sub_count(core.topics), 2);
    mql_clients_end(&core, s);
    cr_assert_null(find("dying"));
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.p[0].topic, "will/dying");
    cr_assert_eq(mql_topics_sub_count(core.topics), 1);
}

/* A session that stored no will publishes nothing when it ends. */
Test(clients, end_without_will_publishes_nothing)
{
    mql_session *watcher = new_client("watcher");
    rec_sink r;
    attach(watcher, &r, 10, 2);
    (void)subscribe(watcher, "#", 1, 0, false, false);
    mql_clients_end(&core, new_client("quiet"));
    cr_assert_eq(r.n, 0);
}

/* The expiry scan ends sessions whose Session Expiry Interval has passed since their
 * connection closed, and keeps the rest: the state is kept while the interval runs
 * [MQTT-3.1.2-23]; 0xFFFFFFFF never expires; attached sessions are not looked at. */
Test(clients, expiry_scan_drops_expired_sessions_and_keeps_the_rest)
{
    mql_session *a = new_client("a"), *b = new_client("b"), *n = new_client("never");
    mql_session *on = new_client("online");
    a->expiry = 10;
    a->disconnected_at = 1000;
    b->expiry = 100;
    b->disconnected_at = 1000;
    n->expiry = MQL_SESSION_NEVER;
    n->disconnected_at = 1000;
    rec_sink r;
    attach(on, &r, 10, 2);
    on->expiry = 1;
    on->disconnected_at = 0;
    mql_clients_expire_scan(&core, 1000 + 9999);
    cr_assert_eq(find("a"), a, "one millisecond before its expiry: kept");
    mql_clients_expire_scan(&core, 1000 + 10000);
    cr_assert_null(find("a"), "its interval has passed: ended");
    cr_assert_eq(find("b"), b);
    cr_assert_eq(find("never"), n);
    cr_assert_eq(find("online"), on);
    mql_clients_expire_scan(&core, 1000 + 100000);
    cr_assert_null(find("b"));
    cr_assert_eq(find("never"), n);
    cr_assert_eq(find("online"), on);
    cr_assert_eq(core.nsessions, 2);
}

/* A delayed will goes out when its delay has passed, the session staying
 * [MQTT-3.1.3-9]; or when the session expires first. */
Test(clients, expiry_scan_publishes_delayed_wills)
{
    mql_session *watcher = new_client("watcher");
    rec_sink r;
    attach(watcher, &r, 10, 2);
    (void)subscribe(watcher, "will/#", 1, 0, false, false);
    mql_session *s = new_client("late");
    s->expiry = 3600;
    s->disconnected_at = 1000;
    s->will = msg_of("will/late", "gone", 1, false);
    s->will_at = 5000;
    mql_clients_expire_scan(&core, 4999);
    cr_assert_eq(r.n, 0);
    mql_clients_expire_scan(&core, 5000);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(find("late"), s, "the session outlives its will");
    cr_assert_null(s->will);
    mql_session *e = new_client("early");
    e->expiry = 1;
    e->disconnected_at = 1000;
    e->will = msg_of("will/early", "gone", 1, false);
    e->will_at = 1000000;
    mql_clients_expire_scan(&core, 2000);
    cr_assert_null(find("early"));
    cr_assert_eq(r.n, 2);
    cr_assert_str_eq(r.p[1].topic, "will/early");
}

/* Messages a session got through a shared subscription and still owed go to another member
 * of the group when it ends [MQTT-4.8.2-5]. */
Test(clients, end_gives_owed_shared_messages_to_another_member)
{
    mql_session *gone = new_client("gone");
    mql_session *stay = new_client("stay");
    (void)subscribe(gone, "$share/g/t", 1, 0, false, false);
    gone->expiry = 60; /* offline, outlives its connection: gets queued messages */
    rec_sink r;
    attach(stay, &r, 10, 2);
    (void)subscribe(stay, "$share/g/t", 1, 0, false, false);
    mql_session_detach(stay); /* both offline: the queued member is picked */
    stay->expiry = 60;
    mql_msg *m = msg_of("t", "x", 1, false);
    (void)mql_router_route(&core, m, NULL);
    mql_msg_unref(m);
    mql_session *holder = gone->queue.count == 1 ? gone : stay;
    mql_session *other = holder == gone ? stay : gone;
    cr_assert_eq(holder->queue.count, 1);
    cr_assert_eq(other->queue.count, 0);
    mql_clients_end(&core, holder);
    cr_assert_eq(other->queue.count, 1, "the owed message moved to the other member");
}
