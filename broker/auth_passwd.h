/*
 * auth_passwd.h - who may log in: the password file that mqlite-passwd writes, the check
 * of a password against it, and the parsing and formatting of its lines.
 *
 * Pure: no locks, no global state, no logging. A check only reads its object, so several
 * threads may check at once as long as nobody frees the object meanwhile (SIGHUP: load a
 * new one, swap the pointer under the broker's lock, free the old one when no check uses
 * it). A failed load leaves nothing behind and reports "FILE:LINE: what is wrong".
 *
 * The file has one line per user:
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
 */
#ifndef MQL_AUTH_PASSWD_H
#define MQL_AUTH_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* MQL_PASSWD_*: the limits of the password file and of its hash. */
#define MQL_PASSWD_DEFAULT_ITERATIONS 10000u /* ~20 ms on x86-64; measure on the target */
#define MQL_PASSWD_MAX_ITERATIONS 10000000u  /* refuse files that would stall the broker */
#define MQL_PASSWD_SALT_LEN 16u              /* salt bytes mqlite-passwd writes */
#define MQL_PASSWD_SALT_MAX 64u              /* longest salt accepted on load */
#define MQL_PASSWD_HASH_LEN 64u              /* SHA-512 output */
#define MQL_PASSWD_USER_MAX 65535u           /* MQTT strings are at most 65535 bytes */
#define MQL_PASSWD_PASS_MAX 65535u           /* MQTT binary data is at most 65535 bytes */
/* MQL_PASSWD_LINE_MAX: the longest line mql_passwd_format_line writes for a user of user_len bytes,
 * with its NUL:
 * ":$7$" + 8 digits + "$" + 88 (base64 of 64) + "$" + 88 + NUL. */
#define MQL_PASSWD_LINE_MAX(user_len) ((size_t)(user_len) + 4 + 8 + 1 + 88 + 1 + 88 + 1)

/* mql_passwd: a loaded password file (opaque); checks only read it. */
typedef struct mql_passwd mql_passwd;

/* mql_passwd_entry: one parsed line of a password file. */
typedef struct mql_passwd_entry {
    const char *user; /* NULL for a blank or comment line; else points into the line */
    size_t user_len;  /* bytes of user (the line is not modified: user is not NUL-ended) */
    uint32_t iterations;
    size_t salt_len;
    uint8_t salt[MQL_PASSWD_SALT_MAX];
    uint8_t hash[MQL_PASSWD_HASH_LEN];
} mql_passwd_entry;

/*
 * mql_passwd_load: load the password file at path. On success *out owns every entry; free it with
 * mql_passwd_free. An empty file (or one with only comments) loads as an object with no
 * users, so every check fails.
 * Returns MQL_OK, MQL_E_CONFIG (a line does not parse: errbuf holds
 * "FILE:LINE: why"), MQL_E_IO (the file cannot be read: "FILE: strerror") or MQL_E_NOMEM.
 * OUT: *out is NULL on error. errbuf (may be NULL when errlen is 0) is "" on success.
 */
MQL_MUST_CHECK mql_err mql_passwd_load(mql_passwd **out, const char *path, char *errbuf,
                                       size_t errlen);

/* mql_passwd_free: free a password object and wipe its hashes. NULL is allowed. */
void mql_passwd_free(mql_passwd *pw);

/* mql_passwd_count: number of users in pw (0 for NULL). */
size_t mql_passwd_count(const mql_passwd *pw);

/*
 * mql_passwd_check: true when user is in pw and pass (pass_len bytes, any content) is its password.
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
 * mql_passwd_parse_line: parse one line (len bytes, without its newline; need not be
 * NUL-terminated). Does no I/O and no allocation. Returns MQL_OK (out->user == NULL for a blank or
 * comment line) or MQL_E_CONFIG with *why set to a constant phrase such as "unsupported hash type
 * (expected $7$ PBKDF2-SHA512 as written by mqlite-passwd)".
 */
MQL_MUST_CHECK mql_err mql_passwd_parse_line(const char *line, size_t len, mql_passwd_entry *out,
                                             const char **why);

/* mql_passwd_user_valid: true when user (len bytes) may appear in a password file (rules above). On
 * false, *why (may be NULL) is a constant phrase such as "contains ':'". */
bool mql_passwd_user_valid(const char *user, size_t len, const char **why);

/* mql_passwd_hash: PBKDF2-HMAC-SHA512 of pass with salt and iterations into out. Returns MQL_OK,
 * MQL_E_NOMEM or MQL_E_INTERNAL (bad arguments: iterations 0, salt_len 0). */
MQL_MUST_CHECK mql_err mql_passwd_hash(uint8_t out[MQL_PASSWD_HASH_LEN], const uint8_t *pass,
                                       size_t pass_len, const uint8_t *salt, size_t salt_len,
                                       uint32_t iterations);

/*
 * mql_passwd_format_line: write the password-file line for user and pass into buf, NUL-terminated,
 * without a newline: "USER:$7$ITERATIONS$SALT$HASH". The salt comes from the caller (mqlite-passwd
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

#endif
