/*
 * ratelimit.c - the login back-off (contract in ratelimit.h).
 *
 * One fixed array of slots, allocated once; lookups are linear. Locking: none; the caller
 * serialises calls on one limiter. Performance: a few hundred slots scanned per CONNECT
 * (microseconds); no allocation after mql_ratelimit_alloc.
 */
#include "ratelimit.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

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
