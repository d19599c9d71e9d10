#!/usr/bin/env python3
"""Idle memory of one module's data path, started as the agent starts it.

    sudo .venv/bin/python scripts/bench/memory.py [--mode sync] [--idle 10] [--fresh] [--json]
        [--files N] [--big-mib N] [--root DIR]

Two "nodes" on this machine, each with the agent's spawner (``hamirror mirror spawner``, started
through ``hamirror.agent.spawn.Spawner`` as the agent does): node2's forks the receiver (``mirror
receive``), node1's runs ``mirror mount`` which detaches the mount daemon, both over loopback with
CURVE/AEAD keys. ``--fresh``: each daemon is a new interpreter instead (the agent's fallback when
the spawner cannot start one; what tests and scripts/bench/columns.py do).

Then a few writes (``--files`` files of 4 KiB and one file of ``--big-mib`` MiB, each fsynced, so
the large-message buffers have been used once), ``--idle`` seconds of nothing, and for every
process its RSS, PSS and USS from /proc/PID/smaps_rollup (USS: Private_Clean + Private_Dirty),
its threads, and per node the sum.

Which figure the 15 MB per node target is read against: the PSS of the module's processes (the
mount daemon on the primary, the receiver on the secondary). A daemon forked from the spawner
shares the interpreter and its imported modules with it, copy-on-write; PSS charges each shared
page to the processes that share it in equal parts, so the module is charged its fair half of
what it shares with the spawner (less with more modules) and the spawner's own PSS is shown apart
(one per node, for every module). RSS counts every shared page in full in every process (the
spawner's pages twice, libc and libpython once per process); USS counts only what the module's
process alone holds (what stopping it gives back). All three are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE))]

from hamirror.agent import spawn  # noqa: E402
from hamirror.link import keys  # noqa: E402
from tests.mirror_fixtures import free_port, is_fuse_mounted, wait_for  # noqa: E402

HAMIRROR = [sys.executable, "-m", "hamirror"]
TARGET_MB = 15.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="sync", choices=("sync", "async", "barrier"))
    p.add_argument("--idle", type=float, default=10.0, help="seconds of nothing before measuring")
    p.add_argument("--files", type=int, default=20, help="4 KiB files written (and fsynced) first")
    p.add_argument("--big-mib", type=int, default=16, help="size of the one large file written first")
    p.add_argument("--fresh", action="store_true", help="daemons as new interpreters, not forked by a spawner")
    p.add_argument("--root", default=None, help="work directory (default: a new one under /tmp, removed)")
    p.add_argument("--maps", type=int, default=0, metavar="N",
                   help="also print each daemon's N mappings with the most private memory (where it goes)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS, USS (MB, 10^6 bytes) and threads of ``pid``, from the kernel's own accounting."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return {"rss": fields["Rss"] / 1e6, "pss": fields["Pss"] / 1e6,
            "uss": (fields["Private_Clean"] + fields["Private_Dirty"]) / 1e6,
            "anon": fields.get("Anonymous", 0) / 1e6, "threads": threads}


class Node:
    """One node's data path for one directory: its spawner (unless --fresh) and its daemon."""

    def __init__(self, name: str, base: str, fresh: bool) -> None:
        self.name, self.base = name, os.path.join(base, name)
        self.dir, self.state = os.path.join(self.base, "data"), os.path.join(self.base, "state")
        os.makedirs(self.dir)
        os.makedirs(self.state, mode=0o700)
        self.spawner = None if fresh else spawn.Spawner(HAMIRROR)
        self.daemon: int | None = None
        self.role = ""
        self._proc: subprocess.Popen | spawn.Child | None = None

    def log(self) -> int:
        return os.open(os.path.join(self.base, f"{self.role}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def start_receiver(self, endpoint: str, keys_dir: str) -> None:
        self.role = "receiver"
        args = ["mirror", "receive", "--dir", self.dir, "--bind", endpoint, "--keys", keys_dir,
                "--state-dir", self.state]
        out = self.log()
        try:
            self._proc = (self.spawner.start(args, out, out) if self.spawner else
                          subprocess.Popen(HAMIRROR + args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                           start_new_session=True))
        finally:
            os.close(out)
        self.daemon = self._proc.pid
        wait_for(lambda: (_status(self.state) or {}).get("pid") == self.daemon, 20, what="the receiver to listen")

    def start_mount(self, peer: str, keys_dir: str, mode: str) -> None:
        self.role = "mount"
        args = ["mirror", "mount", "--dir", self.dir, "--peer", peer, "--peer-key", "test", "--keys", keys_dir,
                "--state-dir", self.state, "--mode", mode, "--timeout", "5", "--fence", "10"]
        if self.spawner:
            code, output = self.spawner.run(args, 60)      # what DataPath.mount does: it detaches a daemon
            if code != 0:
                raise RuntimeError(f"mount failed: {output}")
            self.daemon = int((_status(self.state) or {})["pid"])
        else:
            out = self.log()
            try:
                self._proc = subprocess.Popen(HAMIRROR + args + ["--foreground"], stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=out, start_new_session=True)
            finally:
                os.close(out)
            self.daemon = self._proc.pid
        wait_for(lambda: is_fuse_mounted(self.dir), 20, what="the mount")

    def processes(self) -> list[tuple[str, int]]:
        procs = []
        proc = getattr(self.spawner, "_proc", None)
        if proc is not None:
            procs.append(("spawner", proc.pid))
        if self.daemon:
            procs.append((self.role, self.daemon))
        return procs

    def stop(self) -> None:
        """Unmount / end the daemon, then the spawner; by PID, whatever state they are in."""
        if self.role == "mount" and is_fuse_mounted(self.dir):
            if subprocess.run(["fusermount3", "-u", self.dir], capture_output=True).returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", self.dir], capture_output=True)
        if self.daemon:
            _end(self.daemon, 30 if self.role == "mount" else 10)
        if isinstance(self._proc, subprocess.Popen):
            self._proc.wait(5)
        elif isinstance(self._proc, spawn.Child):
            self._proc.close()
        if self.spawner:
            self.spawner.close()


def _status(state: str) -> dict | None:
    try:
        with open(os.path.join(state, "status.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _end(pid: int, grace: float) -> None:
    deadline = time.monotonic() + grace
    if _alive(pid):
        os.kill(pid, 15)
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, 9)


def workload(directory: str, files: int, big_mib: int) -> None:
    """A few writes, each fsynced: small files, then one large file in 1 MiB writes."""
    block = os.urandom(4096)
    for i in range(files):
        with open(os.path.join(directory, f"small-{i}"), "wb") as f:
            f.write(block)
            os.fsync(f.fileno())
    chunk = os.urandom(1 << 20)
    with open(os.path.join(directory, "big"), "wb") as f:
        for _ in range(big_mib):
            f.write(chunk)
        os.fsync(f.fileno())


def largest_maps(pid: int, count: int) -> list[str]:
    """The ``count`` mappings of ``pid`` with the most private memory: kB private, kB RSS, what."""
    maps, current = [], None
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                current = {"what": parts[5] if len(parts) > 5 else "[anon]", "size": (hi - lo) // 1024,
                           "private": 0, "rss": 0}
                maps.append(current)
            elif parts[0] in ("Private_Clean:", "Private_Dirty:"):
                current["private"] += int(parts[1])
            elif parts[0] == "Rss:":
                current["rss"] = int(parts[1])
    maps.sort(key=lambda m: -m["private"])
    return [f"{m['private']:8} kB private {m['rss']:8} kB RSS  of {m['size']:8} kB  {m['what']}" for m in maps[:count]]


def measure(nodes: list[Node]) -> dict:
    rows = []
    for node in nodes:
        for role, pid in node.processes():
            rows.append({"node": node.name, "process": role, "pid": pid, **memory(pid)})
    per_node = {}
    for node in nodes:
        mine = [r for r in rows if r["node"] == node.name]
        module = [r for r in mine if r["process"] != "spawner"]
        per_node[node.name] = {f"module_{k}": sum(r[k] for r in module) for k in ("rss", "pss", "uss")}
        per_node[node.name].update({f"all_{k}": sum(r[k] for r in mine) for k in ("rss", "pss", "uss")})
    return {"processes": rows, "nodes": per_node}


def render(result: dict, args: argparse.Namespace) -> str:
    how = "new interpreters" if args.fresh else "forked by the spawner"
    lines = [f"idle memory, {how}, mode {args.mode}, "
             f"after {args.files} x 4 KiB + {args.big_mib} MiB fsynced and {args.idle:g} s idle (MB = 10^6 bytes)",
             f"{'node':6} {'process':9} {'pid':>7} {'RSS':>7} {'PSS':>7} {'USS':>7} {'anon':>7} {'threads':>7} {'idle CPU':>9}"]
    for r in result["processes"]:
        lines.append(f"{r['node']:6} {r['process']:9} {r['pid']:>7} {r['rss']:7.1f} {r['pss']:7.1f} {r['uss']:7.1f} "
                     f"{r['anon']:7.1f} {r['threads']:>7} {r['idle_cpu_ms']:5.1f} ms/s")
    lines.append("per node: the module's process | with the spawner")
    for name, n in result["nodes"].items():
        verdict = "PASS" if n["module_pss"] <= TARGET_MB else "MISS"
        lines.append(f"{name:6} module RSS {n['module_rss']:.1f} PSS {n['module_pss']:.1f} USS {n['module_uss']:.1f}"
                     f" | all RSS {n['all_rss']:.1f} PSS {n['all_pss']:.1f} USS {n['all_uss']:.1f}"
                     f"   target: module PSS <= {TARGET_MB:g} MB: {verdict}")
    lines.append("The target is read against PSS: the module's fair share of the pages it shares with the "
                 "spawner (and libraries); RSS counts those in full in each process, USS not at all.")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="hamirror-memory-")
    os.makedirs(root, exist_ok=True)
    keys_dir = os.path.join(root, "keys")
    keys.generate(keys_dir, name="test")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    node1, node2 = Node("node1", root, args.fresh), Node("node2", root, args.fresh)
    try:
        node2.start_receiver(endpoint, keys_dir)
        node1.start_mount(endpoint, keys_dir, args.mode)
        workload(node1.dir, args.files, args.big_mib)
        before = {pid: _cpu(pid) for node in (node1, node2) for _, pid in node.processes()}
        time.sleep(args.idle)
        result = measure([node1, node2])
        if args.maps:
            result["maps"] = {f"{node.name} {role} {pid}": largest_maps(pid, args.maps)
                              for node in (node1, node2) for role, pid in node.processes()}
        for row in result["processes"]:
            row["idle_cpu_ms"] = (_cpu(row["pid"]) - before[row["pid"]]) * 1000 / args.idle
    finally:
        for node in (node1, node2):
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - end the other node's processes too
                print(f"stopping {node.name}: {exc}", file=sys.stderr)
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1) if args.json else render(result, args))
    if args.maps and not args.json:
        for name, lines in result["maps"].items():
            print(name, *lines, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
