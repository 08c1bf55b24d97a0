/*
 * store_int.h - private to storage/: the store struct, the queued operation, and the
 * functions the store's files share. Nothing outside storage/ includes it (the broker
 * sees only storage/store.h).
 *
 * The files form layers; each uses only the ones above it in this list:
 *   store_vfs.c     the shim VFS: counts writes and syncs, injects faults
 *   store_schema.c  the schema, its migrations, the prepared statements, one op as SQL
 *   store_open.c    open, quick_check, recover (move a corrupt file aside), close
 *   store_load.c    mql_store_load: read everything back at start
 *   store_commit.c  the store thread: group commit, barriers, retries, checkpoints
 *   store.c         the public API: the queue, open (and start the thread), close, stats
 */
#ifndef MQL_STORE_INT_H
#define MQL_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <sqlite3.h>

#include "storage/store.h"

/* A body is unreferenced when no outq, retained or bridge_queue row names it: an SQL
 * expression on the msg_id `id` (an SQL string: a column or a parameter). */
#define MQL_STORE_MSG_UNREFERENCED(id)                                                             \
    "NOT EXISTS(SELECT 1 FROM outq WHERE msg_id = " id ")"                                         \
    " AND NOT EXISTS(SELECT 1 FROM retained WHERE msg_id = " id ")"                                \
    " AND NOT EXISTS(SELECT 1 FROM bridge_queue WHERE msg_id = " id ")"

/* ---- queued operations ---- */

/* At most this many operations go into one transaction; producers wake the store thread
 * when this many are queued, without waiting for the commit window. */
#define MQL_STORE_BATCH_MAX_OPS 8192u

enum mql_store_op_kind {
    MQL_STORE_OP_MSG_PUT,
    MQL_STORE_OP_SESSION_PUT,
    MQL_STORE_OP_SESSION_DEL,
    MQL_STORE_OP_SUB_PUT,
    MQL_STORE_OP_SUB_DEL,
    MQL_STORE_OP_OUT_PUT,
    MQL_STORE_OP_OUT_UPDATE,
    MQL_STORE_OP_OUT_DEL,
    MQL_STORE_OP_QOS2_PUT,
    MQL_STORE_OP_QOS2_DEL,
    MQL_STORE_OP_RETAIN_PUT,
    MQL_STORE_OP_RETAIN_DEL,
    MQL_STORE_OP_BARRIER,
};

/* One queued change. Its strings and bytes are copied into data[] (one allocation); the
 * pointers in the union point there. */
typedef struct mql_store_op {
    struct mql_store_op *next;
    enum mql_store_op_kind kind;
    size_t bytes; /* size of data[], for the batch size limit */
    union {
        mql_store_msg msg;
        mql_store_session session;
        mql_store_sub sub; /* also sub_del: client_id, filter */
        mql_store_out out; /* also out_update, out_del, qos2_*: client_id, seq, ... */
        struct {
            const char *topic;
            uint32_t topic_len;
            uint64_t msg_id;
        } retain;
        struct {
            mql_store_done_fn cb;
            void *arg;
        } barrier;
    } u;
    char data[];
} mql_store_op;

/* ---- the shim VFS (store_vfs.c) ---- */

/* One store's shim VFS and its counters. Embedded in mql_store; the counters are read by
 * any thread. */
typedef struct mql_store_vfs {
    sqlite3_vfs vfs;
    sqlite3_vfs *root; /* the wrapped default VFS */
    char name[48];     /* unique to this store */
    bool registered;
    _Atomic uint64_t bytes_written, fsyncs;
    atomic_int fail_writes; /* mql_store_test_fail_writes: writes left to fail */
} mql_store_vfs;

/* The number of prepared statements (store_schema.c checks it against its list). */
#define MQL_STORE_N_STMT 22

/* ---- the store ---- */

struct mql_store {
    /* fixed after open */
    char *path;     /* DIR/mqlite.db */
    char *wal_path; /* DIR/mqlite.db-wal */
    uint32_t window_ms;
    bool sync_full;
    uint64_t max_bytes;
    int ckpt_pages;

    mql_store_vfs vfs; /* its name is what the connection opens with */

    /* the connection: the store thread, or mql_store_load before the broker starts */
    pthread_mutex_t db_mu;
    sqlite3 *db;
    sqlite3_stmt *stmt[MQL_STORE_N_STMT];
    int64_t page_size;
    int wal_frames; /* frames in the WAL after the last commit (wal hook) */
    uint64_t *gc;   /* msg_ids unlinked in the current batch */
    size_t gc_n, gc_cap;
    bool failing;      /* a failure episode is going on (store thread) */
    uint64_t fail_run; /* failed attempts in this episode (store thread) */
    bool lost;         /* ops were dropped at close: no barrier may report MQL_OK now */

    /* the queue */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mql_store_op *head, **tailp;
    size_t q_ops, q_bytes;
    struct timespec since; /* when the queue last became non-empty (CLOCK_MONOTONIC) */
    bool stopping;
    pthread_t thread;
    bool thread_started;

    /* counters, read by any thread */
    _Atomic uint64_t transactions, ops, errors, live_bytes;
    atomic_bool failing_now;     /* copy of `failing` for mql_store_get_stats */
    _Atomic uint64_t retry_held; /* memory of the ops kept for a retry (store thread writes) */
    uint64_t hold_max;           /* held memory beyond which a failing store is overloaded */
};

/* ---- store_vfs.c ---- */

/* The environment variable that turns fault injection on (see store_vfs.c). */
#define MQL_STORE_FAULT_ENV "MQLITE_TEST_STORE_FAULTS"

/* mql_store_vfs_fault_control: the control file named by MQLITE_TEST_STORE_FAULTS when
 * fault injection is enabled, else NULL. The environment is read once per process; the
 * string belongs to the environment. Thread-safe. */
const char *mql_store_vfs_fault_control(void);

/* mql_store_vfs_register: fill in v as a shim over SQLite's default VFS, under a name
 * unique to v (v->name, to pass to sqlite3_open_v2), and register it (not as the default).
 * v must stay where it is until mql_store_vfs_unregister. Returns SQLITE_OK, or the SQLite
 * error (then v is not registered). */
int mql_store_vfs_register(mql_store_vfs *v);

/* mql_store_vfs_unregister: unregister v if mql_store_vfs_register succeeded; no-op
 * otherwise. Every connection opened on it must be closed first. */
void mql_store_vfs_unregister(mql_store_vfs *v);

/* ---- store_schema.c: the caller holds st->db_mu (or is opening the store) ---- */

/* mql_store_schema_version: the schema version this mqlite writes (PRAGMA user_version). */
int mql_store_schema_version(void);

/* mql_store_schema_migrate: take st->db from schema version `from` (0 = empty file) to
 * mql_store_schema_version(), one transaction per step, logging store.migrate for each
 * step of an existing store. Returns SQLITE_OK, or the failing step's error (that step is
 * rolled back; the earlier ones stay committed). */
int mql_store_schema_migrate(mql_store *st, int from);

/* mql_store_schema_sweep: delete the message bodies nothing refers to. Only at open, when
 * no operation can be queued (see store_schema.c). Returns an SQLite result code. */
int mql_store_schema_sweep(mql_store *st);

/* mql_store_schema_prepare: prepare every statement of st->stmt on st->db (a migrated
 * database). Returns SQLITE_OK, or the error; the statements prepared so far stay in
 * st->stmt either way, for mql_store_schema_finalize. */
int mql_store_schema_prepare(mql_store *st);

/* mql_store_schema_finalize: finalize every statement in st->stmt and set it to NULL
 * (NULL entries are skipped). Call before closing st->db. */
void mql_store_schema_finalize(mql_store *st);

/* mql_store_schema_begin: BEGIN IMMEDIATE, and forget the bodies collected by an earlier
 * transaction. Returns an SQLite result code. */
int mql_store_schema_begin(mql_store *st);

/* mql_store_schema_exec: execute one data operation inside the open transaction (a barrier
 * does nothing). Bodies the operation unlinks are collected for mql_store_schema_gc.
 * Returns SQLITE_OK or the failing step's error (then roll back). */
int mql_store_schema_exec(mql_store *st, const mql_store_op *op);

/* mql_store_schema_gc: delete the bodies collected since mql_store_schema_begin that nothing
 * refers to any more, inside the same transaction, and empty the collection. Returns an
 * SQLite result code. */
int mql_store_schema_gc(mql_store *st);

/* mql_store_schema_commit, mql_store_schema_rollback: end the transaction. Return an
 * SQLite result code. */
int mql_store_schema_commit(mql_store *st);
int mql_store_schema_rollback(mql_store *st);

/* mql_store_schema_live: refresh st->live_bytes (the bytes of pages in use) after a commit
 * or at open. On an error the last value stays; the next call tries again. */
void mql_store_schema_live(mql_store *st);

/* ---- store_open.c: on the caller's thread, with no store thread running ---- */

/* mql_store_seterr: format an error message into buf (len bytes, truncated, always
 * NUL-terminated); nothing when buf is NULL or len is 0. */
void mql_store_seterr(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* mql_store_open_db: check dir and st->path, register st's shim VFS and open st->path on
 * it, ready for the store thread: WAL mode, pragmas, quick_check, schema migrated,
 * statements prepared, st->ckpt_pages, st->page_size and st->live_bytes set. A corrupt file
 * is moved aside (logged as store.corrupt) and a fresh one created. st->path, sync_full and
 * max_bytes must be set. Returns MQL_OK, or MQL_E_STORE with the reason in errbuf; on an
 * error the caller still owns st and frees it (mql_store_close_db, then
 * mql_store_vfs_unregister). */
MQL_MUST_CHECK mql_err mql_store_open_db(mql_store *st, const char *dir, char *errbuf,
                                         size_t errlen);

/* mql_store_close_db: finalize the statements and close st->db (logging store.close if that
 * fails); no-op when it is not open. The store thread must not be running. */
void mql_store_close_db(mql_store *st);

/* ---- store_commit.c: the store thread ---- */

/* mql_store_commit_thread: the store thread's body (pthread_create with arg = the store).
 * Commits what is queued until st->stopping is set under st->mu and the queue and the
 * retry list are empty (or, while stopping, the retries were given up: store.lost).
 * Returns NULL. */
void *mql_store_commit_thread(void *arg);

/* mql_store_commit_checkpoint: checkpoint the WAL with SQLite's mode (PASSIVE after a
 * batch, TRUNCATE at close); a failure is logged (store.checkpoint) and otherwise ignored.
 * The caller holds st->db_mu, or the store thread has ended. */
void mql_store_commit_checkpoint(mql_store *st, int mode);

#endif
