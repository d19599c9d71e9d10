"""Choosing and running the FUSE engine: the native loop or mfusepy (libfuse's high-level API).

``native`` (the default) runs the mount on ``hamirror.fs._lowlevel`` (native/hm_fuse*.c,
docs/native.md): a request loop on libfuse's low-level API with one kernel inode per file,
serving reads in C and handing every change to the same ``Interception`` methods.
``HAMIRROR_FUSE_ENGINE=python`` runs them through mfusepy. Where the extension was not built,
``native`` falls back to ``python`` with one warning, as the receiver's apply core does
(hamirror/link/native.py).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from types import ModuleType
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from hamirror.fs.operations import Interception

log = logging.getLogger(__name__)

ENV = "HAMIRROR_FUSE_ENGINE"
ENGINES = ("python", "native")
DEFAULT = "native"


@functools.cache
def module() -> ModuleType | None:
    """The native loop's module, or None (logged once) where it was not built."""
    try:
        return importlib.import_module("hamirror.fs._lowlevel")
    except ImportError as exc:
        log.warning("native FUSE engine not available (%s): the mount runs on mfusepy", exc)
        return None


def chosen() -> str:
    """The engine to run: ``$HAMIRROR_FUSE_ENGINE`` if it names one and can run, else python."""
    wanted = os.environ.get(ENV, DEFAULT).strip() or DEFAULT
    if wanted not in ENGINES:
        log.warning("%s=%r is not one of %s: the default (%s) is used", ENV, wanted, ", ".join(ENGINES), DEFAULT)
        wanted = DEFAULT
    if wanted == "native" and module() is None:
        return "python"
    return wanted


def _escape(value: str) -> str:
    """A value inside libfuse's -o list: commas and backslashes escaped."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _log_error(operation: str, exc: BaseException) -> None:
    """What the loop calls for an exception other than OSError: logged, the request gets EIO."""
    log.error("FUSE %s failed: %r (answered EIO)", operation, exc, exc_info=exc)


def serve_native(ops: "Interception", root_fd: int, directory: str, *, writeback: bool, max_background: int,
                 max_threads: int, on_init: Callable[[], None], idle_threads: int = 0) -> None:
    """Mount ``directory`` with the native loop and serve until unmounted; RuntimeError when the
    mount fails (the same message as the python engine for a kernel without writeback cache).
    ``idle_threads``: idle workers kept (0: ``max_threads``), the others exit with their buffer."""
    lowlevel = module()
    assert lowlevel is not None, "chosen() said native"
    ops.repl.on_queued = lowlevel.queued   # type: ignore[attr-defined]  # the path lock goes once queued
    options = ",".join(["allow_other", "default_permissions",
                        "fsname=" + _escape(f"hamirror:{os.path.abspath(directory)}"), "subtype=hamirror"])
    lowlevel.serve(ops, root_fd, directory, options, writeback, max_background, max_threads,
                   on_init, _log_error, idle_threads)


def context() -> Callable[[], tuple[int, int, int]]:
    """The native engine's (uid, gid, pid) of the request being served."""
    lowlevel = module()
    assert lowlevel is not None
    return lowlevel.context
