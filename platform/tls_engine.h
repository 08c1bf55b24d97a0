/*
 * tls_engine.h - mqlite's own TLS engine for nng (mbedtls 2.28), registered with
 * nng_tls_engine_register in place of the one built into Debian's nng 1.5.2.
 *
 * Why: nng 1.5.2's engine hides the peer certificate and cannot offer ALPN. With our engine
 * every TLS connection nng makes (tls+tcp, wss, bridge dials) runs through code we own, so
 * the broker can read the client certificate's Common Name (use_identity_as_username) and
 * a bridge can offer an ALPN list (bridge_alpn). nng's public engine interface has no hook
 * for either, so two side channels are used, both checked so that they fail closed:
 * - Peer identity: a registry of live engine connections keyed by the `arg` nng passes to
 *   the engine's conn init. In nng 1.5.2 that is its TLS stream object, the very
 *   nng_stream * a tls+tcp listener hands to the application (the stream is the first
 *   member of nng's tls_conn). A lookup by a stream that is not registered fails: if nng
 *   ever changed that layout, connections needing an identity are refused, never given a
 *   wrong one. (wss streams are WebSocket streams over nng's HTTP server: never found.)
 * - ALPN: a thread-local list that mql_tls_config_alloc hands to the engine's config init,
 *   which nng calls synchronously inside nng_tls_config_alloc on the caller's thread; the
 *   wrapper checks that our init ran and took the list.
 * TLS 1.2 only (mbedtls 2.28 has no production TLS 1.3): nothing below 1.2 is offered.
 */
#ifndef MQL_TLS_ENGINE_H
#define MQL_TLS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "broker/err.h"
#include "platform/tls_peer.h"

/* mql_tls_engine_init registers the engine (once per process; later calls return the first result).
 * Run it before any nng_tls_config is allocated: configs made earlier keep nng's own engine. On
 * failure writes the reason into errbuf. Thread-safe. */
MQL_MUST_CHECK mql_err mql_tls_engine_init(char *errbuf, size_t errlen);

/* mql_tls_config_alloc: nng_tls_config_alloc through our engine, checked: fails with NNG_ENOTSUP
 * when the config would not be ours (mql_tls_engine_init not run or failed). alpn: NULL, or a
 * comma-separated list of protocol names (1..255 bytes each, at most 8) offered in that
 * order (client) or accepted (server); NNG_EINVAL when malformed. OUT: *out, one reference
 * (nng_tls_config_free). Returns 0 or an NNG error code. */
int mql_tls_config_alloc(nng_tls_config **out, nng_tls_mode mode, const char *alpn);

/* mql_tls_peer_cn: the subject Common Name of the verified peer certificate of stream s (a tls+tcp
 * stream as nng_stream_listener_accept / nng_stream_dialer_dial gave it). OUT: cn (NUL-terminated,
 * only with MQL_TLS_PEER_OK). Thread-safe. */
mql_tls_peer mql_tls_peer_cn(nng_stream *s, char *cn, size_t len);

/* mql_tls_stream_known: whether s is one of our engine's live connections (see the layout note
 * above). */
bool mql_tls_stream_known(nng_stream *s);

/* mql_tls_failure: why the TLS handshake of s failed, when our engine saw it fail.
 * OUT: why. Returns false (why untouched) when it did not. */
bool mql_tls_failure(nng_stream *s, char *why, size_t len);

#endif
