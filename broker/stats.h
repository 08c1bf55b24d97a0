/*
 * stats.h - the broker's counters (read through mql_broker_stats, under the core lock).
 */
#ifndef MQL_STATS_H
#define MQL_STATS_H

#include <stdint.h>

/* mql_stats: the counters, incremented under the core lock by the modules that see the
 * event (session and router count drops; proto, conn and flow the traffic). */
typedef struct mql_stats {
    uint64_t connects_total;
    uint64_t takeovers;
    uint64_t msgs_received;
    uint64_t msgs_sent;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t msgs_dropped;
    uint64_t store_refused; /* PUBACK/PUBREC refused or withheld: the store could not commit */
    uint32_t clients_connected;
    uint32_t clients_max;
} mql_stats;

#endif
