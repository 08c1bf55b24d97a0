/*
 * test_session.c - broker/session.c through session.h, single-threaded on a core of its own
 * (core_fixture.h: no network, no store): what mql_session_deliver does with a message
 * (sent within the in-flight window, queued beyond it, dropped or refused at
 * max_queued_messages / max_queued_bytes, QoS 0 offline), the window and the order in which
 * the queue is pumped into it, packet ids, inbound QoS 2 ids (inline set and bitmap), and a
 * resumed session re-sending its window with DUP.
 */
#include "core_fixture.h"

#include "broker/codec.h"

static mql_session *s;

static void setup(void)
{
    core_setup();
    s = mql_session_alloc((const uint8_t *)"dev-1", 5);
    cr_assert_not_null(s);
}

static void teardown(void)
{
    mql_session_detach(s);
    mql_session_free(&core, s);
    mql_topics_free(core.topics);
}

TestSuite(session, .init = setup, .fini = teardown);

/* Deliver a fresh message and drop the test's reference. */
static mql_delivery deliver(const char *topic, const char *payload, uint8_t qos)
{
    mql_msg *m = msg_of(topic, payload, qos, false);
    bool wait = false;
    mql_delivery d = mql_session_deliver(&core, s, m, qos, false, NULL, 0, NULL, &wait);
    mql_msg_unref(m);
    return d;
}

Test(session, qos0_is_sent_online_and_dropped_offline)
{
    cr_assert_eq(deliver("t", "offline", 0), MQL_DELIVERY_DROPPED);
    cr_assert_eq(s->queue.count, 0, "QoS 0 is not queued for an offline session");
    rec_sink r;
    attach(s, &r, 10, 2);
    cr_assert_eq(deliver("t", "online", 0), MQL_DELIVERY_SENT);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.p[0].qos, 0);
    cr_assert_eq(r.p[0].pid, 0);
    r.backlog = MQL_QOS0_BACKLOG_MAX + 1; /* the socket does not take it: QoS 0 is dropped */
    cr_assert_eq(deliver("t", "slow", 0), MQL_DELIVERY_DROPPED);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(core.stats.msgs_dropped, 1);
}

/* [MQTT-4.9.0-2] no more QoS > 0 PUBLISH than the window; [MQTT-3.3.4-9] the peer's
 * Receive Maximum bounds it too; the rest is queued, not dropped. */
Test(session, sent_within_the_window_queued_beyond_it)
{
    s->max_inflight = 3;
    rec_sink r;
    attach(s, &r, 2, 2); /* Receive Maximum 2 < max_inflight 3 */
    cr_assert_eq(deliver("t", "1", 1), MQL_DELIVERY_SENT);
    cr_assert_eq(deliver("t", "2", 2), MQL_DELIVERY_SENT);
    cr_assert_eq(deliver("t", "3", 1), MQL_DELIVERY_QUEUED);
    cr_assert_eq(s->inflight.count, 2);
    cr_assert_eq(s->queue.count, 1);
    cr_assert_eq(r.n, 2);
    /* [MQTT-4.3.2-2] [MQTT-4.3.3-2] a first send has DUP 0 and a packet id */
    cr_assert_eq(r.p[0].dup, false);
    cr_assert_neq(r.p[0].pid, 0);
    cr_assert_eq(r.p[1].qos, 2);
}

/* While anything is queued, a new message queues behind it even if the window has room:
 * order is kept [MQTT-4.6.0-6]. The pump fills the window in queue order. */
Test(session, pump_keeps_order_and_fills_the_window)
{
    s->expiry = 60;
    cr_assert_eq(deliver("t", "a", 1), MQL_DELIVERY_QUEUED); /* offline */
    cr_assert_eq(deliver("t", "b", 1), MQL_DELIVERY_QUEUED);
    cr_assert_eq(deliver("t", "c", 1), MQL_DELIVERY_QUEUED);
    rec_sink r;
    attach(s, &r, 2, 2);
    mql_session_resume(&core, s);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(s->inflight.head->msg->payload.p[0], 'a');
    cr_assert_eq(s->inflight.tail->msg->payload.p[0], 'b');
    cr_assert_eq(deliver("t", "d", 1), MQL_DELIVERY_QUEUED, "queued behind c");
    /* PUBACK of the first: the next queued one takes its place */
    out_msg *first = mql_session_inflight_find(s, r.p[0].pid);
    cr_assert_not_null(first);
    mql_session_inflight_done(&core, s, first);
    cr_assert_eq(r.n, 3);
    cr_assert_eq(s->inflight.tail->msg->payload.p[0], 'c');
    cr_assert_eq(s->queue.count, 1);
    cr_assert_eq(s->queue.head->msg->payload.p[0], 'd');
}

/* A session that outlives its connection refuses QoS 1/2 when its queue is full (0x97 to
 * MQTT 5 publishers); one that ends with its connection drops; QoS 0 is dropped. */
Test(session, queue_full_by_count_refuses_or_drops)
{
    s->max_queued_messages = 2;
    s->expiry = 60;
    cr_assert_eq(deliver("t", "1", 1), MQL_DELIVERY_QUEUED);
    cr_assert_eq(deliver("t", "2", 2), MQL_DELIVERY_QUEUED);
    cr_assert_eq(deliver("t", "3", 1), MQL_DELIVERY_REFUSED);
    cr_assert_eq(s->queue.count, 2);
    cr_assert_eq(core.stats.msgs_dropped, 1);
    s->expiry = 0;
    cr_assert_eq(deliver("t", "4", 1), MQL_DELIVERY_DROPPED);
    cr_assert_eq(s->queue.count, 2);
    cr_assert_eq(core.stats.msgs_dropped, 2);
}

Test(session, queue_full_by_bytes)
{
    s->max_queued_bytes = 10;
    s->expiry = 60;
    cr_assert_eq(deliver("t", "123456", 1), MQL_DELIVERY_QUEUED);
    cr_assert_eq(deliver("t", "7890", 1), MQL_DELIVERY_QUEUED); /* exactly 10 bytes */
    cr_assert_eq(s->queued_bytes, 10);
    cr_assert_eq(deliver("t", "x", 1), MQL_DELIVERY_REFUSED);
    cr_assert_eq(s->queue.count, 2);
}

/* The peer's Maximum QoS: QoS 2 goes out as QoS 1 [MQTT-3.2.2-11]. */
Test(session, qos2_is_downgraded_to_the_peers_maximum_qos)
{
    rec_sink r;
    attach(s, &r, 10, 1);
    cr_assert_eq(deliver("t", "x", 2), MQL_DELIVERY_SENT);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.p[0].qos, 1);
}

/* A PUBLISH over the peer's Maximum Packet Size counts as delivered [MQTT-3.1.2-25]. */
Test(session, too_large_for_the_peer_counts_as_delivered)
{
    rec_sink r;
    attach(s, &r, 10, 2);
    r.too_large = true;
    cr_assert_eq(deliver("t", "big", 1), MQL_DELIVERY_SENT);
    cr_assert_eq(s->inflight.count, 0);
    cr_assert_eq(s->queue.count, 0);
}

/* Packet ids are non-zero and unused among the in-flight messages [MQTT-2.2.1-3]. */
Test(session, packet_ids_skip_zero_and_ids_in_use)
{
    rec_sink r;
    attach(s, &r, 100, 2);
    cr_assert_eq(deliver("t", "a", 1), MQL_DELIVERY_SENT);
    cr_assert_eq(r.p[0].pid, 1);
    s->next_pid = 65535;
    cr_assert_eq(deliver("t", "b", 1), MQL_DELIVERY_SENT);
    cr_assert_eq(deliver("t", "c", 1), MQL_DELIVERY_SENT);
    cr_assert_eq(r.p[1].pid, 65535);
    cr_assert_eq(r.p[2].pid, 2, "0 is never used and 1 is still in flight");
}

/* Inbound QoS 2 ids: a few inline, then a bitmap, back to inline when empty. An id stays
 * until its PUBREL, so a repeated PUBLISH is not delivered again [MQTT-4.3.3-10]; once
 * released it is new [MQTT-4.3.3-12]. */
Test(session, qos2_ids_small_set_and_bitmap)
{
    for (uint16_t pid = 1; pid <= MQL_QOS2_SMALL; pid++)
        cr_assert_eq(mql_session_qos2_add(s, pid), MQL_OK);
    cr_assert_null(s->qos2_bits);
    cr_assert_eq(mql_session_qos2_add(s, 3), MQL_OK); /* already there: nothing changes */
    cr_assert_eq(s->n_qos2_in, MQL_QOS2_SMALL);
    cr_assert_eq(mql_session_qos2_add(s, 65535), MQL_OK);
    cr_assert_not_null(s->qos2_bits, "beyond MQL_QOS2_SMALL ids live in a bitmap");
    for (uint16_t pid = 1; pid <= MQL_QOS2_SMALL; pid++)
        cr_assert(mql_session_qos2_has(s, pid), "id %u kept when moving to the bitmap", pid);
    cr_assert(mql_session_qos2_has(s, 65535));
    cr_assert_not(mql_session_qos2_has(s, 100));
    cr_assert_not(mql_session_qos2_remove(s, 100));
    for (uint16_t pid = 1; pid <= MQL_QOS2_SMALL; pid++)
        cr_assert(mql_session_qos2_remove(s, pid));
    cr_assert(mql_session_qos2_remove(s, 65535));
    cr_assert_eq(s->n_qos2_in, 0);
    cr_assert_null(s->qos2_bits, "an empty set frees the bitmap");
    cr_assert_not(mql_session_qos2_has(s, 65535));
}

static void count_cb(void *arg, uint16_t pid)
{
    uint32_t *sum = arg;
    *sum += pid;
}

Test(session, qos2_each_visits_every_id)
{
    uint32_t want = 0, sum = 0;
    for (uint16_t pid = 100; pid < 120; pid++) {
        cr_assert_eq(mql_session_qos2_add(s, pid), MQL_OK);
        want += pid;
    }
    mql_session_qos2_each(s, count_cb, &sum);
    cr_assert_eq(sum, want);
}

/* Reconnected: the window goes out again in order, PUBLISH with DUP 1 and the same packet
 * id, PUBREL for a message whose PUBREC came [MQTT-4.4.0-1]. */
Test(session, resume_resends_the_window_with_dup)
{
    rec_sink r1;
    attach(s, &r1, 10, 2);
    cr_assert_eq(deliver("t", "a", 1), MQL_DELIVERY_SENT);
    cr_assert_eq(deliver("t", "b", 2), MQL_DELIVERY_SENT);
    out_msg *b = mql_session_inflight_find(s, r1.p[1].pid);
    cr_assert_not_null(b);
    b->state = OUT_PUBREL_SENT; /* PUBREC received */
    mql_session_detach(s);
    rec_sink r2;
    attach(s, &r2, 10, 2);
    mql_session_resume(&core, s);
    cr_assert_eq(r2.n, 2);
    cr_assert_eq(r2.p[0].type, MQL_PUBLISH);
    cr_assert_eq(r2.p[0].dup, true);
    cr_assert_eq(r2.p[0].pid, r1.p[0].pid);
    cr_assert_eq(r2.p[1].type, MQL_PUBREL);
    cr_assert_eq(r2.p[1].pid, r1.p[1].pid);
}

/* An expired message is not sent from the queue [MQTT-3.3.2-5]. */
Test(session, expired_queued_message_is_not_sent)
{
    s->expiry = 60;
    mql_msg *m = msg_of("t", "old", 1, false);
    m->expiry_at = 1; /* long past */
    bool wait = false;
    cr_assert_eq(mql_session_deliver(&core, s, m, 1, false, NULL, 0, NULL, &wait),
                 MQL_DELIVERY_QUEUED);
    mql_msg_unref(m);
    rec_sink r;
    attach(s, &r, 10, 2);
    mql_session_resume(&core, s);
    cr_assert_eq(r.n, 0);
    cr_assert_eq(s->queue.count, 0);
}

/* A stored session takes no new QoS 1/2 message while the store is full; its rows are
 * written when it first becomes stored. */
Test(session, stored_session_and_a_full_store)
{
    core.store = fake_store_handle();
    s->expiry = 60;
    cr_assert_eq(deliver("t", "a", 1), MQL_DELIVERY_QUEUED);
    cr_assert_eq(fake_store_calls.out_put, 0, "not stored yet: nothing mirrored");
    (void)mql_session_mirror(&core, s);
    cr_assert(s->stored);
    cr_assert_eq(fake_store_calls.session_put, 1);
    cr_assert_eq(fake_store_calls.out_put, 1);
    core.store_full = true;
    cr_assert_eq(deliver("t", "b", 1), MQL_DELIVERY_NO_STORE);
    cr_assert_eq(deliver("t", "c", 0), MQL_DELIVERY_DROPPED, "QoS 0 offline: dropped anyway");
    core.store = NULL;
}
