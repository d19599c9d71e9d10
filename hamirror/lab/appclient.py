"""Clients of any module in the lab's ``client`` host: a writer of acknowledged commits that runs a
command-line client (psql, mariadb, curl) once per key, and a reader that GETs files back.

The writer reports like the demo's (``kvclient``): ``ok KEY T_SENT T_DONE`` once the command
exited 0 (the server acknowledged: a committed INSERT, a stored PUT), ``fail T_SENT T_DONE REASON``
otherwise; a key is retried until acknowledged, so the command must be idempotent (``INSERT ...
ON CONFLICT DO NOTHING``, ``INSERT IGNORE``, a PUT).
"""

from __future__ import annotations

import sys

from hamirror.lab import kvclient, process
from hamirror.lab.naming import CLIENT, LabPaths
from hamirror.lab.shell import LabError

KEY = "{key}"     # replaced by the key in each argument of the command

WRITER = r"""
import subprocess, sys, threading, time
prefix, pause, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
i = 0
while not stop.is_set():
    key, t0 = f"{prefix}{i}", time.monotonic()
    try:
        done = subprocess.run([a.replace("{key}", key) for a in cmd], capture_output=True, timeout=15)
        why = None if done.returncode == 0 else f"exit-{done.returncode}"
    except subprocess.TimeoutExpired:
        why = "timeout"
    if why is None:
        print("ok", key, t0, time.monotonic(), flush=True); i += 1
    else:
        print("fail", t0, time.monotonic(), why, flush=True); time.sleep(0.2)
    time.sleep(pause)
"""

# Reads URLs' keys (one a line) on stdin; GETs BASE + KEY on one keep-alive connection; prints the
# keys whose body is the key itself (what the writer PUT).
READBACK = r"""
import http.client, sys
host, port, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = None
for key in sys.stdin.read().split():
    for attempt in range(3):
        try:
            c = c or http.client.HTTPConnection(host, port, timeout=10)
            c.request("GET", base + key); r = c.getresponse(); body = r.read()
            break
        except (OSError, http.client.HTTPException):
            c, body = None, None
    if body == key.encode():
        print(key)
"""


class CommandWriter(kvclient.Writer):
    """``command`` (with ``{key}`` in its arguments) run in the client host for key PREFIX0, PREFIX1..."""

    def __init__(self, paths: LabPaths, prefix: str, command: list[str], pause: float = 0.02) -> None:
        super().__init__(paths, prefix, cmd=[sys.executable, "-c", WRITER, prefix, str(pause), *command])


def run(paths: LabPaths, command: list[str], timeout: float = 120.0, input: str | None = None) -> str:
    """Output of command run in the client host; LabError with its stderr if it fails."""
    result = process.exec_in(paths, CLIENT, command, capture=True, timeout=timeout, input=input)
    if result.returncode != 0:
        raise LabError(f"{' '.join(command)[:200]} exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return result.stdout


def readable(paths: LabPaths, host: str, port: int, base: str, keys: list[str]) -> set[str]:
    """The keys whose file ``http://HOST:PORT/BASE/KEY`` holds the key itself, read from the client."""
    out = run(paths, [sys.executable, "-c", READBACK, host, str(port), base], timeout=300,
              input="".join(k + "\n" for k in keys))
    return set(out.split())
