"""Clients of any module in the lab's ``client`` host: a writer of acknowledged commits that runs a
command-line client (psql, mariadb, curl) once per key, a writer that keeps one client session open
and feeds it transactions (:class:`SessionWriter`), and a reader that GETs files back.

The writer reports like the demo's (``kvclient``): ``ok KEY T_SENT T_DONE`` once the command
exited 0 (the server acknowledged: a committed INSERT, a stored PUT), ``fail T_SENT T_DONE REASON``
otherwise; a key is retried until acknowledged, so the command must be idempotent (``INSERT ...
ON CONFLICT DO NOTHING``, ``INSERT IGNORE``, a PUT).
"""

from __future__ import annotations

import json
import os
import subprocess
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


# One long-lived command-line client (psql, mariadb) per connection, fed on stdin: each transaction
# is followed by an echo of "ok KEY" that the client prints only if the COMMIT before it succeeded
# (the client runs with stop-on-error, so a failed statement ends it instead). No echo within the
# timeout, or the client gone: the transaction's outcome is unknown, it is not acknowledged, the
# client is killed and started again. Keys are never reused: a transaction of unknown outcome may
# have committed. argv[1] is JSON: cmd, tx and echo (templates with {key} {src} {dst} {amount}),
# prefix, pause, accounts (transfers pick two of 1..accounts), seed, timeout.
SESSION = r"""
import json, queue, random, subprocess, sys, threading, time
cfg = json.loads(sys.argv[1])
rng, stop = random.Random(cfg["seed"]), threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
proc = lines = None
last_err = []
def pump(stream, q):
    for line in stream:
        q.put(line.strip())
    q.put(None)
def drain(stream):
    for line in stream:
        last_err[:] = [line.strip()[:120]]
i = 0
while not stop.is_set():
    if proc is None:
        proc = subprocess.Popen(cfg["cmd"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, bufsize=1)
        lines = queue.Queue()
        threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
        threading.Thread(target=drain, args=(proc.stderr,), daemon=True).start()
    key, (src, dst), t0 = f"{cfg['prefix']}{i}", rng.sample(range(1, cfg["accounts"] + 1), 2), time.monotonic()
    i += 1
    values = dict(key=key, src=src, dst=dst, amount=rng.randint(1, 100))
    why = None
    try:
        proc.stdin.write(cfg["tx"].format(**values) + "\n" + cfg["echo"].format(**values) + "\n")
        proc.stdin.flush()
        while True:
            line = lines.get(timeout=cfg["timeout"])
            if line is None or line == f"ok {key}":
                break
    except queue.Empty:
        why = "timeout"
    except OSError:
        line, why = None, "client-gone"
    if why is None and line is None:
        why = "closed:" + "_".join((last_err[0] if last_err else "no-message").split())
    if why is None:
        print("ok", key, t0, time.monotonic(), flush=True)
        time.sleep(cfg["pause"])
        continue
    print("fail", t0, time.monotonic(), why[:100], flush=True)
    proc.kill(); proc.wait(); proc = None
    time.sleep(0.2)
if proc is not None:
    proc.kill(); proc.wait()
"""


# Seconds a transaction may take before the session is given up and opened again (its outcome
# unknown, not acknowledged). An application's driver gives up on a silent server too (TCP
# keepalive, a statement timeout); 15 s here made every recovery behind a frozen primary read as
# 15 s (campaign 1801: freeze median 15.34 s, max 15.50), whatever the cluster did.
SESSION_TIMEOUT = 4.0


class SessionWriter(kvclient.Writer):
    """Transfers through one persistent client session (reconnected after any failure), acknowledged
    when the client echoes after COMMIT; reports like :class:`kvclient.Writer`."""

    def __init__(self, paths: LabPaths, prefix: str, command: list[str], tx: str, echo: str, accounts: int,
                 seed: int, pause: float = 0.01, timeout: float = SESSION_TIMEOUT) -> None:
        cfg = {"cmd": command, "tx": tx, "echo": echo, "prefix": prefix, "pause": pause, "accounts": accounts,
               "seed": seed, "timeout": timeout}
        super().__init__(paths, prefix, cmd=[sys.executable, "-c", SESSION, json.dumps(cfg)])


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


def feed(paths: LabPaths, host: str, command: list[str], text: str, timeout: float = 120.0) -> str:
    """Output of command run in host with text on its stdin (an SQL client's script); LabError with
    its stderr if it fails or gives no answer in time."""
    try:
        result = process.exec_in(paths, host, command, capture=True, timeout=timeout, input=text)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{os.path.basename(command[0])} on {host} gave no answer in {timeout:.0f} s") from exc
    if result.returncode != 0:
        raise LabError(f"{os.path.basename(command[0])} on {host} exited {result.returncode}: "
                       f"{result.stderr.strip()[-400:]}")
    return result.stdout


def readable(paths: LabPaths, host: str, port: int, base: str, keys: list[str]) -> set[str]:
    """The keys whose file ``http://HOST:PORT/BASE/KEY`` holds the key itself, read from the client."""
    out = run(paths, [sys.executable, "-c", READBACK, host, str(port), base], timeout=300,
              input="".join(k + "\n" for k in keys))
    return set(out.split())
