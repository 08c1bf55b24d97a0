#!/usr/bin/python3
"""End-to-end tests with the paho MQTT client (python3-paho-mqtt 1.6.1), MQTT 3.1.1.

Each test starts its own broker ($MQLITE_BIN) and checks one behaviour as a real client
library sees it: connect, subscribe, the QoS 0/1/2 round trip, retained messages, the will
on an abnormal disconnect, a persistent session (clean session 0) that keeps messages
while its client is offline, the Session Present flag, unsubscribe, takeover of a
ClientID, and a clean exit on SIGTERM.

Run: MQLITE_BIN=build/mqlite /usr/bin/python3 tests/clients/test_paho.py
(validated against mosquitto 2.0.11 with MQLITE_BIN=/usr/sbin/mosquitto).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import brokerproc  # noqa: E402
from mqttclient import BrokerTestCase  # noqa: E402


class Connect(BrokerTestCase):

    def test_connect_and_disconnect(self):
        c = self.client("paho-connect")
        rc, present = c.connect()
        self.assertEqual(rc, 0)
        self.assertFalse(present, "Session Present with clean session 1 [MQTT-3.2.2-1]")
        c.disconnect()

    def test_generated_client_id(self):
        # An empty ClientID with clean session 1 gets one from the server [MQTT-3.1.3-6]
        c = self.client("")
        rc, present = c.connect()
        self.assertEqual(rc, 0)
        self.assertFalse(present)

    def test_takeover_closes_the_old_connection(self):
        # A second CONNECT with the same ClientID takes over [MQTT-3.1.4-2]
        old = self.connected("paho-takeover")
        new = self.connected("paho-takeover")
        self.assertTrue(old.disconnected.wait(5), "old connection still open after takeover")
        new.subscribe(self.t("x"), 1)
        new.publish(self.t("x"), b"still works", 1)
        self.assertEqual(new.expect(1)[0].payload, b"still works")


class RoundTrip(BrokerTestCase):

    def test_granted_qos(self):
        c = self.connected("paho-granted")
        granted = c.subscribe([(self.t("q0"), 0), (self.t("q1"), 1), (self.t("q2"), 2)])
        self.assertEqual(granted, [0, 1, 2])

    def test_qos_0_1_2(self):
        c = self.connected("paho-roundtrip")
        c.subscribe(self.t("#"), 2)
        for qos in (0, 1, 2):
            c.publish(self.t("q%d" % qos), b"payload %d" % qos, qos)
            m = c.expect(1)[0]
            self.assertEqual((m.topic, m.payload, m.qos, m.retain),
                             (self.t("q%d" % qos), b"payload %d" % qos, qos, False))

    def test_qos_is_downgraded_to_the_subscription(self):
        # Delivered QoS is the minimum of the published and granted QoS [MQTT-3.8.4-6]
        sub = self.connected("paho-sub-q1")
        sub.subscribe(self.t("x"), 1)
        pub = self.connected("paho-pub-q2")
        pub.publish(self.t("x"), b"two", 2)
        m = sub.expect(1)[0]
        self.assertEqual((m.payload, m.qos), (b"two", 1))

    def test_between_two_clients(self):
        sub = self.connected("paho-sub")
        sub.subscribe(self.t("+", "temp"), 2)
        pub = self.connected("paho-pub")
        pub.publish(self.t("room1", "temp"), b"21.5", 1)
        pub.publish(self.t("room1", "humidity"), b"40", 1)  # does not match
        pub.publish(self.t("room2", "temp"), b"19.0", 2)
        got = sub.expect(2)
        self.assertEqual([(m.topic, m.payload) for m in got],
                         [(self.t("room1", "temp"), b"21.5"), (self.t("room2", "temp"), b"19.0")])
        self.assertEqual(sub.collect(), [])

    def test_order_is_kept(self):
        # Messages from one publisher at one QoS arrive in order [MQTT-4.6.0-5]
        sub = self.connected("paho-order-sub")
        sub.subscribe(self.t("n"), 1)
        pub = self.connected("paho-order-pub")
        for i in range(50):
            pub.publish(self.t("n"), b"%d" % i, 1, wait=False)
        got = sub.expect(50)
        self.assertEqual([m.payload for m in got], [b"%d" % i for i in range(50)])

    def test_large_and_empty_payload(self):
        c = self.connected("paho-sizes")
        c.subscribe(self.t("x"), 1)
        big = bytes(range(256)) * 1024  # 256 KiB, every byte value
        c.publish(self.t("x"), big, 1)
        c.publish(self.t("x"), b"", 1)
        got = c.expect(2, timeout=10)
        self.assertEqual(got[0].payload, big)
        self.assertEqual(got[1].payload, b"")


class Retained(BrokerTestCase):

    def test_new_subscriber_gets_retained(self):
        pub = self.connected("paho-ret-pub")
        pub.publish(self.t("state"), b"on", 1, retain=True)
        sub = self.connected("paho-ret-sub")
        sub.subscribe(self.t("state"), 1)
        m = sub.expect(1)[0]
        self.assertEqual((m.payload, m.qos, m.retain), (b"on", 1, True),
                         "retained message on subscribe has RETAIN 1 [MQTT-3.3.1-8]")

    def test_live_delivery_has_retain_0(self):
        # [MQTT-3.3.1-9]: a retained message sent to an existing subscription has RETAIN 0
        sub = self.connected("paho-ret-live")
        sub.subscribe(self.t("state"), 1)
        pub = self.connected("paho-ret-live-pub")
        pub.publish(self.t("state"), b"on", 1, retain=True)
        m = sub.expect(1)[0]
        self.assertEqual((m.payload, m.retain), (b"on", False))

    def test_replace_and_clear(self):
        pub = self.connected("paho-ret-replace")
        pub.publish(self.t("state"), b"one", 1, retain=True)
        pub.publish(self.t("state"), b"two", 1, retain=True)
        sub = self.connected("paho-ret-replace-sub")
        sub.subscribe(self.t("state"), 1)
        got = sub.expect(1)
        self.assertEqual(got[0].payload, b"two", "only the last retained message is kept")
        self.assertEqual(sub.collect(), [])
        # An empty retained payload removes it [MQTT-3.3.1-10]
        pub.publish(self.t("state"), b"", 1, retain=True)
        sub.expect(1)  # the live delivery of the empty message
        late = self.connected("paho-ret-late")
        late.subscribe(self.t("#"), 1)
        self.assertEqual(late.collect(), [])

    def test_retained_qos_is_downgraded(self):
        pub = self.connected("paho-ret-qos")
        pub.publish(self.t("a"), b"q2", 2, retain=True)
        sub = self.connected("paho-ret-qos-sub")
        sub.subscribe(self.t("a"), 0)
        m = sub.expect(1)[0]
        self.assertEqual((m.payload, m.qos, m.retain), (b"q2", 0, True))

    def test_wildcard_gets_every_retained(self):
        pub = self.connected("paho-ret-wild")
        for i in range(5):
            pub.publish(self.t("dev%d" % i, "status"), b"up %d" % i, 1, retain=True)
        sub = self.connected("paho-ret-wild-sub")
        sub.subscribe(self.t("+", "status"), 1)
        got = sub.expect(5)
        self.assertEqual(sorted(m.payload for m in got), [b"up %d" % i for i in range(5)])
        self.assertTrue(all(m.retain for m in got))


class Will(BrokerTestCase):

    def test_will_on_abnormal_disconnect(self):
        sub = self.connected("paho-will-sub")
        sub.subscribe(self.t("will"), 2)
        dying = self.connected("paho-will", will=(self.t("will"), b"gone", 1, False))
        dying.drop()  # TCP close without DISCONNECT [MQTT-3.1.2-8]
        m = sub.expect(1)[0]
        self.assertEqual((m.topic, m.payload, m.qos), (self.t("will"), b"gone", 1))

    def test_no_will_after_disconnect(self):
        # DISCONNECT discards the will [MQTT-3.1.2-10]
        sub = self.connected("paho-nowill-sub")
        sub.subscribe(self.t("will"), 2)
        leaving = self.connected("paho-nowill", will=(self.t("will"), b"gone", 1, False))
        leaving.disconnect()
        self.assertEqual(sub.collect(quiet=1.0), [])

    def test_retained_will(self):
        dying = self.connected("paho-will-ret", will=(self.t("status"), b"offline", 1, True))
        dying.drop()
        time.sleep(0.5)
        late = self.connected("paho-will-ret-sub")
        late.subscribe(self.t("status"), 1)
        m = late.expect(1)[0]
        self.assertEqual((m.payload, m.retain), (b"offline", True))


class Session(BrokerTestCase):

    def test_session_present_flag(self):
        # [MQTT-3.2.2-2] / [MQTT-3.2.2-3]
        c = self.client("paho-present", clean_session=False)
        self.assertEqual(c.connect(), (0, False), "first connection: no session yet")
        c.disconnect()
        c = self.client("paho-present", clean_session=False)
        self.assertEqual(c.connect(), (0, True), "the session was kept")
        c.disconnect()
        c = self.client("paho-present", clean_session=True)
        self.assertEqual(c.connect(), (0, False), "clean session 1 never resumes")
        c.disconnect()
        c = self.client("paho-present", clean_session=False)
        self.assertEqual(c.connect(), (0, False), "clean session 1 discarded the session")

    def test_offline_messages_are_queued(self):
        c = self.client("paho-offline", clean_session=False)
        c.connect()
        c.subscribe(self.t("#"), 2)
        c.disconnect()
        pub = self.connected("paho-offline-pub")
        pub.publish(self.t("q1"), b"one", 1)
        pub.publish(self.t("q2"), b"two", 2)
        c = self.client("paho-offline", clean_session=False)
        self.assertEqual(c.connect(), (0, True))
        got = c.expect(2)
        self.assertEqual([(m.topic, m.payload, m.qos) for m in got],
                         [(self.t("q1"), b"one", 1), (self.t("q2"), b"two", 2)])

    def test_subscriptions_survive_reconnect(self):
        c = self.client("paho-subs-kept", clean_session=False)
        c.connect()
        c.subscribe(self.t("x"), 1)
        c.disconnect()
        c = self.client("paho-subs-kept", clean_session=False)
        self.assertEqual(c.connect(), (0, True))
        pub = self.connected("paho-subs-kept-pub")
        pub.publish(self.t("x"), b"live", 1)
        self.assertEqual(c.expect(1)[0].payload, b"live")

    def test_clean_session_forgets_subscriptions(self):
        c = self.client("paho-clean", clean_session=False)
        c.connect()
        c.subscribe(self.t("x"), 1)
        c.disconnect()
        c = self.client("paho-clean", clean_session=True)
        c.connect()
        pub = self.connected("paho-clean-pub")
        pub.publish(self.t("x"), b"nobody", 1)
        self.assertEqual(c.collect(), [])


class Unsubscribe(BrokerTestCase):

    def test_unsubscribe_stops_delivery(self):
        c = self.connected("paho-unsub")
        c.subscribe(self.t("x"), 1)
        c.publish(self.t("x"), b"before", 1)
        self.assertEqual(c.expect(1)[0].payload, b"before")
        c.unsubscribe(self.t("x"))
        c.publish(self.t("x"), b"after", 1)
        self.assertEqual(c.collect(), [])

    def test_unsubscribe_one_of_two(self):
        c = self.connected("paho-unsub-two")
        c.subscribe([(self.t("a"), 1), (self.t("b"), 1)])
        c.unsubscribe(self.t("a"))
        c.publish(self.t("a"), b"a", 1)
        c.publish(self.t("b"), b"b", 1)
        got = c.expect(1)
        self.assertEqual(got[0].payload, b"b")
        self.assertEqual(c.collect(), [])

    def test_unsubscribe_unknown_filter_is_acknowledged(self):
        # UNSUBACK even when nothing matched [MQTT-3.10.4-5]
        c = self.connected("paho-unsub-none")
        c.unsubscribe(self.t("never"))


class Shutdown(BrokerTestCase):

    def test_sigterm_exits_cleanly(self):
        self.connected("paho-shutdown")
        status = self.broker.stop()
        self.assertFalse(self.broker.killed)
        self.assertEqual(status, 0, "exit status after SIGTERM with a client connected")


if __name__ == "__main__":
    brokerproc.run_tests()
