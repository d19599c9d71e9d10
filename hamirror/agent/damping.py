"""Flap damping and maintenance kept in a module's record (``agent.json``), so both survive an
agent restart. The decision only sees the result (:class:`FailoverHealth` in the view)."""

from __future__ import annotations

import dataclasses

from hamirror.agent.persist import ModuleRecord
from hamirror.cluster.view import FailoverHealth


def recent(times: tuple[float, ...], now: float, window: float) -> tuple[float, ...]:
    """The times within ``window`` seconds before ``now``."""
    return tuple(t for t in times if now - t <= window)


def health(record: ModuleRecord, now: float, limit: int, window: float) -> FailoverHealth:
    """The view's flap-damping count."""
    return FailoverHealth(recent=len(recent(record.failovers, now, window)), max=limit, window=window,
                          latched=record.damped)


def counted(record: ModuleRecord, now: float, limit: int, window: float) -> ModuleRecord:
    """The record after one more failover at ``now``: latched once ``limit`` is reached (0: never)."""
    times = recent(record.failovers, now, window) + (now,)
    return dataclasses.replace(record, failovers=times, damped=record.damped or (0 < limit <= len(times)))


def cleared(record: ModuleRecord) -> ModuleRecord:
    """``hamirror clear``: forget the failover and restart counts; failovers are allowed again."""
    return dataclasses.replace(record, failovers=(), restarts=(), damped=False)
