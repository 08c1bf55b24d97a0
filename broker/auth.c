/*
 * auth.c - password file, ACL file and login rate limiter (contracts and file formats in
 * auth.h).
 *
 * Design notes:
 * - Loading reads the whole file into memory, splits it into lines and parses each line
 *   with a function that does no I/O (mql_passwd_parse_line, acl_line). The first bad line
 *   ends the load with "FILE:LINE: why"; nothing is kept from a failed load.
 * - Passwords: users are kept sorted by name for a binary search. A check always runs one
 *   PBKDF2-HMAC-SHA512 (mbedtls) and compares with mbedtls_ct_memcmp; an unknown user is
 *   hashed against a dummy entry so the time does not tell which users exist. Every buffer
 *   that held a password or a hash is wiped with mbedtls_platform_zeroize.
 * - ACLs: rules live in three places: the anonymous list, user sections (sorted by name,
 *   a name may have several sections) and the pattern list. A decision scans the rules that
 *   apply twice: denials first, then grants, so the order of lines never matters. Three
 *   matchers work level by level over (pointer, length) strings without copying:
 *   topic_match (topic name against a rule), filter_covers (every topic of a subscription
 *   filter is matched by a rule) and filter_intersects (some topic matches both). Pattern
 *   substitution writes into a stack buffer, or a heap buffer for long values.
 * - Rate limiter: one fixed array of slots allocated once; linear lookup.
 *
 * Threading: none. Every function touches only the objects it is given; the broker
 * serialises calls on one object. The only memory allocated after a load is the heap buffer
 * of a long pattern substitution, freed before the call returns.
 * Performance: a password check costs one PBKDF2 (by design); an ACL decision is linear in
 * the rules that apply to the client (its sections and the patterns), typically a handful.
 */
#include "auth.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/constant_time.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>

#include "topic.h"

#define FILE_MAX_BYTES (64u * 1024u * 1024u) /* refuse larger password/ACL files */
#define MSG_NAME_MAX 64                      /* bytes of a user name quoted in messages */

/* ---------------------------------------------------------------------------------------- */
/* Shared helpers                                                                           */
/* ---------------------------------------------------------------------------------------- */

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/*
 * Read the whole file at path into a NUL-terminated heap buffer.
 * Returns MQL_OK, MQL_E_IO ("FILE: strerror" in errbuf), MQL_E_CONFIG (too large) or
 * MQL_E_NOMEM. OUT: *out (free it) and *len on success.
 */
static mql_err read_all(const char *path, char **out, size_t *len, char *errbuf, size_t errlen)
{
    mql_err rc = MQL_E_IO;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        seterr(errbuf, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    for (;;) {
        if (cap - n < 4096) {
            size_t ncap = cap == 0 ? 8192 : cap * 2;
            if (ncap > FILE_MAX_BYTES + 1)
                ncap = FILE_MAX_BYTES + 1;
            if (ncap <= n + 1) {
                seterr(errbuf, errlen, "%s: larger than %u bytes", path, FILE_MAX_BYTES);
                rc = MQL_E_CONFIG;
                goto fail;
            }
            char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL) {
                seterr(errbuf, errlen, "%s: out of memory", path);
                rc = MQL_E_NOMEM;
                goto fail;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                seterr(errbuf, errlen, "%s: %s", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return MQL_OK;
fail:
    if (f != NULL)
        fclose(f);
    if (buf != NULL) {
        mbedtls_platform_zeroize(buf, cap);
        free(buf);
    }
    return rc;
}

/* Iterate the lines of text: *pos starts at 0; *line is set to the next line without its
 * '\n'. Returns false at the end. A final line without '\n' counts; an empty text has no
 * lines. */
static bool next_line(const char *text, size_t len, size_t *pos, const char **line,
                      size_t *line_len)
{
    if (*pos >= len)
        return false;
    const char *start = text + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    size_t l = nl != NULL ? (size_t)(nl - start) : len - *pos;
    *line = start;
    *line_len = l;
    *pos += l + (nl != NULL ? 1 : 0);
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Password file                                                                            */
/* ---------------------------------------------------------------------------------------- */

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

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int pw_user_cmp(const void *a, const void *b)
{
    const pw_user *x = a, *y = b;
    return name_cmp(x->name, x->name_len, y->name, y->name_len);
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
    while (len > 0 && (is_space(line[len - 1]) || line[len - 1] == '\n'))
        len--;
    size_t lead = 0;
    while (lead < len && is_space(line[lead]))
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

mql_err mql_passwd_load(mql_passwd **out, const char *path, char *errbuf, size_t errlen)
{
    mql_err rc;
    char *text = NULL;
    size_t len = 0, cap = 0, pos = 0;
    const char *line;
    size_t line_len;
    int lineno = 0;
    mql_passwd_entry e;
    mql_passwd *pw = NULL;

    *out = NULL;
    seterr(errbuf, errlen, "%s", "");
    rc = read_all(path, &text, &len, errbuf, errlen);
    if (rc != MQL_OK)
        goto fail;
    rc = MQL_E_NOMEM;
    pw = calloc(1, sizeof(*pw));
    if (pw == NULL)
        goto nomem;
    while (next_line(text, len, &pos, &line, &line_len)) {
        const char *why = NULL;
        lineno++;
        if (mql_passwd_parse_line(line, line_len, &e, &why) != MQL_OK) {
            seterr(errbuf, errlen, "%s:%d: %s", path, lineno, why);
            rc = MQL_E_CONFIG;
            goto fail;
        }
        if (e.user == NULL)
            continue;
        if (pw->n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            pw_user *nu = realloc(pw->users, ncap * sizeof(*nu));
            if (nu == NULL)
                goto nomem;
            pw->users = nu;
            cap = ncap;
        }
        pw_user *u = &pw->users[pw->n];
        memset(u, 0, sizeof(*u));
        u->name = malloc(e.user_len + 1);
        if (u->name == NULL)
            goto nomem;
        memcpy(u->name, e.user, e.user_len);
        u->name[e.user_len] = '\0';
        u->name_len = e.user_len;
        u->line = lineno;
        u->iterations = e.iterations;
        u->salt_len = (uint32_t)e.salt_len;
        memcpy(u->salt, e.salt, e.salt_len);
        memcpy(u->hash, e.hash, sizeof(u->hash));
        pw->n++;
    }
    if (pw->n > 1)
        qsort(pw->users, pw->n, sizeof(pw_user), pw_user_cmp);
    for (size_t i = 1; i < pw->n; i++) {
        const pw_user *a = &pw->users[i - 1], *b = &pw->users[i];
        if (pw_user_cmp(a, b) == 0) {
            const pw_user *first = a->line < b->line ? a : b, *second = a->line < b->line ? b : a;
            seterr(errbuf, errlen, "%s:%d: user \"%.*s\" is already defined at line %d", path,
                   second->line, (int)(b->name_len > MSG_NAME_MAX ? MSG_NAME_MAX : b->name_len),
                   b->name, first->line);
            rc = MQL_E_CONFIG;
            goto fail;
        }
    }
    /* The dummy: a fixed salt of the usual length, a hash no password produces in practice
     * (and never compared as a success: mql_passwd_check also requires a real user). */
    pw->dummy.iterations = common_iterations(pw);
    pw->dummy.salt_len = MQL_PASSWD_SALT_LEN;
    memset(pw->dummy.salt, 0x5A, MQL_PASSWD_SALT_LEN);
    memset(pw->dummy.hash, 0xFF, MQL_PASSWD_HASH_LEN);
    mbedtls_platform_zeroize(&e, sizeof(e));
    mbedtls_platform_zeroize(text, len);
    free(text);
    *out = pw;
    return MQL_OK;
nomem:
    seterr(errbuf, errlen, "%s: out of memory", path);
fail:
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
        int c = name_cmp(pw->users[mid].name, pw->users[mid].name_len, user, len);
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

/* ---------------------------------------------------------------------------------------- */
/* ACL: objects and loading                                                                 */
/* ---------------------------------------------------------------------------------------- */

#define ACC_READ 1u
#define ACC_WRITE 2u
#define ACC_DENY 4u

#define SUBST_USER 1u
#define SUBST_CID 2u

typedef struct acl_rule {
    char *filter; /* NUL-terminated */
    uint32_t len;
    uint8_t access; /* ACC_* */
    uint8_t subst;  /* SUBST_* (patterns only) */
} acl_rule;

typedef struct rule_list {
    acl_rule *v;
    size_t n, cap;
} rule_list;

typedef struct acl_user {
    char *name;
    size_t name_len;
    rule_list rules;
} acl_user;

struct mql_acl {
    rule_list anon;
    rule_list patterns;
    acl_user *users; /* sorted by name after loading; a name may repeat */
    size_t nusers, capusers;
    size_t nrules;
};

static void rules_free(rule_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].filter);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

void mql_acl_free(mql_acl *acl)
{
    if (acl == NULL)
        return;
    rules_free(&acl->anon);
    rules_free(&acl->patterns);
    for (size_t i = 0; i < acl->nusers; i++) {
        free(acl->users[i].name);
        rules_free(&acl->users[i].rules);
    }
    free(acl->users);
    free(acl);
}

size_t mql_acl_rule_count(const mql_acl *acl)
{
    return acl != NULL ? acl->nrules : 0;
}

static int acl_user_cmp(const void *a, const void *b)
{
    const acl_user *x = a, *y = b;
    return name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static bool word_is(const char *p, size_t l, const char *w)
{
    return strlen(w) == l && memcmp(p, w, l) == 0;
}

/* Split s (n bytes, no leading space) into its first word and the rest (leading white
 * space skipped). */
static void split_word(const char *s, size_t n, const char **w, size_t *wl, const char **rest,
                       size_t *rl)
{
    size_t i = 0;
    while (i < n && s[i] != ' ' && s[i] != '\t')
        i++;
    *w = s;
    *wl = i;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    *rest = s + i;
    *rl = n - i;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static bool rule_add(rule_list *l, const char *filter, size_t len, uint8_t access, uint8_t subst)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap == 0 ? 4 : l->cap * 2;
        acl_rule *nv = realloc(l->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return false;
        l->v = nv;
        l->cap = ncap;
    }
    char *f = dup_n(filter, len);
    if (f == NULL)
        return false;
    l->v[l->n++] = (acl_rule){.filter = f, .len = (uint32_t)len, .access = access, .subst = subst};
    return true;
}

static uint8_t subst_flags(const char *f, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (f[i] == '%' && f[i + 1] == 'u')
            s |= SUBST_USER;
        else if (f[i] == '%' && f[i + 1] == 'c')
            s |= SUBST_CID;
    }
    return s;
}

/*
 * Parse one ACL line into acl. *section is the index of the current user section, or
 * SIZE_MAX before the first `user` line. Returns MQL_OK, MQL_E_CONFIG (*why: a message
 * written into whybuf) or MQL_E_NOMEM.
 */
static mql_err acl_line(mql_acl *acl, const char *line, size_t len, size_t *section, char *whybuf,
                        size_t whylen)
{
    while (len > 0 && (is_space(line[len - 1])))
        len--;
    while (len > 0 && is_space(line[0])) {
        line++;
        len--;
    }
    if (len == 0 || line[0] == '#')
        return MQL_OK;
    if (memchr(line, '\0', len) != NULL) {
        seterr(whybuf, whylen, "line contains a NUL byte");
        return MQL_E_CONFIG;
    }
    const char *kw, *rest;
    size_t kwl, restl;
    split_word(line, len, &kw, &kwl, &rest, &restl);

    if (word_is(kw, kwl, "user")) {
        if (restl == 0) {
            seterr(whybuf, whylen, "user: missing user name");
            return MQL_E_CONFIG;
        }
        if (acl->nusers == acl->capusers) {
            size_t ncap = acl->capusers == 0 ? 8 : acl->capusers * 2;
            acl_user *nu = realloc(acl->users, ncap * sizeof(*nu));
            if (nu == NULL)
                return MQL_E_NOMEM;
            acl->users = nu;
            acl->capusers = ncap;
        }
        acl_user *u = &acl->users[acl->nusers];
        memset(u, 0, sizeof(*u));
        u->name = dup_n(rest, restl);
        if (u->name == NULL)
            return MQL_E_NOMEM;
        u->name_len = restl;
        *section = acl->nusers++;
        return MQL_OK;
    }

    bool pattern = word_is(kw, kwl, "pattern");
    if (!pattern && !word_is(kw, kwl, "topic")) {
        seterr(whybuf, whylen, "unknown keyword '%.*s' (allowed: user, topic, pattern)",
               (int)(kwl > MSG_NAME_MAX ? MSG_NAME_MAX : kwl), kw);
        return MQL_E_CONFIG;
    }
    const char *key = pattern ? "pattern" : "topic";
    if (restl == 0) {
        seterr(whybuf, whylen, "%s: missing topic filter", key);
        return MQL_E_CONFIG;
    }
    const char *acc, *filter;
    size_t accl, filterl;
    split_word(rest, restl, &acc, &accl, &filter, &filterl);
    uint8_t access;
    if (filterl == 0) {
        /* `topic FILTER`: readwrite (mosquitto) */
        filter = acc;
        filterl = accl;
        access = ACC_READ | ACC_WRITE;
    } else if (word_is(acc, accl, "read")) {
        access = ACC_READ;
    } else if (word_is(acc, accl, "write")) {
        access = ACC_WRITE;
    } else if (word_is(acc, accl, "readwrite")) {
        access = ACC_READ | ACC_WRITE;
    } else if (word_is(acc, accl, "deny")) {
        access = ACC_DENY;
    } else {
        seterr(whybuf, whylen, "%s: unknown access '%.*s' (allowed: read, write, readwrite, deny)",
               key, (int)(accl > MSG_NAME_MAX ? MSG_NAME_MAX : accl), acc);
        return MQL_E_CONFIG;
    }
    if (filterl >= 7 && memcmp(filter, "$share/", 7) == 0) {
        seterr(whybuf, whylen,
               "%s: '%.*s': rules apply to the filter inside a shared subscription; write it "
               "without $share/GROUP/",
               key, (int)(filterl > MSG_NAME_MAX ? MSG_NAME_MAX : filterl), filter);
        return MQL_E_CONFIG;
    }
    if (!mql_topic_filter_valid((mql_bytes){(const uint8_t *)filter, (uint32_t)filterl}) ||
        filterl > 65535) {
        seterr(whybuf, whylen,
               "%s: '%.*s' is not a valid topic filter ('+' and '#' must be whole levels, '#' "
               "only last)",
               key, (int)(filterl > MSG_NAME_MAX ? MSG_NAME_MAX : filterl), filter);
        return MQL_E_CONFIG;
    }
    rule_list *l;
    uint8_t subst = 0;
    if (pattern) {
        l = &acl->patterns;
        subst = subst_flags(filter, filterl);
    } else if (*section == SIZE_MAX) {
        l = &acl->anon;
    } else {
        l = &acl->users[*section].rules;
    }
    if (!rule_add(l, filter, filterl, access, subst))
        return MQL_E_NOMEM;
    acl->nrules++;
    return MQL_OK;
}

mql_err mql_acl_parse(mql_acl **out, const char *text, size_t len, const char *name, char *errbuf,
                      size_t errlen)
{
    mql_err rc = MQL_E_NOMEM;
    size_t pos = 0, section = SIZE_MAX;
    const char *line;
    size_t line_len;
    int lineno = 0;
    char why[256];

    *out = NULL;
    seterr(errbuf, errlen, "%s", "");
    mql_acl *acl = calloc(1, sizeof(*acl));
    if (acl == NULL)
        goto nomem;
    while (next_line(text, len, &pos, &line, &line_len)) {
        lineno++;
        rc = acl_line(acl, line, line_len, &section, why, sizeof(why));
        if (rc == MQL_E_NOMEM)
            goto nomem;
        if (rc != MQL_OK) {
            seterr(errbuf, errlen, "%s:%d: %s", name, lineno, why);
            goto fail;
        }
    }
    if (acl->nusers > 1)
        qsort(acl->users, acl->nusers, sizeof(acl_user), acl_user_cmp);
    *out = acl;
    return MQL_OK;
nomem:
    seterr(errbuf, errlen, "%s: out of memory", name);
    rc = MQL_E_NOMEM;
fail:
    mql_acl_free(acl);
    return rc;
}

mql_err mql_acl_load(mql_acl **out, const char *path, char *errbuf, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    seterr(errbuf, errlen, "%s", "");
    mql_err rc = read_all(path, &text, &len, errbuf, errlen);
    if (rc != MQL_OK)
        return rc;
    rc = mql_acl_parse(out, text, len, path, errbuf, errlen);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* ACL: decisions                                                                           */
/* ---------------------------------------------------------------------------------------- */

enum acl_op { OP_READ, OP_WRITE, OP_SUBSCRIBE };

/* Does rule filter r (rn bytes) hit the subject for op? Denials: the subject topic matches,
 * or the subscription filter intersects. Grants: the topic matches, or the filter is
 * covered. */
static bool hit(const char *r, size_t rn, enum acl_op op, bool deny, const char *s, size_t sn)
{
    mql_bytes rule = {(const uint8_t *)r, (uint32_t)rn};
    mql_bytes subject = {(const uint8_t *)s, (uint32_t)sn};
    if (op != OP_SUBSCRIBE)
        return mql_topic_matches(rule, subject);
    return deny ? mql_topic_intersects(rule, subject) : mql_topic_covers(rule, subject);
}

/* A value that must not be substituted into a granting pattern. */
static bool unsafe_value(const char *v)
{
    return strpbrk(v, "/+#") != NULL;
}

typedef struct subst_buf {
    char stack[256];
    char *heap;
} subst_buf;

/*
 * The filter of pattern r for this client: 1 (and *out, *outn) when it applies, 0 when it
 * is skipped (a value is missing, or unsafe for a grant), -1 when out of memory.
 */
static int substitute(const acl_rule *r, const char *user, const char *cid, bool deny,
                      subst_buf *sb, const char **out, size_t *outn)
{
    if (r->subst == 0) {
        *out = r->filter;
        *outn = r->len;
        return 1;
    }
    if (((r->subst & SUBST_USER) && user == NULL) || ((r->subst & SUBST_CID) && cid == NULL))
        return 0;
    if (!deny && (((r->subst & SUBST_USER) && unsafe_value(user)) ||
                  ((r->subst & SUBST_CID) && unsafe_value(cid))))
        return 0;
    size_t ulen = user != NULL ? strlen(user) : 0, clen = cid != NULL ? strlen(cid) : 0;
    size_t need = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->filter[i] == '%' && i + 1 < r->len && r->filter[i + 1] == 'u') {
            need += ulen;
            i++;
        } else if (r->filter[i] == '%' && i + 1 < r->len && r->filter[i + 1] == 'c') {
            need += clen;
            i++;
        } else {
            need++;
        }
    }
    char *buf = sb->stack;
    if (need + 1 > sizeof(sb->stack)) {
        free(sb->heap);
        sb->heap = malloc(need + 1);
        if (sb->heap == NULL)
            return -1;
        buf = sb->heap;
    }
    size_t o = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->filter[i] == '%' && i + 1 < r->len && r->filter[i + 1] == 'u') {
            memcpy(buf + o, user, ulen);
            o += ulen;
            i++;
        } else if (r->filter[i] == '%' && i + 1 < r->len && r->filter[i + 1] == 'c') {
            memcpy(buf + o, cid, clen);
            o += clen;
            i++;
        } else {
            buf[o++] = r->filter[i];
        }
    }
    buf[o] = '\0';
    *out = buf;
    *outn = o;
    return 1;
}

/* The user sections named user: [*lo, *hi) in acl->users. */
static void user_range(const mql_acl *acl, const char *user, size_t *lo, size_t *hi)
{
    size_t len = strlen(user);
    size_t a = 0, b = acl->nusers;
    while (a < b) { /* lower bound */
        size_t mid = a + (b - a) / 2;
        if (name_cmp(acl->users[mid].name, acl->users[mid].name_len, user, len) < 0)
            a = mid + 1;
        else
            b = mid;
    }
    size_t e = a;
    while (e < acl->nusers && name_cmp(acl->users[e].name, acl->users[e].name_len, user, len) == 0)
        e++;
    *lo = a;
    *hi = e;
}

/* Does one rule of list l with an access in `want` hit the subject? */
static bool scan_list(const rule_list *l, uint8_t want, enum acl_op op, bool deny, const char *s,
                      size_t sn)
{
    for (size_t i = 0; i < l->n; i++) {
        const acl_rule *r = &l->v[i];
        if ((r->access & want) && hit(r->filter, r->len, op, deny, s, sn))
            return true;
    }
    return false;
}

/* One pass over the rules that apply to the client: with deny, look for a matching denial,
 * else for a grant with an access in `need`. Returns 1 when found, 0 when not, -1 when out
 * of memory. */
static int scan(const mql_acl *acl, const char *user, const char *cid, enum acl_op op, bool deny,
                uint8_t need, const char *s, size_t sn)
{
    uint8_t want = deny ? ACC_DENY : need;
    if (user == NULL) {
        if (scan_list(&acl->anon, want, op, deny, s, sn))
            return 1;
    } else {
        size_t lo, hi;
        user_range(acl, user, &lo, &hi);
        for (size_t k = lo; k < hi; k++)
            if (scan_list(&acl->users[k].rules, want, op, deny, s, sn))
                return 1;
    }
    int found = 0;
    subst_buf sb;
    sb.heap = NULL;
    for (size_t i = 0; i < acl->patterns.n && found == 0; i++) {
        const acl_rule *r = &acl->patterns.v[i];
        if (!(r->access & want))
            continue;
        const char *f;
        size_t fn;
        int a = substitute(r, user, cid, deny, &sb, &f, &fn);
        if (a < 0)
            found = -1;
        else if (a > 0 && hit(f, fn, op, deny, s, sn))
            found = 1;
    }
    free(sb.heap);
    return found;
}

static bool decide(const mql_acl *acl, const char *user, const char *cid, enum acl_op op,
                   const char *s, size_t sn)
{
    int d = scan(acl, user, cid, op, true, 0, s, sn);
    if (d != 0)
        return false; /* denied, or out of memory: fail closed */
    uint8_t need = op == OP_WRITE ? ACC_WRITE : ACC_READ;
    return scan(acl, user, cid, op, false, need, s, sn) == 1;
}

static bool topic_ok(mql_bytes t)
{
    return t.p != NULL && t.len > 0 && memchr(t.p, '+', t.len) == NULL &&
           memchr(t.p, '#', t.len) == NULL && memchr(t.p, '\0', t.len) == NULL;
}

bool mql_acl_can_read(const mql_acl *acl, const char *user, const char *client_id, mql_bytes topic)
{
    if (!topic_ok(topic))
        return false;
    if (acl == NULL)
        return true;
    return decide(acl, user, client_id, OP_READ, (const char *)topic.p, topic.len);
}

bool mql_acl_can_write(const mql_acl *acl, const char *user, const char *client_id, mql_bytes topic)
{
    if (!topic_ok(topic))
        return false;
    if (acl == NULL)
        return true;
    return decide(acl, user, client_id, OP_WRITE, (const char *)topic.p, topic.len);
}

bool mql_acl_can_subscribe(const mql_acl *acl, const char *user, const char *client_id,
                           mql_bytes filter)
{
    if (filter.p == NULL || !mql_topic_filter_valid(filter))
        return false;
    const char *f = (const char *)filter.p;
    size_t fn = filter.len;
    if (fn >= 7 && memcmp(f, "$share/", 7) == 0) {
        const char *slash = memchr(f + 7, '/', fn - 7); /* present: the filter is valid */
        fn -= (size_t)(slash + 1 - f);
        f = slash + 1;
    }
    if (acl == NULL)
        return true;
    return decide(acl, user, client_id, OP_SUBSCRIBE, f, fn);
}

/* ---------------------------------------------------------------------------------------- */
/* Rate limiter                                                                             */
/* ---------------------------------------------------------------------------------------- */

typedef struct rl_slot {
    bool used;
    uint8_t addr_len;
    char addr[MQL_RATELIMIT_ADDR_MAX];
    uint32_t failures; /* in the window that started at window_start */
    uint32_t strikes;  /* blocks so far (the delay doubles with each) */
    uint64_t window_start;
    uint64_t blocked_until;
    uint64_t last_fail;
} rl_slot;

struct mql_ratelimit {
    mql_ratelimit_cfg cfg;
    size_t used;
    rl_slot slots[];
};

void mql_ratelimit_defaults(mql_ratelimit_cfg *cfg)
{
    cfg->slots = 256;
    cfg->max_failures = 5;
    cfg->window_ms = 60000;
    cfg->base_delay_ms = 10000;
    cfg->max_delay_ms = 900000;
    cfg->forget_ms = 3600000;
}

mql_err mql_ratelimit_alloc(mql_ratelimit **out, const mql_ratelimit_cfg *cfg)
{
    mql_ratelimit_cfg c;
    *out = NULL;
    if (cfg != NULL)
        c = *cfg;
    else
        mql_ratelimit_defaults(&c);
    if (c.slots == 0 || c.slots > (1u << 20) || c.max_failures == 0 || c.window_ms == 0 ||
        c.base_delay_ms == 0 || c.max_delay_ms < c.base_delay_ms)
        return MQL_E_CONFIG;
    mql_ratelimit *rl = calloc(1, sizeof(*rl) + (size_t)c.slots * sizeof(rl_slot));
    if (rl == NULL)
        return MQL_E_NOMEM;
    rl->cfg = c;
    *out = rl;
    return MQL_OK;
}

void mql_ratelimit_free(mql_ratelimit *rl)
{
    free(rl);
}

size_t mql_ratelimit_count(const mql_ratelimit *rl)
{
    return rl != NULL ? rl->used : 0;
}

static size_t addr_key_len(const char *addr)
{
    size_t n = strlen(addr);
    return n < MQL_RATELIMIT_ADDR_MAX - 1 ? n : MQL_RATELIMIT_ADDR_MAX - 1;
}

static rl_slot *rl_find(const mql_ratelimit *rl, const char *addr)
{
    size_t n = addr_key_len(addr);
    for (uint32_t i = 0; i < rl->cfg.slots; i++) {
        const rl_slot *s = &rl->slots[i];
        if (s->used && s->addr_len == n && memcmp(s->addr, addr, n) == 0)
            return (rl_slot *)s;
    }
    return NULL;
}

/* A slot for a new address: a free one, else the least recently failing unblocked one, else
 * the one whose block ends first. */
static rl_slot *rl_take(mql_ratelimit *rl, uint64_t now)
{
    rl_slot *free_slot = NULL, *lru = NULL, *soonest = NULL;
    for (uint32_t i = 0; i < rl->cfg.slots && free_slot == NULL; i++) {
        rl_slot *s = &rl->slots[i];
        if (!s->used)
            free_slot = s;
        else if (now >= s->blocked_until) {
            if (lru == NULL || s->last_fail < lru->last_fail)
                lru = s;
        } else if (soonest == NULL || s->blocked_until < soonest->blocked_until) {
            soonest = s;
        }
    }
    rl_slot *s = free_slot != NULL ? free_slot : lru != NULL ? lru : soonest;
    assert(s != NULL); /* slots >= 1: a used slot is either unblocked or blocked */
    if (s == free_slot)
        rl->used++;
    memset(s, 0, sizeof(*s));
    return s;
}

bool mql_ratelimit_allow(const mql_ratelimit *rl, const char *addr, uint64_t now_ms)
{
    return mql_ratelimit_blocked_for(rl, addr, now_ms) == 0;
}

uint64_t mql_ratelimit_blocked_for(const mql_ratelimit *rl, const char *addr, uint64_t now_ms)
{
    if (rl == NULL || addr == NULL)
        return 0;
    const rl_slot *s = rl_find(rl, addr);
    if (s == NULL || now_ms >= s->blocked_until)
        return 0;
    return s->blocked_until - now_ms;
}

void mql_ratelimit_fail(mql_ratelimit *rl, const char *addr, uint64_t now_ms)
{
    if (rl == NULL || addr == NULL)
        return;
    rl_slot *s = rl_find(rl, addr);
    if (s == NULL) {
        s = rl_take(rl, now_ms);
        s->used = true;
        s->addr_len = (uint8_t)addr_key_len(addr);
        memcpy(s->addr, addr, s->addr_len);
        s->addr[s->addr_len] = '\0';
    }
    if (now_ms < s->blocked_until) {
        s->last_fail = now_ms; /* the caller did not ask first: count nothing more */
        return;
    }
    if (s->strikes > 0 && now_ms - s->last_fail >= rl->cfg.forget_ms)
        s->strikes = 0;
    if (s->failures == 0 || now_ms - s->window_start >= rl->cfg.window_ms) {
        s->window_start = now_ms;
        s->failures = 0;
    }
    s->failures++;
    s->last_fail = now_ms;
    if (s->failures >= rl->cfg.max_failures) {
        uint64_t delay = rl->cfg.base_delay_ms;
        for (uint32_t i = 0; i < s->strikes && delay < rl->cfg.max_delay_ms; i++)
            delay *= 2;
        if (delay > rl->cfg.max_delay_ms)
            delay = rl->cfg.max_delay_ms;
        s->blocked_until = now_ms + delay;
        if (s->strikes < UINT32_MAX)
            s->strikes++;
        s->failures = 0;
    }
}

void mql_ratelimit_ok(mql_ratelimit *rl, const char *addr)
{
    if (rl == NULL || addr == NULL)
        return;
    rl_slot *s = rl_find(rl, addr);
    if (s == NULL)
        return;
    s->failures = 0;
    if (s->strikes == 0 && s->blocked_until == 0) {
        memset(s, 0, sizeof(*s));
        rl->used--;
    }
}
