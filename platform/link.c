/*
 * link.c - links: one nng stream each, with its receive and send paths, deferred sends,
 * close, and the reaper thread that frees dead links (listen.c and dial.c make the links).
 *
 * Design notes
 * - Each link has one receive aio and one send aio, both embedded in its lifetime: exactly
 *   one receive is outstanding while the link lives, and at most one send.
 * - Input: the receive buffer starts small (idle connections cost little memory) and grows
 *   when a read fills it or the broker announces a larger frame, so a busy connection reads
 *   many packets per system call and the broker decodes every complete packet in it.
 * - Output: mql_link_send appends to a pending buffer; when no send is in flight the pending
 *   buffer becomes the in-flight one. Everything queued during a send goes out in one batch.
 * - Teardown is close -> stop -> free, and never from a link's own callback: the receive
 *   callback notices the failure, calls ops->closed once, and hands the link to the reaper
 *   thread, which stops both aios (waiting for callbacks in progress) and frees it.
 * - Locking: link->mtx protects the output buffers and flags; net->mtx protects the link
 *   list and the reaper queue (net->mtx before link->mtx). No callback into the broker is
 *   made while holding either, so the broker may call mql_link_send/close under its own lock
 *   (broker -> link order).
 * - nng 1.5.2's TLS and WebSocket streams have two losses worked around here: the end of a
 *   connection (mql_net_reap_lost) and, for TLS, the last bytes before our close
 *   (flush_done).
 * Performance: a gateway holds many idle links and a few busy ones; an idle link costs one
 * small buffer and two aios, and a publish to many links costs one buffer append each under
 * the broker lock (deferred sends), the system calls happening after it is released.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "clock.h"
#include "net_int.h"
#include "tls_engine.h"

#define RBUF_INITIAL 256 /* idle connections are the common case on a gateway */
#define RBUF_BUSY_MAX (64 * 1024)
#define SBUF_KEEP (16 * 1024)
#define CLOSE_QUIET_MS 100 /* see flush_done */
#define CLOSE_LINGER_MS 1000

/* One connection. The output buffers and the fields from tx_busy to last_input are under mtx;
 * the receive buffer belongs to the receive path (one callback at a time). */
struct mql_link {
    mql_net *net;
    const mql_link_ops *ops; /* the net's, or a dialer's */
    nng_stream *s;
    nng_aio *rx;
    nng_aio *tx;
    pthread_mutex_t mtx;
    void *ctx;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint8_t *out; /* pending output */
    size_t olen, ocap;
    uint8_t *snd; /* output being written */
    size_t slen, soff, scap;
    bool tx_busy;
    bool closing;    /* no more input is delivered, no more output accepted */
    bool flush;      /* close once the output is written */
    bool shut;       /* nng_stream_close was called: never start another receive */
    bool tls;        /* a TLS stream, accepted or dialed (for handshake failure messages) */
    bool layered;    /* TLS or WebSocket: nng's stream may lose the close (mql_net_reap_lost) */
    bool last_words; /* mql_link_last_words: the close must not lose the last packet */
    bool grace;      /* flush_done started (or finished) the linger before the close */
    uint64_t linger_until; /* mql_now_ms() when the linger ends whatever the peer does */
    uint64_t last_input;   /* mql_now_ms() of the last bytes received while closing */
    bool got_data; /* a receive completed (a dial's link: from the start, see mql_link_alloc) */
    struct mql_link *prev, *next;
    struct mql_link *reap_next;
    atomic_uint pins;  /* deferred-send lists holding the link (reaper waits for 0) */
    bool kick_pending; /* on a deferred-send list, its send not started yet */
    char peer[64];
};

static void rx_cb(void *arg);
static void tx_cb(void *arg);
static void link_dead(mql_link *link);

/* Mark the stream shut. Caller holds link->mtx and calls nng_stream_close after. A receive
 * started after nng_stream_close would never complete (nng 1.5 leaves it queued on the
 * closed descriptor), so the receive path checks `shut` under the same mutex. */
static void mark_shut(mql_link *link)
{
    link->shut = true;
}

static void reap_enqueue(mql_link *link)
{
    mql_net *net = link->net;
    pthread_mutex_lock(&net->mtx);
    link->reap_next = net->reap_head;
    net->reap_head = link;
    pthread_cond_broadcast(&net->cv);
    pthread_mutex_unlock(&net->mtx);
}

static void link_free(mql_link *link)
{
    nng_aio_stop(link->rx);
    nng_aio_stop(link->tx);
    nng_stream_free(link->s);
    nng_aio_free(link->rx);
    nng_aio_free(link->tx);
    pthread_mutex_destroy(&link->mtx);
    free(link->rbuf);
    free(link->out);
    free(link->snd);
    free(link);
}

static void *reaper_main(void *arg)
{
    mql_net *net = arg;
    pthread_mutex_lock(&net->mtx);
    for (;;) {
        while (net->reap_head == NULL && !net->stopping)
            pthread_cond_wait(&net->cv, &net->mtx);
        if (net->reap_head == NULL)
            break;
        mql_link *link = net->reap_head;
        net->reap_head = link->reap_next;
        pthread_mutex_unlock(&net->mtx);
        nng_aio_stop(link->rx);
        nng_aio_stop(link->tx);
        pthread_mutex_lock(&net->mtx);
        if (link->prev)
            link->prev->next = link->next;
        else
            net->links = link->next;
        if (link->next)
            link->next->prev = link->prev;
        net->nlinks--;
        pthread_mutex_unlock(&net->mtx);
        while (atomic_load(&link->pins) != 0)
            sched_yield(); /* a deferred-send flush is about to let go of it */
        link_free(link);
        pthread_mutex_lock(&net->mtx);
        pthread_cond_broadcast(&net->cv);
    }
    pthread_mutex_unlock(&net->mtx);
    return NULL;
}

mql_err mql_net_links_init(mql_net *net)
{
    if (pthread_create(&net->reaper, NULL, reaper_main, net) != 0)
        return MQL_E_NOMEM;
    return MQL_OK;
}

void mql_net_links_fini(mql_net *net)
{
    pthread_mutex_lock(&net->mtx);
    for (mql_link *l = net->links; l != NULL; l = l->next)
        mql_link_close(l, false);
    pthread_mutex_unlock(&net->mtx);
    (void)mql_net_drain(net, 5000);
    pthread_mutex_lock(&net->mtx);
    net->stopping = true;
    pthread_cond_broadcast(&net->cv);
    pthread_mutex_unlock(&net->mtx);
    pthread_join(net->reaper, NULL);
}

void mql_net_format_peer(nng_stream *s, char *buf, size_t len)
{
    nng_sockaddr sa;
    char host[INET6_ADDRSTRLEN] = "?";
    if (nng_stream_get_addr(s, NNG_OPT_REMADDR, &sa) != 0) {
        snprintf(buf, len, "unknown");
        return;
    }
    if (sa.s_family == NNG_AF_INET) {
        inet_ntop(AF_INET, &sa.s_in.sa_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(sa.s_in.sa_port));
    } else if (sa.s_family == NNG_AF_INET6) {
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(sa.s_in6.sa_port));
    } else {
        snprintf(buf, len, "unknown");
    }
}

/* Caller holds link->mtx and has checked !link->shut. */
static void start_rx(mql_link *link)
{
    nng_iov iov = {.iov_buf = link->rbuf + link->rlen, .iov_len = link->rcap - link->rlen};
    nng_aio_set_iov(link->rx, 1, &iov);
    nng_stream_recv(link->s, link->rx);
}

/* The flags are set before the link is in the list, which the ticker's mql_net_reap_lost
 * walks. */
mql_link *mql_link_alloc(mql_net *net, nng_stream *s, const mql_link_ops *ops, unsigned flags)
{
    mql_link *link = calloc(1, sizeof(*link));
    if (link == NULL || (link->rbuf = malloc(RBUF_INITIAL)) == NULL) {
        free(link);
        nng_stream_free(s);
        return NULL;
    }
    link->net = net;
    link->ops = ops;
    link->s = s;
    link->rcap = RBUF_INITIAL;
    pthread_mutex_init(&link->mtx, NULL);
    if (nng_aio_alloc(&link->rx, rx_cb, link) != 0 || nng_aio_alloc(&link->tx, tx_cb, link) != 0) {
        if (link->rx)
            nng_aio_free(link->rx);
        nng_stream_free(s);
        pthread_mutex_destroy(&link->mtx);
        free(link->rbuf);
        free(link);
        return NULL;
    }
    (void)nng_stream_set_bool(s, NNG_OPT_TCP_NODELAY, true);
    mql_net_format_peer(s, link->peer, sizeof(link->peer));
    link->tls = (flags & MQL_LINK_TLS) != 0;
    link->layered = (flags & MQL_LINK_LAYERED) != 0;
    /* nng 1.5.2 completes a dial before the TLS handshake; a handshake failure is still
     * logged with its reason (rx_cb asks the TLS engine), other early failures are the
     * dialer's owner's to report */
    link->got_data = (flags & MQL_LINK_DIALED) != 0;

    pthread_mutex_lock(&net->mtx);
    link->next = net->links;
    if (net->links)
        net->links->prev = link;
    net->links = link;
    net->nlinks++;
    pthread_mutex_unlock(&net->mtx);
    return link;
}

void mql_link_start(mql_link *link, void *arg, int listener_id)
{
    link->ctx = link->ops->open(arg, link, link->peer, listener_id);
    if (link->ctx == NULL) {
        pthread_mutex_lock(&link->mtx);
        link->closing = true;
        mark_shut(link);
        pthread_mutex_unlock(&link->mtx);
        nng_stream_close(link->s);
        reap_enqueue(link);
        return;
    }
    pthread_mutex_lock(&link->mtx);
    if (!link->shut)
        start_rx(link);
    bool shut = link->shut;
    pthread_mutex_unlock(&link->mtx);
    if (shut) /* closed by open() already: nothing will ever receive, so end it here */
        link_dead(link);
}

/* The link is dead: tell the broker once and hand the link to the reaper. Called only
 * from the receive path, so it is never concurrent with ops->data. */
static void link_dead(mql_link *link)
{
    pthread_mutex_lock(&link->mtx);
    link->closing = true;
    mark_shut(link);
    pthread_mutex_unlock(&link->mtx);
    nng_stream_close(link->s);
    link->ops->closed(link->ctx);
    reap_enqueue(link);
}

static bool grow_rbuf(mql_link *link, size_t want)
{
    size_t cap = link->rcap;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(link->rbuf, cap);
    if (p == NULL)
        return false;
    link->rbuf = p;
    link->rcap = cap;
    return true;
}

static void rx_cb(void *arg)
{
    mql_link *link = arg;
    int rv = nng_aio_result(link->rx);
    if (rv != 0) {
        char why[256];
        if (link->tls && mql_tls_failure(link->s, why, sizeof(why))) /* our engine's reason */
            mql_notice("net.tls", "TLS connection %s %s failed in the handshake: %s",
                       link->ops == link->net->ops ? "from" : "to (bridge)", link->peer, why);
        else if (link->tls && !link->got_data && rv != NNG_ECLOSED)
            mql_notice("net.tls",
                       "TLS connection from %s failed before any data: %s "
                       "(handshake: certificate, protocol version or cipher)",
                       link->peer, nng_strerror(rv));
        link_dead(link);
        return;
    }
    link->got_data = true;
    size_t n = nng_aio_count(link->rx);
    bool filled = (link->rlen + n == link->rcap);
    link->rlen += n;

    pthread_mutex_lock(&link->mtx);
    bool closing = link->closing;
    pthread_mutex_unlock(&link->mtx);
    if (closing) {
        link->rlen = 0; /* input after a close request is discarded (see flush_done) */
        pthread_mutex_lock(&link->mtx);
        link->last_input = mql_now_ms();
        pthread_mutex_unlock(&link->mtx);
    } else {
        size_t want = 0;
        size_t used = link->ops->data(link->ctx, link->rbuf, link->rlen, &want);
        if (used > link->rlen)
            used = link->rlen;
        memmove(link->rbuf, link->rbuf + used, link->rlen - used);
        link->rlen -= used;
        /* Grow towards a large frame as its bytes arrive, never to its announced size at
         * once: a peer announcing 256 MB and sending little costs little. */
        size_t need = want;
        if (need > link->rcap * 4)
            need = link->rcap * 4;
        if (filled && link->rcap < RBUF_BUSY_MAX && need < link->rcap * 2)
            need = link->rcap * 2; /* a busy link reads in larger chunks */
        if (link->rlen == link->rcap && need <= link->rcap)
            need = link->rcap * 2;
        if (need > link->rcap && !grow_rbuf(link, need)) {
            mql_error("net.nomem", "out of memory for a %zu byte packet from %s", need, link->peer);
            mql_link_close(link, false);
            link->rlen = 0;
        }
    }
    pthread_mutex_lock(&link->mtx);
    if (link->shut) {
        pthread_mutex_unlock(&link->mtx);
        link_dead(link);
        return;
    }
    start_rx(link);
    pthread_mutex_unlock(&link->mtx);
}

/* Start writing the pending output. Caller holds link->mtx and has checked !tx_busy. */
static void start_tx(mql_link *link)
{
    uint8_t *p = link->snd;
    size_t cap = link->scap;
    link->snd = link->out;
    link->scap = link->ocap;
    link->slen = link->olen;
    link->soff = 0;
    link->out = p;
    link->ocap = cap;
    link->olen = 0;
    nng_iov iov = {.iov_buf = link->snd, .iov_len = link->slen};
    nng_aio_set_iov(link->tx, 1, &iov);
    link->tx_busy = true;
    nng_stream_send(link->s, link->tx);
}

/*
 * The output of a flushing close (the peer's last packet: a DISCONNECT with its reason code,
 * a refusing CONNACK) is written. Closing the socket now would lose it in two ways:
 * - Bytes the peer sent that we have not read yet make the kernel answer our close with a
 *   reset instead of a FIN, and a reset makes the peer's kernel throw away what it had
 *   received and not yet handed to the client, our last packet included (a client still
 *   publishing when it is disconnected, e.g. for exceeding Receive Maximum).
 * - nng 1.5.2's TLS stream completes a send once the data is encrypted into its own
 *   buffer, and its close aborts the TCP write of that buffer still in progress.
 * So a link whose last packet matters (mql_link_last_words) or that runs TLS lingers: it
 * keeps reading and discarding (rx_cb) until the peer closes (then
 * rx_cb ends the link), or until nothing arrived for CLOSE_QUIET_MS, and for at most
 * CLOSE_LINGER_MS in all. nng 1.5.2 has no half-close (shutdown SHUT_WR) for its streams,
 * so waiting for the peer's input to stop is the way to make the close a FIN. The send
 * aio, idle now, does the waiting. Caller holds link->mtx; returns whether to call
 * nng_stream_close after releasing it.
 */
static bool flush_done(mql_link *link)
{
    if ((link->last_words || link->tls) && !link->grace) {
        link->grace = true;
        link->last_input = mql_now_ms();
        link->linger_until = link->last_input + CLOSE_LINGER_MS;
        link->tx_busy = true; /* the send aio sleeps; tx_cb decides when it wakes */
        nng_sleep_aio(CLOSE_QUIET_MS, link->tx);
        return false;
    }
    mark_shut(link);
    return true;
}

/* The linger's sleep of flush_done ended (or was stopped): sleep on while the peer is
 * still sending, within the bound; else close. Caller holds link->mtx; returns whether to
 * call nng_stream_close after releasing it. */
static bool linger_woke(mql_link *link)
{
    uint64_t now = mql_now_ms();
    if (nng_aio_result(link->tx) == 0 && !link->shut && now < link->linger_until &&
        now - link->last_input < CLOSE_QUIET_MS) {
        uint64_t quiet_at = link->last_input + CLOSE_QUIET_MS;
        uint64_t wake = quiet_at < link->linger_until ? quiet_at : link->linger_until;
        nng_sleep_aio((nng_duration)(wake - now), link->tx);
        return false;
    }
    link->tx_busy = false;
    mark_shut(link);
    return true;
}

static void tx_cb(void *arg)
{
    mql_link *link = arg;
    bool close_now = false;
    pthread_mutex_lock(&link->mtx);
    if (link->grace && link->tx_busy) { /* the linger of flush_done */
        close_now = linger_woke(link);
        goto done;
    }
    if (nng_aio_result(link->tx) != 0) {
        link->tx_busy = false;
        link->closing = true;
        mark_shut(link);
        close_now = true;
        goto done;
    }
    link->soff += nng_aio_count(link->tx);
    if (link->soff < link->slen) {
        nng_iov iov = {.iov_buf = link->snd + link->soff, .iov_len = link->slen - link->soff};
        nng_aio_set_iov(link->tx, 1, &iov);
        nng_stream_send(link->s, link->tx);
        goto done;
    }
    link->slen = link->soff = 0;
    if (link->scap > SBUF_KEEP) {
        free(link->snd);
        link->snd = NULL;
        link->scap = 0;
    }
    if (link->olen > 0) {
        start_tx(link);
        goto done;
    }
    link->tx_busy = false;
    if (link->closing && link->flush)
        close_now = flush_done(link);
done:
    pthread_mutex_unlock(&link->mtx);
    if (close_now)
        nng_stream_close(link->s);
}

/*
 * Deferred sends. While a thread is inside mql_net_defer_begin/end, mql_link_send only
 * appends to the link's buffer and remembers the link; the writes (system calls) start at
 * mql_net_defer_end, after the caller released its own lock. One publish to many
 * subscribers then costs one buffer append each under the broker lock, not one sendmsg.
 */
static _Thread_local struct {
    bool on;
    uint32_t n, cap;
    mql_link **links;
} deferred;

void mql_net_defer_begin(void)
{
    deferred.on = true;
}

void mql_net_defer_end(void)
{
    deferred.on = false;
    for (uint32_t i = 0; i < deferred.n; i++) {
        mql_link *link = deferred.links[i];
        pthread_mutex_lock(&link->mtx);
        link->kick_pending = false;
        if (!link->tx_busy && link->olen > 0 && !link->shut)
            start_tx(link);
        pthread_mutex_unlock(&link->mtx);
        atomic_fetch_sub(&link->pins, 1);
    }
    deferred.n = 0;
    if (deferred.cap > 1024) {
        free(deferred.links);
        deferred.links = NULL;
        deferred.cap = 0;
    }
}

/* Remember link for mql_net_defer_end. Caller holds link->mtx. False: send now instead. */
static bool defer_kick(mql_link *link)
{
    if (link->kick_pending)
        return true;
    if (deferred.n == deferred.cap) {
        uint32_t cap = deferred.cap ? deferred.cap * 2 : 64;
        mql_link **p = realloc(deferred.links, cap * sizeof(*p));
        if (p == NULL)
            return false;
        deferred.links = p;
        deferred.cap = cap;
    }
    atomic_fetch_add(&link->pins, 1);
    link->kick_pending = true;
    deferred.links[deferred.n++] = link;
    return true;
}

mql_err mql_link_send(mql_link *link, const void *buf, size_t len)
{
    mql_err err = MQL_OK;
    pthread_mutex_lock(&link->mtx);
    if (link->closing) {
        err = MQL_E_CLOSED;
        goto done;
    }
    if (link->olen + len > link->ocap) {
        size_t cap = link->ocap ? link->ocap : 256;
        while (cap < link->olen + len)
            cap *= 2;
        uint8_t *p = realloc(link->out, cap);
        if (p == NULL) {
            err = MQL_E_NOMEM;
            goto done;
        }
        link->out = p;
        link->ocap = cap;
    }
    memcpy(link->out + link->olen, buf, len);
    link->olen += len;
    if (!link->tx_busy && !(deferred.on && defer_kick(link)))
        start_tx(link);
done:
    pthread_mutex_unlock(&link->mtx);
    return err;
}

mql_tls_peer mql_link_peer_cn(mql_link *link, char *cn, size_t len)
{
    return mql_tls_peer_cn(link->s, cn, len);
}

size_t mql_link_backlog(mql_link *link)
{
    pthread_mutex_lock(&link->mtx);
    size_t n = link->olen + (link->slen - link->soff);
    pthread_mutex_unlock(&link->mtx);
    return n;
}

void mql_link_last_words(mql_link *link)
{
    pthread_mutex_lock(&link->mtx);
    link->last_words = true;
    pthread_mutex_unlock(&link->mtx);
}

void mql_link_close(mql_link *link, bool flush)
{
    bool close_now;
    pthread_mutex_lock(&link->mtx);
    if (link->closing) {
        /* already closing: an abort overrides a flush in progress */
        close_now = !flush && link->flush;
        if (close_now)
            link->flush = false;
    } else {
        link->closing = true;
        link->flush = flush;
        if (flush && !link->tx_busy && link->olen > 0 && !link->shut)
            start_tx(link); /* output of a deferred send: write it, then close */
        if (!flush)
            close_now = true;
        else
            close_now = !link->tx_busy && flush_done(link);
    }
    if (close_now)
        mark_shut(link);
    pthread_mutex_unlock(&link->mtx);
    if (close_now)
        nng_stream_close(link->s);
}

/*
 * nng 1.5.2's TLS and WebSocket streams can lose the end of a connection: when the peer's
 * close reaches the TLS (or HTTP) layer while no receive of ours is queued there (between a
 * receive's completion and the next one), that layer closes the TCP connection underneath
 * but fails only the receives queued at that moment; the next receive then waits forever.
 * Seen in about 1 of 100..500 connections that the peer closes right after sending, on
 * tls+tcp, ws and wss (never on tcp), on both ends. Such a link would keep its client
 * "connected": its will unpublished, its ClientID live, its max_connections slot taken.
 * Probe: the TCP socket under such a link is closed, so asking it for the peer address
 * fails (getpeername: ENOTCONN), while it succeeds on every live connection. Aborting the
 * link (nng_stream_close) fails the waiting receive, and the link dies the normal way.
 */
int mql_net_reap_lost(mql_net *net)
{
    int n = 0;
    pthread_mutex_lock(&net->mtx);
    for (mql_link *link = net->links; link != NULL; link = link->next) {
        if (!link->layered)
            continue;
        pthread_mutex_lock(&link->mtx);
        bool skip = link->shut;
        pthread_mutex_unlock(&link->mtx);
        nng_sockaddr sa;
        if (skip || nng_stream_get_addr(link->s, NNG_OPT_REMADDR, &sa) == 0)
            continue;
        mql_info("net.lost",
                 "connection from %s is gone but its stream did not report it; "
                 "closing it",
                 link->peer);
        mql_link_close(link, false);
        n++;
    }
    pthread_mutex_unlock(&net->mtx);
    return n;
}

bool mql_net_drain(mql_net *net, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&net->mtx);
    while (net->nlinks > 0) {
        if (pthread_cond_timedwait(&net->cv, &net->mtx, &deadline) != 0)
            break;
    }
    bool empty = net->nlinks == 0;
    pthread_mutex_unlock(&net->mtx);
    return empty;
}
