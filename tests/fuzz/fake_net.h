/*
 * fake_net.h - an in-memory, single-threaded platform/net.h for the connection fuzzer.
 *
 * fake_net.c implements every function of platform/net.h without sockets, threads or nng, so
 * the real broker core (conn.c, session.c, broker.c, topic.c ...) runs unchanged on links
 * that the test opens, feeds and closes itself, synchronously on its own thread. It keeps
 * the contract of net.h:
 *   - ops->data is called only from fake_link_feed, never while the link is closing, with
 *     every byte not yet consumed (a frame may span several feeds);
 *   - ops->closed is called exactly once per opened link, from fake_net_reap (or
 *     mql_net_drain / mql_net_free), never from inside mql_link_send or mql_link_close;
 *   - mql_link_send fails with MQL_E_CLOSED once the link is closing.
 * Listeners are accepted and ignored (the test opens links itself). Nothing is written
 * anywhere: each mql_link_send is handed to the test's sink (an oracle) and dropped.
 *
 * Links stay allocated until mql_net_free, so a test may keep a pointer to a link whose
 * connection is gone and ask fake_link_state about it.
 */
#ifndef MQL_FAKE_NET_H
#define MQL_FAKE_NET_H

#include <stddef.h>
#include <stdint.h>

#include "platform/net.h"

enum fake_link_state {
    FAKE_OPEN = 0, /* the broker may send and receive */
    FAKE_CLOSING,  /* closed by the broker or the peer; ops->closed not yet called */
    FAKE_DEAD,     /* ops->closed has run */
};

/* Called with every buffer the broker sends on a link (the test's oracle). `user` is the
 * pointer given to fake_link_open, `ctx` the broker's context for the link. */
typedef void (*fake_sink)(void *user, void *ctx, const uint8_t *buf, size_t len);

void fake_net_set_sink(mql_net *net, fake_sink sink);

/* A peer connects: ops->open runs. Returns the link (FAKE_DEAD at once when the broker
 * refused it; its closed callback is not called then, as in net.c). NULL when out of memory. */
mql_link *fake_link_open(mql_net *net, const char *peer, void *user);

/* Bytes arrive on the link: appended to what the broker left unconsumed, then ops->data.
 * Input to a link that is not FAKE_OPEN is discarded, as net.c does. */
void fake_link_feed(mql_link *link, const uint8_t *buf, size_t len);

/* The peer goes away (FIN or reset): the link is closing; fake_net_reap finishes it. */
void fake_link_peer_close(mql_link *link);

/* What mql_link_backlog reports for the link (bytes "not yet written"). Default 0. */
void fake_link_set_backlog(mql_link *link, size_t backlog);

enum fake_link_state fake_link_state(const mql_link *link);

/* Call ops->closed for every closing link (as net.c's receive path does when it notices).
 * Call it after each step of the test, outside any broker callback. */
void fake_net_reap(mql_net *net);

#endif
