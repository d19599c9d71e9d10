"""File modes without a process-wide umask change: the mount's own state files, the control
sockets, and the modes of what the application creates through the mount."""

from __future__ import annotations

import asyncio
import os
import stat

from hamirror.agent import control as agent_control
from hamirror.fs import control as fs_control
from tests.conftest import needs_root


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_control_sockets_are_0600_and_the_umask_is_never_touched(tmp_path, monkeypatch):
    """Finding: umask(0o177) around bind, while module threads ran, made their directories 0600."""
    calls: list[int] = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real(mask))
    mount_server = fs_control.ControlServer(str(tmp_path), lambda request: {"ok": True})

    async def agent_socket() -> int:
        server = agent_control.ControlServer(str(tmp_path / "run" / "control.sock"), None)   # type: ignore[arg-type]
        await server.start()
        try:
            return mode_of(server.path)
        finally:
            await server.close()

    try:
        assert mode_of(mount_server.path) == 0o600
        assert asyncio.run(agent_socket()) == 0o600
    finally:
        mount_server.close()
    assert calls == []


@needs_root
def test_state_files_keep_the_umask_and_created_files_the_callers_mode(mirror_pair):
    """Finding: the mount ran with umask(0), so its status.json was 0666. The application's own
    modes must not change: the kernel applies the caller's umask, the daemon's must not add to it."""
    assert mode_of(os.path.join(mirror_pair.state, "status.json")) == 0o644
    p = mirror_pair.primary
    old = os.umask(0)
    try:
        os.close(os.open(f"{p}/open", os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(f"{p}/dir", 0o777)
        os.mkfifo(f"{p}/fifo", 0o666)
        os.umask(0o027)
        os.close(os.open(f"{p}/private", os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(f"{p}/dir/sub", 0o777)
    finally:
        os.umask(old)
    expected = {"open": 0o666, "dir": 0o777, "fifo": 0o666, "private": 0o640, "dir/sub": 0o750}
    assert {name: mode_of(f"{p}/{name}") for name in expected} == expected
