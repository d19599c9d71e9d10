"""The receiver's loop waits once per message (docs/performance.md, "The receiver's CPU per message").

Its thread used to ask ZeroMQ about two sockets (the link and its monitor) before and after each
message, and to end each message with a receive that failed with EAGAIN: about nine ``poll`` calls
per message, on two cores shared with the mount. Counted here on a real receiver process (strace
on its serving thread), against a LinkClient that waits for each reply, as a sync-mode mount does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
import zmq

from hamirror.link.client import LinkClient
from hamirror.link.protocol import Op
from tests.mirror_fixtures import MirrorPair

MESSAGES = 200


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_the_receiver_waits_once_per_message(tmp_path):
    pair = MirrorPair(str(tmp_path))
    pair.start_receiver()
    context = zmq.Context()
    client = LinkClient(pair.endpoint, pair.keys, context=context, ack_timeout=30)
    trace = str(tmp_path / "poll.trace")
    strace = None
    try:
        client.hello(10)
        client.submit(Op.CREATE, (0o100644, os.getuid(), os.getgid(), 0), (b"f",)).wait(10)
        # Without -f: the main thread only, which serves the socket (ZeroMQ's I/O thread is apart).
        strace = subprocess.Popen(["strace", "-e", "trace=poll", "-o", trace, "-p", str(pair.receiver.pid)],
                                  stderr=subprocess.PIPE, text=True)
        assert "attached" in strace.stderr.readline()
        for i in range(MESSAGES):
            ticket = client.submit(Op.WRITE, (i * 4096,), (b"f",), data=b"x" * 4096)
            ticket.wait(10)
            assert ticket.error is None
    finally:
        if strace is not None:
            strace.send_signal(signal.SIGINT)
            strace.wait(10)
        client.close(0)
        context.term()
        pair.stop()
    with open(trace) as f:   # an idle wait that timed out is not a message's (a slow machine has more)
        polls = sum(1 for line in f if line.startswith("poll(") and ", 50) = 0 (Timeout)" not in line)
    assert polls < 4 * MESSAGES, f"{polls} poll calls for {MESSAGES} messages"
    assert os.path.getsize(os.path.join(pair.secondary, "f")) == MESSAGES * 4096
