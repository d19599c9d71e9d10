"""Replacing a small file so that a crash or a power loss leaves the old one or the new one,
never a mix or nothing: written to a temporary file, fsynced, renamed over, the directory fsynced."""

from __future__ import annotations

import json
import os


def write_json(path: str, doc: object, mode: int = 0o600, dir_mode: int = 0o700) -> None:
    """Durably replace ``path`` with ``doc`` as JSON (its folder is made if missing)."""
    write_text(path, json.dumps(doc), mode, dir_mode)


def write_text(path: str, text: str, mode: int = 0o600, dir_mode: int = 0o700) -> None:
    """Durably replace ``path`` with ``text`` (its folder is made if missing)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=dir_mode, exist_ok=True)
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
