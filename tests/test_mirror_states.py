"""The mount's transition table (hamirror/mirror/states.py) is what the replicator does.

Every entry point of the replicator is driven from every state its callers call it in, with and
without fencing, and each change of state it makes is recorded at the one method that makes them
(``_switch``): every transition used must be in the table, and every transition in the table must
be used (a table looser than the code says nothing). A real journal on disk; the link is a fake
that only queues (a unit test may fake a socket), whose loss is the client's callback.
"""

from __future__ import annotations

import ast
import itertools
import logging
import pathlib
import time

import pytest

from hamirror.journal.journal import Journal
from hamirror.mirror.replicator import Replicator
from hamirror.mirror.states import TRANSITIONS, MirrorState, is_allowed
from tests.test_journal_activity import _Link as QueueLink

S = MirrorState
ROOT = pathlib.Path(__file__).resolve().parent.parent


class _Link(QueueLink):
    """Loses the peer when told (``lose``); ``abort`` does it at once unless ``deferred``, as the
    real client does from its I/O thread a moment later."""

    def __init__(self, deferred: bool = False) -> None:
        super().__init__()
        self.deferred = deferred
        self.lost = False

    def abort(self, reason: str) -> None:
        if not self.deferred:
            self.lose(reason)

    def lose(self, reason: str = "peer lost") -> None:
        if not self.lost:       # the client calls on_lost once
            self.lost = True
            self.on_lost(reason, [])


class _Recording(Replicator):
    """The replicator, with each change of state it makes recorded."""

    def __init__(self, *args, **kwargs) -> None:
        self.seen: list[tuple[MirrorState, MirrorState]] = []
        super().__init__(*args, **kwargs)

    def _switch(self, target: MirrorState) -> None:
        self.seen.append((self.state, target))
        super()._switch(target)


def _in(state: MirrorState, journal: Journal, fence: bool, link: _Link) -> _Recording:
    """A replicator brought to ``state`` the way the mount and the agent bring it there."""
    if state is S.PRIM:
        return _Recording(link, journal, fence=fence, fence_timeout=600)
    repl = _Recording(None, journal, fence=fence, fence_timeout=600)
    if state is S.STANDALONE:
        return repl
    if state in (S.FENCED, S.REFUSED):
        repl.start_fenced("the last mount stopped uncleanly", S.PRIM)
        if state is S.REFUSED:
            repl.refuse("the peer may be primary")
        return repl
    repl.start_alone("peer gone")
    if state is S.SYNCING:
        repl.begin_sync(link, ["a"])
    return repl


def _streaming(repl: Replicator, link: _Link) -> None:
    link.lose()


def _journal_fails(repl: Replicator, link: _Link) -> None:
    repl.journal.close()       # what the peer missed can no longer be recorded
    link.lose()


def _fence_times_out(repl: Replicator, link: _Link) -> None:
    repl.fence_timeout = 0.01
    repl._fence_timer.cancel()
    repl._fence_expired()


def _refused_then_lost(repl: Replicator, link: _Link) -> None:
    repl.refuse("the peer may be primary")   # the abort reaches the link thread later
    link.lose()


# (name, states the callers call it in, what it does)
ENTRIES = [
    ("start_alone", {S.STANDALONE}, lambda r, link: r.start_alone("takeover")),
    ("start_fenced", {S.STANDALONE}, lambda r, link: r.start_fenced("crashed while streaming", S.PRIM)),
    ("grant_alone", set(S), lambda r, link: r.grant_alone("the peer is not primary")),
    ("declare_lost", set(S), lambda r, link: r.declare_lost("the peer died")),
    ("refuse", set(S), lambda r, link: r.refuse("the peer may be primary")),
    ("begin_sync", {S.ALONE}, lambda r, link: r.begin_sync(_Link(), ["a"])),
    ("finish_sync", set(S), lambda r, link: r.finish_sync()),
    ("peer lost", {S.PRIM, S.SYNCING}, _streaming),
    ("peer lost, journal failing", {S.PRIM, S.SYNCING}, _journal_fails),
    ("fence timeout", {S.FENCED}, _fence_times_out),
    ("refused, then the link's loss", {S.PRIM, S.SYNCING}, _refused_then_lost),
]


def _drive(tmp_path: pathlib.Path) -> set[tuple[MirrorState, MirrorState]]:
    seen: set[tuple[MirrorState, MirrorState]] = set()
    for n, (state, (name, when, entry), fence) in enumerate(itertools.product(S, ENTRIES, (False, True))):
        if state not in when or (state in (S.FENCED, S.REFUSED) and not fence):
            continue
        journal = Journal(str(tmp_path / f"{n}.db"))
        link = _Link(deferred=name.startswith("refused"))
        repl = None
        try:
            repl = _in(state, journal, fence, link)
            assert repl.state is state
            repl.seen.clear()
            entry(repl, link)
            bad = [t for t in repl.seen if not is_allowed(*t)]
            assert not bad, f"{name} from {state.value} (fence={fence}): {bad} not in the table"
            seen.update(repl.seen)
        finally:
            if repl is not None and repl._fence_timer is not None:
                repl._fence_timer.cancel()
            journal.close()
    return seen


def test_every_transition_used_is_in_the_table_and_every_entry_is_used(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="hamirror.mirror.replicator"):
        seen = _drive(tmp_path)
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    moves = {(a, b) for a, b in seen if a is not b}
    assert moves <= table
    assert table - moves == set(), f"in the table, never used: {sorted((a.value, b.value) for a, b in table - moves)}"
    assert "not in the transition table" not in caplog.text


def test_only_the_switch_changes_the_state() -> None:
    """Nothing bypasses the table: the replicator's state is assigned in ``__init__`` (where it
    starts) and ``_switch`` only, and no other module of the package assigns it."""
    tree = ast.parse((ROOT / "hamirror/mirror/replicator.py").read_text())
    writers = set()
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef):
            for node in ast.walk(func):
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if any(isinstance(t, ast.Attribute) and t.attr == "state" for t in targets):
                        writers.add(func.name)
    assert writers == {"__init__", "_switch"}
    for path in (ROOT / "hamirror").rglob("*.py"):
        if path.name != "replicator.py":
            assert "MirrorState" not in "".join(line for line in path.read_text().splitlines()
                                                if ".state =" in line), path


def test_an_unlisted_transition_is_logged_and_still_made(tmp_path, caplog):
    """The table documents and tests; the data path never stops over it: a change it does not
    list is logged as a bug and made all the same (the table is tested against every path)."""
    with Journal(str(tmp_path / "j.db")) as journal:
        repl = Replicator(None, journal)
        repl.start_alone("peer gone")
        with caplog.at_level(logging.ERROR, logger="hamirror.mirror.replicator"):
            repl.start_fenced("forced", S.PRIM)     # ALONE -> FENCED: no caller does this
        assert repl.state is S.FENCED
        assert "ALONE -> FENCED is not in the transition table" in caplog.text


@pytest.mark.parametrize("state", list(S))
def test_staying_put_is_allowed(state: MirrorState) -> None:
    assert is_allowed(state, state)


def test_the_fence_timer_refuses_by_itself(tmp_path):
    """The one entry driven by time (the others above are called directly)."""
    with Journal(str(tmp_path / "j.db")) as journal:
        repl = Replicator(None, journal, fence=True, fence_timeout=0.05)
        repl.start_fenced("crashed while streaming", S.PRIM)
        deadline = time.monotonic() + 5
        while repl.state is S.FENCED and time.monotonic() < deadline:
            time.sleep(0.01)
        assert repl.state is S.REFUSED
