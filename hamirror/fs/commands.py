"""What a running mount does when asked over its control socket: status, alone, resync, flush, verify."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Callable

from hamirror.journal.journal import Journal
from hamirror.link.client import LinkClient, PeerLost
from hamirror.link.protocol import HELLO_RESYNC, Op
from hamirror.mirror.replicator import Replicator
from hamirror.mirror.states import MirrorState
from hamirror.resync import failures
from hamirror.resync.engine import ResyncEngine, ResyncFailed
from hamirror.resync.verify import VerifyJob

log = logging.getLogger(__name__)


class MountCommands:
    """Handles control requests for one mount (see hamirror.fs.control)."""

    def __init__(self, root_fd: int, replicator: Replicator, journal: Journal, keys_dir: str,
                 ack_timeout: float, window: int, snapshot: Callable[[], dict],
                 token_file: str | None = None, link_engine: str | None = None) -> None:
        self.root_fd = root_fd
        self.link_engine = link_engine     # the resync's client speaks the mount's engine
        self.token_file = token_file
        self.replicator = replicator
        self.journal = journal
        self.keys_dir = keys_dir
        self.ack_timeout = ack_timeout
        self.window = window
        self.snapshot = snapshot
        self.engine: ResyncEngine | None = None
        self.last_resync_error: str | None = None
        self.last_resync: dict | None = None   # summary of the last resync that completed
        self.resync_failures = failures.load(journal)   # failures in a row (an alarm from 3 on)
        self._resync_thread: threading.Thread | None = None
        self.verify = VerifyJob(root_fd, replicator, journal)   # online verify (hamirror/resync/verify.py)

    def handle(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": {**self.snapshot(), **self.verify.status()}}
        if cmd == "alone":      # the agent's verdict: the peer cannot be primary
            self.replicator.grant_alone(str(req.get("reason") or "peer declared lost by the agent"))
            return {"ok": True, "state": self.replicator.state.value}
        if cmd == "refuse":     # the agent's verdict: the peer may be primary; this node steps down
            self.replicator.refuse(str(req.get("reason") or "refused by the agent"))
            return {"ok": True, "state": self.replicator.state.value}
        if cmd == "verify":     # compare both copies of the live mirror (and repair): runs in a thread
            return self.verify.start(bool(req.get("repair")))
        if cmd == "verify_status":
            return {"ok": True, **self.verify.status()}
        if cmd == "flush":
            return self.flush(float(req.get("timeout", 10.0)))
        if cmd == "resync":
            return self.start_resync(str(req["peer"]), req.get("peer_key"), bool(req.get("full")),
                                     req.get("bandwidth"), bool(req.get("keep_aside")))
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def resync_progress(self) -> dict | None:
        engine = self.engine
        if engine is None or self.replicator.state is not MirrorState.SYNCING:
            return None
        return engine.progress.snapshot()

    def flush(self, timeout: float) -> dict:
        """Return once every operation sent so far is acknowledged (a barrier, e.g. before swap)."""
        replicator = self.replicator
        with replicator.lock:
            client = replicator.client
            if replicator.state not in (MirrorState.PRIM, MirrorState.SYNCING) or client is None:
                return {"ok": True, "state": replicator.state.value}
            ticket = client.submit(Op.PING)
        if not ticket.wait(timeout):
            return {"ok": False, "error": f"not acknowledged within {timeout:g}s"}
        if ticket.error:
            return {"ok": False, "error": ticket.error}
        return {"ok": True, "state": replicator.state.value}

    def start_resync(self, peer: str, peer_key: str | None, full: bool, bandwidth: float | None,
                     keep_aside: bool = False) -> dict:
        if self.replicator.state is not MirrorState.ALONE:
            return {"ok": False, "error": f"resync needs state ALONE, the mount is {self.replicator.state.value}"}
        if self._resync_thread is not None and self._resync_thread.is_alive():
            return {"ok": False, "error": "a resync is already running"}
        self._resync_thread = threading.Thread(target=self._resync, args=(peer, peer_key, full, bandwidth, keep_aside),
                                               name="hamirror-resync", daemon=True)
        self._resync_thread.start()
        return {"ok": True}

    def _resync(self, peer: str, peer_key: str | None, full: bool, bandwidth: float | None,
                keep_aside: bool) -> None:
        started = time.monotonic()
        client = None
        try:
            client = LinkClient(peer, self.keys_dir, peer_key_name=peer_key, ack_timeout=self.ack_timeout,
                                window=self.window, token_file=self.token_file, engine=self.link_engine)
            client.hello(min(self.ack_timeout * 2, 30.0), flags=HELLO_RESYNC)
            old = self.replicator.client
            self.engine = ResyncEngine(self.root_fd, self.replicator, client, self.journal, full=full,
                                       bandwidth=float(bandwidth) if bandwidth else None,
                                       keep_aside=keep_aside)
            self.engine.run()
            if old is not None and old is not client:
                old.close(0)
            self.last_resync_error = None
            self._count(None)
            seconds = time.monotonic() - started
            self.last_resync = {**self.engine.progress.snapshot(), "seconds": seconds, "peer": peer,
                                "finished_at": time.time()}
            log.info("resync to %s done in %.1fs", peer, seconds)
        except Exception as exc:   # PeerLost, ResyncFailed, OSError, and a journal that cannot write (sqlite3)
            self.last_resync_error = str(exc)
            self._count(str(exc))
            # An unexpected kind (not the link, not the disk, not sqlite) is a bug: keep its traceback.
            log.warning("resync to %s failed: %s", peer, exc,
                        exc_info=not isinstance(exc, (PeerLost, ResyncFailed, OSError, sqlite3.Error)))
            if self.replicator.state is MirrorState.SYNCING and client is not None:
                client.abort(f"resync failed: {exc}")
                deadline = time.monotonic() + 5
                while self.replicator.state is MirrorState.SYNCING and time.monotonic() < deadline:
                    time.sleep(0.01)
            if client is not None and self.replicator.client is not client:
                client.close(0)

    def _count(self, error: str | None) -> None:
        """Keep the count of failures in a row (durable, so a restart of the mount keeps it)."""
        try:
            if error is None:
                self.resync_failures = None     # done, even if the journal cannot record it
                failures.succeeded(self.journal)
            else:
                self.resync_failures = failures.failed(self.journal, error)
        except Exception as exc:   # the journal itself failing (ENOSPC, EIO): still counted in memory
            log.error("resync failure count not recorded: %s", exc)
            if error is not None:
                self.resync_failures = failures.after_failure(self.resync_failures, error, time.time())
        if failures.is_alarm(self.resync_failures):
            log.error("resync failed %d times in a row the same way: %s", self.resync_failures["count"], error)
