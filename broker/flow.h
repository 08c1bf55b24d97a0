/*
 * flow.h - the QoS flows both roles of an endpoint share: PUBLISH in, acknowledgements in.
 *
 * Locking: called under the core lock (broker->lock), from a role's packet handler.
 */
#ifndef MQL_FLOW_H
#define MQL_FLOW_H

#include <stdint.h>

#include "codec.h"
#include "proto.h"

/* mql_flow_publish_in: a PUBLISH from c's peer (for a bridge, its topic already mapped to
 * the local one): checked (Subscription Identifier, topic alias, Maximum QoS, Retain
 * Available; the write ACL for a client), routed and retained, and acknowledged by QoS
 * (PUBACK / PUBREC, after the store's commit when it must be durable); a re-sent QoS 2
 * PUBLISH is acknowledged again and not routed twice [MQTT-4.3.3-10]. pub's topic may be
 * rewritten (alias). A violation closes c. */
void mql_flow_publish_in(mql_conn *c, mql_publish *pub);
/* mql_flow_ack_in: PUBACK, PUBREC, PUBREL or PUBCOMP from c's peer: advances the flow of
 * the in-flight message (or of an inbound QoS 2 id for PUBREL) and frees what is done. An
 * ack of the wrong kind closes c (a Protocol Error). */
void mql_flow_ack_in(mql_conn *c, uint8_t type, const mql_ack *ack);

#endif
