"""The node's event timeline: ``<state_dir>/events.jsonl``, one JSON object per line.

What happened and when, kept after the warning that announced it has gone: state changes,
failovers, resyncs, checker failures and restarts, fencing verdicts, operator commands (who and
from where), maintenance, damping, configuration problems. Read by ``hamirror events`` (straight
from the files, so it works with the agent down) and by the HTTP API (``/events``).

Bounded: when the file passes ``max_bytes`` it becomes ``events.jsonl.1`` (the previous one is
dropped), so the timeline takes at most twice ``max_bytes``. Lines are flushed, not fsynced: the
timeline is a record for people, the module record and the journals are what recovery trusts.
A write that fails (disk full) is logged and dropped; it never stops the agent.

Each event: ``{"seq", "time", "node", "module" (or null), "kind", "text", ...}`` plus fields of
its kind (``from``/``to`` for ``state``, ``bytes`` for ``resync-end``, ``caller`` for ``command``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from hamirror.cluster import actions as a
from hamirror.cluster.view import MirrorHealth, ModuleView
from hamirror.resync import failures

if TYPE_CHECKING:
    from hamirror.agent.module_runner import Observation

log = logging.getLogger(__name__)

FILENAME = "events.jsonl"
MAX_BYTES = 1 << 20        # per file; the timeline keeps this file and one rotated file
IN_MEMORY = 5000           # the last events the agent keeps at hand for the HTTP API
FENCING = (MirrorHealth.FENCED, MirrorHealth.REFUSED)


def paths(state_dir: str) -> tuple[str, str]:
    """The rotated file and the current one, oldest first."""
    current = os.path.join(state_dir, FILENAME)
    return current + ".1", current


def parse(line: str) -> dict | None:
    """One event line, or None for a torn or foreign line (a crash mid-write)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "kind" in event else None


def read(state_dir: str, module: str | None = None, limit: int | None = None, since: int = 0) -> list[dict]:
    """The stored events, oldest first: only ``module``'s (and node-wide ones) when given, only
    those after sequence number ``since``, at most the last ``limit``."""
    found: list[dict] = []
    for path in paths(state_dir):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
                open(path, encoding="utf-8", errors="replace") as f:
            found.extend(e for e in map(parse, f) if e is not None and matches(e, module, since))
    return found[-limit:] if limit else found


def matches(event: dict, module: str | None, since: int = 0) -> bool:
    """Whether an event belongs in a listing for ``module`` (None: all) after ``since``."""
    if int(event.get("seq") or 0) <= since:
        return False
    return module is None or event.get("module") in (module, None)


def follow(state_dir: str, pause: float = 0.5, sleep: Callable[[float], None] = time.sleep,
           stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """Events appended from now on (``hamirror events -f``)."""
    for _, line in follow_lines([paths(state_dir)[1]], pause, sleep, stop):
        if (event := parse(line)) is not None:
            yield event


def follow_lines(files: list[str], pause: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 stop: Callable[[], bool] = lambda: False) -> Iterator[tuple[str, str]]:
    """``(path, line)`` for each whole line appended to ``files`` from now on, across rotations:
    an open file is read to its end before the file now at its path is opened (from its start),
    so nothing written meanwhile is skipped. A file created later is read from its start."""
    handles: dict[str, BinaryIO] = {}
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            handles[path] = f = open(path, "rb")
            f.seek(0, os.SEEK_END)
    try:
        while not stop():
            for path in files:
                f = handles.get(path)
                for line in iter(f.readline if f else bytes, b""):
                    if not line.endswith(b"\n"):          # still being written: next time
                        f.seek(-len(line), os.SEEK_CUR)
                        break
                    yield path, line[:-1].decode("utf-8", "replace")
                with contextlib.suppress(FileNotFoundError):
                    if f is None or os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                        handles[path] = open(path, "rb")
                        if f is not None:
                            f.close()
            sleep(pause)
    finally:
        for f in handles.values():
            f.close()


class EventLog:
    """Appends this node's events (on the agent's loop: one short write per event) and keeps the
    last ones in memory, so that serving them never reads files on the loop."""

    def __init__(self, state_dir: str, node: str, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir, self.node, self.max_bytes, self.clock = state_dir, node, max_bytes, clock
        self.path = paths(state_dir)[1]
        try:
            stored = read(state_dir, limit=IN_MEMORY)
        except OSError as exc:       # unreadable: numbering restarts, the agent runs on
            log.error("event timeline %s unreadable: %s", self.path, exc)
            stored = []
        self.recent: collections.deque[dict] = collections.deque(stored, maxlen=IN_MEMORY)
        self._end_torn_line()
        self.seq = int(stored[-1].get("seq") or 0) if stored else 0
        self.listeners: list[Callable[[dict], None]] = []   # e.g. the notify hook; called after each add

    def _end_torn_line(self) -> None:
        """A crash in the middle of a line left it without its newline: end it, so the next
        event does not join it (and get lost with it)."""
        try:
            with open(self.path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
        except OSError:
            pass                     # no file yet, or unwritable: add() says so

    def add(self, kind: str, text: str, module: str | None = None, **fields: object) -> dict:
        """Record one event; returns it (also when it could not be written)."""
        self.seq += 1
        event = {**fields, "seq": self.seq, "time": round(self.clock(), 3), "node": self.node,
                 "module": module, "kind": kind, "text": text}
        self.recent.append(event)
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(event, default=str) + "\n")
                size = f.tell()
            if size >= self.max_bytes:
                os.replace(self.path, paths(self.state_dir)[0])
        except OSError as exc:
            log.error("event not recorded (%s): %s", exc, text)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the agent's loop
                log.exception("event listener failed")
        return event

    def read(self, module: str | None = None, limit: int | None = None, since: int = 0) -> list[dict]:
        """The last events (at most ``IN_MEMORY``), as :func:`read` selects them from the files."""
        found = [e for e in self.recent if matches(e, module, since)]
        return found[-limit:] if limit else found


def decision_events(view: ModuleView, decision: a.Decision, known: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """What a decision tells the timeline, as ``(kind, text, fields)``: its failover, checker
    restart, remount, resync start and fencing verdict, and warnings not in ``known`` (the
    previous decision's, so a standing warning is recorded once). State changes are recorded
    when they happen (by the runner), not when they are decided."""
    found: list[tuple[str, str, dict]] = []
    first = decision.warnings[0] if decision.warnings else ""
    if decision.failover is not None:
        found.append((decision.failover.value, first or f"{view.state.value} -> {decision.state.value}",
                      {"from": view.state.value, "to": decision.state.value}))
    for action in decision.actions:
        if isinstance(action, a.RestartApp) and action.counted:
            found.append(("checker-restart", first or "checker failed: restarting the application", {}))
        elif isinstance(action, a.RemountDataPath):
            found.append(("remount", "a mount daemon died: remounting from its journal", {}))
        elif isinstance(action, a.StartResync):
            found.append(("resync-start", f"{'full' if action.full else 'incremental'} resync to the peer",
                          {"full": action.full}))
        elif isinstance(action, a.SetMirroring) and not action.enabled and view.mirror in FENCING:
            found.append(("fence-grant", "blocked writes acknowledged alone: the peer cannot be primary",
                          {"mirror": view.mirror.value}))
        elif isinstance(action, a.RefuseWrites):
            found.append(("fence-refuse", "writes refused: the peer may be primary", {}))
        elif isinstance(action, a.Fence):
            found.append(("fence-script", "running the fence script against the peer", {"takeover": action.takeover}))
    reported = {text for _, text, _ in found}
    for warning in decision.warnings:
        if warning not in known and warning not in reported:
            found.append(("held" if decision.held else "warning", warning, {}))
    return found


def observation_events(before: Observation | None, after: Observation, primary: bool) -> list[tuple[str, str, dict]]:
    """What the data path did by itself between two observations: a primary's mount fenced (it
    lost the peer and blocks writes), a resync that ended (with what it copied), and on the
    receiving side a resync from the peer that began or ended."""
    found: list[tuple[str, str, dict]] = []
    receiving = any(r and r.get("resyncing") for r in after.receivers)
    if before is not None and not primary and receiving != any(r and r.get("resyncing") for r in before.receivers):
        found.append(("resync-receive-start", "the peer started a resync to this node", {}) if receiving else
                     ("resync-receive-end", "the resync from the peer ended", {}))
    if primary and after.fenced and not (before and before.fenced):
        found.append(("fenced", "the peer stopped acknowledging: writes blocked until a fencing verdict", {}))
    alarm = _resync_alarm(after)
    if alarm and (before is None or not _resync_alarm(before)):
        found.append(("resync-alarm", f"the resync failed {alarm['count']} times in a row the same way: "
                                      f"{alarm['error']}", {"failures": alarm["count"], "error": alarm["error"]}))
    end, last = after.last_resync, (before.last_resync or {}) if before else None
    if end and last is not None and end.get("finished_at") and end["finished_at"] != last.get("finished_at"):
        found.append(("resync-end", f"resync done ({end.get('mode') or '?'}): {end['bytes_sent']} bytes, "
                                    f"{end['done_files']} file(s) in {end['seconds']:.1f} s",
                      {"bytes": end["bytes_sent"], "files": end["done_files"], "seconds": end["seconds"]}))
    return found


def _resync_alarm(obs: Observation) -> dict | None:
    """The mounts' failures in a row when they are an alarm (failures.ALARM_AFTER), else None."""
    record = failures.worst([m.get("resync_failures") for m in obs.mounts if m])
    return record if failures.is_alarm(record) else None
