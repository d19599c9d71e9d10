"""The campaign's checkers on planted faults: the byte comparison (no root) and the dual-serving
sampler (root: real namespaces, a real VIP on both nodes, real processes named like the servers)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
import types

import pytest

from hamirror.lab import chaos_apps, chaos_more, chaos_report, chaos_watch, compare, kvclient, process
from hamirror.lab.chaos_faults import Event
from hamirror.lab.naming import NODES, VIP
from hamirror.lab.testing import temporary_lab, unavailable
from tests.conftest import REPO


def _tree(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def test_byte_comparison_finds_each_planted_difference(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    files = {"base/1": os.urandom(3 * 1048576 + 17), "wal/0001": os.urandom(20000), "same": b"x"}
    _tree(a, files)
    _tree(b, files)
    assert compare.settled(a, b, ("node1", "node2"), attempts=1) == []
    _tree(a, {".hamirror-conflicts/old/base/1": b"kept aside"})        # the keep-aside folder is skipped
    with open(os.path.join(b, "base/1"), "r+b") as f:                  # one byte, past the first MiB
        f.seek(2 * 1048576 + 5000)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    with open(os.path.join(b, "wal/0001"), "ab") as f:                  # a longer file
        f.write(b"tail")
    os.chmod(os.path.join(a, "same"), 0o600)
    os.chmod(os.path.join(b, "same"), 0o644)
    _tree(b, {"only-here": b""})
    os.symlink("base/1", os.path.join(a, "link"))
    os.symlink("base/2", os.path.join(b, "link"))
    found = [str(d) for d in compare.settled(a, b, ("node1", "node2"), attempts=2, pause=0.01)]
    assert found == [
        "base/1: content, 4096 bytes differ in [2101248-2105344]",
        "link: symlink to 'base/1' on node1, 'base/2' on node2",
        "only-here: only on node2",
        "same: mode 0600 on node1, 0644 on node2",
        "wal/0001: size 20000 on node1, 20004 on node2; content, 3620 bytes differ in [16384-20004]",
    ]


def test_fail_once_patch_goes_after_the_shells_options():
    """The lab-only stop_prim patch fits every shipped module's stop_prim."""
    for module in ("demo", "postgresql", "mariadb", "nginx", "generic"):
        with open(os.path.join(REPO, "modules", module, "stop_prim"), encoding="utf-8") as f:
            text = f.read()
        patched = chaos_more._insert_after_first(text, "set -", chaos_more.FAIL_ONCE)
        lines = patched.splitlines(keepends=True)
        at = lines.index(chaos_more.FAIL_ONCE)
        assert lines[at - 1].startswith("set -") and "".join(lines[:at] + lines[at + 1:]) == text, module


SLEEPER = "import time\ntime.sleep(120)\n"


@pytest.mark.root
@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
@pytest.mark.timeout(180)
@pytest.mark.parametrize("app", ["demo", "postgresql", "mariadb"])
def test_sampler_sees_a_planted_dual(tmp_path, app):
    """The VIP on both nodes and a process that looks like the server on each: every sample is dual;
    with the server on one node only, none is."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if app == "demo":
        (bin_dir / "kvserver.py").write_text(SLEEPER)
        server = [sys.executable, str(bin_dir / "kvserver.py")]
    else:
        name = "postgres" if app == "postgresql" else "mariadbd"
        shutil.copy("/bin/sleep", bin_dir / name)
        server = [str(bin_dir / name), "120"]
    with temporary_lab(str(tmp_path / "lab")) as lab:
        sampler = chaos_watch.Sampler(lab.paths, chaos_apps.by_name(app).is_server)
        started = []
        try:
            for node in NODES:
                subprocess.run(["ip", "-n", lab.paths.netns(node), "addr", "add", f"{VIP}/24", "dev", "eth0"],
                               check=True)
                started.append(process.start(lab.paths, node, "fake-server", server))
            deadline = time.monotonic() + 10
            while sampler.sample().serving != tuple(NODES) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sampler.sample().dual
            os.kill(started[1].pid, 9)
            os.waitpid(started[1].pid, 0)
            after = sampler.sample()
            assert after.serving == ("node1",) and not after.dual
        finally:
            for s in started:
                try:
                    os.kill(s.pid, 9)
                    os.waitpid(s.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass


@pytest.mark.skipif(shutil.which("runuser") is None or os.geteuid() != 0, reason="needs runuser as root")
def test_a_thawed_freeze_leaves_no_process_stopped_even_a_runuser_that_mirrors_its_child(monkeypatch):
    """Issue 15: the campaign's freeze SIGSTOPped `runuser` before its `pg_ctl`; continued first,
    runuser saw its child stopped and stopped itself again, and `start_prim` hung for 150 s. The
    signals are spaced as on a loaded machine."""
    import signal

    import psutil

    from hamirror.lab import chaos_faults

    plain = chaos_faults._signal

    def loaded(pids: list[int], sig: int) -> list[int]:
        done = []
        for pid in pids:
            done += plain([pid], sig)
            time.sleep(0.1)
        return done

    monkeypatch.setattr(chaos_faults, "_signal", loaded)

    parent = subprocess.Popen(["runuser", "-u", "nobody", "--", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.02)
        child = psutil.Process(parent.pid).children()[0].pid
        for pid in (parent.pid, child):          # the order that hung the campaign
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.1)
        chaos_faults.resume([parent.pid, child])
        time.sleep(0.3)
        assert [psutil.Process(pid).status() for pid in (parent.pid, child)] == [psutil.STATUS_SLEEPING] * 2
    finally:
        for proc in psutil.Process(parent.pid).children():
            proc.kill()
        parent.kill()
        parent.wait()


class _Acks(kvclient.Writer):
    """The writer's bookkeeping over planted acknowledgements (sent, done), with no process."""

    def __init__(self, acks: list[tuple[float, float]]) -> None:
        self.acks = [kvclient.Ack(f"k{i}", sent, done) for i, (sent, done) in enumerate(acks)]
        self.failures = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.proc = types.SimpleNamespace(poll=lambda: None)


def _campaign_module():
    spec = importlib.util.spec_from_file_location("chaos_script", os.path.join(REPO, "scripts", "chaos.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_swap_that_answers_before_it_stops_is_timed_by_its_outage_and_no_service_after_it_is_a_miss(monkeypatch):
    chaos = _campaign_module()
    monkeypatch.setattr(chaos, "RECOVERY_LIMIT", 0.05)
    campaign = object.__new__(chaos.Campaign)
    # Answered 0.02 s after the swap began, then nothing for 3 s while it stopped and started the
    # server; the first request sent after the swap returned (at 15) is answered at 15.3.
    campaign.writer = _Acks([(9.0, 9.5), (10.0, 10.02), (10.1, 13.0), (15.1, 15.3)])
    swap = Event(1, 1, "swap", start=10.0, end=15.0)
    campaign.recovery(swap)
    assert round(swap.recovery_s, 3) == 0.02
    assert round(swap.interruption_s, 3) == 2.98
    campaign.writer = _Acks([(9.0, 9.5), (10.0, 10.02)])        # nothing answered after it returned
    dead = Event(1, 2, "swap", start=10.0, end=15.0)
    campaign.recovery(dead)
    assert (round(dead.recovery_s, 3), dead.interruption_s) == (0.02, None)
    row = chaos_report.per_fault([swap, dead], [], [])["swap"]
    assert (row["count"], row["not_recovered"], row["interruption_max_s"], row["recovery_max_s"]) == (2, 1, 2.98, 0.02)


SEND_AND_COUNT_DROPS = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dropped = 0
for _ in range(2000):
    try:
        s.sendto(b"x", (sys.argv[1], 9))
    except PermissionError:      # the output chain's drop, seen by the sender
        dropped += 1
print(dropped)
"""


@pytest.mark.root
@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
@pytest.mark.timeout(120)
def test_a_lossy_link_drops_about_its_share_each_way_and_heals_to_none(tmp_path):
    """The ``lossy`` fault's rules on a real lab: about ``percent`` % of each node's packets to the
    other are dropped, and none once healed."""
    from hamirror.lab import chaos_net
    from hamirror.lab.naming import ADDRESSES

    def dropped(lab, sender: str, receiver: str) -> int:
        out = subprocess.run(["nsenter", f"--net={lab.paths.netns_file(sender)}", "--", sys.executable, "-c",
                              SEND_AND_COUNT_DROPS, ADDRESSES[receiver]],
                             capture_output=True, text=True, check=True).stdout
        return int(out)

    with temporary_lab(str(tmp_path / "lab")) as lab:
        chaos_net.lossy(lab.paths, 30)
        try:
            for sender, receiver in (NODES, tuple(reversed(NODES))):
                assert 440 <= dropped(lab, sender, receiver) <= 760      # 30 % of 2,000, +-8 points
        finally:
            assert chaos_net.heal(lab.paths)
        assert [dropped(lab, s, r) for s, r in (NODES, tuple(reversed(NODES)))] == [0, 0]
    with pytest.raises(ValueError, match="lossy: percent must be between 1 and 99, not 100"):
        chaos_net.lossy(lab.paths, 100)
