/*
 * bench_proc: broker process probes for mqbench (see bench_proc.h).
 *
 * Each call opens and parses one small /proc file; they are meant to be called a few
 * times per run (at the edges of the measured interval), never per message.
 */
#include "bench_proc.h"

#include <dirent.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static bool read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;
    if (f == NULL)
        return false;
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

/* Sum of the first field of /proc/PID/task/TID/schedstat (time on CPU in ns) over every
 * thread: nanosecond resolution, where stat's utime/stime tick at 10 ms. */
static bool schedstat_cpu(pid_t pid, double *sec)
{
    char path[320], buf[256];
    unsigned long long ns, sum = 0;
    int n = 0;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    if (d == NULL)
        return false;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        if (read_file(path, buf, sizeof(buf)) && sscanf(buf, "%llu", &ns) == 1) {
            sum += ns;
            n++;
        }
    }
    closedir(d);
    if (n == 0 || sum == 0)
        return false;
    *sec = (double)sum / 1e9;
    return true;
}

bool mqb_proc_cpu(pid_t pid, double *sec)
{
    char path[64], buf[2048], *p;
    unsigned long long ut, st;
    long tck = sysconf(_SC_CLK_TCK);
    if (pid <= 0 || tck <= 0)
        return false;
    if (schedstat_cpu(pid, sec))
        return true;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!read_file(path, buf, sizeof(buf)))
        return false;
    /* comm may hold spaces and parentheses: fields restart after the last ')' */
    p = strrchr(buf, ')');
    if (p == NULL)
        return false;
    /* after ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    *sec = (double)(ut + st) / (double)tck;
    return true;
}

static bool status_field(const char *path, const char *key, long long *val)
{
    char buf[8192], *p;
    size_t klen = strlen(key);
    if (!read_file(path, buf, sizeof(buf)))
        return false;
    for (p = buf; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, klen) == 0) {
            *val = strtoll(p + klen, NULL, 10);
            return true;
        }
    }
    return false;
}

bool mqb_proc_rss_kb(pid_t pid, long *kb)
{
    char path[64];
    long long v;
    if (pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!status_field(path, "VmRSS:", &v))
        return false;
    *kb = (long)v;
    return true;
}

bool mqb_proc_write_bytes(pid_t pid, uint64_t *bytes)
{
    char path[64];
    long long v;
    if (pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/io", (int)pid);
    if (!status_field(path, "write_bytes:", &v))
        return false;
    *bytes = (uint64_t)v;
    return true;
}

bool mqb_dir_bytes(const char *dir, uint64_t *bytes)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    uint64_t sum = 0;
    char path[4096];
    struct stat st;
    if (d == NULL)
        return false;
    while ((e = readdir(d)) != NULL) {
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    *bytes = sum;
    return true;
}

/* The perf id of a syscalls tracepoint, from tracefs (either mount point). */
static bool tracepoint_id(const char *name, unsigned long long *id)
{
    static const char *const roots[] = {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"};
    char path[160], buf[32];
    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        snprintf(path, sizeof(path), "%s/events/syscalls/%s/id", roots[i], name);
        if (read_file(path, buf, sizeof(buf)) && sscanf(buf, "%llu", id) == 1)
            return true;
    }
    return false;
}

bool mqb_syncs_open(mqb_syncs *s, pid_t pid)
{
    static const char *const events[] = {"sys_enter_fsync", "sys_enter_fdatasync"};
    unsigned long long ids[2];
    char path[64];
    s->n = 0;
    if (pid <= 0 || !tracepoint_id(events[0], &ids[0]) || !tracepoint_id(events[1], &ids[1]))
        return false;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    if (d == NULL)
        return false;
    bool ok = true;
    while (ok && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int tid = atoi(e->d_name);
        for (int k = 0; k < 2 && ok; k++) {
            struct perf_event_attr a;
            memset(&a, 0, sizeof(a));
            a.type = PERF_TYPE_TRACEPOINT;
            a.size = sizeof(a);
            a.config = ids[k];
            int fd = (int)syscall(SYS_perf_event_open, &a, tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
            if (fd < 0 || s->n == MQB_SYNC_MAX_FDS) {
                if (fd >= 0)
                    close(fd);
                ok = false;
                break;
            }
            s->fds[s->n++] = fd;
        }
    }
    closedir(d);
    if (!ok || s->n == 0) {
        mqb_syncs_close(s);
        return false;
    }
    return true;
}

bool mqb_syncs_read(const mqb_syncs *s, uint64_t *count)
{
    uint64_t sum = 0, v;
    if (s->n == 0)
        return false;
    for (int i = 0; i < s->n; i++) {
        if (read(s->fds[i], &v, sizeof(v)) != (ssize_t)sizeof(v))
            return false;
        sum += v;
    }
    *count = sum;
    return true;
}

void mqb_syncs_close(mqb_syncs *s)
{
    for (int i = 0; i < s->n; i++)
        close(s->fds[i]);
    s->n = 0;
}
