/*
 * net.c - the network layer as a whole (platform/net.h): mql_net_alloc and mql_net_free,
 * composing links (link.c), listeners (listen.c) and dialers (dial.c).
 *
 * Every TLS configuration is made through mqlite's own nng TLS engine (tls_engine.c),
 * registered here before any configuration exists: it reports handshake failure reasons
 * and the client certificate's CN (mql_link_peer_cn), and offers a bridge's ALPN list.
 * Locking: net->mtx and net->cv are made here and destroyed here, after the reaper thread
 * (link.c) has ended; see net_int.h for what they protect.
 * Performance: runs once per broker start and stop.
 */
#include <stdlib.h>

#include "log.h"
#include "net_int.h"
#include "tls_engine.h"

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
    if (mql_net_links_init(net) != MQL_OK) {
        pthread_mutex_destroy(&net->mtx);
        pthread_cond_destroy(&net->cv);
        free(net);
        return MQL_E_NOMEM;
    }
    *out = net;
    return MQL_OK;
}

void mql_net_free(mql_net *net)
{
    mql_net_close_listeners(net);
    mql_net_links_fini(net);
    pthread_mutex_destroy(&net->mtx);
    pthread_cond_destroy(&net->cv);
    free(net);
}
