/*
 * broker.c - the composition root: alloc, start, shutdown, free; it owns the core lock
 * (broker->lock), runs the housekeeping ticker and reloads authentication and TLS.
 *
 * Locking: the core lock is taken only where a thread enters the core (link callbacks in
 * proto.c / conn.c / bridge.c, dial results, store barrier completions, this ticker, the
 * admin calls here); the order is core lock -> link mutex (platform/net.c). The housekeeping
 * thread wakes every 250 ms under broker->lock for keepalive and CONNECT timeouts, delayed
 * wills, session expiry and $SYS; every 2 s it also hands free heap pages back to the
 * kernel (outside the lock). Performance assumption: a tick walks every connection and
 * session once.
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

#include "broker_int.h"
#include "bridge.h"
#include "clients.h"
#include "mirror.h"
#include "restore.h"
#include "startup.h"
#include "sys.h"
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

mql_err mql_broker_alloc(mql_broker **out, const mql_config *cfg)
{
    mql_err err;
    mql_broker *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return MQL_E_NOMEM;
    b->cfg = *cfg;
    b->core.max_inflight = cfg->max_inflight_messages;
    b->core.max_queued_messages = cfg->max_queued_messages;
    b->core.max_queued_bytes = cfg->max_queued_bytes;
    b->core.store_wait = cfg->store_sync != MQL_STORE_SYNC_OFF;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->tick_cv, NULL);
    pthread_rwlock_init(&b->auth_lock, NULL);
    if ((err = mql_ratelimit_alloc(&b->ratelimit, NULL)) != MQL_OK)
        goto fail;
    if ((err = mql_topics_alloc(&b->core.topics)) != MQL_OK)
        goto fail;
    if ((err = mql_net_alloc(&b->net, &mql_conn_link_ops, b)) != MQL_OK)
        goto fail;
    *out = b;
    return MQL_OK;
fail:
    mql_ratelimit_free(b->ratelimit);
    pthread_rwlock_destroy(&b->auth_lock);
    mql_topics_free(b->core.topics);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->tick_cv);
    free(b);
    return err;
}

void mql_broker_tick(mql_broker *b, uint64_t now)
{
    if (now >= b->reap_lost_next) {
        (void)mql_net_reap_lost(b->net);
        b->reap_lost_next = now + REAP_LOST_MS;
    }
    mql_conn_tick(b, now);
    mql_bridges_tick(b, now);
    mql_clients_expire_scan(&b->core, now);
    if (b->cfg.sys_interval != 0 && now >= b->sys_next) {
        mql_sys_publish(&b->core, now, b->started_at);
        mql_bridges_sys_publish(b);
        mql_sys_publish_store(&b->core);
        b->sys_next = now + (uint64_t)b->cfg.sys_interval * 1000u;
    }
    if (b->core.store != NULL) {
        mql_store_stats ss = mql_store_get_stats(b->core.store);
        if (ss.overloaded && !b->core.store_overloaded)
            mql_error("store.overload",
                      "the store cannot commit and holds %llu bytes of operations in memory, "
                      "its limit: refusing new QoS 1/2 messages for persistent sessions and "
                      "new retained messages until it commits again",
                      (unsigned long long)ss.held_bytes);
        else if (!ss.overloaded && b->core.store_overloaded)
            mql_notice("store.overload", "the store's backlog is below its limit again");
        bool full = ss.full || ss.overloaded;
        if (!full && b->core.store_full) {
            mql_notice("store.full", "the store takes new messages again");
            b->core.store_full_logged = false;
        }
        b->core.store_full = full;
        b->core.store_overloaded = ss.overloaded;
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
    mql_err perr = mql_restore_open(&b->core, &b->cfg, errbuf, errlen);
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
        char url[sizeof(((struct mql_listener_state *)0)->url)];
        mql_listen_opts lo;
        mql_err oerr = mql_startup_listen_opts(&b->cfg, i, url, sizeof(url), &lo, errbuf, errlen);
        if (oerr != MQL_OK)
            return oerr;
        bool tls = lo.certfile != NULL;
        bool ws = l->protocol == MQL_LISTENER_WEBSOCKETS;
        mql_conn_listener_started(b, i, url);
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
    mql_conn_shutdown_all(b);
    mql_bridges_stop(b);
    pthread_mutex_unlock(&b->lock);
    if (b->ticker_started) {
        pthread_join(b->ticker, NULL);
        b->ticker_started = false;
    }
    if (!mql_net_drain(b->net, MQL_CLOSE_FLUSH_MS))
        mql_warning("broker.shutdown", "some connections did not close in time; aborting them");
    /* after the last connection: its session state is queued; the store commits it */
    pthread_mutex_lock(&b->lock);
    mql_store *st = mql_mirror_detach(&b->core);
    pthread_mutex_unlock(&b->lock);
    if (st != NULL)
        mql_store_close(st); /* commits what is queued; pending ack callbacks run */
}

void mql_broker_free(mql_broker *b)
{
    if (b == NULL)
        return;
    mql_bridges_free(b);  /* no dial in progress from here on */
    mql_net_free(b->net); /* aborts what is left; their closed callbacks run */
    while (b->core.sessions != NULL) {
        mql_session *s = b->core.sessions;
        mql_msg_unref(mql_session_take_will(s));
        mql_clients_end(&b->core, s);
    }
    mql_topics_free(b->core.topics);
    mql_passwd_free(b->passwd);
    mql_acl_free(b->core.acl);
    mql_ratelimit_free(b->ratelimit);
    pthread_rwlock_destroy(&b->auth_lock);
    free(b->core.slots);
    free(b->core.route);
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
    mql_acl *old_acl = b->core.acl;
    b->passwd = pw;
    b->core.acl = acl;
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
    mql_stats st = b->core.stats;
    pthread_mutex_unlock(&b->lock);
    return st;
}
