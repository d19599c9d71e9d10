"""The heartbeat decoder of hamirror 0.2.0, frozen: the previous release a node must interoperate
with (docs/upgrade.md). Its rules, as released (hamirror/cluster/heartbeat.py at 0.2.0), so the
wire tests can show that what this release sends is still read by a 0.2.0 node. Never edit it to
follow the current code: it stands for the nodes already installed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math

STATES = {"STOP", "WAIT", "SECOND", "PRIM", "ALONE"}
SWAP_PHASES = {"none", "request", "handover"}


def _text(value: object, limit: int = 64) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"bad text field {value!r:.40}")
    return value


def _module(obj: dict) -> dict:
    if not isinstance(obj, dict) or any(type(obj.get(k, False)) is not bool for k in ("u", "f", "ma", "z")):
        raise ValueError("bad module entry")
    version = obj.get("mv", 0)
    if type(version) is not int or not 0 <= version < 2**53:
        raise ValueError("bad maintenance version")
    if obj["st"] not in STATES or obj["w"] not in SWAP_PHASES:
        raise ValueError("bad state or swap phase")
    return {"state": obj["st"], "uptodate": obj["u"], "generation": _text(obj["g"], 128), "swap": obj["w"]}


def decode(data: bytes, key: bytes) -> dict:
    """What a 0.2.0 node reads of a datagram; ValueError where it refuses it."""
    if len(data) > 8192 or len(data) <= 32:
        raise ValueError("size")
    mac, body = data[:32], data[32:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise ValueError("bad mac")
    obj = json.loads(body)
    if not isinstance(obj, dict) or obj.get("v") != 1:
        raise ValueError("not a version 1 heartbeat")
    counter, timestamp, modules, network = obj["s"], obj["t"], obj["m"], obj["i"]
    if type(counter) is not int or counter < 0 or type(network) is not int or network < 0:
        raise ValueError("bad counter or network")
    if type(timestamp) not in (int, float) or not math.isfinite(timestamp):
        raise ValueError("bad timestamp")
    if not isinstance(modules, dict):
        raise ValueError("bad module table")
    return {"cluster": _text(obj["c"]), "node": _text(obj["n"]), "boot_id": _text(obj["b"]), "counter": counter,
            "modules": {_text(k): _module(v) for k, v in modules.items()}, "network": network}
