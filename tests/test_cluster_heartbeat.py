"""Heartbeat codec: round trip, every tampering, replay, skew, truncation and fuzzing."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamirror.cluster.heartbeat import (
    MAX_DATAGRAM, Heartbeat, HeartbeatRejected, ModuleInfo, Reason, Validator, decode, encode,
    load_cluster_key, sign,
)
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import SwapPhase

KEY = b"k" * 32
NOW = 1_700_000_000.0


def hb(**kw) -> Heartbeat:
    base = dict(cluster="lab", node="node2", boot_id="b00t", counter=1, timestamp=NOW,
                modules={"demo": ModuleInfo(NodeState.SECOND, True, "gen-3", SwapPhase.REQUEST)})
    base.update(kw)
    return Heartbeat(**base)


def validator() -> Validator:
    return Validator("lab", "node1", {"node2"}, KEY, max_skew=10.0)


def reason_of(data: bytes, v: Validator | None = None, now: float = NOW) -> Reason:
    with pytest.raises(HeartbeatRejected) as info:
        (v or validator()).accept(data, now)
    return info.value.reason


def test_round_trip_and_size() -> None:
    data = encode(hb(), KEY)
    assert decode(data, KEY) == hb()
    assert validator().accept(data, NOW) == hb()
    assert len(data) < 200


def test_many_modules_with_long_histories_still_fit_their_newest_generations_first() -> None:
    """50 modules (issue 18) with 7 generation ids each are 8.7 KiB: no heartbeat was sent at all
    and the peer took this node for dead. Their ids are cut to the newest (a prefix of the
    history, which only ever makes a relation UNKNOWN), the modules' states all kept."""
    ids = [f"{i:016x}" for i in range(7)]
    modules = {f"demo-{i:02d}": ModuleInfo(NodeState.PRIM, True, ",".join(ids)) for i in range(50)}
    data = encode(hb(modules=modules, module_config={name: "d" * 64 for name in modules}), KEY)
    assert len(data) <= MAX_DATAGRAM
    got = decode(data, KEY).modules
    assert set(got) == set(modules) and all(m.state is NodeState.PRIM and m.uptodate for m in got.values())
    kept = got["demo-07"].generation.split(",")
    assert 1 <= len(kept) < 7 and kept == ids[:len(kept)]
    few = {f"demo-{i:02d}": ModuleInfo(NodeState.PRIM, True, ",".join(ids)) for i in range(5)}
    assert decode(encode(hb(modules=few), KEY), KEY).modules["demo-01"].generation == ",".join(ids)


def test_the_maintenance_setting_round_trips() -> None:
    info = ModuleInfo(NodeState.PRIM, True, "gen-3", maintenance=True, maintenance_version=7)
    assert decode(encode(hb(modules={"demo": info}), KEY), KEY).modules["demo"] == info


@pytest.mark.parametrize("flag,key", [("woke", b'"z"'), ("leaving", b'"x"'), ("yielded", b'"y"')])
def test_a_flag_round_trips_and_is_left_out_when_false(flag: str, key: bytes) -> None:
    """Left out when false: a 0.2.0 peer, which knows neither, reads the datagram as before."""
    info = ModuleInfo(NodeState.SECOND, True, "gen-3", **{flag: True})
    data = encode(hb(modules={"demo": info}), KEY)
    assert decode(data, KEY).modules["demo"] == info and key + b':true' in data
    assert key not in encode(hb(modules={"demo": ModuleInfo(NodeState.SECOND, True, "gen-3")}), KEY)


@pytest.mark.parametrize("flag,key", [("leaving", b'"x"'), ("yielded", b'"y"')])
def test_a_flag_that_is_not_a_boolean_is_malformed(flag: str, key: bytes) -> None:
    data = encode(hb(modules={"demo": ModuleInfo(NodeState.SECOND, True, "gen-3", **{flag: True})}), KEY)
    body = data[32:].replace(key + b':true', key + b':1')
    assert reason_of(sign(body, KEY), validator()) is Reason.MALFORMED


@pytest.mark.parametrize("field,value,reason", [
    ("cluster", "other", Reason.WRONG_CLUSTER),
    ("node", "node1", Reason.OWN_NAME),
    ("node", "intruder", Reason.UNKNOWN_SENDER),
    ("timestamp", NOW + 10.5, Reason.SKEW),
    ("timestamp", NOW - 10.5, Reason.SKEW),
])
def test_signed_but_wrong_fields_are_rejected(field: str, value: object, reason: Reason) -> None:
    v = validator()
    assert reason_of(encode(hb(**{field: value}), KEY), v) is reason
    assert v.rejected == {reason: 1}


def test_an_echo_sent_moments_ago_proves_freshness_whatever_the_wall_clock_says() -> None:
    """Finding 6: freshness from our own monotonic clock (how long ago we sent the echoed
    counter), so a peer whose wall clock is a minute off is heard; a stale or foreign echo, or
    none, falls back to the timestamp check."""
    sent = {("mine", 41): 0.3, ("mine", 7): 10.5}

    def echo_age(boot: str, counter: int) -> float | None:
        return sent.get((boot, counter))

    def skewed(echo, counter):
        return encode(hb(timestamp=NOW + 60, echo=echo, counter=counter), KEY)

    v = validator()
    assert v.accept(skewed(("mine", 41), 1), NOW, echo_age=echo_age).echo == ("mine", 41)
    for counter, echo in enumerate([("mine", 7), ("other-boot", 41), None], start=2):
        with pytest.raises(HeartbeatRejected) as info:
            v.accept(skewed(echo, counter), NOW, echo_age=echo_age)
        assert info.value.reason is Reason.SKEW
    assert v.echo_for("node2") == ("b00t", 4)     # heard, though refused: echoed back to it
    assert validator().accept(encode(hb(echo=("mine", 7)), KEY), NOW, echo_age=echo_age)   # sane clocks


def test_a_replayed_heartbeat_of_an_older_boot_does_not_change_what_we_echo() -> None:
    """Review of finding 6: someone replaying the peer's old datagrams must not make our echo name
    an old boot (a peer whose wall clock is off would then have its heartbeats refused); a boot
    never seen before (the peer restarted) is echoed at once, even while its clock is off."""
    v = validator()
    old = encode(hb(boot_id="old-boot", counter=90), KEY)
    v.accept(old, NOW)
    v.accept(encode(hb(boot_id="new-boot", counter=3), KEY), NOW)
    assert v.echo_for("node2") == ("new-boot", 3)
    with pytest.raises(HeartbeatRejected):
        v.accept(old, NOW)                               # the replay is refused ...
    assert v.echo_for("node2") == ("new-boot", 3)      # ... and changes nothing we echo
    with pytest.raises(HeartbeatRejected) as info:
        v.accept(encode(hb(boot_id="third-boot", counter=1, timestamp=NOW + 60), KEY), NOW)
    assert info.value.reason is Reason.SKEW
    assert v.echo_for("node2") == ("third-boot", 1)    # a restart with a skewed clock is heard


def test_copy_replayed_on_another_network_is_rejected() -> None:
    v = validator()
    data = encode(hb(network=1), KEY)
    assert v.accept(data, NOW, network=1).network == 1
    assert reason_of(data, v) is Reason.WRONG_NETWORK          # arrives on network 0
    assert v.accept(encode(hb(network=0), KEY), NOW, network=0).counter == 1


def test_skew_within_bound_is_accepted() -> None:
    assert validator().accept(encode(hb(timestamp=NOW - 9.9), KEY), NOW).counter == 1


def test_every_flipped_byte_is_rejected() -> None:
    data = encode(hb(), KEY)
    v = validator()
    for i in range(len(data)):
        forged = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        assert reason_of(forged, v) is Reason.BAD_MAC
    assert v.rejected[Reason.BAD_MAC] == len(data)


def test_wrong_key_is_bad_mac() -> None:
    assert reason_of(encode(hb(), b"x" * 32)) is Reason.BAD_MAC


def test_every_truncation_is_rejected() -> None:
    data = encode(hb(), KEY)
    for n in range(len(data)):
        assert reason_of(data[:n]) in (Reason.MALFORMED, Reason.BAD_MAC)


def test_oversized_is_rejected_before_the_mac() -> None:
    assert reason_of(b"\0" * (MAX_DATAGRAM + 1)) is Reason.OVERSIZED
    with pytest.raises(ValueError):
        encode(hb(modules={f"m{i}": ModuleInfo(NodeState.PRIM, True, "g" * 100)
                           for i in range(100)}), KEY)


def test_replay_and_counter_order() -> None:
    v = validator()
    v.accept(encode(hb(counter=5), KEY), NOW)
    assert reason_of(encode(hb(counter=5), KEY), v) is Reason.REPLAY
    assert reason_of(encode(hb(counter=4), KEY), v) is Reason.REPLAY
    assert v.accept(encode(hb(counter=6), KEY), NOW).counter == 6
    # a new boot starts its counter again; the old boot's counters still block its replays
    assert v.accept(encode(hb(boot_id="boot2", counter=1), KEY), NOW).boot_id == "boot2"
    assert reason_of(encode(hb(counter=6), KEY), v) is Reason.REPLAY
    assert v.rejected[Reason.REPLAY] == 3


def test_rejected_datagram_does_not_advance_the_counter() -> None:
    v = validator()
    assert reason_of(encode(hb(counter=9, timestamp=NOW + 60), KEY), v) is Reason.SKEW
    assert v.accept(encode(hb(counter=2), KEY), NOW).counter == 2


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(v="1"), lambda b: b.pop("v"), lambda b: b.update(v=0), lambda b: b.update(s=-1), lambda b: b.update(s=True),
    lambda b: b.update(s="1"), lambda b: b.update(t="now"), lambda b: b.update(c=""),
    lambda b: b.update(n=7), lambda b: b.update(b="x" * 65), lambda b: b.update(m=[]),
    lambda b: b.pop("t"), lambda b: b["m"]["demo"].update(st="MASTER"),
    lambda b: b["m"]["demo"].update(u=1), lambda b: b["m"]["demo"].update(w="later"),
    lambda b: b["m"]["demo"].pop("g"), lambda b: b["m"].update(demo=3),
    lambda b: b["m"]["demo"].update(ma=1, mv=2), lambda b: b["m"]["demo"].update(ma=True, mv=-1),
    lambda b: b["m"]["demo"].update(ma=True, mv=True), lambda b: b["m"]["demo"].update(mv=2**53),
])
def test_well_signed_malformed_bodies(mutate) -> None:
    body = json.loads(encode(hb(), KEY)[32:])
    mutate(body)
    assert reason_of(sign(json.dumps(body).encode(), KEY)) is Reason.MALFORMED


def test_signed_non_json_and_nan() -> None:
    assert reason_of(sign(b"\xff\xfe not json", KEY)) is Reason.MALFORMED
    assert reason_of(sign(b"[" * 5000, KEY)) is Reason.MALFORMED
    body = json.loads(encode(hb(), KEY)[32:])
    body["t"] = float("nan")
    assert reason_of(sign(json.dumps(body).encode(), KEY)) is Reason.MALFORMED


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=MAX_DATAGRAM + 100))
def test_fuzz_raw_bytes_only_rejects(data: bytes) -> None:
    with pytest.raises(HeartbeatRejected):
        validator().accept(data, NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


MODULE_FIELDS = {"st", "u", "g", "w"}
FIELDS = ["v", "c", "n", "b", "s", "t", "m", "sv", "cc", "cm", *sorted(MODULE_FIELDS)]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), json_values), max_size=3))
def test_fuzz_signed_structures_never_raise_anything_else(changes: list) -> None:
    """Start from a valid body, overwrite fields (top level or in the module) with any JSON."""
    body = json.loads(encode(hb(), KEY)[32:])
    for field, value in changes:
        module = body["m"].get("demo") if isinstance(body["m"], dict) else None
        target = module if field in MODULE_FIELDS else body
        if isinstance(target, dict):
            target[field] = value
    try:
        validator().accept(sign(json.dumps(body).encode(), KEY), NOW)
    except HeartbeatRejected:
        pass


def key_file(tmp_path, data: bytes, mode: int = 0o600) -> str:
    path = tmp_path / "cluster.key"
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("data", [b"a" * 40 + b"\n", b" " + os.urandom(30) + b"\n",
                                  b"\t\n" + bytes(range(256)) + b"\r\x0b\x0c "],
                         ids=["text-key-and-newline", "leading-space", "whitespace-both-ends"])
def test_the_cluster_key_is_every_byte_of_the_file(tmp_path, data) -> None:
    """Finding: keys beginning or ending with a whitespace byte lost it (one random key in 20)."""
    assert load_cluster_key(key_file(tmp_path, data)) == data


@pytest.mark.parametrize("data, mode, problem", [
    (b"a" * 31, 0o600, "cluster key has 31 bytes, needs 32 to 4096 (make one with: head -c 32 /dev/urandom)"),
    (b" " * 40, 0o600, None),
    (b"a" * 4097, 0o600, "cluster key has more than 4096 bytes, needs 32 to 4096"),
    (b"a" * 32, 0o644, "cluster key is accessible by other users (mode 0644); chmod 600 it"),
    (b"a" * 32, 0o640, "cluster key is accessible by other users (mode 0640); chmod 600 it"),
])
def test_cluster_key_size_and_mode(tmp_path, data, mode, problem) -> None:
    path = key_file(tmp_path, data, mode)
    if problem is None:
        assert load_cluster_key(path) == data
        return
    with pytest.raises(ValueError) as caught:
        load_cluster_key(path)
    assert str(caught.value).startswith(f"{path}: {problem}")
