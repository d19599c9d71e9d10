"""Wire compatibility (docs/upgrade.md): versions in the heartbeats and the link's HELLO, the rule
(the previous release interoperates, a newer protocol is refused with a clear reason), and
hostile values that must only ever be refused or ignored, never raise."""

from __future__ import annotations

import errno
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror import versions
from hamirror.cluster.heartbeat import (
    MAX_DATAGRAM, Heartbeat, HeartbeatRejected, ModuleInfo, NewerProtocol, Reason, Validator, decode, encode, sign,
)
from hamirror.cluster.states import NodeState
from hamirror.config.digest import MODULE_SECTIONS, wire
from hamirror.link import protocol
from hamirror.link.protocol import ERROR, OK, Op, ProtocolError, decode_reply, parse_hello_answer
from tests import wire_020
from tests.mirror_fixtures import local_link

KEY = b"k" * 32
NOW = 1_700_000_000.0
DIGEST = wire({"module": {"name": "demo"}}, MODULE_SECTIONS, KEY)


def hb(**kw) -> Heartbeat:
    base = dict(cluster="lab", node="node2", boot_id="b00t", counter=1, timestamp=NOW,
                modules={"demo": ModuleInfo(NodeState.SECOND, True, "gen-3")})
    base.update(kw)
    return Heartbeat(**base)


def validator() -> Validator:
    return Validator("lab", "node1", {"node2"}, KEY, max_skew=10.0)


def signed(body: dict) -> bytes:
    return sign(json.dumps(body).encode(), KEY)


def body_of(heartbeat: Heartbeat) -> dict:
    return json.loads(encode(heartbeat, KEY)[32:])


# The rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("ours,theirs,expected", [
    ("0.3.0", "0.3.0", None),
    ("0.3.0", None, None),
    ("0.3.0", "0.2.0", "a supported pair"),
    ("0.3.0", "0.4.1", "a supported pair"),
    ("0.3.0", "0.3.1.dev2", "a supported pair"),
    ("0.4.0", "0.2.0", "not a supported pair"),
    ("1.0.0", "0.9.0", "not a supported pair"),
    ("0.3.0", "garbage", None),
])
def test_the_pair_rule(ours, theirs, expected) -> None:
    note = versions.pair_note(theirs, ours)
    assert (note is None) if expected is None else (expected in note and theirs in note and ours in note)


@pytest.mark.parametrize("value", [None, 3, 3.0, True, [], {}, "", "1.2", "v1.2.3", "1.2.3 ", "1" * 40,
                                   "9999999.0.0", "1.2.3\n", "1.2.3-" + "x" * 40])
def test_hostile_version_texts_are_no_version(value) -> None:
    assert versions.parse(value) is None and versions.valid_text(value) is None


# Heartbeats ------------------------------------------------------------------------------------

def test_a_020_heartbeat_is_accepted_and_its_sender_taken_for_020() -> None:
    """What a 0.2.0 node sends (no software version, no digests) is a heartbeat like any other."""
    body = body_of(hb())
    assert {"sv", "cc", "cm"}.isdisjoint(body)
    got = validator().accept(signed(body), NOW)
    assert got.software is None and got.config is None and got.module_config == {}
    assert got.modules == hb().modules


def test_what_this_release_sends_is_read_by_a_020_node() -> None:
    data = encode(hb(software=versions.SOFTWARE, config="0" * 12 + "/", module_config={"demo": DIGEST}), KEY)
    assert {"sv", "cc", "cm"} <= set(json.loads(data[32:]))
    old = wire_020.decode(data, KEY)
    assert (old["node"], old["counter"], old["modules"]["demo"]["state"]) == ("node2", 1, "SECOND")


def test_versions_and_digests_round_trip() -> None:
    sent = hb(software="0.3.0", config=DIGEST, module_config={"demo": DIGEST})
    assert decode(encode(sent, KEY), KEY) == sent


@pytest.mark.parametrize("protocol_number", [2, 7, 10**30])
def test_a_newer_protocol_is_refused_with_who_and_what(protocol_number) -> None:
    v = validator()
    body = {**body_of(hb()), "v": protocol_number, "sv": "1.0.0", "m": "a new shape we cannot read"}
    with pytest.raises(NewerProtocol) as info:
        v.accept(signed(body), NOW)
    assert info.value.reason is Reason.VERSION and v.rejected == {Reason.VERSION: 1}
    assert (info.value.protocol, info.value.software, info.value.node) == (protocol_number, "1.0.0", "node2")
    text = str(info.value)
    assert f"heartbeat protocol {protocol_number}" in text and "hamirror 1.0.0" in text
    assert f"speaks {versions.HEARTBEAT_PROTOCOL}" in text and "upgrade this node" in text
    assert v.newer is info.value
    v.accept(encode(hb(counter=2), KEY), NOW)      # heard again in a protocol it knows
    assert v.newer is None


def test_a_newer_protocol_with_hostile_fields_is_still_only_refused() -> None:
    v = validator()
    body = {**body_of(hb()), "v": 3, "sv": {"x": 1}, "n": ["node2"]}
    with pytest.raises(NewerProtocol) as info:
        v.accept(signed(body), NOW)
    assert info.value.software is None and info.value.node is None
    with pytest.raises(NewerProtocol):
        v.accept(signed({**body, "n": "stranger"}), NOW)
    assert v.newer is None and v.rejected == {Reason.VERSION: 2}      # refused, but not our peer's word


@pytest.mark.parametrize("field,value", [
    ("sv", 7), ("sv", ["0.3.0"]), ("sv", "9" * 7000), ("sv", "not a version"),
    ("cc", 5), ("cc", "zz"), ("cc", "a" * 7000), ("cc", None), ("cc", DIGEST + "\n"),
    ("cm", []), ("cm", "demo"), ("cm", {"demo": 7}), ("cm", {"x" * 100: DIGEST}), ("cm", {"demo": {"a": DIGEST}}),
])
def test_bad_optional_fields_are_ignored_not_fatal(field, value) -> None:
    """A field added after 0.2.0 that does not validate counts as not sent: the heartbeat (and so
    the peer's liveness) stands."""
    body = {**body_of(hb(software="0.3.0", config=DIGEST, module_config={"demo": DIGEST})), field: value}
    got = validator().accept(signed(body), NOW)
    assert got.modules == hb().modules
    assert {"sv": got.software, "cc": got.config, "cm": got.module_config or None}[field] is None


@pytest.mark.parametrize("raw", [
    b'{"v":1e999}', b'{"v":' + b"9" * 5000 + b"}", b'{"v":true}', b'{"v":"2"}', b'{"v":-1}', b'{"v":null}',
    b'[1]', b'{"v":1.0}',
])
def test_hostile_protocol_numbers_are_malformed(raw) -> None:
    with pytest.raises(HeartbeatRejected) as info:
        validator().accept(sign(raw, KEY), NOW)
    assert info.value.reason is Reason.MALFORMED


def test_module_digests_are_left_out_rather_than_the_heartbeat() -> None:
    """Many modules: the heartbeat drops the module digests before it would exceed the datagram."""
    modules = {f"module-{i:03}": ModuleInfo(NodeState.SECOND, True, "g" * 40) for i in range(60)}
    sent = hb(modules=modules, software="0.3.0", config=DIGEST, module_config={name: DIGEST for name in modules})
    data = encode(sent, KEY)
    assert len(data) <= MAX_DATAGRAM
    got = decode(data, KEY)
    assert got.modules == modules and got.module_config == {} and got.config == DIGEST


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "sv", "cc", "cm"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10),
                       max_size=4))
def test_fuzz_version_and_digest_fields_never_raise_anything_else(changes: dict) -> None:
    body = {**body_of(hb()), **changes}
    try:
        validator().accept(signed(body), NOW)
    except HeartbeatRejected:
        pass


# The replication link --------------------------------------------------------------------------

SESSION = 0x1234


def test_hello_answer_round_trip_and_hostile_answers() -> None:
    assert parse_hello_answer(protocol.hello_answer()) == (versions.LINK_PROTOCOL, versions.SOFTWARE)
    assert parse_hello_answer(b"") == (1, versions.PREVIOUS_RELEASE)           # a 0.2.0 receiver
    assert parse_hello_answer(b"x" * 300) == (1, "unknown")
    for hostile in (b"[", b"[" * 5000, b"\xff", b'{"link":"2"}', b'{"link":99999,"software":5}', b"x" * 300,
                    b'{"link":' + b"9" * 5000 + b"}", b"null", b'"0.3.0"'):
        link, software = parse_hello_answer(hostile)
        assert link == 1 and isinstance(software, str)


def test_a_newer_header_version_is_refused_by_name() -> None:
    header = bytearray(protocol.encode(Op.PING, SESSION, 1))
    header[2] = 2
    with pytest.raises(ProtocolError, match="speaks link protocol 2, this node"):
        protocol.decode([bytes(header)])
    reply = bytearray(protocol.encode_reply(1)[0])
    reply[2] = 9
    with pytest.raises(ProtocolError, match="speaks link protocol 9"):
        decode_reply([bytes(reply)])


def test_the_receiver_answers_hello_with_its_versions_and_refuses_a_newer_one(tmp_path) -> None:
    with local_link(str(tmp_path)) as (client, receiver):
        assert client.peer_versions == (versions.LINK_PROTOCOL, versions.SOFTWARE)
        for number in (2, 2**62):
            reply = decode_reply(receiver.handle([protocol.encode(Op.HELLO, SESSION, 0, (number, 0))]))
            assert (reply.status, reply.errno) == (ERROR, errno.EPROTONOSUPPORT)
            assert f"speaks link protocol {number}, this node" in reply.message
        for bad in ((0, 0), (-1, 0), (-(2**63), 0), (1, 2**62)):
            reply = decode_reply(receiver.handle([protocol.encode(Op.HELLO, SESSION, 0, bad)]))
            assert (reply.status, reply.message) == (ERROR, "unsupported HELLO")
        # A 0.2.0 sender's HELLO (version 1, its only form) is served; it ignores the answer.
        reply = decode_reply(receiver.handle([protocol.encode(Op.HELLO, SESSION, 0, (1, 0))]))
        assert reply.status == OK and parse_hello_answer(reply.payload)[1] == versions.SOFTWARE
