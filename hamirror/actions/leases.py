"""Renew many addresses' kernel leases in one rtnetlink exchange, in this network namespace.

The agent renews every VIP it holds every heartbeat interval, and a lease is one heartbeat
timeout (2 s). Through pyroute2, a round for 50 VIPs is a few hundred Python-level steps and
syscalls, each giving up the GIL: on a loaded node, among the agent's other threads, a round took
0.5 to 1.2 s, and leases lapsed (a VIP added just after a round began waited for two). Here a
round is one address dump and one datagram carrying every renewal, then their acknowledgements:
a handful of syscalls. Only addresses present are renewed; a lapsed one is reported, never added
back (a decision does that).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO = 1, 2, 6
HEADER = struct.Struct("=IHHII")          # nlmsghdr: length, type, flags, sequence, port
IFADDR = struct.Struct("=BBBBI")          # ifaddrmsg: family, prefix length, flags, scope, index
ATTR = struct.Struct("=HH")
_SEQUENCE = itertools.count(1)


class LeaseError(OSError):
    """The kernel refused a renewal; the message says which address and why."""


def _attr(kind: int, data: bytes) -> bytes:
    return ATTR.pack(ATTR.size + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _message(kind: int, flags: int, sequence: int, payload: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(payload), kind, flags, sequence, 0) + payload


def _messages(data: bytes):
    """(type, sequence, payload) of every netlink message in a datagram."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _, sequence, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            return
        yield kind, sequence, data[offset + HEADER.size:offset + length]
        offset += (length + 3) & ~3


def present(sock: socket.socket) -> set[tuple[int, str]]:
    """(interface index, address) of every address in this namespace (one dump)."""
    sequence = next(_SEQUENCE)
    sock.send(_message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, sequence, IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))
    found = set()
    while True:
        for kind, seq, payload in _messages(sock.recv(1 << 16)):
            if seq != sequence:
                continue
            if kind == NLMSG_DONE:
                return found
            if kind == NLMSG_ERROR:
                raise OSError(-struct.unpack_from("=i", payload)[0], "address dump refused")
            if kind != RTM_NEWADDR or len(payload) < IFADDR.size:
                continue
            family, _, _, _, index = IFADDR.unpack_from(payload)
            attrs, offset = {}, IFADDR.size
            while offset + ATTR.size <= len(payload):
                length, attr = ATTR.unpack_from(payload, offset)
                if length < ATTR.size:
                    break
                attrs[attr] = payload[offset + ATTR.size:offset + length]
                offset += (length + 3) & ~3
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
                found.add((index, socket.inet_ntop(family, raw)))


def renew(addresses: list[tuple[str, int, str, int, int]]) -> list[bool | Exception]:
    """Each ``(interface, index, ip, prefixlen, lifetime)``'s lease extended to ``lifetime``
    seconds if the address is still there (True), False if it lapsed, or the error."""
    results: list[bool | Exception] = [False] * len(addresses)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        there = present(sock)
        batch, waiting = b"", {}
        for i, (interface, index, ip, prefixlen, lifetime) in enumerate(addresses):
            if (index, ip) not in there:
                continue
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            raw = socket.inet_pton(family, ip)
            payload = (IFADDR.pack(family, prefixlen, 0, 0, index) + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
                       + _attr(IFA_CACHEINFO, struct.pack("=IIII", lifetime, lifetime, 0, 0)))
            sequence = next(_SEQUENCE)
            batch += _message(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE, sequence, payload)
            waiting[sequence] = i
        if not waiting:
            return results
        sock.send(batch)
        while waiting:
            for kind, seq, payload in _messages(sock.recv(1 << 16)):
                if kind != NLMSG_ERROR or seq not in waiting:
                    continue
                i = waiting.pop(seq)
                error = -struct.unpack_from("=i", payload)[0]
                interface, _, ip, prefixlen, _ = addresses[i]
                results[i] = True if error == 0 else \
                    LeaseError(error, f"cannot renew {ip}/{prefixlen} on {interface}: {os.strerror(error)}")
    return results
