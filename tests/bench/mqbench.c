/*
 * mqbench: an MQTT 3.1.1 load generator that runs one named scenario against any broker at
 * HOST:PORT and prints one machine-parseable result line (key=value pairs) on stdout.
 *
 * Scenarios: fanin, fanout, pairs, shared (message flows), connstorm, takeover, retained,
 * persistent. See tests/bench/README.md for what each one does and what each number means.
 *
 * Design and assumptions:
 * - Independent of the broker under test: its own packet code (bench_wire.c), never the
 *   broker's codec, so the same binary measures mqlite and mosquitto alike.
 * - One thread, one epoll set, non-blocking sockets, level-triggered. Connections live in
 *   one array allocated per run and are never freed before the run ends, so epoll's data
 *   pointers stay valid; a closed connection is marked C_CLOSED and skipped.
 * - Message flows are closed-loop: each publisher keeps at most --window messages in
 *   flight end to end (sent but not yet received by every subscriber that should get it),
 *   so broker queues stay short and latency means service time, not queueing behind an
 *   unbounded backlog. A window that makes no progress for one second is written off and
 *   counted as lost (QoS 0 may drop), so a run always moves on.
 * - Latency comes from a CLOCK_MONOTONIC timestamp the publisher puts in the first 8 bytes
 *   of every payload (then publisher index and sequence number, 4 bytes each), read when
 *   the subscriber's socket read returns.
 * - Every phase is bounded by a deadline and the whole run by --timeout; the process exits
 *   after closing every connection it opened (DISCONNECT, then wait for the broker's close).
 * - Broker CPU, RSS and storage writes come from /proc/PID when --pid is given (Linux).
 */
#include "bench_proc.h"
#include "bench_wire.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define STAMP_LEN 16            /* payload prefix: u64 time, u32 publisher, u32 sequence */
#define READ_CHUNK 65536        /* bytes asked of one recv() */
#define STALL_NS NS_PER_S       /* a window without progress for this long is written off */
#define MAX_QOS1_INFLIGHT 60000 /* below 65535 packet ids, acknowledged in order */

/* ---- small helpers -------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint64_t get_u64(const uint8_t *p)
{
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (p == NULL) {
        fprintf(stderr, "mqbench: out of memory\n");
        exit(1);
    }
    return p;
}

/* A byte buffer with a consumed prefix: [off, len) is pending. */
typedef struct {
    uint8_t *p;
    size_t off, len, cap;
} buf;

/* Returns room for at least n more bytes at p + len (compacting or growing). */
static uint8_t *buf_reserve(buf *b, size_t n)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= n)
        return b->p + b->len;
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n)
            return b->p + b->len;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        fprintf(stderr, "mqbench: out of memory\n");
        exit(1);
    }
    b->p = p;
    b->cap = cap;
    return b->p + b->len;
}

/* ---- connections and the run ---------------------------------------------------------- */

typedef enum { C_IDLE, C_CONNECTING, C_READY, C_CLOSED } conn_state;

typedef struct conn {
    int fd;
    int idx; /* position in its role (publisher index, subscriber index) */
    conn_state st;
    bool want_out;    /* EPOLLOUT registered */
    bool peer_closed; /* the broker closed it (EOF or reset) */
    bool had_connack;
    bool session_present;
    bool suback_failed;
    buf rx, tx;
    uint16_t next_pid;
    uint32_t inflight; /* own QoS 1 PUBLISHes waiting for PUBACK */
    uint32_t subacks, pingresps;
    int64_t t_open, t_connack, t_last_rx;
    /* publisher side */
    char topic[96];
    size_t topic_len;
    uint32_t seq; /* next sequence number to send */
    uint64_t sent, delivered, written_off, acked;
    int64_t last_progress;
    int64_t *pid_t0; /* send time per packet id, for PUBACK latency (optional) */
    /* subscriber side */
    uint64_t recv, recv_retained;
} conn;

typedef struct bench bench;
typedef void (*publish_hook)(bench *b, conn *c, const mqw_publish *p, int64_t now);

struct bench {
    /* options */
    const char *host;
    int port;
    const char *scenario;
    int qos;
    size_t size;
    int clients;
    int subs;
    int count;
    int window;
    int concurrency;
    double seconds, warmup, drain, timeout;
    pid_t pid;
    const char *store_dir;
    int keepalive;
    bool cleanup;
    double rate; /* persistent: publish at this many msgs/s (0: as fast as the window allows) */

    /* run state */
    int ep;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char run[24];
    int64_t t_deadline;
    bool timed_out;
    conn *c;
    int nc;
    publish_hook on_publish;

    /* counters */
    uint64_t n_opened, n_connack, n_failed, n_peer_closed;
    int64_t t_last_connack;
    uint64_t errors, malformed, unexpected;
    char first_err[200];

    /* latency samples (ns) */
    int64_t *lat;
    size_t nlat, caplat;
    bool lat_on;

    /* flow scenarios */
    conn *pubs, *subv;
    int npub, nsub, fan;
    int64_t t0, t1;
    uint64_t msgs, stalls, reordered;
    uint32_t *next_seq; /* [subscriber][publisher]: next sequence number expected */
    int debug;          /* MQBENCH_DEBUG: lines of diagnostics left to print on stderr */

    /* sequence publishing (retained, persistent) */
    uint64_t seq_n;
    bool seq_retain;
    bool seq_empty;
    int64_t seq_t0;  /* with --rate: message i is due at seq_t0 + i / rate */
    int64_t wake_at; /* with --rate: when the next message is due (0: none) */

    /* subscriber arrival bookkeeping (retained, persistent) */
    uint8_t *seen;
    uint64_t unique, dups;
    int64_t t_first_rx, t_last_rx;
    int64_t t_mark0; /* reference time for arrival percentiles */
    int64_t t_p50, t_p99;
};

static void note_err(bench *b, const char *fmt, ...)
{
    va_list ap;
    b->errors++;
    if (b->first_err[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(b->first_err, sizeof(b->first_err), fmt, ap);
    va_end(ap);
}

static void lat_add(bench *b, int64_t ns)
{
    if (b->nlat == b->caplat) {
        size_t cap = b->caplat ? b->caplat * 2 : 65536;
        int64_t *p = realloc(b->lat, cap * sizeof(*p));
        if (p == NULL)
            return; /* keep the samples we have */
        b->lat = p;
        b->caplat = cap;
    }
    b->lat[b->nlat++] = ns < 0 ? 0 : ns;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the (sorted) samples, in microseconds. */
static double lat_pct(const bench *b, double q)
{
    size_t k;
    if (b->nlat == 0)
        return 0;
    k = (size_t)ceil(q * (double)b->nlat);
    if (k < 1)
        k = 1;
    return (double)b->lat[k - 1] / 1000.0;
}

static void ep_mod(bench *b, conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(b->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = out;
}

static void conn_close(bench *b, conn *c)
{
    if (c->st == C_CLOSED || c->st == C_IDLE)
        return;
    epoll_ctl(b->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->st = C_CLOSED;
    c->rx.off = c->rx.len = 0;
    c->tx.off = c->tx.len = 0;
}

static void conn_fail(bench *b, conn *c, const char *what, int err)
{
    if (!c->had_connack)
        b->n_failed++;
    note_err(b, "%s: %s", what, strerror(err));
    conn_close(b, c);
}

/* Sends what is pending; registers EPOLLOUT when the socket is full. */
static void conn_flush(bench *b, conn *c)
{
    while (c->tx.off < c->tx.len) {
        ssize_t w = send(c->fd, c->tx.p + c->tx.off, c->tx.len - c->tx.off, MSG_NOSIGNAL);
        if (w > 0) {
            c->tx.off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out)
                ep_mod(b, c, true);
            return;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            c->peer_closed = true;
            b->n_peer_closed++;
            if (!c->had_connack)
                b->n_failed++;
            conn_close(b, c);
            return;
        }
        conn_fail(b, c, "send", w < 0 ? errno : EIO);
        return;
    }
    c->tx.off = c->tx.len = 0;
    if (c->want_out)
        ep_mod(b, c, false);
}

/* Starts a TCP connection and queues CONNECT; the CONNACK arrives through the loop.
 * Returns 0, or the errno of the step that failed (the connection is then counted failed). */
static int conn_open(bench *b, conn *c, const char *client_id, bool clean)
{
    int one = 1;
    buf rx = c->rx, tx = c->tx;
    int64_t *pid_t0 = c->pid_t0;
    int idx = c->idx;
    char topic[sizeof(c->topic)];
    size_t topic_len = c->topic_len;
    memcpy(topic, c->topic, sizeof(topic));
    memset(c, 0, sizeof(*c));
    c->rx = rx;
    c->tx = tx;
    c->rx.off = c->rx.len = c->tx.off = c->tx.len = 0;
    c->pid_t0 = pid_t0;
    c->idx = idx;
    memcpy(c->topic, topic, sizeof(topic));
    c->topic_len = topic_len;
    c->next_pid = 1;
    c->fd = -1;
    c->t_open = now_ns();
    b->n_opened++;

    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int err = errno;
        b->n_failed++;
        note_err(b, "socket: %s", strerror(err));
        c->st = C_IDLE;
        return err;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&b->addr, b->addrlen) < 0 && errno != EINPROGRESS) {
        int err = errno;
        b->n_failed++;
        note_err(b, "connect: %s", strerror(err));
        close(fd);
        c->st = C_IDLE;
        return err;
    }
    c->fd = fd;
    c->st = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(b->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        conn_fail(b, c, "epoll_ctl", err);
        return err;
    }
    c->want_out = true;
    uint8_t *w = buf_reserve(&c->tx, 64 + strlen(client_id));
    c->tx.len += mqw_connect(w, 64 + strlen(client_id), client_id, clean, (uint16_t)b->keepalive);
    return 0;
}

static void conn_send_simple(bench *b, conn *c, size_t (*enc)(uint8_t *, size_t))
{
    if (c->st == C_CLOSED || c->st == C_IDLE)
        return;
    uint8_t *w = buf_reserve(&c->tx, 2);
    c->tx.len += enc(w, 2);
    conn_flush(b, c);
}

static void conn_subscribe(bench *b, conn *c, const char *filter, int qos)
{
    size_t cap = 16 + strlen(filter);
    uint8_t *w = buf_reserve(&c->tx, cap);
    c->tx.len += mqw_subscribe(w, cap, c->next_pid++, filter, (uint8_t)qos);
    if (c->next_pid == 0)
        c->next_pid = 1;
    conn_flush(b, c);
}

/* Appends one PUBLISH with a stamped payload of `size` bytes (at least STAMP_LEN), or an
 * empty payload when size is 0 (clears a retained message). */
static void conn_publish(conn *c, int qos, bool retain, uint32_t who, uint32_t seq, size_t size)
{
    uint16_t pid = 0;
    size_t cap = MQW_MAX_HEAD + 4 + c->topic_len + size;
    uint8_t *w = buf_reserve(&c->tx, cap);
    int64_t t = now_ns();
    if (qos > 0) {
        pid = c->next_pid++;
        if (c->next_pid == 0)
            c->next_pid = 1;
        c->inflight++;
        if (c->pid_t0 != NULL)
            c->pid_t0[pid] = t;
    }
    size_t h = mqw_publish_head(w, cap, c->topic, c->topic_len, (uint8_t)qos, retain, pid, size);
    if (size > 0) {
        put_u64(w + h, (uint64_t)t);
        put_u32(w + h + 8, who);
        put_u32(w + h + 12, seq);
        memset(w + h + STAMP_LEN, 0, size - STAMP_LEN);
    }
    c->tx.len += h + size;
    c->sent++;
}

static void handle_frame(bench *b, conn *c, const mqw_frame *f, int64_t now)
{
    switch (f->type) {
    case MQW_CONNACK:
        if (f->body_len < 2) {
            b->malformed++;
            conn_fail(b, c, "CONNACK", EPROTO);
            return;
        }
        if (f->body[1] != 0) {
            note_err(b, "CONNACK return code %u", f->body[1]);
            b->n_failed++;
            conn_close(b, c);
            return;
        }
        c->session_present = f->body[0] & 1;
        c->had_connack = true;
        c->st = C_READY;
        c->t_connack = now;
        b->n_connack++;
        b->t_last_connack = now;
        break;
    case MQW_SUBACK:
        c->subacks++;
        for (size_t i = 2; i < f->body_len; i++) {
            if (f->body[i] == 0x80) {
                c->suback_failed = true;
                note_err(b, "SUBACK refused the subscription (0x80)");
            }
        }
        break;
    case MQW_PUBACK:
        if (f->body_len < 2) {
            b->malformed++;
            break;
        }
        if (c->inflight > 0)
            c->inflight--;
        c->acked++;
        if (c->pid_t0 != NULL && b->lat_on) {
            uint16_t pid = (uint16_t)((f->body[0] << 8) | f->body[1]);
            lat_add(b, now - c->pid_t0[pid]);
        }
        break;
    case MQW_PUBLISH: {
        mqw_publish p;
        if (!mqw_decode_publish(f, &p)) {
            b->malformed++;
            break;
        }
        if (p.qos == 1) {
            uint8_t *w = buf_reserve(&c->tx, 4);
            c->tx.len += mqw_puback(w, 4, p.pid);
        } else if (p.qos == 2) {
            b->unexpected++; /* never subscribed at QoS 2 */
        }
        c->recv++;
        if (p.retain)
            c->recv_retained++;
        c->t_last_rx = now;
        if (b->on_publish != NULL)
            b->on_publish(b, c, &p, now);
        break;
    }
    case MQW_PINGRESP:
        c->pingresps++;
        break;
    default:
        b->unexpected++;
        break;
    }
}

static void conn_read(bench *b, conn *c, int64_t now)
{
    for (int k = 0; k < 4 && c->st != C_CLOSED; k++) {
        uint8_t *w = buf_reserve(&c->rx, READ_CHUNK);
        ssize_t r = recv(c->fd, w, READ_CHUNK, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r <= 0) {
            /* EOF or reset: the broker closed it (takeover, DISCONNECT, refusal) */
            c->peer_closed = true;
            b->n_peer_closed++;
            if (!c->had_connack) {
                b->n_failed++;
                note_err(b, "broker closed the connection before CONNACK%s%s", r < 0 ? ": " : "",
                         r < 0 ? strerror(errno) : "");
            }
            conn_close(b, c);
            return;
        }
        c->rx.len += (size_t)r;
        for (;;) {
            mqw_frame f;
            mqw_scan_rc rc = mqw_scan(c->rx.p + c->rx.off, c->rx.len - c->rx.off, &f);
            if (rc == MQW_NEED_MORE)
                break;
            if (rc == MQW_MALFORMED) {
                b->malformed++;
                conn_fail(b, c, "malformed packet from broker", EPROTO);
                return;
            }
            handle_frame(b, c, &f, now);
            if (c->st == C_CLOSED)
                return;
            c->rx.off += f.total;
        }
        if ((size_t)r < READ_CHUNK)
            break;
    }
    if (c->st != C_CLOSED && c->tx.off < c->tx.len)
        conn_flush(b, c);
}

/* Waits for events until `until` (at most 10 ms per call) and handles them. */
static void loop_once(bench *b, int64_t until)
{
    struct epoll_event ev[512];
    int64_t now = now_ns();
    int ms = 0;
    if (b->wake_at > 0 && b->wake_at < until)
        until = b->wake_at; /* a paced publisher's next message is due */
    if (until > now) {
        int64_t d = (until - now + NS_PER_MS - 1) / NS_PER_MS;
        ms = d > 10 ? 10 : (int)d;
    }
    int n = epoll_wait(b->ep, ev, 512, ms);
    if (n < 0)
        return; /* EINTR */
    now = now_ns();
    for (int i = 0; i < n; i++) {
        conn *c = ev[i].data.ptr;
        if (c->st == C_CLOSED || c->st == C_IDLE)
            continue;
        if (ev[i].events & EPOLLOUT)
            conn_flush(b, c);
        if (c->st != C_CLOSED && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            conn_read(b, c, now);
    }
}

typedef bool (*pred_fn)(bench *b, void *arg);

/* Runs the loop until pred holds or the deadline (or the run's hard deadline) passes. */
static bool wait_for(bench *b, pred_fn pred, void *arg, int64_t deadline)
{
    if (deadline > b->t_deadline)
        deadline = b->t_deadline;
    for (;;) {
        if (pred(b, arg))
            return true;
        int64_t now = now_ns();
        if (now >= deadline) {
            if (now >= b->t_deadline)
                b->timed_out = true;
            return false;
        }
        loop_once(b, deadline);
    }
}

typedef struct {
    int from, to;
} range;

static bool pred_connacked(bench *b, void *arg)
{
    range *r = arg;
    for (int i = r->from; i < r->to; i++)
        if (!b->c[i].had_connack && b->c[i].st != C_CLOSED && b->c[i].st != C_IDLE)
            return false;
    return true;
}

static bool pred_subacked(bench *b, void *arg)
{
    range *r = arg;
    for (int i = r->from; i < r->to; i++)
        if (b->c[i].st == C_READY && b->c[i].subacks == 0)
            return false;
    return true;
}

static bool pred_all_closed(bench *b, void *arg)
{
    range *r = arg;
    for (int i = r->from; i < r->to; i++)
        if (b->c[i].st == C_READY || b->c[i].st == C_CONNECTING)
            return false;
    return true;
}

static bool ready_range(bench *b, int from, int to)
{
    for (int i = from; i < to; i++)
        if (b->c[i].st != C_READY)
            return false;
    return true;
}

static int64_t after(double sec)
{
    return now_ns() + (int64_t)(sec * (double)NS_PER_S);
}

/* Sends DISCONNECT on every open connection, waits for the broker to close them (so the
 * TIME_WAIT state stays on the broker's side), then closes whatever is left. */
static void teardown(bench *b)
{
    range all = {0, b->nc};
    for (int i = 0; i < b->nc; i++)
        if (b->c[i].st == C_READY)
            conn_send_simple(b, &b->c[i], mqw_disconnect);
    int64_t saved = b->t_deadline;
    b->t_deadline = after(3.0); /* teardown has its own bound, past the run's timeout */
    wait_for(b, pred_all_closed, &all, b->t_deadline);
    b->t_deadline = saved;
    for (int i = 0; i < b->nc; i++)
        conn_close(b, &b->c[i]);
}

/* ---- broker probes -------------------------------------------------------------------- */

typedef struct {
    bool cpu_ok, rss_ok, wb_ok, dir_ok;
    double cpu;
    long rss;
    uint64_t wb, dir;
    double self_cpu;
} probe;

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static probe probe_take(bench *b)
{
    probe p = {0};
    p.cpu_ok = mqb_proc_cpu(b->pid, &p.cpu);
    p.rss_ok = mqb_proc_rss_kb(b->pid, &p.rss);
    p.wb_ok = mqb_proc_write_bytes(b->pid, &p.wb);
    p.dir_ok = b->store_dir != NULL && mqb_dir_bytes(b->store_dir, &p.dir);
    p.self_cpu = self_cpu();
    return p;
}

/* ---- result line ---------------------------------------------------------------------- */

typedef struct {
    char line[2048];
    size_t len;
} outline;

static void kv(outline *o, const char *key, const char *fmt, ...)
{
    va_list ap;
    if (o->len >= sizeof(o->line) - 1)
        return;
    int n = snprintf(o->line + o->len, sizeof(o->line) - o->len, "%s%s=", o->len ? " " : "", key);
    if (n < 0)
        return;
    o->len += (size_t)n;
    if (o->len >= sizeof(o->line) - 1)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->line + o->len, sizeof(o->line) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
    if (o->len > sizeof(o->line) - 1)
        o->len = sizeof(o->line) - 1;
}

static void kv_rate(outline *o, const char *key, double n, double secs)
{
    if (secs > 0)
        kv(o, key, "%.0f", n / secs);
    else
        kv(o, key, "na");
}

/* The fields every line starts with: scenario ... max_us (latency from b->lat). */
static void out_head(bench *b, outline *o, int clients, uint64_t msgs, double secs)
{
    kv(o, "scenario", "%s", b->scenario);
    kv(o, "qos", "%d", b->qos);
    kv(o, "size", "%zu", b->size);
    kv(o, "clients", "%d", clients);
    kv(o, "msgs", "%" PRIu64, msgs);
    kv_rate(o, "msgs_per_s", (double)msgs, secs);
    if (b->nlat > 0) {
        qsort(b->lat, b->nlat, sizeof(*b->lat), cmp_i64);
        kv(o, "p50_us", "%.0f", lat_pct(b, 0.50));
        kv(o, "p99_us", "%.0f", lat_pct(b, 0.99));
        kv(o, "max_us", "%.0f", lat_pct(b, 1.0));
    } else {
        kv(o, "p50_us", "na");
        kv(o, "p99_us", "na");
        kv(o, "max_us", "na");
    }
}

/* Broker CPU over [p0, p1], RSS at rss, and work per broker CPU-second. */
static void out_broker(outline *o, const probe *p0, const probe *p1, const probe *rss, double work)
{
    if (p0->cpu_ok && p1->cpu_ok) {
        double cpu = p1->cpu - p0->cpu;
        kv(o, "cpu_s", "%.2f", cpu);
        kv(o, "rss_kb", rss->rss_ok ? "%ld" : "na", rss->rss);
        if (cpu > 0)
            kv(o, "msgs_per_cpu_s", "%.0f", work / cpu);
        else
            kv(o, "msgs_per_cpu_s", "na");
    } else {
        kv(o, "cpu_s", "na");
        kv(o, "rss_kb", "na");
        kv(o, "msgs_per_cpu_s", "na");
    }
}

static int out_tail(bench *b, outline *o, bool ok)
{
    const char *status = b->timed_out ? "timeout" : ok ? "ok" : "fail";
    kv(o, "errors", "%" PRIu64, b->errors + b->malformed);
    kv(o, "status", "%s", status);
    printf("%s\n", o->line);
    fflush(stdout);
    if (b->first_err[0] != '\0')
        fprintf(stderr, "mqbench: %s: first error: %s\n", b->scenario, b->first_err);
    return strcmp(status, "ok") == 0 ? 0 : 1;
}

static int setup_fail(bench *b, const char *phase)
{
    outline o = {0};
    fprintf(stderr, "mqbench: %s: %s did not complete%s%s\n", b->scenario, phase,
            b->first_err[0] ? ": " : "", b->first_err);
    kv(&o, "scenario", "%s", b->scenario);
    kv(&o, "qos", "%d", b->qos);
    kv(&o, "size", "%zu", b->size);
    kv(&o, "clients", "%d", b->clients);
    kv(&o, "failed_phase", "%s", phase);
    b->first_err[0] = '\0';
    teardown(b);
    return out_tail(b, &o, false);
}

/* ---- message flows: fanin, fanout, pairs, shared -------------------------------------- */

static void flow_on_publish(bench *b, conn *c, const mqw_publish *p, int64_t now)
{
    if (p->payload_len < STAMP_LEN) {
        b->unexpected++;
        return;
    }
    int64_t t = (int64_t)get_u64(p->payload);
    uint32_t who = get_u32(p->payload + 8);
    if (who >= (uint32_t)b->npub) {
        b->unexpected++;
        return;
    }
    conn *pub = &b->pubs[who];
    /* one publisher, one topic, one subscriber: order must hold [v3.1.1 MQTT-4.6.0-5] */
    uint32_t seq = get_u32(p->payload + 12);
    uint32_t *next = &b->next_seq[(size_t)c->idx * (size_t)b->npub + who];
    if (seq < *next) {
        b->reordered++;
        if (b->debug > 0) {
            b->debug--;
            fprintf(stderr, "mqbench: subscriber %d, publisher %u: seq %u after %u\n", c->idx, who,
                    seq, *next - 1);
        }
    }
    *next = seq + 1;
    pub->delivered++;
    pub->last_progress = now;
    if (now >= b->t0 && now < b->t1) {
        b->msgs++;
        lat_add(b, now - t);
    }
}

static void flow_pump(bench *b, int64_t now)
{
    int64_t win = (int64_t)b->window * b->fan;
    for (int i = 0; i < b->npub; i++) {
        conn *p = &b->pubs[i];
        if (p->st != C_READY)
            continue;
        int64_t due = (int64_t)p->sent * b->fan;
        if ((int64_t)(p->delivered + p->written_off) > due)
            p->written_off = (uint64_t)due - p->delivered; /* late arrivals */
        int64_t out = due - (int64_t)(p->delivered + p->written_off);
        if (out > 0 && now - p->last_progress > STALL_NS) {
            p->written_off += (uint64_t)out;
            b->stalls++;
            out = 0;
        }
        if (out == 0)
            p->last_progress = now;
        bool any = false;
        while (out < win && (b->qos == 0 || p->inflight < MAX_QOS1_INFLIGHT)) {
            conn_publish(p, b->qos, false, (uint32_t)i, p->seq++, b->size);
            out += b->fan;
            any = true;
        }
        if (any)
            conn_flush(b, p);
    }
}

static bool pred_flow_idle(bench *b, void *arg)
{
    (void)arg;
    for (int i = 0; i < b->npub; i++) {
        conn *p = &b->pubs[i];
        if (p->st != C_READY)
            continue;
        if (p->delivered + p->written_off < p->sent * (uint64_t)b->fan || p->inflight > 0)
            return false;
    }
    return true;
}

static int scen_flow(bench *b)
{
    const char *s = b->scenario;
    char id[96], filter[160];
    if (strcmp(s, "fanin") == 0) {
        b->npub = b->clients;
        b->nsub = 1;
        b->fan = 1;
    } else if (strcmp(s, "fanout") == 0) {
        b->npub = 1;
        b->nsub = b->clients;
        b->fan = b->clients;
    } else if (strcmp(s, "pairs") == 0) {
        b->npub = b->clients;
        b->nsub = b->clients;
        b->fan = 1;
    } else { /* shared */
        b->npub = b->clients;
        b->nsub = b->subs;
        b->fan = 1;
    }
    b->nc = b->npub + b->nsub;
    b->c = xcalloc((size_t)b->nc, sizeof(conn));
    b->subv = b->c;
    b->pubs = b->c + b->nsub;
    b->next_seq = xcalloc((size_t)b->nsub * (size_t)b->npub, sizeof(uint32_t));

    /* subscribers first, so nothing published is missed */
    range subs = {0, b->nsub}, pubs = {b->nsub, b->nc};
    for (int i = 0; i < b->nsub; i++) {
        b->subv[i].idx = i;
        snprintf(id, sizeof(id), "mqb-%s-s%d", b->run, i);
        conn_open(b, &b->subv[i], id, true);
    }
    if (!wait_for(b, pred_connacked, &subs, after(30)) || !ready_range(b, 0, b->nsub))
        return setup_fail(b, "subscriber connect");
    for (int i = 0; i < b->nsub; i++) {
        if (strcmp(s, "fanin") == 0)
            snprintf(filter, sizeof(filter), "bench/%s/t/+", b->run);
        else if (strcmp(s, "fanout") == 0)
            snprintf(filter, sizeof(filter), "bench/%s/t/0", b->run);
        else if (strcmp(s, "pairs") == 0)
            snprintf(filter, sizeof(filter), "bench/%s/t/%d", b->run, i);
        else
            snprintf(filter, sizeof(filter), "$share/mqb/bench/%s/t/+", b->run);
        conn_subscribe(b, &b->subv[i], filter, b->qos);
    }
    if (!wait_for(b, pred_subacked, &subs, after(30)) || !ready_range(b, 0, b->nsub) ||
        b->errors > 0)
        return setup_fail(b, "subscribe");
    for (int i = 0; i < b->npub; i++) {
        conn *p = &b->pubs[i];
        p->idx = i;
        p->topic_len = (size_t)snprintf(p->topic, sizeof(p->topic), "bench/%s/t/%d", b->run, i);
        snprintf(id, sizeof(id), "mqb-%s-p%d", b->run, i);
        conn_open(b, p, id, true);
    }
    if (!wait_for(b, pred_connacked, &pubs, after(30)) || !ready_range(b, b->nsub, b->nc))
        return setup_fail(b, "publisher connect");

    b->on_publish = flow_on_publish;
    int64_t start = now_ns();
    b->t0 = start + (int64_t)(b->warmup * NS_PER_S);
    b->t1 = b->t0 + (int64_t)(b->seconds * NS_PER_S);
    for (int i = 0; i < b->npub; i++)
        b->pubs[i].last_progress = start;
    probe p0 = {0}, p1;
    bool have0 = false;
    for (;;) {
        int64_t now = now_ns();
        if (!have0 && now >= b->t0) {
            p0 = probe_take(b);
            have0 = true;
        }
        if (now >= b->t1)
            break;
        if (now >= b->t_deadline) {
            b->timed_out = true;
            break;
        }
        flow_pump(b, now);
        loop_once(b, have0 ? b->t1 : b->t0);
    }
    p1 = probe_take(b);
    if (!have0)
        p0 = p1;
    wait_for(b, pred_flow_idle, NULL, after(b->drain));

    uint64_t sent = 0, due = 0, delivered = 0;
    for (int i = 0; i < b->npub; i++) {
        sent += b->pubs[i].sent;
        due += b->pubs[i].sent * (uint64_t)b->fan;
        delivered += b->pubs[i].delivered;
    }
    uint64_t lost = due > delivered ? due - delivered : 0;
    if (getenv("MQBENCH_DEBUG") != NULL) {
        for (int i = 0; i < b->npub; i++)
            fprintf(stderr,
                    "mqbench: publisher %d: sent %" PRIu64 " delivered %" PRIu64 " acked %" PRIu64
                    " inflight %u written_off %" PRIu64 "\n",
                    i, b->pubs[i].sent, b->pubs[i].delivered, b->pubs[i].acked, b->pubs[i].inflight,
                    b->pubs[i].written_off);
        for (int i = 0; i < b->nsub; i++)
            fprintf(stderr, "mqbench: subscriber %d: received %" PRIu64 "\n", i, b->subv[i].recv);
    }
    bool closed = false;
    for (int i = 0; i < b->nc; i++)
        closed |= b->c[i].st != C_READY;
    teardown(b);

    outline o = {0};
    double secs = (double)(b->t1 - b->t0) / NS_PER_S;
    out_head(b, &o, b->clients, b->msgs, secs);
    out_broker(&o, &p0, &p1, &p1, (double)b->msgs);
    kv(&o, "pubs", "%d", b->npub);
    kv(&o, "subs", "%d", b->nsub);
    kv(&o, "window", "%d", b->window);
    kv(&o, "sent", "%" PRIu64, sent);
    kv(&o, "lost", "%" PRIu64, lost);
    kv(&o, "stalls", "%" PRIu64, b->stalls);
    kv(&o, "reordered", "%" PRIu64, b->reordered);
    kv(&o, "bench_cpu_s", "%.2f", p1.self_cpu - p0.self_cpu);
    if (closed)
        note_err(b, "a connection was closed during the run");
    /* shared subscriptions promise no order across members; each member's view is checked
     * but not held against the broker */
    bool ordered = b->reordered == 0 || strcmp(b->scenario, "shared") == 0;
    return out_tail(b, &o, b->errors == 0 && (b->qos == 0 || lost == 0) && !closed && ordered);
}

/* ---- connection storm ----------------------------------------------------------------- */

static int scen_connstorm(bench *b)
{
    struct rlimit rl;
    int target = b->clients, n = target;
    char id[96];
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)n + 64 > rl.rlim_cur)
        n = (int)rl.rlim_cur - 64;
    if (n < 1)
        n = 1;
    b->nc = n;
    b->c = xcalloc((size_t)n, sizeof(conn));
    probe p0 = probe_take(b);
    int64_t start = now_ns();
    int next = 0;
    for (;;) {
        int64_t pending = (int64_t)b->n_opened - (int64_t)b->n_connack - (int64_t)b->n_failed;
        while (next < n && pending < b->concurrency) {
            b->c[next].idx = next;
            snprintf(id, sizeof(id), "mqb-%s-c%d", b->run, next);
            if (conn_open(b, &b->c[next], id, true) == EMFILE) {
                n = next; /* our own fd limit: report what was reached */
                break;
            }
            next++;
            pending++;
        }
        if (next >= n && b->n_connack + b->n_failed >= (uint64_t)n)
            break;
        if (now_ns() >= b->t_deadline) {
            b->timed_out = true;
            break;
        }
        loop_once(b, b->t_deadline);
    }
    int64_t end = b->n_connack > 0 ? b->t_last_connack : now_ns();
    probe p1 = probe_take(b);
    /* let the broker settle, then read RSS with every connection idle */
    int64_t settle = after(0.3);
    while (now_ns() < settle)
        loop_once(b, settle);
    probe p2 = probe_take(b);
    int alive = 0;
    for (int i = 0; i < n; i++) {
        conn *c = &b->c[i];
        if (c->had_connack)
            lat_add(b, c->t_connack - c->t_open);
        alive += c->st == C_READY;
    }
    teardown(b);

    outline o = {0};
    double secs = (double)(end - start) / NS_PER_S;
    out_head(b, &o, alive, b->n_connack, secs);
    out_broker(&o, &p0, &p1, &p2, (double)b->n_connack);
    kv(&o, "target", "%d", target);
    kv(&o, "connected", "%" PRIu64, b->n_connack);
    kv(&o, "failed", "%" PRIu64, b->n_failed);
    kv(&o, "concurrency", "%d", b->concurrency);
    if (p0.rss_ok && p2.rss_ok && alive > 0)
        kv(&o, "rss_per_conn_b", "%.0f", (double)(p2.rss - p0.rss) * 1024.0 / alive);
    else
        kv(&o, "rss_per_conn_b", "na");
    kv(&o, "bench_cpu_s", "%.2f", p1.self_cpu - p0.self_cpu);
    return out_tail(b, &o, b->n_failed == 0 && alive == n && (uint64_t)alive == b->n_connack);
}

/* ---- takeover storm ------------------------------------------------------------------- */

static int scen_takeover(bench *b)
{
    int n = b->clients;
    char id[96];
    if (n < 2)
        n = 2;
    b->nc = n;
    b->c = xcalloc((size_t)n, sizeof(conn));
    snprintf(id, sizeof(id), "mqb-%s-tk", b->run);
    range first = {0, 1};
    conn_open(b, &b->c[0], id, true);
    if (!wait_for(b, pred_connacked, &first, after(10)) || !ready_range(b, 0, 1))
        return setup_fail(b, "first connect");

    probe p0 = probe_take(b);
    int64_t start = now_ns();
    int next = 1;
    uint64_t base_ok = b->n_connack;
    for (;;) {
        int64_t pending = (int64_t)b->n_opened - (int64_t)b->n_connack - (int64_t)b->n_failed;
        while (next < n && pending < b->concurrency) {
            conn_open(b, &b->c[next++], id, true);
            pending++;
        }
        if (next >= n && b->n_connack + b->n_failed >= (uint64_t)n)
            break;
        if (now_ns() >= b->t_deadline) {
            b->timed_out = true;
            break;
        }
        loop_once(b, b->t_deadline);
    }
    int64_t end = b->t_last_connack;
    probe p1 = probe_take(b);
    uint64_t takeovers = b->n_connack - base_ok;

    /* every connection but one must be closed by the broker [v3.1.1 MQTT-3.1.4-2] */
    int64_t dl = after(3.0);
    while (now_ns() < dl && b->n_peer_closed < (uint64_t)n - 1 - b->n_failed)
        loop_once(b, dl);
    for (int i = 0; i < n; i++)
        if (b->c[i].st == C_READY)
            conn_send_simple(b, &b->c[i], mqw_pingreq);
    dl = after(1.0);
    for (;;) {
        bool waiting = false;
        for (int i = 0; i < n; i++)
            waiting |= b->c[i].st == C_READY && b->c[i].pingresps == 0;
        if (!waiting || now_ns() >= dl)
            break;
        loop_once(b, dl);
    }
    int survivors = 0;
    for (int i = 0; i < n; i++) {
        conn *c = &b->c[i];
        if (i > 0 && c->had_connack)
            lat_add(b, c->t_connack - c->t_open);
        if (c->st == C_READY && c->pingresps > 0)
            survivors++;
    }
    teardown(b);

    outline o = {0};
    double secs = (double)(end - start) / NS_PER_S;
    out_head(b, &o, n, takeovers, secs);
    out_broker(&o, &p0, &p1, &p1, (double)takeovers);
    kv(&o, "us_per_takeover", "%.0f", takeovers ? secs * 1e6 / (double)takeovers : 0.0);
    kv(&o, "survivors", "%d", survivors);
    kv(&o, "closed_by_broker", "%" PRIu64, b->n_peer_closed);
    kv(&o, "failed", "%" PRIu64, b->n_failed);
    kv(&o, "concurrency", "%d", b->concurrency);
    return out_tail(b, &o, survivors == 1 && b->n_failed == 0 && takeovers == (uint64_t)n - 1);
}

/* ---- sequences of QoS 1 publishes (retained, persistent) ------------------------------ */

static void seq_pump(bench *b, conn *c)
{
    bool any = false;
    b->wake_at = 0;
    while (c->st == C_READY && c->sent < b->seq_n && c->inflight < (uint32_t)b->window) {
        uint32_t i = (uint32_t)c->sent;
        if (b->rate > 0) { /* open loop: on schedule, the window only as an upper bound */
            int64_t due = b->seq_t0 + (int64_t)((double)i * (double)NS_PER_S / b->rate);
            if (now_ns() < due) {
                b->wake_at = due;
                break;
            }
        }
        if (b->seq_retain) /* one topic per message */
            c->topic_len =
                (size_t)snprintf(c->topic, sizeof(c->topic), "bench/%s/r/%" PRIu32, b->run, i);
        conn_publish(c, 1, b->seq_retain, 0, i, b->seq_empty ? 0 : b->size);
        any = true;
    }
    if (any)
        conn_flush(b, c);
}

/* Publishes b->seq_n QoS 1 messages from c with a window of b->window; true when all
 * were acknowledged. */
static bool seq_publish(bench *b, conn *c, int64_t deadline)
{
    c->sent = c->acked = 0;
    c->inflight = 0;
    b->seq_t0 = now_ns();
    for (;;) {
        seq_pump(b, c);
        if (c->acked >= b->seq_n) {
            b->wake_at = 0;
            return true;
        }
        if (c->st != C_READY)
            return false;
        int64_t now = now_ns();
        if (now >= deadline || now >= b->t_deadline) {
            b->timed_out = now >= b->t_deadline;
            return false;
        }
        loop_once(b, deadline);
    }
}

static void seq_on_publish(bench *b, conn *c, const mqw_publish *p, int64_t now)
{
    (void)c;
    if (p->payload_len < STAMP_LEN) {
        b->unexpected++;
        return;
    }
    uint32_t i = get_u32(p->payload + 12);
    if (i >= b->seq_n) {
        b->unexpected++;
        return;
    }
    if (b->t_first_rx == 0)
        b->t_first_rx = now;
    b->t_last_rx = now;
    if (b->seen[i]) {
        b->dups++;
        return;
    }
    b->seen[i] = 1;
    b->unique++;
    if (b->t_p50 == 0 && b->unique >= (b->seq_n + 1) / 2)
        b->t_p50 = now;
    if (b->t_p99 == 0 && (double)b->unique >= ceil(0.99 * (double)b->seq_n))
        b->t_p99 = now;
}

/* Waits until every message of the sequence arrived, or nothing arrived for 5 s. */
static void seq_drain(bench *b, conn *sub, int64_t deadline)
{
    int64_t last = now_ns();
    uint64_t seen = b->unique;
    while (b->unique < b->seq_n && sub->st != C_CLOSED) {
        int64_t now = now_ns();
        if (b->unique != seen) {
            seen = b->unique;
            last = now;
        }
        if (now - last > 5 * NS_PER_S || now >= deadline)
            break;
        if (now >= b->t_deadline) {
            b->timed_out = true;
            break;
        }
        loop_once(b, deadline);
    }
}

static void out_arrivals(bench *b, outline *o)
{
    /* arrival-time percentiles since b->t_mark0, replacing latency from payload stamps */
    kv(o, "p50_us", b->t_p50 ? "%.0f" : "na", (double)(b->t_p50 - b->t_mark0) / 1000.0);
    kv(o, "p99_us", b->t_p99 ? "%.0f" : "na", (double)(b->t_p99 - b->t_mark0) / 1000.0);
    kv(o, "max_us", b->t_last_rx ? "%.0f" : "na", (double)(b->t_last_rx - b->t_mark0) / 1000.0);
}

/* ---- retained burst ------------------------------------------------------------------- */

static int scen_retained(bench *b)
{
    char id[96], filter[160];
    b->nc = 2;
    b->c = xcalloc(2, sizeof(conn));
    conn *pub = &b->c[0], *sub = &b->c[1];
    range rp = {0, 1}, rs = {1, 2};
    b->seq_n = (uint64_t)b->count;
    b->seen = xcalloc((size_t)b->count, 1);

    snprintf(id, sizeof(id), "mqb-%s-rp", b->run);
    conn_open(b, pub, id, true);
    if (!wait_for(b, pred_connacked, &rp, after(10)) || !ready_range(b, 0, 1))
        return setup_fail(b, "publisher connect");
    b->seq_retain = true;
    int64_t tp0 = now_ns();
    if (!seq_publish(b, pub, b->t_deadline))
        return setup_fail(b, "retained publish");
    int64_t tp1 = now_ns();

    snprintf(id, sizeof(id), "mqb-%s-rs", b->run);
    conn_open(b, sub, id, true);
    if (!wait_for(b, pred_connacked, &rs, after(10)) || !ready_range(b, 1, 2))
        return setup_fail(b, "subscriber connect");
    b->on_publish = seq_on_publish;
    probe p0 = probe_take(b);
    snprintf(filter, sizeof(filter), "bench/%s/r/#", b->run);
    b->t_mark0 = now_ns();
    conn_subscribe(b, sub, filter, b->qos);
    seq_drain(b, sub, b->t_deadline);
    probe p1 = probe_take(b);
    uint64_t got = b->unique;
    uint64_t retained_flag = sub->recv_retained;
    b->on_publish = NULL;

    bool cleaned = false;
    if (b->cleanup && pub->st == C_READY) {
        b->seq_empty = true;
        cleaned = seq_publish(b, pub, after(60));
    }
    teardown(b);

    outline o = {0};
    double secs = (double)(b->t_last_rx - b->t_mark0) / NS_PER_S;
    kv(&o, "scenario", "%s", b->scenario);
    kv(&o, "qos", "%d", b->qos);
    kv(&o, "size", "%zu", b->size);
    kv(&o, "clients", "%d", 2);
    kv(&o, "msgs", "%" PRIu64, got);
    kv_rate(&o, "msgs_per_s", (double)got, got ? secs : 0);
    out_arrivals(b, &o);
    out_broker(&o, &p0, &p1, &p1, (double)got);
    kv(&o, "retained", "%d", b->count);
    kv(&o, "with_retain_flag", "%" PRIu64, retained_flag);
    kv(&o, "lost", "%" PRIu64, b->seq_n - got);
    kv(&o, "dups", "%" PRIu64, b->dups);
    kv_rate(&o, "store_msgs_per_s", (double)b->seq_n, (double)(tp1 - tp0) / NS_PER_S);
    kv(&o, "cleaned", "%d", cleaned);
    kv(&o, "bench_cpu_s", "%.2f", p1.self_cpu - p0.self_cpu);
    return out_tail(b, &o, got == b->seq_n && retained_flag >= got && b->errors == 0);
}

/* ---- persistent QoS 1 to an offline session ------------------------------------------- */

static int scen_persistent(bench *b)
{
    char sid[96], id[96], filter[160];
    b->nc = 2;
    b->c = xcalloc(2, sizeof(conn));
    conn *sub = &b->c[0], *pub = &b->c[1];
    range rs = {0, 1}, rp = {1, 2};
    b->seq_n = (uint64_t)b->count;
    b->seen = xcalloc((size_t)b->count, 1);
    b->qos = 1;

    /* 1. a clean-session-0 subscriber subscribes at QoS 1 and goes away */
    snprintf(sid, sizeof(sid), "mqb-%s-ps", b->run);
    snprintf(filter, sizeof(filter), "bench/%s/p", b->run);
    conn_open(b, sub, sid, false);
    if (!wait_for(b, pred_connacked, &rs, after(10)) || !ready_range(b, 0, 1))
        return setup_fail(b, "subscriber connect");
    conn_subscribe(b, sub, filter, 1);
    if (!wait_for(b, pred_subacked, &rs, after(10)) || b->errors > 0)
        return setup_fail(b, "subscribe");
    conn_send_simple(b, sub, mqw_disconnect);
    wait_for(b, pred_all_closed, &rs, after(5));
    conn_close(b, sub);

    /* 2. store: N QoS 1 messages for the offline session, window of --window */
    snprintf(id, sizeof(id), "mqb-%s-pp", b->run);
    pub->topic_len = (size_t)snprintf(pub->topic, sizeof(pub->topic), "%s", filter);
    pub->pid_t0 = xcalloc(65536, sizeof(int64_t));
    conn_open(b, pub, id, true);
    if (!wait_for(b, pred_connacked, &rp, after(10)) || !ready_range(b, 1, 2))
        return setup_fail(b, "publisher connect");
    mqb_syncs syncs;
    uint64_t sync0 = 0, sync1 = 0;
    bool syncs_ok = mqb_syncs_open(&syncs, b->pid) && mqb_syncs_read(&syncs, &sync0);
    probe p0 = probe_take(b);
    int64_t tp0 = now_ns();
    b->lat_on = true;
    bool stored = seq_publish(b, pub, b->t_deadline);
    b->lat_on = false;
    int64_t tp1 = now_ns();
    probe p1 = probe_take(b);
    syncs_ok = syncs_ok && mqb_syncs_read(&syncs, &sync1);
    mqb_syncs_close(&syncs);

    /* 3. drain: the subscriber comes back and receives everything */
    b->on_publish = seq_on_publish;
    b->t_mark0 = now_ns();
    conn_open(b, sub, sid, false);
    if (!wait_for(b, pred_connacked, &rs, after(10)) || !ready_range(b, 0, 1))
        return setup_fail(b, "subscriber reconnect");
    bool session_present = sub->session_present;
    seq_drain(b, sub, b->t_deadline);
    probe p2 = probe_take(b);
    uint64_t got = b->unique;
    b->on_publish = NULL;

    /* 4. forget the session: reconnect with clean session 1 */
    conn_send_simple(b, sub, mqw_disconnect);
    wait_for(b, pred_all_closed, &rs, after(5));
    conn_close(b, sub);
    conn_open(b, sub, sid, true);
    wait_for(b, pred_connacked, &rs, after(10));
    teardown(b);

    outline o = {0};
    double pub_secs = (double)(tp1 - tp0) / NS_PER_S;
    out_head(b, &o, 2, pub->acked, pub_secs); /* latency: PUBLISH -> PUBACK */
    out_broker(&o, &p0, &p2, &p2, (double)b->seq_n);
    double drain_secs = (double)(b->t_last_rx - b->t_mark0) / NS_PER_S;
    kv_rate(&o, "drain_msgs_per_s", (double)got, got ? drain_secs : 0);
    if (p0.wb_ok && p1.wb_ok && p2.wb_ok) {
        kv(&o, "write_bytes_per_msg", "%.0f", (double)(p1.wb - p0.wb) / (double)b->seq_n);
        kv(&o, "drain_write_bytes_per_msg", "%.0f", (double)(p2.wb - p1.wb) / (double)b->seq_n);
    } else {
        kv(&o, "write_bytes_per_msg", "na");
        kv(&o, "drain_write_bytes_per_msg", "na");
    }
    if (p0.dir_ok && p1.dir_ok)
        kv(&o, "store_growth_b", "%" PRId64, (int64_t)p1.dir - (int64_t)p0.dir);
    /* fsync + fdatasync while storing: what a flash device feels as write barriers */
    kv(&o, "fsyncs", syncs_ok ? "%.0f" : "na", (double)(sync1 - sync0));
    kv(&o, "fsyncs_per_s", syncs_ok ? "%.1f" : "na", (double)(sync1 - sync0) / pub_secs);
    kv(&o, "rate", b->rate > 0 ? "%.0f" : "none", b->rate);
    kv(&o, "session_present", "%d", session_present);
    kv(&o, "window", "%d", b->window);
    kv(&o, "lost", "%" PRIu64, b->seq_n - got);
    kv(&o, "dups", "%" PRIu64, b->dups);
    kv(&o, "bench_cpu_s", "%.2f", p2.self_cpu - p0.self_cpu);
    return out_tail(b, &o, stored && got == b->seq_n && session_present && b->errors == 0);
}

/* ---- command line --------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: mqbench --scenario NAME [options]\n"
               "scenarios: fanin fanout pairs shared connstorm takeover retained persistent\n"
               "  --host H          broker address (default 127.0.0.1)\n"
               "  --port P          broker port (default 1883)\n"
               "  --qos 0|1         QoS of flows / retained subscription (default 0)\n"
               "  --size BYTES      payload size, at least 16 (default 16)\n"
               "  --clients N       publishers (fanin, pairs, shared), subscribers (fanout),\n"
               "                    connections (connstorm, default 10000), takeovers\n"
               "                    (takeover, default 1000); flows default 8\n"
               "  --subs N          shared-subscription group members (default 4)\n"
               "  --count N         retained topics / persistent messages (default 10000)\n"
               "  --window N        messages in flight per publisher (default 32)\n"
               "  --concurrency N   connects in progress at once (connstorm 100, takeover 8)\n"
               "  --seconds S       measured interval of flows (default 5)\n"
               "  --warmup S        unmeasured start of flows (default 1)\n"
               "  --drain S         wait for in-flight messages after a flow (default 3)\n"
               "  --timeout S       hard bound of the whole run (default seconds+warmup+60)\n"
               "  --pid PID         broker process: CPU, RSS and write_bytes from /proc\n"
               "  --store-dir DIR   broker's persistence directory (persistent: growth)\n"
               "  --keepalive S     MQTT keep alive sent in CONNECT (default 300)\n"
               "  --no-cleanup      retained: leave the retained messages behind\n"
               "  --rate N          persistent: publish N msgs/s on a fixed schedule, the\n"
               "                    window only as an upper bound (default: closed loop)\n"
               "Prints one line of key=value pairs; exit 0 when status=ok.\n");
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static bool resolve(bench *b)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char port[16];
    snprintf(port, sizeof(port), "%d", b->port);
    int rc = getaddrinfo(b->host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "mqbench: %s: %s\n", b->host, gai_strerror(rc));
        return false;
    }
    memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
    b->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'},
        {"scenario", required_argument, 0, 's'},
        {"qos", required_argument, 0, 'q'},
        {"size", required_argument, 0, 'z'},
        {"clients", required_argument, 0, 'c'},
        {"subs", required_argument, 0, 'S'},
        {"count", required_argument, 0, 'n'},
        {"window", required_argument, 0, 'w'},
        {"concurrency", required_argument, 0, 'C'},
        {"seconds", required_argument, 0, 't'},
        {"warmup", required_argument, 0, 'W'},
        {"drain", required_argument, 0, 'd'},
        {"timeout", required_argument, 0, 'T'},
        {"pid", required_argument, 0, 'P'},
        {"store-dir", required_argument, 0, 'D'},
        {"keepalive", required_argument, 0, 'k'},
        {"no-cleanup", no_argument, 0, 'N'},
        {"rate", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bench b = {
        .host = "127.0.0.1",
        .port = 1883,
        .size = 16,
        .clients = -1,
        .subs = 4,
        .count = 10000,
        .window = 32,
        .concurrency = -1,
        .seconds = 5,
        .warmup = 1,
        .drain = 3,
        .timeout = -1,
        .keepalive = 300,
        .cleanup = true,
    };
    int ch;
    double v;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *bad = NULL;
        switch (ch) {
        case 'H':
            b.host = optarg;
            break;
        case 'p':
            bad = parse_num(optarg, 1, 65535, &v) ? NULL : "--port";
            b.port = (int)v;
            break;
        case 's':
            b.scenario = optarg;
            break;
        case 'q':
            bad = parse_num(optarg, 0, 1, &v) ? NULL : "--qos";
            b.qos = (int)v;
            break;
        case 'z':
            bad = parse_num(optarg, STAMP_LEN, 16 * 1024 * 1024, &v) ? NULL : "--size";
            b.size = (size_t)v;
            break;
        case 'c':
            bad = parse_num(optarg, 1, 1000000, &v) ? NULL : "--clients";
            b.clients = (int)v;
            break;
        case 'S':
            bad = parse_num(optarg, 1, 100000, &v) ? NULL : "--subs";
            b.subs = (int)v;
            break;
        case 'n':
            bad = parse_num(optarg, 1, 100000000, &v) ? NULL : "--count";
            b.count = (int)v;
            break;
        case 'w':
            bad = parse_num(optarg, 1, 50000, &v) ? NULL : "--window";
            b.window = (int)v;
            break;
        case 'C':
            bad = parse_num(optarg, 1, 100000, &v) ? NULL : "--concurrency";
            b.concurrency = (int)v;
            break;
        case 't':
            bad = parse_num(optarg, 0.1, 86400, &b.seconds) ? NULL : "--seconds";
            break;
        case 'W':
            bad = parse_num(optarg, 0, 3600, &b.warmup) ? NULL : "--warmup";
            break;
        case 'd':
            bad = parse_num(optarg, 0, 3600, &b.drain) ? NULL : "--drain";
            break;
        case 'T':
            bad = parse_num(optarg, 1, 86400, &b.timeout) ? NULL : "--timeout";
            break;
        case 'P':
            bad = parse_num(optarg, 1, INT_MAX, &v) ? NULL : "--pid";
            b.pid = (pid_t)v;
            break;
        case 'D':
            b.store_dir = optarg;
            break;
        case 'k':
            bad = parse_num(optarg, 0, 65535, &v) ? NULL : "--keepalive";
            b.keepalive = (int)v;
            break;
        case 'N':
            b.cleanup = false;
            break;
        case 'r':
            bad = parse_num(optarg, 1, 10000000, &b.rate) ? NULL : "--rate";
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (bad != NULL) {
            fprintf(stderr, "mqbench: bad value for %s: '%s'\n", bad, optarg);
            return 2;
        }
    }
    static const char *const names[] = {"fanin",     "fanout",   "pairs",    "shared",
                                        "connstorm", "takeover", "retained", "persistent"};
    int which = -1;
    for (size_t i = 0; b.scenario != NULL && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(b.scenario, names[i]) == 0)
            which = (int)i;
    if (which < 0 || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (b.rate > 0 && which != 7) {
        fprintf(stderr, "mqbench: --rate applies to the persistent scenario only, not '%s'\n",
                b.scenario);
        return 2;
    }
    if (b.clients < 0)
        b.clients = which == 4 ? 10000 : which == 5 ? 1000 : 8;
    if (b.concurrency < 0)
        b.concurrency = which == 4 ? 100 : 8;
    if (b.timeout < 0)
        b.timeout = b.seconds + b.warmup + 60 + (b.rate > 0 ? b.count / b.rate : 0);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    if (!resolve(&b))
        return 2;
    b.ep = epoll_create1(EPOLL_CLOEXEC);
    if (b.ep < 0) {
        perror("mqbench: epoll_create1");
        return 2;
    }
    snprintf(b.run, sizeof(b.run), "%x%04x", (unsigned)getpid(), (unsigned)(now_ns() & 0xffff));
    b.t_deadline = after(b.timeout);
    b.debug = getenv("MQBENCH_DEBUG") != NULL ? 20 : 0;

    int rc;
    switch (which) {
    case 4:
        rc = scen_connstorm(&b);
        break;
    case 5:
        rc = scen_takeover(&b);
        break;
    case 6:
        rc = scen_retained(&b);
        break;
    case 7:
        rc = scen_persistent(&b);
        break;
    default:
        rc = scen_flow(&b);
        break;
    }
    for (int i = 0; i < b.nc; i++) {
        free(b.c[i].rx.p);
        free(b.c[i].tx.p);
        free(b.c[i].pid_t0);
    }
    free(b.c);
    free(b.lat);
    free(b.seen);
    free(b.next_seq);
    close(b.ep);
    return rc;
}
