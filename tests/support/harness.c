/*
 * harness.c - run the broker under test as a child process and speak raw MQTT to it.
 *
 * Purpose: black-box integration tests. Nothing here links or includes broker code; packets
 * are built and framed from the specification text, so a bug in the broker's codec cannot
 * hide itself by being mirrored in the tests. The client's transport is chosen by
 * $MQLITE_TEST_TRANSPORT: a plain socket for tcp, an nng stream for tls+tcp://, ws:// and
 * wss://, so every protocol test runs over every transport without knowing it.
 *
 * Assumptions and rules:
 * - One Criterion test is one process. Brokers started by it are kept in a small registry so
 *   tb_fini() can kill (and report) the ones a failed test left behind; each broker also has
 *   PR_SET_PDEATHSIG(SIGKILL), so it cannot outlive a test process killed on timeout.
 * - The broker child closes every inherited descriptor, so a test client's socket never
 *   stays open inside a broker started later.
 * - All waits have deadlines on a monotonic clock; nothing blocks without a bound. A tcp
 *   client polls its socket; a tls/ws/wss client waits on a condition variable for its
 *   receive (see struct tc_client). nng's TLS and WebSocket streams can lose the broker's
 *   close, which stream_lost / abort_if_lost make visible again.
 * - Performance is irrelevant beyond "fast enough": logs are re-read whole when searched,
 *   the receive buffer is compacted with memmove.
 * - Thread safety: the registry is touched only by tb_* (main test thread); tc_* on
 *   distinct clients are independent and the non-asserting ones may run in worker threads.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "platform/tls_engine.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 5000
#define START_ATTEMPTS 4
#define IO_TIMEOUT_MS 5000
#define PROBE_MS 50          /* stream_fill: look for a lost close this often */
#define RX_CHUNK (64 * 1024) /* one stream receive */
#define MAX_BROKERS 8

/* Fail the current test, reporting the caller's location. */
#define FAIL_AT(file, line, ...)                                                                   \
    cr_assert_fail_user((file), (line), criterion_abort_test, __VA_ARGS__)

struct mql_broker {
    const char *pre_conf; /* tb_start_with: lines before the harness's listener */
    pid_t pid;            /* 0 when not running */
    int status;           /* exit status (tb_stop convention) of the last run */
    uint16_t port;
    char dir[PATH_MAX];
    char conf[PATH_MAX + 32];
    char log[PATH_MAX + 32];
};

/*
 * A client over tcp is a blocking socket, read only while a test waits for input (so a test
 * that does not read makes the broker's output back up, as a slow client does). Over tls,
 * ws and wss it is an nng stream (fd -1): a receive is started when a test waits for input
 * and is never cancelled (a cancelled TLS or WebSocket receive need not leave the stream
 * usable); its callback appends to rx under mtx and signals cv, and the waiting test wakes.
 */
struct tc_client {
    int fd; /* tcp; -1 for a stream */
    nng_stream_dialer *dialer;
    nng_stream *stream; /* tls, ws, wss; NULL for tcp */
    nng_aio *rx_aio;
    nng_aio *tx_aio;
    pthread_mutex_t mtx; /* streams: rx, rx_len, rx_cap, closed, rx_busy, rx_nomem */
    pthread_cond_t cv;
    bool closed;      /* the connection is over (EOF, reset, transport error) */
    int close_reason; /* streams: the nng error that ended it */
    bool rx_busy;     /* streams: a receive is outstanding */
    bool tx_busy;     /* streams: a send is outstanding */
    bool rx_nomem;
    bool aborted;     /* streams: abort_if_lost closed the stream */
    bool send_failed; /* streams: a send failed, so every later one fails at once */
    uint8_t *rx;      /* received and not yet consumed */
    size_t rx_len;
    size_t rx_cap;
    uint8_t *rx_chunk; /* streams: target of the outstanding receive (RX_CHUNK bytes) */
    uint16_t next_id;
};

static mql_broker *registry[MAX_BROKERS];

/* ------------------------------------------------------------------------------------ */
/* Time                                                                                  */
/* ------------------------------------------------------------------------------------ */

int64_t tb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tb_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - tb_now_ms();
    if (left < 0) {
        return 0;
    }
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* ------------------------------------------------------------------------------------ */
/* Transport                                                                             */
/* ------------------------------------------------------------------------------------ */

static const char *const transport_names[] = {
    [TB_TCP] = "tcp", [TB_TLS] = "tls", [TB_WS] = "ws", [TB_WSS] = "wss"};

tb_transport tb_transport_get(void)
{
    const char *v = getenv("MQLITE_TEST_TRANSPORT");
    if (v == NULL || v[0] == '\0') {
        return TB_TCP;
    }
    for (int t = TB_TCP; t <= TB_WSS; t++) {
        if (strcmp(v, transport_names[t]) == 0) {
            return (tb_transport)t;
        }
    }
    cr_fatal("harness: MQLITE_TEST_TRANSPORT='%s' is not one of tcp, tls, ws, wss", v);
    return TB_TCP; /* not reached */
}

const char *tb_transport_name(void)
{
    return transport_names[tb_transport_get()];
}

static bool transport_tls(void)
{
    return tb_transport_get() == TB_TLS || tb_transport_get() == TB_WSS;
}

int tb_run(char *const argv[], const char *dir, const char *out_path, int timeout_ms)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        int outfd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nullfd = open("/dev/null", O_RDONLY);
        if (outfd < 0 || nullfd < 0 || (dir != NULL && chdir(dir) != 0)) {
            _exit(126);
        }
        dup2(nullfd, 0);
        dup2(outfd, 1);
        dup2(outfd, 2);
        close_range(3, ~0U, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    int64_t deadline = tb_now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0 || tb_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        tb_sleep_ms(5);
    }
}

int tb_broker_argv(char *argv[], char *words, size_t words_cap, const char *const extra[])
{
    static char abs_bin[PATH_MAX];
    const char *bin = getenv("MQLITE_BIN");
    if (bin == NULL || bin[0] == '\0') {
        cr_fatal("harness: MQLITE_BIN is not set (path of the broker under test)");
    }
    /* a relative path (MQLITE_BIN=build/mqlite) must survive tb_run's change of directory */
    if (strchr(bin, '/') != NULL && realpath(bin, abs_bin) != NULL) {
        bin = abs_bin;
    }
    const char *w = getenv("MQLITE_WRAPPER");
    snprintf(words, words_cap, "%s", w != NULL ? w : "");
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(words, " \t", &save); tok != NULL && argc < TB_WRAPPER_ARGS_MAX;
         tok = strtok_r(NULL, " \t", &save)) {
        argv[argc++] = tok;
    }
    argv[argc++] = (char *)bin;
    for (int i = 0; extra != NULL && extra[i] != NULL && i < TB_EXTRA_ARGS_MAX; i++) {
        argv[argc++] = (char *)extra[i];
    }
    argv[argc] = NULL;
    return argc;
}

/* A throw-away self-signed certificate (CN=localhost, P-256) and its key for the broker's
 * TLS listener, in the broker's temp dir (removed with it; never a file of the source tree).
 * Fails the test if openssl cannot make them. */
static void make_server_cert(const mql_broker *b)
{
    char key[PATH_MAX + 32], crt[PATH_MAX + 32], log[PATH_MAX + 32];
    snprintf(key, sizeof key, "%s/tb-server.key", b->dir);
    snprintf(crt, sizeof crt, "%s/tb-server.crt", b->dir);
    snprintf(log, sizeof log, "%s/openssl.log", b->dir);
    char *argv[] = {"openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                    "-days",
                    "2",
                    "-keyout",
                    key,
                    "-out",
                    crt,
                    NULL};
    int st = tb_run(argv, NULL, log, 10000);
    if (st != 0) {
        char tail[1024] = "";
        FILE *f = fopen(log, "r");
        if (f != NULL) {
            size_t n = fread(tail, 1, sizeof tail - 1, f);
            tail[n] = '\0';
            fclose(f);
        }
        cr_fatal("harness: openssl could not make a test certificate for transport %s "
                 "(status %d; is openssl installed?)\n%s",
                 tb_transport_name(), st, tail);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Broker process                                                                        */
/* ------------------------------------------------------------------------------------ */

static void registry_add(mql_broker *b)
{
    for (int i = 0; i < MAX_BROKERS; i++) {
        if (registry[i] == NULL) {
            registry[i] = b;
            return;
        }
    }
    cr_fatal("harness: more than %d brokers in one test", MAX_BROKERS);
}

static void registry_remove(mql_broker *b)
{
    for (int i = 0; i < MAX_BROKERS; i++) {
        if (registry[i] == b) {
            registry[i] = NULL;
        }
    }
}

/* Bind 127.0.0.1:0, read the port the kernel chose, close. 0 on failure. */
static uint16_t pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}

/* Write text to f with every "%DIR%" replaced by dir. */
static void write_subst(FILE *f, const char *text, const char *dir)
{
    const char *p = text;
    const char *hit;
    while ((hit = strstr(p, "%DIR%")) != NULL) {
        fwrite(p, 1, (size_t)(hit - p), f);
        fputs(dir, f);
        p = hit + 5;
    }
    fputs(p, f);
    fputc('\n', f);
}

static bool write_conf(mql_broker *b, const char *extra_conf)
{
    FILE *f = fopen(b->conf, "w");
    if (f == NULL) {
        return false;
    }
    fprintf(f, "# generated by tests/support/harness.c (transport %s)\n", tb_transport_name());
    if (b->pre_conf != NULL) {
        write_subst(f, b->pre_conf, b->dir);
    }
    char listener[512];
    tb_listener_conf(b->port, listener, sizeof listener);
    write_subst(f, listener, b->dir);
    fprintf(f, "allow_anonymous true\n");
    /* As root the broker would give root up to `nobody` (mqlite, like mosquitto 2.0): the
     * tests keep it root, so it can use the root-owned files of its temp dir. */
    if (geteuid() == 0)
        fprintf(f, "user root\n");
    if (extra_conf != NULL) {
        write_subst(f, extra_conf, b->dir);
    }
    const char *env_extra = getenv("MQLITE_EXTRA_CONF");
    if (env_extra != NULL && env_extra[0] != '\0') {
        write_subst(f, env_extra, b->dir);
    }
    return fclose(f) == 0;
}

/* Convert a waitpid status to the tb_stop convention. */
static int status_code(int st)
{
    if (WIFEXITED(st)) {
        return WEXITSTATUS(st);
    }
    if (WIFSIGNALED(st)) {
        return 128 + WTERMSIG(st);
    }
    return 255;
}

/* Reap the broker if it has exited. Returns true if it is (now) not running. */
static bool reap(mql_broker *b)
{
    if (b->pid <= 0) {
        return true;
    }
    int st;
    pid_t r = waitpid(b->pid, &st, WNOHANG);
    if (r == b->pid) {
        b->status = status_code(st);
        b->pid = 0;
        return true;
    }
    if (r < 0 && errno == ECHILD) {
        b->pid = 0;
        return true;
    }
    return false;
}

static void spawn(mql_broker *b)
{
    char words[1024];
    char *argv[TB_BROKER_ARGV_MAX];
    const char *const extra[] = {"-c", b->conf, NULL};
    tb_broker_argv(argv, words, sizeof(words), extra);

    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        cr_fatal("harness: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls from here on. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        int logfd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nullfd = open("/dev/null", O_RDONLY);
        if (logfd < 0 || nullfd < 0) {
            _exit(127);
        }
        dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        close_range(3, ~0U, 0);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], argv);
        static const char msg[] = "harness: exec of the broker failed: ";
        const char *what = errno == ENOENT ? "no such file\n" : "not executable or other error\n";
        if (write(2, msg, sizeof msg - 1) < 0 || write(2, argv[0], strlen(argv[0])) < 0 ||
            write(2, ": ", 2) < 0 || write(2, what, strlen(what)) < 0) {
            _exit(127);
        }
        _exit(127);
    }
    b->pid = pid;
    b->status = -1;
}

/* Try one TCP connect to the broker port, bounded by timeout_ms. */
static bool port_accepts(uint16_t port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, timeout_ms) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
        }
    }
    close(fd);
    return ok;
}

/* Wait until the broker accepts TCP or exits. 1 = ready, 0 = exited, -1 = timed out. */
static int wait_ready(mql_broker *b)
{
    int64_t deadline = tb_now_ms() + START_TIMEOUT_MS;
    while (tb_now_ms() < deadline) {
        if (reap(b)) {
            return 0;
        }
        if (port_accepts(b->port, 200)) {
            /* The port may belong to someone else if our bind lost a race: make sure we
             * are still running. */
            tb_sleep_ms(5);
            return reap(b) ? 0 : 1;
        }
        tb_sleep_ms(10);
    }
    return -1;
}

/* Last bytes of the broker log, for failure messages. */
static void log_tail(const mql_broker *b, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(b->log, "r");
    if (f == NULL) {
        return;
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)cap - 1 ? size - ((long)cap - 1) : 0;
        if (fseek(f, from, SEEK_SET) == 0) {
            size_t n = fread(out, 1, cap - 1, f);
            out[n] = '\0';
        }
    }
    fclose(f);
}

static void kill_and_reap(mql_broker *b, int sig, int timeout_ms)
{
    if (b->pid <= 0) {
        return;
    }
    kill(b->pid, sig);
    int64_t deadline = tb_now_ms() + timeout_ms;
    while (!reap(b)) {
        if (tb_now_ms() >= deadline) {
            if (sig == SIGKILL) {
                /* SIGKILL cannot be ignored: a blocking wait is bounded in practice. */
                int st;
                if (waitpid(b->pid, &st, 0) == b->pid) {
                    b->status = status_code(st);
                }
                b->pid = 0;
                return;
            }
            kill_and_reap(b, SIGKILL, 1000);
            b->status = 128 + SIGKILL;
            return;
        }
        tb_sleep_ms(5);
    }
}

/* Start (or restart) the process for b; on the first start the port may be re-picked. */
static void start_process(mql_broker *b, const char *extra_conf, bool may_repick)
{
    char tail[2048];
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        spawn(b);
        int r = wait_ready(b);
        if (r == 1) {
            return;
        }
        if (r < 0) {
            kill_and_reap(b, SIGKILL, 1000);
            log_tail(b, tail, sizeof tail);
            cr_fatal("harness: broker did not accept on port %u within %d ms (dir %s)\nlog:\n%s",
                     b->port, START_TIMEOUT_MS, b->dir, tail);
        }
        /* Exited early: most likely the port was taken in between, so retry; but 127 means
         * the exec failed, which no retry fixes. */
        if (b->status == 127) {
            break;
        }
        if (may_repick) {
            b->port = pick_port();
            if (b->port == 0 || !write_conf(b, extra_conf)) {
                break;
            }
        } else {
            tb_sleep_ms(100);
        }
    }
    log_tail(b, tail, sizeof tail);
    cr_fatal("harness: broker exited during start-up (status %d, dir %s)\nlog:\n%s", b->status,
             b->dir, tail);
}

char *tb_listener_conf(uint16_t port, char *out, size_t cap)
{
    bool ws = tb_transport_get() == TB_WS || tb_transport_get() == TB_WSS;
    snprintf(out, cap, "listener %u 127.0.0.1\n%s%s", port, ws ? "protocol websockets\n" : "",
             transport_tls() ? "certfile %DIR%/tb-server.crt\nkeyfile %DIR%/tb-server.key\n" : "");
    return out;
}

mql_broker *tb_start(const char *extra_conf)
{
    return tb_start_with(NULL, extra_conf);
}

mql_broker *tb_start_with(const char *pre_conf, const char *extra_conf)
{
    const char *bin = getenv("MQLITE_BIN");
    if (bin == NULL || bin[0] == '\0') {
        cr_fatal("harness: MQLITE_BIN is not set (path of the broker under test)");
    }
    mql_broker *b = calloc(1, sizeof *b);
    cr_assert(b != NULL, "harness: out of memory");
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0') {
        tmp = "/tmp";
    }
    snprintf(b->dir, sizeof b->dir, "%s/mqlite-integ-XXXXXX", tmp);
    if (mkdtemp(b->dir) == NULL) {
        cr_fatal("harness: mkdtemp %s: %s", b->dir, strerror(errno));
    }
    /* A broker started as root may drop privileges (mosquitto switches to its own user):
     * let it still write its files (persistence) into the temp dir. */
    if (geteuid() == 0) {
        chmod(b->dir, 0777);
    }
    snprintf(b->conf, sizeof b->conf, "%s/mqlite.conf", b->dir);
    snprintf(b->log, sizeof b->log, "%s/broker.log", b->dir);
    b->pre_conf = pre_conf; /* only used while tb_start_with runs (write_conf) */
    if (transport_tls()) {
        make_server_cert(b);
    }
    b->port = pick_port();
    cr_assert(b->port != 0, "harness: cannot pick a free port");
    cr_assert(write_conf(b, extra_conf), "harness: cannot write %s", b->conf);
    registry_add(b);
    start_process(b, extra_conf, true);
    b->pre_conf = NULL;
    return b;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_dir(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int tb_stop(mql_broker *b)
{
    if (b == NULL) {
        return -1;
    }
    kill_and_reap(b, SIGTERM, STOP_TIMEOUT_MS);
    int status = b->status;
    registry_remove(b);
    remove_dir(b->dir);
    free(b);
    return status;
}

int tb_halt(mql_broker *b)
{
    kill_and_reap(b, SIGTERM, STOP_TIMEOUT_MS);
    return b->status;
}

void tb_kill(mql_broker *b)
{
    kill_and_reap(b, SIGKILL, 1000);
}

void tb_restart(mql_broker *b)
{
    kill_and_reap(b, SIGTERM, STOP_TIMEOUT_MS);
    start_process(b, NULL, false);
}

bool tb_alive(mql_broker *b)
{
    return !reap(b);
}

int tb_pid(const mql_broker *b)
{
    return (int)b->pid;
}

long tb_rss_kib(const mql_broker *b)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)b->pid);
    FILE *f = b->pid > 0 ? fopen(path, "r") : NULL;
    long kb = -1;
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

const char *tb_sanitizer(const mql_broker *b)
{
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)b->pid);
    FILE *f = b->pid > 0 ? fopen(path, "r") : NULL;
    const char *found = NULL;
    if (f == NULL) {
        return NULL;
    }
    while (found == NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, "/libasan.so") != NULL) {
            found = "address";
        } else if (strstr(line, "/libtsan.so") != NULL) {
            found = "thread";
        }
    }
    fclose(f);
    return found;
}

int tb_fd_count(const mql_broker *b)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)b->pid);
    DIR *d = b->pid > 0 ? opendir(path) : NULL;
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

uint16_t tb_free_port(void)
{
    return pick_port();
}

int tb_run_config(const char *conf, char *out, size_t cap)
{
    char words[1024], path[] = "/tmp/mqlite-runconf-XXXXXX";
    char *argv[TB_BROKER_ARGV_MAX];
    const char *const extra[] = {"-c", conf, NULL};
    tb_broker_argv(argv, words, sizeof(words), extra);
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "harness: mkstemp: %s", strerror(errno));
    close(fd);
    int status = tb_run(argv, NULL, path, 10000);
    FILE *f = fopen(path, "r");
    size_t n = f != NULL && cap > 0 ? fread(out, 1, cap - 1, f) : 0;
    if (cap > 0)
        out[n] = '\0';
    if (f != NULL)
        fclose(f);
    unlink(path);
    return status;
}

uint16_t tb_port(const mql_broker *b)
{
    return b->port;
}

const char *tb_dir(const mql_broker *b)
{
    return b->dir;
}

const char *tb_log_path(const mql_broker *b)
{
    return b->log;
}

/* How many times needle occurs in the file at path (0 if it cannot be read). */
static int file_count(const char *path, const char *needle)
{
    if (needle[0] == '\0') {
        return 1; /* in every file, and strstr would not move on */
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    int count = 0;
    size_t cap = 1 << 16;
    size_t len = 0;
    char *buf = malloc(cap + 1);
    while (buf != NULL) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL) {
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0) {
            break;
        }
        len += n;
    }
    if (buf != NULL) {
        buf[len] = '\0';
        for (const char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
            count++;
        }
        free(buf);
    }
    fclose(f);
    return count;
}

int tb_log_count(mql_broker *b, const char *needle)
{
    return file_count(b->log, needle);
}

bool tb_log_contains(mql_broker *b, const char *needle, int timeout_ms)
{
    int64_t deadline = tb_now_ms() + timeout_ms;
    for (;;) {
        if (file_count(b->log, needle) > 0) {
            return true;
        }
        if (tb_now_ms() >= deadline) {
            return false;
        }
        tb_sleep_ms(20);
    }
}

void tb_assert_serves_at(const char *file, int line, mql_broker *b)
{
    if (!tb_alive(b)) {
        FAIL_AT(file, line, "broker is not running (exit status %d)", b->status);
    }
    tc_client *c = tc_connect_at(file, line, b->port);
    tc_sendp(c, PK_CONNECT(.client_id = "tb-serves-probe", .clean = true, .keepalive = 30));
    tc_expectp_at(file, line, c, pk_connack(false, 0), TB_WAIT_MS);
    tc_ping_at(file, line, c);
    tc_disconnect(c);
}

void tb_fini(void)
{
    for (int i = 0; i < MAX_BROKERS; i++) {
        mql_broker *b = registry[i];
        if (b == NULL) {
            continue;
        }
        bool was_alive = tb_alive(b);
        kill_and_reap(b, SIGKILL, 1000);
        fprintf(stderr,
                "harness: test ended with the broker %s (test failed or tb_stop missing); "
                "kept %s (mqlite.conf, broker.log)\n",
                was_alive ? "still running" : "not stopped", b->dir);
        registry[i] = NULL;
        free(b);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Packet builders                                                                       */
/* ------------------------------------------------------------------------------------ */

static void need(const tb_pkt *p, size_t n)
{
    if (p->len + n > TB_PKT_CAP) {
        cr_fatal("harness: packet larger than TB_PKT_CAP (%d)", TB_PKT_CAP);
    }
}

void pk_put_u8(tb_pkt *p, uint8_t v)
{
    need(p, 1);
    p->b[p->len++] = v;
}

void pk_put_u16(tb_pkt *p, uint16_t v)
{
    pk_put_u8(p, (uint8_t)(v >> 8));
    pk_put_u8(p, (uint8_t)v);
}

void pk_put_u32(tb_pkt *p, uint32_t v)
{
    pk_put_u16(p, (uint16_t)(v >> 16));
    pk_put_u16(p, (uint16_t)v);
}

/* Variable Byte Integer into out (at least 4 bytes); returns its length. */
static size_t varint_encode(uint32_t v, uint8_t *out)
{
    size_t n = 0;
    do {
        uint8_t d = v % 128;
        v /= 128;
        if (v > 0) {
            d |= 0x80;
        }
        out[n++] = d;
    } while (v > 0 && n < 4);
    return n;
}

void pk_put_varint(tb_pkt *p, uint32_t v)
{
    uint8_t tmp[4];
    size_t n = varint_encode(v, tmp);
    pk_put_bytes(p, tmp, n);
}

void pk_put_bytes(tb_pkt *p, const void *data, size_t n)
{
    need(p, n);
    if (n > 0) {
        memcpy(p->b + p->len, data, n);
    }
    p->len += n;
}

void pk_put_bin(tb_pkt *p, const void *data, size_t n)
{
    pk_put_u16(p, (uint16_t)n);
    pk_put_bytes(p, data, n);
}

void pk_put_str(tb_pkt *p, const char *s)
{
    pk_put_bin(p, s, strlen(s));
}

tb_pkt pk_raw(uint8_t first_byte, const void *body, size_t body_len)
{
    tb_pkt p = {0};
    pk_put_u8(&p, first_byte);
    pk_put_varint(&p, (uint32_t)body_len);
    pk_put_bytes(&p, body, body_len);
    return p;
}

tb_pkt pk_frame(uint8_t first_byte, const tb_pkt *body)
{
    return pk_raw(first_byte, body->b, body->len);
}

tb_pkt pk_bytes(const void *data, size_t n)
{
    tb_pkt p = {0};
    pk_put_bytes(&p, data, n);
    return p;
}

static void put_props(tb_pkt *p, const tb_pkt *props)
{
    if (props == NULL) {
        pk_put_varint(p, 0);
        return;
    }
    pk_put_varint(p, (uint32_t)props->len);
    pk_put_bytes(p, props->b, props->len);
}

tb_pkt pk_connect(const pk_connect_opts *o)
{
    uint8_t level = o->version ? o->version : 4;
    uint8_t flags = 0;
    if (o->clean) {
        flags |= 0x02;
    }
    if (o->will_topic != NULL) {
        flags |= 0x04 | (uint8_t)((o->will_qos & 3) << 3);
        if (o->will_retain) {
            flags |= 0x20;
        }
    }
    if (o->password != NULL) {
        flags |= 0x40;
    }
    if (o->username != NULL) {
        flags |= 0x80;
    }
    tb_pkt body = {0};
    pk_put_str(&body, o->proto_name ? o->proto_name : "MQTT");
    pk_put_u8(&body, level);
    pk_put_u8(&body, flags);
    pk_put_u16(&body, o->keepalive);
    if (level == 5) {
        put_props(&body, o->props);
    }
    pk_put_str(&body, o->client_id ? o->client_id : "");
    if (o->will_topic != NULL) {
        if (level == 5) {
            put_props(&body, o->will_props);
        }
        pk_put_str(&body, o->will_topic);
        size_t wl = o->will_payload_len;
        if (wl == 0 && o->will_payload != NULL) {
            wl = strlen(o->will_payload);
        }
        pk_put_bin(&body, o->will_payload ? o->will_payload : "", wl);
    }
    if (o->username != NULL) {
        pk_put_str(&body, o->username);
    }
    if (o->password != NULL) {
        size_t pl = o->password_len ? o->password_len : strlen(o->password);
        pk_put_bin(&body, o->password, pl);
    }
    return pk_frame(0x10, &body);
}

tb_pkt pk_connect_raw(const char *proto_name, uint8_t level, uint8_t flags, uint16_t keepalive,
                      const char *client_id)
{
    tb_pkt body = {0};
    pk_put_str(&body, proto_name);
    pk_put_u8(&body, level);
    pk_put_u8(&body, flags);
    pk_put_u16(&body, keepalive);
    pk_put_str(&body, client_id);
    return pk_frame(0x10, &body);
}

size_t pk_publish_into(uint8_t *out, size_t cap, const pk_publish_opts *o)
{
    size_t tl = o->topic_len ? o->topic_len : (o->topic ? strlen(o->topic) : 0);
    size_t pl = o->payload_len;
    if (pl == 0 && o->payload != NULL) {
        pl = strlen(o->payload);
    }
    size_t props_len = 0;
    uint8_t props_hdr[4];
    size_t props_hdr_len = 0;
    if (o->v5) {
        props_len = o->props ? o->props->len : 0;
        props_hdr_len = varint_encode((uint32_t)props_len, props_hdr);
    }
    size_t rl = 2 + tl + (o->qos > 0 ? 2 : 0) + props_hdr_len + props_len + pl;
    uint8_t rl_bytes[4];
    size_t rl_len = varint_encode((uint32_t)rl, rl_bytes);
    if (1 + rl_len + rl > cap) {
        return 0;
    }
    size_t n = 0;
    out[n++] = (uint8_t)(0x30 | (o->dup ? 0x08 : 0) | ((o->qos & 3) << 1) | (o->retain ? 1 : 0));
    memcpy(out + n, rl_bytes, rl_len);
    n += rl_len;
    out[n++] = (uint8_t)(tl >> 8);
    out[n++] = (uint8_t)tl;
    if (tl > 0) {
        memcpy(out + n, o->topic, tl);
    }
    n += tl;
    if (o->qos > 0) {
        out[n++] = (uint8_t)(o->id >> 8);
        out[n++] = (uint8_t)o->id;
    }
    if (o->v5) {
        memcpy(out + n, props_hdr, props_hdr_len);
        n += props_hdr_len;
        if (props_len > 0) {
            memcpy(out + n, o->props->b, props_len);
        }
        n += props_len;
    }
    if (pl > 0) {
        memcpy(out + n, o->payload, pl);
    }
    n += pl;
    return n;
}

tb_pkt pk_publish(const pk_publish_opts *o)
{
    tb_pkt p = {0};
    p.len = pk_publish_into(p.b, sizeof p.b, o);
    if (p.len == 0) {
        cr_fatal("harness: PUBLISH larger than TB_PKT_CAP; use pk_publish_into");
    }
    return p;
}

static tb_pkt ack(uint8_t first_byte, uint16_t id)
{
    uint8_t body[2] = {(uint8_t)(id >> 8), (uint8_t)id};
    return pk_raw(first_byte, body, 2);
}

tb_pkt pk_puback(uint16_t id)
{
    return ack(0x40, id);
}

tb_pkt pk_pubrec(uint16_t id)
{
    return ack(0x50, id);
}

tb_pkt pk_pubrel(uint16_t id)
{
    return ack(0x62, id);
}

tb_pkt pk_pubcomp(uint16_t id)
{
    return ack(0x70, id);
}

tb_pkt pk_unsuback(uint16_t id)
{
    return ack(0xB0, id);
}

tb_pkt pk_subscribe(uint16_t id, size_t n, const pk_sub *subs)
{
    tb_pkt body = {0};
    pk_put_u16(&body, id);
    for (size_t i = 0; i < n; i++) {
        pk_put_str(&body, subs[i].filter);
        pk_put_u8(&body, subs[i].options);
    }
    return pk_frame(0x82, &body);
}

tb_pkt pk_subscribe1(uint16_t id, const char *filter, uint8_t qos)
{
    pk_sub s = {filter, qos};
    return pk_subscribe(id, 1, &s);
}

tb_pkt pk_suback(uint16_t id, size_t n, const uint8_t *codes)
{
    tb_pkt body = {0};
    pk_put_u16(&body, id);
    pk_put_bytes(&body, codes, n);
    return pk_frame(0x90, &body);
}

tb_pkt pk_unsubscribe(uint16_t id, size_t n, const char *const *filters)
{
    tb_pkt body = {0};
    pk_put_u16(&body, id);
    for (size_t i = 0; i < n; i++) {
        pk_put_str(&body, filters[i]);
    }
    return pk_frame(0xA2, &body);
}

tb_pkt pk_unsubscribe1(uint16_t id, const char *filter)
{
    return pk_unsubscribe(id, 1, &filter);
}

tb_pkt pk_connack(bool session_present, uint8_t rc)
{
    uint8_t body[2] = {session_present ? 1 : 0, rc};
    return pk_raw(0x20, body, 2);
}

tb_pkt pk_pingreq(void)
{
    return pk_raw(0xC0, NULL, 0);
}

tb_pkt pk_pingresp(void)
{
    return pk_raw(0xD0, NULL, 0);
}

tb_pkt pk_disconnect(void)
{
    return pk_raw(0xE0, NULL, 0);
}

void pk_prop_u8(tb_pkt *p, uint8_t id, uint8_t v)
{
    pk_put_varint(p, id);
    pk_put_u8(p, v);
}

void pk_prop_u16(tb_pkt *p, uint8_t id, uint16_t v)
{
    pk_put_varint(p, id);
    pk_put_u16(p, v);
}

void pk_prop_u32(tb_pkt *p, uint8_t id, uint32_t v)
{
    pk_put_varint(p, id);
    pk_put_u32(p, v);
}

void pk_prop_varint(tb_pkt *p, uint8_t id, uint32_t v)
{
    pk_put_varint(p, id);
    pk_put_varint(p, v);
}

void pk_prop_str(tb_pkt *p, uint8_t id, const char *s)
{
    pk_put_varint(p, id);
    pk_put_str(p, s);
}

void pk_prop_bin(tb_pkt *p, uint8_t id, const void *data, size_t n)
{
    pk_put_varint(p, id);
    pk_put_bin(p, data, n);
}

void pk_prop_pair(tb_pkt *p, uint8_t id, const char *k, const char *v)
{
    pk_put_varint(p, id);
    pk_put_str(p, k);
    pk_put_str(p, v);
}

tb_pkt pk_disconnect_v5(uint8_t reason, const tb_pkt *props)
{
    tb_pkt body = {0};
    pk_put_u8(&body, reason);
    put_props(&body, props);
    return pk_frame(0xE0, &body);
}

tb_pkt pk_subscribe_v5(uint16_t id, const tb_pkt *props, size_t n, const pk_sub *subs)
{
    tb_pkt body = {0};
    pk_put_u16(&body, id);
    put_props(&body, props);
    for (size_t i = 0; i < n; i++) {
        pk_put_str(&body, subs[i].filter);
        pk_put_u8(&body, subs[i].options);
    }
    return pk_frame(0x82, &body);
}

tb_pkt pk_unsubscribe_v5(uint16_t id, const tb_pkt *props, size_t n, const char *const *filters)
{
    tb_pkt body = {0};
    pk_put_u16(&body, id);
    put_props(&body, props);
    for (size_t i = 0; i < n; i++) {
        pk_put_str(&body, filters[i]);
    }
    return pk_frame(0xA2, &body);
}

/* Parse fixed header: returns header length (type byte + RL bytes) and sets *rl, 0 if more
 * bytes are needed, -1 if the Remaining Length is malformed. */
static int parse_fixed_header(const uint8_t *b, size_t n, uint32_t *rl)
{
    uint32_t v = 0;
    uint32_t mult = 1;
    for (size_t i = 1; i <= 4; i++) {
        if (i >= n) {
            return 0;
        }
        v += (uint32_t)(b[i] & 0x7F) * mult;
        if ((b[i] & 0x80) == 0) {
            *rl = v;
            return (int)i + 1;
        }
        mult *= 128;
    }
    return -1;
}

bool pk_parse_publish(const uint8_t *b, size_t n, pk_publish_info *out)
{
    uint32_t rl;
    int hl = parse_fixed_header(b, n, &rl);
    if (hl <= 0 || (size_t)hl + rl != n || (b[0] >> 4) != 3) {
        return false;
    }
    memset(out, 0, sizeof *out);
    out->dup = (b[0] & 0x08) != 0;
    out->qos = (b[0] >> 1) & 3;
    out->retain = (b[0] & 0x01) != 0;
    if (out->qos == 3) {
        return false;
    }
    size_t pos = (size_t)hl;
    if (pos + 2 > n) {
        return false;
    }
    out->topic_len = ((size_t)b[pos] << 8) | b[pos + 1];
    pos += 2;
    if (pos + out->topic_len > n) {
        return false;
    }
    out->topic = b + pos;
    pos += out->topic_len;
    if (out->qos > 0) {
        if (pos + 2 > n) {
            return false;
        }
        out->id = (uint16_t)((b[pos] << 8) | b[pos + 1]);
        pos += 2;
    }
    out->payload = b + pos;
    out->payload_len = n - pos;
    return true;
}

const char *pk_hex(const uint8_t *b, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o + 4 < cap; i++) {
        o += (size_t)snprintf(out + o, cap - o, "%02x ", b[i]);
    }
    if (n > 0 && o + 4 >= cap && cap > 4) {
        snprintf(out + cap - 5, 5, "...");
    } else if (o > 0) {
        out[o - 1] = '\0';
    }
    return out;
}

/* ------------------------------------------------------------------------------------ */
/* Raw client                                                                            */
/* ------------------------------------------------------------------------------------ */

static bool rx_reserve(tc_client *c, size_t extra)
{
    if (c->rx_len + extra <= c->rx_cap) {
        return true;
    }
    size_t cap = c->rx_cap ? c->rx_cap : 4096;
    while (cap < c->rx_len + extra) {
        cap *= 2;
    }
    uint8_t *nb = realloc(c->rx, cap);
    if (nb == NULL) {
        return false;
    }
    c->rx = nb;
    c->rx_cap = cap;
    return true;
}

/* Lock c->mtx of a stream client (a tcp client has no other thread to exclude). */
static void rx_lock(tc_client *c)
{
    if (c->stream != NULL) {
        pthread_mutex_lock(&c->mtx);
    }
}

static void rx_unlock(tc_client *c)
{
    if (c->stream != NULL) {
        pthread_mutex_unlock(&c->mtx);
    }
}

/* ---- tcp: a blocking socket, read only when the test waits for input ---------------- */

static tc_client *socket_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return NULL;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, IO_TIMEOUT_MS) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
            if (ok == false && err != 0) {
                errno = err;
            }
        }
    }
    int one = 1;
    int fl = fcntl(fd, F_GETFL);
    if (!ok || fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    tc_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->next_id = 1;
    return c;
}

static int socket_send(tc_client *c, const uint8_t *p, size_t len)
{
    int64_t deadline = tb_now_ms() + IO_TIMEOUT_MS;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            int left = remaining_ms(deadline);
            if (left == 0 || poll(&pfd, 1, left) <= 0) {
                return -1;
            }
            continue;
        }
        return -1;
    }
    return 0;
}

/* Wait (until deadline) for input and read what there is. 0: something changed (bytes,
 * EOF); TC_TIMEOUT or TC_ERROR otherwise. */
static int socket_fill(tc_client *c, int64_t deadline)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int r = poll(&pfd, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) {
        return 0;
    }
    if (r < 0) {
        return TC_ERROR;
    }
    if (r == 0) {
        return TC_TIMEOUT;
    }
    if (!rx_reserve(c, 65536)) {
        return TC_ERROR;
    }
    ssize_t n = recv(c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len, MSG_DONTWAIT);
    if (n > 0) {
        c->rx_len += (size_t)n;
    } else if (n == 0 || errno == ECONNRESET || errno == EPIPE) {
        c->closed = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return TC_ERROR;
    }
    return 0;
}

/* ---- tls, ws, wss: an nng stream ----------------------------------------------------- */

static void stream_tx_cb(void *arg);

/* A receive completed: append what arrived, or note that the connection is over. The next
 * receive is started by the next wait for input (stream_fill), as a socket is read only
 * when the test asks: a client that does not read stops reading (after one chunk). */
static void stream_rx_cb(void *arg)
{
    tc_client *c = arg;
    int rv = nng_aio_result(c->rx_aio);
    pthread_mutex_lock(&c->mtx);
    c->rx_busy = false;
    if (rv == 0) {
        size_t n = nng_aio_count(c->rx_aio);
        if (rx_reserve(c, n)) {
            memcpy(c->rx + c->rx_len, c->rx_chunk, n);
            c->rx_len += n;
        } else {
            c->rx_nomem = true;
        }
    } else {
        /* EOF, reset, a TLS alert or a WebSocket close: the connection is over either way */
        c->closed = true;
        c->close_reason = rv;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mtx);
}

/*
 * nng 1.5.2's TLS and WebSocket client streams (like the broker's, see platform/net.c
 * mql_net_reap_lost) can lose the end of a connection: when the server's close reaches the
 * TLS/HTTP layer while no receive is queued there, that layer closes the TCP connection but
 * a receive started later waits forever (seen with the socket in CLOSE-WAIT or gone). Tests
 * must see the broker close, so: the TCP socket under such a stream has no peer any more
 * and asking for the peer address fails, while it works on every live connection.
 */
static bool stream_lost(tc_client *c)
{
    nng_sockaddr sa;
    return nng_stream_get_addr(c->stream, NNG_OPT_REMADDR, &sa) != 0;
}

/* Called with c->mtx held while waiting for input. If the stream lost its close, abort it:
 * that fails the waiting receive (after any data completion already on its way), so the
 * receive callback reports the close in order. */
static void abort_if_lost(tc_client *c)
{
    if (c->closed || c->aborted || !stream_lost(c)) {
        return;
    }
    c->aborted = true;
    pthread_mutex_unlock(&c->mtx);
    nng_stream_close(c->stream);
    pthread_mutex_lock(&c->mtx);
}

/* Like socket_fill, with c->mtx held: make sure a receive is outstanding, then wait for its
 * callback in slices of PROBE_MS, looking for a lost close between them. */
static int stream_fill(tc_client *c, int64_t deadline)
{
    int left = remaining_ms(deadline);
    if (left == 0) {
        return TC_TIMEOUT;
    }
    if (c->aborted && !c->rx_busy) {
        /* we closed the stream (a lost close, or a send that did not finish): a receive
         * started now might never complete (nng 1.5.2 TLS), and the connection is over */
        c->closed = true;
        return 0;
    }
    if (!c->rx_busy) {
        c->rx_busy = true;
        nng_iov iov = {.iov_buf = c->rx_chunk, .iov_len = RX_CHUNK};
        nng_aio_set_iov(c->rx_aio, 1, &iov);
        nng_stream_recv(c->stream, c->rx_aio);
    }
    int wait = left < PROBE_MS ? left : PROBE_MS;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)wait * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    if (pthread_cond_timedwait(&c->cv, &c->mtx, &until) == ETIMEDOUT) {
        abort_if_lost(c);
    }
    return 0;
}

static void stream_free(tc_client *c)
{
    if (c->stream != NULL) {
        nng_stream_close(c->stream);
    }
    if (c->rx_aio != NULL) {
        nng_aio_stop(c->rx_aio);
    }
    if (c->tx_aio != NULL) {
        nng_aio_stop(c->tx_aio);
    }
    if (c->stream != NULL) {
        nng_stream_free(c->stream);
    }
    if (c->rx_aio != NULL) {
        nng_aio_free(c->rx_aio);
    }
    if (c->tx_aio != NULL) {
        nng_aio_free(c->tx_aio);
    }
    if (c->dialer != NULL) {
        nng_stream_dialer_free(c->dialer);
    }
    pthread_mutex_destroy(&c->mtx);
    pthread_cond_destroy(&c->cv);
    free(c->rx_chunk);
    free(c->rx);
    free(c);
}

/* The URL of the broker on port for the current transport. */
static void broker_url(uint16_t port, char *out, size_t cap)
{
    static const char *const fmt[] = {
        [TB_TCP] = "tcp://127.0.0.1:%u",
        [TB_TLS] = "tls+tcp://127.0.0.1:%u",
        [TB_WS] = "ws://127.0.0.1:%u/mqtt",
        [TB_WSS] = "wss://127.0.0.1:%u/mqtt",
    };
    snprintf(out, cap, fmt[tb_transport_get()], port);
}

/* TLS for the client. The broker's certificate is not verified: each broker has its own
 * throw-away certificate and these tests are about MQTT over the transport; certificate
 * checking is tested with real clients (tests/clients/test_security.py). */
int tb_tls_engine_init(void)
{
    char why[256];
    if (mql_tls_engine_init(why, sizeof(why)) != MQL_OK) {
        fprintf(stderr, "harness: %s\n", why);
        return NNG_ENOTSUP;
    }
    return 0;
}

static int client_tls(nng_stream_dialer *d)
{
    nng_tls_config *cfg;
    int rv = tb_tls_engine_init();
    if (rv != 0)
        return rv;
    rv = mql_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT, NULL);
    if (rv != 0) {
        return rv;
    }
    if ((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_NONE)) == 0) {
        rv = nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
    }
    nng_tls_config_free(cfg); /* the dialer holds its own reference */
    return rv;
}

static _Thread_local int last_stream_error;

static tc_client *stream_connect(uint16_t port)
{
    char url[96];
    tb_transport t = tb_transport_get();
    broker_url(port, url, sizeof url);
    tc_client *c = calloc(1, sizeof *c);
    if (c == NULL || (c->rx_chunk = malloc(RX_CHUNK)) == NULL) {
        free(c);
        last_stream_error = NNG_ENOMEM;
        return NULL;
    }
    c->fd = -1;
    c->next_id = 1;
    pthread_mutex_init(&c->mtx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are monotonic */
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rv = nng_stream_dialer_alloc(&c->dialer, url);
    if (rv == 0 && (t == TB_TLS || t == TB_WSS)) {
        rv = client_tls(c->dialer);
    }
    if (rv == 0 && (t == TB_WS || t == TB_WSS)) {
        rv = nng_stream_dialer_set_string(c->dialer, NNG_OPT_WS_PROTOCOL, "mqtt");
    }
    if (rv == 0) {
        rv = nng_aio_alloc(&c->tx_aio, stream_tx_cb, c);
    }
    if (rv == 0) {
        rv = nng_aio_alloc(&c->rx_aio, stream_rx_cb, c);
    }
    if (rv == 0) {
        /* tls: the TCP connection (nng's TLS shakes hands with the first byte sent or read);
         * ws and wss: also the TLS handshake and the HTTP upgrade */
        nng_aio_set_timeout(c->tx_aio, IO_TIMEOUT_MS);
        nng_stream_dialer_dial(c->dialer, c->tx_aio);
        nng_aio_wait(c->tx_aio);
        rv = nng_aio_result(c->tx_aio);
    }
    if (rv == 0) {
        c->stream = nng_aio_get_output(c->tx_aio, 0);
        (void)nng_stream_set_bool(c->stream, NNG_OPT_TCP_NODELAY, true);
        return c;
    }
    last_stream_error = rv;
    stream_free(c);
    return NULL;
}

/* A send (or the dial) completed. */
static void stream_tx_cb(void *arg)
{
    tc_client *c = arg;
    pthread_mutex_lock(&c->mtx);
    c->tx_busy = false;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mtx);
}

/* Wait with c->mtx held until the send in flight completes. nng 1.5.2's TLS stream does not
 * always honour the aio timeout of a send (seen: a send into a connection the broker had
 * closed, still waiting after 30 s), so at the deadline the stream is closed, which fails
 * every queued send. The connection is then over, as after a failed write. */
static void stream_tx_wait(tc_client *c, int64_t deadline)
{
    while (c->tx_busy) {
        int left = remaining_ms(deadline);
        int wait = left < PROBE_MS ? left : PROBE_MS;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)wait * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&c->cv, &c->mtx, &until) != ETIMEDOUT || !c->tx_busy ||
            c->aborted) {
            continue;
        }
        if (left == 0 || stream_lost(c)) {
            c->aborted = true;
            pthread_mutex_unlock(&c->mtx);
            nng_stream_close(c->stream);
            pthread_mutex_lock(&c->mtx);
            deadline = tb_now_ms() + IO_TIMEOUT_MS; /* for the close to fail the send */
        }
    }
}

static int stream_send(tc_client *c, const uint8_t *bytes, size_t len)
{
    /* As a send into a closed TCP connection fails at once: after one failed send, and
     * when the TCP socket has no peer any more. */
    if (c->send_failed || stream_lost(c)) {
        c->send_failed = true;
        return -1;
    }
    /* nng_stream_send may write less than asked: send the rest until done. Over a WebSocket
     * every call is one binary message, which may hold any part of a packet [MQTT-6.0.0-2]. */
    uint8_t *p = (uint8_t *)bytes;
    int64_t deadline = tb_now_ms() + IO_TIMEOUT_MS;
    pthread_mutex_lock(&c->mtx);
    while (len > 0) {
        nng_iov iov = {.iov_buf = p, .iov_len = len};
        nng_aio_set_iov(c->tx_aio, 1, &iov);
        nng_aio_set_timeout(c->tx_aio, remaining_ms(deadline));
        c->tx_busy = true;
        nng_stream_send(c->stream, c->tx_aio);
        stream_tx_wait(c, deadline);
        if (nng_aio_result(c->tx_aio) != 0 || remaining_ms(deadline) == 0) {
            c->send_failed = true;
            break;
        }
        size_t n = nng_aio_count(c->tx_aio);
        p += n;
        len -= n;
    }
    pthread_mutex_unlock(&c->mtx);
    return c->send_failed ? -1 : 0;
}

/* ---- the client ---------------------------------------------------------------------- */

tc_client *tc_connect_try(uint16_t port)
{
    return tb_transport_get() == TB_TCP ? socket_connect(port) : stream_connect(port);
}

tc_client *tc_connect_at(const char *file, int line, uint16_t port)
{
    tc_client *c = tc_connect_try(port);
    if (c == NULL) {
        char url[96];
        broker_url(port, url, sizeof url);
        FAIL_AT(file, line, "cannot connect to %s: %s", url,
                tb_transport_get() == TB_TCP ? strerror(errno) : nng_strerror(last_stream_error));
    }
    return c;
}

void tc_close(tc_client *c)
{
    if (c == NULL) {
        return;
    }
    if (c->stream != NULL) {
        stream_free(c);
        return;
    }
    close(c->fd);
    free(c->rx);
    free(c);
}

void tc_disconnect(tc_client *c)
{
    if (c == NULL) {
        return;
    }
    tc_sendp(c, pk_disconnect());
    /* Wait (bounded) until the broker has processed the DISCONNECT and closed: a test that
     * goes on at once could race a broker still delivering to this connection. Anything
     * still unread is discarded. */
    uint8_t buf[512];
    int64_t deadline = tb_now_ms() + TB_WAIT_MS;
    while (tb_now_ms() < deadline) {
        int r = tc_recv_packet(c, buf, sizeof buf, 50);
        if (r == TC_CLOSED || r == TC_ERROR)
            break;
        if (r == TC_TOOBIG)
            break;
    }
    tc_close(c);
}

int tc_fd(const tc_client *c)
{
    return c->fd;
}

int tc_send(tc_client *c, const void *bytes, size_t len)
{
    return c->stream != NULL ? stream_send(c, bytes, len) : socket_send(c, bytes, len);
}

int tc_sendp(tc_client *c, tb_pkt p)
{
    return tc_send(c, p.b, p.len);
}

/* If the buffer holds a whole packet, return its length; 0 if not; -1 if malformed. */
static long buffered_packet(const tc_client *c)
{
    uint32_t rl;
    int hl = parse_fixed_header(c->rx, c->rx_len, &rl);
    if (hl < 0) {
        return -1;
    }
    if (hl == 0 || c->rx_len < (size_t)hl + rl) {
        return 0;
    }
    return (long)hl + (long)rl;
}

int tc_recv_packet(tc_client *c, uint8_t *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = tb_now_ms() + timeout_ms;
    int r;
    rx_lock(c);
    for (;;) {
        long plen = buffered_packet(c);
        if (plen < 0 || c->rx_nomem) {
            r = TC_ERROR;
            break;
        }
        if (plen > 0) {
            if ((size_t)plen > cap) {
                r = TC_TOOBIG;
                break;
            }
            memcpy(buf, c->rx, (size_t)plen);
            memmove(c->rx, c->rx + plen, c->rx_len - (size_t)plen);
            c->rx_len -= (size_t)plen;
            r = (int)plen;
            break;
        }
        if (c->closed) {
            r = TC_CLOSED;
            break;
        }
        r = c->stream != NULL ? stream_fill(c, deadline) : socket_fill(c, deadline);
        if (r != 0) {
            break;
        }
    }
    rx_unlock(c);
    return r;
}

void tc_unread(tc_client *c, const uint8_t *pkt, size_t len)
{
    rx_lock(c);
    bool ok = rx_reserve(c, len);
    if (ok) {
        memmove(c->rx + len, c->rx, c->rx_len);
        memcpy(c->rx, pkt, len);
        c->rx_len += len;
    }
    rx_unlock(c);
    if (!ok) {
        cr_fatal("harness: out of memory");
    }
}

static const char *result_name(int r)
{
    switch (r) {
    case TC_TIMEOUT:
        return "timeout (nothing received)";
    case TC_CLOSED:
        return "connection closed by the broker";
    case TC_ERROR:
        return "socket error or malformed Remaining Length";
    case TC_TOOBIG:
        return "packet too big for the receive buffer";
    default:
        return "?";
    }
}

#define RX_CAP 65536
#define HEX_CAP 400

void tc_expect_at(const char *file, int line, tc_client *c, const void *bytes, size_t len,
                  int timeout_ms)
{
    static uint8_t got[RX_CAP];
    char want_hex[HEX_CAP];
    char got_hex[HEX_CAP];
    int r = tc_recv_packet(c, got, sizeof got, timeout_ms);
    pk_hex(bytes, len, want_hex, sizeof want_hex);
    if (r < 0) {
        FAIL_AT(file, line, "expected packet [%s], got %s", want_hex, result_name(r));
    }
    if ((size_t)r != len || memcmp(got, bytes, len) != 0) {
        FAIL_AT(file, line, "expected packet [%s]\n      got packet [%s]", want_hex,
                pk_hex(got, (size_t)r, got_hex, sizeof got_hex));
    }
}

void tc_expectp_at(const char *file, int line, tc_client *c, tb_pkt p, int timeout_ms)
{
    tc_expect_at(file, line, c, p.b, p.len, timeout_ms);
}

void tc_expect_closed_at(const char *file, int line, tc_client *c, int timeout_ms)
{
    static uint8_t got[RX_CAP];
    char got_hex[HEX_CAP];
    int r = tc_recv_packet(c, got, sizeof got, timeout_ms);
    if (r >= 0) {
        FAIL_AT(file, line, "expected the broker to close the connection, got packet [%s]",
                pk_hex(got, (size_t)r, got_hex, sizeof got_hex));
    }
    if (r == TC_CLOSED) {
        rx_lock(c);
        size_t partial = c->rx_len;
        if (partial > 0) {
            pk_hex(c->rx, c->rx_len, got_hex, sizeof got_hex);
        }
        rx_unlock(c);
        if (partial > 0) {
            FAIL_AT(file, line, "connection closed, but after %zu bytes of a partial packet [%s]",
                    partial, got_hex);
        }
    }
    if (r != TC_CLOSED) {
        FAIL_AT(file, line, "expected the broker to close the connection within %d ms, got %s",
                timeout_ms, result_name(r));
    }
}

void tc_expect_nothing_at(const char *file, int line, tc_client *c, int ms)
{
    static uint8_t got[RX_CAP];
    char got_hex[HEX_CAP];
    int r = tc_recv_packet(c, got, sizeof got, ms);
    if (r >= 0) {
        FAIL_AT(file, line, "expected nothing for %d ms, got packet [%s]", ms,
                pk_hex(got, (size_t)r, got_hex, sizeof got_hex));
    }
    if (r != TC_TIMEOUT) {
        FAIL_AT(file, line, "expected nothing for %d ms, got %s", ms, result_name(r));
    }
}

bool tc_recv_publish(tc_client *c, uint8_t *buf, size_t cap, pk_publish_info *info, int timeout_ms)
{
    int r = tc_recv_packet(c, buf, cap, timeout_ms);
    if (r < 0) {
        return false;
    }
    if (!pk_parse_publish(buf, (size_t)r, info)) {
        tc_unread(c, buf, (size_t)r);
        return false;
    }
    return true;
}

uint16_t tc_expect_publish_at(const char *file, int line, tc_client *c, int timeout_ms,
                              const pk_publish_opts *want)
{
    static uint8_t got[RX_CAP];
    char got_hex[HEX_CAP];
    size_t wtl = want->topic_len ? want->topic_len : strlen(want->topic);
    size_t wpl = want->payload_len;
    if (wpl == 0 && want->payload != NULL) {
        wpl = strlen(want->payload);
    }
    const char *wpayload = want->payload ? (const char *)want->payload : "";
    int r = tc_recv_packet(c, got, sizeof got, timeout_ms);
    if (r < 0) {
        FAIL_AT(file, line, "expected PUBLISH '%.*s' '%.*s' qos %u retain %d dup %d, got %s",
                (int)wtl, want->topic, (int)wpl, wpayload, want->qos, want->retain, want->dup,
                result_name(r));
    }
    pk_publish_info in;
    pk_hex(got, (size_t)r, got_hex, sizeof got_hex);
    if (!pk_parse_publish(got, (size_t)r, &in)) {
        FAIL_AT(file, line, "expected PUBLISH '%.*s' '%.*s', got packet [%s]", (int)wtl,
                want->topic, (int)wpl, wpayload, got_hex);
    }
    bool same =
        in.topic_len == wtl && memcmp(in.topic, want->topic, wtl) == 0 && in.payload_len == wpl &&
        (wpl == 0 || memcmp(in.payload, want->payload, wpl) == 0) && in.qos == want->qos &&
        in.retain == want->retain && in.dup == want->dup && (want->id == 0 || in.id == want->id);
    if (!same) {
        FAIL_AT(file, line,
                "expected PUBLISH '%.*s' '%.*s' qos %u retain %d dup %d id %u\n"
                "     got PUBLISH '%.*s' '%.*s' qos %u retain %d dup %d id %u [%s]",
                (int)wtl, want->topic, (int)wpl, wpayload, want->qos, want->retain, want->dup,
                want->id, (int)in.topic_len, (const char *)in.topic,
                (int)(in.payload_len > 64 ? 64 : in.payload_len), (const char *)in.payload, in.qos,
                in.retain, in.dup, in.id, got_hex);
    }
    if (want->qos > 0 && in.id == 0) {
        FAIL_AT(file, line, "PUBLISH with QoS %u has packet id 0 [v3.1.1 MQTT-2.3.1-1]", in.qos);
    }
    return in.id;
}

tc_client *tc_open_at(const char *file, int line, uint16_t port, const char *client_id, bool clean,
                      uint16_t keepalive, bool session_present)
{
    tc_client *c = tc_connect_at(file, line, port);
    tc_sendp(c, PK_CONNECT(.client_id = client_id, .clean = clean, .keepalive = keepalive));
    tc_expectp_at(file, line, c, pk_connack(session_present, 0), TB_WAIT_MS);
    return c;
}

void tc_subscribe_at(const char *file, int line, tc_client *c, uint16_t id, const char *filter,
                     uint8_t qos, uint8_t want_granted)
{
    static uint8_t got[RX_CAP];
    char got_hex[HEX_CAP];
    tb_pkt want = pk_suback(id, 1, &want_granted);
    tc_sendp(c, pk_subscribe1(id, filter, qos));
    /* PUBLISH packets may precede the SUBACK: collect them and put them back in order. */
    uint8_t *early = NULL;
    size_t early_len = 0;
    int64_t deadline = tb_now_ms() + TB_WAIT_MS;
    for (;;) {
        int r = tc_recv_packet(c, got, sizeof got, remaining_ms(deadline));
        if (r < 0) {
            free(early);
            FAIL_AT(file, line, "SUBSCRIBE '%s': expected SUBACK, got %s", filter, result_name(r));
        }
        if ((got[0] >> 4) == 3) {
            uint8_t *ne = realloc(early, early_len + (size_t)r);
            cr_assert(ne != NULL);
            early = ne;
            memcpy(early + early_len, got, (size_t)r);
            early_len += (size_t)r;
            continue;
        }
        if ((size_t)r != want.len || memcmp(got, want.b, want.len) != 0) {
            free(early);
            FAIL_AT(file, line, "SUBSCRIBE '%s' qos %u: expected SUBACK granting 0x%02x, got [%s]",
                    filter, qos, want_granted, pk_hex(got, (size_t)r, got_hex, sizeof got_hex));
        }
        break;
    }
    if (early_len > 0) {
        tc_unread(c, early, early_len);
    }
    free(early);
}

void tc_publish_at(const char *file, int line, tc_client *c, const char *topic, const char *payload,
                   uint8_t qos, bool retain)
{
    uint16_t id = 0;
    if (qos > 0) {
        id = c->next_id++;
        if (c->next_id == 0) {
            c->next_id = 1;
        }
    }
    tc_sendp(
        c, PK_PUBLISH(.topic = topic, .payload = payload, .qos = qos, .retain = retain, .id = id));
    if (qos == 1) {
        tc_expectp_at(file, line, c, pk_puback(id), TB_WAIT_MS);
    } else if (qos == 2) {
        tc_expectp_at(file, line, c, pk_pubrec(id), TB_WAIT_MS);
        tc_sendp(c, pk_pubrel(id));
        tc_expectp_at(file, line, c, pk_pubcomp(id), TB_WAIT_MS);
    }
}

void tc_ping_at(const char *file, int line, tc_client *c)
{
    tc_sendp(c, pk_pingreq());
    tc_expectp_at(file, line, c, pk_pingresp(), TB_WAIT_MS);
}

/* ------------------------------------------------------------------------------------ */
/* MQTT 5: strict parser for packets a server sends, and asserting v5 helpers            */
/* ------------------------------------------------------------------------------------ */

enum prop_type { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VARINT, PT_STR, PT_BIN, PT_PAIR };

/* Packet-type bits for "where may this property appear" (Table 2-4); bit 0 = will props. */
#define IN(t) (1u << (t))
#define IN_WILL 1u

typedef struct prop_def {
    enum prop_type type;
    unsigned where;
    uint32_t min; /* smallest valid integer value */
    uint32_t max; /* largest valid integer value */
} prop_def;

static prop_def prop_lookup(uint32_t id)
{
    const unsigned acks = IN(4) | IN(5) | IN(6) | IN(7);
    switch (id) {
    case 0x01:
        return (prop_def){PT_BYTE, IN(3) | IN_WILL, 0, 1};
    case 0x02:
        return (prop_def){PT_U32, IN(3) | IN_WILL, 0, UINT32_MAX};
    case 0x03:
    case 0x08:
        return (prop_def){PT_STR, IN(3) | IN_WILL, 0, 0};
    case 0x09:
        return (prop_def){PT_BIN, IN(3) | IN_WILL, 0, 0};
    case 0x0B:
        return (prop_def){PT_VARINT, IN(3) | IN(8), 1, 268435455};
    case 0x11:
        return (prop_def){PT_U32, IN(1) | IN(2) | IN(14), 0, UINT32_MAX};
    case 0x12:
        return (prop_def){PT_STR, IN(2), 0, 0};
    case 0x13:
        return (prop_def){PT_U16, IN(2), 0, 65535};
    case 0x15:
        return (prop_def){PT_STR, IN(1) | IN(2) | IN(15), 0, 0};
    case 0x16:
        return (prop_def){PT_BIN, IN(1) | IN(2) | IN(15), 0, 0};
    case 0x17:
    case 0x19:
        return (prop_def){PT_BYTE, IN(1), 0, 1};
    case 0x18:
        return (prop_def){PT_U32, IN_WILL, 0, UINT32_MAX};
    case 0x1A:
        return (prop_def){PT_STR, IN(2), 0, 0};
    case 0x1C:
        return (prop_def){PT_STR, IN(2) | IN(14), 0, 0};
    case 0x1F:
        return (prop_def){PT_STR, IN(2) | acks | IN(9) | IN(11) | IN(14) | IN(15), 0, 0};
    case 0x21:
        return (prop_def){PT_U16, IN(1) | IN(2), 1, 65535};
    case 0x22:
        return (prop_def){PT_U16, IN(1) | IN(2), 0, 65535};
    case 0x23:
        return (prop_def){PT_U16, IN(3), 1, 65535};
    case 0x24:
    case 0x25:
    case 0x28:
    case 0x29:
    case 0x2A:
        return (prop_def){PT_BYTE, IN(2), 0, 1};
    case 0x26:
        return (prop_def){PT_PAIR, 0xFFFEu | IN_WILL, 0, 0};
    case 0x27:
        return (prop_def){PT_U32, IN(1) | IN(2), 1, UINT32_MAX};
    default:
        return (prop_def){PT_NONE, 0, 0, 0};
    }
}

/* Variable Byte Integer at b[*pos..n): value into *v. False if truncated or longer than four
 * bytes. */
static bool get_varint(const uint8_t *b, size_t n, size_t *pos, uint32_t *v)
{
    uint32_t val = 0;
    uint32_t mult = 1;
    for (int i = 0; i < 4; i++) {
        if (*pos >= n) {
            return false;
        }
        uint8_t d = b[(*pos)++];
        val += (uint32_t)(d & 0x7F) * mult;
        if ((d & 0x80) == 0) {
            *v = val;
            return true;
        }
        mult *= 128;
    }
    return false;
}

/* Well-formed UTF-8 without U+0000 and surrogates [MQTT-1.5.4-1] [MQTT-1.5.4-2]. */
static bool utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t len;
        if (c == 0) {
            return false;
        } else if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F;
            len = 2;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F;
            len = 3;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07;
            len = 4;
        } else {
            return false;
        }
        if (i + len > n) {
            return false;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += len;
    }
    return true;
}

/* One property at props[*pos]: id, definition, and the value span [*vstart, *pos). */
typedef struct prop_it {
    uint32_t id;
    prop_def def;
    size_t start;  /* offset of the identifier */
    size_t vstart; /* offset of the value */
    size_t end;    /* offset after the value */
    uint32_t ival; /* integer value */
    pk_slice data; /* string / binary value (first string of a pair) */
} prop_it;

static bool u16_at(const uint8_t *b, size_t n, size_t pos, size_t *out)
{
    if (pos + 2 > n) {
        return false;
    }
    *out = ((size_t)b[pos] << 8) | b[pos + 1];
    return true;
}

/* Read the property at *pos. False with *why on malformed data. */
static bool prop_next(pk_slice props, size_t *pos, prop_it *it, const char **why)
{
    const uint8_t *b = props.p;
    size_t n = props.n;
    memset(it, 0, sizeof *it);
    it->start = *pos;
    if (!get_varint(b, n, pos, &it->id)) {
        *why = "truncated property identifier";
        return false;
    }
    it->def = prop_lookup(it->id);
    it->vstart = *pos;
    size_t l1;
    size_t l2;
    switch (it->def.type) {
    case PT_NONE:
        *why = "unknown property identifier";
        return false;
    case PT_BYTE:
        if (*pos + 1 > n) {
            goto trunc;
        }
        it->ival = b[*pos];
        *pos += 1;
        break;
    case PT_U16:
        if (!u16_at(b, n, *pos, &l1)) {
            goto trunc;
        }
        it->ival = (uint32_t)l1;
        *pos += 2;
        break;
    case PT_U32:
        if (*pos + 4 > n) {
            goto trunc;
        }
        it->ival = ((uint32_t)b[*pos] << 24) | ((uint32_t)b[*pos + 1] << 16) |
                   ((uint32_t)b[*pos + 2] << 8) | b[*pos + 3];
        *pos += 4;
        break;
    case PT_VARINT:
        if (!get_varint(b, n, pos, &it->ival)) {
            goto trunc;
        }
        break;
    case PT_STR:
    case PT_BIN:
        if (!u16_at(b, n, *pos, &l1) || *pos + 2 + l1 > n) {
            goto trunc;
        }
        it->data = (pk_slice){b + *pos + 2, l1};
        if (it->def.type == PT_STR && !utf8_ok(it->data.p, l1)) {
            *why = "property string is not valid UTF-8 [MQTT-1.5.4-1]";
            return false;
        }
        *pos += 2 + l1;
        break;
    case PT_PAIR:
        if (!u16_at(b, n, *pos, &l1) || *pos + 2 + l1 > n) {
            goto trunc;
        }
        it->data = (pk_slice){b + *pos + 2, l1};
        if (!u16_at(b, n, *pos + 2 + l1, &l2) || *pos + 4 + l1 + l2 > n) {
            goto trunc;
        }
        if (!utf8_ok(b + *pos + 2, l1) || !utf8_ok(b + *pos + 4 + l1, l2)) {
            *why = "user property is not valid UTF-8 [MQTT-1.5.4-1]";
            return false;
        }
        *pos += 4 + l1 + l2;
        break;
    }
    if (it->def.type == PT_BYTE || it->def.type == PT_U16 || it->def.type == PT_U32 ||
        it->def.type == PT_VARINT) {
        if (it->ival < it->def.min || it->ival > it->def.max) {
            *why = "property value out of its valid range";
            return false;
        }
    }
    it->end = *pos;
    return true;
trunc:
    *why = "property value runs past the property block";
    return false;
}

/* Check every property: well formed, allowed in packet type (0: any), single-use ones not
 * repeated. */
static bool props_check_for(pk_slice props, unsigned type, bool allow_multi_sub_id,
                            const char **why)
{
    uint64_t seen = 0;
    size_t pos = 0;
    while (pos < props.n) {
        prop_it it;
        if (!prop_next(props, &pos, &it, why)) {
            return false;
        }
        if (type != 0 && (it.def.where & IN(type)) == 0) {
            *why = "property not allowed in this packet type (Table 2-4)";
            return false;
        }
        bool multi =
            it.id == PK_P_USER_PROPERTY || (it.id == PK_P_SUBSCRIPTION_ID && allow_multi_sub_id);
        if (!multi && (seen & (1ull << it.id)) != 0) {
            *why = "property included more than once";
            return false;
        }
        seen |= 1ull << it.id;
    }
    return true;
}

bool pk_props_check(pk_slice props, bool allow_multi_sub_id, const char **why)
{
    const char *w = NULL;
    bool ok = props_check_for(props, 0, allow_multi_sub_id, &w);
    if (why != NULL) {
        *why = w;
    }
    return ok;
}

int pk_prop_count(pk_slice props, uint8_t id)
{
    int count = 0;
    size_t pos = 0;
    const char *why;
    prop_it it;
    while (pos < props.n && prop_next(props, &pos, &it, &why)) {
        if (it.id == id) {
            count++;
        }
    }
    return count;
}

bool pk_prop_int(pk_slice props, uint8_t id, uint32_t *out)
{
    uint32_t v;
    if (pk_prop_ints(props, id, &v, 1) == 0) {
        return false;
    }
    *out = v;
    return true;
}

size_t pk_prop_ints(pk_slice props, uint8_t id, uint32_t *out, size_t cap)
{
    size_t count = 0;
    size_t pos = 0;
    const char *why;
    prop_it it;
    while (pos < props.n && prop_next(props, &pos, &it, &why)) {
        if (it.id == id) {
            if (count < cap) {
                out[count] = it.ival;
            }
            count++;
        }
    }
    return count;
}

bool pk_prop_data(pk_slice props, uint8_t id, pk_slice *out)
{
    size_t pos = 0;
    const char *why;
    prop_it it;
    while (pos < props.n && prop_next(props, &pos, &it, &why)) {
        if (it.id == id) {
            *out = it.data;
            return true;
        }
    }
    return false;
}

tb_pkt pk_props_select(pk_slice props, uint8_t id)
{
    tb_pkt out = {0};
    size_t pos = 0;
    const char *why;
    prop_it it;
    while (pos < props.n && prop_next(props, &pos, &it, &why)) {
        if (it.id == id) {
            pk_put_bytes(&out, props.p + it.start, it.end - it.start);
        }
    }
    return out;
}

bool pk_slice_eq(pk_slice s, const void *data, size_t n)
{
    return s.n == n && (n == 0 || memcmp(s.p, data, n) == 0);
}

bool pk_slice_eqs(pk_slice s, const char *str)
{
    return pk_slice_eq(s, str, strlen(str));
}

/* Property block at b[*pos..end): length, contents into *props, then check them. */
static bool take_props(const uint8_t *b, size_t end, size_t *pos, unsigned type, pk_slice *props,
                       const char **why)
{
    uint32_t plen;
    if (!get_varint(b, end, pos, &plen)) {
        *why = "truncated or malformed Property Length";
        return false;
    }
    if (*pos + plen > end) {
        *why = "Property Length runs past the packet";
        return false;
    }
    *props = (pk_slice){b + *pos, plen};
    *pos += plen;
    return props_check_for(*props, type, type == 3, why);
}

static bool v5_parse(const uint8_t *src, size_t n, pk_v5 *out, const char **why)
{
    memset(out, 0, offsetof(pk_v5, b));
    if (n > sizeof out->b) {
        *why = "packet larger than PK_V5_CAP";
        return false;
    }
    memcpy(out->b, src, n);
    out->len = n;
    const uint8_t *b = out->b;
    uint32_t rl;
    int hl = parse_fixed_header(b, n, &rl);
    if (hl <= 0 || (size_t)hl + rl != n) {
        *why = "bad Remaining Length";
        return false;
    }
    out->type = b[0] >> 4;
    out->flags = b[0] & 0x0F;
    size_t pos = (size_t)hl;
    size_t len;
    switch (out->type) {
    case 2: /* CONNACK */
        if (out->flags != 0 || rl < 3) {
            *why = "CONNACK: bad flags or too short (v5 CONNACK has a property block)";
            return false;
        }
        if ((b[pos] & 0xFE) != 0) {
            *why = "CONNACK: reserved acknowledge flags set [MQTT-3.2.2-1]";
            return false;
        }
        out->session_present = b[pos] & 1;
        out->reason = b[pos + 1];
        pos += 2;
        if (!take_props(b, n, &pos, 2, &out->props, why)) {
            return false;
        }
        break;
    case 3: /* PUBLISH */
        out->dup = (out->flags & 8) != 0;
        out->qos = (out->flags >> 1) & 3;
        out->retain = (out->flags & 1) != 0;
        if (out->qos == 3) {
            *why = "PUBLISH with QoS 3 [MQTT-3.3.1-4]";
            return false;
        }
        if (out->qos == 0 && out->dup) {
            *why = "QoS 0 PUBLISH with DUP 1 [MQTT-3.3.1-2]";
            return false;
        }
        if (!u16_at(b, n, pos, &len) || pos + 2 + len > n) {
            *why = "PUBLISH: truncated Topic Name";
            return false;
        }
        out->topic = (pk_slice){b + pos + 2, len};
        if (!utf8_ok(out->topic.p, len) || memchr(out->topic.p, '+', len) != NULL ||
            memchr(out->topic.p, '#', len) != NULL) {
            *why = "PUBLISH: Topic Name not valid UTF-8 or has wildcards [MQTT-3.3.2-1/2]";
            return false;
        }
        pos += 2 + len;
        if (out->qos > 0) {
            if (!u16_at(b, n, pos, &len) || len == 0) {
                *why = "PUBLISH: missing or zero Packet Identifier [MQTT-2.2.1-3]";
                return false;
            }
            out->id = (uint16_t)len;
            pos += 2;
        }
        if (!take_props(b, n, &pos, 3, &out->props, why)) {
            return false;
        }
        if (out->topic.n == 0 && pk_prop_count(out->props, PK_P_TOPIC_ALIAS) == 0) {
            *why = "PUBLISH: empty Topic Name without Topic Alias (3.3.2.1)";
            return false;
        }
        out->payload = (pk_slice){b + pos, n - pos};
        pos = n;
        break;
    case 4: /* PUBACK */
    case 5: /* PUBREC */
    case 6: /* PUBREL */
    case 7: /* PUBCOMP */
        if (out->flags != (out->type == 6 ? 2 : 0)) {
            *why = "acknowledgement with wrong fixed header flags (2.1.3)";
            return false;
        }
        if (!u16_at(b, n, pos, &len) || len == 0) {
            *why = "acknowledgement: missing or zero Packet Identifier";
            return false;
        }
        out->id = (uint16_t)len;
        pos += 2;
        if (pos < n) {
            out->reason = b[pos++];
        }
        if (pos < n && !take_props(b, n, &pos, out->type, &out->props, why)) {
            return false;
        }
        break;
    case 9:  /* SUBACK */
    case 11: /* UNSUBACK */
        if (out->flags != 0) {
            *why = "SUBACK/UNSUBACK with non-zero flags";
            return false;
        }
        if (!u16_at(b, n, pos, &len)) {
            *why = "SUBACK/UNSUBACK: missing Packet Identifier";
            return false;
        }
        out->id = (uint16_t)len;
        pos += 2;
        if (!take_props(b, n, &pos, out->type, &out->props, why)) {
            return false;
        }
        if (pos == n) {
            *why = "SUBACK/UNSUBACK without reason codes";
            return false;
        }
        out->payload = (pk_slice){b + pos, n - pos};
        pos = n;
        break;
    case 13: /* PINGRESP */
        if (out->flags != 0 || rl != 0) {
            *why = "malformed PINGRESP";
            return false;
        }
        break;
    case 14: /* DISCONNECT */
    case 15: /* AUTH */
        if (out->flags != 0) {
            *why = "DISCONNECT/AUTH with non-zero flags [MQTT-3.14.1-1]";
            return false;
        }
        if (pos < n) {
            out->reason = b[pos++];
        }
        if (pos < n && !take_props(b, n, &pos, out->type, &out->props, why)) {
            return false;
        }
        break;
    default:
        *why = "packet type a server never sends";
        return false;
    }
    if (pos != n) {
        *why = "bytes left over after the packet's fields";
        return false;
    }
    return true;
}

bool pk_v5_parse(const uint8_t *b, size_t n, pk_v5 *out, const char **why)
{
    const char *w = NULL;
    bool ok = v5_parse(b, n, out, &w);
    if (why != NULL) {
        *why = w;
    }
    return ok;
}

tb_pkt pk_ack_v5(uint8_t first_byte, uint16_t id, uint8_t reason, const tb_pkt *props)
{
    tb_pkt body = {0};
    pk_put_u16(&body, id);
    pk_put_u8(&body, reason);
    put_props(&body, props);
    return pk_frame(first_byte, &body);
}

static const char *type_name(uint8_t t)
{
    static const char *names[16] = {"reserved",  "CONNECT",  "CONNACK",     "PUBLISH",
                                    "PUBACK",    "PUBREC",   "PUBREL",      "PUBCOMP",
                                    "SUBSCRIBE", "SUBACK",   "UNSUBSCRIBE", "UNSUBACK",
                                    "PINGREQ",   "PINGRESP", "DISCONNECT",  "AUTH"};
    return names[t & 15];
}

int tc_recv_v5_at(const char *file, int line, tc_client *c, pk_v5 *out, int timeout_ms)
{
    static uint8_t got[RX_CAP];
    char hex[HEX_CAP];
    int r = tc_recv_packet(c, got, sizeof got, timeout_ms);
    if (r < 0) {
        out->len = 0;
        out->type = 0;
        return r;
    }
    const char *why = NULL;
    if (!pk_v5_parse(got, (size_t)r, out, &why)) {
        FAIL_AT(file, line, "broker sent a malformed MQTT 5 packet (%s): [%s]", why,
                pk_hex(got, (size_t)r, hex, sizeof hex));
    }
    return r;
}

void tc_expect_v5_at(const char *file, int line, tc_client *c, pk_v5 *out, uint8_t type,
                     int timeout_ms)
{
    char hex[HEX_CAP];
    int r = tc_recv_v5_at(file, line, c, out, timeout_ms);
    if (r < 0) {
        FAIL_AT(file, line, "expected %s, got %s", type_name(type), result_name(r));
    }
    if (out->type != type) {
        FAIL_AT(file, line, "expected %s, got %s [%s]", type_name(type), type_name(out->type),
                pk_hex(out->b, out->len, hex, sizeof hex));
    }
}

void tc_expect_connack_v5_at(const char *file, int line, tc_client *c, bool session_present,
                             uint8_t rc, pk_v5 *out)
{
    static pk_v5 local;
    char hex[HEX_CAP];
    pk_v5 *p = out != NULL ? out : &local;
    tc_expect_v5_at(file, line, c, p, 2, TB_WAIT_MS);
    if (p->reason != rc || p->session_present != session_present) {
        FAIL_AT(file, line,
                "expected CONNACK session present %d reason 0x%02x, got session present %d "
                "reason 0x%02x [%s]",
                session_present, rc, p->session_present, p->reason,
                pk_hex(p->b, p->len, hex, sizeof hex));
    }
    if (rc >= 0x80) {
        tc_expect_closed_at(file, line, c, TB_WAIT_MS);
    }
}

void tc_expect_disconnect_v5_at(const char *file, int line, tc_client *c, uint8_t reason,
                                int timeout_ms)
{
    static pk_v5 p;
    char hex[HEX_CAP];
    int64_t deadline = tb_now_ms() + timeout_ms;
    int r = tc_recv_v5_at(file, line, c, &p, timeout_ms);
    if (r < 0) {
        FAIL_AT(file, line, "expected DISCONNECT 0x%02x, got %s", reason, result_name(r));
    }
    pk_hex(p.b, p.len, hex, sizeof hex);
    if (p.type != 14 || p.reason != reason) {
        FAIL_AT(file, line, "expected DISCONNECT 0x%02x, got %s reason 0x%02x [%s]", reason,
                type_name(p.type), p.reason, hex);
    }
    if (pk_prop_count(p.props, PK_P_SESSION_EXPIRY) != 0) {
        FAIL_AT(file, line,
                "server DISCONNECT carries a Session Expiry Interval [%s] "
                "[MQTT-3.14.2-2]",
                hex);
    }
    tc_expect_closed_at(file, line, c, remaining_ms(deadline) + 500);
}

void tc_expect_ack_v5_at(const char *file, int line, tc_client *c, uint8_t type, uint16_t id,
                         uint8_t reason)
{
    static pk_v5 p;
    char hex[HEX_CAP];
    tc_expect_v5_at(file, line, c, &p, type, TB_WAIT_MS);
    if (p.id != id || p.reason != reason) {
        FAIL_AT(file, line, "expected %s id %u reason 0x%02x, got id %u reason 0x%02x [%s]",
                type_name(type), id, reason, p.id, p.reason, pk_hex(p.b, p.len, hex, sizeof hex));
    }
}

tc_client *tc_open_v5_at(const char *file, int line, uint16_t port, bool session_present,
                         pk_v5 *connack, const pk_connect_opts *o)
{
    pk_connect_opts opts = *o;
    opts.version = 5;
    tc_client *c = tc_connect_at(file, line, port);
    tc_sendp(c, pk_connect(&opts));
    tc_expect_connack_v5_at(file, line, c, session_present, 0, connack);
    return c;
}

void tc_subscribe_v5_at(const char *file, int line, tc_client *c, uint16_t id, const tb_pkt *props,
                        size_t n, const pk_sub *subs, const uint8_t *codes)
{
    static pk_v5 p;
    char hex[HEX_CAP];
    char want[HEX_CAP];
    tc_sendp(c, pk_subscribe_v5(id, props, n, subs));
    uint8_t *early = NULL;
    size_t early_len = 0;
    int64_t deadline = tb_now_ms() + TB_WAIT_MS;
    for (;;) {
        int r = tc_recv_v5_at(file, line, c, &p, remaining_ms(deadline));
        if (r < 0) {
            free(early);
            FAIL_AT(file, line, "SUBSCRIBE '%s': expected SUBACK, got %s", subs[0].filter,
                    result_name(r));
        }
        if (p.type == 3) {
            uint8_t *ne = realloc(early, early_len + p.len);
            cr_assert(ne != NULL);
            early = ne;
            memcpy(early + early_len, p.b, p.len);
            early_len += p.len;
            continue;
        }
        if (p.type != 9 || p.id != id || !pk_slice_eq(p.payload, codes, n)) {
            free(early);
            FAIL_AT(file, line, "SUBSCRIBE '%s'...: expected SUBACK id %u codes [%s], got [%s]",
                    subs[0].filter, id, pk_hex(codes, n, want, sizeof want),
                    pk_hex(p.b, p.len, hex, sizeof hex));
        }
        break;
    }
    if (early_len > 0) {
        tc_unread(c, early, early_len);
    }
    free(early);
}

void tc_sub1_v5_at(const char *file, int line, tc_client *c, uint16_t id, const char *filter,
                   uint8_t options, uint32_t sub_id, uint8_t code)
{
    tb_pkt props = {0};
    if (sub_id != 0) {
        pk_prop_varint(&props, PK_P_SUBSCRIPTION_ID, sub_id);
    }
    pk_sub s = {filter, options};
    tc_subscribe_v5_at(file, line, c, id, &props, 1, &s, &code);
}

uint16_t tc_next_id(tc_client *c)
{
    uint16_t id = c->next_id++;
    if (c->next_id == 0) {
        c->next_id = 1;
    }
    return id;
}

void tc_publish_v5_at(const char *file, int line, tc_client *c, const char *topic,
                      const char *payload, uint8_t qos, bool retain, const tb_pkt *props)
{
    static pk_v5 p;
    char hex[HEX_CAP];
    uint16_t id = qos > 0 ? tc_next_id(c) : 0;
    tc_sendp(c, PK_PUBLISH(.topic = topic, .payload = payload, .qos = qos, .retain = retain,
                           .id = id, .v5 = true, .props = props));
    if (qos == 0) {
        return;
    }
    uint8_t type = qos == 1 ? 4 : 5;
    tc_expect_v5_at(file, line, c, &p, type, TB_WAIT_MS);
    if (p.id != id || (p.reason != 0x00 && p.reason != 0x10)) {
        FAIL_AT(file, line, "PUBLISH '%s' qos %u: expected %s id %u reason 0x00/0x10, got [%s]",
                topic, qos, type_name(type), id, pk_hex(p.b, p.len, hex, sizeof hex));
    }
    if (qos == 2) {
        tc_sendp(c, pk_pubrel(id));
        tc_expect_ack_v5_at(file, line, c, 7, id, 0);
    }
}

void tc_expect_pub_v5_at(const char *file, int line, tc_client *c, pk_v5 *out, const char *topic,
                         const char *payload, uint8_t qos, bool retain)
{
    char hex[HEX_CAP];
    int r = tc_recv_v5_at(file, line, c, out, TB_WAIT_MS);
    if (r < 0) {
        FAIL_AT(file, line, "expected PUBLISH '%s' '%s' qos %u retain %d, got %s", topic, payload,
                qos, retain, result_name(r));
    }
    pk_hex(out->b, out->len, hex, sizeof hex);
    if (out->type != 3) {
        FAIL_AT(file, line, "expected PUBLISH '%s' '%s', got %s [%s]", topic, payload,
                type_name(out->type), hex);
    }
    if (!pk_slice_eqs(out->topic, topic) || !pk_slice_eqs(out->payload, payload) ||
        out->qos != qos || out->retain != retain) {
        FAIL_AT(file, line,
                "expected PUBLISH '%s' '%s' qos %u retain %d\n"
                "     got PUBLISH '%.*s' '%.*s' qos %u retain %d [%s]",
                topic, payload, qos, retain, (int)out->topic.n, (const char *)out->topic.p,
                (int)(out->payload.n > 64 ? 64 : out->payload.n), (const char *)out->payload.p,
                out->qos, out->retain, hex);
    }
    if (out->dup) {
        FAIL_AT(file, line, "first delivery of a PUBLISH has DUP 1 [MQTT-3.3.1-3] [%s]", hex);
    }
}

void tc_ack_v5_at(const char *file, int line, tc_client *c, const pk_v5 *pub)
{
    if (pub->qos == 1) {
        tc_sendp(c, pk_puback(pub->id));
    } else if (pub->qos == 2) {
        tc_sendp(c, pk_pubrec(pub->id));
        tc_expect_ack_v5_at(file, line, c, 6, pub->id, 0);
        tc_sendp(c, pk_pubcomp(pub->id));
    }
}
