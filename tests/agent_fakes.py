"""Fakes for the agent's unit tests: a data path, VIP, scripts and journal that only record calls."""

from __future__ import annotations

import dataclasses

from hamirror.journal.generations import Generation, GenerationHistory


@dataclasses.dataclass
class FakeResult:
    ok: bool
    detail: str = ""


class FakeDataPath:
    """Records calls; ``mounts``/``receivers`` are what observation reports."""

    def __init__(self, dirs: int = 1, journal: "FakeJournal | None" = None) -> None:
        self.journal = journal            # mount --alone / set_alone start a generation in it
        self.dirs = [f"/srv/d{i}" for i in range(dirs)]
        self.dir_states = [f"/state/{i}" for i in range(dirs)]
        self.calls: list[tuple] = []
        self.mounts: list[dict | None] = [None] * dirs
        self.receivers: list[dict | None] = [None] * dirs
        self.receiving = False
        self.fail: set[str] = set()
        self.watching = False             # watch() is bookkeeping, kept out of ``calls``

    def _call(self, name: str, *args) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise RuntimeError(f"{name} broke")

    def watch(self, enabled: bool) -> None:
        self.watching = enabled

    def record_fencing_token(self, token: int | None) -> None:
        """Bookkeeping (the tenure's token), kept out of ``calls``."""
        self.token = token if token is not None else getattr(self, "token", None)

    def wait_for_tenure(self) -> bool:
        """Bookkeeping (waited before a mount that joins its peer), kept out of ``calls``."""
        self.tenure_waits = getattr(self, "tenure_waits", 0) + 1
        return True

    def start_receivers(self, wait: bool = True) -> None:
        self._call("start_receivers")
        self.receiving = True

    def stop_receivers(self, timeout: float = 10.0) -> None:
        self._call("stop_receivers")
        self.receiving = False

    def mount(self, alone: bool) -> None:
        self._call("mount", alone)
        if alone and self.journal is not None:
            self.journal.new_generation()
        self.mounts = [{"state": "ALONE" if alone else "PRIM", "mounted": True, "pid": 1}] * len(self.dirs)

    def unmount(self, force: bool) -> None:
        self._call("unmount", force)
        self.mounts = [None] * len(self.dirs)

    def set_alone(self, reason: str) -> None:
        self._call("set_alone")
        if self.journal is not None:
            self.journal.new_generation()
        self.mounts = [dict(m, state="ALONE") if m else None for m in self.mounts]

    def refuse(self, reason: str) -> None:
        self._call("refuse")
        self.mounts = [dict(m, state="REFUSED") if m else None for m in self.mounts]

    def resync(self, full: bool) -> None:
        self._call("resync", full)
        self.mounts = [dict(m, state="SYNCING") if m else None for m in self.mounts]

    def flush(self) -> None:
        self._call("flush")

    def mount_statuses(self) -> list[dict | None]:
        return list(self.mounts)

    def mount_pids(self) -> set[int]:
        return {1}

    def receiver_status(self, index: int) -> dict | None:
        return self.receivers[index]

    def receivers_alive(self) -> bool:
        return self.receiving

    def receiver_pid(self, index: int) -> int | None:
        return 1 if self.receiving else None


class FakeVip:
    def __init__(self) -> None:
        self.up = False
        self.calls: list[str] = []

    def present(self) -> bool:
        return self.up

    def add(self) -> None:
        self.calls.append("add")
        self.up = True

    def remove(self) -> None:
        self.calls.append("remove")
        self.up = False


class FakeScripts:
    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.runs: list[tuple[str, str]] = []
        self.refused_runs: list[str] = []    # scripts told that the mounts refuse writes
        self.failing = failing
        self.kills = 0

    def kill_app(self) -> list[int]:
        self.kills += 1
        return [7]

    def run(self, name: str, state: str, writes_refused: bool = False) -> FakeResult:
        self.runs.append((name, state))
        if writes_refused:
            self.refused_runs.append(name)
        return FakeResult(name not in self.failing, f"{name} exit 1")


class FakeJournal:
    """Stands for the journals: history and the up-to-date flag."""

    def __init__(self, ids: tuple[str, ...] = (), uptodate: bool = False) -> None:
        self.history = history(*ids)
        self.uptodate = uptodate
        self.forgotten = False

    def read(self):
        from hamirror.agent.journal_info import JournalInfo
        return JournalInfo(self.history, self.uptodate)

    def mark_uptodate(self, value: bool) -> None:
        self.uptodate = value

    def new_generation(self) -> None:
        self.history = self.history.with_new(Generation(f"g{len(self.history.ids()) + 1}", 0.0))

    def forget_history(self) -> None:
        self.history = GenerationHistory()
        self.uptodate = False
        self.forgotten = True


def history(*ids: str) -> GenerationHistory:
    if not ids:
        return GenerationHistory()
    return GenerationHistory(Generation(ids[0], 0.0), tuple(Generation(g, 0.0) for g in ids[1:]))
