/*
 * auth.h - who may log in (password file), who may publish and subscribe where (ACL file),
 * and how often a peer address may fail to log in (rate limiter).
 *
 * This module decides; the broker asks. It is pure: no locks, no global state, no logging.
 * The password and ACL checks only read their object, so several threads may call them at
 * once as long as nobody frees or replaces the object meanwhile (SIGHUP: load the new one,
 * swap the pointer under the broker's lock, free the old one when no check uses it). The
 * rate limiter changes its table: the broker serialises calls on one limiter. Loading
 * reads one file and reports the first problem as one line "FILE:LINE: what is wrong"; a
 * failed load leaves nothing behind, so on SIGHUP the broker keeps the objects it has.
 *
 * ## Password file (written by mqlite-passwd)
 * One line per user:
 *
 *     USER:$7$ITERATIONS$SALT$HASH
 *
 * HASH = PBKDF2-HMAC-SHA512(password, SALT, ITERATIONS), 64 bytes; SALT and HASH are standard
 * base64 with padding (the tool writes a 16-byte random salt; 1..64 bytes are accepted).
 * "$7$" is mosquitto 2.0's tag for the same construction, so a mosquitto 2.0 `$7$` file loads
 * here too; mosquitto's older "$6$" (salted SHA-512) and plaintext lines are refused.
 * ITERATIONS is stored per line (1..MQL_PASSWD_MAX_ITERATIONS), so the default can change
 * without invalidating old lines. USER is everything before the first ':': non-empty, valid
 * UTF-8, no control characters, no leading/trailing white space, does not start with '#'.
 * Blank lines and lines starting with '#' are ignored. Trailing white space (and the CR of
 * CRLF files) is ignored. A user defined twice is an error.
 *
 * ## ACL file (mosquitto syntax)
 *
 *     # comment
 *     topic [read|write|readwrite|deny] FILTER     (before any `user` line: anonymous clients)
 *     user NAME                                    (starts NAME's section; may repeat)
 *     topic [read|write|readwrite|deny] FILTER     (in a section: that user)
 *     pattern [read|write|readwrite|deny] FILTER   (anywhere: every client, %u %c substituted)
 *
 * As in mosquitto, NAME and FILTER are the rest of the line (they may contain spaces), and
 * `topic FILTER` without an access word means readwrite (so `topic read` grants readwrite
 * on the topic "read", as mosquitto does). FILTER must be a valid MQTT topic filter and not
 * a `$share/` filter (rules apply to the filter inside a shared subscription). Unknown
 * keywords, unknown access words and bad filters are errors with FILE:LINE. Leading and
 * trailing white space of a line are ignored.
 *
 * Which rules apply to a client:
 * - user == NULL (anonymous): the `topic` lines before the first `user` line, and patterns.
 * - user != NULL: the `topic` lines of every `user` section with exactly that name (empty
 *   set when there is none), and patterns. Anonymous rules never apply to a named user.
 * - Patterns: "%u" is replaced by the user name and "%c" by the client id, anywhere in the
 *   filter (other '%' are literal, as in mosquitto). A pattern that needs %u is skipped for
 *   anonymous clients (mosquitto does the same), one that needs %c is skipped when
 *   client_id is NULL. Hardening beyond mosquitto: a value containing '/', '+' or '#' could
 *   reach other clients' topics (client id "a/b" against `devices/%c/#` would get
 *   devices/a/b/#, inside client "a"'s tree), so a granting pattern is skipped when a value
 *   it substitutes contains one of them; a deny pattern is still applied with the value
 *   inserted literally (a "+" or "#" level then widens the denial: fail closed).
 *
 * Decision (the order of lines does not matter):
 *   1. If any applicable `deny` rule matches, access is refused ("deny wins").
 *   2. Else access is granted when an applicable rule with the access matches
 *      (read: read|readwrite; write: write|readwrite).
 *   3. Else refused: with an ACL file loaded, nothing is allowed unless a rule grants it.
 * Matching a topic name against a rule filter follows MQTT 4.7: '+' is one level (possibly
 * empty), '#' the parent level and everything below, and a rule starting with a wildcard
 * never matches a topic starting with '$' [MQTT-4.7.2-1]. So `$SYS/...` is readable only
 * through a rule whose first level is a literal `$SYS` (no implicit access, `#` is not
 * enough).
 *
 * SUBSCRIBE (mql_acl_can_subscribe): the filter is allowed only when every topic it could
 * match is readable. Precisely:
 *   a. no applicable deny rule intersects the filter (some topic matches both), and
 *   b. one applicable read rule covers the filter (every topic the filter matches, the rule
 *      matches too): rule `sensors/#` covers `sensors/+/temp`, `sensors/#` and `sensors`;
 *      rule `sensors/+/temp` does not cover `sensors/#`; rule `#` covers `+/x` but not
 *      `$SYS/#`; rule `$SYS/#` covers `$SYS/broker/uptime`.
 * This differs from mosquitto, which checks the filter text against the rule as if it were
 * a topic and filters each message again at delivery. Consequence: with `topic read #` and
 * `topic deny secret/#`, subscribing to `#` is refused here (it would match secret/x); the
 * client must subscribe to narrower filters. Coverage is decided per rule: a filter covered
 * only by the union of two rules (rules `a` and `a/+/#` against filter `a/#`) is refused.
 * Because of (a) and (b), every message routed to an allowed subscription is readable at
 * the time of the SUBSCRIBE; the broker should still call mql_acl_can_read at delivery,
 * because the ACL may be reloaded while the subscription lives.
 * A `$share/GROUP/FILTER` subscription is checked as FILTER.
 *
 * ## Rate limiter
 * Counts login failures per peer address in a table of fixed size (chosen at alloc, never
 * grows). After `max_failures` failures from one address within `window_ms`, the address
 * is blocked for `base_delay_ms`; each further block doubles the delay (up to
 * `max_delay_ms`). The doubling is forgotten after `forget_ms` without a failure. When the
 * table is full, a new address takes the slot of the least recently failing address that
 * is not blocked; when every slot is blocked, the one whose block ends first. Lookups scan
 * the table (a few hundred slots: microseconds per CONNECT).
 */
#ifndef MQL_AUTH_H
#define MQL_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"

/* ---------------------------------------------------------------------------------------- */
/* Password file                                                                            */
/* ---------------------------------------------------------------------------------------- */

#define MQL_PASSWD_DEFAULT_ITERATIONS 10000u /* ~20 ms on x86-64; measure on the target */
#define MQL_PASSWD_MAX_ITERATIONS 10000000u  /* refuse files that would stall the broker */
#define MQL_PASSWD_SALT_LEN 16u              /* salt bytes mqlite-passwd writes */
#define MQL_PASSWD_SALT_MAX 64u              /* longest salt accepted on load */
#define MQL_PASSWD_HASH_LEN 64u              /* SHA-512 output */
#define MQL_PASSWD_USER_MAX 65535u           /* MQTT strings are at most 65535 bytes */
#define MQL_PASSWD_PASS_MAX 65535u           /* MQTT binary data is at most 65535 bytes */
/* Longest line mql_passwd_format_line writes for a user of user_len bytes, with its NUL:
 * ":$7$" + 8 digits + "$" + 88 (base64 of 64) + "$" + 88 + NUL. */
#define MQL_PASSWD_LINE_MAX(user_len) ((size_t)(user_len) + 4 + 8 + 1 + 88 + 1 + 88 + 1)

typedef struct mql_passwd mql_passwd;

/* One parsed line of a password file. */
typedef struct mql_passwd_entry {
    const char *user; /* NULL for a blank or comment line; else points into the line */
    size_t user_len;  /* bytes of user (the line is not modified: user is not NUL-ended) */
    uint32_t iterations;
    size_t salt_len;
    uint8_t salt[MQL_PASSWD_SALT_MAX];
    uint8_t hash[MQL_PASSWD_HASH_LEN];
} mql_passwd_entry;

/*
 * Load the password file at path. On success *out owns every entry; free it with
 * mql_passwd_free. An empty file (or one with only comments) loads as an object with no
 * users, so every check fails.
 * Returns MQL_OK, MQL_E_CONFIG (a line does not parse: errbuf holds
 * "FILE:LINE: why"), MQL_E_IO (the file cannot be read: "FILE: strerror") or MQL_E_NOMEM.
 * OUT: *out is NULL on error. errbuf (may be NULL when errlen is 0) is "" on success.
 */
MQL_MUST_CHECK mql_err mql_passwd_load(mql_passwd **out, const char *path, char *errbuf,
                                       size_t errlen);

/* Free a password object and wipe its hashes. NULL is allowed. */
void mql_passwd_free(mql_passwd *pw);

/* Number of users in pw (0 for NULL). */
size_t mql_passwd_count(const mql_passwd *pw);

/*
 * True when user is in pw and pass (pass_len bytes, any content) is its password.
 * Costs one PBKDF2 in every case: an unknown user (and user == NULL) is hashed against a
 * dummy entry with the iteration count most common in the file, so the time says nothing
 * about which users exist (up to a binary search over the names, nanoseconds). The hashes
 * are compared in constant time. pw == NULL or pass_len > MQL_PASSWD_PASS_MAX: false at
 * once (no user can log in). The computed hash is wiped. The caller wipes pass.
 * The call takes as long as the PBKDF2 (see MQL_PASSWD_DEFAULT_ITERATIONS): keep it out of
 * code that must not block.
 */
bool mql_passwd_check(const mql_passwd *pw, const char *user, const uint8_t *pass, size_t pass_len);

/*
 * Parse one line (len bytes, without its newline; need not be NUL-terminated). Does no I/O
 * and no allocation. Returns MQL_OK (out->user == NULL for a blank or comment line) or
 * MQL_E_CONFIG with *why set to a constant phrase such as "unsupported hash type (expected
 * $7$ PBKDF2-SHA512 as written by mqlite-passwd)".
 */
MQL_MUST_CHECK mql_err mql_passwd_parse_line(const char *line, size_t len, mql_passwd_entry *out,
                                             const char **why);

/* True when user (len bytes) may appear in a password file (rules above). On false, *why
 * (may be NULL) is a constant phrase such as "contains ':'". */
bool mql_passwd_user_valid(const char *user, size_t len, const char **why);

/* PBKDF2-HMAC-SHA512 of pass with salt and iterations into out. Returns MQL_OK,
 * MQL_E_NOMEM or MQL_E_INTERNAL (bad arguments: iterations 0, salt_len 0). */
MQL_MUST_CHECK mql_err mql_passwd_hash(uint8_t out[MQL_PASSWD_HASH_LEN], const uint8_t *pass,
                                       size_t pass_len, const uint8_t *salt, size_t salt_len,
                                       uint32_t iterations);

/*
 * Write the password-file line for user and pass into buf, NUL-terminated, without a
 * newline: "USER:$7$ITERATIONS$SALT$HASH". The salt comes from the caller (mqlite-passwd
 * draws it from a CTR-DRBG; tests may pass a fixed one). Needs cap >=
 * MQL_PASSWD_LINE_MAX(strlen(user)).
 * Returns MQL_OK, MQL_E_CONFIG (invalid user, iterations 0 or above the maximum, salt_len
 * not 1..MQL_PASSWD_SALT_MAX, pass_len > MQL_PASSWD_PASS_MAX; *why says which),
 * MQL_E_TOO_LARGE (cap too small) or MQL_E_NOMEM. No secret stays in memory it used.
 * OUT: *why may be NULL.
 */
MQL_MUST_CHECK mql_err mql_passwd_format_line(char *buf, size_t cap, const char *user,
                                              const uint8_t *pass, size_t pass_len,
                                              uint32_t iterations, const uint8_t *salt,
                                              size_t salt_len, const char **why);

/* ---------------------------------------------------------------------------------------- */
/* ACL file                                                                                 */
/* ---------------------------------------------------------------------------------------- */

typedef struct mql_acl mql_acl;

/*
 * Load the ACL file at path (syntax and semantics above). On success *out owns the rules;
 * free with mql_acl_free. Returns MQL_OK, MQL_E_CONFIG ("FILE:LINE: why" in errbuf), MQL_E_IO
 * ("FILE: strerror") or MQL_E_NOMEM. OUT: *out is NULL on error; errbuf is "" on success.
 */
MQL_MUST_CHECK mql_err mql_acl_load(mql_acl **out, const char *path, char *errbuf, size_t errlen);

/* The same from len bytes of text in memory; `name` is the FILE of messages. */
MQL_MUST_CHECK mql_err mql_acl_parse(mql_acl **out, const char *text, size_t len, const char *name,
                                     char *errbuf, size_t errlen);

/* Free an ACL object. NULL is allowed. */
void mql_acl_free(mql_acl *acl);

/* Number of rules (topic and pattern lines) in acl (0 for NULL). */
size_t mql_acl_rule_count(const mql_acl *acl);

/*
 * May this client receive a message published on topic (a topic name, no wildcards)?
 * user: the authenticated user name, NULL for anonymous. client_id: the ClientID (NUL-
 * terminated; NULL only when unknown). acl == NULL means no ACL file is configured:
 * everything is allowed. A topic with '+' or '#' or an empty topic is refused.
 * Returns false too when memory for a pattern substitution cannot be had (fail closed).
 */
bool mql_acl_can_read(const mql_acl *acl, const char *user, const char *client_id, mql_bytes topic);

/* May this client publish on topic? Same contract as mql_acl_can_read. */
bool mql_acl_can_write(const mql_acl *acl, const char *user, const char *client_id,
                       mql_bytes topic);

/*
 * May this client subscribe to filter (rules a and b above; `$share/GROUP/` is stripped)?
 * An invalid filter is refused. acl == NULL: true for any valid filter.
 */
bool mql_acl_can_subscribe(const mql_acl *acl, const char *user, const char *client_id,
                           mql_bytes filter);

/* ---------------------------------------------------------------------------------------- */
/* Login rate limiter                                                                       */
/* ---------------------------------------------------------------------------------------- */

#define MQL_RATELIMIT_ADDR_MAX 64 /* address bytes kept, with the NUL; longer ones are cut */

typedef struct mql_ratelimit_cfg {
    uint32_t slots;         /* addresses tracked at once (default 256) */
    uint32_t max_failures;  /* failures within window_ms that block (default 5) */
    uint64_t window_ms;     /* default 60000 */
    uint64_t base_delay_ms; /* first block (default 10000), doubled for each further one */
    uint64_t max_delay_ms;  /* longest block (default 900000 = 15 min) */
    uint64_t forget_ms;     /* no failure for this long: the doubling restarts (3600000) */
} mql_ratelimit_cfg;

typedef struct mql_ratelimit mql_ratelimit;

/* The defaults above. */
void mql_ratelimit_defaults(mql_ratelimit_cfg *cfg);

/*
 * Allocate a limiter with cfg (NULL: defaults); its memory is fixed from now on.
 * Returns MQL_OK, MQL_E_CONFIG (slots or max_failures 0, window_ms 0) or MQL_E_NOMEM.
 */
MQL_MUST_CHECK mql_err mql_ratelimit_alloc(mql_ratelimit **out, const mql_ratelimit_cfg *cfg);

void mql_ratelimit_free(mql_ratelimit *rl);

/*
 * May addr (the peer address without port, e.g. "10.0.0.8" or "fe80::1%eth0") try to log
 * in at now_ms (a monotonic clock)? False while it is blocked. Call it before the password
 * check, so a blocked peer costs no PBKDF2. Does not change the table.
 */
bool mql_ratelimit_allow(const mql_ratelimit *rl, const char *addr, uint64_t now_ms);

/* Record a failed login from addr at now_ms. May block addr (see above). */
void mql_ratelimit_fail(mql_ratelimit *rl, const char *addr, uint64_t now_ms);

/* Record a successful login from addr: its failures in the current window are cleared (the
 * doubling of the delay is kept until forgotten); an address with no history is removed. */
void mql_ratelimit_ok(mql_ratelimit *rl, const char *addr);

/* For logs and tests: when addr is blocked at now_ms, the ms left, else 0. */
uint64_t mql_ratelimit_blocked_for(const mql_ratelimit *rl, const char *addr, uint64_t now_ms);

/* Number of addresses in the table. */
size_t mql_ratelimit_count(const mql_ratelimit *rl);

#endif
