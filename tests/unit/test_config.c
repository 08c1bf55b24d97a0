/*
 * test_config.c - unit tests of the configuration parser (broker/config.c).
 *
 * Purpose: every implemented key with good and bad values, the exact shape of every error
 * message (it names FILE:LINE, the key, the bad value and what is allowed), the defaults,
 * mosquitto's log_type semantics, listener rules, comment/blank/white-space handling, and
 * mql_config_load on real files (unreadable file, line numbers, CRLF, BOM, NUL bytes).
 *
 * Single lines go through mql_config_line() with the file name "t.conf" and line 7, so
 * every message must start with "t.conf:7: ". Files are written to mkstemp() names under
 * /tmp and removed by each test.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/config.h"

static mql_config cfg;
static char err[512];

static void setup(void)
{
    mql_config_defaults(&cfg);
    memset(err, 'x', sizeof(err) - 1); /* catch a message that is not rewritten */
    err[sizeof(err) - 1] = '\0';
}

TestSuite(config, .init = setup);

/* Parse one line as line 7 of t.conf. */
static mql_err parse(const char *text)
{
    return mql_config_line(&cfg, text, "t.conf", 7, err, sizeof(err));
}

/* The line must parse, leaving no message. */
#define OK(text)                                                                                   \
    do {                                                                                           \
        mql_err rc_ = parse(text);                                                                 \
        cr_assert_eq(rc_, MQL_OK, "line '%s' failed: %s", text, err);                              \
        cr_assert_str_empty(err, "line '%s' left a message: %s", text, err);                       \
    } while (0)

/* The line must fail with MQL_E_CONFIG and a message that starts with "t.conf:7: " and
 * contains each of the given fragments. */
#define BAD(text, ...)                                                                             \
    do {                                                                                           \
        mql_err rc_ = parse(text);                                                                 \
        cr_assert_eq(rc_, MQL_E_CONFIG, "line '%s' was accepted", text);                           \
        cr_assert(strncmp(err, "t.conf:7: ", 10) == 0, "no file:line in '%s'", err);               \
        const char *frags_[] = {__VA_ARGS__};                                                      \
        for (size_t i_ = 0; i_ < sizeof(frags_) / sizeof(frags_[0]); i_++)                         \
            cr_assert(strstr(err, frags_[i_]) != NULL, "'%s' lacks '%s'", err, frags_[i_]);        \
    } while (0)

/* Write text to a fresh temporary file; OUT: path (at least 64 bytes). */
static void write_file(char *path, const char *text, size_t len)
{
    strcpy(path, "/tmp/mqlite-test-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static mql_err load_text(const char *text, size_t len, char *path)
{
    write_file(path, text, len);
    mql_err rc = mql_config_load(&cfg, path, err, sizeof(err));
    unlink(path);
    return rc;
}

/* ---- defaults ---------------------------------------------------------------------- */

Test(config, defaults)
{
    cr_assert_eq(cfg.n_listeners, 0);
    cr_assert_eq(cfg.allow_anonymous, true);
    cr_assert_eq(cfg.max_keepalive, 65535);
    cr_assert_eq(cfg.max_packet_size, 0);
    cr_assert_eq(cfg.max_inflight_messages, 20);
    cr_assert_eq(cfg.max_queued_messages, 1000);
    cr_assert_eq(cfg.max_connections, -1);
    cr_assert_eq(cfg.retain_available, true);
    cr_assert_eq(cfg.max_qos, 2);
    cr_assert_eq(cfg.log_types, MQL_LOGT_DEFAULT);
    cr_assert_eq(cfg.log_types & MQL_LOGT(MQL_LOG_DEBUG), 0);
    cr_assert_eq(cfg.log_types_set, false);
    cr_assert_eq(cfg.max_session_expiry, 0);
    cr_assert_eq(cfg.client_id_conflict, MQL_CONFLICT_TAKEOVER);
}

Test(config, defaults_overwrite_garbage)
{
    memset(&cfg, 0xA5, sizeof(cfg));
    mql_config_defaults(&cfg);
    cr_assert_eq(cfg.n_listeners, 0);
    cr_assert_eq(cfg.max_connections, -1);
    cr_assert_eq(cfg.log_types_set, false);
}

/* ---- comments, blank lines, white space --------------------------------------------- */

Test(config, comments_and_blank_lines)
{
    const char *lines[] = {"",
                           "   ",
                           "\t",
                           "\r",
                           " \t \r",
                           "# a comment",
                           "#listener 1883",
                           "   # indented comment",
                           "#",
                           "\t#x y z"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        OK(lines[i]);
    cr_assert_eq(cfg.n_listeners, 0);
}

Test(config, white_space_and_cr)
{
    OK("max_qos 1   ");
    cr_assert_eq(cfg.max_qos, 1);
    OK("max_qos 0\r");
    cr_assert_eq(cfg.max_qos, 0);
    OK("max_qos\t2\t\r");
    cr_assert_eq(cfg.max_qos, 2);
    OK("  max_keepalive    60");
    cr_assert_eq(cfg.max_keepalive, 60);
    OK("listener \t 1883 \t 127.0.0.1 \r");
    cr_assert_eq(cfg.listeners[0].port, 1883);
    cr_assert_str_eq(cfg.listeners[0].address, "127.0.0.1");
}

Test(config, line_too_long)
{
    char text[1100];
    memset(text, ' ', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    memcpy(text, "max_qos 1", 9);
    BAD(text, "too long");
}

/* ---- unknown and unsupported keys ------------------------------------------------- */

Test(config, unknown_option)
{
    BAD("lisener 1883", "unknown option 'lisener'");
    BAD("Listener 1883", "unknown option 'Listener'"); /* keys are case-sensitive */
    BAD("foo", "unknown option 'foo'");
    BAD("max_qos=1", "unknown option 'max_qos=1'");
    cr_assert_str_eq(err, "t.conf:7: unknown option 'max_qos=1'");
}

Test(config, mosquitto_options_not_supported)
{
    const char *keys[] = {"autosave_interval 1800",
                          "persistence_file mqlite.db",
                          "use_subject_as_username true",
                          "bridge_attempt_unsubscribe false",
                          "log_facility 3",
                          "log_timestamp false",
                          "port 1883",
                          "bind_address 0.0.0.0",
                          "auth_opt_backend files",
                          "plugin_opt_x y"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char key[64];
        sscanf(keys[i], "%63s", key);
        char want[128];
        snprintf(want, sizeof(want), "option '%s' is not supported by this version of mqlite", key);
        BAD(keys[i], want);
    }
    parse("notifications false"); /* a bridge key: implemented, but only in a bridge */
    cr_assert_str_eq(err, "t.conf:7: notifications: must follow a 'connection' line (it applies "
                          "to the bridge above it)");
}

/* ---- bridges ------------------------------------------------------------------------ */

Test(config, bridge_block)
{
    OK("connection cloud");
    OK("address broker.example.com:8883 10.0.0.2");
    OK("bridge_protocol_version mqttv50");
    OK("topic sensors/# out 1 \"\" gw1/");
    OK("topic cmd/+/set in 2 local/ remote/");
    OK("topic both/# both");
    OK("topic \"\" out 0 a/b c/d");
    OK("remote_clientid gw1");
    OK("remote_username u");
    OK("remote_password p");
    OK("cleansession true");
    OK("keepalive_interval 30");
    OK("restart_timeout 2 60");
    OK("bridge_cafile /etc/ca.pem");
    OK("bridge_insecure true");
    OK("try_private false");
    OK("bridge_outgoing_retain false");
    OK("bridge_queue_max_bytes 1000000");
    OK("bridge_max_inflight 10");
    cr_assert(cfg.bridges[0].notifications, "mosquitto's default: notifications true");
    OK("notifications false");
    OK("notifications_local_only true");
    OK("notification_topic plant/gw1/bridge");
    cr_assert_eq(cfg.n_bridges, 1);
    const mql_bridge_conf *b = &cfg.bridges[0];
    cr_assert(!b->notifications && b->notifications_local_only);
    cr_assert_str_eq(b->notification_topic, "plant/gw1/bridge");
    cr_assert_str_eq(b->name, "cloud");
    cr_assert_eq(b->n_addresses, 2);
    cr_assert_str_eq(b->addresses[0], "broker.example.com:8883");
    cr_assert_str_eq(b->addresses[1], "10.0.0.2:1883");
    cr_assert_eq(b->protocol_version, 5);
    cr_assert_eq(b->n_topics, 4);
    cr_assert_str_eq(b->topics[0].pattern, "sensors/#");
    cr_assert_eq(b->topics[0].dir, MQL_BRIDGE_OUT);
    cr_assert_eq(b->topics[0].qos, 1);
    cr_assert_str_eq(b->topics[0].local_prefix, "");
    cr_assert_str_eq(b->topics[0].remote_prefix, "gw1/");
    cr_assert_eq(b->topics[1].dir, MQL_BRIDGE_IN);
    cr_assert_str_eq(b->topics[1].local_prefix, "local/");
    cr_assert_eq(b->topics[2].dir, MQL_BRIDGE_BOTH);
    cr_assert_eq(b->topics[2].qos, 0);
    cr_assert_str_eq(b->topics[3].pattern, "");
    cr_assert(b->has_username && b->has_password && b->cleansession && b->insecure);
    cr_assert(!b->try_private && !b->outgoing_retain);
    cr_assert_eq(b->keepalive, 30);
    cr_assert_eq(b->restart_min, 2);
    cr_assert_eq(b->restart_max, 60);
    cr_assert_eq(b->queue_max_bytes, 1000000);
    cr_assert_eq(b->max_inflight, 10);
    BAD("connection cloud", "exists already");
}

Test(config, bridge_errors)
{
    BAD("topic a/# out", "must follow a 'connection' line");
    BAD("address h:1", "must follow a 'connection' line");
    OK("connection c");
    BAD("connection bad/name", "'bad/name'");
    BAD("address h:0", "port");
    BAD("address h:99999", "port");
    BAD("topic a/#/b out", "not a valid topic filter");
    BAD("topic a# out", "not a valid topic filter");
    BAD("topic a/# out 1 x/+/ y/", "not a valid topic filter");
    BAD("topic a/# sideways", "direction 'sideways'");
    BAD("topic a/# out 3", "QoS '3'");
    BAD("topic a/# out 1 onlylocal", "remote prefix");
    BAD("bridge_protocol_version mqttv31", "not supported");
    BAD("bridge_protocol_version 5", "'5'");
    BAD("restart_timeout 10 5", "below the base");
    BAD("restart_timeout 0", "'0'");
    BAD("keepalive_interval 1", "'1'");
    BAD("bridge_alpn a,,b", "not a list of 1 to 8 protocol names");
    BAD("bridge_alpn ,a", "not a list");
    BAD("bridge_alpn a,", "not a list");
    BAD("bridge_alpn a,b,c,d,e,f,g,h,i", "not a list");
    BAD("bridge_max_inflight 0", "'0'");
}

Test(config, bridge_block_checked_as_a_whole)
{
    char path[64];
    const char *text = "listener 1883\nconnection up\ntopic a/# out\n";
    write_file(path, text, strlen(text));
    mql_err rc = mql_config_load(&cfg, path, err, sizeof(err));
    cr_assert_eq(rc, MQL_E_CONFIG);
    cr_assert(strstr(err, ":2: connection up: has no 'address'") != NULL, "%s", err);
    unlink(path);
    mql_config_defaults(&cfg);
    text = "connection up\naddress h\ntopic a\nbridge_certfile c.pem\n";
    write_file(path, text, strlen(text));
    rc = mql_config_load(&cfg, path, err, sizeof(err));
    cr_assert_eq(rc, MQL_E_CONFIG);
    cr_assert(strstr(err, "needs both bridge_certfile and bridge_keyfile") != NULL, "%s", err);
    unlink(path);
}

/* ---- security and transports ------------------------------------------------------ */

Test(config, listener_tls_and_websockets)
{
    BAD("certfile /etc/c.pem", "certfile: must follow a 'listener' line");
    BAD("require_certificate true", "require_certificate: must follow a 'listener' line");
    OK("listener 8883");
    OK("certfile /etc/mqlite/server.crt");
    OK("keyfile /etc/mqlite/server.key");
    OK("keyfile_password secret");
    OK("cafile /etc/mqlite/ca.crt");
    OK("require_certificate true");
    cr_assert_str_eq(cfg.listeners[0].certfile, "/etc/mqlite/server.crt");
    cr_assert_str_eq(cfg.listeners[0].keyfile, "/etc/mqlite/server.key");
    cr_assert_str_eq(cfg.listeners[0].keyfile_password, "secret");
    cr_assert_str_eq(cfg.listeners[0].cafile, "/etc/mqlite/ca.crt");
    cr_assert(cfg.listeners[0].require_certificate);
    BAD("require_certificate yes", "require_certificate: 'yes' is not true or false");
    OK("listener 8080");
    OK("protocol websockets");
    OK("websockets_path /ws");
    cr_assert_eq(cfg.listeners[1].protocol, MQL_LISTENER_WEBSOCKETS);
    cr_assert_str_eq(cfg.listeners[1].websockets_path, "/ws");
    cr_assert_str_eq(cfg.listeners[1].certfile, "");
    OK("password_file /etc/mqlite/passwd");
    OK("acl_file /etc/mqlite/acl");
    cr_assert_str_eq(cfg.password_file, "/etc/mqlite/passwd");
    cr_assert_str_eq(cfg.acl_file, "/etc/mqlite/acl");
    cr_assert_eq(cfg.sys_interval, 10);
    OK("sys_interval 0");
    cr_assert_eq(cfg.sys_interval, 0);
    BAD("sys_interval 86401", "sys_interval: '86401' is not");
}

/* ---- persistence ------------------------------------------------------------------- */

Test(config, persistence_keys)
{
    cr_assert_eq(cfg.persistence, false);
    cr_assert_str_eq(cfg.persistence_location, ".");
    cr_assert_eq(cfg.store_sync, MQL_STORE_SYNC_FULL);
    cr_assert_eq(cfg.store_commit_window_ms, 20);
    cr_assert_eq(cfg.store_max_bytes, 0);
    cr_assert_eq(parse("persistence true"), MQL_OK);
    cr_assert_eq(cfg.persistence, true);
    cr_assert_eq(parse("persistence_location /var/lib/mqlite"), MQL_OK);
    cr_assert_str_eq(cfg.persistence_location, "/var/lib/mqlite");
    cr_assert_eq(parse("store_sync normal"), MQL_OK);
    cr_assert_eq(cfg.store_sync, MQL_STORE_SYNC_NORMAL);
    cr_assert_eq(parse("store_sync off"), MQL_OK);
    cr_assert_eq(cfg.store_sync, MQL_STORE_SYNC_OFF);
    cr_assert_eq(parse("store_commit_window_ms 50"), MQL_OK);
    cr_assert_eq(cfg.store_commit_window_ms, 50);
    cr_assert_eq(parse("store_max_bytes 10000000"), MQL_OK);
    cr_assert_eq(cfg.store_max_bytes, 10000000);
    cr_assert_eq(parse("store_sync always"), MQL_E_CONFIG);
    cr_assert(strstr(err, "t.conf:7: store_sync") == err, "%s", err);
    cr_assert_eq(parse("store_commit_window_ms 10001"), MQL_E_CONFIG);
    cr_assert(strstr(err, "store_commit_window_ms") != NULL, "%s", err);
    cr_assert_eq(parse("store_max_bytes -1"), MQL_E_CONFIG);
    cr_assert_eq(parse("persistence yes"), MQL_E_CONFIG);
    cr_assert_eq(cfg.max_queued_bytes, 0);
    cr_assert_eq(parse("max_queued_bytes 1048576"), MQL_OK);
    cr_assert_eq(cfg.max_queued_bytes, 1048576);
    cr_assert_eq(parse("max_queued_bytes 1k"), MQL_E_CONFIG);
    cr_assert_eq(parse("max_topic_alias 5"), MQL_OK);
    cr_assert_eq(cfg.max_topic_alias, 5);
    cr_assert_eq(parse("max_topic_alias_broker 0"), MQL_OK);
    cr_assert_eq(cfg.max_topic_alias_broker, 0);
}

/* ---- arity ------------------------------------------------------------------------ */

Test(config, missing_value)
{
    const char *keys[] = {"listener",
                          "protocol",
                          "allow_anonymous",
                          "max_keepalive",
                          "max_packet_size",
                          "max_inflight_messages",
                          "max_queued_messages",
                          "max_connections",
                          "retain_available",
                          "max_qos",
                          "log_type",
                          "max_session_expiry",
                          "client_id_conflict"};
    OK("listener 1883"); /* so protocol reaches its value check */
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char want[80];
        snprintf(want, sizeof(want), "%s: missing value (expected ", keys[i]);
        BAD(keys[i], want);
        char spaced[80];
        snprintf(spaced, sizeof(spaced), "%s   \r", keys[i]);
        BAD(spaced, want);
    }
}

Test(config, extra_values)
{
    OK("listener 1883");
    BAD("max_qos 1 2", "max_qos: unexpected extra value '2'", "0, 1 or 2");
    BAD("allow_anonymous true false", "allow_anonymous: unexpected extra value 'false'");
    BAD("listener 1884 127.0.0.1 x", "listener: unexpected extra value 'x'");
    BAD("protocol mqtt mqtt", "protocol: unexpected extra value 'mqtt'");
    BAD("log_type error warning", "log_type: unexpected extra value 'warning'");
    BAD("max_keepalive 60 # one minute", "max_keepalive: unexpected extra value '#'",
        "comments must be on a line of their own");
    BAD("client_id_conflict takeover a b c d e f g h i", "unexpected extra value 'a'");
}

/* ---- listener ---------------------------------------------------------------------- */

Test(config, listener_good)
{
    OK("listener 1883");
    OK("listener 8883 127.0.0.1");
    OK("listener 1 ::1");
    OK("listener 65535 gateway.local");
    cr_assert_eq(cfg.n_listeners, 4);
    cr_assert_eq(cfg.listeners[0].port, 1883);
    cr_assert_str_eq(cfg.listeners[0].address, "");
    cr_assert_eq(cfg.listeners[0].line, 7);
    cr_assert_eq(cfg.listeners[0].protocol, MQL_LISTENER_MQTT);
    cr_assert_eq(cfg.listeners[1].port, 8883);
    cr_assert_str_eq(cfg.listeners[1].address, "127.0.0.1");
    cr_assert_eq(cfg.listeners[2].port, 1);
    cr_assert_str_eq(cfg.listeners[2].address, "::1");
    cr_assert_eq(cfg.listeners[3].port, 65535);
}

Test(config, listener_bad_port)
{
    const char *bad[] = {
        "0",      "65536", "-1", "+1883", "1883x", "x", "0x75b", "18 83", "99999999999999999999999",
        "1883.0", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[64], want[80];
        snprintf(text, sizeof(text), "listener %s", bad[i]);
        if (strchr(bad[i], ' ') != NULL || bad[i][0] == '\0')
            continue; /* covered as extra/missing value elsewhere */
        snprintf(want, sizeof(want), "listener: '%s' is not a port number from 1 to 65535", bad[i]);
        BAD(text, want);
    }
    cr_assert_eq(cfg.n_listeners, 0);
    parse("listener 70000");
    cr_assert_str_eq(err, "t.conf:7: listener: '70000' is not a port number from 1 to 65535");
}

Test(config, listener_address_too_long)
{
    char text[200];
    snprintf(text, sizeof(text), "listener 1883 %070d", 0);
    BAD(text, "listener: address '", "is too long (at most 63 characters)");
    snprintf(text, sizeof(text), "listener 1883 %063d", 0);
    OK(text);
}

Test(config, listener_duplicate)
{
    cr_assert_eq(mql_config_line(&cfg, "listener 1883 127.0.0.1", "t.conf", 3, err, sizeof(err)),
                 MQL_OK);
    OK("listener 1883"); /* other address */
    OK("listener 1884 127.0.0.1");
    BAD("listener 1883 127.0.0.1", "listener: listener 1883 127.0.0.1 duplicates the listener "
                                   "on line 3");
    cr_assert_str_eq(err, "t.conf:7: listener: listener 1883 127.0.0.1 duplicates the "
                          "listener on line 3");
    BAD("listener 1883", "listener 1883 duplicates the listener on line 7");
    cr_assert_eq(cfg.n_listeners, 3);
}

Test(config, listener_too_many)
{
    for (int i = 0; i < MQL_MAX_LISTENERS; i++) {
        char text[64];
        snprintf(text, sizeof(text), "listener %d", 2000 + i);
        OK(text);
    }
    BAD("listener 3000", "listener: too many listeners (at most 16)");
    cr_assert_eq(cfg.n_listeners, MQL_MAX_LISTENERS);
}

/* ---- protocol (per listener) ------------------------------------------------------ */

Test(config, protocol_good)
{
    OK("listener 1883");
    OK("protocol mqtt");
    cr_assert_eq(cfg.listeners[0].protocol, MQL_LISTENER_MQTT);
}

Test(config, protocol_before_listener)
{
    BAD("protocol mqtt", "protocol: must follow a 'listener' line");
}

Test(config, protocol_bad)
{
    OK("listener 1883");
    BAD("protocol MQTT", "protocol: 'MQTT' is not mqtt or websockets");
    BAD("protocol http", "protocol: 'http' is not mqtt or websockets");
}

/* ---- booleans ---------------------------------------------------------------------- */

static void check_bool(const char *key, bool *field)
{
    char text[80], want[120];
    snprintf(text, sizeof(text), "%s false", key);
    OK(text);
    cr_assert_eq(*field, false, "%s", key);
    snprintf(text, sizeof(text), "%s true", key);
    OK(text);
    cr_assert_eq(*field, true, "%s", key);
    const char *bad[] = {"yes", "no", "1", "0", "TRUE", "False", "truex", "on"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "%s %s", key, bad[i]);
        snprintf(want, sizeof(want), "%s: '%s' is not true or false", key, bad[i]);
        BAD(text, want);
        cr_assert_eq(*field, true, "%s changed by a bad value", key);
    }
}

Test(config, allow_anonymous)
{
    check_bool("allow_anonymous", &cfg.allow_anonymous);
}

Test(config, retain_available)
{
    check_bool("retain_available", &cfg.retain_available);
}

/* ---- numbers ----------------------------------------------------------------------- */

/* Good values as text with the value that must be stored; read back through get(). */
struct good {
    const char *text;
    long long want;
};

static void check_number(const char *key, const struct good *good, size_t n_good,
                         const char *const *bad, size_t n_bad, const char *allowed,
                         long long (*get)(void))
{
    char text[120], want[200];
    for (size_t i = 0; i < n_good; i++) {
        snprintf(text, sizeof(text), "%s %s", key, good[i].text);
        OK(text);
        cr_assert_eq(get(), good[i].want, "%s: stored %lld, wanted %lld", text, get(),
                     good[i].want);
    }
    long long before = get();
    for (size_t i = 0; i < n_bad; i++) {
        snprintf(text, sizeof(text), "%s %s", key, bad[i]);
        snprintf(want, sizeof(want), "%s: '%s' is not %s", key, bad[i], allowed);
        BAD(text, want);
        cr_assert_eq(get(), before, "%s changed the value", text);
    }
}

/* Spellings that no number key accepts. */
#define NOT_NUMBERS "x", "1x", "+1", "0x10", "1.5", "1e3", "--1", "1-", "\xd9\xa1"

static long long get_keepalive(void)
{
    return cfg.max_keepalive;
}

Test(config, max_keepalive)
{
    struct good good[] = {{"0", 0}, {"10", 10}, {"65535", 65535}, {"007", 7}, {"60", 60}};
    const char *bad[] = {"65536", "-1", "70000", "4294967296", NOT_NUMBERS};
    check_number("max_keepalive", good, 5, bad, sizeof(bad) / sizeof(bad[0]),
                 "a number from 0 to 65535", get_keepalive);
    parse("max_keepalive 70000");
    cr_assert_str_eq(err, "t.conf:7: max_keepalive: '70000' is not a number from 0 to 65535");
}

static long long get_packet_size(void)
{
    return cfg.max_packet_size;
}

Test(config, max_packet_size)
{
    struct good good[] = {{"20", 20}, {"1024", 1024}, {"268435460", 268435460}};
    const char *bad[] = {"0", "19", "-20", "268435461", "99999999999", NOT_NUMBERS};
    check_number("max_packet_size", good, 3, bad, sizeof(bad) / sizeof(bad[0]),
                 "a number of bytes from 20 to 268435460", get_packet_size);
}

static long long get_inflight(void)
{
    return cfg.max_inflight_messages;
}

Test(config, max_inflight_messages)
{
    struct good good[] = {{"0", 0}, {"1", 1}, {"65535", 65535}};
    const char *bad[] = {"-1", "65536", NOT_NUMBERS};
    check_number("max_inflight_messages", good, 3, bad, sizeof(bad) / sizeof(bad[0]),
                 "a number from 0 (no limit) to 65535", get_inflight);
}

static long long get_queued(void)
{
    return cfg.max_queued_messages;
}

Test(config, max_queued_messages)
{
    struct good good[] = {{"0", 0}, {"1", 1}, {"100000", 100000}, {"4294967295", 4294967295LL}};
    const char *bad[] = {"-1", "-5", "4294967296", NOT_NUMBERS};
    check_number("max_queued_messages", good, 4, bad, sizeof(bad) / sizeof(bad[0]),
                 "a number from 0 (no limit) to 4294967295", get_queued);
}

static long long get_connections(void)
{
    return cfg.max_connections;
}

static long long get_connect_timeout(void)
{
    return cfg.connect_timeout;
}

/* connect_timeout: seconds from accept to a complete CONNECT; 0 (no limit) is refused, so a
 * connection that never logs in is always cut. */
Test(config, connect_timeout)
{
    cr_assert_eq(cfg.connect_timeout, 10);
    struct good good[] = {{"1", 1}, {"2", 2}, {"10", 10}, {"3600", 3600}};
    const char *bad[] = {"0", "-1", "3601", "4294967296", NOT_NUMBERS};
    check_number("connect_timeout", good, 4, bad, sizeof(bad) / sizeof(bad[0]),
                 "a number of seconds from 1 to 3600", get_connect_timeout);
    parse("connect_timeout 0");
    cr_assert_str_eq(err,
                     "t.conf:7: connect_timeout: '0' is not a number of seconds from 1 to 3600");
}

Test(config, max_connections)
{
    struct good good[] = {{"100", 100}, {"0", 0}, {"2147483647", 2147483647}, {"-1", -1}};
    const char *bad[] = {"-2", "-0", "-00", "-", "2147483648", "-2147483648", NOT_NUMBERS};
    check_number("max_connections", good, 4, bad, sizeof(bad) / sizeof(bad[0]),
                 "-1 (no limit) or a number from 0 to 2147483647", get_connections);
}

/* ---- per-listener settings (mosquitto 2.0) ----------------------------------------- */

Test(config, max_connections_global_then_per_listener)
{
    OK("max_connections 100"); /* before any listener: the whole broker */
    OK("listener 1883");
    cr_assert_eq(cfg.listeners[0].max_connections, -1, "a listener's default is no limit");
    OK("max_connections 5"); /* in a listener block: that listener */
    OK("listener 1884");
    OK("listener 1885");
    OK("max_connections 0");
    cr_assert_eq(cfg.max_connections, 100);
    cr_assert_eq(cfg.listeners[0].max_connections, 5);
    cr_assert_eq(cfg.listeners[1].max_connections, -1);
    cr_assert_eq(cfg.listeners[2].max_connections, 0);
    BAD("max_connections -2", "max_connections: '-2' is not -1 (no limit) or a number from 0 to "
                              "2147483647");
    BAD("max_connections 2147483648", "max_connections: '2147483648' is not");
    cr_assert_eq(cfg.listeners[2].max_connections, 0, "changed by a bad value");
    cr_assert_eq(cfg.max_connections, 100, "the global limit changed by a listener's line");
}

Test(config, per_listener_settings_default_false_allow_anonymous_global)
{
    cr_assert_eq(cfg.per_listener_settings, false);
    OK("listener 1883");
    cr_assert_eq(cfg.listeners[0].allow_anonymous, -1);
    OK("allow_anonymous false"); /* global wherever it stands */
    OK("listener 1884");
    cr_assert_eq(cfg.allow_anonymous, false);
    cr_assert_eq(cfg.listeners[0].allow_anonymous, -1);
    cr_assert_eq(mql_config_allow_anonymous(&cfg, 0), false);
    cr_assert_eq(mql_config_allow_anonymous(&cfg, 1), false);
    OK("password_file /etc/mqlite/passwd"); /* global too */
    OK("acl_file /etc/mqlite/acl");
    cr_assert_str_eq(cfg.password_file, "/etc/mqlite/passwd");
    cr_assert_str_eq(cfg.acl_file, "/etc/mqlite/acl");
}

Test(config, per_listener_settings_allow_anonymous_per_listener)
{
    OK("per_listener_settings true");
    OK("allow_anonymous false"); /* before any listener: the default of every listener */
    OK("password_file /etc/mqlite/passwd");
    OK("listener 1883 127.0.0.1");
    OK("allow_anonymous true");
    OK("listener 8883");
    OK("listener 8884");
    OK("allow_anonymous false");
    cr_assert_eq(cfg.per_listener_settings, true);
    cr_assert_eq(cfg.allow_anonymous, false);
    cr_assert_eq(cfg.listeners[0].allow_anonymous, 1);
    cr_assert_eq(cfg.listeners[1].allow_anonymous, -1);
    cr_assert_eq(cfg.listeners[2].allow_anonymous, 0);
    cr_assert_eq(mql_config_allow_anonymous(&cfg, 0), true);
    cr_assert_eq(mql_config_allow_anonymous(&cfg, 1), false, "inherits the global value");
    cr_assert_eq(mql_config_allow_anonymous(&cfg, 2), false);
    cr_assert_eq(mql_config_allow_anonymous(&cfg, 3), false, "-p listener: global value");
    BAD("allow_anonymous maybe", "allow_anonymous: 'maybe' is not true or false");
    cr_assert_eq(cfg.listeners[2].allow_anonymous, 0);
}

Test(config, per_listener_settings_password_and_acl_in_listener_refused)
{
    OK("per_listener_settings true");
    OK("listener 1883");
    BAD("password_file /etc/mqlite/passwd",
        "password_file: a password_file per listener (per_listener_settings true) is not "
        "supported by this version of mqlite",
        "before the first 'listener' line");
    BAD("acl_file /etc/mqlite/acl", "acl_file: a acl_file per listener", "not supported");
    cr_assert_str_eq(cfg.password_file, "");
    cr_assert_str_eq(cfg.acl_file, "");
}

Test(config, per_listener_settings_must_come_first)
{
    OK("per_listener_settings false"); /* the default again: harmless anywhere */
    OK("listener 1883");
    OK("per_listener_settings false");
    BAD("per_listener_settings true",
        "per_listener_settings: must come before the first 'listener' line and before "
        "allow_anonymous, password_file and acl_file");
    cr_assert_eq(cfg.per_listener_settings, false);

    mql_config_defaults(&cfg);
    OK("allow_anonymous true");
    BAD("per_listener_settings true", "must come before");
    mql_config_defaults(&cfg);
    OK("acl_file /etc/mqlite/acl");
    BAD("per_listener_settings true", "must come before");

    mql_config_defaults(&cfg);
    OK("max_keepalive 60"); /* other keys do not matter */
    OK("per_listener_settings true");
    OK("per_listener_settings true");
    OK("allow_anonymous false");
    BAD("per_listener_settings false", "must come before");
    cr_assert_eq(cfg.per_listener_settings, true);
    BAD("per_listener_settings yes", "per_listener_settings: 'yes' is not true or false");
    BAD("per_listener_settings", "per_listener_settings: missing value (expected true or false)");
}

Test(config, per_listener_settings_file_lines)
{
    const char *text = "listener 1883\n"
                       "allow_anonymous false\n"
                       "per_listener_settings true\n";
    char path[64];
    cr_assert_eq(load_text(text, strlen(text), path), MQL_E_CONFIG);
    char want[128];
    snprintf(want, sizeof(want), "%s:3: per_listener_settings: must come before", path);
    cr_assert(strncmp(err, want, strlen(want)) == 0, "%s", err);
}

Test(config, use_identity_as_username)
{
    BAD("use_identity_as_username true", "must follow a 'listener' line");
    OK("listener 8883");
    check_bool("use_identity_as_username", &cfg.listeners[0].use_identity_as_username);
    BAD("use_subject_as_username true", "is not supported by this version of mqlite",
        "use_identity_as_username");
}

Test(config, bridge_alpn)
{
    OK("connection aws");
    OK("bridge_alpn x-amzn-mqtt-ca");
    cr_assert_str_eq(cfg.bridges[0].alpn, "x-amzn-mqtt-ca");
    OK("bridge_alpn mqtt,x-amzn-mqtt-ca");
    cr_assert_str_eq(cfg.bridges[0].alpn, "mqtt,x-amzn-mqtt-ca");
}

Test(config, bridge_alpn_needs_tls)
{
    char path[64];
    const char *text = "connection up\naddress h\ntopic a\nbridge_alpn x-amzn-mqtt-ca\n";
    cr_assert_eq(load_text(text, strlen(text), path), MQL_E_CONFIG);
    cr_assert(strstr(err, "connection up: has bridge_alpn but no bridge_cafile") != NULL, "%s",
              err);
}

Test(config, listener_defaults_helper)
{
    mql_listener_conf l;
    memset(&l, 0x5a, sizeof(l));
    mql_listener_defaults(&l, 1884, "127.0.0.1", 0);
    cr_assert_eq(l.port, 1884);
    cr_assert_str_eq(l.address, "127.0.0.1");
    cr_assert_eq(l.protocol, MQL_LISTENER_MQTT);
    cr_assert_eq(l.max_connections, -1);
    cr_assert_eq(l.allow_anonymous, -1);
    cr_assert_str_eq(l.certfile, "");
    cr_assert_eq(l.require_certificate, false);
}

static long long get_qos(void)
{
    return cfg.max_qos;
}

Test(config, max_qos)
{
    struct good good[] = {{"0", 0}, {"1", 1}, {"2", 2}};
    const char *bad[] = {"3", "-1", "256", NOT_NUMBERS};
    check_number("max_qos", good, 3, bad, sizeof(bad) / sizeof(bad[0]), "0, 1 or 2", get_qos);
}

static long long get_expiry(void)
{
    return cfg.max_session_expiry;
}

Test(config, max_session_expiry)
{
    struct good good[] = {{"0", 0}, {"3600", 3600}, {"4294967295", 4294967295LL}};
    const char *bad[] = {"-1", "4294967296", "1h", "1d", NOT_NUMBERS};
    check_number("max_session_expiry", good, 3, bad, sizeof(bad) / sizeof(bad[0]),
                 "a number of seconds from 0 (never expire) to 4294967295", get_expiry);
}

/* ---- client_id_conflict ------------------------------------------------------------ */

Test(config, client_id_conflict)
{
    OK("client_id_conflict reject_new");
    cr_assert_eq(cfg.client_id_conflict, MQL_CONFLICT_REJECT_NEW);
    OK("client_id_conflict takeover");
    cr_assert_eq(cfg.client_id_conflict, MQL_CONFLICT_TAKEOVER);
    BAD("client_id_conflict reject", "client_id_conflict: 'reject' is not takeover or reject_new");
    BAD("client_id_conflict Takeover", "client_id_conflict: 'Takeover'", "takeover or reject_new");
    cr_assert_eq(cfg.client_id_conflict, MQL_CONFLICT_TAKEOVER);
}

/* ---- log_type ---------------------------------------------------------------------- */

#define LT(level) MQL_LOGT(MQL_LOG_##level)
#define LT_ALL (LT(ERROR) | LT(WARNING) | LT(NOTICE) | LT(INFO) | LT(DEBUG))

Test(config, log_type_each_value)
{
    const struct {
        const char *name;
        uint32_t bits;
    } v[] = {{"error", LT(ERROR)},
             {"warning", LT(WARNING)},
             {"notice", LT(NOTICE)},
             {"information", LT(INFO)},
             {"debug", LT(DEBUG)},
             {"all", LT_ALL},
             {"none", 0}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char text[64];
        mql_config_defaults(&cfg);
        snprintf(text, sizeof(text), "log_type %s", v[i].name);
        OK(text);
        cr_assert_eq(cfg.log_types, v[i].bits, "%s", text);
        cr_assert(cfg.log_types_set);
    }
}

Test(config, log_type_first_replaces_default_later_add)
{
    OK("log_type debug");
    cr_assert_eq(cfg.log_types, LT(DEBUG)); /* the default set is gone */
    OK("log_type error");
    cr_assert_eq(cfg.log_types, LT(DEBUG) | LT(ERROR));
    OK("log_type error"); /* repeating is harmless */
    cr_assert_eq(cfg.log_types, LT(DEBUG) | LT(ERROR));
    OK("log_type warning");
    cr_assert_eq(cfg.log_types, LT(DEBUG) | LT(ERROR) | LT(WARNING));
}

Test(config, log_type_none_and_all_replace)
{
    OK("log_type error");
    OK("log_type none");
    cr_assert_eq(cfg.log_types, 0);
    OK("log_type notice");
    cr_assert_eq(cfg.log_types, LT(NOTICE));
    OK("log_type all");
    cr_assert_eq(cfg.log_types, LT_ALL);
    OK("log_type none");
    cr_assert_eq(cfg.log_types, 0);
}

Test(config, log_type_bad)
{
    BAD("log_type info", "log_type: 'info' is not one of error, warning, notice, information, "
                         "debug, all, none");
    BAD("log_type ERROR", "log_type: 'ERROR' is not one of");
    BAD("log_type subscribe", "log_type: 'subscribe' is not supported by this version of mqlite",
        "error, warning, notice, information, debug, all, none");
    BAD("log_type websockets", "log_type: 'websockets' is not supported");
    cr_assert_eq(cfg.log_types, MQL_LOGT_DEFAULT);
    cr_assert_eq(cfg.log_types_set, false);
}

/* ---- errbuf handling --------------------------------------------------------------- */

Test(config, small_or_missing_errbuf)
{
    char small[12];
    cr_assert_eq(mql_config_line(&cfg, "max_qos 9", "t.conf", 7, small, sizeof(small)),
                 MQL_E_CONFIG);
    cr_assert_str_eq(small, "t.conf:7: m");
    cr_assert_eq(mql_config_line(&cfg, "max_qos 9", "t.conf", 7, NULL, 0), MQL_E_CONFIG);
    cr_assert_eq(mql_config_line(&cfg, "max_qos 1", "t.conf", 7, NULL, 0), MQL_OK);
    char tiny[1] = {'x'};
    cr_assert_eq(mql_config_line(&cfg, "max_qos 9", "t.conf", 7, tiny, 0), MQL_E_CONFIG);
    cr_assert_eq(tiny[0], 'x');
}

/* ---- files ------------------------------------------------------------------------- */

Test(config, load_full_file)
{
    const char *text = "# mqlite test configuration\n"
                       "\n"
                       "allow_anonymous false\n"
                       "max_keepalive 120\r\n"
                       "max_packet_size 65536\n"
                       "max_inflight_messages 10\n"
                       "max_queued_messages 500\n"
                       "max_connections 50\n"
                       "retain_available false\n"
                       "max_qos 1\n"
                       "log_type error\n"
                       "log_type debug\n"
                       "max_session_expiry 86400\n"
                       "client_id_conflict reject_new\n"
                       "   \n"
                       "listener 1883 127.0.0.1\n"
                       "protocol mqtt\n"
                       "listener 1884\n"
                       "# no newline at the end of the last line\n"
                       "max_qos 2";
    char path[64];
    mql_err rc = load_text(text, strlen(text), path);
    cr_assert_eq(rc, MQL_OK, "%s", err);
    cr_assert_eq(cfg.allow_anonymous, false);
    cr_assert_eq(cfg.max_keepalive, 120);
    cr_assert_eq(cfg.max_packet_size, 65536);
    cr_assert_eq(cfg.max_inflight_messages, 10);
    cr_assert_eq(cfg.max_queued_messages, 500);
    cr_assert_eq(cfg.max_connections, 50);
    cr_assert_eq(cfg.retain_available, false);
    cr_assert_eq(cfg.max_qos, 2);
    cr_assert_eq(cfg.log_types, LT(ERROR) | LT(DEBUG));
    cr_assert_eq(cfg.max_session_expiry, 86400);
    cr_assert_eq(cfg.client_id_conflict, MQL_CONFLICT_REJECT_NEW);
    cr_assert_eq(cfg.n_listeners, 2);
    cr_assert_eq(cfg.listeners[0].port, 1883);
    cr_assert_str_eq(cfg.listeners[0].address, "127.0.0.1");
    cr_assert_eq(cfg.listeners[0].line, 16);
    cr_assert_eq(cfg.listeners[1].port, 1884);
    cr_assert_str_eq(cfg.listeners[1].address, "");
    cr_assert_eq(cfg.listeners[1].line, 18);
}

Test(config, load_empty_file)
{
    char path[64];
    cr_assert_eq(load_text("", 0, path), MQL_OK);
    cr_assert_eq(cfg.n_listeners, 0);
    cr_assert_eq(cfg.log_types, MQL_LOGT_DEFAULT);
}

Test(config, load_reports_path_and_line)
{
    const char *text = "listener 1883\n# comment\n\nmax_keepalive 70000\nmax_qos 1\n";
    char path[64], want[160];
    cr_assert_eq(load_text(text, strlen(text), path), MQL_E_CONFIG);
    snprintf(want, sizeof(want), "%s:4: max_keepalive: '70000' is not a number from 0 to 65535",
             path);
    cr_assert_str_eq(err, want);
    cr_assert_eq(cfg.max_qos, 2, "parsing went on after the error");
}

Test(config, load_duplicate_listener_names_both_lines)
{
    const char *text = "listener 1883\nmax_qos 1\nlistener 1883\n";
    char path[64], want[160];
    cr_assert_eq(load_text(text, strlen(text), path), MQL_E_CONFIG);
    snprintf(want, sizeof(want), "%s:3: listener: listener 1883 duplicates the listener on line 1",
             path);
    cr_assert_str_eq(err, want);
}

Test(config, load_crlf_file)
{
    const char *text = "listener 1883\r\nmax_qos 0\r\n# c\r\n\r\nlog_type none\r\n";
    char path[64];
    cr_assert_eq(load_text(text, strlen(text), path), MQL_OK, "%s", err);
    cr_assert_eq(cfg.max_qos, 0);
    cr_assert_eq(cfg.log_types, 0);
}

Test(config, load_byte_order_mark)
{
    const char *text = "\xEF\xBB\xBFmax_qos 1\n";
    char path[64];
    cr_assert_eq(load_text(text, strlen(text), path), MQL_OK, "%s", err);
    cr_assert_eq(cfg.max_qos, 1);
}

Test(config, load_nul_byte)
{
    const char text[] = "max_qos 1\nmax_q\0os 1\n";
    char path[64], want[120];
    cr_assert_eq(load_text(text, sizeof(text) - 1, path), MQL_E_CONFIG);
    snprintf(want, sizeof(want), "%s:2: line contains a NUL byte", path);
    cr_assert_str_eq(err, want);
}

Test(config, load_missing_file)
{
    const char *path = "/nonexistent/mqlite.conf";
    cr_assert_eq(mql_config_load(&cfg, path, err, sizeof(err)), MQL_E_IO);
    cr_assert_str_eq(err, "/nonexistent/mqlite.conf: cannot open: No such file or directory");
}

Test(config, load_directory)
{
    /* fopen() of a directory succeeds on Linux; reading it fails with EISDIR. */
    cr_assert_eq(mql_config_load(&cfg, "/tmp", err, sizeof(err)), MQL_E_IO);
    cr_assert(strncmp(err, "/tmp:", 5) == 0, "%s", err);
    cr_assert(strstr(err, "Is a directory") != NULL, "%s", err);
}

/* ---- log_dest ---------------------------------------------------------------------- */

Test(config, log_dest_default_is_stderr)
{
    cr_assert_eq(cfg.log_dests, MQL_LOGD_STDERR);
    cr_assert_eq(cfg.n_log_files, 0);
    cr_assert_eq(cfg.log_dests_set, false);
    cr_assert_str_empty(cfg.pid_file);
    cr_assert_str_empty(cfg.user);
    cr_assert_str_empty(cfg.include_dir);
}

Test(config, log_dest_first_replaces_default_later_add)
{
    OK("log_dest syslog");
    cr_assert_eq(cfg.log_dests, MQL_LOGD_SYSLOG); /* stderr is gone */
    OK("log_dest stdout");
    OK("log_dest syslog"); /* repeating is harmless */
    cr_assert_eq(cfg.log_dests, MQL_LOGD_SYSLOG | MQL_LOGD_STDOUT);
    OK("log_dest file /var/log/mqlite.log");
    OK("log_dest stderr");
    cr_assert_eq(cfg.log_dests, MQL_LOGD_SYSLOG | MQL_LOGD_STDOUT | MQL_LOGD_STDERR);
    cr_assert_eq(cfg.n_log_files, 1);
    cr_assert_str_eq(cfg.log_files[0].path, "/var/log/mqlite.log");
    cr_assert_str_eq(cfg.log_files[0].where, "t.conf:7");
}

Test(config, log_dest_file_first_replaces_stderr)
{
    OK("log_dest file a.log");
    cr_assert_eq(cfg.log_dests, 0);
    cr_assert_eq(cfg.n_log_files, 1);
    OK("log_dest file b.log");
    cr_assert_eq(cfg.n_log_files, 2);
    cr_assert_str_eq(cfg.log_files[1].path, "b.log");
}

Test(config, log_dest_none_replaces_everything)
{
    OK("log_dest file a.log");
    OK("log_dest stderr");
    OK("log_dest none");
    cr_assert_eq(cfg.log_dests, 0);
    cr_assert_eq(cfg.n_log_files, 0);
    OK("log_dest file a.log"); /* no longer a duplicate */
    cr_assert_eq(cfg.n_log_files, 1);
}

Test(config, log_dest_bad)
{
    BAD("log_dest", "log_dest: missing value (expected stderr, stdout, syslog, file PATH or none)");
    BAD("log_dest console", "log_dest: 'console' is not stderr, stdout, syslog, file PATH or none");
    BAD("log_dest STDERR", "log_dest: 'STDERR' is not");
    BAD("log_dest topic", "log_dest: 'topic' is not supported by this version of mqlite");
    BAD("log_dest dlt", "log_dest: 'dlt' is not supported by this version of mqlite");
    BAD("log_dest file", "log_dest: file: missing path (expected log_dest file PATH)");
    BAD("log_dest stderr x", "log_dest: unexpected extra value 'x' (only 'file' takes a path)");
    BAD("log_dest file a.log b.log", "log_dest: unexpected extra value 'b.log'");
    cr_assert_eq(cfg.log_dests, MQL_LOGD_STDERR);
    cr_assert_eq(cfg.log_dests_set, false);
    parse("log_dest file");
    cr_assert_str_eq(err, "t.conf:7: log_dest: file: missing path (expected log_dest file PATH)");
}

Test(config, log_dest_file_limits)
{
    char text[400];
    snprintf(text, sizeof(text), "log_dest file /%0299d", 0);
    BAD(text, "log_dest: the path is longer than 255 characters");
    OK("log_dest file /a.log");
    cr_assert_eq(mql_config_line(&cfg, "log_dest file /a.log", "u.conf", 9, err, sizeof(err)),
                 MQL_E_CONFIG);
    cr_assert_str_eq(err, "u.conf:9: log_dest: file '/a.log' is already a destination (t.conf:7)");
    for (int i = 1; i < MQL_MAX_LOG_FILES; i++) {
        snprintf(text, sizeof(text), "log_dest file /%d.log", i);
        OK(text);
    }
    BAD("log_dest file /one-too-many.log", "log_dest: too many log files (at most 4)");
}

/* ---- pid_file, user ---------------------------------------------------------------- */

Test(config, pid_file)
{
    OK("pid_file /var/run/mqlite.pid");
    cr_assert_str_eq(cfg.pid_file, "/var/run/mqlite.pid");
    OK("pid_file run/m.pid");
    cr_assert_str_eq(cfg.pid_file, "run/m.pid");
    BAD("pid_file", "pid_file: missing value (expected a file path)");
    BAD("pid_file a b", "pid_file: unexpected extra value 'b'");
    char text[400];
    snprintf(text, sizeof(text), "pid_file /%0299d", 0);
    BAD(text, "pid_file: the path is longer than 255 characters");
    cr_assert_str_eq(cfg.pid_file, "run/m.pid");
}

Test(config, user)
{
    OK("user mqlite");
    cr_assert_str_eq(cfg.user, "mqlite");
    OK("user nobody");
    OK("user mq-lite_2.x");
    OK("user machine$");
    cr_assert_str_eq(cfg.user, "machine$");
    BAD("user", "user: missing value (expected a user name");
    BAD("user a b", "user: unexpected extra value 'b'");
    BAD("user -root", "user: '-root' is not a user name (letters, digits, '.', '_', '-')");
    BAD("user mq:lite", "user: 'mq:lite' is not a user name");
    BAD("user ../x", "user: '../x' is not a user name");
    BAD("user a$b", "user: 'a$b' is not a user name");
    char text[100];
    snprintf(text, sizeof(text), "user u%070d", 0);
    BAD(text, "is longer than 63 characters");
    cr_assert_str_eq(cfg.user, "machine$");
    parse("user mq:lite");
    cr_assert_str_eq(err, "t.conf:7: user: 'mq:lite' is not a user name (letters, digits, '.', "
                          "'_', '-')");
}

/* ---- include_dir ------------------------------------------------------------------- */

Test(config, include_dir_line_only_records)
{
    OK("include_dir /etc/mqlite/conf.d");
    cr_assert_str_eq(cfg.include_dir, "/etc/mqlite/conf.d");
    BAD("include_dir", "include_dir: missing value (expected a directory)");
    BAD("include_dir a b", "include_dir: unexpected extra value 'b'");
    char text[400];
    snprintf(text, sizeof(text), "include_dir /%0299d", 0);
    BAD(text, "include_dir: the path is longer than 255 characters");
}

static char tdir[64];

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A fresh directory with main.conf and conf.d/ in it. OUT: tdir. */
static void make_tree(void)
{
    strcpy(tdir, "/tmp/mqlite-test-include-XXXXXX");
    cr_assert(mkdtemp(tdir) != NULL, "mkdtemp: %s", strerror(errno));
    char d[128];
    snprintf(d, sizeof(d), "%s/conf.d", tdir);
    cr_assert_eq(mkdir(d, 0755), 0);
}

static void put(const char *name, const char *text)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/%s", tdir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

/* Load tdir/main.conf, whose text is written with every %D replaced by tdir. */
static mql_err load_main(const char *text)
{
    char buf[1024], *o = buf;
    for (const char *p = text; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == 'D') {
            o += sprintf(o, "%s", tdir);
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    put("main.conf", buf);
    char path[128];
    snprintf(path, sizeof(path), "%s/main.conf", tdir);
    return mql_config_load(&cfg, path, err, sizeof(err));
}

static void remove_tree(void)
{
    nftw(tdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* err must equal the text with %D replaced by tdir. */
static void expect_err(const char *want_fmt)
{
    char want[1024], *o = want;
    for (const char *p = want_fmt; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == 'D') {
            o += sprintf(o, "%s", tdir);
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    cr_assert_str_eq(err, want);
}

Test(config, include_dir_reads_conf_files_in_order)
{
    make_tree();
    put("conf.d/b.conf", "max_qos 1\nlistener 1884\n");
    put("conf.d/a.conf", "max_qos 0\nlistener 1883\n");
    put("conf.d/c.conf.disabled", "unknown_key 1\n");
    put("conf.d/README", "not a config file\n");
    put("conf.d/.conf", "unknown_key 1\n");
    cr_assert_eq(load_main("max_keepalive 10\ninclude_dir %D/conf.d\nmax_keepalive 20\n"), MQL_OK,
                 "%s", err);
    cr_assert_eq(cfg.max_qos, 1, "b.conf must be read after a.conf");
    cr_assert_eq(cfg.n_listeners, 2);
    cr_assert_eq(cfg.listeners[0].port, 1883);
    cr_assert_eq(cfg.listeners[1].port, 1884);
    cr_assert_eq(cfg.max_keepalive, 20, "lines after include_dir apply after the files");
    cr_assert_str_empty(cfg.include_dir);
    remove_tree();
}

Test(config, include_dir_empty_dir)
{
    make_tree();
    cr_assert_eq(load_main("include_dir %D/conf.d\n"), MQL_OK, "%s", err);
    remove_tree();
}

Test(config, include_dir_error_names_included_file)
{
    make_tree();
    put("conf.d/a.conf", "max_qos 1\n\nmax_qos 7\n");
    cr_assert_eq(load_main("listener 1883\ninclude_dir %D/conf.d\n"), MQL_E_CONFIG);
    expect_err("%D/conf.d/a.conf:3: max_qos: '7' is not 0, 1 or 2 (included from "
               "%D/main.conf:2)");
    remove_tree();
}

Test(config, include_dir_duplicate_listener_across_files)
{
    make_tree();
    put("conf.d/a.conf", "listener 1883\n");
    cr_assert_eq(load_main("listener 1883\ninclude_dir %D/conf.d/\n"), MQL_E_CONFIG);
    expect_err("%D/conf.d/a.conf:1: listener: listener 1883 duplicates the listener on line 1 "
               "(included from %D/main.conf:2)");
    remove_tree();
}

Test(config, include_dir_main_file_lines_after_include)
{
    make_tree();
    put("conf.d/a.conf", "max_qos 1\n");
    cr_assert_eq(load_main("include_dir %D/conf.d\n\nmax_qos x\n"), MQL_E_CONFIG);
    expect_err("%D/main.conf:3: max_qos: 'x' is not 0, 1 or 2");
    remove_tree();
}

Test(config, include_dir_missing_directory)
{
    make_tree();
    cr_assert_eq(load_main("# c\ninclude_dir %D/nope\n"), MQL_E_IO);
    expect_err("%D/main.conf:2: include_dir: cannot read directory '%D/nope': No such file or "
               "directory");
    remove_tree();
}

Test(config, include_dir_not_a_directory)
{
    make_tree();
    put("plain.conf", "max_qos 1\n");
    cr_assert_eq(load_main("include_dir %D/plain.conf\n"), MQL_E_IO);
    expect_err("%D/main.conf:1: include_dir: cannot read directory '%D/plain.conf': Not a "
               "directory");
    remove_tree();
}

/* An include file that cannot be opened (here a dangling symlink, which also fails for
 * root) is an error naming it and the include_dir line. */
Test(config, include_dir_unreadable_file)
{
    make_tree();
    put("conf.d/a.conf", "max_qos 1\n");
    char link[128];
    snprintf(link, sizeof(link), "%s/conf.d/b.conf", tdir);
    cr_assert_eq(symlink("/nonexistent/target.conf", link), 0);
    cr_assert_eq(load_main("include_dir %D/conf.d\n"), MQL_E_IO);
    expect_err("%D/main.conf:1: include_dir: cannot open '%D/conf.d/b.conf': No such file or "
               "directory");
    cr_assert_eq(cfg.max_qos, 1, "a.conf comes before b.conf");
    remove_tree();
}

Test(config, include_dir_file_is_a_directory)
{
    make_tree();
    char d[128];
    snprintf(d, sizeof(d), "%s/conf.d/sub.conf", tdir);
    cr_assert_eq(mkdir(d, 0755), 0);
    cr_assert_eq(load_main("include_dir %D/conf.d\n"), MQL_E_IO);
    expect_err("%D/conf.d/sub.conf:1: cannot read: Is a directory (included from "
               "%D/main.conf:1)");
    remove_tree();
}

Test(config, include_dir_nul_byte_in_included_file)
{
    make_tree();
    char path[128];
    snprintf(path, sizeof(path), "%s/conf.d/a.conf", tdir);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    fwrite("max_qos 1\nmax\0qos\n", 1, 18, f);
    fclose(f);
    cr_assert_eq(load_main("include_dir %D/conf.d\n"), MQL_E_CONFIG);
    expect_err("%D/conf.d/a.conf:2: line contains a NUL byte (included from %D/main.conf:1)");
    remove_tree();
}

Test(config, include_dir_nested)
{
    make_tree();
    char d[128];
    snprintf(d, sizeof(d), "%s/conf.d/inner", tdir);
    cr_assert_eq(mkdir(d, 0755), 0);
    char text[256];
    snprintf(text, sizeof(text), "max_qos 0\ninclude_dir %s/conf.d/inner\n", tdir);
    put("conf.d/a.conf", text);
    put("conf.d/inner/x.conf", "max_qos 1\nmax_keepalive 99999\n");
    cr_assert_eq(load_main("include_dir %D/conf.d\n"), MQL_E_CONFIG);
    /* the innermost file names its own includer only */
    expect_err("%D/conf.d/inner/x.conf:2: max_keepalive: '99999' is not a number from 0 to "
               "65535 (included from %D/conf.d/a.conf:2)");
    put("conf.d/inner/x.conf", "max_qos 1\n");
    mql_config_defaults(&cfg);
    cr_assert_eq(load_main("include_dir %D/conf.d\n"), MQL_OK, "%s", err);
    cr_assert_eq(cfg.max_qos, 1);
    remove_tree();
}

Test(config, include_dir_including_itself_is_bounded)
{
    make_tree();
    char text[256];
    snprintf(text, sizeof(text), "include_dir %s/conf.d\n", tdir);
    put("conf.d/loop.conf", text);
    cr_assert_eq(load_main("include_dir %D/conf.d\n"), MQL_E_CONFIG);
    cr_assert(strstr(err, "/conf.d/loop.conf:1: include_dir: '") != NULL, "%s", err);
    cr_assert(strstr(err, "is nested too deeply (at most 4 levels of include_dir; does a directory "
                          "include itself?)") != NULL,
              "%s", err);
    remove_tree();
}

/* mosquitto 2.0's listener defaults (mql_config_finish_listeners). */
static void finish(uint16_t port, bool ipv6)
{
    cr_assert_eq(mql_config_finish_listeners(&cfg, port, ipv6, err, sizeof(err)), MQL_OK, "%s",
                 err);
}

Test(config, no_listener_is_local_only_with_anonymous)
{
    finish(0, true);
    cr_assert(cfg.local_only);
    cr_assert_eq(cfg.n_listeners, 2);
    cr_assert_str_eq(cfg.listeners[0].address, "127.0.0.1");
    cr_assert_str_eq(cfg.listeners[1].address, "::1");
    cr_assert_eq(cfg.listeners[0].port, 1883);
    cr_assert_eq(cfg.listeners[1].port, 1883);
    cr_assert(mql_config_allow_anonymous(&cfg, 0));
}

Test(config, no_listener_without_ipv6_and_with_p)
{
    finish(1884, false);
    cr_assert(cfg.local_only);
    cr_assert_eq(cfg.n_listeners, 1);
    cr_assert_str_eq(cfg.listeners[0].address, "127.0.0.1");
    cr_assert_eq(cfg.listeners[0].port, 1884);
}

Test(config, local_only_honours_allow_anonymous_false)
{
    OK("allow_anonymous false");
    finish(0, false);
    cr_assert(cfg.local_only);
    cr_assert_not(mql_config_allow_anonymous(&cfg, 0));
}

Test(config, a_listener_turns_anonymous_off)
{
    OK("listener 1883");
    finish(0, true);
    cr_assert_not(cfg.local_only);
    cr_assert_eq(cfg.n_listeners, 1);
    cr_assert_str_eq(cfg.listeners[0].address, "");
    cr_assert_not(mql_config_allow_anonymous(&cfg, 0));
}

Test(config, a_listener_with_allow_anonymous_true)
{
    OK("allow_anonymous true");
    OK("listener 1883");
    finish(0, true);
    cr_assert(mql_config_allow_anonymous(&cfg, 0));
}

Test(config, per_listener_anonymous_defaults_to_false)
{
    OK("per_listener_settings true");
    OK("listener 1883");
    OK("allow_anonymous true");
    OK("listener 1884");
    finish(0, true);
    cr_assert(mql_config_allow_anonymous(&cfg, 0));
    cr_assert_not(mql_config_allow_anonymous(&cfg, 1));
}

Test(config, p_adds_a_loopback_listener_to_configured_ones)
{
    OK("listener 1883");
    finish(1999, true);
    cr_assert_not(cfg.local_only);
    cr_assert_eq(cfg.n_listeners, 2);
    cr_assert_str_eq(cfg.listeners[1].address, "127.0.0.1");
    cr_assert_eq(cfg.listeners[1].port, 1999);
    cr_assert_not(mql_config_allow_anonymous(&cfg, 1));
}
