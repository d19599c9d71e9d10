#!/usr/bin/env python3
"""Randomized fault campaign against the lab (root): no acknowledged write lost, never two servers,
no operator needed, both copies byte-identical.

    sudo .venv/bin/python scripts/chaos.py --seed 7 --trials 30 --faults-per-trial 6 --json chaos.json
    sudo .venv/bin/python scripts/chaos.py --seed 7 --trials 15 --faults-per-trial 6 --witness --partitions
    sudo .venv/bin/python scripts/chaos.py --seed 1 --trials 1 --plan freeze,kill-mount,power-kill
    sudo .venv/bin/python scripts/chaos.py --module postgresql --seed 3 --trials 3 --faults-per-trial 6
    sudo .venv/bin/python scripts/chaos.py --etcd --seed 31 --trials 1 --plan etcd-leader,etcd-down,part-primary-minority

One lab (--module: demo, postgresql or mariadb) for the whole run. A writer in the ``client`` host
writes through the VIP all along and records every acknowledged write: the demo's PUTs of unique
keys, or bank transfers (one persistent psql / mariadb session; each transaction moves money
between two accounts and inserts its unique key; acknowledged when COMMIT returned). Each trial
injects K faults drawn at random (seeded) from --faults, each followed by the wait for the first
acknowledged write after it and a random pause; then everything still in effect is undone (resume,
heal, boot, dead agents started as systemd would) and the trial is judged:
  1. every acknowledged write is there: the demo's keys read back through the VIP with their value,
     the transfers' keys in the primary's table;
  2. the application's own checks (writer paused): the demo's two SQLite copies equal and passing
     integrity_check; the bank's sum and balances as the transfers say, amcheck (PostgreSQL) or
     CHECK TABLE (MariaDB) clean;
  3. the pair converges to PRIM plus an up-to-date SECOND within --converge-timeout s, no operator;
  4. no sample (every 0.1 s, whole run) shows the VIP and the application's server on both nodes;
  5. the two copies of the replicated directory are byte-identical (content, size, mode, tree);
  6. after each fault a write is acknowledged within RECOVERY_LIMIT (60) s: service comes back
     with no operator.
A trial that does not converge is a violation, and the lab is rebuilt for the next one. The
campaign never runs an operator command except the swaps that are faults themselves. Exit 0 when
every check held, 1 on any violation, 2 when the campaign itself could not run.
See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

from hamirror.lab import (chaos_apps, chaos_double, chaos_etcd, chaos_faults, chaos_more, chaos_report,  # noqa: E402
                          chaos_watch, compare, control, etcdlab, kvclient, nodeconfig, process, state)
from hamirror.lab.chaos_double import CampaignInjector  # noqa: E402
from hamirror.lab.chaos_faults import Event  # noqa: E402
from hamirror.lab.demo import interrupts_raise, remove_files  # noqa: E402
from hamirror.lab.naming import NODES, LabPaths, resolve_root  # noqa: E402
from hamirror.lab.shell import LabError  # noqa: E402

DEFAULT_ROOT = "/tmp/hamirror-chaos"
ANY = chaos_faults.BASIC + chaos_more.POWER + chaos_more.NETWORK + chaos_more.PROCESS + chaos_double.DOUBLE
ALL = (ANY + chaos_faults.PARTITIONS + chaos_more.NEEDS_WITNESS + chaos_double.QUORUM_DOUBLE + chaos_more.NEEDS_FENCE
       + chaos_etcd.ETCD)
RECOVERY_LIMIT = 60.0   # seconds from a fault's end to the first acknowledged write (check 6)
RECOVERY_KINDS = ("power-kill/primary", "power-loss/primary", "kill-mount", "freeze", "swap-cut", "swap-kill") + chaos_etcd.ETCD


def fault_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {unknown}; choose from {', '.join(ALL)}")
    return names


def allowed_faults(args: argparse.Namespace) -> tuple[str, ...]:
    """The faults the lab's options allow (a witness or etcd, a fence)."""
    partitions = chaos_faults.PARTITIONS if args.witness else chaos_faults.PARTITIONS[:1]   # etcd: the peers
    return (ANY + (partitions if args.partitions else ())
            + (chaos_more.NEEDS_WITNESS if args.witness else ()) + (chaos_more.NEEDS_FENCE if args.fence else ())
            + (chaos_double.QUORUM_DOUBLE if args.witness or args.etcd else ()) + (chaos_etcd.ETCD if args.etcd else ()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--module", choices=chaos_apps.NAMES, default="demo",
                   help="the application under test, with its own client and checks (default demo)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    p.add_argument("--trials", type=int, default=3, help="trials (default 3)")
    p.add_argument("--faults-per-trial", type=int, default=None,
                   help="faults per trial (default 4, or the length of --plan)")
    p.add_argument("--time-limit", type=float, default=3600.0,
                   help="seconds; no new fault after this, the trial under way is still judged (default 3600)")
    p.add_argument("--witness", action="store_true", help="lab up --witness")
    p.add_argument("--etcd", action="store_true",
                   help="lab up --etcd (three etcd hosts: the nodes' quorum), and the faults " + ", ".join(chaos_etcd.ETCD))
    p.add_argument("--lease", type=int, default=None, metavar="SECONDS",
                   help="lab up --lease: the quorum's lease (default: the witness's or etcd's)")
    p.add_argument("--partitions", action="store_true", help="add the partition faults (needs --witness)")
    p.add_argument("--fence", action="store_true", help="lab up --fence, and the slow-fence fault")
    p.add_argument("--faults", type=fault_list, default=None,
                   help=f"comma-separated fault types to draw from (default: all that apply): {', '.join(ALL)}")
    p.add_argument("--plan", type=fault_list, default=None,
                   help="a fixed sequence of faults for each trial instead of random draws (delays stay seeded)")
    p.add_argument("--converge-timeout", type=float, default=60.0, help="seconds for check 3 (default 60)")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"lab root, must not hold a lab (default {DEFAULT_ROOT})")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the lab's files (agents' logs) even when every check held")
    p.add_argument("--mode", choices=("sync", "barrier", "async"), default=None,
                   help="the module's replication mode (default: its module.toml's, sync)")
    args = p.parse_args(argv)
    if args.partitions and not (args.witness or args.etcd):
        p.error("--partitions needs --witness or --etcd (partitions without a quorum have no safe answer)")
    if args.witness and args.etcd:
        p.error("choose one quorum: --witness or --etcd")
    if args.lease is not None and not (args.witness or args.etcd):
        p.error("--lease needs --witness or --etcd")
    allowed = allowed_faults(args)
    chosen = args.faults or list(allowed)
    bad = [f for f in chosen + (args.plan or []) if f not in allowed]
    if bad:
        p.error(f"{', '.join(bad)} need options not given (--witness --partitions, --witness, --fence, --etcd)")
    args.faults = chosen
    if args.faults_per_trial is None:
        args.faults_per_trial = len(args.plan) if args.plan else 4
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    return args


class Campaign:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.paths = LabPaths(resolve_root(args.root))
        self.rng = random.Random(args.seed)
        self.origin = time.monotonic()
        self.app = chaos_apps.by_name(args.module)
        self.writer: kvclient.Writer | None = None
        self.sampler = chaos_watch.Sampler(self.paths, self.app.is_server)
        self.injector = CampaignInjector(self.paths, self.rng, lambda: self.writer, self.say, self.app)
        self.expected: dict[str, float] = {}   # acknowledged key -> when (since the lab was built)
        self.events: list[Event] = []
        self.lost_at: list[float] = []
        self.trials: list[dict] = []
        self.violations: list[str] = []
        self.rebuilds = 0
        self.module_copy: str | None = None   # --mode: a copy of the module with that mode

    def module(self) -> str:
        """The module, or a copy of it whose ``mode`` is --mode (the lab copies either in)."""
        name = self.app.module
        if self.args.mode is None:
            return name
        if self.module_copy is None:
            self.module_copy = tempfile.mkdtemp(prefix="hamirror-chaos-module-")
            folder = os.path.join(self.module_copy, name)
            shutil.copytree(nodeconfig.module_source(name), folder)
            toml = os.path.join(folder, "module.toml")
            with open(toml, encoding="utf-8") as f:
                text, n = re.subn(r'^mode = "[a-z]+"(?=\s*(#.*)?$)', f'mode = "{self.args.mode}"', f.read(), flags=re.M)
            if n != 1:
                raise LabError(f"{toml}: no single 'mode = ...' line to set to {self.args.mode!r}")
            with open(toml, "w", encoding="utf-8") as f:
                f.write(text)
        return os.path.join(self.module_copy, name)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.origin:7.1f}s] {text}", flush=True)

    def out_of_time(self) -> bool:
        return time.monotonic() - self.origin > self.args.time_limit

    def build(self) -> None:
        started = time.monotonic()
        control.up(self.paths, [self.module()], witness=self.args.witness, fence=self.args.fence,
                   etcd=self.args.etcd, lease=self.args.lease, timeout=self.app.startup * 2)
        self.injector.prepare_lab()
        self.app.prepare(self.paths, "node1")
        self.sampler.refresh()
        quorum = " with a witness" if self.args.witness else " with etcd" if self.args.etcd else ""
        lease = f" (lease {self.args.lease} s)" if self.args.lease else ""
        self.say(f"lab up at {self.paths.root} ({self.app.module}){quorum}{lease}"
                 f"{' and fence scripts' if self.args.fence else ''}, mode {self.args.mode or 'sync'} "
                 f"in {time.monotonic() - started:.1f} s")

    def rebuild(self) -> None:
        """A fresh lab after a trial that did not converge, so the next trial starts from a sound pair."""
        self.sampler.pause(True)
        control.down(self.paths)
        self.injector.down.clear()
        self.expected.clear()
        self.build()
        self.rebuilds += 1
        self.sampler.pause(False)

    def run(self) -> None:
        self.build()
        self.sampler.start()
        for n in range(1, self.args.trials + 1):
            if self.out_of_time():
                self.say(f"time limit of {self.args.time_limit:.0f} s reached: no trial {n}")
                break
            self.trial(n)

    def draw(self, i: int) -> str:
        plan = self.args.plan
        return plan[i % len(plan)] if plan else self.rng.choice(self.args.faults)

    def recovery(self, ev: Event) -> None:
        """``ev.recovery_s``: seconds from the fault to the first write acknowledged for a request
        sent after it. ``ev.interruption_s``: the longest time without an acknowledgement from the
        last one before the fault to the first for a request sent after its injection returned (a
        swap's outage comes after writes it did not stop yet). Either left None when no such write
        is acknowledged within RECOVERY_LIMIT s."""
        try:
            ack = self.writer.first_ack_after(ev.start, RECOVERY_LIMIT)
            ev.recovery_s = ack.done - ev.start
            if ack.sent < ev.end:
                ack = self.writer.first_ack_after(ev.end, RECOVERY_LIMIT)
        except LabError:
            return
        ev.interruption_s = self.writer.largest_gap(ev.start, ack.done)

    def trial(self, n: int) -> None:
        t0 = time.monotonic()
        rec: dict = {"trial": n, "violations": []}
        self.say(f"trial {n}: writer started")
        self.writer = self.app.writer(self.paths, f"s{self.args.seed}t{n}k", self.args.seed * 1000 + n)
        try:
            self.writer.first_ack_after(t0, self.app.startup)
        except LabError as exc:
            rec["violations"].append(f"no service at the trial's start: {exc}")
        for i in range(self.args.faults_per_trial):
            if self.out_of_time():
                break
            ev = Event(n, i + 1, self.draw(i))
            self.say(f"trial {n} fault {i + 1}: {ev.fault}")
            self.injector.inject(ev)
            self.events.append(ev)
            if not ev.skipped:
                self.recovery(ev)
                if ev.interruption_s is None:
                    rec["violations"].append(f"fault {i + 1} ({ev.kind} on {ev.node or '-'}): no write acknowledged "
                                             f"within {RECOVERY_LIMIT:.0f} s after it")
            self.say(f"  {ev.kind} on {ev.node or '-'}: " + "; ".join(ev.detail)
                     + (f" SKIPPED ({ev.skipped})" if ev.skipped else "")
                     + (f" ERROR {ev.error}" if ev.error else "")
                     + ("" if ev.skipped else f"; first ack after {chaos_report._fmt(ev.recovery_s)} s, "
                                              f"longest without one {chaos_report._fmt(ev.interruption_s)} s"))
            time.sleep(self.rng.uniform(0.5, 3.0))
        rec["restored"] = self.injector.restore()
        self.say(f"trial {n}: faults done; {', '.join(rec['restored']) or 'nothing to undo'}; waiting for convergence")
        seconds, statuses = chaos_watch.wait_converged(self.paths, self.args.converge_timeout, self.app.module)
        rec["convergence_s"] = None if seconds is None else round(seconds, 2)
        if seconds is None:
            rec["violations"].append(f"not converged to PRIM + up-to-date SECOND in {self.args.converge_timeout:.0f} s: "
                                     + "; ".join(f"{k}: {_brief(v)}" for k, v in statuses.items()))
        if seconds is not None:
            try:
                self.writer.first_ack_after(time.monotonic(), 30.0)
            except LabError:
                rec["violations"].append("converged, but no write acknowledged within 30 s after: no service")
                rec["no_service"] = True
        self.judge(n, t0, rec, converged=seconds is not None)
        self.trials.append(rec)
        for v in rec["violations"]:
            self.violations.append(f"trial {n}: {v}")
            self.say(f"trial {n}: VIOLATION {v}")
        if rec["violations"]:
            rec["evidence"] = self.keep_evidence(n)
            self.say(f"trial {n}: the nodes' logs copied to {rec['evidence']}")
        if (seconds is None or rec.get("no_service")) and n < self.args.trials and not self.out_of_time():
            self.say(f"trial {n}: rebuilding the lab for the next trial")
            self.rebuild()

    def judge(self, n: int, t0: float, rec: dict, converged: bool) -> None:
        """Checks 1, 2, 4 and 5 (3 is the convergence itself), writer paused."""
        self.writer.stop()
        acks = list(self.writer.acks)
        rec["acknowledged"] = len(acks)
        rec["failed_requests"] = len(self.writer.failures)
        self.expected.update({a.key: a.done for a in acks})
        time.sleep(1.0)                      # the requests in flight end
        primary, _ = chaos_watch.roles(chaos_watch.pair(self.paths, self.app.module))
        if converged:
            self.compare_bytes(rec)
            if primary is not None:
                self.online_verify(rec, primary)
        verdict = self.app.check(self.paths, primary, list(self.expected), converged)
        rec["violations"] += verdict.problems
        rec.update({k: v for k, v in verdict.figures.items()})
        bad, lost = verdict.unreadable, verdict.lost
        rec["unreadable"], rec["lost"] = len(bad), len(lost)
        if bad:
            rec["violations"].append(f"{len(bad)} of {len(self.expected)} acknowledged writes not found "
                                     f"({len(lost)} lost for sure), e.g. {sorted(bad.items())[:3]}")
        self.lost_at += [self.expected[k] for k in lost]
        for k in bad:
            del self.expected[k]
        samples = self.sampler.between(t0, time.monotonic())
        rec["dual_samples"] = sum(s.dual for s in samples)
        rec["dual_frozen_samples"] = sum(s.dual_frozen for s in samples)
        if rec["dual_samples"]:
            first = next(s for s in samples if s.dual)
            rec["violations"].append(f"{rec['dual_samples']} samples with the VIP and the application on both "
                                     f"nodes (first at {first.t - self.origin:.1f} s)")
        self.say(f"trial {n}: {len(acks)} acknowledged this trial, {len(self.expected)} present in all, "
                 f"unreadable {len(bad)}, lost {len(lost)} {verdict.figures.get('missing_if_kept', '')}, "
                 f"converged in {chaos_report._fmt(rec['convergence_s'])} s, "
                 f"byte-identical {rec.get('byte_identical', '-')} "
                 f"(hamirror verify exit {rec.get('verify', {}).get('exit', '-')}), "
                 f"dual {rec['dual_samples']} (frozen side: {rec['dual_frozen_samples']})")
        self.writer = None

    def compare_bytes(self, rec: dict) -> None:
        """Check 5: both nodes' lower directories byte-identical (what still differs after a few looks)."""
        a, b = (self.app.lower_dir(self.paths, node) for node in NODES)
        diffs = compare.settled(a, b, NODES)
        rec["byte_identical"] = not diffs
        rec["byte_differences"] = [str(d) for d in diffs[:50]]
        if diffs:
            rec["violations"].append(f"the copies differ byte for byte in {len(diffs)} path(s): "
                                     + "; ".join(str(d) for d in diffs[:5]))

    def online_verify(self, rec: dict, primary: str) -> None:
        """``hamirror verify MODULE`` on the primary beside check 5: a verify that finds the copies
        equal while the bytes differ is a violation (exit 0 equal, 3 different, else it did not run)."""
        try:
            r = process.exec_in(self.paths, primary, [sys.executable, "-m", "hamirror", "verify", self.app.module],
                                capture=True, timeout=300)
            rec["verify"] = {"exit": r.returncode, "said": (r.stderr or r.stdout).strip()[-300:]}
        except subprocess.TimeoutExpired:
            rec["verify"] = {"exit": None, "said": "no answer in 300 s"}
        if rec["verify"]["exit"] == 0 and not rec["byte_identical"]:
            rec["violations"].append(f"hamirror verify found the copies equal; they differ: {rec['verify']['said']}")

    def keep_evidence(self, n: int) -> str:
        """Copy the nodes' logs (agent, mount, receiver, scripts, events; with --etcd the members'
        logs too) out of the lab, which a rebuild would wipe: ``ROOT.evidence/s{SEED}-t{N}/HOST/``."""
        dest = os.path.join(self.paths.root + ".evidence", f"s{self.args.seed}-t{n}")
        for node in NODES + (etcdlab.HOSTS if self.args.etcd else ()):
            for sub in ("log", "state"):
                src = self.paths.node_dir(node, sub)
                if os.path.isdir(src):
                    shutil.copytree(src, os.path.join(dest, node, sub), dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("*.sock"))
        return dest

    def results(self) -> dict:
        stats = chaos_report.per_fault(self.events, self.lost_at, self.sampler.between(0, float("inf")))
        gaps = self.sampler.gaps
        return {"seed": self.args.seed, "module": self.app.module, "args": {k: v for k, v in vars(self.args).items()},
                "seconds": round(time.monotonic() - self.origin, 1), "samples": self.sampler.samples,
                "sample_gaps_over_0.2s": len(gaps), "max_sample_gap_s": round(max((g for _, g in gaps), default=0), 3),
                "agent_restarts": self.injector.agent_restarts, "operator_actions": 0, "rebuilds": self.rebuilds,
                "per_fault": stats, "trials": self.trials,
                "acknowledged": sum(t.get("acknowledged", 0) for t in self.trials), "lost": len(self.lost_at),
                "byte_identical_trials": sum(1 for t in self.trials if t.get("byte_identical")),
                "operator_needed_trials": sum(1 for t in self.trials
                                              if t.get("convergence_s") is None or t.get("no_service")),
                "recovery_median_s": {k: stats[k]["recovery_median_s"] for k in RECOVERY_KINDS if k in stats},
                "events": [chaos_report.event_dict(e, self.origin) for e in self.events],
                "violations": self.violations}

    def close(self) -> None:
        """Stop everything the campaign started and remove the lab, whatever failed before."""
        try:
            if self.writer is not None:
                self.writer.kill()
            self.injector.thaw()
            self.sampler.stop()
        finally:
            control.down(self.paths)
            if self.module_copy is not None:
                shutil.rmtree(self.module_copy, ignore_errors=True)


def _brief(m: dict | None) -> str:
    if not m:
        return "no status"
    return (f"{m['state']} peer={m.get('peer_state')} uptodate={m.get('uptodate')} busy={m.get('busy')} "
            f"relation={m.get('relation')} mounted={m.get('mounted')} receiving={m.get('receiving')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (the lab uses network and mount namespaces)")
    campaign = Campaign(args)
    if state.load(campaign.paths) is not None:
        raise SystemExit(f"a lab is up at {campaign.paths.root} already; pass another --root or run lab down")
    campaign.say(f"seed {args.seed}: {args.trials} trial(s) x {args.faults_per_trial} fault(s) from "
                 f"{', '.join(args.plan or args.faults)}{' (fixed plan)' if args.plan else ''}")
    crashed: str | None = None
    with interrupts_raise():
        try:
            campaign.run()
        except (LabError, KeyboardInterrupt) as exc:
            crashed = f"{type(exc).__name__}: {exc}"
            campaign.say(f"campaign stopped: {crashed}")
        finally:
            campaign.close()
    out = campaign.results()
    out["crashed"] = crashed
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    print("\n" + chaos_report.table(out["per_fault"]))
    print("recovery, median from the fault to the first acknowledged write: "
          + (", ".join(f"{k} {v} s" for k, v in out["recovery_median_s"].items()) or "none measured"))
    print(f"\n{args.module}, seed {args.seed}: {len(campaign.trials)} trial(s), {len(campaign.events)} fault(s), "
          f"{out['acknowledged']} writes acknowledged, {len(campaign.expected)} present at the end, "
          f"{len(campaign.lost_at)} lost; {out['samples']} samples, {out['sample_gaps_over_0.2s']} gaps over 0.2 s "
          f"(max {out['max_sample_gap_s']} s); operator actions 0; agents restarted {out['agent_restarts']}; "
          f"lab rebuilt {campaign.rebuilds} time(s); an operator needed after {out['operator_needed_trials']} "
          f"trial(s) (not converged, or no service); byte-identical after {out['byte_identical_trials']} "
          f"of {len(campaign.trials)} trial(s)")
    for v in campaign.violations:
        print(f"VIOLATION {v}")
    if crashed or campaign.violations or args.keep_logs:
        print(f"the agents' logs stay in {campaign.paths.root}/NODE/log/")
    else:
        remove_files(campaign.paths, created_root=False)
    if crashed:
        return 2
    return 1 if campaign.violations else 0


if __name__ == "__main__":
    sys.exit(main())
