/*
 * store.c - the persistent store of storage/store.h on SQLite, sized for flash: its public
 * functions, the operation queue, and the store's life (open, start the store thread,
 * close).
 *
 * Purpose: keep sessions, subscriptions, queued/in-flight messages, inbound QoS 2 ids and
 * retained messages in one SQLite file (DIR/mqlite.db) on eMMC/SD flash so that nothing the
 * broker acknowledged is lost on kill -9 or power loss, while flash sees few, large writes.
 *
 * Threading. Producers (any broker thread) turn each change into one heap-allocated op
 * (mql_store_op: the struct plus copies of its strings and bytes, one malloc) and append
 * it to a FIFO under `mu`; they never touch SQLite and never block on disk. One store
 * thread (store_commit.c) takes the queue in batches and commits each batch in one
 * transaction, then calls its barriers' callbacks. `mu` is never held while SQL runs or a
 * callback is called. The connection is used by the store thread and, before the broker
 * starts, by mql_store_load() on the caller's thread; `db_mu` serialises the two (it is
 * uncontended in practice). Lock order: mu is never taken while holding db_mu, nor the
 * other way round. Performance: queueing is one malloc, a copy and a short critical
 * section; the store thread is woken only when the queue becomes non-empty or a full batch
 * is waiting.
 *
 * Counters. bytes_written and fsyncs are counted exactly by the store's shim VFS, which
 * also fails writes and syncs on demand for fault-injection tests (store_vfs.c).
 * file_bytes is the size of the database plus the WAL file; `full` compares the bytes of
 * pages in use (page_count - freelist_count, kept after each commit in live_bytes) with
 * max_bytes, because SQLite reuses freed pages rather than shrinking the file: after the
 * broker drops messages the store stops being full although the file keeps its size.
 *
 * Open. mql_store_open allocates the store, has store_open.c open (or recover) the file,
 * then starts the store thread. The rest of storage/ is in layers below this file (see
 * store_int.h).
 */
#include "storage/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "platform/log.h"
#include "storage/store_int.h"

#define STORE_FILE "mqlite.db"
#define HOLD_MAX_BYTES (8u * 1024 * 1024) /* see mql_store_stats.overloaded */
#define HOLD_MIN_BYTES (256u * 1024)

/* ---- queued operations ---- */

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static void store_free(mql_store *st)
{
    mql_store_close_db(st);
    mql_store_vfs_unregister(&st->vfs);
    free(st->gc);
    free(st->path);
    free(st->wal_path);
    free(st);
}

/* A store with its settings and file names from opts, not opened yet. */
static mql_err store_alloc(mql_store **out, const mql_store_opts *opts)
{
    mql_store *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return MQL_E_NOMEM;
    st->window_ms = opts->commit_window_ms;
    st->sync_full = opts->sync_full;
    st->max_bytes = opts->max_bytes;
    /* a quarter of a small store_max_bytes: what cannot be committed should not outgrow
     * what the store may hold on flash (HOLD_MIN_BYTES .. HOLD_MAX_BYTES) */
    st->hold_max = HOLD_MAX_BYTES;
    if (opts->max_bytes > 0 && opts->max_bytes / 4 < st->hold_max)
        st->hold_max = opts->max_bytes / 4 < HOLD_MIN_BYTES ? HOLD_MIN_BYTES : opts->max_bytes / 4;
    st->head = NULL;
    st->tailp = &st->head;
    size_t dl = strlen(opts->dir);
    while (dl > 1 && opts->dir[dl - 1] == '/')
        dl--;
    st->path = malloc(dl + sizeof("/" STORE_FILE));
    st->wal_path = malloc(dl + sizeof("/" STORE_FILE "-wal"));
    if (st->path == NULL || st->wal_path == NULL) {
        store_free(st);
        return MQL_E_NOMEM;
    }
    snprintf(st->path, dl + sizeof("/" STORE_FILE), "%.*s/%s", (int)dl, opts->dir, STORE_FILE);
    snprintf(st->wal_path, dl + sizeof("/" STORE_FILE "-wal"), "%s-wal", st->path);
    if (st->path[0] == '/' && st->path[1] == '/')
        memmove(st->path, st->path + 1, strlen(st->path)); /* dir "/" */
    *out = st;
    return MQL_OK;
}

/* The locks, the condition variable (on CLOCK_MONOTONIC) and the store thread. On an
 * error nothing of them is left. */
static mql_err start_thread(mql_store *st, char *errbuf, size_t errlen)
{
    bool db_mu = false, mu = false, cv = false;
    pthread_condattr_t ca;
    if (pthread_mutex_init(&st->db_mu, NULL) != 0)
        goto fail;
    db_mu = true;
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        goto fail;
    mu = true;
    if (pthread_condattr_init(&ca) != 0)
        goto fail;
    int e = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (e == 0)
        e = pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (e != 0)
        goto fail;
    cv = true;
    if (pthread_create(&st->thread, NULL, mql_store_commit_thread, st) != 0)
        goto fail;
    st->thread_started = true;
    return MQL_OK;

fail:
    if (cv)
        pthread_cond_destroy(&st->cv);
    if (mu)
        pthread_mutex_destroy(&st->mu);
    if (db_mu)
        pthread_mutex_destroy(&st->db_mu);
    mql_store_seterr(errbuf, errlen, "store: cannot start the store thread");
    return MQL_E_STORE;
}

mql_err mql_store_open(mql_store **out, const mql_store_opts *opts, char *errbuf, size_t errlen)
{
    *out = NULL;
    mql_store *st = NULL;
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0') {
        mql_store_seterr(errbuf, errlen, "persistence_location is not set");
        return MQL_E_CONFIG;
    }
    mql_err err = store_alloc(&st, opts);
    if (err != MQL_OK)
        return err;
    if ((err = mql_store_open_db(st, opts->dir, errbuf, errlen)) != MQL_OK ||
        (err = start_thread(st, errbuf, errlen)) != MQL_OK)
        goto fail;
    *out = st;
    return MQL_OK;

fail:
    store_free(st);
    return err;
}

void mql_store_close(mql_store *st)
{
    if (st == NULL)
        return;
    pthread_mutex_lock(&st->mu);
    st->stopping = true;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    int e = pthread_join(st->thread, NULL);
    if (e != 0)
        mql_error("store.close", "store %s: cannot join the store thread: %s", st->path,
                  strerror(e));
    /* The queue is empty: the thread exits only then. */
    mql_store_commit_checkpoint(st, SQLITE_CHECKPOINT_TRUNCATE);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->db_mu);
    store_free(st);
}

/* ---- queueing ---- */

/* Allocate an op with `extra` bytes of data. */
static mql_store_op *op_new(enum mql_store_op_kind kind, size_t extra)
{
    mql_store_op *op = malloc(sizeof(*op) + extra);
    if (op == NULL)
        return NULL;
    op->next = NULL;
    op->kind = kind;
    op->bytes = sizeof(*op) + extra;
    return op;
}

/* Copy n bytes to *p (NUL-terminated), advance *p, return the copy. */
static const char *copy(char **p, const void *src, size_t n)
{
    char *dst = *p;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
    *p += n + 1;
    return dst;
}

static mql_err enqueue(mql_store *st, mql_store_op *op)
{
    pthread_mutex_lock(&st->mu);
    bool was_empty = st->head == NULL;
    if (was_empty)
        clock_gettime(CLOCK_MONOTONIC, &st->since);
    *st->tailp = op;
    st->tailp = &op->next;
    st->q_ops++;
    st->q_bytes += op->bytes;
    if (was_empty || st->q_ops == MQL_STORE_BATCH_MAX_OPS)
        pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return MQL_OK;
}

mql_err mql_store_msg_put(mql_store *st, const mql_store_msg *m)
{
    if (m->payload_len > INT32_MAX || m->props_len > INT32_MAX || m->topic_len > INT32_MAX)
        return MQL_E_TOO_LARGE;
    if ((m->topic == NULL && m->topic_len > 0) || (m->payload == NULL && m->payload_len > 0) ||
        (m->props == NULL && m->props_len > 0))
        return MQL_E_INTERNAL;
    mql_store_op *op =
        op_new(MQL_STORE_OP_MSG_PUT, (size_t)m->topic_len + m->payload_len + m->props_len + 3);
    if (op == NULL)
        return MQL_E_NOMEM;
    char *p = op->data;
    op->u.msg = *m;
    op->u.msg.topic = copy(&p, m->topic, m->topic_len);
    op->u.msg.payload = (const uint8_t *)copy(&p, m->payload, m->payload_len);
    op->u.msg.props = (const uint8_t *)copy(&p, m->props, m->props_len);
    return enqueue(st, op);
}

mql_err mql_store_session_put(mql_store *st, const mql_store_session *s)
{
    if (s->client_id == NULL)
        return MQL_E_INTERNAL;
    size_t n = strlen(s->client_id);
    mql_store_op *op = op_new(MQL_STORE_OP_SESSION_PUT, n + 1);
    if (op == NULL)
        return MQL_E_NOMEM;
    char *p = op->data;
    op->u.session = *s;
    op->u.session.client_id = copy(&p, s->client_id, n);
    return enqueue(st, op);
}

mql_err mql_store_session_del(mql_store *st, const char *client_id)
{
    if (client_id == NULL)
        return MQL_E_INTERNAL;
    size_t n = strlen(client_id);
    mql_store_op *op = op_new(MQL_STORE_OP_SESSION_DEL, n + 1);
    if (op == NULL)
        return MQL_E_NOMEM;
    char *p = op->data;
    memset(&op->u.session, 0, sizeof(op->u.session));
    op->u.session.client_id = copy(&p, client_id, n);
    return enqueue(st, op);
}

static mql_err sub_op(mql_store *st, enum mql_store_op_kind kind, const mql_store_sub *s)
{
    if (s->client_id == NULL || s->filter == NULL)
        return MQL_E_INTERNAL;
    size_t a = strlen(s->client_id), b = strlen(s->filter);
    mql_store_op *op = op_new(kind, a + b + 2);
    if (op == NULL)
        return MQL_E_NOMEM;
    char *p = op->data;
    op->u.sub = *s;
    op->u.sub.client_id = copy(&p, s->client_id, a);
    op->u.sub.filter = copy(&p, s->filter, b);
    return enqueue(st, op);
}

mql_err mql_store_sub_put(mql_store *st, const mql_store_sub *s)
{
    return sub_op(st, MQL_STORE_OP_SUB_PUT, s);
}

mql_err mql_store_sub_del(mql_store *st, const char *client_id, const char *filter)
{
    mql_store_sub s = {.client_id = client_id, .filter = filter};
    return sub_op(st, MQL_STORE_OP_SUB_DEL, &s);
}

static mql_err out_op(mql_store *st, enum mql_store_op_kind kind, const mql_store_out *o)
{
    if (o->client_id == NULL)
        return MQL_E_INTERNAL;
    size_t n = strlen(o->client_id);
    mql_store_op *op = op_new(kind, n + 1);
    if (op == NULL)
        return MQL_E_NOMEM;
    char *p = op->data;
    op->u.out = *o;
    op->u.out.client_id = copy(&p, o->client_id, n);
    return enqueue(st, op);
}

mql_err mql_store_out_put(mql_store *st, const mql_store_out *o)
{
    return out_op(st, MQL_STORE_OP_OUT_PUT, o);
}

mql_err mql_store_out_update(mql_store *st, const char *client_id, uint64_t seq, uint8_t state,
                             uint16_t packet_id)
{
    mql_store_out o = {.client_id = client_id, .seq = seq, .state = state, .packet_id = packet_id};
    return out_op(st, MQL_STORE_OP_OUT_UPDATE, &o);
}

mql_err mql_store_out_del(mql_store *st, const char *client_id, uint64_t seq)
{
    mql_store_out o = {.client_id = client_id, .seq = seq};
    return out_op(st, MQL_STORE_OP_OUT_DEL, &o);
}

mql_err mql_store_qos2_put(mql_store *st, const char *client_id, uint16_t pid)
{
    mql_store_out o = {.client_id = client_id, .packet_id = pid};
    return out_op(st, MQL_STORE_OP_QOS2_PUT, &o);
}

mql_err mql_store_qos2_del(mql_store *st, const char *client_id, uint16_t pid)
{
    mql_store_out o = {.client_id = client_id, .packet_id = pid};
    return out_op(st, MQL_STORE_OP_QOS2_DEL, &o);
}

static mql_err retain_op(mql_store *st, enum mql_store_op_kind kind, const char *topic,
                         uint32_t topic_len, uint64_t msg_id)
{
    if (topic == NULL || topic_len > INT32_MAX)
        return MQL_E_INTERNAL;
    mql_store_op *op = op_new(kind, (size_t)topic_len + 1);
    if (op == NULL)
        return MQL_E_NOMEM;
    char *p = op->data;
    op->u.retain.topic = copy(&p, topic, topic_len);
    op->u.retain.topic_len = topic_len;
    op->u.retain.msg_id = msg_id;
    return enqueue(st, op);
}

mql_err mql_store_retain_put(mql_store *st, const char *topic, uint32_t topic_len, uint64_t msg_id)
{
    return retain_op(st, MQL_STORE_OP_RETAIN_PUT, topic, topic_len, msg_id);
}

mql_err mql_store_retain_del(mql_store *st, const char *topic, uint32_t topic_len)
{
    return retain_op(st, MQL_STORE_OP_RETAIN_DEL, topic, topic_len, 0);
}

mql_err mql_store_barrier(mql_store *st, mql_store_done_fn cb, void *arg)
{
    if (cb == NULL)
        return MQL_E_INTERNAL;
    mql_store_op *op = op_new(MQL_STORE_OP_BARRIER, 0);
    if (op == NULL)
        return MQL_E_NOMEM;
    op->u.barrier.cb = cb;
    op->u.barrier.arg = arg;
    return enqueue(st, op);
}

/* ---- counters ---- */

mql_store_stats mql_store_get_stats(mql_store *st)
{
    mql_store_stats s = {
        .transactions = get(&st->transactions),
        .ops = get(&st->ops),
        .bytes_written = get(&st->vfs.bytes_written),
        .fsyncs = get(&st->vfs.fsyncs),
        .file_bytes = file_size(st->path) + file_size(st->wal_path),
        .errors = get(&st->errors),
        .live_bytes = get(&st->live_bytes),
        .failing = atomic_load(&st->failing_now),
    };
    s.full = st->max_bytes > 0 && s.live_bytes >= st->max_bytes;
    pthread_mutex_lock(&st->mu);
    s.held_bytes = st->q_bytes + st->q_ops * sizeof(mql_store_op);
    pthread_mutex_unlock(&st->mu);
    s.held_bytes += atomic_load(&st->retry_held);
    s.overloaded = s.failing && s.held_bytes > st->hold_max;
    return s;
}

void mql_store_test_fail_writes(mql_store *st, int n)
{
    atomic_store(&st->vfs.fail_writes, n < 0 ? 0 : n);
}
