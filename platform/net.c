/*
 * net.c - listeners and links on nng streams (nng_stream_listener / nng_stream + nng_aio).
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
 *   list and the reaper queue. No callback into the broker is made while holding either,
 *   so the broker may call mql_link_send/close under its own lock (broker -> link order).
 * - TLS listeners keep the paths of their files: mql_net_reload_tls builds a new nng TLS
 *   configuration from them and swaps it into the running listener (SIGHUP).
 * - Every TLS configuration is made through mqlite's own nng TLS engine (tls_engine.c,
 *   registered in mql_net_alloc): it reports handshake failure reasons and the client
 *   certificate's CN (mql_link_peer_cn), and offers a bridge's ALPN list.
 * - nng 1.5.2's TLS and WebSocket streams have two losses worked around here: the end of a
 *   connection (mql_net_reap_lost) and, for TLS, the last bytes before our close
 *   (flush_done). Plain TCP has neither.
 */
#include "net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <nng/nng.h>
#include <mbedtls/pk.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/x509_crt.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "tls_engine.h"

#define RBUF_INITIAL 256 /* idle connections are the common case on a gateway */
#define RBUF_BUSY_MAX (64 * 1024)
#define SBUF_KEEP (16 * 1024)
#define TLS_CLOSE_GRACE_MS 100 /* see flush_done */

/* The files a TLS listener was configured with (heap copies), kept to rebuild its TLS
 * configuration on reload. */
typedef struct tls_files {
    char *certfile;
    char *keyfile;
    char *keypass; /* may be NULL */
    char *cafile;  /* may be NULL */
    bool require_certificate;
    bool identity; /* use_identity_as_username: links need their certificate's CN */
} tls_files;

typedef struct listener {
    mql_net *net;
    nng_stream_listener *l;
    nng_tls_config *tls; /* our reference to the listener's current TLS config, or NULL */
    nng_aio *aio;
    struct listener *next;
    int id;
    bool ws;
    atomic_bool rearm; /* the pending accept was cancelled to pick up a new TLS config */
    tls_files files;
    char url[256];
} listener;

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
    bool closing; /* no more input is delivered, no more output accepted */
    bool flush;   /* close once the output is written */
    bool shut;    /* nng_stream_close was called: never start another receive */
    bool tls;     /* a TLS listener's link (for handshake failure messages) */
    bool layered; /* TLS or WebSocket: nng's stream may lose the close (mql_net_reap_lost) */
    bool grace;   /* flush_done started (or finished) the TLS close grace time */
    bool got_data;
    struct mql_link *prev, *next;
    struct mql_link *reap_next;
    atomic_uint pins;  /* deferred-send lists holding the link (reaper waits for 0) */
    bool kick_pending; /* on a deferred-send list, its send not started yet */
    char peer[64];
};

struct mql_net {
    const mql_link_ops *ops;
    void *arg;
    pthread_mutex_t mtx;
    pthread_cond_t cv;
    listener *listeners;
    mql_link *links;
    size_t nlinks;
    mql_link *reap_head;
    bool stopping;
    pthread_t reaper;
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
static void accept_cb(void *arg);

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

mql_err mql_net_alloc(mql_net **out, const mql_link_ops *ops, void *arg)
{
    char why[256];
    /* before any TLS configuration exists: see tls_engine.h */
    if (mql_tls_engine_init(why, sizeof(why)) != MQL_OK) {
        mql_error("net.tls", "%s", why);
        return MQL_E_INTERNAL;
    }
    mql_net *net = calloc(1, sizeof(*net));
    if (net == NULL)
        return MQL_E_NOMEM;
    net->ops = ops;
    net->arg = arg;
    pthread_mutex_init(&net->mtx, NULL);
    pthread_cond_init(&net->cv, NULL);
    if (pthread_create(&net->reaper, NULL, reaper_main, net) != 0) {
        pthread_mutex_destroy(&net->mtx);
        pthread_cond_destroy(&net->cv);
        free(net);
        return MQL_E_NOMEM;
    }
    *out = net;
    return MQL_OK;
}

/* Read a whole (small) text file; NULL with errno set on failure. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len < cap - 1)
            break;
        char *nb = realloc(buf, cap * 2);
        if (nb == NULL) {
            free(buf);
            buf = NULL;
            errno = ENOMEM;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf != NULL) {
        if (ferror(f)) {
            free(buf);
            buf = NULL;
        } else {
            buf[len] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* mbedtls checks that nng's own_cert does not do: the key decrypts and matches the
 * certificate. Writes the reason into errbuf. */
static bool cert_key_match(const tls_files *o, const char *cert, const char *key, char *errbuf,
                           size_t errlen)
{
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    bool ok = false;
    int rv;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    if ((rv = mbedtls_x509_crt_parse(&crt, (const unsigned char *)cert, strlen(cert) + 1)) != 0) {
        snprintf(errbuf, errlen, "certfile %s: not a PEM certificate (mbedtls -0x%04x)",
                 o->certfile, (unsigned)-rv);
        goto done;
    }
    const char *pass = o->keypass ? o->keypass : "";
    rv = mbedtls_pk_parse_key(&pk, (const unsigned char *)key, strlen(key) + 1,
                              (const unsigned char *)pass, strlen(pass));
    if (rv != 0) {
        snprintf(errbuf, errlen, "keyfile %s: %s (mbedtls -0x%04x)", o->keyfile,
                 rv == MBEDTLS_ERR_PK_PASSWORD_REQUIRED   ? "encrypted: set keyfile_password"
                 : rv == MBEDTLS_ERR_PK_PASSWORD_MISMATCH ? "wrong key password"
                 : (rv == MBEDTLS_ERR_PKCS5_FEATURE_UNAVAILABLE ||
                    rv == MBEDTLS_ERR_PK_FEATURE_UNAVAILABLE)
                     ? "encrypted in a format mbedtls 2.28 cannot read (openssl 3's PKCS#8 "
                       "AES); re-encrypt it with: openssl pkey -in KEY -aes256 -traditional"
                     : "not a PEM private key",
                 (unsigned)-rv);
        goto done;
    }
    if ((rv = mbedtls_pk_check_pair(&crt.pk, &pk)) != 0) {
        snprintf(errbuf, errlen, "keyfile %s does not match certfile %s", o->keyfile, o->certfile);
        goto done;
    }
    ok = true;
done:
    mbedtls_x509_crt_free(&crt);
    mbedtls_pk_free(&pk);
    return ok;
}

/*
 * Build a server TLS configuration from the files in o (read now): certificate and key
 * checked to match, TLS 1.2 or later, the CA for client certificates and the
 * authentication mode. url is only used in messages. OUT: *out (one reference, ours) on
 * success; on failure nothing is left behind and errbuf says which file and why.
 */
static mql_err tls_build(const char *url, const tls_files *o, nng_tls_config **out, char *errbuf,
                         size_t errlen)
{
    int rv;
    char *cert = NULL, *key = NULL;
    nng_tls_config *cfg = NULL;
    mql_err err = MQL_E_CONFIG;
    if (o->identity && (!o->require_certificate || strncmp(url, "tls+", 4) != 0)) {
        snprintf(errbuf, errlen,
                 "%s: use_identity_as_username needs a TLS MQTT listener (not websockets) with "
                 "require_certificate true",
                 url);
        return MQL_E_CONFIG;
    }
    if (o->certfile == NULL || o->keyfile == NULL) {
        snprintf(errbuf, errlen, "%s: TLS needs both certfile and keyfile", url);
        return MQL_E_CONFIG;
    }
    if ((cert = read_file(o->certfile)) == NULL) {
        snprintf(errbuf, errlen, "certfile %s: %s", o->certfile, strerror(errno));
        goto fail;
    }
    if ((key = read_file(o->keyfile)) == NULL) {
        snprintf(errbuf, errlen, "keyfile %s: %s", o->keyfile, strerror(errno));
        goto fail;
    }
    if (!cert_key_match(o, cert, key, errbuf, errlen))
        goto fail;
    if ((rv = mql_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER, NULL)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS: %s", url, nng_strerror(rv));
        cfg = NULL;
        goto fail;
    }
    /* TLS 1.2 at least */
    if ((rv = nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_3)) != 0 &&
        (rv = nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_2)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS version: %s", url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_tls_config_own_cert(cfg, cert, key, o->keypass)) != 0) {
        snprintf(errbuf, errlen,
                 "certfile %s / keyfile %s: %s (not PEM, a wrong key password, or the key does "
                 "not match the certificate)",
                 o->certfile, o->keyfile, nng_strerror(rv));
        goto fail;
    }
    if (o->cafile != NULL && (rv = nng_tls_config_ca_file(cfg, o->cafile)) != 0) {
        snprintf(errbuf, errlen, "cafile %s: %s", o->cafile, nng_strerror(rv));
        goto fail;
    }
    if (o->require_certificate && o->cafile == NULL) {
        snprintf(errbuf, errlen, "%s: require_certificate needs a cafile", url);
        goto fail;
    }
    rv = nng_tls_config_auth_mode(cfg, o->require_certificate ? NNG_TLS_AUTH_MODE_REQUIRED
                                                              : NNG_TLS_AUTH_MODE_NONE);
    if (rv != 0) {
        snprintf(errbuf, errlen, "%s: TLS: %s", url, nng_strerror(rv));
        goto fail;
    }
    *out = cfg;
    cfg = NULL;
    err = MQL_OK;
fail:
    if (cfg != NULL)
        nng_tls_config_free(cfg);
    free(cert);
    if (key != NULL) {
        memset(key, 0, strlen(key)); /* private key material */
        free(key);
    }
    return err;
}

static void files_free(tls_files *f)
{
    free(f->certfile);
    free(f->keyfile);
    if (f->keypass != NULL) {
        memset(f->keypass, 0, strlen(f->keypass));
        free(f->keypass);
    }
    free(f->cafile);
    memset(f, 0, sizeof(*f));
}

/* strdup that keeps NULL. False when out of memory. */
static bool dup_opt(char **dst, const char *src)
{
    *dst = src != NULL ? strdup(src) : NULL;
    return src == NULL || *dst != NULL;
}

static mql_err files_copy(tls_files *f, const mql_listen_opts *o)
{
    f->require_certificate = o->require_certificate;
    f->identity = o->identity_username;
    if (!dup_opt(&f->certfile, o->certfile) || !dup_opt(&f->keyfile, o->keyfile) ||
        !dup_opt(&f->keypass, o->keypass) || !dup_opt(&f->cafile, o->cafile)) {
        files_free(f);
        return MQL_E_NOMEM;
    }
    return MQL_OK;
}

static void listener_free(listener *ln)
{
    if (ln->l)
        nng_stream_listener_free(ln->l);
    if (ln->aio)
        nng_aio_free(ln->aio);
    if (ln->tls)
        nng_tls_config_free(ln->tls);
    files_free(&ln->files);
    free(ln);
}

mql_err mql_net_listen(mql_net *net, const mql_listen_opts *o, char *errbuf, size_t errlen)
{
    listener *ln = calloc(1, sizeof(*ln));
    int rv;
    mql_err err = MQL_E_IO;
    if (ln == NULL)
        return MQL_E_NOMEM;
    ln->net = net;
    ln->id = o->id;
    ln->ws = strncmp(o->url, "ws", 2) == 0;
    atomic_init(&ln->rearm, false);
    snprintf(ln->url, sizeof(ln->url), "%s", o->url);
    if ((rv = nng_stream_listener_alloc(&ln->l, o->url)) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    bool tls = strncmp(o->url, "tls+", 4) == 0 || strncmp(o->url, "wss://", 6) == 0;
    if (tls) {
        if ((err = files_copy(&ln->files, o)) != MQL_OK) {
            snprintf(errbuf, errlen, "%s: out of memory", o->url);
            goto fail;
        }
        if ((err = tls_build(o->url, &ln->files, &ln->tls, errbuf, errlen)) != MQL_OK)
            goto fail;
        err = MQL_E_IO;
        if ((rv = nng_stream_listener_set_ptr(ln->l, NNG_OPT_TLS_CONFIG, ln->tls)) != 0) {
            snprintf(errbuf, errlen, "%s: TLS: %s", o->url, nng_strerror(rv));
            err = MQL_E_CONFIG;
            goto fail;
        }
    }
    if (ln->ws && (rv = nng_stream_listener_set_string(ln->l, NNG_OPT_WS_PROTOCOL, "mqtt")) != 0) {
        snprintf(errbuf, errlen, "%s: websocket subprotocol: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_stream_listener_listen(ln->l)) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_aio_alloc(&ln->aio, accept_cb, ln)) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    pthread_mutex_lock(&net->mtx);
    ln->next = net->listeners;
    net->listeners = ln;
    pthread_mutex_unlock(&net->mtx);
    nng_stream_listener_accept(ln->l, ln->aio);
    return MQL_OK;
fail:
    listener_free(ln);
    return err;
}

/*
 * After a TLS listener got a new configuration, make sure the very next connection uses
 * it. nng 1.5.2 picks the TLS configuration when an accept is *started* (tls_alloc in the
 * TLS listener's accept), so the accept already waiting holds the old one and the first
 * connection after a reload would still see the old certificate. The replacement itself
 * works on a running listener: nng_stream_listener_set_ptr(NNG_OPT_TLS_CONFIG) swaps the
 * listener's configuration under its lock (checked against nng 1.5.2 by experiment: the
 * connections after the first one get the new certificate, on tls+tcp and on wss).
 * Re-creating the listener instead would leave a window in which the port refuses
 * connections, or fails to bind again and is lost.
 * - tls+tcp: the waiting accept is ours: cancel it; accept_cb sees `rearm` and starts a
 *   new one, which takes the new configuration. No connection is lost: the TCP accept(2)
 *   had not happened, the kernel keeps the connection in the backlog.
 * - wss: the TLS accept is the one nng's HTTP server keeps waiting internally, out of our
 *   reach. Make one throw-away TCP connection to the listener: it consumes that accept
 *   (and fails its handshake inside nng's HTTP server, which never hands it to us); the
 *   HTTP server's next accept, which any later client reaches, uses the new configuration.
 */
static void renew_pending_accept(listener *ln)
{
    if (!ln->ws) {
        atomic_store(&ln->rearm, true);
        nng_aio_cancel(ln->aio);
        return;
    }
    nng_url *u = NULL;
    nng_stream_dialer *d = NULL;
    nng_aio *aio = NULL;
    char target[128];
    int rv = nng_url_parse(&u, ln->url);
    if (rv == 0) {
        const char *host = u->u_hostname;
        if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
            host = "127.0.0.1";
        else if (strcmp(host, "::") == 0)
            host = "::1";
        bool v6 = strchr(host, ':') != NULL;
        snprintf(target, sizeof(target), "tcp://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "",
                 u->u_port);
        rv = nng_stream_dialer_alloc(&d, target);
    }
    if (rv == 0)
        rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv == 0) {
        nng_aio_set_timeout(aio, 2000);
        nng_stream_dialer_dial(d, aio);
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
        if (rv == 0) {
            nng_stream *s = nng_aio_get_output(aio, 0);
            nng_stream_close(s);
            nng_stream_free(s);
        }
    }
    if (rv != 0)
        mql_warning("net.tls_reload",
                    "%s: could not make the connection that moves the listener to the new "
                    "certificate (%s): the next client may still get the old one",
                    ln->url, nng_strerror(rv));
    if (aio != NULL)
        nng_aio_free(aio);
    if (d != NULL)
        nng_stream_dialer_free(d);
    if (u != NULL)
        nng_url_free(u);
}

int mql_net_reload_tls(mql_net *net)
{
    int failed = 0;
    char err[512];
    pthread_mutex_lock(&net->mtx);
    listener *head = net->listeners;
    pthread_mutex_unlock(&net->mtx);
    /* The list only changes in mql_net_listen / mql_net_close_listeners, which the caller
     * does not run meanwhile (see net.h). */
    for (listener *ln = head; ln != NULL; ln = ln->next) {
        if (ln->tls == NULL)
            continue;
        nng_tls_config *cfg = NULL;
        if (tls_build(ln->url, &ln->files, &cfg, err, sizeof(err)) != MQL_OK) {
            mql_error("net.tls_reload", "%s: keeping the running certificate: %s", ln->url, err);
            failed++;
            continue;
        }
        int rv = nng_stream_listener_set_ptr(ln->l, NNG_OPT_TLS_CONFIG, cfg);
        if (rv != 0) {
            mql_error("net.tls_reload", "%s: keeping the running certificate: %s", ln->url,
                      nng_strerror(rv));
            nng_tls_config_free(cfg);
            failed++;
            continue;
        }
        /* The listener holds the new one now; connections made with the old one hold
         * their own references to it. */
        nng_tls_config_free(ln->tls);
        ln->tls = cfg;
        renew_pending_accept(ln);
        mql_notice("net.tls_reload", "%s: certificate %s and key %s reloaded%s%s", ln->url,
                   ln->files.certfile, ln->files.keyfile, ln->files.cafile ? ", CA " : "",
                   ln->files.cafile ? ln->files.cafile : "");
    }
    return failed;
}

static void format_peer(nng_stream *s, char *buf, size_t len)
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

/* A link for a new stream (taken over: freed on failure). NULL when out of memory. */
/* A link for stream s, in the list of links. tls: a TLS stream; layered: TLS or WebSocket
 * (mql_net_reap_lost probes it). Both are set before the link is in the list, which the
 * ticker's mql_net_reap_lost walks. */
static mql_link *link_new(mql_net *net, nng_stream *s, const mql_link_ops *ops, bool tls,
                          bool layered)
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
    format_peer(s, link->peer, sizeof(link->peer));
    link->tls = tls;
    link->layered = layered;

    pthread_mutex_lock(&net->mtx);
    link->next = net->links;
    if (net->links)
        net->links->prev = link;
    net->links = link;
    net->nlinks++;
    pthread_mutex_unlock(&net->mtx);
    return link;
}

/* Hand the link to its owner (ops->open) and start receiving, or close it when refused. */
static void link_start(mql_link *link, void *arg, int listener_id)
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

static void accept_cb(void *arg)
{
    listener *ln = arg;
    mql_net *net = ln->net;
    int rv = nng_aio_result(ln->aio);
    if (rv == NNG_ECANCELED && atomic_exchange(&ln->rearm, false)) {
        nng_stream_listener_accept(ln->l, ln->aio); /* renew_pending_accept */
        return;
    }
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv != 0) {
        mql_warning("net.accept", "accept on %s failed: %s", ln->url, nng_strerror(rv));
        nng_stream_listener_accept(ln->l, ln->aio);
        return;
    }
    nng_stream *s = nng_aio_get_output(ln->aio, 0);
    nng_stream_listener_accept(ln->l, ln->aio);
    /* use_identity_as_username reads the certificate through tls_engine's registry, keyed
     * by this stream: check now that the key works (it does with nng 1.5.2), and refuse the
     * connection rather than run it without a way to learn its identity. */
    if (ln->files.identity && !mql_tls_stream_known(s)) {
        char peer[64];
        format_peer(s, peer, sizeof(peer));
        mql_error("net.tls",
                  "connection from %s on %s refused: its TLS stream is not known to mqlite's "
                  "TLS engine, so its certificate's Common Name cannot be read "
                  "(use_identity_as_username; nng's internals differ from 1.5.2)",
                  peer, ln->url);
        nng_stream_close(s);
        nng_stream_free(s);
        return;
    }

    mql_link *link = link_new(net, s, net->ops, ln->tls != NULL, ln->tls != NULL || ln->ws);
    if (link == NULL) {
        mql_error("net.nomem", "out of memory accepting a connection on %s", ln->url);
        return;
    }
    link_start(link, net->arg, ln->id);
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
        link->rlen = 0; /* input after a close request is discarded */
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
 * The output of a flushing close is written: close now, or for TLS after a grace time.
 * nng 1.5.2's TLS stream completes a send once the data is encrypted into its own buffer,
 * and its close then aborts the TCP write of that buffer still in progress, so the last
 * packet (a CONNACK or DISCONNECT with the reason for the close) was lost in about 1 of 600
 * closes under load. The TCP write of the buffer normally finishes within microseconds;
 * TLS_CLOSE_GRACE_MS (on the send aio, which is idle now) makes the loss practically
 * impossible and costs nothing but a later close. Caller holds link->mtx; returns whether
 * to call nng_stream_close after releasing it.
 */
static bool flush_done(mql_link *link)
{
    if (link->tls && !link->grace) {
        link->grace = true;
        link->tx_busy = true; /* the send aio sleeps; tx_cb closes when it wakes */
        nng_sleep_aio(TLS_CLOSE_GRACE_MS, link->tx);
        return false;
    }
    mark_shut(link);
    return true;
}

static void tx_cb(void *arg)
{
    mql_link *link = arg;
    bool close_now = false;
    pthread_mutex_lock(&link->mtx);
    if (link->grace && link->tx_busy) { /* the grace sleep of flush_done ended (or stopped) */
        link->tx_busy = false;
        mark_shut(link);
        close_now = true;
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

/* ---- outgoing connections ---- */

struct mql_dialer {
    mql_net *net;
    nng_stream_dialer *d;
    nng_tls_config *tls;
    nng_aio *aio;
    const mql_link_ops *ops;
    void *arg;
    void (*failed)(void *arg, const char *why);
    char url[160];
};

static void dial_cb(void *arg)
{
    mql_dialer *d = arg;
    int rv = nng_aio_result(d->aio);
    if (rv != 0) {
        char why[320];
        snprintf(why, sizeof(why), "%s: %s%s", d->url, nng_strerror(rv),
                 d->tls != NULL && rv != NNG_ECONNREFUSED && rv != NNG_EADDRINVAL &&
                         rv != NNG_ETIMEDOUT && rv != NNG_ECANCELED && rv != NNG_ECLOSED
                     ? " (TLS handshake: certificate, host name, protocol version or cipher)"
                     : "");
        d->failed(d->arg, why);
        return;
    }
    nng_stream *s = nng_aio_get_output(d->aio, 0);
    mql_link *link = link_new(d->net, s, d->ops, d->tls != NULL, d->tls != NULL);
    if (link == NULL) {
        d->failed(d->arg, "out of memory");
        return;
    }
    /* nng 1.5.2 completes the dial before the TLS handshake; a handshake failure is still
     * logged with its reason (rx_cb asks the TLS engine), other early failures are the
     * bridge's to report */
    link->got_data = true;
    link_start(link, d->arg, -1);
}

/* Every regular file of dir, concatenated (PEM certificates), or NULL with errno set. */
static char *read_ca_dir(const char *dir)
{
    DIR *dp = opendir(dir);
    if (dp == NULL)
        return NULL;
    size_t len = 0;
    char *all = calloc(1, 1);
    struct dirent *e;
    while (all != NULL && (e = readdir(dp)) != NULL) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        char *one = read_file(path);
        if (one == NULL)
            continue; /* unreadable files are skipped, as openssl's capath does */
        size_t n = strlen(one);
        char *p = realloc(all, len + n + 2);
        if (p == NULL) {
            free(one);
            free(all);
            all = NULL;
            errno = ENOMEM;
            break;
        }
        all = p;
        memcpy(all + len, one, n);
        len += n;
        all[len++] = '\n';
        all[len] = '\0';
        free(one);
    }
    closedir(dp);
    return all;
}

static mql_err dial_tls_setup(mql_dialer *d, const mql_dial_opts *o, char *errbuf, size_t errlen)
{
    int rv;
    char *ca = NULL, *cert = NULL, *key = NULL;
    mql_err err = MQL_E_CONFIG;
    if ((rv = mql_tls_config_alloc(&d->tls, NNG_TLS_MODE_CLIENT, o->alpn)) != 0) {
        d->tls = NULL;
        snprintf(errbuf, errlen, "%s: TLS: %s", o->url,
                 rv == NNG_EINVAL ? "bad bridge_alpn list" : nng_strerror(rv));
        return rv == NNG_ENOMEM ? MQL_E_NOMEM : MQL_E_CONFIG;
    }
    if ((rv = nng_tls_config_version(d->tls, NNG_TLS_1_2, NNG_TLS_1_3)) != 0 &&
        (rv = nng_tls_config_version(d->tls, NNG_TLS_1_2, NNG_TLS_1_2)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS version: %s", o->url, nng_strerror(rv));
        goto done;
    }
    if (o->cafile != NULL) {
        if ((ca = read_file(o->cafile)) == NULL) {
            snprintf(errbuf, errlen, "bridge_cafile %s: %s", o->cafile, strerror(errno));
            goto done;
        }
    } else if (o->capath != NULL) {
        if ((ca = read_ca_dir(o->capath)) == NULL) {
            snprintf(errbuf, errlen, "bridge_capath %s: %s", o->capath, strerror(errno));
            goto done;
        }
    }
    if (ca != NULL && (rv = nng_tls_config_ca_chain(d->tls, ca, NULL)) != 0) {
        snprintf(errbuf, errlen, "%s %s: no PEM CA certificate could be read (%s)",
                 o->cafile ? "bridge_cafile" : "bridge_capath", o->cafile ? o->cafile : o->capath,
                 nng_strerror(rv));
        goto done;
    }
    if (o->certfile != NULL) {
        tls_files lo = {.certfile = (char *)o->certfile, .keyfile = (char *)o->keyfile};
        if ((cert = read_file(o->certfile)) == NULL) {
            snprintf(errbuf, errlen, "bridge_certfile %s: %s", o->certfile, strerror(errno));
            goto done;
        }
        if ((key = read_file(o->keyfile)) == NULL) {
            snprintf(errbuf, errlen, "bridge_keyfile %s: %s", o->keyfile, strerror(errno));
            goto done;
        }
        if (!cert_key_match(&lo, cert, key, errbuf, errlen))
            goto done;
        if ((rv = nng_tls_config_own_cert(d->tls, cert, key, NULL)) != 0) {
            snprintf(errbuf, errlen, "bridge_certfile %s / bridge_keyfile %s: %s", o->certfile,
                     o->keyfile, nng_strerror(rv));
            goto done;
        }
    }
    if (o->server_name != NULL && (rv = nng_tls_config_server_name(d->tls, o->server_name)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS server name: %s", o->url, nng_strerror(rv));
        goto done;
    }
    if ((rv = nng_tls_config_auth_mode(d->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
        (rv = nng_stream_dialer_set_ptr(d->d, NNG_OPT_TLS_CONFIG, d->tls)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS: %s", o->url, nng_strerror(rv));
        goto done;
    }
    err = MQL_OK;
done:
    free(ca);
    free(cert);
    if (key != NULL) {
        memset(key, 0, strlen(key)); /* private key material */
        free(key);
    }
    return err;
}

mql_err mql_dialer_alloc(mql_dialer **out, mql_net *net, const mql_dial_opts *o,
                         const mql_link_ops *ops, void *arg,
                         void (*failed)(void *arg, const char *why), char *errbuf, size_t errlen)
{
    int rv;
    mql_err err = MQL_E_CONFIG;
    mql_dialer *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return MQL_E_NOMEM;
    d->net = net;
    d->ops = ops;
    d->arg = arg;
    d->failed = failed;
    snprintf(d->url, sizeof(d->url), "%s", o->url);
    if ((rv = nng_stream_dialer_alloc(&d->d, o->url)) != 0) {
        snprintf(errbuf, errlen, "cannot connect to %s: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    if (strncmp(o->url, "tls+", 4) == 0 && (err = dial_tls_setup(d, o, errbuf, errlen)) != MQL_OK)
        goto fail;
    if ((rv = nng_aio_alloc(&d->aio, dial_cb, d)) != 0) {
        err = MQL_E_NOMEM;
        snprintf(errbuf, errlen, "%s: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    nng_aio_set_timeout(d->aio, 30000); /* connect + TLS handshake */
    *out = d;
    return MQL_OK;
fail:
    if (d->d)
        nng_stream_dialer_free(d->d);
    if (d->tls)
        nng_tls_config_free(d->tls);
    free(d);
    return err;
}

void mql_dialer_dial(mql_dialer *d)
{
    nng_stream_dialer_dial(d->d, d->aio);
}

void mql_dialer_free(mql_dialer *d)
{
    if (d == NULL)
        return;
    nng_aio_stop(d->aio);
    nng_stream_dialer_close(d->d);
    nng_aio_free(d->aio);
    nng_stream_dialer_free(d->d);
    if (d->tls)
        nng_tls_config_free(d->tls);
    free(d);
}

void mql_net_close_listeners(mql_net *net)
{
    pthread_mutex_lock(&net->mtx);
    listener *ln = net->listeners;
    net->listeners = NULL;
    pthread_mutex_unlock(&net->mtx);
    while (ln != NULL) {
        listener *next = ln->next;
        atomic_store(&ln->rearm, false);
        nng_stream_listener_close(ln->l);
        nng_aio_stop(ln->aio);
        listener_free(ln);
        ln = next;
    }
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

void mql_net_free(mql_net *net)
{
    mql_net_close_listeners(net);
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
    pthread_mutex_destroy(&net->mtx);
    pthread_cond_destroy(&net->cv);
    free(net);
}
