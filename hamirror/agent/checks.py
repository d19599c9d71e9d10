"""Running a module's checkers while it is primary, and the verdict the decision sees.

Each checker runs on its own interval in a worker thread. One failed check makes the module
unhealthy until the next action sequence (a restart in place, a hand-over) resets the verdict;
after a reset the checkers wait one interval before judging again, so an application that is
still starting is not counted as failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hamirror.actions.checkers import Checker

log = logging.getLogger(__name__)


class CheckerState:
    """The health verdict of one module's checkers (``ok``) and the loop that keeps it."""

    def __init__(self, module: str, checkers: list[Checker], clock: Callable[[], float] = time.monotonic) -> None:
        self.module, self.checkers, self.clock = module, checkers, clock
        self.failure: str | None = None
        self.on_failure: Callable[[str], object] = lambda failure: None   # the event timeline
        self.next_run = {c.name: 0.0 for c in checkers}
        # Each checker's last run, for the console: name -> (wall-clock time, None or the failure).
        self.results: dict[str, tuple[float, str | None]] = {}
        self.reset()

    @property
    def ok(self) -> bool:
        return self.failure is None

    def reset(self) -> None:
        """Forget the last failure; judge again one interval from now."""
        self.failure = None
        now = self.clock()
        self.next_run = {c.name: now + c.interval for c in self.checkers}

    async def run_due(self) -> None:
        """Run every checker whose time has come (in threads); record the first failure."""
        now = self.clock()
        due = [c for c in self.checkers if now >= self.next_run[c.name]]
        for checker in due:
            self.next_run[checker.name] = now + checker.interval
        results = await asyncio.gather(*(asyncio.to_thread(c.check) for c in due), return_exceptions=True)
        for checker, result in zip(due, results):
            if isinstance(result, BaseException):
                result = f"checker crashed: {result}"
            self.results[checker.name] = (time.time(), result)
            if result is not None and self.failure is None:
                self.failure = f"{checker.name}: {result}"
                log.warning("%s: checker %s", self.module, self.failure)
                self.on_failure(self.failure)
