"""Helpers for the agent's lab tests: status polling, a client writer through the VIP, heartbeat sniffing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from hamirror.lab.testing import TestLab

VIP = "198.18.0.100"

# Runs in the client: PUT keys PREFIX0, PREFIX1, ... through the VIP until STOPFILE exists; each key
# is retried until acknowledged; prints every acknowledged key (flushed), so the caller knows them.
WRITER = r"""
import os, sys, time, http.client
prefix, stopfile = sys.argv[1], sys.argv[2]
i = 0
while not os.path.exists(stopfile):
    key = f"{prefix}{i}"
    try:
        c = http.client.HTTPConnection("198.18.0.100", 8080, timeout=2)
        c.request("PUT", "/kv/" + key, body=key.encode())
        if c.getresponse().status == 200:
            print(key, flush=True); i += 1
        c.close()
    except OSError:
        time.sleep(0.1)
    time.sleep(0.02)
"""

GET = r"""
import sys, http.client
c = http.client.HTTPConnection("198.18.0.100", 8080, timeout=5)
c.request("GET", sys.argv[1]); r = c.getresponse(); sys.stdout.write(f"{r.status}\n" + r.read().decode())
"""


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
    result = lab.exec("client", sys.executable, "-c", GET, path, timeout=20)
    assert result.returncode == 0, result.stderr
    code, _, body = result.stdout.partition("\n")
    return int(code), body


class Writer:
    """A client writing keys through the VIP in the background; ``stop()`` returns the acknowledged ones."""

    def __init__(self, lab: TestLab, prefix: str, workdir: str) -> None:
        self.stopfile = os.path.join(workdir, f"stop-{prefix}")
        self.proc = subprocess.Popen(lab.cli_command("exec", "client", "--", sys.executable, "-c", WRITER, prefix,
                                                     self.stopfile), stdout=subprocess.PIPE, text=True)

    def stop(self) -> list[str]:
        open(self.stopfile, "w").close()
        out, _ = self.proc.communicate(timeout=30)
        return out.split()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


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
