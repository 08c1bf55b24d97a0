/*
 * auth_acl.c - the ACL file and its decisions (syntax and semantics in auth_acl.h).
 *
 * Design notes: loading reads the whole file (auth_file.c) and parses it line by line with
 * functions that do no I/O; the first bad line ends the load with "FILE:LINE: why". Rules
 * live in three places: the anonymous list, user sections (sorted by name, a name may have
 * several sections) and the pattern list. A decision scans the rules that apply twice:
 * denials first, then grants, so the order of lines never matters. Matching is topic.c's:
 * mql_topic_matches (a topic name against a rule), mql_topic_covers (every topic of a
 * subscription filter is matched by a rule) and mql_topic_intersects (some topic matches
 * both). What is the ACL's own stays here: mosquitto's %u/%c pattern substitution, written
 * into a stack buffer, or a heap buffer for long values.
 *
 * Locking: none; a decision only reads the object. The only memory allocated after a load
 * is the heap buffer of a long pattern substitution, freed before the call returns.
 * Performance: a decision is linear in the rules that apply to the client (its sections and
 * the patterns), typically a handful.
 */
#include "auth_acl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth_file.h"
#include "topic.h"

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
    return mql_authfile_name_cmp(x->name, x->name_len, y->name, y->name_len);
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

/* At most MQL_AUTHFILE_QUOTE_MAX bytes of a word, for a message. */
static int quoted(size_t len)
{
    return (int)(len > MQL_AUTHFILE_QUOTE_MAX ? MQL_AUTHFILE_QUOTE_MAX : len);
}

/* `user NAME`: start a new section for NAME (the rest of the line); *section becomes its
 * index. Returns MQL_OK, MQL_E_CONFIG (message in whybuf) or MQL_E_NOMEM. */
static mql_err user_line(mql_acl *acl, const char *name, size_t len, size_t *section, char *whybuf,
                         size_t whylen)
{
    if (len == 0) {
        mql_authfile_seterr(whybuf, whylen, "user: missing user name");
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
    u->name = dup_n(name, len);
    if (u->name == NULL)
        return MQL_E_NOMEM;
    u->name_len = len;
    *section = acl->nusers++;
    return MQL_OK;
}

/* The access word and filter of a `topic` or `pattern` line (rest: what follows the
 * keyword, non-empty). `topic FILTER` without an access word means readwrite, as in
 * mosquitto. Returns MQL_OK or MQL_E_CONFIG (message in whybuf).
 * OUT: *access (ACC_*), *filter and *filterl (borrowed from rest). */
static mql_err rule_access(const char *key, const char *rest, size_t restl, uint8_t *access,
                           const char **filter, size_t *filterl, char *whybuf, size_t whylen)
{
    const char *acc;
    size_t accl;
    split_word(rest, restl, &acc, &accl, filter, filterl);
    if (*filterl == 0) {
        *filter = acc;
        *filterl = accl;
        *access = ACC_READ | ACC_WRITE;
    } else if (word_is(acc, accl, "read")) {
        *access = ACC_READ;
    } else if (word_is(acc, accl, "write")) {
        *access = ACC_WRITE;
    } else if (word_is(acc, accl, "readwrite")) {
        *access = ACC_READ | ACC_WRITE;
    } else if (word_is(acc, accl, "deny")) {
        *access = ACC_DENY;
    } else {
        mql_authfile_seterr(whybuf, whylen,
                            "%s: unknown access '%.*s' (allowed: read, write, readwrite, deny)",
                            key, quoted(accl), acc);
        return MQL_E_CONFIG;
    }
    return MQL_OK;
}

/* A rule filter must be a valid, non-shared topic filter. Returns MQL_OK or MQL_E_CONFIG
 * (message in whybuf). */
static mql_err rule_filter_check(const char *key, const char *filter, size_t filterl, char *whybuf,
                                 size_t whylen)
{
    if (filterl >= 7 && memcmp(filter, "$share/", 7) == 0) {
        mql_authfile_seterr(
            whybuf, whylen,
            "%s: '%.*s': rules apply to the filter inside a shared subscription; write it "
            "without $share/GROUP/",
            key, quoted(filterl), filter);
        return MQL_E_CONFIG;
    }
    if (!mql_topic_filter_valid((mql_bytes){(const uint8_t *)filter, (uint32_t)filterl}) ||
        filterl > 65535) {
        mql_authfile_seterr(
            whybuf, whylen,
            "%s: '%.*s' is not a valid topic filter ('+' and '#' must be whole levels, '#' "
            "only last)",
            key, quoted(filterl), filter);
        return MQL_E_CONFIG;
    }
    return MQL_OK;
}

/* `topic [ACCESS] FILTER` or `pattern [ACCESS] FILTER`: add the rule to the pattern list,
 * the anonymous list (before any `user` line: section == SIZE_MAX) or the current user
 * section. Returns MQL_OK, MQL_E_CONFIG (message in whybuf) or MQL_E_NOMEM. */
static mql_err rule_line(mql_acl *acl, bool pattern, const char *rest, size_t restl, size_t section,
                         char *whybuf, size_t whylen)
{
    const char *key = pattern ? "pattern" : "topic";
    if (restl == 0) {
        mql_authfile_seterr(whybuf, whylen, "%s: missing topic filter", key);
        return MQL_E_CONFIG;
    }
    uint8_t access;
    const char *filter;
    size_t filterl;
    mql_err rc = rule_access(key, rest, restl, &access, &filter, &filterl, whybuf, whylen);
    if (rc == MQL_OK)
        rc = rule_filter_check(key, filter, filterl, whybuf, whylen);
    if (rc != MQL_OK)
        return rc;
    rule_list *l;
    uint8_t subst = 0;
    if (pattern) {
        l = &acl->patterns;
        subst = subst_flags(filter, filterl);
    } else if (section == SIZE_MAX) {
        l = &acl->anon;
    } else {
        l = &acl->users[section].rules;
    }
    if (!rule_add(l, filter, filterl, access, subst))
        return MQL_E_NOMEM;
    acl->nrules++;
    return MQL_OK;
}

/*
 * Parse one ACL line into acl: trim it, skip blank and comment lines, and hand it to the
 * function of its keyword. *section is the index of the current user section, or SIZE_MAX
 * before the first `user` line. Returns MQL_OK, MQL_E_CONFIG (a message written into
 * whybuf) or MQL_E_NOMEM.
 */
static mql_err acl_line(mql_acl *acl, const char *line, size_t len, size_t *section, char *whybuf,
                        size_t whylen)
{
    while (len > 0 && (mql_authfile_is_space(line[len - 1])))
        len--;
    while (len > 0 && mql_authfile_is_space(line[0])) {
        line++;
        len--;
    }
    if (len == 0 || line[0] == '#')
        return MQL_OK;
    if (memchr(line, '\0', len) != NULL) {
        mql_authfile_seterr(whybuf, whylen, "line contains a NUL byte");
        return MQL_E_CONFIG;
    }
    const char *kw, *rest;
    size_t kwl, restl;
    split_word(line, len, &kw, &kwl, &rest, &restl);
    if (word_is(kw, kwl, "user"))
        return user_line(acl, rest, restl, section, whybuf, whylen);
    bool pattern = word_is(kw, kwl, "pattern");
    if (!pattern && !word_is(kw, kwl, "topic")) {
        mql_authfile_seterr(whybuf, whylen,
                            "unknown keyword '%.*s' (allowed: user, topic, pattern)", quoted(kwl),
                            kw);
        return MQL_E_CONFIG;
    }
    return rule_line(acl, pattern, rest, restl, *section, whybuf, whylen);
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
    mql_authfile_seterr(errbuf, errlen, "%s", "");
    mql_acl *acl = calloc(1, sizeof(*acl));
    if (acl == NULL)
        goto fail;
    while (mql_authfile_next_line(text, len, &pos, &line, &line_len)) {
        lineno++;
        rc = acl_line(acl, line, line_len, &section, why, sizeof(why));
        if (rc != MQL_OK)
            goto fail;
    }
    if (acl->nusers > 1)
        qsort(acl->users, acl->nusers, sizeof(acl_user), acl_user_cmp);
    *out = acl;
    return MQL_OK;
fail:
    if (rc == MQL_E_NOMEM)
        mql_authfile_seterr(errbuf, errlen, "%s: out of memory", name);
    else
        mql_authfile_seterr(errbuf, errlen, "%s:%d: %s", name, lineno, why);
    mql_acl_free(acl);
    return rc;
}

mql_err mql_acl_load(mql_acl **out, const char *path, char *errbuf, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    mql_authfile_seterr(errbuf, errlen, "%s", "");
    mql_err rc = mql_authfile_read(path, &text, &len, errbuf, errlen);
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
        if (mql_authfile_name_cmp(acl->users[mid].name, acl->users[mid].name_len, user, len) < 0)
            a = mid + 1;
        else
            b = mid;
    }
    size_t e = a;
    while (e < acl->nusers &&
           mql_authfile_name_cmp(acl->users[e].name, acl->users[e].name_len, user, len) == 0)
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
