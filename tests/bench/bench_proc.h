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

#endif
