/*
 * sys.c - the broker's own $SYS topics: the mosquitto-compatible $SYS/broker/... tree of
 * counters, plus mqlite's (store, bridges), published as retained QoS 0 messages.
 *
 * $SYS values are kept in the retained tree for new subscribers but never written to the
 * store: they are rebuilt at start and would wear the flash every sys_interval for nothing.
 *
 * Locking: every function runs under broker->lock (the ticker, bridge state changes).
 * Performance assumption: published every sys_interval seconds (default 10), a few dozen
 * small messages each time; reading RSS costs one read of /proc/self/statm.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sys.h"

#include "internal.h"
#include "platform/clock.h"
#include "storage/store.h"

void mql_sys_set(mql_broker *b, const char *topic, const char *value)
{
    mql_bytes t = {(const uint8_t *)topic, (uint32_t)strlen(topic)};
    mql_bytes v = {(const uint8_t *)value, (uint32_t)strlen(value)};
    mql_msg *m = mql_msg_new(t, v, 0, true, NULL, mql_now_ms());
    if (m == NULL)
        return;
    if (mql_topics_retain(b->core.topics, t, m) == MQL_OK)
        (void)mql_router_route(&b->core, m, NULL);
    mql_msg_unref(m);
}

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
    mql_sys_set(b, topic, val);
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
void mql_sys_publish(mql_broker *b, uint64_t now)
{
    const mql_stats *st = &b->core.stats;
    uint32_t total = b->core.nsessions;
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
    sys_put(b, "$SYS/broker/subscriptions/count", "%zu", mql_topics_sub_count(b->core.topics));
    sys_put(b, "$SYS/broker/retained messages/count", "%zu",
            mql_topics_retained_count(b->core.topics));
    sys_put(b, "$SYS/broker/heap/current", "%llu", (unsigned long long)rss_kib() * 1024u);
    for (int i = 0; b->bridges != NULL && i < b->cfg.n_bridges; i++) {
        const mql_bridge *br = &b->bridges[i];
        char t[160];
        snprintf(t, sizeof(t), "$SYS/broker/bridge/%s/queued", br->conf->name);
        sys_put(b, t, "%u", br->s->queue.count + br->s->inflight.count);
    }
    if (b->core.store != NULL) {
        mql_store_stats ss = mql_store_get_stats(b->core.store);
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
