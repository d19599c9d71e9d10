"""Give a data-path daemon's freed heap memory back to the kernel once it has gone idle.

The mount and the receiver keep freed message buffers in their heap while they work
(``syscalls.keep_message_buffers``: up to 64 MiB, so the next 1 MiB message reuses pages instead
of the kernel zeroing fresh ones). Kept for good, that is ~12 MB per mount after one large
write, on every node, for every module, for as long as the module stays idle (docs/performance.md,
"Idle memory of the data path"). A thread looks at the process's CPU time every few seconds: after
an interval with almost none (idle), it trims the heap once (glibc's malloc_trim), and not again
until the daemon has worked. A busy daemon is never trimmed, so the reuse of buffers stays.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Callable

from hamirror.syscalls import malloc_trim

INTERVAL = 2.0        # seconds between looks
IDLE_CPU = 0.02       # at most this share of one core over an interval: idle


class IdleTrim:
    """The trimming thread of one daemon (start it after any fork: it is a thread)."""

    def __init__(self, interval: float = INTERVAL, idle_cpu: float = IDLE_CPU,
                 cpu: Callable[[], float] = time.process_time, trim: Callable[[], bool] = malloc_trim) -> None:
        self.interval, self.idle_cpu = interval, idle_cpu
        self._cpu, self._trim = cpu, trim
        self._stop = threading.Event()
        self._last = cpu()
        self._trimmed = False
        self.trims = 0

    def start(self) -> "IdleTrim":
        threading.Thread(target=self._run, name="hamirror-heaptrim", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.look()

    def look(self) -> bool:
        """One look: trim if the last interval was idle and nothing was trimmed since the daemon
        last worked. Whether it trimmed."""
        now = self._cpu()
        busy, self._last = now - self._last, now
        if busy > self.idle_cpu * self.interval:
            self._trimmed = False
            return False
        if self._trimmed:
            return False
        self._trim()
        self._trimmed = True
        self.trims += 1
        return True


def compact() -> None:
    """The spawner, before it forks: garbage collected, what is left frozen, free heap pages given
    back (docs/performance.md, "Idle memory of the data path").

    - Frozen (``gc.freeze``): a collection writes to the header of every object it visits, so a
      child's first full collection made a private copy of every page of the spawner's heap
      (~6 MB); frozen objects are never visited again, in the spawner or its children.
    - Trimmed: a child inherits every resident page of the heap, used or free, and is charged
      its share of each (~0.8 MB free after the imports).

    Never in a forked child of a process that lives on: its collection would copy the pages the
    two share (a mount daemon collecting before it detached went from 7.8 to 11.0 MB of its own).
    """
    gc.collect()
    gc.freeze()
    malloc_trim()
