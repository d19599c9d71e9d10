"""The agent's durable memory of one module: ``<state_dir>/modules/<module>/agent.json``.

Written (temp file, fsync, rename, fsync of the directory) *before* the change it records takes
effect, so an agent killed half-way through a transition knows on restart where it was going
(design §2). The state the module is in or going to, the swap phase, maintenance and the
restart and failover counts live here; what the data says (up to date, generations) lives in
the journals, next to the data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from hamirror.cluster.states import NodeState
from hamirror.cluster.view import SwapPhase
from hamirror.durablefile import write_json

FILENAME = "agent.json"


@dataclasses.dataclass(frozen=True)
class ModuleRecord:
    """What survives an agent restart. A module never seen before is started (WAIT): a fresh
    install comes up without an operator ``start``; ``hamirror stop`` is what persists STOP."""

    state: NodeState = NodeState.WAIT
    swap: SwapPhase = SwapPhase.NONE
    restarts: tuple[float, ...] = ()   # wall times of checker restarts, for the restart window
    updated: float = 0.0
    maintenance: bool = False          # ``hamirror maintenance on``: automatic actions suspended
    failovers: tuple[float, ...] = ()  # wall times of this node's failovers, for flap damping
    damped: bool = False               # the failover limit was reached: held until ``hamirror clear``
    maintenance_version: int = 0       # grows with each setting; the peer adopts a newer one
    peer_led: bool = False             # the peer held the witness's lease after our data was last current

    def to_json(self) -> dict:
        return {"state": self.state.value, "swap": self.swap.value, "restarts": list(self.restarts),
                "updated": self.updated, "maintenance": self.maintenance, "failovers": list(self.failovers),
                "damped": self.damped, "maintenance_version": self.maintenance_version, "peer_led": self.peer_led}

    @classmethod
    def from_json(cls, data: dict) -> ModuleRecord:
        return cls(NodeState(data["state"]), SwapPhase(data.get("swap", "none")),
                   tuple(float(t) for t in data.get("restarts", ())), float(data.get("updated", 0.0)),
                   bool(data.get("maintenance", False)), tuple(float(t) for t in data.get("failovers", ())),
                   bool(data.get("damped", False)), int(data.get("maintenance_version", 0)),
                   bool(data.get("peer_led", False)))


class Store:
    """Load and save one module's record."""

    def __init__(self, module_state_dir: str) -> None:
        self.dir = module_state_dir
        self.path = os.path.join(module_state_dir, FILENAME)

    def load(self) -> ModuleRecord:
        """The saved record, or the default for a module never seen (unreadable file: error)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                return ModuleRecord.from_json(json.load(f))
        except FileNotFoundError:
            return ModuleRecord()

    def save(self, record: ModuleRecord) -> ModuleRecord:
        """Durably replace the record; returns it stamped with the time."""
        record = dataclasses.replace(record, updated=time.time())
        write_json(self.path, record.to_json())
        return record
