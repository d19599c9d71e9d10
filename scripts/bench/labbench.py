"""A demo-module lab for the lab benchmarks (failover.py, swap.py): up, then always down (root).

The lab is removed at the end, also on failure, Ctrl-C or SIGTERM; its files are removed only when
the run finished, otherwise the agents' logs stay for a look.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE))]

from hamirror.lab import control, state  # noqa: E402
from hamirror.lab.demo import interrupts_raise, remove_files  # noqa: E402
from hamirror.lab.naming import LabPaths, resolve_root  # noqa: E402


@contextmanager
def demo_lab(root: str | None, prefix: str, **up_options: bool | int | None) -> Iterator[LabPaths]:
    """``hamirror lab up`` with the demo module at root (default: a new directory under /tmp);
    ``up_options``: :func:`control.up`'s quorum options (``witness=True``, ``etcd=True``)."""
    if os.geteuid() != 0:
        raise SystemExit("needs root (the lab uses network and mount namespaces)")
    created_root = root is None or not os.path.exists(root)
    paths = LabPaths(resolve_root(root or tempfile.mkdtemp(prefix=prefix, dir="/tmp")))
    if state.load(paths) is not None:
        raise SystemExit(f"a lab is up at {paths.root} already; pass another --root")
    finished = False
    with interrupts_raise():
        try:
            started = time.monotonic()
            control.up(paths, ["demo"], **up_options)
            print(f"lab up at {paths.root} in {time.monotonic() - started:.1f} s", flush=True)
            yield paths
            finished = True
        finally:
            control.down(paths)
            if finished:
                remove_files(paths, created_root)
            else:
                print(f"the agents' logs stay in {paths.root}/NODE/log/", flush=True)
            print(f"lab at {paths.root} removed", flush=True)
