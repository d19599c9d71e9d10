"""Running the mount on its FUSE request loop, ``hamirror.fs._lowlevel`` (native/hm_fuse*.c).

The loop works on libfuse's low-level API (docs/native.md, "The request loop"): one kernel inode
per file, reads served in C, every change handed to the ``Interception`` methods. It is the
mount's only engine, so the extension is required: without it this module does not import, and
says what to install.
"""

from __future__ import annotations

import logging
import os
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


def serve_native(ops: "Interception", root_fd: int, directory: str, *, writeback: bool, max_background: int,
                 max_threads: int, on_init: Callable[[], None], idle_threads: int = 0) -> None:
    """Mount ``directory`` and serve until unmounted; RuntimeError when the mount fails (barrier
    mode on a kernel without the FUSE writeback cache among others). ``idle_threads``: idle
    workers kept (0: ``max_threads``), the others exit with their buffer."""
    ops.repl.on_queued = _lowlevel.queued   # type: ignore[attr-defined]  # the path lock goes once queued
    options = ",".join(["allow_other", "default_permissions",
                        "fsname=" + _escape(f"hamirror:{os.path.abspath(directory)}"), "subtype=hamirror"])
    _lowlevel.serve(ops, root_fd, directory, options, writeback, max_background, max_threads,
                    on_init, _log_error, idle_threads)


def context() -> Callable[[], tuple[int, int, int]]:
    """The (uid, gid, pid) of the request being served, for ``Interception``."""
    return _lowlevel.context

