/*
 * sys.h - the broker's own $SYS topics.
 *
 * Locking: called with the core lock (broker->lock) held.
 */
#ifndef MQL_SYS_H
#define MQL_SYS_H

#include <stdint.h>

struct mql_broker;

/* mql_sys_set: publish a retained QoS 0 value of the broker's own ($SYS topic, NUL-
 * terminated value), kept in memory only: $SYS is rebuilt at start and would wear the flash
 * for nothing. Nothing happens when out of memory. */
void mql_sys_set(struct mql_broker *b, const char *topic, const char *value);
/* mql_sys_publish: publish the whole $SYS/broker/... tree at monotonic time `now` (ms). */
void mql_sys_publish(struct mql_broker *b, uint64_t now);

#endif
