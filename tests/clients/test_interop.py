#!/usr/bin/python3
"""MQTT 3.1.1 interoperability checks, modelled on the behaviours that the Eclipse Paho
testing project's client interoperability suite checks (our own tests, written with the
paho python client and raw sockets):

  basic          connect, subscribe, publish QoS 0/1/2 and get all three back; a second
                 CONNECT on one connection and a wrong protocol name are refused
  retained       retained messages at QoS 0/1/2 arrive on a wildcard subscription, and
                 empty retained payloads remove them
  offline queue  a clean-session-0 client gets the QoS 1/2 messages (QoS 0 optional)
                 published while it was away
  will           the will is published when a client's connection drops
  zero-length id empty ClientID: refused with clean session 0, accepted with 1
  overlapping    two matching subscriptions: one message at the highest QoS, or one per
                 subscription
  keepalive      a silent client is disconnected after 1.5 x keep alive and its will sent
  redelivery     unacknowledged QoS 1/2 messages are sent again after reconnecting
  subscribe fail a refused subscription gets return code 0x80 (needs an ACL: see below)
  $ topics       filters starting with a wildcard do not match topics starting with '$'

The subscribe failure tests need a broker configured to refuse one filter: mosquitto is
given its dynamic security plugin; mqlite an `acl_file`, when MQLITE_CLIENTS_ACL=1
(skipped otherwise).

Run: MQLITE_BIN=build/mqlite /usr/bin/python3 tests/clients/test_interop.py
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import brokerproc  # noqa: E402
import mqttclient  # noqa: E402
from mqttclient import BrokerTestCase, connect_packet  # noqa: E402


class Interop(BrokerTestCase):

    def names(self):
        """The five topics and seven filters of the suite, under this test's prefix."""
        p = self.prefix
        topics = [p + "/" + t for t in ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
        filters = [p + "/" + f for f in ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]
        return topics, filters

    def test_basic(self):
        topics, _ = self.names()
        c = self.connected("myclientid")
        c.disconnect()
        c = self.connected("myclientid")
        c.subscribe(topics[0], 2)
        c.publish(topics[0], b"qos 0", 0)
        c.publish(topics[0], b"qos 1", 1)
        c.publish(topics[0], b"qos 2", 2)
        got = c.expect(3)
        self.assertEqual(sorted((m.payload, m.qos) for m in got),
                         [(b"qos 0", 0), (b"qos 1", 1), (b"qos 2", 2)])

    def test_second_connect_is_a_protocol_violation(self):
        # [MQTT-3.1.0-2]: a second CONNECT is a protocol violation; the server disconnects
        raw = self.raw()
        raw.send(connect_packet("myclientid"))
        ptype, _, body = raw.read_packet()
        self.assertEqual((ptype, body), (mqttclient.CONNACK, b"\x00\x00"))
        raw.send(connect_packet("myclientid"))
        self.assertTrue(raw.wait_closed(), "connection still open after a second CONNECT")

    def test_wrong_protocol_name_is_refused(self):
        # [MQTT-3.1.2-1]: with another protocol name the server MAY disconnect; it must
        # not accept the connection.
        raw = self.raw()
        raw.send(connect_packet("myclientid", proto_name="hj"))
        pkt = raw.read_packet()
        if pkt is not None:
            ptype, _, body = pkt
            self.assertEqual(ptype, mqttclient.CONNACK)
            self.assertNotEqual(body[1:2], b"\x00", "CONNECT with protocol name 'hj' accepted")
            self.assertTrue(raw.wait_closed())

    def test_retained_messages(self):
        topics, filters = self.names()
        c = self.connected("myclientid")
        c.publish(topics[1], b"qos 0", 0, retain=True)
        c.publish(topics[2], b"qos 1", 1, retain=True)
        c.publish(topics[3], b"qos 2", 2, retain=True)
        time.sleep(0.2)  # the QoS 0 publish has no acknowledgement to wait for
        c.subscribe(filters[5], 2)
        got = c.expect(3)
        self.assertEqual(sorted((m.topic, m.payload, m.qos, m.retain) for m in got),
                         [(topics[2], b"qos 1", 1, True), (topics[1], b"qos 0", 0, True),
                          (topics[3], b"qos 2", 2, True)])
        c.disconnect()

        c = self.connected("myclientid")
        c.publish(topics[1], b"", 0, retain=True)
        c.publish(topics[2], b"", 1, retain=True)
        c.publish(topics[3], b"", 2, retain=True)
        time.sleep(0.2)
        c.subscribe(filters[5], 2)
        self.assertEqual(c.collect(), [], "retained messages left after empty payloads")

    def test_offline_message_queueing(self):
        topics, filters = self.names()
        a = self.client("myclientid", clean_session=False)
        a.connect()
        a.subscribe(filters[5], 2)
        a.disconnect()
        b = self.connected("myclientid2")
        b.publish(topics[1], b"qos 0", 0)
        b.publish(topics[2], b"qos 1", 1)
        b.publish(topics[3], b"qos 2", 2)
        time.sleep(0.2)
        b.disconnect()
        a = self.client("myclientid", clean_session=False)
        a.connect()
        got = a.collect()
        payloads = sorted(m.payload for m in got)
        self.assertIn(payloads, ([b"qos 1", b"qos 2"], [b"qos 0", b"qos 1", b"qos 2"]))
        print("  (this broker %s QoS 0 messages for offline clients)"
              % ("queues" if len(got) == 3 else "does not queue"))

    def test_will_message(self):
        topics, _ = self.names()
        a = self.client("myclientid", keepalive=2,
                        will=(topics[2], b"client not disconnected", 0, False))
        self.assertEqual(a.connect(), (0, False))
        b = self.client("myclientid2", clean_session=False)
        b.connect()
        b.subscribe(topics[2], 2)
        time.sleep(0.1)
        a.drop()
        got = b.expect(1)
        self.assertEqual(got[0].payload, b"client not disconnected")
        self.assertEqual(b.collect(), [])

    def test_zero_length_clientid(self):
        # [MQTT-3.1.3-8]: empty ClientID with clean session 0 -> CONNACK 0x02, close
        raw = self.raw()
        raw.send(connect_packet("", clean=False))
        ptype, _, body = raw.read_packet()
        self.assertEqual((ptype, body), (mqttclient.CONNACK, b"\x00\x02"))
        self.assertTrue(raw.wait_closed())
        # [MQTT-3.1.3-6]: with clean session 1 the server assigns one
        c = self.client("", clean_session=True)
        self.assertEqual(c.connect(), (0, False))

    @brokerproc.mosquitto_bug("mosquitto 2.0 delivers one copy at the QoS of the first "
                              "matching subscription, not the highest [MQTT-3.3.5-1]")
    def test_overlapping_subscriptions(self):
        topics, filters = self.names()
        a = self.connected("myclientid")
        a.subscribe([(filters[6], 2), (filters[0], 1)])
        a.publish(topics[3], b"overlapping topic filters", 2)
        got = a.collect(quiet=1.0)
        qos = sorted(m.qos for m in got)
        # [MQTT-3.3.5-1]: at the maximum QoS of the matching subscriptions, optionally
        # plus one copy per further subscription
        self.assertIn(qos, ([2], [1, 2]), "one message at QoS 2, or one per subscription")
        print("  (this broker sends %s)" % ("one message for all overlapping subscriptions"
                                            if len(got) == 1 else "one message per subscription"))

    def test_keepalive(self):
        # [MQTT-3.1.2-24]: no packet within 1.5 x Keep Alive -> the server disconnects;
        # the will is then published [MQTT-3.1.2-8]
        topics, _ = self.names()
        b = self.client("myclientid2", keepalive=0)
        self.assertEqual(b.connect(), (0, False))
        b.subscribe(topics[4], 2)
        raw = self.raw()  # a client that never sends PINGREQ
        raw.send(connect_packet("myclientid", keepalive=2,
                                will=(topics[4], b"keepalive expiry", 0, False)))
        self.assertEqual(raw.read_packet()[0], mqttclient.CONNACK)
        start = time.monotonic()
        self.assertTrue(raw.wait_closed(timeout=6), "silent client not disconnected in 6 s")
        waited = time.monotonic() - start
        self.assertGreaterEqual(waited, 2.0, "disconnected before the keep alive elapsed")
        got = b.expect(1)
        self.assertEqual(got[0].payload, b"keepalive expiry")

    def test_redelivery_on_reconnect(self):
        # [MQTT-4.4.0-1]: on reconnect with clean session 0 the server resends
        # unacknowledged PUBLISH packets (with DUP 1)
        topics, filters = self.names()
        b = self.client("myclientid2", clean_session=False)
        b.connect()
        b.subscribe(filters[6], 2)
        b.stop_loop()  # what arrives now is never acknowledged
        pub = self.connected("myclientid3")
        pub.publish(topics[1], b"qos 1", 1)
        pub.publish(topics[3], b"qos 2", 2)
        time.sleep(0.5)
        self.assertEqual(b.collect(quiet=0.1), [])
        b.drop()
        b = self.client("myclientid2", clean_session=False)
        self.assertEqual(b.connect(), (0, True))
        got = b.expect(2)
        self.assertEqual(sorted((m.topic, m.payload, m.qos) for m in got),
                         [(topics[1], b"qos 1", 1), (topics[3], b"qos 2", 2)])
        self.assertTrue(all(m.dup for m in got), "resent PUBLISH has DUP 1 [MQTT-3.3.1-1]")
        self.assertEqual(b.collect(), [])

    def test_dollar_topics(self):
        # [MQTT-4.7.2-1]: filters starting with a wildcard do not match topics starting
        # with '$'; a filter spelling the '$' level out does.
        name = "$" + self.prefix + "/TopicA"
        b = self.connected("myclientid2", keepalive=0)
        b.subscribe([("+/TopicA", 2), ("#", 2), ("+/+", 2)])
        time.sleep(0.2)
        b.collect(quiet=0.2)
        b.publish(name, b"dollar", 1)
        self.assertEqual(b.collect(), [], "a wildcard matched a topic starting with '$'")
        b.subscribe("$" + self.prefix + "/+", 1)
        b.publish(name, b"dollar", 1)
        self.assertEqual(b.expect(1)[0].topic, name)


DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"

# mosquitto's acl_file cannot refuse a SUBSCRIBE (it filters at delivery and grants the
# QoS), so mosquitto is checked with its dynamic security plugin: anonymous clients may do
# everything except subscribe to 'nosubscribe'.
DYNSEC_JSON = """{
  "defaultACLAccess": {"publishClientSend": true, "publishClientReceive": true,
                       "subscribe": true, "unsubscribe": true},
  "clients": [],
  "groups": [{"groupname": "anonymous", "roles": [{"rolename": "nosubscribe"}]}],
  "roles": [{"rolename": "nosubscribe",
             "acls": [{"acltype": "subscribePattern", "topic": "nosubscribe",
                       "priority": 0, "allow": false}]}],
  "anonymousGroup": "anonymous"
}
"""

# mqlite: an acl_file in mosquitto's syntax; a filter with no read access is refused at
# SUBSCRIBE time.
ACL_FILE = "topic deny nosubscribe\ntopic readwrite t_test_subscribe_failure_v311/#\n" \
           "topic readwrite t_test_subscribe_failure_v5/#\n"


def refusal_config():
    """(lines, files) that make the broker refuse SUBSCRIBE to 'nosubscribe', or None."""
    if brokerproc.is_mosquitto():
        if os.path.exists(DYNSEC_PLUGIN):
            return (["plugin " + DYNSEC_PLUGIN, "plugin_opt_config_file {dir}/dynsec.json"],
                    {"dynsec.json": DYNSEC_JSON})
        return None
    if os.environ.get("MQLITE_CLIENTS_ACL") == "1":
        return ["acl_file {dir}/acl"], {"acl": ACL_FILE}
    return None


REFUSAL = refusal_config()


@unittest.skipIf(REFUSAL is None, "needs a broker that refuses a filter: with mqlite, "
                 "acl_file support (set MQLITE_CLIENTS_ACL=1)")
class SubscribeFailure(BrokerTestCase):
    """A broker configured to refuse SUBSCRIBE to the filter 'nosubscribe'."""

    broker_lines, broker_files = REFUSAL or ((), None)

    def test_subscribe_failure_v311(self):
        # [MQTT-3.9.3-2]: 0x80 is the SUBACK return code for a failure; the other filter
        # of the same SUBSCRIBE is still granted
        a = self.connected("myclientid")
        granted = a.subscribe([("nosubscribe", 2), (self.t("ok"), 1)])
        self.assertEqual(granted, [0x80, 1])

    def test_subscribe_failure_v5(self):
        # MQTT 5: reason code 0x87 Not authorized
        a = self.connected("myclientid", protocol=mqttclient.paho.MQTTv5)
        granted = a.subscribe([("nosubscribe", 2), (self.t("ok"), 1)])
        self.assertEqual(granted, [0x87, 1])


if __name__ == "__main__":
    brokerproc.run_tests()
