"""``hamirror mirror``: the low-level replicated mount (receive, mount, umount, status).

Usable without the agent, for tests, benchmarks and one-off replication.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from hamirror.cli import spawner
from hamirror.cli.common import USAGE, CommandError, default_keys_dir
from hamirror.fs import mount as fsmount
from hamirror.heaptrim import IdleTrim
from hamirror.link import session
from hamirror.mirror import status as status_file
from hamirror.syscalls import keep_message_buffers


def endpoint(value: str) -> str:
    """Accept ``HOST:PORT`` as a shorthand for ``tcp://HOST:PORT``."""
    return value if "://" in value else f"tcp://{value}"


def add_engine(parser: argparse.ArgumentParser) -> None:
    """``--engine``: the agent passes the cluster file's ``[link] engine`` (docs/configuration.md)."""
    parser.add_argument("--engine", choices=(session.CURVE, session.AEAD, session.STREAM), default=None,
                        help=f"the replication link engine, the same at both ends (docs/security.md; default: "
                             f"${session.ENGINE_ENV}, else {session.DEFAULT_ENGINE})")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mirror", help="low-level replicated mount (receive, mount, umount, status)")
    actions = parser.add_subparsers(dest="mirror_command", metavar="ACTION", required=True)

    receive = actions.add_parser("receive", help="apply a peer's operations to DIR (secondary side)")
    receive.add_argument("--dir", required=True, help="the secondary's copy of the replicated directory")
    receive.add_argument("--bind", required=True, type=endpoint, help="endpoint to listen on, e.g. tcp://0.0.0.0:7410")
    receive.add_argument("--keys", default=default_keys_dir(), help="CURVE keys directory (default: %(default)s)")
    receive.add_argument("--state-dir", default=None,
                         help="journal and status of this copy (up to date or not, generations)")
    add_engine(receive)
    receive.set_defaults(func=run_receive)

    mnt = actions.add_parser("mount", help="stack the interception layer on DIR and replicate to the peer")
    mnt.add_argument("--dir", required=True, help="the directory to replicate, in place")
    mnt.add_argument("--peer", type=endpoint, help="the receiver's endpoint, e.g. tcp://198.18.0.2:7410")
    mnt.add_argument("--no-replication", action="store_true", help="interception only, no peer (benchmarks)")
    mnt.add_argument("--alone", action="store_true",
                     help="take over without a peer: state ALONE, a new generation, every change recorded")
    mnt.add_argument("--mode", choices=fsmount.MODES, default="sync",
                     help="sync: calls return once the peer applied them (default); barrier: writes return "
                          "from the page cache, fsync/close once the peer applied everything before; "
                          "async: after the local apply")
    mnt.add_argument("--keys", default=default_keys_dir(), help="CURVE keys directory (default: %(default)s)")
    mnt.add_argument("--peer-key", default=None, help="name of the peer's public key file (NAME.key) if ambiguous")
    mnt.add_argument("--state-dir", default=None, help="journal and status directory (default: under /var/lib/hamirror/mirror)")
    mnt.add_argument("--timeout", type=float, default=5.0,
                     help="seconds without an acknowledgement before the mount goes ALONE (default: %(default)s)")
    mnt.add_argument("--window", type=int, default=256, help="operations in flight at most (default: %(default)s)")
    mnt.add_argument("--fence", type=float, default=None, metavar="SECONDS",
                     help="when the peer stops acknowledging, block writes until the agent grants ALONE "
                          "(control request 'alone') or refuses (EIO), at most SECONDS, then refuse; "
                          "without it the mount goes ALONE on its own after --timeout")
    mnt.add_argument("--no-activity-log", action="store_true",
                     help="do not record the paths being streamed (a crash of this primary then costs a "
                          "resync that scans the whole tree; for measuring what the log costs)")
    add_engine(mnt)
    mnt.add_argument("--foreground", action="store_true", help="do not detach; serve until unmounted")
    mnt.set_defaults(func=run_mount)

    umount = actions.add_parser("umount", help="unmount DIR after the peer acknowledged everything")
    umount.add_argument("--dir", required=True)
    umount.add_argument("--state-dir", default=None)
    umount.add_argument("--lazy", action="store_true", help="detach now even if files are open")
    umount.add_argument("--timeout", type=float, default=30.0)
    umount.set_defaults(func=run_umount)

    resync = actions.add_parser("resync", help="bring a returning peer up to date while the mount keeps serving")
    resync.add_argument("--dir", required=True, help="the mounted directory (its mount must be ALONE)")
    resync.add_argument("--peer", required=True, type=endpoint, help="the receiver's endpoint")
    resync.add_argument("--peer-key", default=None, help="name of the peer's public key file if ambiguous")
    resync.add_argument("--full", action="store_true", help="compare every block of every file")
    resync.add_argument("--bandwidth", type=float, default=None, help="limit in MB/s")
    resync.add_argument("--keep-aside", action="store_true",
                        help="split brain: move the peer's own changed files into a dated folder inside its "
                             "directory (DIR/.hamirror-conflicts/STAMP/) before overwriting them")
    resync.add_argument("--state-dir", default=None)
    resync.add_argument("--no-wait", action="store_true", help="start it and return")
    resync.set_defaults(func=run_resync)

    spawner.register(actions)

    status = actions.add_parser("status", help="state of the mount on DIR (PRIM, ALONE, ...)")
    status.add_argument("--dir", required=True)
    status.add_argument("--state-dir", default=None)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=run_status)


def run_receive(args: argparse.Namespace) -> int:
    from hamirror.link.keys import KeyError_
    from hamirror.replica.receiver import Receiver

    if not os.path.isdir(args.dir):
        raise CommandError(f"{args.dir}: not a directory")
    keep_message_buffers()   # before ZeroMQ's threads: they take their heap from the same arena
    try:
        receiver = Receiver(args.dir, args.bind, args.keys, state_dir=args.state_dir, engine=args.engine)
    except (KeyError_, OSError, ValueError) as exc:   # ValueError: HAMIRROR_LINK_ENGINE
        raise CommandError(str(exc)) from exc
    except Exception as exc:  # zmq errors: address in use, bad endpoint
        raise CommandError(f"cannot listen on {args.bind}: {exc}") from exc
    IdleTrim().start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: receiver.stop())
    print(f"receiving into {args.dir} on {receiver.endpoint}", flush=True)
    try:
        receiver.serve_forever()
    finally:
        receiver.close()
    return 0


def _state_dir(args: argparse.Namespace) -> str:
    return args.state_dir or fsmount.default_state_dir(args.dir)


def run_mount(args: argparse.Namespace) -> int:
    keep_message_buffers()
    if args.peer is None and not (args.no_replication or args.alone):
        raise CommandError("mirror mount: --peer is required (or --alone, or --no-replication)", USAGE)
    options = fsmount.MountOptions(
        directory=args.dir, peer=None if args.no_replication or args.alone else args.peer,
        keys_dir=args.keys, alone=args.alone,
        state_dir=_state_dir(args), mode=args.mode, ack_timeout=args.timeout,
        window=args.window, peer_key_name=args.peer_key, fence=args.fence is not None,
        fence_timeout=args.fence if args.fence is not None else 60.0,
        activity_log=not args.no_activity_log, engine=args.engine)
    if args.foreground:
        def ready(err: str | None) -> None:
            print(f"hamirror: {err}" if err else f"mounted {args.dir}", file=sys.stderr if err else sys.stdout,
                  flush=True)
        IdleTrim().start()
        return fsmount.serve(options, ready)
    return _mount_detached(options)


def _mount_detached(options: fsmount.MountOptions) -> int:
    """Fork before any thread or socket exists; the parent returns once the child is mounted."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        log_path = os.path.join(options.state_dir, "mount.log")
        os.makedirs(options.state_dir, mode=0o700, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        said = threading.Event()

        def ready(err: str | None) -> None:
            if not said.is_set():
                said.set()
                os.write(write_end, (err or "OK").encode())
                os.close(write_end)

        IdleTrim().start()                 # a thread: only in the child
        code = fsmount.serve(options, ready)
        ready(f"mount exited with status {code}")
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode(errors="replace")
    if answer != "OK":
        os.waitpid(pid, 0)
        raise CommandError(answer or "mount process died before mounting")
    print(f"mounted {options.directory} (pid {pid})")
    return 0


def run_umount(args: argparse.Namespace) -> int:
    status = status_file.read(_state_dir(args))
    try:
        fsmount.unmount(args.dir, lazy=args.lazy)
    except fsmount.MountError as exc:
        raise CommandError(str(exc)) from exc
    if status and status.get("pid") and not fsmount.wait_for_exit(status["pid"], args.timeout):
        raise CommandError(f"unmounted, but the daemon (pid {status['pid']}) is still draining after {args.timeout:g}s")
    return 0


def run_resync(args: argparse.Namespace) -> int:
    from hamirror.fs.control import ControlError, request

    state_dir = _state_dir(args)
    bandwidth = args.bandwidth * 1e6 if args.bandwidth else None
    try:
        request(state_dir, {"cmd": "resync", "peer": args.peer, "peer_key": args.peer_key,
                            "full": args.full, "bandwidth": bandwidth, "keep_aside": args.keep_aside})
    except ControlError as exc:
        raise CommandError(f"resync: {exc}") from exc
    if args.no_wait:
        return 0
    return _watch_resync(state_dir)


def _watch_resync(state_dir: str) -> int:
    """Show progress until the mount is PRIM (done) or ALONE again (failed)."""
    import time

    from hamirror.fs.control import ControlError, request

    tty = sys.stderr.isatty()
    while True:
        time.sleep(0.2)
        try:
            status = request(state_dir, {"cmd": "status"})["status"]
        except ControlError as exc:
            raise CommandError(f"resync: lost the mount: {exc}") from exc
        progress = status.get("resync")
        if progress and tty:
            done, total = progress["done_bytes"], max(progress["total_bytes"], 1)
            bar = "#" * int(30 * min(done / total, 1))
            eta = progress.get("eta")
            print(f"\r[{bar:<30}] {done / 1e6:8.1f}/{total / 1e6:.1f} MB  {progress['rate'] / 1e6:6.1f} MB/s"
                  f"  ETA {eta:5.0f}s" if eta is not None else "", end="", file=sys.stderr, flush=True)
        if status["state"] == "PRIM":
            if tty:
                print(file=sys.stderr)
            print("resync done: mirror is synchronous again")
            return 0
        if status["state"] == "ALONE" and status.get("last_resync_error"):
            raise CommandError(f"resync failed: {status['last_resync_error']}")


def run_status(args: argparse.Namespace) -> int:
    status = status_file.read(_state_dir(args))
    if status is None:
        raise CommandError(f"{args.dir}: no hamirror mount state found")
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(f"{status['dir']}: {status['state']}{' (mounted)' if status['mounted'] else ' (not mounted)'}, "
          f"mode {status['mode']}, peer {status['peer']}")
    if status.get("resync_needed"):
        print(f"  resync needed: {status.get('alone_reason')}; {status.get('changed_paths')} path(s) changed")
    print(f"  sent {status['ops_sent']} operations, {status['bytes_sent']} bytes; {status['in_flight']} in flight")
    return 0
