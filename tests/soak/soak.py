#!/usr/bin/python3
"""Soak test: N minutes of mixed load with churn against one mqlite broker (not in CI).

    /usr/bin/python3 tests/soak/soak.py [--minutes 30] [--broker build/mqlite]
                                        [--max-growth-kib 8192] [--keep]

Starts the broker on a free 127.0.0.1 port with persistence on (its store in a temporary
directory), then runs, all at once and all the time:
  - QoS 0: a publisher (about 200 msg/s) and a subscriber;
  - QoS 1 to a persistent session (clean session 0) whose client disconnects every 10 s
    and comes back 2 s later: messages published meanwhile wait in its queue;
  - QoS 2: a publisher and a subscriber, exactly once;
  - retained: 50 retained topics rewritten every 5 s; every 5 s a fresh client subscribes
    and must get all 50;
  - shared subscriptions: $share/soak/soak/shared/# with 3 members, QoS 1;
  - churn: about 20 raw connections a second that CONNECT and DISCONNECT, or close without
    DISCONNECT (one in three has a QoS 1 will, which a subscriber counts), or never send
    CONNECT at all.
Every minute it prints the broker's RSS and open descriptors and the message counts. At the
end it lets in-flight messages drain and checks: the broker is alive; RSS grew at most
--max-growth-kib since the end of the first minute (the warm-up); no QoS 1 or 2 message,
shared-subscription message or will was lost; no QoS 2 message arrived twice; every
retained check got all 50. Exits 0 when all hold, 1 otherwise (the broker's log is kept).
Every loop is bounded by the run's deadline; traffic goes to 127.0.0.1 only.
"""
import argparse
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Counts:
    """Thread-safe counters and sequence sets, by name."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = {}
        self.seen = {}
        self.dups = {}

    def add(self, name, k=1):
        with self.lock:
            self.n[name] = self.n.get(name, 0) + k

    def get(self, name):
        with self.lock:
            return self.n.get(name, 0)

    def got_seq(self, name, seq):
        with self.lock:
            s = self.seen.setdefault(name, set())
            if seq in s:
                self.dups[name] = self.dups.get(name, 0) + 1
            s.add(seq)

    def n_seen(self, name):
        with self.lock:
            return len(self.seen.get(name, ()))

    def missing(self, name, upto):
        with self.lock:
            s = self.seen.get(name, set())
            return [i for i in range(1, upto + 1) if i not in s]

    def n_dups(self, name):
        with self.lock:
            return self.dups.get(name, 0)


C = Counts()
stop = threading.Event()
errors = []


def client(cid, clean=True, proto=mqtt.MQTTv311):
    c = mqtt.Client(client_id=cid, clean_session=clean, protocol=proto)
    c.max_inflight_messages_set(20)
    return c


def connect_wait(c, port, timeout=10):
    ev = threading.Event()
    c.on_connect = lambda *a: ev.set()
    c.connect(HOST, port, keepalive=30)
    c.loop_start()
    if not ev.wait(timeout):
        raise RuntimeError(f"{c._client_id!r}: no CONNACK in {timeout} s")


def seq_of(payload):
    return int(payload.split(b":")[1])


def subscriber(port, cid, topic, qos, name, clean=True, on_extra=None):
    c = client(cid, clean)

    def on_message(_c, _u, m):
        C.add(name + ".recv")
        C.got_seq(name, seq_of(m.payload))
        if on_extra:
            on_extra(m)

    c.on_message = on_message
    connect_wait(c, port)
    r, _ = c.subscribe(topic, qos)
    if r != 0:
        raise RuntimeError(f"{cid}: subscribe failed ({r})")
    time.sleep(0.2)
    return c


def publisher_loop(port, cid, topic, qos, name, rate, deadline):
    c = client(cid)
    connect_wait(c, port)
    seq = 0
    period = 1.0 / rate
    nxt = time.monotonic()
    pending = []
    while not stop.is_set() and time.monotonic() < deadline:
        seq += 1
        info = c.publish(topic, f"{name}:{seq}".encode(), qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"{cid}: publish {seq} failed: {mqtt.error_string(info.rc)}")
        C.add(name + ".sent")
        if qos:
            pending.append(info)
            if len(pending) > 200:
                pending = [i for i in pending if not i.is_published()]
        nxt += period
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            nxt = time.monotonic()  # fell behind: do not burst to catch up
    end = time.monotonic() + 10
    while pending and time.monotonic() < end:  # every QoS 1/2 message acknowledged
        pending = [i for i in pending if not i.is_published()]
        time.sleep(0.05)
    if pending:
        errors.append(f"{name}: {len(pending)} messages never acknowledged by the broker")
    C.add(name + ".last", seq)
    c.disconnect()
    c.loop_stop()


def persistent_churn(port, deadline):
    """QoS 1 subscriber with a persistent session that goes away every 10 s for 2 s."""
    name = "q1"
    cycles = 0
    while not stop.is_set() and time.monotonic() < deadline:
        c = subscriber(port, "soak-persistent", "soak/q1", 1, name, clean=False)
        end = min(deadline, time.monotonic() + 10)
        while not stop.is_set() and time.monotonic() < end:
            time.sleep(0.1)
        c.disconnect()
        c.loop_stop()
        cycles += 1
        C.add("q1.reconnects")
        if time.monotonic() < deadline:
            time.sleep(2)
    return cycles


def retained_loop(port, deadline):
    setter = client("soak-retain-setter")
    connect_wait(setter, port)
    gen = 0
    while not stop.is_set() and time.monotonic() < deadline:
        gen += 1
        infos = [setter.publish(f"soak/ret/{i}", f"gen{gen}:{i}".encode(), 1, retain=True)
                 for i in range(50)]
        end = time.monotonic() + 10
        while any(not i.is_published() for i in infos) and time.monotonic() < end:
            time.sleep(0.01)
        got = set()
        lock = threading.Lock()
        ev = threading.Event()
        chk = client(f"soak-retain-check-{gen}")

        def on_message(_c, _u, m, got=got, lock=lock, ev=ev):
            if m.retain:
                with lock:
                    got.add(m.topic)
                    if len(got) == 50:
                        ev.set()

        chk.on_message = on_message
        connect_wait(chk, port)
        chk.subscribe("soak/ret/#", 1)
        if ev.wait(5):
            C.add("retained.ok")
        else:
            C.add("retained.failed")
            errors.append(f"retained check {gen}: got {len(got)} of 50 retained messages")
        chk.disconnect()
        chk.loop_stop()
        end = time.monotonic() + 5
        while not stop.is_set() and time.monotonic() < min(end, deadline):
            time.sleep(0.1)
    setter.disconnect()
    setter.loop_stop()


def connect_packet(cid, will):
    flags = 0x02  # clean session
    payload = struct.pack("!H", len(cid)) + cid
    if will:
        flags |= 0x04 | 0x08  # will flag, will QoS 1
        topic, msg = b"soak/will", f"will:{will}".encode()
        payload += struct.pack("!H", len(topic)) + topic + struct.pack("!H", len(msg)) + msg
    var = struct.pack("!H", 4) + b"MQTT" + bytes([4, flags]) + struct.pack("!H", 30)
    body = var + payload
    return bytes([0x10, len(body)]) + body


def churn_loop(port, deadline):
    n = 0
    wills = 0
    while not stop.is_set() and time.monotonic() < deadline:
        n += 1
        kind = n % 6
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            if kind == 5:  # never sends CONNECT
                s.close()
                C.add("churn.noconnect")
            else:
                will = 0
                if kind in (1, 4):
                    wills += 1
                    will = wills
                s.sendall(connect_packet(f"soak-churn-{n % 50}".encode(), will))
                ack = b""
                while len(ack) < 4:
                    chunk = s.recv(4 - len(ack))
                    if not chunk:
                        break
                    ack += chunk
                if ack != b"\x20\x02\x00\x00":
                    errors.append(f"churn connection {n}: CONNACK {ack!r}")
                if kind in (0, 1, 2):
                    s.sendall(b"\xe0\x00")  # DISCONNECT: a will is not published
                    if will:
                        wills -= 1  # not expected after all
                        C.add("churn.will_suppressed")
                else:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                C.add("churn.connect")
            C.add("churn.total")
        except OSError as e:
            errors.append(f"churn connection {n}: {e}")
        time.sleep(0.05)
    C.add("will.expected", wills)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--broker", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                     "build", "mqlite"))
    ap.add_argument("--max-growth-kib", type=int, default=8192,
                    help="allowed RSS growth after the first minute (default 8192)")
    ap.add_argument("--keep", action="store_true", help="keep the broker's directory")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="mqlite-soak-")
    port = free_port()
    conf = os.path.join(work, "mqlite.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} {HOST}\nallow_anonymous true\nuser root\npersistence true\n"
                f"persistence_location {work}\nsys_interval 10\n")
    log = open(os.path.join(work, "broker.log"), "w")
    broker = subprocess.Popen([args.broker, "-c", conf], stdout=log, stderr=log)
    for _ in range(100):
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        print("broker did not start; log in", work)
        return 1
    pid = broker.pid
    start = time.monotonic()
    deadline = start + args.minutes * 60
    print(f"soak: {args.minutes:g} min against {args.broker} (pid {pid}, port {port}, "
          f"dir {work})", flush=True)

    subs = [
        subscriber(port, "soak-q0-sub", "soak/q0", 0, "q0"),
        subscriber(port, "soak-q2-sub", "soak/q2", 2, "q2"),
        subscriber(port, "soak-will-sub", "soak/will", 1, "will"),
    ]
    subs += [subscriber(port, f"soak-shared-{i}", "$share/soak/soak/shared/#", 1, "shared")
             for i in range(3)]
    # the persistent session exists before anything is published to it
    first = subscriber(port, "soak-persistent", "soak/q1", 1, "q1", clean=False)
    first.disconnect()
    first.loop_stop()

    def guarded(fn):
        def run(*a):
            try:
                fn(*a)
            except Exception as e:  # a worker that dies is a failure, not a silent stop
                errors.append(f"{fn.__name__}: {type(e).__name__}: {e}")
                stop.set()
        return run

    threads = [
        threading.Thread(target=guarded(publisher_loop), args=(port, "soak-q0-pub", "soak/q0", 0, "q0",
                                                      200, deadline)),
        threading.Thread(target=guarded(publisher_loop), args=(port, "soak-q1-pub", "soak/q1", 1, "q1",
                                                      50, deadline)),
        threading.Thread(target=guarded(publisher_loop), args=(port, "soak-q2-pub", "soak/q2", 2, "q2",
                                                      50, deadline)),
        threading.Thread(target=guarded(publisher_loop), args=(port, "soak-shared-pub",
                                                      "soak/shared/x", 1, "shared", 50,
                                                      deadline)),
        threading.Thread(target=guarded(persistent_churn), args=(port, deadline)),
        threading.Thread(target=guarded(retained_loop), args=(port, deadline)),
        threading.Thread(target=guarded(churn_loop), args=(port, deadline)),
    ]
    for t in threads:
        t.daemon = True
        t.start()

    def report(tag):
        print(f"[{tag}] rss {rss_kib(pid)} KiB, fds {fd_count(pid)}; "
              f"q0 {C.get('q0.sent')}/{C.get('q0.recv')}, q1 {C.get('q1.sent')}/"
              f"{C.get('q1.recv')} ({C.get('q1.reconnects')} reconnects), q2 "
              f"{C.get('q2.sent')}/{C.get('q2.recv')}, shared {C.get('shared.sent')}/"
              f"{C.get('shared.recv')}, wills {C.get('will.recv')}, retained checks "
              f"{C.get('retained.ok')} ok {C.get('retained.failed')} failed, churn "
              f"{C.get('churn.total')} conns; errors {len(errors)}", flush=True)

    warm_rss = None
    minute = 0
    died = False
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if broker.poll() is not None:
            died = True
            break
        if time.monotonic() - start >= (minute + 1) * 60:
            minute += 1
            report(f"{minute:3d} min")
            if minute == 1:
                warm_rss = rss_kib(pid)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    time.sleep(3)  # let queued deliveries drain
    if broker.poll() is not None:
        died = True
    report("end")
    end_rss = rss_kib(pid)
    for c in subs:
        c.disconnect()
        c.loop_stop()
    # the persistent session's last queued messages: collect them with one more visit
    if not died:
        c = subscriber(port, "soak-persistent", "soak/q1", 1, "q1", clean=False)
        t_end = time.monotonic() + 10
        while C.n_seen("q1") < C.get("q1.last") and time.monotonic() < t_end:
            time.sleep(0.1)
        c.disconnect()
        c.loop_stop()

    failures = list(errors)
    if died:
        failures.append(f"the broker died (exit status {broker.returncode})")
    if warm_rss is None:
        warm_rss = end_rss  # shorter than a minute: nothing to compare
    growth = end_rss - warm_rss
    print(f"rss: {warm_rss} KiB after the first minute, {end_rss} KiB at the end "
          f"({growth:+d} KiB, allowed +{args.max_growth_kib})")
    if end_rss > 0 and growth > args.max_growth_kib:
        failures.append(f"RSS grew by {growth} KiB after the first minute")
    for name in ("q1", "q2", "shared"):
        miss = C.missing(name, C.get(name + ".last"))
        if miss:
            failures.append(f"{name}: {len(miss)} of {C.get(name + '.last')} acknowledged "
                            f"messages never delivered (first {miss[:5]})")
    if C.n_dups("q2"):
        failures.append(f"q2: {C.n_dups('q2')} QoS 2 messages delivered twice")
    if C.n_dups("shared"):
        print(f"note: shared: {C.n_dups('shared')} QoS 1 duplicates (allowed by QoS 1)")
    if C.get("will.recv") != C.get("will.expected"):
        failures.append(f"wills: {C.get('will.recv')} received, {C.get('will.expected')} "
                        "expected")
    if broker.poll() is None:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
            failures.append("the broker did not stop on SIGTERM within 10 s")
    log.close()
    for f in failures:
        print("FAILED:", f)
    if failures or args.keep:
        print("broker log and store kept in", work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("soak: PASS" if not failures else "soak: FAIL")
    return 1 if failures else 0


if __name__ == "__main__":
    random.seed(1)
    sys.exit(main())
