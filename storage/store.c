/*
 * store.c - the persistent store of storage/store.h on SQLite, sized for flash.
 *
 * Purpose: keep sessions, subscriptions, queued/in-flight messages, inbound QoS 2 ids and
 * retained messages in one SQLite file (DIR/mqlite.db) on eMMC/SD flash so that nothing the
 * broker acknowledged is lost on kill -9 or power loss, while flash sees few, large writes.
 *
 * Threading. Producers (any broker thread) turn each change into one heap-allocated `op`
 * (the struct plus copies of its strings and bytes, one malloc) and append it to a FIFO
 * under `mu`; they never touch SQLite and never block on disk. One store thread waits for
 * work, then keeps collecting for up to commit_window_ms (group commit), takes the queue
 * (at most BATCH_MAX_OPS / BATCH_MAX_BYTES at once, so one transaction and the WAL stay
 * bounded under overload), and executes it with statements prepared once at open inside
 * ONE transaction. After COMMIT returns it runs the barrier callbacks of that batch in
 * queue order. `mu` is never held while SQL runs or a callback is called. The connection
 * is used by the store thread and, before the broker starts, by mql_store_load() on the
 * caller's thread; `db_mu` serialises the two (it is uncontended in practice).
 *
 * Durability argument. The database is in WAL mode with synchronous=FULL: COMMIT returns
 * only after the WAL frames of the transaction, including its commit frame, were written
 * and fsync()ed (the unix VFS also fsyncs the directory when it creates the WAL). A barrier
 * callback is called with MQL_OK only after the COMMIT of the batch holding it returned
 * SQLITE_OK, and every operation queued before the barrier is in that batch or an earlier
 * one (FIFO, batches run in order). A failed batch is rolled back, its barriers get
 * MQL_E_STORE, and its data operations are kept and executed again, in order, at the head
 * of the next batch (every op is an idempotent upsert or delete). So MQL_OK from a barrier
 * means every op queued before it is on disk, even when an earlier batch failed. With
 * store_sync off (synchronous=NORMAL) COMMIT writes the WAL but does not fsync it: a
 * committed transaction survives kill -9 (it is in the kernel's page cache) but the last
 * ones may be lost on power loss; the WAL is fsynced at checkpoints.
 *
 * Failures. A failed attempt is counted (errors), logged once per episode (store.commit,
 * then store.recovered at the next good commit), and retried after a backoff of 50 ms
 * doubling to 2 s; new ops join the retried ones. While the store cannot write, the
 * retried ops stay in memory: the broker sees MQL_E_STORE on every barrier and stops
 * acknowledging, and once what is held passes hold_max (mql_store_stats.overloaded) it
 * stops taking on new work that needs the store, which bounds them. At close the store
 * keeps trying for CLOSE_ATTEMPTS more attempts (about 0.75 s), then logs store.lost with
 * the number of ops dropped; from then on no barrier reports MQL_OK.
 *
 * Flash. Group commit turns N small changes into one WAL append and one fsync. WAL writes
 * are sequential. Automatic checkpoints are replaced by our own (store_open.c installs a
 * wal hook in place of wal_autocheckpoint): once the WAL holds ckpt_pages (1024 pages =
 * 4 MiB, less with a small store_max_bytes) a PASSIVE checkpoint runs, after the batch's
 * callbacks (acknowledgements are not delayed by it). A checkpoint copies each changed page
 * into the database once however many commits changed it, so hot pages (the tail of outq,
 * the msgs b-tree) are written to the database file once per ~4 MiB of WAL instead of once
 * per commit.
 *
 * Message bodies are shared by the rows that name them and deleted, in the transaction
 * that unlinks them, once nothing refers to them (store_schema.c).
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
#define BATCH_MAX_OPS 8192u                /* ops taken into one transaction at most */
#define BATCH_MAX_BYTES (4u * 1024 * 1024) /* bytes of copied data in one transaction */
#define BACKOFF_MIN_MS 50                  /* wait before retrying a failed batch, doubling */
#define HOLD_MAX_BYTES (8u * 1024 * 1024)  /* see mql_store_stats.overloaded */
#define HOLD_MIN_BYTES (256u * 1024)
#define BACKOFF_MAX_MS 2000
#define CLOSE_ATTEMPTS 5 /* failed attempts after close began before giving up (~0.75 s) */

/* ---- queued operations ---- */

static const char *const op_names[] = {
    "msg_put", "session_put", "session_del", "sub_put",    "sub_del",    "out_put", "out_update",
    "out_del", "qos2_put",    "qos2_del",    "retain_put", "retain_del", "barrier",
};

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- small helpers ---- */

static struct timespec now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static struct timespec ts_add_ms(struct timespec ts, uint32_t ms)
{
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static bool ts_reached(struct timespec deadline)
{
    struct timespec n = now_mono();
    return n.tv_sec > deadline.tv_sec ||
           (n.tv_sec == deadline.tv_sec && n.tv_nsec >= deadline.tv_nsec);
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* ---- running a batch (store thread) ---- */

static void free_ops(mql_store_op *list)
{
    while (list != NULL) {
        mql_store_op *next = list->next;
        free(list);
        list = next;
    }
}

static void checkpoint(mql_store *st, int mode)
{
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(st->db, NULL, mode, &log, &done);
    if (rc != SQLITE_OK) {
        mql_warning("store.checkpoint", "store %s: checkpoint failed: %s (%s)", st->path,
                    sqlite3_errstr(rc), sqlite3_errmsg(st->db));
        return;
    }
    if (done >= log)
        st->wal_frames = 0; /* the next commit starts the WAL over */
}

/* Execute the data ops of list in one transaction and commit it (db_mu held). Returns
 * SQLITE_OK, or the error with *failed_op naming the step that failed; the transaction
 * may still be open then. */
static int execute_batch(mql_store *st, const mql_store_op *list, const char **failed_op)
{
    int rc = mql_store_schema_begin(st);
    if (rc != SQLITE_OK) {
        *failed_op = "begin";
        return rc;
    }
    for (const mql_store_op *op = list; op != NULL; op = op->next) {
        if ((rc = mql_store_schema_exec(st, op)) != SQLITE_OK) {
            *failed_op = op_names[op->kind];
            return rc;
        }
    }
    if ((rc = mql_store_schema_gc(st)) != SQLITE_OK) {
        *failed_op = "delete of unreferenced messages";
        return rc;
    }
    *failed_op = "commit";
    return mql_store_schema_commit(st);
}

/* After execute_batch failed with rc (db_mu held): describe SQLite's error in msg, then
 * roll back. Returns what the batch's barriers report: a full disk is worth telling apart
 * (MQTT 5 publishers then get 0x97 Quota exceeded). */
static mql_err roll_back(mql_store *st, int rc, char *msg, size_t len)
{
    int sys = sqlite3_system_errno(st->db);
    if (sys != 0)
        snprintf(msg, len, "%s: %s", sqlite3_errmsg(st->db), strerror(sys));
    else
        snprintf(msg, len, "%s", sqlite3_errmsg(st->db));
    if (!sqlite3_get_autocommit(st->db)) {
        int rc2 = mql_store_schema_rollback(st);
        if (rc2 != SQLITE_OK)
            mql_warning("store.rollback", "store %s: rollback failed: %s", st->path,
                        sqlite3_errstr(rc2));
    }
    return (rc & 0xff) == SQLITE_FULL ? MQL_E_QUOTA : MQL_E_STORE;
}

/* Count a failed attempt; the first of an episode is logged (store.commit). */
static void note_failure(mql_store *st, uint64_t n_data, const char *failed_op, int rc,
                         const char *msg)
{
    count(&st->errors, 1);
    st->fail_run++;
    if (st->failing)
        return;
    st->failing = true;
    atomic_store(&st->failing_now, true);
    mql_error("store.commit",
              "store %s: transaction of %llu operations failed in %s: %s (%s); not "
              "acknowledging, retrying (further failures are not logged until it recovers)",
              st->path, (unsigned long long)n_data, failed_op, sqlite3_errstr(rc), msg);
}

/* A commit succeeded: end a failure episode if one is going on (store.recovered). */
static void note_success(mql_store *st)
{
    if (!st->failing)
        return;
    mql_notice("store.recovered", "store %s: commits succeed again after %llu failed attempts",
               st->path, (unsigned long long)st->fail_run);
    st->failing = false;
    atomic_store(&st->failing_now, false);
    st->fail_run = 0;
}

/* Call the barriers of list in order with err and free them. The data ops are freed when
 * the batch committed, else appended in order to the retry list (tail pointer
 * *retry_tail). */
static void finish_batch(mql_store_op *list, bool committed, mql_err err,
                         mql_store_op ***retry_tail)
{
    while (list != NULL) {
        mql_store_op *op = list;
        list = op->next;
        op->next = NULL;
        if (op->kind == MQL_STORE_OP_BARRIER) {
            op->u.barrier.cb(op->u.barrier.arg, err);
            free(op);
        } else if (committed) {
            free(op);
        } else {
            **retry_tail = op;
            *retry_tail = &op->next;
        }
    }
}

/*
 * Execute the data ops of `list` in one transaction, then call its barriers in order. On
 * success the list is freed. On failure the barriers get MQL_E_STORE (MQL_E_QUOTA on a full
 * disk) and the data ops, in order, are appended to the retry list whose tail pointer is
 * *retry_tail, to run again first in the next batch. Returns true when the batch committed.
 */
static bool run_batch(mql_store *st, mql_store_op *list, mql_store_op ***retry_tail)
{
    uint64_t n_data = 0;
    for (mql_store_op *op = list; op != NULL; op = op->next)
        n_data += op->kind != MQL_STORE_OP_BARRIER;

    bool committed = true;
    mql_err fail_err = MQL_E_STORE;
    if (n_data > 0) {
        const char *failed_op = "commit";
        char msg[256] = "";
        pthread_mutex_lock(&st->db_mu);
        int rc = execute_batch(st, list, &failed_op);
        if (rc == SQLITE_OK)
            mql_store_schema_live(st);
        else
            fail_err = roll_back(st, rc, msg, sizeof(msg));
        pthread_mutex_unlock(&st->db_mu);
        committed = rc == SQLITE_OK;
        if (committed) {
            count(&st->transactions, 1);
            count(&st->ops, n_data);
            note_success(st);
        } else {
            note_failure(st, n_data, failed_op, rc, msg);
        }
    }
    finish_batch(list, committed, committed ? (st->lost ? MQL_E_STORE : MQL_OK) : fail_err,
                 retry_tail);
    if (committed && n_data > 0 && st->wal_frames >= st->ckpt_pages) {
        pthread_mutex_lock(&st->db_mu);
        checkpoint(st, SQLITE_CHECKPOINT_PASSIVE);
        pthread_mutex_unlock(&st->db_mu);
    }
    return committed;
}

/* Take up to BATCH_MAX_OPS / BATCH_MAX_BYTES ops off the queue (mu held). */
static mql_store_op *take_batch(mql_store *st)
{
    mql_store_op *list = st->head;
    if (st->q_ops <= BATCH_MAX_OPS && st->q_bytes <= BATCH_MAX_BYTES) {
        st->head = NULL;
        st->tailp = &st->head;
        st->q_ops = 0;
        st->q_bytes = 0;
        return list;
    }
    mql_store_op *last = list;
    size_t n = 1, bytes = list->bytes;
    while (last->next != NULL && n < BATCH_MAX_OPS &&
           bytes + last->next->bytes <= BATCH_MAX_BYTES) {
        last = last->next;
        n++;
        bytes += last->bytes;
    }
    st->head = last->next;
    if (st->head == NULL)
        st->tailp = &st->head;
    last->next = NULL;
    st->q_ops -= n;
    st->q_bytes -= bytes;
    /* `since` is left as is: what remains is already due. */
    return list;
}

static size_t list_len(const mql_store_op *l)
{
    size_t n = 0;
    for (; l != NULL; l = l->next)
        n++;
    return n;
}

/* Memory an op list holds: its structs and copied data. */
static uint64_t held_memory(const mql_store_op *l)
{
    uint64_t n = 0;
    for (; l != NULL; l = l->next)
        n += sizeof(*l) + l->bytes;
    return n;
}

static void *store_main(void *arg)
{
    mql_store *st = arg;
    mql_store_op *retry = NULL, **retry_tail = &retry;
    unsigned attempts = 0;       /* consecutive failed attempts */
    unsigned close_attempts = 0; /* of those, made after close began */
    struct timespec retry_at = {0, 0};

    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->head == NULL && retry == NULL) {
            if (st->stopping)
                break;
            pthread_cond_wait(&st->cv, &st->mu);
            continue;
        }
        /* Group commit: collect for the window, cut short by close or a full batch. After
         * a failure, back off (also while closing: a transient error may pass). */
        struct timespec deadline = attempts > 0 ? retry_at : ts_add_ms(st->since, st->window_ms);
        while (!ts_reached(deadline)) {
            if (attempts == 0 && (st->stopping || st->q_ops >= BATCH_MAX_OPS))
                break;
            if (pthread_cond_timedwait(&st->cv, &st->mu, &deadline) == ETIMEDOUT)
                break;
        }
        mql_store_op *batch = st->head != NULL ? take_batch(st) : NULL;
        bool stopping = st->stopping;
        pthread_mutex_unlock(&st->mu);

        if (retry != NULL) {
            *retry_tail = batch;
            batch = retry;
            retry = NULL;
            retry_tail = &retry;
        }
        bool ok = run_batch(st, batch, &retry_tail);
        atomic_store(&st->retry_held, held_memory(retry));
        if (ok) {
            attempts = 0;
            close_attempts = 0;
        } else {
            attempts++;
            close_attempts += stopping;
            unsigned shift = attempts > 6 ? 6 : attempts - 1;
            uint32_t ms = BACKOFF_MIN_MS << shift;
            retry_at = ts_add_ms(now_mono(), ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms);
            if (close_attempts >= CLOSE_ATTEMPTS) {
                mql_error("store.lost",
                          "store %s: closing after %u failed attempts: %zu operations were "
                          "not stored",
                          st->path, attempts, list_len(retry));
                free_ops(retry);
                atomic_store(&st->retry_held, 0);
                st->lost = true;
                retry = NULL;
                retry_tail = &retry;
                attempts = 0;
                close_attempts = 0;
            }
        }
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
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
    if (pthread_create(&st->thread, NULL, store_main, st) != 0)
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
    checkpoint(st, SQLITE_CHECKPOINT_TRUNCATE);
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
        st->since = now_mono();
    *st->tailp = op;
    st->tailp = &op->next;
    st->q_ops++;
    st->q_bytes += op->bytes;
    if (was_empty || st->q_ops == BATCH_MAX_OPS)
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
