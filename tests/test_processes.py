"""Recognising a recorded process across a one-second move of the kernel's boot time."""

from __future__ import annotations

import os

import psutil
import pytest

from hamirror.agent import datapath
from hamirror.lab import process
from hamirror.lab.state import Started
from hamirror.processes import same_start


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
