"""Shared test fixtures: a CLI runner and skips for tests that need root, FUSE or namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAMIRROR = [sys.executable, "-m", "hamirror"]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs root, /dev/fuse and fuse3",
)


# The slowest files, slowest first (seconds of one serial run on the 2-core CI machine, setup and
# teardown included): under pytest-xdist (scripts/test.sh) they are handed out first, so the
# workers finish together instead of one running a 150 s lab file at the end while the other idles.
# A hint only: a file missing here runs after these, in collection order. Refresh it from
# `bash scripts/test.sh --durations=0` when a file gets past ~15 s.
SLOWEST_FIRST = (
    "test_quorum_lab.py",       # 157
    "test_fencing_lab.py",      # 117
    "test_modules_lab.py",      # 100
    "test_chaos.py",            # 99
    "test_agent_lab.py",        # 56
    "test_modules_local.py",    # 50
    "test_powerloss_lab.py",    # 47
    "test_quorum_etcd.py",      # 46
    "test_chaos_etcd.py",       # 37
    "test_upgrade_lab.py",      # 29
    "test_resync_faults.py",    # 25
    "test_fence_lab.py",        # 22
    "test_receiver_fuzz.py",    # 21
    "test_actions_vip.py",      # 21
    "test_resync_resumed.py",   # 20
    "test_mirror_fencing.py",   # 20
    "test_etcd_lab.py",         # 19
    "test_console_browser.py",  # 19
    "test_verify_lab.py",       # 17
    "test_lab_demo.py",         # 15
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist only: the files of SLOWEST_FIRST first, in that order (a stable sort:
    the tests of a file keep their order). A serial run keeps pytest's own order."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FIRST)))


def run_cli(*args: str, check: bool = False, timeout: float = 60, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``hamirror ARGS`` as a real process and capture its output."""
    return subprocess.run(HAMIRROR + list(args), capture_output=True, text=True, check=check,
                          timeout=timeout, env=env, input=input)


@pytest.fixture
def mirror_pair(tmp_path):
    """A started sync mirror (receiver + mount) over loopback; always torn down."""
    from tests.mirror_fixtures import MirrorPair

    pair = MirrorPair(str(tmp_path))
    try:
        yield pair.start()
    finally:
        pair.stop()


@pytest.fixture
def mirror_factory(tmp_path):
    """Build MirrorPairs with other settings (mode, timeout, no replication); all torn down."""
    from tests.mirror_fixtures import MirrorPair

    made: list = []

    def make(name: str = "m", **kwargs):
        base = tmp_path / name
        base.mkdir()
        pair = MirrorPair(str(base), **kwargs)
        made.append(pair)
        return pair

    try:
        yield make
    finally:
        for pair in made:
            pair.stop()


@pytest.fixture
def audit_lines(monkeypatch, caplog):
    """A fresh process-wide audit log; call the fixture's value for the lines logged so far."""
    import logging

    from hamirror import audit

    monkeypatch.setattr(audit, "AUDIT", audit.AuditLog())
    caplog.set_level(logging.WARNING, "hamirror.audit")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "hamirror.audit"]
