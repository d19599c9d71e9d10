"""Running the mount on its FUSE request loop, ``hamirror.fs._lowlevel`` (native/hm_fuse*.c).

The loop works on libfuse's low-level API (docs/native.md, "The request loop"): one kernel inode
per file, reads served in C, every change handed to the ``Interception`` methods. It is the
mount's only engine, so the extension is required: without it this module does not import, and
says what to install.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Callable, Mapping

try:
    from hamirror.fs import _lowlevel
except ImportError as exc:   # a build without libfuse3-dev / pkg-config (setup.py fails it now)
    raise ImportError(
        f"hamirror.fs._lowlevel, the mount's FUSE request loop, is not built ({exc}): install "
        "libfuse3-dev and pkg-config, then reinstall hamirror (on a test machine: scripts/setup.sh)"
    ) from exc

if TYPE_CHECKING:
    from hamirror.fs.operations import Interception

log = logging.getLogger(__name__)

# The previous release's engine switch: a drop-in that still sets it must not stop a mount.
OLD_ENGINE_ENV = "HAMIRROR_FUSE_ENGINE"


def ignored_engine_setting(environ: Mapping[str, str] = os.environ) -> str | None:
    """The warning for a leftover ``HAMIRROR_FUSE_ENGINE`` (logged once per mount), or None."""
    if OLD_ENGINE_ENV not in environ:
        return None
    return (f"{OLD_ENGINE_ENV}={environ[OLD_ENGINE_ENV]!r} is ignored: the mount has one FUSE engine "
            "(the native request loop); remove it from the service's environment")


def _escape(value: str) -> str:
    """A value inside libfuse's -o list: commas and backslashes escaped."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _log_error(operation: str, exc: BaseException) -> None:
    """What the loop calls for an exception other than OSError: logged, the request gets EIO."""
    log.error("FUSE %s failed: %r (answered EIO)", operation, exc, exc_info=exc)


# The first kernel whose FUSE drops every handle's cached pages over a direct write's range
# (before the write, fs/fuse/file.c fuse_direct_io; Linux 6.6): before it, a handle that read a
# file could go on reading its old pages after a write-only handle changed them.
DIRECT_WRITES_COHERENT_SINCE = (6, 6)


def direct_writes_coherent(release: str) -> bool:
    """Whether write-only handles may bypass the page cache on the kernel of ``release``
    (``os.uname().release``); False when it cannot be read."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return found is not None and (int(found[1]), int(found[2])) >= DIRECT_WRITES_COHERENT_SINCE


def serve_native(ops: "Interception", root_fd: int, directory: str, *, writeback: bool, max_background: int,
                 max_threads: int, on_init: Callable[[], None], idle_threads: int = 0,
                 direct_writes: bool = False, time_granularity_ns: int = 0) -> None:
    """Mount ``directory`` and serve until unmounted; RuntimeError when the mount fails (barrier
    mode on a kernel without the FUSE writeback cache among others). ``idle_threads``: idle
    workers kept (0: ``max_threads``), the others exit with their buffer. ``direct_writes``:
    write-only handles bypass the kernel's page cache (FOPEN_DIRECT_IO; never with ``writeback``):
    one copy fewer per write, and the file's data cached once, in the backing file's cache.
    ``time_granularity_ns``: the granularity of the file times the kernel keeps and sets (0: its
    own, 1 ns)."""
    ops.repl.on_queued = _lowlevel.queued   # type: ignore[attr-defined]  # the path lock goes once queued
    options = ",".join(["allow_other", "default_permissions",
                        "fsname=" + _escape(f"hamirror:{os.path.abspath(directory)}"), "subtype=hamirror"])
    _lowlevel.serve(ops, root_fd, directory, options, writeback, max_background, max_threads,
                    on_init, _log_error, idle_threads, direct_writes, time_granularity_ns)


def context() -> Callable[[], tuple[int, int, int]]:
    """The (uid, gid, pid) of the request being served, for ``Interception``."""
    return _lowlevel.context

