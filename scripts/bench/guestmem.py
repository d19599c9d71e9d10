"""Keep this VM's freed memory in the guest while a benchmark runs, then give the setting back.

Why: this machine is a VM whose balloon device reports free memory to its host (virtio-balloon
free page reporting). A page freed by one run (a deleted file's page cache) goes back to the host
within a second or two, and the next run that fills the page cache has the host fault it in again:
1 GiB + fsync on the plain directory, deleted and written again every 15 s, made 790-798 MB/s at
0.91-0.94 ms of CPU per MiB with the kernel's default, and 1,396-1,460 MB/s at 0.32-0.36 ms once
freed pages were held for 120 s (``/sys/module/page_reporting/parameters/min_free_ms``; the first
run after the change still paid, its memory had been reported before). A replicated column fills
three times what plain fills (the mount's cache and both copies), so the host's cost weighs on the
ratios, not only on the figures. The machine this guards against is the benchmark's, not the
product's: on bare metal there is nothing to hold. docs/performance.md, "Freed memory held".

The knob is the guest kernel's own (``min_free_ms``: how long a free page must stay free before it
is reported); nothing else of the VM is touched. Where it does not exist (bare metal, another
kernel) or cannot be written, nothing is changed and the report says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

KNOB = "/sys/module/page_reporting/parameters/min_free_ms"
# The largest value this kernel takes (300,001 is refused with EINVAL): a page freed during a run and
# not taken again within 5 minutes is still reported; a run takes its pages back far sooner.
HOLD_MS = 300_000


def _read(path: str) -> str | None:
    try:
        with open(path) as knob:
            return knob.read().strip()
    except OSError:
        return None


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as knob:
            knob.write(value)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def freed_memory_held(hold: bool, knob: str = KNOB) -> Iterator[str]:
    """Hold freed pages in the guest for the block's duration (``hold``), restoring the previous
    value at the end, also on an exception or Ctrl-C (not on SIGKILL: then write it back by hand).
    Yields what was done, for the report."""
    before = _read(knob)
    if before is None:
        yield "no free page reporting here (nothing changed)"
        return
    if not hold:
        yield f"free page reporting as found (min_free_ms {before})"
        return
    if not _write(knob, str(HOLD_MS)):
        yield f"free page reporting as found (min_free_ms {before}; could not write {knob})"
        return
    try:
        yield f"freed memory held in the guest (min_free_ms {HOLD_MS} during the run, {before} before and after)"
    finally:
        _write(knob, before)
