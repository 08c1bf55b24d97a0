#!/bin/bash
# bridge_drain.sh - how fast a bridge drains a backlog into the remote broker.
#
# Starts mosquitto as the remote broker and mqlite (persistence on, default store settings)
# with one bridge to it; stops mosquitto; publishes N QoS 1 messages to mqlite (paho, one
# connection, 1000 in flight); starts mosquitto again with a subscriber on the bridged topic, and
# times from the bridge's reconnect to the last message at the remote subscriber.
#
#   tests/bench/bridge_drain.sh [MQLITE_BIN] [--count N] [--inflight W] [--size BYTES]
#
# Defaults: build-bench/mqlite, 100000 messages, bridge_max_inflight 100, 64-byte payloads.
# Prints one line: count, publish rate into mqlite, drain time and rate, store bytes written.
# Not a test: nothing here asserts; every wait is bounded (--timeout, default 300 s).
set -euo pipefail

MQLITE=build-bench/mqlite
COUNT=100000
INFLIGHT=100
SIZE=64
TIMEOUT=300
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT=$2; shift 2 ;;
    --inflight) INFLIGHT=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) MQLITE=$1; shift ;;
  esac
done
[ -x "$MQLITE" ] || { echo "no mqlite binary at $MQLITE (build it, or pass its path)" >&2; exit 2; }
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
command -v mosquitto >/dev/null || { echo "mosquitto is not installed" >&2; exit 2; }

DIR=$(mktemp -d /tmp/mqlite-drain-XXXXXX)
chmod 755 "$DIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT: bounded wait until it accepts
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 did not open" >&2; exit 1
}
RPORT=$(free_port)
LPORT=$(free_port)
cat >"$DIR/remote.conf" <<EOF
listener $RPORT 127.0.0.1
allow_anonymous true
max_queued_messages 0
EOF
cat >"$DIR/local.conf" <<EOF
listener $LPORT 127.0.0.1
allow_anonymous true
user root
persistence true
persistence_location $DIR
connection cloud
address 127.0.0.1:$RPORT
topic drain/# out 1
restart_timeout 1
bridge_max_inflight $INFLIGHT
bridge_queue_max_bytes 0
EOF

mosquitto -c "$DIR/remote.conf" >"$DIR/remote.log" 2>&1 & rpid=$!; pids+=($rpid)
wait_port "$RPORT"
"$MQLITE" -c "$DIR/local.conf" >"$DIR/local.log" 2>&1 & lpid=$!; pids+=($lpid)
wait_port "$LPORT"
for _ in $(seq 1 100); do grep -q 'bridge "cloud": connected' "$DIR/local.log" && break; sleep 0.05; done
kill "$rpid"; wait "$rpid" 2>/dev/null || true

# paho (python3-paho-mqtt) rather than mosquitto_pub -l, which may exit at the end of its
# input before every queued QoS 1 message went out; every PUBACK is waited for here.
t0=$(date +%s.%N)
timeout "$TIMEOUT" /usr/bin/python3 - "$LPORT" "$COUNT" "$SIZE" <<'EOF'
import sys
import paho.mqtt.client as mqtt
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = mqtt.Client()
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port)
c.loop_start()
pad = b"x" * max(size - 8, 0)
for start in range(0, n, 20000):  # batches: paho's packet ids must not wrap around
    infos = [c.publish("drain/x", b"%08d" % i + pad, 1) for i in range(start, min(n, start + 20000))]
    for info in infos:
        info.wait_for_publish(timeout=60)
        if not info.is_published():
            sys.exit("a PUBLISH was not acknowledged within 60 s")
c.disconnect()
c.loop_stop()
EOF
t1=$(date +%s.%N)
written0=$(awk '/^write_bytes/ {print $2}' /proc/$lpid/io)

mosquitto -c "$DIR/remote.conf" >>"$DIR/remote.log" 2>&1 & rpid=$!; pids+=($rpid)
wait_port "$RPORT"
timeout "$TIMEOUT" mosquitto_sub -p "$RPORT" -t 'drain/#' -q 1 -C "$COUNT" >"$DIR/got" &
spid=$!
n0=$(grep -c 'bridge "cloud": connected' "$DIR/local.log")
for _ in $(seq 1 200); do
  [ "$(grep -c 'bridge "cloud": connected' "$DIR/local.log")" -gt "$n0" ] && break; sleep 0.02
done
t2=$(date +%s.%N)
wait "$spid" || { echo "the subscriber got $(wc -l <"$DIR/got") of $COUNT within $TIMEOUT s" >&2; exit 1; }
t3=$(date +%s.%N)
written1=$(awk '/^write_bytes/ {print $2}' /proc/$lpid/io)
got=$(sort -u "$DIR/got" | wc -l)

python3 - "$COUNT" "$t0" "$t1" "$t2" "$t3" "$got" "$written0" "$written1" <<'EOF'
import sys
n, t0, t1, t2, t3, got, w0, w1 = sys.argv[1:]
n, got = int(n), int(got)
pub, drain = float(t1) - float(t0), float(t3) - float(t2)
print("bridge drain: %d QoS 1 messages (%d distinct arrived); queued at %.0f msg/s; drained in "
      "%.2f s = %.0f msg/s; store bytes written while draining %.1f per message"
      % (n, got, n / pub, drain, n / drain, (int(w1) - int(w0)) / n))
EOF
