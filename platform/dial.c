/*
 * dial.c - outgoing connections (a bridge's uplink): one mql_dialer per address, one dial
 * at a time; a connected stream becomes a link (link.c) with the dialer's callbacks.
 *
 * A TLS dialer's configuration is built once, in mql_dialer_alloc, by tls_conf.c; each
 * mql_dialer_dial resolves the host name again.
 * Locking: none of its own. The owner never runs mql_dialer_dial concurrently with itself or
 * with mql_dialer_free; dial_cb runs on an nng thread, once per dial.
 * Performance: a dial is rare (start-up and reconnects, with the bridge's back-off).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_int.h"
#include "tls_engine.h"

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
    unsigned flags = MQL_LINK_DIALED | (d->tls != NULL ? MQL_LINK_TLS | MQL_LINK_LAYERED : 0);
    mql_link *link = mql_link_alloc(d->net, s, d->ops, flags);
    if (link == NULL) {
        d->failed(d->arg, "out of memory");
        return;
    }
    mql_link_start(link, d->arg, -1);
}

/* A TLS dial: its configuration (tls_conf.c), given to the dialer. */
static mql_err tls_setup(mql_dialer *d, const mql_dial_opts *o, char *errbuf, size_t errlen)
{
    mql_err err = mql_tls_conf_client(&d->tls, o, errbuf, errlen);
    if (err != MQL_OK) {
        d->tls = NULL;
        return err;
    }
    int rv = nng_stream_dialer_set_ptr(d->d, NNG_OPT_TLS_CONFIG, d->tls);
    if (rv != 0) {
        snprintf(errbuf, errlen, "%s: TLS: %s", o->url, nng_strerror(rv));
        return MQL_E_CONFIG;
    }
    return MQL_OK;
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
    if (strncmp(o->url, "tls+", 4) == 0 && (err = tls_setup(d, o, errbuf, errlen)) != MQL_OK)
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

mql_err mql_net_check_dial(const mql_dial_opts *o, char *errbuf, size_t errlen)
{
    if (strncmp(o->url, "tls+", 4) != 0)
        return MQL_OK;
    mql_err err = mql_tls_engine_init(errbuf, errlen);
    if (err != MQL_OK)
        return err;
    nng_tls_config *cfg = NULL;
    err = mql_tls_conf_client(&cfg, o, errbuf, errlen);
    if (err == MQL_OK)
        nng_tls_config_free(cfg);
    return err;
}
