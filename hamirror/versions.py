"""Wire compatibility between the two nodes: protocol numbers and the rule (docs/upgrade.md).

Each channel has a protocol number: the heartbeat's ``v`` and the replication link's header byte
and HELLO. A release adds optional fields without changing the number (an older node ignores
them); a release that must change what a message means raises the number and still speaks the
previous one, so that a node and one running the previous minor release always interoperate,
one node at a time. A message in a protocol newer than this node knows is refused with a clear
reason (never parsed by guess); a message that says no software version comes from 0.2.0, the
last release before versions travelled.

A leaf module: it imports nothing of the package but its version, so every layer may use it.
"""

from __future__ import annotations

import re

from hamirror import __version__

SOFTWARE = __version__
HEARTBEAT_PROTOCOL = 1      # the heartbeat's "v"
LINK_PROTOCOL = 1           # the replication link's header version and HELLO's first integer
PREVIOUS_RELEASE = "0.2.0"  # what a peer that sends no software version runs
MAX_VERSION_TEXT = 32
_VERSION = re.compile(r"(\d{1,6})\.(\d{1,6})\.(\d{1,6})([.+-][0-9A-Za-z.+-]{0,20})?")


def parse(text: object) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` of a version text such as ``0.3.0`` or ``0.3.0.dev1``; None
    for anything else (a hostile peer may send any JSON value)."""
    if not isinstance(text, str) or len(text) > MAX_VERSION_TEXT:
        return None
    found = _VERSION.fullmatch(text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def valid_text(value: object) -> str | None:
    """The version text if it is one (:func:`parse`), else None."""
    return value if parse(value) is not None else None  # type: ignore[return-value]


def newer_protocol(channel: str, theirs: int, ours: int, software: str | None) -> str:
    """The refusal text for a message in a protocol this node does not know yet."""
    who = f"hamirror {software}" if software else "a newer hamirror"
    return (f"the peer ({who}) speaks {channel} protocol {theirs}, this node (hamirror {SOFTWARE}) "
            f"speaks {ours}: upgrade this node to the peer's release, or roll the peer back")


def pair_note(theirs: str | None, ours: str = SOFTWARE) -> str | None:
    """What to tell the operator about running ``ours`` beside a peer running ``theirs`` (None: same
    release, or the peer's release is not known). Within the rule: each side's release is at most
    one minor release from the other's (same major; before 1.0, the same 0.x or the next)."""
    mine, peer = parse(ours), parse(theirs)
    if mine is None or peer is None or mine == peer:
        return None
    if mine[0] == peer[0] and abs(mine[1] - peer[1]) <= 1:
        return (f"the peer runs hamirror {theirs}, this node {ours}: a supported pair (finish the rolling "
                "upgrade: docs/upgrade.md)")
    return (f"the peer runs hamirror {theirs}, this node {ours}: not a supported pair (only the previous "
            "minor release interoperates; upgrade one minor release at a time: docs/upgrade.md)")
