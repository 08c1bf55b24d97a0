/*
 * core.h - the state the core modules from mirror up to clients share: the topic tree, the
 * read ACL, the counters, the store mirror's state, the session limits, the ClientID table
 * and the routing scratch. The broker embeds one (broker.c) and hands its address to
 * session, router, clients and mirror, which need nothing else of it; a unit test makes
 * one of its own (zeroed, with a topic tree) and runs them single-threaded.
 *
 * Locking: every field is read and written under the core lock (owned by broker.c).
 */
#ifndef MQL_CORE_H
#define MQL_CORE_H

#include <stdbool.h>
#include <stdint.h>

#include "auth_acl.h"
#include "stats.h"
#include "topic.h"

struct mql_session;
struct mql_store;
struct route_entry;

/* mql_core: see above. Zero-initialised it is a core without store, ACL or limits (0 means
 * no limit); topics must be set before use. */
typedef struct mql_core {
    mql_topics *topics;
    mql_acl *acl; /* read ACL checked at delivery, or NULL (replaced on SIGHUP) */
    mql_stats stats;
    /* the store mirror (mirror.h) */
    struct mql_store *store; /* NULL without persistence (or after it closed) */
    bool store_wait;         /* acks wait for commits (store_sync is not off) */
    uint64_t next_msg_id;
    bool store_full;        /* store_max_bytes reached, or the store overloaded (each tick) */
    bool store_overloaded;  /* it cannot commit and holds too much in memory (store.h) */
    bool store_full_logged; /* the current store-full episode was logged */
    bool store_refusing;    /* acks were refused because a commit failed (episode, logged once;
                               proto.c) */
    /* limits of new sessions (max_inflight_messages, max_queued_messages / _bytes) */
    uint32_t max_inflight; /* 0: no limit (65535) */
    uint32_t max_queued_messages;
    uint64_t max_queued_bytes;
    /* the ClientID table (clients.c) */
    struct mql_session **slots;
    uint32_t nslots;
    uint32_t nsessions;
    struct mql_session *sessions; /* all of them, via next/prev */
    /* routing scratch (router.c) */
    uint64_t route_seq;
    struct route_entry *route;
    uint32_t route_cap;
} mql_core;

#endif
