"""The rolling upgrade from the previous release, in the lab (root; issue 17, docs/upgrade.md).

Both nodes start on v0.2.0's code (``git archive v0.2.0 hamirror``, first on ``PYTHONPATH``):
agents, mounts and receivers. A writer PUTs keys through the VIP the whole time. The pair is then
upgraded in the page's order: the secondary's agent restarted on this tree's code as
``systemctl restart hamirror`` does after ``pip install`` (SIGTERM to the agent alone,
``KillMode=process``: the data path keeps running; ``ExecStartPre`` config check), swap, the other
agent, swap back. A plain swap before (on 0.2.0) and after (on this release) is the yardstick.
Asserted: every acknowledged key readable through the VIP, both copies byte-identical, never two
primaries (status samples, and the VIP with the application seen from /proc every 100 ms), no
write gap longer than the longer plain swap's plus a margin, and which code every daemon runs at
each step (read from its memory, not guessed from its environment). One lab, ~45 to 110 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import psutil
import pytest

import hamirror
from hamirror.lab import agent as labagent, compare, kvclient, process, state
from hamirror.lab.chaos_watch import Sampler
from hamirror.lab.naming import NODES, LabPaths
from hamirror.lab.testing import TestLab as Lab, temporary_lab
from tests.agent_lab import LAB_MARKS, link_engines, tail

pytestmark = LAB_MARKS

PREVIOUS = "v0.2.0"
PREVIOUS_COMMIT = "0d14f0a2c44aa828fb4fca934d3f6191cfd535d2"   # the tag's commit ("Release 0.2.0")
OLD, NEW = "0.2.0", "new"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "hamirror-demo"              # the demo's directory under the node's /srv
PRIMARY = ("PRIM", "ALONE")
# The longest write gap of the upgrade may exceed the longer of two plain swaps' (one on each
# release, in the same test) by this much. Each gap is seen through the writer's retries (an
# unanswered connect costs up to 0.5 s, then 0.05 s), so two equal outages can read up to ~0.6 s
# apart; the rest covers the load of a 2-core machine shared with other labs, where the swaps of
# one run measured up to 1.8 s apart (1.4 to 3.7 s over five runs). A failover (heartbeat timeout
# 2 s, then a takeover) or a refused swap costs more than this.
MARGIN = 1.5


def previous_release(dest: str) -> str:
    """Extract the previous release's package into dest (its tree root, for PYTHONPATH)."""
    if shutil.which("git") is None:
        pytest.skip("no git: the previous release's code is taken from its tag")
    # The tag, else the release's commit: a clone that did not bring the tags still has the history.
    release = next((ref for ref in (f"refs/tags/{PREVIOUS}", f"{PREVIOUS_COMMIT}^{{commit}}")
                    if subprocess.run(["git", "-C", REPO, "rev-parse", "-q", "--verify", ref],
                                      capture_output=True).returncode == 0), None)
    if release is None:
        pytest.skip(f"neither the tag {PREVIOUS} nor the commit {PREVIOUS_COMMIT} in {REPO} (a shallow "
                    "clone?): the previous release's code is taken from it")
    os.makedirs(dest)
    archive = subprocess.run(f"git -C {REPO} archive {release} hamirror | tar -x -C {dest}", shell=True,
                             capture_output=True, text=True)
    assert archive.returncode == 0, archive.stderr
    return dest


def installed_tree() -> str:
    """Where ``python -m hamirror`` finds this release in a node (working directory /): the tree
    the new daemons import from."""
    found = subprocess.run([sys.executable, "-c", "import hamirror; print(hamirror.__file__)"], cwd="/",
                           capture_output=True, text=True, check=True)
    return os.path.dirname(os.path.dirname(found.stdout.strip()))


@dataclass
class Release:
    """Which code each node has installed, and how to run it there."""

    old_tree: str
    new_tree: str
    installed: dict[str, str]

    def command(self, node: str, *args: str) -> list[str]:
        """``hamirror ARGS`` with the node's installed code: the old package first on the path
        (PYTHONPATH; PYTHONSAFEPATH keeps ``-m`` from putting the working directory before it, which
        in a node is its ``/``, but a checkout elsewhere would win). The agent passes its
        environment to the mounts and receivers it starts, so they run its code too."""
        cmd = [sys.executable, "-m", "hamirror", *args]
        if self.installed[node] == OLD:
            return ["env", f"PYTHONPATH={self.old_tree}", "PYTHONSAFEPATH=1", *cmd]
        return cmd


def loaded_code(pid: int, trees: dict[str, str]) -> set[str]:
    """Which of the trees the process imported hamirror from: the path of that tree's
    ``hamirror/__init__.py`` is in its memory (module ``__file__``, code objects' file names).
    Its environment says what it was given, this says what it imported."""
    needles = {name: os.path.join(tree, "hamirror", "__init__.py").encode() for name, tree in trees.items()}
    found: set[str] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if fields[1][:2] != "rw" or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            chunk, overlap = 8 << 20, 256
            for offset in range(start, end, chunk):
                try:
                    mem.seek(offset)
                    data = mem.read(min(chunk + overlap, end - offset))
                except OSError:
                    break
                found.update(name for name, needle in needles.items() if needle in data)
    return found


def role(cmdline: list[str]) -> str | None:
    """agent, mount or receive for hamirror's long-lived processes; None for anything else."""
    if cmdline[1:3] != ["-m", "hamirror"]:
        return None
    args = cmdline[3:5]
    if args[:1] == ["agent"]:
        return "agent"
    return args[1] if args[:1] == ["mirror"] and args[1:2] in (["mount"], ["receive"]) else None


def code_by_process(lab: Lab, release: Release) -> dict[str, str]:
    """``{"node1 agent 1234": "0.2.0" | "new", ...}`` for every hamirror daemon of both nodes."""
    recorded = state.load(lab.paths)
    trees = {OLD: release.old_tree, NEW: release.new_tree}
    found = {}
    for node in NODES:
        for pid in process.members(lab.paths, node, recorded.started_in(node) if recorded else []):
            try:
                kind = role(psutil.Process(pid).cmdline())
                code = loaded_code(pid, trees) if kind else set()
            except (psutil.Error, OSError):
                continue
            if kind:
                found[f"{node} {kind} {pid}"] = code.pop() if len(code) == 1 else f"unclear: {sorted(code)}"
    return found


def assert_code(lab: Lab, release: Release, expected: dict[str, str], when: str) -> None:
    """Each node's daemons by kind run the code expected ({"node1 agent": OLD, ...}); each kind listed
    exists."""
    seen = code_by_process(lab, release)
    got = {}
    for name, code in seen.items():
        got.setdefault(name.rsplit(" ", 1)[0], set()).add(code)
    want = {k: {v} for k, v in expected.items()}
    assert {k: got.get(k) for k in want} == want, f"{when}: code by process {seen}"


def node_status(paths: LabPaths, release: Release, node: str) -> dict | None:
    """``hamirror status --json`` in node, with the node's installed CLI; None if it cannot answer."""
    try:
        result = process.exec_in(paths, node, release.command(node, "status", "--json"), capture=True, timeout=20)
        return json.loads(result.stdout) if result.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def demo(doc: dict | None) -> dict | None:
    return next((m for m in (doc or {}).get("modules", []) if m.get("name") == "demo"), None)


@dataclass(frozen=True)
class Seen:
    node: str
    start: float              # when the status was asked for
    module: dict | None       # the demo's entry, None while the agent does not answer


class Poller(threading.Thread):
    """Status of both nodes, one after the other, for the whole test (each with the node's own
    CLI); every sample kept. The waits read these samples rather than polling on their own."""

    def __init__(self, paths: LabPaths, release: Release) -> None:
        super().__init__(daemon=True, name="upgrade-status")
        self.paths, self.release = paths, release
        self.samples: list[Seen] = []
        self._changed = threading.Condition()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for node in NODES:
                start = time.monotonic()
                doc = node_status(self.paths, self.release, node)
                seen = Seen(node, start, demo(doc))
                with self._changed:
                    self.samples.append(seen)
                    self._changed.notify_all()
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def wait(self, node: str, predicate, what: str, timeout: float = 60.0) -> dict:
        """The first status of node, read after this call, for which predicate holds."""
        since, deadline = time.monotonic(), time.monotonic() + timeout
        last = None
        with self._changed:
            while True:
                for s in self.samples:
                    if s.node == node and s.start >= since and s.module is not None:
                        last = s.module
                        if predicate(s.module):
                            return s.module
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node}: {what} not reached in {timeout:.0f} s; last status {last}; "
                                         f"log:\n{tail(Lab(self.paths.root), node)}")
                self._changed.wait(0.5)

    def two_primaries(self) -> list[str]:
        """Samples that show two primaries: one node's status naming itself and its peer primary, or
        a node primary in two consecutive samples with the other primary in the sample between."""
        found = [f"{s.node} at {s.start:.1f}: {s.module['state']} with peer {s.module['peer_state']}"
                 for s in self.samples if s.module and s.module["state"] in PRIMARY
                 and s.module.get("peer_state") in PRIMARY]
        primary = [(s, s.module is not None and s.module["state"] in PRIMARY) for s in self.samples]
        for (a, pa), (b, pb), (c, pc) in zip(primary, primary[1:], primary[2:]):
            if pa and pb and pc and a.node == c.node != b.node:
                found.append(f"{a.node} primary at {a.start:.1f} and {c.start:.1f}, {b.node} at {b.start:.1f}")
        return found


def mirrored(poller: Poller, primary: str) -> None:
    """primary PRIM streaming to a SECOND, the other SECOND up to date, neither busy, each hearing
    the other (a node deaf to its peer's heartbeats stays SECOND while the link is alive)."""
    secondary = next(n for n in NODES if n != primary)
    poller.wait(secondary, lambda m: m["state"] == "SECOND" and m["uptodate"] and not m["busy"]
                and m["peer_state"] == "PRIM", "SECOND up to date beside its PRIM")
    poller.wait(primary, lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND"
                and m["mirror"] == "streaming" and not m["busy"], "PRIM streaming to a SECOND")


def start_agent(lab: Lab, release: Release, node: str) -> state.Started:
    """The node's agent on its installed code, recorded in the lab's state (``lab down`` ends it)."""
    started = process.start(lab.paths, node, labagent.AGENT, release.command(node, "agent"))
    recorded = state.load(lab.paths)
    recorded.processes.append(started)
    state.save(lab.paths, recorded)
    return started


def upgrade(lab: Lab, release: Release, node: str) -> None:
    """What ``pip install`` of the new release then ``systemctl restart hamirror`` do on node
    (scripts/hamirror.service): SIGTERM to the agent alone (KillMode=process), SIGKILL after
    TimeoutStopSec=90; the new code is installed; ExecStartPre=config check; ExecStart=agent."""
    with open(os.path.join(lab.paths.node_dir(node, "run"), "agent.pid")) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=90)
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
    except psutil.NoSuchProcess:
        pass
    release.installed[node] = NEW
    check = process.exec_in(lab.paths, node, release.command(node, "config", "check"), capture=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    start_agent(lab, release, node)


def swap(lab: Lab, release: Release, on: str, to: str, poller: Poller, writer: kvclient.Writer) -> float:
    """``hamirror swap demo`` on node ``on``, until ``to`` is PRIM beside an up-to-date SECOND and a
    write sent after that is acknowledged; the longest write gap meanwhile."""
    start = time.monotonic()
    result = process.exec_in(lab.paths, on, release.command(on, "swap", "demo"), capture=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    mirrored(poller, to)
    end = writer.first_ack_after(time.monotonic(), timeout=30).done
    return writer.largest_gap(start, end)


def assert_peer(lab: Lab, release: Release, node: str, assumed: bool) -> None:
    """The node's status names its peer's release: 0.2.0, assumed (no version in its heartbeats), or
    this release's, sent; compatible either way (docs/upgrade.md)."""
    versions = (node_status(lab.paths, release, node) or {}).get("versions") or {}
    expected = {"peer_software": OLD if assumed else hamirror.__version__, "peer_software_assumed": assumed,
                "incompatible": None}
    assert {k: versions.get(k) for k in expected} == expected, versions


def lower_dir(lab: Lab, node: str) -> str:
    """The node's own copy on its disk, beneath any FUSE mount (compare.py's docstring)."""
    return os.path.join(lab.paths.node_dir(node, "srv"), DATA)


def test_rolling_upgrade_from_the_previous_release_under_a_writer(tmp_path):
    release = Release(previous_release(str(tmp_path / "previous")), installed_tree(), {n: OLD for n in NODES})
    # The configuration 0.2.0 reads (no [link] table: it refuses one), kept through the upgrade: curve
    # on both nodes, old and new code alike.
    with temporary_lab(str(tmp_path / "lab"), "--link-engine", "none", agents=False) as lab:
        agents = [start_agent(lab, release, node) for node in NODES]
        labagent.wait_ready(lab.paths, agents, ["demo"], timeout=90,
                            status=lambda paths, node: node_status(paths, release, node))
        every = {f"{n} {k}": OLD for n, k in (("node1", "agent"), ("node1", "mount"), ("node2", "agent"),
                                              ("node2", "receive"))}
        assert_code(lab, release, every, "both nodes on 0.2.0")
        poller, sampler = Poller(lab.paths, release), Sampler(lab.paths)
        poller.start()
        sampler.start()
        writer = kvclient.Writer(lab.paths, "up")
        try:
            writer.first_ack_after(time.monotonic(), timeout=30)
            # The yardstick: a plain swap of the previous release, node1 -> node2 (another of this
            # release's at the end).
            plain_old = swap(lab, release, "node1", "node2", poller, writer)
            began = time.monotonic()
            # 1. The secondary (node1): new code, agent restarted; its receiver keeps running.
            upgrade(lab, release, "node1")
            mirrored(poller, "node2")
            assert_code(lab, release, {"node1 agent": NEW, "node1 receive": OLD, "node2 agent": OLD,
                                       "node2 mount": OLD}, "after step 1")
            assert_peer(lab, release, "node1", assumed=True)
            # 2. Move the module to the upgraded node: its mount starts with the new code.
            first = swap(lab, release, "node1", "node1", poller, writer)
            # 3. The other node, now secondary.
            upgrade(lab, release, "node2")
            mirrored(poller, "node1")
            assert_code(lab, release, {"node1 agent": NEW, "node1 mount": NEW, "node2 agent": NEW,
                                       "node2 receive": OLD}, "after step 3")
            # 4. Move it back: node2's mount and node1's receiver start with the new code.
            second = swap(lab, release, "node1", "node2", poller, writer)
            upgrade_gap = writer.largest_gap(began, time.monotonic())
            assert_code(lab, release, {"node1 agent": NEW, "node1 receive": NEW, "node2 agent": NEW,
                                       "node2 mount": NEW}, "after step 4")
            # The new daemons were started by agents reading 0.2.0's configuration: curve, explicitly.
            assert link_engines(lab) == {"node1 receive": "curve", "node2 mount": "curve"}
            plain_new = swap(lab, release, "node2", "node1", poller, writer)
            keys = writer.stop()
        finally:
            writer.kill()
            poller.stop()
            sampler.stop()
        plain = max(plain_old, plain_new)
        print(f"\nlongest write gap: upgrade {upgrade_gap:.2f} s (its swaps {first:.2f} s, {second:.2f} s); plain "
              f"swaps {plain_old:.2f} s (0.2.0), {plain_new:.2f} s (this release); {len(keys)} writes acknowledged, "
              f"{len(poller.samples)} status samples, {sampler.samples} /proc samples")
        for node in NODES:
            assert_peer(lab, release, node, assumed=False)
        assert_code(lab, release, {"node1 agent": NEW, "node1 mount": NEW, "node2 agent": NEW,
                                   "node2 receive": NEW}, "at the end")
        assert len(keys) > 50, "too few acknowledged writes to prove anything"
        bad = kvclient.unreadable(lab.paths, keys, budget=120)
        assert not bad, f"{len(bad)} acknowledged key(s) lost or wrong: {sorted(bad.items())[:10]}"
        diffs = compare.settled(lower_dir(lab, "node1"), lower_dir(lab, "node2"), NODES)
        assert not diffs, "the copies differ: " + "; ".join(map(str, diffs[:5]))
        assert not poller.two_primaries(), poller.two_primaries()[:5]
        assert not [s for s in sampler.findings if s.dual], sampler.findings[:5]
        assert upgrade_gap <= plain + MARGIN, f"the upgrade stopped writes for {upgrade_gap:.2f} s, a swap {plain:.2f} s"
