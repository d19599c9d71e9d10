#!/usr/bin/env python3
"""CPU per MiB of the link's encryption candidates, CURVE measured in the same run as the baseline.

Two measurements, each interleaved round by round (median of ``--rounds``), process CPU time
(every thread, ZeroMQ's I/O threads included) divided by the MiB moved:

1. **seal + open** of one 1 MiB frame by each AEAD, in Python, no socket: PyNaCl (libsodium)
   XChaCha20-Poly1305, AES-256-GCM and AEGIS-256; ``cryptography`` (OpenSSL) AES-256-GCM with
   ``encrypt``/``decrypt`` and with ``encrypt_into``/``decrypt_into`` (no new buffer), and
   ChaCha20-Poly1305.
2. **through ZeroMQ** over loopback (PUSH -> PULL, one process, as the link's two ends are): NULL
   (no protection), CURVE (today's link), and NULL with each of the two best AEADs sealing before
   send and opening after receive, the way hamirror/link/session.py does.

Allocation as in the daemons (``keep_message_buffers``). PyNaCl is measured to choose; only
``cryptography`` is a dependency of hamirror; without PyNaCl installed its rows are left out.

    .venv/bin/python scripts/bench/aead.py [--mib 64] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import zmq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

try:   # only to compare: hamirror itself depends on cryptography alone
    from nacl import bindings as sodium
except ImportError:
    sodium = None

from hamirror.syscalls import keep_message_buffers
from zmqpair import loopback   # this folder: the script's own directory is first on sys.path

MIB = 1 << 20
TAG = 16


def _nacl(name: str) -> tuple[Callable, Callable]:
    enc = getattr(sodium, f"crypto_aead_{name}_encrypt")
    dec = getattr(sodium, f"crypto_aead_{name}_decrypt")
    key = os.urandom(32)
    nonce = bytes(getattr(sodium, f"crypto_aead_{name}_NPUBBYTES"))
    return (lambda data: enc(bytes(data), b"ad", nonce, key)), (lambda ct: dec(bytes(ct), b"ad", nonce, key))


def _openssl(cls: type, into: bool) -> tuple[Callable, Callable]:
    aead = cls(os.urandom(32))
    nonce = bytes(12)
    if not into:
        return (lambda data: aead.encrypt(nonce, data, b"ad")), (lambda ct: aead.decrypt(nonce, ct, b"ad"))

    def seal(data) -> bytearray:
        out = bytearray(len(data) + TAG)
        aead.encrypt_into(nonce, data, b"ad", out)
        return out

    def open_(ct) -> bytearray:
        out = bytearray(len(ct) - TAG)
        aead.decrypt_into(nonce, ct, b"ad", out)
        return out
    return seal, open_


CANDIDATES: dict[str, Callable[[], tuple[Callable, Callable]]] = {
    "pynacl-xchacha20poly1305": lambda: _nacl("xchacha20poly1305_ietf"),
    "pynacl-aes256gcm": lambda: _nacl("aes256gcm"),
    "pynacl-aegis256": lambda: _nacl("aegis256"),
    "cryptography-aesgcm": lambda: _openssl(AESGCM, False),
    "cryptography-aesgcm-into": lambda: _openssl(AESGCM, True),
    "cryptography-chacha20poly1305": lambda: _openssl(ChaCha20Poly1305, False),
}


def cpu_of(work: Callable[[], None]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def seal_open(pair: tuple[Callable, Callable], mib: int) -> float:
    seal, open_ = pair
    block = os.urandom(MIB)

    def work() -> None:
        for _ in range(mib):
            assert len(open_(seal(block))) == MIB
    return cpu_of(work) * 1000 / mib


def through_zmq(mode: str, mib: int, pair: tuple[Callable, Callable] | None = None) -> float:
    ctx = zmq.Context()
    pull, push = loopback(ctx, zmq.PULL, zmq.PUSH, curve=mode == "curve")
    push.send(b"warm-up")
    pull.recv()
    block = os.urandom(MIB)
    seal, open_ = pair if pair is not None else (None, None)

    def work() -> None:
        window = 8
        for i in range(mib):
            push.send(seal(block) if seal else block, copy=False)
            if i >= window:
                frame = pull.recv(copy=False)
                assert len(open_(frame.buffer) if open_ else frame.buffer) == MIB
        for _ in range(min(window, mib)):
            frame = pull.recv(copy=False)
            assert len(open_(frame.buffer) if open_ else frame.buffer) == MIB
    try:
        return cpu_of(work) * 1000 / mib
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64, help="MiB per measurement (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    keep_message_buffers()   # as the mount and receiver daemons do: freed buffers stay in the heap
    pairs = {name: make() for name, make in CANDIDATES.items() if sodium is not None or "pynacl" not in name}
    zmq_modes = {"zmq-null": ("null", None), "zmq-curve": ("curve", None)}
    for name in ("cryptography-aesgcm-into", "pynacl-aegis256", "pynacl-xchacha20poly1305"):
        if name in pairs:
            zmq_modes[f"zmq-null+{name}"] = ("null", pairs[name])
    samples: dict[str, list[float]] = {name: [] for name in [*pairs, *zmq_modes]}
    for _ in range(args.rounds):
        for name, pair in pairs.items():
            samples[name].append(seal_open(pair, args.mib))
        for name, (mode, pair) in zmq_modes.items():
            samples[name].append(through_zmq(mode, args.mib, pair))
    result = {name: round(statistics.median(values), 3) for name, values in samples.items()}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"CPU ms per MiB (seal + open, or send + receive), median of {args.rounds} rounds of {args.mib} MiB")
    for name, value in result.items():
        print(f"  {name:40s} {value:7.3f}")


if __name__ == "__main__":
    main()
