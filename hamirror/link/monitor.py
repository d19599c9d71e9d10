"""Read a ZeroMQ socket monitor's events without ``zmq.utils.monitor``.

pyzmq's helper imports ``zmq.asyncio`` at its top, hence asyncio and ssl: about 8 MB of resident
memory (4.7 MB of it private heap) in every mount and receiver, and in the agent's spawner they
fork from, for one ``struct.unpack`` (docs/performance.md, "Idle memory of the data path").
"""

from __future__ import annotations

import struct

import zmq

_HEADER = struct.Struct("=hi")      # libzmq's monitor event: 16-bit event id, 32-bit value


def recv_monitor_message(monitor: zmq.Socket, flags: int = 0) -> dict:
    """The next event on ``monitor`` (a socket from ``get_monitor_socket``) as pyzmq's helper gives
    it: ``{"event": id, "value": int, "endpoint": bytes}``; ``zmq.Again`` with ``zmq.NOBLOCK`` if
    none waits. A message not in libzmq's format counts as event 0, which names no event."""
    frames = monitor.recv_multipart(flags)
    if len(frames) != 2 or len(frames[0]) != _HEADER.size:
        return {"event": 0, "value": 0, "endpoint": b""}
    event, value = _HEADER.unpack(frames[0])
    return {"event": event, "value": value, "endpoint": frames[1]}
