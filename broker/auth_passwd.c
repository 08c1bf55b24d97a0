/*
 * auth_passwd.c - the password file (format and contracts in auth_passwd.h).
 *
 * Design notes: loading reads the whole file (auth_file.c), parses each line with
 * mql_passwd_parse_line, which does no I/O, and stops at the first bad line with
 * "FILE:LINE: why"; nothing is kept from a failed load. Users are kept sorted by name for a
 * binary search. A check always runs one PBKDF2-HMAC-SHA512 (mbedtls) and compares with
 * mbedtls_ct_memcmp; an unknown user is hashed against a dummy entry so the time does not
 * tell which users exist. Every buffer that held a password or a hash is wiped with
 * mbedtls_platform_zeroize.
 *
 * Locking: none; a check only reads the object, a load builds a new one.
 * Performance: a password check costs one PBKDF2 (by design: ~20 ms at the default
 * iterations); keep it out of code that must not block.
 */
#include "auth_passwd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/constant_time.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>

#include "auth_file.h"
#include "codec.h"

typedef struct pw_user {
    char *name; /* NUL-terminated copy */
    size_t name_len;
    int line;
    uint32_t iterations;
    uint32_t salt_len;
    uint8_t salt[MQL_PASSWD_SALT_MAX];
    uint8_t hash[MQL_PASSWD_HASH_LEN];
} pw_user;

struct mql_passwd {
    pw_user *users; /* sorted by name (bytes, then length) */
    size_t n;
    pw_user dummy; /* hashed against for unknown users; its hash matches nothing */
};

static int pw_user_cmp(const void *a, const void *b)
{
    const pw_user *x = a, *y = b;
    return mql_authfile_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

bool mql_passwd_user_valid(const char *user, size_t len, const char **why)
{
    const char *w = NULL;
    if (len == 0)
        w = "user name is empty";
    else if (len > MQL_PASSWD_USER_MAX)
        w = "user name is longer than 65535 bytes";
    else if (memchr(user, ':', len) != NULL)
        w = "user name contains ':'";
    else if (!mql_utf8_valid((const uint8_t *)user, len))
        w = "user name is not valid UTF-8";
    else if (user[0] == ' ' || user[0] == '\t' || user[len - 1] == ' ' || user[len - 1] == '\t')
        w = "user name has leading or trailing white space";
    else if (user[0] == '#')
        w = "user name starts with '#' (that would be a comment line)";
    for (size_t i = 0; w == NULL && i < len; i++) {
        unsigned char c = (unsigned char)user[i];
        if (c < 0x20 || c == 0x7F)
            w = "user name contains a control character";
    }
    if (why != NULL)
        *why = w;
    return w == NULL;
}

static bool b64_chars(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || c == '=';
        if (!ok)
            return false;
    }
    return len > 0;
}

mql_err mql_passwd_parse_line(const char *line, size_t len, mql_passwd_entry *out, const char **why)
{
    const char *w = NULL;
    uint8_t tmp[MQL_PASSWD_HASH_LEN + 3];
    memset(out, 0, sizeof(*out));
    while (len > 0 && (mql_authfile_is_space(line[len - 1]) || line[len - 1] == '\n'))
        len--;
    size_t lead = 0;
    while (lead < len && mql_authfile_is_space(line[lead]))
        lead++;
    if (lead == len || line[lead] == '#')
        return MQL_OK; /* blank or comment */
    if (memchr(line, '\0', len) != NULL) {
        w = "line contains a NUL byte";
        goto fail;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL) {
        w = "expected USER:$7$ITERATIONS$SALT$HASH (no ':')";
        goto fail;
    }
    size_t ulen = (size_t)(colon - line);
    if (!mql_passwd_user_valid(line, ulen, &w))
        goto fail;

    const char *p = colon + 1;
    const char *end = line + len;
    if ((size_t)(end - p) < 3 || memcmp(p, "$7$", 3) != 0) {
        if (p < end && *p == '$')
            w = "unsupported hash type (expected $7$ PBKDF2-SHA512 as written by mqlite-passwd)";
        else
            w = "not a hashed password (plaintext is not accepted: use mqlite-passwd)";
        goto fail;
    }
    p += 3;

    uint64_t iter = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9') {
        if (iter <= MQL_PASSWD_MAX_ITERATIONS) /* past it, stay above it: no overflow */
            iter = iter * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p == digits || p == end || *p != '$') {
        w = "expected $7$ITERATIONS$SALT$HASH with ITERATIONS a decimal number";
        goto fail;
    }
    if (iter == 0 || iter > MQL_PASSWD_MAX_ITERATIONS) {
        w = "iterations must be 1 to 10000000";
        goto fail;
    }
    p++;

    const char *salt = p;
    const char *dollar = memchr(p, '$', (size_t)(end - p));
    if (dollar == NULL) {
        w = "expected $7$ITERATIONS$SALT$HASH (no '$' after the salt)";
        goto fail;
    }
    size_t olen = 0;
    if (!b64_chars(salt, (size_t)(dollar - salt)) ||
        mbedtls_base64_decode(out->salt, sizeof(out->salt), &olen, (const unsigned char *)salt,
                              (size_t)(dollar - salt)) != 0 ||
        olen == 0) {
        w = "salt is not 1 to 64 bytes of base64";
        goto fail;
    }
    out->salt_len = olen;

    const char *hash = dollar + 1;
    if (!b64_chars(hash, (size_t)(end - hash)) ||
        mbedtls_base64_decode(tmp, sizeof(tmp), &olen, (const unsigned char *)hash,
                              (size_t)(end - hash)) != 0 ||
        olen != MQL_PASSWD_HASH_LEN) {
        w = "hash is not 64 bytes of base64 (PBKDF2-SHA512)";
        goto fail;
    }
    memcpy(out->hash, tmp, MQL_PASSWD_HASH_LEN);
    mbedtls_platform_zeroize(tmp, sizeof(tmp));
    out->user = line;
    out->user_len = ulen;
    out->iterations = (uint32_t)iter;
    return MQL_OK;
fail:
    mbedtls_platform_zeroize(tmp, sizeof(tmp));
    mbedtls_platform_zeroize(out, sizeof(*out));
    out->user = NULL;
    if (why != NULL)
        *why = w;
    return MQL_E_CONFIG;
}

mql_err mql_passwd_hash(uint8_t out[MQL_PASSWD_HASH_LEN], const uint8_t *pass, size_t pass_len,
                        const uint8_t *salt, size_t salt_len, uint32_t iterations)
{
    mql_err rc = MQL_E_INTERNAL;
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA512);
    if (info == NULL || iterations == 0 || salt == NULL || salt_len == 0)
        goto fail;
    int r = mbedtls_md_setup(&ctx, info, 1);
    if (r != 0) {
        rc = r == MBEDTLS_ERR_MD_ALLOC_FAILED ? MQL_E_NOMEM : MQL_E_INTERNAL;
        goto fail;
    }
    static const uint8_t empty[1] = {0};
    if (mbedtls_pkcs5_pbkdf2_hmac(&ctx, pass != NULL ? pass : empty, pass_len, salt, salt_len,
                                  iterations, MQL_PASSWD_HASH_LEN, out) != 0)
        goto fail;
    mbedtls_md_free(&ctx); /* zeroizes the HMAC pads */
    return MQL_OK;
fail:
    mbedtls_md_free(&ctx);
    mbedtls_platform_zeroize(out, MQL_PASSWD_HASH_LEN);
    return rc;
}

mql_err mql_passwd_format_line(char *buf, size_t cap, const char *user, const uint8_t *pass,
                               size_t pass_len, uint32_t iterations, const uint8_t *salt,
                               size_t salt_len, const char **why)
{
    mql_err rc = MQL_E_CONFIG;
    const char *w = NULL;
    uint8_t hash[MQL_PASSWD_HASH_LEN];
    char salt64[4 * ((MQL_PASSWD_SALT_MAX + 2) / 3) + 1];
    char hash64[4 * ((MQL_PASSWD_HASH_LEN + 2) / 3) + 1];
    size_t ulen = user != NULL ? strlen(user) : 0;
    size_t olen;

    if (!mql_passwd_user_valid(user != NULL ? user : "", ulen, &w))
        goto fail;
    if (iterations == 0 || iterations > MQL_PASSWD_MAX_ITERATIONS) {
        w = "iterations must be 1 to 10000000";
        goto fail;
    }
    if (salt == NULL || salt_len == 0 || salt_len > MQL_PASSWD_SALT_MAX) {
        w = "salt must be 1 to 64 bytes";
        goto fail;
    }
    if (pass_len > MQL_PASSWD_PASS_MAX) {
        w = "password is longer than 65535 bytes";
        goto fail;
    }
    if (cap < MQL_PASSWD_LINE_MAX(ulen)) {
        w = "buffer too small";
        rc = MQL_E_TOO_LARGE;
        goto fail;
    }
    rc = mql_passwd_hash(hash, pass, pass_len, salt, salt_len, iterations);
    if (rc != MQL_OK) {
        w = "cannot compute PBKDF2-SHA512";
        goto fail;
    }
    rc = MQL_E_INTERNAL;
    w = "cannot encode base64";
    if (mbedtls_base64_encode((unsigned char *)salt64, sizeof(salt64), &olen, salt, salt_len) !=
            0 ||
        mbedtls_base64_encode((unsigned char *)hash64, sizeof(hash64), &olen, hash, sizeof(hash)) !=
            0)
        goto fail;
    int n = snprintf(buf, cap, "%s:$7$%u$%s$%s", user, (unsigned)iterations, salt64, hash64);
    if (n < 0 || (size_t)n >= cap)
        goto fail;
    mbedtls_platform_zeroize(hash, sizeof(hash));
    mbedtls_platform_zeroize(hash64, sizeof(hash64));
    if (why != NULL)
        *why = NULL;
    return MQL_OK;
fail:
    mbedtls_platform_zeroize(hash, sizeof(hash));
    mbedtls_platform_zeroize(hash64, sizeof(hash64));
    if (cap > 0 && buf != NULL)
        buf[0] = '\0';
    if (why != NULL)
        *why = w;
    return rc;
}

void mql_passwd_free(mql_passwd *pw)
{
    if (pw == NULL)
        return;
    for (size_t i = 0; i < pw->n; i++) {
        free(pw->users[i].name);
        mbedtls_platform_zeroize(&pw->users[i], sizeof(pw->users[i]));
    }
    free(pw->users);
    mbedtls_platform_zeroize(pw, sizeof(*pw));
    free(pw);
}

size_t mql_passwd_count(const mql_passwd *pw)
{
    return pw != NULL ? pw->n : 0;
}

/* The iteration count most users have (ties: the larger), or the default for no users. */
static uint32_t common_iterations(const mql_passwd *pw)
{
    if (pw->n == 0)
        return MQL_PASSWD_DEFAULT_ITERATIONS;
    uint32_t *v = malloc(pw->n * sizeof(*v));
    if (v == NULL)
        return pw->users[0].iterations;
    for (size_t i = 0; i < pw->n; i++)
        v[i] = pw->users[i].iterations;
    qsort(v, pw->n, sizeof(*v), u32_cmp);
    uint32_t best = v[0];
    size_t best_run = 0;
    for (size_t i = 0; i < pw->n;) {
        size_t j = i;
        while (j < pw->n && v[j] == v[i])
            j++;
        if (j - i >= best_run) {
            best = v[i];
            best_run = j - i;
        }
        i = j;
    }
    free(v);
    return best;
}

/* Append the user of entry e (read at line lineno) to pw; *cap is the capacity of
 * pw->users. Returns false when out of memory. */
static bool pw_add(mql_passwd *pw, size_t *cap, const mql_passwd_entry *e, int lineno)
{
    if (pw->n == *cap) {
        size_t ncap = *cap == 0 ? 16 : *cap * 2;
        pw_user *nu = realloc(pw->users, ncap * sizeof(*nu));
        if (nu == NULL)
            return false;
        pw->users = nu;
        *cap = ncap;
    }
    pw_user *u = &pw->users[pw->n];
    memset(u, 0, sizeof(*u));
    u->name = malloc(e->user_len + 1);
    if (u->name == NULL)
        return false;
    memcpy(u->name, e->user, e->user_len);
    u->name[e->user_len] = '\0';
    u->name_len = e->user_len;
    u->line = lineno;
    u->iterations = e->iterations;
    u->salt_len = (uint32_t)e->salt_len;
    memcpy(u->salt, e->salt, e->salt_len);
    memcpy(u->hash, e->hash, sizeof(u->hash));
    pw->n++;
    return true;
}

/* Parse every line of text (the file at path) into pw. *e is the entry each line is parsed
 * into (the caller wipes it). Returns MQL_OK, MQL_E_CONFIG ("FILE:LINE: why" in errbuf) or
 * MQL_E_NOMEM ("FILE: out of memory"). */
static mql_err pw_parse_lines(mql_passwd *pw, const char *text, size_t len, const char *path,
                              mql_passwd_entry *e, char *errbuf, size_t errlen)
{
    size_t cap = 0, pos = 0, line_len;
    const char *line;
    int lineno = 0;
    while (mql_authfile_next_line(text, len, &pos, &line, &line_len)) {
        const char *why = NULL;
        lineno++;
        if (mql_passwd_parse_line(line, line_len, e, &why) != MQL_OK) {
            mql_authfile_seterr(errbuf, errlen, "%s:%d: %s", path, lineno, why);
            return MQL_E_CONFIG;
        }
        if (e->user != NULL && !pw_add(pw, &cap, e, lineno)) {
            mql_authfile_seterr(errbuf, errlen, "%s: out of memory", path);
            return MQL_E_NOMEM;
        }
    }
    return MQL_OK;
}

/* Sort the users of pw by name and refuse a name defined twice ("FILE:LINE: ..." naming
 * the later line, in errbuf). Returns MQL_OK or MQL_E_CONFIG. */
static mql_err pw_sort_unique(mql_passwd *pw, const char *path, char *errbuf, size_t errlen)
{
    if (pw->n > 1)
        qsort(pw->users, pw->n, sizeof(pw_user), pw_user_cmp);
    for (size_t i = 1; i < pw->n; i++) {
        const pw_user *a = &pw->users[i - 1], *b = &pw->users[i];
        if (pw_user_cmp(a, b) == 0) {
            const pw_user *first = a->line < b->line ? a : b, *second = a->line < b->line ? b : a;
            mql_authfile_seterr(
                errbuf, errlen, "%s:%d: user \"%.*s\" is already defined at line %d", path,
                second->line,
                (int)(b->name_len > MQL_AUTHFILE_QUOTE_MAX ? MQL_AUTHFILE_QUOTE_MAX : b->name_len),
                b->name, first->line);
            return MQL_E_CONFIG;
        }
    }
    return MQL_OK;
}

/* The dummy entry unknown users are hashed against: a fixed salt of the usual length, a
 * hash no password produces in practice (and never compared as a success:
 * mql_passwd_check also requires a real user). */
static void pw_set_dummy(mql_passwd *pw)
{
    pw->dummy.iterations = common_iterations(pw);
    pw->dummy.salt_len = MQL_PASSWD_SALT_LEN;
    memset(pw->dummy.salt, 0x5A, MQL_PASSWD_SALT_LEN);
    memset(pw->dummy.hash, 0xFF, MQL_PASSWD_HASH_LEN);
}

mql_err mql_passwd_load(mql_passwd **out, const char *path, char *errbuf, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    mql_passwd_entry e;
    mql_passwd *pw = NULL;

    *out = NULL;
    memset(&e, 0, sizeof(e));
    mql_authfile_seterr(errbuf, errlen, "%s", "");
    mql_err rc = mql_authfile_read(path, &text, &len, errbuf, errlen);
    if (rc != MQL_OK)
        goto done;
    pw = calloc(1, sizeof(*pw));
    if (pw == NULL) {
        mql_authfile_seterr(errbuf, errlen, "%s: out of memory", path);
        rc = MQL_E_NOMEM;
        goto done;
    }
    rc = pw_parse_lines(pw, text, len, path, &e, errbuf, errlen);
    if (rc == MQL_OK)
        rc = pw_sort_unique(pw, path, errbuf, errlen);
    if (rc != MQL_OK)
        goto done;
    pw_set_dummy(pw);
    *out = pw;
    pw = NULL;
done:
    mbedtls_platform_zeroize(&e, sizeof(e));
    if (text != NULL) {
        mbedtls_platform_zeroize(text, len);
        free(text);
    }
    mql_passwd_free(pw);
    return rc;
}

static const pw_user *pw_find(const mql_passwd *pw, const char *user)
{
    size_t len = strlen(user);
    size_t lo = 0, hi = pw->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = mql_authfile_name_cmp(pw->users[mid].name, pw->users[mid].name_len, user, len);
        if (c == 0)
            return &pw->users[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bool mql_passwd_check(const mql_passwd *pw, const char *user, const uint8_t *pass, size_t pass_len)
{
    if (pw == NULL || pass_len > MQL_PASSWD_PASS_MAX)
        return false;
    const pw_user *u = user != NULL ? pw_find(pw, user) : NULL;
    const pw_user *t = u != NULL ? u : &pw->dummy;
    uint8_t h[MQL_PASSWD_HASH_LEN];
    if (mql_passwd_hash(h, pass, pass_len, t->salt, t->salt_len, t->iterations) != MQL_OK)
        return false; /* the hash is wiped already */
    int diff = mbedtls_ct_memcmp(h, t->hash, sizeof(h));
    mbedtls_platform_zeroize(h, sizeof(h));
    return (diff == 0) & (u != NULL);
}
