/*
 * restore.h - the load side of persistence, run once at start.
 */
#ifndef MQL_RESTORE_H
#define MQL_RESTORE_H

#include <stddef.h>

#include "err.h"

struct mql_core;
struct mql_config;

/* mql_restore_open: with persistence configured in cfg, open the store in
 * persistence_location and load what it holds (sessions, subscriptions, owed messages,
 * inbound QoS 2 ids, retained messages) into core; the core then holds the store
 * (core->store, taken back at shutdown with mql_mirror_detach). Without persistence it does
 * nothing. Returns MQL_OK, or an error with a message in errbuf (errlen bytes); core has no
 * store then. Before any other thread runs. */
MQL_MUST_CHECK mql_err mql_restore_open(struct mql_core *core, const struct mql_config *cfg,
                                        char *errbuf, size_t errlen);

#endif
