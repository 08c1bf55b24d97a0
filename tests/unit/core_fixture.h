/*
 * core_fixture.h - what the unit tests of session, router and clients share: a core of
 * their own (core.h: a topic tree, no store, no ACL, no limits), a recording sink that
 * stands in for a client connection (session.h's mql_sink_ops), messages and
 * subscriptions. Single-threaded, no network, no store.
 */
#ifndef MQL_CORE_FIXTURE_H
#define MQL_CORE_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/core.h"
#include "broker/session.h"
#include "fake_store.h"

#define REC_MAX 64

/* rec_packet: one packet a sink was asked to send. */
typedef struct rec_packet {
    uint8_t type; /* MQL_PUBLISH, or the ack's type (MQL_PUBREL ...) */
    char topic[64];
    uint8_t qos;
    bool retain, dup;
    uint16_t pid;
    uint8_t n_ids;
    uint32_t ids[8];
} rec_packet;

/* rec_sink: a connection that records what it is sent. too_large: publish answers "over the
 * peer's Maximum Packet Size"; ready false: closing. */
typedef struct rec_sink {
    bool ready;
    bool too_large;
    size_t backlog;
    int n;
    rec_packet p[REC_MAX];
} rec_sink;

#define MAYBE_UNUSED __attribute__((unused))

static bool rec_ready(void *ctx)
{
    return ((rec_sink *)ctx)->ready;
}

static bool rec_publish(void *ctx, mql_msg *msg, uint8_t qos, bool retain, bool dup, uint16_t pid,
                        const uint32_t *ids, uint8_t n_ids)
{
    rec_sink *r = ctx;
    if (r->too_large)
        return false;
    cr_assert_lt(r->n, REC_MAX);
    rec_packet *p = &r->p[r->n++];
    memset(p, 0, sizeof(*p));
    p->type = MQL_PUBLISH;
    snprintf(p->topic, sizeof(p->topic), "%.*s", (int)msg->topic.len, (const char *)msg->topic.p);
    p->qos = qos;
    p->retain = retain;
    p->dup = dup;
    p->pid = pid;
    p->n_ids = n_ids;
    for (uint8_t i = 0; i < n_ids && i < 8; i++)
        p->ids[i] = ids[i];
    return true;
}

static void rec_ack(void *ctx, uint8_t type, uint16_t pid, uint8_t reason)
{
    rec_sink *r = ctx;
    (void)reason;
    cr_assert_lt(r->n, REC_MAX);
    rec_packet *p = &r->p[r->n++];
    memset(p, 0, sizeof(*p));
    p->type = type;
    p->pid = pid;
}

static size_t rec_backlog(void *ctx)
{
    return ((rec_sink *)ctx)->backlog;
}

static const mql_sink_ops rec_ops = {rec_ready, rec_publish, rec_ack, rec_backlog};

static mql_core core;

static void core_setup(void)
{
    memset(&core, 0, sizeof(core));
    fake_store_reset();
    cr_assert_eq(mql_topics_alloc(&core.topics), MQL_OK);
}

MAYBE_UNUSED static mql_bytes B(const char *s)
{
    return (mql_bytes){.p = (const uint8_t *)s, .len = (uint32_t)strlen(s)};
}

/* A message the test owns one reference to. */
MAYBE_UNUSED static mql_msg *msg_of(const char *topic, const char *payload, uint8_t qos,
                                    bool retain)
{
    mql_msg *m = mql_msg_new(B(topic), B(payload), qos, retain, NULL, 0);
    cr_assert_not_null(m);
    return m;
}

/* Attach a fresh ready sink r to s, with this Receive Maximum and Maximum QoS. */
MAYBE_UNUSED static void attach(mql_session *s, rec_sink *r, uint16_t receive_max, uint8_t max_qos)
{
    memset(r, 0, sizeof(*r));
    r->ready = true;
    mql_session_attach(s, &rec_ops, r, receive_max, max_qos);
}

/* Subscribe s to filter as a SUBSCRIBE would (topic tree + the session's list). */
MAYBE_UNUSED static mql_sub *subscribe(mql_session *s, const char *filter, uint8_t qos,
                                       uint32_t sub_id, bool no_local, bool rap)
{
    mql_sub tmpl = {.session = s,
                    .qos = qos,
                    .sub_id = sub_id,
                    .no_local = no_local,
                    .retain_as_published = rap};
    bool existed = false;
    mql_sub *sub = mql_topics_subscribe(core.topics, B(filter), &tmpl, &existed);
    cr_assert_not_null(sub);
    if (!existed)
        mql_session_link_sub(s, sub);
    return sub;
}

#endif
