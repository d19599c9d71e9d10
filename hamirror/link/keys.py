"""CURVE key pairs for the replication link.

A keys directory holds this node's pair (``NAME.key`` + ``NAME.key_secret``) and the public keys
(``*.key``) it trusts. One directory made by a single ``keygen`` and given to both nodes also
works: each side then trusts the other because they share the pair.
"""

from __future__ import annotations

import glob
import os
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # pyzmq only where a ZeroMQ engine runs (link/z85.py says why)
    import zmq

    from hamirror.link.zap import ZapHandler


class KeyError_(Exception):
    """A keys directory that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class KeyPair:
    name: str
    public: bytes
    secret: bytes


def generate(keys_dir: str, name: str | None = None, force: bool = False) -> str:
    """Create NAME.key / NAME.key_secret in keys_dir (mode 0700, secret 0600); return the public file."""
    name = name or socket.gethostname()
    if not name or "/" in name or name.startswith("."):
        raise KeyError_(f"invalid key name {name!r}")
    os.makedirs(keys_dir, mode=0o700, exist_ok=True)
    public_file = os.path.join(keys_dir, f"{name}.key")
    secret_file = public_file + "_secret"
    if not force and (os.path.exists(public_file) or os.path.exists(secret_file)):
        raise KeyError_(f"{secret_file}: a key pair named {name!r} exists already (use --force to replace it)")
    import zmq.auth

    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(keys_dir, name)
    finally:
        os.umask(old_umask)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    return public_file


def load_own(keys_dir: str, name: str | None = None) -> KeyPair:
    """This node's pair: the only ``*.key_secret`` in keys_dir, or the one called ``name``."""
    if not os.path.isdir(keys_dir):
        raise KeyError_(f"{keys_dir}: keys directory not found (run 'hamirror keygen --keys {keys_dir}')")
    secrets = sorted(glob.glob(os.path.join(keys_dir, "*.key_secret")))
    if name is not None:
        wanted = os.path.join(keys_dir, f"{name}.key_secret")
        secrets = [s for s in secrets if s == wanted]
    if not secrets:
        raise KeyError_(f"{keys_dir}: no secret key found (run 'hamirror keygen --keys {keys_dir}')")
    if len(secrets) > 1:
        names = ", ".join(os.path.basename(s) for s in secrets)
        raise KeyError_(f"{keys_dir}: several secret keys ({names}); name the one to use")
    try:
        public, secret = load_certificate(secrets[0])
    except (OSError, ValueError) as exc:
        raise KeyError_(f"{secrets[0]}: unreadable key file: {exc}") from exc
    if secret is None:
        raise KeyError_(f"{secrets[0]}: no secret key in the file")
    return KeyPair(os.path.basename(secrets[0])[: -len(".key_secret")], public, secret)


def load_certificate(path: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None), Z85 text, from a key file as ``zmq.auth.create_certificates``
    writes it, read as ``zmq.auth.load_certificate`` reads it (the first ``public-key`` and
    ``secret-key`` lines, quotes and blanks stripped) without importing pyzmq. ValueError if the
    file has no public key."""
    public = secret = None
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line.startswith(b"#"):
                continue
            if line.startswith(b"public-key"):
                public = line.split(b"=", 1)[1].strip(b" \t'\"")
            if line.startswith(b"secret-key"):
                secret = line.split(b"=", 1)[1].strip(b" \t'\"")
            if public and secret:
                break
    if public is None:
        raise ValueError(f"No public key found in {path}")
    return public, secret


def trusted_public_keys(keys_dir: str) -> dict[str, bytes]:
    """Every public key in keys_dir, by name."""
    result = {}
    for path in sorted(glob.glob(os.path.join(keys_dir, "*.key"))):
        try:
            public, _ = load_certificate(path)
        except (OSError, ValueError) as exc:
            raise KeyError_(f"{path}: unreadable key file: {exc}") from exc
        result[os.path.basename(path)[: -len(".key")]] = public
    return result


def peer_public_key(keys_dir: str, own: KeyPair, peer_name: str | None = None) -> bytes:
    """The server key a client expects: the named peer's, the only other one, or our own (shared pair)."""
    trusted = trusted_public_keys(keys_dir)
    if peer_name is not None:
        if peer_name not in trusted:
            raise KeyError_(f"{keys_dir}: no public key {peer_name}.key for the peer")
        return trusted[peer_name]
    others = {n: k for n, k in trusted.items() if k != own.public}
    if not others:
        return own.public
    if len(others) == 1:
        return next(iter(others.values()))
    raise KeyError_(f"{keys_dir}: several peer keys ({', '.join(sorted(others))}); name the peer")


def secure_server(sock: zmq.Socket, own: KeyPair) -> None:
    """Make a bound socket a CURVE server (clients must also pass the authenticator)."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_server = True


def secure_client(sock: zmq.Socket, own: KeyPair, server_public: bytes) -> None:
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_serverkey = server_public


_auth_lock = threading.Lock()
_authenticators: dict[int, ZapHandler] = {}


def start_authenticator(context: zmq.Context, keys_dir: str) -> ZapHandler:
    """One ZAP handler per context (link/zap.py): only clients whose public key is in keys_dir get
    in, each refusal audited. Called again, it trusts keys_dir's keys as they are now."""
    from hamirror.link.zap import ZapHandler

    trusted = frozenset(trusted_public_keys(keys_dir).values())
    with _auth_lock:
        auth = _authenticators.get(id(context))
        if auth is None:
            auth = ZapHandler(context, trusted)
            _authenticators[id(context)] = auth
        auth.trusted = trusted
        return auth


def stop_authenticator(context: zmq.Context) -> None:
    with _auth_lock:
        auth = _authenticators.pop(id(context), None)
    if auth is not None:
        auth.stop()
