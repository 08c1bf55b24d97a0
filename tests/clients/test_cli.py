#!/usr/bin/python3
"""End-to-end tests with mosquitto's command line clients, mosquitto_pub and mosquitto_sub.

Each test starts its own broker ($MQLITE_BIN) and checks that what mosquitto_pub sends,
mosquitto_sub prints: QoS 0, 1 and 2, retained messages (-r), counts (-C) with a timeout
(-W) so nothing hangs, MQTT 3.1.1 (-V mqttv311) and 5 (-V 5), persistent sessions (-c),
and the exit status of mosquitto_pub when the broker refuses or is absent.

A subscriber runs with -d so the test can see its SUBACK before publishing; its message
lines are told apart from the debug lines by a fixed output format (-F).

Run: MQLITE_BIN=build/mqlite /usr/bin/python3 tests/clients/test_cli.py
"""

import os
import queue
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import brokerproc  # noqa: E402

PUB = "/usr/bin/mosquitto_pub"
SUB = "/usr/bin/mosquitto_sub"
WAIT = 5  # seconds: -W of every subscriber, and the bound of every wait
MARK = "MSG|"  # message lines start with this (-F), debug lines never do


class Sub:
    """A mosquitto_sub process whose output lines are read by a thread."""

    def __init__(self, port, args, count=None):
        # stdbuf: mosquitto_sub buffers its output when it is a pipe; we need each line now
        cmd = ["stdbuf", "-oL", SUB, "-h", brokerproc.HOST, "-p", str(port), "-d", "-W", str(WAIT),
               "-F", MARK + "%t|%q|%r|%p"]
        if count is not None:
            cmd += ["-C", str(count)]
        self.proc = subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.lines = queue.Queue()
        self.all_lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.all_lines.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_subscribed(self):
        """Wait (bounded) until mosquitto_sub printed that its SUBACK arrived."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            if "received SUBACK" in line:
                return
        raise AssertionError("mosquitto_sub did not get a SUBACK:\n" + "\n".join(self.all_lines))

    def finish(self):
        """Wait for the process to exit (it has -C/-W); returns (status, messages) where a
        message is (topic, qos, retain, payload)."""
        try:
            status = self.proc.wait(timeout=WAIT + 3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("mosquitto_sub still running after %d s" % (WAIT + 3))
        self.reader.join(timeout=2)
        msgs = []
        for line in self.all_lines:
            if line.startswith(MARK):
                topic, qos, retain, payload = line[len(MARK):].split("|", 3)
                msgs.append((topic, int(qos), int(retain), payload))
        return status, msgs

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class CliTestCase(unittest.TestCase):

    def setUp(self):
        self.broker = brokerproc.Broker()
        self.broker.start()
        self.port = self.broker.port
        self.subs = []

    def tearDown(self):
        for s in self.subs:
            s.kill()
        self.broker.stop()
        self.assertFalse(self.broker.killed, "the broker ignored SIGTERM")

    def sub(self, *args, count=None):
        s = Sub(self.port, args, count)
        self.subs.append(s)
        return s

    def pub(self, *args, expect_status=0):
        cmd = [PUB, "-h", brokerproc.HOST, "-p", str(self.port)] + list(args)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=WAIT + 3)
        if expect_status is not None:
            self.assertEqual(r.returncode, expect_status,
                             "%s -> %d:\n%s" % (" ".join(cmd), r.returncode,
                                                r.stdout.decode("utf-8", "replace")))
        return r


class PubSub(CliTestCase):

    def test_hash_receives_everything(self):
        s = self.sub("-t", "#", "-q", "2", count=3)
        s.wait_subscribed()
        self.pub("-t", "a", "-m", "zero", "-q", "0")
        self.pub("-t", "a/b", "-m", "one", "-q", "1")
        self.pub("-t", "a/b/c", "-m", "two", "-q", "2")
        status, msgs = s.finish()
        self.assertEqual(status, 0)
        self.assertEqual(msgs, [("a", 0, 0, "zero"), ("a/b", 1, 0, "one"), ("a/b/c", 2, 0, "two")])

    def test_verbose_output(self):
        # the plain -v format: "topic payload"
        cmd = [SUB, "-h", brokerproc.HOST, "-p", str(self.port), "-t", "#", "-v", "-C", "1",
               "-W", str(WAIT)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)  # no -d here: give the subscription time to be made
            self.pub("-t", "sensors/t1", "-m", "21.5 C", "-q", "1")
            out, err = proc.communicate(timeout=WAIT + 3)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(out.decode(), "sensors/t1 21.5 C\n")

    def test_qos_is_min_of_pub_and_sub(self):
        s = self.sub("-t", "q", "-q", "1", count=3)
        s.wait_subscribed()
        for qos in ("0", "1", "2"):
            self.pub("-t", "q", "-m", "pub qos " + qos, "-q", qos)
        _, msgs = s.finish()
        self.assertEqual([(m[1], m[3]) for m in msgs],
                         [(0, "pub qos 0"), (1, "pub qos 1"), (1, "pub qos 2")])

    def test_count_and_timeout(self):
        # -C 2 with only one message: -W ends it, status 27 (timeout) in mosquitto_sub
        s = self.sub("-t", "only/one", count=2)
        s.wait_subscribed()
        self.pub("-t", "only/one", "-m", "1")
        start = time.monotonic()
        status, msgs = s.finish()
        self.assertEqual(msgs, [("only/one", 0, 0, "1")])
        self.assertNotEqual(status, 0, "mosquitto_sub -C 2 ended with one message")
        self.assertLess(time.monotonic() - start, WAIT + 2)

    def test_wildcards(self):
        s = self.sub("-t", "home/+/temp", "-t", "office/#", count=3)
        s.wait_subscribed()
        for topic in ("home/kitchen/temp", "home/kitchen/light", "home/a/b/temp", "office",
                      "office/desk/1", "home/hall/temp"):
            self.pub("-t", topic, "-m", topic, "-q", "1")
        _, msgs = s.finish()
        self.assertEqual([m[0] for m in msgs], ["home/kitchen/temp", "office", "office/desk/1"])
        # "home/hall/temp" came after -C 3 was reached

    def test_payload_from_file_and_null(self):
        path = os.path.join(self.broker.dir.name, "payload.bin")
        with open(path, "wb") as f:
            f.write(b"line one\nline two")
        s = self.sub("-t", "f", "-q", "1", count=2)
        s.wait_subscribed()
        self.pub("-t", "f", "-f", path, "-q", "1")  # -f: the payload is the file
        self.pub("-t", "f", "-n", "-q", "1")  # -n: zero-length payload
        status, msgs = s.finish()
        self.assertEqual(status, 0)
        # the first payload spans two output lines
        self.assertIn(MARK + "f|1|0|line one\nline two\n", "\n".join(s.all_lines) + "\n")
        self.assertEqual(msgs[1], ("f", 1, 0, ""))

    def test_many_lines_from_stdin(self):
        s = self.sub("-t", "lines", "-q", "1", count=100)
        s.wait_subscribed()
        data = "".join("line %d\n" % i for i in range(100)).encode()
        cmd = [PUB, "-h", brokerproc.HOST, "-p", str(self.port), "-t", "lines", "-q", "1", "-l"]
        r = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=WAIT + 3)
        self.assertEqual(r.returncode, 0, r.stdout)
        _, msgs = s.finish()
        self.assertEqual([m[3] for m in msgs], ["line %d" % i for i in range(100)])


class Retained(CliTestCase):

    def test_retained_is_delivered_to_later_subscriber(self):
        self.pub("-t", "state/door", "-m", "open", "-r", "-q", "1")
        s = self.sub("-t", "state/#", "-q", "1", count=1)
        status, msgs = s.finish()
        self.assertEqual(status, 0)
        self.assertEqual(msgs, [("state/door", 1, 1, "open")])

    def test_retained_only_last(self):
        for value in ("1", "2", "3"):
            self.pub("-t", "counter", "-m", value, "-r")
        s = self.sub("-t", "counter", count=1)
        _, msgs = s.finish()
        self.assertEqual(msgs, [("counter", 0, 1, "3")])

    def test_no_stale_with_R(self):
        # -R: mosquitto_sub does not print messages that arrive with RETAIN 1
        self.pub("-t", "r", "-m", "old", "-r")
        s = self.sub("-t", "r", "-R", count=1)
        s.wait_subscribed()
        self.pub("-t", "r", "-m", "new")
        _, msgs = s.finish()
        self.assertEqual(msgs, [("r", 0, 0, "new")])

    def test_remove_retained(self):
        self.pub("-t", "gone", "-m", "x", "-r")
        self.pub("-t", "gone", "-n", "-r")  # an empty retained message deletes it
        s = self.sub("-t", "gone", count=1)
        s.wait_subscribed()
        self.pub("-t", "gone", "-m", "live")
        _, msgs = s.finish()
        self.assertEqual(msgs, [("gone", 0, 0, "live")])


class Versions(CliTestCase):

    def check_version(self, pub_version, sub_version):
        s = self.sub("-t", "v/#", "-q", "2", "-V", sub_version, count=3)
        s.wait_subscribed()
        for qos in ("0", "1", "2"):
            self.pub("-V", pub_version, "-t", "v/" + qos, "-m", "q" + qos, "-q", qos)
        status, msgs = s.finish()
        self.assertEqual(status, 0)
        self.assertEqual(msgs, [("v/0", 0, 0, "q0"), ("v/1", 1, 0, "q1"), ("v/2", 2, 0, "q2")])

    def test_v311_to_v311(self):
        self.check_version("mqttv311", "mqttv311")

    def test_v5_to_v5(self):
        self.check_version("5", "5")

    def test_v5_to_v311(self):
        self.check_version("5", "mqttv311")

    def test_v311_to_v5(self):
        self.check_version("mqttv311", "mqttv5")

    def test_v5_retained(self):
        self.pub("-V", "5", "-t", "v5/ret", "-m", "kept", "-r", "-q", "2")
        s = self.sub("-V", "5", "-t", "v5/#", count=1)
        _, msgs = s.finish()
        self.assertEqual(msgs, [("v5/ret", 0, 1, "kept")])

    def test_v5_user_property_and_content_type(self):
        # properties pass through: %P prints user properties in mosquitto_sub 2.0
        cmd = [SUB, "-h", brokerproc.HOST, "-p", str(self.port), "-V", "5", "-t", "p",
               "-C", "1", "-W", str(WAIT), "-F", "%t|%P|%p"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            self.pub("-V", "5", "-t", "p", "-m", "with props", "-q", "1",
                     "-D", "publish", "user-property", "site", "plant-7")
            out, err = proc.communicate(timeout=WAIT + 3)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(out.decode(), "p|site:plant-7|with props\n")


class Sessions(CliTestCase):

    def test_persistent_session_gets_offline_messages(self):
        # -c: clean session 0 (v3.1.1); -E: exit once subscribed
        base = [SUB, "-h", brokerproc.HOST, "-p", str(self.port), "-i", "cli-persistent",
                "-c", "-q", "1", "-t", "offline/#"]
        r = subprocess.run(base + ["-E"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=WAIT + 3)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.pub("-t", "offline/1", "-m", "while away 1", "-q", "1")
        self.pub("-t", "offline/2", "-m", "while away 2", "-q", "2")
        r = subprocess.run(base + ["-C", "2", "-W", str(WAIT), "-v"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=WAIT + 3)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout.decode(), "offline/1 while away 1\noffline/2 while away 2\n")

    def test_v5_session_expiry(self):
        # -x: Session Expiry Interval; a session with expiry 60 keeps messages
        base = [SUB, "-h", brokerproc.HOST, "-p", str(self.port), "-V", "5", "-i", "cli-v5-sess",
                "-c", "-x", "60", "-q", "1", "-t", "x/#"]
        r = subprocess.run(base + ["-E"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=WAIT + 3)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.pub("-V", "5", "-t", "x/1", "-m", "kept", "-q", "1")
        r = subprocess.run(base + ["-C", "1", "-W", str(WAIT), "-v"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=WAIT + 3)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout.decode(), "x/1 kept\n")


class Errors(CliTestCase):

    def test_pub_to_a_closed_port_fails(self):
        port = brokerproc.free_port()
        r = subprocess.run([PUB, "-h", brokerproc.HOST, "-p", str(port), "-t", "t", "-m", "x"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT + 3)
        self.assertNotEqual(r.returncode, 0)

    def test_pub_with_wildcard_topic_is_refused_by_the_client(self):
        r = self.pub("-t", "a/#", "-m", "x", expect_status=None)
        self.assertNotEqual(r.returncode, 0)

    def test_broker_survives_client_errors(self):
        # After a refused publish the broker still serves clients
        self.pub("-t", "a/+", "-m", "x", expect_status=None)
        s = self.sub("-t", "ok", count=1)
        s.wait_subscribed()
        self.pub("-t", "ok", "-m", "fine")
        _, msgs = s.finish()
        self.assertEqual(msgs, [("ok", 0, 0, "fine")])


def run():
    if not (os.access(PUB, os.X_OK) and os.access(SUB, os.X_OK)):
        print("mosquitto_pub/mosquitto_sub not installed (Debian: mosquitto-clients)")
        print("0 passed, 0 failed")
        sys.exit(77)  # meson: skipped
    brokerproc.run_tests()


if __name__ == "__main__":
    run()
