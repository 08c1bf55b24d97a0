/*
 * store_load.c - mql_store_load: read the whole store back at start, table by table, into
 * the broker's loader callbacks.
 *
 * The order is the one storage/store.h promises: message bodies (only those something
 * refers to), sessions, subscriptions, outbound messages (per session in seq order),
 * inbound QoS 2 ids, retained messages; then the largest msg_id in use. Each table is one
 * query with its own row function turning columns into the public row struct; the
 * pointers handed to a callback point into SQLite's row and are valid only during the
 * call.
 *
 * Locking: holds st->db_mu for the whole load (it runs on the caller's thread before the
 * broker starts, while the store thread is idle). Performance: once per start, one
 * sequential scan per table in primary-key order; the queries are prepared here, not kept.
 */
#include <stddef.h>

#include <pthread.h>
#include <sqlite3.h>

#include "platform/log.h"
#include "storage/store_int.h"

/* One row of a query into its callback: MQL_OK to go on. */
typedef mql_err (*row_fn)(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id);

static const char *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t != NULL ? (const char *)t : "";
}

static mql_err row_msg(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    (void)max_msg_id;
    if (ld->msg == NULL)
        return MQL_OK;
    mql_store_msg m = {
        .msg_id = (uint64_t)sqlite3_column_int64(s, 0),
        .topic = col_text(s, 1),
        .topic_len = (uint32_t)sqlite3_column_bytes(s, 1),
        .payload = sqlite3_column_blob(s, 2),
        .payload_len = (uint32_t)sqlite3_column_bytes(s, 2),
        .props = sqlite3_column_blob(s, 3),
        .props_len = (uint32_t)sqlite3_column_bytes(s, 3),
        .qos = (uint8_t)sqlite3_column_int(s, 4),
        .retain = sqlite3_column_int(s, 5) != 0,
        .expiry_wall = sqlite3_column_int64(s, 6),
    };
    return ld->msg(ld->arg, &m);
}

static mql_err row_session(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    (void)max_msg_id;
    if (ld->session == NULL)
        return MQL_OK;
    mql_store_session ss = {
        .client_id = col_text(s, 0),
        .version = (uint8_t)sqlite3_column_int(s, 1),
        .expiry = (uint32_t)sqlite3_column_int64(s, 2),
        .disconnected_at = sqlite3_column_int64(s, 3),
    };
    return ld->session(ld->arg, &ss);
}

static mql_err row_sub(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    (void)max_msg_id;
    if (ld->sub == NULL)
        return MQL_OK;
    mql_store_sub sb = {
        .client_id = col_text(s, 0),
        .filter = col_text(s, 1),
        .qos = (uint8_t)sqlite3_column_int(s, 2),
        .options = (uint8_t)sqlite3_column_int(s, 3),
        .sub_id = (uint32_t)sqlite3_column_int64(s, 4),
    };
    return ld->sub(ld->arg, &sb);
}

static mql_err row_out(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    (void)max_msg_id;
    if (ld->out == NULL)
        return MQL_OK;
    mql_store_out o = {
        .client_id = col_text(s, 0),
        .seq = (uint64_t)sqlite3_column_int64(s, 1),
        .msg_id = (uint64_t)sqlite3_column_int64(s, 2),
        .qos = (uint8_t)sqlite3_column_int(s, 3),
        .retain = sqlite3_column_int(s, 4) != 0,
        .state = (uint8_t)sqlite3_column_int(s, 5),
        .packet_id = (uint16_t)sqlite3_column_int(s, 6),
        .sub_id = (uint32_t)sqlite3_column_int64(s, 7),
    };
    return ld->out(ld->arg, &o);
}

static mql_err row_qos2_in(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    (void)max_msg_id;
    if (ld->qos2_in == NULL)
        return MQL_OK;
    return ld->qos2_in(ld->arg, col_text(s, 0), (uint16_t)sqlite3_column_int(s, 1));
}

static mql_err row_retained(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    (void)max_msg_id;
    if (ld->retained == NULL)
        return MQL_OK;
    return ld->retained(ld->arg, col_text(s, 0), (uint64_t)sqlite3_column_int64(s, 1));
}

static mql_err row_max_msg_id(sqlite3_stmt *s, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    (void)ld;
    if (max_msg_id != NULL)
        *max_msg_id = (uint64_t)sqlite3_column_int64(s, 0);
    return MQL_OK;
}

static const struct {
    const char *sql;
    row_fn row;
} queries[] = {
    {"SELECT msg_id, topic, payload, props, qos, retain, expiry_wall FROM msgs WHERE NOT"
     " (" MQL_STORE_MSG_UNREFERENCED("msgs.msg_id") ") ORDER BY msg_id",
     row_msg},
    {"SELECT client_id, version, expiry, disconnected_at FROM sessions ORDER BY client_id",
     row_session},
    {"SELECT client_id, filter, qos, options, sub_id FROM subs ORDER BY client_id, filter",
     row_sub},
    {"SELECT client_id, seq, msg_id, qos, retain, state, packet_id, sub_id FROM outq"
     " ORDER BY client_id, seq",
     row_out},
    {"SELECT client_id, packet_id FROM qos2_in ORDER BY client_id, packet_id", row_qos2_in},
    {"SELECT topic, msg_id FROM retained ORDER BY topic", row_retained},
    {"SELECT coalesce(max(msg_id), 0) FROM msgs", row_max_msg_id},
};

mql_err mql_store_load(mql_store *st, const mql_store_loader *ld, uint64_t *max_msg_id)
{
    mql_err err = MQL_OK;
    sqlite3_stmt *s = NULL;
    int rc = SQLITE_OK;
    pthread_mutex_lock(&st->db_mu);
    for (size_t k = 0; k < sizeof(queries) / sizeof(queries[0]); k++) {
        if ((rc = sqlite3_prepare_v2(st->db, queries[k].sql, -1, &s, NULL)) != SQLITE_OK)
            goto fail;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            if ((err = queries[k].row(s, ld, max_msg_id)) != MQL_OK)
                goto out;
        }
        if (rc != SQLITE_DONE)
            goto fail;
        rc = sqlite3_finalize(s);
        s = NULL;
        if (rc != SQLITE_OK)
            goto fail;
    }
    goto out;

fail:
    mql_error("store.load", "store %s: loading failed: %s (%s)", st->path, sqlite3_errstr(rc),
              sqlite3_errmsg(st->db));
    err = MQL_E_STORE;
out:
    (void)sqlite3_finalize(s); /* NULL-safe; an error here was reported by the step */
    pthread_mutex_unlock(&st->db_mu);
    return err;
}
