#!/usr/bin/env python3
"""Many modules on one pair (issue 18 item 6): time to ready, the agents' CPU and memory, and the
takeover of every module at once after a power-kill of the primary (root).

    sudo .venv/bin/python scripts/bench/many_modules.py [--modules 50] [--etcd | --witness] [--lease S]
                                                        [--idle-seconds 30] [--root DIR] [--json FILE]

N copies of the demo module (``demo-01`` ...: their own directory ``/srv/hamirror-demo-NN``,
replication port 7500 + N, VIP 198.18.0.(100 + N), the key-value service on the VIP's port 8080)
in one lab with a quorum (etcd by default, as the issue asks). Measured:
  ready     from both agents' start to every module PRIM on node1 and SECOND up to date on node2;
  idle      each node's agent, mounts, receivers and servers: CPU seconds used during --idle-seconds
            and resident memory (RSS, summed) at the end; the agent's own share apart;
  takeover  power-kill of node1 (every process, SIGKILL) to every module ALONE on node2, and to
            a key written and acknowledged through each module's VIP.
The lab is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE))]

import psutil  # noqa: E402

from hamirror.agent.control import SOCKET_NAME, AgentNotRunning, request  # noqa: E402
from hamirror.lab import agent, control, nodeconfig, process, state  # noqa: E402
from hamirror.lab.demo import interrupts_raise, remove_files  # noqa: E402
from hamirror.lab.naming import CLIENT, LabPaths, resolve_root  # noqa: E402
from hamirror.lab.shell import LabError  # noqa: E402

from cpuwatch import CpuWatch  # noqa: E402

DEMO = os.path.join(nodeconfig.REPO_MODULES, "demo")
FIRST_VIP, FIRST_PORT = 100, 7500


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", type=int, default=50, help="modules on the pair (default 50, at most 100)")
    quorum = p.add_mutually_exclusive_group()
    quorum.add_argument("--etcd", action="store_true", default=True, help="etcd quorum (default)")
    quorum.add_argument("--witness", action="store_true", help="witness quorum instead of etcd")
    p.add_argument("--lease", type=int, default=None, help="the quorum's lease, seconds (lab up --lease)")
    p.add_argument("--idle-seconds", type=float, default=30.0, help="idle window for CPU (default 30)")
    p.add_argument("--root", default=None, help="lab root (default: a new directory under /tmp)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--cpu", action="store_true",
                   help="sample every process's CPU (scripts/bench/cpuwatch.py): where it goes in each phase")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="py-spy (pip install py-spy) the agents: idle window, both nodes; takeover, node2 (raw stacks in DIR)")
    p.add_argument("--logs", default=None, metavar="DIR", help="copy the agents' logs to DIR before the lab goes")
    args = p.parse_args(argv)
    if not 1 <= args.modules <= 100:
        p.error("--modules: 1 to 100")
    return args


def make_modules(count: int, where: str) -> list[str]:
    """``count`` folders, each the demo module with its own name, directory, port and VIP."""
    folders = []
    with open(os.path.join(DEMO, "module.toml"), encoding="utf-8") as f:
        template = f.read()
    for i in range(1, count + 1):
        name = f"demo-{i:02d}"
        folder = os.path.join(where, name)
        shutil.copytree(DEMO, folder)
        text = template.replace('name = "demo"', f'name = "{name}"')
        text = text.replace('path = "/srv/hamirror-demo"', f'path = "/srv/hamirror-{name}"')
        text = re.sub(r"replication_port = \d+", f"replication_port = {FIRST_PORT + i}", text)
        text = text.replace('address = "198.18.0.100/24"', f'address = "198.18.0.{FIRST_VIP + i}/24"')
        with open(os.path.join(folder, "module.toml"), "w", encoding="utf-8") as f:
            f.write(text)
        folders.append(folder)
    return folders


def node_processes(paths: LabPaths, node: str) -> tuple[list[psutil.Process], psutil.Process | None]:
    """Every live process of node, and its agent among them."""
    recorded = control.require(paths)
    found, agent_proc = [], None
    for pid in process.members(paths, node, recorded.started_in(node)):
        try:
            proc = psutil.Process(pid)
            found.append(proc)
            if "agent" in proc.cmdline() and agent_proc is None:
                agent_proc = proc
        except psutil.Error:
            continue
    return found, agent_proc


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def rss_mib(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def socket_status(paths: LabPaths, node: str, timeout: float = 20.0) -> dict | None:
    """The node's status document, asked on its agent's control socket from here (the node's /run
    is a folder of the lab root): a poll starts no process. ``lab exec`` + ``hamirror status`` cost
    ~0.15 s of CPU a poll, 6-8 of the ~40 CPU-seconds of a 50-module start or takeover (measured)."""
    try:
        answer = request(os.path.join(paths.node_dir(node, "run"), SOCKET_NAME), {"cmd": "status"}, timeout)
    except (AgentNotRunning, OSError, ValueError):
        return None
    data = answer.get("status") if isinstance(answer, dict) and answer.get("ok") else None
    return data if isinstance(data, dict) else None


def profile(where: str | None, name: str, proc: psutil.Process | None, seconds: float):
    """py-spy on one agent for ``seconds`` (sampled without pausing it), raw stacks to WHERE/NAME.txt."""
    if not where or proc is None:
        return None
    os.makedirs(where, exist_ok=True)
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(proc.pid), "--duration", str(int(seconds)), "--rate", "50",
                             "--nonblocking", "--format", "raw", "--output", os.path.join(where, f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def states(paths: LabPaths, node: str) -> dict[str, str]:
    status = socket_status(paths, node) or {}
    return {m["name"]: m["state"] for m in status.get("modules", [])}


def write_through(paths: LabPaths, count: int, deadline: float) -> float | None:
    """Seconds until a PUT through every VIP was acknowledged (one client process), None at the deadline."""
    script = ("import http.client, sys, time\n"
              "pending = set(range(1, int(sys.argv[1]) + 1)); deadline = float(sys.argv[2])\n"
              "while pending and time.time() < deadline:\n"
              "    for i in sorted(pending):\n"
              "        try:\n"
              "            c = http.client.HTTPConnection(f'198.18.0.{100 + i}', 8080, timeout=1)\n"
              "            c.request('PUT', '/kv/after-kill', body=b'x'); r = c.getresponse(); r.read()\n"
              "            if r.status == 200: pending.discard(i)\n"
              "        except OSError:\n"
              "            pass\n"
              "    time.sleep(0.05)\n"
              "print(len(pending))\n")
    result = process.exec_in(paths, CLIENT, [sys.executable, "-c", script, str(count), str(deadline)],
                             capture=True, timeout=max(10.0, deadline - time.time() + 10))
    return None if result.stdout.strip() != "0" else time.time()


def run(args: argparse.Namespace, paths: LabPaths, folders: list[str], watch: CpuWatch | None) -> dict:
    names = [f"demo-{i:02d}" for i in range(1, args.modules + 1)]
    control.up(paths, folders, witness=args.witness, etcd=not args.witness, lease=args.lease,
               start_agents=False, timeout=120.0)
    recorded = control.require(paths)
    mark = watch.mark if watch else (lambda name: None)
    mark("start")
    started_at = time.monotonic()
    agents = []
    for node in ("node1", "node2"):
        agents.append(agent.start(paths, node))
        recorded.processes.append(agents[-1])
    state.save(paths, recorded)
    agent.wait_ready(paths, agents, folders, timeout=600.0, status=socket_status, poll=0.2)
    ready = time.monotonic() - started_at
    mark("ready")
    print(f"{args.modules} modules: PRIM on node1, SECOND on node2 {ready:.1f} s after the agents started", flush=True)

    before = {n: node_processes(paths, n) for n in ("node1", "node2")}
    cpu0 = {n: (cpu_seconds(p), cpu_seconds([a] if a else [])) for n, (p, a) in before.items()}
    mark("idle")
    spies = [profile(args.profile, f"idle-{n}", a, args.idle_seconds) for n, (_, a) in before.items()]
    time.sleep(args.idle_seconds)
    for spy in spies:
        if spy:
            spy.wait()
    mark("idle-end")
    idle = {}
    for node, (procs, agent_proc) in before.items():
        total, own = cpu_seconds(procs) - cpu0[node][0], cpu_seconds([agent_proc] if agent_proc else []) - cpu0[node][1]
        idle[node] = {"processes": len(procs), "cpu_percent": round(100 * total / args.idle_seconds, 1),
                      "agent_cpu_percent": round(100 * own / args.idle_seconds, 1),
                      "rss_mib": round(rss_mib(procs), 1),
                      "agent_rss_mib": round(rss_mib([agent_proc]) if agent_proc else 0.0, 1)}
        print(f"{node} idle: {idle[node]}", flush=True)

    mark("kill")
    spy = profile(args.profile, "takeover-node2", before["node2"][1], 25)
    killed_at, wall = time.monotonic(), time.time()
    control.kill(paths, "node1")
    alone_after = None
    while time.monotonic() - killed_at < 120:
        now = states(paths, "node2")
        if len(now) == len(names) and all(s in ("ALONE", "PRIM") for s in now.values()):
            alone_after = time.monotonic() - killed_at
            mark("alone")
            break
        time.sleep(0.2)
    acked = write_through(paths, args.modules, wall + 120)
    acked_after = None if acked is None else acked - wall
    mark("acknowledged")
    if spy:
        spy.wait()
    print(f"power-kill of node1: every module ALONE on node2 after "
          f"{'-' if alone_after is None else f'{alone_after:.2f}'} s; a write acknowledged through every VIP after "
          f"{'-' if acked_after is None else f'{acked_after:.2f}'} s", flush=True)
    cpu = {}
    if watch:
        for first, second in (("start", "ready"), ("idle", "idle-end"), ("kill", "alone"), ("kill", "acknowledged")):
            if first in watch.marks and second in watch.marks:
                cpu[f"{first}..{second}"] = phase = watch.between(first, second)
                print(f"cpu {first}..{second}: {json.dumps(phase)}", flush=True)
    return {"modules": args.modules, "quorum": "witness" if args.witness else "etcd", "lease": args.lease, "cpu": cpu,
            "ready_s": round(ready, 2), "idle": idle, "idle_seconds": args.idle_seconds,
            "takeover_all_alone_s": None if alone_after is None else round(alone_after, 2),
            "takeover_all_acknowledged_s": None if acked_after is None else round(acked_after, 2)}


def keep_logs(paths: LabPaths, where: str) -> None:
    """The agents' logs (every action with its duration, every decision) for a timeline."""
    os.makedirs(where, exist_ok=True)
    for node in ("node1", "node2"):
        with contextlib.suppress(OSError):
            shutil.copy(paths.log_file(node, agent.AGENT), os.path.join(where, f"{node}-agent.log"))


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (the lab uses network and mount namespaces)")
    created = args.root is None or not os.path.exists(args.root)
    paths = LabPaths(resolve_root(args.root or tempfile.mkdtemp(prefix="hamirror-many-", dir="/tmp")))
    folders_dir = tempfile.mkdtemp(prefix="hamirror-many-modules-")
    finished = False
    try:
        with interrupts_raise():
            watch = CpuWatch(0.2).start() if args.cpu else None
            try:
                results = run(args, paths, make_modules(args.modules, folders_dir), watch)
                finished = True
            finally:
                if watch:
                    watch.stop()
                if args.logs:
                    keep_logs(paths, args.logs)
                control.down(paths)
                if finished:
                    remove_files(paths, created)
    except LabError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(folders_dir, ignore_errors=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
