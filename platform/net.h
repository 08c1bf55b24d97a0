/*
 * net.h - listeners and connections ("links") on nng streams.
 *
 * The broker core sees a connection as an opaque mql_link with "send these bytes" and
 * "close". All I/O is asynchronous (nng aio); callbacks run on nng's task threads.
 *
 * Callback contract (struct mql_link_ops):
 *   open    once per accepted connection, before any data, with the `id` of the listener
 *           that accepted it (mql_listen_opts.id); returns the broker's context for the
 *           link, or NULL to refuse it (the link is then closed and freed).
 *   data    bytes arrived. Called serially for one link, never concurrently with itself
 *           or with `closed`. buf[0..len) holds everything not yet consumed; return how many
 *           bytes were consumed. Set *want to the size of the frame in progress when it is
 *           larger than what the link buffers now (the link grows its buffer to it).
 *   closed  exactly once, after the connection died for any reason (peer closed, I/O
 *           error, mql_link_close). After it returns the link must not be used again: the
 *           broker detaches it under its own lock inside this callback.
 * None of the callbacks is ever called from inside mql_link_send or mql_link_close, so the
 * broker may call those while holding its own locks.
 */
#ifndef MQL_NET_H
#define MQL_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/err.h"
#include "platform/tls_peer.h"

typedef struct mql_link mql_link;
typedef struct mql_net mql_net;

typedef struct mql_link_ops {
    void *(*open)(void *arg, mql_link *link, const char *peer, int listener_id);
    size_t (*data)(void *ctx, const uint8_t *buf, size_t len, size_t *want);
    void (*closed)(void *ctx);
} mql_link_ops;

/* mql_net_alloc creates the network layer (and registers mqlite's TLS engine). ops/arg
 * are used for every link of every listener and must outlive it. OUT: *out, freed with
 * mql_net_free. Returns MQL_OK, MQL_E_NOMEM, or MQL_E_INTERNAL (the TLS engine, logged). */
MQL_MUST_CHECK mql_err mql_net_alloc(mql_net **out, const mql_link_ops *ops, void *arg);

/* What one listener serves. */
typedef struct mql_listen_opts {
    /* "tcp://ADDR:PORT", "tls+tcp://ADDR:PORT", "ws://ADDR:PORT/PATH", "wss://ADDR:PORT/PATH" */
    const char *url;
    /* TLS (tls+tcp and wss): PEM files; keypass decrypts an encrypted key (may be NULL). */
    const char *certfile;
    const char *keyfile;
    const char *keypass;
    const char *cafile;       /* CA chain for client certificates (may be NULL) */
    bool require_certificate; /* mutual TLS: a client without a valid certificate is refused */
    bool identity_username;   /* use_identity_as_username: tls+tcp with require_certificate
                                 only; links get mql_link_peer_cn */
    int id;                   /* passed to ops->open for every link of this listener */
} mql_listen_opts;

/* mql_net_listen starts listening. TLS files are read and checked here, so a missing, unreadable or
 * mismatched certificate or key is a startup error naming the file. On failure writes the
 * reason into errbuf. WebSocket listeners negotiate the "mqtt" subprotocol. opts is copied:
 * the caller keeps it. The listener lives until mql_net_close_listeners / mql_net_free. */
MQL_MUST_CHECK mql_err mql_net_listen(mql_net *net, const mql_listen_opts *opts, char *errbuf,
                                      size_t errlen);

/* mql_net_check_listen checks, without listening, what mql_net_listen would read for opts:
 * the URL, and for TLS the certificate, key (and its password) and CA files, loaded and
 * the key matched to the certificate (`mqlite --check`). No mql_net is needed. Returns
 * MQL_OK, or an error with errbuf naming the file and what is wrong. */
MQL_MUST_CHECK mql_err mql_net_check_listen(const mql_listen_opts *opts, char *errbuf,
                                            size_t errlen);

/* An outgoing connection (a bridge's uplink). */
typedef struct mql_dial_opts {
    const char *url;      /* "tcp://HOST:PORT" or "tls+tcp://HOST:PORT" */
    const char *cafile;   /* TLS: the CA file the server's chain must lead to, or */
    const char *capath;   /*      a directory of PEM CA files (every regular file in it) */
    const char *certfile; /* TLS client certificate and key (both or neither) */
    const char *keyfile;
    const char *server_name; /* TLS: SNI, and the name the server certificate must carry;
                                NULL: no name check (the chain is still verified) */
    const char *alpn;        /* TLS: ALPN protocols offered, "a,b" (NULL: none) */
} mql_dial_opts;

typedef struct mql_dialer mql_dialer;

/* mql_net_check_dial checks, without dialing, the TLS files a dialer for o would read (CA
 * file or directory, client certificate and key): the same reading as mql_dialer_alloc.
 * Plain TCP needs no files: MQL_OK. Returns an error with errbuf naming the file otherwise. */
MQL_MUST_CHECK mql_err mql_net_check_dial(const mql_dial_opts *o, char *errbuf, size_t errlen);

/*
 * mql_dialer_alloc makes a dialer for one address. Each mql_dialer_dial resolves the host name
 * again and connects. On success ops->open(arg, link, peer, -1) runs (it may send; a NULL return
 * closes the link) and the link then behaves like an accepted one, with `ops`. On failure
 * failed(arg, why) runs. Both run on nng's threads, never inside mql_dialer_dial, one dial at a
 * time. TLS files are read here: a missing or bad file is an error naming it (in errbuf). o is
 * copied. OUT: *out, freed with mql_dialer_free.
 */
MQL_MUST_CHECK mql_err mql_dialer_alloc(mql_dialer **out, mql_net *net, const mql_dial_opts *o,
                                        const mql_link_ops *ops, void *arg,
                                        void (*failed)(void *arg, const char *why), char *errbuf,
                                        size_t errlen);
/* mql_dialer_dial starts one dial; its outcome is one call of ops->open or failed. Call it
 * again only after that outcome. */
void mql_dialer_dial(mql_dialer *d);
/* mql_dialer_free cancels a dial in progress and frees d (NULL: nothing) (waits for a callback in
 * progress: do not call it while holding a lock that callback takes). */
void mql_dialer_free(mql_dialer *d);

/*
 * mql_net_reload_tls re-reads the certificate, key and CA files of every TLS listener (the paths
 * given to mql_net_listen) and use them for connections accepted from now on; established
 * connections keep the certificate they were made with. A listener whose files do not load
 * (missing, not PEM, key does not match) keeps its current ones and the reason is logged.
 * Returns the number of TLS listeners that kept their old files. Call it from the thread
 * that calls mql_net_close_listeners / mql_net_free, never concurrently with them.
 */
int mql_net_reload_tls(mql_net *net);

/* mql_net_reap_lost aborts every TLS or WebSocket link whose TCP connection is already gone
 * although its stream never reported the end (a loss in nng 1.5.2, see link.c); its `closed`
 * callback then runs as for any close. Call it every second or so, from any thread (not from a link
 * callback). Returns how many links it closed. */
int mql_net_reap_lost(mql_net *net);

/* mql_net_close_listeners stops accepting on every listener and frees the listeners
 * (existing links stay). */
void mql_net_close_listeners(mql_net *net);

/* mql_net_drain waits up to timeout_ms until every link has been closed and reaped. Returns true
 * when none is left. */
bool mql_net_drain(mql_net *net, int timeout_ms);

/* mql_net_free stops everything and frees net. Links still open are closed (their `closed`
 * callbacks run). */
void mql_net_free(mql_net *net);

/* mql_link_send queues bytes for sending (copied). Output queued while a send is in progress is
 * sent in one batch when it completes. Returns MQL_E_CLOSED once the link is closing. */
MQL_MUST_CHECK mql_err mql_link_send(mql_link *link, const void *buf, size_t len);

/* mql_net_defer_begin, mql_net_defer_end: between these two calls (on one thread),
 * mql_link_send only queues: the writes start at
 * mql_net_defer_end. Use it around a section that holds a lock while sending to many links,
 * and call end after releasing the lock. */
void mql_net_defer_begin(void);
void mql_net_defer_end(void);

/* mql_link_peer_cn: the Common Name of the verified client certificate of a link accepted on a
 * tls+tcp listener (use_identity_as_username), once its handshake is done (when its first bytes
 * arrived). OUT: cn with MQL_TLS_PEER_OK; any other value says why there is none. */
mql_tls_peer mql_link_peer_cn(mql_link *link, char *cn, size_t len);

/* mql_link_backlog: bytes queued and not yet written to the socket (for back-pressure decisions).
 */
size_t mql_link_backlog(mql_link *link);

/* mql_link_close closes the link. With flush, output already queued is sent first (bounded by a few
 * seconds), and no more input is delivered; without, the connection is aborted now.
 * Safe to call more than once and from any thread. */
void mql_link_close(mql_link *link, bool flush);

/* mql_link_last_words marks the output queued so far as the peer's last packet (a
 * DISCONNECT with its reason code, a refusing CONNACK). A flushing mql_link_close then
 * lingers once the output is written: it reads and discards what the peer still sends until
 * the peer closes or is quiet for 100 ms (at most 1 s), so that the close is a FIN, not a
 * reset that fails the peer's sends and can discard the packet before it is read. Other
 * flushing closes (nothing the peer must read) close as soon as the output is written. */
void mql_link_last_words(mql_link *link);

#endif
