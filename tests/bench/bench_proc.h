/*
 * bench_proc: what mqbench reads about the broker process from /proc (Linux only).
 *
 * Every probe returns false when the value cannot be read (no pid given, process gone,
 * not permitted), and the caller prints "na" for it instead of a made-up number.
 */
#ifndef MQB_PROC_H
#define MQB_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* CPU seconds of the whole process (all threads): the sum of /proc/PID/task/TID/schedstat
 * (nanoseconds; a thread that exits between two calls takes its time with it), or where
 * that is missing utime + stime of /proc/PID/stat (one clock tick, usually 10 ms). OUT: sec. */
bool mqb_proc_cpu(pid_t pid, double *sec);

/* Resident set size in KiB (VmRSS of /proc/PID/status). OUT: kb. */
bool mqb_proc_rss_kb(pid_t pid, long *kb);

/* Bytes the process caused to be sent to storage (write_bytes of /proc/PID/io, counted
 * when page-cache pages are dirtied; 0 on tmpfs). OUT: bytes. */
bool mqb_proc_write_bytes(pid_t pid, uint64_t *bytes);

/* Sum of the sizes of the regular files directly in dir. OUT: bytes. */
bool mqb_dir_bytes(const char *dir, uint64_t *bytes);

/* fsync(2) + fdatasync(2) calls of a process, counted by perf tracepoint counters
 * (syscalls:sys_enter_fsync and sys_enter_fdatasync) on each of its threads: no ptrace, so
 * the broker runs at full speed. Needs tracefs and the right to perf_event_open another
 * process (root or CAP_PERFMON). Threads the process starts after mqb_syncs_open are not
 * counted (mqlite and mosquitto start theirs at startup). */
#define MQB_SYNC_MAX_FDS 512
typedef struct mqb_syncs {
    int n;
    int fds[MQB_SYNC_MAX_FDS];
} mqb_syncs;

/* Start counting. False (and nothing to close) when it cannot be done here. */
bool mqb_syncs_open(mqb_syncs *s, pid_t pid);
/* Calls counted since mqb_syncs_open. OUT: count. */
bool mqb_syncs_read(const mqb_syncs *s, uint64_t *count);
void mqb_syncs_close(mqb_syncs *s);

#endif
