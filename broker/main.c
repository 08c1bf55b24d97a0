/*
 * main.c - the mqlite command line and process life cycle.
 *
 *   mqlite [-c FILE] [-p PORT] [-v] [-d] [--check] [--help] [--version]
 *
 * Runs in the foreground by default (what busybox init and supervisors expect). With -d it
 * daemonises (fork, setsid, fork, chdir /, standard descriptors to /dev/null); the command
 * returns only once the daemon listens (exit 0) or has failed (exit 1, its error on the
 * terminal), so an init script's exit status means something. The order at start is fixed:
 *
 *   config -> log destinations -> [daemonise] -> broker start (store, listeners, as root)
 *   -> pid file -> drop root (`user`) -> [tell the waiting parent] -> signal loop
 *
 * Daemonising happens before the broker starts any thread (fork copies only the calling
 * thread). Root is dropped only after ports are bound and the store is open, and the broker
 * refuses to run if the drop fails. Relative paths (pid_file, persistence_location, log
 * files, the configuration file) are made absolute against the start directory before -d
 * changes to /, so they mean the same with and without -d.
 *
 * Signals are blocked in every thread and taken synchronously by the main thread with
 * sigwait(), so no broker code runs in a signal handler: SIGTERM/SIGINT shut down cleanly
 * and remove the pid file, SIGHUP reopens log files (logrotate) and re-reads the
 * configuration file for what can change at run time (log_type).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "startup.h"
#include "platform/log.h"
#include "platform/notify.h"
#include "version.h"

#ifndef MQL_VERSION
#define MQL_VERSION "0.0.0"
#endif

/* How long `mqlite -d` waits for the daemon to report that it runs (store recovery on a
 * large flash file can take a while). */
#define DAEMON_READY_TIMEOUT_MS 60000
/* Where `user NAME` is looked up (files only: a static binary has no NSS modules). */
#define PASSWD_FILE "/etc/passwd"
#define GROUP_FILE "/etc/group"
#define MAX_GROUPS 64

/* Whether start-up errors must also be written to stderr (it is not a log destination). */
static bool errors_to_stderr;

/* Whether this host has an IPv6 loopback to listen on (kernels and containers without IPv6
 * have none): local-only mode then listens on 127.0.0.1 alone. */
/* Say at start what the listener defaults decided, as mosquitto 2.0 users would want to
 * know: local-only mode, and listeners that nobody can log in to. */
static void explain_access(const mql_config *cfg)
{
    if (cfg->local_only)
        mql_notice("broker.listen",
                   "no listener configured: listening on the loopback interface only (port %u), "
                   "%s (mosquitto 2.0's local-only mode); add a 'listener' line to serve the "
                   "network",
                   cfg->listeners[0].port,
                   mql_config_allow_anonymous(cfg, 0) ? "clients need no password"
                                                      : "allow_anonymous false");
    for (int i = 0; i < cfg->n_listeners; i++) {
        const mql_listener_conf *l = &cfg->listeners[i];
        if (mql_config_allow_anonymous(cfg, i) || cfg->password_file[0] != '\0' ||
            l->use_identity_as_username)
            continue;
        mql_notice("broker.listen",
                   "listener %s%s%u: anonymous clients are refused (allow_anonymous false, the "
                   "default once a listener is configured) and there is no password_file: no "
                   "client can connect; set a password_file or 'allow_anonymous true'",
                   l->address, l->address[0] ? ":" : "port ", l->port);
    }
}

static bool ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mqlite [-c FILE] [-p PORT] [-v] [-d] [--check] [--version] [--help]\n"
               "  -c FILE        read the configuration file (mosquitto.conf syntax)\n"
               "  -p PORT        also listen on 127.0.0.1:PORT; with no listener configured:\n"
               "                 127.0.0.1 and ::1 on PORT instead of 1883\n"
               "  -v             verbose: log everything (log_type all)\n"
               "  -d, --daemon   run in the background (returns once it listens)\n"
               "  --check        validate the configuration and exit (0 valid, 1 not)\n"
               "  --version      print the version and the git revision, and exit\n"
               "  -h, --help     this text\n");
}

static bool parse_port(const char *s, uint16_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* Log an error at start-up; also on stderr when stderr is not a log destination, so the
 * operator who started the broker (or `mqlite -d`) sees why it did not start. */
static void startup_error(const char *id, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void startup_error(const char *id, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    mql_error(id, "%s", text);
    if (errors_to_stderr)
        fprintf(stderr, "mqlite: %s\n", text);
}

_Static_assert(MQL_MAX_LOG_FILES <= MQL_LOG_MAX_FILES, "every log_dest file fits the log");
_Static_assert(sizeof(((mql_log_file_conf *)0)->path) <= MQL_LOG_PATH_MAX &&
                   sizeof(((mql_log_file_conf *)0)->where) <= MQL_LOG_PATH_MAX + 16,
               "log_dest file paths fit the log's");

/* The log's configuration from the broker's (log_dest lines). OUT: *lc. */
static void log_conf_from(const mql_config *cfg, mql_log_conf *lc)
{
    memset(lc, 0, sizeof(*lc));
    lc->dests = cfg->log_dests;
    lc->n_files = cfg->n_log_files;
    for (int i = 0; i < cfg->n_log_files; i++) {
        snprintf(lc->files[i].path, sizeof(lc->files[i].path), "%s", cfg->log_files[i].path);
        snprintf(lc->files[i].where, sizeof(lc->files[i].where), "%s", cfg->log_files[i].where);
    }
}

/* Make path (a buffer of cap bytes) absolute against cwd. False if it does not fit. */
static bool make_absolute(char *path, size_t cap, const char *cwd)
{
    if (path[0] == '\0' || path[0] == '/')
        return true;
    char abs[PATH_MAX + MQL_PATH_MAX];
    const char *rel = strncmp(path, "./", 2) == 0 ? path + 2 : path;
    int n = snprintf(abs, sizeof(abs), "%s%s%s", cwd, strcmp(cwd, "/") == 0 ? "" : "/", rel);
    if (n < 0 || (size_t)n >= cap)
        return false;
    memcpy(path, abs, (size_t)n + 1);
    return true;
}

/* The directory mqlite was started in: -d changes to "/", and relative paths in the
 * configuration (also when SIGHUP re-reads it) keep meaning this directory. */
static char start_cwd[PATH_MAX];

/* Before -d changes to "/" (and for a configuration re-read after it): make every relative
 * path of cfg absolute against start_cwd. False with a message on stderr (logged when
 * `reload`) if one becomes too long. */
static bool absolute_paths(mql_config *cfg, bool reload)
{
    struct path_ref {
        const char *what;
        char *path;
        size_t cap;
    } paths[4 + MQL_MAX_LOG_FILES + 3 * MQL_MAX_LISTENERS + 4 * MQL_MAX_BRIDGES] = {
        {"pid_file", cfg->pid_file, sizeof(cfg->pid_file)},
        {"persistence_location", cfg->persistence_location, sizeof(cfg->persistence_location)},
        {"password_file", cfg->password_file, sizeof(cfg->password_file)},
        {"acl_file", cfg->acl_file, sizeof(cfg->acl_file)},
    };
    size_t n = 4;
    for (int i = 0; i < cfg->n_log_files; i++)
        paths[n++] = (struct path_ref){"log_dest file", cfg->log_files[i].path,
                                       sizeof(cfg->log_files[i].path)};
    for (int i = 0; i < cfg->n_listeners; i++) {
        mql_listener_conf *l = &cfg->listeners[i];
        paths[n++] = (struct path_ref){"certfile", l->certfile, sizeof(l->certfile)};
        paths[n++] = (struct path_ref){"keyfile", l->keyfile, sizeof(l->keyfile)};
        paths[n++] = (struct path_ref){"cafile", l->cafile, sizeof(l->cafile)};
    }
    for (int i = 0; i < cfg->n_bridges; i++) {
        mql_bridge_conf *br = &cfg->bridges[i];
        paths[n++] = (struct path_ref){"bridge_cafile", br->cafile, sizeof(br->cafile)};
        paths[n++] = (struct path_ref){"bridge_capath", br->capath, sizeof(br->capath)};
        paths[n++] = (struct path_ref){"bridge_certfile", br->certfile, sizeof(br->certfile)};
        paths[n++] = (struct path_ref){"bridge_keyfile", br->keyfile, sizeof(br->keyfile)};
    }
    for (size_t i = 0; i < n; i++) {
        if (!make_absolute(paths[i].path, paths[i].cap, start_cwd)) {
            if (reload)
                mql_error("broker.reload", "SIGHUP: %s '%s' is too long once made absolute",
                          paths[i].what, paths[i].path);
            else
                fprintf(stderr, "mqlite: -d: %s '%s' is too long once made absolute (%s/...)\n",
                        paths[i].what, paths[i].path, start_cwd);
            return false;
        }
    }
    return true;
}

/*
 * The parent side of -d: wait (bounded) for the daemon's one-byte "running" message on fd.
 * EOF means the daemon exited during start-up (it wrote its error to our stderr).
 * Returns the exit status for the parent.
 */
static int wait_daemon_ready(int fd)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited = (now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L;
        if (waited >= DAEMON_READY_TIMEOUT_MS) {
            fprintf(stderr, "mqlite: -d: the daemon did not report that it runs within %d s\n",
                    DAEMON_READY_TIMEOUT_MS / 1000);
            return 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(DAEMON_READY_TIMEOUT_MS - waited));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue; /* the deadline check above ends it */
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        return n == 1 && c == 'R' ? 0 : 1;
    }
}

/*
 * Daemonise: fork (the parent waits for the daemon to be ready and exits with its status),
 * setsid, fork again (the daemon can never reacquire a controlling terminal), chdir /,
 * stdin from /dev/null. stdout and stderr stay connected until the daemon is ready, so
 * start-up errors reach the terminal; daemon_ready() redirects them. Returns, in the daemon,
 * the descriptor daemon_ready() writes to, or -1 with a message on stderr.
 */
static int daemonize(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        fprintf(stderr, "mqlite: -d: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "mqlite: -d: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid > 0) {
        close(p[1]);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        exit(wait_daemon_ready(p[0]));
    }
    close(p[0]);
    if (setsid() < 0) {
        fprintf(stderr, "mqlite: -d: setsid: %s\n", strerror(errno));
        _exit(1);
    }
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "mqlite: -d: fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (pid > 0)
        _exit(0);
    if (chdir("/") != 0) {
        fprintf(stderr, "mqlite: -d: chdir /: %s\n", strerror(errno));
        exit(1);
    }
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, STDIN_FILENO) < 0) {
        fprintf(stderr, "mqlite: -d: /dev/null: %s\n", strerror(errno));
        exit(1);
    }
    if (null > STDERR_FILENO)
        close(null);
    return p[1];
}

/* In the daemon, once it runs: stdout and stderr to /dev/null, then tell the parent. */
static void daemon_ready(int fd)
{
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
    errors_to_stderr = false;
    ssize_t w;
    do {
        w = write(fd, "R", 1);
    } while (w < 0 && errno == EINTR);
    close(fd);
}

/* Write our pid to path atomically: a temporary file in the same directory, then rename. */
static mql_err write_pid_file(const char *path, char *err, size_t errlen)
{
    char tmp[MQL_PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "pid_file '%s': cannot create a file beside it: %s", path,
                 strerror(errno));
        return MQL_E_IO;
    }
    char text[32];
    int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    bool ok = fchmod(fd, 0644) == 0 && write(fd, text, (size_t)n) == n;
    int e = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        snprintf(err, errlen, "pid_file '%s': cannot write: %s", path, strerror(e));
        return MQL_E_IO;
    }
    return MQL_OK;
}

/* Remove the pid file if it still names us (another instance may have replaced it). */
static void remove_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f == NULL)
        return;
    int n = fscanf(f, "%ld", &pid);
    fclose(f);
    if (n != 1 || pid != (long)getpid()) {
        mql_notice("broker.pidfile", "pid_file %s names another process now: left in place", path);
        return;
    }
    if (unlink(path) != 0)
        mql_warning("broker.pidfile",
                    "cannot remove pid_file %s: %s (after dropping root the directory must be "
                    "writable by the user; the init script removes it)",
                    path, strerror(errno));
}

/* Look name up in PASSWD_FILE; OUT: uid, gid. */
static bool find_user(const char *name, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    FILE *f = fopen(PASSWD_FILE, "r");
    if (f == NULL) {
        snprintf(err, errlen, "user %s: cannot read %s: %s", name, PASSWD_FILE, strerror(errno));
        return false;
    }
    bool found = false;
    struct passwd *pw;
    while (!found && (pw = fgetpwent(f)) != NULL) {
        if (strcmp(pw->pw_name, name) == 0) {
            *uid = pw->pw_uid;
            *gid = pw->pw_gid;
            found = true;
        }
    }
    fclose(f);
    if (!found)
        snprintf(err, errlen, "user %s: no such user in %s", name, PASSWD_FILE);
    return found;
}

/* The groups of name: its primary group, then every group of GROUP_FILE that lists it (as
 * initgroups does, without NSS). Returns how many were written into list. */
static int user_groups(const char *name, gid_t primary, gid_t *list, int cap)
{
    int n = 0;
    list[n++] = primary;
    FILE *f = fopen(GROUP_FILE, "r");
    if (f == NULL)
        return n;
    struct group *gr;
    while ((gr = fgetgrent(f)) != NULL) {
        if (gr->gr_gid == primary)
            continue;
        for (char **m = gr->gr_mem; m != NULL && *m != NULL; m++) {
            if (strcmp(*m, name) == 0 && n < cap) {
                list[n++] = gr->gr_gid;
                break;
            }
        }
    }
    fclose(f);
    return n;
}

/*
 * `user NAME`: when running as root, switch to NAME for good (groups, gid, uid, in this
 * order) and check that root cannot be regained. Not root: a notice, nothing changes.
 * glibc applies set*id to every thread of the process. Returns MQL_OK or an error with a
 * message; the caller must then not go on running.
 */
/* Started as root, mqlite gives root up once its listeners, store, log files and pid file
 * are open: to the `user` of the configuration, else to its own user `mqlite` when that
 * exists, else to `nobody` (mosquitto 2.0 drops to `mosquitto` the same way). `user root`
 * keeps root. Not started as root: nothing changes. */
/* The store's files (DIR/mqlite.db and its -wal and -shm) become the run user's, as the log
 * files do: the broker keeps writing through the descriptors it opened as root either way,
 * but the next start as that user (a systemd unit with User=, say) must be able to open
 * them. A file that is not there is skipped. */
static mql_err chown_store(const char *dir, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    static const char *const names[] = {"mqlite.db", "mqlite.db-wal", "mqlite.db-shm"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir[0] ? dir : ".", names[i]);
        if (chown(path, uid, gid) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot give the store file %.300s to uid %ld: %s", path,
                     (long)uid, strerror(errno));
            return MQL_E_IO;
        }
    }
    return MQL_OK;
}

static mql_err drop_privileges(const char *configured, const char *store_dir, char *err,
                               size_t errlen)
{
    const char *name = configured;
    if (geteuid() != 0) {
        if (name[0] != '\0')
            mql_notice("broker.user",
                       "user %s: not running as root (uid %ld): privileges unchanged", name,
                       (long)geteuid());
        return MQL_OK;
    }
    if (strcmp(name, "root") == 0) {
        mql_notice("broker.user", "user root: running as root, as configured");
        return MQL_OK;
    }
    if (name[0] == '\0') {
        name = getpwnam("mqlite") != NULL ? "mqlite" : "nobody";
        if (getpwnam(name) == NULL) {
            snprintf(err, errlen,
                     "started as root with no 'user' line, and neither user 'mqlite' nor "
                     "'nobody' exists to drop root to (add 'user NAME', or 'user root' to keep "
                     "root)");
            return MQL_E_CONFIG;
        }
        mql_notice("broker.user", "started as root with no 'user' line: giving root up to user %s",
                   name);
    }
    uid_t uid;
    gid_t gid;
    if (!find_user(name, &uid, &gid, err, errlen))
        return MQL_E_CONFIG;
    gid_t groups[MAX_GROUPS];
    int ngroups = user_groups(name, gid, groups, MAX_GROUPS);
    /* Log files we created become the user's, so SIGHUP can still reopen them. */
    if (mql_log_chown(uid, gid, err, errlen) != MQL_OK)
        return MQL_E_IO;
    if (store_dir != NULL && chown_store(store_dir, uid, gid, err, errlen) != MQL_OK)
        return MQL_E_IO;
    if (setgroups((size_t)ngroups, groups) != 0) {
        snprintf(err, errlen, "user %s: setgroups: %s", name, strerror(errno));
        return MQL_E_IO;
    }
    if (setgid(gid) != 0) {
        snprintf(err, errlen, "user %s: setgid(%ld): %s", name, (long)gid, strerror(errno));
        return MQL_E_IO;
    }
    if (setuid(uid) != 0) {
        snprintf(err, errlen, "user %s: setuid(%ld): %s", name, (long)uid, strerror(errno));
        return MQL_E_IO;
    }
    if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid ||
        (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))) {
        snprintf(err, errlen, "user %s: the switch to uid %ld gid %ld did not hold", name,
                 (long)uid, (long)gid);
        return MQL_E_INTERNAL;
    }
    mql_notice("broker.user", "dropped root: running as user %s (uid %ld, gid %ld, %d groups)",
               name, (long)uid, (long)gid, ngroups);
    return MQL_OK;
}

/* What the command line asked for. */
struct cmdline {
    const char *conf_path; /* -c FILE, or NULL (made absolute for -d) */
    uint16_t port;         /* -p PORT, or 0 */
    bool check, verbose, detach;
};

/* Parse argv into cl. Returns -1 to go on, or the exit status once --help or --version is
 * answered or an argument is wrong (with a message on stderr). */
static int parse_cmdline(int argc, char **argv, struct cmdline *cl)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            cl->conf_path = argv[++i];
        } else if (strcmp(a, "-p") == 0 && i + 1 < argc) {
            if (!parse_port(argv[++i], &cl->port)) {
                fprintf(stderr, "mqlite: -p: '%s' is not a port number from 1 to 65535\n", argv[i]);
                return 1;
            }
        } else if (strcmp(a, "-v") == 0) {
            cl->verbose = true;
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--daemon") == 0) {
            cl->detach = true;
        } else if (strcmp(a, "--check") == 0) {
            cl->check = true;
        } else if (strcmp(a, "--version") == 0) {
            printf("mqlite %s (revision %s)\n", MQL_VERSION, MQL_REVISION);
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "mqlite: unknown argument '%s'\n", a);
            usage(stderr);
            return 1;
        }
    }
    return -1;
}

/* The configuration: defaults, the file of -c, the listeners of -p or of local-only mode
 * (mql_config_finish_listeners). Returns -1 to go on, or
 * the exit status once --check is answered or the configuration is refused (with a message
 * on stderr). OUT: *cfg. */
static int load_config(const struct cmdline *cl, mql_config *cfg)
{
    char err[512];
    mql_config_defaults(cfg);
    if (cl->conf_path != NULL && mql_config_load(cfg, cl->conf_path, err, sizeof(err)) != MQL_OK) {
        fprintf(stderr, "mqlite: %s\n", err);
        return 1;
    }
    if (mql_config_finish_listeners(cfg, cl->port, ipv6_loopback(), err, sizeof(err)) != MQL_OK) {
        fprintf(stderr, "mqlite: %s\n", err);
        return 1;
    }
    if (cl->check) {
        /* what start-up reads, checked without starting; relative paths as without -d */
        if (mql_startup_check(cfg, err, sizeof(err)) != MQL_OK) {
            fprintf(stderr, "mqlite: %s\n", err);
            return 1;
        }
        printf("%s: configuration is valid\n", cl->conf_path ? cl->conf_path : "(defaults)");
        return 0;
    }
    return -1;
}

/* -d, before changing to "/": the configuration file's path (SIGHUP re-reads it) and every
 * relative path of cfg become absolute against the start directory. False with a message
 * on stderr. */
static bool prepare_detach(struct cmdline *cl, mql_config *cfg)
{
    static char conf_path_buf[PATH_MAX];
    if (cl->conf_path != NULL) {
        if (realpath(cl->conf_path, conf_path_buf) == NULL) {
            fprintf(stderr, "mqlite: %s: %s\n", cl->conf_path, strerror(errno));
            return false;
        }
        cl->conf_path = conf_path_buf;
    }
    if (getcwd(start_cwd, sizeof(start_cwd)) == NULL) {
        fprintf(stderr, "mqlite: -d: cannot get the current directory: %s\n", strerror(errno));
        return false;
    }
    return absolute_paths(cfg, false);
}

/* The log levels (all with -v) and destinations of cfg. False with a message on stderr. */
static bool open_log(const struct cmdline *cl, mql_config *cfg)
{
    char err[512];
    mql_log_conf lc;
    if (cl->verbose)
        cfg->log_types = 0x1f;
    mql_log_set_types(cfg->log_types);
    log_conf_from(cfg, &lc);
    if (mql_log_open(&lc, err, sizeof(err)) != MQL_OK) {
        fprintf(stderr, "mqlite: %s\n", err);
        return false;
    }
    errors_to_stderr = (cfg->log_dests & MQL_LOGD_STDERR) == 0;
    if (cl->detach && cfg->n_log_files == 0 && (cfg->log_dests & MQL_LOGD_SYSLOG) == 0)
        mql_warning("broker.daemon",
                    "-d: the only log destinations are stderr/stdout, which a daemon sends to "
                    "/dev/null: nothing is logged after start-up (add 'log_dest syslog' or "
                    "'log_dest file PATH')");
    return true;
}

/* Block the signals the main thread waits for, before any thread exists, so every thread
 * inherits the mask; ignore SIGPIPE. OUT: *sigs, the set to sigwait() on. */
static void block_signals(sigset_t *sigs)
{
    sigemptyset(sigs);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Start b (store, listeners), write the pid file while still root (/var/run is root's),
 * then drop root. False once the reason is logged (startup_error). OUT: *pid_written. */
static bool start(mql_broker *b, const mql_config *cfg, bool *pid_written)
{
    char err[512];
    if (mql_broker_start(b, err, sizeof(err)) != MQL_OK) {
        startup_error("broker.start", "%s", err);
        return false;
    }
    if (cfg->pid_file[0] != '\0') {
        if (write_pid_file(cfg->pid_file, err, sizeof(err)) != MQL_OK) {
            startup_error("broker.pidfile", "%s", err);
            return false;
        }
        *pid_written = true;
    }
    if (drop_privileges(cfg->user, cfg->persistence ? cfg->persistence_location : NULL, err,
                        sizeof(err)) != MQL_OK) {
        startup_error("broker.user", "%s: refusing to run as root", err);
        return false;
    }
    return true;
}

/* SIGHUP: reopen the log files, reload the listeners' certificates, and re-read the
 * configuration file (cfg is the one the broker started with) for log_type and the
 * password and ACL files. A file that does not load keeps the running one. */
static void reload(mql_broker *b, const struct cmdline *cl, const mql_config *cfg)
{
    char err[512];
    const char *reopened = cfg->n_log_files > 0 ? "log files reopened, " : "";
    if (mql_log_reopen(err, sizeof(err)) != MQL_OK) {
        mql_error("log.reopen", "SIGHUP: %s", err);
        reopened = "";
    }
    /* Certificates come from the files the listeners were started with (listeners
     * themselves change only with a restart), with or without a config file. */
    (void)mql_broker_reload_tls(b);
    if (cl->conf_path == NULL) {
        mql_notice("broker.reload", "SIGHUP: %sno configuration file to reload", reopened);
        return;
    }
    mql_config fresh;
    mql_config_defaults(&fresh);
    if (mql_config_load(&fresh, cl->conf_path, err, sizeof(err)) != MQL_OK) {
        mql_error("broker.reload", "SIGHUP: keeping the running configuration: %s", err);
        return;
    }
    if (cl->detach && !absolute_paths(&fresh, true))
        return;
    mql_log_set_types(cl->verbose ? 0x1f : fresh.log_types);
    mql_notice("broker.reload", "SIGHUP: %slog_type reloaded from %s", reopened, cl->conf_path);
    if (mql_broker_load_auth(b, fresh.password_file, fresh.acl_file, err, sizeof(err)) != MQL_OK)
        mql_error("broker.reload", "SIGHUP: keeping the running password/ACL files: %s", err);
}

/* Wait for the signals of sigs: SIGHUP reloads, SIGTERM and SIGINT return. */
static void signal_loop(mql_broker *b, const struct cmdline *cl, const mql_config *cfg,
                        const sigset_t *sigs)
{
    for (;;) {
        int sig = 0;
        if (sigwait(sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            (void)mql_notify_reloading(); /* systemd: Type=notify, ExecReload */
            reload(b, cl, cfg);
            (void)mql_notify("READY=1");
            continue;
        }
        mql_notice("broker.stop", "%s received, shutting down",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

/* Shut b down and free it, remove the pid file we wrote, close the log (after saying that
 * mqlite stopped, when it ran). */
static void stop(mql_broker *b, const mql_config *cfg, bool pid_written, bool ran)
{
    if (ran)
        (void)mql_notify("STOPPING=1");
    mql_broker_shutdown(b);
    mql_broker_free(b);
    if (pid_written)
        remove_pid_file(cfg->pid_file);
    if (ran)
        mql_notice("broker.stop", "mqlite stopped");
    mql_log_close();
}

int main(int argc, char **argv)
{
    struct cmdline cl = {0};
    mql_config cfg;
    int status;
    if ((status = parse_cmdline(argc, argv, &cl)) >= 0)
        return status;
    if ((status = load_config(&cl, &cfg)) >= 0)
        return status;
    if (cl.detach && !prepare_detach(&cl, &cfg))
        return 1;
    if (!open_log(&cl, &cfg))
        return 1;
    int ready_fd = -1;
    if (cl.detach && (ready_fd = daemonize()) < 0)
        return 1;
    sigset_t sigs;
    block_signals(&sigs);

    mql_broker *b;
    if (mql_broker_alloc(&b, &cfg) != MQL_OK) {
        startup_error("broker.start", "out of memory");
        return 1;
    }
    bool pid_written = false;
    if (!start(b, &cfg, &pid_written)) {
        stop(b, &cfg, pid_written, false);
        return 1;
    }
    mql_notice("broker.start", "mqlite %s running (pid %ld)", MQL_VERSION, (long)getpid());
    explain_access(&cfg);
    if (ready_fd >= 0)
        daemon_ready(ready_fd);
    /* Every listener is open and the store loaded: a systemd Type=notify unit is started. */
    int nrv = mql_notify("READY=1");
    if (nrv < 0)
        mql_warning("broker.notify",
                    "cannot tell the service manager we are ready ($NOTIFY_SOCKET): %s",
                    strerror(-nrv));
    signal_loop(b, &cl, &cfg, &sigs);
    stop(b, &cfg, pid_written, true);
    return 0;
}
