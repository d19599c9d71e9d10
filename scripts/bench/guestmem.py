"""Keep this VM's freed memory in the guest while a benchmark runs, then give the settings back.

Why: this machine is a VM whose balloon device reports free memory to its host (virtio-balloon
free page reporting). A page freed by one run (a deleted file's page cache) goes back to the host
within a second or two, and the next run that fills the page cache has the host fault it in again:
1 GiB + fsync on the plain directory, deleted and written again every 15 s, made 790-798 MB/s at
0.91-0.94 ms of CPU per MiB with the kernel's settings, and 1,396-1,460 MB/s at 0.32-0.36 ms once
freed pages were held (the first run after the change still paid: its memory had been reported
before). A replicated column fills three times what plain fills (the mount's cache and both
copies), so the host's cost weighs on the ratios, not only on the figures. The machine this guards
against is the benchmark's, not the product's: on bare metal there is nothing to hold.
docs/performance.md, "Freed memory held in the guest".

Two of the guest kernel's own knobs, nothing else of the VM: ``min_free_ms`` (how long a page must
stay free before it is reported) and ``max_waiting_mib`` (how much free memory may wait unreported
before it is reported anyway: with 1,024, the third GiB of a 3 GiB fill after a 3 GiB clean-up
still ran at 459-468 MB/s, against 1,414-1,578 with more). Where they do not exist (bare metal,
another kernel) or cannot be written, nothing is changed and the report says so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PARAMETERS = "/sys/module/page_reporting/parameters"
# min_free_ms: the largest value this kernel takes (300,001 is refused with EINVAL); a page freed
# during a run and not taken again within 5 minutes is still reported. max_waiting_mib: more than a
# run frees at once (the bench's largest clean-up is a few GiB).
HOLD = {"min_free_ms": "300000", "max_waiting_mib": "16384"}


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


def _settings(values: dict[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


@contextlib.contextmanager
def freed_memory_held(hold: bool, parameters: str = PARAMETERS) -> Iterator[str]:
    """Hold freed pages in the guest for the block's duration (``hold``), restoring the values
    found at the end, also on an exception or Ctrl-C (not on SIGKILL: then write them back by
    hand, as the report printed them). Yields what was done, for the report."""
    before = {name: _read(os.path.join(parameters, name)) for name in HOLD}
    if None in before.values():
        yield "no free page reporting here (nothing changed)"
        return
    if not hold:
        yield f"free page reporting as found ({_settings(before)})"
        return
    written: list[str] = []
    try:
        for name, value in HOLD.items():
            if not _write(os.path.join(parameters, name), value):
                yield f"free page reporting as found ({_settings(before)}; could not write {name})"
                return
            written.append(name)
        yield f"freed memory held in the guest ({_settings(HOLD)} during the run; {_settings(before)} before and after)"
    finally:
        for name in written:
            _write(os.path.join(parameters, name), before[name])   # type: ignore[arg-type]
