#!/usr/bin/env python3
"""Recovery of PostgreSQL from a dead (or hung) mount daemon on the primary, in the lab (root).

    sudo .venv/bin/python scripts/bench/mountkill.py [--runs 5] [--signal KILL|STOP] [--root DIR] [--keep]

One lab with the shipped ``postgresql`` module (``hamirror lab up --module postgresql``), a role
and a table made through the VIP. Each run waits until the pair is mirrored again (a PRIM and a
SECOND up to date), sends the signal to the primary's ``hamirror mirror mount`` process (by pid,
read from its status.json), and times until an INSERT run by psql from the ``client`` namespace
through the VIP 198.18.0.100 commits (psql exits 0; one attempt every 0.1 s, each with a 1 s connect
timeout). The figure includes detection, the application's verified stop, the remount from the
journal and PostgreSQL's crash recovery and start. A fourth repair within the module's restart
window (``[restart] max_restarts = 3`` in 300 s) is a failover to the peer instead: each line says
which it was. The lab is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE))]

from hamirror.lab.naming import NODES, VIP, LabPaths  # noqa: E402
from hamirror.lab.testing import lab_cli  # noqa: E402

MODULE = "postgresql"
PG_BIN = "/usr/lib/postgresql/15/bin"
PASSWORD = "hm-bench-password"
# Runs in the client namespace: an INSERT through the VIP every 0.1 s; prints the wall time of each commit.
LOOP = r"""
import os, subprocess, sys, time
env = dict(os.environ, PGPASSWORD=sys.argv[1], PGCONNECT_TIMEOUT="1", PGHOST=sys.argv[2], PGUSER="hm", PGDATABASE="hm")
i = 0
while True:
    i += 1
    done = subprocess.run([sys.argv[3] + "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                           f"INSERT INTO acked VALUES ('{sys.argv[4]}-{i}')"], env=env, capture_output=True)
    if done.returncode == 0:
        try:
            print("ok", time.time(), flush=True)
        except BrokenPipeError:
            break
    time.sleep(0.1)
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--signal", choices=("KILL", "STOP"), default="KILL", help="KILL: a dead daemon; STOP: a hung one")
    p.add_argument("--root", default="/tmp/lab-mountkill", help="lab root; must not hold a lab")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    return p.parse_args(argv)


def cli(root: str, *args: str, timeout: float = 300) -> str:
    result = lab_cli(root, *args, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"hamirror lab {' '.join(args)[:200]}: exit {result.returncode}: {result.stderr[-1500:]}")
    return result.stdout


def states(root: str) -> dict[str, tuple[str, bool]]:
    found = {}
    for node in NODES:
        result = lab_cli(root, "exec", node, "--", "hamirror", "status", "--json", timeout=30)
        if result.returncode == 0:
            module = next(m for m in json.loads(result.stdout)["modules"] if m["name"] == MODULE)
            found[node] = (module["state"], module["uptodate"])
    return found


def mirrored(root: str, timeout: float = 300) -> str:
    """Wait until one node is PRIM and the other SECOND up to date; the primary's name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = states(root)
        prim = [n for n, (s, _) in now.items() if s == "PRIM"]
        if prim and any(s == "SECOND" and up for s, up in now.values()):
            return prim[0]
        time.sleep(0.5)
    raise SystemExit(f"not mirrored after {timeout:.0f} s: {states(root)}")


def prepare(root: str, primary: str) -> None:
    sql = f"-c \"CREATE ROLE hm LOGIN PASSWORD '{PASSWORD}'\" -c 'CREATE DATABASE hm OWNER hm'"
    cli(root, "exec", primary, "--", "bash", "-c",
        f"runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -q -h /run/hamirror/{MODULE} -d postgres {sql}")
    cli(root, "exec", "client", "--", "env", f"PGPASSWORD={PASSWORD}", f"PGHOST={VIP}", "PGUSER=hm", "PGDATABASE=hm",
        f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "CREATE TABLE acked (k text PRIMARY KEY)")


def one_run(root: str, sig: signal.Signals, index: int) -> tuple[str, float]:
    primary = mirrored(root)
    with open(os.path.join(LabPaths(root).node_dir(primary, "state"), "modules", MODULE, "0", "status.json")) as f:
        daemon = int(json.load(f)["pid"])
    loop = subprocess.Popen([sys.executable, "-m", "hamirror", "lab", "exec", "client", "--root", root, "--",
                             sys.executable, "-c", LOOP, PASSWORD, VIP, PG_BIN, f"r{index}"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert loop.stdout is not None
        loop.stdout.readline()                  # the service answers before the fault
        killed = time.time()
        os.kill(daemon, sig)
        for line in loop.stdout:
            if line.startswith("ok ") and float(line.split()[1]) > killed:
                return primary, float(line.split()[1]) - killed
        raise SystemExit("the client loop ended")
    finally:
        loop.kill()
        loop.wait()


def main(argv=None) -> int:
    args = parse_args(argv)
    sig = signal.Signals[f"SIG{args.signal}"]
    started = time.monotonic()
    cli(args.root, "up", "--module", MODULE, "--timeout", "300", timeout=400)
    try:
        print(f"lab up in {time.monotonic() - started:.0f} s", flush=True)
        prepare(args.root, mirrored(args.root))
        figures = []
        for index in range(args.runs):
            primary, seconds = one_run(args.root, sig, index)
            figures.append(seconds)
            serving = [n for n, (s, _) in states(args.root).items() if s in ("PRIM", "ALONE")]
            how = "repaired in place" if serving == [primary] else f"served by {', '.join(serving) or 'nobody'}"
            print(f"run {index + 1}: SIG{args.signal} of {primary}'s mount daemon -> commit through the VIP "
                  f"after {seconds:.2f} s ({how})", flush=True)
        if figures:
            print(f"median {statistics.median(figures):.2f} s, min {min(figures):.2f} s, max {max(figures):.2f} s "
                  f"over {len(figures)} runs")
    finally:
        if not args.keep:
            lab_cli(args.root, "down", timeout=300)
    return 0


if __name__ == "__main__":
    sys.exit(main())
