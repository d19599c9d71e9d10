"""The notify hook: an operator's script run for each event, like keepalived's ``notify`` and
Patroni's callbacks (``[notify] script``; docs/admin-guide.md, "Notify hook").

The script gets the event as JSON on its standard input and as environment variables
(``HAMIRROR_EVENT`` the kind, ``HAMIRROR_MODULE``, ``HAMIRROR_NODE``, ``HAMIRROR_TEXT``,
``HAMIRROR_SEQ``, ``HAMIRROR_TIME``, plus ``HAMIRROR_FROM``/``HAMIRROR_TO`` for a state change).
One worker thread runs the scripts one at a time, in the order of the events, so a mail or a page
never arrives before the one it follows. The agent never waits for it: events queue (at most
``QUEUE``; beyond that they are dropped and counted), a script is killed after ``timeout``, and
its failures are logged and counted, never recorded as events (a failing hook must not feed itself).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

QUEUE = 1000


def environment(event: dict) -> dict[str, str]:
    """The variables the script gets for ``event`` (strings only; absent fields are left out)."""
    names = {"kind": "HAMIRROR_EVENT", "module": "HAMIRROR_MODULE", "node": "HAMIRROR_NODE",
             "text": "HAMIRROR_TEXT", "seq": "HAMIRROR_SEQ", "time": "HAMIRROR_TIME",
             "from": "HAMIRROR_FROM", "to": "HAMIRROR_TO"}
    return {var: str(event[key]) for key, var in names.items() if event.get(key) is not None}


class Notifier:
    """Runs ``script`` for each event whose kind is in ``kinds`` (all when empty)."""

    def __init__(self, script: str, kinds: Iterable[str] = (), timeout: float = 30.0,
                 base_env: dict[str, str] | None = None) -> None:
        self.script, self.kinds, self.timeout = script, frozenset(kinds), timeout
        self.base_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"} \
            if base_env is None else base_env
        self.queue: queue.Queue[dict | None] = queue.Queue(QUEUE)
        self.sent = self.failed = self.dropped = 0
        self._deadline: float | None = None       # set by close()
        self._thread = threading.Thread(target=self._run, name="hamirror-notify", daemon=True)
        self._thread.start()

    def __call__(self, event: dict) -> None:
        """Queue ``event`` (from the agent's loop: never blocks)."""
        if self.kinds and event.get("kind") not in self.kinds:
            return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.error("notify: queue full (%d events): event %s not notified", QUEUE, event.get("seq"))

    def close(self, timeout: float = 5.0) -> None:
        """Notify what is queued for at most ``timeout`` (the rest is dropped), then stop; a script
        still running then is killed at its own timeout."""
        self._deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        self._thread.join(timeout + self.timeout + 1)

    def _run(self) -> None:
        while True:
            try:
                event = self.queue.get(timeout=None if self._deadline is None else 0.1)
            except queue.Empty:
                return                              # closing, and the full queue had no room for the end
            if event is None:
                return
            if self._deadline is not None and time.monotonic() > self._deadline:
                self.dropped += 1
                continue
            self._notify(event)

    def _notify(self, event: dict) -> None:
        try:
            done = subprocess.run([self.script], input=json.dumps(event, default=str), text=True,
                                  env={**self.base_env, **environment(event)}, capture_output=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            self.failed += 1
            log.error("notify: %s killed after %g s (event %s)", self.script, self.timeout, event.get("seq"))
            return
        except OSError as exc:
            self.failed += 1
            log.error("notify: %s could not run: %s", self.script, exc)
            return
        if done.returncode != 0:
            self.failed += 1
            log.error("notify: %s exited %d for event %s: %s", self.script, done.returncode, event.get("seq"),
                      (done.stderr or "").strip()[-500:])
        else:
            self.sent += 1
