"""A real power loss of a lab node: its processes die *and* what its page cache held is lost.

``lab kill`` SIGKILLs a node's processes, but the host's page cache survives, so writes the node
never made durable still reach its disk: a test of durability passes whatever the code does. Here:

1. every process of the node is frozen (SIGSTOP), so nothing changes while we look;
2. every regular file of the node's replicated directories (``ROOT/NODE/srv``, read from the host:
   that is the lower directory, under any FUSE mount the node made in its own namespace) is probed
   for pages whose data is not on the disk yet (:mod:`hamirror.lab.pagecache`);
3. the node's processes are SIGKILLed, as ``lab kill`` does;
4. those pages are overwritten with zeros through the file (its atime and mtime kept), and the
   file is fsynced: the disk now holds what a crash would have left, zeros where data was lost.

What is not emulated: metadata (a file created or renamed without a directory fsync survives
here; on a real disk it might not) and the node's state directory (the journal is SQLite with
``synchronous=FULL``; ext4 makes replace-by-rename files safe, a zero-filling emulation would not).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
from dataclasses import dataclass, field

from hamirror.lab import control, pagecache, process
from hamirror.lab.naming import LabPaths
from hamirror.lab.shell import LabError

log = logging.getLogger(__name__)

ZEROS = bytes(pagecache.PAGE)


@dataclass
class PowerLoss:
    """What a power loss did: processes killed, and the unsynced data that vanished."""

    node: str
    killed: list[int] = field(default_factory=list)
    files_scanned: int = 0
    files_hit: dict[str, int] = field(default_factory=dict)   # host path -> bytes zeroed

    @property
    def bytes_lost(self) -> int:
        return sum(self.files_hit.values())

    def summary(self) -> str:
        return (f"{self.node}: power loss: killed {len(self.killed)} process(es); {self.bytes_lost} unsynced "
                f"byte(s) lost in {len(self.files_hit)} of {self.files_scanned} file(s)")


def data_dirs(paths: LabPaths, node: str) -> list[str]:
    """The node's disk as the power loss takes it: its replicated directories (all under /srv)."""
    return [paths.node_dir(node, "srv")]


def power_loss(paths: LabPaths, node: str) -> PowerLoss:
    """Freeze, find the unsynced pages, SIGKILL, zero them (see the module docstring)."""
    why = pagecache.unsupported()
    if why:
        raise LabError(f"power loss emulation: {why}")
    recorded = control.require(paths)
    control.check_host(recorded, node, nodes_only=True)
    result = PowerLoss(node)
    _freeze(process.members(paths, node, recorded.started_in(node)))
    try:
        lost = _scan(data_dirs(paths, node), result)
    finally:
        # Never leave a node frozen, even when the scan failed.
        result.killed = control.kill(paths, node)
    for host_path, pages in lost.items():
        result.files_hit[host_path] = _zero(host_path, pages)
    log.info("%s", result.summary())
    return result


def lose_unsynced(roots: list[str]) -> int:
    """Steps 2 and 4 alone, for directories whose writers are dead already (a test's receiver,
    killed): zero every page not on the disk under ``roots``; the bytes lost."""
    return sum(_zero(path, pages) for path, pages in _scan(roots, PowerLoss("")).items())


def _freeze(pids: list[int]) -> None:
    """SIGSTOP ``pids`` (one may have exited meanwhile)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue


def _scan(roots: list[str], result: PowerLoss) -> dict[str, list[int]]:
    """Host path -> indices of its pages not on the disk, for every regular file under roots."""
    lost: dict[str, list[int]] = {}
    seen: set[tuple[int, int]] = set()
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                pages = _probe(path, seen)
                if pages is None:
                    continue
                result.files_scanned += 1
                if pages:
                    lost[path] = pages
    return lost


def _probe(path: str, seen: set[tuple[int, int]]) -> list[int] | None:
    """Dirty page indices of one file; None when it is not a regular file or seen already (hard link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen or st.st_size == 0:
            return None
        seen.add((st.st_dev, st.st_ino))
        return pagecache.dirty_pages(fd)
    finally:
        os.close(fd)


def _zero(path: str, pages: list[int]) -> int:
    """Overwrite ``pages`` with zeros (never past the end of the file), keep the file's times,
    fsync; the number of bytes zeroed."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        zeroed = 0
        for index in pages:
            offset = index * pagecache.PAGE
            length = min(pagecache.PAGE, st.st_size - offset)
            if length > 0:
                zeroed += os.pwrite(fd, ZEROS[:length], offset)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.fsync(fd)
        return zeroed
    finally:
        os.close(fd)
