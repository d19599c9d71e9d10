"""Helpers for the agent's lab tests: status polling, a client writer through the VIP, heartbeat sniffing."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from hamirror.lab import kvclient, process
from hamirror.lab.naming import NODES
from hamirror.lab.testing import TestLab, temporary_lab, unavailable

LAB_MARKS = [pytest.mark.root, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


def agents_lab(tmp_path_factory, name: str, *up_args: str) -> Iterator[TestLab]:
    """A module-scoped lab with both agents up (the body of a ``lab`` fixture)."""
    root = tmp_path_factory.mktemp(name)
    with temporary_lab(str(root / "lab"), *up_args, agents=True) as lab:
        yield lab


def link_engines(lab: TestLab) -> dict[str, str | None]:
    """``{"node1 mount": "stream", "node2 receive": "stream"}``: the ``--engine`` each running
    mount and receiver was started with (None: without one; the argv of a spawner's child has
    empty words after it)."""
    found: dict[str, str | None] = {}
    for node in NODES:
        for pid in process.members(lab.paths, node, []):
            try:
                argv = [word for word in psutil.Process(pid).cmdline() if word]
            except psutil.Error:
                continue
            if argv[1:4] == ["-m", "hamirror", "mirror"] and argv[4:5] in (["mount"], ["receive"]):
                found[f"{node} {argv[4]}"] = argv[argv.index("--engine") + 1] if "--engine" in argv else None
    return found


def status(lab: TestLab, node: str) -> dict | None:
    result = lab.exec(node, sys.executable, "-m", "hamirror", "status", "--json", timeout=20)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def module(lab: TestLab, node: str, name: str = "demo") -> dict | None:
    doc = status(lab, node)
    return next((m for m in doc["modules"] if m["name"] == name), None) if doc else None


def wait_for(lab: TestLab, node: str, predicate, timeout: float = 40.0, what: str = "") -> dict:
    """Poll the node's module status until predicate(status) holds; fail with the last status."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = module(lab, node)
        if last is not None and predicate(last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"{node}: {what} not reached in {timeout:.0f} s; last status {last}; log:\n"
                         + tail(lab, node))


def tail(lab: TestLab, node: str, lines: int = 25) -> str:
    try:
        with open(lab.paths.log_file(node, "agent")) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def get(lab: TestLab, path: str) -> tuple[int, str]:
    return kvclient.get(lab.paths, path)


class Writer(kvclient.Writer):
    """A client writing keys through the VIP in the background; ``stop()`` returns the acknowledged ones."""

    def __init__(self, lab: TestLab, prefix: str, workdir: str | None = None) -> None:
        super().__init__(lab.paths, prefix)


@contextmanager
def writing(lab: TestLab, prefix: str, workdir: str) -> Iterator[list[str]]:
    """A Writer for the with-block; the yielded list holds the acknowledged keys once it ends."""
    writer = Writer(lab, prefix, workdir)
    keys: list[str] = []
    try:
        yield keys
        keys.extend(writer.stop())
    finally:
        writer.kill()
