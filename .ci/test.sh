#!/usr/bin/env bash
# The whole test suite, as CI runs it (README's second command):
#   1. a -Werror build and every test (unit, fuzz-corpora replay, integration, real clients,
#      the browser test and mosquitto's broker test suite: tests/conformance);
#      the protocol integration suites run over tcp, and the ones where the transport shows
#      again over tls, ws and wss (meson suites transport-*, without transport-extra: see
#      tests/integration/meson.build)
#   2. static cross builds for armhf and arm64, and the integration suite run against them
#      under qemu-user (.ci/cross.sh)
#      and the busybox boot test (tests/boot/boot-armhf.sh)
#   3. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer; of the other
#      transports only wss there (it layers WebSocket on TLS, so it runs both through the
#      sanitizers); the browser and conformance suites run once, in step 1
#   4. the integration suite against a broker built with ThreadSanitizer (.ci/tsan.sh):
#      any TSan report fails
#   5. the three fuzzers (clang libFuzzer: decoder, connections, config parser), each for
#      FUZZ_SECONDS (default 60), in parallel
#   0. (after the format check) a build with the tests disabled, as a machine without Criterion
#      gets it, started and given one round trip (.ci/notests.sh)
#   1b. (after step 1) the amd64 Debian package built, installed, started through its init
#      script, given a QoS 1 round trip, stopped and purged (.ci/package.sh)
# Ends with one line "N passed, M failed" counting every test case of every run.
set -uo pipefail
cd "$(dirname "$0")/.."
bash .ci/deps.sh test || { echo "0 passed, 1 failed"; exit 1; }
fuzz_seconds=${FUZZ_SECONDS:-60}
t_start=$(date +%s)
stage() { echo "== [$(($(date +%s) - t_start)) s] $*"; } # a step's name, with the time so far
extra=$(mktemp)
status=0

setup() { # DIR OPTIONS...
  local dir=$1; shift
  rm -rf "$dir"
  meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 ||
    { cat "$dir.setup.log"; return 1; }
}

details() { # NAME LOG: the failed test cases of a run that counts its own, for the summary
  grep -a -E '\[FAIL\]|Assertion Failed|^FAIL|: FAIL' "$2" | head -12 |
    sed "s/^ */detail: $1: /" >>"$extra"
}

run_suite() { # DIR [MESON TEST OPTIONS...]
  local dir=$1
  shift
  ninja -C "$dir" || { echo "build: $dir FAIL" >>"$extra"; status=1; return; }
  meson test -C "$dir" --num-processes 2 --print-errorlogs "$@" || status=1
}

stage "formatting (clang-format, .clang-format)"
unformatted=$(git ls-files '*.c' '*.h' | while read -r f; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
if [ -z "$unformatted" ]; then
  echo "format: clang-format PASS" >>"$extra"
else
  echo "not clang-formatted: $unformatted"
  echo "format: clang-format FAIL" >>"$extra"; status=1
fi

stage "build without the tests (as without Criterion): start it, one round trip"
bash .ci/notests.sh build-notests >>"$extra" || status=1
grep -E 'notests: .* FAIL' "$extra" && status=1

stage "build + tests"
if setup build-ci; then
  run_suite build-ci --no-suite transport-extra
else
  echo "build: build-ci FAIL" >>"$extra"; status=1
fi

stage "Debian package (amd64): build, dpkg -i, init script start, QoS 1 round trip, stop, purge"
bash .ci/package.sh >>"$extra" || status=1

stage "cross builds (armhf, arm64): static broker, integration suite under qemu-user"
# The builds one after the other (apt and dpkg take one caller at a time), then both
# integration suites at once: under qemu they mostly wait, so two overlap well.
declare -A cross_log cross_pid
for arch in armhf arm64; do
  cross_log[$arch]=$(mktemp)
  bash .ci/cross.sh "$arch" --build-only >"${cross_log[$arch]}" 2>&1 ||
    echo "cross $arch: build step failed (see below)" >>"${cross_log[$arch]}"
done
for arch in armhf arm64; do
  NATIVE_BUILD=build-ci CROSS_NATIVE_BUILT=1 bash .ci/cross.sh "$arch" >>"${cross_log[$arch]}" 2>&1 &
  cross_pid[$arch]=$!
done
for arch in armhf arm64; do
  wait "${cross_pid[$arch]}"
  log=${cross_log[$arch]}
  line=$(tail -n 1 "$log")
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    echo "counts: cross-$arch ${BASH_REMATCH[1]} ${BASH_REMATCH[2]}" >>"$extra"
    [ "${BASH_REMATCH[2]}" = 0 ] || { tail -40 "$log"; details "cross-$arch" "$log"; status=1; }
  else
    tail -40 "$log"
    echo "cross: cross-$arch FAIL" >>"$extra"; status=1
  fi
  grep -E "^cross $arch:" "$log" || true
  rm -f "$log"
done

stage "boot test: busybox init (armhf) as PID 1 starts mqlite through S50mqlite"
log=$(mktemp)
bash tests/boot/boot-armhf.sh >"$log" 2>&1
line=$(tail -n 1 "$log")
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  echo "counts: boot-armhf ${BASH_REMATCH[1]} ${BASH_REMATCH[2]}" >>"$extra"
  [ "${BASH_REMATCH[2]}" = 0 ] || { tail -40 "$log"; details boot-armhf "$log"; status=1; }
else
  tail -40 "$log"
  echo "boot: boot-armhf FAIL" >>"$extra"; status=1
fi
rm -f "$log"

stage "AddressSanitizer + UndefinedBehaviorSanitizer"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
  run_suite build-asan --no-suite transport-extra --no-suite transport-tls --no-suite transport-ws \
    --no-suite browser --no-suite conformance
else
  echo "build: build-asan FAIL" >>"$extra"; status=1
fi
unset ASAN_OPTIONS UBSAN_OPTIONS

stage "ThreadSanitizer: integration suite against a TSan broker"
log=$(mktemp)
NATIVE_BUILD=build-ci bash .ci/tsan.sh >"$log" 2>&1
line=$(tail -n 1 "$log")
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  echo "counts: tsan ${BASH_REMATCH[1]} ${BASH_REMATCH[2]}" >>"$extra"
  [ "${BASH_REMATCH[2]}" = 0 ] || { tail -60 "$log"; details tsan "$log"; status=1; }
else
  tail -40 "$log"
  echo "tsan: integration-tsan FAIL" >>"$extra"; status=1
fi
grep -E "^tsan:" "$log" || true
rm -f "$log"

stage "fuzz: decoder, connections, config parser, ${fuzz_seconds}s each (in parallel)"
# Each libFuzzer target starts from a copy of its checked-in corpus (new inputs, and the
# targets' temporary files, go to a scratch dir). A failure prints the end of its log and keeps the crashing input under
# build-fuzz/fuzz-artifacts/ (reproduce: build-fuzz/tests/fuzz/fuzz_NAME FILE).
fuzzers=(decode conn config)
if CC=clang setup build-fuzz -Dfuzz=true &&
  ninja -C build-fuzz "${fuzzers[@]/#/tests/fuzz/fuzz_}"; then
  root=$PWD
  work=$(mktemp -d)
  declare -A pids
  for name in "${fuzzers[@]}"; do
    mkdir -p "$work/$name/new"
    cp -r "tests/fuzz/corpus/$name" "$work/$name/seed"
    (cd "$work/$name" && TMPDIR="$work/$name" exec "$root/build-fuzz/tests/fuzz/fuzz_$name" \
       -max_total_time="$fuzz_seconds" -timeout=30 -print_final_stats=1 new seed) \
      >"$work/$name/fuzz.log" 2>&1 &
    pids[$name]=$!
  done
  for name in "${fuzzers[@]}"; do
    if wait "${pids[$name]}"; then
      echo "fuzz: fuzz_$name PASS" >>"$extra"
      echo "fuzz_$name: $(grep -E 'stat::number_of_executed_units' "$work/$name/fuzz.log")"
    else
      echo "-- fuzz_$name failed:"
      tail -40 "$work/$name/fuzz.log"
      mkdir -p build-fuzz/fuzz-artifacts
      cp "$work/$name"/crash-* "$work/$name"/leak-* "$work/$name"/timeout-* \
        "$work/$name"/oom-* build-fuzz/fuzz-artifacts/ 2>/dev/null
      echo "fuzz: fuzz_$name FAIL" >>"$extra"; status=1
    fi
  done
  rm -rf "$work"
else
  echo "fuzz: fuzz-build FAIL" >>"$extra"; status=1
fi

stage "summary"
/usr/bin/python3 .ci/summary.py "$extra" build-ci build-asan || status=1
rm -f "$extra"
exit $status
