/*
 * restore.c - the load side of persistence: at start, before any thread runs, the store's
 * rows become sessions, subscriptions, queued and in-flight messages, inbound QoS 2 ids and
 * retained messages.
 *
 * Sessions whose expiry ran out while the broker was down are deleted instead
 * [MQTT-3.1.2-23]; rows that refer to missing sessions or messages are skipped and counted.
 * From here on the store is only written (mirror.c).
 *
 * Locking: runs once from mql_broker_start before listeners, bridges or the ticker start,
 * so nothing else runs; it takes no lock. Performance assumption: message bodies are
 * shared by the rows that refer to them through an open-addressing map by id, so a start
 * with many queued copies of one message loads it once.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "restore.h"

#include "clients.h"
#include "config.h"
#include "core.h"
#include "mirror.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "storage/store.h"

/* Message bodies by id while loading: open addressing, ids are never 0. */
struct load_ctx {
    mql_core *core;
    mql_msg **slots;
    uint32_t cap, n;
    uint64_t now_mono;
    int64_t now_wall;
    uint32_t sessions, expired, subs, outs, retained, skipped;
};

static bool map_put(struct load_ctx *lc, mql_msg *m)
{
    if ((lc->n + 1) * 2 > lc->cap) {
        uint32_t cap = lc->cap ? lc->cap * 2 : 256;
        mql_msg **slots = calloc(cap, sizeof(*slots));
        if (slots == NULL)
            return false;
        for (uint32_t i = 0; i < lc->cap; i++) {
            mql_msg *x = lc->slots[i];
            if (x == NULL)
                continue;
            uint32_t j = (uint32_t)(x->store_id * 0x9E3779B97F4A7C15u >> 32) & (cap - 1);
            while (slots[j] != NULL)
                j = (j + 1) & (cap - 1);
            slots[j] = x;
        }
        free(lc->slots);
        lc->slots = slots;
        lc->cap = cap;
    }
    uint32_t j = (uint32_t)(m->store_id * 0x9E3779B97F4A7C15u >> 32) & (lc->cap - 1);
    while (lc->slots[j] != NULL)
        j = (j + 1) & (lc->cap - 1);
    lc->slots[j] = m;
    lc->n++;
    return true;
}

static mql_msg *map_get(const struct load_ctx *lc, uint64_t id)
{
    if (lc->cap == 0)
        return NULL;
    uint32_t j = (uint32_t)(id * 0x9E3779B97F4A7C15u >> 32) & (lc->cap - 1);
    while (lc->slots[j] != NULL) {
        if (lc->slots[j]->store_id == id)
            return lc->slots[j];
        j = (j + 1) & (lc->cap - 1);
    }
    return NULL;
}

static mql_err load_msg(void *arg, const mql_store_msg *sm)
{
    struct load_ctx *lc = arg;
    mql_props props;
    const char *why = NULL;
    bool has_props = sm->props_len > 0;
    if (has_props && mql_props_decode(sm->props, sm->props_len, &props, &why) != MQL_OK) {
        mql_warning("store.bad_row",
                    "message %" PRIu64 " has unreadable properties (%s); "
                    "loading it without them",
                    sm->msg_id, why ? why : "?");
        has_props = false;
    }
    mql_bytes topic = {(const uint8_t *)sm->topic, sm->topic_len};
    mql_bytes payload = {sm->payload, sm->payload_len};
    if (has_props)
        props.present &= ~MQL_PBIT(MQL_PROP_MESSAGE_EXPIRY); /* from expiry_wall instead */
    mql_msg *m =
        mql_msg_new(topic, payload, sm->qos, sm->retain, has_props ? &props : NULL, lc->now_mono);
    if (m == NULL)
        return MQL_E_NOMEM;
    m->store_id = sm->msg_id;
    m->expiry_at = mql_mirror_mono_of(sm->expiry_wall, lc->now_mono, lc->now_wall);
    if (!map_put(lc, m)) {
        mql_msg_unref(m);
        return MQL_E_NOMEM;
    }
    return MQL_OK;
}

static mql_err load_session(void *arg, const mql_store_session *ss)
{
    struct load_ctx *lc = arg;
    mql_core *core = lc->core;
    uint32_t len = (uint32_t)strlen(ss->client_id);
    int64_t gone = ss->disconnected_at != 0 ? ss->disconnected_at : lc->now_wall;
    if (ss->expiry != MQL_SESSION_NEVER && lc->now_wall - gone >= (int64_t)ss->expiry) {
        /* expired while the broker was down [MQTT-3.1.2-23] */
        lc->expired++;
        return mql_store_session_del(core->store, ss->client_id);
    }
    mql_session *s = mql_clients_new(core, (const uint8_t *)ss->client_id, len);
    if (s == NULL)
        return MQL_E_NOMEM;
    s->version = ss->version;
    s->expiry = ss->expiry;
    s->stored = true;
    s->was_online = ss->disconnected_at == 0;
    s->disconnected_at = mql_mirror_mono_of(gone, lc->now_mono, lc->now_wall);
    if (s->disconnected_at == 0)
        s->disconnected_at = 1;
    lc->sessions++;
    return MQL_OK;
}

static mql_session *find(struct load_ctx *lc, const char *client_id)
{
    return mql_clients_find(lc->core, (const uint8_t *)client_id, (uint32_t)strlen(client_id));
}

static mql_err load_sub(void *arg, const mql_store_sub *ss)
{
    struct load_ctx *lc = arg;
    mql_session *s = find(lc, ss->client_id);
    if (s == NULL) {
        lc->skipped++;
        return MQL_OK;
    }
    mql_sub tmpl;
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.session = s;
    tmpl.qos = ss->qos;
    tmpl.no_local = ss->options & 1;
    tmpl.retain_as_published = (ss->options & 2) != 0;
    tmpl.retain_handling = (ss->options >> 2) & 3;
    tmpl.sub_id = ss->sub_id;
    bool existed;
    mql_bytes f = {(const uint8_t *)ss->filter, (uint32_t)strlen(ss->filter)};
    if (!mql_topic_filter_valid(f)) {
        lc->skipped++;
        return MQL_OK;
    }
    mql_sub *sub = mql_topics_subscribe(lc->core->topics, f, &tmpl, &existed);
    if (sub == NULL)
        return MQL_E_NOMEM;
    if (!existed)
        mql_session_link_sub(s, sub);
    lc->subs++;
    return MQL_OK;
}

static mql_err load_out(void *arg, const mql_store_out *so)
{
    struct load_ctx *lc = arg;
    mql_session *s = find(lc, so->client_id);
    mql_msg *m = map_get(lc, so->msg_id);
    if (s == NULL || m == NULL) {
        lc->skipped++;
        return MQL_OK;
    }
    out_msg *o = calloc(1, sizeof(*o) + (so->sub_id ? sizeof(uint32_t) : 0));
    if (o == NULL)
        return MQL_E_NOMEM;
    o->msg = mql_msg_ref(m);
    o->qos = so->qos;
    o->retain = so->retain;
    o->state = so->state;
    o->packet_id = so->packet_id;
    o->seq = so->seq;
    o->stored = true;
    if (so->sub_id) {
        o->ids[0] = so->sub_id;
        o->n_ids = 1;
    }
    if (o->seq >= s->next_seq)
        s->next_seq = o->seq + 1;
    out_list *l = o->state == MQL_STORE_OUT_QUEUED ? &s->queue : &s->inflight;
    if (l == &s->queue) {
        s->queued_bytes += m->payload.len;
        if (o->qos == 0)
            s->queued_qos0++; /* a bridge's queued QoS 0 */
    } else if (o->qos == 0) {
        mql_msg_unref(o->msg); /* never in flight: a corrupt row */
        free(o);
        lc->skipped++;
        return MQL_OK;
    }
    mql_out_list_append(l, o);
    lc->outs++;
    return MQL_OK;
}

static mql_err load_qos2(void *arg, const char *client_id, uint16_t pid)
{
    struct load_ctx *lc = arg;
    mql_session *s = find(lc, client_id);
    if (s == NULL)
        return MQL_OK;
    return mql_session_qos2_add(s, pid);
}

static mql_err load_retained(void *arg, const char *topic, uint64_t msg_id)
{
    struct load_ctx *lc = arg;
    mql_msg *m = map_get(lc, msg_id);
    if (m == NULL) {
        lc->skipped++;
        return MQL_OK;
    }
    m->retain = true;
    lc->retained++;
    return mql_topics_retain(lc->core->topics,
                             (mql_bytes){(const uint8_t *)topic, (uint32_t)strlen(topic)}, m);
}

/*
 * A queued message's move to "in flight" is written in the commit after it was sent, so a
 * crash within that window restores it as queued although the client may have it. Such
 * messages can only be at the head of the queue of a session that was connected when the
 * broker died, at most an in-flight window of them: their next send says DUP 1, "this
 * might be a re-delivery" [MQTT-3.3.1-1]. (Restored in-flight messages get DUP 1 anyway,
 * see mql_session_resume; QoS 0 never has it [MQTT-3.3.1-2].) Bridges mark their whole
 * restored queue (bridge_init).
 */
static void mark_maybe_sent(mql_core *core)
{
    uint32_t window = core->max_inflight ? core->max_inflight : 65535u;
    for (mql_session *s = core->sessions; s != NULL; s = s->next) {
        if (!s->was_online)
            continue;
        s->was_online = false;
        uint32_t n = s->inflight.count;
        for (out_msg *o = s->queue.head; o != NULL && n < window; o = o->next) {
            if (o->qos == 0)
                continue;
            o->dup = true;
            n++;
        }
    }
}

mql_err mql_restore_open(mql_core *core, const mql_config *cfg, char *errbuf, size_t errlen)
{
    if (!cfg->persistence)
        return MQL_OK;
    mql_store_opts opts = {
        .dir = cfg->persistence_location,
        .commit_window_ms = cfg->store_commit_window_ms,
        .sync_full = cfg->store_sync == MQL_STORE_SYNC_FULL,
        .max_bytes = cfg->store_max_bytes,
    };
    mql_err err = mql_store_open(&core->store, &opts, errbuf, errlen);
    if (err != MQL_OK)
        return err;
    struct load_ctx lc = {.core = core, .now_mono = mql_now_ms(), .now_wall = mql_wall_s()};
    mql_store_loader ld = {
        .arg = &lc,
        .msg = load_msg,
        .session = load_session,
        .sub = load_sub,
        .out = load_out,
        .qos2_in = load_qos2,
        .retained = load_retained,
    };
    uint64_t max_id = 0;
    err = mql_store_load(core->store, &ld, &max_id);
    for (uint32_t i = 0; i < lc.cap; i++)
        mql_msg_unref(lc.slots[i]); /* holders took their own references */
    free(lc.slots);
    if (err != MQL_OK) {
        snprintf(errbuf, errlen, "cannot load the store in %s: %s", opts.dir, mql_err_str(err));
        mql_store_close(core->store);
        core->store = NULL;
        return err;
    }
    core->next_msg_id = max_id;
    mark_maybe_sent(core);
    mql_notice("store.loaded",
               "store %s/mqlite.db: %u sessions (%u expired while down), %u subscriptions, "
               "%u queued messages, %u retained",
               opts.dir, lc.sessions, lc.expired, lc.subs, lc.outs, lc.retained);
    if (lc.skipped)
        mql_warning("store.bad_row",
                    "%u store rows referred to missing sessions or messages "
                    "and were skipped",
                    lc.skipped);
    return MQL_OK;
}
