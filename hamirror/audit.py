"""The audit trail: refused access attempts, logged at WARNING with their source, rate-limited.

A counter says *that* something was refused; an operator investigating needs *who* and *when*.
Each refusal kind (``http-token``, ``http-connections``, ``curve``, ``heartbeat``) is logged
on the ``hamirror.audit`` logger (route it to its own file if you like), at most once per
source per ``interval`` seconds; the next line for that source says how many were suppressed.
A flood from many sources (spoofed UDP addresses) is bounded too: at most ``per_kind`` lines per
kind per interval, then one summary line of what was left out. Thread-safe: the ZAP
authenticator calls it from its own thread.

A leaf module: it imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

INTERVAL = 60.0          # seconds between two lines of one kind from one source
PER_KIND = 20            # lines of one kind per interval, all sources together
MAX_SOURCES = 4096       # sources remembered (oldest forgotten first): bounded memory under a flood


class AuditLog:
    """Rate-limited WARNING lines, keyed by (kind, source)."""

    def __init__(self, logger: logging.Logger | None = None, interval: float = INTERVAL, per_kind: int = PER_KIND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger or logging.getLogger("hamirror.audit")
        self.interval, self.per_kind, self.clock = interval, per_kind, clock
        self._lock = threading.Lock()
        # (kind, source) -> [time of the last line, events suppressed since]
        self._sources: collections.OrderedDict[tuple[str, str], list] = collections.OrderedDict()
        # kind -> [window start, lines in the window, events left out by the per-kind budget]
        self._windows: dict[str, list] = {}

    def refused(self, kind: str, source: str, detail: str) -> bool:
        """Record one refusal of ``kind`` from ``source``; True when a line was logged."""
        lines: list[str] = []
        with self._lock:
            now = self.clock()
            key = (kind, source)
            entry = self._sources.get(key)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return False
            window = self._windows.get(kind)
            if window is None or now - window[0] >= self.interval:
                if window is not None and window[2]:
                    lines.append(f"audit: {kind}: {window[2]} more refusal(s) from other sources were not logged "
                                 f"in the last {self.interval:g} s")
                window = self._windows[kind] = [now, 0, 0]
            logged = window[1] < self.per_kind
            if logged:
                window[1] += 1
                suppressed = entry[1] if entry is not None else 0
                self._sources[key] = [now, 0]
                self._sources.move_to_end(key)
                while len(self._sources) > MAX_SOURCES:
                    self._sources.popitem(last=False)
                note = f" ({suppressed} more from this source since the last line)" if suppressed else ""
                lines.append(f"audit: {kind} from {source}: {detail}{note}")
            else:
                window[2] += 1
        for line in lines:
            self.logger.warning("%s", line)
        return logged


AUDIT = AuditLog()


def refused(kind: str, source: str, detail: str) -> bool:
    """Record a refusal in the process-wide audit log (see :class:`AuditLog`)."""
    return AUDIT.refused(kind, source, detail)


__all__ = ["AUDIT", "AuditLog", "refused"]
