/*
 * log.c - timestamped, levelled log lines to stderr, stdout, files and syslog.
 *
 * Each line is formatted into a stack buffer and written with a single write(2) per
 * destination, so lines from different threads never interleave. Lines longer than the
 * buffer are truncated with "...".
 *
 * Destinations are set once by mql_log_open (at start, before other threads log) and kept
 * until mql_log_close; only their file descriptors change afterwards: mql_log_reopen opens
 * each file again and dup2()s the new descriptor onto the old number, which is atomic, so
 * writers need no lock and a line is never lost or split by a log rotation. syslog(3) is
 * thread-safe in glibc; it gets the line without the timestamp (syslog adds its own).
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static atomic_uint log_types = MQL_LOGT_DEFAULT;

static const char *level_names[] = {"error", "warning", "notice", "info", "debug"};
static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG};

/* The destinations; opened == false means "stderr only" (before mql_log_open). */
static struct {
    bool opened;
    uint32_t dests; /* MQL_LOGD_* */
    int n_files;
    int fds[MQL_LOG_MAX_FILES];
    bool created[MQL_LOG_MAX_FILES]; /* by mql_log_open (not there before) */
    struct mql_log_file files[MQL_LOG_MAX_FILES];
} out;

void mql_log_set_types(uint32_t types)
{
    atomic_store(&log_types, types);
}

bool mql_log_enabled(int level)
{
    return (atomic_load(&log_types) & MQL_LOGT(level)) != 0;
}

#define APPEND_FLAGS (O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY)

static int open_append(const char *path)
{
    return open(path, APPEND_FLAGS, 0644);
}

/* Open for appending; OUT: *created when the file did not exist before. */
static int open_append_new(const char *path, bool *created)
{
    int fd = open(path, APPEND_FLAGS | O_EXCL, 0644);
    *created = fd >= 0;
    if (fd < 0 && errno == EEXIST)
        fd = open_append(path);
    return fd;
}

mql_err mql_log_open(const mql_log_conf *cfg, char *errbuf, size_t errlen)
{
    int fds[MQL_LOG_MAX_FILES];
    bool created[MQL_LOG_MAX_FILES];
    int n = cfg->n_files;

    for (int i = 0; i < n; i++) {
        fds[i] = open_append_new(cfg->files[i].path, &created[i]);
        if (fds[i] < 0) {
            int e = errno;
            snprintf(errbuf, errlen, "%s: log_dest: cannot open '%s' for appending: %s",
                     cfg->files[i].where, cfg->files[i].path, strerror(e));
            while (i-- > 0)
                close(fds[i]);
            return MQL_E_IO;
        }
    }
    mql_log_close();
    for (int i = 0; i < n; i++) {
        out.fds[i] = fds[i];
        out.created[i] = created[i];
        out.files[i] = cfg->files[i];
    }
    out.n_files = n;
    out.dests = cfg->dests;
    if (out.dests & MQL_LOGD_SYSLOG)
        openlog("mqlite", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    out.opened = true;
    return MQL_OK;
}

/* Whether path still names the file open on fd (it was not moved away or replaced). */
static bool same_file(const char *path, int fd)
{
    struct stat a, b;
    return stat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

mql_err mql_log_reopen(char *errbuf, size_t errlen)
{
    mql_err rc = MQL_OK;

    for (int i = 0; i < out.n_files; i++) {
        int fd = open_append(out.files[i].path);
        int e = errno;
        if (fd >= 0 && dup2(fd, out.fds[i]) < 0)
            e = errno;
        else if (fd >= 0)
            e = 0;
        if (fd >= 0)
            close(fd);
        else if (same_file(out.files[i].path, out.fds[i]))
            e = 0; /* not rotated: the open descriptor is still the right file */
        if (e != 0 && rc == MQL_OK) {
            snprintf(errbuf, errlen,
                     "%s: log_dest: cannot reopen '%s': %s (still writing to the old file)",
                     out.files[i].where, out.files[i].path, strerror(e));
            rc = MQL_E_IO;
        }
    }
    return rc;
}

mql_err mql_log_chown(uid_t uid, gid_t gid, char *errbuf, size_t errlen)
{
    for (int i = 0; i < out.n_files; i++) {
        if (out.created[i] && fchown(out.fds[i], uid, gid) != 0) {
            snprintf(errbuf, errlen, "%s: log_dest: cannot give '%s' to uid %ld: %s",
                     out.files[i].where, out.files[i].path, (long)uid, strerror(errno));
            return MQL_E_IO;
        }
    }
    return MQL_OK;
}

void mql_log_close(void)
{
    if (!out.opened)
        return;
    for (int i = 0; i < out.n_files; i++)
        close(out.fds[i]);
    if (out.dests & MQL_LOGD_SYSLOG)
        closelog();
    out.n_files = 0;
    out.dests = 0;
    out.opened = false;
}

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to report a failing log */
        p += w;
        len -= (size_t)w;
    }
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
    int ts = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                      (int)(tv.tv_usec / 1000));
    if (ts < 0)
        return;
    int n = snprintf(line + ts, sizeof(line) - (size_t)ts, "%s [%s] ", level_names[level], id);
    if (n < 0)
        return;
    n += ts;
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
    if (!out.opened) {
        line[len++] = '\n';
        write_all(STDERR_FILENO, line, len);
        return;
    }
    if (out.dests & MQL_LOGD_SYSLOG) {
        line[len] = '\0';
        syslog(syslog_prio[level], "%s", line + ts);
    }
    line[len++] = '\n';
    if (out.dests & MQL_LOGD_STDERR)
        write_all(STDERR_FILENO, line, len);
    if (out.dests & MQL_LOGD_STDOUT)
        write_all(STDOUT_FILENO, line, len);
    for (int i = 0; i < out.n_files; i++)
        write_all(out.fds[i], line, len);
}
