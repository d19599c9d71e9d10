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
