"""What a directory rename costs through a sync-mode mount: the activity log's subtree entries.

A real mount (sync mode, its activity log on) and a real receiver over loopback. D (with a file
beneath) is made, then left to settle (acknowledged and durable: ``$HAMIRROR_SYNC_INTERVAL`` 0.1 s,
so nothing beneath it is hot), then renamed N times: to a new name each time in the same
directory (``newname``: its names are covered by the directory's entry, so before the subtree
entries no log append at all), then back and forth between two names (``swap``: the subtree
entries of both names are hot after the first two). Prints microseconds per rename and the
activity log's size at the end. To compare two versions, export each (``git archive REV | tar -x
-C DIR``, the native core built or copied in) and alternate runs from each DIR (the code measured
is the one in the current directory, for this script, the mount and the receiver):

    cd DIR && flock /tmp/hamirror-lab.lock .venv/bin/python scripts/bench/dir_rename.py \
        --renames 1000 --workdir /srv/hm-NAME
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())   # the tree it is run from, not the installed one

from tests.mirror_fixtures import MirrorPair  # noqa: E402


def measure(base: str, n: int) -> dict:
    os.environ["HAMIRROR_SYNC_INTERVAL"] = "0.1"   # inherited by the mount and the receiver
    pair = MirrorPair(base).start()
    try:
        top = os.path.join(pair.primary, "top")
        os.makedirs(f"{top}/D/sub")
        open(f"{top}/D/sub/f", "wb").close()
        time.sleep(2)                              # acknowledged and durable: nothing hot beneath D
        out: dict = {"renames": n}
        t0 = time.perf_counter()
        for i in range(n):
            os.rename(f"{top}/{'D' if i == 0 else f'N{i - 1}'}", f"{top}/N{i}")
        out["newname_us"] = round((time.perf_counter() - t0) / n * 1e6)
        os.rename(f"{top}/N{n - 1}", f"{top}/D")
        t0 = time.perf_counter()
        for i in range(n):
            a, b = ("D", "E") if i % 2 == 0 else ("E", "D")
            os.rename(f"{top}/{a}", f"{top}/{b}")
        out["swap_us"] = round((time.perf_counter() - t0) / n * 1e6)
        out["log_bytes"] = os.path.getsize(os.path.join(pair.state, "activity.log"))
        return out
    finally:
        pair.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--renames", type=int, default=1000)
    ap.add_argument("--workdir", default=None, help="where the two copies live (default: a temporary folder)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="dir-rename-", dir=args.workdir)
    try:
        print(json.dumps(measure(base, args.renames)))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
