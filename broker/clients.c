/*
 * clients.c - the ClientID table's lifecycle rules above the session and the router: how a
 * session ends (its will, the shared-subscription messages it still owed) and when (session
 * expiry, delayed wills).
 *
 * Locking: every function here runs under broker->lock and takes no lock itself.
 * Performance assumption: the expiry scan runs every tick over all sessions but looks at a
 * bounded number of queued messages per pass (EXPIRE_BUDGET).
 */
#include "clients.h"

#include "internal.h"
#include "router.h"
#include "platform/log.h"

#define EXPIRE_BUDGET 4096 /* queued messages looked at per scan: bounded work per tick */

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
    mql_session_end(b, s);
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
