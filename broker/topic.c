/*
 * topic.c - the topic tree (see topic.h for the rules).
 *
 * Each node keeps its literal children in a small open hash table (chained, grown at load
 * 1), and its '+' and '#' children in two direct pointers, so a publish walks one path per
 * wildcard branch without scanning siblings. Nodes that hold nothing are pruned on removal.
 * Performance assumption: lookups dominate; a match costs O(levels x wildcard branches).
 *
 * It also holds the only pairwise topic matcher (mql_topic_matches, _covers, _intersects),
 * which the ACL uses: pure functions over two byte slices.
 * Pure code: no I/O, no logging, no nng, no SQLite. Locking: none inside; the caller (the
 * broker core) serialises every call on a tree; the pairwise matchers touch no shared state.
 */
#include "topic.h"

#include <stdlib.h>
#include <string.h>

typedef struct tnode {
    struct tnode *parent;
    struct tnode *hnext;
    struct tnode **slots;
    uint32_t nslots;
    uint32_t nchildren;
    struct tnode *plus;
    struct tnode *hash;
    mql_sub *subs;
    mql_share *shares;
    mql_msg *retained;
    uint32_t hval;
    uint32_t len;
    char level[];
} tnode;

struct mql_topics {
    tnode *root;
    size_t nsubs;
    size_t nretained;
};

static uint32_t hash_level(const uint8_t *p, uint32_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static tnode *node_new(tnode *parent, const uint8_t *p, uint32_t len, uint32_t h)
{
    tnode *n = calloc(1, sizeof(*n) + len + 1);
    if (n == NULL)
        return NULL;
    n->parent = parent;
    n->hval = h;
    n->len = len;
    if (len)
        memcpy(n->level, p, len);
    return n;
}

static bool is_plus(const uint8_t *p, uint32_t len)
{
    return len == 1 && p[0] == '+';
}

static bool is_hash(const uint8_t *p, uint32_t len)
{
    return len == 1 && p[0] == '#';
}

static tnode *child_find(const tnode *n, const uint8_t *p, uint32_t len)
{
    if (n->nslots == 0)
        return NULL;
    uint32_t h = hash_level(p, len);
    for (tnode *c = n->slots[h & (n->nslots - 1)]; c != NULL; c = c->hnext)
        if (c->hval == h && c->len == len && memcmp(c->level, p, len) == 0)
            return c;
    return NULL;
}

static bool slots_grow(tnode *n)
{
    uint32_t ns = n->nslots ? n->nslots * 2 : 4;
    tnode **slots = calloc(ns, sizeof(*slots));
    if (slots == NULL)
        return false;
    for (uint32_t i = 0; i < n->nslots; i++) {
        tnode *c = n->slots[i];
        while (c != NULL) {
            tnode *next = c->hnext;
            c->hnext = slots[c->hval & (ns - 1)];
            slots[c->hval & (ns - 1)] = c;
            c = next;
        }
    }
    free(n->slots);
    n->slots = slots;
    n->nslots = ns;
    return true;
}

/* The child for one level, created when missing. NULL only when out of memory. */
static tnode *child_get(tnode *n, const uint8_t *p, uint32_t len)
{
    tnode **wild = is_plus(p, len) ? &n->plus : is_hash(p, len) ? &n->hash : NULL;
    if (wild != NULL) {
        if (*wild == NULL)
            *wild = node_new(n, p, len, 0);
        return *wild;
    }
    tnode *c = child_find(n, p, len);
    if (c != NULL)
        return c;
    if (n->nchildren >= n->nslots && !slots_grow(n))
        return NULL;
    uint32_t h = hash_level(p, len);
    c = node_new(n, p, len, h);
    if (c == NULL)
        return NULL;
    c->hnext = n->slots[h & (n->nslots - 1)];
    n->slots[h & (n->nslots - 1)] = c;
    n->nchildren++;
    return c;
}

static bool node_empty(const tnode *n)
{
    return n->subs == NULL && n->shares == NULL && n->retained == NULL && n->nchildren == 0 &&
           n->plus == NULL && n->hash == NULL;
}

/* Remove empty nodes from n upwards (the root stays). */
static void prune(tnode *n)
{
    while (n->parent != NULL && node_empty(n)) {
        tnode *p = n->parent;
        if (p->plus == n) {
            p->plus = NULL;
        } else if (p->hash == n) {
            p->hash = NULL;
        } else {
            tnode **pp = &p->slots[n->hval & (p->nslots - 1)];
            while (*pp != n)
                pp = &(*pp)->hnext;
            *pp = n->hnext;
            p->nchildren--;
        }
        free(n->slots);
        free(n);
        n = p;
    }
}

/* Split the next level off a topic or filter. *pos walks the string; returns false after
 * the last level. An empty string has no levels; "a/" has two ("a" and ""). */
typedef struct cursor {
    const uint8_t *p;
    uint32_t len;
    uint32_t pos;
    bool done;
} cursor;

static bool next_level(cursor *c, const uint8_t **lp, uint32_t *ll)
{
    if (c->done)
        return false;
    uint32_t start = c->pos;
    while (c->pos < c->len && c->p[c->pos] != '/')
        c->pos++;
    *lp = c->p + start;
    *ll = c->pos - start;
    if (c->pos >= c->len)
        c->done = true;
    else
        c->pos++; /* skip '/' */
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* One filter against one topic name or filter, without the tree                              */

/* A cursor over every level of s; unlike the tree's paths, an empty string is one empty
 * level, so "" is matched by "+" and "#" as a level would be. */
static cursor levels_of(mql_bytes s)
{
    cursor c = {.p = s.p, .len = s.len};
    return c;
}

/* True when the first level of s is a wildcard. */
static bool starts_wild(mql_bytes s)
{
    return s.len > 0 && (s.p[0] == '+' || s.p[0] == '#') && (s.len == 1 || s.p[1] == '/');
}

static bool starts_dollar(mql_bytes s)
{
    return s.len > 0 && s.p[0] == '$';
}

static bool same_level(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

bool mql_topic_matches(mql_bytes filter, mql_bytes topic)
{
    if (starts_dollar(topic) && starts_wild(filter))
        return false; /* [MQTT-4.7.2-1] */
    return mql_topic_matches_levels(filter, topic);
}

bool mql_topic_matches_levels(mql_bytes filter, mql_bytes topic)
{
    cursor fc = levels_of(filter), tc = levels_of(topic);
    for (;;) {
        const uint8_t *fp, *tp;
        uint32_t fl, tl;
        bool hf = next_level(&fc, &fp, &fl);
        bool ht = next_level(&tc, &tp, &tl);
        if (!hf)
            return !ht;
        if (is_hash(fp, fl))
            return true; /* also the parent level: "a/#" matches "a" [MQTT-4.7.1-2] */
        if (!ht)
            return false;
        if (is_plus(fp, fl))
            continue; /* exactly one level, possibly empty [MQTT-4.7.1-3] */
        if (!same_level(fp, fl, tp, tl))
            return false;
    }
}

bool mql_topic_covers(mql_bytes rule, mql_bytes filter)
{
    /* filter matches '$' topics only when its first level is a literal starting with '$'. */
    if (starts_dollar(filter) && starts_wild(rule))
        return false;
    cursor rc = levels_of(rule), fc = levels_of(filter);
    for (uint32_t i = 0;; i++) {
        const uint8_t *rp, *fp;
        uint32_t rl, fl;
        bool hr = next_level(&rc, &rp, &rl);
        bool hf = next_level(&fc, &fp, &fl);
        if (!hr)
            return !hf;
        if (is_hash(rp, rl))
            return true;
        if (!hf)
            return false;
        if (is_hash(fp, fl)) {
            /* filter matches its parent (when i > 0) and any number of levels below: only
             * "#" (handled above) covers that, or "+/#" in the first level (no parent). */
            const uint8_t *np;
            uint32_t nl;
            return i == 0 && is_plus(rp, rl) && next_level(&rc, &np, &nl) && is_hash(np, nl);
        }
        if (is_plus(rp, rl))
            continue;
        if (is_plus(fp, fl) || !same_level(rp, rl, fp, fl))
            return false;
    }
}

bool mql_topic_intersects(mql_bytes a, mql_bytes b)
{
    bool aw = starts_wild(a), bw = starts_wild(b);
    if ((aw && starts_dollar(b) && !bw) || (bw && starts_dollar(a) && !aw))
        return false; /* one needs a '$' topic, the other never matches one */
    cursor ac = levels_of(a), bc = levels_of(b);
    for (;;) {
        const uint8_t *ap, *bp;
        uint32_t al, bl;
        bool ha = next_level(&ac, &ap, &al);
        bool hb = next_level(&bc, &bp, &bl);
        if (!ha && !hb)
            return true;
        if ((ha && is_hash(ap, al)) || (hb && is_hash(bp, bl)))
            return true;
        if (!ha || !hb)
            return false;
        if (is_plus(ap, al) || is_plus(bp, bl))
            continue;
        if (!same_level(ap, al, bp, bl))
            return false;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The tree                                                                                    */

static tnode *path_get(mql_topics *t, mql_bytes s, bool create)
{
    cursor c = {.p = s.p, .len = s.len, .done = s.len == 0};
    const uint8_t *lp;
    uint32_t ll;
    tnode *n = t->root;
    while (n != NULL && next_level(&c, &lp, &ll)) {
        if (create)
            n = child_get(n, lp, ll);
        else if (is_plus(lp, ll))
            n = n->plus;
        else if (is_hash(lp, ll))
            n = n->hash;
        else
            n = child_find(n, lp, ll);
    }
    return n;
}

mql_err mql_topics_alloc(mql_topics **out)
{
    mql_topics *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return MQL_E_NOMEM;
    t->root = node_new(NULL, NULL, 0, 0);
    if (t->root == NULL) {
        free(t);
        return MQL_E_NOMEM;
    }
    *out = t;
    return MQL_OK;
}

static void node_free_rec(tnode *n)
{
    for (uint32_t i = 0; i < n->nslots; i++) {
        tnode *c = n->slots[i];
        while (c != NULL) {
            tnode *next = c->hnext;
            node_free_rec(c);
            c = next;
        }
    }
    if (n->plus)
        node_free_rec(n->plus);
    if (n->hash)
        node_free_rec(n->hash);
    mql_sub *s = n->subs;
    while (s != NULL) {
        mql_sub *next = s->next;
        free(s);
        s = next;
    }
    mql_share *g = n->shares;
    while (g != NULL) {
        mql_share *gnext = g->next;
        for (mql_sub *m = g->members; m != NULL;) {
            mql_sub *mnext = m->next;
            free(m);
            m = mnext;
        }
        g->members = NULL;
        g->nmembers = 0;
        g->node = NULL;
        g->refs = 0; /* the tree goes away with everything that referred to it */
        free(g);
        g = gnext;
    }
    mql_msg_unref(n->retained);
    free(n->slots);
    free(n);
}

void mql_topics_free(mql_topics *t)
{
    if (t == NULL)
        return;
    node_free_rec(t->root);
    free(t);
}

/* Split "$share/GROUP/FILTER" into GROUP and FILTER; false for a non-shared filter. */
static bool split_shared(mql_bytes f, mql_bytes *group, mql_bytes *rest)
{
    if (f.len < 7 || memcmp(f.p, "$share/", 7) != 0)
        return false;
    uint32_t i = 7;
    while (i < f.len && f.p[i] != '/')
        i++;
    group->p = f.p + 7;
    group->len = i - 7;
    rest->p = f.p + (i < f.len ? i + 1 : i);
    rest->len = i < f.len ? f.len - i - 1 : 0;
    return true;
}

static mql_share *share_find(const tnode *n, mql_bytes group)
{
    for (mql_share *g = n->shares; g != NULL; g = g->next)
        if (g->name_len == group.len && memcmp(g->name, group.p, group.len) == 0)
            return g;
    return NULL;
}

static mql_sub **list_of(tnode *n, mql_share *g)
{
    return g != NULL ? &g->members : &n->subs;
}

mql_sub *mql_topics_find(mql_topics *t, mql_bytes filter, const struct mql_session *s)
{
    mql_bytes group, rest;
    bool shared = split_shared(filter, &group, &rest);
    tnode *n = path_get(t, shared ? rest : filter, false);
    if (n == NULL)
        return NULL;
    mql_share *g = NULL;
    if (shared && (g = share_find(n, group)) == NULL)
        return NULL;
    for (mql_sub *sub = *list_of(n, g); sub != NULL; sub = sub->next)
        if (sub->session == s)
            return sub;
    return NULL;
}

void mql_share_ref(mql_share *g)
{
    g->refs++;
}

void mql_share_unref(mql_share *g)
{
    if (--g->refs == 0)
        free(g); /* already unlinked from its node: members hold references */
}

/* The last member left: take the group off its node (messages may still refer to it). */
static void unlink_share(mql_share *g)
{
    tnode *n = g->node;
    mql_share **pp = &n->shares;
    while (*pp != g)
        pp = &(*pp)->next;
    *pp = g->next;
    g->node = NULL;
}

mql_sub *mql_topics_subscribe(mql_topics *t, mql_bytes filter, const mql_sub *tmpl, bool *existed)
{
    mql_bytes group, rest;
    bool shared = split_shared(filter, &group, &rest);
    tnode *n = path_get(t, shared ? rest : filter, true);
    if (n == NULL)
        return NULL;
    mql_share *g = NULL;
    if (shared && (g = share_find(n, group)) == NULL) {
        g = calloc(1, sizeof(*g) + group.len + 1);
        if (g == NULL) {
            prune(n);
            return NULL;
        }
        memcpy(g->name, group.p, group.len);
        g->name_len = group.len;
        g->node = n;
        g->next = n->shares;
        n->shares = g;
    }
    for (mql_sub *sub = *list_of(n, g); sub != NULL; sub = sub->next) {
        if (sub->session == tmpl->session) {
            sub->qos = tmpl->qos;
            sub->no_local = tmpl->no_local;
            sub->retain_as_published = tmpl->retain_as_published;
            sub->retain_handling = tmpl->retain_handling;
            sub->sub_id = tmpl->sub_id;
            *existed = true;
            return sub;
        }
    }
    mql_sub *sub = malloc(sizeof(*sub) + filter.len + 1);
    if (sub == NULL) {
        if (g != NULL && g->nmembers == 0) {
            unlink_share(g);
            if (g->refs == 0)
                free(g);
        }
        prune(n);
        return NULL;
    }
    *sub = *tmpl;
    sub->node = n;
    sub->share = g;
    sub->snext = sub->sprev = NULL;
    sub->filter_len = filter.len;
    memcpy(sub->filter, filter.p, filter.len);
    sub->filter[filter.len] = '\0';
    mql_sub **head = list_of(n, g);
    sub->next = *head;
    *head = sub;
    if (g != NULL) {
        g->nmembers++;
        g->refs++;
    }
    t->nsubs++;
    *existed = false;
    return sub;
}

void mql_topics_remove(mql_topics *t, mql_sub *sub)
{
    tnode *n = sub->node;
    mql_share *g = sub->share;
    mql_sub **pp = list_of(n, g);
    while (*pp != NULL && *pp != sub)
        pp = &(*pp)->next;
    if (*pp == sub) {
        *pp = sub->next;
        t->nsubs--;
    }
    free(sub);
    if (g != NULL) {
        g->nmembers--;
        if (g->nmembers == 0)
            unlink_share(g);
        mql_share_unref(g);
    }
    prune(n);
}

typedef struct match_cbs {
    mql_sub_cb cb;
    mql_share_cb group_cb;
    void *arg;
} match_cbs;

static void emit_subs(const tnode *n, const match_cbs *m)
{
    for (const mql_sub *s = n->subs; s != NULL; s = s->next)
        m->cb(m->arg, s);
    if (m->group_cb != NULL)
        for (mql_share *g = n->shares; g != NULL; g = g->next)
            m->group_cb(m->arg, g);
}

static void match_rec(const tnode *n, cursor c, bool first, bool dollar, const match_cbs *m)
{
    bool wild_ok = !(first && dollar); /* [MQTT-4.7.2-1] */
    if (n->hash != NULL && wild_ok)
        emit_subs(n->hash, m); /* '#' also matches the parent level */
    const uint8_t *lp;
    uint32_t ll;
    if (!next_level(&c, &lp, &ll)) {
        emit_subs(n, m);
        return;
    }
    const tnode *child = child_find(n, lp, ll);
    if (child != NULL)
        match_rec(child, c, false, dollar, m);
    if (n->plus != NULL && wild_ok)
        match_rec(n->plus, c, false, dollar, m);
}

void mql_topics_match(mql_topics *t, mql_bytes topic, mql_sub_cb cb, mql_share_cb group_cb,
                      void *arg)
{
    if (topic.len == 0)
        return;
    cursor c = {.p = topic.p, .len = topic.len};
    match_cbs m = {.cb = cb, .group_cb = group_cb, .arg = arg};
    match_rec(t->root, c, true, topic.p[0] == '$', &m);
}

mql_err mql_topics_retain(mql_topics *t, mql_bytes topic, mql_msg *msg)
{
    bool clear = msg == NULL || msg->payload.len == 0;
    tnode *n = path_get(t, topic, !clear);
    if (n == NULL)
        return clear ? MQL_OK : MQL_E_NOMEM;
    if (n->retained != NULL) {
        mql_msg_unref(n->retained);
        n->retained = NULL;
        t->nretained--;
    }
    if (clear) {
        prune(n);
        return MQL_OK;
    }
    n->retained = mql_msg_ref(msg);
    t->nretained++;
    return MQL_OK;
}

static void retained_all(const tnode *n, bool root, mql_retained_cb cb, void *arg)
{
    if (n->retained != NULL)
        cb(arg, n->retained);
    for (uint32_t i = 0; i < n->nslots; i++)
        for (const tnode *c = n->slots[i]; c != NULL; c = c->hnext)
            if (!(root && c->len > 0 && c->level[0] == '$'))
                retained_all(c, false, cb, arg);
}

static void retained_rec(const tnode *n, cursor c, bool root, mql_retained_cb cb, void *arg)
{
    const uint8_t *lp;
    uint32_t ll;
    if (!next_level(&c, &lp, &ll)) {
        if (n->retained != NULL)
            cb(arg, n->retained);
        return;
    }
    if (is_hash(lp, ll)) {
        retained_all(n, root, cb, arg);
    } else if (is_plus(lp, ll)) {
        for (uint32_t i = 0; i < n->nslots; i++)
            for (const tnode *ch = n->slots[i]; ch != NULL; ch = ch->hnext)
                if (!(root && ch->len > 0 && ch->level[0] == '$'))
                    retained_rec(ch, c, false, cb, arg);
    } else {
        const tnode *ch = child_find(n, lp, ll);
        if (ch != NULL)
            retained_rec(ch, c, false, cb, arg);
    }
}

void mql_topics_retained(mql_topics *t, mql_bytes filter, mql_retained_cb cb, void *arg)
{
    if (filter.len == 0)
        return;
    cursor c = {.p = filter.p, .len = filter.len};
    retained_rec(t->root, c, true, cb, arg);
}

size_t mql_topics_sub_count(const mql_topics *t)
{
    return t->nsubs;
}

size_t mql_topics_retained_count(const mql_topics *t)
{
    return t->nretained;
}
