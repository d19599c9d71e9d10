"""Heartbeat datagrams: encoding, HMAC authentication and validation (pure, no sockets).

Wire format: ``MAC(32 bytes) || body`` where body is compact UTF-8 JSON and MAC is
HMAC-SHA256(cluster key, body). Everything that is not a fresh, authentic heartbeat from the peer
raises :class:`HeartbeatRejected` with a reason, and the :class:`Validator` counts reasons for
``hamirror status``. Freshness does not rest on the wall clock: a heartbeat echoes the last
(boot, counter) its sender heard from us, and one that echoes a counter we sent within
``max_skew`` seconds (our monotonic clock) is fresh whatever the two wall clocks say; only a
heartbeat that cannot echo yet (first contact, or we are not heard) falls back to the timestamp.
The transport lives in :mod:`heartbeat_service` (zeroconf's codec/engine split), so this module
is fuzzed without a network.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import hmac
import json
import math
import os
from collections.abc import Callable, Mapping

from hamirror import versions
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import SwapPhase
from hamirror.config import digest
from hamirror.secretfile import read_secret

MAX_DATAGRAM = 8192
GENERATIONS_KEPT = (None, 3, 1)   # generation ids per module tried in turn while a heartbeat is too big
MAC_SIZE = 32
MIN_KEY_SIZE = 32
MAX_KEY_SIZE = 4096
VERSION = versions.HEARTBEAT_PROTOCOL
MAX_NAME = 64
BOOTS_REMEMBERED = 16       # per sender: (boot, network) pairs whose counters block replays


class Reason(enum.Enum):
    """Why a datagram was rejected (the counters' keys)."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_MAC = "bad_mac"
    WRONG_CLUSTER = "wrong_cluster"
    UNKNOWN_SENDER = "unknown_sender"
    OWN_NAME = "own_name"
    WRONG_NETWORK = "wrong_network"
    REPLAY = "replay"
    SKEW = "skew"
    VERSION = "version"       # a protocol newer than this node knows (docs/upgrade.md)


class HeartbeatRejected(Exception):
    """A datagram that is not accepted as a heartbeat; ``reason`` says why."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


class NewerProtocol(HeartbeatRejected):
    """An authentic heartbeat in a protocol newer than this node's: what it said of itself."""

    def __init__(self, protocol: int, software: str | None, node: str | None) -> None:
        super().__init__(Reason.VERSION, versions.newer_protocol("heartbeat", protocol, VERSION, software))
        self.protocol, self.software, self.node = protocol, software, node


@dataclasses.dataclass(frozen=True)
class ModuleInfo:
    """What a node advertises for one module."""

    state: NodeState
    uptodate: bool
    generation: str
    swap: SwapPhase = SwapPhase.NONE
    fenced: bool = False      # our mount lost the peer: it must confirm its copy is stale
    maintenance: bool = False
    maintenance_version: int = 0   # the newest ``hamirror maintenance`` setting wins on both nodes
    woke: bool = False        # the sender stalled or started and has not listened a full timeout since
    leaving: bool = False     # the sender has not heard us for half a timeout and will take over at a full one
    yielded: bool = False     # the sender recorded durably that we may lead beside it: never vouched for since


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """One heartbeat. ``boot_id`` is random per agent start; ``counter`` grows within a boot and
    network; ``timestamp`` is the sender's wall clock (bounds replays when there is no echo);
    ``network`` is the index of the network it was sent on (a copy replayed on another network is
    refused); ``echo``: the (boot id, counter) of the receiver's last heartbeat the sender heard,
    which proves this one was made after it (freshness without the wall clock)."""

    cluster: str
    node: str
    boot_id: str
    counter: int
    timestamp: float
    modules: Mapping[str, ModuleInfo] = dataclasses.field(default_factory=dict)
    network: int = 0
    echo: tuple[str, int] | None = None
    software: str | None = None          # the sender's release; None: 0.2.0, which did not send it
    config: str | None = None            # digest of the cluster file's shared part (config.digest)
    module_config: Mapping[str, str] = dataclasses.field(default_factory=dict)   # digest per module


def new_boot_id() -> str:
    """A random id for this agent start."""
    return os.urandom(8).hex()


def load_cluster_key(path: str) -> bytes:
    """The shared heartbeat key: every byte of the file, as written (``head -c 32 /dev/urandom``).

    Nothing is trimmed: a random key begins or ends with a whitespace byte about one time in 20,
    and trimming it gave a shorter key. Both nodes use the same file, byte for byte (a text key
    with a final newline works too, as long as both copies have it). 32 to 4096 bytes, mode 0600.
    """
    key = read_secret(path, "cluster key", MAX_KEY_SIZE)
    if not MIN_KEY_SIZE <= len(key) <= MAX_KEY_SIZE:
        size = f"{len(key)} bytes" if len(key) <= MAX_KEY_SIZE else f"more than {MAX_KEY_SIZE} bytes"
        raise ValueError(f"{path}: cluster key has {size}, needs {MIN_KEY_SIZE} to {MAX_KEY_SIZE} "
                         f"(make one with: head -c 32 /dev/urandom)")
    return key


def sign(body: bytes, key: bytes) -> bytes:
    """Prefix ``body`` with its MAC (exposed for tests that forge well-signed garbage)."""
    return hmac.new(key, body, hashlib.sha256).digest() + body


def encode(hb: Heartbeat, key: bytes) -> bytes:
    """Serialise and sign; ValueError if the datagram would exceed 8 KiB. The module digests
    are left out when they would not fit (many modules): the modules' states come first; then
    each module's generation ids are cut to the newest few, down to the current one (50 modules
    with 7 ids each are 8.7 KiB: no heartbeat was sent at all, and the peer took the node for
    dead). A history cut to its newest ids only ever turns a relation into UNKNOWN (docs/journal.md)."""
    for keep in GENERATIONS_KEPT:
        data = _encode(hb, key, keep)
        if len(data) <= MAX_DATAGRAM:
            return data
    raise ValueError(f"heartbeat of {len(data)} bytes exceeds {MAX_DATAGRAM}")


def _encode(hb: Heartbeat, key: bytes, keep: int | None) -> bytes:
    """The signed datagram with each module's generation ids cut to ``keep`` (None: all)."""
    body = {
        "v": VERSION, "c": hb.cluster, "n": hb.node, "b": hb.boot_id, "s": hb.counter,
        "t": hb.timestamp, "i": hb.network,
        "m": {name: {"st": m.state.value, "u": m.uptodate, "g": _newest(m.generation, keep), "w": m.swap.value,
                     **({"f": True} if m.fenced else {}),
                     **({"z": True} if m.woke else {}),
                     **({"x": True} if m.leaving else {}),
                     **({"y": True} if m.yielded else {}),
                     **({"ma": m.maintenance, "mv": m.maintenance_version} if m.maintenance_version else {})}
              for name, m in hb.modules.items()},
        **({"e": list(hb.echo)} if hb.echo is not None else {}),
        **({"sv": hb.software} if hb.software else {}),
        **({"cc": hb.config} if hb.config else {}),
    }
    data = sign(json.dumps({**body, **({"cm": dict(hb.module_config)} if hb.module_config else {})},
                           separators=(",", ":")).encode(), key)
    if len(data) > MAX_DATAGRAM and hb.module_config:
        data = sign(json.dumps(body, separators=(",", ":")).encode(), key)
    return data


def _newest(generation: str, keep: int | None) -> str:
    """The first ``keep`` comma-separated ids of a ``g`` value (newest first), or all of it."""
    return generation if keep is None else ",".join(generation.split(",")[:keep])


def decode(data: bytes, key: bytes) -> Heartbeat:
    """Check size and MAC, then parse; says nothing yet about who sent it or when."""
    if len(data) > MAX_DATAGRAM:
        raise HeartbeatRejected(Reason.OVERSIZED, f"{len(data)} bytes")
    if len(data) <= MAC_SIZE:
        raise HeartbeatRejected(Reason.MALFORMED, "too short")
    mac, body = data[:MAC_SIZE], data[MAC_SIZE:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise HeartbeatRejected(Reason.BAD_MAC)
    try:
        return _parse(json.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise HeartbeatRejected(Reason.MALFORMED, str(exc)[:100]) from None


def _text(value: object, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"bad text field {value!r:.40}")
    return value


def _parse(obj: dict) -> Heartbeat:
    if not isinstance(obj, dict) or type(obj.get("v")) is not int:
        raise ValueError("no protocol version")
    if obj["v"] > VERSION:       # authentic (the MAC passed): say who, never guess at the rest
        node = obj.get("n")
        raise NewerProtocol(obj["v"], versions.valid_text(obj.get("sv")),
                            node if isinstance(node, str) and 0 < len(node) <= MAX_NAME else None)
    if obj["v"] != VERSION:
        raise ValueError(f"not a version {VERSION} heartbeat")
    counter, timestamp, modules, network = obj["s"], obj["t"], obj["m"], obj["i"]
    if type(counter) is not int or counter < 0 or type(network) is not int or network < 0:
        raise ValueError("bad counter or network")
    if type(timestamp) not in (int, float) or not math.isfinite(timestamp):
        raise ValueError("bad timestamp")
    if not isinstance(modules, dict):
        raise ValueError("bad module table")
    return Heartbeat(cluster=_text(obj["c"]), node=_text(obj["n"]), boot_id=_text(obj["b"]),
                     counter=counter, timestamp=float(timestamp),
                     modules={_text(k): _module(v) for k, v in modules.items()},
                     network=network, echo=_echo(obj.get("e")), software=versions.valid_text(obj.get("sv")),
                     config=digest.valid(obj.get("cc")), module_config=_digests(obj.get("cm")))


def _digests(value: object) -> dict[str, str]:
    """The module digests; optional fields added after 0.2.0 that do not validate count as not
    sent (a newer release's slip must not make its heartbeats, and so the peer, look lost)."""
    if not isinstance(value, dict):
        return {}
    return {k: d for k, v in value.items() if isinstance(k, str) and 0 < len(k) <= MAX_NAME
            and (d := digest.valid(v)) is not None}


def _echo(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or type(value[1]) is not int or value[1] < 0:
        raise ValueError("bad echo")
    return _text(value[0]), value[1]


def _module(obj: dict) -> ModuleInfo:
    if not isinstance(obj, dict) or any(type(obj.get(k, False)) is not bool for k in ("u", "f", "ma", "z", "x", "y")):
        raise ValueError("bad module entry")
    version = obj.get("mv", 0)
    if type(version) is not int or not 0 <= version < 2**53:
        raise ValueError("bad maintenance version")
    return ModuleInfo(state=NodeState(obj["st"]), uptodate=obj["u"],
                      generation=_text(obj["g"], 128), swap=SwapPhase(obj["w"]), fenced=obj.get("f", False),
                      maintenance=obj.get("ma", False), maintenance_version=version, woke=obj.get("z", False),
                      leaving=obj.get("x", False), yielded=obj.get("y", False))


EchoAge = Callable[[str, int], "float | None"]


class Validator:
    """Accepts only fresh heartbeats of this cluster's peer; remembers counters to stop replays.

    Counters are kept per sender and (boot id, network) for the last few boots and networks. A
    heartbeat is fresh when it echoes one of ours sent less than ``max_skew`` seconds ago
    (``echo_age``, on our own monotonic clock), else when its timestamp is within ``max_skew`` of
    our wall clock: a boot older than those remembered is stopped either way, its heartbeats are
    old. ``heard`` keeps, per sender, the newest authentic (boot, counter), fresh or not, for our
    own echo: a peer whose wall clock is off learns that we hear it.
    """

    def __init__(self, cluster: str, own: str, peers: set[str] | frozenset[str], key: bytes,
                 max_skew: float = 10.0) -> None:
        self.cluster, self.own, self.peers, self.key = cluster, own, frozenset(peers), key
        self.max_skew = max_skew
        self.rejected: collections.Counter[Reason] = collections.Counter()
        self._last: dict[str, collections.OrderedDict[tuple[str, int], int]] = {}
        self.heard: dict[str, tuple[str, int]] = {}
        self._boots: dict[str, collections.OrderedDict[str, None]] = {}   # boot ids seen, newest last
        self.newer: NewerProtocol | None = None   # the last refusal for a newer protocol, until heard again

    def accept(self, data: bytes, now_wall: float, network: int = 0, echo_age: EchoAge | None = None) -> Heartbeat:
        """Decode and validate ``data`` received on ``network`` at wall time ``now_wall``;
        ``echo_age(boot, counter)``: how long ago we sent that heartbeat (None: not ours, or
        forgotten). Count rejections."""
        try:
            hb = self._check(decode(data, self.key), now_wall, network, echo_age)
        except HeartbeatRejected as exc:
            self.rejected[exc.reason] += 1
            if isinstance(exc, NewerProtocol) and exc.node in self.peers:   # our peer's, not a stranger's
                self.newer = exc
            raise
        self.newer = None
        boots = self._last.setdefault(hb.node, collections.OrderedDict())
        boots[(hb.boot_id, network)] = hb.counter
        boots.move_to_end((hb.boot_id, network))
        while len(boots) > BOOTS_REMEMBERED:
            boots.popitem(last=False)
        return hb

    def echo_for(self, node: str) -> tuple[str, int] | None:
        """What to echo to ``node``: its newest authentic heartbeat's (boot, counter)."""
        return self.heard.get(node)

    def _hear(self, hb: Heartbeat) -> None:
        """Note an authentic heartbeat, fresh or not, for our echo: a higher counter of the boot we
        echo, or a boot never seen from this sender (it restarted). Never a boot seen before: a
        replayed datagram of an older boot would make our echo useless to a peer whose wall clock
        is off, and so have its heartbeats refused."""
        heard = self.heard.get(hb.node)
        boots = self._boots.setdefault(hb.node, collections.OrderedDict())
        if heard is None or (heard[0] == hb.boot_id and heard[1] < hb.counter) or hb.boot_id not in boots:
            self.heard[hb.node] = (hb.boot_id, hb.counter)
        boots[hb.boot_id] = None
        boots.move_to_end(hb.boot_id)
        while len(boots) > BOOTS_REMEMBERED:
            boots.popitem(last=False)

    def _check(self, hb: Heartbeat, now_wall: float, network: int, echo_age: EchoAge | None) -> Heartbeat:
        if hb.cluster != self.cluster:
            raise HeartbeatRejected(Reason.WRONG_CLUSTER, hb.cluster)
        if hb.node == self.own:
            raise HeartbeatRejected(Reason.OWN_NAME)
        if hb.node not in self.peers:
            raise HeartbeatRejected(Reason.UNKNOWN_SENDER, hb.node)
        self._hear(hb)
        age = echo_age(*hb.echo) if hb.echo is not None and echo_age is not None else None
        if (age is None or not 0 <= age <= self.max_skew) and abs(hb.timestamp - now_wall) > self.max_skew:
            raise HeartbeatRejected(Reason.SKEW, f"{hb.timestamp - now_wall:+.1f} s and no fresh echo")
        if hb.network != network:
            raise HeartbeatRejected(Reason.WRONG_NETWORK, f"sent on {hb.network}, got on {network}")
        last = self._last.get(hb.node, {}).get((hb.boot_id, network))
        if last is not None and hb.counter <= last:
            raise HeartbeatRejected(Reason.REPLAY, f"counter {hb.counter} <= {last}")
        return hb
