"""A client of the demo module in the lab's ``client`` host: a background writer through the VIP and GETs.

The writer runs in the client namespace and PUTs keys ``PREFIX0``, ``PREFIX1``, ... to
``http://VIP:8080/kv/KEY`` (value = key), retrying each key until it is acknowledged, until its
stdin closes. It reports every request on stdout, flushed, with CLOCK_MONOTONIC times (the same
clock as ``time.monotonic()`` here, the lab has no time namespace):

    ok KEY T_SENT T_DONE        a 200: the key is committed on the service's side
    fail T_SENT T_DONE REASON   anything else (refused, timeout, non-200)

so the caller knows exactly which keys it saw acknowledged, and when the service answered.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from hamirror.lab import process
from hamirror.lab.naming import CLIENT, VIP, LabPaths
from hamirror.lab.shell import LabError

PORT = 8080

WRITER = r"""
import http.client, sys, threading, time
vip, port, prefix, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
i = 0
while not stop.is_set():
    key, t0 = f"{prefix}{i}", time.monotonic()
    try:
        c = http.client.HTTPConnection(vip, port, timeout=0.5)    # short connect: a moving VIP
        c.connect(); c.sock.settimeout(5.0)                          # a commit may wait for a resync
        c.request("PUT", "/kv/" + key, body=key.encode())
        status = c.getresponse().status
        c.close()
        if status == 200:
            print("ok", key, t0, time.monotonic(), flush=True); i += 1
        else:
            print("fail", t0, time.monotonic(), f"http-{status}", flush=True)
    except OSError as exc:
        print("fail", t0, time.monotonic(), type(exc).__name__, flush=True)
        time.sleep(0.05)
    time.sleep(pause)
"""

GET = r"""
import sys, http.client
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
c.request("GET", sys.argv[3]); r = c.getresponse(); sys.stdout.write(f"{r.status}\n" + r.read().decode())
"""


# Reads keys (one a line) on stdin and GETs each, on 16 keep-alive connections in parallel (the
# server's two writes per answer cost a delayed ACK, ~40 ms, per request); prints
# "missing KEY STATUS", "wrong KEY" (the value is not the key, as the writer wrote it) or "error KEY"
# (no answer, or none tried once the time budget, argv[3] seconds, is spent).
READBACK = r"""
import http.client, sys, threading, time
vip, port, end = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
keys, out, lock = sys.stdin.read().split(), [], threading.Lock()
def check(chunk):
    c = None
    for key in chunk:
        line = f"error {key}"
        for attempt in range(3 if time.monotonic() < end else 0):
            try:
                c = c or http.client.HTTPConnection(vip, port, timeout=5)
                c.request("GET", "/kv/" + key); r = c.getresponse(); body = r.read()
            except (OSError, http.client.HTTPException):
                c = None
                continue
            line = f"missing {key} {r.status}" if r.status != 200 else (f"wrong {key}" if body != key.encode() else None)
            break
        if line:
            with lock: out.append(line)
threads = [threading.Thread(target=check, args=(keys[i::16],)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(out))
"""


@dataclass(frozen=True)
class Ack:
    key: str
    sent: float
    done: float


@dataclass(frozen=True)
class Failure:
    sent: float
    done: float
    reason: str


def get(paths: LabPaths, path: str, timeout: float = 30.0) -> tuple[int, str]:
    """``GET path`` on the service through the VIP, from the client: (status, body)."""
    result = process.exec_in(paths, CLIENT, [sys.executable, "-c", GET, VIP, str(PORT), path],
                             capture=True, timeout=timeout)
    code, _, body = result.stdout.partition("\n")
    if result.returncode != 0 or not code.isdigit():
        raise LabError(f"GET {path} through {VIP}:{PORT} failed: {result.stderr.strip()[-300:]}")
    return int(code), body


def missing(paths: LabPaths, keys: list[str]) -> set[str]:
    """The keys of the list that the service does not list (``GET /kv``)."""
    code, body = get(paths, "/kv")
    if code != 200:
        raise LabError(f"GET /kv answered {code}")
    return set(keys) - set(body.split())


def unreadable(paths: LabPaths, keys: list[str], budget: float = 300.0) -> dict[str, str]:
    """The keys that ``GET /kv/KEY`` through the VIP does not return with the writer's value: key -> why.

    After budget seconds the keys not read yet count as unreadable ("error")."""
    result = process.exec_in(paths, CLIENT, [sys.executable, "-c", READBACK, VIP, str(PORT), str(budget)],
                             capture=True, timeout=budget + 60, input="".join(k + "\n" for k in keys))
    if result.returncode != 0:
        raise LabError(f"reading keys back through {VIP}:{PORT} failed: {result.stderr.strip()[-300:]}")
    return {parts[1]: " ".join([parts[0], *parts[2:]]) for parts in map(str.split, result.stdout.splitlines())
            if len(parts) >= 2}


class Writer:
    """The writer in the client host, its reports collected by a thread. Use as a context manager."""

    def __init__(self, paths: LabPaths, prefix: str, pause: float = 0.02, cmd: list[str] | None = None) -> None:
        """``cmd``: another writer in the client host reporting the same lines (``appclient``)."""
        cmd = cmd or [sys.executable, "-c", WRITER, VIP, str(PORT), prefix, str(pause)]
        self.acks: list[Ack] = []
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.proc = subprocess.Popen(process.enter_command(paths, CLIENT, cmd), env=process.host_env(paths, CLIENT),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            with self._changed:
                if len(parts) == 4 and parts[0] == "ok":
                    self.acks.append(Ack(parts[1], float(parts[2]), float(parts[3])))
                elif len(parts) >= 4 and parts[0] == "fail":
                    self.failures.append(Failure(float(parts[1]), float(parts[2]), " ".join(parts[3:])))
                self._changed.notify_all()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def keys(self) -> list[str]:
        with self._lock:
            return [a.key for a in self.acks]

    def counts(self) -> tuple[int, int]:
        """(acknowledged writes, failed requests) so far."""
        with self._lock:
            return len(self.acks), len(self.failures)

    def rate(self, since: float) -> float:
        """Acknowledged writes per second since the monotonic time ``since``."""
        with self._lock:
            done = [a.done for a in self.acks if a.done >= since]
        return len(done) / max(time.monotonic() - since, 1e-6)

    def first_ack_after(self, t: float, timeout: float) -> Ack:
        """The first acknowledgement of a request sent at or after t (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((a for a in self.acks if a.sent >= t), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise LabError(f"no write acknowledged through {VIP} within {timeout:.0f} s "
                                   f"({len(self.failures)} failed requests so far)")
                self._changed.wait(min(left, 0.5))

    def largest_gap(self, start: float, end: float) -> float:
        """The longest time without an acknowledgement between start and end (the interruption seen)."""
        with self._lock:
            done = [a.done for a in self.acks]
        before = [d for d in done if d < start]
        marks = ([before[-1]] if before else [start]) + [d for d in done if start <= d <= end] + [end]
        return max(b - a for a, b in zip(marks, marks[1:]))

    def failed_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for f in self.failures if start <= f.done <= end)

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop after the request in flight; the keys acknowledged, in order."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._reader.join(timeout=5)
        return self.keys()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
