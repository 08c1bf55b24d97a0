/*
 * restore.h - the load side of persistence, run once at start.
 */
#ifndef MQL_RESTORE_H
#define MQL_RESTORE_H

#include <stddef.h>

#include "err.h"

struct mql_broker;

/* mql_restore_open: with persistence configured, open the store in persistence_location
 * and load what it holds (sessions, subscriptions, owed messages, inbound QoS 2 ids,
 * retained messages) into b; the broker then owns the store (b->store, closed by
 * mql_mirror_close). Without persistence it does nothing. Returns MQL_OK, or an error with
 * a message in errbuf (errlen bytes); b has no store then. Before any other thread runs. */
MQL_MUST_CHECK mql_err mql_restore_open(struct mql_broker *b, char *errbuf, size_t errlen);

#endif
