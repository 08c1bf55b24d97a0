/*
 * mirror.h - the write side of persistence: changes, given as plain rows, become
 * storage/store.h operations.
 *
 * Every function is a no-op without a store (core->store NULL) and returns whether it queued an
 * operation that an acknowledgement must wait for (a store barrier) before it is sent: true
 * only with a store whose store_sync is not off. The store does the disk I/O on its own
 * thread; nothing here blocks.
 *
 * Locking: called with the core lock (broker->lock) held.
 */
#ifndef MQL_MIRROR_H
#define MQL_MIRROR_H

#include <stdbool.h>
#include <stdint.h>

#include "msg.h"
#include "storage/store.h"

struct mql_core;

/* mql_mirror_session_put: write (insert or replace) a session row. disconnected_mono is the
 * monotonic ms of its last disconnect, 0 while connected. */
bool mql_mirror_session_put(struct mql_core *core, const char *client_id, uint8_t version,
                            uint32_t expiry, bool connected, uint64_t disconnected_mono);
/* mql_mirror_session_del: delete a session row and all rows that belong to it. */
bool mql_mirror_session_del(struct mql_core *core, const char *client_id);
/* mql_mirror_sub_put: write a subscription row (row->client_id, filter, ...). */
bool mql_mirror_sub_put(struct mql_core *core, const mql_store_sub *row);
/* mql_mirror_sub_del: delete client_id's subscription to filter. */
bool mql_mirror_sub_del(struct mql_core *core, const char *client_id, const char *filter);
/* mql_mirror_out_put: write an owed message row; its body is written first unless msg
 * already has a store id (then the body row is shared). row->msg_id is filled in. */
bool mql_mirror_out_put(struct mql_core *core, mql_store_out *row, mql_msg *msg);
/* mql_mirror_out_state: update an owed message's state and packet id. */
bool mql_mirror_out_state(struct mql_core *core, const char *client_id, uint64_t seq, uint8_t state,
                          uint16_t packet_id);
/* mql_mirror_out_del: delete an owed message row (delivered, expired or dropped). */
bool mql_mirror_out_del(struct mql_core *core, const char *client_id, uint64_t seq);
/* mql_mirror_qos2: add (add true) or delete an inbound QoS 2 packet id row. */
bool mql_mirror_qos2(struct mql_core *core, const char *client_id, uint16_t pid, bool add);
/* mql_mirror_retain: keep msg as the retained message of topic; msg NULL or with an empty
 * payload deletes it. */
bool mql_mirror_retain(struct mql_core *core, mql_bytes topic, mql_msg *msg);
/* mql_mirror_detach: at shutdown (after every connection has gone): the store, which nothing
 * is mirrored to from now on (core->store is NULL afterwards), or NULL without one. The
 * caller closes it (mql_store_close commits what is queued) outside the core lock. */
struct mql_store *mql_mirror_detach(struct mql_core *core);
/* mql_mirror_wall_of / mql_mirror_mono_of: the store keeps wall-clock seconds (they must
 * mean something after a reboot), the broker monotonic ms; 0 stays 0 (no time). mono_of
 * never returns 0 for a time long past (1: still in the past). */
int64_t mql_mirror_wall_of(uint64_t mono_ms, uint64_t now_mono, int64_t now_wall);
uint64_t mql_mirror_mono_of(int64_t wall, uint64_t now_mono, int64_t now_wall);

#endif
