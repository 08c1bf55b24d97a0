/*
 * fake_store.c - the store's change operations as counters (contract in fake_store.h).
 *
 * Only the operations mirror.c queues are here; a test that needs loading, barriers or
 * statistics links the real store (storage/) instead.
 *
 * Locking: none; single-threaded, as the unit tests call the core on one thread (the broker
 * does so under its core lock). Performance assumption: none needed, a call is a counter
 * increment.
 */
#include <string.h>

#include "fake_store.h"

fake_store_counts fake_store_calls;

static int handle; /* its address is the fake store */

mql_store *fake_store_handle(void)
{
    return (mql_store *)&handle;
}

void fake_store_reset(void)
{
    memset(&fake_store_calls, 0, sizeof(fake_store_calls));
}

mql_err mql_store_msg_put(mql_store *st, const mql_store_msg *m)
{
    (void)st;
    (void)m;
    fake_store_calls.msg_put++;
    return MQL_OK;
}

mql_err mql_store_session_put(mql_store *st, const mql_store_session *s)
{
    (void)st;
    (void)s;
    fake_store_calls.session_put++;
    return MQL_OK;
}

mql_err mql_store_session_del(mql_store *st, const char *client_id)
{
    (void)st;
    (void)client_id;
    fake_store_calls.session_del++;
    return MQL_OK;
}

mql_err mql_store_sub_put(mql_store *st, const mql_store_sub *s)
{
    (void)st;
    (void)s;
    fake_store_calls.sub_put++;
    return MQL_OK;
}

mql_err mql_store_sub_del(mql_store *st, const char *client_id, const char *filter)
{
    (void)st;
    (void)client_id;
    (void)filter;
    fake_store_calls.sub_del++;
    return MQL_OK;
}

mql_err mql_store_out_put(mql_store *st, const mql_store_out *o)
{
    (void)st;
    (void)o;
    fake_store_calls.out_put++;
    return MQL_OK;
}

mql_err mql_store_out_update(mql_store *st, const char *client_id, uint64_t seq, uint8_t state,
                             uint16_t packet_id)
{
    (void)st;
    (void)client_id;
    (void)seq;
    (void)state;
    (void)packet_id;
    fake_store_calls.out_update++;
    return MQL_OK;
}

mql_err mql_store_out_del(mql_store *st, const char *client_id, uint64_t seq)
{
    (void)st;
    (void)client_id;
    (void)seq;
    fake_store_calls.out_del++;
    return MQL_OK;
}

mql_err mql_store_qos2_put(mql_store *st, const char *client_id, uint16_t pid)
{
    (void)st;
    (void)client_id;
    (void)pid;
    fake_store_calls.qos2_put++;
    return MQL_OK;
}

mql_err mql_store_qos2_del(mql_store *st, const char *client_id, uint16_t pid)
{
    (void)st;
    (void)client_id;
    (void)pid;
    fake_store_calls.qos2_del++;
    return MQL_OK;
}

mql_err mql_store_retain_put(mql_store *st, const char *topic, uint32_t topic_len, uint64_t msg_id)
{
    (void)st;
    (void)topic;
    (void)topic_len;
    (void)msg_id;
    fake_store_calls.retain_put++;
    return MQL_OK;
}

mql_err mql_store_retain_del(mql_store *st, const char *topic, uint32_t topic_len)
{
    (void)st;
    (void)topic;
    (void)topic_len;
    fake_store_calls.retain_del++;
    return MQL_OK;
}
