"""Running system tools (ip, nft, nsenter, unshare, mount) with errors an operator can read."""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)


class LabError(Exception):
    """A lab step that failed; the message says which command and why."""


def run(cmd: list[str], check: bool = True, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run cmd, capture its output; raise LabError quoting stderr when check and it fails."""
    log.debug("run %s", " ".join(cmd))
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(cmd)}: {exc}") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise LabError(f"{' '.join(cmd)} failed ({result.returncode}): {detail}")
    return result
