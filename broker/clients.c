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

#include "internal.h"
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

mql_session *mql_clients_find(mql_broker *b, const uint8_t *id, uint32_t len)
{
    if (b->nslots == 0)
        return NULL;
    uint32_t h = hash_id(id, len);
    for (mql_session *s = b->slots[h & (b->nslots - 1)]; s != NULL; s = s->hnext)
        if (s->hval == h && s->client_id_len == len && memcmp(s->client_id, id, len) == 0)
            return s;
    return NULL;
}

static bool table_grow(mql_broker *b)
{
    uint32_t ns = b->nslots ? b->nslots * 2 : 64;
    mql_session **slots = calloc(ns, sizeof(*slots));
    if (slots == NULL)
        return false;
    for (uint32_t i = 0; i < b->nslots; i++) {
        mql_session *s = b->slots[i];
        while (s != NULL) {
            mql_session *next = s->hnext;
            s->hnext = slots[s->hval & (ns - 1)];
            slots[s->hval & (ns - 1)] = s;
            s = next;
        }
    }
    free(b->slots);
    b->slots = slots;
    b->nslots = ns;
    return true;
}

mql_session *mql_clients_new(mql_broker *b, const uint8_t *id, uint32_t len)
{
    if (b->nsessions >= b->nslots && !table_grow(b))
        return NULL;
    mql_session *s = mql_session_alloc(id, len);
    if (s == NULL)
        return NULL;
    s->hval = hash_id(id, len);
    s->max_inflight = b->cfg.max_inflight_messages;
    s->max_queued_messages = b->cfg.max_queued_messages;
    s->max_queued_bytes = b->cfg.max_queued_bytes;
    s->hnext = b->slots[s->hval & (b->nslots - 1)];
    b->slots[s->hval & (b->nslots - 1)] = s;
    s->next = b->sessions;
    if (b->sessions)
        b->sessions->prev = s;
    b->sessions = s;
    b->nsessions++;
    return s;
}

/* Take s out of the table (hash chain and list of all sessions). */
static void table_remove(mql_broker *b, mql_session *s)
{
    mql_session **pp = &b->slots[s->hval & (b->nslots - 1)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev)
        s->prev->next = s->next;
    else
        b->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    b->nsessions--;
}

/* The session ends with messages it got through shared subscriptions still undelivered:
 * give queued ones and unacknowledged QoS 1 ones to another member of the group. A QoS 2
 * message already sent is never given to anyone else [MQTT-4.8.2-5]. */
static void share_redeliver(mql_broker *b, const out_list *l, bool sent)
{
    for (const out_msg *o = l->head; o != NULL; o = o->next)
        if (o->share != NULL && o->share->nmembers > 0 && (!sent || o->qos == 1))
            (void)mql_router_share_deliver(b, o->share, o->msg, o->qos, false);
}

void mql_clients_end(mql_broker *b, mql_session *s)
{
    mql_msg *will = mql_session_take_will(s);
    if (will != NULL) {
        /* the session ends before the will delay: publish now [MQTT-3.1.3-9] */
        mql_router_publish_will(b, will);
        mql_msg_unref(will);
    }
    mql_session_unsubscribe_all(b, s); /* first: it is no member of its groups any more */
    share_redeliver(b, &s->inflight, true);
    share_redeliver(b, &s->queue, false);
    table_remove(b, s);
    mql_session_free(b, s);
}

void mql_clients_expire_scan(mql_broker *b, uint64_t now)
{
    uint32_t budget = EXPIRE_BUDGET;
    mql_session *s = b->sessions;
    while (s != NULL) {
        mql_session *next = s->next;
        if (s->sink == NULL) {
            mql_session_purge_expired(b, s, now, &budget);
            if (s->will != NULL && now >= s->will_at) {
                mql_msg *will = mql_session_take_will(s);
                mql_router_publish_will(b, will); /* Will Delay Interval passed */
                mql_msg_unref(will);
            }
            if (s->expiry != MQL_SESSION_NEVER &&
                now >= s->disconnected_at + (uint64_t)s->expiry * 1000u) {
                mql_info("session.expired", "client \"%s\": session expired after %u s",
                         s->client_id, s->expiry);
                mql_clients_end(b, s);
            }
        }
        s = next;
    }
}
