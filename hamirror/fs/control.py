"""A root-only unix socket through which the agent and the CLI steer a running mount.

One JSON object per line each way. The socket file is 0600 and every connection's peer must be
uid 0 (SO_PEERCRED), so only root on this host can ask a mount to go ALONE or to resync.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Callable

from hamirror.localsock import bind_private, exchange, peer_uid, read_line

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"


class ControlError(Exception):
    """The mount could not be reached or refused the request."""


class ControlServer:
    """Serves ``handler(request) -> reply`` on ``STATE_DIR/control.sock`` in a thread."""

    def __init__(self, state_dir: str, handler: Callable[[dict], dict]) -> None:
        self.path = os.path.join(state_dir, SOCKET_NAME)
        self.handler = handler
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = bind_private(self.path)
        self.sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="hamirror-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            if peer_uid(conn) != 0:
                _send(conn, {"ok": False, "error": "permission denied: root only"})
                return
            try:
                request = json.loads(read_line(conn))
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                reply = self.handler(request)
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            except Exception as exc:  # noqa: BLE001 - the caller gets the reason, the mount lives on
                log.exception("control request failed")
                reply = {"ok": False, "error": str(exc)}
            _send(conn, reply)


def _send(conn: socket.socket, reply: dict) -> None:
    conn.sendall(json.dumps(reply).encode() + b"\n")


def request(state_dir: str, payload: dict, timeout: float = 30.0) -> dict:
    """Send one request to the mount whose state directory is ``state_dir``; raise ControlError."""
    path = os.path.join(state_dir, SOCKET_NAME)
    try:
        reply = json.loads(exchange(path, payload, timeout) or b"null")
    except (OSError, ValueError) as exc:
        raise ControlError(f"no running mount answers on {path}: {exc}") from exc
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: no answer")
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "refused"))
    return reply
