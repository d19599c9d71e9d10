#!/bin/bash
# Profile the sync configuration with py-spy: the mount process and the receiver, while one
# workload of mirror.py runs against the sync mount only.
#   scripts/bench/profile_sync.sh WORKLOAD OUTDIR [more mirror.py options]
#   e.g. scripts/bench/profile_sync.sh seq /tmp/prof-seq --reps 2
# WORKLOAD is one of seq, small, sqlite, lat. Writes OUTDIR/{mount,receiver}.txt (py-spy raw
# collapsed stacks, idle time included, per thread) and OUTDIR/bench.{txt,err}; summarize with
#   scripts/bench/stacks.py OUTDIR/mount.txt
# py-spy: pip install py-spy into a throwaway venv; PYSPY=/path/to/py-spy.
set -eu
workload=$1 out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
py=${PY:-$here/../../.venv/bin/python}
pyspy=${PYSPY:-/tmp/bvenv/bin/py-spy}
mkdir -p "$out"
"$py" "$here/mirror.py" --configs c --workloads "$workload" "$@" >"$out/bench.txt" 2>"$out/bench.err" &
bench=$!
for _ in $(seq 300); do grep -q "pids:" "$out/bench.err" 2>/dev/null && break; sleep 0.1; done
read -r mount receiver < <(sed -n 's/.*pids: \([0-9]*\) \([0-9]*\)).*/\1 \2/p' "$out/bench.err")
"$pyspy" record --idle --threads --nonblocking -f raw -r 100 -o "$out/mount.txt" --pid "$mount" >/dev/null 2>&1 &
spy1=$!
"$pyspy" record --idle --threads --nonblocking -f raw -r 100 -o "$out/receiver.txt" --pid "$receiver" >/dev/null 2>&1 &
spy2=$!
wait "$bench" || echo "mirror.py failed: see $out/bench.err" >&2
wait "$spy1" "$spy2" || true   # py-spy ends when its target process ends
cat "$out/bench.txt"
