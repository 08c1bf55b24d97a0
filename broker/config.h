/*
 * config.h - mqlite configuration: defaults, and the mosquitto.conf-syntax file parser.
 *
 * Syntax: one option per line, `key value...`, '#' starts a comment line, blank lines are
 * ignored, values are separated by spaces/tabs. `listener PORT [ADDRESS]` starts a listener
 * block; per-listener keys (`protocol`, `certfile`, ...) apply to the most recent listener.
 * Key names follow mosquitto where the option exists there. Unknown keys and bad values are
 * errors that name file:line and what is wrong.
 *
 * Keys whose meaning depends on where they stand (as in mosquitto 2.0):
 * - `max_connections` before the first `listener` line limits the whole broker; inside a
 *   listener block it limits that listener. Both limits apply.
 * - `per_listener_settings true` (default false) makes `allow_anonymous` inside a listener
 *   block apply to that listener only; before the first listener line it is the value of
 *   every listener that does not set its own (mosquitto applies it to its default listener
 *   only). With `false` allow_anonymous is global wherever it stands. Per-listener
 *   `password_file` / `acl_file` are refused with a clear error (not implemented yet); with
 *   `per_listener_settings true` these keys are accepted before the first listener and then
 *   apply to every listener. per_listener_settings must come before any listener line and
 *   before allow_anonymous, password_file and acl_file, since it changes their meaning.
 */
#ifndef MQL_CONFIG_H
#define MQL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
/* the log levels (MQL_LOG_*, MQL_LOGT) and destinations (MQL_LOGD_*) */
#include "platform/log.h"

#define MQL_MAX_LISTENERS 16
#define MQL_PATH_MAX 256
#define MQL_MAX_LOG_FILES 4 /* `log_dest file PATH` lines */
#define MQL_USER_MAX 64     /* `user NAME`, with its NUL */
#define MQL_INCLUDE_DEPTH 4 /* `include_dir` nesting: a file included by an included file ... */

enum mql_client_id_conflict {
    MQL_CONFLICT_TAKEOVER = 0,   /* the newcomer takes over (the specification's rule) */
    MQL_CONFLICT_REJECT_NEW = 1, /* the newcomer is refused while the old one is live */
};

/* What a listener speaks (`protocol` key): MQTT over TCP, or MQTT over WebSocket. Either
 * runs over TLS when the listener has a certfile. */
enum mql_listener_protocol {
    MQL_LISTENER_MQTT = 0,
    MQL_LISTENER_WEBSOCKETS = 1,
};

enum mql_store_sync {
    MQL_STORE_SYNC_FULL = 0,   /* ack after commit, synchronous=FULL: survives power loss */
    MQL_STORE_SYNC_NORMAL = 1, /* ack after commit, synchronous=NORMAL: survives kill -9 */
    MQL_STORE_SYNC_OFF = 2,    /* ack at once; the last commit window may be lost */
};

/* Bridges (`connection NAME` blocks, mosquitto's keys). */
#define MQL_MAX_BRIDGES 8
#define MQL_MAX_BRIDGE_TOPICS 32
#define MQL_MAX_BRIDGE_ADDRS 4
#define MQL_BRIDGE_NAME_MAX 64
#define MQL_BRIDGE_PATTERN_MAX 128 /* a `topic` pattern, with its NUL */
#define MQL_BRIDGE_PREFIX_MAX 64   /* a local or remote prefix, with its NUL */

enum mql_bridge_dir {
    MQL_BRIDGE_OUT = 1,  /* local -> remote */
    MQL_BRIDGE_IN = 2,   /* remote -> local */
    MQL_BRIDGE_BOTH = 3, /* both ways */
};

/* `topic PATTERN [out|in|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`: the local topic is
 * LOCAL_PREFIX + topic, the remote one REMOTE_PREFIX + topic, for topics matching PATTERN.
 * A PATTERN of "" maps exactly one topic: the prefixes themselves. */
typedef struct mql_bridge_topic {
    char pattern[MQL_BRIDGE_PATTERN_MAX];
    char local_prefix[MQL_BRIDGE_PREFIX_MAX];
    char remote_prefix[MQL_BRIDGE_PREFIX_MAX];
    uint8_t dir; /* enum mql_bridge_dir */
    uint8_t qos;
    int line;
} mql_bridge_topic;

typedef struct mql_bridge_conf {
    char name[MQL_BRIDGE_NAME_MAX];
    int line;                                  /* of the `connection` key */
    char addresses[MQL_MAX_BRIDGE_ADDRS][128]; /* "HOST:PORT", tried in turn */
    int n_addresses;
    uint8_t protocol_version;  /* 4 (mqttv311, default) or 5 (mqttv50) */
    char remote_clientid[128]; /* default "HOSTNAME.NAME" */
    char local_clientid[128];  /* the local session; default "$bridge/NAME" */
    char remote_username[128];
    char remote_password[128];
    bool has_username, has_password;
    bool cleansession;                 /* default false */
    uint32_t session_expiry;           /* v5 remote session, default 0xFFFFFFFF */
    uint16_t keepalive;                /* seconds, default 60 */
    uint32_t restart_min, restart_max; /* seconds, default 5 30 */
    char cafile[MQL_PATH_MAX];         /* TLS when cafile or capath is set */
    char capath[MQL_PATH_MAX];
    char certfile[MQL_PATH_MAX];
    char keyfile[MQL_PATH_MAX];
    bool insecure;               /* skip the host name check */
    char alpn[256];              /* ALPN protocols offered, "a,b"; "" = none */
    bool try_private;            /* 3.1.1: the bridge flag, default true */
    bool outgoing_retain;        /* keep the retain flag going out, default true */
    uint64_t queue_max_bytes;    /* payload bytes queued, default 64 MiB */
    uint32_t queue_max_messages; /* default 0 = no limit */
    uint16_t max_inflight;       /* QoS 1/2 in flight to the remote, default 100 */
    bool notifications;          /* mosquitto's "1"/"0" state messages, default true */
    bool notifications_local_only;
    char notification_topic[256]; /* default $SYS/broker/connection/REMOTE_CLIENTID/state */
    mql_bridge_topic topics[MQL_MAX_BRIDGE_TOPICS];
    int n_topics;
} mql_bridge_conf;

typedef struct mql_listener_conf {
    uint16_t port;
    char address[64];                    /* bind address; "" means all interfaces (0.0.0.0) */
    int line;                            /* line of the `listener` key, for messages */
    enum mql_listener_protocol protocol; /* default MQL_LISTENER_MQTT */
    char certfile[MQL_PATH_MAX];         /* TLS when set (with keyfile) */
    char keyfile[MQL_PATH_MAX];
    char keyfile_password[128];    /* for an encrypted keyfile */
    char cafile[MQL_PATH_MAX];     /* CA for client certificates */
    bool require_certificate;      /* mutual TLS */
    bool use_identity_as_username; /* the client certificate's CN is the user name */
    char websockets_path[128];     /* default "/mqtt" */
    int32_t max_connections;       /* connections on this listener; default -1 = no limit */
    int8_t allow_anonymous;        /* per_listener_settings true: 0/1 set in this block;
                                      -1 = not set here (mql_config_allow_anonymous) */
} mql_listener_conf;

/* One `log_dest file PATH` line. */
typedef struct mql_log_file_conf {
    char path[MQL_PATH_MAX];
    char where[MQL_PATH_MAX + 16]; /* "FILE:LINE" of the log_dest line, for messages */
} mql_log_file_conf;

typedef struct mql_config {
    mql_listener_conf listeners[MQL_MAX_LISTENERS];
    int n_listeners;
    bool allow_anonymous;     /* default: true in local-only mode, false once a listener is
                                 configured (mosquitto 2.0); see mql_config_finish_listeners */
    bool allow_anonymous_set; /* parser state: a global `allow_anonymous` line was seen */
    bool local_only;          /* no listener was configured: mql_config_finish_listeners
                                 added loopback ones (mosquitto 2.0's "local only" mode) */
    uint16_t max_keepalive;   /* default 65535; v5 clients asking more get Server Keep Alive */
    uint32_t max_packet_size; /* default 0 = the protocol maximum; the file accepts
                                 20..268435460 bytes of a whole packet (mosquitto refuses
                                 0 and values below 20) */
    uint32_t max_inflight_messages; /* outbound QoS 1/2 window per client, default 20;
                                       0 = no limit (as mosquitto); the file accepts 0..65535 */
    uint32_t max_queued_messages;   /* per session, default 1000; 0 = no limit */
    uint64_t max_queued_bytes;      /* payload bytes queued per session, default 0 = no limit */
    int32_t max_connections;        /* whole broker, default -1 = no limit */
    bool per_listener_settings;     /* default false (see the top of this file) */
    bool security_keys_seen;        /* parser state: allow_anonymous, password_file or
                                       acl_file was set (per_listener_settings must precede) */
    uint32_t connect_timeout;       /* seconds from accept to a complete CONNECT, default 10;
                                       the file accepts 1..3600 */
    bool retain_available;          /* default true */
    bool shared_subscriptions;      /* $share/ filters allowed, default true */
    bool subscription_identifiers;  /* v5 Subscription Identifiers allowed, default true */
    bool wildcard_subscriptions;    /* filters with + or # allowed, default true */
    uint8_t max_qos;                /* default 2 */
    uint32_t log_types;             /* default MQL_LOGT_DEFAULT */
    bool log_types_set;             /* parser state: a `log_type` line was seen, so the next
                                       ones add to the set instead of replacing the default */
    uint32_t max_session_expiry;    /* seconds a v3.1.1 persistent session lasts; 0 = forever */
    enum mql_client_id_conflict client_id_conflict; /* default takeover */
    bool persistence;                               /* default false */
    char persistence_location[MQL_PATH_MAX];        /* default "." */
    enum mql_store_sync store_sync;                 /* default full */
    uint32_t store_commit_window_ms;                /* default 20 */
    uint64_t store_max_bytes;                       /* default 0 = no limit */
    char password_file[MQL_PATH_MAX];               /* "" = none */
    char acl_file[MQL_PATH_MAX];                    /* "" = none */
    uint32_t sys_interval;           /* seconds between $SYS updates, default 10; 0 = off */
    uint16_t max_topic_alias;        /* aliases a v5 client may set towards us, default 10 */
    uint16_t max_topic_alias_broker; /* aliases we assign towards a v5 client (bounded by its
                                        Topic Alias Maximum), default 10; 0 = none */
    uint32_t log_dests; /* MQL_LOGD_* bits, default MQL_LOGD_STDERR; `log_dest none` = 0 */
    mql_log_file_conf log_files[MQL_MAX_LOG_FILES]; /* `log_dest file PATH` */
    int n_log_files;
    bool log_dests_set;          /* parser state: a `log_dest` line was seen, so the next
                                    ones add destinations instead of replacing stderr */
    char pid_file[MQL_PATH_MAX]; /* `pid_file PATH`, default "" = none */
    char user[MQL_USER_MAX];     /* `user NAME`: drop root to NAME after start; "" = stay */
    mql_bridge_conf bridges[MQL_MAX_BRIDGES];
    int n_bridges;
    char include_dir[MQL_PATH_MAX]; /* parser state: the directory of an `include_dir` line
                                       that mql_config_load has yet to read ("" = none) */
} mql_config;

/* Fill cfg with the defaults above and no listeners. */
void mql_config_defaults(mql_config *cfg);

/* mql_config_finish_listeners applies mosquitto 2.0's listener defaults once the file (if
 * any) is loaded, `port` being the command line's -p (0 = none):
 * - no listener configured: "local only" mode (cfg->local_only): listeners on 127.0.0.1
 *   and, when ipv6_loopback, ::1, on `port` or 1883; anonymous clients are allowed unless
 *   the file said `allow_anonymous false` (mosquitto ignores that line in this mode; we
 *   honour it).
 * - listeners configured: `allow_anonymous` defaults to false; -p adds one more listener
 *   on 127.0.0.1:port.
 * Returns MQL_OK, or MQL_E_CONFIG with errbuf saying there is no room for the listener. */
MQL_MUST_CHECK mql_err mql_config_finish_listeners(mql_config *cfg, uint16_t port,
                                                   bool ipv6_loopback, char *errbuf, size_t errlen);

/* Fill one listener with its defaults (mqtt, no TLS, no limit, allow_anonymous inherited)
 * for port and address ("" = all interfaces; truncated to fit). line is for messages. */
void mql_listener_defaults(mql_listener_conf *l, uint16_t port, const char *address, int line);

/* Whether listener `index` (0..n_listeners-1) admits clients without a user name: its own
 * allow_anonymous when per_listener_settings set one there, else the global value. */
bool mql_config_allow_anonymous(const mql_config *cfg, int index);

/*
 * Parse the file at path into cfg (which should hold defaults). `include_dir DIR` lines read
 * every file of DIR whose name ends in ".conf", in byte order of their names, at the point
 * of the line (included files may use include_dir again, MQL_INCLUDE_DEPTH levels deep).
 * Relative paths are taken relative to the current directory, as mosquitto does.
 * On error returns
 * MQL_E_CONFIG (bad content) or MQL_E_IO (cannot read) and writes one line into errbuf
 * such as "etc/mqlite.conf:12: unknown option 'lisener'" or
 * "etc/mqlite.conf:3: max_keepalive: '70000' is not a number from 0 to 65535".
 * cfg may be partly filled on error.
 */
MQL_MUST_CHECK mql_err mql_config_load(mql_config *cfg, const char *path, char *errbuf,
                                       size_t errlen);

/* Parse one line (without the newline), as the file parser does; `file` and `line` are only
 * used in messages. An `include_dir` line is only checked and recorded in cfg->include_dir:
 * reading the directory is left to mql_config_load (this function does no I/O). Exposed for
 * tests. */
MQL_MUST_CHECK mql_err mql_config_line(mql_config *cfg, const char *text, const char *file,
                                       int line, char *errbuf, size_t errlen);

#endif
