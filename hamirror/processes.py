"""Is a running process the one we recorded? Its pid, and the start time psutil reports."""

from __future__ import annotations

import psutil

# psutil's create_time() is the start in ticks since boot plus the boot time the kernel reports
# *now* (/proc/stat btime: the wall clock minus the time since boot, in whole seconds), which
# moves by a second when the clock is slewed across a second boundary. Compared exactly (or to
# 0.01 s), a process that kept running looked gone: a lab's `up` once reported "the agent on
# node1 exited" for a live agent (CI, 2026-12-05). A pid reused within a second and a half of the
# recorded start is not a real risk.
START_SLACK = 1.5


def same_start(proc: psutil.Process, recorded: float) -> bool:
    """``proc`` started when the recorded process did (raises psutil.Error as create_time does)."""
    return abs(proc.create_time() - recorded) <= START_SLACK
