"""Mounting the interception layer over a directory and running it until it is unmounted.

The order matters: open the directory, start the link and the journal, *then* mount over the
directory, so the daemon keeps reaching the real files through its descriptor. A mount started
while its journal says ALONE stays ALONE: it never streams over a replica that missed changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from hamirror.fs import lowlevel
from hamirror.fs.commands import MountCommands
from hamirror.fs.control import ControlServer
from hamirror.fs.operations import Interception
from hamirror.fs.stamps import BARRIER_TIME_GRANULARITY_NS
from hamirror.journal.journal import Journal
from hamirror.link import fencing
from hamirror.link.client import LinkClient, PeerLost
from hamirror.mirror import record, status as status_file
from hamirror.mirror.record import MirrorRecord
from hamirror.mirror.replicator import Replicator
from hamirror.mirror.states import MirrorState
from hamirror.resync import crash
from hamirror.syscalls import syncfs

log = logging.getLogger(__name__)

MODES = ("sync", "barrier", "async")
# Barrier mode: the kernel sends up to MAX_BACKGROUND writeback WRITEs at once, and libfuse
# serves them with up to MAX_THREADS threads. Raising both (16, 64, 128) was slower on 2 cores:
# the work is CPU-bound and more Python threads only contend for the GIL (docs/performance.md).
MAX_BACKGROUND = 12
MAX_THREADS = 10


@dataclass(frozen=True)
class MountOptions:
    directory: str
    peer: str | None              # None: replication off (benchmarks, tests of the FUSE layer)
    keys_dir: str
    state_dir: str
    mode: str = "sync"            # sync | barrier | async (docs/architecture.md)
    ack_timeout: float = 5.0
    connect_timeout: float = 10.0
    window: int = 256
    peer_key_name: str | None = None
    alone: bool = False           # failover takeover: no peer, state ALONE, a new generation
    fence: bool = False           # peer loss waits for the agent's verdict (the agent's mounts)
    fence_timeout: float = 60.0   # ... at most this long, then writes are refused (EIO)
    activity_log: bool = True     # record paths before streaming them (crash failback without a scan)
    engine: str | None = None     # the link engine (link/session.py); None: $HAMIRROR_LINK_ENGINE, else curve


def default_state_dir(directory: str) -> str:
    """Per-directory state (journal, status) outside the replicated directory."""
    absolute = os.path.abspath(directory)
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:12]
    name = os.path.basename(absolute.rstrip("/")) or "root"
    return os.path.join("/var/lib/hamirror/mirror", f"{name}-{digest}")


class StatusWriter:
    """Keeps ``status.json`` in the state directory current, for ``hamirror mirror status``."""

    def __init__(self, options: MountOptions, replicator: Replicator) -> None:
        self.options = options
        self.replicator = replicator
        self.mounted = False
        self.commands: MountCommands | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hamirror-status", daemon=True)
        # The 1 s loop and a change of state (the link's thread) write at once: one at a time, the
        # snapshot taken inside, so an older one never lands over a newer (two writes never
        # collide anyway: each has a temporary file of its own, hamirror/durablefile.py).
        self._writing = threading.Lock()

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.mounted = False
        self.write()

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(1.0):
            try:
                self.write()
            except OSError as exc:   # a full disk: the status goes stale, the loop stays
                if not failing:
                    log.warning("status.json not written: %s", exc)
                failing = True
            else:
                failing = False

    def snapshot(self) -> status_file.MountStatus:
        r = self.replicator
        c = r.client
        resync = self.commands.resync_progress() if self.commands else None
        return {
            "role": "mount",
            "dir": os.path.abspath(self.options.directory),
            "peer": self.options.peer,
            "mode": self.options.mode,
            "pid": os.getpid(),
            "mounted": self.mounted,
            "state": r.state.value,
            "resync_needed": r.state is MirrorState.ALONE,
            "fenced_since": r.fenced_since,
            "fence_reason": r.fence_reason or None,
            "resync": resync,
            "last_resync_error": self.commands.last_resync_error if self.commands else None,
            "resync_failures": self.commands.resync_failures if self.commands else None,
            "last_resync": self.commands.last_resync if self.commands else None,
            "alone_reason": r.alone_reason or None,
            "alone_since": r.alone_since,
            "changed_paths": r.journal.changed_count() if r.journal is not None else 0,
            "ops_sent": c.ops_sent if c else 0,
            "bytes_sent": c.bytes_sent if c else 0,
            "in_flight": c.in_flight if c else 0,
            "updated": time.time(),
        }

    def write(self) -> None:
        with self._writing:
            status_file.write(self.options.state_dir, self.snapshot())


class MountError(Exception):
    """The mount could not start; the message is for the operator."""


def prepare(options: MountOptions) -> tuple[int, Replicator, LinkClient | None, Journal]:
    """Open the directory, the journal and the link (HELLO). Raises MountError."""
    if not os.path.isdir(options.directory):
        raise MountError(f"{options.directory}: not a directory")
    if os.path.ismount(options.directory) and is_fuse_mountpoint(options.directory):
        raise MountError(f"{options.directory}: already mounted by hamirror (or another FUSE filesystem)")
    os.makedirs(options.state_dir, mode=0o700, exist_ok=True)
    root_fd = os.open(options.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    journal = Journal(os.path.join(options.state_dir, "journal.db"))
    last = MirrorRecord.read(journal)
    was_clean, saved = last.clean, last.state
    record.CLEAN.set(journal, False)   # until a clean unmount: a crash leaves unacknowledged writes
    # A crash while streaming: the activity log names the paths in flight (folded into the changed set).
    recovery, activity = crash.start_mount(journal, was_clean,
                                             options.activity_log and (options.peer is not None or options.alone),
                                             sync_fd=root_fd)
    if not was_clean and (saved is MirrorState.PRIM or
                          (saved is MirrorState.ALONE and journal.resync_progress() is not None)):
        # Crashed while streaming (or resyncing): without an intact activity log the writes in
        # flight are in no journal, and may be on one side only: the next resync compares
        # everything. None resumes trusting the paths an interrupted one had marked done.
        if recovery is None or not recovery.covered:
            record.NEEDS_SCAN.set(journal, True)
        if recovery is None or not recovery.fold:
            # Nor can it show what a delegated peer lost (docs/journal.md, "Delegated durability").
            record.LOG_LOST.set(journal, True)
        journal.resync_end()
    replicator = Replicator(None, journal, sync=options.mode == "sync", fence=options.fence,
                            fence_timeout=options.fence_timeout, activity=activity)
    if options.alone:
        # Every takeover starts a new generation, whatever an earlier run left in the journal:
        # the peer must see this node's history as newer than the one it was primary in.
        replicator.start_alone("started without a peer (takeover)", new_generation=True)
        return root_fd, replicator, None, journal
    if options.peer is not None and saved is MirrorState.ALONE:
        replicator.start_alone("the peer missed changes while this mount was ALONE: a resync is needed",
                               new_generation=False)
        return root_fd, replicator, None, journal
    if options.peer is not None and options.fence and _must_ask(saved, was_clean):
        # The last run stopped while the peer was not acknowledging, or crashed while streaming
        # (its writes in flight are on one side only): never stream on, never go ALONE unasked.
        lost_from = MirrorState(last.lost_from or MirrorState.PRIM) \
            if saved is not MirrorState.PRIM else MirrorState.PRIM
        replicator.start_fenced(f"the last mount stopped {'while ' + saved if saved is not MirrorState.PRIM else 'uncleanly'}: "
                                "the peer may lack its last writes", lost_from)
        return root_fd, replicator, None, journal
    if options.peer is None:
        return root_fd, replicator, None, journal
    try:
        client = LinkClient(options.peer, options.keys_dir, peer_key_name=options.peer_key_name,
                            ack_timeout=options.ack_timeout, window=options.window, token_file=token_file(options),
                            engine=options.engine)
    except Exception as exc:
        journal.close()
        os.close(root_fd)
        raise MountError(str(exc)) from exc
    try:
        client.hello(options.connect_timeout)
    except PeerLost as exc:
        client.close(0)
        journal.close()
        os.close(root_fd)
        raise MountError(str(exc)) from exc
    record.STATE.set(journal, MirrorState.PRIM)
    return root_fd, Replicator(client, journal, sync=options.mode == "sync", fence=options.fence,
                               fence_timeout=options.fence_timeout, activity=activity), client, journal


def token_file(options: MountOptions) -> str:
    """Where the agent keeps this node's fencing token for the directory (link/fencing.py)."""
    return os.path.join(options.state_dir, fencing.TOKEN_FILE)


def _must_ask(saved: MirrorState | str | None, was_clean: bool) -> bool:
    """Whether a fencing mount must start FENCED: stopped blocked, or crashed while streaming."""
    if saved in (MirrorState.FENCED, MirrorState.REFUSED):
        return True
    return saved is MirrorState.PRIM and not was_clean


def serve(options: MountOptions, on_ready: Callable[[str | None], None] = lambda err: None) -> int:
    """Mount and serve in this process until unmounted. ``on_ready(None)`` once mounted."""
    try:
        root_fd, replicator, client, journal = prepare(options)
    except MountError as exc:
        on_ready(str(exc))
        return 1
    status = StatusWriter(options, replicator)
    commands = MountCommands(root_fd, replicator, journal, options.keys_dir, options.ack_timeout,
                             options.window, status.snapshot, token_file=token_file(options),
                             link_engine=options.engine)
    status.commands = commands
    replicator.on_state = lambda state, reason: status.write()
    control = ControlServer(options.state_dir, commands.handle)
    ignored = lowlevel.ignored_engine_setting()
    if ignored:
        log.warning("%s", ignored)
    ops = Interception(root_fd, replicator, options.mode, context=lowlevel.context())
    clean = False

    def mounted() -> None:
        status.mounted = True
        status.start()
        on_ready(None)

    sys.setswitchinterval(0.0005)   # FUSE threads hand off to the link thread many times per op
    # The process umask stays as it is: the operations apply the callers' modes themselves.
    try:
        writeback = options.mode == "barrier"
        direct_writes = not writeback and lowlevel.direct_writes_coherent(os.uname().release)
        if not writeback and not direct_writes:
            log.info("kernel %s (before 6.6): write-only handles keep the page cache", os.uname().release)
        lowlevel.serve_native(ops, root_fd, options.directory, writeback=writeback,
                              max_background=MAX_BACKGROUND, max_threads=MAX_THREADS, on_init=mounted,
                              direct_writes=direct_writes,
                              time_granularity_ns=BARRIER_TIME_GRANULARITY_NS if writeback else 0)
        clean = True
    except RuntimeError as exc:
        on_ready(f"mount failed: {exc}")
        return 1
    finally:
        control.close()
        if replicator.client is not None:
            if clean and not replicator.settle_durable():
                # The peer's disk may lack what it acknowledged: the activity log still names it,
                # and an unclean stop makes the next start fold it (docs/journal.md, "Durability").
                log.warning("the peer could not show its copy durable at unmount: the stop counts as unclean")
                clean = False
            replicator.client.close()
        status.stop()
        if clean and _synced(root_fd):
            record.CLEAN.set(journal, True)
        journal.close()
        os.close(root_fd)
    return 0


def _synced(root_fd: int) -> bool:
    """Make the lower directory's data durable before calling the stop clean: a clean stop
    empties nothing, but the next start trusts that no write of this run sits in the page
    cache only (a power loss would take it with no record: docs/journal.md, "Durability")."""
    try:
        syncfs(root_fd)
        return True
    except OSError as exc:
        log.warning("sync of the replicated directory at unmount failed: %s; the stop counts as unclean", exc)
        return False


def is_fuse_mountpoint(path: str) -> bool:
    """Whether ``path`` is a FUSE mount point in this mount namespace (dead or alive)."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return any(len(p := line.split()) > 2 and p[1] == real and p[2].startswith("fuse") for line in f)
    except OSError:
        return False


def unmount(directory: str, lazy: bool = False) -> None:
    """Ask the kernel to unmount; the daemon then drains the link and exits."""
    args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [directory]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise MountError(result.stderr.strip() or f"fusermount3 failed on {directory}")


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False

