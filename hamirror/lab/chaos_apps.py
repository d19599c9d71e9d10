"""The applications the fault campaign (``scripts/chaos.py --module``) runs under: each one's module,
client, server process and checks, behind one small interface.

- ``demo``: the key-value service; PUTs through the VIP, every key read back through the VIP, both
  SQLite copies equal and passing ``integrity_check`` (:mod:`chaos_watch`).
- ``postgresql``: the bank of :mod:`pgclient` (transfers through one psql session; the invariant
  and amcheck).
- ``mariadb``: the same bank on InnoDB (:mod:`mariadbclient`; ``CHECK TABLE``).

Every application's replicated directory is also compared byte for byte after each trial
(:mod:`compare`), by the campaign.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hamirror.lab import chaos_watch, kvclient, mariadbclient, pgclient
from hamirror.lab.naming import NODES, LabPaths
from hamirror.lab.shell import LabError


@dataclass
class Verdict:
    """What a trial's check found: keys not served (``unreadable``), of which ``lost`` for sure,
    problems of the application's own checks, and figures for the report."""

    unreadable: dict[str, str] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


class App:
    """One application under test."""

    module = ""              # module name: lab up --module, hamirror swap NAME
    data_dir = ""            # the replicated directory, as the node sees it (/srv/...)
    startup = 60.0           # seconds for the first acknowledged write at a trial's start

    def lower_dir(self, paths: LabPaths, node: str) -> str:
        """The node's copy of the replicated directory, seen from the host: the node's disk under any mount."""
        return os.path.join(paths.node_dir(node, "srv"), os.path.relpath(self.data_dir, "/srv"))

    def is_server(self, pid: str, comm: str) -> bool:
        """pid (its /proc comm given) is the application's server process."""
        raise NotImplementedError

    def prepare(self, paths: LabPaths, primary: str) -> None:
        """Users, tables and initial data, once on a fresh lab."""

    def writer(self, paths: LabPaths, prefix: str, seed: int) -> kvclient.Writer:
        raise NotImplementedError

    def check(self, paths: LabPaths, primary: str | None, keys: list[str], converged: bool) -> Verdict:
        raise NotImplementedError


class Demo(App):
    module = "demo"
    data_dir = "/srv/hamirror-demo"
    startup = 60.0

    def is_server(self, pid: str, comm: str) -> bool:
        return chaos_watch.demo_server(pid, comm)

    def writer(self, paths: LabPaths, prefix: str, seed: int) -> kvclient.Writer:
        return kvclient.Writer(paths, prefix)

    def check(self, paths: LabPaths, primary: str | None, keys: list[str], converged: bool) -> Verdict:
        """Every key GET through the VIP; both SQLite copies equal and sound (checks 1 and 2)."""
        v = Verdict()
        snaps = {node: chaos_watch.snapshot(paths, node) for node in NODES}
        v.figures["copies"] = {node: {k: x for k, x in s.items() if k != "keys"} for node, s in snaps.items()}
        if converged:
            v.problems += chaos_watch.compare(snaps)
        try:
            v.unreadable = kvclient.unreadable(paths, keys, budget=120.0 if converged else 20.0)
        except (LabError, OSError) as exc:
            v.unreadable = dict.fromkeys(keys, "error")
            v.problems.append(f"reading the acknowledged keys back failed: {str(exc)[:200]}")
        v.lost = self._lost(v, snaps)
        return v

    @staticmethod
    def _lost(v: Verdict, snaps: dict[str, dict]) -> set[str]:
        """The unreadable keys that are lost: answered 404 or a wrong value, or, where the VIP did not
        answer, missing from the copy that misses the fewest (lost even if that side is kept)."""
        answered = {k for k, why in v.unreadable.items() if why != "error"}
        unanswered = set(v.unreadable) - answered
        if not unanswered:
            return answered
        missing = {node: unanswered - set(s.get("keys", [])) for node, s in snaps.items() if "error" not in s}
        v.figures["missing_if_kept"] = {node: len(m) for node, m in missing.items()}
        return answered | (min(missing.values(), key=len) if missing else unanswered)


class Bank(App):
    """PostgreSQL or MariaDB with the bank client; ``client`` is :mod:`pgclient` or :mod:`mariadbclient`."""

    startup = 120.0

    def __init__(self, client) -> None:
        self.client = client
        self.module, self.data_dir = client.MODULE, client.DATA_DIR

    def is_server(self, pid: str, comm: str) -> bool:
        return self.client.is_server(pid, comm)

    def prepare(self, paths: LabPaths, primary: str) -> None:
        self.client.prepare(paths, primary)

    def writer(self, paths: LabPaths, prefix: str, seed: int) -> kvclient.Writer:
        return self.client.writer(paths, prefix, seed)

    def check(self, paths: LabPaths, primary: str | None, keys: list[str], converged: bool) -> Verdict:
        """Keys, invariant and the server's own checks, read on the primary (nothing to read without one)."""
        v = Verdict()
        if primary is None:
            v.unreadable = dict.fromkeys(keys, "error")
            v.problems.append("no primary to read the acknowledged transfers from")
            return v
        try:
            missing, v.problems, v.figures = self.client.check(paths, primary, keys)
        except LabError as exc:
            v.unreadable = dict.fromkeys(keys, "error")
            v.problems.append(f"reading the acknowledged transfers on {primary} failed: {str(exc)[:300]}")
            return v
        v.unreadable = dict.fromkeys(missing, "missing")
        v.lost = set(missing)
        return v


def by_name(name: str) -> App:
    if name == "demo":
        return Demo()
    if name == "postgresql":
        return Bank(pgclient)
    if name == "mariadb":
        return Bank(mariadbclient)
    raise ValueError(f"unknown application {name!r}: demo, postgresql or mariadb")


NAMES = ("demo", "postgresql", "mariadb")
