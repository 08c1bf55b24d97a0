/*
 * test_store.c - unit tests of the persistent store (storage/store.h).
 *
 * Purpose: every record type survives close/open and comes back through the loader in the
 * documented order; deletes cascade and orphaned message bodies go away in the same
 * transaction; barriers fire in order, after the commit, and an acknowledged change
 * survives kill -9 of the process (a forked child is SIGKILLed while it is writing);
 * corrupt, truncated and foreign files are moved aside (or refused, for a newer schema);
 * missing, non-directory, read-only locations and read-only files are clear errors;
 * injected write errors fail the barrier, are counted, logged once, and the failed
 * operations are committed, in order, once writes work again; the counters and the size
 * budget move as documented. The throughput test prints the rate, the bytes written per
 * message and the fsyncs per transaction; it asserts only correctness (no timing).
 *
 * Each test runs in its own process (Criterion) in a fresh directory under /tmp, removed
 * by the fixture. The database is inspected with SQLite directly ("raw") while the store
 * is closed: the store holds an exclusive lock while it is open.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "storage/store.h"

static char dir[256];
static char dbpath[300];
static char errbuf[512];

/* ---- fixture ---- */

static void rm_rf(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        (void)chmod(path, 0700);
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                char sub[1024];
                snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        (void)rmdir(path);
    } else {
        (void)unlink(path);
    }
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/mqlstore-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(dbpath, sizeof(dbpath), "%s/mqlite.db", dir);
    memset(errbuf, 0, sizeof(errbuf));
}

static void teardown(void)
{
    rm_rf(dir);
}

TestSuite(store, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static mql_store *open_opts(const char *d, uint32_t window_ms, bool sync_full, uint64_t max)
{
    mql_store *st = NULL;
    mql_store_opts o = {
        .dir = d, .commit_window_ms = window_ms, .sync_full = sync_full, .max_bytes = max};
    mql_err err = mql_store_open(&st, &o, errbuf, sizeof(errbuf));
    cr_assert_eq(err, MQL_OK, "open %s: %d %s", d, err, errbuf);
    cr_assert_not_null(st);
    return st;
}

static mql_store *open_default(void)
{
    return open_opts(dir, 5, true, 0);
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    mql_err err;
};

static void waiter_cb(void *arg, mql_err err)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->err = err;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Queue a barrier and wait for it. */
static mql_err flush(mql_store *st)
{
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, MQL_OK};
    cr_assert_eq(mql_store_barrier(st, waiter_cb, &w), MQL_OK);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    return w.err;
}

static void put_msg(mql_store *st, uint64_t id, const char *topic, const char *payload)
{
    mql_store_msg m = {.msg_id = id,
                       .topic = topic,
                       .topic_len = (uint32_t)strlen(topic),
                       .payload = (const uint8_t *)payload,
                       .payload_len = (uint32_t)strlen(payload),
                       .qos = 1};
    cr_assert_eq(mql_store_msg_put(st, &m), MQL_OK);
}

static void put_session(mql_store *st, const char *cid)
{
    mql_store_session s = {.client_id = cid, .version = 5, .expiry = 3600};
    cr_assert_eq(mql_store_session_put(st, &s), MQL_OK);
}

static void put_out(mql_store *st, const char *cid, uint64_t seq, uint64_t msg_id)
{
    mql_store_out o = {.client_id = cid, .seq = seq, .msg_id = msg_id, .qos = 1};
    cr_assert_eq(mql_store_out_put(st, &o), MQL_OK);
}

static void put_sub(mql_store *st, const char *cid, const char *filter)
{
    mql_store_sub s = {.client_id = cid, .filter = filter, .qos = 1};
    cr_assert_eq(mql_store_sub_put(st, &s), MQL_OK);
}

/* The loader writes one line per row into a text buffer and checks the order of kinds. */
struct rec {
    char *buf;
    size_t len, cap;
    int last_kind;
    bool order_ok;
    size_t rows[6];
};

static void rec_add(struct rec *r, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void rec_add(struct rec *r, int kind, const char *fmt, ...)
{
    if (kind < r->last_kind)
        r->order_ok = false;
    r->last_kind = kind;
    r->rows[kind]++;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && (size_t)n < sizeof(line));
    if (r->len + (size_t)n + 2 > r->cap) {
        r->cap = (r->cap + (size_t)n + 2) * 2;
        r->buf = realloc(r->buf, r->cap);
        cr_assert_not_null(r->buf);
    }
    memcpy(r->buf + r->len, line, (size_t)n);
    r->len += (size_t)n;
    r->buf[r->len++] = '\n';
    r->buf[r->len] = '\0';
}

static void hex(char *out, const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
}

static mql_err ld_msg(void *arg, const mql_store_msg *m)
{
    char props[128];
    cr_assert(m->props_len < 60);
    hex(props, m->props, m->props_len);
    cr_assert_eq(m->topic[m->topic_len], '\0');
    rec_add(arg, 0, "msg %llu %.*s [%.*s] props=%s qos=%u retain=%d exp=%lld",
            (unsigned long long)m->msg_id, (int)m->topic_len, m->topic, (int)m->payload_len,
            m->payload_len ? (const char *)m->payload : "", props, m->qos, m->retain,
            (long long)m->expiry_wall);
    return MQL_OK;
}

static mql_err ld_session(void *arg, const mql_store_session *s)
{
    rec_add(arg, 1, "session %s v%u exp=%u disc=%lld", s->client_id, s->version, s->expiry,
            (long long)s->disconnected_at);
    return MQL_OK;
}

static mql_err ld_sub(void *arg, const mql_store_sub *s)
{
    rec_add(arg, 2, "sub %s %s qos=%u opt=%u id=%u", s->client_id, s->filter, s->qos, s->options,
            s->sub_id);
    return MQL_OK;
}

static mql_err ld_out(void *arg, const mql_store_out *o)
{
    rec_add(arg, 3, "out %s #%llu msg=%llu qos=%u retain=%d state=%u pid=%u sub=%u", o->client_id,
            (unsigned long long)o->seq, (unsigned long long)o->msg_id, o->qos, o->retain, o->state,
            o->packet_id, o->sub_id);
    return MQL_OK;
}

static mql_err ld_qos2(void *arg, const char *cid, uint16_t pid)
{
    rec_add(arg, 4, "qos2 %s %u", cid, pid);
    return MQL_OK;
}

static mql_err ld_retained(void *arg, const char *topic, uint64_t msg_id)
{
    rec_add(arg, 5, "retained %s %llu", topic, (unsigned long long)msg_id);
    return MQL_OK;
}

/* Load everything into r (which the caller frees). */
static void load(mql_store *st, struct rec *r, uint64_t *max_id)
{
    memset(r, 0, sizeof(*r));
    r->order_ok = true;
    r->buf = calloc(1, 1);
    mql_store_loader ld = {r, ld_msg, ld_session, ld_sub, ld_out, ld_qos2, ld_retained};
    uint64_t m = 0;
    cr_assert_eq(mql_store_load(st, &ld, &m), MQL_OK);
    cr_assert(r->order_ok, "loader order broken:\n%s", r->buf);
    if (max_id != NULL)
        *max_id = m;
}

/* Open, load, close: the text of everything stored. */
static char *reload_text(void)
{
    mql_store *st = open_default();
    struct rec r;
    load(st, &r, NULL);
    mql_store_close(st);
    return r.buf;
}

/* Raw access to the database file while the store is closed. */
static long long raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sqlite3_errmsg(db));
    long long v = sqlite3_column_int64(s, 0);
    cr_assert_eq(sqlite3_finalize(s), SQLITE_OK);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
    return v;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

static long long msgs_rows(void)
{
    return raw_int(dbpath, "SELECT count(*) FROM msgs");
}

static bool msg_exists(uint64_t id)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM msgs WHERE msg_id = %llu",
             (unsigned long long)id);
    return raw_int(dbpath, sql) == 1;
}

/* Count the files in dir whose name starts with prefix; the first match goes to first. */
static int count_files(const char *prefix, char *first, size_t len)
{
    int n = 0;
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            if (n == 0 && first != NULL)
                snprintf(first, len, "%s", e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Capture what the store logs (stderr) into a file. */
static int saved_stderr = -1;
static char capture_path[320];

static void capture_start(void)
{
    snprintf(capture_path, sizeof(capture_path), "%s.log", dir);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    int fd = open(capture_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    cr_assert(fd >= 0 && saved_stderr >= 0);
    cr_assert(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

static char *capture_end(void)
{
    fflush(stderr);
    cr_assert(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    FILE *f = fopen(capture_path, "r");
    cr_assert_not_null(f);
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, f);
    text[n] = '\0';
    fclose(f);
    unlink(capture_path);
    fprintf(stderr, "%s", text); /* keep it visible in the test output */
    return text;
}

static int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* ---- round trip ---- */

Test(store, round_trip_every_record_type)
{
    mql_store *st = open_default();
    static const uint8_t props[] = {0x01, 0x01, 0x03, 0x00, 0x04, 't', 'e', 'x', 't'};
    mql_store_msg m3 = {.msg_id = 3,
                        .topic = "r/t/extra",
                        .topic_len = 3, /* not NUL-terminated at topic_len */
                        .payload = (const uint8_t *)"retained!",
                        .payload_len = 9,
                        .props = props,
                        .props_len = sizeof(props),
                        .qos = 2,
                        .retain = true,
                        .expiry_wall = 1900000000};
    cr_assert_eq(mql_store_msg_put(st, &m3), MQL_OK);
    put_msg(st, 1, "a/b", "hello");
    mql_store_msg m2 = {.msg_id = 2, .topic = "a/c", .topic_len = 3, .qos = 0}; /* empty */
    cr_assert_eq(mql_store_msg_put(st, &m2), MQL_OK);
    mql_store_msg m9 = {.msg_id = 9, .topic = "unref", .topic_len = 5};
    cr_assert_eq(mql_store_msg_put(st, &m9), MQL_OK); /* never referenced: not loaded */

    mql_store_session s2 = {
        .client_id = "c2", .version = 4, .expiry = UINT32_MAX, .disconnected_at = 1700000000};
    cr_assert_eq(mql_store_session_put(st, &s2), MQL_OK);
    mql_store_session s1 = {.client_id = "c1", .version = 5, .expiry = 10};
    cr_assert_eq(mql_store_session_put(st, &s1), MQL_OK);
    s1.expiry = 3600; /* replaced */
    cr_assert_eq(mql_store_session_put(st, &s1), MQL_OK);

    mql_store_sub sa = {
        .client_id = "c1", .filter = "b/#", .qos = 2, .options = 0x0d, .sub_id = 268435455};
    mql_store_sub sb = {.client_id = "c1", .filter = "a/+", .qos = 1, .options = 1, .sub_id = 7};
    mql_store_sub sc = {.client_id = "c2", .filter = "x", .qos = 0};
    cr_assert_eq(mql_store_sub_put(st, &sa), MQL_OK);
    cr_assert_eq(mql_store_sub_put(st, &sb), MQL_OK);
    cr_assert_eq(mql_store_sub_put(st, &sc), MQL_OK);
    mql_store_sub gone = {.client_id = "c2", .filter = "gone/#", .qos = 1};
    cr_assert_eq(mql_store_sub_put(st, &gone), MQL_OK);
    cr_assert_eq(mql_store_sub_del(st, "c2", "gone/#"), MQL_OK);

    /* outq out of seq order: loaded back per session in seq order */
    mql_store_out o5 = {.client_id = "c1", .seq = 5, .msg_id = 1, .qos = 1};
    mql_store_out o1 = {.client_id = "c1", .seq = 1, .msg_id = 2, .qos = 0};
    mql_store_out o3 = {.client_id = "c1",
                        .seq = 3,
                        .msg_id = 1,
                        .qos = 1,
                        .retain = true,
                        .state = MQL_STORE_OUT_PUBLISH_SENT,
                        .packet_id = 10,
                        .sub_id = 7};
    mql_store_out c2o = {.client_id = "c2", .seq = 1, .msg_id = 3, .qos = 2};
    cr_assert_eq(mql_store_out_put(st, &o5), MQL_OK);
    cr_assert_eq(mql_store_out_put(st, &o1), MQL_OK);
    cr_assert_eq(mql_store_out_put(st, &o3), MQL_OK);
    cr_assert_eq(mql_store_out_put(st, &c2o), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK); /* the update lands in a later transaction */
    cr_assert_eq(mql_store_out_update(st, "c1", 3, MQL_STORE_OUT_PUBREL_SENT, 11), MQL_OK);
    cr_assert_eq(mql_store_out_update(st, "c2", 1, MQL_STORE_OUT_PUBLISH_SENT, 65535), MQL_OK);

    cr_assert_eq(mql_store_qos2_put(st, "c1", 42), MQL_OK);
    cr_assert_eq(mql_store_qos2_put(st, "c1", 7), MQL_OK);
    cr_assert_eq(mql_store_qos2_put(st, "c1", 7), MQL_OK); /* twice: one row */
    cr_assert_eq(mql_store_qos2_put(st, "c2", 1), MQL_OK);
    cr_assert_eq(mql_store_qos2_del(st, "c2", 1), MQL_OK);
    cr_assert_eq(mql_store_retain_put(st, "r/t/extra", 3, 3), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);

    st = open_default();
    struct rec r;
    uint64_t max_id = 0;
    load(st, &r, &max_id);
    mql_store_close(st);
    const char *want = "msg 1 a/b [hello] props= qos=1 retain=0 exp=0\n"
                       "msg 2 a/c [] props= qos=0 retain=0 exp=0\n"
                       "msg 3 r/t [retained!] props=010103000474657874 qos=2 retain=1 "
                       "exp=1900000000\n"
                       "session c1 v5 exp=3600 disc=0\n"
                       "session c2 v4 exp=4294967295 disc=1700000000\n"
                       "sub c1 a/+ qos=1 opt=1 id=7\n"
                       "sub c1 b/# qos=2 opt=13 id=268435455\n"
                       "sub c2 x qos=0 opt=0 id=0\n"
                       "out c1 #1 msg=2 qos=0 retain=0 state=0 pid=0 sub=0\n"
                       "out c1 #3 msg=1 qos=1 retain=1 state=2 pid=11 sub=7\n"
                       "out c1 #5 msg=1 qos=1 retain=0 state=0 pid=0 sub=0\n"
                       "out c2 #1 msg=3 qos=2 retain=0 state=1 pid=65535 sub=0\n"
                       "qos2 c1 7\n"
                       "qos2 c1 42\n"
                       "retained r/t 3\n";
    cr_assert_str_eq(r.buf, want);
    cr_assert_eq(max_id, 3, "max_msg_id %llu", (unsigned long long)max_id);
    free(r.buf);
}

Test(store, empty_store_loads_nothing)
{
    mql_store *st = open_default();
    struct rec r;
    uint64_t max_id = 99;
    load(st, &r, &max_id);
    cr_assert_str_eq(r.buf, "");
    cr_assert_eq(max_id, 0);
    free(r.buf);
    mql_store_close(st);
}

static mql_err ld_stop(void *arg, const mql_store_session *s)
{
    (void)s;
    ++*(int *)arg;
    return MQL_E_NOMEM;
}

Test(store, loader_error_stops_the_load)
{
    mql_store *st = open_default();
    put_session(st, "a");
    put_session(st, "b");
    cr_assert_eq(flush(st), MQL_OK);
    int calls = 0;
    mql_store_loader ld = {.arg = &calls, .session = ld_stop};
    uint64_t m;
    cr_assert_eq(mql_store_load(st, &ld, &m), MQL_E_NOMEM);
    cr_assert_eq(calls, 1);
    mql_store_close(st);
}

/* A loader may leave callbacks NULL: those rows are skipped, the others still arrive, and
 * the largest msg_id is reported all the same. */
Test(store, load_skips_rows_without_a_callback)
{
    mql_store *st = open_default();
    put_session(st, "a");
    put_sub(st, "a", "t/#");
    put_msg(st, 7, "t/1", "kept");
    cr_assert_eq(mql_store_retain_put(st, "t/1", 3, 7), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    struct rec r;
    memset(&r, 0, sizeof(r));
    r.order_ok = true;
    r.buf = calloc(1, 1);
    mql_store_loader ld = {.arg = &r, .retained = ld_retained};
    uint64_t m = 0;
    cr_assert_eq(mql_store_load(st, &ld, &m), MQL_OK);
    cr_assert_str_eq(r.buf, "retained t/1 7\n");
    cr_assert_eq(m, 7);
    cr_assert_eq(mql_store_load(st, &ld, NULL), MQL_OK, "max_msg_id may be NULL");
    free(r.buf);
    mql_store_close(st);
}

/* Changes that break the contract are refused when queued, and nothing of them is
 * stored. */
Test(store, invalid_changes_are_refused_and_not_queued)
{
    mql_store *st = open_default();
    mql_store_session s = {.client_id = NULL, .version = 5};
    cr_assert_eq(mql_store_session_put(st, &s), MQL_E_INTERNAL);
    cr_assert_eq(mql_store_session_del(st, NULL), MQL_E_INTERNAL);
    cr_assert_eq(mql_store_sub_del(st, "a", NULL), MQL_E_INTERNAL);
    cr_assert_eq(mql_store_out_del(st, NULL, 1), MQL_E_INTERNAL);
    cr_assert_eq(mql_store_retain_del(st, NULL, 0), MQL_E_INTERNAL);
    mql_store_msg m = {.msg_id = 1, .topic = "t", .topic_len = 1, .payload_len = 4};
    cr_assert_eq(mql_store_msg_put(st, &m), MQL_E_INTERNAL, "payload bytes without a pointer");
    m.payload = (const uint8_t *)"body";
    m.props_len = UINT32_MAX;
    cr_assert_eq(mql_store_msg_put(st, &m), MQL_E_TOO_LARGE);
    cr_assert_eq(mql_store_barrier(st, NULL, NULL), MQL_E_INTERNAL);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    char *text = reload_text();
    cr_assert_str_eq(text, "");
    free(text);
}

/* ---- deletes ---- */

Test(store, session_del_cascades)
{
    mql_store *st = open_default();
    put_msg(st, 1, "t/shared", "s");
    put_msg(st, 2, "t/c1", "only c1");
    for (int i = 0; i < 2; i++) {
        const char *cid = i == 0 ? "c1" : "c2";
        put_session(st, cid);
        put_sub(st, cid, "t/#");
        put_sub(st, cid, "u/#");
        put_out(st, cid, 1, 1);
        cr_assert_eq(mql_store_qos2_put(st, cid, 5), MQL_OK);
    }
    put_out(st, "c1", 2, 2);
    put_session(st, "c10"); /* a prefix match must not be deleted */
    cr_assert_eq(flush(st), MQL_OK);
    cr_assert_eq(mql_store_session_del(st, "c1"), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);

    cr_assert_eq(msgs_rows(), 1, "the body only c1 referred to is deleted with the session");
    cr_assert(msg_exists(1));
    char *text = reload_text();
    cr_assert_str_eq(text, "msg 1 t/shared [s] props= qos=1 retain=0 exp=0\n"
                           "session c10 v5 exp=3600 disc=0\n"
                           "session c2 v5 exp=3600 disc=0\n"
                           "sub c2 t/# qos=1 opt=0 id=0\n"
                           "sub c2 u/# qos=1 opt=0 id=0\n"
                           "out c2 #1 msg=1 qos=1 retain=0 state=0 pid=0 sub=0\n"
                           "qos2 c2 5\n");
    free(text);
}

Test(store, orphaned_bodies_are_deleted_in_the_same_transaction)
{
    mql_store *st = open_default();
    put_msg(st, 1, "t", "two refs");
    put_msg(st, 2, "t", "queued and retained");
    put_msg(st, 3, "t", "put and gone in one batch");
    put_out(st, "c", 1, 1);
    put_out(st, "c", 2, 1);
    put_out(st, "c", 3, 2);
    cr_assert_eq(mql_store_retain_put(st, "t", 1, 2), MQL_OK);
    put_out(st, "c", 4, 3);
    cr_assert_eq(mql_store_out_del(st, "c", 4), MQL_OK);
    cr_assert_eq(mql_store_out_del(st, "c", 1), MQL_OK);
    cr_assert_eq(mql_store_out_del(st, "c", 3), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    /* No reopen in between: the open-time sweep must not be what deletes them. */
    cr_assert(msg_exists(1), "one reference left");
    cr_assert(msg_exists(2), "still retained");
    cr_assert(!msg_exists(3), "unlinked in the batch that put it");

    st = open_default();
    cr_assert_eq(mql_store_out_del(st, "c", 2), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    cr_assert_eq(mql_store_retain_del(st, "t", 1), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    cr_assert_eq(msgs_rows(), 0);
    cr_assert_eq(raw_int(dbpath, "SELECT count(*) FROM outq"), 0);
}

Test(store, bodies_never_referenced_are_swept_at_open)
{
    mql_store *st = open_default();
    put_msg(st, 1, "t", "kept");
    put_out(st, "c", 1, 1);
    put_msg(st, 2, "t", "never referenced");
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    cr_assert_eq(msgs_rows(), 2);
    st = open_default();
    mql_store_close(st);
    cr_assert(msg_exists(1));
    cr_assert(!msg_exists(2));
}

Test(store, retain_put_replace_del)
{
    mql_store *st = open_default();
    put_msg(st, 1, "r", "first");
    cr_assert_eq(mql_store_retain_put(st, "r", 1, 1), MQL_OK);
    put_msg(st, 5, "s", "other topic");
    cr_assert_eq(mql_store_retain_put(st, "s", 1, 5), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    put_msg(st, 2, "r", "second");
    cr_assert_eq(mql_store_retain_put(st, "r", 1, 2), MQL_OK);
    cr_assert_eq(mql_store_retain_put(st, "r", 1, 2), MQL_OK); /* same id again: kept */
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    cr_assert(!msg_exists(1), "the replaced retained body is deleted");
    cr_assert(msg_exists(2));
    char *text = reload_text();
    cr_assert_str_eq(text, "msg 2 r [second] props= qos=1 retain=0 exp=0\n"
                           "msg 5 s [other topic] props= qos=1 retain=0 exp=0\n"
                           "retained r 2\n"
                           "retained s 5\n");
    free(text);

    st = open_default();
    cr_assert_eq(mql_store_retain_del(st, "r", 1), MQL_OK);
    cr_assert_eq(mql_store_retain_del(st, "nothing", 7), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    cr_assert(!msg_exists(2));
    text = reload_text();
    cr_assert_str_eq(text, "msg 5 s [other topic] props= qos=1 retain=0 exp=0\n"
                           "retained s 5\n");
    free(text);
}

/* ---- barriers ---- */

#define N_BARRIERS 2000

struct order {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int next;
    int bad;
    int errors;
    pthread_t caller;
    int on_caller;
};

struct order_arg {
    struct order *o;
    int i;
};

static void order_cb(void *arg, mql_err err)
{
    struct order_arg *a = arg;
    struct order *o = a->o;
    pthread_mutex_lock(&o->mu);
    if (a->i != o->next)
        o->bad++;
    o->next++;
    if (err != MQL_OK)
        o->errors++;
    if (pthread_equal(pthread_self(), o->caller))
        o->on_caller++;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

Test(store, barriers_run_in_queue_order_on_the_store_thread)
{
    mql_store *st = open_opts(dir, 1, true, 0);
    static struct order_arg args[N_BARRIERS];
    struct order o = {
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, pthread_self(), 0};
    for (int i = 0; i < N_BARRIERS; i++) {
        args[i] = (struct order_arg){&o, i};
        if (i % 3 == 0)
            put_session(st, i % 2 ? "odd" : "even");
        cr_assert_eq(mql_store_barrier(st, order_cb, &args[i]), MQL_OK);
        if (i % 500 == 0)
            usleep(3000); /* spread over several transactions */
    }
    pthread_mutex_lock(&o.mu);
    while (o.next < N_BARRIERS)
        pthread_cond_wait(&o.cv, &o.mu);
    pthread_mutex_unlock(&o.mu);
    cr_assert_eq(o.bad, 0, "%d barriers out of order", o.bad);
    cr_assert_eq(o.errors, 0);
    cr_assert_eq(o.on_caller, 0, "callbacks must run on the store thread");
    mql_store_stats s = mql_store_get_stats(st);
    cr_assert(s.transactions >= 2, "transactions %llu", (unsigned long long)s.transactions);
    mql_store_close(st);
}

Test(store, barrier_with_nothing_queued_fires)
{
    mql_store *st = open_default();
    cr_assert_eq(flush(st), MQL_OK);
    cr_assert_eq(mql_store_get_stats(st).transactions, 0, "no data, no transaction");
    mql_store_close(st);
}

Test(store, close_runs_what_is_queued)
{
    mql_store *st = open_opts(dir, 10000, true, 0); /* a window longer than the test */
    put_session(st, "late");
    mql_store_close(st);
    char *text = reload_text();
    cr_assert_str_eq(text, "session late v5 exp=3600 disc=0\n");
    free(text);
}

/* Durability: a child process writes and acknowledges (one uint32 per barrier callback on
 * a pipe); the parent SIGKILLs it mid-stream and checks every acknowledged message is in
 * the store. Three rounds, each reopening the store the previous kill left behind. */
static int ack_fd = -1;

static void ack_cb(void *arg, mql_err err)
{
    uint32_t i = (uint32_t)(uintptr_t)arg;
    if (err != MQL_OK)
        _exit(3);
    if (write(ack_fd, &i, sizeof(i)) != (ssize_t)sizeof(i))
        _exit(4);
}

static void kill_child(uint32_t first)
{
    mql_store *st = NULL;
    mql_store_opts o = {.dir = dir, .commit_window_ms = 2, .sync_full = true};
    if (mql_store_open(&st, &o, errbuf, sizeof(errbuf)) != MQL_OK)
        _exit(2);
    char payload[200];
    memset(payload, 'p', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    mql_store_session s = {.client_id = "k", .version = 5, .expiry = UINT32_MAX};
    if (mql_store_session_put(st, &s) != MQL_OK)
        _exit(5);
    for (uint32_t i = first;; i++) {
        mql_store_msg m = {.msg_id = i,
                           .topic = "k/t",
                           .topic_len = 3,
                           .payload = (const uint8_t *)payload,
                           .payload_len = sizeof(payload),
                           .qos = 1};
        mql_store_out out = {.client_id = "k", .seq = i, .msg_id = i, .qos = 1};
        if (mql_store_msg_put(st, &m) != MQL_OK || mql_store_out_put(st, &out) != MQL_OK ||
            mql_store_barrier(st, ack_cb, (void *)(uintptr_t)i) != MQL_OK)
            _exit(6);
        if (i % 64 == 0)
            usleep(500);
    }
}

struct seqset {
    uint8_t *seen;
    size_t n;
};

static mql_err ld_seq(void *arg, const mql_store_out *o)
{
    struct seqset *s = arg;
    if (o->seq < s->n)
        s->seen[o->seq] = 1;
    return MQL_OK;
}

Test(store, acknowledged_changes_survive_kill_9)
{
    static const uint32_t kill_after[] = {50, 400, 1500};
    uint32_t next_id = 1;
    for (size_t round = 0; round < 3; round++) {
        int pfd[2];
        cr_assert_eq(pipe(pfd), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            ack_fd = pfd[1];
            kill_child(next_id);
            _exit(1);
        }
        close(pfd[1]);
        uint32_t acked = 0, max_acked = 0, v;
        bool killed = false;
        ssize_t n;
        while ((n = read(pfd[0], &v, sizeof(v))) == (ssize_t)sizeof(v)) {
            cr_assert(v == (max_acked ? max_acked + 1 : next_id), "ack %u out of order", v);
            max_acked = v;
            if (++acked == kill_after[round] && !killed) {
                kill(pid, SIGKILL);
                killed = true;
            }
        }
        close(pfd[0]);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "child ended on its own: status %d", status);
        cr_assert(acked >= kill_after[round]);

        mql_store *st = open_default();
        struct seqset s = {calloc(max_acked + 100000, 1), max_acked + 100000};
        mql_store_loader ld = {.arg = &s, .out = ld_seq};
        uint64_t max_id = 0;
        cr_assert_eq(mql_store_load(st, &ld, &max_id), MQL_OK);
        mql_store_close(st);
        for (uint32_t i = 1; i <= max_acked; i++)
            cr_assert(s.seen[i], "acknowledged message %u lost after kill -9 (round %zu)", i,
                      round);
        fprintf(stderr, "kill -9 round %zu: %u acknowledged, all present; %llu stored\n", round,
                acked, (unsigned long long)max_id);
        cr_assert(max_id >= max_acked);
        next_id = (uint32_t)max_id + 1;
        free(s.seen);
    }
}

/* ---- damaged files ---- */

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, p, n), (ssize_t)n);
    close(fd);
}

/* Open a damaged store: it must be moved aside (and logged), the new store empty. */
static void expect_moved_aside(const char *what)
{
    capture_start();
    mql_store *st = open_default();
    char *log = capture_end();
    char aside[256] = "";
    cr_assert_eq(count_files("mqlite.db.corrupt-", aside, sizeof(aside)), 1, "%s", what);
    /* mqlite.db.corrupt-YYYYmmddTHHMMSS */
    cr_assert_eq(strlen(aside), strlen("mqlite.db.corrupt-") + 15, "%s", aside);
    cr_assert_eq(aside[strlen("mqlite.db.corrupt-") + 8], 'T', "%s", aside);
    cr_assert(strstr(log, "[store.corrupt]") != NULL, "%s: %s", what, log);
    cr_assert(strstr(log, dbpath) != NULL, "the log names the file: %s", log);
    cr_assert(strstr(log, aside) != NULL, "the log names where it went: %s", log);
    struct rec r;
    load(st, &r, NULL);
    cr_assert_str_eq(r.buf, "", "%s: a fresh store loads nothing", what);
    free(r.buf);
    free(log);
    /* The fresh store works. */
    put_session(st, "after");
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    char *text = reload_text();
    cr_assert_str_eq(text, "session after v5 exp=3600 disc=0\n");
    free(text);
}

Test(store, random_bytes_file_is_moved_aside)
{
    uint8_t junk[65536];
    srand(42);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)rand();
    write_file(dbpath, junk, sizeof(junk));
    expect_moved_aside("random bytes");
}

/* Build a store with enough rows for many pages, close it, return its size. */
static off_t make_big_store(void)
{
    mql_store *st = open_default();
    char payload[600];
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    for (uint64_t i = 1; i <= 500; i++) {
        put_msg(st, i, "big/topic", payload);
        put_out(st, "big", i, i);
    }
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    struct stat sb;
    cr_assert_eq(stat(dbpath, &sb), 0);
    cr_assert(sb.st_size > 100 * 1024, "size %lld", (long long)sb.st_size);
    return sb.st_size;
}

Test(store, truncated_file_is_moved_aside)
{
    off_t size = make_big_store();
    cr_assert_eq(truncate(dbpath, size / 2), 0);
    expect_moved_aside("truncated to half");
}

Test(store, file_truncated_inside_the_header_is_moved_aside)
{
    make_big_store();
    cr_assert_eq(truncate(dbpath, 50), 0);
    expect_moved_aside("truncated to 50 bytes");
}

Test(store, damaged_page_is_moved_aside)
{
    off_t size = make_big_store();
    /* Overwrite a page in the middle with garbage: header fine, a b-tree page is not. */
    int fd = open(dbpath, O_WRONLY);
    cr_assert(fd >= 0);
    uint8_t junk[4096];
    memset(junk, 0xA5, sizeof(junk));
    cr_assert_eq(pwrite(fd, junk, sizeof(junk), (size / 2) & ~(off_t)4095), (ssize_t)sizeof(junk));
    close(fd);
    expect_moved_aside("damaged page");
}

Test(store, fresh_store_has_the_current_schema)
{
    mql_store *st = open_default();
    mql_store_close(st);
    cr_assert_eq(raw_int(dbpath, "PRAGMA user_version"), 1);
    cr_assert_eq(raw_int(dbpath, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
    cr_assert_eq(raw_int(dbpath, "SELECT count(*) FROM sqlite_schema WHERE name IN ('sessions',"
                                 " 'subs', 'msgs', 'outq', 'qos2_in', 'retained', 'bridge_queue')"),
                 7);
    cr_assert_eq(raw_int(dbpath, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND"
                                 " sql LIKE '%WITHOUT ROWID%'"),
                 6, "every table but msgs is WITHOUT ROWID");
    /* Reopening does not migrate again. */
    st = open_default();
    mql_store_close(st);
    cr_assert_eq(raw_int(dbpath, "PRAGMA user_version"), 1);
}

Test(store, newer_schema_is_refused_not_moved)
{
    mql_store *st = open_default();
    mql_store_close(st);
    raw_exec(dbpath, "PRAGMA user_version = 99");
    st = NULL;
    mql_store_opts o = {.dir = dir, .commit_window_ms = 5, .sync_full = true};
    cr_assert_eq(mql_store_open(&st, &o, errbuf, sizeof(errbuf)), MQL_E_STORE);
    cr_assert_null(st);
    cr_assert(strstr(errbuf, "schema version 99") != NULL, "%s", errbuf);
    cr_assert(strstr(errbuf, dbpath) != NULL, "%s", errbuf);
    cr_assert_eq(count_files("mqlite.db.corrupt-", NULL, 0), 0);
}

Test(store, second_open_of_the_same_store_is_refused)
{
    mql_store *st = open_default();
    mql_store *st2 = NULL;
    mql_store_opts o = {.dir = dir, .commit_window_ms = 5, .sync_full = true};
    cr_assert_eq(mql_store_open(&st2, &o, errbuf, sizeof(errbuf)), MQL_E_STORE);
    cr_assert_null(st2);
    cr_assert(strstr(errbuf, "in use by another process") != NULL, "%s", errbuf);
    cr_assert_eq(count_files("mqlite.db.corrupt-", NULL, 0), 0, "a locked file is not corrupt");
    put_session(st, "still");
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
}

/* ---- bad locations ---- */

static void expect_open_error(const char *d, const char *want1, const char *want2)
{
    mql_store *st = NULL;
    mql_store_opts o = {.dir = d, .commit_window_ms = 5, .sync_full = true};
    memset(errbuf, 0, sizeof(errbuf));
    cr_assert_eq(mql_store_open(&st, &o, errbuf, sizeof(errbuf)), MQL_E_STORE, "%s", errbuf);
    cr_assert_null(st);
    cr_assert(strstr(errbuf, want1) != NULL, "'%s' lacks '%s'", errbuf, want1);
    cr_assert(strstr(errbuf, want2) != NULL, "'%s' lacks '%s'", errbuf, want2);
}

Test(store, missing_directory_is_an_error)
{
    char d[300];
    snprintf(d, sizeof(d), "%s/does/not/exist", dir);
    expect_open_error(d, d, "No such file or directory");
    char want[400];
    snprintf(want, sizeof(want), "persistence_location %s: No such file or directory", d);
    cr_assert_str_eq(errbuf, want);
}

Test(store, location_that_is_a_file_is_an_error)
{
    char f[300];
    snprintf(f, sizeof(f), "%s/plainfile", dir);
    write_file(f, "x", 1);
    expect_open_error(f, f, "Not a directory");
}

Test(store, unset_location_is_a_config_error)
{
    mql_store *st = NULL;
    mql_store_opts o = {.dir = NULL};
    cr_assert_eq(mql_store_open(&st, &o, errbuf, sizeof(errbuf)), MQL_E_CONFIG);
    cr_assert_null(st);
}

/* Run the read-only checks as an unprivileged user (root ignores permission bits). */
static void drop_root(void)
{
    if (geteuid() != 0)
        return;
    if (setgid(65534) != 0 || setuid(65534) != 0)
        _exit(90);
}

Test(store, read_only_directory_and_file_are_errors)
{
    cr_assert_eq(chmod(dir, 0755), 0);
    char ro[300], rw[300], rwdb[320];
    snprintf(ro, sizeof(ro), "%s/ro", dir);
    snprintf(rw, sizeof(rw), "%s/rw", dir);
    snprintf(rwdb, sizeof(rwdb), "%s/mqlite.db", rw);
    cr_assert_eq(mkdir(ro, 0555), 0);
    cr_assert_eq(chmod(ro, 0555), 0);
    cr_assert_eq(mkdir(rw, 0777), 0);
    cr_assert_eq(chmod(rw, 0777), 0);
    mql_store *st = open_opts(rw, 5, true, 0); /* creates rw/mqlite.db */
    put_session(st, "x");
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    cr_assert_eq(chmod(rwdb, 0444), 0);

    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        drop_root();
        mql_store *c = NULL;
        mql_store_opts o = {.dir = ro, .commit_window_ms = 5, .sync_full = true};
        char e[512] = "";
        if (mql_store_open(&c, &o, e, sizeof(e)) != MQL_E_STORE || c != NULL)
            _exit(10);
        char want[400];
        snprintf(want, sizeof(want), "persistence_location %s: Permission denied", ro);
        if (strcmp(e, want) != 0) {
            fprintf(stderr, "got '%s'\n", e);
            _exit(11);
        }
        o.dir = rw;
        if (mql_store_open(&c, &o, e, sizeof(e)) != MQL_E_STORE || c != NULL)
            _exit(12);
        snprintf(want, sizeof(want), "store file %s: Permission denied", rwdb);
        if (strcmp(e, want) != 0) {
            fprintf(stderr, "got '%s'\n", e);
            _exit(13);
        }
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    cr_assert_eq(count_files("mqlite.db.corrupt-", NULL, 0), 0);
}

/* ---- fault injection ---- */

Test(store, write_errors_fail_the_barrier_and_the_ops_are_retried_in_order)
{
    mql_store *st = open_default();
    put_session(st, "base");
    cr_assert_eq(flush(st), MQL_OK);

    capture_start();
    mql_store_test_fail_writes(st, 1000000);
    put_session(st, "c1");
    put_sub(st, "c1", "a");
    put_msg(st, 1, "a", "during the failure");
    put_out(st, "c1", 1, 1);
    mql_err e1 = flush(st);
    mql_err e2 = flush(st); /* a second attempt fails too: logged once */
    mql_store_stats s = mql_store_get_stats(st);
    mql_store_test_fail_writes(st, 0);
    cr_assert_eq(mql_store_sub_del(st, "c1", "a"), MQL_OK); /* must run after the sub_put */
    put_sub(st, "c1", "b");
    mql_err e3 = flush(st);
    char *log = capture_end();

    cr_assert_eq(e1, MQL_E_STORE);
    cr_assert_eq(e2, MQL_E_STORE);
    cr_assert(s.errors >= 2, "errors %llu", (unsigned long long)s.errors);
    cr_assert_eq(e3, MQL_OK);
    cr_assert_eq(count_substr(log, "[store.commit]"), 1, "logged once per episode:\n%s", log);
    cr_assert_eq(count_substr(log, "[store.recovered]"), 1, "%s", log);
    cr_assert(strstr(log, dbpath) != NULL);
    free(log);
    s = mql_store_get_stats(st);
    mql_store_close(st);

    char *text = reload_text();
    cr_assert_str_eq(text, "msg 1 a [during the failure] props= qos=1 retain=0 exp=0\n"
                           "session base v5 exp=3600 disc=0\n"
                           "session c1 v5 exp=3600 disc=0\n"
                           "sub c1 b qos=1 opt=0 id=0\n"
                           "out c1 #1 msg=1 qos=1 retain=0 state=0 pid=0 sub=0\n");
    free(text);
}

Test(store, a_single_failed_write_recovers)
{
    mql_store *st = open_default();
    for (int round = 0; round < 20; round++) {
        char cid[16];
        snprintf(cid, sizeof(cid), "c%02d", round);
        mql_store_test_fail_writes(st, 1);
        put_session(st, cid);
        mql_err e = flush(st);
        cr_assert(e == MQL_E_STORE || e == MQL_OK);
        cr_assert_eq(flush(st), MQL_OK, "round %d", round);
    }
    mql_store_close(st);
    st = open_default();
    struct rec r;
    load(st, &r, NULL);
    cr_assert_eq(r.rows[1], 20, "%s", r.buf);
    free(r.buf);
    mql_store_close(st);
}

static void record_cb(void *arg, mql_err err)
{
    *(mql_err *)arg = err;
}

Test(store, close_gives_up_on_a_store_that_cannot_write)
{
    mql_store *st = open_default();
    put_session(st, "kept");
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_test_fail_writes(st, 1000000);
    put_session(st, "lost");
    mql_err first = MQL_OK, second = MQL_OK;
    cr_assert_eq(mql_store_barrier(st, record_cb, &first), MQL_OK);
    put_session(st, "lost2");
    cr_assert_eq(mql_store_barrier(st, record_cb, &second), MQL_OK);
    capture_start();
    mql_store_close(st); /* must return: a few attempts, then the ops are reported lost */
    char *log = capture_end();
    cr_assert_eq(first, MQL_E_STORE);
    cr_assert_eq(second, MQL_E_STORE);
    cr_assert(strstr(log, "[store.lost]") != NULL, "%s", log);
    free(log);
    char *text = reload_text();
    cr_assert_str_eq(text, "session kept v5 exp=3600 disc=0\n");
    free(text);
}

Test(store, close_retries_a_transient_failure)
{
    mql_store *st = open_default();
    mql_store_test_fail_writes(st, 2); /* the first two attempts fail, at close */
    put_session(st, "survivor");
    put_msg(st, 1, "t", "body");
    put_out(st, "survivor", 1, 1);
    capture_start();
    mql_store_close(st);
    char *log = capture_end();
    cr_assert(strstr(log, "[store.lost]") == NULL, "%s", log);
    free(log);
    char *text = reload_text();
    cr_assert_str_eq(text, "msg 1 t [body] props= qos=1 retain=0 exp=0\n"
                           "session survivor v5 exp=3600 disc=0\n"
                           "out survivor #1 msg=1 qos=1 retain=0 state=0 pid=0 sub=0\n");
    free(text);
}

/* ---- counters and budget ---- */

static void some_ops(mql_store *st, uint64_t base, int n)
{
    for (int i = 0; i < n; i++) {
        put_msg(st, base + (uint64_t)i, "c/t", "payload");
        put_out(st, "c", base + (uint64_t)i, base + (uint64_t)i);
    }
}

Test(store, counters_move_with_sync_full)
{
    mql_store *st = open_default();
    mql_store_stats a = mql_store_get_stats(st);
    for (int i = 0; i < 10; i++) {
        some_ops(st, 1 + 10 * (uint64_t)i, 10);
        cr_assert_eq(flush(st), MQL_OK);
    }
    mql_store_stats b = mql_store_get_stats(st);
    cr_assert_eq(b.transactions - a.transactions, 10);
    cr_assert_eq(b.ops - a.ops, 200);
    cr_assert(b.fsyncs - a.fsyncs >= 10, "fsyncs %llu", (unsigned long long)(b.fsyncs - a.fsyncs));
    /* each commit writes at least one 1 KiB page (a new store's page size) */
    cr_assert(b.bytes_written - a.bytes_written >= 10 * 1024);
    cr_assert(b.file_bytes > 0);
    cr_assert(b.live_bytes > 0);
    cr_assert_eq(b.errors, 0);
    cr_assert(!b.full);
    mql_store_close(st);
}

Test(store, sync_normal_does_not_fsync_per_commit)
{
    mql_store *st = open_opts(dir, 5, false, 0);
    mql_store_stats a = mql_store_get_stats(st);
    for (int i = 0; i < 10; i++) {
        some_ops(st, 1 + 10 * (uint64_t)i, 10);
        cr_assert_eq(flush(st), MQL_OK);
    }
    mql_store_stats b = mql_store_get_stats(st);
    cr_assert_eq(b.transactions - a.transactions, 10);
    cr_assert(b.fsyncs - a.fsyncs < 10, "fsyncs %llu", (unsigned long long)(b.fsyncs - a.fsyncs));
    cr_assert(b.bytes_written > a.bytes_written);
    mql_store_close(st);
}

Test(store, full_follows_live_data_not_file_size)
{
    const uint64_t max = 256 * 1024;
    mql_store *st = open_opts(dir, 5, true, max);
    cr_assert(!mql_store_get_stats(st).full);
    static char big[8192];
    memset(big, 'b', sizeof(big) - 1);
    for (uint64_t i = 1; i <= 64; i++) {
        put_msg(st, i, "big", big);
        put_out(st, "c", i, i);
    }
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_stats s = mql_store_get_stats(st);
    cr_assert(s.full, "live %llu", (unsigned long long)s.live_bytes);
    cr_assert(s.live_bytes >= max);
    for (uint64_t i = 1; i <= 64; i++)
        cr_assert_eq(mql_store_out_del(st, "c", i), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    s = mql_store_get_stats(st);
    cr_assert(!s.full, "live %llu", (unsigned long long)s.live_bytes);
    cr_assert(s.live_bytes < max / 2);
    mql_store_close(st);
    struct stat sb;
    cr_assert_eq(stat(dbpath, &sb), 0);
    cr_assert((uint64_t)sb.st_size >= max, "the file keeps its size (%lld)", (long long)sb.st_size);
}

/* ---- throughput ---- */

#define TP_PAIRS 200000
#define TP_CLIENTS 10
#define TP_PER_BARRIER 20

struct tp {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int acks, errors;
};

static void tp_cb(void *arg, mql_err err)
{
    struct tp *t = arg;
    pthread_mutex_lock(&t->mu);
    t->acks++;
    t->errors += err != MQL_OK;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static mql_err ld_count(void *arg, const mql_store_out *o)
{
    (void)o;
    ++*(long *)arg;
    return MQL_OK;
}

Test(store, throughput_group_commit_sync_full)
{
    mql_store *st = open_opts(dir, 20, true, 0);
    struct tp t = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    static const char *clients[TP_CLIENTS] = {"gw-0", "gw-1", "gw-2", "gw-3", "gw-4",
                                              "gw-5", "gw-6", "gw-7", "gw-8", "gw-9"};
    char payload[100];
    memset(payload, 'v', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    mql_store_stats a = mql_store_get_stats(st);
    double t0 = now_s();
    int barriers = 0;
    for (uint64_t i = 1; i <= TP_PAIRS; i++) {
        put_msg(st, i, "sensors/gw/temperature", payload);
        put_out(st, clients[i % TP_CLIENTS], i, i);
        if (i % TP_PER_BARRIER == 0) {
            cr_assert_eq(mql_store_barrier(st, tp_cb, &t), MQL_OK);
            barriers++;
        }
    }
    double t_queued = now_s();
    pthread_mutex_lock(&t.mu);
    while (t.acks < barriers)
        pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    double t1 = now_s();
    mql_store_stats b = mql_store_get_stats(st);
    cr_assert_eq(t.errors, 0);
    cr_assert_eq(b.ops - a.ops, 2 * TP_PAIRS);

    /* Delivery: every message acknowledged by its subscriber (out_del + body delete). */
    double d0 = now_s();
    for (uint64_t i = 1; i <= TP_PAIRS; i++)
        cr_assert_eq(mql_store_out_del(st, clients[i % TP_CLIENTS], i), MQL_OK);
    cr_assert_eq(flush(st), MQL_OK);
    double d1 = now_s();
    mql_store_stats c = mql_store_get_stats(st);

    uint64_t tx = b.transactions - a.transactions;
    printf("store throughput (sync_full, 20 ms window, %d-byte payload): %d msg_put+out_put pairs "
           "in %.3f s = %.0f pairs/s (queued in %.3f s)\n",
           (int)sizeof(payload) - 1, TP_PAIRS, t1 - t0, TP_PAIRS / (t1 - t0), t_queued - t0);
    printf("  %llu transactions (%.0f ops each), %.2f fsyncs/transaction, %.1f bytes written "
           "per message, file %llu bytes\n",
           (unsigned long long)tx, (double)(b.ops - a.ops) / (double)tx,
           (double)(b.fsyncs - a.fsyncs) / (double)tx,
           (double)(b.bytes_written - a.bytes_written) / TP_PAIRS,
           (unsigned long long)b.file_bytes);
    printf("  delivery: %d out_del in %.3f s = %.0f/s, %.1f bytes written per message, "
           "%llu transactions\n",
           TP_PAIRS, d1 - d0, TP_PAIRS / (d1 - d0),
           (double)(c.bytes_written - b.bytes_written) / TP_PAIRS,
           (unsigned long long)(c.transactions - b.transactions));
    fflush(stdout);
    mql_store_close(st);

    /* Correctness: everything delivered is gone, bodies included. */
    cr_assert_eq(msgs_rows(), 0);
    st = open_default();
    long n = 0;
    mql_store_loader ld = {.arg = &n, .out = ld_count};
    uint64_t m;
    cr_assert_eq(mql_store_load(st, &ld, &m), MQL_OK);
    cr_assert_eq(n, 0);
    mql_store_close(st);
}

/* A steady, realistic rate (5000 pairs/s, a barrier per 5 pairs as if 5 publishers were
 * waiting for PUBACK) shows what flash sees per message once group commit has less to group. */
Test(store, paced_load_bytes_per_message)
{
    mql_store *st = open_opts(dir, 20, true, 0);
    struct tp t = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    char payload[100];
    memset(payload, 'v', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    mql_store_stats a = mql_store_get_stats(st);
    double t0 = now_s();
    int barriers = 0;
    const int pairs = 5000;
    for (int i = 1; i <= pairs; i++) {
        put_msg(st, (uint64_t)i, "sensors/gw/temperature", payload);
        put_out(st, "gw", (uint64_t)i, (uint64_t)i);
        if (i % 5 == 0) {
            cr_assert_eq(mql_store_barrier(st, tp_cb, &t), MQL_OK);
            barriers++;
            double due = t0 + i / 5000.0;
            double now = now_s();
            if (due > now)
                usleep((useconds_t)((due - now) * 1e6));
        }
    }
    pthread_mutex_lock(&t.mu);
    while (t.acks < barriers)
        pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    mql_store_stats b = mql_store_get_stats(st);
    cr_assert_eq(t.errors, 0);
    uint64_t tx = b.transactions - a.transactions;
    cr_assert(tx >= 1);
    printf("store paced load (5000 pairs/s, 20 ms window, sync_full): %llu transactions "
           "(%.0f pairs each), %.2f fsyncs/transaction, %.1f bytes written per message\n",
           (unsigned long long)tx, (double)pairs / (double)tx,
           (double)(b.fsyncs - a.fsyncs) / (double)tx,
           (double)(b.bytes_written - a.bytes_written) / pairs);
    fflush(stdout);
    mql_store_close(st);
}

Test(store, throughput_rows_survive_reopen)
{
    mql_store *st = open_opts(dir, 20, true, 0);
    for (uint64_t i = 1; i <= 50000; i++) {
        put_msg(st, i, "t", "x");
        put_out(st, i % 2 ? "a" : "b", i, i);
    }
    mql_store_close(st);
    st = open_default();
    long n = 0;
    mql_store_loader ld = {.arg = &n, .out = ld_count};
    uint64_t m = 0;
    cr_assert_eq(mql_store_load(st, &ld, &m), MQL_OK);
    cr_assert_eq(n, 50000);
    cr_assert_eq(m, 50000);
    mql_store_close(st);
}

/* ---- page size ---- */

/* The page size in a store file's header (bytes 16-17, big-endian). */
static unsigned file_page_size(const char *path)
{
    uint8_t h[18];
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fread(h, 1, sizeof(h), f), sizeof(h));
    fclose(f);
    return (unsigned)h[16] << 8 | h[17];
}

/* New stores use 1 KiB pages (fewer bytes per commit); a store made with SQLite's default
 * 4 KiB pages keeps them and works as before. */
Test(store, new_store_small_pages_old_store_kept)
{
    mql_store *st = open_default();
    some_ops(st, 1, 5);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    cr_assert_eq(file_page_size(dbpath), 1024);

    rm_rf(dbpath);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "PRAGMA page_size = 4096; VACUUM;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    st = open_default();
    some_ops(st, 100, 5);
    cr_assert_eq(flush(st), MQL_OK);
    mql_store_close(st);
    cr_assert_eq(file_page_size(dbpath), 4096);
}

/* ---- fault injection through MQLITE_TEST_STORE_FAULTS (storage/store_vfs.c) ----
 * The mechanism the integration tests use on the real binary: a control file names the
 * fault. Each Criterion test is its own process, so setting the variable here reaches
 * only this test's store. */

static char faultfile[320];

static void fault_enable(void)
{
    snprintf(faultfile, sizeof(faultfile), "%s/fault", dir);
    cr_assert_eq(setenv("MQLITE_TEST_STORE_FAULTS", faultfile, 1), 0);
}

/* Replace the control file atomically: the store may read it at any moment. */
static void fault_set(const char *word)
{
    char tmp[340];
    snprintf(tmp, sizeof(tmp), "%s.tmp", faultfile);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(word, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, faultfile), 0);
}

/* One fault episode: the barrier reports want, the episode is logged once with the store
 * file and the SQLite error text, and once the fault is off the failed operations are
 * committed in order and the recovery is logged. */
static void fault_episode(const char *word, mql_err want, const char *want_text)
{
    fault_enable();
    mql_store *st = open_default();
    put_session(st, "before");
    cr_assert_eq(flush(st), MQL_OK);

    capture_start();
    fault_set(word);
    put_session(st, "during");
    put_msg(st, 1, "f/t", "queued while failing");
    put_out(st, "during", 1, 1);
    mql_err e1 = flush(st);
    mql_err e2 = flush(st);
    mql_store_stats s = mql_store_get_stats(st);
    fault_set("off");
    put_sub(st, "during", "after");
    mql_err e3 = flush(st);
    mql_store_stats s2 = mql_store_get_stats(st);
    char *log = capture_end();

    cr_assert_eq(e1, want, "%s: first barrier %d, want %d", word, e1, want);
    cr_assert_eq(e2, want, "%s: second barrier %d", word, e2);
    cr_assert(s.failing && s.errors >= 2, "%s: failing %d errors %llu", word, s.failing,
              (unsigned long long)s.errors);
    cr_assert_eq(e3, MQL_OK, "%s: after the fault cleared", word);
    cr_assert(!s2.failing);
    cr_assert_eq(count_substr(log, "[store.commit]"), 1, "logged once per episode:\n%s", log);
    cr_assert_eq(count_substr(log, "[store.recovered]"), 1, "%s", log);
    cr_assert(strstr(log, dbpath) != NULL, "%s", log);
    cr_assert(strstr(log, want_text) != NULL, "%s: want \"%s\" in:\n%s", word, want_text, log);
    free(log);
    mql_store_close(st);

    char *text = reload_text();
    cr_assert_str_eq(text, "msg 1 f/t [queued while failing] props= qos=1 retain=0 exp=0\n"
                           "session before v5 exp=3600 disc=0\n"
                           "session during v5 exp=3600 disc=0\n"
                           "sub during after qos=1 opt=0 id=0\n"
                           "out during #1 msg=1 qos=1 retain=0 state=0 pid=0 sub=0\n");
    free(text);
}

Test(store, fault_disk_full_is_quota_and_recovers)
{
    fault_episode("full", MQL_E_QUOTA, "database or disk is full");
}

Test(store, fault_read_only_is_a_store_error_and_recovers)
{
    fault_episode("readonly", MQL_E_STORE, "disk I/O error");
}

Test(store, fault_fsync_error_is_a_store_error_and_recovers)
{
    fault_episode("ioerr", MQL_E_STORE, "disk I/O error");
}

Test(store, fault_busy_is_a_store_error_and_recovers)
{
    fault_episode("busy", MQL_E_STORE, "database is locked");
}

/* A store that cannot be written at start is a startup error naming the file, not a store
 * that silently drops everything. */
Test(store, fault_at_open_is_a_clear_error)
{
    fault_enable();
    fault_set("readonly");
    mql_store *st = NULL;
    mql_store_opts o = {.dir = dir, .commit_window_ms = 5, .sync_full = true};
    mql_err err = mql_store_open(&st, &o, errbuf, sizeof(errbuf));
    cr_assert_eq(err, MQL_E_STORE, "open: %d %s", err, errbuf);
    cr_assert_null(st);
    cr_assert(strstr(errbuf, dbpath) != NULL, "%s", errbuf);
    cr_assert(strstr(errbuf, "disk I/O error") != NULL, "%s", errbuf);
}

/* An unknown word in the control file is reported, and injects nothing. */
Test(store, fault_unknown_word_is_logged_and_ignored)
{
    fault_enable();
    mql_store *st = open_default();
    capture_start();
    fault_set("ful");
    put_session(st, "x");
    mql_err e = flush(st);
    char *log = capture_end();
    cr_assert_eq(e, MQL_OK);
    cr_assert(strstr(log, "unknown fault \"ful\"") != NULL, "%s", log);
    free(log);
    mql_store_close(st);
}
