/*
 * broker.c - the broker's lifecycle, the router and the housekeeping timer.
 *
 * The router turns one PUBLISH into deliveries: it asks the topic tree for every matching
 * subscription, merges several matching subscriptions of one session into one delivery at
 * the highest granted QoS with all their Subscription Identifiers [MQTT-3.3.4-2]
 * [MQTT-3.3.4-3], honours No Local and Retain As Published, and hands each delivery to the
 * session (which sends it, queues it or drops it by its own rules).
 *
 * The housekeeping thread wakes every 250 ms under broker->lock for keepalive and CONNECT
 * timeouts, delayed wills and session expiry; every 2 s it also hands free heap pages back
 * to the kernel (outside the lock).
 */
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "storage/store.h"

#define TICK_MS 250
#define TRIM_EVERY_MS 2000
#define REAP_LOST_MS 1000 /* mql_net_reap_lost: TLS/WebSocket links whose close got lost */

/*
 * Give free heap memory back to the kernel. glibc returns memory to the kernel only from
 * the top of each arena, so after a burst (a stalled subscriber's 1,000 queued messages
 * freed when it leaves, thousands of connections dropped) the freed pages in the middle of
 * the heap stay resident, and on a gateway with little RAM RSS would stay at the burst's
 * high-water mark. malloc_trim(0) releases every whole free page of every arena
 * (madvise). When little is free it is a short walk of the free lists, so the ticker
 * calls it every TRIM_EVERY_MS. Other C libraries: nothing to do here.
 */
static void release_free_memory(void)
{
#ifdef __GLIBC__
    (void)malloc_trim(0);
#endif
}

struct route_ctx {
    mql_broker *b;
    const mql_msg *msg;
    const mql_session *from;
    uint64_t seq;
    uint32_t n;
    uint32_t matched; /* matching subscriptions, also those No Local skips */
    bool nomem;
};

/* Room for one more delivery in the broker's routing scratch array. */
static bool route_room(mql_broker *b, struct route_ctx *rc)
{
    if (rc->n < b->route_cap)
        return true;
    uint32_t cap = b->route_cap ? b->route_cap * 2 : 64;
    struct route_entry *p = realloc(b->route, cap * sizeof(*p));
    if (p == NULL) {
        rc->nomem = true;
        return false;
    }
    b->route = p;
    b->route_cap = cap;
    return true;
}

static void route_cb(void *arg, const mql_sub *sub)
{
    struct route_ctx *rc = arg;
    mql_broker *b = rc->b;
    mql_session *s = sub->session;
    rc->matched++;
    if (sub->no_local && s == rc->from)
        return;                                                      /* [MQTT-3.8.3-3] */
    uint8_t qos = sub->qos < rc->msg->qos ? sub->qos : rc->msg->qos; /* [MQTT-3.8.4-8] */
    /* [MQTT-3.3.1-12] [MQTT-3.3.1-13]; 3.1.1 forwards with retain 0 [v3.1.1 MQTT-3.3.1-9] */
    bool retain = sub->retain_as_published && rc->msg->retain;
    struct route_entry *e;
    if (s->route_stamp == rc->seq) {
        e = &b->route[s->route_idx];
        if (qos > e->qos)
            e->qos = qos;
        e->retain = e->retain || retain;
    } else {
        if (!route_room(b, rc))
            return;
        s->route_stamp = rc->seq;
        s->route_idx = rc->n;
        e = &b->route[rc->n++];
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
static mql_sub *share_pick(mql_broker *b, mql_share *g, uint8_t qos)
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
        uint32_t w = b->cfg.max_inflight_messages ? b->cfg.max_inflight_messages : 65535u;
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

bool mql_broker_share_deliver(mql_broker *b, mql_share *g, mql_msg *msg, uint8_t qos, bool retain)
{
    mql_sub *m = share_pick(b, g, qos);
    if (m == NULL)
        return false;
    uint8_t q = m->qos < qos ? m->qos : qos; /* [MQTT-4.8.2-3] */
    uint32_t id = m->sub_id;
    mql_session_deliver(b, m->session, msg, q, retain, &id, id ? 1 : 0, g);
    return true;
}

static void share_cb(void *arg, mql_share *g)
{
    struct route_ctx *rc = arg;
    mql_broker *b = rc->b;
    rc->matched += g->nmembers != 0;
    mql_sub *m = share_pick(b, g, rc->msg->qos);
    if (m == NULL)
        return;
    if (!route_room(b, rc))
        return;
    /* a separate delivery: shared and non-shared subscriptions are not merged */
    struct route_entry *e = &b->route[rc->n++];
    e->s = m->session;
    e->share = g;
    e->qos = m->qos < rc->msg->qos ? m->qos : rc->msg->qos;
    e->retain = m->retain_as_published && rc->msg->retain;
    e->n_ids = 0;
    if (m->sub_id != 0)
        e->ids[e->n_ids++] = m->sub_id;
}

uint32_t mql_broker_route(mql_broker *b, mql_msg *msg, const mql_session *from)
{
    struct route_ctx rc = {.b = b, .msg = msg, .from = from, .seq = ++b->route_seq};
    mql_topics_match(b->topics, msg->topic, route_cb, share_cb, &rc);
    if (rc.nomem) {
        mql_error("broker.nomem", "out of memory routing a message to \"%.*s\"",
                  (int)msg->topic.len, msg->topic.p);
    }
    for (uint32_t i = 0; i < rc.n; i++) {
        struct route_entry *e = &b->route[i];
        mql_session_deliver(b, e->s, msg, e->qos, e->retain, e->ids, e->n_ids, e->share);
    }
    return rc.matched;
}

void mql_broker_publish_will(mql_broker *b, mql_msg *will)
{
    mql_debug("broker.will", "publishing will message to \"%.*s\"", (int)will->topic.len,
              will->topic.p);
    if (will->retain) {
        if (mql_topics_retain(b->topics, will->topic, will) != MQL_OK)
            mql_error("broker.nomem", "out of memory storing a retained will message");
        else
            mql_persist_retain(b, will->topic, will);
    }
    (void)mql_broker_route(b, will, NULL);
}

mql_err mql_broker_alloc(mql_broker **out, const mql_config *cfg)
{
    mql_err err;
    mql_broker *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return MQL_E_NOMEM;
    b->cfg = *cfg;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->tick_cv, NULL);
    pthread_rwlock_init(&b->auth_lock, NULL);
    if ((err = mql_ratelimit_alloc(&b->ratelimit, NULL)) != MQL_OK)
        goto fail;
    if ((err = mql_topics_alloc(&b->topics)) != MQL_OK)
        goto fail;
    if ((err = mql_net_alloc(&b->net, &mql_conn_link_ops, b)) != MQL_OK)
        goto fail;
    *out = b;
    return MQL_OK;
fail:
    mql_ratelimit_free(b->ratelimit);
    pthread_rwlock_destroy(&b->auth_lock);
    mql_topics_free(b->topics);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->tick_cv);
    free(b);
    return err;
}

/* ---- $SYS ---- */

static void sys_put(mql_broker *b, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Publish one retained $SYS value (QoS 0). $SYS values are kept in the retained tree for
 * new subscribers but never written to the store: they would wear the flash every
 * sys_interval for nothing. */
static void sys_put(mql_broker *b, const char *topic, const char *fmt, ...)
{
    char val[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    val[n < (int)sizeof(val) ? n : (int)sizeof(val) - 1] = '\0';
    mql_broker_sys_set(b, topic, val);
}

void mql_broker_store_refused(mql_broker *b, const char *client_id)
{
    b->stats.msgs_dropped++;
    if (b->store_full_logged)
        return;
    b->store_full_logged = true;
    mql_warning("store.full",
                "%s: new QoS 1/2 messages for persistent sessions and new retained messages "
                "are refused (MQTT 5 publishers get 0x97) until it %s (first: client \"%s\")",
                b->store_overloaded ? "the store cannot commit and its backlog is at its limit"
                                    : "the store reached store_max_bytes",
                b->store_overloaded ? "commits again" : "drains", client_id);
}

void mql_broker_sys_set(mql_broker *b, const char *topic, const char *value)
{
    mql_bytes t = {(const uint8_t *)topic, (uint32_t)strlen(topic)};
    mql_bytes v = {(const uint8_t *)value, (uint32_t)strlen(value)};
    mql_msg *m = mql_msg_new(t, v, 0, true, NULL, mql_now_ms());
    if (m == NULL)
        return;
    if (mql_topics_retain(b->topics, t, m) == MQL_OK)
        (void)mql_broker_route(b, m, NULL);
    mql_msg_unref(m);
}

static uint64_t rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE) / 1024u;
}

/* The mosquitto-compatible $SYS/broker/... tree, plus mqlite's own counters. */
static void sys_publish(mql_broker *b, uint64_t now)
{
    const mql_stats *st = &b->stats;
    uint32_t total = b->nsessions;
    sys_put(b, "$SYS/broker/version", "mqlite %s", MQL_VERSION);
    sys_put(b, "$SYS/broker/uptime", "%llu seconds",
            (unsigned long long)((now - b->started_at) / 1000u));
    sys_put(b, "$SYS/broker/clients/connected", "%u", st->clients_connected);
    sys_put(b, "$SYS/broker/clients/active", "%u", st->clients_connected);
    sys_put(b, "$SYS/broker/clients/disconnected", "%u", total - st->clients_connected);
    sys_put(b, "$SYS/broker/clients/inactive", "%u", total - st->clients_connected);
    sys_put(b, "$SYS/broker/clients/total", "%u", total);
    sys_put(b, "$SYS/broker/clients/maximum", "%u", st->clients_max);
    sys_put(b, "$SYS/broker/clients/takeovers", "%llu", (unsigned long long)st->takeovers);
    sys_put(b, "$SYS/broker/messages/received", "%llu", (unsigned long long)st->msgs_received);
    sys_put(b, "$SYS/broker/messages/sent", "%llu", (unsigned long long)st->msgs_sent);
    sys_put(b, "$SYS/broker/publish/messages/dropped", "%llu",
            (unsigned long long)st->msgs_dropped);
    sys_put(b, "$SYS/broker/bytes/received", "%llu", (unsigned long long)st->bytes_received);
    sys_put(b, "$SYS/broker/bytes/sent", "%llu", (unsigned long long)st->bytes_sent);
    sys_put(b, "$SYS/broker/subscriptions/count", "%zu", mql_topics_sub_count(b->topics));
    sys_put(b, "$SYS/broker/retained messages/count", "%zu", mql_topics_retained_count(b->topics));
    sys_put(b, "$SYS/broker/heap/current", "%llu", (unsigned long long)rss_kib() * 1024u);
    for (int i = 0; b->bridges != NULL && i < b->cfg.n_bridges; i++) {
        const mql_bridge *br = &b->bridges[i];
        char t[160];
        snprintf(t, sizeof(t), "$SYS/broker/bridge/%s/queued", br->conf->name);
        sys_put(b, t, "%u", br->s->queue.count + br->s->inflight.count);
    }
    if (b->store != NULL) {
        mql_store_stats ss = mql_store_get_stats(b->store);
        sys_put(b, "$SYS/broker/store/bytes", "%llu", (unsigned long long)ss.file_bytes);
        sys_put(b, "$SYS/broker/store/transactions", "%llu", (unsigned long long)ss.transactions);
        sys_put(b, "$SYS/broker/store/fsyncs", "%llu", (unsigned long long)ss.fsyncs);
        sys_put(b, "$SYS/broker/store/bytes_written", "%llu", (unsigned long long)ss.bytes_written);
        sys_put(b, "$SYS/broker/store/errors", "%llu", (unsigned long long)ss.errors);
        sys_put(b, "$SYS/broker/store/refused", "%llu", (unsigned long long)st->store_refused);
        sys_put(b, "$SYS/broker/store/failing", "%d", ss.failing ? 1 : 0);
        sys_put(b, "$SYS/broker/store/held_bytes", "%llu", (unsigned long long)ss.held_bytes);
    }
}

void mql_broker_tick(mql_broker *b, uint64_t now)
{
    if (now >= b->reap_lost_next) {
        (void)mql_net_reap_lost(b->net);
        b->reap_lost_next = now + REAP_LOST_MS;
    }
    mql_conn_tick(b, now);
    mql_bridges_tick(b, now);
    mql_session_expire_scan(b, now);
    if (b->cfg.sys_interval != 0 && now >= b->sys_next) {
        sys_publish(b, now);
        b->sys_next = now + (uint64_t)b->cfg.sys_interval * 1000u;
    }
    if (b->store != NULL) {
        mql_store_stats ss = mql_store_get_stats(b->store);
        if (ss.overloaded && !b->store_overloaded)
            mql_error("store.overload",
                      "the store cannot commit and holds %llu bytes of operations in memory, "
                      "its limit: refusing new QoS 1/2 messages for persistent sessions and "
                      "new retained messages until it commits again",
                      (unsigned long long)ss.held_bytes);
        else if (!ss.overloaded && b->store_overloaded)
            mql_notice("store.overload", "the store's backlog is below its limit again");
        bool full = ss.full || ss.overloaded;
        if (!full && b->store_full) {
            mql_notice("store.full", "the store takes new messages again");
            b->store_full_logged = false;
        }
        b->store_full = full;
        b->store_overloaded = ss.overloaded;
    }
}

static void *ticker_main(void *arg)
{
    mql_broker *b = arg;
    uint64_t trim_next = mql_now_ms() + TRIM_EVERY_MS;
    pthread_mutex_lock(&b->lock);
    while (!b->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        int rv = pthread_cond_timedwait(&b->tick_cv, &b->lock, &ts);
        if (rv != ETIMEDOUT && rv != 0)
            break;
        if (mql_now_ms() >= trim_next) {
            trim_next = mql_now_ms() + TRIM_EVERY_MS;
            pthread_mutex_unlock(&b->lock); /* nobody waits for the broker lock meanwhile */
            release_free_memory();
            pthread_mutex_lock(&b->lock);
            if (b->stopping)
                break;
        }
        /* Read the clock only now, under the lock: a connection accepted (created_at) or a
         * packet received (last_rx) while the lock was released above would otherwise be
         * later than `now`, and the unsigned differences in mql_conn_tick would wrap and
         * close it at once. */
        mql_broker_tick(b, mql_now_ms());
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

mql_err mql_broker_start(mql_broker *b, char *errbuf, size_t errlen)
{
    mql_err perr = mql_persist_open(b, errbuf, errlen);
    if (perr != MQL_OK)
        return perr;
    perr = mql_broker_load_auth(b, b->cfg.password_file, b->cfg.acl_file, errbuf, errlen);
    if (perr != MQL_OK)
        return perr;
    perr = mql_bridges_start(b, errbuf, errlen); /* after the store: their queues are in it */
    if (perr != MQL_OK)
        return perr;
    for (int i = 0; i < b->cfg.n_listeners; i++) {
        const mql_listener_conf *l = &b->cfg.listeners[i];
        char url[sizeof(b->listeners[i].url)];
        const char *addr = l->address[0] ? l->address : "0.0.0.0";
        bool tls = l->certfile[0] != '\0';
        bool ws = l->protocol == MQL_LISTENER_WEBSOCKETS;
        const char *scheme = ws ? (tls ? "wss" : "ws") : (tls ? "tls+tcp" : "tcp");
        const char *path = ws ? (l->websockets_path[0] ? l->websockets_path : "/mqtt") : "";
        if (strchr(addr, ':') != NULL)
            snprintf(url, sizeof(url), "%s://[%s]:%u%s", scheme, addr, l->port, path);
        else
            snprintf(url, sizeof(url), "%s://%s:%u%s", scheme, addr, l->port, path);
        snprintf(b->listeners[i].url, sizeof(b->listeners[i].url), "%s", url);
        mql_listen_opts lo = {
            .id = i,
            .url = url,
            .certfile = tls ? l->certfile : NULL,
            .keyfile = l->keyfile[0] ? l->keyfile : NULL,
            .keypass = l->keyfile_password[0] ? l->keyfile_password : NULL,
            .cafile = l->cafile[0] ? l->cafile : NULL,
            .require_certificate = l->require_certificate,
            .identity_username = l->use_identity_as_username,
        };
        if (!tls && (l->keyfile[0] || l->cafile[0] || l->require_certificate ||
                     l->use_identity_as_username)) {
            snprintf(errbuf, errlen,
                     "listener %u (line %d): keyfile/cafile/require_certificate/"
                     "use_identity_as_username need certfile",
                     l->port, l->line);
            return MQL_E_CONFIG;
        }
        mql_err err = mql_net_listen(b->net, &lo, errbuf, errlen);
        if (err != MQL_OK)
            return err;
        char limits[96] = "";
        if (l->max_connections >= 0)
            snprintf(limits, sizeof(limits), ", max_connections %d", (int)l->max_connections);
        if (l->allow_anonymous >= 0)
            snprintf(limits + strlen(limits), sizeof(limits) - strlen(limits),
                     ", allow_anonymous %s", l->allow_anonymous ? "true" : "false");
        mql_notice("broker.listen", "listening on %s (%s%s%s)", url, ws ? "websockets" : "mqtt",
                   tls ? (l->use_identity_as_username
                              ? ", TLS, client certificate CN is the user name"
                          : l->require_certificate ? ", TLS, client certificate required"
                                                   : ", TLS")
                       : "",
                   limits);
    }
    /* before the ticker starts: it reads started_at (under b->lock, which this thread does
     * not take here), so a later write would race with it (found by ThreadSanitizer) */
    b->started_at = mql_now_ms();
    if (pthread_create(&b->ticker, NULL, ticker_main, b) != 0) {
        snprintf(errbuf, errlen, "cannot start the housekeeping thread");
        return MQL_E_NOMEM;
    }
    b->ticker_started = true;
    return MQL_OK;
}

void mql_broker_shutdown(mql_broker *b)
{
    mql_net_close_listeners(b->net);
    pthread_mutex_lock(&b->lock);
    b->stopping = true;
    pthread_cond_broadcast(&b->tick_cv);
    for (mql_conn *c = b->conns; c != NULL; c = c->next)
        mql_conn_close(c, c->state == CS_ACTIVE ? MQL_E_SHUTDOWN : MQL_OK, "server shutting down");
    mql_bridges_stop(b);
    pthread_mutex_unlock(&b->lock);
    if (b->ticker_started) {
        pthread_join(b->ticker, NULL);
        b->ticker_started = false;
    }
    if (!mql_net_drain(b->net, MQL_CLOSE_FLUSH_MS))
        mql_warning("broker.shutdown", "some connections did not close in time; aborting them");
    mql_persist_close(b); /* after the last connection: its session state is queued */
}

void mql_broker_free(mql_broker *b)
{
    if (b == NULL)
        return;
    mql_bridges_free(b);  /* no dial in progress from here on */
    mql_net_free(b->net); /* aborts what is left; their closed callbacks run */
    while (b->sessions != NULL) {
        mql_session *s = b->sessions;
        mql_msg_unref(s->will);
        s->will = NULL;
        mql_session_end(b, s);
    }
    mql_topics_free(b->topics);
    mql_passwd_free(b->passwd);
    mql_acl_free(b->acl);
    mql_ratelimit_free(b->ratelimit);
    pthread_rwlock_destroy(&b->auth_lock);
    free(b->slots);
    free(b->route);
    free(b->bridges);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->tick_cv);
    free(b);
}

mql_err mql_broker_load_auth(mql_broker *b, const char *passwd_path, const char *acl_path,
                             char *errbuf, size_t errlen)
{
    mql_passwd *pw = NULL;
    mql_acl *acl = NULL;
    mql_err err;
    if (passwd_path != NULL && passwd_path[0] != '\0' &&
        (err = mql_passwd_load(&pw, passwd_path, errbuf, errlen)) != MQL_OK)
        return err;
    if (acl_path != NULL && acl_path[0] != '\0' &&
        (err = mql_acl_load(&acl, acl_path, errbuf, errlen)) != MQL_OK) {
        mql_passwd_free(pw);
        return err;
    }
    /* swap: the broker lock for ACL readers, auth_lock for password checks in flight */
    pthread_mutex_lock(&b->lock);
    pthread_rwlock_wrlock(&b->auth_lock);
    mql_passwd *old_pw = b->passwd;
    mql_acl *old_acl = b->acl;
    b->passwd = pw;
    b->acl = acl;
    pthread_rwlock_unlock(&b->auth_lock);
    pthread_mutex_unlock(&b->lock);
    mql_passwd_free(old_pw);
    mql_acl_free(old_acl);
    if (pw != NULL)
        mql_notice("auth.load", "password file %s: %zu users", passwd_path, mql_passwd_count(pw));
    if (acl != NULL)
        mql_notice("auth.load", "ACL file %s: %zu rules", acl_path, mql_acl_rule_count(acl));
    return MQL_OK;
}

int mql_broker_reload_tls(mql_broker *b)
{
    return mql_net_reload_tls(b->net);
}

mql_stats mql_broker_stats(mql_broker *b)
{
    pthread_mutex_lock(&b->lock);
    mql_stats st = b->stats;
    pthread_mutex_unlock(&b->lock);
    return st;
}
