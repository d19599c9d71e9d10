"""A real replicated mount for tests: a receiver process, a mount process, both cleaned up.

``MirrorPair`` starts ``hamirror mirror receive`` and ``hamirror mirror mount --foreground`` as
real processes over loopback with CURVE keys, and always unmounts and ends them (by PID).
``tree_snapshot`` captures what the tests compare on both sides.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field

import zmq

from hamirror.link import keys, protocol, session, stream
from hamirror.link.protocol import OK, Op, decode_reply, encode
from tests.ports import free_port  # noqa: F401 - the tests import it from here

HAMIRROR = [sys.executable, "-m", "hamirror"]
SESSION = 0x1234_5678_9ABC_DEF1
HELLO_INTS = (1,) + (0,) * (protocol.SPECS[Op.HELLO].n_ints - 1)   # version 1, no flags


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def is_fuse_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == real and line.split()[2].startswith("fuse") for line in f)


@dataclass
class MirrorPair:
    base: str
    mode: str = "sync"
    timeout: float = 5.0
    replicate: bool = True
    receiver_state: bool = True   # give the receiver a --state-dir (journal, uptodate flag)
    mount_env: dict[str, str] | None = None   # more environment for the mount process
    primary: str = field(init=False)
    secondary: str = field(init=False)
    keys: str = field(init=False)
    state: str = field(init=False)
    rstate: str = field(init=False)
    port: int = field(init=False)
    receiver: subprocess.Popen | None = field(init=False, default=None)
    mounter: subprocess.Popen | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.primary = os.path.join(self.base, "primary")
        self.secondary = os.path.join(self.base, "secondary")
        self.keys = os.path.join(self.base, "keys")
        self.state = os.path.join(self.base, "state")
        self.rstate = os.path.join(self.base, "rstate")
        os.makedirs(self.primary, exist_ok=True)
        os.makedirs(self.secondary, exist_ok=True)
        keys.generate(self.keys, name="test")   # what `hamirror keygen` runs (a process less a pair)
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def log(self, name: str) -> str:
        return os.path.join(self.base, f"{name}.log")

    def start_receiver(self) -> None:
        state = ["--state-dir", self.rstate] if self.receiver_state else []
        with open(self.log("receiver"), "ab") as out:
            self.receiver = subprocess.Popen(
                HAMIRROR + ["-v", "mirror", "receive", "--dir", self.secondary, "--bind", self.endpoint,
                            "--keys", self.keys, *state], stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: _listening(self.port), 10, what="the receiver to listen")

    def mount(self, extra: tuple[str, ...] = ()) -> None:
        peer = ["--no-replication"] if not self.replicate else ["--peer", self.endpoint]
        env = dict(os.environ, **self.mount_env) if self.mount_env else None
        with open(self.log("mount"), "ab") as out:
            self.mounter = subprocess.Popen(
                HAMIRROR + ["-v", "mirror", "mount", "--foreground", "--dir", self.primary, *peer,
                            "--keys", self.keys, "--state-dir", self.state, "--mode", self.mode,
                            "--timeout", str(self.timeout), *extra], stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: is_fuse_mounted(self.primary) or self.mounter.poll() is not None, 20,
                     what="the mount")
        finally:
            if not is_fuse_mounted(self.primary):
                raise AssertionError(f"mount failed: {open(self.log('mount')).read()[-2000:]}")

    def start(self) -> "MirrorPair":
        if self.replicate:
            self.start_receiver()
        self.mount()
        return self

    def status(self) -> dict:
        import json
        with open(os.path.join(self.state, "status.json")) as f:
            return json.load(f)

    def kill_receiver(self) -> None:
        if self.receiver is not None and self.receiver.poll() is None:
            self.receiver.send_signal(signal.SIGKILL)
            self.receiver.wait(10)

    def umount(self) -> None:
        if is_fuse_mounted(self.primary):
            subprocess.run(["fusermount3", "-u", self.primary], capture_output=True)
            if is_fuse_mounted(self.primary):
                subprocess.run(["fusermount3", "-u", "-z", self.primary], capture_output=True)
        if self.mounter is not None:
            try:
                self.mounter.wait(30)
            except subprocess.TimeoutExpired:
                self.mounter.kill()
                self.mounter.wait(10)

    def stop(self) -> None:
        """Unmount and end both processes, whatever state they are in."""
        try:
            self.umount()
        finally:
            if self.receiver is not None and self.receiver.poll() is None:
                self.receiver.terminate()
                try:
                    self.receiver.wait(10)
                except subprocess.TimeoutExpired:
                    self.receiver.kill()
                    self.receiver.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def tree_snapshot(root: str, with_atime: bool = False) -> dict:
    """Everything that must match on both sides: bytes, size, mode, owner, mtime (ns), symlink
    targets, hard-link groups, xattrs, empty directories (not hamirror's conflict folder)."""
    entries: dict[str, tuple] = {}
    inode_groups: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:   # hamirror's own conflict folder is not replicated data
            dirnames[:] = [d for d in dirnames if os.fsencode(d) != protocol.CONFLICT_DIR]
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            content: object = None
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    content = f.read()
                if st.st_nlink > 1:
                    inode_groups.setdefault(st.st_ino, []).append(rel)
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                a: os.getxattr(full, a, follow_symlinks=False) for a in os.listxattr(full, follow_symlinks=False)}
            entries[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                            st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else None,
                            content, tuple(sorted(xattrs.items())))
        dirnames.sort()
    links = sorted(tuple(sorted(group)) for group in inode_groups.values())
    root_st = os.lstat(root)
    return {"entries": entries, "links": links, "root": (root_st.st_mode, root_st.st_mtime_ns)}


def diff_snapshots(a: dict, b: dict) -> list[str]:
    """Human-readable differences, for assertion messages."""
    problems = []
    for key in sorted(set(a["entries"]) | set(b["entries"])):
        ea, eb = a["entries"].get(key), b["entries"].get(key)
        if ea != eb:
            fields = ("mode", "uid", "gid", "size", "mtime_ns", "content", "xattrs")
            if ea is None or eb is None:
                problems.append(f"{key}: only on {'secondary' if ea is None else 'primary'}")
            else:
                bad = [f"{f}: {x!r:.60} != {y!r:.60}" for f, x, y in zip(fields, ea, eb) if x != y]
                problems.append(f"{key}: " + "; ".join(bad))
    if a["links"] != b["links"]:
        problems.append(f"hard-link groups differ: {a['links']} != {b['links']}")
    if a["root"] != b["root"]:
        problems.append(f"root differs: {a['root']} != {b['root']}")
    return problems


class SealedDealer:
    """(aead engine) A DEALER that has done the handshake with a key pair: what a zmq socket offers
    the raw senders (send_multipart, recv_multipart, poll, close), every frame sealed and opened.
    ``fresh()`` starts over on a new connection (ZeroMQ drops one after an oversized frame)."""

    def __init__(self, context: zmq.Context, endpoint: str, own: keys.KeyPair, server_public: bytes) -> None:
        self.context, self.endpoint, self.own, self.server_public = context, endpoint, own, server_public
        self.raw: zmq.Socket | None = None
        self.fresh()

    def fresh(self) -> None:
        if self.raw is not None:
            self.raw.close(0)
        self.raw = self.context.socket(zmq.DEALER)
        self.raw.linger = 0
        self.raw.connect(self.endpoint)
        handshake = session.ClientHandshake(self.own.secret, self.own.public, self.server_public)
        self.raw.send(handshake.init)
        assert self.raw.poll(10_000), "no ACCEPT from the receiver"
        confirm, self.channel = handshake.accept(self.raw.recv())
        self.raw.send(confirm)

    def send_multipart(self, frames: list[bytes]) -> None:
        self.raw.send_multipart(self.channel.send.seal(frames))

    def recv_multipart(self) -> list[bytes]:
        frames = self.raw.recv_multipart()
        text = session.refusal_text(frames[0])
        assert text is None, f"the receiver ended the session: {text}"
        return [bytes(f) for f in self.channel.recv.open(frames)]

    def poll(self, timeout: int) -> int:
        return self.raw.poll(timeout)

    def close(self, linger: int = 0) -> None:
        self.raw.close(linger)


class StreamClient:
    """(stream engine) A plain TCP connection to the receiver, with what a zmq socket offers the raw
    senders (send_multipart, recv_multipart, poll, close) over sealed records. ``fresh()`` connects
    again and does the handshake; ``connect()`` alone leaves it to the test (``send_raw``,
    ``send_record``, ``read_record``). A REFUSE is not a reply: ``poll`` is then False, the text
    in ``refusal``."""

    def __init__(self, endpoint: str, own: keys.KeyPair, server_public: bytes, handshake: bool = True) -> None:
        self.endpoint, self.own, self.server_public = endpoint, own, server_public
        self.sock: socket.socket | None = None
        self.fresh() if handshake else self.connect()

    def connect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        host, port = self.endpoint.removeprefix("tcp://").rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.records = stream.Records(stream.MAX_MESSAGE)
        self.bodies: list[bytes] = []
        self.refusal: str | None = None
        self.closed = False
        self.channel: session.Channel | None = None

    def fresh(self) -> None:
        self.connect()
        handshake = session.ClientHandshake(self.own.secret, self.own.public, self.server_public)
        self.send_record(handshake.init)
        accept = self.read_record(10)
        assert accept is not None, "no ACCEPT from the receiver"
        confirm, self.channel = handshake.accept(accept)
        self.send_record(confirm)

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are; a connection the receiver closed is noted, not raised (as ZeroMQ)."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def send_record(self, message: bytes) -> None:
        self.send_raw(stream.LENGTH.pack(len(message)) + message)

    def _fill(self, timeout: float) -> None:
        """Read until a record is complete, the connection closed, or the time is up."""
        deadline = time.monotonic() + timeout
        while not self.bodies and not self.closed:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(stream.READ_SIZE)
            except TimeoutError:
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self.bodies += [bytes(b) for b in self.records.feed(data)]

    def read_record(self, timeout: float) -> bytes | None:
        """The next record's body; None if none came in time or the connection closed."""
        self._fill(timeout)
        return self.bodies.pop(0) if self.bodies else None

    def wait_closed(self, timeout: float) -> bool:
        """True once the receiver closed the connection (records before that are dropped)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.bodies = []
            self._fill(deadline - time.monotonic())
        return self.closed

    def send_multipart(self, frames: list[bytes]) -> None:
        if self.channel is not None:
            self.send_raw(b"".join(bytes(b) for b in stream.seal_record(self.channel.send, frames)))

    def poll(self, timeout: int) -> bool:
        """A reply is waiting (timeout in ms, as zmq's)."""
        self._fill(timeout / 1000)
        text = session.refusal_text(self.bodies[0]) if self.bodies else None
        if text is not None:
            self.refusal, self.bodies = text, []   # the receiver closes the connection after it
        return bool(self.bodies)

    def recv_multipart(self) -> list[bytes]:
        assert self.poll(10_000), f"no reply from the receiver (refusal: {self.refusal})"
        return [bytes(f) for f in stream.open_record(self.channel.recv, memoryview(self.bodies.pop(0)))]

    def close(self, linger: int = 0) -> None:
        self.sock.close()


def break_once(monkeypatch, sessions: session.Sessions) -> None:
    """The session layer's next ``incoming`` raises (a bug in it); the ones after work."""
    real, calls = sessions.incoming, []

    def broken_once(identity, frames):
        calls.append(identity)
        if len(calls) == 1:
            raise RuntimeError("a slip in the session layer")
        return real(identity, frames)
    monkeypatch.setattr(sessions, "incoming", broken_once)


def raw_dealer(context: zmq.Context, endpoint: str, keys_dir: str):
    """A DEALER with this keys directory's pair, protected as the receiver's engine expects."""
    own = keys.load_own(keys_dir)
    server = keys.peer_public_key(keys_dir, own)
    if session.engine() == session.AEAD:
        return SealedDealer(context, endpoint, own, server)
    if session.engine() == session.STREAM:
        return StreamClient(endpoint, own, server)
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    keys.secure_client(socket, own, server)
    socket.connect(endpoint)
    return socket


class RawSender:
    """A DEALER with the trusted shared key pair, sending whatever frames we hand it."""

    def __init__(self, pair: MirrorPair) -> None:
        self.context = zmq.Context()
        self.socket = raw_dealer(self.context, pair.endpoint, pair.keys)
        self.seq = 0

    def reconnect(self) -> None:
        """After ZeroMQ dropped the connection (an oversized frame): aead needs a new handshake
        (stream: a new connection)."""
        if isinstance(self.socket, (SealedDealer, StreamClient)):
            self.socket.fresh()

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()

    def exchange(self, frames: list[bytes]) -> protocol.Reply:
        self.socket.send_multipart(frames)
        assert self.socket.poll(10_000), "no reply from the receiver"
        return decode_reply(self.socket.recv_multipart())

    def hello(self) -> None:
        self.seq = 0
        reply = self.exchange([encode(Op.HELLO, SESSION, 0, HELLO_INTS)])
        assert reply.status == OK, reply
        self.seq = 1

    def op(self, op: Op, ints=(), strs=(), times=(), data: bytes | None = None) -> protocol.Reply:
        """A fresh session, then one in-order operation: its refusal is the applier's or codec's."""
        self.hello()
        frames = [encode(op, SESSION, self.seq, ints, strs, times)]
        if data is not None:
            frames.append(data)
        return self.exchange(frames)


@contextlib.contextmanager
def own_filesystem(path: str, size: str = "16m", options: str = ""):
    """A tmpfs mounted on ``path`` for the duration: a data volume of its own, and a bound on what
    a hostile sender can fill (``options``: e.g. "nodev,nosuid")."""
    extra = f",{options}" if options else ""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755{extra}", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


@contextlib.contextmanager
def hostile_receiver(tmp: str, umask: int = 0o022):
    """A running receiver whose directory holds bait, and a trusted raw sender to attack it.

    Beside the pair: ``outside-dir/secret`` (with an xattr). In the secondary: ``evil`` -> the
    outside directory, ``evilfile`` -> the secret, ``sub/`` and ``ok`` ("fine"). The receiver
    runs with ``umask``. Yields (pair, sender, outside directory); everything is stopped after.
    """
    pair = MirrorPair(os.path.join(tmp, "m"))
    outside = os.path.join(tmp, "outside-dir")
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "wb") as f:
        f.write(b"do not touch")
    os.setxattr(os.path.join(outside, "secret"), "user.keep", b"1")
    os.symlink(outside, f"{pair.secondary}/evil")
    os.symlink(os.path.join(outside, "secret"), f"{pair.secondary}/evilfile")
    os.mkdir(f"{pair.secondary}/sub")
    with open(f"{pair.secondary}/ok", "wb") as f:
        f.write(b"fine")
    sender = None
    try:
        old = os.umask(umask)
        try:
            pair.start_receiver()
        finally:
            os.umask(old)
        sender = RawSender(pair)
        yield pair, sender, outside
    finally:
        if sender is not None:
            sender.close()
        pair.stop()


def failback_pair(pair: MirrorPair) -> MirrorPair:
    """The same two directories with the roles swapped (the secondary took over, the old primary
    comes back as receiver): a mount on ``pair.secondary`` with the receiver's state directory, a
    receiver on ``pair.primary`` with the mount's, a new port, logs in ``BASE/failback``."""
    import copy

    other = copy.copy(pair)
    other.base = os.path.join(pair.base, "failback")
    os.makedirs(other.base, exist_ok=True)
    other.primary, other.secondary = pair.secondary, pair.primary
    other.state, other.rstate = pair.rstate, pair.state
    other.port = free_port()
    other.receiver = other.mounter = None
    return other


@contextlib.contextmanager
def receiver_thread(base, engine: str, keys_dir: str | None = None):
    """A real Receiver of ``engine`` on 127.0.0.1 (a port the system picks) serving
    ``base/secondary`` in this process, its own thread; a key pair ``base/keys`` made if
    ``keys_dir`` is not given. Yields (receiver, context, keys_dir); everything closed after."""
    import threading

    from hamirror.replica.receiver import Receiver

    keys_dir = keys_dir or os.path.join(base, "keys")
    if not os.path.exists(keys_dir):
        keys.generate(keys_dir, "test")
    os.makedirs(os.path.join(base, "secondary"), exist_ok=True)
    context = zmq.Context()
    receiver = Receiver(os.path.join(base, "secondary"), "tcp://127.0.0.1:*", keys_dir, context=context,
                        engine=engine)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    try:
        yield receiver, context, keys_dir
    finally:
        receiver.stop()
        serving.join(5)
        receiver.close()
        keys.stop_authenticator(context)
        context.term()
    assert not serving.is_alive(), "the receiver's loop did not stop"


@contextlib.contextmanager
def local_link(base: str, state_dir: str | None = None, on_lost=None):
    """A real receiver on ``base/secondary`` in this process (its own thread, the link engine of
    ``$HAMIRROR_LINK_ENGINE`` over loopback)
    and a connected LinkClient (``on_lost`` passed on to it): yields (client, receiver);
    everything is closed afterwards."""
    import threading

    from hamirror.link.client import LinkClient
    from hamirror.replica.receiver import Receiver

    keys.generate(os.path.join(base, "keys"), "test")
    os.makedirs(os.path.join(base, "secondary"), exist_ok=True)
    context = zmq.Context()
    receiver = Receiver(os.path.join(base, "secondary"), "tcp://127.0.0.1:*", os.path.join(base, "keys"),
                        context=context, state_dir=state_dir)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    client = LinkClient(receiver.endpoint, os.path.join(base, "keys"), context=context, on_lost=on_lost)
    try:
        client.hello(10)
        yield client, receiver
    finally:
        client.close(2)
        receiver.stop()
        serving.join(5)
        receiver.close()
        keys.stop_authenticator(context)
        context.term()


def syncs_during(pid: int, action) -> int:
    """fsync + fdatasync calls of process ``pid`` (every thread) while ``action()`` runs."""
    out = f"/tmp/hamirror-strace-{os.getpid()}-{pid}.txt"
    tracer = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", out, "-p", str(pid)],
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)                                # attached to every thread
        action()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    try:
        with open(out) as f:
            rows = [line.split() for line in f]
    finally:
        os.unlink(out)
    return sum(int(row[3]) for row in rows if row and row[-1] in ("fsync", "fdatasync") and row[3].isdigit())
