/*
 * router.h - a PUBLISH in -> the sessions it goes to: matching subscriptions, the shared
 * group pick, retained set/clear, wills and the broker's own $SYS values.
 *
 * Locking: every function here is called with the core lock (broker->lock) held.
 */
#ifndef MQL_ROUTER_H
#define MQL_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "msg.h"
#include "session.h"
#include "topic.h"

struct mql_core;

/* What happened to one routed message. */
typedef struct mql_route_result {
    uint32_t matched; /* matching subscriptions, counting those No Local kept from `from` */
    bool refused;     /* a delivery (or the retained copy) was refused for quota: MQTT 5
                         QoS 1/2 publishers hear 0x97 Quota exceeded */
    bool wait;        /* store operations were queued that an acknowledgement of the
                         publish must wait for (mirror.h) */
} mql_route_result;

/* mql_router_deliver: mql_session_deliver (OUT: *wait likewise), counting and logging a
 * refusal by a full store (mql_router_store_refused). Returns the session's outcome. */
mql_delivery mql_router_deliver(struct mql_core *core, mql_session *s, mql_msg *msg, uint8_t qos,
                                bool retain, const uint32_t *ids, uint8_t n_ids, mql_share *share,
                                bool *wait);
/* mql_router_route: hand msg to every session with a matching subscription (one member of
 * each shared group). msg stays the caller's; sessions that keep it take references. */
mql_route_result mql_router_route(struct mql_core *core, mql_msg *msg, const mql_session *from);
/* mql_router_publish: a client's PUBLISH: keep or clear it as the retained message of its
 * topic when its retain flag is set (refused while the store is full), then route it.
 * client_id names the publisher in the store-full message. */
mql_route_result mql_router_publish(struct mql_core *core, mql_msg *msg, const mql_session *from,
                                    const char *client_id);
/* mql_router_share_deliver: give msg to the member of group g picked now. False when the
 * group has no member that can take it. */
bool mql_router_share_deliver(struct mql_core *core, mql_share *g, mql_msg *msg, uint8_t qos,
                              bool retain);
/* mql_router_publish_will: publish a will message (retained first if its flag says so). The
 * caller keeps its reference. */
void mql_router_publish_will(struct mql_core *core, mql_msg *will);
/* mql_router_store_refused: the full store (core->store_full) refused something for client_id:
 * counted as dropped, logged once per episode. */
void mql_router_store_refused(struct mql_core *core, const char *client_id);

#endif
