"""Start and stop a broker for the client tests, and run a test file.

The broker is the program named by the environment variable MQLITE_BIN (the mqlite build,
or /usr/sbin/mosquitto to check the tests themselves). It is started as
`$MQLITE_BIN -c CONF` with a temporary configuration that listens on a free port of
127.0.0.1 and allows anonymous clients, plus any extra lines a test asks for. Both brokers
accept the same lines.

Every wait here is bounded: the broker must open its port within START_TIMEOUT seconds,
and must exit within STOP_TIMEOUT seconds of SIGTERM or it is killed.

run_tests() runs a test module with unittest and ends with one line
"N passed, M failed" that the CI summary reads.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
HOST = "127.0.0.1"


def broker_path():
    """The broker program under test; exits the test file if MQLITE_BIN is not set."""
    path = os.environ.get("MQLITE_BIN")
    if not path:
        sys.exit("MQLITE_BIN is not set: point it at the broker to test "
                 "(e.g. MQLITE_BIN=/usr/sbin/mosquitto)")
    return path


def is_mosquitto():
    """True when the broker under test is mosquitto (used only to explain results)."""
    return os.path.basename(broker_path()).startswith("mosquitto")


def mosquitto_bug(why):
    """Decorator: the test is an expected failure when the broker is mosquitto, which
    gets this behaviour wrong (`why` names the bug); it must pass with mqlite."""
    def decorate(test):
        if is_mosquitto():
            test = unittest.expectedFailure(test)
            test.mosquitto_bug = why
        return test
    return decorate


def free_port():
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Broker:
    """One broker process with its own temporary directory and configuration.

    Use as a context manager, or call start() and stop(). `port` is the port clients
    connect to; `log()` returns what the broker wrote to stdout and stderr so far.
    """

    def __init__(self, extra_lines=(), files=None, extra_listeners=(), binary=None):
        """extra_lines: configuration lines added after the listener; files: a dict of
        name -> text written into the broker's directory before it starts (use
        "{dir}" in extra_lines to refer to that directory); extra_listeners: a list of
        lists of lines, each one more listener on its own free port of 127.0.0.1 with
        those lines after it (e.g. ["protocol websockets"]); their ports are in
        `ports[1:]` (`ports[0]` is `port`); binary: another broker program than
        MQLITE_BIN (e.g. mosquitto as the remote end of a bridge)."""
        self.binary = binary
        self.extra_lines = list(extra_lines)
        self.files = dict(files or {})
        self.extra_listeners = [list(lines) for lines in extra_listeners]
        self.port = None
        self.ports = []
        self.proc = None
        self.dir = None
        self._log = None
        self.killed = False  # stop() had to use SIGKILL

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        self.dir = tempfile.TemporaryDirectory(prefix="mqlite-clients-")
        # mosquitto started as root drops to its own user: it must still read our files.
        os.chmod(self.dir.name, 0o755)
        for name, text in self.files.items():
            with open(os.path.join(self.dir.name, name), "w") as f:
                f.write(text)
        # A port can be taken between free_port() and the broker's bind: try a few.
        last_error = None
        for _ in range(3):
            self.port = free_port()
            try:
                self._start_on(self.port)
                return
            except RuntimeError as e:
                last_error = e
        raise last_error

    def _start_on(self, port):
        conf = os.path.join(self.dir.name, "broker.conf")
        lines = ["listener %d %s" % (port, HOST), "allow_anonymous true"]
        if os.geteuid() == 0:
            # as root the broker would give root up (mqlite and mosquitto 2.0 alike): stay
            # root, to use the root-owned files of the test's directory
            lines.append("user root")
        lines += [line.replace("{dir}", self.dir.name) for line in self.extra_lines]
        self.ports = [port]
        for extra in self.extra_listeners:
            extra_port = free_port()
            while extra_port in self.ports:
                extra_port = free_port()
            self.ports.append(extra_port)
            lines.append("listener %d %s" % (extra_port, HOST))
            lines += [line.replace("{dir}", self.dir.name) for line in extra]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._launch()

    def _launch(self):
        """Run the broker on the configuration in self.dir (the log is appended to) and
        wait until every port accepts."""
        conf = os.path.join(self.dir.name, "broker.conf")
        log_path = os.path.join(self.dir.name, "broker.log")
        self._log = open(log_path, "a+b")
        self.proc = subprocess.Popen([self.binary or broker_path(), "-c", conf],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(self.ports)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("broker exited with status %s at start:\n%s"
                                   % (self.proc.returncode, self.log()))
            try:
                with socket.create_connection((HOST, waiting[0]), timeout=0.5):
                    waiting.pop(0)
                    if not waiting:
                        return
            except OSError:
                time.sleep(0.05)
        self._kill()
        raise RuntimeError("broker did not open port %d within %.0f s:\n%s"
                           % (waiting[0], START_TIMEOUT, self.log()))

    def log(self):
        if self._log is None:
            return ""
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def halt(self, kill=False):
        """Stop the process (SIGTERM as stop() does, or SIGKILL at once) but keep the
        directory and port for restart(). Returns the exit status."""
        status = None
        if self.proc is not None:
            if kill:
                self._kill()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    sys.stderr.write("broker ignored SIGTERM for %.0f s: killed\n"
                                     % STOP_TIMEOUT)
                    self.killed = True
                    self._kill()
            status = self.proc.returncode
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return status

    def restart(self):
        """Start again after halt(): same configuration, directory and ports."""
        self._launch()

    def stop(self):
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; remove the directory. Returns
        the exit status."""
        status = self.halt()
        if self.dir is not None:
            self.dir.cleanup()
            self.dir = None
        return status


def run_tests(module_name="__main__"):
    """Run every test of a module verbosely, print "N passed, M failed" and exit with
    status 0 when nothing failed."""
    broker_path()
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module_name])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    expected = len(result.expectedFailures)
    passed = result.testsRun - failed - skipped - expected
    if expected:
        print("%d expected failures (known broker bugs): %s" % (expected, "; ".join(
            test.id().split(".")[-1] for test, _ in result.expectedFailures)))
    if skipped:
        print("%d skipped: %s" % (skipped, "; ".join(
            "%s (%s)" % (test.id().split(".")[-1], why) for test, why in result.skipped)))
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
