#!/usr/bin/env python3
"""Swap interruption of the demo module in the lab, with the timeline of each swap (root).

    sudo .venv/bin/python scripts/bench/swap.py [--runs 5] [--root DIR] [--json]

One lab (``hamirror lab up``, default heartbeat settings) and one client writing keys through the
VIP all along (``hamirror/lab/kvclient.py``: one ``PUT`` at a time, 20 ms apart). Each run types
``hamirror swap demo`` on the current primary, so the roles alternate, and measures:
  interruption  the longest time the client got no acknowledgement while the swap ran
  seconds       the command and the wait until the new PRIM sees an up-to-date SECOND
The timeline of each swap comes from both agents' logs (one line per decision and per action
done, with its duration), relative to the old primary's decision, beside the client's gap: it
says where the interruption goes. At the end every acknowledged key must be readable. The lab is
removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
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

TARGET = 1.5
# "2026-11-29 22:28:17,652 hamirror.agent.module_runner INFO demo: done RunScript(stop_prim) in 0.171 s"
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \w+ " + measure.MODULE + r": (.*)$")
STEP = re.compile(r"^done (.+) in ([\d.]+) s$")
DECISION = re.compile(r"^([A-Z]+) -> ([A-Z]+) \(.*?\): (.*)$")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="swaps, median taken (default 5)")
    p.add_argument("--root", help="lab root (default: a new directory under /tmp); must not hold a lab")
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    return p.parse_args(argv)


def log_lines(paths: LabPaths, node: str, since: float, until: float) -> list[tuple[float, str, str]]:
    """(wall time, node, text) of the module's lines in node's agent log between two wall times."""
    try:
        with open(paths.log_file(node, agent.AGENT), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if since <= when <= until:
            found.append((when, node, m.group(2)))
    return found


def timeline(paths: LabPaths, since: float, until: float) -> list[dict]:
    """Decisions and actions done on both nodes, in time order (wall seconds)."""
    rows = []
    for when, node, text in sorted(e for n in NODES for e in log_lines(paths, n, since, until)):
        step, decision = STEP.match(text), DECISION.match(text)
        if step:
            seconds = float(step.group(2))
            rows.append({"node": node, "what": step.group(1), "start": when - seconds, "end": when})
        elif decision and decision.group(1) != decision.group(2):
            rows.append({"node": node, "what": f"decides {decision.group(1)} -> {decision.group(2)}",
                         "start": when, "end": when})
    return rows


def client_gap(writer: kvclient.Writer, start: float, end: float) -> tuple[float, float]:
    """The longest stretch without an acknowledgement between two monotonic times: its bounds."""
    with writer._lock:     # noqa: SLF001 - the writer keeps its acknowledgements under this lock
        done = [a.done for a in writer.acks]
    marks = ([d for d in done if d < start][-1:] or [start]) + [d for d in done if start <= d <= end] + [end]
    return max(zip(marks, marks[1:]), key=lambda pair: pair[1] - pair[0])


def one_swap(paths: LabPaths, writer: kvclient.Writer, primary: str, secondary: str) -> dict:
    offset = time.time() - time.monotonic()          # monotonic -> wall, for the agents' log times
    began = time.monotonic()
    swapped = measure.swap(paths, writer, primary, secondary)
    gap = client_gap(writer, began, time.monotonic())
    rows = timeline(paths, began + offset - 0.5, time.monotonic() + offset)
    origin = next((r["start"] for r in rows if r["what"].startswith("decides")), began + offset)
    for row in rows:
        row["start"], row["end"] = round(row["start"] - origin, 3), round(row["end"] - origin, 3)
    return {"from": primary, "to": secondary, "interruption_s": round(swapped.interruption, 3),
            "seconds": round(swapped.seconds, 3), "failed_requests": swapped.failed,
            "client_gap": [round(gap[0] + offset - origin, 3), round(gap[1] + offset - origin, 3)],
            "timeline": rows}


def show(run: int, result: dict) -> None:
    gap = result["client_gap"]
    print(f"run {run}: swap {result['from']} -> {result['to']}: interruption {result['interruption_s']:.2f} s "
          f"({result['failed_requests']} failed requests), done in {result['seconds']:.2f} s; client gap "
          f"{gap[0]:+.3f} .. {gap[1]:+.3f} s", flush=True)
    for row in result["timeline"]:
        took = row["end"] - row["start"]
        print(f"    {row['start']:+7.3f} {row['end']:+7.3f} {took:6.3f}  {row['node']}  {row['what']}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    with demo_lab(args.root, "hamirror-swap-") as paths:
        out: dict = {"root": paths.root, "runs": []}
        primary, secondary = "node1", "node2"
        with kvclient.Writer(paths, "sw") as writer:
            time.sleep(2)
            for run in range(1, args.runs + 1):
                result = one_swap(paths, writer, primary, secondary)
                out["runs"].append(result)
                show(run, result)
                primary, secondary = secondary, primary
                time.sleep(1)
            keys = writer.stop()
        lost = kvclient.missing(paths, keys)
        out.update(acknowledged=len(keys), lost=len(lost))
        print(f"client: {len(keys)} writes acknowledged, {len(writer.failures)} failed requests, {len(lost)} lost",
              flush=True)
        if lost:
            raise SystemExit(f"LOST {len(lost)} acknowledged key(s): {sorted(lost)[:10]}")
        if out["runs"]:
            median = statistics.median(r["interruption_s"] for r in out["runs"])
            out["median_interruption_s"] = median
            print(f"median of {len(out['runs'])}: swap interruption {median:.2f} s "
                  f"({'OK' if median <= TARGET else 'MISS'}: target <= {TARGET} s)", flush=True)
    if args.json:
        print(json.dumps(out, indent=1))
    return 0

if __name__ == "__main__":
    sys.exit(main())
