/*
 * store.h - the persistent store: sessions, subscriptions, queued / in-flight messages,
 * inbound QoS 2 packet ids, retained messages and (later) the bridge queue, in one SQLite
 * file sized for flash.
 *
 * The broker never sees SQL. It describes changes as plain operations (mql_store_*_put /
 * _del below); they are appended to an in-memory queue, without blocking on I/O, and a
 * store thread executes everything queued during one group-commit window in a single
 * transaction. mql_store_barrier() asks for a callback once every operation queued before
 * it has been committed to disk: the broker sends PUBACK/PUBREC for a message that must
 * survive a crash only from that callback.
 *
 * Identity: sessions by ClientID; subscriptions by (ClientID, filter); outbound messages by
 * (ClientID, seq) where seq is a per-session increasing number given by the broker (the
 * delivery order); message bodies by a store-wide msg_id given by the broker (one body row
 * shared by every queue row and the retained table that refer to it; a body with no
 * references left is deleted by the store); retained messages by topic.
 *
 * Threading: every function may be called from any thread (the queue has its own mutex),
 * never blocks on disk, and never calls back into the caller while holding its lock.
 * Callbacks of barriers run on the store thread, in the order the barriers were queued.
 * Loading (mql_store_load) runs on the caller's thread before the broker starts.
 */
#ifndef MQL_STORE_H
#define MQL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/err.h"

/* mql_store: one open store (opaque). Created by mql_store_open, freed by mql_store_close. */
typedef struct mql_store mql_store;

/* mql_store_opts: how mql_store_open sets the store up (read during the call only). */
typedef struct mql_store_opts {
    const char *dir;           /* persistence_location: the database is DIR/mqlite.db */
    uint32_t commit_window_ms; /* group-commit window, default 20; 0 = commit as soon as the
                                  store thread sees work */
    bool sync_full;            /* store_sync: true = synchronous=FULL (default), false = NORMAL */
    uint64_t max_bytes;        /* store_max_bytes, 0 = no limit */
} mql_store_opts;

/* mql_store_msg: a message body. The bytes are copied when the operation is queued. `props` is an
 * MQTT 5 property block (as mql_encode writes it, without its length) holding the forwarded
 * properties, or empty. expiry_wall is the wall-clock second the message expires, 0 = never. */
typedef struct mql_store_msg {
    uint64_t msg_id;
    const char *topic;
    uint32_t topic_len;
    const uint8_t *payload;
    uint32_t payload_len;
    const uint8_t *props;
    uint32_t props_len;
    uint8_t qos;
    bool retain;
    int64_t expiry_wall;
} mql_store_msg;

/* mql_store_session: a session's row, by ClientID. */
typedef struct mql_store_session {
    const char *client_id;
    uint8_t version;         /* 3, 4 or 5 */
    uint32_t expiry;         /* Session Expiry Interval in seconds; UINT32_MAX = never */
    int64_t disconnected_at; /* wall-clock seconds of the last disconnect; 0 = connected */
} mql_store_session;

/* mql_store_sub: a subscription's row, by (ClientID, filter). */
typedef struct mql_store_sub {
    const char *client_id;
    const char *filter;
    uint8_t qos;
    uint8_t options; /* bit 0 no local, bit 1 retain as published, bits 2-3 retain handling */
    uint32_t sub_id;
} mql_store_sub;

/* mql_store_out_state: where an outbound message is in its QoS flow. */
enum mql_store_out_state {
    MQL_STORE_OUT_QUEUED = 0,
    MQL_STORE_OUT_PUBLISH_SENT = 1,
    MQL_STORE_OUT_PUBREL_SENT = 2,
};

/* mql_store_out: an outbound message of a session, by (ClientID, seq); its body is msg_id. */
typedef struct mql_store_out {
    const char *client_id;
    uint64_t seq;
    uint64_t msg_id;
    uint8_t qos;
    bool retain;
    uint8_t state;
    uint16_t packet_id;
    uint32_t sub_id; /* first Subscription Identifier, 0 = none */
} mql_store_out;

/*
 * mql_store_open: open (creating DIR/mqlite.db if needed): WAL mode, the configured synchronous
 * level, PRAGMA quick_check, schema creation or migration to the current version. A file that is
 * corrupt or not a database is logged as such, renamed to mqlite.db.corrupt-YYYYmmddTHHMMSS
 * (with its -wal/-shm files), and a fresh store is created: the broker starts empty rather
 * than not at all. A missing or unwritable directory, or a read-only file, is an error
 * (MQL_E_STORE) with the reason in errbuf ("persistence_location /x: No such file or
 * directory"); MQL_E_CONFIG when opts names no directory; MQL_E_NOMEM. Starts the store
 * thread. On MQL_OK *out is the store, owned by the caller until mql_store_close; on an
 * error *out is NULL.
 */
MQL_MUST_CHECK mql_err mql_store_open(mql_store **out, const mql_store_opts *opts, char *errbuf,
                                      size_t errlen);

/* mql_store_close: run what is queued, commit, stop the thread, checkpoint (the WAL is emptied),
 * close the database and free st. Blocks until that is done. Call it once, after the last change
 * was queued, and never from a barrier callback (it waits for the store thread). */
void mql_store_close(mql_store *st);

/* ---- loading, at start (before any other call) ---- */

/* mql_store_loader: the callbacks mql_store_load calls, with arg; a NULL callback skips
 * its rows. */
typedef struct mql_store_loader {
    void *arg;
    /* Called for every row, in this order: messages (only those referred to), sessions,
     * subscriptions, outbound messages (per session in seq order), inbound QoS 2 ids,
     * retained. Pointers are valid only during the call. Return MQL_OK to go on. */
    mql_err (*msg)(void *arg, const mql_store_msg *m);
    mql_err (*session)(void *arg, const mql_store_session *s);
    mql_err (*sub)(void *arg, const mql_store_sub *s);
    mql_err (*out)(void *arg, const mql_store_out *o);
    mql_err (*qos2_in)(void *arg, const char *client_id, uint16_t packet_id);
    mql_err (*retained)(void *arg, const char *topic, uint64_t msg_id);
} mql_store_loader;

/* mql_store_load: read everything back into ld's callbacks, on the caller's thread, before
 * any change is queued. Returns MQL_OK, the first error a callback returned (loading stops
 * there), or MQL_E_STORE when SQLite fails (logged as store.load). Also reports the largest msg_id
 * in use (*max_msg_id), so the broker continues numbering after it. */
MQL_MUST_CHECK mql_err mql_store_load(mql_store *st, const mql_store_loader *ld,
                                      uint64_t *max_msg_id);

/* ---- changes (queued; never block on disk) ----
 *
 * Each call copies what it is given (the caller keeps its arguments) and appends one
 * operation to the queue. Returns MQL_OK; MQL_E_NOMEM when the copy cannot be allocated;
 * MQL_E_INTERNAL for arguments that break the contract (a NULL ClientID, filter, topic or
 * callback, bytes without a pointer, a retained topic over 2 GiB); MQL_E_TOO_LARGE for a
 * message field over 2 GiB. Nothing is queued on an error. */

/* mql_store_msg_put: store (or replace) the body m->msg_id. */
MQL_MUST_CHECK mql_err mql_store_msg_put(mql_store *st, const mql_store_msg *m);
/* mql_store_session_put: store (or replace) the session s->client_id. */
MQL_MUST_CHECK mql_err mql_store_session_put(mql_store *st, const mql_store_session *s);
/* mql_store_session_del: delete the session and everything that belongs to it (subscriptions,
 * outbound messages, inbound QoS 2 ids). */
MQL_MUST_CHECK mql_err mql_store_session_del(mql_store *st, const char *client_id);
/* mql_store_sub_put: store (or replace) the subscription (s->client_id, s->filter). */
MQL_MUST_CHECK mql_err mql_store_sub_put(mql_store *st, const mql_store_sub *s);
/* mql_store_sub_del: delete the subscription (client_id, filter). */
MQL_MUST_CHECK mql_err mql_store_sub_del(mql_store *st, const char *client_id, const char *filter);
/* mql_store_out_put: store (or replace) the outbound message (o->client_id, o->seq). */
MQL_MUST_CHECK mql_err mql_store_out_put(mql_store *st, const mql_store_out *o);
/* mql_store_out_update: update state and packet id of an outbound message. */
MQL_MUST_CHECK mql_err mql_store_out_update(mql_store *st, const char *client_id, uint64_t seq,
                                            uint8_t state, uint16_t packet_id);
/* mql_store_out_del: delete an outbound message; its body goes once nothing refers to it. */
MQL_MUST_CHECK mql_err mql_store_out_del(mql_store *st, const char *client_id, uint64_t seq);
/* mql_store_qos2_put, mql_store_qos2_del: record or forget an inbound QoS 2 packet id of a
 * session (PUBREC sent, PUBREL not yet received). */
MQL_MUST_CHECK mql_err mql_store_qos2_put(mql_store *st, const char *client_id, uint16_t pid);
MQL_MUST_CHECK mql_err mql_store_qos2_del(mql_store *st, const char *client_id, uint16_t pid);
/* mql_store_retain_put, mql_store_retain_del: set the retained message of topic to msg_id
 * (whose body was put), or remove it; a body no longer referred to goes. */
MQL_MUST_CHECK mql_err mql_store_retain_put(mql_store *st, const char *topic, uint32_t topic_len,
                                            uint64_t msg_id);
MQL_MUST_CHECK mql_err mql_store_retain_del(mql_store *st, const char *topic, uint32_t topic_len);

/* mql_store_barrier: call cb(arg, err) on the store thread once everything queued before this call
 * is committed (err MQL_OK) or failed to commit (the caller must not acknowledge): MQL_E_QUOTA when
 * the disk is full (SQLITE_FULL), MQL_E_STORE for any other failure. Returns MQL_E_NOMEM without
 * ever calling cb when it cannot queue the barrier. MQL_OK means every operation queued before the
 * barrier is on disk (with sync_full, also across a power loss). After MQL_E_STORE the operations
 * of the failed transaction are not dropped: the store executes them again, in order, before
 * anything queued later, so a later barrier's MQL_OK still covers them. cb must not block for long:
 * it delays the next transaction. */
typedef void (*mql_store_done_fn)(void *arg, mql_err err);
MQL_MUST_CHECK mql_err mql_store_barrier(mql_store *st, mql_store_done_fn cb, void *arg);

/* mql_store_stats: counters, for $SYS and the benchmark. */
typedef struct mql_store_stats {
    uint64_t transactions;  /* commits */
    uint64_t ops;           /* operations executed */
    uint64_t bytes_written; /* bytes written to the database and WAL files (from SQLite's I/O
                               counters or file sizes; documented in store.c) */
    uint64_t fsyncs;        /* fsync/fdatasync calls issued by SQLite */
    uint64_t file_bytes;    /* current size of the database + WAL */
    uint64_t errors;        /* failed commits */
    bool full;              /* live_bytes reached max_bytes (never when max_bytes is 0) */
    uint64_t live_bytes;    /* bytes of database pages in use after the last commit. SQLite
                               reuses freed pages but does not shrink the file, so `full` is
                               judged on this, not on file_bytes: it clears once the broker has
                               deleted enough. The WAL adds up to max_bytes/8 (at most 4 MiB)
                               on disk. */
    bool failing;           /* the last commit attempt failed (a failure episode is on) */
    uint64_t held_bytes;    /* memory of operations not yet committed: queued, or kept to be
                               retried after failed commits (which is what grows while the
                               store cannot write) */
    bool overloaded;        /* failing, and held_bytes beyond the limit (8 MiB, or a quarter
                               of a smaller max_bytes, at least 256 KiB): the broker should
                               stop taking on work that needs the store (see session.c) */
} mql_store_stats;

/* mql_store_get_stats: the counters, from any thread. file_bytes is measured now; the rest
 * is as of the last commit. */
mql_store_stats mql_store_get_stats(mql_store *st);

/* mql_store_test_fail_writes: test hook (fault injection): the next n writes of the store's files
 * fail with an I/O error (SQLITE_IOERR_WRITE); n = 0 turns it off. Not for production use. The real
 * binary is driven by MQLITE_TEST_STORE_FAULTS instead (storage/store_vfs.c). */
void mql_store_test_fail_writes(mql_store *st, int n);

#endif
