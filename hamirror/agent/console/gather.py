"""What one node tells the console: its status document plus what the console shows beside it.

Per module, beside ``hamirror status``: the replication mode, the VIP and whether this node holds
it now, the replication rate (bytes and operations per second, from the mounts' and receivers'
counters) and the operations in flight, each checker's last result, and a bounded ring of rate
samples (one every ``SAMPLE_EVERY`` seconds, ``SAMPLES`` kept: the last five minutes) for the
plot. The node's document is ``{"node", "time", "status", "modules": {NAME: extras}, "events",
"actions"}``; the peer fetches it as JSON (``/console/node``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

SAMPLE_EVERY = 2.0     # seconds between two rate samples
SAMPLES = 150          # samples kept per module (5 minutes)
EVENTS = 60            # events of the node sent with its document


class Source(Protocol):
    """What the console reads from the agent (``hamirror.agent.runtime.Agent`` fits)."""

    runners: dict[str, Any]
    modules: list[Any]

    def status(self) -> dict: ...


@dataclass
class Counters:
    """Replication counters of one module on this node at one instant."""

    time: float
    bytes: int
    ops: int
    in_flight: int


def counters(runner: Any, now: float) -> Counters:
    """Bytes and operations sent by the mounts (primary) or applied by the receivers (secondary)."""
    obs = runner.obs
    mounts = [m for m in (obs.mounts if obs else ()) if m]
    receivers = [r for r in (obs.receivers if obs else ()) if r]
    sent = sum(int(m.get("bytes_sent") or 0) for m in mounts)
    applied = sum(int(r.get("bytes_applied") or 0) for r in receivers)
    ops = sum(int(m.get("ops_sent") or 0) for m in mounts) + sum(int(r.get("applied") or 0) for r in receivers)
    return Counters(now, sent + applied, ops, sum(int(m.get("in_flight") or 0) for m in mounts))


@dataclass
class Rates:
    """One module's rate samples: ``(time, bytes/s, ops/s)``, oldest first."""

    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SAMPLES))
    last: Counters | None = None

    def add(self, now: Counters) -> None:
        before, self.last = self.last, now
        if before is None or now.time <= before.time:
            return
        span = now.time - before.time
        # A counter that went back (a mount or receiver restarted) starts again from zero.
        self.samples.append((round(now.time, 1), max(0.0, (now.bytes - before.bytes) / span),
                             max(0.0, (now.ops - before.ops) / span)))


class Gatherer:
    """Samples the rates in the background and builds this node's console document."""

    def __init__(self, source: Source, actions: bool, events: Callable[..., list[dict]] | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.source, self.actions, self.events, self.clock = source, actions, events, clock
        self.rates: dict[str, Rates] = collections.defaultdict(Rates)
        self._task: asyncio.Task | None = None

    def sample(self) -> None:
        now = self.clock()
        for name, runner in self.source.runners.items():
            self.rates[name].add(counters(runner, now))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sampling bug must not end the plot for good
                log.exception("console: rate sample failed")
            await asyncio.sleep(SAMPLE_EVERY)

    async def document(self) -> dict:
        """This node's console document (the VIP is looked up in a worker thread: netlink)."""
        configs = {m.name: m for m in self.source.modules}
        modules = {}
        for name, runner in self.source.runners.items():
            modules[name] = await self._extras(runner, configs.get(name))
        status = self.source.status()
        return {"node": status.get("node"), "time": self.clock(), "status": status, "modules": modules,
                "actions": self.actions, "events": self.events(None, EVENTS) if self.events else []}

    async def _extras(self, runner: Any, config: Any) -> dict:
        rates = self.rates[runner.name]
        now = rates.samples[-1] if rates.samples else None
        vip = getattr(runner.executor, "vip", None)
        held = None
        if vip is not None:
            try:
                held = await asyncio.to_thread(vip.present)
            except Exception as exc:  # noqa: BLE001 - shown as unknown, not as an error page
                log.debug("console: VIP lookup failed: %s", exc)
        checkers = runner.checkers
        return {
            "mode": getattr(config, "mode", None),
            "vip": config.vip.address if config is not None and config.vip else None,
            "vip_here": held,
            "rate": {"bytes": now[1] if now else None, "ops": now[2] if now else None,
                     "in_flight": rates.last.in_flight if rates.last else 0},
            "samples": [list(s) for s in rates.samples],
            "checkers": [{"name": c.name, "interval": c.interval,
                          "time": checkers.results.get(c.name, (None, None))[0],
                          "result": checkers.results.get(c.name, (None, None))[1]} for c in checkers.checkers],
        }
