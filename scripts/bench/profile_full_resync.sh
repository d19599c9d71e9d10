#!/bin/bash
# Profile a 1 GiB --full resync to an empty secondary with py-spy (both processes), and time a
# plain `cp` + `sync` of 256 MiB on the same disk right after, as the reference.
#   sudo bash scripts/bench/profile_full_resync.sh      (py-spy: PYSPY=/path/to/py-spy)
# Writes /tmp/prof/{mount,recv}.txt; summarize with scripts/bench/stacks.py FILE.
set -e
PYSPY=${PYSPY:-"$PYSPY"}
mkdir -p /tmp/prof
export PATH="$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin:$PATH"
T=$(mktemp -d /var/tmp/hmprof.XXXX); mkdir $T/a $T/b
for i in 1 2 3 4; do head -c 268435456 /dev/urandom > $T/a/f$i; done
sync
hamirror keygen --keys $T/k --name n >/dev/null
hamirror mirror receive --dir $T/b --bind 127.0.0.1:47400 --keys $T/k --state-dir $T/rs > $T/recv.log 2>&1 &
RP=$!; sleep 1
hamirror mirror mount --dir $T/a --alone --keys $T/k --state-dir $T/ms >/dev/null
MP=$(python3 -c "import json;print(json.load(open('$T/ms/status.json'))['pid'])")
"$PYSPY" record --idle --threads --nonblocking -f raw -r 100 -o /tmp/prof/mount.txt --pid $MP >/dev/null 2>&1 &
S1=$!
"$PYSPY" record --idle --threads --nonblocking -f raw -r 100 -o /tmp/prof/recv.txt --pid $RP >/dev/null 2>&1 &
S2=$!
sleep 0.5
t0=$(date +%s.%N)
hamirror mirror resync --dir $T/a --peer 127.0.0.1:47400 --state-dir $T/ms --full
t1=$(date +%s.%N)
python3 -c "print('full resync 1 GiB: %.2f s, %.0f MB/s' % ($t1-$t0, 1073.741824/($t1-$t0)))"
kill -INT $S1 $S2 2>/dev/null; sleep 1
t0=$(date +%s.%N); cp -a $T/b/f1 $T/cpcheck; sync; t1=$(date +%s.%N)
python3 -c "print('cp 256 MiB + sync: %.2f s, %.0f MB/s' % ($t1-$t0, 268.435456/($t1-$t0)))"
hamirror mirror umount --dir $T/a --state-dir $T/ms
kill $RP; wait $RP 2>/dev/null || true
cmp $T/a/f3 $T/b/f3 && echo SAME
rm -rf $T
