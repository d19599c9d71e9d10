"""Is a running process the one we recorded? Its pid, and when it started."""

from __future__ import annotations

import os

import psutil

# psutil's create_time() is the start in ticks since boot plus the boot time the kernel reports
# *now* (/proc/stat btime: the wall clock minus the time since boot, in whole seconds). It moves
# by a second when the clock is slewed across a second boundary, and by the whole step when the
# wall clock is stepped (NTP, a virtual machine resumed from a pause). Compared exactly (or to
# 0.01 s), a process that kept running looked gone: a lab's `up` once reported "the agent on node1
# exited" for a live agent (CI, 2026-12-05). A record made by an older release has only that
# wall-clock start, and is compared within this slack: a pid reused within a second and a half of
# the recorded start is not a real risk.
START_SLACK = 1.5
# The start since boot (its ticks divided by the clock's rate) is the same float for the same
# process, whatever the wall clock did: compared to well under one tick (10 ms).
BOOT_SLACK = 0.001


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def boot_start(proc: psutil.Process) -> float:
    """When ``proc`` started, in seconds since boot: no change of the wall clock moves it. Field 22
    of ``/proc/PID/stat`` (psutil reads the same but offers it only added to the boot time); the
    fields are counted after the command name's last ``)``, since the name may hold spaces and
    parentheses. Raises psutil.NoSuchProcess for a process gone."""
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(proc.pid) from None
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19]) / CLOCK_TICKS


def same_start(proc: psutil.Process, recorded: float, recorded_boot: float | None = None) -> bool:
    """``proc`` started when the recorded process did (raises psutil.Error as create_time does).
    ``recorded_boot``: its :func:`boot_start`, when the record has one (campaign 4003: a live
    receiver, its pid file compared on the wall-clock start, was taken for dead and started again
    every 10 s); else the wall-clock start ``recorded``, within :data:`START_SLACK`."""
    if isinstance(recorded_boot, (int, float)) and not isinstance(recorded_boot, bool):
        return abs(boot_start(proc) - recorded_boot) < BOOT_SLACK
    return abs(proc.create_time() - recorded) <= START_SLACK
