"""The link's connection events (its ZeroMQ monitor) still end a session at once: a receiver
whose socket closes is reported as a lost connection, not, seconds later, as a missing ack.

A real receiver in this process (its own thread), CURVE over loopback.
"""

from __future__ import annotations

import os
import threading

import zmq

from hamirror.link import keys
from hamirror.link.client import LinkClient
from hamirror.replica.receiver import Receiver
from tests.mirror_fixtures import wait_for


def test_a_closed_receiver_is_a_lost_connection(tmp_path) -> None:
    keys_dir = str(tmp_path / "keys")
    keys.generate(keys_dir, "test")
    os.makedirs(tmp_path / "secondary")
    context = zmq.Context()
    receiver = Receiver(str(tmp_path / "secondary"), "tcp://127.0.0.1:*", keys_dir, context=context)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    lost: list[str] = []
    # An ack timeout far beyond the wait below: only the monitor's event can end the session.
    client = LinkClient(receiver.endpoint, keys_dir, context=context, ack_timeout=60,
                        on_lost=lambda reason, failed: lost.append(reason))
    try:
        client.hello(10)
        receiver.stop()
        serving.join(5)
        receiver.close()
        wait_for(lambda: lost, 10, what="the lost connection")
        assert lost == [f"connection to peer {receiver.endpoint} lost"]
    finally:
        client.close(0)
        keys.stop_authenticator(context)
        context.term()
