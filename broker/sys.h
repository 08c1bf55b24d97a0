/*
 * sys.h - the broker's own $SYS topics.
 *
 * Locking: called with the core lock (broker->lock) held.
 */
#ifndef MQL_SYS_H
#define MQL_SYS_H

#include <stdint.h>

struct mql_core;

/* mql_sys_set: publish a retained QoS 0 value of the broker's own ($SYS topic, NUL-
 * terminated value), kept in memory only: $SYS is rebuilt at start and would wear the flash
 * for nothing. Nothing happens when out of memory. */
void mql_sys_set(struct mql_core *core, const char *topic, const char *value);
/* mql_sys_publish: publish the $SYS/broker/... counters (version, uptime since started_at,
 * clients, messages, bytes, subscriptions, retained, heap) at monotonic time `now` (ms).
 * The broker publishes the bridges' values next (bridge.h), then mql_sys_publish_store. */
void mql_sys_publish(struct mql_core *core, uint64_t now, uint64_t started_at);
/* mql_sys_publish_store: publish the $SYS/broker/store/... values (nothing without a
 * store). */
void mql_sys_publish_store(struct mql_core *core);

#endif
