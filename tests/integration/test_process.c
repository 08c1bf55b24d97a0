/*
 * test_process.c - the broker as an operating-system process: -d, pid_file, signals,
 * log_dest and `user`, against the real binary (DESIGN.md "Operations").
 *
 * What is checked, and how:
 * - `mqlite -d` returns 0 only once the daemon listens; the daemon is not our child, not a
 *   session leader, runs in "/", has /dev/null on descriptors 0-2, writes its pid to
 *   pid_file (relative paths mean the start directory) without leaving temporary files,
 *   and SIGTERM stops it and removes the pid file. A start-up failure makes `mqlite -d`
 *   exit 1 with the reason on its stderr and leaves no pid file.
 * - A foreground broker writes and removes its pid file too (SIGTERM and SIGINT).
 * - `log_dest file` (alone, or with stderr) and SIGHUP reopening the file after it was
 *   moved away (logrotate); an unwritable log file stops the start with FILE:LINE.
 * - `user nobody` as root: the running broker's uids/gids are nobody's, it serves and
 *   persists, and stops cleanly; an unknown user stops the start. Without root: a notice.
 *
 * The daemon is reparented away from the test, so it is watched through its pid (kill 0 and
 * /proc/PID/stat, a zombie counts as gone). Every wait is bounded; .fini kills a daemon a
 * failed test left running. Works behind $MQLITE_WRAPPER (qemu-user runs the guest in the
 * same process, so pids and /proc entries are the broker's).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* qemu-user starts slowly: generous, but bounded. */
#define START_MS 20000
#define STOP_MS 10000

static bool process_gone(pid_t pid);

static pid_t daemon_pid;        /* a daemon this test started, for process_fini */
static char work_dir[PATH_MAX]; /* this test's own temp dir (daemon tests), "" if none */

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A test that passes removes its work dir itself (done_work_dir); one that failed keeps it
 * (config, output, logs) and its path is printed here. */
static void process_fini(void)
{
    if (daemon_pid > 0 && !process_gone(daemon_pid)) {
        fprintf(stderr, "test_process: killing daemon %ld that a failed test left running\n",
                (long)daemon_pid);
        kill(daemon_pid, SIGKILL);
    }
    if (work_dir[0] != '\0')
        fprintf(stderr, "test_process: kept %s\n", work_dir);
    tb_fini();
}

TestSuite(process, .fini = process_fini, .timeout = 90);

static void done_work_dir(void)
{
    nftw(work_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    work_dir[0] = '\0';
}

/* ---- helpers ----------------------------------------------------------------------- */

static void make_work_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof work_dir, "%s/mqlite-process-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    cr_assert(mkdtemp(work_dir) != NULL, "mkdtemp: %s", strerror(errno));
    if (geteuid() == 0)
        chmod(work_dir, 0777);
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    cr_assert(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* A listening socket on a free port, to make the broker's bind fail. OUT: *port. */
static int occupy_port(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    cr_assert(listen(fd, 1) == 0);
    cr_assert(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert(fclose(f) == 0);
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static bool wait_file_contains(const char *path, const char *needle, int timeout_ms)
{
    int64_t deadline = tb_now_ms() + timeout_ms;
    for (;;) {
        if (file_contains(path, needle))
            return true;
        if (tb_now_ms() >= deadline)
            return false;
        tb_sleep_ms(20);
    }
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/*
 * Run `[$MQLITE_WRAPPER] $MQLITE_BIN ARGS...` in dir with stdout+stderr to out_path, and
 * wait at most timeout_ms for it to exit. Returns its exit status (128+signal if killed,
 * -1 if it had to be killed after the timeout).
 */
static int run_broker(const char *dir, const char *out_path, int timeout_ms, const char *a1,
                      const char *a2, const char *a3)
{
    const char *const extra[] = {a1, a2, a3, NULL};
    char words[1024];
    char *argv[TB_BROKER_ARGV_MAX];
    /* extra stops at its first NULL: a1..a3 are given in order */
    tb_broker_argv(argv, words, sizeof(words), extra);
    return tb_run(argv, dir, out_path, timeout_ms);
}

static long read_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long pid = -1;
    char nl = 0;
    int n = fscanf(f, "%ld%c", &pid, &nl);
    fclose(f);
    return n == 2 && nl == '\n' ? pid : -1;
}

/* The broker listens before it writes its pid file (and before it drops root), so a test
 * that got the port from tb_start waits for the file. */
static long wait_pid_file(const char *path, int timeout_ms)
{
    int64_t deadline = tb_now_ms() + timeout_ms;
    for (;;) {
        long pid = read_pid_file(path);
        if (pid > 0 || tb_now_ms() >= deadline)
            return pid;
        tb_sleep_ms(10);
    }
}

/* True once pid no longer runs (gone, or a zombie nobody reaped yet). */
static bool process_gone(pid_t pid)
{
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    char path[64], stat_line[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(stat_line, 1, sizeof stat_line - 1, f);
    fclose(f);
    stat_line[n] = '\0';
    const char *p = strrchr(stat_line, ')');
    return p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static bool wait_gone(pid_t pid, int timeout_ms)
{
    int64_t deadline = tb_now_ms() + timeout_ms;
    while (!process_gone(pid)) {
        if (tb_now_ms() >= deadline)
            return false;
        tb_sleep_ms(20);
    }
    return true;
}

static void readlink_str(const char *path, char *out, size_t cap)
{
    ssize_t n = readlink(path, out, cap - 1);
    out[n < 0 ? 0 : n] = '\0';
}

/* The "Uid:" or "Gid:" line of /proc/PID/status: all four ids equal to want. */
static bool proc_ids_are(pid_t pid, const char *key, long want)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool ok = false;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, strlen(key)) != 0)
            continue;
        long ids[4];
        ok = sscanf(line + strlen(key), "%ld %ld %ld %ld", &ids[0], &ids[1], &ids[2], &ids[3]) ==
                 4 &&
             ids[0] == want && ids[1] == want && ids[2] == want && ids[3] == want;
        break;
    }
    fclose(f);
    return ok;
}

/* Count the entries of dir whose name starts with prefix. */
static int count_entries(const char *dir, const char *prefix)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls -a '%s'", dir);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    char name[512];
    int n = 0;
    while (fgets(name, sizeof name, p) != NULL) {
        if (strncmp(name, prefix, strlen(prefix)) == 0)
            n++;
    }
    pclose(p);
    return n;
}

/* ---- -d and pid_file ---------------------------------------------------------------- */

/* -d: returns once listening; a proper daemon; relative pid_file/log paths are taken from
 * the start directory; SIGTERM removes the pid file. */
Test(process, daemon_pid_file_and_sigterm)
{
    tb_skip_unless_tcp("it writes its own configuration with a tcp listener; how the process "
                       "daemonises does not depend on the transport");
    make_work_dir();
    uint16_t port = free_port();
    char conf[PATH_MAX + 32], out[PATH_MAX + 32], pidf[PATH_MAX + 32], logf[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/mqlite.conf", work_dir);
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    snprintf(pidf, sizeof pidf, "%s/mqlite.pid", work_dir);
    snprintf(logf, sizeof logf, "%s/mqlite.log", work_dir);
    char text[512];
    snprintf(text, sizeof text,
             "listener %u 127.0.0.1\nallow_anonymous true\nuser root\npid_file "
             "mqlite.pid\nlog_dest file mqlite.log\n"
             "log_dest stderr\n",
             port);
    write_text(conf, text);

    int64_t t0 = tb_now_ms();
    int status = run_broker(work_dir, out, START_MS, "-d", "-c", "mqlite.conf");
    cr_assert_eq(status, 0, "mqlite -d exited %d (output in %s)", status, out);
    long pid = read_pid_file(pidf);
    cr_assert(pid > 0, "no pid in %s after mqlite -d returned (%lld ms)", pidf,
              (long long)(tb_now_ms() - t0));
    daemon_pid = (pid_t)pid;
    /* Returned only once listening: a client is served at once. */
    tc_client *c = tc_open(port, "daemon-client", true, 60, false);
    tc_ping(c);
    tc_disconnect(c);

    cr_assert_eq(count_entries(work_dir, "mqlite.pid"), 1, "temporary pid files left in %s",
                 work_dir);
    cr_assert(kill(daemon_pid, 0) == 0, "daemon %ld not running", pid);
    pid_t sid = getsid(daemon_pid);
    cr_assert(sid > 0 && sid != daemon_pid, "daemon must not be a session leader (sid %ld)",
              (long)sid);
    cr_assert_neq(sid, getsid(0), "daemon still in the test's session");
    char link[PATH_MAX], path[64];
    snprintf(path, sizeof path, "/proc/%ld/cwd", pid);
    readlink_str(path, link, sizeof link);
    cr_assert_str_eq(link, "/", "daemon cwd");
    for (int fd = 0; fd <= 2; fd++) {
        snprintf(path, sizeof path, "/proc/%ld/fd/%d", pid, fd);
        readlink_str(path, link, sizeof link);
        cr_assert_str_eq(link, "/dev/null", "daemon fd %d", fd);
    }
    char running[64];
    snprintf(running, sizeof running, "running (pid %ld)", pid);
    cr_assert(wait_file_contains(logf, running, TB_WAIT_MS), "%s lacks '%s'", logf, running);
    cr_assert(wait_file_contains(logf, "daemon-client", TB_WAIT_MS));
    /* Up to readiness, stderr was the caller's. */
    cr_assert(file_contains(out, running), "start-up lines not on the caller's stderr");

    cr_assert_eq(kill(daemon_pid, SIGTERM), 0);
    cr_assert(wait_gone(daemon_pid, STOP_MS), "daemon did not exit within %d ms", STOP_MS);
    cr_assert_not(exists(pidf), "pid file %s not removed", pidf);
    cr_assert(wait_file_contains(logf, "mqlite stopped", TB_WAIT_MS));
    daemon_pid = 0;
    done_work_dir();
}

/* -d with a port that is taken: exit 1 with the reason, no pid file, no process left. */
Test(process, daemon_start_failure_exits_1)
{
    make_work_dir();
    uint16_t port;
    int busy = occupy_port(&port);
    char conf[PATH_MAX + 32], out[PATH_MAX + 32], pidf[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/mqlite.conf", work_dir);
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    snprintf(pidf, sizeof pidf, "%s/fail.pid", work_dir);
    char text[PATH_MAX + 128];
    snprintf(text, sizeof text,
             "listener %u 127.0.0.1\nallow_anonymous true\nuser root\npid_file %s\n", port, pidf);
    write_text(conf, text);
    int status = run_broker(work_dir, out, START_MS, "-d", "-c", conf);
    close(busy);
    cr_assert_eq(status, 1, "mqlite -d exited %d, want 1", status);
    cr_assert(file_contains(out, "cannot listen"), "reason not on stderr (see %s)", out);
    cr_assert_not(exists(pidf), "pid file left after a failed start");
    done_work_dir();
}

/* The same when only a log file is configured: the reason still reaches the caller. */
Test(process, daemon_start_failure_reported_without_stderr_logging)
{
    make_work_dir();
    uint16_t port;
    int busy = occupy_port(&port);
    char conf[PATH_MAX + 32], out[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/mqlite.conf", work_dir);
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    char text[PATH_MAX + 128];
    snprintf(text, sizeof text,
             "listener %u 127.0.0.1\nallow_anonymous true\nuser root\nlog_dest file %s/x.log\n",
             port, work_dir);
    write_text(conf, text);
    int status = run_broker(work_dir, out, START_MS, "-d", "-c", conf);
    close(busy);
    cr_assert_eq(status, 1);
    cr_assert(file_contains(out, "mqlite: cannot listen"), "reason not on stderr (see %s)", out);
    done_work_dir();
}

/* Foreground: the pid file holds the broker's pid and is removed on SIGTERM. */
Test(process, foreground_pid_file_removed_on_sigterm)
{
    mql_broker *b = tb_start("pid_file %DIR%/fg.pid\n");
    char pidf[PATH_MAX + 32];
    snprintf(pidf, sizeof pidf, "%s/fg.pid", tb_dir(b));
    long pid = wait_pid_file(pidf, TB_WAIT_MS);
    cr_assert(pid > 0 && kill((pid_t)pid, 0) == 0, "pid file %s: %ld", pidf, pid);
    tb_assert_serves(b);
    cr_assert_eq(tb_halt(b), 0);
    cr_assert_not(exists(pidf), "pid file not removed on SIGTERM");
    tb_stop(b);
}

/* SIGINT shuts down cleanly too and removes the pid file. */
Test(process, foreground_pid_file_removed_on_sigint)
{
    mql_broker *b = tb_start("pid_file %DIR%/int.pid\n");
    char pidf[PATH_MAX + 32];
    snprintf(pidf, sizeof pidf, "%s/int.pid", tb_dir(b));
    long pid = wait_pid_file(pidf, TB_WAIT_MS);
    cr_assert(pid > 0, "no pid in %s", pidf);
    cr_assert_eq(kill((pid_t)pid, SIGINT), 0);
    int64_t deadline = tb_now_ms() + STOP_MS;
    while (tb_alive(b) && tb_now_ms() < deadline)
        tb_sleep_ms(20);
    cr_assert_not(tb_alive(b), "no exit within %d ms of SIGINT", STOP_MS);
    cr_assert_not(exists(pidf), "pid file not removed on SIGINT");
    cr_assert(tb_log_contains(b, "SIGINT received", 0));
    tb_stop(b);
}

/* A pid file that cannot be written stops the start, naming it. */
Test(process, pid_file_unwritable_refused)
{
    make_work_dir();
    char conf[PATH_MAX + 32], out[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/mqlite.conf", work_dir);
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    char text[256];
    snprintf(
        text, sizeof text,
        "listener %u 127.0.0.1\nallow_anonymous true\nuser root\npid_file /nonexistent-dir/m.pid\n",
        free_port());
    write_text(conf, text);
    int status = run_broker(work_dir, out, START_MS, "-c", conf, NULL);
    cr_assert_eq(status, 1, "exit %d", status);
    cr_assert(file_contains(out, "pid_file '/nonexistent-dir/m.pid'"), "see %s", out);
    done_work_dir();
}

/* ---- log_dest ---------------------------------------------------------------------- */

/* log_dest file + stderr; after the file is moved away, SIGHUP reopens it by name. */
Test(process, log_file_reopened_on_sighup)
{
    mql_broker *b = tb_start("pid_file %DIR%/p.pid\nlog_dest file %DIR%/a.log\nlog_dest stderr\n");
    char logf[PATH_MAX + 32], rotated[PATH_MAX + 32], pidf[PATH_MAX + 32];
    snprintf(logf, sizeof logf, "%s/a.log", tb_dir(b));
    snprintf(rotated, sizeof rotated, "%s/a.log.1", tb_dir(b));
    snprintf(pidf, sizeof pidf, "%s/p.pid", tb_dir(b));
    long pid = wait_pid_file(pidf, TB_WAIT_MS);
    cr_assert(pid > 0, "no pid in %s", pidf);

    tc_client *c = tc_open(tb_port(b), "before-rotate", true, 60, false);
    tc_disconnect(c);
    cr_assert(wait_file_contains(logf, "\"before-rotate\"", TB_WAIT_MS));
    cr_assert_eq(rename(logf, rotated), 0);
    cr_assert_eq(kill((pid_t)pid, SIGHUP), 0);
    cr_assert(wait_file_contains(logf, "[broker.reload] SIGHUP: log files reopened", TB_WAIT_MS),
              "no reopened file %s", logf);
    c = tc_open(tb_port(b), "after-rotate", true, 60, false);
    tc_disconnect(c);
    cr_assert(wait_file_contains(logf, "\"after-rotate\"", TB_WAIT_MS));
    /* (the DISCONNECT line of before-rotate may land in either file) */
    cr_assert_not(file_contains(logf, "[client.connect] client \"before-rotate\""));
    cr_assert(file_contains(rotated, "[client.connect] client \"before-rotate\""));
    cr_assert_not(file_contains(rotated, "after-rotate"));
    /* stderr (the harness's broker.log) got every line */
    cr_assert(tb_log_contains(b, "\"before-rotate\"", TB_WAIT_MS));
    cr_assert(tb_log_contains(b, "\"after-rotate\"", TB_WAIT_MS));
    /* the line format is kept: timestamp, level, [id] */
    cr_assert(file_contains(logf, "Z notice [client.connect] client \"after-rotate\""));
    cr_assert_eq(tb_stop(b), 0);
}

/* log_dest file alone replaces the default stderr. */
Test(process, log_file_only_leaves_stderr_quiet)
{
    mql_broker *b = tb_start("log_dest file %DIR%/only.log\n");
    char logf[PATH_MAX + 32];
    snprintf(logf, sizeof logf, "%s/only.log", tb_dir(b));
    tc_client *c = tc_open(tb_port(b), "quiet-stderr", true, 60, false);
    tc_disconnect(c);
    cr_assert(wait_file_contains(logf, "\"quiet-stderr\"", TB_WAIT_MS));
    cr_assert_not(tb_log_contains(b, "quiet-stderr", TB_QUIET_MS), "stderr still logged");
    cr_assert_eq(tb_stop(b), 0);
}

/* A log file that cannot be opened stops the start with FILE:LINE of its log_dest line. */
Test(process, log_file_unopenable_refused)
{
    make_work_dir();
    char conf[PATH_MAX + 32], out[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/mqlite.conf", work_dir);
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    char text[256];
    snprintf(text, sizeof text,
             "listener %u 127.0.0.1\nallow_anonymous true\nuser root\n\nlog_dest file "
             "/nonexistent-dir/x.log\n",
             free_port());
    write_text(conf, text);
    int status = run_broker(work_dir, out, START_MS, "-c", conf, NULL);
    cr_assert_eq(status, 1, "exit %d", status);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%s:5: log_dest: cannot open '/nonexistent-dir/x.log'", conf);
    cr_assert(file_contains(out, want), "'%s' not in %s", want, out);
    done_work_dir();
}

/* ---- user -------------------------------------------------------------------------- */

/* As root: `user nobody` takes effect after start; the broker serves and persists as nobody
 * (the harness's temp dir is world-writable) and stops cleanly, removing its pid file. */
Test(process, user_drops_root_to_nobody)
{
    if (geteuid() != 0)
        cr_skip_test("needs root");
    struct passwd *pw = getpwnam("nobody");
    if (pw == NULL)
        cr_skip_test("no user nobody here");
    long uid = (long)pw->pw_uid, gid = (long)pw->pw_gid;
    mql_broker *b = tb_start("user nobody\npid_file %DIR%/u.pid\npersistence true\n"
                             "persistence_location %DIR%\nlog_dest file %DIR%/u.log\n"
                             "log_dest stderr\n");
    char pidf[PATH_MAX + 32], logf[PATH_MAX + 32], rotated[PATH_MAX + 32];
    snprintf(pidf, sizeof pidf, "%s/u.pid", tb_dir(b));
    snprintf(logf, sizeof logf, "%s/u.log", tb_dir(b));
    snprintf(rotated, sizeof rotated, "%s/u.log.1", tb_dir(b));
    long pid = wait_pid_file(pidf, TB_WAIT_MS);
    cr_assert(pid > 0, "no pid in %s", pidf);
    cr_assert(tb_log_contains(b, "[broker.user] dropped root: running as user nobody", TB_WAIT_MS));
    cr_assert(proc_ids_are((pid_t)pid, "Uid:", uid), "uids are not nobody's");
    cr_assert(proc_ids_are((pid_t)pid, "Gid:", gid), "gids are not nobody's");
    /* The log file it created as root is nobody's now: SIGHUP can reopen it, and after a
     * rotation nobody creates the new one. */
    struct stat st;
    cr_assert(stat(logf, &st) == 0 && (long)st.st_uid == uid, "%s not given to nobody", logf);
    /* So is the store it opened as root: a later start as nobody can open it. */
    char dbf[PATH_MAX + 32];
    snprintf(dbf, sizeof dbf, "%s/mqlite.db", tb_dir(b));
    cr_assert(stat(dbf, &st) == 0 && (long)st.st_uid == uid, "%s not given to nobody", dbf);
    cr_assert_eq(kill((pid_t)pid, SIGHUP), 0);
    cr_assert(tb_log_contains(b, "SIGHUP: log files reopened", TB_WAIT_MS), "reopen as nobody");
    cr_assert_eq(rename(logf, rotated), 0);
    cr_assert_eq(kill((pid_t)pid, SIGHUP), 0);
    cr_assert(wait_file_contains(logf, "SIGHUP: log files reopened", TB_WAIT_MS));

    tc_client *s = tc_open(tb_port(b), "nobody-sub", false, 60, false);
    tc_subscribe(s, 1, "drop/t", 1, 1);
    tc_client *p = tc_open(tb_port(b), "nobody-pub", true, 60, false);
    tc_publish(p, "drop/t", "as-nobody", 1, true);
    uint16_t id =
        tc_expect_publish(s, TB_WAIT_MS, .topic = "drop/t", .payload = "as-nobody", .qos = 1);
    tc_sendp(s, pk_puback(id));
    tc_disconnect(p);
    tc_disconnect(s);
    cr_assert_eq(tb_halt(b), 0);
    cr_assert_not(exists(pidf), "pid file not removed after dropping root");
    tb_stop(b);
}

/* As root: an unknown user stops the start; the broker never serves as root. */
Test(process, user_unknown_refused)
{
    if (geteuid() != 0)
        cr_skip_test("needs root");
    make_work_dir();
    char conf[PATH_MAX + 32], out[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/mqlite.conf", work_dir);
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    char text[256];
    snprintf(text, sizeof text, "listener %u 127.0.0.1\nuser no-such-user-7f3\n", free_port());
    write_text(conf, text);
    int status = run_broker(work_dir, out, START_MS, "-c", conf, NULL);
    cr_assert_eq(status, 1, "exit %d", status);
    cr_assert(file_contains(out, "user no-such-user-7f3: no such user"), "see %s", out);
    cr_assert(file_contains(out, "refusing to run as root"), "see %s", out);
    done_work_dir();
}

/* Not root: `user` is a notice and the broker runs as it is. */
Test(process, user_without_root_is_a_notice)
{
    if (geteuid() == 0)
        cr_skip_test("runs only without root");
    mql_broker *b = tb_start("user nobody\n");
    cr_assert(tb_log_contains(b, "[broker.user] user nobody: not running as root", TB_WAIT_MS));
    tb_assert_serves(b);
    cr_assert_eq(tb_stop(b), 0);
}

/* ---- mosquitto 2.0's defaults ------------------------------------------------------- */

/* Start `mqlite -d -c WORK/d.conf [more]` on conf_text (which must set pid_file WORK/d.pid,
 * written here as %s) and return the daemon's pid; its start-up output goes to WORK/out.txt. */
static pid_t start_daemon(const char *conf_text, const char *more1, const char *more2)
{
    char conf[PATH_MAX + 32], out[PATH_MAX + 32], pidf[PATH_MAX + 32], text[1024];
    snprintf(conf, sizeof conf, "%s/d.conf", work_dir);
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    snprintf(pidf, sizeof pidf, "%s/d.pid", work_dir);
    snprintf(text, sizeof text, conf_text, pidf);
    write_text(conf, text);
    const char *const extra[] = {"-d", "-c", conf, more1, more2, NULL};
    char words[1024];
    char *argv[TB_BROKER_ARGV_MAX];
    tb_broker_argv(argv, words, sizeof(words), extra);
    int status = tb_run(argv, work_dir, out, START_MS);
    cr_assert_eq(status, 0, "mqlite -d exited %d (output in %s)", status, out);
    long pid = read_pid_file(pidf);
    cr_assert(pid > 0, "no pid in %s", pidf);
    daemon_pid = (pid_t)pid;
    return (pid_t)pid;
}

static void stop_daemon(void)
{
    cr_assert_eq(kill(daemon_pid, SIGTERM), 0);
    cr_assert(wait_gone(daemon_pid, STOP_MS), "daemon did not exit within %d ms", STOP_MS);
    daemon_pid = 0;
    done_work_dir();
}

static bool out_says(const char *needle)
{
    char out[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s/out.txt", work_dir);
    return wait_file_contains(out, needle, TB_WAIT_MS);
}

/* Whether a TCP connection to addr:port (IPv4 or IPv6 text) is accepted. */
static bool tcp_accepts(const char *addr, uint16_t port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (strchr(addr, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        cr_assert(inet_pton(AF_INET6, addr, &a->sin6_addr) == 1);
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        cr_assert(inet_pton(AF_INET, addr, &a->sin_addr) == 1);
        len = sizeof(*a);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return ok;
}

/* This host's first IPv4 address that is not loopback, or false. */
static bool non_loopback_ipv4(char *out, size_t cap)
{
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return false;
    bool found = false;
    for (struct ifaddrs *i = ifs; i != NULL && !found; i = i->ifa_next) {
        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
            (i->ifa_flags & IFF_LOOPBACK))
            continue;
        found = inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out,
                          (socklen_t)cap) != NULL;
    }
    freeifaddrs(ifs);
    return found;
}

/* A configured listener and no allow_anonymous line: anonymous clients are refused (as in
 * mosquitto 2.0), and the start says nobody can get in without a password file. */
Test(process, default_listener_refuses_anonymous)
{
    tb_skip_unless_tcp("it writes its own configuration with a tcp listener");
    make_work_dir();
    uint16_t port = free_port();
    char text[256];
    snprintf(text, sizeof text, "listener %u 127.0.0.1\nuser root\npid_file %%s\n", port);
    start_daemon(text, NULL, NULL);
    tc_client *c = tc_connect(port);
    tc_sendp(c, PK_CONNECT(.client_id = "anon", .clean = true, .keepalive = 60));
    tc_expectp(c, pk_connack(false, 0x05), TB_WAIT_MS);
    tc_close(c);
    c = tc_connect(port);
    tc_sendp(c, PK_CONNECT(.version = 5, .client_id = "anon5", .clean = true, .keepalive = 60));
    tc_expect_connack_v5(c, false, 0x87, NULL);
    tc_close(c);
    cr_assert(out_says("there is no password_file: no client can connect"));
    cr_assert(out_says("user root: running as root, as configured"));
    stop_daemon();
}

/* No listener configured (here with -p PORT): loopback only, anonymous clients welcome,
 * and said at start; not reachable on another address of this host. */
Test(process, default_no_listener_is_local_only)
{
    tb_skip_unless_tcp("it starts its own loopback listeners");
    make_work_dir();
    uint16_t port = free_port();
    char ps[16];
    snprintf(ps, sizeof ps, "%u", port);
    start_daemon("user root\npid_file %s\n", "-p", ps);
    tc_client *c = tc_open(port, "local-anon", true, 60, false);
    tc_ping(c);
    tc_disconnect(c);
    cr_assert(out_says("no listener configured: listening on the loopback interface only"));
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (v6 >= 0) {
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        bool have_v6 = bind(v6, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(v6);
        if (have_v6)
            cr_assert(tcp_accepts("::1", port), "not listening on [::1]:%u", port);
    }
    char other[64];
    if (non_loopback_ipv4(other, sizeof other))
        cr_assert_not(tcp_accepts(other, port), "reachable on %s:%u", other, port);
    stop_daemon();
}

/* Started as root with no `user` line: root is given up, to `mqlite` when that user exists,
 * else to `nobody` (mosquitto 2.0 does the same with `mosquitto`). */
Test(process, default_root_is_given_up)
{
    if (geteuid() != 0)
        cr_skip_test("needs root");
    tb_skip_unless_tcp("it writes its own configuration with a tcp listener");
    const char *name = getpwnam("mqlite") != NULL ? "mqlite" : "nobody";
    struct passwd *pw = getpwnam(name);
    if (pw == NULL)
        cr_skip_test("neither mqlite nor nobody exists here");
    long uid = (long)pw->pw_uid;
    make_work_dir();
    uint16_t port = free_port();
    char text[256];
    snprintf(text, sizeof text, "listener %u 127.0.0.1\nallow_anonymous true\npid_file %%s\n",
             port);
    pid_t pid = start_daemon(text, NULL, NULL);
    char want[128];
    snprintf(want, sizeof want, "started as root with no 'user' line: giving root up to user %s",
             name);
    cr_assert(out_says(want), "'%s' not said", want);
    cr_assert(proc_ids_are(pid, "Uid:", uid), "uids are not %s's", name);
    tc_client *c = tc_open(port, "after-drop", true, 60, false);
    tc_ping(c);
    tc_disconnect(c);
    stop_daemon();
}

/* ---- systemd ------------------------------------------------------------------------ */

/* The next datagram on fd starts with want (bounded by the socket's receive timeout). */
static void expect_notify(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    cr_assert(n > 0, "no '%s' from the broker on $NOTIFY_SOCKET: %s", want, strerror(errno));
    buf[n] = '\0';
    cr_assert(strncmp(buf, want, strlen(want)) == 0, "got '%s', want '%s'", buf, want);
}

/* Type=notify: READY=1 once it serves, RELOADING=1 and READY=1 around SIGHUP, STOPPING=1
 * at SIGTERM, on the datagram socket systemd names in $NOTIFY_SOCKET. */
Test(process, systemd_notify_protocol)
{
    make_work_dir();
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/notify", work_dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    cr_assert(strlen(path) < sizeof sa.sun_path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s: %s", path,
              strerror(errno));
    chmod(path, 0666); /* the broker may have given root up */
    struct timeval tv = {.tv_sec = TB_WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", path, 1);
    mql_broker *b = tb_start(NULL);
    unsetenv("NOTIFY_SOCKET");
    expect_notify(fd, "READY=1");
    tb_assert_serves(b);
    cr_assert_eq(kill(tb_pid(b), SIGHUP), 0);
    expect_notify(fd, "RELOADING=1\nMONOTONIC_USEC=");
    expect_notify(fd, "READY=1");
    cr_assert_eq(tb_halt(b), 0);
    expect_notify(fd, "STOPPING=1");
    tb_stop(b);
    close(fd);
    done_work_dir();
}

/* ---- --check ------------------------------------------------------------------------ */

/* Run `mqlite --check -c WORK/c.conf` on text (with %s standing for WORK); returns its exit
 * status, its output in WORK/check.txt. */
static int check_config(const char *text)
{
    char conf[PATH_MAX + 32], out[PATH_MAX + 32], body[2048];
    snprintf(conf, sizeof conf, "%s/c.conf", work_dir);
    snprintf(out, sizeof out, "%s/check.txt", work_dir);
    snprintf(body, sizeof body, text, work_dir, work_dir, work_dir);
    write_text(conf, body);
    return run_broker(work_dir, out, START_MS, "--check", "-c", conf);
}

static bool check_says(const char *needle)
{
    char out[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s/check.txt", work_dir);
    return file_contains(out, needle);
}

/* --check reads what start-up reads: a file named by the configuration that is missing or
 * does not load, a store directory that is not there, a log or pid file that cannot be
 * created are each reported with what is wrong, and exit 1; a configuration that passes
 * starts. */
Test(process, check_reads_what_startup_reads)
{
    make_work_dir();
    char store[PATH_MAX + 32];
    snprintf(store, sizeof store, "%s/store", work_dir);
    cr_assert_eq(mkdir(store, 0755), 0);
    const char *good = "listener 1 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
                       "persistence_location %s/store\npid_file %s/m.pid\n"
                       "log_dest file %s/m.log\n";
    cr_assert_eq(check_config(good), 0);
    cr_assert(check_says("configuration is valid"));

    cr_assert_eq(check_config("listener 1 127.0.0.1\ncertfile %s/none.pem\nkeyfile %s/none.key\n"),
                 1);
    cr_assert(check_says("none.pem"), "the missing certificate is not named");

    char pw[PATH_MAX + 32];
    snprintf(pw, sizeof pw, "%s/passwd", work_dir);
    write_text(pw, "alice-without-a-hash\n");
    cr_assert_eq(check_config("listener 1 127.0.0.1\npassword_file %s/passwd\n"), 1);
    cr_assert(check_says("passwd:1"), "the bad password file line is not named");

    cr_assert_eq(check_config("listener 1 127.0.0.1\npersistence true\n"
                              "persistence_location %s/nowhere\n"),
                 1);
    cr_assert(check_says("persistence_location") && check_says("nowhere"));

    cr_assert_eq(check_config("listener 1 127.0.0.1\nlog_dest file %s/no/dir/m.log\n"), 1);
    cr_assert(check_says("log_dest file") && check_says("does not exist"));

    cr_assert_eq(check_config("listener 1 127.0.0.1\npid_file %s/no/dir/m.pid\n"), 1);
    cr_assert(check_says("pid_file"));

    /* what passed starts (the port of the good configuration is a free one now) */
    char text[1024];
    snprintf(text, sizeof text,
             "listener %u 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
             "persistence_location %%s/store\npid_file %%s\n",
             free_port());
    char conf_text[1024]; /* the store directory now; start_daemon fills in the pid file */
    snprintf(conf_text, sizeof conf_text, text, work_dir, "%s");
    start_daemon(conf_text, NULL, NULL);
    stop_daemon();
}
