#!/usr/bin/env bash
# The build a newcomer gets without the test tools: configure with the tests disabled (as on a
# machine without Criterion), build, start that broker on a free loopback port, do one QoS 1
# round trip with mosquitto_sub/mosquitto_pub, stop it with SIGTERM. Prints PASS or FAIL
# lines ("notests: NAME PASS|FAIL") for .ci/summary.py.
#   bash .ci/notests.sh [DIR]   (default build-notests)
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-notests}
rm -rf "$dir"
check() { # NAME RESULT(0 = pass)
  if [ "$2" = 0 ]; then echo "notests: $1 PASS"; else echo "notests: $1 FAIL"; fi
}
meson setup "$dir" -Dtests=disabled -Dwerror=true >"$dir.log" 2>&1 && ninja -C "$dir" >>"$dir.log" 2>&1
rc=$?
[ $rc = 0 ] || tail -30 "$dir.log" >&2
check build $rc
[ $rc = 0 ] || exit 1
# No test executable may have been configured.
[ ! -e "$dir/tests" ]
check no-test-targets $?

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$dir/mqlite" -p "$port" >"$dir/broker.log" 2>&1 &
broker=$!
up=1
for _ in $(seq 50); do # at most 5 s for the listener
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=0; break; fi
  sleep 0.1
done
check start $up
got=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$port" -t ci/notests -q 1 -C 1 -W 8 2>&1 &
      sleep 0.5; timeout 5 mosquitto_pub -h 127.0.0.1 -p "$port" -t ci/notests -q 1 -m hello; wait)
[ "$got" = hello ]
check roundtrip $?
kill -TERM "$broker" 2>/dev/null
timeout 10 tail --pid="$broker" -f /dev/null
wait "$broker"
check clean-exit $?
