/*
 * clients.c - the ClientID table above the session and the router: lookup (a hash table
 * by ClientID), new sessions with the broker's limits, how a session ends (its will, the
 * shared-subscription messages it still owed) and when (session expiry, delayed wills).
 *
 * Locking: every function here runs under broker->lock and takes no lock itself.
 * Performance assumption: lookups are O(1) (the table doubles when it is as full as it
 * has slots); the expiry scan runs every tick over all sessions but looks at a bounded
 * number of queued messages per pass (EXPIRE_BUDGET).
 */
#include <stdlib.h>
#include <string.h>

#include "clients.h"

#include "core.h"
#include "router.h"
#include "platform/log.h"

#define EXPIRE_BUDGET 4096 /* queued messages looked at per scan: bounded work per tick */

static uint32_t hash_id(const uint8_t *p, uint32_t len)
{
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

mql_session *mql_clients_find(mql_core *core, const uint8_t *id, uint32_t len)
{
    if (core->nslots == 0)
        return NULL;
    uint32_t h = hash_id(id, len);
    for (mql_session *s = core->slots[h & (core->nslots - 1)]; s != NULL; s = s->hnext)
        if (s->hval == h && s->client_id_len == len && memcmp(s->client_id, id, len) == 0)
            return s;
    return NULL;
}

static bool table_grow(mql_core *core)
{
    uint32_t ns = core->nslots ? core->nslots * 2 : 64;
    mql_session **slots = calloc(ns, sizeof(*slots));
    if (slots == NULL)
        return false;
    for (uint32_t i = 0; i < core->nslots; i++) {
        mql_session *s = core->slots[i];
        while (s != NULL) {
            mql_session *next = s->hnext;
            s->hnext = slots[s->hval & (ns - 1)];
            slots[s->hval & (ns - 1)] = s;
            s = next;
        }
    }
    free(core->slots);
    core->slots = slots;
    core->nslots = ns;
    return true;
}

mql_session *mql_clients_new(mql_core *core, const uint8_t *id, uint32_t len)
{
    if (core->nsessions >= core->nslots && !table_grow(core))
        return NULL;
    mql_session *s = mql_session_alloc(id, len);
    if (s == NULL)
        return NULL;
    s->hval = hash_id(id, len);
    s->max_inflight = core->max_inflight;
    s->max_queued_messages = core->max_queued_messages;
    s->max_queued_bytes = core->max_queued_bytes;
    s->hnext = core->slots[s->hval & (core->nslots - 1)];
    core->slots[s->hval & (core->nslots - 1)] = s;
    s->next = core->sessions;
    if (core->sessions)
        core->sessions->prev = s;
    core->sessions = s;
    core->nsessions++;
    return s;
}

/* Take s out of the table (hash chain and list of all sessions). */
static void table_remove(mql_core *core, mql_session *s)
{
    mql_session **pp = &core->slots[s->hval & (core->nslots - 1)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev)
        s->prev->next = s->next;
    else
        core->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    core->nsessions--;
}

/* The session ends with messages it got through shared subscriptions still undelivered:
 * give queued ones and unacknowledged QoS 1 ones to another member of the group. A QoS 2
 * message already sent is never given to anyone else [MQTT-4.8.2-5]. */
static void share_redeliver(mql_core *core, const out_list *l, bool sent)
{
    for (const out_msg *o = l->head; o != NULL; o = o->next)
        if (o->share != NULL && o->share->nmembers > 0 && (!sent || o->qos == 1))
            (void)mql_router_share_deliver(core, o->share, o->msg, o->qos, false);
}

void mql_clients_end(mql_core *core, mql_session *s)
{
    mql_msg *will = mql_session_take_will(s);
    if (will != NULL) {
        /* the session ends before the will delay: publish now [MQTT-3.1.3-9] */
        mql_router_publish_will(core, will);
        mql_msg_unref(will);
    }
    mql_session_unsubscribe_all(core, s); /* first: it is no member of its groups any more */
    share_redeliver(core, &s->inflight, true);
    share_redeliver(core, &s->queue, false);
    table_remove(core, s);
    mql_session_free(core, s);
}

void mql_clients_expire_scan(mql_core *core, uint64_t now)
{
    uint32_t budget = EXPIRE_BUDGET;
    mql_session *s = core->sessions;
    while (s != NULL) {
        mql_session *next = s->next;
        if (s->sink == NULL) {
            mql_session_purge_expired(core, s, now, &budget);
            if (s->will != NULL && now >= s->will_at) {
                mql_msg *will = mql_session_take_will(s);
                mql_router_publish_will(core, will); /* Will Delay Interval passed */
                mql_msg_unref(will);
            }
            if (s->expiry != MQL_SESSION_NEVER &&
                now >= s->disconnected_at + (uint64_t)s->expiry * 1000u) {
                mql_info("session.expired", "client \"%s\": session expired after %u s",
                         s->client_id, s->expiry);
                mql_clients_end(core, s);
            }
        }
        s = next;
    }
}
