"""``hamirror mirror spawner``: start the data path's daemons by forking a pre-imported process.

A mount or a receiver started as a new interpreter spends ~0.15 s of CPU before its first useful
instruction (Python's start and the imports of FUSE, ZeroMQ, the journal): 50 modules taken over
at once are ~8 CPU-seconds of that alone, and a pair's start twice as much (a receiver on each
node, then the primary's mounts). The agent starts this process once, with the daemons' modules
imported and no thread, socket or ZeroMQ context (the safe state to fork from, as
multiprocessing's forkserver), and asks it for each start; the child runs the same ``hamirror
mirror`` command line as a new process would, with the descriptors the agent passed.

Protocol (one ``SOCK_SEQPACKET`` socket pair with the agent, inherited as ``--fd``): the agent
sends ``{"argv": [...]}`` with four descriptors (stdin, stdout, stderr, and a pipe on which the
child writes its exit status, as text, when it ends); the answer is ``{"pid": N}`` or
``{"error": "..."}``. The spawner reaps its children and exits when the agent's end closes.
"""

from __future__ import annotations

import argparse
import array
import errno
import json
import os
import signal
import socket
import sys

from hamirror import heaptrim

FDS = 4                 # stdin, stdout, stderr, exit-status pipe
MAX_MESSAGE = 65536


def register(actions: argparse._SubParsersAction) -> None:
    spawner = actions.add_parser("spawner", help="(internal) start the agent's mounts and receivers by fork")
    spawner.add_argument("--fd", type=int, required=True, help="the agent's end of the request socket")
    spawner.add_argument("--room", default="", help="any text as long as the children's command lines (ignored)")
    spawner.set_defaults(func=run_spawner)


def run_spawner(args: argparse.Namespace) -> int:
    """Import what the daemons need, then serve the agent's requests until it goes."""
    preload()
    from hamirror.cli import main as cli_main

    sock = socket.socket(fileno=args.fd)
    try:
        set_cmdline(sys.orig_argv[:sys.orig_argv.index("--room")] if "--room" in sys.orig_argv else sys.orig_argv)
        refusal = None
    except OSError as exc:
        refusal = f"cannot set a child's command line ({exc}): start it as a new process"
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    while True:
        try:
            message, fds = _receive(sock)
        except OSError:
            return 1
        if message is None:
            return 0                     # the agent is gone
        try:
            request = json.loads(message)
            argv = [str(word) for word in request["argv"]]
            if len(fds) != FDS:
                raise ValueError(f"{len(fds)} descriptors, {FDS} expected")
            if refusal:
                raise ValueError(refusal)
            preload_engine(argv)
            heaptrim.compact()
            answer = {"pid": _fork(sock, argv, fds, cli_main.main)}
        except (ValueError, KeyError, TypeError, OSError) as exc:
            answer = {"error": str(exc)}
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.send(json.dumps(answer).encode())
        except OSError:
            return 1


def preload() -> None:
    """What every child would otherwise do on its own, done once here and shared copy-on-write:
    the daemons' imports, and OpenSSL's first use (~5 MB of private pages per process that
    opens a link session; docs/performance.md, "Idle memory of the data path").

    Every import a child makes is paid in its own pages (the module's objects, and the pages of
    the spawner's heap its allocations land in): the ones the daemons make lazily are done here
    too, and tests/test_spawn.py checks that a forked mount and receiver import nothing."""
    import encodings.idna  # noqa: F401 - what socket.getaddrinfo imports for the first host name
    import hamirror.fs.mount  # noqa: F401 - imported once here, inherited by every child
    import hamirror.link.transport_stream  # noqa: F401 - the engine a new cluster runs (LinkClient)
    import hamirror.replica.receiver  # noqa: F401
    from hamirror.cli import main
    from hamirror.link import native, session

    main.prepare([main.GROUP_OF["mirror"]])   # imports the group too
    native.preload()
    session.warm_up()


def preload_engine(argv: list[str]) -> None:
    """pyzmq and its transports, imported here the first time a child is to run a ZeroMQ engine
    (``curve``, ``aead``): shared with every such child, and never mapped at all by a spawner
    whose children all run ``stream`` (~4.6 MB resident, half of it charged to each child)."""
    from hamirror.link import session

    try:
        chosen = argv[argv.index("--engine") + 1] if "--engine" in argv else None
        engine = session.engine(chosen)
    except (IndexError, ValueError):
        return                           # the child says what is wrong with it
    if engine != session.STREAM:
        import zmq.utils.garbage  # noqa: F401 - what pyzmq imports at a mount's first zero-copy send
        import hamirror.link.transport_zmq  # noqa: F401
        import hamirror.link.zap  # noqa: F401 - the receiver's authenticator
        import hamirror.replica.serve_zmq  # noqa: F401


def _receive(sock: socket.socket) -> tuple[bytes | None, list[int]]:
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(FDS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return (message or None), list(fds)


def _fork(sock: socket.socket, argv: list[str], fds: list[int], main) -> int:
    """The child: its own session, the agent's descriptors as 0, 1, 2, then ``hamirror ARGV``."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 70                            # EX_SOFTWARE, if anything below fails
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        # What a new process would show (ps, psutil): the agent's watchdog, the lab's fault
        # campaign and operators find a mount or a receiver by its command line.
        set_cmdline([sys.executable, "-m", "hamirror", *argv])
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        status = os.dup(fds[3])
        for fd in fds:
            os.close(fd)
        os.set_inheritable(status, False)
        # Only this child says when it ends: a daemon it forks (``mirror mount`` detaches one) must
        # not hold the pipe open after it (a new program does not: the descriptor closes on exec).
        os.register_at_fork(after_in_child=lambda: _close(status))
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.write(status, str(code).encode())
        except OSError:
            pass                         # nobody waits for this child any more
    finally:
        os._exit(code if isinstance(code, int) else 70)


def set_cmdline(argv: list[str]) -> None:
    """Show ``argv`` as this process's command line (``/proc/self/cmdline``, ps, psutil): written
    over the original one, whose area is all there is (``--room`` reserved it; the rest is NUL
    bytes). OSError if it does not fit or cannot be written."""
    data = b"\0".join(os.fsencode(word) for word in argv) + b"\0"
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2:].split()
    start, end = int(fields[45]), int(fields[46])                  # fields 48 and 49: arg_start, arg_end
    if len(data) > end - start:
        raise OSError(errno.E2BIG, f"command line of {len(data)} bytes, room for {end - start}")
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(data.ljust(end - start, b"\0"))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
