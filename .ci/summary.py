#!/usr/bin/python3
"""Count every test case of a CI run and print one line: "N passed, M failed".

Usage: summary.py EXTRA_FILE BUILD_DIR...

Each BUILD_DIR's meson-logs/testlog.json lists the meson tests. A meson test is counted by
what it ran inside: Criterion's "Synthesis: Tested: T | Passing: P | Failing: F |
Crashing: C" line, or our python tests' "N passed, M failed" line. A meson test that failed
although its own counts say all passed (a crash at exit, a sanitizer report, a timeout)
adds one failure. Anything else counts as one test. EXTRA_FILE holds lines
"kind: name PASS|FAIL" for checks outside meson (builds, the fuzzer), or
"counts: NAME PASSED FAILED" for a run that counted its own tests (cross builds), or
"detail: TEXT" naming what failed inside such a run (printed with the failures, not counted).
"""
import json
import os
import re
import sys

CRIT = re.compile(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)")
PLAIN = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed", re.M)


def count_dir(d, failures):
    path = os.path.join(d, "meson-logs", "testlog.json")
    passed = failed = 0
    if not os.path.exists(path):
        failures.append(f"{d}: no test log (tests did not run)")
        return 0, 1
    with open(path) as f:
        for line in f:
            t = json.loads(line)
            out = (t.get("stdout") or "") + (t.get("stderr") or "")
            ok = t.get("result") in ("OK", "EXPECTEDFAIL")
            skipped = t.get("result") == "SKIP"
            if skipped:
                continue
            m = CRIT.findall(out)
            p = PLAIN.findall(out)
            if m:
                tested, passing, failing, crashing = map(int, m[-1])
                tp, tf = passing, failing + crashing
            elif p:
                tp, tf = map(int, p[-1])
            else:
                tp, tf = (1, 0) if ok else (0, 1)
            if not ok and tf == 0:
                tf = 1
            if tf:
                failures.append(f"{d}: {t['name']} ({t.get('result')})")
            passed += tp
            failed += tf
    return passed, failed


def main():
    extra, dirs = sys.argv[1], sys.argv[2:]
    passed = failed = 0
    failures = []
    for d in dirs:
        p, f = count_dir(d, failures)
        print(f"{d}: {p} passed, {f} failed".replace(": ", " -> ", 1))
        passed += p
        failed += f
    with open(extra) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("detail:"):
                failures.append(line[len("detail:"):].strip())
                continue
            if line.startswith("counts:"):
                _, name, p, f = line.split()
                passed += int(p)
                failed += int(f)
                print(f"{name} -> {p} passed, {f} failed")
                if int(f):
                    failures.append(f"{name}: {f} failed")
                continue
            if line.endswith("PASS"):
                passed += 1
            else:
                failed += 1
                failures.append(line)
    for x in failures:
        print("FAILED:", x)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
