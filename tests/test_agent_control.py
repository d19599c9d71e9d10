"""Control socket (JSON lines, 0600, uid check), the operator CLI's errors, generation ids on the wire,
and the persisted record."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from hamirror.agent import control
from hamirror.agent.journal_info import WIRE_LIMIT, from_wire, to_wire
from hamirror.agent.persist import ModuleRecord, Store
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import SwapPhase
from tests.agent_fakes import history
from hamirror.agent import status as _status  # noqa: F401 - imported before giving root up (see below)
from hamirror.cli.main import build_parser, main
from tests.conftest import run_cli
from tests.configfiles import write_cluster, write_module


def test_control_socket_round_trip_and_permissions(tmp_path):
    path = str(tmp_path / "run" / "control.sock")

    async def handler(request: dict) -> dict:
        return {"ok": True, "echo": request}

    async def scenario():
        server = control.ControlServer(path, handler, allowed_uid=os.geteuid())
        await server.start()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        answer = await asyncio.to_thread(control.request, path, {"cmd": "status"})
        assert answer == {"ok": True, "echo": {"cmd": "status"}}
        server.allowed_uid = os.geteuid() + 1           # someone else: refused
        answer = await asyncio.to_thread(control.request, path, {"cmd": "status"})
        assert answer["ok"] is False and "permission denied" in answer["error"]
        await server.close()
        assert not os.path.exists(path)

    asyncio.run(scenario())


def test_cli_says_the_agent_is_not_running(tmp_path):
    config = write_cluster(tmp_path)
    write_module(tmp_path)
    for args in (["status"], ["stop", "app"], ["status", "--json"]):
        result = run_cli(*args, "-c", config)
        assert result.returncode == 4
        assert "agent not running (no control socket at" in result.stderr and str(tmp_path / "run") in result.stderr


def test_a_user_other_than_root_is_told_to_run_status_as_root(capsys):
    """Finding: a non-root ``hamirror status`` said only "[Errno 13] Permission denied"."""
    if os.geteuid() != 0:
        return                                              # needs root to become another user
    root = Path(tempfile.mkdtemp(prefix="hamirror-nonroot-"))
    listener = socket.socket(socket.AF_UNIX)
    try:
        root.chmod(0o755)
        path = write_cluster(root)
        (root / "run").mkdir(mode=0o755)
        sock = str(root / "run" / "control.sock")
        listener.bind(sock)
        os.chmod(sock, 0o600)
        listener.listen(1)
        build_parser()                      # imports every command module: nobody cannot read /root's stdlib
        os.seteuid(65534)
        try:
            code = main(["status", "-c", path])
        finally:
            os.seteuid(0)
    finally:
        listener.close()
        shutil.rmtree(root)
    assert code == 4
    assert capsys.readouterr().err == (f"hamirror: control socket {sock}: permission denied; the agent's control "
                                       f"socket is root only: run this command as root (or with sudo)\n")


def test_generation_ids_on_the_wire():
    assert to_wire(history()) == "-" and from_wire("-").current is None
    ids = tuple(f"{i:016x}" for i in range(32))
    wire = to_wire(history(*ids))
    assert len(wire) <= WIRE_LIMIT and wire.startswith(ids[0] + "," + ids[1])
    back = from_wire(wire)
    assert back.ids() == list(ids[: len(back.ids())]) and len(back.ids()) == 7


def test_record_survives_and_defaults_to_started(tmp_path):
    store = Store(str(tmp_path / "m"))
    assert store.load().state is NodeState.WAIT            # never seen: started
    store.save(ModuleRecord(NodeState.STOP, SwapPhase.HANDOVER, (1.0,)))
    loaded = store.load()
    assert (loaded.state, loaded.swap, loaded.restarts) == (NodeState.STOP, SwapPhase.HANDOVER, (1.0,))
    assert loaded.updated > 0 and os.listdir(os.path.dirname(store.path)) == [os.path.basename(store.path)]
