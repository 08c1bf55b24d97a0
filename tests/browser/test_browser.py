#!/usr/bin/python3
"""A real browser against mqlite's WebSocket listener.

Headless Chromium (Debian's package) loads roundtrip.html from a small HTTP server of this
test on 127.0.0.1. The page loads MQTT.js's browser bundle (npm package mqtt, its
dist/mqtt.min.js), connects to ws://127.0.0.1:PORT/mqtt of a real mqlite started with
`protocol websockets`, subscribes to a topic, publishes to it and receives its own message.
It reports what it saw by POST /result; the test asserts the round trip:

  MQTT 3.1.1, QoS 0   CONNACK 0, SUBACK granting QoS 0, the message back with its payload.
  MQTT 5,     QoS 1   CONNACK 0, SUBACK granting QoS 1, PUBACK (the publish callback),
                      the message back at QoS 1 with its user property and content type.

On failure the page's log, Chromium's log (console included) and the broker's log are
printed. Every wait is bounded (PAGE_TIMEOUT in the page, RESULT_WAIT here, NPM_TIMEOUT
for the install).

MQTT.js is installed by `npm ci` from package.json / package-lock.json (this directory)
into MQLITE_NPM_DIR (the build directory; default: a directory beside this file that git
ignores), once: later runs reuse it while the lock file is unchanged.

Exit status 77 (meson: SKIP) only when chromium, node or npm is not on PATH. CHROMIUM may
name another Chromium binary.

Run: MQLITE_BIN=build/mqlite /usr/bin/python3 tests/browser/test_browser.py
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients"))

import brokerproc  # noqa: E402

SKIP = 77
PAGE_TIMEOUT = 8.0  # the page gives up on its round trip after this
RESULT_WAIT = 20.0  # this test waits for the page's report (Chromium start included)
NPM_TIMEOUT = 180.0
STOP_WAIT = 5.0
CHROMIUM = os.environ.get("CHROMIUM")  # a Chromium of one's choice; default: PATH's
NPM = shutil.which("npm")
NPM_FILES = ("package.json", "package-lock.json", ".npmrc")


def find_programs():
    """Exits 77 (SKIP) when chromium, node or npm is not installed; exits 1 when CHROMIUM
    names a program that is not there (a mistake, not a machine without a browser)."""
    global CHROMIUM
    if CHROMIUM:
        if not os.access(CHROMIUM, os.X_OK):
            sys.exit("FAIL: CHROMIUM=%s is not an executable program" % CHROMIUM)
    else:
        CHROMIUM = shutil.which("chromium")
    missing = [name for name, path in (("chromium", CHROMIUM), ("node", shutil.which("node")),
                                       ("npm", NPM)) if not path]
    if missing:
        print("SKIP: %s not installed (Debian packages chromium, nodejs, npm; "
              "`bash .ci/deps.sh test` installs them)" % ", ".join(missing))
        sys.exit(SKIP)


# ---- MQTT.js from the npm registry ------------------------------------------------------

def npm_dir():
    return os.environ.get("MQLITE_NPM_DIR") or os.path.join(HERE, "node_modules", ".mqlite")


def mqtt_bundle():
    """The path of mqtt.min.js, installed with `npm ci` unless the installed copy matches
    our package-lock.json. Fails the test file with npm's output when npm fails."""
    work = npm_dir()
    bundle = os.path.join(work, "node_modules", "mqtt", "dist", "mqtt.min.js")
    stamp = os.path.join(work, "installed-lock.json")
    with open(os.path.join(HERE, "package-lock.json"), "rb") as f:
        lock = f.read()
    if os.path.exists(bundle) and os.path.exists(stamp):
        with open(stamp, "rb") as f:
            if f.read() == lock:
                return bundle
    os.makedirs(work, exist_ok=True)
    for name in NPM_FILES:
        shutil.copyfile(os.path.join(HERE, name), os.path.join(work, name))
    if os.path.exists(stamp):
        os.unlink(stamp)
    print("installing MQTT.js with npm ci into %s" % work, flush=True)
    try:
        out = subprocess.run([NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                             cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=NPM_TIMEOUT)
        text, status = out.stdout.decode("utf-8", "replace"), out.returncode
    except subprocess.TimeoutExpired as e:
        text, status = (e.output or b"").decode("utf-8", "replace"), "timeout"
    if status != 0 or not os.path.exists(bundle):
        print("%s\nFAIL: `npm ci` in %s could not install the npm package mqtt (status %s): "
              "is the npm registry reachable? npm's output is above.\n0 passed, 1 failed"
              % (text, work, status))
        sys.exit(1)
    with open(stamp, "wb") as f:
        f.write(lock)
    return bundle


# ---- the page's HTTP server -------------------------------------------------------------

class PageServer:
    """Serves the page, its script and the bundle on 127.0.0.1, and takes the page's report
    (POST /result). `wait_result()` returns it, or None after the bound."""

    def __init__(self, bundle):
        self.files = {
            "/roundtrip.html": (os.path.join(HERE, "roundtrip.html"), "text/html"),
            "/roundtrip.js": (os.path.join(HERE, "roundtrip.js"), "text/javascript"),
            "/mqtt.min.js": (bundle, "text/javascript"),
        }
        self.requests = []
        self.result = None
        self.got_result = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                server.requests.append(fmt % args)

            def do_GET(self):
                entry = server.files.get(self.path.split("?")[0])
                if entry is None:
                    self.send_error(404)
                    return
                with open(entry[0], "rb") as f:
                    body = f.read()
                self.send_response(200)
                self.send_header("Content-Type", entry[1] + "; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                if self.path != "/result":
                    self.send_error(404)
                    return
                size = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(size)
                self.send_response(204)
                self.end_headers()
                try:
                    server.result = json.loads(body)
                except ValueError:
                    server.result = {"outcome": "bad report", "error": body[:500].decode(
                        "utf-8", "replace")}
                server.got_result.set()

        self.httpd = ThreadingHTTPServer((brokerproc.HOST, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_result(self, timeout):
        return self.result if self.got_result.wait(timeout) else None

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(STOP_WAIT)


# ---- Chromium ---------------------------------------------------------------------------

class Browser:
    """Headless Chromium on one URL, in its own process group and profile directory; its
    stderr (with the page's console) goes to a log file."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--enable-logging=stderr", "--v=0"]

    def __init__(self, url):
        self.profile = tempfile.mkdtemp(prefix="mqlite-browser-")
        self.log_file = open(os.path.join(self.profile, "chromium.log"), "w+b")
        self.proc = subprocess.Popen(
            [CHROMIUM] + self.FLAGS + ["--user-data-dir=" + self.profile, url],
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True)

    def log(self):
        self.log_file.flush()
        with open(self.log_file.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        """Stops Chromium (bounded) and returns its log. SIGTERM to the browser process lets
        it end its children (renderer, zygote, GPU); SIGKILL to its process group then ends
        whatever is left, so that no browser outlives the test."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                sys.stderr.write("chromium ignored SIGTERM for %.0f s: killed\n" % STOP_WAIT)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=STOP_WAIT)
        text = self.log()
        # Headless Chromium without a D-Bus complains at length about it: noise here.
        lines = text.splitlines(keepends=True)
        kept = [line for line in lines if "dbus" not in line.lower().replace("-", "")]
        if len(kept) != len(lines):
            kept.append("(%d lines about D-Bus left out)\n" % (len(lines) - len(kept)))
        text = "".join(kept)
        self.log_file.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        return text


# ---- tests ------------------------------------------------------------------------------

class BrowserRoundTrip(unittest.TestCase):
    bundle = None  # mqtt.min.js, set before the tests run

    def round_trip(self, proto, qos):
        """Runs the page against a fresh broker; returns its report, or fails the test with
        every log there is."""
        topic = "browser/%d/%s" % (proto, secrets.token_hex(4))
        payload = "hello from chromium, MQTT %d QoS %d" % (proto, qos)
        pages = PageServer(self.bundle)
        self.addCleanup(pages.close)
        with brokerproc.Broker(extra_listeners=[["protocol websockets"]]) as broker:
            query = urllib.parse.urlencode({
                "ws": "ws://%s:%d/mqtt" % (brokerproc.HOST, broker.ports[1]),
                "proto": proto, "qos": qos, "topic": topic, "payload": payload,
                "id": "chromium-%d-%d" % (proto, qos),
                "timeout_ms": int(PAGE_TIMEOUT * 1000)})
            url = "http://%s:%d/roundtrip.html?%s" % (brokerproc.HOST, pages.port, query)
            browser = Browser(url)
            try:
                report = pages.wait_result(RESULT_WAIT)
            finally:
                chromium_log = browser.close()
            broker_log = broker.log()
        details = ("url: %s\npage report: %s\nHTTP requests:\n  %s\n--- chromium log:\n%s"
                   "--- broker log:\n%s" % (
                       url, json.dumps(report, indent=1), "\n  ".join(pages.requests),
                       chromium_log, broker_log))
        if report is None:
            self.fail("no report from the page within %.0f s\n%s" % (RESULT_WAIT, details))
        if report.get("outcome") != "received":
            self.fail("round trip failed: %s: %s\n%s" % (
                report.get("outcome"), report.get("error"), details))
        steps = report["steps"]
        steps["received"] = report["received"]
        print("\n  MQTT %d QoS %d round trip: %s" % (proto, qos, json.dumps(steps)), flush=True)
        self.details = details
        return topic, payload, steps

    def check(self, cond, what):
        self.assertTrue(cond, "%s\n%s" % (what, self.details))

    def test_v311_qos0(self):
        topic, payload, steps = self.round_trip(4, 0)
        self.check(steps["connack"]["returnCode"] == 0, "CONNACK return code not 0")
        self.check(steps["suback"] == [{"topic": topic, "qos": 0}], "SUBACK not QoS 0")
        self.check(steps["published"]["error"] is None, "publish failed")
        msg = steps["message"]
        self.check(msg["topic"] == topic and msg["payload"] == payload,
                   "message back is not the one published")
        self.check(msg["qos"] == 0, "message back not at QoS 0")
        self.check(sorted(steps["received"]) == ["connack", "publish", "suback"],
                   "packets from the broker are not CONNACK, SUBACK, PUBLISH")

    def test_v5_qos1(self):
        topic, payload, steps = self.round_trip(5, 1)
        self.check(steps["connack"]["reasonCode"] == 0, "CONNACK reason code not 0")
        self.check(steps["suback"] == [{"topic": topic, "qos": 1}], "SUBACK not QoS 1")
        # The publish callback of a QoS 1 message runs on its PUBACK; a PUBACK without a
        # reason code means success (0x00, section 3.4.2.1).
        self.check(steps["published"]["error"] is None, "publish failed")
        self.check(steps["published"]["reasonCode"] in (None, 0), "PUBACK reason not 0")
        self.check(sorted(steps["received"]) == ["connack", "puback", "publish", "suback"],
                   "packets from the broker are not CONNACK, SUBACK, PUBACK, PUBLISH")
        msg = steps["message"]
        self.check(msg["topic"] == topic and msg["payload"] == payload,
                   "message back is not the one published")
        self.check(msg["qos"] == 1 and msg["messageId"], "message back not at QoS 1")
        props = msg["properties"] or {}
        # [MQTT-3.3.2-17] user properties and [MQTT-3.3.2-20] content type are forwarded.
        self.check(props.get("userProperties") == {"origin": "browser"},
                   "user property not forwarded")
        self.check(props.get("contentType") == "text/plain", "content type not forwarded")


if __name__ == "__main__":
    find_programs()
    BrowserRoundTrip.bundle = mqtt_bundle()
    brokerproc.run_tests()
