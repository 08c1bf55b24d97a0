/*
 * router.c - the router: one PUBLISH in -> the sessions it goes to.
 *
 * It asks the topic tree for every matching subscription, merges several matching
 * subscriptions of one session into one delivery at the highest granted QoS with all their
 * Subscription Identifiers [MQTT-3.3.4-2] [MQTT-3.3.4-3], honours No Local and Retain As
 * Published, picks one member of each shared group, and hands each delivery to the session
 * (which sends it, queues it or drops it by its own rules and says which). It also keeps
 * retained messages (set and clear), publishes wills and the broker's $SYS values.
 *
 * Locking: every function here runs under broker->lock; none takes a lock or blocks.
 * Performance assumption: this is the hot path. One route allocates nothing once the
 * broker's scratch array (core->route) has grown to the largest fan-out seen; a session
 * matched by several subscriptions is merged in O(1) by its route stamp.
 */
#include <stdlib.h>
#include <string.h>

#include "router.h"

#include "core.h"
#include "mirror.h"
#include "platform/clock.h"
#include "platform/log.h"

#define MQL_MAX_ROUTE_IDS 8 /* subscription identifiers carried per delivered message */

/* One delivery of the message being routed (core->route, the routing scratch array). */
struct route_entry {
    mql_session *s;
    mql_share *share;
    uint8_t qos;
    bool retain;
    uint8_t n_ids;
    uint32_t ids[MQL_MAX_ROUTE_IDS];
};

struct route_ctx {
    mql_core *core;
    const mql_msg *msg;
    const mql_session *from;
    uint64_t seq;
    uint32_t n;
    uint32_t matched; /* matching subscriptions, also those No Local skips */
    bool nomem;
};

/* Room for one more delivery in the broker's routing scratch array. */
static bool route_room(mql_core *core, struct route_ctx *rc)
{
    if (rc->n < core->route_cap)
        return true;
    uint32_t cap = core->route_cap ? core->route_cap * 2 : 64;
    struct route_entry *p = realloc(core->route, cap * sizeof(*p));
    if (p == NULL) {
        rc->nomem = true;
        return false;
    }
    core->route = p;
    core->route_cap = cap;
    return true;
}

static void route_cb(void *arg, const mql_sub *sub)
{
    struct route_ctx *rc = arg;
    mql_core *core = rc->core;
    mql_session *s = sub->session;
    rc->matched++;
    if (sub->no_local && s == rc->from)
        return;                                                      /* [MQTT-3.8.3-3] */
    uint8_t qos = sub->qos < rc->msg->qos ? sub->qos : rc->msg->qos; /* [MQTT-3.8.4-8] */
    /* [MQTT-3.3.1-12] [MQTT-3.3.1-13]; 3.1.1 forwards with retain 0 [v3.1.1 MQTT-3.3.1-9] */
    bool retain = sub->retain_as_published && rc->msg->retain;
    struct route_entry *e;
    if (s->route_stamp == rc->seq) {
        e = &core->route[s->route_idx];
        if (qos > e->qos)
            e->qos = qos;
        e->retain = e->retain || retain;
    } else {
        if (!route_room(core, rc))
            return;
        s->route_stamp = rc->seq;
        s->route_idx = rc->n;
        e = &core->route[rc->n++];
        e->s = s;
        e->share = NULL;
        e->qos = qos;
        e->retain = retain;
        e->n_ids = 0;
    }
    if (sub->sub_id != 0 && e->n_ids < MQL_MAX_ROUTE_IDS)
        e->ids[e->n_ids++] = sub->sub_id;
}

/* Choose the member of a share group that gets the next message: round robin over the
 * members, preferring a connected one with room in its window, then any connected one,
 * then one whose session outlives its connection (it is queued there). NULL if none. */
static mql_sub *share_pick(mql_core *core, mql_share *g, uint8_t qos)
{
    if (g->nmembers == 0)
        return NULL;
    uint32_t start = g->rr++ % g->nmembers;
    mql_sub *best = NULL;
    int best_rank = 0;
    mql_sub *m = g->members;
    for (uint32_t i = 0; i < start; i++)
        m = m->next;
    for (uint32_t i = 0; i < g->nmembers; i++) {
        const mql_session *s = m->session;
        uint32_t w = core->max_inflight ? core->max_inflight : 65535u;
        int rank = 0;
        if (mql_session_online(s) && (qos == 0 || s->inflight.count < w))
            rank = 3;
        else if (mql_session_online(s))
            rank = 2;
        else if (s->expiry != 0)
            rank = 1;
        if (rank > best_rank) {
            best = m;
            best_rank = rank;
            if (rank == 3)
                break;
        }
        m = m->next ? m->next : g->members;
    }
    return best;
}

mql_delivery mql_router_deliver(mql_core *core, mql_session *s, mql_msg *msg, uint8_t qos,
                                bool retain, const uint32_t *ids, uint8_t n_ids, mql_share *share,
                                bool *wait)
{
    mql_delivery d = mql_session_deliver(core, s, msg, qos, retain, ids, n_ids, share, wait);
    if (d == MQL_DELIVERY_NO_STORE)
        mql_router_store_refused(core, s->client_id);
    return d;
}

bool mql_router_share_deliver(mql_core *core, mql_share *g, mql_msg *msg, uint8_t qos, bool retain)
{
    mql_sub *m = share_pick(core, g, qos);
    if (m == NULL)
        return false;
    uint8_t q = m->qos < qos ? m->qos : qos; /* [MQTT-4.8.2-3] */
    uint32_t id = m->sub_id;
    bool wait = false; /* nobody acknowledges a redelivery */
    (void)mql_router_deliver(core, m->session, msg, q, retain, &id, id ? 1 : 0, g, &wait);
    return true;
}

static void share_cb(void *arg, mql_share *g)
{
    struct route_ctx *rc = arg;
    mql_core *core = rc->core;
    rc->matched += g->nmembers != 0;
    mql_sub *m = share_pick(core, g, rc->msg->qos);
    if (m == NULL)
        return;
    if (!route_room(core, rc))
        return;
    /* a separate delivery: shared and non-shared subscriptions are not merged */
    struct route_entry *e = &core->route[rc->n++];
    e->s = m->session;
    e->share = g;
    e->qos = m->qos < rc->msg->qos ? m->qos : rc->msg->qos;
    e->retain = m->retain_as_published && rc->msg->retain;
    e->n_ids = 0;
    if (m->sub_id != 0)
        e->ids[e->n_ids++] = m->sub_id;
}

mql_route_result mql_router_route(mql_core *core, mql_msg *msg, const mql_session *from)
{
    struct route_ctx rc = {.core = core, .msg = msg, .from = from, .seq = ++core->route_seq};
    mql_topics_match(core->topics, msg->topic, route_cb, share_cb, &rc);
    if (rc.nomem) {
        mql_error("broker.nomem", "out of memory routing a message to \"%.*s\"",
                  (int)msg->topic.len, msg->topic.p);
    }
    bool refused = false, wait = false;
    for (uint32_t i = 0; i < rc.n; i++) {
        struct route_entry *e = &core->route[i];
        mql_delivery d = mql_router_deliver(core, e->s, msg, e->qos, e->retain, e->ids, e->n_ids,
                                            e->share, &wait);
        refused = refused || d == MQL_DELIVERY_REFUSED || d == MQL_DELIVERY_NO_STORE;
    }
    return (mql_route_result){.matched = rc.matched, .refused = refused, .wait = wait};
}

void mql_router_publish_will(mql_core *core, mql_msg *will)
{
    mql_debug("broker.will", "publishing will message to \"%.*s\"", (int)will->topic.len,
              will->topic.p);
    if (will->retain) {
        if (mql_topics_retain(core->topics, will->topic, will) != MQL_OK)
            mql_error("broker.nomem", "out of memory storing a retained will message");
        else
            (void)mql_mirror_retain(core, will->topic, will);
    }
    (void)mql_router_route(core, will, NULL);
}

mql_route_result mql_router_publish(mql_core *core, mql_msg *msg, const mql_session *from,
                                    const char *client_id)
{
    bool retain_refused = false, retain_wait = false;
    if (msg->retain && msg->payload.len > 0 && core->store != NULL && core->store_full) {
        /* it could not be kept in the store: delivered, but not retained [MQTT-3.3.1-5]
         * (a Server MAY refuse it; MQTT 5 QoS 1/2 publishers hear 0x97) */
        retain_refused = true;
        mql_router_store_refused(core, client_id);
    } else if (msg->retain) {
        /* [MQTT-3.3.1-5] store, [MQTT-3.3.1-6]/[MQTT-3.3.1-7] an empty payload clears */
        if (mql_topics_retain(core->topics, msg->topic, msg) != MQL_OK)
            mql_error("broker.nomem", "out of memory storing a retained message");
        else
            retain_wait = mql_mirror_retain(core, msg->topic, msg);
    }
    mql_route_result r = mql_router_route(core, msg, from);
    r.refused = r.refused || retain_refused;
    r.wait = r.wait || retain_wait;
    return r;
}

void mql_router_store_refused(mql_core *core, const char *client_id)
{
    core->stats.msgs_dropped++;
    if (core->store_full_logged)
        return;
    core->store_full_logged = true;
    mql_warning("store.full",
                "%s: new QoS 1/2 messages for persistent sessions and new retained messages "
                "are refused (MQTT 5 publishers get 0x97) until it %s (first: client \"%s\")",
                core->store_overloaded ? "the store cannot commit and its backlog is at its limit"
                                       : "the store reached store_max_bytes",
                core->store_overloaded ? "commits again" : "drains", client_id);
}
