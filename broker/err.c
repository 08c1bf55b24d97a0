/*
 * err.c - mapping of mql_err to MQTT reason codes and log names.
 *
 * This is the only place that decides which reason code an error becomes on the wire.
 */
#include "err.h"

static const struct {
    uint8_t rc5;
    uint8_t rc3;
    const char *name;
} table[] = {
    [MQL_OK] = {0x00, 0x00, "success"},
    [MQL_E_MALFORMED] = {0x81, 0x03, "malformed packet"},
    [MQL_E_PROTOCOL] = {0x82, 0x03, "protocol error"},
    [MQL_E_BAD_VERSION] = {0x84, 0x01, "unsupported protocol version"},
    [MQL_E_CLIENT_ID_INVALID] = {0x85, 0x02, "client identifier not valid"},
    [MQL_E_BAD_USER_PASS] = {0x86, 0x04, "bad user name or password"},
    [MQL_E_NOT_AUTHORIZED] = {0x87, 0x05, "not authorized"},
    [MQL_E_SERVER_UNAVAILABLE] = {0x88, 0x03, "server unavailable"},
    [MQL_E_BUSY] = {0x89, 0x03, "server busy"},
    [MQL_E_BAD_AUTH_METHOD] = {0x8C, 0x05, "bad authentication method"},
    [MQL_E_KEEPALIVE] = {0x8D, 0x03, "keep alive timeout"},
    [MQL_E_TAKEN_OVER] = {0x8E, 0x03, "session taken over"},
    [MQL_E_TOPIC_FILTER_INVALID] = {0x8F, 0x03, "topic filter invalid"},
    [MQL_E_TOPIC_NAME_INVALID] = {0x90, 0x03, "topic name invalid"},
    [MQL_E_PACKET_ID_IN_USE] = {0x91, 0x03, "packet identifier in use"},
    [MQL_E_PACKET_ID_NOT_FOUND] = {0x92, 0x03, "packet identifier not found"},
    [MQL_E_RECEIVE_MAX] = {0x93, 0x03, "receive maximum exceeded"},
    [MQL_E_TOPIC_ALIAS_INVALID] = {0x94, 0x03, "topic alias invalid"},
    [MQL_E_TOO_LARGE] = {0x95, 0x03, "packet too large"},
    [MQL_E_QUOTA] = {0x97, 0x03, "quota exceeded"},
    [MQL_E_ADMIN] = {0x98, 0x03, "administrative action"},
    [MQL_E_PAYLOAD_FORMAT] = {0x99, 0x03, "payload format invalid"},
    [MQL_E_RETAIN_UNSUPPORTED] = {0x9A, 0x03, "retain not supported"},
    [MQL_E_QOS_UNSUPPORTED] = {0x9B, 0x03, "QoS not supported"},
    [MQL_E_SHARED_UNSUPPORTED] = {0x9E, 0x03, "shared subscriptions not supported"},
    [MQL_E_CONN_RATE] = {0x9F, 0x03, "connection rate exceeded"},
    [MQL_E_MAX_CONNECT_TIME] = {0xA0, 0x03, "maximum connect time"},
    [MQL_E_SUBID_UNSUPPORTED] = {0xA1, 0x03, "subscription identifiers not supported"},
    [MQL_E_WILDCARD_UNSUPPORTED] = {0xA2, 0x03, "wildcard subscriptions not supported"},
    [MQL_E_SHUTDOWN] = {0x8B, 0x03, "server shutting down"},
    [MQL_E_NOMEM] = {0x80, 0x03, "out of memory"},
    [MQL_E_IO] = {0x80, 0x03, "I/O error"},
    [MQL_E_CONFIG] = {0x80, 0x03, "configuration error"},
    [MQL_E_STORE] = {0x80, 0x03, "store error"},
    [MQL_E_CLOSED] = {0x80, 0x03, "connection closed"},
    [MQL_E_INTERNAL] = {0x80, 0x03, "internal error"},
};

uint8_t mql_err_reason(mql_err err)
{
    if ((unsigned)err >= sizeof(table) / sizeof(table[0]) || table[err].name == 0)
        return 0x80;
    return table[err].rc5;
}

uint8_t mql_err_reason_v3(mql_err err)
{
    if ((unsigned)err >= sizeof(table) / sizeof(table[0]) || table[err].name == 0)
        return 0x03;
    return table[err].rc3;
}

const char *mql_err_str(mql_err err)
{
    if ((unsigned)err >= sizeof(table) / sizeof(table[0]) || table[err].name == 0)
        return "unknown error";
    return table[err].name;
}
