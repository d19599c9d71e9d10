"""LinkClient's window and tickets: at most ``window`` operations unacknowledged, a submit waits
for room, and a lost peer wakes it (failed, with the loss's reason) instead of leaving it blocked.

No receiver listens: nothing is ever acknowledged, so the window fills and stays full.
"""

from __future__ import annotations

import threading

import zmq

from hamirror.link import keys
from hamirror.link.client import LinkClient, Ticket
from hamirror.link.protocol import Op
from tests.mirror_fixtures import free_port


def test_a_full_window_blocks_a_submit_until_the_peer_is_lost(tmp_path):
    keys.generate(str(tmp_path / "keys"), "test")
    context = zmq.Context()
    lost: list[int] = []
    client = LinkClient(f"tcp://127.0.0.1:{free_port()}", str(tmp_path / "keys"), context=context, window=2,
                        ack_timeout=60, on_lost=lambda reason, failed: lost.append(len(failed)))
    try:
        first = client.submit(Op.PING)
        second = client.submit(Op.PING)
        assert not first.wait(0.05) and not first.done and first.error is None
        third: list[Ticket] = []
        blocked = threading.Thread(target=lambda: third.append(client.submit(Op.MKDIR, (0o40755, 0, 0), (b"d",))))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive() and not third          # no room: it waits
        client.abort("the agent saw the peer die")
        blocked.join(5)
        assert not blocked.is_alive()
        assert lost == [2]                                # the two in the window, the blocked one never entered it
        for ticket in (first, second, *third):
            assert ticket.wait(5) and ticket.done and ticket.error == "the agent saw the peer die"
        assert len(third) == 1
    finally:
        client.close(0)
        context.term()


def test_a_ticket_wakes_every_waiter_once_completed():
    ticket = Ticket(7, ())
    woke: list[bool] = []
    waiters = [threading.Thread(target=lambda: woke.append(ticket.wait(5))) for _ in range(3)]
    for w in waiters:
        w.start()
    assert not ticket.wait(0.05)
    ticket.complete(payload=b"ok")
    ticket.complete("a second completion changes nothing")
    for w in waiters:
        w.join(5)
    assert woke == [True, True, True]
    assert ticket.done and ticket.error is None and ticket.payload == b"ok" and ticket.wait(0)
