/*
 * config.c - the mosquitto.conf-syntax configuration parser.
 *
 * Purpose: turn etc/mqlite.conf into an mql_config, or into one error line that an operator
 * can act on without reading the source: "FILE:LINE: KEY: 'VALUE' is not ... (allowed)".
 *
 * Design:
 * - One table (`options`) lists every key we implement: its name, how many values it takes,
 *   a phrase saying what is allowed (used in every message about it), and a setter. Keys of
 *   mosquitto that we do not implement yet are listed separately (`mosquitto_only`) so the
 *   operator is told "not supported by this version" rather than "unknown".
 * - Lines are split on spaces and tabs into a fixed array of tokens held in a copy on the
 *   stack; there is no allocation in mql_config_line. mql_config_load allocates only the
 *   line buffer of getline().
 * - Numbers are parsed strictly: decimal digits only, a leading '-' only where the key allows
 *   negative values, no '+', no spaces, no trailing junk, no overflow.
 * - `log_type` follows mosquitto: the first occurrence replaces the default set, later ones
 *   add to it; `none` and `all` replace the whole set. cfg->log_types_set carries the
 *   "seen already" state between lines. `log_dest` works the same way (cfg->log_dests_set):
 *   the first line replaces the default (stderr), later ones add destinations.
 * - `include_dir DIR` is the only key that needs I/O: mql_config_line records DIR in
 *   cfg->include_dir and mql_config_load reads DIR's *.conf files right after that line,
 *   in byte order of their names (as mosquitto), so the line parser stays free of I/O.
 *
 * Threading: none; the functions touch only the cfg they are given. Performance is not a
 * concern (a few dozen lines read once at start or on SIGHUP).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <sys/types.h>

#define LINE_MAX_CHARS 1023 /* longest accepted line, without the newline */
#define MAX_TOKENS 8        /* a key plus values; more is always "extra values" */

/* The largest whole MQTT packet: 1 byte of type, 4 of Remaining Length, 268435455 of body. */
#define PACKET_SIZE_MAX 268435460LL

/* One line being parsed: where it came from, its tokens and where the message goes. */
struct ctx {
    mql_config *cfg;
    const char *file;
    int line;
    char *errbuf;
    size_t errlen;
    const char *key;
    const char *vals[MAX_TOKENS - 1];
    int nvals;
};

struct option;
typedef mql_err (*setter_fn)(const struct option *opt, struct ctx *c);

struct option {
    const char *name;
    int min_vals;
    int max_vals;
    const char *expect; /* what is allowed, completing "expected ..." in messages */
    setter_fn set;
    long long lo, hi; /* range, for numeric setters */
    size_t off;       /* offset of the field in mql_config, for generic setters */
};

/* Write "FILE:LINE: " + the formatted text into the error buffer; returns MQL_E_CONFIG. */
static mql_err fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static mql_err fail(struct ctx *c, const char *fmt, ...)
{
    if (c->errbuf != NULL && c->errlen > 0) {
        int n = snprintf(c->errbuf, c->errlen, "%s:%d: ", c->file, c->line);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->errbuf + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return MQL_E_CONFIG;
}

/*
 * Parse s as a decimal integer in [lo, hi]. Only digits, with one leading '-' when lo < 0.
 * Returns false for anything else (empty, '+', spaces, hex, trailing junk, out of range).
 * OUT: *out on success.
 */
static bool parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    bool neg = false;
    unsigned long long v = 0;

    if (*s == '-') {
        if (lo >= 0)
            return false;
        neg = true;
        s++;
    }
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned)(*s - '0');
        if (v > (unsigned long long)LLONG_MAX / 2) /* far beyond any range we use */
            return false;
    }
    if (neg && v == 0)
        return false; /* "-0" */
    long long r = neg ? -(long long)v : (long long)v;
    if (r < lo || r > hi)
        return false;
    *out = r;
    return true;
}

static mql_err bad_value(const struct option *opt, struct ctx *c, const char *val)
{
    return fail(c, "%s: '%s' is not %s", opt->name, val, opt->expect);
}

static mql_err get_number(const struct option *opt, struct ctx *c, long long *out)
{
    if (!parse_ll(c->vals[0], opt->lo, opt->hi, out))
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

#define FIELD(c, off, type) ((type *)((char *)(c)->cfg + (off)))

static mql_err set_u8(const struct option *opt, struct ctx *c)
{
    long long v = 0;
    mql_err rc = get_number(opt, c, &v);
    if (rc == MQL_OK)
        *FIELD(c, opt->off, uint8_t) = (uint8_t)v;
    return rc;
}

static mql_err set_u16(const struct option *opt, struct ctx *c)
{
    long long v = 0;
    mql_err rc = get_number(opt, c, &v);
    if (rc == MQL_OK)
        *FIELD(c, opt->off, uint16_t) = (uint16_t)v;
    return rc;
}

static mql_err set_u32(const struct option *opt, struct ctx *c)
{
    long long v = 0;
    mql_err rc = get_number(opt, c, &v);
    if (rc == MQL_OK)
        *FIELD(c, opt->off, uint32_t) = (uint32_t)v;
    return rc;
}

static mql_err set_u64(const struct option *opt, struct ctx *c)
{
    long long v = 0;
    mql_err rc = get_number(opt, c, &v);
    if (rc == MQL_OK)
        *FIELD(c, opt->off, uint64_t) = (uint64_t)v;
    return rc;
}

static mql_err set_path(const struct option *opt, struct ctx *c)
{
    char *field = FIELD(c, opt->off, char);
    if (strlen(c->vals[0]) >= MQL_PATH_MAX)
        return fail(c, "%s: the path is longer than %d characters", opt->name, MQL_PATH_MAX - 1);
    snprintf(field, MQL_PATH_MAX, "%s", c->vals[0]);
    return MQL_OK;
}

/* `log_dest stderr|stdout|syslog|none` or `log_dest file PATH` (mosquitto syntax). The
 * first log_dest line replaces the default (stderr); `none` replaces every destination. */
static mql_err set_log_dest(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    const char *v = c->vals[0];
    uint32_t bit = 0;

    if (strcmp(v, "file") != 0 && c->nvals > 1)
        return fail(c, "%s: unexpected extra value '%s' (only 'file' takes a path)", opt->name,
                    c->vals[1]);
    if (strcmp(v, "stderr") == 0)
        bit = MQL_LOGD_STDERR;
    else if (strcmp(v, "stdout") == 0)
        bit = MQL_LOGD_STDOUT;
    else if (strcmp(v, "syslog") == 0)
        bit = MQL_LOGD_SYSLOG;
    else if (strcmp(v, "topic") == 0 || strcmp(v, "dlt") == 0)
        return fail(c, "%s: '%s' is not supported by this version of mqlite (expected %s)",
                    opt->name, v, opt->expect);
    else if (strcmp(v, "none") != 0 && strcmp(v, "file") != 0)
        return bad_value(opt, c, v);

    if (strcmp(v, "file") == 0) {
        if (c->nvals < 2)
            return fail(c, "%s: file: missing path (expected log_dest file PATH)", opt->name);
        const char *path = c->vals[1];
        if (strlen(path) >= MQL_PATH_MAX)
            return fail(c, "%s: the path is longer than %d characters", opt->name,
                        MQL_PATH_MAX - 1);
        int n = cfg->log_dests_set ? cfg->n_log_files : 0;
        for (int i = 0; i < n; i++) {
            if (strcmp(cfg->log_files[i].path, path) == 0)
                return fail(c, "%s: file '%s' is already a destination (%s)", opt->name, path,
                            cfg->log_files[i].where);
        }
        if (n >= MQL_MAX_LOG_FILES)
            return fail(c, "%s: too many log files (at most %d)", opt->name, MQL_MAX_LOG_FILES);
        mql_log_file_conf *f = &cfg->log_files[n];
        snprintf(f->path, sizeof(f->path), "%s", path);
        snprintf(f->where, sizeof(f->where), "%s:%d", c->file, c->line);
        if (!cfg->log_dests_set)
            cfg->log_dests = 0;
        cfg->n_log_files = n + 1;
    } else if (bit == 0 || !cfg->log_dests_set) { /* none, or the first log_dest line */
        cfg->log_dests = bit;
        cfg->n_log_files = 0;
    } else {
        cfg->log_dests |= bit;
    }
    cfg->log_dests_set = true;
    return MQL_OK;
}

/* `user NAME`: a portable user name (letters, digits, '.', '_', '-', not starting with '-';
 * a final '$' as some systems allow). Whether it exists is checked when the broker drops
 * root privileges, on the machine it runs on. */
static mql_err set_user(const struct option *opt, struct ctx *c)
{
    const char *v = c->vals[0];
    size_t len = strlen(v);

    if (len >= MQL_USER_MAX)
        return fail(c, "%s: '%s' is longer than %d characters", opt->name, v, MQL_USER_MAX - 1);
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || (ch == '-' && i > 0) ||
                  (ch == '$' && i == len - 1);
        if (!ok)
            return bad_value(opt, c, v);
    }
    memcpy(c->cfg->user, v, len + 1);
    return MQL_OK;
}

/* `include_dir DIR`: only recorded here; mql_config_load reads the directory. */
static mql_err set_include_dir(const struct option *opt, struct ctx *c)
{
    if (strlen(c->vals[0]) >= MQL_PATH_MAX)
        return fail(c, "%s: the path is longer than %d characters", opt->name, MQL_PATH_MAX - 1);
    snprintf(c->cfg->include_dir, sizeof(c->cfg->include_dir), "%s", c->vals[0]);
    return MQL_OK;
}

static mql_err set_store_sync(const struct option *opt, struct ctx *c)
{
    if (strcmp(c->vals[0], "full") == 0)
        c->cfg->store_sync = MQL_STORE_SYNC_FULL;
    else if (strcmp(c->vals[0], "normal") == 0)
        c->cfg->store_sync = MQL_STORE_SYNC_NORMAL;
    else if (strcmp(c->vals[0], "off") == 0)
        c->cfg->store_sync = MQL_STORE_SYNC_OFF;
    else
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

static mql_err get_bool(const struct option *opt, struct ctx *c, bool *out);

static mql_err set_bool(const struct option *opt, struct ctx *c)
{
    return get_bool(opt, c, FIELD(c, opt->off, bool));
}

static mql_err set_listener(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    const char *address = c->nvals > 1 ? c->vals[1] : "";
    long long port;

    if (!parse_ll(c->vals[0], 1, 65535, &port))
        return fail(c, "%s: '%s' is not a port number from 1 to 65535", opt->name, c->vals[0]);
    if (strlen(address) >= sizeof(cfg->listeners[0].address))
        return fail(c, "%s: address '%s' is too long (at most %zu characters)", opt->name, address,
                    sizeof(cfg->listeners[0].address) - 1);
    for (int i = 0; i < cfg->n_listeners; i++) {
        const mql_listener_conf *l = &cfg->listeners[i];
        if (l->port == port && strcmp(l->address, address) == 0)
            return fail(c, "%s: listener %lld%s%s duplicates the listener on line %d", opt->name,
                        port, *address ? " " : "", address, l->line);
    }
    if (cfg->n_listeners >= MQL_MAX_LISTENERS)
        return fail(c, "%s: too many listeners (at most %d)", opt->name, MQL_MAX_LISTENERS);

    mql_listener_defaults(&cfg->listeners[cfg->n_listeners++], (uint16_t)port, address, c->line);
    return MQL_OK;
}

/* Parse "true" / "false" (mosquitto accepts exactly these two words). */
static mql_err get_bool(const struct option *opt, struct ctx *c, bool *out)
{
    if (strcmp(c->vals[0], "true") == 0)
        *out = true;
    else if (strcmp(c->vals[0], "false") == 0)
        *out = false;
    else
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

/* `max_connections N`: before the first listener line the whole broker's limit, inside a
 * listener block that listener's (mosquitto has only the per-listener one). */
static mql_err set_max_connections(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    long long v = 0;
    mql_err rc = get_number(opt, c, &v);
    if (rc != MQL_OK)
        return rc;
    if (cfg->n_listeners > 0)
        cfg->listeners[cfg->n_listeners - 1].max_connections = (int32_t)v;
    else
        cfg->max_connections = (int32_t)v;
    return MQL_OK;
}

/* `allow_anonymous`: per listener inside a listener block with per_listener_settings true,
 * global otherwise. */
static mql_err set_allow_anonymous(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    bool v = false;
    mql_err rc = get_bool(opt, c, &v);
    if (rc != MQL_OK)
        return rc;
    cfg->security_keys_seen = true;
    if (cfg->per_listener_settings && cfg->n_listeners > 0) {
        cfg->listeners[cfg->n_listeners - 1].allow_anonymous = v ? 1 : 0;
    } else {
        cfg->allow_anonymous = v;
        cfg->allow_anonymous_set = true;
    }
    return MQL_OK;
}

/* `password_file` / `acl_file`: one file for every listener. Inside a listener block with
 * per_listener_settings true the operator asks for a file of that listener only, which
 * this version cannot do: refuse rather than apply it to every listener. */
static mql_err set_auth_path(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    if (cfg->per_listener_settings && cfg->n_listeners > 0)
        return fail(c,
                    "%s: a %s per listener (per_listener_settings true) is not supported by "
                    "this version of mqlite; put %s before the first 'listener' line, where it "
                    "applies to every listener",
                    opt->name, opt->name, opt->name);
    cfg->security_keys_seen = true;
    return set_path(opt, c);
}

/* `per_listener_settings`: it changes what allow_anonymous, password_file and acl_file mean,
 * so it may not change after a listener or one of those keys (mosquitto recommends putting
 * it first; a silent change of meaning half way through a file helps nobody). */
static mql_err set_per_listener_settings(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    bool v = false;
    mql_err rc = get_bool(opt, c, &v);
    if (rc != MQL_OK)
        return rc;
    if (v != cfg->per_listener_settings && (cfg->n_listeners > 0 || cfg->security_keys_seen))
        return fail(c,
                    "%s: must come before the first 'listener' line and before allow_anonymous, "
                    "password_file and acl_file (it changes what they mean)",
                    opt->name);
    cfg->per_listener_settings = v;
    return MQL_OK;
}

static mql_err set_protocol(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;

    if (cfg->n_listeners == 0)
        return fail(c, "%s: must follow a 'listener' line (it applies to the listener above it)",
                    opt->name);
    if (strcmp(c->vals[0], "websockets") == 0)
        cfg->listeners[cfg->n_listeners - 1].protocol = MQL_LISTENER_WEBSOCKETS;
    else if (strcmp(c->vals[0], "mqtt") == 0)
        cfg->listeners[cfg->n_listeners - 1].protocol = MQL_LISTENER_MQTT;
    else
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

/* A per-listener string option (opt->off is the offset in mql_listener_conf, opt->hi the
 * field's size). */
static mql_err set_listener_str(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    if (cfg->n_listeners == 0)
        return fail(c, "%s: must follow a 'listener' line (it applies to the listener above it)",
                    opt->name);
    if (strlen(c->vals[0]) >= (size_t)opt->hi)
        return fail(c, "%s: longer than %lld characters", opt->name, opt->hi - 1);
    char *field = (char *)&cfg->listeners[cfg->n_listeners - 1] + opt->off;
    snprintf(field, (size_t)opt->hi, "%s", c->vals[0]);
    return MQL_OK;
}

/* A per-listener true/false option (opt->off is the offset of the bool in
 * mql_listener_conf). */
static mql_err set_listener_bool(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    if (cfg->n_listeners == 0)
        return fail(c, "%s: must follow a 'listener' line (it applies to the listener above it)",
                    opt->name);
    bool *field = (bool *)((char *)&cfg->listeners[cfg->n_listeners - 1] + opt->off);
    if (strcmp(c->vals[0], "true") == 0)
        *field = true;
    else if (strcmp(c->vals[0], "false") == 0)
        *field = false;
    else
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

static mql_err set_log_type(const struct option *opt, struct ctx *c)
{
    static const struct {
        const char *name;
        uint32_t bits;
        bool replace; /* replaces the whole set instead of adding to it */
    } types[] = {
        {"error", MQL_LOGT(MQL_LOG_ERROR), false},
        {"warning", MQL_LOGT(MQL_LOG_WARNING), false},
        {"notice", MQL_LOGT(MQL_LOG_NOTICE), false},
        {"information", MQL_LOGT(MQL_LOG_INFO), false},
        {"debug", MQL_LOGT(MQL_LOG_DEBUG), false},
        {"all",
         MQL_LOGT(MQL_LOG_ERROR) | MQL_LOGT(MQL_LOG_WARNING) | MQL_LOGT(MQL_LOG_NOTICE) |
             MQL_LOGT(MQL_LOG_INFO) | MQL_LOGT(MQL_LOG_DEBUG),
         true},
        {"none", 0, true},
    };
    mql_config *cfg = c->cfg;

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(c->vals[0], types[i].name) != 0)
            continue;
        if (!cfg->log_types_set || types[i].replace)
            cfg->log_types = 0;
        cfg->log_types_set = true;
        cfg->log_types |= types[i].bits;
        return MQL_OK;
    }
    if (strcmp(c->vals[0], "subscribe") == 0 || strcmp(c->vals[0], "unsubscribe") == 0 ||
        strcmp(c->vals[0], "websockets") == 0 || strcmp(c->vals[0], "internal") == 0)
        return fail(c, "%s: '%s' is not supported by this version of mqlite (expected %s)",
                    opt->name, c->vals[0], opt->expect);
    return bad_value(opt, c, c->vals[0]);
}

static mql_err set_client_id_conflict(const struct option *opt, struct ctx *c)
{
    if (strcmp(c->vals[0], "takeover") == 0)
        c->cfg->client_id_conflict = MQL_CONFLICT_TAKEOVER;
    else if (strcmp(c->vals[0], "reject_new") == 0)
        c->cfg->client_id_conflict = MQL_CONFLICT_REJECT_NEW;
    else
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

/* ---- bridges ---- */

/* The bridge the line belongs to: the last `connection` block. */
static mql_bridge_conf *cur_bridge(const struct option *opt, struct ctx *c)
{
    if (c->cfg->n_bridges == 0) {
        (void)fail(c, "%s: must follow a 'connection' line (it applies to the bridge above it)",
                   opt->name);
        return NULL;
    }
    return &c->cfg->bridges[c->cfg->n_bridges - 1];
}

#define BFIELD(br, off, type) ((type *)((char *)(br) + (off)))

/* mosquitto writes an empty value as "" (a prefix or pattern that is empty). */
static const char *unquote_empty(const char *v)
{
    return strcmp(v, "\"\"") == 0 ? "" : v;
}

static bool name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

static mql_err set_connection(const struct option *opt, struct ctx *c)
{
    mql_config *cfg = c->cfg;
    const char *v = c->vals[0];
    size_t len = strlen(v);
    if (len >= MQL_BRIDGE_NAME_MAX)
        return fail(c, "%s: '%s' is longer than %d characters", opt->name, v,
                    MQL_BRIDGE_NAME_MAX - 1);
    for (size_t i = 0; i < len; i++)
        if (!name_char_ok(v[i]))
            return bad_value(opt, c, v);
    for (int i = 0; i < cfg->n_bridges; i++)
        if (strcmp(cfg->bridges[i].name, v) == 0)
            return fail(c, "%s: a bridge named '%s' exists already (line %d)", opt->name, v,
                        cfg->bridges[i].line);
    if (cfg->n_bridges >= MQL_MAX_BRIDGES)
        return fail(c, "%s: too many bridges (at most %d)", opt->name, MQL_MAX_BRIDGES);
    mql_bridge_conf *br = &cfg->bridges[cfg->n_bridges++];
    memset(br, 0, sizeof(*br));
    memcpy(br->name, v, len + 1);
    br->line = c->line;
    br->protocol_version = 4;
    br->session_expiry = UINT32_MAX;
    br->keepalive = 60;
    br->restart_min = 5;
    br->restart_max = 30;
    br->try_private = true;
    br->outgoing_retain = true;
    br->queue_max_bytes = 64u * 1024u * 1024u;
    br->max_inflight = 100;
    br->notifications = true;
    return MQL_OK;
}

/* `address HOST[:PORT] [HOST[:PORT]...]` (and mosquitto's `addresses`): tried in turn on
 * each reconnect; the port defaults to 1883. */
static mql_err set_bridge_address(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    if (br == NULL)
        return MQL_E_CONFIG;
    if (br->n_addresses != 0)
        return fail(c, "%s: bridge '%s' has an address already", opt->name, br->name);
    for (int i = 0; i < c->nvals; i++) {
        const char *v = c->vals[i];
        const char *colon = strrchr(v, ':');
        long long port;
        if (strlen(v) + 6 >= sizeof(br->addresses[0]))
            return fail(c, "%s: '%s' is too long", opt->name, v);
        if (v[0] == '\0' || v[0] == ':' || v[0] == '[')
            return bad_value(opt, c, v);
        if (colon != NULL && strchr(v, ':') == colon) {
            if (!parse_ll(colon + 1, 1, 65535, &port))
                return fail(c, "%s: '%s': the port is not a number from 1 to 65535", opt->name, v);
            snprintf(br->addresses[i], sizeof(br->addresses[i]), "%s", v);
        } else if (colon != NULL) {
            return fail(c, "%s: '%s': IPv6 addresses are not supported here, use a host name",
                        opt->name, v);
        } else {
            snprintf(br->addresses[i], sizeof(br->addresses[i]), "%s:1883", v);
        }
    }
    br->n_addresses = c->nvals;
    return MQL_OK;
}

/* A topic filter made of prefix + pattern must be valid: levels with '+' or '#' alone,
 * '#' last, no NUL. Prefixes must not hold wildcards. */
static bool bridge_filter_ok(const char *prefix, const char *pattern)
{
    char f[MQL_BRIDGE_PREFIX_MAX + MQL_BRIDGE_PATTERN_MAX];
    snprintf(f, sizeof(f), "%s%s", prefix, pattern);
    size_t n = strlen(f);
    if (n == 0 || strpbrk(prefix, "+#") != NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool start = i == 0 || f[i - 1] == '/';
        bool end = i + 1 == n || f[i + 1] == '/';
        if ((f[i] == '+' || f[i] == '#') && !(start && end))
            return false;
        if (f[i] == '#' && i + 1 != n)
            return false;
    }
    return true;
}

static mql_err set_bridge_topic(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    if (br == NULL)
        return MQL_E_CONFIG;
    if (br->n_topics >= MQL_MAX_BRIDGE_TOPICS)
        return fail(c, "%s: too many topic lines for bridge '%s' (at most %d)", opt->name, br->name,
                    MQL_MAX_BRIDGE_TOPICS);
    if (c->nvals == 4)
        return fail(c, "%s: a local prefix needs a remote prefix too (use \"\" for none)",
                    opt->name);
    mql_bridge_topic t;
    memset(&t, 0, sizeof(t));
    t.line = c->line;
    t.dir = MQL_BRIDGE_OUT;
    const char *pattern = unquote_empty(c->vals[0]);
    if (strlen(pattern) >= sizeof(t.pattern))
        return fail(c, "%s: pattern is longer than %zu characters", opt->name,
                    sizeof(t.pattern) - 1);
    memcpy(t.pattern, pattern, strlen(pattern) + 1);
    if (c->nvals > 1) {
        const char *d = c->vals[1];
        if (strcmp(d, "out") == 0)
            t.dir = MQL_BRIDGE_OUT;
        else if (strcmp(d, "in") == 0)
            t.dir = MQL_BRIDGE_IN;
        else if (strcmp(d, "both") == 0)
            t.dir = MQL_BRIDGE_BOTH;
        else
            return fail(c, "%s: direction '%s' is not out, in or both", opt->name, d);
    }
    if (c->nvals > 2) {
        long long q;
        if (!parse_ll(c->vals[2], 0, 2, &q))
            return fail(c, "%s: QoS '%s' is not 0, 1 or 2", opt->name, c->vals[2]);
        t.qos = (uint8_t)q;
    }
    if (c->nvals > 3) {
        const char *lp = unquote_empty(c->vals[3]), *rp = unquote_empty(c->vals[4]);
        if (strlen(lp) >= sizeof(t.local_prefix) || strlen(rp) >= sizeof(t.remote_prefix))
            return fail(c, "%s: a prefix is longer than %zu characters", opt->name,
                        sizeof(t.local_prefix) - 1);
        memcpy(t.local_prefix, lp, strlen(lp) + 1);
        memcpy(t.remote_prefix, rp, strlen(rp) + 1);
    }
    if (!bridge_filter_ok(t.local_prefix, t.pattern) ||
        !bridge_filter_ok(t.remote_prefix, t.pattern))
        return fail(c,
                    "%s: '%s%s' / '%s%s' is not a valid topic filter (wildcards only as whole "
                    "levels, '#' last, none in prefixes)",
                    opt->name, t.local_prefix, t.pattern, t.remote_prefix, t.pattern);
    br->topics[br->n_topics++] = t;
    return MQL_OK;
}

static mql_err set_bridge_protocol(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    if (br == NULL)
        return MQL_E_CONFIG;
    if (strcmp(c->vals[0], "mqttv311") == 0)
        br->protocol_version = 4;
    else if (strcmp(c->vals[0], "mqttv50") == 0)
        br->protocol_version = 5;
    else if (strcmp(c->vals[0], "mqttv31") == 0)
        return fail(c, "%s: 'mqttv31' is not supported by this version of mqlite (expected %s)",
                    opt->name, opt->expect);
    else
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

/* A per-bridge string (opt->off: offset in mql_bridge_conf, opt->hi: the field's size);
 * opt->lo, when not 0, is the offset of a bool set to true ("was given"). */
static mql_err set_bridge_str(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    if (br == NULL)
        return MQL_E_CONFIG;
    if (strlen(c->vals[0]) >= (size_t)opt->hi)
        return fail(c, "%s: longer than %lld characters", opt->name, opt->hi - 1);
    snprintf(BFIELD(br, opt->off, char), (size_t)opt->hi, "%s", c->vals[0]);
    if (opt->lo != 0)
        *BFIELD(br, (size_t)opt->lo, bool) = true;
    return MQL_OK;
}

static mql_err set_bridge_bool(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    if (br == NULL)
        return MQL_E_CONFIG;
    if (strcmp(c->vals[0], "true") == 0)
        *BFIELD(br, opt->off, bool) = true;
    else if (strcmp(c->vals[0], "false") == 0)
        *BFIELD(br, opt->off, bool) = false;
    else
        return bad_value(opt, c, c->vals[0]);
    return MQL_OK;
}

/* A per-bridge number; the field's width is taken from opt->hi. */
static mql_err set_bridge_num(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    long long v;
    if (br == NULL)
        return MQL_E_CONFIG;
    if (!parse_ll(c->vals[0], opt->lo, opt->hi, &v))
        return bad_value(opt, c, c->vals[0]);
    if (opt->hi <= UINT16_MAX)
        *BFIELD(br, opt->off, uint16_t) = (uint16_t)v;
    else if (opt->hi <= UINT32_MAX)
        *BFIELD(br, opt->off, uint32_t) = (uint32_t)v;
    else
        *BFIELD(br, opt->off, uint64_t) = (uint64_t)v;
    return MQL_OK;
}

/* `restart_timeout BASE [CAP]`: a fixed delay, or exponential backoff with jitter from BASE
 * up to CAP seconds (as mosquitto). */
static mql_err set_restart_timeout(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    long long lo, hi;
    if (br == NULL)
        return MQL_E_CONFIG;
    if (!parse_ll(c->vals[0], 1, 86400, &lo))
        return bad_value(opt, c, c->vals[0]);
    hi = lo;
    if (c->nvals > 1 && !parse_ll(c->vals[1], 1, 86400, &hi))
        return bad_value(opt, c, c->vals[1]);
    if (hi < lo)
        return fail(c, "%s: the cap %lld is below the base %lld", opt->name, hi, lo);
    br->restart_min = (uint32_t)lo;
    br->restart_max = (uint32_t)hi;
    return MQL_OK;
}

/* `bridge_alpn PROTO[,PROTO...]`: the ALPN protocols the bridge's TLS client offers (AWS
 * IoT on port 443 wants x-amzn-mqtt-ca). Each name 1..255 bytes, at most 8. */
static mql_err set_bridge_alpn(const struct option *opt, struct ctx *c)
{
    mql_bridge_conf *br = cur_bridge(opt, c);
    const char *v = c->vals[0];
    if (br == NULL)
        return MQL_E_CONFIG;
    if (strlen(v) >= sizeof(br->alpn))
        return fail(c, "%s: longer than %zu characters", opt->name, sizeof(br->alpn) - 1);
    int n = 1;
    for (const char *p = v; *p != '\0'; p++)
        n += *p == ',';
    if (v[0] == '\0' || v[0] == ',' || v[strlen(v) - 1] == ',' || strstr(v, ",,") != NULL || n > 8)
        return fail(c, "%s: '%s' is not a list of 1 to 8 protocol names separated by commas",
                    opt->name, v);
    snprintf(br->alpn, sizeof(br->alpn), "%s", v);
    return MQL_OK;
}

#define BOFF(field) offsetof(mql_bridge_conf, field)

#define OFF(field) offsetof(mql_config, field)

static const struct option options[] = {
    {"listener", 1, 2, "PORT [ADDRESS] with PORT from 1 to 65535", set_listener, 0, 0, 0},
    {"protocol", 1, 1, "mqtt or websockets", set_protocol, 0, 0, 0},
    {"certfile", 1, 1, "a PEM certificate (chain) file", set_listener_str, 0, MQL_PATH_MAX,
     offsetof(mql_listener_conf, certfile)},
    {"keyfile", 1, 1, "a PEM private key file", set_listener_str, 0, MQL_PATH_MAX,
     offsetof(mql_listener_conf, keyfile)},
    {"keyfile_password", 1, 1, "the password of an encrypted keyfile", set_listener_str, 0, 128,
     offsetof(mql_listener_conf, keyfile_password)},
    {"cafile", 1, 1, "a PEM CA file", set_listener_str, 0, MQL_PATH_MAX,
     offsetof(mql_listener_conf, cafile)},
    {"require_certificate", 1, 1, "true or false", set_listener_bool, 0, 0,
     offsetof(mql_listener_conf, require_certificate)},
    {"use_identity_as_username", 1, 1, "true or false", set_listener_bool, 0, 0,
     offsetof(mql_listener_conf, use_identity_as_username)},
    {"websockets_path", 1, 1, "a URL path such as /mqtt", set_listener_str, 0, 128,
     offsetof(mql_listener_conf, websockets_path)},
    {"password_file", 1, 1, "a password file written by mqlite-passwd", set_auth_path, 0, 0,
     OFF(password_file)},
    {"acl_file", 1, 1, "an ACL file", set_auth_path, 0, 0, OFF(acl_file)},
    {"per_listener_settings", 1, 1, "true or false", set_per_listener_settings, 0, 0, 0},
    {"sys_interval", 1, 1, "a number of seconds from 0 (off) to 86400", set_u32, 0, 86400,
     OFF(sys_interval)},
    {"allow_anonymous", 1, 1, "true or false", set_allow_anonymous, 0, 0, 0},
    {"max_keepalive", 1, 1, "a number from 0 to 65535", set_u16, 0, 65535, OFF(max_keepalive)},
    {"max_packet_size", 1, 1, "a number of bytes from 20 to 268435460", set_u32, 20,
     PACKET_SIZE_MAX, OFF(max_packet_size)},
    {"max_inflight_messages", 1, 1, "a number from 0 (no limit) to 65535", set_u32, 0, 65535,
     OFF(max_inflight_messages)},
    {"max_queued_messages", 1, 1, "a number from 0 (no limit) to 4294967295", set_u32, 0,
     UINT32_MAX, OFF(max_queued_messages)},
    {"max_queued_bytes", 1, 1, "a number of bytes from 0 (no limit) to 9007199254740991", set_u64,
     0, 9007199254740991LL, OFF(max_queued_bytes)},
    {"max_connections", 1, 1, "-1 (no limit) or a number from 0 to 2147483647", set_max_connections,
     -1, INT32_MAX, 0},
    {"connect_timeout", 1, 1, "a number of seconds from 1 to 3600", set_u32, 1, 3600,
     OFF(connect_timeout)},
    {"retain_available", 1, 1, "true or false", set_bool, 0, 0, OFF(retain_available)},
    {"shared_subscriptions", 1, 1, "true or false", set_bool, 0, 0, OFF(shared_subscriptions)},
    {"subscription_identifiers", 1, 1, "true or false", set_bool, 0, 0,
     OFF(subscription_identifiers)},
    {"wildcard_subscriptions", 1, 1, "true or false", set_bool, 0, 0, OFF(wildcard_subscriptions)},
    {"max_qos", 1, 1, "0, 1 or 2", set_u8, 0, 2, OFF(max_qos)},
    {"log_type", 1, 1, "one of error, warning, notice, information, debug, all, none", set_log_type,
     0, 0, 0},
    {"max_session_expiry", 1, 1, "a number of seconds from 0 (never expire) to 4294967295", set_u32,
     0, UINT32_MAX, OFF(max_session_expiry)},
    {"client_id_conflict", 1, 1, "takeover or reject_new", set_client_id_conflict, 0, 0, 0},
    {"persistence", 1, 1, "true or false", set_bool, 0, 0, OFF(persistence)},
    {"persistence_location", 1, 1, "a directory", set_path, 0, 0, OFF(persistence_location)},
    {"store_sync", 1, 1, "full, normal or off", set_store_sync, 0, 0, 0},
    {"store_commit_window_ms", 1, 1, "a number of milliseconds from 0 to 10000", set_u32, 0, 10000,
     OFF(store_commit_window_ms)},
    {"store_max_bytes", 1, 1, "a number of bytes from 0 (no limit) to 9007199254740991", set_u64, 0,
     9007199254740991LL, OFF(store_max_bytes)},
    {"max_topic_alias", 1, 1, "a number from 0 to 65535", set_u16, 0, 65535, OFF(max_topic_alias)},
    {"max_topic_alias_broker", 1, 1, "a number from 0 to 65535", set_u16, 0, 65535,
     OFF(max_topic_alias_broker)},
    {"log_dest", 1, 2, "stderr, stdout, syslog, file PATH or none", set_log_dest, 0, 0, 0},
    {"pid_file", 1, 1, "a file path", set_path, 0, 0, OFF(pid_file)},
    {"user", 1, 1, "a user name (letters, digits, '.', '_', '-')", set_user, 0, 0, 0},
    {"include_dir", 1, 1, "a directory", set_include_dir, 0, 0, 0},
    {"connection", 1, 1, "a bridge name (letters, digits, '.', '_', '-')", set_connection, 0, 0, 0},
    {"address", 1, MQL_MAX_BRIDGE_ADDRS, "HOST[:PORT] (up to 4)", set_bridge_address, 0, 0, 0},
    {"addresses", 1, MQL_MAX_BRIDGE_ADDRS, "HOST[:PORT] (up to 4)", set_bridge_address, 0, 0, 0},
    {"topic", 1, 5, "PATTERN [out|in|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]", set_bridge_topic, 0,
     0, 0},
    {"bridge_protocol_version", 1, 1, "mqttv311 or mqttv50", set_bridge_protocol, 0, 0, 0},
    {"remote_clientid", 1, 1, "a ClientID", set_bridge_str, 0, 128, BOFF(remote_clientid)},
    {"local_clientid", 1, 1, "a ClientID", set_bridge_str, 0, 128, BOFF(local_clientid)},
    {"remote_username", 1, 1, "a user name", set_bridge_str, BOFF(has_username), 128,
     BOFF(remote_username)},
    {"remote_password", 1, 1, "a password", set_bridge_str, BOFF(has_password), 128,
     BOFF(remote_password)},
    {"cleansession", 1, 1, "true or false", set_bridge_bool, 0, 0, BOFF(cleansession)},
    {"keepalive_interval", 1, 1, "a number of seconds from 5 to 65535", set_bridge_num, 5, 65535,
     BOFF(keepalive)},
    {"restart_timeout", 1, 2, "BASE [CAP], seconds from 1 to 86400", set_restart_timeout, 0, 0, 0},
    {"bridge_cafile", 1, 1, "a PEM CA file", set_bridge_str, 0, MQL_PATH_MAX, BOFF(cafile)},
    {"bridge_capath", 1, 1, "a directory of PEM CA files", set_bridge_str, 0, MQL_PATH_MAX,
     BOFF(capath)},
    {"bridge_certfile", 1, 1, "a PEM certificate file", set_bridge_str, 0, MQL_PATH_MAX,
     BOFF(certfile)},
    {"bridge_keyfile", 1, 1, "a PEM private key file", set_bridge_str, 0, MQL_PATH_MAX,
     BOFF(keyfile)},
    {"bridge_insecure", 1, 1, "true or false", set_bridge_bool, 0, 0, BOFF(insecure)},
    {"bridge_alpn", 1, 1, "a protocol list such as x-amzn-mqtt-ca", set_bridge_alpn, 0, 0, 0},
    {"try_private", 1, 1, "true or false", set_bridge_bool, 0, 0, BOFF(try_private)},
    {"bridge_outgoing_retain", 1, 1, "true or false", set_bridge_bool, 0, 0, BOFF(outgoing_retain)},
    {"bridge_session_expiry", 1, 1, "a number of seconds from 0 to 4294967295", set_bridge_num, 0,
     UINT32_MAX, BOFF(session_expiry)},
    {"bridge_queue_max_bytes", 1, 1, "a number of bytes from 0 (no limit) to 9007199254740991",
     set_bridge_num, 0, 9007199254740991LL, BOFF(queue_max_bytes)},
    {"bridge_queue_max_messages", 1, 1, "a number from 0 (no limit) to 4294967295", set_bridge_num,
     0, UINT32_MAX, BOFF(queue_max_messages)},
    {"bridge_max_inflight", 1, 1, "a number from 1 to 65535", set_bridge_num, 1, 65535,
     BOFF(max_inflight)},
    {"notifications", 1, 1, "true or false", set_bridge_bool, 0, 0, BOFF(notifications)},
    {"notifications_local_only", 1, 1, "true or false", set_bridge_bool, 0, 0,
     BOFF(notifications_local_only)},
    {"notification_topic", 1, 1, "a topic name (no wildcards)", set_bridge_str, 0, 256,
     BOFF(notification_topic)},
};

/* Options of mosquitto 2.0 that this version does not implement (yet). */
static const char *const mosquitto_only[] = {
    "allow_duplicate_messages",
    "allow_zero_length_clientid",
    "auth_plugin",
    "auth_plugin_deny_special_chars",
    "auto_id_prefix",
    "autosave_interval",
    "autosave_on_changes",
    "bind_address",
    "bind_interface",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_ciphers",
    "bridge_ciphers_tls1.3",
    "bridge_identity",
    "bridge_max_packet_size",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "capath",
    "check_retain_source",
    "ciphers",
    "ciphers_tls1.3",
    "clientid",
    "clientid_prefixes",
    "connection_messages",
    "crlfile",
    "dhparamfile",
    "http_dir",
    "idle_timeout",
    "local_cleansession",
    "local_password",
    "local_username",
    "log_facility",
    "log_timestamp",
    "log_timestamp_format",
    "max_inflight_bytes",
    "memory_limit",
    "message_size_limit",
    "mount_point",
    "password",
    "persistence_file",
    "persistent_client_expiration",
    "plugin",
    "port",
    "psk_file",
    "psk_hint",
    "queue_qos0_messages",
    "round_robin",
    "set_tcp_nodelay",
    "socket_domain",
    "start_type",
    "threshold",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "tls_version",
    "upgrade_outgoing_qos",
    "use_subject_as_username",
    "use_username_as_clientid",
    "username",
    "websockets_headers_size",
    "websockets_log_level",
};

/* Why some of them are missing, appended to the "not supported" message. */
static const struct {
    const char *key;
    const char *why;
} not_supported_why[] = {
    {"use_subject_as_username",
     "use use_identity_as_username (the certificate's Common Name) instead"},
};

static const char *not_supported_reason(const char *key)
{
    for (size_t i = 0; i < sizeof(not_supported_why) / sizeof(not_supported_why[0]); i++) {
        if (strcmp(key, not_supported_why[i].key) == 0)
            return not_supported_why[i].why;
    }
    return NULL;
}

static bool is_mosquitto_only(const char *key)
{
    for (size_t i = 0; i < sizeof(mosquitto_only) / sizeof(mosquitto_only[0]); i++) {
        if (strcmp(key, mosquitto_only[i]) == 0)
            return true;
    }
    /* plugin and auth plugin options carry a free suffix */
    return strncmp(key, "auth_opt_", 9) == 0 || strncmp(key, "plugin_opt_", 11) == 0;
}

void mql_config_defaults(mql_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->n_listeners = 0;
    cfg->allow_anonymous = true;
    cfg->max_keepalive = 65535;
    cfg->max_packet_size = 0;
    cfg->max_inflight_messages = 20;
    cfg->max_queued_messages = 1000;
    cfg->max_connections = -1;
    cfg->connect_timeout = 10;
    cfg->per_listener_settings = false;
    cfg->security_keys_seen = false;
    cfg->retain_available = true;
    cfg->shared_subscriptions = true;
    cfg->subscription_identifiers = true;
    cfg->wildcard_subscriptions = true;
    cfg->max_qos = 2;
    cfg->log_types = MQL_LOGT_DEFAULT;
    cfg->log_types_set = false;
    cfg->max_session_expiry = 0;
    cfg->client_id_conflict = MQL_CONFLICT_TAKEOVER;
    cfg->max_topic_alias = 10;
    cfg->sys_interval = 10;
    cfg->persistence = false;
    snprintf(cfg->persistence_location, sizeof(cfg->persistence_location), ".");
    cfg->store_sync = MQL_STORE_SYNC_FULL;
    cfg->store_commit_window_ms = 20;
    cfg->store_max_bytes = 0;
    cfg->max_topic_alias_broker = 10;
    cfg->log_dests = MQL_LOGD_STDERR;
    cfg->n_log_files = 0;
    cfg->log_dests_set = false;
    cfg->pid_file[0] = '\0';
    cfg->user[0] = '\0';
    cfg->include_dir[0] = '\0';
}

void mql_listener_defaults(mql_listener_conf *l, uint16_t port, const char *address, int line)
{
    memset(l, 0, sizeof(*l));
    l->port = port;
    snprintf(l->address, sizeof(l->address), "%s", address);
    l->line = line;
    l->protocol = MQL_LISTENER_MQTT;
    l->max_connections = -1;
    l->allow_anonymous = -1;
}

mql_err mql_config_finish_listeners(mql_config *cfg, uint16_t port, bool ipv6_loopback,
                                    char *errbuf, size_t errlen)
{
    if (cfg->n_listeners == 0) {
        cfg->local_only = true;
        mql_listener_defaults(&cfg->listeners[cfg->n_listeners++], port ? port : 1883, "127.0.0.1",
                              0);
        if (ipv6_loopback)
            mql_listener_defaults(&cfg->listeners[cfg->n_listeners++], port ? port : 1883, "::1",
                                  0);
        if (!cfg->allow_anonymous_set)
            cfg->allow_anonymous = true;
        return MQL_OK;
    }
    if (!cfg->allow_anonymous_set)
        cfg->allow_anonymous = false;
    if (port == 0)
        return MQL_OK;
    if (cfg->n_listeners >= MQL_MAX_LISTENERS) {
        snprintf(errbuf, errlen, "-p %u: no room for another listener (at most %d)", port,
                 MQL_MAX_LISTENERS);
        return MQL_E_CONFIG;
    }
    mql_listener_defaults(&cfg->listeners[cfg->n_listeners++], port, "127.0.0.1", 0);
    return MQL_OK;
}

bool mql_config_allow_anonymous(const mql_config *cfg, int index)
{
    if (index >= 0 && index < cfg->n_listeners && cfg->listeners[index].allow_anonymous >= 0)
        return cfg->listeners[index].allow_anonymous != 0;
    return cfg->allow_anonymous;
}

mql_err mql_config_line(mql_config *cfg, const char *text, const char *file, int line, char *errbuf,
                        size_t errlen)
{
    struct ctx c = {.cfg = cfg, .file = file, .line = line, .errbuf = errbuf, .errlen = errlen};
    char buf[LINE_MAX_CHARS + 1];
    char *tokens[MAX_TOKENS];
    int ntok = 0;
    size_t len = strlen(text);

    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    if (len > LINE_MAX_CHARS)
        return fail(&c, "line is too long (at most %d characters)", LINE_MAX_CHARS);
    memcpy(buf, text, len + 1);

    /* Split on spaces and tabs; a trailing CR counts as white space. A line whose first
     * token starts with '#' is a comment. Only the first MAX_TOKENS tokens are kept. */
    int total = 0;
    char *p = buf;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p == '\0')
            break;
        if (total < MAX_TOKENS)
            tokens[ntok++] = p;
        total++;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        if (*p == '\0')
            break;
        *p++ = '\0';
    }
    if (ntok == 0 || tokens[0][0] == '#')
        return MQL_OK;

    c.key = tokens[0];
    c.nvals = ntok - 1;
    for (int i = 1; i < ntok; i++)
        c.vals[i - 1] = tokens[i];

    const struct option *opt = NULL;
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        if (strcmp(c.key, options[i].name) == 0) {
            opt = &options[i];
            break;
        }
    }
    if (opt == NULL) {
        const char *why = not_supported_reason(c.key);
        if (why != NULL)
            return fail(&c, "option '%s' is not supported by this version of mqlite: %s", c.key,
                        why);
        if (is_mosquitto_only(c.key))
            return fail(&c, "option '%s' is not supported by this version of mqlite", c.key);
        return fail(&c, "unknown option '%s'", c.key);
    }
    if (c.nvals < opt->min_vals)
        return fail(&c, "%s: missing value (expected %s)", opt->name, opt->expect);
    if (c.nvals > opt->max_vals) {
        const char *extra = c.vals[opt->max_vals];
        return fail(&c, "%s: unexpected extra value '%s' (expected %s%s)", opt->name, extra,
                    opt->expect,
                    extra[0] == '#' ? "; comments must be on a line of their own" : "");
    }
    return opt->set(opt, &c);
}

/* Write "PREFIX: " + the formatted text, like fail(), for errors that are not about one
 * line's content (I/O); returns rc. prefix is "FILE" or "FILE:LINE". */
static mql_err fail_at(mql_err rc, char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static mql_err fail_at(mql_err rc, char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Append " (included from FILE:LINE)" to a message about an included file, if it fits. */
static void note_included_from(char *errbuf, size_t errlen, const char *file, int line)
{
    if (errbuf == NULL || errlen == 0)
        return;
    size_t n = strlen(errbuf);
    if (n < errlen)
        snprintf(errbuf + n, errlen - n, " (included from %s:%d)", file, line);
}

static int conf_name_filter(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 5 && strcmp(d->d_name + n - 5, ".conf") == 0;
}

/* Byte order of the names, whatever the locale (alphasort uses strcoll). */
static int conf_name_order(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static mql_err load_file(mql_config *cfg, const char *path, const char *from_file, int from_line,
                         int depth, char *errbuf, size_t errlen);

/*
 * Read the *.conf files of cfg->include_dir (named by line `line` of `file`, at include
 * depth `depth`), in order, and clear cfg->include_dir. An unreadable directory or file is
 * an error naming it and the include_dir line.
 */
static mql_err load_include_dir(mql_config *cfg, const char *file, int line, int depth,
                                char *errbuf, size_t errlen)
{
    char dir[MQL_PATH_MAX];
    struct dirent **names = NULL;
    mql_err rc = MQL_OK;

    memcpy(dir, cfg->include_dir, sizeof(dir));
    cfg->include_dir[0] = '\0';
    if (depth >= MQL_INCLUDE_DEPTH)
        return fail_at(MQL_E_CONFIG, errbuf, errlen,
                       "%s:%d: include_dir: '%s' is nested too deeply (at most %d levels of "
                       "include_dir; does a directory include itself?)",
                       file, line, dir, MQL_INCLUDE_DEPTH);
    errno = 0;
    int n = scandir(dir, &names, conf_name_filter, conf_name_order);
    if (n < 0) {
        int e = errno ? errno : EIO;
        return fail_at(e == ENOMEM ? MQL_E_NOMEM : MQL_E_IO, errbuf, errlen,
                       "%s:%d: include_dir: cannot read directory '%s': %s", file, line, dir,
                       strerror(e));
    }
    for (int i = 0; i < n; i++) {
        char sub[2 * MQL_PATH_MAX];
        if (rc == MQL_OK) {
            const char *sep = dir[0] != '\0' && dir[strlen(dir) - 1] == '/' ? "" : "/";
            int len = snprintf(sub, sizeof(sub), "%s%s%s", dir, sep, names[i]->d_name);
            if (len < 0 || (size_t)len >= sizeof(sub))
                rc = fail_at(MQL_E_CONFIG, errbuf, errlen,
                             "%s:%d: include_dir: the path of '%s' in '%s' is too long", file, line,
                             names[i]->d_name, dir);
            else
                rc = load_file(cfg, sub, file, line, depth + 1, errbuf, errlen);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

/*
 * Parse one file (top-level when from_file is NULL, else included by from_file:from_line).
 * Messages name the file and line; those about an included file also name the include_dir
 * line.
 */
static mql_err load_file(mql_config *cfg, const char *path, const char *from_file, int from_line,
                         int depth, char *errbuf, size_t errlen)
{
    mql_err rc = MQL_OK;
    char *text = NULL;
    size_t cap = 0;
    int line = 0;

    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        if (from_file != NULL)
            return fail_at(MQL_E_IO, errbuf, errlen, "%s:%d: include_dir: cannot open '%s': %s",
                           from_file, from_line, path, strerror(e));
        return fail_at(MQL_E_IO, errbuf, errlen, "%s: cannot open: %s", path, strerror(e));
    }
    for (;;) {
        errno = 0;
        ssize_t n = getline(&text, &cap, f);
        if (n < 0) {
            if (ferror(f)) {
                int e = errno ? errno : EIO;
                rc = fail_at(e == ENOMEM ? MQL_E_NOMEM : MQL_E_IO, errbuf, errlen,
                             "%s:%d: cannot read: %s", path, line + 1, strerror(e));
            }
            break;
        }
        line++;
        if (n > 0 && text[n - 1] == '\n')
            text[--n] = '\0';
        if ((size_t)n != strlen(text)) {
            struct ctx c = {.file = path, .line = line, .errbuf = errbuf, .errlen = errlen};
            rc = fail(&c, "line contains a NUL byte");
            break;
        }
        char *start = text;
        if (line == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0)
            start += 3; /* a UTF-8 byte order mark left by some editors */
        rc = mql_config_line(cfg, start, path, line, errbuf, errlen);
        if (rc == MQL_OK && cfg->include_dir[0] != '\0')
            rc = load_include_dir(cfg, path, line, depth, errbuf, errlen);
        if (rc != MQL_OK)
            break;
    }
    free(text);
    fclose(f);
    if (rc != MQL_OK && from_file != NULL && errbuf != NULL && errlen > 0 &&
        strncmp(errbuf, path, strlen(path)) == 0)
        note_included_from(errbuf, errlen, from_file, from_line);
    return rc;
}

/* What a bridge block needs as a whole, checked once the file is read. */
static mql_err check_bridges(const mql_config *cfg, const char *path, char *errbuf, size_t errlen)
{
    for (int i = 0; i < cfg->n_bridges; i++) {
        const mql_bridge_conf *br = &cfg->bridges[i];
        const char *why = NULL;
        if (br->n_addresses == 0)
            why = "has no 'address'";
        else if (br->n_topics == 0)
            why = "has no 'topic' line";
        else if ((br->certfile[0] != '\0') != (br->keyfile[0] != '\0'))
            why = "needs both bridge_certfile and bridge_keyfile";
        else if (br->certfile[0] != '\0' && br->cafile[0] == '\0' && br->capath[0] == '\0')
            why = "has a client certificate but no bridge_cafile or bridge_capath (TLS)";
        else if (br->alpn[0] != '\0' && br->cafile[0] == '\0' && br->capath[0] == '\0')
            why = "has bridge_alpn but no bridge_cafile or bridge_capath (ALPN is part of TLS)";
        else if (br->has_password && !br->has_username)
            why = "has remote_password without remote_username";
        else if (strpbrk(br->notification_topic, "+#") != NULL)
            why = "notification_topic must be a topic name, without '+' or '#'";
        if (why != NULL)
            return fail_at(MQL_E_CONFIG, errbuf, errlen, "%s:%d: connection %s: %s", path, br->line,
                           br->name, why);
    }
    return MQL_OK;
}

mql_err mql_config_load(mql_config *cfg, const char *path, char *errbuf, size_t errlen)
{
    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    cfg->include_dir[0] = '\0';
    mql_err rc = load_file(cfg, path, NULL, 0, 0, errbuf, errlen);
    if (rc == MQL_OK)
        rc = check_bridges(cfg, path, errbuf, errlen);
    return rc;
}
