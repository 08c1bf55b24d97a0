/*
 * mirror.c - the write side of persistence: turns changes, given as plain rows, into store
 * operations.
 *
 * The broker keeps all state in memory and the store is a write-behind mirror of what must
 * survive a restart: sessions that outlive their connection (MQTT 5 Session Expiry > 0, or
 * MQTT 3.1.1 clean session 0), their subscriptions, queued and in-flight QoS 1/2 messages
 * and inbound QoS 2 packet ids, and every retained message. Which of a session's changes are
 * mirrored is the session's decision (session.c); this file knows rows, not sessions.
 *
 * Every change is queued with the store (no disk I/O here), and each function returns
 * whether an acknowledgement must wait for the commit of what it queued: the packet
 * handlers (conn.c) collect that and wait for a store barrier before acknowledging.
 *
 * Time: the store keeps wall-clock seconds (they must mean something after a reboot), the
 * broker monotonic milliseconds; conversions happen here, at the boundary.
 *
 * Locking: every function runs under the core lock (broker.c) and takes none. Performance
 * assumption: a message body is written once however many sessions owe it (msg->store_id marks it
 * written).
 */
#include <stdlib.h>

#include "mirror.h"

#include "core.h"
#include "platform/clock.h"
#include "platform/log.h"

/* The operation was queued (or failed: logged). Returns whether acks must wait for it. */
static bool op_result(mql_core *core, mql_err err, const char *what)
{
    if (err != MQL_OK)
        mql_error("store.queue", "cannot queue %s for the store: %s", what, mql_err_str(err));
    return core->store_wait;
}

int64_t mql_mirror_wall_of(uint64_t mono_ms, uint64_t now_mono, int64_t now_wall)
{
    if (mono_ms == 0)
        return 0;
    int64_t delta = (int64_t)mono_ms - (int64_t)now_mono;
    return now_wall + delta / 1000;
}

uint64_t mql_mirror_mono_of(int64_t wall, uint64_t now_mono, int64_t now_wall)
{
    if (wall == 0)
        return 0;
    int64_t delta_ms = (wall - now_wall) * 1000;
    if (delta_ms <= -(int64_t)now_mono)
        return 1; /* long past: still "expired", never 0 (which means "no expiry") */
    return (uint64_t)((int64_t)now_mono + delta_ms);
}

static bool put_msg_body(mql_core *core, mql_msg *m)
{
    if (m->store_id != 0)
        return false;
    m->store_id = ++core->next_msg_id;
    uint8_t stack[256];
    size_t plen = mql_props_encode(NULL, 0, &m->props);
    uint8_t *props = plen <= sizeof(stack) ? stack : malloc(plen);
    if (props == NULL)
        return op_result(core, MQL_E_NOMEM, "a message");
    if (plen)
        (void)mql_props_encode(props, plen, &m->props);
    mql_store_msg sm = {
        .msg_id = m->store_id,
        .topic = (const char *)m->topic.p,
        .topic_len = m->topic.len,
        .payload = m->payload.p,
        .payload_len = m->payload.len,
        .props = props,
        .props_len = (uint32_t)plen,
        .qos = m->qos,
        .retain = m->retain,
        .expiry_wall = mql_mirror_wall_of(m->expiry_at, mql_now_ms(), mql_wall_s()),
    };
    bool wait = op_result(core, mql_store_msg_put(core->store, &sm), "a message");
    if (props != stack)
        free(props);
    return wait;
}

bool mql_mirror_session_put(mql_core *core, const char *client_id, uint8_t version, uint32_t expiry,
                            bool connected, uint64_t disconnected_mono)
{
    if (core->store == NULL)
        return false;
    mql_store_session ss = {
        .client_id = client_id,
        .version = version,
        .expiry = expiry,
        .disconnected_at =
            connected ? 0 : mql_mirror_wall_of(disconnected_mono, mql_now_ms(), mql_wall_s()),
    };
    if (!connected && ss.disconnected_at == 0)
        ss.disconnected_at = mql_wall_s();
    return op_result(core, mql_store_session_put(core->store, &ss), "a session");
}

bool mql_mirror_session_del(mql_core *core, const char *client_id)
{
    if (core->store == NULL)
        return false;
    return op_result(core, mql_store_session_del(core->store, client_id), "a session removal");
}

bool mql_mirror_sub_put(mql_core *core, const mql_store_sub *row)
{
    if (core->store == NULL)
        return false;
    return op_result(core, mql_store_sub_put(core->store, row), "a subscription");
}

bool mql_mirror_sub_del(mql_core *core, const char *client_id, const char *filter)
{
    if (core->store == NULL)
        return false;
    return op_result(core, mql_store_sub_del(core->store, client_id, filter),
                     "a subscription removal");
}

bool mql_mirror_out_put(mql_core *core, mql_store_out *row, mql_msg *msg)
{
    if (core->store == NULL)
        return false;
    bool wait = put_msg_body(core, msg);
    row->msg_id = msg->store_id;
    return op_result(core, mql_store_out_put(core->store, row), "a queued message") || wait;
}

bool mql_mirror_out_state(mql_core *core, const char *client_id, uint64_t seq, uint8_t state,
                          uint16_t packet_id)
{
    if (core->store == NULL)
        return false;
    return op_result(core, mql_store_out_update(core->store, client_id, seq, state, packet_id),
                     "a message state");
}

bool mql_mirror_out_del(mql_core *core, const char *client_id, uint64_t seq)
{
    if (core->store == NULL)
        return false;
    return op_result(core, mql_store_out_del(core->store, client_id, seq), "a delivered message");
}

bool mql_mirror_qos2(mql_core *core, const char *client_id, uint16_t pid, bool add)
{
    if (core->store == NULL)
        return false;
    return op_result(core,
                     add ? mql_store_qos2_put(core->store, client_id, pid)
                         : mql_store_qos2_del(core->store, client_id, pid),
                     "a QoS 2 packet id");
}

bool mql_mirror_retain(mql_core *core, mql_bytes topic, mql_msg *msg)
{
    if (core->store == NULL)
        return false;
    if (msg == NULL || msg->payload.len == 0)
        return op_result(core, mql_store_retain_del(core->store, (const char *)topic.p, topic.len),
                         "a retained message removal");
    bool wait = put_msg_body(core, msg);
    return op_result(
               core,
               mql_store_retain_put(core->store, (const char *)topic.p, topic.len, msg->store_id),
               "a retained message") ||
           wait;
}

mql_store *mql_mirror_detach(mql_core *core)
{
    mql_store *st = core->store;
    core->store = NULL; /* from now on nothing is mirrored (sessions freed at exit stay stored) */
    return st;
}
