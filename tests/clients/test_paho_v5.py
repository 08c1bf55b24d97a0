#!/usr/bin/python3
"""End-to-end tests with the paho MQTT client (python3-paho-mqtt 1.6.1) in MQTTv5 mode.

Session resumption governed by Session Expiry Interval, a session that expires, a
request/response exchange built on the Response Information the broker hands out, user
properties kept in order, and a 3.1.1 and a 5.0 subscriber on one topic.

Run: MQLITE_BIN=build/mqlite /usr/bin/python3 tests/clients/test_paho_v5.py
"""

import os
import sys
import threading
import time
import unittest

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import brokerproc  # noqa: E402

WAIT = 5.0


class V5Client:
    """A paho MQTTv5 client with bounded waits for CONNACK and messages."""

    def __init__(self, port, client_id, version=mqtt.MQTTv5):
        self.port = port
        self.c = mqtt.Client(client_id=client_id, protocol=version)
        self.version = version
        self.connected = threading.Event()
        self.flags = {}
        self.connack_props = None
        self.rc = None
        self.msgs = []
        self.cv = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.flags, self.rc, self.connack_props = flags, rc, properties
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.cv:
            self.msgs.append(msg)
            self.cv.notify_all()

    def connect(self, clean_start=True, expiry=None, request_response=False):
        kw = {}
        if self.version == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
            if request_response:
                props.RequestResponseInformation = 1
            kw = {"clean_start": clean_start, "properties": props}
        self.c.connect("127.0.0.1", self.port, 60, **kw)
        self.c.loop_start()
        if not self.connected.wait(WAIT):
            raise AssertionError("no CONNACK")
        return self.flags.get("session present", 0)

    def expect(self, n, timeout=WAIT):
        end = time.monotonic() + timeout
        with self.cv:
            while len(self.msgs) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"got {len(self.msgs)} of {n} messages")
                self.cv.wait(left)
            return list(self.msgs[:n])

    def stop(self, disconnect=True):
        if disconnect:
            self.c.disconnect()
        self.c.loop_stop()


class PahoV5(unittest.TestCase):

    def setUp(self):
        self.broker = brokerproc.Broker()
        self.broker.start()
        self.port = self.broker.port
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            try:
                c.stop()
            except Exception:
                pass
        self.broker.stop()

    def client(self, cid, version=mqtt.MQTTv5):
        c = V5Client(self.port, cid, version)
        self.clients.append(c)
        return c

    def test_session_resumed_within_expiry(self):
        # Session Expiry 60: the session and a message queued while away survive
        # [MQTT-3.1.2-23] [MQTT-3.2.2-3]
        s = self.client("v5-resume")
        self.assertEqual(s.connect(clean_start=False, expiry=60), 0)
        s.c.subscribe("v5r/t", qos=1)
        time.sleep(0.3)
        s.stop()
        p = self.client("v5-resume-pub")
        p.connect()
        p.c.publish("v5r/t", b"while away", qos=1).wait_for_publish(WAIT)
        s2 = self.client("v5-resume")
        self.assertEqual(s2.connect(clean_start=False, expiry=60), 1)
        self.assertEqual(s2.expect(1)[0].payload, b"while away")

    def test_session_gone_after_expiry(self):
        s = self.client("v5-expire")
        s.connect(clean_start=False, expiry=1)
        s.c.subscribe("v5e/t", qos=1)
        time.sleep(0.3)
        s.stop()
        time.sleep(2.5)
        s2 = self.client("v5-expire")
        self.assertEqual(s2.connect(clean_start=False, expiry=1), 0,
                         "session resumed after its expiry interval")

    def test_request_response(self):
        # The requester builds its Response Topic from Response Information; the responder
        # answers there with the Correlation Data [MQTT-3.3.2-15] (section 4.10)
        resp = self.client("v5-responder")
        resp.connect()

        def answer(client, userdata, msg):
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData
            client.publish(msg.properties.ResponseTopic, b"pong:" + msg.payload, qos=1,
                           properties=props)
        resp.c.on_message = answer
        resp.c.subscribe("v5req/ping", qos=1)
        req = self.client("v5-requester")
        req.connect(request_response=True)
        info = req.connack_props.ResponseInformation
        self.assertEqual(info, "response/v5-requester")
        rtopic = info + "/ping"
        req.c.subscribe(rtopic, qos=1)
        time.sleep(0.3)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = rtopic
        props.CorrelationData = b"\x00\x01corr"
        req.c.publish("v5req/ping", b"1", qos=1, properties=props)
        m = req.expect(1)[0]
        self.assertEqual(m.payload, b"pong:1")
        self.assertEqual(m.properties.CorrelationData, b"\x00\x01corr")

    def test_user_properties_in_order(self):
        sub = self.client("v5-up-sub")
        sub.connect()
        sub.c.subscribe("v5up/t", qos=1)
        time.sleep(0.3)
        pub = self.client("v5-up-pub")
        pub.connect()
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("k", "1"), ("a", "2"), ("k", "3")]
        pub.c.publish("v5up/t", b"x", qos=1, properties=props)
        m = sub.expect(1)[0]
        self.assertEqual(m.properties.UserProperty, [("k", "1"), ("a", "2"), ("k", "3")])

    def test_mixed_versions_on_one_topic(self):
        old = self.client("v311-sub", mqtt.MQTTv311)
        old.connect()
        old.c.subscribe("mix/t", qos=1)
        new = self.client("v5-sub")
        new.connect()
        new.c.subscribe("mix/t", qos=1)
        time.sleep(0.3)
        pub = self.client("v5-mix-pub")
        pub.connect()
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "text/plain"
        pub.c.publish("mix/t", b"both", qos=1, properties=props)
        self.assertEqual(old.expect(1)[0].payload, b"both")
        m = new.expect(1)[0]
        self.assertEqual(m.payload, b"both")
        self.assertEqual(m.properties.ContentType, "text/plain")

    def test_receive_maximum_exceeded_disconnect_is_read(self):
        """One QoS 2 PUBLISH more than the broker's Receive Maximum, sent at once, with paho
        answering the PUBRECs (PUBREL) as they come: the broker ends the connection with
        DISCONNECT 0x93 [MQTT-3.3.4-9], and the client must read it, not see its sends fail
        on a reset connection. 20 runs in a row: the race this guards against was rare."""
        for run in range(20):
            got = {}
            c = mqtt.Client(client_id="flow-%d" % run, protocol=mqtt.MQTTv5)
            c.max_inflight_messages_set(65535)  # paho must not hold back what we send
            c.on_connect = lambda cl, u, f, rc, p=None: got.setdefault("connack", p)
            c.on_disconnect = lambda cl, u, rc, p=None: got.setdefault("disconnect", rc)
            c.connect("127.0.0.1", self.port, 60, clean_start=True)
            end = time.monotonic() + WAIT
            while "connack" not in got and time.monotonic() < end:
                c.loop(0.05)
            self.assertIn("connack", got, "run %d: no CONNACK" % run)
            receive_max = getattr(got["connack"], "ReceiveMaximum", 65535)
            for i in range(receive_max + 1):
                c.publish("flow/t", "message %d" % i, qos=2)
            while "disconnect" not in got and time.monotonic() < end:
                c.loop(0.05)
            rc = got.get("disconnect")
            self.assertEqual(getattr(rc, "value", rc), 0x93,
                             "run %d: the client saw %r, not the broker's DISCONNECT 0x93 "
                             "(Receive Maximum exceeded)" % (run, rc))
            c.socket() and c.socket().close()


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed - len(result.skipped)} passed, {failed} failed")
    sys.exit(1 if failed else 0)
