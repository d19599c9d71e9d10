"""``hamirror lab demo``: a narrated tour of the demo module, with the figures measured on the way.

Build the lab, write keys through the VIP from the client without pause, kill node1 (power loss)
and time the failover, check every acknowledged key, boot node1 and time the resync back to
PRIM/SECOND, swap the roles and time the interruption, check again, tear the lab down. Any failed
check ends the tour with a DemoError (the CLI exits 1). Whatever happens, Ctrl-C or SIGTERM
included, the writer is stopped and the lab removed (unless ``keep``); a lab that was already up
at the root is refused and left alone.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hamirror.lab import control, kvclient, measure, mountns, state
from hamirror.lab.kvclient import Writer
from hamirror.lab.naming import VIP, LabPaths
from hamirror.lab.shell import LabError

WARMUP = 3.0          # seconds of writes before the first figure


class DemoError(Exception):
    """A check of the tour failed (or the lab could not do a step)."""


class Tour:
    def __init__(self, paths: LabPaths, say: Callable[[str], None]) -> None:
        self.paths = paths
        self.say_line = say
        self.step = 0
        self.figures: list[tuple[str, str]] = []

    def say(self, title: str, text: str) -> None:
        self.step += 1
        self.say_line("")
        self.say_line(textwrap.fill(f"{self.step}. {title}. {text}", width=100, subsequent_indent="   "))

    def show(self, text: str) -> None:
        self.say_line(textwrap.indent(text, "     "))

    def statuses(self, *nodes: str) -> None:
        for node in nodes:
            self.show(measure.status_text(self.paths, node))

    def check_keys(self, writer: Writer) -> int:
        keys = writer.keys()
        lost = kvclient.missing(self.paths, keys)
        self.show(f"acknowledged {len(keys)}, readable {len(keys) - len(lost)}, lost {len(lost)}")
        if lost:
            raise DemoError(f"{len(lost)} acknowledged key(s) are not readable: {', '.join(sorted(lost)[:10])}")
        return len(keys)


def run(paths: LabPaths, keep: bool = False, say: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """The whole tour; returns the summary rows. Raises DemoError when a check fails."""
    if state.load(paths) is not None:
        raise DemoError(f"a lab is already up at {paths.root}; the demo builds its own: pass another --root "
                        f"(or remove that one with 'hamirror lab down --root {paths.root}')")
    tour = Tour(paths, say)
    created_root = not os.path.exists(paths.root)
    passed = False
    with interrupts_raise():
        try:
            _tour(tour)
            passed = True
        except LabError as exc:
            text = str(exc) if keep else str(exc).split("\nthe lab is left as it is")[0]
            raise DemoError(text) from exc
        finally:
            if keep:
                say(f"\nThe lab is kept: 'hamirror lab status --root {paths.root}'; "
                    f"'hamirror lab down --root {paths.root}' removes it.")
            else:
                started = time.monotonic()
                control.down(paths)
                say(f"\nLab removed in {time.monotonic() - started:.1f} s (namespaces, mounts and processes).")
                if passed:
                    remove_files(paths, created_root)
                else:
                    say(f"The nodes' logs stay for inspection: {paths.log_file('NODE', 'agent')}.")
    return tour.figures


def remove_files(paths: LabPaths, created_root: bool) -> None:
    """The node directories under root (and root itself if it was made for the lab), once nothing is mounted."""
    if mountns.mounts_under(paths.root):
        return
    control._clear_files(paths)         # the node directories only, as 'up' clears them
    if created_root:
        try:
            os.rmdir(paths.root)
        except OSError:
            pass


def _tour(tour: Tour) -> None:
    paths = tour.paths
    started = time.monotonic()
    control.up(paths, ["demo"])
    up_s = time.monotonic() - started
    tour.say("Build the lab", f"Two nodes, a client and a switch, each in its own network namespace (198.18.0.0/24), "
             f"each node with its own mount namespace holding its own disk; both agents started. The demo module "
             f"(an HTTP key-value service on SQLite, in the replicated directory) is PRIM on node1 and SECOND, up "
             f"to date, on node2 after {up_s:.1f} s. 'hamirror status' on each node:")
    tour.statuses("node1", "node2")
    tour.figures.append(("lab up", f"{up_s:.1f} s"))

    with Writer(paths, "key") as writer:
        writing_since = time.monotonic()
        time.sleep(WARMUP)
        acked, failed = writer.counts()
        tour.say("Write through the VIP", f"A client in the 'client' namespace PUTs keys to http://{VIP}:8080/kv/KEY "
                 f"one after the other (20 ms apart), each retried until acknowledged. In {WARMUP:.0f} s: "
                 f"{acked} writes acknowledged ({writer.rate(writing_since):.0f}/s), {failed} failed requests. Every "
                 f"write is committed on node1 and on node2 before its answer.")

        failover_s = measure.failover(paths, writer, "node1", "node2")
        tour.say("Kill node1 (power loss)", f"Every process of node1 gets SIGKILL. node2 stops hearing heartbeats, "
                 f"takes over the VIP and starts the service on its copy of the data: the first write was "
                 f"acknowledged by node2 {failover_s:.2f} s after the kill ({writer.counts()[1] - failed} failed "
                 f"requests meanwhile). node2 is ALONE: primary, recording what changes for node1's return.")
        tour.statuses("node2")
        tour.figures.append(("failover (kill -> first write acked)", f"{failover_s:.2f} s"))

        tour.say("Check the data", "Every key the client saw acknowledged, before or after the kill, is read back "
                 "from node2 (GET /kv through the VIP):")
        tour.check_keys(writer)

        before = writer.counts()[0]
        progress: list[str] = []
        back = measure.failback(paths, "node1", "node2", progress=lambda r: progress.append(
            f"resync on node2: {r.get('done_bytes', 0)} / {r.get('total_bytes', 0)} bytes, "
            f"{r.get('done_files', 0)} / {r.get('total_files', 0)} files"))
        done = back.last_resync
        copied = (f"resync mode {done.get('mode')}: {done.get('done_files', 0)} path(s) visited, "
                  f"{done.get('bytes_sent', 0)} bytes of data sent, in {done.get('seconds', 0):.2f} s" if done
                  else "the resync's summary was not reported")
        tour.say("Boot node1", f"node1 reboots and its agent starts; node1 goes {' -> '.join(back.states)} while "
                 f"node2 copies back only what changed while it was away ({copied}), and the client keeps writing "
                 f"({writer.counts()[0] - before} writes acknowledged meanwhile). Mirrored again "
                 f"{back.seconds:.1f} s after the boot: node2 PRIM, node1 SECOND up to date.")
        if progress:
            tour.show("\n".join(progress if len(progress) <= 6 else progress[:5] + ["...", progress[-1]]))
        tour.statuses("node2", "node1")
        tour.figures.append(("failback (boot -> SECOND up to date)", f"{back.seconds:.1f} s"))
        if done:
            tour.figures.append(("failback data sent", f"{done.get('bytes_sent', 0)} B ({done.get('mode')})"))

        swapped = measure.swap(paths, writer, "node2", "node1")
        tour.say("Swap", f"'hamirror swap demo' on node2: it stops the service, flushes, becomes SECOND, and node1 "
                 f"becomes PRIM. It took {swapped.seconds:.1f} s; the client saw no acknowledgement for "
                 f"{swapped.interruption:.2f} s at most ({swapped.failed} failed requests), then went on writing.")
        tour.figures.append(("swap interruption", f"{swapped.interruption:.2f} s"))

        writer.stop()
        acked, failed = writer.counts()
        tour.say("Check the data again", f"The client stopped after {time.monotonic() - writing_since:.0f} s: "
                 f"{acked} writes acknowledged, {failed} requests failed (and retried) during the failover and "
                 f"the swap. Every acknowledged key is read back from node1:")
        tour.check_keys(writer)
        tour.figures.append(("keys acknowledged / lost", f"{acked} / 0"))

    tour.say("Final status", "node1 PRIM, node2 SECOND up to date, as at the start:")
    tour.statuses("node1", "node2")


def summary(figures: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in figures)
    lines = ["Summary", "-" * (width + 14)]
    lines += [f"{name.ljust(width)}  {value:>10}" for name, value in figures]
    return "\n".join(lines)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP end the tour like Ctrl-C, so the cleanup runs."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
