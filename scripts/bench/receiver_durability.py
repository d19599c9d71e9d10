"""The receiver's cost per new file, over the link alone (no FUSE): what its unsynced log costs.

Each new file is a CREATE and a 4 KiB WRITE to a real receiver (its own thread, CURVE over
loopback, with a state directory, so the unsynced log is on). Two figures: one file in flight
(the worst case: a new path's fdatasync cannot be shared) and 64 files in flight (pipelined:
the new paths of a batch share one fdatasync). When the receiver offers it, the session is
delegated first, as a mount with an activity log does (PING_DELEGATE: no record per new path
there; ``--no-delegate`` measures the old session on the same code). Run it from the source tree to measure; to compare
two versions, export each (``git archive REV | tar -x -C DIR``) and alternate runs from each DIR:

    cd DIR && sudo /work/main/.venv/bin/python scripts/bench/receiver_durability.py --files 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())   # the tree it is run from, not the installed one

from hamirror.link.client import LinkClient  # noqa: E402
from hamirror.link import protocol  # noqa: E402
from hamirror.link.protocol import Op  # noqa: E402
from tests.mirror_fixtures import local_link  # noqa: E402

MODE = (stat.S_IFREG | 0o644, 0, 0, 0)
DATA = b"x" * 4096


def new_files(client: LinkClient, prefix: bytes, count: int, in_flight: int) -> float:
    """Files per second, with at most ``in_flight`` files awaiting their acknowledgement."""
    started = time.perf_counter()
    pending = []
    for i in range(count):
        path = b"%s%d" % (prefix, i)
        client.submit(Op.CREATE, MODE, (path,))
        pending.append(client.submit(Op.WRITE, (0,), (path,), data=DATA))
        if len(pending) >= in_flight:
            pending.pop(0).wait()
    for ticket in pending:
        ticket.wait()
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--no-delegate", action="store_true", help="keep the receiver's per-path record")
    args = parser.parse_args()
    base = tempfile.mkdtemp(dir="/tmp", prefix="hamirror-rd-")
    try:
        with local_link(base, state_dir=f"{base}/state") as (client, receiver):
            offers = getattr(protocol, "offers_delegation", lambda answer: False)
            if not args.no_delegate and offers(getattr(client, "hello_answer", b"")):
                client.submit(Op.PING, (protocol.PING_DELEGATE,)).wait(10)
                print("delegated session")
            one = new_files(client, b"s", args.files, 1)
            many = new_files(client, b"p", args.files, 64)
            log = receiver.unsynced
        print(f"{os.getcwd()}: new files, one in flight {one:.0f}/s; 64 in flight {many:.0f}/s "
              f"(receiver: {log.records} fdatasync(s) of its log, {log.syncer.syncs} syncfs)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
