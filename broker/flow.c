/*
 * flow.c - the QoS flows both roles share (sections 4.3.1 to 4.3.3): a PUBLISH in (checks,
 * routing, PUBACK/PUBREC once what must be stored is committed, inbound QoS 2 ids), and
 * the acknowledgements of what we sent (PUBACK, PUBREC -> PUBREL, PUBCOMP) and PUBREL ->
 * PUBCOMP. A client connection (conn.c) and a bridge's uplink (bridge.c) both use them.
 *
 * Locking: every function runs under broker->lock (from the role's packet handler).
 * Performance assumption: this is the hot path in; a PUBLISH costs one message allocation
 * (shared by every session it is routed to) and no copy of its payload beyond that.
 */
#include <string.h>

#include "flow.h"

#include "config.h"
#include "core.h"
#include "router.h"
#include "session.h"
#include "platform/clock.h"
#include "platform/log.h"

/* Reason Code 0x10 of PUBACK/PUBREC: accepted, but no subscriber matched (not an error). */
#define MQL_RC_NO_MATCHING_SUBSCRIBERS 0x10

/* The PUBLISH breaks no rule that closes the connection (decode-level checks, alias).
 * False when it did: c is closing. */
static bool publish_valid(mql_conn *c, mql_publish *pub)
{
    const char *why = NULL;
    mql_err err = MQL_OK;
    if (c->version == MQL_V5 && (pub->props.present & MQL_PBIT(MQL_PROP_SUBSCRIPTION_ID))) {
        mql_proto_violation(c, MQL_E_PROTOCOL,
                            "a PUBLISH from a client must not carry a Subscription Identifier "
                            "[MQTT-3.3.4-6]");
        return false;
    }
    if (c->version == MQL_V5 && (err = mql_proto_resolve_alias(c, pub, &why)) != MQL_OK) {
        mql_proto_violation(c, err, why);
        return false;
    }
    if (pub->qos > c->cfg->max_qos) {
        mql_proto_violation(c, MQL_E_QOS_UNSUPPORTED,
                            "PUBLISH QoS above the server's Maximum QoS "
                            "[MQTT-3.2.2-11]");
        return false;
    }
    if (pub->retain && !c->cfg->retain_available) {
        mql_proto_violation(c, MQL_E_RETAIN_UNSUPPORTED,
                            "retained PUBLISH while Retain Available is 0 "
                            "[MQTT-3.2.2-14]");
        return false;
    }
    return true;
}

/* Route a PUBLISH that passed every check, and acknowledge it by its QoS (after the store's
 * commit when what it caused must be durable). */
static void route_and_ack(mql_conn *c, mql_publish *pub)
{
    mql_session *s = c->session;
    mql_msg *msg = mql_msg_new(pub->topic, pub->payload, pub->qos, pub->retain,
                               c->version == MQL_V5 ? &pub->props : NULL, mql_now_ms());
    if (msg == NULL) {
        mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
        return;
    }
    /* retained set/clear [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7], then the subscribers */
    mql_route_result routed = mql_router_publish(c->core, msg, s, mql_proto_client_id(c));
    mql_msg_unref(msg);
    /* v5: tell the publisher when a persistent subscriber's quota refused it, or in a
     * PUBACK that nobody subscribed (0x10, which the Server MAY use instead of 0x00,
     * section 3.4.2.1; mosquitto does so for PUBACK only, and clients written against it
     * expect that) */
    uint8_t rc = 0;
    if (c->version == MQL_V5 && routed.refused)
        rc = mql_err_reason(MQL_E_QUOTA);
    else if (c->version == MQL_V5 && pub->qos == 1 && routed.matched == 0)
        rc = MQL_RC_NO_MATCHING_SUBSCRIBERS;
    if (pub->qos == 2) {
        if (mql_session_qos2_add(s, pub->packet_id) != MQL_OK) {
            mql_proto_close(c, MQL_CLOSE_ABORT, MQL_E_NOMEM, "out of memory");
            return;
        }
        routed.wait = mql_session_mirror_qos2(c->core, s, pub->packet_id, true) || routed.wait;
    }
    bool durable = routed.wait;
    if (pub->qos == 1)
        mql_proto_queue_ack(c, MQL_PUBACK, pub->packet_id, rc, durable); /* [MQTT-4.3.2-4] */
    else if (pub->qos == 2)
        mql_proto_queue_ack(c, MQL_PUBREC, pub->packet_id, rc, durable); /* [MQTT-4.3.3-9] */
}

void mql_flow_publish_in(mql_conn *c, mql_publish *pub)
{
    mql_session *s = c->session;
    if (!publish_valid(c, pub))
        return;
    c->core->stats.msgs_received++;
    /* a bridge's inbound messages are the operator's own configuration, not a client's */
    if (c->core->acl != NULL && c->role->server &&
        !mql_acl_can_write(c->core->acl, c->username, s->client_id, pub->topic)) {
        /* not routed, not retained; QoS 0 is dropped silently as the spec allows */
        mql_notice("client.acl",
                   "client \"%s\" (%s) user \"%s\": PUBLISH to \"%.*s\" denied "
                   "by the ACL",
                   s->client_id, c->peer, c->username ? c->username : "", (int)pub->topic.len,
                   pub->topic.p);
        uint8_t rc = c->version == MQL_V5 ? mql_err_reason(MQL_E_NOT_AUTHORIZED) : 0;
        if (pub->qos == 1)
            mql_proto_queue_ack(c, MQL_PUBACK, pub->packet_id, rc, false);
        else if (pub->qos == 2)
            mql_proto_queue_ack(c, MQL_PUBREC, pub->packet_id, rc, false);
        return;
    }
    bool payload_ok = true;
    if (c->version == MQL_V5 && (pub->props.present & MQL_PBIT(MQL_PROP_PAYLOAD_FORMAT)) &&
        pub->props.payload_format == 1 && !mql_utf8_valid(pub->payload.p, pub->payload.len)) {
        payload_ok = false; /* [MQTT-3.3.2-4] */
    }
    if (pub->qos == 2 && mql_session_qos2_has(s, pub->packet_id)) {
        /* a re-sent PUBLISH before PUBREL: acknowledge again, deliver once [MQTT-4.3.3-10].
         * Its first PUBREC may have been withheld because the store failed: this one, too,
         * waits until everything the first one needed is on disk. */
        mql_proto_queue_ack(c, MQL_PUBREC, pub->packet_id, 0,
                            s->stored && c->core->store != NULL &&
                                c->cfg->store_sync != MQL_STORE_SYNC_OFF);
        return;
    }
    if (!payload_ok) {
        if (pub->qos == 0) {
            mql_proto_violation(c, MQL_E_PAYLOAD_FORMAT,
                                "payload is not valid UTF-8 but Payload Format Indicator is 1");
        } else {
            mql_notice("client.payload_format",
                       "client \"%s\" (%s): PUBLISH to \"%.*s\" refused: payload is not UTF-8 "
                       "but Payload Format Indicator is 1 [MQTT-3.3.2-4]",
                       s->client_id, c->peer, (int)pub->topic.len, pub->topic.p);
            mql_proto_queue_ack(c, pub->qos == 1 ? MQL_PUBACK : MQL_PUBREC, pub->packet_id,
                                mql_err_reason(MQL_E_PAYLOAD_FORMAT), false);
        }
        return;
    }
    uint32_t recv_max = c->cfg->max_inflight_messages ? c->cfg->max_inflight_messages : 65535;
    if (pub->qos == 2 && c->version == MQL_V5 && s->n_qos2_in >= recv_max) {
        mql_proto_violation(c, MQL_E_RECEIVE_MAX,
                            "more QoS 2 PUBLISH awaiting PUBREL than Receive "
                            "Maximum [MQTT-3.3.4-8]");
        return;
    }
    route_and_ack(c, pub);
}

void mql_flow_ack_in(mql_conn *c, uint8_t type, const mql_ack *ack)
{
    mql_session *s = c->session;
    if (type == MQL_PUBREL) {
        bool found = mql_session_qos2_remove(s, ack->packet_id);
        if (found)
            (void)mql_session_mirror_qos2(c->core, s, ack->packet_id, false);
        /* [MQTT-4.3.3-11] */
        mql_proto_send_ack(
            c, MQL_PUBCOMP, ack->packet_id,
            found || c->version != MQL_V5 ? 0 : mql_err_reason(MQL_E_PACKET_ID_NOT_FOUND));
        return;
    }
    out_msg *o = mql_session_inflight_find(s, ack->packet_id);
    if (o == NULL) {
        if (type == MQL_PUBREC && c->version == MQL_V5)
            mql_proto_send_ack(c, MQL_PUBREL, ack->packet_id,
                               mql_err_reason(MQL_E_PACKET_ID_NOT_FOUND));
        mql_debug("client.unknown_ack", "client \"%s\" (%s): %s for unknown packet id %u",
                  s->client_id, c->peer,
                  type == MQL_PUBACK   ? "PUBACK"
                  : type == MQL_PUBREC ? "PUBREC"
                                       : "PUBCOMP",
                  ack->packet_id);
        return;
    }
    /* An acknowledgement of the wrong kind for a message in flight (PUBACK for QoS 2,
     * PUBREC or PUBCOMP for QoS 1, PUBCOMP before PUBREC) breaks the flows of sections 4.3.2
     * and 4.3.3: a Protocol Error (section 4.13), not something to guess the meaning of. */
    const char *wrong = NULL;
    if (type == MQL_PUBACK && o->qos != 1)
        wrong = "PUBACK for a QoS 2 message (section 4.3.3)";
    else if (type == MQL_PUBREC && o->qos != 2)
        wrong = "PUBREC for a QoS 1 message (section 4.3.2)";
    else if (type == MQL_PUBCOMP && o->qos != 2)
        wrong = "PUBCOMP for a QoS 1 message (section 4.3.2)";
    else if (type == MQL_PUBCOMP && o->state != OUT_PUBREL_SENT)
        wrong = "PUBCOMP before PUBREC (section 4.3.3)";
    if (wrong != NULL) {
        mql_proto_violation(c, MQL_E_PROTOCOL, wrong);
        return;
    }
    switch (type) {
    case MQL_PUBACK:
        if (o->state == OUT_PUBLISH_SENT)
            mql_session_inflight_done(c->core, s, o); /* [MQTT-4.3.2-*] */
        break;
    case MQL_PUBREC:
        if (c->version == MQL_V5 && ack->reason >= 0x80) {
            mql_session_inflight_done(c->core, s, o); /* the flow ends [MQTT-4.3.3-?] */
            break;
        }
        o->state = OUT_PUBREL_SENT; /* [MQTT-4.3.3-3] */
        (void)mql_session_mirror_out_state(c->core, s, o);
        mql_proto_send_ack(c, MQL_PUBREL, o->packet_id, 0);
        break;
    case MQL_PUBCOMP:
        mql_session_inflight_done(c->core, s, o);
        break;
    }
}
