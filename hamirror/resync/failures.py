"""Consecutive resync failures, so that a resync failing the same way again is an alarm.

Why: the agent restarts a failed resync every 10 s. A cause that does not go away (the peer's
disk full, EIO, a refused operation) used to be a silent retry for ever, with a write stall each
time, while the pair had no replica. The mount counts failures in a row that say the same thing
(numbers aside: an operation's sequence number changes from one try to the next), in its
journal, so a restart of the mount does not reset the count; a completed resync clears it. From
:data:`ALARM_AFTER` on it is an alarm in ``hamirror status``, the events and the metrics.
"""

from __future__ import annotations

import json
import re
import time

from hamirror.mirror.record import RESYNC_FAILURES, StateStore

ALARM_AFTER = 3
_NUMBER = re.compile(r"\d+")


def same_way(a: str, b: str) -> bool:
    """Two failure texts say the same thing (numbers aside)."""
    return _NUMBER.sub("N", a) == _NUMBER.sub("N", b)


def count(record: dict | None) -> int:
    """The failures in a row a record holds; 0 for a damaged one (a journal value is never trusted)."""
    value = record.get("count", 0) if isinstance(record, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def after_failure(previous: dict | None, error: str, now: float) -> dict:
    """The record after one more failure (pure): the count goes on if it failed the same way."""
    if previous and count(previous) and same_way(str(previous.get("error", "")), error):
        return {**previous, "count": count(previous) + 1, "error": error, "last": now}
    return {"count": 1, "error": error, "since": now, "last": now}


def is_alarm(record: dict | None) -> bool:
    return count(record) >= ALARM_AFTER


def load(store: StateStore) -> dict | None:
    raw = RESYNC_FAILURES.get(store)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def failed(store: StateStore, error: str) -> dict:
    """Count one failure; durable. Returns the new record."""
    record = after_failure(load(store), error, time.time())
    RESYNC_FAILURES.set(store, json.dumps(record))
    return record


def succeeded(store: StateStore) -> None:
    """A resync completed: the count starts again from zero."""
    if RESYNC_FAILURES.get(store):
        RESYNC_FAILURES.set(store, "")


def worst(records: list[dict | None]) -> dict | None:
    """Of several directories' records, the one with the most failures in a row (or None)."""
    found = [r for r in records if count(r) > 0]
    return max(found, key=count) if found else None
