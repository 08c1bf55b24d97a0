#!/usr/bin/python3
"""Run mosquitto's own broker test suite (MQTT 3.1.1 and 5.0) against mqlite and mosquitto.

The suite is not ours and is not in this repository: it is the test/ directory of the
mosquitto 2.0.11 source tarball that Debian 12 ships (EPL-2.0 / EDL-1.0), downloaded at
test time into WORK_DIR, checked against the SHA-256 pinned below and cached there.

For each broker a copy of test/ is made under WORK_DIR/run-BROKER/ with a `src/mosquitto`
next to it, which is what the tests start (`../../src/mosquitto -c X.conf` or `-p PORT`,
from test/broker/): for mosquitto the real /usr/sbin/mosquitto, for mqlite shim.py, which
maps the few mosquitto options that need it and execs mqlite. Every test gets its own free
port(s) on the command line (the suite's mosq_test.get_port() reads them from argv), a time
limit, and runs in its own process group, N at a time.

Which tests: those listed in the suite's test/broker/test.py, minus excluded.txt (tests of
mosquitto-only machinery, or of behaviour the specification leaves to the broker; one line
each with the reason). baseline.txt lists the selected tests the Debian mosquitto 2.0.11
passes here (written with --write-baseline, run against mosquitto).

    run.py --work-dir DIR --mqlite BUILD/mqlite                 # both brokers, a table
    run.py --work-dir DIR --mqlite BUILD/mqlite --brokers mqlite --check-baseline
    run.py --work-dir DIR --brokers mosquitto --write-baseline  # regenerate baseline.txt
    run.py ... 02-subpub-qos1.py 07-will-qos0.py                # only these

With --check-baseline the run fails if a baseline test fails on mqlite, and the last line
is "N passed, M failed" (N: selected tests that pass on mqlite, M: baseline tests that fail
on it). If the tarball can be neither found in the cache nor downloaded, the run fails
(exit 1) with the reason: a conformance run that did not run must not look green. Set
MQLITE_CONFORMANCE_TARBALL to a local copy to run offline.
"""

import argparse
import concurrent.futures
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request

VERSION = "2.0.11"
TARBALL = f"mosquitto_{VERSION}.orig.tar.gz"
URLS = [
    f"http://deb.debian.org/debian/pool/main/m/mosquitto/{TARBALL}",
    f"https://deb.debian.org/debian/pool/main/m/mosquitto/{TARBALL}",
]
# From mosquitto_2.0.11-1.2+deb12u2.dsc (Debian 12), Checksums-Sha256.
SHA256 = "7b36a7198bce85cf31b132f5c6ee36dcf5dadf86fb768501eb1e11ce95d4f78a"
DOWNLOAD_TIMEOUT = 60

HERE = os.path.dirname(os.path.abspath(__file__))
EXCLUDED = os.path.join(HERE, "excluded.txt")
BASELINE = os.path.join(HERE, "baseline.txt")
SHIM = os.path.join(HERE, "shim.py")
PYTHON = "/usr/bin/python3"

# Tests that need longer than the default limit (they wait out expiry intervals etc.).
SLOW = {}


class Unavailable(Exception):
    """The suite could not be obtained; the message says why."""


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def fetch(work_dir):
    """Path of the verified tarball in work_dir, downloading it if needed."""
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, TARBALL)
    if os.path.exists(path) and sha256_of(path) == SHA256:
        return path
    local = os.environ.get("MQLITE_CONFORMANCE_TARBALL")
    errors = []
    if local:
        if not os.path.exists(local):
            raise Unavailable(f"MQLITE_CONFORMANCE_TARBALL={local}: no such file")
        shutil.copyfile(local, path + ".part")
    else:
        for url in URLS:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as r, \
                        open(path + ".part", "wb") as f:
                    shutil.copyfileobj(r, f)
                break
            except OSError as e:
                errors.append(f"{url}: {e}")
        else:
            raise Unavailable("cannot download the mosquitto test suite: " + "; ".join(errors))
    got = sha256_of(path + ".part")
    if got != SHA256:
        os.remove(path + ".part")
        raise Unavailable(f"{TARBALL}: SHA-256 {got}, expected {SHA256} (not used)")
    os.replace(path + ".part", path)
    return path


def extract(tarball, work_dir):
    """Extract test/ once into work_dir/src-VERSION; returns that directory."""
    dest = os.path.join(work_dir, f"src-{VERSION}")
    stamp = os.path.join(dest, ".complete")
    if os.path.exists(stamp):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    prefix = f"mosquitto-{VERSION}/test/"
    with tarfile.open(tarball) as t:
        members = [m for m in t.getmembers()
                   if m.name.startswith(prefix) and (m.isfile() or m.isdir())
                   and ".." not in m.name.split("/")]
        for m in members:
            m.name = m.name[len(f"mosquitto-{VERSION}/"):]
        t.extractall(dest, members=members)
    open(stamp, "w").close()
    return dest


def prepare_tree(src, work_dir, broker, binary):
    """A fresh copy of test/ for one broker, with src/mosquitto starting that broker."""
    root = os.path.join(work_dir, f"run-{broker}")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(os.path.join(src, "test"), os.path.join(root, "test"))
    os.makedirs(os.path.join(root, "src"))
    shim = os.path.join(root, "src", "mosquitto")
    with open(shim, "w") as f:
        if broker == "mqlite":
            f.write(f'#!/bin/sh\nexec {PYTHON} "{SHIM}" "{binary}" "$@"\n')
        else:
            f.write(f'#!/bin/sh\nexec "{binary}" "$@"\n')
    os.chmod(shim, 0o755)
    return os.path.join(root, "test", "broker")


def suite_tests(src):
    """(name, number of ports) for every test the suite's own test.py runs."""
    with open(os.path.join(src, "test", "broker", "test.py")) as f:
        text = f.read()
    tests = []
    for ports, name in re.findall(r"^\s*\((\d+),\s*'\./([^']+\.py)'\)", text, re.M):
        tests.append((name, int(ports)))
    return tests


def read_list(path):
    """{test: reason} from a file of 'TEST  reason' lines ('#' comments, blank lines)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition(" ")
            out[name] = reason.strip()
    return out


class Ports:
    """Hands out TCP ports that are free now and were not given out before in this run.
    They come from below the usual ephemeral range, so a client socket of another test is
    unlikely to take one between the check and the broker's bind."""

    def __init__(self):
        self.lock = threading.Lock()
        self.given = set()
        self.rng = random.Random(os.getpid() ^ int(time.time()))

    def take(self, n):
        with self.lock:
            ports = []
            while len(ports) < n:
                p = self.rng.randrange(20000, 32000)
                if p in self.given or not self.is_free(p):
                    continue
                self.given.add(p)
                ports.append(p)
            return ports

    @staticmethod
    def is_free(port):
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.bind((addr, port))
            except OSError:
                return False
            finally:
                s.close()
        return True


def run_one(test_dir, name, nports, ports, timeout, log_dir):
    """Run one test file; returns ('PASS'|'FAIL'|'TIMEOUT', seconds)."""
    args = [PYTHON, name] + [str(p) for p in ports.take(nports)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    env.pop("MOSQ_USE_VALGRIND", None)
    t0 = time.monotonic()
    log_path = os.path.join(log_dir, name.replace(".py", ".log"))
    with open(log_path, "wb") as log:
        log.write((" ".join(args) + "\n").encode())
        log.flush()
        p = subprocess.Popen(args, cwd=test_dir, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
            result = "PASS" if rc == 0 else "FAIL"
        except subprocess.TimeoutExpired:
            result = "TIMEOUT"
        # the test and every broker it started are in its process group
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        elapsed = time.monotonic() - t0
        log.write(f"\n== {result} (exit {p.returncode}) in {elapsed:.1f} s\n".encode())
    return result, elapsed


def run_broker(test_dir, broker, names, nports, jobs, timeout, log_dir, ports):
    os.makedirs(log_dir, exist_ok=True)
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_one, test_dir, n, nports[n], ports,
                               SLOW.get(n, timeout), log_dir): n for n in names}
        for f in concurrent.futures.as_completed(futures):
            n = futures[f]
            results[n] = f.result()
            print(f"  {broker:9s} {results[n][0]:7s} {results[n][1]:5.1f}s  {n}", flush=True)
    return results


def tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work-dir", required=True, help="cache and scratch directory")
    ap.add_argument("--mqlite", help="the mqlite binary")
    ap.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    ap.add_argument("--brokers", default="mosquitto,mqlite")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=40.0, help="seconds per test")
    ap.add_argument("--check-baseline", action="store_true",
                    help="fail if a test of baseline.txt fails on mqlite")
    ap.add_argument("--write-baseline", action="store_true",
                    help="write baseline.txt: the selected tests mosquitto passes")
    ap.add_argument("--all", action="store_true", help="also run the excluded tests")
    ap.add_argument("tests", nargs="*", help="run only these (file names)")
    opt = ap.parse_args()

    brokers = [b for b in opt.brokers.split(",") if b]
    for b in brokers:
        if b not in ("mosquitto", "mqlite"):
            sys.exit(f"--brokers: unknown broker '{b}' (mosquitto, mqlite)")
    if "mqlite" in brokers and not (opt.mqlite and os.access(opt.mqlite, os.X_OK)):
        sys.exit(f"--mqlite: '{opt.mqlite}' is not an executable mqlite binary")
    if "mosquitto" in brokers and not os.access(opt.mosquitto, os.X_OK):
        sys.exit(f"--mosquitto: '{opt.mosquitto}' not found (Debian package mosquitto)")
    if opt.write_baseline and (brokers != ["mosquitto"] or opt.tests):
        sys.exit("--write-baseline needs --brokers mosquitto and the whole selection")
    if opt.check_baseline and "mqlite" not in brokers:
        sys.exit("--check-baseline needs mqlite among --brokers")

    work_dir = os.path.abspath(opt.work_dir)
    try:
        src = extract(fetch(work_dir), work_dir)
    except Unavailable as e:
        print(f"conformance: NOT RUN: {e}")
        print("conformance: set MQLITE_CONFORMANCE_TARBALL to a copy of "
              f"{TARBALL} (sha256 {SHA256}) to run offline")
        print("0 passed, 1 failed")
        return 1

    all_tests = suite_tests(src)
    nports = dict(all_tests)
    excluded = read_list(EXCLUDED)
    baseline = set(read_list(BASELINE))
    unknown = sorted((set(excluded) | baseline) - set(nports))
    if unknown:
        sys.exit(f"excluded.txt/baseline.txt name tests the suite does not have: {unknown}")
    missing = [n for n in nports if not os.path.exists(os.path.join(src, "test", "broker", n))]
    selected = [n for n, _ in all_tests
                if (opt.all or n not in excluded) and n not in missing]
    if opt.tests:
        bad = [t for t in opt.tests if t not in nports]
        if bad:
            sys.exit(f"not a test of the suite: {bad}")
        selected = [t for t in opt.tests if t not in missing]

    print(f"mosquitto {VERSION} broker tests: {len(all_tests)} in test.py, "
          f"{len(excluded)} excluded (excluded.txt), {len(missing)} listed but not in the "
          f"tarball {missing}, {len(selected)} to run", flush=True)

    t0 = time.monotonic()
    ports = Ports()
    results = {}
    for b in brokers:
        binary = opt.mqlite if b == "mqlite" else opt.mosquitto
        test_dir = prepare_tree(src, work_dir, b, os.path.abspath(binary))
        results[b] = run_broker(test_dir, b, selected, nports, opt.jobs, opt.timeout,
                                os.path.join(work_dir, "logs", b), ports)

    print()
    print(f"{'test':48s} {'mosquitto':9s} {'mqlite':9s} note")
    for n in selected:
        row = {b: results.get(b, {}).get(n, ("-", 0))[0] for b in ("mosquitto", "mqlite")}
        note = ""
        if n in excluded:
            note = "excluded: " + excluded[n]
        elif row["mqlite"] == "PASS" and row["mosquitto"] not in ("PASS", "-"):
            note = "mosquitto fails, mqlite passes"
        elif row["mqlite"] not in ("PASS", "-") and row["mosquitto"] == "PASS":
            note = "REGRESSION: mosquitto passes, mqlite fails"
        elif row["mqlite"] not in ("PASS", "-") and n in baseline:
            note = "REGRESSION: in baseline.txt, mqlite fails"
        elif row["mqlite"] not in ("PASS", "-") and row["mosquitto"] != "PASS":
            note = "fails on both" if row["mosquitto"] != "-" else ""
        print(f"{n:48s} {row['mosquitto']:9s} {row['mqlite']:9s} {note}")
    print()
    for b in brokers:
        n_pass = sum(1 for n in selected if results[b][n][0] == "PASS")
        print(f"{b}: {n_pass} of {len(selected)} selected tests pass")
    print(f"wall time {time.monotonic() - t0:.0f} s; logs in {work_dir}/logs/BROKER/TEST.log")

    if opt.write_baseline:
        passed = [n for n in selected if results["mosquitto"][n][0] == "PASS"]
        with open(BASELINE, "w") as f:
            f.write(f"# Selected tests of mosquitto {VERSION}'s test/broker/ that the Debian 12 "
                    "mosquitto\n# (/usr/sbin/mosquitto) passes here. Written by "
                    "`run.py --brokers mosquitto --write-baseline`.\n")
            for n in passed:
                f.write(n + "\n")
        print(f"wrote {BASELINE}: {len(passed)} tests")

    if "mqlite" in brokers:
        mq = results["mqlite"]
        must = baseline if opt.check_baseline else set()
        if "mosquitto" in brokers:
            must = must | {n for n in selected if results["mosquitto"][n][0] == "PASS"}
        failed = sorted(n for n in selected if n in must and mq[n][0] != "PASS")
        for n in failed:
            print(f"\n--- {n} on mqlite ({mq[n][0]}), end of its log:")
            print(tail(os.path.join(work_dir, "logs", "mqlite", n.replace(".py", ".log"))))
        n_pass = sum(1 for n in selected if mq[n][0] == "PASS")
        others = [n for n in selected if mq[n][0] != "PASS" and n not in must]
        if others:
            print(f"not counted (mosquitto fails them too / not in the baseline): {others}")
        print(f"{n_pass} passed, {len(failed)} failed")
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
