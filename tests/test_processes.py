"""Recognising a recorded process across a move of the kernel's boot time or a step of the wall clock."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

from hamirror.agent import datapath
from hamirror.lab import process
from hamirror.lab.state import Started
from hamirror.processes import boot_start, same_start


@pytest.fixture
def btime_moved(monkeypatch):
    """psutil adds /proc/stat's btime, read at each call: one second later than at the record."""
    real = psutil.Process.create_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda self, *a, **k: real(self, *a, **k) + 1.0)


def test_a_live_process_is_recognised_when_btime_moved_by_a_second(btime_moved):
    me = psutil.Process()
    recorded = me.create_time() - 1.0          # what the record saw before the move
    assert same_start(me, recorded)
    assert process.is_alive(Started(host="node1", name="agent", pid=os.getpid(), create_time=recorded, command=[]))
    assert datapath._alive(os.getpid(), recorded)


def test_a_pid_of_a_process_started_at_another_time_is_not_it():
    me = psutil.Process()
    assert not same_start(me, me.create_time() - 60)
    assert not datapath._alive(os.getpid(), me.create_time() - 60)


@pytest.fixture
def clock_stepped(monkeypatch):
    """The wall clock stepped a minute forward since the record (NTP, a VM resumed from a pause):
    psutil's create_time() of every process moves by the step."""
    real = psutil.Process.create_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda self, *a, **k: real(self, *a, **k) + 60.0)


def test_a_live_process_is_recognised_after_the_wall_clock_stepped(clock_stepped):
    """Campaign 4003: a live receiver, its pid file compared on the wall-clock start, was taken for
    dead and started again every 10 s. A record with the start since boot survives any step."""
    me = psutil.Process()
    wall, since_boot = me.create_time() - 60.0, boot_start(me)     # recorded before the step
    assert same_start(me, wall, since_boot)
    assert not same_start(me, wall)          # an older release's record: the step defeats it
    started = Started(host="node1", name="agent", pid=os.getpid(), create_time=wall, command=[], started=since_boot)
    assert process.is_alive(started)
    assert datapath._alive(os.getpid(), wall, since_boot)
    assert set(datapath._start_record(me)) == {"create_time", "started"}


def test_a_reused_pid_is_not_taken_for_the_recorded_process():
    me = psutil.Process()
    assert not same_start(me, me.create_time(), boot_start(me) - 0.01)      # one tick apart
    assert not datapath._alive(os.getpid(), me.create_time(), boot_start(me) + 5)
    assert not datapath._alive(os.getpid(), "damaged", None)


def test_the_start_since_boot_is_read_past_a_command_name_with_spaces_and_parentheses(tmp_path):
    odd = tmp_path / "a) b (c) 1 2"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "30"])
    try:
        target = psutil.Process(proc.pid)
        assert ")" in target.name()
        assert boot_start(target) == pytest.approx(target.create_time() - psutil.boot_time(), abs=1.01)
        assert boot_start(target) >= boot_start(psutil.Process())
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(psutil.NoSuchProcess):
        boot_start(target)
