"""Z85 (ZeroMQ's RFC 32 text form of keys) without importing pyzmq.

Why: the ``stream`` engine's daemons never open a ZeroMQ socket, and ``import zmq`` maps libzmq
and its bindings (~4.6 MB resident, about half of it charged to each daemon forked from the
spawner: docs/performance.md, "Idle memory of the data path"). Z85 is the standard library's
base85 (``base64.b85encode``: same 4-byte big-endian groups, same digit order) with another
alphabet, so only the digits are translated.
"""

from __future__ import annotations

import base64

_Z85 = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_B85 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
_TO_B85 = bytes.maketrans(_Z85, _B85)
_TO_Z85 = bytes.maketrans(_B85, _Z85)


def encode(raw: bytes) -> bytes:
    """Z85 text of ``raw`` (its length a multiple of 4, as Z85 requires)."""
    if len(raw) % 4:
        raise ValueError(f"Z85 encodes a multiple of 4 bytes, not {len(raw)}")
    return base64.b85encode(raw).translate(_TO_Z85)


def decode(text: bytes | str) -> bytes:
    """The bytes of Z85 ``text`` (its length a multiple of 5); ValueError if it is not Z85."""
    if isinstance(text, str):
        text = text.encode("ascii")
    if len(text) % 5:
        raise ValueError(f"Z85 text has a multiple of 5 characters, not {len(text)}")
    if text.translate(None, _Z85):
        raise ValueError("not Z85 text")
    return base64.b85decode(text.translate(_TO_B85))
