#!/usr/bin/env python3
"""Failover and failback times of the demo module in the lab, and false failovers while idle (root).

    sudo .venv/bin/python scripts/bench/failover.py [--runs 5] [--idle-seconds 600] [--root DIR] [--json]
                                                    [--witness | --etcd]

One lab (``hamirror lab up``, default heartbeat settings: interval 0.3 s, timeout 2.0 s) and one
client writing keys through the VIP all along. Each run kills the current primary (power loss,
``lab kill``) and boots it again, so the roles alternate:
  failover  kill -> the first write acknowledged through the VIP (a request sent after the kill)
  failback  boot -> the booted node is SECOND up to date and the primary sees a SECOND peer
            (the mirror is synchronous again)
At the end every acknowledged key must be readable. Then the idle run: nothing is done for
--idle-seconds while both agents' logs and statuses are watched; every state change of either node
counts as a false failover. The lab is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE))]

from hamirror.lab import agent, kvclient, measure  # noqa: E402
from hamirror.lab.naming import NODES, LabPaths  # noqa: E402
from labbench import demo_lab  # noqa: E402

TARGET_FAILOVER = 5.0
# A state change in the agent's log: "demo: SECOND -> PRIM (peer ..."
TRANSITION = re.compile(r"\b" + measure.MODULE + r": ([A-Z]+) -> ([A-Z]+) \(")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="kill/boot cycles, medians taken (default 5; 0: none)")
    p.add_argument("--idle-seconds", type=float, default=600.0, help="idle watch after the runs (default 600; 0: none)")
    p.add_argument("--root", help="lab root (default: a new directory under /tmp); must not hold a lab")
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    quorum = p.add_mutually_exclusive_group()
    quorum.add_argument("--witness", action="store_true", help="the lab with a witness (lab up --witness)")
    quorum.add_argument("--etcd", action="store_true", help="the lab with an etcd quorum (lab up --etcd)")
    p.add_argument("--lease", type=int, default=None, metavar="SECONDS",
                   help="the quorum's lease (lab up --lease; default: the witness's or etcd's)")
    return p.parse_args(argv)


def transitions(paths: LabPaths, node: str, offset: int) -> tuple[list[str], int]:
    """State changes logged by node's agent since byte offset; and the new offset."""
    try:
        with open(paths.log_file(node, agent.AGENT), "rb") as f:
            f.seek(offset)
            text = f.read()
    except OSError:
        return [], offset
    found = [f"{a} -> {b}" for a, b in TRANSITION.findall(text.decode(errors="replace")) if a != b]
    return found, offset + len(text)


def log_size(paths: LabPaths, node: str) -> int:
    try:
        return os.path.getsize(paths.log_file(node, agent.AGENT))
    except OSError:
        return 0


def cycles(paths: LabPaths, runs: int) -> list[dict]:
    results = []
    primary, secondary = "node1", "node2"
    with kvclient.Writer(paths, "fo") as writer:
        time.sleep(2)
        for i in range(1, runs + 1):
            fail_s = measure.failover(paths, writer, primary, secondary)
            back = measure.failback(paths, primary, secondary)
            results.append({"run": i, "killed": primary, "failover_s": round(fail_s, 3),
                            "failback_s": round(back.seconds, 3), "states": back.states})
            print(f"run {i}: kill {primary}: failover {fail_s:.2f} s (to {secondary}); "
                  f"boot {primary}: failback {back.seconds:.2f} s ({' -> '.join(back.states)})", flush=True)
            primary, secondary = secondary, primary
            time.sleep(1)
        keys = writer.stop()
    lost = kvclient.missing(paths, keys)
    print(f"client: {len(keys)} writes acknowledged, {len(writer.failures)} failed requests, {len(lost)} lost",
          flush=True)
    if lost:
        raise SystemExit(f"LOST {len(lost)} acknowledged key(s): {sorted(lost)[:10]}")
    return results


def idle(paths: LabPaths, seconds: float, poll: float = 1.0) -> dict:
    """Watch a mirrored, untouched cluster; every state change is a false failover."""
    offsets = {n: log_size(paths, n) for n in NODES}
    first = {n: measure.module_status(paths, n) for n in NODES}
    seen = {n: (m or {}).get("state") for n, m in first.items()}
    print(f"idle: watching for {seconds:.0f} s from {seen}", flush=True)
    changes: list[str] = []
    polls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(poll)
        polls += 1
        for node in NODES:
            m = measure.module_status(paths, node)
            now = (m or {}).get("state")
            if now != seen[node]:
                changes.append(f"{node} {seen[node]} -> {now} (poll)")
                print(f"idle: {node} {seen[node]} -> {now}", flush=True)
                seen[node] = now
    logged = {n: transitions(paths, n, offsets[n])[0] for n in NODES}
    false = sum(len(v) for v in logged.values())
    print(f"idle: {seconds:.0f} s, {polls} polls of both nodes: {false} state change(s) in the agents' logs "
          f"{logged}, {len(changes)} seen by polling", flush=True)
    return {"seconds": seconds, "polls": polls, "logged_changes": logged, "polled_changes": changes,
            "false_failovers": false}


def main(argv=None) -> int:
    args = parse_args(argv)
    with demo_lab(args.root, "hamirror-failover-", witness=args.witness, etcd=args.etcd,
                   lease=args.lease) as paths:
        out: dict = {"root": paths.root}
        if args.runs:
            out["runs"] = cycles(paths, args.runs)
            fo = statistics.median(r["failover_s"] for r in out["runs"])
            fb = statistics.median(r["failback_s"] for r in out["runs"])
            out.update(median_failover_s=fo, median_failback_s=fb)
            print(f"median of {args.runs}: failover {fo:.2f} s "
                  f"({'OK' if fo < TARGET_FAILOVER else 'MISS'}: target < {TARGET_FAILOVER:.0f} s), "
                  f"failback {fb:.2f} s", flush=True)
        if args.idle_seconds:
            out["idle"] = idle(paths, args.idle_seconds)
    if args.json:
        print(json.dumps(out, indent=1))
    return 1 if out.get("idle", {}).get("false_failovers") else 0

if __name__ == "__main__":
    sys.exit(main())
