/*
 * listen.c - listeners: accepting links on tcp, tls+tcp, ws and wss, and swapping a TLS
 * listener's certificate on SIGHUP (mql_net_reload_tls).
 *
 * A TLS listener keeps the paths of its files (heap copies): mql_net_reload_tls builds a
 * new configuration from them (tls_conf.c) and swaps it into the running listener, so the
 * port never stops accepting. Each listener keeps one accept outstanding; accept_cb hands
 * the new stream to link.c and starts the next accept.
 *
 * Locking: net->mtx protects the list of listeners; a listener's own fields are set before
 * it is in the list and change only on the thread that calls mql_net_listen,
 * mql_net_reload_tls and mql_net_close_listeners (never concurrently, see net.h), except
 * `rearm`, which is atomic. accept_cb runs on nng's threads and takes no lock of ours but
 * net->mtx inside mql_link_alloc.
 * Performance: one accept callback per connection; nothing here is on the data path.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net_int.h"
#include "tls_engine.h"

struct mql_listener {
    mql_net *net;
    nng_stream_listener *l;
    nng_tls_config *tls; /* our reference to the listener's current TLS config, or NULL */
    nng_aio *aio;
    struct mql_listener *next;
    int id;
    bool ws;
    atomic_bool rearm;   /* the pending accept was cancelled to pick up a new TLS config */
    mql_tls_files files; /* TLS: the files its configuration is built from */
    char url[256];
};

static void accept_cb(void *arg);

static void files_free(mql_tls_files *f)
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

static mql_err files_copy(mql_tls_files *f, const mql_listen_opts *o)
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

static void listener_free(mql_listener *ln)
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
    mql_listener *ln = calloc(1, sizeof(*ln));
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
        if ((err = mql_tls_conf_server(&ln->tls, o->url, &ln->files, errbuf, errlen)) != MQL_OK)
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
static void renew_pending_accept(mql_listener *ln)
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
    mql_listener *head = net->listeners;
    pthread_mutex_unlock(&net->mtx);
    /* The list only changes in mql_net_listen / mql_net_close_listeners, which the caller
     * does not run meanwhile (see net.h). */
    for (mql_listener *ln = head; ln != NULL; ln = ln->next) {
        if (ln->tls == NULL)
            continue;
        nng_tls_config *cfg = NULL;
        if (mql_tls_conf_server(&cfg, ln->url, &ln->files, err, sizeof(err)) != MQL_OK) {
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

static void accept_cb(void *arg)
{
    mql_listener *ln = arg;
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
        mql_net_format_peer(s, peer, sizeof(peer));
        mql_error("net.tls",
                  "connection from %s on %s refused: its TLS stream is not known to mqlite's "
                  "TLS engine, so its certificate's Common Name cannot be read "
                  "(use_identity_as_username; nng's internals differ from 1.5.2)",
                  peer, ln->url);
        nng_stream_close(s);
        nng_stream_free(s);
        return;
    }

    unsigned flags = ln->tls != NULL ? MQL_LINK_TLS | MQL_LINK_LAYERED : 0;
    if (ln->ws)
        flags |= MQL_LINK_LAYERED;
    mql_link *link = mql_link_alloc(net, s, net->ops, flags);
    if (link == NULL) {
        mql_error("net.nomem", "out of memory accepting a connection on %s", ln->url);
        return;
    }
    mql_link_start(link, net->arg, ln->id);
}

void mql_net_close_listeners(mql_net *net)
{
    pthread_mutex_lock(&net->mtx);
    mql_listener *ln = net->listeners;
    net->listeners = NULL;
    pthread_mutex_unlock(&net->mtx);
    while (ln != NULL) {
        mql_listener *next = ln->next;
        atomic_store(&ln->rearm, false);
        nng_stream_listener_close(ln->l);
        nng_aio_stop(ln->aio);
        listener_free(ln);
        ln = next;
    }
}

mql_err mql_net_check_listen(const mql_listen_opts *o, char *errbuf, size_t errlen)
{
    nng_url *u = NULL;
    int rv = nng_url_parse(&u, o->url);
    if (rv != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s: %s", o->url, nng_strerror(rv));
        return MQL_E_CONFIG;
    }
    nng_url_free(u);
    bool tls = strncmp(o->url, "tls+", 4) == 0 || strncmp(o->url, "wss://", 6) == 0;
    if (!tls)
        return MQL_OK;
    mql_err err = mql_tls_engine_init(errbuf, errlen);
    if (err != MQL_OK)
        return err;
    /* The same reading and checks as mql_net_listen, on borrowed strings. */
    mql_tls_files f = {
        .certfile = (char *)o->certfile,
        .keyfile = (char *)o->keyfile,
        .keypass = (char *)o->keypass,
        .cafile = (char *)o->cafile,
        .require_certificate = o->require_certificate,
        .identity = o->identity_username,
    };
    nng_tls_config *cfg = NULL;
    err = mql_tls_conf_server(&cfg, o->url, &f, errbuf, errlen);
    if (err == MQL_OK)
        nng_tls_config_free(cfg);
    return err;
}
