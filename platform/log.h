/*
 * log.h - the broker's log.
 *
 * Every line: ISO-8601 UTC timestamp with milliseconds, level, a stable message id in
 * brackets, then the text. Example:
 *   2026-11-23T20:31:07.412Z warning [client.takeover] client "plc-7" (127.0.0.1:51234) ...
 * The message id names the event so that operators can grep and alert on it; it never
 * changes between versions. Thread-safe: one write(2) per line.
 */
#ifndef MQL_LOG_H
#define MQL_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/config.h"

/* Set which levels are written (a MQL_LOGT mask). Call before threads start or from any
 * thread: the mask is read atomically. */
void mql_log_set_types(uint32_t types);

/* True when `level` would be written (to skip building expensive arguments). */
bool mql_log_enabled(int level);

/* Write one line at `level` with message id `id` to stderr. */
void mql_log(int level, const char *id, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define mql_error(id, ...) mql_log(MQL_LOG_ERROR, id, __VA_ARGS__)
#define mql_warning(id, ...) mql_log(MQL_LOG_WARNING, id, __VA_ARGS__)
#define mql_notice(id, ...) mql_log(MQL_LOG_NOTICE, id, __VA_ARGS__)
#define mql_info(id, ...) mql_log(MQL_LOG_INFO, id, __VA_ARGS__)
#define mql_debug(id, ...)                                                                         \
    do {                                                                                           \
        if (mql_log_enabled(MQL_LOG_DEBUG))                                                        \
            mql_log(MQL_LOG_DEBUG, id, __VA_ARGS__);                                               \
    } while (0)

#endif
