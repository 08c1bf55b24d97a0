/*
 * net_int.h - what the files behind platform/net.h share, and nothing else includes.
 *
 * The network layer is four files over nng, from the bottom up:
 *   tls_conf.c  builds every nng TLS configuration from file names (servers and clients)
 *   link.c      the links: receive, send, deferred sends, close, the reaper thread
 *   listen.c    listeners, their accepts and the TLS certificate reload   (uses link, tls_conf)
 *   dial.c      outgoing connections                                       (uses link, tls_conf)
 *   net.c       mql_net_alloc / mql_net_free, composing the above
 * Lock order: net->mtx, then a link's own mutex; neither is held while calling the broker.
 */
#ifndef MQL_NET_INT_H
#define MQL_NET_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "platform/net.h"

typedef struct mql_listener mql_listener; /* listen.c */

/* The network layer: one per broker. */
struct mql_net {
    const mql_link_ops *ops; /* for every link of every listener */
    void *arg;
    pthread_mutex_t mtx;     /* protects listeners, links, nlinks, reap_head, stopping */
    pthread_cond_t cv;       /* signalled when the reaper has work or freed a link */
    mql_listener *listeners; /* listen.c's list */
    mql_link *links;         /* every live link (link.c) */
    size_t nlinks;
    mql_link *reap_head; /* links waiting for the reaper */
    bool stopping;       /* the reaper ends once its queue is empty */
    pthread_t reaper;
};

/* ---- link.c ---- */

/* mql_net_links_init starts the reaper thread of net (whose mtx and cv are initialised).
 * Returns MQL_OK, or MQL_E_NOMEM when the thread cannot be created. */
MQL_MUST_CHECK mql_err mql_net_links_init(mql_net *net);

/* mql_net_links_fini aborts every link still open (their `closed` callbacks run), waits up
 * to 5 s for them to be reaped, then stops and joins the reaper thread. Call it once, after
 * the listeners are closed, with no lock held. */
void mql_net_links_fini(mql_net *net);

/* Flags of mql_link_alloc. */
#define MQL_LINK_TLS 0x1u     /* a TLS stream: handshake failures are logged with a reason */
#define MQL_LINK_LAYERED 0x2u /* TLS or WebSocket: mql_net_reap_lost probes it */
#define MQL_LINK_DIALED 0x4u  /* ours (a dial): failures before any data are not logged here */

/* mql_link_alloc makes a link for stream s and puts it in net's list of links. ops are the
 * callbacks of this link (the net's or a dialer's); flags are MQL_LINK_*. The link owns s
 * from now on; when out of memory s is freed and NULL returned. Nothing is received until
 * mql_link_start. */
mql_link *mql_link_alloc(mql_net *net, nng_stream *s, const mql_link_ops *ops, unsigned flags);

/* mql_link_start hands the link to its owner (ops->open(arg, link, peer, listener_id)) and
 * starts receiving, or closes and reaps the link when open refuses it. Call it once, on an
 * nng thread, right after mql_link_alloc. */
void mql_link_start(mql_link *link, void *arg, int listener_id);

/* mql_net_format_peer writes the remote address of s as "ADDR:PORT" or "[ADDR6]:PORT" into
 * buf ("unknown" when nng cannot tell). OUT: buf. */
void mql_net_format_peer(nng_stream *s, char *buf, size_t len);

/* ---- tls_conf.c ---- */

/* The files a TLS listener is configured with (kept to rebuild its configuration). */
typedef struct mql_tls_files {
    char *certfile;
    char *keyfile;
    char *keypass; /* may be NULL */
    char *cafile;  /* may be NULL */
    bool require_certificate;
    bool identity; /* use_identity_as_username: links need their certificate's CN */
} mql_tls_files;

/*
 * mql_tls_conf_server builds a server TLS configuration from the files in f (read now):
 * certificate and key checked to match, TLS 1.2 or later, the CA for client certificates
 * and the authentication mode. url (the listener's) is only used in messages. OUT: *out
 * (one reference, the caller's) on MQL_OK; on failure nothing is left behind, errbuf says
 * which file and why, and MQL_E_CONFIG is returned.
 */
MQL_MUST_CHECK mql_err mql_tls_conf_server(nng_tls_config **out, const char *url,
                                           const mql_tls_files *f, char *errbuf, size_t errlen);

/*
 * mql_tls_conf_client builds a client TLS configuration for a dial to o->url from o's files
 * (read now): TLS 1.2 or later, the CA file or directory, the client certificate and key
 * (checked to match), the server name and ALPN list, the server's certificate required.
 * OUT: *out (one reference, the caller's) on MQL_OK; on failure nothing is left behind and
 * errbuf says which file and why; MQL_E_NOMEM or MQL_E_CONFIG.
 */
MQL_MUST_CHECK mql_err mql_tls_conf_client(nng_tls_config **out, const mql_dial_opts *o,
                                           char *errbuf, size_t errlen);

#endif
