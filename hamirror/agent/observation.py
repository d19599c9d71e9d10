"""What a module's runner sees of its data path and journals at one instant (:class:`Observation`).

Kept apart from :mod:`module_runner` (which re-exports it): the status, the events and the
online verify read it too.
"""

from __future__ import annotations

import dataclasses

from hamirror.cluster.view import MirrorHealth, mirror_health
from hamirror.journal.generations import GenerationHistory


@dataclasses.dataclass(frozen=True)
class Observation:
    """The data path and the journals at one instant (gathered in a worker thread)."""

    history: GenerationHistory
    uptodate: bool
    mounts: tuple[dict | None, ...]
    receivers: tuple[dict | None, ...]
    receivers_alive: bool
    changed: int = 0

    @property
    def mounted(self) -> bool:
        return bool(self.mounts) and all(m is not None for m in self.mounts)

    @property
    def mount_states(self) -> set[str]:
        return {str(m.get("state")) for m in self.mounts if m}

    @property
    def mirror(self) -> MirrorHealth:
        """What the mounts really do (a directory not mounted counts as DEAD)."""
        return mirror_health([m.get("state") if m else None for m in self.mounts])

    @property
    def fenced(self) -> bool:
        """A mount lost the peer and waits for it to confirm its copy is stale."""
        return "FENCED" in self.mount_states

    @property
    def last_resync(self) -> dict | None:
        """What the last completed resync of the mounts copied (summed over directories)."""
        parts = [m["last_resync"] for m in self.mounts if m and isinstance(m.get("last_resync"), dict)]
        if not parts:
            return None
        total = {key: sum(int(p.get(key) or 0) for p in parts) for key in ("done_files", "bytes_sent")}
        total["mode"] = parts[0].get("mode")
        total["seconds"] = max(float(p.get("seconds") or 0) for p in parts)
        total["finished_at"] = max(float(p.get("finished_at") or 0) for p in parts)
        return total
