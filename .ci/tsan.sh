#!/usr/bin/env bash
# The integration suite against a broker built with ThreadSanitizer (gcc -fsanitize=thread).
#
#   NATIVE_BUILD=build-ci bash .ci/tsan.sh
#
# Only the broker is instrumented: the integration tests are black-box Criterion executables,
# and Criterion's sandbox cannot start under TSan, so the native test executables of
# $NATIVE_BUILD (default build-tsan-native, built here if missing) run against
# build-tsan/mqlite, two executables at a time. The broker's threads are what the suite
# exercises: nng's I/O callbacks, the ticker, the store's commit thread, the reaper.
# Every TSan report (written to a file per broker process through log_path) is a failure,
# whether or not the test that caused it passed; tests/tsan.supp holds suppressions for
# reports inside uninstrumented libraries (none needed so far). Ends with one line
# "N passed, M failed": the test cases, plus one failure per process that reported.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
native=${NATIVE_BUILD:-build-tsan-native}
build=build-tsan
t0=$(date +%s)

if [ ! -f "$native/build.ninja" ]; then
  meson setup "$native" -Dwerror=true >"$native.setup.log" 2>&1 ||
    { tail -20 "$native.setup.log"; echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C "$native" >"$native.tsan-ninja.log" 2>&1 ||
  { tail -30 "$native.tsan-ninja.log"; echo "0 passed, 1 failed"; exit 1; }
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" -Dwerror=true -Db_sanitize=thread -Db_lundef=false \
    -Dbuildtype=debugoptimized >"$build.setup.log" 2>&1 ||
    { tail -20 "$build.setup.log"; echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C "$build" mqlite >"$build.ninja.log" 2>&1 ||
  { tail -30 "$build.ninja.log"; echo "0 passed, 1 failed"; exit 1; }
echo "tsan: broker built in $(($(date +%s) - t0)) s"

reports=$(mktemp -d)
results=$(mktemp -d)
export MQLITE_BIN=$PWD/$build/mqlite
export TSAN_OPTIONS="log_path=$reports/tsan:second_deadlock_stack=1:history_size=4:suppressions=$PWD/tests/tsan.supp"

run_one() { # EXE: run it, write "NAME PASSED FAILED SECONDS" and its failures to $results
  local exe=$1 name out rc line tested failing crashing bad ok t
  name=$(basename "$exe")
  out=$results/$name.out
  t=$(date +%s)
  "$exe" --jobs=2 >"$out" 2>&1
  rc=$?
  line=$(grep -a 'Synthesis: Tested:' "$out" | tail -1)
  tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$line")
  failing=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$line")
  crashing=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$line")
  [ -z "$tested" ] && tested=1 failing=1 crashing=0
  bad=$((failing + crashing))
  [ $rc -ne 0 ] && [ $bad -eq 0 ] && bad=1
  ok=$((tested - bad))
  [ $ok -lt 0 ] && ok=0
  echo "$name $ok $bad $(($(date +%s) - t))" >"$results/$name.count"
}
export -f run_one
export results

find "$native/tests/integration" -maxdepth 1 -type f -executable -name 'integ_*' | sort |
  xargs -P 2 -I{} bash -c 'run_one {}'

passed=0 failed=0
for f in "$results"/*.count; do
  read -r name ok bad secs <"$f"
  printf '%-22s %3d passed %3d failed  %3d s\n' "$name" "$ok" "$bad" "$secs"
  passed=$((passed + ok))
  failed=$((failed + bad))
  if [ "$bad" -ne 0 ]; then
    grep -a -E '^\[FAIL\]|^\[----\]   [^ ]' "$results/$name.out" | head -20 | sed 's/^/    /'
  fi
done
n_reports=$(find "$reports" -type f | wc -l)
if [ "$n_reports" -ne 0 ]; then
  echo "ThreadSanitizer reports from $n_reports broker processes; distinct ones:"
  grep -h '^SUMMARY' "$reports"/* | sort | uniq -c
  first=$(find "$reports" -type f | head -1)
  sed -n '1,60p' "$first"
  failed=$((failed + n_reports))
fi
rm -rf "$reports" "$results"
echo "tsan: $(($(date +%s) - t0)) s in all"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
