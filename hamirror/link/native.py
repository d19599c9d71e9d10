"""Loads the receiver's native apply core (``hamirror.link._native``, built from ``native/``).

The core is optional: a package installed where it could not be compiled, or a run with
``HAMIRROR_NATIVE=0``, applies in Python, and one log line says so. Both paths apply the same
operations with the same result (tests/test_native_apply.py compares them); docs/native.md.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

ENV = "HAMIRROR_NATIVE"


@functools.cache
def _module() -> ModuleType | None:
    try:
        _native = importlib.import_module("hamirror.link._native")
    except ImportError as exc:
        log.warning("native apply core not available (%s): the receiver applies in Python", exc)
        return None
    log.info("the receiver applies with the native core")
    return _native


def preload() -> None:
    """Load the extension without a word (the spawner, before it forks the receivers): the
    receiver that uses it says so itself, through :func:`core`."""
    try:
        importlib.import_module("hamirror.link._native")
    except ImportError:
        pass   # core() says why, in the receiver's log


def core(root_fd: int) -> object | None:
    """A native applier on ``root_fd``, or None when the Python path is to be used."""
    if os.environ.get(ENV, "1") == "0":
        log.info("%s=0: the receiver applies in Python", ENV)
        return None
    module = _module()
    return module.Applier(root_fd) if module is not None else None
