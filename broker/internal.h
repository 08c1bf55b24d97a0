/*
 * internal.h - the broker core's shared structures (broker.c, session.c, conn.c).
 *
 * Locking (the order is fixed: broker->lock -> link mutex inside platform/net.c):
 * - broker->lock protects everything here: the ClientID table, sessions, connections'
 *   protocol state, the topic tree and the counters. A connection's packets are decoded
 *   outside the lock and handled under it, so two CONNECTs for one ClientID are strictly
 *   ordered and a takeover is atomic with respect to every publish.
 * - Output goes through mql_link_send(), which only takes the link's own mutex and never
 *   calls back, so delivering to another connection under broker->lock cannot deadlock.
 * - Nothing here blocks on I/O while holding the lock.
 */
#ifndef MQL_INTERNAL_H
#define MQL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker.h"
#include "codec.h"
#include "config.h"
#include "msg.h"
#include "auth.h"
#include "topic.h"
#include "platform/net.h"

#define MQL_MAX_ROUTE_IDS 8 /* subscription identifiers carried per delivered message */
#define MQL_CONNECT_TIMEOUT_MS 10000
#define MQL_CLOSE_FLUSH_MS 3000
#define MQL_PRECONNECT_MAX (256u * 1024u)    /* largest frame accepted before CONNACK */
#define MQL_QOS0_BACKLOG_MAX (1024u * 1024u) /* QoS 0 is dropped beyond this backlog */
#define MQL_SESSION_NEVER UINT32_MAX

enum out_state {
    OUT_QUEUED = 0,
    OUT_PUBLISH_SENT, /* waiting for PUBACK / PUBREC */
    OUT_PUBREL_SENT,  /* waiting for PUBCOMP */
};

/* A QoS 1/2 message owed to a session: queued, or in flight with a packet id. */
typedef struct out_msg {
    struct out_msg *next, *prev;
    mql_msg *msg;
    mql_share *share; /* delivered through this shared subscription group (a reference) */
    uint16_t packet_id;
    uint8_t qos;
    uint8_t state;
    bool retain;
    bool stored;  /* a row exists in the store */
    uint64_t seq; /* per-session order, the row's key in the store */
    uint8_t n_ids;
    uint32_t ids[];
} out_msg;

typedef struct out_list {
    out_msg *head, *tail;
    uint32_t count;
} out_list;

typedef struct mql_session {
    char *client_id; /* NUL-terminated */
    uint32_t client_id_len;
    uint32_t hval;
    struct mql_session *hnext;       /* ClientID table chain */
    struct mql_session *next, *prev; /* all sessions */
    struct mql_conn *conn;           /* the live connection, or NULL */
    uint8_t version;
    uint32_t expiry;          /* Session Expiry Interval, seconds; MQL_SESSION_NEVER */
    uint64_t disconnected_at; /* mql_now_ms() when the last connection ended */
    mql_sub *subs;            /* via snext/sprev */
    out_list inflight;        /* in send order */
    out_list queue;
    uint64_t queued_bytes; /* payload bytes in `queue` */
    uint16_t next_pid;
    uint16_t *qos2_in; /* inbound QoS 2 packet ids awaiting PUBREL */
    uint32_t n_qos2_in, cap_qos2_in;
    bool stored;       /* the session (and all it holds) is mirrored in the store */
    char *username;    /* of its last connection, for read ACL checks while offline */
    uint64_t next_seq; /* for out_msg.seq */
    mql_msg *will;     /* v5 delayed will, published at will_at or session end */
    uint64_t will_at;
    bool queue_full_logged;
    /* takeover diagnostics */
    uint32_t takeovers;
    uint64_t takeover_window;
    bool takeover_warned;
    /* routing scratch (valid only during one route under broker->lock) */
    uint64_t route_stamp;
    uint32_t route_idx;
} mql_session;

enum auth_result {
    AUTH_NONE = 0, /* no password check was made */
    AUTH_OK,
    AUTH_BAD,     /* wrong user name or password */
    AUTH_BLOCKED, /* too many failures from this address */
};

enum conn_state {
    CS_NEW = 0, /* waiting for CONNECT */
    CS_ACTIVE,  /* CONNACK sent */
    CS_CLOSING, /* close requested; input ignored */
};

/* Encoded acknowledgements (PUBACK, PUBREC, SUBACK, UNSUBACK) of one connection waiting
 * for a store commit, in the order they were made. */
typedef struct ack_batch {
    struct mql_conn *c;
    uint32_t n; /* packets */
    size_t len, cap;
    uint8_t bytes[];
} ack_batch;

typedef struct mql_conn {
    mql_broker *b;
    mql_link *link;
    uint32_t refs;         /* the link (until closed) + each ack batch waiting for the store */
    bool link_gone;        /* conn_closed ran: link must not be used */
    uint32_t acks_waiting; /* ack batches handed to the store and not back yet */
    ack_batch *batch;      /* acks collected during this conn_data call */
    struct mql_conn *next, *prev;
    char peer[64];
    uint8_t state;
    uint8_t version;
    mql_session *session;
    uint16_t keepalive;
    uint64_t created_at;
    uint64_t last_rx;
    uint64_t closing_since;
    mql_msg *will;
    uint32_t will_delay;
    bool will_suppressed;      /* DISCONNECT 0x00 received */
    bool request_problem_info; /* v5: reason strings / user properties allowed */
    uint16_t client_receive_max;
    uint32_t client_max_packet; /* 0 = protocol maximum */
    uint16_t alias_max;         /* topic aliases the client may use towards us */
    mql_bytes *aliases;         /* [alias_max + 1], heap copies */
    uint16_t out_alias_max;     /* aliases we may assign towards the client */
    uint16_t out_alias_used;
    mql_bytes *out_aliases; /* [out_alias_max + 1], heap copies */
    char why[160];          /* reason for closing, for the log */
    char *username;         /* the authenticated (or anonymous-but-given) user name, or NULL */
    uint8_t auth;           /* AUTH_* result of the password check made before the lock */
    bool prechecked;        /* precheck_password ran (first receive) */
} mql_conn;

struct route_entry {
    mql_session *s;
    mql_share *share;
    uint8_t qos;
    bool retain;
    uint8_t n_ids;
    uint32_t ids[MQL_MAX_ROUTE_IDS];
};

struct mql_broker {
    mql_config cfg;
    pthread_mutex_t lock;
    mql_net *net;
    mql_topics *topics;
    mql_session **slots; /* ClientID table */
    uint32_t nslots;
    uint32_t nsessions;
    mql_session *sessions;
    mql_conn *conns;
    uint32_t nconns;
    uint64_t route_seq;
    struct route_entry *route;
    uint32_t route_cap;
    uint32_t id_counter;
    pthread_t ticker;
    bool ticker_started;
    bool stopping;
    pthread_cond_t tick_cv;
    mql_stats stats;
    struct mql_store *store; /* NULL without persistence (or after it closed) */
    uint64_t store_ops;      /* operations queued so far (to see if a packet caused any) */
    uint64_t next_msg_id;
    bool store_full;     /* store_max_bytes reached (refreshed every tick) */
    uint64_t started_at; /* mql_now_ms() at start, for $SYS uptime */
    uint64_t sys_next;   /* when $SYS is published next */
    /* authentication: passwd/acl are replaced on SIGHUP under lock + auth_lock (write);
     * password checks run outside lock with auth_lock (read) */
    pthread_rwlock_t auth_lock;
    mql_passwd *passwd;
    mql_acl *acl;
    mql_ratelimit *ratelimit;
    bool route_quota; /* a delivery of the current publish was refused for quota */
    bool store_full_logged;
};

/* session.c (all under broker->lock) */
mql_session *mql_session_find(mql_broker *b, const uint8_t *id, uint32_t len);
mql_session *mql_session_new(mql_broker *b, const uint8_t *id, uint32_t len);
void mql_session_end(mql_broker *b, mql_session *s);
/* Keep a new subscription in the session's list / take it out (before mql_topics_remove). */
void mql_session_link_sub(mql_session *s, mql_sub *sub);
void mql_session_unlink_sub(mql_session *s, mql_sub *sub);
void mql_session_deliver(mql_broker *b, mql_session *s, mql_msg *msg, uint8_t qos, bool retain,
                         const uint32_t *ids, uint8_t n_ids, mql_share *share);
void mql_session_pump(mql_broker *b, mql_session *s);
void mql_session_resume(mql_broker *b, mql_session *s);
out_msg *mql_session_inflight_find(mql_session *s, uint16_t pid);
void mql_session_inflight_done(mql_broker *b, mql_session *s, out_msg *o);
bool mql_session_qos2_has(const mql_session *s, uint16_t pid);
MQL_MUST_CHECK mql_err mql_session_qos2_add(mql_session *s, uint16_t pid);
bool mql_session_qos2_remove(mql_session *s, uint16_t pid);
void mql_session_expire_scan(mql_broker *b, uint64_t now);

/* conn.c */
/* Send a PUBLISH. Returns false when it was discarded because it exceeds the client's
 * Maximum Packet Size: the caller then treats it as delivered [MQTT-3.1.2-25]. */
bool mql_conn_send_publish(mql_conn *c, mql_msg *msg, uint8_t qos, bool retain, bool dup,
                           uint16_t pid, const uint32_t *ids, uint8_t n_ids);
void mql_conn_send_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason);
void mql_conn_close(mql_conn *c, mql_err reason, const char *why);
void mql_conn_tick(mql_broker *b, uint64_t now);
extern const mql_link_ops mql_conn_link_ops;

/* persist.c (all under broker->lock; every function is a no-op without a store) */
void mql_persist_session(mql_broker *b, mql_session *s);
void mql_persist_session_del(mql_broker *b, mql_session *s);
void mql_persist_sub(mql_broker *b, mql_session *s, const mql_sub *sub);
void mql_persist_sub_del(mql_broker *b, mql_session *s, const char *filter);
void mql_persist_out(mql_broker *b, mql_session *s, out_msg *o);
void mql_persist_out_state(mql_broker *b, mql_session *s, out_msg *o);
void mql_persist_out_del(mql_broker *b, mql_session *s, out_msg *o);
void mql_persist_qos2(mql_broker *b, mql_session *s, uint16_t pid, bool add);
void mql_persist_retain(mql_broker *b, mql_bytes topic, mql_msg *msg);
MQL_MUST_CHECK mql_err mql_persist_open(mql_broker *b, char *errbuf, size_t errlen);
void mql_persist_close(mql_broker *b);

/* broker.c */
/* One round of housekeeping at monotonic time `now` (ms): keepalive and CONNECT timeouts,
 * delayed wills, session expiry, $SYS, the store's fullness. Under broker->lock. The ticker
 * thread calls it every 250 ms; the connection fuzzer calls it directly with its own clock
 * (it never starts the ticker), which is why it is not static. */
void mql_broker_tick(mql_broker *b, uint64_t now);

void mql_broker_route(mql_broker *b, mql_msg *msg, const mql_session *from);
void mql_broker_publish_will(mql_broker *b, mql_msg *will);
bool mql_broker_share_deliver(mql_broker *b, mql_share *g, mql_msg *msg, uint8_t qos, bool retain);

#endif
