/*
 * store_commit.c - the store thread: group commit of the queued operations, the barrier
 * callbacks, retries after a failed commit, and checkpoints.
 *
 * The thread waits for work, then keeps collecting for up to commit_window_ms (group
 * commit), takes the queue (at most MQL_STORE_BATCH_MAX_OPS / BATCH_MAX_BYTES at once, so
 * one transaction and the WAL stay bounded under overload), and executes it with the
 * statements prepared at open inside ONE transaction (store_schema.c). After COMMIT
 * returns it runs the barrier callbacks of that batch in queue order.
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
 * Locking: st->mu (the queue) is held only to wait and to take a batch, never while SQL
 * runs or a callback is called; st->db_mu is held while SQL runs (mql_store_load is the
 * only other user of the connection). The failure episode fields (failing, fail_run,
 * lost) belong to the store thread. Performance: one transaction and, with store_sync, one
 * WAL fsync per batch, however many operations it holds; callbacks run on this thread
 * and must not block.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "platform/log.h"
#include "storage/store_int.h"

#define BATCH_MAX_BYTES (4u * 1024 * 1024) /* bytes of copied data in one transaction */
#define BACKOFF_MIN_MS 50                  /* wait before retrying a failed batch, doubling */
#define BACKOFF_MAX_MS 2000
#define CLOSE_ATTEMPTS 5 /* failed attempts after close began before giving up (~0.75 s) */

static const char *const op_names[] = {
    "msg_put", "session_put", "session_del", "sub_put",    "sub_del",    "out_put", "out_update",
    "out_del", "qos2_put",    "qos2_del",    "retain_put", "retain_del", "barrier",
};
_Static_assert(sizeof(op_names) / sizeof(op_names[0]) == MQL_STORE_OP_BARRIER + 1,
               "one name per enum mql_store_op_kind");

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- time ---- */

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

/* ---- running a batch (store thread) ---- */

static void free_ops(mql_store_op *list)
{
    while (list != NULL) {
        mql_store_op *next = list->next;
        free(list);
        list = next;
    }
}

void mql_store_commit_checkpoint(mql_store *st, int mode)
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
        mql_store_commit_checkpoint(st, SQLITE_CHECKPOINT_PASSIVE);
        pthread_mutex_unlock(&st->db_mu);
    }
    return committed;
}

/* Take up to MQL_STORE_BATCH_MAX_OPS / BATCH_MAX_BYTES ops off the queue (mu held). */
static mql_store_op *take_batch(mql_store *st)
{
    mql_store_op *list = st->head;
    if (st->q_ops <= MQL_STORE_BATCH_MAX_OPS && st->q_bytes <= BATCH_MAX_BYTES) {
        st->head = NULL;
        st->tailp = &st->head;
        st->q_ops = 0;
        st->q_bytes = 0;
        return list;
    }
    mql_store_op *last = list;
    size_t n = 1, bytes = list->bytes;
    while (last->next != NULL && n < MQL_STORE_BATCH_MAX_OPS &&
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

void *mql_store_commit_thread(void *arg)
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
            if (attempts == 0 && (st->stopping || st->q_ops >= MQL_STORE_BATCH_MAX_OPS))
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
