/*
 * fake_net.c - platform/net.h in memory, for the connection fuzzer (contract in fake_net.h).
 *
 * Single-threaded by design: the fuzzer's thread is the only one that opens, feeds, reaps
 * and closes links, so the broker's callbacks run strictly one after another and a run is
 * reproducible. The link mutex of net.c has no counterpart here; the broker's own locking
 * is still exercised (it takes broker->lock exactly as under nng).
 */
#include "fake_net.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mql_link {
    mql_net *net;
    void *ctx;  /* the broker's, from ops->open */
    void *user; /* the test's */
    enum fake_link_state state;
    uint8_t *rbuf; /* input the broker has not consumed yet */
    size_t rlen, rcap;
    size_t backlog;
    struct mql_link *next;
};

struct mql_net {
    const mql_link_ops *ops;
    void *arg;
    fake_sink sink;
    mql_link *links; /* every link ever opened, newest first */
};

mql_err mql_net_alloc(mql_net **out, const mql_link_ops *ops, void *arg)
{
    mql_net *net = calloc(1, sizeof(*net));
    if (net == NULL)
        return MQL_E_NOMEM;
    net->ops = ops;
    net->arg = arg;
    *out = net;
    return MQL_OK;
}

void fake_net_set_sink(mql_net *net, fake_sink sink)
{
    net->sink = sink;
}

/* The fuzzer opens its links itself: a configured listener is accepted and left idle. */
mql_err mql_net_listen(mql_net *net, const mql_listen_opts *opts, char *errbuf, size_t errlen)
{
    (void)net;
    (void)opts;
    (void)errbuf;
    (void)errlen;
    return MQL_OK;
}

int mql_net_reload_tls(mql_net *net)
{
    (void)net;
    return 0; /* no listener here has TLS */
}

int mql_net_reap_lost(mql_net *net)
{
    (void)net;
    return 0; /* a fake link never loses its close */
}

void mql_net_close_listeners(mql_net *net)
{
    (void)net;
}

void fake_net_reap(mql_net *net)
{
    /* ops->closed may close other links (never open new ones): loop until none is left */
    bool again = true;
    while (again) {
        again = false;
        for (mql_link *l = net->links; l != NULL; l = l->next) {
            if (l->state != FAKE_CLOSING)
                continue;
            l->state = FAKE_DEAD;
            l->rlen = 0;
            net->ops->closed(l->ctx);
            again = true;
        }
    }
}

bool mql_net_drain(mql_net *net, int timeout_ms)
{
    (void)timeout_ms;
    fake_net_reap(net);
    for (mql_link *l = net->links; l != NULL; l = l->next)
        if (l->state == FAKE_OPEN)
            return false;
    return true;
}

void mql_net_free(mql_net *net)
{
    for (mql_link *l = net->links; l != NULL; l = l->next)
        if (l->state == FAKE_OPEN)
            l->state = FAKE_CLOSING; /* aborted: their closed callbacks run */
    fake_net_reap(net);
    mql_link *l = net->links;
    while (l != NULL) {
        mql_link *next = l->next;
        free(l->rbuf);
        free(l);
        l = next;
    }
    free(net);
}

mql_link *fake_link_open(mql_net *net, const char *peer, void *user)
{
    mql_link *link = calloc(1, sizeof(*link));
    if (link == NULL)
        return NULL;
    link->net = net;
    link->user = user;
    link->next = net->links;
    net->links = link;
    link->ctx = net->ops->open(net->arg, link, peer, 0); /* the configuration's listener 0 */
    if (link->ctx == NULL)
        link->state = FAKE_DEAD; /* refused: net.c closes it without a closed callback */
    return link;
}

void fake_link_feed(mql_link *link, const uint8_t *buf, size_t len)
{
    if (link->state != FAKE_OPEN || len == 0)
        return;
    if (link->rlen + len > link->rcap) {
        size_t cap = link->rcap ? link->rcap : 256;
        while (cap < link->rlen + len)
            cap *= 2;
        uint8_t *p = realloc(link->rbuf, cap);
        if (p == NULL) {
            link->state = FAKE_CLOSING; /* as net.c does when it cannot grow its buffer */
            return;
        }
        link->rbuf = p;
        link->rcap = cap;
    }
    memcpy(link->rbuf + link->rlen, buf, len);
    link->rlen += len;
    size_t want = 0;
    size_t used = link->net->ops->data(link->ctx, link->rbuf, link->rlen, &want);
    if (used > link->rlen) {
        fprintf(stderr, "fake_net: data callback consumed %zu of %zu bytes\n", used, link->rlen);
        abort();
    }
    memmove(link->rbuf, link->rbuf + used, link->rlen - used);
    link->rlen -= used;
    if (link->state != FAKE_OPEN)
        link->rlen = 0; /* input after a close request is discarded */
}

void fake_link_peer_close(mql_link *link)
{
    if (link->state == FAKE_OPEN)
        link->state = FAKE_CLOSING;
}

void fake_link_set_backlog(mql_link *link, size_t backlog)
{
    link->backlog = backlog;
}

enum fake_link_state fake_link_state(const mql_link *link)
{
    return link->state;
}

mql_err mql_link_send(mql_link *link, const void *buf, size_t len)
{
    if (link->state != FAKE_OPEN)
        return MQL_E_CLOSED;
    if (link->net->sink != NULL)
        link->net->sink(link->user, link->ctx, buf, len);
    return MQL_OK;
}

/* Sends are handed to the sink at once: nothing to defer. */
void mql_net_defer_begin(void) {}

void mql_net_defer_end(void) {}

mql_tls_peer mql_link_peer_cn(mql_link *link, char *cn, size_t len)
{
    (void)link;
    (void)cn;
    (void)len;
    return MQL_TLS_PEER_UNKNOWN; /* no TLS here */
}

size_t mql_link_backlog(mql_link *link)
{
    return link->backlog;
}

/* Flushing is instant here (everything "sent" already went to the sink), so a flushing
 * close and an abort are the same: the link is closing, and fake_net_reap finishes it. */
void mql_link_close(mql_link *link, bool flush)
{
    (void)flush;
    if (link->state == FAKE_OPEN)
        link->state = FAKE_CLOSING;
}

/* The fuzzer configures no TLS: nothing to check. */
mql_err mql_net_check_listen(const mql_listen_opts *opts, char *errbuf, size_t errlen)
{
    (void)opts;
    (void)errbuf;
    (void)errlen;
    return MQL_OK;
}

mql_err mql_net_check_dial(const mql_dial_opts *o, char *errbuf, size_t errlen)
{
    (void)o;
    (void)errbuf;
    (void)errlen;
    return MQL_OK;
}

/* Nothing lingers here: a flushing close already delivered everything. */
void mql_link_last_words(mql_link *link)
{
    (void)link;
}

/* Outgoing connections (bridges): the fuzzer configures no bridge, and a dial would have
 * no peer in memory; refusing keeps the broker's error path honest if one is ever set. */
mql_err mql_dialer_alloc(mql_dialer **out, mql_net *net, const mql_dial_opts *o,
                         const mql_link_ops *ops, void *arg,
                         void (*failed)(void *arg, const char *why), char *errbuf, size_t errlen)
{
    (void)net;
    (void)ops;
    (void)arg;
    (void)failed;
    *out = NULL;
    snprintf(errbuf, errlen, "%s: no outgoing connections on the fuzzer's in-memory network",
             o->url);
    return MQL_E_CONFIG;
}

void mql_dialer_dial(mql_dialer *d)
{
    (void)d;
}

void mql_dialer_free(mql_dialer *d)
{
    (void)d;
}
