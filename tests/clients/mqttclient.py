"""MQTT clients for the client tests: a paho wrapper with bounded waits, and raw packets.

Client wraps paho.mqtt.client.Client (python3-paho-mqtt 1.6.1) with a background network
loop, records every message it receives, and turns paho's callbacks into calls that wait
a bounded time: connect() returns the CONNACK, subscribe() the granted QoS list,
publish() returns once the QoS 1/2 exchange is complete. Automatic reconnection is off,
so a connection the broker closes stays closed.

RawClient speaks MQTT 3.1.1 bytes over a plain socket, for what paho refuses to do or
does by itself: a second CONNECT, a wrong protocol name, an empty ClientID with
clean session 0, a client that never sends PINGREQ.

Also the base class BrokerTestCase: a fresh broker for each test, and the broker's log
printed under a failed test.
"""

import collections
import queue
import socket
import struct
import sys
import threading
import time
import unittest

import paho.mqtt.client as paho

import brokerproc

WAIT = 5.0  # the longest any single expected event may take

Message = collections.namedtuple("Message", "topic payload qos retain dup")


class Client:
    """A paho client on 127.0.0.1:port with a background loop."""

    def __init__(self, port, client_id, clean_session=True, protocol=paho.MQTTv311,
                 keepalive=60, will=None):
        """will: (topic, payload, qos, retain) or None."""
        self.port = port
        self.keepalive = keepalive
        self.protocol = protocol
        if protocol == paho.MQTTv5:
            self.paho = paho.Client(client_id=client_id, protocol=protocol,
                                    reconnect_on_failure=False)
            self.clean_session = clean_session
        else:
            self.paho = paho.Client(client_id=client_id, clean_session=clean_session,
                                    protocol=protocol, reconnect_on_failure=False)
        if will is not None:
            self.paho.will_set(*will)
        self.messages = queue.Queue()
        self._lock = threading.Lock()
        self._connack = queue.Queue()
        self._acks = {}  # mid -> threading.Event, for SUBACK/UNSUBACK
        self._granted = {}
        self.disconnected = threading.Event()
        self.paho.on_connect = self._on_connect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_unsubscribe = self._on_unsubscribe
        self.paho.on_disconnect = self._on_disconnect
        self._looping = False

    # ---- paho callbacks (network thread) ----

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self._connack.put((rc, bool(flags.get("session present", 0))))

    def _on_message(self, client, userdata, msg):
        self.messages.put(Message(msg.topic, msg.payload, msg.qos, bool(msg.retain),
                                  bool(msg.dup)))

    def _event(self, mid):
        with self._lock:
            return self._acks.setdefault(mid, threading.Event())

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        with self._lock:
            self._granted[mid] = [getattr(g, "value", g) for g in granted]
        self._event(mid).set()

    def _on_unsubscribe(self, client, userdata, mid, *rest):
        self._event(mid).set()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.disconnected.set()

    # ---- operations ----

    def connect(self, timeout=WAIT):
        """Connect and wait for CONNACK. Returns (return code, session present), or
        (None, None) when the broker closed the connection without a CONNACK."""
        if self.protocol == paho.MQTTv5:
            self.paho.connect(brokerproc.HOST, self.port, keepalive=self.keepalive,
                              clean_start=self.clean_session)
        else:
            self.paho.connect(brokerproc.HOST, self.port, keepalive=self.keepalive)
        self.paho.loop_start()
        self._looping = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rc, present = self._connack.get(timeout=0.05)
                return getattr(rc, "value", rc), present
            except queue.Empty:
                if self.disconnected.is_set():
                    return None, None
        raise AssertionError("no CONNACK within %.0f s" % timeout)

    def subscribe(self, topics, qos=0, timeout=WAIT):
        """Subscribe to one filter or a list of (filter, qos); returns the granted list."""
        if isinstance(topics, str):
            rc, mid = self.paho.subscribe(topics, qos)
        else:
            rc, mid = self.paho.subscribe(list(topics))
        assert rc == paho.MQTT_ERR_SUCCESS, "subscribe not sent: %s" % paho.error_string(rc)
        if not self._event(mid).wait(timeout):
            raise AssertionError("no SUBACK within %.0f s" % timeout)
        with self._lock:
            return self._granted[mid]

    def unsubscribe(self, topics, timeout=WAIT):
        rc, mid = self.paho.unsubscribe(topics)
        assert rc == paho.MQTT_ERR_SUCCESS, "unsubscribe not sent: %s" % paho.error_string(rc)
        if not self._event(mid).wait(timeout):
            raise AssertionError("no UNSUBACK within %.0f s" % timeout)

    def publish(self, topic, payload, qos=0, retain=False, timeout=WAIT, wait=True):
        """Publish; unless wait is False, for QoS 1/2 wait until PUBACK / PUBCOMP came."""
        info = self.paho.publish(topic, payload, qos, retain)
        assert info.rc == paho.MQTT_ERR_SUCCESS, "publish failed: %s" % paho.error_string(info.rc)
        if self._looping and wait:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise AssertionError("publish of %r (QoS %d) not completed within %.0f s"
                                     % (topic, qos, timeout))

    def expect(self, n, timeout=WAIT):
        """Wait for n messages; returns them (fails if fewer arrive in time)."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("received %d of %d messages within %.0f s: %r"
                                     % (len(got), n, timeout, got))
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                pass
        return got

    def collect(self, quiet=0.5):
        """Every message that arrives until none came for `quiet` seconds (at most WAIT)."""
        got = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                break
        return got

    def disconnect(self):
        """Send DISCONNECT and stop the loop."""
        if self._looping:
            self.paho.disconnect()
            self.disconnected.wait(WAIT)
            self.paho.loop_stop()
            self._looping = False

    def drop(self):
        """Close the TCP connection without DISCONNECT (an abnormal disconnect)."""
        if self._looping:
            self.paho.loop_stop()
            self._looping = False
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop_loop(self):
        """Stop processing the network: incoming packets stay unread and unacknowledged."""
        if self._looping:
            self.paho.loop_stop()
            self._looping = False


# ---- raw MQTT 3.1.1 -------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    1, 2, 3, 8, 9, 12, 13, 14)


def _string(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _remaining_length(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + _remaining_length(len(body)) + body


def connect_packet(client_id, clean=True, keepalive=60, proto_name="MQTT", level=4,
                   will=None):
    """A CONNECT packet; will is (topic, payload, qos, retain) or None."""
    flags = 0x02 if clean else 0
    payload = _string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    body = _string(proto_name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, body + payload)


class RawClient:
    """A socket speaking raw MQTT to 127.0.0.1:port."""

    def __init__(self, port):
        self.sock = socket.create_connection((brokerproc.HOST, port), timeout=WAIT)
        self._buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError()
            self._buf += chunk

    def read_packet(self, timeout=WAIT):
        """The next packet as (type, flags, body); None when the broker closed the
        connection; raises AssertionError when nothing came within timeout."""
        deadline = time.monotonic() + timeout
        try:
            self._fill(2, deadline)
            length, mult, pos = 0, 1, 1
            while True:
                self._fill(pos + 1, deadline)
                byte = self._buf[pos]
                length += (byte & 0x7F) * mult
                mult *= 128
                pos += 1
                if not byte & 0x80:
                    break
            self._fill(pos + length, deadline)
        except EOFError:
            return None
        except ConnectionResetError:
            return None
        except socket.timeout:
            raise AssertionError("no packet and no close within %.1f s" % timeout)
        first = self._buf[0]
        body = self._buf[pos:pos + length]
        self._buf = self._buf[pos + length:]
        return first >> 4, first & 0x0F, body

    def wait_closed(self, timeout=WAIT):
        """True when the broker closes the connection within timeout (packets that come
        first are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if self.read_packet(left) is None:
                    return True
            except AssertionError:
                return False

    def close(self):
        self.sock.close()


# ---- test base ------------------------------------------------------------------------

class BrokerTestCase(unittest.TestCase):
    """A fresh broker per test (self.broker, self.port); clients made with self.client()
    are disconnected after the test; the broker log is printed when the test failed."""

    broker_lines = ()  # extra configuration lines for every test of the class
    broker_files = None

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        problems = len(result.failures) + len(result.errors)
        self._broker_log = ""
        out = super().run(result)
        if len(result.failures) + len(result.errors) > problems and self._broker_log:
            tail = self._broker_log.splitlines()[-60:]
            sys.stdout.write("---- broker log (last %d lines) for %s ----\n%s\n----\n"
                             % (len(tail), self.id(), "\n".join(tail)))
        return out

    def setUp(self):
        self._clients = []
        self.broker = brokerproc.Broker(self.broker_lines, self.broker_files)
        self.broker.start()
        self.port = self.broker.port
        # Each test uses its own topics, so nothing leaks between tests.
        self.prefix = "t_" + self._testMethodName

    def tearDown(self):
        for c in self._clients:
            try:
                if isinstance(c, RawClient):
                    c.close()
                else:
                    c.disconnect()
            except Exception:
                pass
        self._broker_log = self.broker.log()
        self.broker.stop()
        self.assertFalse(self.broker.killed, "the broker did not exit within %.0f s of SIGTERM"
                         % brokerproc.STOP_TIMEOUT)

    def client(self, client_id, **kw):
        c = Client(self.port, client_id, **kw)
        self._clients.append(c)
        return c

    def connected(self, client_id, **kw):
        """A client that is connected (CONNACK 0 checked)."""
        c = self.client(client_id, **kw)
        rc, _ = c.connect()
        self.assertEqual(rc, 0, "CONNACK return code for %r" % client_id)
        return c

    def raw(self):
        c = RawClient(self.port)
        self._clients.append(c)
        return c

    def t(self, *levels):
        """A topic under this test's prefix."""
        return "/".join((self.prefix,) + levels)
