/*
 * log.c - timestamped, levelled log lines to stderr.
 *
 * Each line is formatted into a stack buffer and written with a single write(2), so lines
 * from different threads never interleave. Lines longer than the buffer are truncated
 * with "...".
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_uint log_types = MQL_LOGT_DEFAULT;

static const char *level_names[] = {"error", "warning", "notice", "info", "debug"};

void mql_log_set_types(uint32_t types)
{
    atomic_store(&log_types, types);
}

bool mql_log_enabled(int level)
{
    return (atomic_load(&log_types) & MQL_LOGT(level)) != 0;
}

void mql_log(int level, const char *id, const char *fmt, ...)
{
    if (!mql_log_enabled(level))
        return;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), level_names[level], id);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len;
    if (m < 0) {
        len = (size_t)n;
    } else if ((size_t)(n + m) >= sizeof(line) - 1) {
        len = sizeof(line) - 2; /* room for the newline */
        memcpy(line + len - 3, "...", 3);
    } else {
        len = (size_t)(n + m);
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
