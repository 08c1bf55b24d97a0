#!/usr/bin/python3
"""Bridges against a real mosquitto as the "cloud" broker.

Each test starts mosquitto (/usr/sbin/mosquitto, Debian) on a free port as the remote
broker and mqlite with a `connection` block pointing at it, then checks with paho clients
on both sides: out and in rules with prefixes at QoS 0/1/2 over MQTT 3.1.1 and 5.0, TLS with
client certificates (made with openssl here), store-and-forward of 10,000 QoS 1 messages
across an outage of the remote broker (and again with mqlite SIGKILLed while draining),
and 20 remote restarts during a steady publish with mqlite's memory checked afterwards.

The remote-side subscriber keeps a persistent session in a mosquitto with persistence on,
so that what the bridge delivered while the subscriber itself was cut off is not lost at
the far end either: every message is then counted where it arrived.

Run: MQLITE_BIN=build/mqlite /usr/bin/python3 tests/clients/test_bridge.py
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as mqtt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import brokerproc  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
WAIT = 10.0


class Remote(brokerproc.Broker):
    """mosquitto as the cloud broker, with persistence in its own directory so that a
    halt() / restart() keeps the remote subscriber's session."""

    def __init__(self, extra_lines=(), files=None):
        # brokerproc adds `user root` when we are root: else mosquitto would drop to its own
        # user, which cannot write its database into our directory, and the subscriber's
        # session would then be lost at each restart
        super().__init__(["persistence true", "persistence_location {dir}/",
                          "max_queued_messages 0", "max_inflight_messages 0",
                          "log_type all"] + list(extra_lines), files, binary=MOSQUITTO)


class Local(brokerproc.Broker):
    """mqlite with persistence and one bridge to `remote`."""

    def __init__(self, remote_port, bridge_lines, extra_lines=(), files=None, host="127.0.0.1"):
        lines = ["persistence true", "persistence_location {dir}",
                 "connection cloud",
                 "address %s:%d" % (host, remote_port),
                 "restart_timeout 1 2",
                 "keepalive_interval 10"] + list(bridge_lines)
        super().__init__(list(extra_lines) + lines, files)

    def sanitized(self):
        """True for an ASan/TSan build, whose allocator holds on to freed memory."""
        with open("/proc/%d/maps" % self.proc.pid) as f:
            maps = f.read()
        return "libasan" in maps or "libtsan" in maps

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def wait_log(self, needle, timeout=WAIT, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(needle) >= count:
                return True
            time.sleep(0.05)
        return False


class Collector:
    """A paho subscriber that records (topic, payload, qos, retain) as they arrive."""

    def __init__(self, port, topic, qos=1, client_id=None, clean=True, version=mqtt.MQTTv311):
        self.msgs = []
        self.cv = threading.Condition()
        self.subscribed = threading.Event()
        self.topic = topic
        self.qos = qos
        if version == mqtt.MQTTv5:
            self.c = mqtt.Client(client_id=client_id or "", protocol=version)
        else:
            self.c = mqtt.Client(client_id=client_id or "", clean_session=clean, protocol=version)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        if not self.subscribed.wait(WAIT):
            raise AssertionError("no SUBACK for %s" % topic)

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        client.subscribe(self.topic, self.qos)

    def _on_message(self, client, userdata, msg):
        with self.cv:
            self.msgs.append((msg.topic, bytes(msg.payload), msg.qos, msg.retain))
            self.cv.notify_all()

    def wait_count(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cv:
            while len(self.msgs) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            return len(self.msgs)

    def wait_unique(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cv:
            while len(set(m[1] for m in self.msgs)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            return len(set(m[1] for m in self.msgs))

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def publish_many(port, topic, n, qos=1, prefix="", version=mqtt.MQTTv311):
    """Publish n numbered messages (payload PREFIX%06d) and wait for every ack."""
    c = mqtt.Client(client_id="", protocol=version)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(topic, ("%s%06d" % (prefix, i)).encode(), qos) for i in range(n)]
    deadline = time.monotonic() + 60
    for info in infos:
        left = deadline - time.monotonic()
        info.wait_for_publish(timeout=max(left, 0.1))
        if not info.is_published():
            raise AssertionError("publish not acknowledged within 60 s")
    c.disconnect()
    c.loop_stop()


def check_in_order(test, payloads, n, prefix=""):
    """Every one of n numbered payloads arrived; first arrivals in order; returns the number
    of duplicates (QoS 1 redeliveries)."""
    seen = set()
    last = -1
    for p in payloads:
        i = int(p[len(prefix):])
        if i in seen:
            continue
        test.assertGreater(i, last, "message %d arrived after %d" % (i, last))
        last = i
        seen.add(i)
    missing = [i for i in range(n) if i not in seen]
    test.assertEqual(missing[:10], [], "%d messages lost" % len(missing))
    return len(payloads) - len(seen)


class BridgeBasics(unittest.TestCase):
    def run_rules(self, version):
        with Remote() as remote:
            rules = ["bridge_protocol_version %s" % version,
                     "topic sensors/# out 2 \"\" gw1/",
                     "topic cmd/# in 2 \"\" gw1/",
                     "topic exact out 1 local/exact remote/exact",
                     "topic \"\" out 1 single/topic/here far/single"]
            with Local(remote.port, rules) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                up = Collector(remote.port, "#", qos=2)
                down = Collector(local.port, "cmd/#", qos=2)
                for qos in (0, 1, 2):
                    publish_many(local.port, "sensors/t%d" % qos, 5, qos=qos, prefix="q%d-" % qos)
                publish_many(local.port, "local/exactexact", 1, qos=1, prefix="x")
                publish_many(local.port, "single/topic/here", 1, qos=1, prefix="s")
                publish_many(local.port, "not/bridged", 1, qos=1, prefix="n")
                self.assertGreaterEqual(up.wait_count(17), 17, up.msgs)
                time.sleep(0.3)
                topics = [m[0] for m in up.msgs]
                for qos in (0, 1, 2):
                    got = [m for m in up.msgs if m[0] == "gw1/sensors/t%d" % qos]
                    self.assertEqual([m[1] for m in got],
                                     [("q%d-%06d" % (qos, i)).encode() for i in range(5)])
                    self.assertTrue(all(m[2] == qos for m in got), got)
                self.assertIn("remote/exactexact", topics)
                self.assertIn("far/single", topics)
                self.assertNotIn("not/bridged", topics)
                # in: remote gw1/cmd/... arrives locally as cmd/...
                for qos in (0, 1, 2):
                    publish_many(remote.port, "gw1/cmd/c%d" % qos, 3, qos=qos, prefix="c%d-" % qos)
                self.assertGreaterEqual(down.wait_count(9), 9, down.msgs)
                for qos in (0, 1, 2):
                    got = [m for m in down.msgs if m[0] == "cmd/c%d" % qos]
                    self.assertEqual(len(got), 3, down.msgs)
                    self.assertTrue(all(m[2] == qos for m in got), got)
                # no loop: what came in did not go back out to the remote
                time.sleep(0.3)
                self.assertEqual([m for m in up.msgs if m[0].startswith("gw1/gw1")], [])
                up.close()
                down.close()

    def test_rules_v311(self):
        self.run_rules("mqttv311")

    def test_rules_v5(self):
        self.run_rules("mqttv50")

    def check_both_ways_once(self, remote, local, what):
        """On a `both shared/#` rule, one message each way arrives on both sides, once."""
        up = Collector(remote.port, "shared/#")
        down = Collector(local.port, "shared/#")
        publish_many(local.port, "shared/from-local", 1, prefix="L")
        publish_many(remote.port, "shared/from-remote", 1, prefix="R")
        up.wait_count(2)
        down.wait_count(2)
        time.sleep(1.0)  # an echo would arrive by now
        want = ["shared/from-local", "shared/from-remote"]
        self.assertEqual(sorted(m[0] for m in up.msgs), want, what)
        self.assertEqual(sorted(m[0] for m in down.msgs), want, what)
        up.close()
        down.close()

    def test_both_direction_no_loop(self):
        """A `both` rule: local -> remote and remote -> local, each exactly once."""
        for version in ("mqttv311", "mqttv50"):
            with Remote() as remote:
                with Local(remote.port, ["bridge_protocol_version %s" % version,
                                         "topic shared/# both 1"]) as local:
                    self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                    self.check_both_ways_once(remote, local, version)

    def test_mqlite_to_mqlite(self):
        """mqlite as the remote too, with mosquitto's defaults (MQTT 3.1.1, try_private):
        the remote accepts the bridge bit, does not echo the bridge's own messages back
        (no loop on a `both` rule) and keeps retain flags towards it."""
        with brokerproc.Broker([]) as remote:
            with Local(remote.port, ["topic shared/# both 1"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                self.assertIn(" bridge, clean session 0", remote.log())
                self.check_both_ways_once(remote, local, "mqlite remote")
                c = mqtt.Client()
                c.connect("127.0.0.1", remote.port)
                c.loop_start()
                c.publish("shared/kept", b"K", 1, retain=True).wait_for_publish(WAIT)
                c.disconnect()
                c.loop_stop()
                time.sleep(0.5)
                late = Collector(local.port, "shared/kept")  # retained here too
                self.assertEqual(late.wait_count(1), 1)
                self.assertEqual(late.msgs[0][1:], (b"K", 1, True))
                late.close()

    def test_retained_kept_and_state_topic(self):
        with Remote() as remote:
            with Local(remote.port, ["topic r/# out 1"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                c = mqtt.Client()
                c.connect("127.0.0.1", local.port)
                c.loop_start()
                c.publish("r/one", b"kept", 1, retain=True).wait_for_publish(WAIT)
                c.disconnect()
                c.loop_stop()
                time.sleep(0.5)
                late = Collector(remote.port, "r/#")  # subscribes after: gets the retained
                self.assertEqual(late.wait_count(1), 1)
                self.assertEqual(late.msgs[0][1:], (b"kept", 1, True))
                late.close()
                state = Collector(local.port, "$SYS/broker/bridge/cloud/state")
                state.wait_count(1)
                self.assertEqual(state.msgs[0][1], b"connected")
                remote.halt()
                state.wait_count(2)
                self.assertEqual(state.msgs[-1][1], b"disconnected")
                self.assertTrue(local.wait_log("connection to 127.0.0.1:%d lost" % remote.port),
                                local.log())
                remote.restart()
                state.wait_count(3)
                self.assertEqual(state.msgs[-1][1], b"connected")
                state.close()

    def test_notifications(self):
        """mosquitto's bridge notifications, on by default: "1" retained on
        $SYS/broker/connection/REMOTE_CLIENTID/state at both ends once connected; "0" at the
        remote through the CONNECT's will when mqlite dies, and before a clean stop."""
        topic = "$SYS/broker/connection/gw-note/state"
        with Remote() as remote:
            with Local(remote.port, ["topic n/# out 1", "remote_clientid gw-note"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                far = Collector(remote.port, topic)
                near = Collector(local.port, topic)
                self.assertEqual(far.wait_count(1), 1, far.msgs)
                self.assertEqual(far.msgs[-1][1:], (b"1", 0, True))
                self.assertEqual(near.wait_count(1), 1, near.msgs)
                self.assertEqual(near.msgs[-1][1], b"1")
                near.close()
                local.halt(kill=True)  # no DISCONNECT: the remote publishes the will
                self.assertEqual(far.wait_count(2), 2, far.msgs)
                self.assertEqual(far.msgs[-1][1:3], (b"0", 1))
                local.restart()
                self.assertEqual(far.wait_count(3), 3, far.msgs)
                self.assertEqual(far.msgs[-1][1], b"1")
                local.stop()  # SIGTERM: "0" sent before the DISCONNECT
                self.assertEqual(far.wait_count(4), 4, far.msgs)
                self.assertEqual(far.msgs[-1][1], b"0")
                far.close()
            late = Collector(remote.port, topic)  # the last state stays retained
            self.assertEqual(late.wait_count(1), 1)
            self.assertEqual(late.msgs[0][1:], (b"0", 0, True))
            late.close()

    def test_notifications_off_and_local_only(self):
        with Remote() as remote:
            far = Collector(remote.port, "#")
            with Local(remote.port, ["topic n/# out 1", "notifications false"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                near = Collector(local.port, "$SYS/broker/connection/#")
                time.sleep(1.0)
                self.assertEqual(near.msgs, [])
                near.close()
            with Local(remote.port, ["topic n/# out 1", "notifications_local_only true",
                                     "notification_topic plant/gw/bridge"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                near = Collector(local.port, "plant/gw/bridge")
                self.assertEqual(near.wait_count(1), 1, near.msgs)
                self.assertEqual(near.msgs[0][1:], (b"1", 0, True))
                near.close()
            time.sleep(0.5)
            self.assertEqual(far.msgs, [])  # nothing reached the remote at all
            far.close()

    def test_bad_config_errors(self):
        """Config errors name file:line (checked without a remote)."""
        cases = [
            (["connection x", "topic a/# out 1"], "has no 'address'"),
            (["connection x", "address 127.0.0.1:1"], "has no 'topic' line"),
            (["connection x", "address 127.0.0.1:1", "topic a/#/b out"], "not a valid topic"),
            (["connection x", "address 127.0.0.1:1", "topic a out 3"], "QoS '3'"),
            (["connection x", "address 127.0.0.1:1", "topic a sideways"], "direction"),
            (["connection x", "address 127.0.0.1:1", "topic a", "bridge_alpn x"],
             "has bridge_alpn but no bridge_cafile"),
            (["connection x", "address 127.0.0.1:1", "topic a", "bridge_alpn a,,b"],
             "not a list of 1 to 8 protocol names"),
            (["topic a out"], "must follow a 'connection' line"),
            (["connection x", "address 127.0.0.1:1", "topic a", "notification_topic a/+"],
             "notification_topic must be a topic name"),
            (["connection x", "address 127.0.0.1:1", "topic a",
              "bridge_cafile /nonexistent/ca.pem"], "/nonexistent/ca.pem"),
        ]
        for lines, needle in cases:
            d = tempfile.mkdtemp(prefix="mqlite-bridgeconf-")
            try:
                conf = os.path.join(d, "m.conf")
                with open(conf, "w") as f:
                    f.write("listener %d 127.0.0.1\n" % brokerproc.free_port())
                    f.write("\n".join(lines) + "\n")
                r = subprocess.run([brokerproc.broker_path(), "-c", conf], capture_output=True,
                                   timeout=10, text=True)
                self.assertNotEqual(r.returncode, 0, lines)
                self.assertIn(needle, r.stderr, (lines, r.stderr))
                if needle != "/nonexistent/ca.pem":
                    self.assertIn("m.conf:", r.stderr)
            finally:
                shutil.rmtree(d)


class BridgeTLS(unittest.TestCase):
    def setUp(self):
        if shutil.which("openssl") is None:
            self.skipTest("openssl not installed")
        self.d = tempfile.mkdtemp(prefix="mqlite-bridgetls-")
        os.chmod(self.d, 0o755)

        def run(*args):
            subprocess.run(args, check=True, capture_output=True, cwd=self.d, timeout=60)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca")
        for name, cn in (("server", "localhost"), ("client", "gateway-1")):
            run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
                "-out", name + ".csr", "-subj", "/CN=" + cn)
            with open(os.path.join(self.d, name + ".ext"), "w") as f:
                f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
            run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey",
                "ca.key", "-CAcreateserial", "-days", "2", "-out", name + ".pem",
                "-extfile", name + ".ext")
        for f in os.listdir(self.d):
            os.chmod(os.path.join(self.d, f), 0o644)

    def tearDown(self):
        shutil.rmtree(self.d, ignore_errors=True)

    def p(self, name):
        return os.path.join(self.d, name)

    def test_mutual_tls(self):
        remote = Remote()
        # mosquitto's second listener is the TLS one, client certificates required
        remote.extra_listeners = [["cafile " + self.p("ca.pem"),
                                   "certfile " + self.p("server.pem"),
                                   "keyfile " + self.p("server.key"),
                                   "require_certificate true"]]
        with remote:
            tls_port = remote.ports[1]
            for version in ("mqttv311", "mqttv50"):
                # a host name: the certificate is checked against it (mbedtls 2.28 does not
                # match IP addresses in certificates)
                with Local(tls_port, host="localhost", bridge_lines=[
                        "bridge_protocol_version " + version,
                        "bridge_cafile " + self.p("ca.pem"),
                        "bridge_certfile " + self.p("client.pem"),
                        "bridge_keyfile " + self.p("client.key"),
                        "topic tls/# out 1"]) as local:
                    self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                    up = Collector(remote.port, "tls/#")
                    publish_many(local.port, "tls/x", 3, prefix=version)
                    self.assertEqual(up.wait_count(3), 3)
                    up.close()
            # without a client certificate the remote refuses: logged, retried, no crash
            with Local(tls_port, host="localhost", bridge_lines=[
                    "bridge_cafile " + self.p("ca.pem"), "topic tls/# out 1"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": cannot connect'), local.log())
                self.assertIsNone(local.proc.poll())
                # the reason is the remote's alert, by its name (which alert an OpenSSL server
                # sends for a missing client certificate depends on its version), never a
                # bare mbedtls number
                self.assertTrue(local.wait_log("failed in the handshake: the remote "), local.log())
                self.assertRegex(local.log(), r"failed in the handshake: the remote [^\n]*: "
                                 r"(handshake_failure|certificate_required|bad_certificate)")
                self.assertNotIn("mbedtls -0x", local.log())
            # a CA that did not sign the server: refused (verify peer is on by default)
            with Local(tls_port, host="localhost", bridge_lines=[
                       "bridge_cafile " + self.p("client.pem"),
                                  "bridge_certfile " + self.p("client.pem"),
                                  "bridge_keyfile " + self.p("client.key"),
                                  "topic tls/# out 1"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": cannot connect'), local.log())
                self.assertNotIn('bridge "cloud": connected', local.log())
                # the TLS engine's reason, with the remote's address: our own verification
                # of the server's certificate fails first, whatever the remote does after
                # our alert (the engine keeps the first failure; nng calls it again)
                self.assertTrue(local.wait_log("failed in the handshake: peer certificate not "
                                               "accepted"), local.log())
                self.assertNotIn("mbedtls -0x", local.log())
                self.assertNotIn("failed in the handshake: the remote", local.log())


class AlpnServer:
    """A one-connection TLS server (python ssl, localhost certificate) that records the ALPN
    protocol it negotiated with the bridge, then answers its CONNECT with CONNACK 0 and
    keeps the connection until close()."""

    def __init__(self, certfile, keyfile, protocols):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.ctx.set_alpn_protocols(protocols)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(WAIT)
        self.port = self.sock.getsockname()[1]
        self.alpn = "not connected"
        self.connect_seen = False
        self.conn = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            raw, _ = self.sock.accept()
            raw.settimeout(WAIT)
            self.conn = self.ctx.wrap_socket(raw, server_side=True)
            self.alpn = self.conn.selected_alpn_protocol()
            first = self.conn.recv(1)
            self.connect_seen = first == b"\x10"  # CONNECT
            self.conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
        except (OSError, ssl.SSLError) as e:
            self.alpn = "error: %s" % e

    def close(self):
        self.thread.join(WAIT)
        if self.conn is not None:
            self.conn.close()
        self.sock.close()


class BridgeALPN(unittest.TestCase):
    """bridge_alpn: the bridge's TLS client offers the list (AWS IoT on port 443 wants
    x-amzn-mqtt-ca); the server side is python's ssl, which reports what it negotiated."""

    setUp = BridgeTLS.setUp  # the same throw-away CA and localhost certificate
    tearDown = BridgeTLS.tearDown
    p = BridgeTLS.p

    def alpn_run(self, bridge_alpn):
        server = AlpnServer(self.p("server.pem"), self.p("server.key"), ["x-amzn-mqtt-ca"])
        lines = ["bridge_cafile " + self.p("ca.pem"), "topic alpn/# out 1"]
        if bridge_alpn is not None:
            lines.append("bridge_alpn " + bridge_alpn)
        try:
            with Local(server.port, host="localhost", bridge_lines=lines) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                self.assertTrue(server.connect_seen, "no MQTT CONNECT after the handshake")
        finally:
            server.close()
        return server.alpn

    def test_alpn_offered(self):
        # the server picks the one it knows from the list the bridge offers
        self.assertEqual(self.alpn_run("mqtt,x-amzn-mqtt-ca"), "x-amzn-mqtt-ca")

    def test_no_alpn_without_the_option(self):
        self.assertIsNone(self.alpn_run(None))


class BridgeOutage(unittest.TestCase):
    N = 10000

    def outage(self, kill_local):
        with Remote() as remote:
            up = Collector(remote.port, "gw/#", qos=1, client_id="cloud-sub", clean=False)
            with Local(remote.port, ["topic data/# out 1 \"\" gw/",
                                     "bridge_max_inflight 100"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                remote.halt()
                self.assertTrue(local.wait_log("lost"), local.log())
                t0 = time.monotonic()
                publish_many(local.port, "data/x", self.N, qos=1)
                t_pub = time.monotonic() - t0
                remote.restart()
                if kill_local:
                    # SIGKILL mqlite in the middle of the drain, then start it again
                    deadline = time.monotonic() + 60
                    while len(up.msgs) < self.N // 4 and time.monotonic() < deadline:
                        time.sleep(0.005)
                    at_kill = len(up.msgs)
                    local.halt(kill=True)
                    self.assertLess(at_kill, self.N, "drain finished before the kill")
                    local.restart()
                t0 = time.monotonic()
                got = up.wait_unique(self.N, timeout=120)
                t_drain = time.monotonic() - t0
                time.sleep(0.5)
                with up.cv:
                    payloads = [m[1].decode() for m in up.msgs]
                if got != self.N:
                    seen = set(int(p) for p in payloads)
                    missing = [i for i in range(self.N) if i not in seen]
                    self.fail("only %d of %d arrived; missing %s ... %s\n%s"
                              % (got, self.N, missing[:5], missing[-5:], local.log()[-4000:]))
                dups = check_in_order(self, payloads, self.N)
                print("\n  %d QoS 1 messages: published locally in %.1f s while the remote was "
                      "down, drained in %.1f s%s; %d duplicates (DUP redeliveries)"
                      % (self.N, t_pub, t_drain,
                         " across a SIGKILL of mqlite at %d" % at_kill if kill_local else "",
                         dups))
            up.close()

    def test_outage_10000(self):
        self.outage(kill_local=False)

    def test_outage_10000_kill9_while_draining(self):
        self.outage(kill_local=True)


class BridgeFlapping(unittest.TestCase):
    CYCLES = 20

    def test_remote_restarted_20_times(self):
        with Remote() as remote:
            up = Collector(remote.port, "gw/#", qos=1, client_id="cloud-sub2", clean=False)
            with Local(remote.port, ["topic flap/# out 1 \"\" gw/", "restart_timeout 1"]) as local:
                self.assertTrue(local.wait_log('bridge "cloud": connected'), local.log())
                publish_many(local.port, "flap/warm", 200, prefix="w")  # warm up
                up.wait_count(200)
                baseline = local.rss_kib()
                stop = threading.Event()
                sent = []

                def publisher():
                    c = mqtt.Client()
                    c.max_inflight_messages_set(100)
                    c.connect("127.0.0.1", local.port)
                    c.loop_start()
                    i = 0
                    while not stop.is_set():
                        info = c.publish("flap/s", ("%06d" % i).encode(), 1)
                        info.wait_for_publish(timeout=10)
                        if info.is_published():
                            sent.append(i)
                        i += 1
                        time.sleep(0.005)
                    c.disconnect()
                    c.loop_stop()

                t = threading.Thread(target=publisher)
                t.start()
                try:
                    for cycle in range(self.CYCLES):
                        time.sleep(0.3)
                        remote.halt()
                        time.sleep(0.3)
                        remote.restart()
                        self.assertTrue(local.wait_log('bridge "cloud": connected',
                                                       timeout=15, count=cycle + 2),
                                        "cycle %d:\n%s" % (cycle, local.log()[-3000:]))
                finally:
                    stop.set()
                    t.join(timeout=30)
                n = len(sent)
                self.assertGreater(n, 100)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    with up.cv:
                        have = set(m[1] for m in up.msgs if m[0] == "gw/flap/s")
                    if len(have) >= n:
                        break
                    time.sleep(0.1)
                with up.cv:
                    payloads = [m[1].decode() for m in up.msgs if m[0] == "gw/flap/s"]
                dups = check_in_order(self, payloads, n)
                time.sleep(1.0)
                rss = local.rss_kib()
                if local.sanitized():
                    print("  (RSS not checked: a sanitizer build keeps freed memory)")
                    rss = baseline
                print("\n  %d QoS 1 messages over %d remote restarts: none lost, %d duplicates; "
                      "mqlite RSS %d KiB before, %d KiB after" % (n, self.CYCLES, dups, baseline,
                                                                 rss))
                self.assertLessEqual(rss, baseline * 1.10 + 64,
                                     "RSS grew from %d to %d KiB" % (baseline, rss))
            up.close()


if __name__ == "__main__":
    if not os.path.exists(MOSQUITTO):
        print("mosquitto not installed")
        sys.exit(77)
    brokerproc.run_tests()
