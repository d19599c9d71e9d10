"""Has this node listened long enough for its peer's silence to mean something?

A node that did not run (every process SIGSTOPped, a paused VM, a suspend, starvation) heard
nothing while it was stopped, yet on waking its peer's last heartbeat looks old: a silence it never
listened to. Deciding on it made a frozen primary go ALONE beside the peer that had rightly taken
over (issue 15, finding 1). So the agent notes that it runs, often (a watcher task on its loop) and
right before it decides and acts; a gap longer than ``threshold`` between two notes is a *stall*.
After a stall (and after the agent starts) the node has not *listened* until a full heartbeat
timeout has passed; :class:`~hamirror.cluster.view.ModuleView` carries that fact (``listened``)
and the decision refuses every move that rests on silence until then.

The stall count is also an *epoch*: a view built before a stall is stale once the count moved, so
the runner drops a decision (or the start of its actions) made from it. The clock counts across a
suspend (``CLOCK_BOOTTIME``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from hamirror.cluster.quorum import boottime

log = logging.getLogger(__name__)


def stall_threshold(interval: float, timeout: float) -> float:
    """The longest gap between two notes that is not a stall: a few heartbeat intervals (a loaded
    machine's scheduling latency is far below), and never more than half the timeout."""
    return max(3 * interval, timeout / 2) + interval


class Listening:
    """Stall detection and the listening period that follows (the agent's, one per node)."""

    def __init__(self, timeout: float, threshold: float, clock: Callable[[], float] = boottime) -> None:
        self.timeout, self.threshold, self.clock = timeout, threshold, clock
        now = clock()
        self.last = now            # the last moment the agent was seen running
        self.since = now           # listening since: the agent's start or the end of the last stall
        self.stalls = 0            # the epoch: views built under an older count are stale
        self.last_gap = 0.0
        self.on_stall: Callable[[float], None] = lambda gap: None

    def check(self) -> int:
        """Note that the agent runs now; return the stall count (bumped if this is the first note
        after a gap longer than ``threshold``)."""
        now = self.clock()
        gap, self.last = now - self.last, now
        if gap > self.threshold:
            self.stalls += 1
            self.since, self.last_gap = now, gap
            self.on_stall(gap)
        return self.stalls

    def listened(self) -> bool:
        """Whether a full heartbeat timeout has passed since the start or the last stall."""
        self.check()
        return self.clock() - self.since >= self.timeout

    async def watch(self, period: float) -> None:
        """Note every ``period`` (run as a task): a stall during a long action is seen on waking."""
        while True:
            self.check()
            await asyncio.sleep(period)


def always_listening() -> Listening:
    """A :class:`Listening` that never stalls and has always listened (runners built by tests)."""
    listening = Listening(0.0, math.inf, clock=lambda: 0.0)
    return listening
