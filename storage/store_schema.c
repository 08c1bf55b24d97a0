/*
 * store_schema.c - the store's SQL: the schema and its migrations, the statements prepared
 * once at open, and one queued operation executed with them.
 *
 * Schema. schema_steps[v] takes a store at user_version v to v + 1, each step in its own
 * transaction; a step that has shipped is never edited. The small keyed tables are WITHOUT
 * ROWID (each row lives once, in its primary-key b-tree, instead of in a rowid table plus
 * a key index: half the pages to write); msgs keeps its rowid (msg_id), its rows are large.
 *
 * Message bodies. A body (msgs) is shared by the outq rows, the retained row and (later)
 * the bridge_queue rows that name its msg_id. Deletes that can orphan a body (out_del,
 * session_del, retain_put replacing, retain_del) collect the msg_ids they unlinked
 * (DELETE ... RETURNING msg_id); before COMMIT each collected id whose body has no
 * reference left is deleted, in the same transaction (indexes on outq(msg_id),
 * retained(msg_id), bridge_queue(msg_id) make that check a few b-tree lookups). A body
 * that was put but never referenced (the broker changed its mind) is removed by a sweep at
 * open, when nothing can be in flight. A periodic sweep was rejected: it would race with a
 * body whose out_put is still queued. (So would an out_put that replaces an existing
 * (client_id, seq) row with another msg_id: the broker never reuses a seq; if it did, the
 * old body would wait for that sweep.) Every operation is an idempotent upsert or delete,
 * so the store thread may execute a failed batch again.
 *
 * Locking: none of its own. Every function uses st->db and its statements, so the caller
 * holds st->db_mu (or is opening the store, before the store thread exists). Performance:
 * an operation is a few bound parameters and one step of a statement prepared once
 * (SQLITE_PREPARE_PERSISTENT); nothing is parsed per operation.
 */
#include <stdio.h>
#include <stdlib.h>

#include <sqlite3.h>

#include "platform/log.h"
#include "storage/store_int.h"

/* ---- schema ---- */

/* schema_steps[v] takes a store at user_version v to v + 1. Append a step for version 2;
 * never edit a step that has shipped. */
static const char *const schema_steps[] = {
    /* 0 -> 1. WITHOUT ROWID for the small keyed tables: each row lives once, in its
     * primary-key b-tree, instead of in a rowid table plus a key index (half the pages to
     * write). msgs keeps its rowid (msg_id is the rowid): its rows are large. */
    "CREATE TABLE sessions(client_id TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL,"
    " expiry INTEGER NOT NULL, disconnected_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE subs(client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,"
    " options INTEGER NOT NULL, sub_id INTEGER NOT NULL, PRIMARY KEY(client_id, filter))"
    " WITHOUT ROWID;"
    "CREATE TABLE msgs(msg_id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
    " props BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
    " expiry_wall INTEGER NOT NULL);"
    "CREATE TABLE outq(client_id TEXT NOT NULL, seq INTEGER NOT NULL, msg_id INTEGER NOT NULL,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, state INTEGER NOT NULL,"
    " packet_id INTEGER NOT NULL, sub_id INTEGER NOT NULL, PRIMARY KEY(client_id, seq))"
    " WITHOUT ROWID;"
    "CREATE INDEX outq_msg ON outq(msg_id);"
    "CREATE TABLE qos2_in(client_id TEXT NOT NULL, packet_id INTEGER NOT NULL,"
    " PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;"
    "CREATE TABLE retained(topic TEXT NOT NULL PRIMARY KEY, msg_id INTEGER NOT NULL)"
    " WITHOUT ROWID;"
    "CREATE INDEX retained_msg ON retained(msg_id);"
    "CREATE TABLE bridge_queue(bridge TEXT NOT NULL, seq INTEGER NOT NULL,"
    " msg_id INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
    " PRIMARY KEY(bridge, seq)) WITHOUT ROWID;"
    "CREATE INDEX bridge_queue_msg ON bridge_queue(msg_id);",
};
#define SCHEMA_VERSION ((int)(sizeof(schema_steps) / sizeof(schema_steps[0])))

/* ---- statements ---- */

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_MSG_PUT,
    S_SESSION_PUT,
    S_SESSION_DEL_OUT,
    S_SESSION_DEL_SUBS,
    S_SESSION_DEL_QOS2,
    S_SESSION_DEL,
    S_SUB_PUT,
    S_SUB_DEL,
    S_OUT_PUT,
    S_OUT_UPDATE,
    S_OUT_DEL,
    S_QOS2_PUT,
    S_QOS2_DEL,
    S_RETAIN_GET,
    S_RETAIN_PUT,
    S_RETAIN_DEL,
    S_MSG_GC,
    S_PAGE_COUNT,
    S_FREELIST_COUNT,
    N_STMT
};
_Static_assert(N_STMT == MQL_STORE_N_STMT, "MQL_STORE_N_STMT in store_int.h");

static const char *const stmt_sql[N_STMT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_MSG_PUT] = "INSERT OR REPLACE INTO msgs(msg_id, topic, payload, props, qos, retain,"
                  " expiry_wall) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_SESSION_PUT] = "INSERT OR REPLACE INTO sessions(client_id, version, expiry,"
                      " disconnected_at) VALUES(?1, ?2, ?3, ?4)",
    [S_SESSION_DEL_OUT] = "DELETE FROM outq WHERE client_id = ?1 RETURNING msg_id",
    [S_SESSION_DEL_SUBS] = "DELETE FROM subs WHERE client_id = ?1",
    [S_SESSION_DEL_QOS2] = "DELETE FROM qos2_in WHERE client_id = ?1",
    [S_SESSION_DEL] = "DELETE FROM sessions WHERE client_id = ?1",
    [S_SUB_PUT] = "INSERT OR REPLACE INTO subs(client_id, filter, qos, options, sub_id)"
                  " VALUES(?1, ?2, ?3, ?4, ?5)",
    [S_SUB_DEL] = "DELETE FROM subs WHERE client_id = ?1 AND filter = ?2",
    [S_OUT_PUT] = "INSERT OR REPLACE INTO outq(client_id, seq, msg_id, qos, retain, state,"
                  " packet_id, sub_id) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [S_OUT_UPDATE] = "UPDATE outq SET state = ?3, packet_id = ?4 WHERE client_id = ?1 AND"
                     " seq = ?2",
    [S_OUT_DEL] = "DELETE FROM outq WHERE client_id = ?1 AND seq = ?2 RETURNING msg_id",
    [S_QOS2_PUT] = "INSERT OR IGNORE INTO qos2_in(client_id, packet_id) VALUES(?1, ?2)",
    [S_QOS2_DEL] = "DELETE FROM qos2_in WHERE client_id = ?1 AND packet_id = ?2",
    [S_RETAIN_GET] = "SELECT msg_id FROM retained WHERE topic = ?1",
    [S_RETAIN_PUT] = "INSERT OR REPLACE INTO retained(topic, msg_id) VALUES(?1, ?2)",
    [S_RETAIN_DEL] = "DELETE FROM retained WHERE topic = ?1 RETURNING msg_id",
    [S_MSG_GC] = "DELETE FROM msgs WHERE msg_id = ?1 AND " MQL_STORE_MSG_UNREFERENCED("?1"),
    [S_PAGE_COUNT] = "PRAGMA page_count",
    [S_FREELIST_COUNT] = "PRAGMA freelist_count",
};

/* ---- helpers ---- */

/* Text binding that never binds NULL (the columns are NOT NULL). n < 0: NUL-terminated. */
static int bind_text(sqlite3_stmt *s, int i, const char *p, int n)
{
    if (p == NULL) {
        p = "";
        n = 0;
    }
    return sqlite3_bind_text(s, i, p, n, SQLITE_STATIC);
}

static int bind_blob(sqlite3_stmt *s, int i, const void *p, uint32_t n)
{
    return sqlite3_bind_blob(s, i, n > 0 ? p : "", (int)n, SQLITE_STATIC);
}

/* Step a statement that returns no rows, then reset it. */
static int run(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    (void)sqlite3_reset(s); /* repeats the step's error, already in rc */
    if (rc == SQLITE_DONE)
        return SQLITE_OK;
    return rc == SQLITE_ROW ? SQLITE_MISUSE : rc;
}

/* Step a single-value query (a PRAGMA, a lookup) into *out (left alone when no row). */
static int run_int(sqlite3_stmt *s, int64_t *out)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = SQLITE_DONE;
    }
    (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int gc_add(mql_store *st, uint64_t id)
{
    if (st->gc_n == st->gc_cap) {
        size_t cap = st->gc_cap ? st->gc_cap * 2 : 256;
        uint64_t *n = realloc(st->gc, cap * sizeof(*n));
        if (n == NULL)
            return SQLITE_NOMEM;
        st->gc = n;
        st->gc_cap = cap;
    }
    st->gc[st->gc_n++] = id;
    return SQLITE_OK;
}

/* Step a DELETE ... RETURNING msg_id, collecting the unlinked msg_ids for
 * mql_store_schema_gc. */
static int run_unlink(mql_store *st, sqlite3_stmt *s)
{
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (gc_add(st, (uint64_t)sqlite3_column_int64(s, 0)) != SQLITE_OK) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int mql_store_schema_gc(mql_store *st)
{
    if (st->gc_n == 0)
        return SQLITE_OK;
    qsort(st->gc, st->gc_n, sizeof(*st->gc), cmp_u64);
    sqlite3_stmt *s = st->stmt[S_MSG_GC];
    int rc = SQLITE_OK;
    for (size_t i = 0; i < st->gc_n; i++) {
        if (i > 0 && st->gc[i] == st->gc[i - 1])
            continue;
        if ((rc = sqlite3_bind_int64(s, 1, (sqlite3_int64)st->gc[i])) != SQLITE_OK)
            break;
        if ((rc = run(s)) != SQLITE_OK)
            break;
    }
    st->gc_n = 0;
    return rc;
}

/* ---- one operation as SQL ---- */

static int exec_msg_put(mql_store *st, const mql_store_msg *m)
{
    sqlite3_stmt *s = st->stmt[S_MSG_PUT];
    int rc;
    if ((rc = sqlite3_bind_int64(s, 1, (sqlite3_int64)m->msg_id)) != SQLITE_OK ||
        (rc = bind_text(s, 2, m->topic, (int)m->topic_len)) != SQLITE_OK ||
        (rc = bind_blob(s, 3, m->payload, m->payload_len)) != SQLITE_OK ||
        (rc = bind_blob(s, 4, m->props, m->props_len)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 5, m->qos)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 6, m->retain)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 7, m->expiry_wall)) != SQLITE_OK)
        return rc;
    return run(s);
}

static int exec_session_put(mql_store *st, const mql_store_session *ss)
{
    sqlite3_stmt *s = st->stmt[S_SESSION_PUT];
    int rc;
    if ((rc = bind_text(s, 1, ss->client_id, -1)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 2, ss->version)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 3, ss->expiry)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 4, ss->disconnected_at)) != SQLITE_OK)
        return rc;
    return run(s);
}

/* The session's outbound rows first (collecting their bodies), then everything else. */
static int exec_session_del(mql_store *st, const char *cid)
{
    sqlite3_stmt *s = st->stmt[S_SESSION_DEL_OUT];
    int rc;
    if ((rc = bind_text(s, 1, cid, -1)) != SQLITE_OK || (rc = run_unlink(st, s)) != SQLITE_OK)
        return rc;
    static const enum stmt_id rest[] = {S_SESSION_DEL_SUBS, S_SESSION_DEL_QOS2, S_SESSION_DEL};
    for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++) {
        s = st->stmt[rest[i]];
        if ((rc = bind_text(s, 1, cid, -1)) != SQLITE_OK || (rc = run(s)) != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int exec_sub_put(mql_store *st, const mql_store_sub *sb)
{
    sqlite3_stmt *s = st->stmt[S_SUB_PUT];
    int rc;
    if ((rc = bind_text(s, 1, sb->client_id, -1)) != SQLITE_OK ||
        (rc = bind_text(s, 2, sb->filter, -1)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 3, sb->qos)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 4, sb->options)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 5, sb->sub_id)) != SQLITE_OK)
        return rc;
    return run(s);
}

static int exec_sub_del(mql_store *st, const mql_store_sub *sb)
{
    sqlite3_stmt *s = st->stmt[S_SUB_DEL];
    int rc;
    if ((rc = bind_text(s, 1, sb->client_id, -1)) != SQLITE_OK ||
        (rc = bind_text(s, 2, sb->filter, -1)) != SQLITE_OK)
        return rc;
    return run(s);
}

static int exec_out_put(mql_store *st, const mql_store_out *o)
{
    sqlite3_stmt *s = st->stmt[S_OUT_PUT];
    int rc;
    if ((rc = bind_text(s, 1, o->client_id, -1)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 2, (sqlite3_int64)o->seq)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)o->msg_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 4, o->qos)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 5, o->retain)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 6, o->state)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 7, o->packet_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 8, o->sub_id)) != SQLITE_OK)
        return rc;
    return run(s);
}

static int exec_out_update(mql_store *st, const mql_store_out *o)
{
    sqlite3_stmt *s = st->stmt[S_OUT_UPDATE];
    int rc;
    if ((rc = bind_text(s, 1, o->client_id, -1)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 2, (sqlite3_int64)o->seq)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 3, o->state)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 4, o->packet_id)) != SQLITE_OK)
        return rc;
    return run(s);
}

static int exec_out_del(mql_store *st, const mql_store_out *o)
{
    sqlite3_stmt *s = st->stmt[S_OUT_DEL];
    int rc;
    if ((rc = bind_text(s, 1, o->client_id, -1)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 2, (sqlite3_int64)o->seq)) != SQLITE_OK)
        return rc;
    return run_unlink(st, s);
}

/* qos2_put and qos2_del: the same parameters, two statements. */
static int exec_qos2(mql_store *st, enum stmt_id which, const mql_store_out *o)
{
    sqlite3_stmt *s = st->stmt[which];
    int rc;
    if ((rc = bind_text(s, 1, o->client_id, -1)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(s, 2, o->packet_id)) != SQLITE_OK)
        return rc;
    return run(s);
}

/* The body of the retained message it replaces may become unreferenced. */
static int exec_retain_put(mql_store *st, const char *topic, uint32_t topic_len, uint64_t msg_id)
{
    int64_t old = -1;
    sqlite3_stmt *s = st->stmt[S_RETAIN_GET];
    int rc;
    if ((rc = bind_text(s, 1, topic, (int)topic_len)) != SQLITE_OK ||
        (rc = run_int(s, &old)) != SQLITE_OK)
        return rc;
    if (old != -1 && (uint64_t)old != msg_id && (rc = gc_add(st, (uint64_t)old)) != SQLITE_OK)
        return rc;
    s = st->stmt[S_RETAIN_PUT];
    if ((rc = bind_text(s, 1, topic, (int)topic_len)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(s, 2, (sqlite3_int64)msg_id)) != SQLITE_OK)
        return rc;
    return run(s);
}

static int exec_retain_del(mql_store *st, const char *topic, uint32_t topic_len)
{
    sqlite3_stmt *s = st->stmt[S_RETAIN_DEL];
    int rc;
    if ((rc = bind_text(s, 1, topic, (int)topic_len)) != SQLITE_OK)
        return rc;
    return run_unlink(st, s);
}

int mql_store_schema_exec(mql_store *st, const mql_store_op *op)
{
    switch (op->kind) {
    case MQL_STORE_OP_MSG_PUT:
        return exec_msg_put(st, &op->u.msg);
    case MQL_STORE_OP_SESSION_PUT:
        return exec_session_put(st, &op->u.session);
    case MQL_STORE_OP_SESSION_DEL:
        return exec_session_del(st, op->u.session.client_id);
    case MQL_STORE_OP_SUB_PUT:
        return exec_sub_put(st, &op->u.sub);
    case MQL_STORE_OP_SUB_DEL:
        return exec_sub_del(st, &op->u.sub);
    case MQL_STORE_OP_OUT_PUT:
        return exec_out_put(st, &op->u.out);
    case MQL_STORE_OP_OUT_UPDATE:
        return exec_out_update(st, &op->u.out);
    case MQL_STORE_OP_OUT_DEL:
        return exec_out_del(st, &op->u.out);
    case MQL_STORE_OP_QOS2_PUT:
        return exec_qos2(st, S_QOS2_PUT, &op->u.out);
    case MQL_STORE_OP_QOS2_DEL:
        return exec_qos2(st, S_QOS2_DEL, &op->u.out);
    case MQL_STORE_OP_RETAIN_PUT:
        return exec_retain_put(st, op->u.retain.topic, op->u.retain.topic_len, op->u.retain.msg_id);
    case MQL_STORE_OP_RETAIN_DEL:
        return exec_retain_del(st, op->u.retain.topic, op->u.retain.topic_len);
    case MQL_STORE_OP_BARRIER:
        return SQLITE_OK;
    }
    return SQLITE_MISUSE;
}

/* ---- the transaction of a batch ---- */

int mql_store_schema_begin(mql_store *st)
{
    st->gc_n = 0;
    return run(st->stmt[S_BEGIN]);
}

int mql_store_schema_commit(mql_store *st)
{
    return run(st->stmt[S_COMMIT]);
}

int mql_store_schema_rollback(mql_store *st)
{
    return run(st->stmt[S_ROLLBACK]);
}

void mql_store_schema_live(mql_store *st)
{
    int64_t pages = 0, free_pages = 0;
    if (run_int(st->stmt[S_PAGE_COUNT], &pages) != SQLITE_OK ||
        run_int(st->stmt[S_FREELIST_COUNT], &free_pages) != SQLITE_OK)
        return; /* keep the last value; the next commit tries again */
    int64_t live = (pages - free_pages) * st->page_size;
    atomic_store_explicit(&st->live_bytes, live > 0 ? (uint64_t)live : 0, memory_order_relaxed);
}

/* ---- at open ---- */

int mql_store_schema_version(void)
{
    return SCHEMA_VERSION;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

int mql_store_schema_migrate(mql_store *st, int from)
{
    for (int v = from; v < SCHEMA_VERSION; v++) {
        char sql[64];
        int rc = exec_sql(st->db, "BEGIN IMMEDIATE");
        if (rc != SQLITE_OK)
            return rc;
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
        if ((rc = exec_sql(st->db, schema_steps[v])) != SQLITE_OK ||
            (rc = exec_sql(st->db, sql)) != SQLITE_OK ||
            (rc = exec_sql(st->db, "COMMIT")) != SQLITE_OK) {
            if (!sqlite3_get_autocommit(st->db))
                (void)exec_sql(st->db, "ROLLBACK"); /* the error that matters is rc */
            return rc;
        }
        if (from > 0)
            mql_notice("store.migrate", "store %s: schema migrated from version %d to %d", st->path,
                       v, v + 1);
    }
    return SQLITE_OK;
}

int mql_store_schema_sweep(mql_store *st)
{
    return exec_sql(st->db, "DELETE FROM msgs WHERE " MQL_STORE_MSG_UNREFERENCED("msgs.msg_id"));
}

int mql_store_schema_prepare(mql_store *st)
{
    for (int i = 0; i < N_STMT; i++) {
        int rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &st->stmt[i], NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

void mql_store_schema_finalize(mql_store *st)
{
    for (int i = 0; i < N_STMT; i++) {
        (void)sqlite3_finalize(st->stmt[i]); /* returns the last step's error, not news */
        st->stmt[i] = NULL;
    }
}
