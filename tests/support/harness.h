/*
 * harness.h - black-box integration test harness: run a broker binary, talk raw MQTT to it.
 *
 * Three parts, all independent of the broker's own code (no broker header is included, the
 * codec is never linked), so the tests judge the binary only by the bytes it sends:
 *
 *   tb_*  the broker under test: a child process started from $MQLITE_BIN (optionally
 *         behind $MQLITE_WRAPPER, e.g. "qemu-arm -L /usr/arm-linux-gnueabihf") with a
 *         generated config in a fresh temp dir, on a free 127.0.0.1 port;
 *   tc_*  a raw test client with its own packet framing, over the transport under test;
 *   pk_*  packet builders and a PUBLISH parser, written from the specification.
 *
 * Transports: $MQLITE_TEST_TRANSPORT = tcp (default), tls, ws or wss. The broker is started
 * with its listener speaking that transport (tls and wss with a throw-away certificate made
 * by openssl in the broker's temp dir), and every tc_* client dials it: over a plain socket
 * for tcp (as before transports existed), over nng streams for tls+tcp://, ws://.../mqtt
 * and wss://.../mqtt (WebSocket subprotocol "mqtt"). The same protocol tests run over
 * every transport: the bytes a test sends and expects are the same on all of them, TLS and
 * WebSocket framing stay below the tc_* interface. Differences: tc_fd is -1 on streams, and
 * a stream client reads at most one 64 KiB chunk ahead of what the test asked for.
 *
 * Every wait is bounded: no function here blocks longer than the timeout it is given (or a
 * documented fixed bound), so a misbehaving broker fails a test instead of hanging it.
 *
 * Failure handling: the tc_expect* and tb_start functions fail the current Criterion test
 * with cr_assert (the message names the caller's file:line). Use cr_assert (not cr_expect)
 * in tests: a test that reaches tb_stop() is treated as passed and its temp dir removed.
 * Give every suite `.fini = tb_fini`: it kills brokers a failed test left running and keeps
 * their temp dirs (config + broker log), printing the path. The broker also gets
 * PR_SET_PDEATHSIG, so it dies with a test process that Criterion kills on timeout.
 *
 * Thread safety: tc_* on distinct clients may run in parallel threads, but the asserting
 * functions (tc_expect*, tc_connect, tb_*) must only be called from the test's main thread;
 * worker threads use tc_connect_try/tc_send/tc_recv_packet, which never assert.
 */
#ifndef MQL_TEST_HARNESS_H
#define MQL_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------ */
/* Broker under test                                                                     */
/* ------------------------------------------------------------------------------------ */

typedef struct mql_broker mql_broker;

typedef enum tb_transport { TB_TCP = 0, TB_TLS, TB_WS, TB_WSS } tb_transport;

/* The transport of this run, from $MQLITE_TEST_TRANSPORT (tcp when unset or empty); any
 * other value fails the test. */
tb_transport tb_transport_get(void);
/* Its name: "tcp", "tls", "ws" or "wss". */
const char *tb_transport_name(void);

/* Skip the current test unless the transport is tcp, with `why` (a string literal) as the
 * reason: for tests about the TCP connection itself, not about MQTT. */
#define tb_skip_unless_tcp(why)                                                                    \
    do {                                                                                           \
        if (tb_transport_get() != TB_TCP)                                                          \
            cr_skip_test("needs transport tcp, this run is %s: %s", tb_transport_name(), why);     \
    } while (0)

/* Default bound for "something should arrive" waits, in milliseconds. */
#define TB_WAIT_MS 2000
/* Default bound for "nothing should arrive" waits, in milliseconds. */
#define TB_QUIET_MS 300

/*
 * Start a broker: pick a free 127.0.0.1 port, create a temp dir, write mqlite.conf there
 * with `listener PORT 127.0.0.1` (plus `protocol websockets` and/or `certfile`/`keyfile`
 * for the transport), `allow_anonymous true`, then extra_conf (may be NULL; any "%DIR%" in
 * it is replaced by the temp dir path) and then $MQLITE_EXTRA_CONF if set (same
 * substitution), run `[$MQLITE_WRAPPER] $MQLITE_BIN -c FILE` with stdout and stderr
 * appended to broker.log in the temp dir, and wait (at most 10 s) until the port accepts a
 * TCP connection. Retries with a new port if the broker exits before that (port race).
 * Lines of extra_conf that apply to the listener above them (protocol, max_connections,
 * ...) apply to the harness's listener unless extra_conf starts a listener of its own.
 * Fails the test on error; never returns NULL. The caller owns the result: tb_stop() it.
 */
mql_broker *tb_start(const char *extra_conf);
/* Same, with pre_conf (may be NULL, same substitution) written before the harness's
 * listener line: for keys that must precede every listener (per_listener_settings, a
 * broker-wide max_connections). */
mql_broker *tb_start_with(const char *pre_conf, const char *extra_conf);

/* The configuration lines of one more listener on 127.0.0.1:port speaking the transport
 * under test ("listener PORT 127.0.0.1", then `protocol websockets` and the harness's
 * certificate as needed, each line ending in '\n'), for extra_conf; tc_* clients reach it
 * like the harness's own listener. Writes at most cap bytes; returns out. */
char *tb_listener_conf(uint16_t port, char *out, size_t cap);

/*
 * SIGTERM the broker, wait at most 5 s, then SIGKILL; free b and remove its temp dir.
 * Returns the exit code (0..255) if the broker exited, 128 + signal number if it died from a
 * signal (137 if it had to be killed), or the status of an earlier tb_kill.
 */
int tb_stop(mql_broker *b);

/* SIGKILL the broker and reap it. b stays valid for tb_restart / tb_stop. */
void tb_kill(mql_broker *b);
/* SIGTERM and wait like tb_stop, but keep b (its directory and port) for tb_restart: to test
 * what happens while the broker is down. Returns the exit status. */
int tb_halt(mql_broker *b);

/* Stop the broker if it runs (SIGTERM, bounded as tb_stop), then start it again with the same
 * config file and port, waiting as tb_start does. The log is appended to. Fails the test on
 * error. */
void tb_restart(mql_broker *b);

/* True while the broker process is running (it has not exited or been killed). */
bool tb_alive(mql_broker *b);

uint16_t tb_port(const mql_broker *b);
/* The broker's process id (0 when not running), e.g. to read /proc/PID/status. */
int tb_pid(const mql_broker *b);
/* The broker's resident memory in KiB (VmRSS of /proc/PID/status), or -1 if it cannot be
 * read. Under $MQLITE_WRAPPER this is the emulator's process, broker included. */
long tb_rss_kib(const mql_broker *b);
/* "address" or "thread" when the broker process runs with AddressSanitizer or
 * ThreadSanitizer (its runtime library is mapped), else NULL. RSS says little about the
 * broker's own memory then (quarantine, shadow memory): tests that bound RSS skip that
 * check. Works whatever the test executable itself was built with. */
const char *tb_sanitizer(const mql_broker *b);
/* How many file descriptors the broker process has open (entries of /proc/PID/fd), or -1. */
int tb_fd_count(const mql_broker *b);
/* A free 127.0.0.1 TCP port (bound, read, closed), for extra listeners in extra_conf; 0 on
 * failure. Another process may take it before the broker binds it: rare, and tb_start then
 * fails the test with the broker's log. */
/* Register mqlite's nng TLS engine in this test process (platform/tls_engine.h), so
 * the test clients' TLS runs through it too. Call it before allocating an nng_tls_config;
 * the harness's own TLS clients do. Returns 0 or an NNG error code. */
int tb_tls_engine_init(void);

uint16_t tb_free_port(void);
/* Run the broker under test (MQLITE_BIN, through MQLITE_WRAPPER if set) with `-c conf` and
 * at most 10 s, for configurations that must make it exit: its stdout and stderr go into
 * out (cap bytes, NUL-terminated). Returns its exit status, or -1 if it did not exit. */
int tb_run_config(const char *conf, char *out, size_t cap);
/* Run argv (no shell, PATH searched) in dir (NULL: here), stdin from /dev/null, stdout and
 * stderr appended to out_path, waiting at most timeout_ms. Returns its exit status,
 * 128+signal if a signal ended it, -1 if it could not be started or was killed after the
 * timeout (126 if the child could not open out_path or enter dir). */
int tb_run(char *const argv[], const char *dir, const char *out_path, int timeout_ms);
/* The command line of the broker under test: MQLITE_WRAPPER's words (split into words, the
 * caller's buffer), MQLITE_BIN, then extra (NULL-terminated, at most TB_EXTRA_ARGS_MAX).
 * argv needs TB_BROKER_ARGV_MAX entries. Returns argc. */
#define TB_WRAPPER_ARGS_MAX 16
#define TB_EXTRA_ARGS_MAX 6
#define TB_BROKER_ARGV_MAX (TB_WRAPPER_ARGS_MAX + TB_EXTRA_ARGS_MAX + 2)
int tb_broker_argv(char *argv[], char *words, size_t words_cap, const char *const extra[]);
const char *tb_dir(const mql_broker *b);
const char *tb_log_path(const mql_broker *b);

/* Wait at most timeout_ms until the broker log contains needle. Returns whether it did. */
bool tb_log_contains(mql_broker *b, const char *needle, int timeout_ms);
/* How many times needle occurs in the broker log now. */
int tb_log_count(mql_broker *b, const char *needle);

/* Assert the broker is alive and serves a new client: CONNECT -> CONNACK 0, PINGREQ ->
 * PINGRESP, DISCONNECT. Used after error cases. */
#define tb_assert_serves(b) tb_assert_serves_at(__FILE__, __LINE__, (b))
void tb_assert_serves_at(const char *file, int line, mql_broker *b);

/* Criterion .fini for every integration suite: kills and reports brokers a failed test left
 * running (their temp dirs are kept and their paths printed). */
void tb_fini(void);

/* Monotonic milliseconds, and a sleep, for tests that measure time. */
int64_t tb_now_ms(void);
void tb_sleep_ms(int ms);

/* ------------------------------------------------------------------------------------ */
/* Packets                                                                               */
/* ------------------------------------------------------------------------------------ */

/* A whole MQTT control packet (or, for pk_put_*, a body under construction). Passed by
 * value for convenience; large enough for every packet the tests build. */
#define TB_PKT_CAP 8192
typedef struct tb_pkt {
    size_t len;
    uint8_t b[TB_PKT_CAP];
} tb_pkt;

/* Low-level writers (append to p; fail the test on overflow). pk_put_str writes a two-byte
 * length then the bytes of s; pk_put_bin the same for n raw bytes; pk_put_varint the
 * Variable Byte Integer encoding (values up to 268435455). */
void pk_put_u8(tb_pkt *p, uint8_t v);
void pk_put_u16(tb_pkt *p, uint16_t v);
void pk_put_u32(tb_pkt *p, uint32_t v);
void pk_put_varint(tb_pkt *p, uint32_t v);
void pk_put_bytes(tb_pkt *p, const void *data, size_t n);
void pk_put_str(tb_pkt *p, const char *s);
void pk_put_bin(tb_pkt *p, const void *data, size_t n);

/* Fixed header byte + Remaining Length (computed from body) + body. */
tb_pkt pk_frame(uint8_t first_byte, const tb_pkt *body);
/* Same for a body given as bytes. */
tb_pkt pk_raw(uint8_t first_byte, const void *body, size_t body_len);
/* A packet from literal bytes, taken as they are (no header added). */
tb_pkt pk_bytes(const void *data, size_t n);

/* CONNECT. Zero-initialised fields give a v3.1.1 CONNECT with ClientID "", clean session 0,
 * keepalive 0, no will, no credentials. */
typedef struct pk_connect_opts {
    const char *client_id;    /* NULL means "" */
    bool clean;               /* Clean Session (v3.1.1) / Clean Start (v5) */
    uint16_t keepalive;       /* seconds */
    uint8_t version;          /* protocol level: 0 means 4 (v3.1.1); 5 adds property blocks */
    const char *proto_name;   /* NULL means "MQTT" */
    const char *will_topic;   /* non-NULL sets the Will Flag */
    const void *will_payload; /* NULL means empty */
    size_t will_payload_len;  /* 0 with non-NULL will_payload means strlen(will_payload) */
    uint8_t will_qos;
    bool will_retain;
    const char *username;     /* non-NULL sets the User Name Flag */
    const void *password;     /* non-NULL sets the Password Flag */
    size_t password_len;      /* 0 with non-NULL password means strlen(password) */
    const tb_pkt *props;      /* v5 CONNECT properties (body only); NULL means none */
    const tb_pkt *will_props; /* v5 will properties (body only); NULL means none */
} pk_connect_opts;
tb_pkt pk_connect(const pk_connect_opts *o);
#define PK_CONNECT(...) pk_connect(&(const pk_connect_opts){__VA_ARGS__})

/* CONNECT with an explicit Connect Flags byte and a ClientID, nothing else in the payload:
 * for flag-validation tests. */
tb_pkt pk_connect_raw(const char *proto_name, uint8_t level, uint8_t flags, uint16_t keepalive,
                      const char *client_id);

/* PUBLISH. payload_len 0 with a non-NULL payload means strlen(payload); topic_len likewise
 * for topic (set it to send topics holding NUL or arbitrary bytes). id is written only when
 * qos > 0 (qos 3 is written as given, for error tests). */
typedef struct pk_publish_opts {
    const char *topic;
    size_t topic_len;
    const void *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain;
    bool dup;
    uint16_t id;
    bool v5;             /* write a property block after the packet id */
    const tb_pkt *props; /* v5 properties (body only); NULL means empty */
} pk_publish_opts;
tb_pkt pk_publish(const pk_publish_opts *o);
#define PK_PUBLISH(...) pk_publish(&(const pk_publish_opts){__VA_ARGS__})
/* Same, into a caller buffer (for payloads bigger than TB_PKT_CAP). Returns the length, or 0
 * if cap is too small. */
size_t pk_publish_into(uint8_t *out, size_t cap, const pk_publish_opts *o);

tb_pkt pk_puback(uint16_t id);
tb_pkt pk_pubrec(uint16_t id);
tb_pkt pk_pubrel(uint16_t id);
tb_pkt pk_pubcomp(uint16_t id);

/* SUBSCRIBE with n filters; options is the Requested QoS byte (v3.1.1) or the Subscription
 * Options byte (v5). */
typedef struct pk_sub {
    const char *filter;
    uint8_t options;
} pk_sub;
tb_pkt pk_subscribe(uint16_t id, size_t n, const pk_sub *subs);
/* One filter. */
tb_pkt pk_subscribe1(uint16_t id, const char *filter, uint8_t qos);
/* SUBACK as the server sends it (v3.1.1). */
tb_pkt pk_suback(uint16_t id, size_t n, const uint8_t *codes);
tb_pkt pk_unsubscribe(uint16_t id, size_t n, const char *const *filters);
tb_pkt pk_unsubscribe1(uint16_t id, const char *filter);
tb_pkt pk_unsuback(uint16_t id);
tb_pkt pk_connack(bool session_present, uint8_t rc);
tb_pkt pk_pingreq(void);
tb_pkt pk_pingresp(void);
tb_pkt pk_disconnect(void);

/* v5 helpers: properties are appended to a tb_pkt used as a property-block body. */
void pk_prop_u8(tb_pkt *p, uint8_t id, uint8_t v);
void pk_prop_u16(tb_pkt *p, uint8_t id, uint16_t v);
void pk_prop_u32(tb_pkt *p, uint8_t id, uint32_t v);
void pk_prop_varint(tb_pkt *p, uint8_t id, uint32_t v);
void pk_prop_str(tb_pkt *p, uint8_t id, const char *s);
void pk_prop_bin(tb_pkt *p, uint8_t id, const void *data, size_t n);
void pk_prop_pair(tb_pkt *p, uint8_t id, const char *k, const char *v);
/* v5 DISCONNECT with a reason code and optional properties (NULL: none). */
tb_pkt pk_disconnect_v5(uint8_t reason, const tb_pkt *props);
/* v5 SUBSCRIBE / UNSUBSCRIBE with a property block (NULL: empty). */
tb_pkt pk_subscribe_v5(uint16_t id, const tb_pkt *props, size_t n, const pk_sub *subs);
tb_pkt pk_unsubscribe_v5(uint16_t id, const tb_pkt *props, size_t n, const char *const *filters);

/* A PUBLISH as parsed by pk_parse_publish (v3.1.1 layout). Slices point into the buffer that
 * was parsed. */
typedef struct pk_publish_info {
    uint8_t qos;
    bool retain;
    bool dup;
    uint16_t id; /* 0 for QoS 0 */
    const uint8_t *topic;
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
} pk_publish_info;
/* Parse a whole PUBLISH packet of length n. Returns false if it is not a well-formed v3.1.1
 * PUBLISH. */
bool pk_parse_publish(const uint8_t *b, size_t n, pk_publish_info *out);

/* Render a packet as hex for messages: writes at most cap bytes, always NUL-terminated. */
const char *pk_hex(const uint8_t *b, size_t n, char *out, size_t cap);

/* ------------------------------------------------------------------------------------ */
/* Raw test client                                                                       */
/* ------------------------------------------------------------------------------------ */

typedef struct tc_client tc_client;

/* tc_recv_packet results other than a length. */
#define TC_TIMEOUT (-1) /* no whole packet within the timeout */
#define TC_CLOSED                                                                                  \
    (-2)               /* the peer closed (EOF), reset, or the transport failed (TLS alert,        \
                          WebSocket close) */
#define TC_ERROR (-3)  /* a malformed Remaining Length from the peer, or out of memory */
#define TC_TOOBIG (-4) /* the packet does not fit into cap (it stays buffered) */

/* Connect to the broker on 127.0.0.1:port over the transport under test (TCP_NODELAY;
 * for ws/wss including the HTTP upgrade; bounded 5 s). NULL on failure; never asserts
 * (usable from worker threads). */
tc_client *tc_connect_try(uint16_t port);
/* Same, failing the test if the connection cannot be made. */
#define tc_connect(port) tc_connect_at(__FILE__, __LINE__, (port))
tc_client *tc_connect_at(const char *file, int line, uint16_t port);

/* Close the connection (no DISCONNECT is sent) and free c. NULL is ignored. */
void tc_close(tc_client *c);
/* Send DISCONNECT, then close and free c. */
void tc_disconnect(tc_client *c);
/* The socket of a tcp client (for socket options, or to watch it directly); -1 over tls,
 * ws and wss, where the connection is an nng stream: tests that need it call
 * tb_skip_unless_tcp first. */
int tc_fd(const tc_client *c);

/* Send bytes, completely (bounded 5 s). Returns 0, or -1 if the connection failed (that is
 * not an assertion: error tests may send into a closed connection). Never raises SIGPIPE. */
int tc_send(tc_client *c, const void *bytes, size_t len);
int tc_sendp(tc_client *c, tb_pkt p);

/*
 * Receive one whole MQTT packet (fixed header + Remaining Length parsed here), waiting at
 * most timeout_ms. Returns its length (header included) with the bytes in buf, or TC_TIMEOUT,
 * TC_CLOSED, TC_ERROR, TC_TOOBIG. Bytes past the packet stay buffered for the next call.
 */
int tc_recv_packet(tc_client *c, uint8_t *buf, size_t cap, int timeout_ms);

/* Put a packet back in front of the receive buffer (it is returned by the next receive). */
void tc_unread(tc_client *c, const uint8_t *pkt, size_t len);

/* Assert the next packet is exactly these bytes. */
#define tc_expect(c, bytes, len, ms) tc_expect_at(__FILE__, __LINE__, (c), (bytes), (len), (ms))
void tc_expect_at(const char *file, int line, tc_client *c, const void *bytes, size_t len,
                  int timeout_ms);
#define tc_expectp(c, pkt, ms) tc_expectp_at(__FILE__, __LINE__, (c), (pkt), (ms))
void tc_expectp_at(const char *file, int line, tc_client *c, tb_pkt p, int timeout_ms);

/* Assert the broker closes the connection (EOF or reset) within timeout_ms and sends
 * nothing before that. */
#define tc_expect_closed(c, ms) tc_expect_closed_at(__FILE__, __LINE__, (c), (ms))
void tc_expect_closed_at(const char *file, int line, tc_client *c, int timeout_ms);

/* Assert nothing arrives and the connection stays open for ms milliseconds. */
#define tc_expect_nothing(c, ms) tc_expect_nothing_at(__FILE__, __LINE__, (c), (ms))
void tc_expect_nothing_at(const char *file, int line, tc_client *c, int ms);

/*
 * Assert the next packet is a PUBLISH with exactly want's topic, payload, qos, retain and
 * dup (and want->id if non-zero). Returns the packet id (0 for QoS 0) so the test can
 * acknowledge it. The broker chooses ids: tests never assume them.
 */
#define tc_expect_publish(c, ms, ...)                                                              \
    tc_expect_publish_at(__FILE__, __LINE__, (c), (ms), &(const pk_publish_opts){__VA_ARGS__})
uint16_t tc_expect_publish_at(const char *file, int line, tc_client *c, int timeout_ms,
                              const pk_publish_opts *want);

/* Receive the next packet and require a PUBLISH; info slices point into buf. Returns false
 * (without asserting) on timeout, close, or another packet type (which is put back). */
bool tc_recv_publish(tc_client *c, uint8_t *buf, size_t cap, pk_publish_info *info, int timeout_ms);

/*
 * Connect and log in: TCP connect, CONNECT (v3.1.1, client_id, clean, keepalive), assert
 * CONNACK with return code 0 and the given Session Present flag. Returns the client.
 */
#define tc_open(port, client_id, clean, keepalive, session_present)                                \
    tc_open_at(__FILE__, __LINE__, (port), (client_id), (clean), (keepalive), (session_present))
tc_client *tc_open_at(const char *file, int line, uint16_t port, const char *client_id, bool clean,
                      uint16_t keepalive, bool session_present);

/* SUBSCRIBE one filter with packet id id and assert SUBACK granting want_granted (0x80 for
 * failure). PUBLISH packets that arrive before the SUBACK (allowed by 3.8.4) are put back
 * for the next receive. */
#define tc_subscribe(c, id, filter, qos, want_granted)                                             \
    tc_subscribe_at(__FILE__, __LINE__, (c), (id), (filter), (qos), (want_granted))
void tc_subscribe_at(const char *file, int line, tc_client *c, uint16_t id, const char *filter,
                     uint8_t qos, uint8_t want_granted);

/* Publish and complete the flow as the sender: QoS 1 waits for PUBACK, QoS 2 for PUBREC,
 * sends PUBREL, waits for PUBCOMP (exact bytes). Packet ids come from a per-client counter
 * starting at 1. Use on clients that receive nothing else meanwhile. */
#define tc_publish(c, topic, payload, qos, retain)                                                 \
    tc_publish_at(__FILE__, __LINE__, (c), (topic), (payload), (qos), (retain))
void tc_publish_at(const char *file, int line, tc_client *c, const char *topic, const char *payload,
                   uint8_t qos, bool retain);

/* PINGREQ and assert PINGRESP: the connection is alive and served. */
#define tc_ping(c) tc_ping_at(__FILE__, __LINE__, (c))
void tc_ping_at(const char *file, int line, tc_client *c);

/* ------------------------------------------------------------------------------------ */
/* MQTT 5: property ids, a strict parser for every packet a server sends, v5 helpers      */
/* ------------------------------------------------------------------------------------ */

/* Property identifiers (MQTT 5.0 section 2.2.2.2, Table 2-4). */
#define PK_P_PAYLOAD_FORMAT 0x01
#define PK_P_MESSAGE_EXPIRY 0x02
#define PK_P_CONTENT_TYPE 0x03
#define PK_P_RESPONSE_TOPIC 0x08
#define PK_P_CORRELATION_DATA 0x09
#define PK_P_SUBSCRIPTION_ID 0x0B
#define PK_P_SESSION_EXPIRY 0x11
#define PK_P_ASSIGNED_CLIENT_ID 0x12
#define PK_P_SERVER_KEEP_ALIVE 0x13
#define PK_P_AUTH_METHOD 0x15
#define PK_P_AUTH_DATA 0x16
#define PK_P_REQUEST_PROBLEM_INFO 0x17
#define PK_P_WILL_DELAY 0x18
#define PK_P_REQUEST_RESPONSE_INFO 0x19
#define PK_P_RESPONSE_INFO 0x1A
#define PK_P_SERVER_REFERENCE 0x1C
#define PK_P_REASON_STRING 0x1F
#define PK_P_RECEIVE_MAXIMUM 0x21
#define PK_P_TOPIC_ALIAS_MAXIMUM 0x22
#define PK_P_TOPIC_ALIAS 0x23
#define PK_P_MAXIMUM_QOS 0x24
#define PK_P_RETAIN_AVAILABLE 0x25
#define PK_P_USER_PROPERTY 0x26
#define PK_P_MAXIMUM_PACKET_SIZE 0x27
#define PK_P_WILDCARD_SUB_AVAILABLE 0x28
#define PK_P_SUB_ID_AVAILABLE 0x29
#define PK_P_SHARED_SUB_AVAILABLE 0x2A

/* Subscription Options bits (section 3.8.3.1). */
#define PK_SUB_NO_LOCAL 0x04
#define PK_SUB_RAP 0x08
#define PK_SUB_RH(n) ((uint8_t)((n) << 4))

/* A slice of bytes inside a parsed packet. */
typedef struct pk_slice {
    const uint8_t *p;
    size_t n;
} pk_slice;

/*
 * One MQTT 5 control packet as sent by a server, parsed strictly: the fixed header flags
 * are those section 2.1.3 requires, every property block is well formed (known ids, values
 * of the right type and range, nothing repeated that may appear once), and no byte is left
 * over. The slices point into b, the struct's own copy of the packet: do not copy a pk_v5
 * by value (the slices would still point into the original).
 */
#define PK_V5_CAP 65536
typedef struct pk_v5 {
    uint8_t type;         /* control packet type, 1..15 */
    uint8_t flags;        /* low nibble of the first byte */
    uint8_t qos;          /* PUBLISH */
    bool retain;          /* PUBLISH */
    bool dup;             /* PUBLISH */
    bool session_present; /* CONNACK */
    uint8_t reason;       /* CONNACK, PUBACK..PUBCOMP, DISCONNECT, AUTH (0 when omitted) */
    uint16_t id;          /* PUBLISH QoS > 0, PUBACK..PUBCOMP, SUBACK, UNSUBACK */
    pk_slice topic;       /* PUBLISH Topic Name (may be empty with a Topic Alias) */
    pk_slice props;       /* property block contents, without its length */
    pk_slice payload;     /* PUBLISH payload; SUBACK / UNSUBACK reason codes */
    size_t len;           /* whole packet */
    uint8_t b[PK_V5_CAP];
} pk_v5;

/* Parse a whole packet of length n into out. Returns false, with a reason in *why (static
 * text; why may be NULL), if it is not a well-formed MQTT 5 packet of a type a server sends
 * (CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP, DISCONNECT,
 * AUTH). */
bool pk_v5_parse(const uint8_t *b, size_t n, pk_v5 *out, const char **why);

/* Check a property block (contents only). Multiple = the ids allowed more than once here
 * (User Property always; Subscription Identifier when allow_multi_sub_id). */
bool pk_props_check(pk_slice props, bool allow_multi_sub_id, const char **why);
/* How many times property id occurs in props. */
int pk_prop_count(pk_slice props, uint8_t id);
/* Value of the first occurrence of a Byte / Two Byte / Four Byte / Variable Byte Integer
 * property. Returns false if absent. */
bool pk_prop_int(pk_slice props, uint8_t id, uint32_t *out);
/* Every value of an integer property, in order; returns how many there are (at most cap
 * are written). */
size_t pk_prop_ints(pk_slice props, uint8_t id, uint32_t *out, size_t cap);
/* Value (without its length prefix) of the first occurrence of a UTF-8 string or Binary
 * Data property. Returns false if absent. */
bool pk_prop_data(pk_slice props, uint8_t id, pk_slice *out);
/* Every occurrence of property id, re-encoded exactly as it appeared (identifier + value),
 * concatenated in order: compare with a block built by pk_prop_* to check values and order
 * byte for byte. */
tb_pkt pk_props_select(pk_slice props, uint8_t id);
/* Whether a slice holds exactly the bytes of s / of data. */
bool pk_slice_eq(pk_slice s, const void *data, size_t n);
bool pk_slice_eqs(pk_slice s, const char *str);

/* PUBACK / PUBREC / PUBREL / PUBCOMP with a reason code and optional properties (v5). */
tb_pkt pk_ack_v5(uint8_t first_byte, uint16_t id, uint8_t reason, const tb_pkt *props);

/*
 * Receive the next packet and parse it as MQTT 5. Returns the tc_recv_packet result (the
 * length, or TC_TIMEOUT / TC_CLOSED / ...); a packet that does not parse fails the test.
 */
#define tc_recv_v5(c, out, ms) tc_recv_v5_at(__FILE__, __LINE__, (c), (out), (ms))
int tc_recv_v5_at(const char *file, int line, tc_client *c, pk_v5 *out, int timeout_ms);

/* Assert the next packet is a well-formed MQTT 5 packet of this type (1..15). */
#define tc_expect_v5(c, out, type, ms) tc_expect_v5_at(__FILE__, __LINE__, (c), (out), (type), (ms))
void tc_expect_v5_at(const char *file, int line, tc_client *c, pk_v5 *out, uint8_t type,
                     int timeout_ms);

/* Assert the next packet is a CONNACK with this Session Present flag and reason code (any
 * well-formed properties); out may be NULL. A reason of 0x80 or more also asserts the
 * connection is then closed [MQTT-3.2.2-7]. */
#define tc_expect_connack_v5(c, sp, rc, out)                                                       \
    tc_expect_connack_v5_at(__FILE__, __LINE__, (c), (sp), (rc), (out))
void tc_expect_connack_v5_at(const char *file, int line, tc_client *c, bool session_present,
                             uint8_t rc, pk_v5 *out);

/* Assert the next packet is a DISCONNECT with this reason code (any well-formed properties,
 * but never a Session Expiry Interval [MQTT-3.14.2-2]) and that the broker then closes the
 * connection [MQTT-3.14.4-2]; both within timeout_ms. */
#define tc_expect_disconnect_v5(c, reason, ms)                                                     \
    tc_expect_disconnect_v5_at(__FILE__, __LINE__, (c), (reason), (ms))
void tc_expect_disconnect_v5_at(const char *file, int line, tc_client *c, uint8_t reason,
                                int timeout_ms);

/* Assert the next packet is PUBACK/PUBREC/PUBREL/PUBCOMP (type 4..7) for id with this
 * reason (an omitted reason counts as 0x00). */
#define tc_expect_ack_v5(c, type, id, reason)                                                      \
    tc_expect_ack_v5_at(__FILE__, __LINE__, (c), (type), (id), (reason))
void tc_expect_ack_v5_at(const char *file, int line, tc_client *c, uint8_t type, uint16_t id,
                         uint8_t reason);

/*
 * Connect with MQTT 5: o is used with its version forced to 5; assert CONNACK reason 0x00
 * with the given Session Present flag. connack may be NULL. Returns the client.
 */
#define tc_open_v5(port, session_present, connack, ...)                                            \
    tc_open_v5_at(__FILE__, __LINE__, (port), (session_present), (connack),                        \
                  &(const pk_connect_opts){__VA_ARGS__})
tc_client *tc_open_v5_at(const char *file, int line, uint16_t port, bool session_present,
                         pk_v5 *connack, const pk_connect_opts *o);

/* SUBSCRIBE (v5) and assert a SUBACK with exactly these n reason codes. PUBLISH packets
 * that arrive first are put back for the next receive. */
#define tc_subscribe_v5(c, id, props, n, subs, codes)                                              \
    tc_subscribe_v5_at(__FILE__, __LINE__, (c), (id), (props), (n), (subs), (codes))
void tc_subscribe_v5_at(const char *file, int line, tc_client *c, uint16_t id, const tb_pkt *props,
                        size_t n, const pk_sub *subs, const uint8_t *codes);
/* One filter with these options, no properties except an optional Subscription Identifier
 * (0: none); asserts the given reason code. */
#define tc_sub1_v5(c, id, filter, options, sub_id, code)                                           \
    tc_sub1_v5_at(__FILE__, __LINE__, (c), (id), (filter), (options), (sub_id), (code))
void tc_sub1_v5_at(const char *file, int line, tc_client *c, uint16_t id, const char *filter,
                   uint8_t options, uint32_t sub_id, uint8_t code);

/*
 * Publish as a v5 client and complete the sender's flow: QoS 1 waits for PUBACK, QoS 2 for
 * PUBREC, sends PUBREL, waits for PUBCOMP. The acknowledgements must carry reason 0x00 or
 * 0x10 (No matching subscribers). Packet ids come from the client's counter. props may be
 * NULL. Use on clients that receive nothing else meanwhile.
 */
#define tc_publish_v5(c, topic, payload, qos, retain, props)                                       \
    tc_publish_v5_at(__FILE__, __LINE__, (c), (topic), (payload), (qos), (retain), (props))
void tc_publish_v5_at(const char *file, int line, tc_client *c, const char *topic,
                      const char *payload, uint8_t qos, bool retain, const tb_pkt *props);

/* Next packet id from the client's counter (never 0). */
uint16_t tc_next_id(tc_client *c);

/*
 * Assert the next packet is a v5 PUBLISH with this topic (an empty topic is not resolved
 * here), payload, qos and retain flag; it is left in out for property checks. QoS 1/2
 * messages are not acknowledged: use tc_ack_v5.
 */
#define tc_expect_pub_v5(c, out, topic, payload, qos, retain)                                      \
    tc_expect_pub_v5_at(__FILE__, __LINE__, (c), (out), (topic), (payload), (qos), (retain))
void tc_expect_pub_v5_at(const char *file, int line, tc_client *c, pk_v5 *out, const char *topic,
                         const char *payload, uint8_t qos, bool retain);

/* Complete the receiver's side for a PUBLISH received from the broker: QoS 1 sends PUBACK,
 * QoS 2 sends PUBREC, expects PUBREL, sends PUBCOMP; QoS 0 does nothing. */
#define tc_ack_v5(c, pub) tc_ack_v5_at(__FILE__, __LINE__, (c), (pub))
void tc_ack_v5_at(const char *file, int line, tc_client *c, const pk_v5 *pub);

#endif
