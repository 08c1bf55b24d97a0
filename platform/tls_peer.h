/*
 * tls_peer.h - what a TLS link's peer certificate says, without nng headers (the broker
 * core includes it through net.h).
 */
#ifndef MQL_TLS_PEER_H
#define MQL_TLS_PEER_H

/* What the peer certificate of a TLS stream says (see mql_tls_peer_cn). */
typedef enum mql_tls_peer {
    MQL_TLS_PEER_OK,        /* verified certificate, its CN copied out */
    MQL_TLS_PEER_UNKNOWN,   /* the stream is not one of our engine's connections */
    MQL_TLS_PEER_HANDSHAKE, /* the handshake has not completed */
    MQL_TLS_PEER_NO_CERT,   /* no certificate, or one that did not verify */
    MQL_TLS_PEER_NO_CN,     /* the subject has no Common Name */
    MQL_TLS_PEER_BAD_CN,    /* the CN is longer than the buffer, or holds a NUL byte or
                               several CN attributes */
} mql_tls_peer;

/* mql_tls_peer_str: plain words for p (a static string). */
static inline const char *mql_tls_peer_str(mql_tls_peer p)
{
    switch (p) {
    case MQL_TLS_PEER_OK:
        return "ok";
    case MQL_TLS_PEER_UNKNOWN:
        return "the TLS connection is not known to mqlite's TLS engine (not a tls+tcp listener, "
               "or nng's internals changed)";
    case MQL_TLS_PEER_HANDSHAKE:
        return "the TLS handshake has not completed";
    case MQL_TLS_PEER_NO_CERT:
        return "no verified client certificate";
    case MQL_TLS_PEER_NO_CN:
        return "the client certificate's subject has no Common Name";
    case MQL_TLS_PEER_BAD_CN:
        return "the client certificate's Common Name is too long, repeated or holds a NUL byte";
    }
    return "?";
}

#endif
