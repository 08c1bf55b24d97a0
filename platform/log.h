/*
 * log.h - the broker's log.
 *
 * Every line: ISO-8601 UTC timestamp with milliseconds, level, a stable message id in
 * brackets, then the text. Example:
 *   2026-11-23T20:31:07.412Z warning [client.takeover] client "plc-7" (127.0.0.1:51234) ...
 * The message id names the event so that operators can grep and alert on it; it never
 * changes between versions. Thread-safe: one write(2) per line and destination.
 *
 * Destinations (`log_dest`): stderr (the default, and where lines go until mql_log_open),
 * stdout, files (appended to, reopened by mql_log_reopen for logrotate) and syslog (ident
 * "mqlite", facility daemon, the level mapped to the syslog priority; syslog adds its own
 * timestamp, so the line there starts at the level).
 */
#ifndef MQL_LOG_H
#define MQL_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/err.h"

/* Levels, most severe first. */
enum mql_log_level {
    MQL_LOG_ERROR = 0,
    MQL_LOG_WARNING = 1,
    MQL_LOG_NOTICE = 2,
    MQL_LOG_INFO = 3,
    MQL_LOG_DEBUG = 4,
};

/* `log_type` values as a bitmask (mosquitto names): error warning notice information
 * debug all none. Levels enabled are those whose bit is set. */
#define MQL_LOGT(level) (1u << (level))
#define MQL_LOGT_DEFAULT                                                                           \
    (MQL_LOGT(MQL_LOG_ERROR) | MQL_LOGT(MQL_LOG_WARNING) | MQL_LOGT(MQL_LOG_NOTICE) |              \
     MQL_LOGT(MQL_LOG_INFO))

/* `log_dest` destinations other than files, as a bitmask (mosquitto names). */
#define MQL_LOGD_STDERR 0x1u
#define MQL_LOGD_STDOUT 0x2u
#define MQL_LOGD_SYSLOG 0x4u

#define MQL_LOG_MAX_FILES 4  /* log files at once */
#define MQL_LOG_PATH_MAX 256 /* a log file's path, with its NUL */

/* Where the log goes: what mql_log_open needs (the caller fills it from its configuration). */
typedef struct mql_log_conf {
    uint32_t dests; /* MQL_LOGD_* bits; 0 with no files: lines are written nowhere */
    int n_files;    /* files[0..n_files) are appended to */
    struct mql_log_file {
        char path[MQL_LOG_PATH_MAX];
        char where[MQL_LOG_PATH_MAX + 16]; /* where the file was configured ("FILE:LINE"),
                                              the start of every message about it */
    } files[MQL_LOG_MAX_FILES];
} mql_log_conf;

/* mql_log_set_types sets which levels are written (a MQL_LOGT mask). Call before threads start or
 * from any thread: the mask is read atomically. */
void mql_log_set_types(uint32_t types);

/* mql_log_enabled: true when `level` would be written (to skip building expensive
 * arguments). */
bool mql_log_enabled(int level);

/*
 * mql_log_open opens the destinations of cfg (dests, files): files for appending (created 0644,
 * close-on-exec), syslog with openlog(). Call at start, before other threads log. On success
 * every later line goes to exactly these destinations. On error nothing changes (lines still
 * go to stderr), errbuf gets one line naming the log_dest line, the file and the reason, e.g.
 * "etc/mqlite.conf:40: log_dest: cannot open '/var/log/x.log' for appending: Permission
 * denied", and MQL_E_IO is returned. cfg is copied: the caller keeps it.
 */
MQL_MUST_CHECK mql_err mql_log_open(const mql_log_conf *cfg, char *errbuf, size_t errlen);

/*
 * mql_log_reopen reopens every log file by its path (after logrotate moved it away, on SIGHUP).
 * Safe while other threads log: the new file takes over the old descriptor number atomically
 * (dup2), so each line goes whole to either the old or the new file. A file that cannot be reopened
 * keeps being written through its old descriptor; the first such failure is described in
 * errbuf and MQL_E_IO returned (the others are still tried). A file that cannot be opened
 * but was not moved away (its path still names the file being written) is no failure.
 * Returns MQL_OK when there is nothing to reopen.
 */
MQL_MUST_CHECK mql_err mql_log_reopen(char *errbuf, size_t errlen);

/*
 * mql_log_chown gives the log files that mql_log_open created (not those that existed) to uid:gid,
 * so that after root is dropped the broker can still reopen them (SIGHUP without rotation). Call as
 * root, before dropping privileges. Returns MQL_E_IO with errbuf naming the first file that
 * could not be changed.
 */
MQL_MUST_CHECK mql_err mql_log_chown(uid_t uid, gid_t gid, char *errbuf, size_t errlen);

/* mql_log_close closes the files and syslog; lines go to stderr again. Call when no other thread
 * logs. */
void mql_log_close(void);

/* mql_log writes one line at `level` with message id `id` to the destinations; the
 * mql_error .. mql_debug macros name the level. */
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
