#!/usr/bin/env bash
# Installs what is needed, then runs the whole test suite.
#
# The whole suite runs in two steps (docs/lab.md, "Running the tests"):
#   1. every test not marked `serial`, on HAMIRROR_TEST_WORKERS pytest-xdist workers (2 by default),
#      one test file per worker at a time (--dist loadfile: a file's module-scoped lab is built once),
#      the slowest files first (tests/conftest.py): half of the suite's time is waiting (labs,
#      timeouts, daemons starting), so two workers on two cores roughly halve it;
#   2. the tests marked `serial` (what measures memory or time, a benchmark, an emulated power loss), alone.
# With arguments (a file, -k, -m, -n ...), pytest runs once with exactly them, serially unless told.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=30)
if [ "$#" -gt 0 ]; then
  exec "${PYTEST[@]}" "$@"
fi

workers=${HAMIRROR_TEST_WORKERS:-2}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# A short folder for the tests' temporary folders: pytest-xdist puts each worker's one level below
# pytest's default (/tmp/pytest-of-root/pytest-N/popen-gwN/...), and a mount's control socket
# (STATE_DIR/control.sock) must fit in a unix socket's 107 bytes. Here a worker's test folders are
# /tmp/hmt.XXXXXX/popen-gwN/..., shorter than a serial run's. Removed after a passing run.
tmp=$(mktemp -d /tmp/hmt.XXXXXX)
rc_parallel=0 rc_serial=0
echo "== step 1 of 2: the tests not marked serial, on $workers workers"
"${PYTEST[@]}" -n "$workers" --dist loadfile --no-loadscope-reorder --basetemp "$tmp" -m "not serial" 2>&1 \
  | tee "$logs/parallel" || rc_parallel=${PIPESTATUS[0]}
echo "== step 2 of 2: the tests marked serial, alone"
"${PYTEST[@]}" --basetemp "$tmp/serial" -m serial 2>&1 | tee "$logs/serial" || rc_serial=${PIPESTATUS[0]}
# pytest's closing line of each step, then the two added up (a failure in either step fails the run).
summary() { grep -E '^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s' "$1" | tail -n 1 | sed -E 's/^=+ | =+$//g'; }
count() { cat "$logs/parallel" "$logs/serial" | grep -E '^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s' \
            | grep -oE "[0-9]+ $1\b" | awk '{n += $1} END {print n + 0}'; }
echo "== step 1 (parallel): $(summary "$logs/parallel") (exit $rc_parallel)"
echo "== step 2 (serial):   $(summary "$logs/serial") (exit $rc_serial)"
echo "both steps: $(count xfailed) xfailed, $(count xpassed) xpassed, $(count errors?) error(s)"
echo "tests: $(count passed) passed, $(( $(count failed) + $(count 'errors?') )) failed, $(count skipped) skipped"
if [ "$rc_parallel" -ne 0 ] || [ "$rc_serial" -ne 0 ]; then
  echo "FAILED: see the 'short test summary info' of the step(s) above with a non-zero exit;" \
       "the tests' temporary folders are kept in $tmp" >&2
  exit 1
fi
rm -rf --one-file-system "$tmp"
