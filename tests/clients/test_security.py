#!/usr/bin/python3
"""End-to-end tests of mqlite's transports and security with real clients.

  TLS        mosquitto_pub/sub --cafile against a certfile/keyfile listener; mutual TLS
             (cafile + require_certificate): a client certificate works, no certificate
             fails and the broker logs a `net.tls` line naming the peer; a keyfile that does
             not match the certfile, a missing certfile, and an encrypted key without its
             keyfile_password stop the broker at start (exit 1, the file named); with
             keyfile_password the encrypted key works.
  WebSocket  paho over `protocol websockets` (path /mqtt): QoS 0 and 1, a 100 KB payload;
             wss (websockets + certfile) with paho tls_set(ca_certs=...).
  Auth       a password file written by mqlite-passwd -b, allow_anonymous false: CONNACK
             0 / 0x04 (3.1.1) / 0x86 (5.0) for right / wrong / unknown, 0x05 / 0x87 without
             user name; SIGHUP re-reads the file (a new user works, a connected client keeps
             its connection); a corrupt file on SIGHUP keeps the running one.
  ACL        user sections, `pattern ... %c`, anonymous rules: PUBACK 0x87 (MQTT 5) and no
             delivery for a refused publish, SUBACK 0x87 / 0x80, `$SYS/#` unreadable
             without a rule.
  $SYS       sys_interval 1: uptime and clients/connected arrive within 3 s; `#` gets no
             $SYS topic.
  Closes     200 short TLS connections in parallel: each gets its last packet (CONNACK 0x81)
             before the broker closes, and each close by a client is seen by the broker.
  Reload     SIGHUP with a new certificate and key in the files of a tls and a wss listener:
             a connection made before keeps working (and talks to one made after), every
             new connection gets the new certificate (checked against the CA and byte for
             byte); files that do not load (not PEM, a key that does not match, a missing
             key) keep the running certificate and the log says which file and why.

Keys and certificates are made with openssl in a temporary directory when the file runs
(a CA, a server certificate for CN=localhost with subjectAltName DNS:localhost and
IP:127.0.0.1, a client certificate); nothing is checked in.

Run: MQLITE_BIN=build/mqlite MQLITE_PASSWD=build/mqlite-passwd \\
     /usr/bin/python3 tests/clients/test_security.py
"""

import atexit
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paho.mqtt.client as paho  # noqa: E402

import brokerproc  # noqa: E402
import mqttclient  # noqa: E402
from mqttclient import RawClient, connect_packet, packet  # noqa: E402
from test_cli import Sub  # noqa: E402

PUB = "/usr/bin/mosquitto_pub"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
WAIT = 5.0  # bound of every single wait

# ---- keys and certificates --------------------------------------------------------------

PKI = tempfile.mkdtemp(prefix="mqlite-sec-pki-")
atexit.register(shutil.rmtree, PKI, True)
os.chmod(PKI, 0o755)


def pki(name):
    return os.path.join(PKI, name)


def _openssl(*args):
    r = subprocess.run([OPENSSL] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=30, cwd=PKI)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args),
                                                       r.stdout.decode("utf-8", "replace")))


def _ec_key(name, *extra):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", pki(name), *extra)


def _sign(key, cert, cn, ext_lines, key_pass=None):
    """A certificate for `key` with CN=cn signed by the test CA."""
    with open(pki(cert + ".ext"), "w") as f:
        f.write("\n".join(ext_lines) + "\n")
    req = ["req", "-new", "-key", pki(key), "-subj", "/CN=" + cn, "-out", pki(cert + ".csr")]
    if key_pass is not None:
        req += ["-passin", "pass:" + key_pass]
    _openssl(*req)
    _openssl("x509", "-req", "-in", pki(cert + ".csr"), "-CA", pki("ca.crt"), "-CAkey",
             pki("ca.key"), "-CAcreateserial", "-days", "2", "-sha256",
             "-extfile", pki(cert + ".ext"), "-out", pki(cert))


def make_pki():
    _ec_key("ca.key")
    _openssl("req", "-x509", "-new", "-key", pki("ca.key"), "-subj", "/CN=mqlite test CA",
             "-days", "2", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", pki("ca.crt"))
    server_ext = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
                  "extendedKeyUsage=serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    _ec_key("server.key")
    _sign("server.key", "server.crt", "localhost", server_ext)
    _ec_key("client.key")
    _sign("client.key", "client.crt", "client1",
          ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature",
           "extendedKeyUsage=clientAuth"])
    # use_identity_as_username: a second client whose CN the ACL does not know, and one
    # whose subject has no CN at all
    _ec_key("intruder.key")
    _sign("intruder.key", "intruder.crt", "intruder",
          ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature",
           "extendedKeyUsage=clientAuth"])
    _ec_key("nocn.key")
    _openssl("req", "-new", "-key", pki("nocn.key"), "-subj", "/O=mqlite tests",
             "-out", pki("nocn.csr"))
    with open(pki("nocn.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", pki("nocn.csr"), "-CA", pki("ca.crt"), "-CAkey",
             pki("ca.key"), "-CAcreateserial", "-days", "2", "-sha256",
             "-extfile", pki("nocn.ext"), "-out", pki("nocn.crt"))
    _ec_key("server2.key")  # the certificate a SIGHUP switches to (TlsReload)
    _sign("server2.key", "server2.crt", "localhost", server_ext)
    _ec_key("other.key")  # matches no certificate
    # an encrypted key (PKCS#8, AES-256) and its certificate
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256",
             "-pass", "pass:xyz", "-out", pki("enc.key"))
    _sign("enc.key", "enc.crt", "localhost", server_ext, key_pass="xyz")
    # the same kind of key in the traditional PEM encryption (Proc-Type / DEK-Info AES-256)
    _ec_key("plain2.key")
    _openssl("pkey", "-in", pki("plain2.key"), "-aes256", "-passout", "pass:xyz",
             "-traditional", "-out", pki("trad.key"))
    _sign("trad.key", "trad.crt", "localhost", server_ext, key_pass="xyz")


# ---- helpers ----------------------------------------------------------------------------

def passwd_tool():
    path = os.environ.get("MQLITE_PASSWD")
    if not path:
        here = os.path.dirname(os.path.abspath(brokerproc.broker_path()))
        path = os.path.join(here, "mqlite-passwd")
    return path


def passwd_add(path, user, password, create=False):
    """mqlite-passwd -b (with -c: create the file)."""
    cmd = [passwd_tool()] + (["-c"] if create else []) + ["-b", path, user, password]
    r = subprocess.run(cmd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=WAIT)
    if r.returncode != 0:
        raise AssertionError("mqlite-passwd -b %s %s failed (%d): %s"
                             % (path, user, r.returncode, r.stdout.decode("utf-8", "replace")))


def start_fails(conf_lines, timeout=WAIT):
    """Run the broker with a configuration that must not start: returns (status, output).
    A broker still running after `timeout` is killed and reported as status None."""
    d = tempfile.mkdtemp(prefix="mqlite-sec-conf-")
    try:
        conf = os.path.join(d, "broker.conf")
        with open(conf, "w") as f:
            f.write("listener %d %s\n" % (brokerproc.free_port(), brokerproc.HOST))
            f.write("\n".join(conf_lines) + "\n")
        proc = subprocess.Popen([brokerproc.broker_path(), "-c", conf], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=WAIT)
            return None, out.decode("utf-8", "replace")
    finally:
        shutil.rmtree(d, True)


class SecClient(mqttclient.Client):
    """mqttclient.Client with a transport (tcp / websockets), TLS and user name."""

    def __init__(self, port, client_id, transport="tcp", ca=None, username=None,
                 password=None, protocol=paho.MQTTv311, cert=None, key=None, **kw):
        super().__init__(port, client_id, protocol=protocol, **kw)
        if transport != "tcp":
            if protocol == paho.MQTTv5:
                self.paho = paho.Client(client_id=client_id, protocol=protocol,
                                        transport=transport, reconnect_on_failure=False)
            else:
                self.paho = paho.Client(client_id=client_id,
                                        clean_session=kw.get("clean_session", True),
                                        protocol=protocol, transport=transport,
                                        reconnect_on_failure=False)
            self.paho.on_connect = self._on_connect
            self.paho.on_message = self._on_message
            self.paho.on_subscribe = self._on_subscribe
            self.paho.on_unsubscribe = self._on_unsubscribe
            self.paho.on_disconnect = self._on_disconnect
        if ca is not None:
            self.paho.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        if username is not None:
            self.paho.username_pw_set(username, password)


# ---- raw MQTT 5 (paho 1.6.1 does not report the PUBACK reason code) ----------------------

def _s(text):
    b = text.encode("utf-8")
    return len(b).to_bytes(2, "big") + b


def v5_connect(client_id, username=None, password=None):
    flags = 0x02
    payload = _s(client_id)
    if username is not None:
        flags |= 0x80
        payload += _s(username)
    if password is not None:
        flags |= 0x40
        payload += _s(password)
    body = _s("MQTT") + bytes([5, flags]) + (60).to_bytes(2, "big") + b"\x00" + payload
    return packet(1, 0, body)


def v5_publish_qos1(topic, packet_id, payload):
    return packet(3, 0x02, _s(topic) + packet_id.to_bytes(2, "big") + b"\x00" + payload)


# ---- test base --------------------------------------------------------------------------

class SecTestCase(unittest.TestCase):
    """Brokers started by self.start_broker() are stopped after the test; their logs are
    printed under a failed test."""

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        problems = len(result.failures) + len(result.errors)
        self._logs = []
        out = super().run(result)
        if len(result.failures) + len(result.errors) > problems:
            for log in self._logs:
                tail = log.splitlines()[-40:]
                sys.stdout.write("---- broker log (last %d lines) for %s ----\n%s\n----\n"
                                 % (len(tail), self.id(), "\n".join(tail)))
        return out

    def setUp(self):
        self._brokers = []
        self._clients = []
        self._subs = []
        self.tmp = tempfile.mkdtemp(prefix="mqlite-sec-")
        os.chmod(self.tmp, 0o755)

    def tearDown(self):
        for c in self._clients:
            try:
                c.disconnect()
            except Exception:
                pass
            try:
                c.close() if isinstance(c, RawClient) else None
            except Exception:
                pass
        for s in self._subs:
            s.kill()
        for b in self._brokers:
            self._logs.append(b.log())
            b.stop()
            self.assertFalse(b.killed, "the broker did not exit within %.0f s of SIGTERM"
                             % brokerproc.STOP_TIMEOUT)
        shutil.rmtree(self.tmp, True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start_broker(self, lines=(), extra_listeners=()):
        b = brokerproc.Broker(lines, extra_listeners=extra_listeners)
        b.start()
        self._brokers.append(b)
        return b

    def client(self, port, client_id, **kw):
        c = SecClient(port, client_id, **kw)
        self._clients.append(c)
        return c

    def connected(self, port, client_id, **kw):
        c = self.client(port, client_id, **kw)
        rc, _ = c.connect()
        self.assertEqual(rc, 0, "CONNACK return code for %r" % client_id)
        return c

    def connack(self, port, client_id, **kw):
        """The CONNACK return / reason code a client gets (None: closed without one)."""
        c = self.client(port, client_id, **kw)
        try:
            rc, _ = c.connect()
        finally:
            c.stop_loop()
        return rc

    def raw(self, port):
        c = RawClient(port)
        self._clients.append(c)
        return c

    def sub(self, port, *args, count=None):
        s = Sub(port, args, count)
        self._subs.append(s)
        return s

    def pub(self, port, *args):
        cmd = [PUB, "-h", brokerproc.HOST, "-p", str(port)] + list(args)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=WAIT + 3)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def wait_log(self, broker, text, after=0, timeout=WAIT):
        """Wait until the broker log has more than `after` lines containing text; returns
        those lines."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in broker.log().splitlines() if text in line]
            if len(found) > after:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError("no log line with %r within %.0f s" % (text, timeout))
            time.sleep(0.05)


TLS_LINES = ["certfile " + pki("server.crt"), "keyfile " + pki("server.key")]


# ---- TLS --------------------------------------------------------------------------------

class TLS(SecTestCase):

    def tls_round_trip(self, port, tls_args, topic):
        s = self.sub(port, "-t", topic, "-q", "1", *tls_args, count=1)
        s.wait_subscribed()
        status, out = self.pub(port, "-t", topic, "-m", "over tls", "-q", "1", *tls_args)
        self.assertEqual(status, 0, out)
        status, msgs = s.finish()
        self.assertEqual(status, 0, "\n".join(s.all_lines))
        self.assertEqual(msgs, [(topic, 1, 0, "over tls")])

    def test_tls_round_trip(self):
        b = self.start_broker(TLS_LINES)
        self.tls_round_trip(b.port, ["--cafile", pki("ca.crt")], "sec/tls")

    def test_tls_plain_client_refused(self):
        b = self.start_broker(TLS_LINES)
        status, out = self.pub(b.port, "-t", "sec/plain", "-m", "x", "-q", "1")
        self.assertNotEqual(status, 0, "a plain MQTT client was served on a TLS listener")

    def test_mutual_tls(self):
        b = self.start_broker(TLS_LINES + ["cafile " + pki("ca.crt"), "require_certificate true"])
        ca = ["--cafile", pki("ca.crt")]
        self.tls_round_trip(b.port, ca + ["--cert", pki("client.crt"), "--key", pki("client.key")],
                            "sec/mtls")
        before = [line for line in b.log().splitlines() if "[net.tls]" in line]
        status, out = self.pub(b.port, "-t", "sec/mtls", "-m", "x", "-q", "1", *ca)
        self.assertNotEqual(status, 0, "connected without a client certificate:\n" + out)
        lines = self.wait_log(b, "[net.tls]", after=len(before))
        self.assertTrue(any("127.0.0.1:" in line for line in lines[len(before):]),
                        "net.tls line does not name the peer: %r" % lines[len(before):])

    def test_keyfile_does_not_match(self):
        status, out = start_fails(["certfile " + pki("server.crt"),
                                   "keyfile " + pki("other.key")])
        self.assertEqual(status, 1, out)
        self.assertIn(pki("other.key"), out)

    def test_missing_certfile(self):
        missing = pki("no-such.crt")
        status, out = start_fails(["certfile " + missing, "keyfile " + pki("server.key")])
        self.assertEqual(status, 1, out)
        self.assertIn(missing, out)

    def test_encrypted_pkcs8_key_is_refused_clearly(self):
        # openssl 3's default encrypted key (PKCS#8, PBES2 AES-256) is a format mbedtls 2.28
        # cannot decrypt: the broker must say so, naming the file and the way out.
        status, out = start_fails(["certfile " + pki("enc.crt"), "keyfile " + pki("enc.key"),
                                   "keyfile_password xyz"])
        self.assertEqual(status, 1, out)
        self.assertIn(pki("enc.key"), out)
        self.assertIn("-traditional", out)

    def test_encrypted_key_traditional_pem(self):
        b = self.start_broker(["certfile " + pki("trad.crt"), "keyfile " + pki("trad.key"),
                               "keyfile_password xyz"])
        self.tls_round_trip(b.port, ["--cafile", pki("ca.crt")], "sec/trad")

    def test_encrypted_key_without_password(self):
        status, out = start_fails(["certfile " + pki("enc.crt"), "keyfile " + pki("enc.key")])
        self.assertEqual(status, 1, out)
        self.assertIn(pki("enc.key"), out)
        self.assertIn("keyfile_password", out)

    def test_encrypted_key_wrong_password(self):
        status, out = start_fails(["certfile " + pki("enc.crt"), "keyfile " + pki("enc.key"),
                                   "keyfile_password wrong"])
        self.assertEqual(status, 1, out)
        self.assertIn(pki("enc.key"), out)


class TlsCloses(SecTestCase):
    """nng 1.5.2's TLS stream lost, in about 1 of 600 connections under load, the last
    packet before a close (its close aborted the TCP write still in progress) and the end of
    a connection the peer closed right after sending (the receive waited forever). Many
    short connections in parallel: every one must get its CONNACK 0x81 before the close,
    and every client that closes must be logged as disconnected."""

    THREADS = 4
    EACH = 50

    def parallel(self, work):
        errors = []

        def run(k):
            try:
                for i in range(self.EACH):
                    work(k, i)
            except Exception as e:  # reported in the main thread
                errors.append("%s: %s" % (type(e).__name__, e))
        threads = [threading.Thread(target=run, args=(k,)) for k in range(self.THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])

    def tls(self, port):
        ctx = ssl.create_default_context(cafile=pki("ca.crt"))
        return ctx.wrap_socket(socket.create_connection((brokerproc.HOST, port), timeout=WAIT),
                               server_hostname="localhost")

    def test_last_packet_before_close_arrives(self):
        b = self.start_broker(TLS_LINES)
        # MQTT 5 CONNECT with the reserved flag set: CONNACK 0x81, then the close
        bad = packet(1, 0, mqttclient._string("MQTT") + b"\x05\x03\x00\x3c\x00" +
                     mqttclient._string("resv"))

        def work(k, i):
            with self.tls(b.port) as sock:
                sock.sendall(bad)
                got = b""
                while True:
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    got += chunk
                if got[:4] != b"\x20\x03\x00\x81":
                    raise AssertionError("connection %d/%d: got %r before the close" % (k, i, got))
        self.parallel(work)

    def test_every_close_is_seen(self):
        b = self.start_broker(TLS_LINES)

        def work(k, i):
            with self.tls(b.port) as sock:
                sock.sendall(connect_packet("close-%d-%d" % (k, i)))
                if sock.recv(4) != b"\x20\x02\x00\x00":
                    raise AssertionError("no CONNACK")
                if i % 2:
                    sock.sendall(packet(12, 0, b""))  # PINGREQ, then close at once
        self.parallel(work)
        total = self.THREADS * self.EACH
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            gone = len([ln for ln in b.log().splitlines() if "[client.disconnect]" in ln])
            if gone >= total:
                break
            time.sleep(0.1)
        self.assertEqual(gone, total, "clients still 'connected' after they closed")


# ---- WebSocket --------------------------------------------------------------------------

class WebSocket(SecTestCase):

    def round_trip(self, port, **kw):
        sub = self.connected(port, "ws-sub", transport="websockets", **kw)
        self.assertEqual(sub.subscribe("sec/ws/#", 1), [1])
        pub = self.connected(port, "ws-pub", transport="websockets", **kw)
        big = bytes(i % 251 for i in range(100 * 1024))
        pub.publish("sec/ws/q0", b"zero", 0)
        pub.publish("sec/ws/q1", b"one", 1)
        pub.publish("sec/ws/big", big, 1)
        got = sub.expect(3)
        self.assertEqual(sorted((m.topic, m.qos, len(m.payload)) for m in got),
                         [("sec/ws/big", 1, len(big)), ("sec/ws/q0", 0, 4), ("sec/ws/q1", 1, 3)])
        self.assertEqual([m.payload for m in got if m.topic == "sec/ws/big"], [big])

    def test_websockets(self):
        b = self.start_broker(["protocol websockets"])
        self.round_trip(b.port)

    def test_websockets_v5_and_tcp_listener(self):
        # a TCP and a WebSocket listener on one broker: messages cross between them
        b = self.start_broker(extra_listeners=[["protocol websockets",
                                                "websockets_path /mqtt"]])
        tcp = self.connected(b.ports[0], "tcp-sub", protocol=paho.MQTTv5)
        self.assertEqual(tcp.subscribe("sec/x", 1), [1])
        ws = self.connected(b.ports[1], "ws-pub", transport="websockets", protocol=paho.MQTTv5)
        ws.publish("sec/x", b"from ws", 1)
        self.assertEqual([m.payload for m in tcp.expect(1)], [b"from ws"])

    def test_secure_websockets(self):
        b = self.start_broker(["protocol websockets"] + TLS_LINES)
        self.round_trip(b.port, ca=pki("ca.crt"))


# ---- use_identity_as_username ----------------------------------------------------------

IDENTITY_ACL = """user client1
topic readwrite id/client1/#
"""


class Identity(SecTestCase):
    """use_identity_as_username on a mutual-TLS listener: the client certificate's CN is the
    user name for the ACL; the CONNECT's user name and password are ignored and the password
    file is not consulted (as mosquitto)."""

    def setUp(self):
        super().setUp()
        with open(self.path("acl"), "w") as f:
            f.write(IDENTITY_ACL)
        self.passwd = self.path("passwd")
        passwd_add(self.passwd, "someone", "else", create=True)
        self.b = self.start_broker(TLS_LINES + [
            "cafile " + pki("ca.crt"), "require_certificate true",
            "use_identity_as_username true", "allow_anonymous false",
            "password_file " + self.passwd, "acl_file " + self.path("acl")])
        self.port = self.b.port

    def tls_client(self, client_id, name, **kw):
        return self.client(self.port, client_id, ca=pki("ca.crt"), cert=pki(name + ".crt"),
                           key=pki(name + ".key"), **kw)

    def test_cn_is_the_user_for_the_acl(self):
        # a user name and password that the password file would refuse: not consulted
        c = self.tls_client("dev-a", "client", username="mallory", password="wrong")
        rc, _ = c.connect()
        self.assertEqual(rc, 0, "CONNACK for the certificate of client1")
        self.assertEqual(c.subscribe([("id/client1/#", 1), ("id/other/#", 1)]), [1, 0x80])
        c.publish("id/client1/x", b"mine", 1)
        self.assertEqual([(m.topic, m.payload) for m in c.expect(1)], [("id/client1/x", b"mine")])
        self.wait_log(self.b, 'user name "client1" from its certificate')

    def test_cn_not_in_acl_is_denied(self):
        owner = self.tls_client("owner", "client")
        self.assertEqual(owner.connect()[0], 0)
        self.assertEqual(owner.subscribe("id/client1/#", 1), [1])
        # CONNECT says "client1", the certificate says "intruder": the certificate wins
        c = self.tls_client("dev-b", "intruder", username="client1", protocol=paho.MQTTv5)
        self.assertEqual(c.connect()[0], 0)
        self.assertEqual(c.subscribe("id/client1/#", 1), [0x87])
        c.publish("id/client1/x", b"not yours", 1)
        self.assertEqual(owner.collect(quiet=0.7), [], "a denied publish was delivered")

    def test_client_without_certificate_refused(self):
        before = [line for line in self.b.log().splitlines() if "[net.tls]" in line]
        c = self.client(self.port, "nocert", ca=pki("ca.crt"), username="client1",
                        password="x")
        try:
            rc, _ = c.connect()
        except Exception:
            rc = None  # the handshake failed
        finally:
            c.stop_loop()
        self.assertNotEqual(rc, 0, "connected without a client certificate")
        lines = self.wait_log(self.b, "[net.tls]", after=len(before))[len(before):]
        self.assertTrue(any("127.0.0.1:" in line and "certificate" in line for line in lines),
                        "net.tls line does not name the peer and the reason: %r" % lines)

    def test_certificate_without_cn_refused(self):
        rc = self.connack(self.port, "nocn", ca=pki("ca.crt"), cert=pki("nocn.crt"),
                          key=pki("nocn.key"))
        self.assertEqual(rc, 5, "CONNACK 0x05 not authorized")
        self.wait_log(self.b, "subject has no Common Name")

    def test_refused_where_it_cannot_work(self):
        ca = ["cafile " + pki("ca.crt")]
        for extra, why in (([], "require_certificate true"),
                           (["require_certificate true", "protocol websockets"], "websockets")):
            status, out = start_fails(TLS_LINES + ca + extra + ["use_identity_as_username true"])
            self.assertNotEqual(status, 0, out)
            self.assertIn("use_identity_as_username needs a TLS MQTT listener", out)
            self.assertIn(why, out)
        status, out = start_fails(["use_identity_as_username true"])
        self.assertNotEqual(status, 0, out)
        self.assertIn("need certfile", out)


# ---- password file ----------------------------------------------------------------------

class Auth(SecTestCase):

    def auth_broker(self):
        self.passwd = self.path("passwd")
        passwd_add(self.passwd, "alice", "secret-a", create=True)
        return self.start_broker(["allow_anonymous false", "password_file " + self.passwd])

    def test_v311_codes(self):
        b = self.auth_broker()
        self.connected(b.port, "c-ok", username="alice", password="secret-a")
        self.assertEqual(self.connack(b.port, "c-wrong", username="alice", password="nope"), 4)
        self.assertEqual(self.connack(b.port, "c-unknown", username="mallory",
                                      password="secret-a"), 4)
        self.assertEqual(self.connack(b.port, "c-anon"), 5)

    def test_v5_codes(self):
        b = self.auth_broker()
        v5 = {"protocol": paho.MQTTv5}
        self.connected(b.port, "c-ok", username="alice", password="secret-a", **v5)
        self.assertEqual(self.connack(b.port, "c-wrong", username="alice", password="nope",
                                      **v5), 0x86)
        self.assertEqual(self.connack(b.port, "c-unknown", username="mallory",
                                      password="secret-a", **v5), 0x86)
        self.assertEqual(self.connack(b.port, "c-anon", **v5), 0x87)

    def sighup(self, b):
        """SIGHUP and wait until the broker reports the result of re-reading the files."""
        count = sum(1 for line in b.log().splitlines() if "[broker.reload]" in line)
        b.proc.send_signal(signal.SIGHUP)
        self.wait_log(b, "[broker.reload]", after=count)
        time.sleep(0.2)  # the password file is loaded (and logged) after that line

    def test_sighup_adds_user(self):
        b = self.auth_broker()
        alice = self.connected(b.port, "alice-1", username="alice", password="secret-a")
        self.assertEqual(alice.subscribe("sec/hup", 1), [1])
        loads = len(self.wait_log(b, "[auth.load] password file"))
        passwd_add(self.passwd, "bob", "secret-b")
        self.sighup(b)
        self.wait_log(b, "[auth.load] password file", after=loads)
        bob = self.connected(b.port, "bob-1", username="bob", password="secret-b")
        bob.publish("sec/hup", b"from bob", 1)
        self.assertEqual([m.payload for m in alice.expect(1)], [b"from bob"])
        self.assertFalse(alice.disconnected.is_set(), "alice was disconnected by SIGHUP")

    def test_sighup_corrupt_file_kept(self):
        b = self.auth_broker()
        alice = self.connected(b.port, "alice-1", username="alice", password="secret-a")
        self.assertEqual(alice.subscribe("sec/hup", 1), [1])
        with open(self.passwd, "w") as f:
            f.write("this is not a password line\n")
        self.sighup(b)
        lines = self.wait_log(b, "keeping the running password/ACL files")
        self.assertIn(self.passwd, lines[-1], "the log does not name the file")
        alice2 = self.connected(b.port, "alice-2", username="alice", password="secret-a")
        alice2.publish("sec/hup", b"still here", 1)
        self.assertEqual([m.payload for m in alice.expect(1)], [b"still here"])


# ---- ACL --------------------------------------------------------------------------------

ACL = """# test ACL
topic read public/#

user alice
topic readwrite alice/#

user admin
topic readwrite #

pattern read devices/%c/#
"""


class ACLTests(SecTestCase):

    def setUp(self):
        super().setUp()
        with open(self.path("acl"), "w") as f:
            f.write(ACL)
        self.b = self.start_broker(["acl_file " + self.path("acl"), "sys_interval 1"])
        self.port = self.b.port

    def test_publish_own_tree(self):
        admin = self.connected(self.port, "admin", username="admin")
        self.assertEqual(admin.subscribe("alice/#", 1), [1])
        alice = self.connected(self.port, "alice", username="alice")
        alice.publish("alice/x", b"mine", 1)
        self.assertEqual([(m.topic, m.payload) for m in admin.expect(1)], [("alice/x", b"mine")])

    def test_publish_refused_v5(self):
        admin = self.connected(self.port, "admin", username="admin")
        self.assertEqual(admin.subscribe("bob/#", 1), [1])
        raw = self.raw(self.port)
        raw.send(v5_connect("alice", username="alice"))
        ptype, _, body = raw.read_packet()
        self.assertEqual((ptype, body[1]), (2, 0), "CONNACK")
        raw.send(v5_publish_qos1("bob/x", 7, b"not yours"))
        ptype, _, body = raw.read_packet()
        self.assertEqual(ptype, 4, "expected PUBACK")
        self.assertEqual(body[:2], (7).to_bytes(2, "big"))
        self.assertEqual(body[2] if len(body) > 2 else 0, 0x87, "PUBACK reason code")
        self.assertEqual(admin.collect(quiet=0.7), [], "a refused publish was delivered")

    def test_subscribe_refused(self):
        a5 = self.connected(self.port, "alice5", username="alice", protocol=paho.MQTTv5)
        self.assertEqual(a5.subscribe("bob/#", 1), [0x87])
        a3 = self.connected(self.port, "alice3", username="alice")
        self.assertEqual(a3.subscribe([("bob/#", 1), ("alice/#", 1)]), [0x80, 1])

    def test_pattern_client_id(self):
        dev = self.connected(self.port, "dev1")
        self.assertEqual(dev.subscribe([("devices/dev1/#", 1), ("devices/dev2/#", 1)]), [1, 0x80])
        admin = self.connected(self.port, "admin", username="admin")
        admin.publish("devices/dev2/cmd", b"for dev2", 1)
        admin.publish("devices/dev1/cmd", b"for dev1", 1)
        self.assertEqual([(m.topic, m.payload) for m in dev.expect(1)],
                         [("devices/dev1/cmd", b"for dev1")])
        self.assertEqual(dev.collect(quiet=0.3), [])

    def test_anonymous_rules(self):
        anon = self.connected(self.port, "anon")
        self.assertEqual(anon.subscribe([("public/#", 0), ("alice/#", 0)]), [0, 0x80])
        admin = self.connected(self.port, "admin", username="admin")
        admin.publish("public/news", b"hello", 1)
        self.assertEqual([m.payload for m in anon.expect(1)], [b"hello"])
        # anonymous rules never apply to a named user
        alice = self.connected(self.port, "alice", username="alice")
        self.assertEqual(alice.subscribe("public/#", 0), [0x80])

    def test_sys_needs_a_rule(self):
        admin = self.connected(self.port, "admin", username="admin")
        self.assertEqual(admin.subscribe([("$SYS/#", 0), ("$SYS/broker/uptime", 0)]),
                         [0x80, 0x80])
        self.assertEqual(admin.subscribe("#", 0), [0])
        got = admin.collect(quiet=1.5)  # sys_interval 1: $SYS is published meanwhile
        self.assertEqual([m.topic for m in got if m.topic.startswith("$")], [])


# ---- certificate reload on SIGHUP -------------------------------------------------------

def pem_der(path):
    """The DER bytes of the (first) certificate of a PEM file."""
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


@unittest.skipIf(brokerproc.is_mosquitto(), "checks mqlite's reload log lines")
class TlsReload(SecTestCase):
    """certfile/keyfile of a tls+tcp and a wss listener point at files of the test's own
    directory; the test replaces them and sends SIGHUP."""

    def setUp(self):
        super().setUp()
        self.install(pki("server.crt"), pki("server.key"))
        files = ["certfile " + self.path("live.crt"), "keyfile " + self.path("live.key")]
        self.b = self.start_broker(files, extra_listeners=[["protocol websockets"] + files])
        self.tls_port, self.wss_port = self.b.ports

    def install(self, cert, key):
        """Put cert and key in place as live.crt / live.key (each replaced atomically)."""
        for src, dst in ((cert, "live.crt"), (key, "live.key")):
            if src is None:
                continue
            shutil.copyfile(src, self.path(dst + ".new"))
            os.replace(self.path(dst + ".new"), self.path(dst))

    def reload(self, text):
        """SIGHUP, then wait for one more log line with text for each TLS listener."""
        before = len([ln for ln in self.b.log().splitlines() if text in ln])
        self.b.proc.send_signal(signal.SIGHUP)
        lines = self.wait_log(self.b, text, after=before + 1)
        return lines[before:]

    def tls_client(self, port):
        """A raw MQTT client over TLS that checks the broker against the test CA."""
        ctx = ssl.create_default_context(cafile=pki("ca.crt"))
        sock = ctx.wrap_socket(socket.create_connection((brokerproc.HOST, port), timeout=WAIT),
                               server_hostname="localhost")
        c = RawClient.__new__(RawClient)
        c.sock = sock
        c._buf = b""
        self._clients.append(c)
        return c

    def mqtt_client(self, client_id):
        c = self.tls_client(self.tls_port)
        c.send(connect_packet(client_id))
        self.assertEqual(c.read_packet(), (2, 0, b"\x00\x00"), "CONNACK for " + client_id)
        return c

    def ping(self, c):
        c.send(packet(12, 0, b""))
        self.assertEqual(c.read_packet(), (13, 0, b""), "PINGRESP")

    def peer_cert(self, port):
        c = self.tls_client(port)
        der = c.sock.getpeercert(binary_form=True)
        c.sock.close()
        return der

    def test_new_certificate_for_new_connections(self):
        old = self.mqtt_client("before-reload")
        self.assertEqual(old.sock.getpeercert(binary_form=True), pem_der(pki("server.crt")))
        self.assertEqual(self.peer_cert(self.wss_port), pem_der(pki("server.crt")))

        self.install(pki("server2.crt"), pki("server2.key"))
        lines = self.reload("[net.tls_reload]")
        self.assertTrue(all("reloaded" in ln and self.path("live.crt") in ln for ln in lines),
                        lines)

        # the connection made before goes on, with the old certificate
        self.ping(old)
        old.send(packet(8, 2, b"\x00\x01" + mqttclient._string("reload/t") + b"\x00"))
        self.assertEqual(old.read_packet(), (9, 0, b"\x00\x01\x00"), "SUBACK")
        # every new connection gets the new one, verified against the CA
        new = self.mqtt_client("after-reload")
        self.assertEqual(new.sock.getpeercert(binary_form=True), pem_der(pki("server2.crt")))
        new.send(packet(3, 0, mqttclient._string("reload/t") + b"hello"))
        self.assertEqual(old.read_packet(), (3, 0, mqttclient._string("reload/t") + b"hello"))
        for _ in range(3):
            self.assertEqual(self.peer_cert(self.tls_port), pem_der(pki("server2.crt")))
            self.assertEqual(self.peer_cert(self.wss_port), pem_der(pki("server2.crt")))
        # and MQTT over wss works with it
        ws = self.connected(self.wss_port, "wss-after", transport="websockets", ca=pki("ca.crt"))
        self.assertEqual(ws.subscribe("reload/w", 1), [1])

    def test_bad_files_keep_the_running_certificate(self):
        old = self.mqtt_client("keeps-going")
        self.install(pki("server2.crt"), pki("server2.key"))
        self.reload("[net.tls_reload]")
        cases = [
            # (what, cert, key, what the log must say)
            ("not PEM", "garbage.crt", None, "not a PEM certificate"),
            ("key of another certificate", pki("server.crt"), pki("other.key"), "does not match"),
        ]
        with open(self.path("garbage.crt"), "w") as f:
            f.write("this is not a certificate\n")
        for what, cert, key, reason in cases:
            cert = self.path(cert) if not os.path.isabs(cert) else cert
            self.install(cert, key)
            lines = self.reload("keeping the running certificate")
            self.assertEqual(len(lines), 2, lines)  # the tls and the wss listener
            self.assertTrue(all(reason in ln for ln in lines), "%s: %r" % (what, lines))
            self.assertTrue(all("[net.tls_reload]" in ln and " error " in ln for ln in lines),
                            lines)
            self.assertEqual(self.peer_cert(self.tls_port), pem_der(pki("server2.crt")), what)
            self.assertEqual(self.peer_cert(self.wss_port), pem_der(pki("server2.crt")), what)
            self.ping(old)
            self.ping(self.mqtt_client("after-" + what.replace(" ", "-")))
        # a missing key file
        self.install(pki("server.crt"), None)
        os.remove(self.path("live.key"))
        lines = self.reload("keeping the running certificate")
        self.assertTrue(all(self.path("live.key") in ln and "No such file" in ln for ln in lines),
                        lines)
        self.assertEqual(self.peer_cert(self.tls_port), pem_der(pki("server2.crt")))
        # and good files again are taken
        self.install(pki("server.crt"), pki("server.key"))
        self.reload("reloaded")
        self.assertEqual(self.peer_cert(self.tls_port), pem_der(pki("server.crt")))
        self.ping(old)


# ---- $SYS -------------------------------------------------------------------------------

class Sys(SecTestCase):

    def test_sys_topics(self):
        b = self.start_broker(["sys_interval 1"])
        everything = self.connected(b.port, "all")
        self.assertEqual(everything.subscribe("#", 0), [0])
        c = self.connected(b.port, "sys")
        self.assertEqual(c.subscribe([("$SYS/broker/uptime", 0),
                                      ("$SYS/broker/clients/connected", 0)]), [0, 0])
        start = time.monotonic()
        seen = {}
        connected = []
        while seen.get("$SYS/broker/uptime", 0) < 2 or not connected or max(connected) < 2:
            left = 3.0 - (time.monotonic() - start)
            if left <= 0:
                break
            try:
                m = c.messages.get(timeout=left)
            except Exception:
                break
            seen[m.topic] = seen.get(m.topic, 0) + 1
            if m.topic == "$SYS/broker/clients/connected":
                self.assertTrue(m.payload.isdigit(), m.payload)
                connected.append(int(m.payload))
            else:
                self.assertRegex(m.payload.decode("ascii", "replace"), r"^\d+")
        self.assertIn("$SYS/broker/uptime", seen, "no uptime within 3 s")
        self.assertIn("$SYS/broker/clients/connected", seen, "no clients/connected within 3 s")
        # at least one fresh publication (not only the retained copy) happened meanwhile
        self.assertGreaterEqual(seen["$SYS/broker/uptime"], 2, "uptime not republished in 3 s")
        self.assertGreaterEqual(max(connected), 2, "clients/connected values: %r" % connected)
        got = everything.collect(quiet=0.3)
        self.assertEqual([m.topic for m in got if m.topic.startswith("$")], [])


make_pki()

if __name__ == "__main__":
    brokerproc.run_tests()
