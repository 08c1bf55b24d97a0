/*
 * broker.h - the broker as main() sees it: make one from a configuration, start its
 * listeners, shut it down cleanly.
 */
#ifndef MQL_BROKER_H
#define MQL_BROKER_H

#include <stdint.h>

#include "config.h"
#include "err.h"
#include "stats.h"

typedef struct mql_broker mql_broker;

/* Make a broker for cfg (copied). Nothing listens yet. */
MQL_MUST_CHECK mql_err mql_broker_alloc(mql_broker **out, const mql_config *cfg);

/* Open every configured listener and start the housekeeping timer. On failure writes the
 * reason ("cannot listen on tcp://0.0.0.0:1883: Address in use") into errbuf. */
MQL_MUST_CHECK mql_err mql_broker_start(mql_broker *b, char *errbuf, size_t errlen);

/* Stop accepting, tell MQTT 5 clients the server is shutting down (DISCONNECT 0x8B), close
 * every connection and wait (bounded) for them to go. */
void mql_broker_shutdown(mql_broker *b);

/* Load (at start) or reload (SIGHUP) the password and ACL files; "" or NULL means none. On
 * error nothing changes (the running files stay) and errbuf says FILE:LINE and why. New
 * connections use the new files at once; ACL checks of existing connections too. */
MQL_MUST_CHECK mql_err mql_broker_load_auth(mql_broker *b, const char *passwd_path,
                                            const char *acl_path, char *errbuf, size_t errlen);

/* SIGHUP: re-read the certificate, key and CA files of every TLS listener (the paths it
 * was started with) for new connections; established connections keep theirs. A listener
 * whose files do not load keeps its running ones and the reason is logged. Returns the
 * number of listeners that kept their old files. Call from the thread that shuts down. */
int mql_broker_reload_tls(mql_broker *b);

/* Free everything. Call after mql_broker_shutdown. */
void mql_broker_free(mql_broker *b);

/* A copy of the counters. */
mql_stats mql_broker_stats(mql_broker *b);

#endif
