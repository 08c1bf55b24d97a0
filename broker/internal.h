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
#include "session.h"
#include "router.h"
#include "clients.h"
#include "mirror.h"
#include "restore.h"
#include "platform/net.h"

#define MQL_MAX_ROUTE_IDS 8 /* subscription identifiers carried per delivered message */
#define MQL_CLOSE_FLUSH_MS 3000
#define TAKEOVER_DRAIN_MS 500             /* see handle_connect */
#define MQL_PRECONNECT_MAX (256u * 1024u) /* largest frame accepted before CONNACK */
/* A client that sends while this much output (beyond its in-flight QoS 1/2 deliveries)
 * waits unread is closed: see unread_backlog_exceeded in conn.c. */
#define MQL_UNREAD_BACKLOG_MAX (4u * 1024u * 1024u)
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
    struct mql_bridge *bridge; /* set on a bridge's uplink (we are the client), else NULL */
    uint32_t refs;             /* the link (until closed) + each ack batch waiting for the store */
    bool link_gone;            /* conn_closed ran: link must not be used */
    uint32_t acks_waiting;     /* ack batches handed to the store and not back yet */
    ack_batch *batch;          /* acks collected during this conn_data call */
    struct mql_conn *next, *prev;
    char peer[64];
    uint8_t state;
    uint8_t version;
    mql_session *session;
    int listener; /* index in cfg.listeners of the listener that accepted it; -1 for a
                     bridge's uplink */
    uint16_t keepalive;
    uint64_t created_at;
    uint64_t last_rx;
    uint64_t closing_since;
    mql_msg *will;
    uint32_t will_delay;
    bool will_suppressed;      /* DISCONNECT 0x00 received */
    bool will_deferred;        /* taken over with its will pending: see handle_connect */
    uint64_t drain_until;      /* while taken over: read (for a DISCONNECT) until then */
    bool request_problem_info; /* v5: reason strings / user properties allowed */
    bool peer_bridge;          /* 3.1/3.1.1 CONNECT with the bridge bit (mosquitto's) */
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

/* Per listener (same index as cfg.listeners), under broker->lock. */
struct mql_listener_state {
    char url[256];    /* what it listens on, for messages */
    uint32_t nconns;  /* its connections (counted in mql_broker.nconns too) */
    bool full_logged; /* its max_connections episode was logged */
};

struct mql_broker {
    mql_config cfg;
    struct mql_listener_state listeners[MQL_MAX_LISTENERS];
    bool conns_full_logged; /* the broker-wide max_connections episode was logged */
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
    uint64_t next_msg_id;
    bool store_full;         /* store_max_bytes reached, or the store overloaded (each tick) */
    bool store_overloaded;   /* it cannot commit and holds too much in memory (store.h) */
    uint64_t started_at;     /* mql_now_ms() at start, for $SYS uptime */
    uint64_t sys_next;       /* when $SYS is published next */
    uint64_t reap_lost_next; /* when mql_net_reap_lost runs next */
    /* authentication: passwd/acl are replaced on SIGHUP under lock + auth_lock (write);
     * password checks run outside lock with auth_lock (read) */
    pthread_rwlock_t auth_lock;
    mql_passwd *passwd;
    mql_acl *acl;
    mql_ratelimit *ratelimit;
    bool store_full_logged;
    bool store_refusing; /* acks were refused because a commit failed (episode, logged once) */
    struct mql_bridge *bridges; /* [cfg.n_bridges] */
};

/* A bridge (bridge.c): the local session that collects what goes out, the uplink
 * connection to the remote broker (we are its client), reconnect state. */
enum bridge_state {
    BR_IDLE = 0,   /* waiting for next_attempt */
    BR_DIALING,    /* TCP/TLS connect in progress */
    BR_CONNECTING, /* CONNECT sent, waiting for CONNACK */
    BR_UP,         /* CONNACK 0 received */
};

typedef struct mql_bridge {
    mql_broker *b;
    const mql_bridge_conf *conf; /* in b->cfg */
    mql_session *s;
    mql_conn *c; /* the uplink while dialed, else NULL */
    mql_dialer *dialers[MQL_MAX_BRIDGE_ADDRS];
    int addr; /* the address of the current or next attempt */
    enum bridge_state state;
    uint64_t next_attempt; /* mql_now_ms() of the next dial (BR_IDLE) */
    uint32_t failures;     /* attempts since the link was last up, for the backoff */
    uint64_t last_ping;
    uint16_t sub_pid;       /* packet id of our SUBSCRIBE */
    uint8_t remote_max_qos; /* from a v5 CONNACK, default 2 */
    bool warned;            /* the current outage was logged at warning level */
    bool stopped;
    char state_topic[128]; /* $SYS/broker/bridge/NAME/state */
    char remote_id[200];   /* remote_clientid, or mosquitto's default HOSTNAME.NAME */
    char note_topic[300];  /* notifications: "1"/"0" (mosquitto's), empty when off */
} mql_bridge;

/* conn.c */
/* Send a PUBLISH. Returns false when it was discarded because it exceeds the client's
 * Maximum Packet Size: the caller then treats it as delivered [MQTT-3.1.2-25]. */
bool mql_conn_send_publish(mql_conn *c, mql_msg *msg, uint8_t qos, bool retain, bool dup,
                           uint16_t pid, const uint32_t *ids, uint8_t n_ids);
void mql_conn_send_ack(mql_conn *c, uint8_t type, uint16_t pid, uint8_t reason);
void mql_conn_close(mql_conn *c, mql_err reason, const char *why);
void mql_conn_tick(mql_broker *b, uint64_t now);
extern const mql_link_ops mql_conn_link_ops;

void mql_conn_handle_publish(mql_conn *c, mql_publish *pub);
void mql_conn_handle_ack(mql_conn *c, uint8_t type, const mql_ack *ack);
/* End of a batch of received packets: send (or hand to the store) the collected acks. */
void mql_conn_flush_acks(mql_conn *c);
void mql_conn_unref(mql_conn *c);
bool mql_conn_send_packet(mql_conn *c, const mql_packet *pkt);
/* The peer broke the protocol: log it (naming the client or the bridge) and close. */
void mql_conn_violation(mql_conn *c, mql_err err, const char *why);
/* mql_link_ops.data of client connections and bridge uplinks. */
size_t mql_conn_data(void *ctx, const uint8_t *buf, size_t len, size_t *want);

/* bridge.c (under broker->lock unless said otherwise) */
/* Set up every configured bridge (after the store is loaded) and start connecting. */
MQL_MUST_CHECK mql_err mql_bridges_start(mql_broker *b, char *errbuf, size_t errlen);
/* One decoded packet from a bridge's remote broker (from mql_conn_data). */
void mql_bridge_packet(mql_conn *c, mql_packet *p);
/* Reconnects, CONNACK timeouts, keep alive. */
void mql_bridges_tick(mql_broker *b, uint64_t now);
/* Disconnect every uplink (at shutdown). */
void mql_bridges_stop(mql_broker *b);
/* Free the bridges: not under broker->lock (waits for dial callbacks). */
void mql_bridges_free(mql_broker *b);
/* The remote topic for a local one going out through br: written into buf (cap bytes) or,
 * when longer, into *heap (malloc'd, the caller frees it), and pointed to by *out. False
 * when no rule sends it (or out of memory). */
bool mql_bridge_map_out(const mql_bridge *br, mql_bytes topic, char *buf, size_t cap, char **heap,
                        mql_bytes *out);

/* broker.c */
/* One round of housekeeping at monotonic time `now` (ms): keepalive and CONNECT timeouts,
 * delayed wills, session expiry, $SYS, the store's fullness. Under broker->lock. The ticker
 * thread calls it every 250 ms; the connection fuzzer calls it directly with its own clock
 * (it never starts the ticker), which is why it is not static. */
void mql_broker_tick(mql_broker *b, uint64_t now);

#endif
