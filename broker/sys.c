/*
 * sys.c - the broker's own $SYS topics: the mosquitto-compatible $SYS/broker/... tree of
 * counters, plus mqlite's (store), published as retained QoS 0 messages.
 *
 * $SYS values are kept in the retained tree for new subscribers but never written to the
 * store: they are rebuilt at start and would wear the flash every sys_interval for nothing.
 *
 * It needs only the core's state (core.h); the bridges publish their own values through
 * mql_sys_set (bridge.c).
 *
 * Locking: every function runs under the core lock (the ticker, bridge state changes).
 * Performance assumption: published every sys_interval seconds (default 10), a few dozen
 * small messages each time; reading RSS costs one read of /proc/self/statm.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sys.h"

#include "core.h"
#include "router.h"
#include "platform/clock.h"
#include "storage/store.h"

void mql_sys_set(mql_core *core, const char *topic, const char *value)
{
    mql_bytes t = {(const uint8_t *)topic, (uint32_t)strlen(topic)};
    mql_bytes v = {(const uint8_t *)value, (uint32_t)strlen(value)};
    mql_msg *m = mql_msg_new(t, v, 0, true, NULL, mql_now_ms());
    if (m == NULL)
        return;
    if (mql_topics_retain(core->topics, t, m) == MQL_OK)
        (void)mql_router_route(core, m, NULL);
    mql_msg_unref(m);
}

static void sys_put(mql_core *core, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Publish one retained $SYS value (QoS 0). $SYS values are kept in the retained tree for
 * new subscribers but never written to the store: they would wear the flash every
 * sys_interval for nothing. */
static void sys_put(mql_core *core, const char *topic, const char *fmt, ...)
{
    char val[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    val[n < (int)sizeof(val) ? n : (int)sizeof(val) - 1] = '\0';
    mql_sys_set(core, topic, val);
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
void mql_sys_publish(mql_core *core, uint64_t now, uint64_t started_at)
{
    const mql_stats *st = &core->stats;
    uint32_t total = core->nsessions;
    sys_put(core, "$SYS/broker/version", "mqlite %s", MQL_VERSION);
    sys_put(core, "$SYS/broker/uptime", "%llu seconds",
            (unsigned long long)((now - started_at) / 1000u));
    sys_put(core, "$SYS/broker/clients/connected", "%u", st->clients_connected);
    sys_put(core, "$SYS/broker/clients/active", "%u", st->clients_connected);
    sys_put(core, "$SYS/broker/clients/disconnected", "%u", total - st->clients_connected);
    sys_put(core, "$SYS/broker/clients/inactive", "%u", total - st->clients_connected);
    sys_put(core, "$SYS/broker/clients/total", "%u", total);
    sys_put(core, "$SYS/broker/clients/maximum", "%u", st->clients_max);
    sys_put(core, "$SYS/broker/clients/takeovers", "%llu", (unsigned long long)st->takeovers);
    sys_put(core, "$SYS/broker/messages/received", "%llu", (unsigned long long)st->msgs_received);
    sys_put(core, "$SYS/broker/messages/sent", "%llu", (unsigned long long)st->msgs_sent);
    sys_put(core, "$SYS/broker/publish/messages/dropped", "%llu",
            (unsigned long long)st->msgs_dropped);
    sys_put(core, "$SYS/broker/bytes/received", "%llu", (unsigned long long)st->bytes_received);
    sys_put(core, "$SYS/broker/bytes/sent", "%llu", (unsigned long long)st->bytes_sent);
    sys_put(core, "$SYS/broker/subscriptions/count", "%zu", mql_topics_sub_count(core->topics));
    sys_put(core, "$SYS/broker/retained messages/count", "%zu",
            mql_topics_retained_count(core->topics));
    sys_put(core, "$SYS/broker/heap/current", "%llu", (unsigned long long)rss_kib() * 1024u);
}

void mql_sys_publish_store(mql_core *core)
{
    const mql_stats *st = &core->stats;
    if (core->store != NULL) {
        mql_store_stats ss = mql_store_get_stats(core->store);
        sys_put(core, "$SYS/broker/store/bytes", "%llu", (unsigned long long)ss.file_bytes);
        sys_put(core, "$SYS/broker/store/transactions", "%llu",
                (unsigned long long)ss.transactions);
        sys_put(core, "$SYS/broker/store/fsyncs", "%llu", (unsigned long long)ss.fsyncs);
        sys_put(core, "$SYS/broker/store/bytes_written", "%llu",
                (unsigned long long)ss.bytes_written);
        sys_put(core, "$SYS/broker/store/errors", "%llu", (unsigned long long)ss.errors);
        sys_put(core, "$SYS/broker/store/refused", "%llu", (unsigned long long)st->store_refused);
        sys_put(core, "$SYS/broker/store/failing", "%d", ss.failing ? 1 : 0);
        sys_put(core, "$SYS/broker/store/held_bytes", "%llu", (unsigned long long)ss.held_bytes);
    }
}
