"""What a mirror benchmark run is checked against: the two-copy ceiling, the issues' targets, CPU per operation.

Why apart from mirror_report.py: that module turns raw figures into medians and tables; this one
holds the yardsticks (issue 10's ratios against interception and GlusterFS, issue 16's "Done when"
against GlusterFS, the two-copy ceiling and plain) and the CPU-per-operation medians, every verdict
computed from the run it is given, never written in.
"""

from __future__ import annotations

import statistics

# The two-copy ceiling: both copies share one disk, so a replicated sequential write cannot beat
# half of the plain directory's rate measured in the same run. Shown as column k (sequential only).
CEILING = "k"
CEILING_NAME = "ceiling"
CEILING_METRIC = "seq_write_fsync"
CEILING_BASE = "a"    # the column k is derived from
# A column whose fastest repetition is more than this many times its slowest did not measure one
# thing: the ratios that use it are UNSURE, not PASS or MISS (``unsteady``).
SPREAD_LIMIT = 2.0

# (label, metric, numerator, denominator, op, bound): a verdict is PASS when ratio op bound holds.
Target = tuple[str, str, str, str, str, float]
MODES = (("barrier", "e"), ("sync", "c"))   # the two streaming modes' names and columns


def both(label: str, metric: str, den: str, barrier: float, sync: float) -> list[Target]:
    """One target for barrier (e) then sync (c): ``label`` names the mode ``{mode}``, the bound
    ``{bound}`` and the columns ``{cols}``, so each text says the bound it is checked against."""
    return [(label.format(mode=mode, bound=bound, cols=f"{col}/{den}"), metric, col, den, ">=", bound)
            for (mode, col), bound in zip(MODES, (barrier, sync))]


ISSUE10: list[Target] = [
    *both("{mode} sequential write + fsync >= {bound:.2f} of interception", "seq_write_fsync", "b", 0.70, 0.45),
    *both("{mode} 4 KiB files >= {bound:.2f} of interception", "small_files", "b", 0.50, 0.45),
    ("barrier SQLite (WAL, FULL) >= 0.50 of interception", "sqlite_txn", "e", "b", ">=", 0.50),
    ("barrier pgbench >= 0.60 of interception", "pgbench_tps", "e", "b", ">=", 0.60),
    *both("{mode} sequential write + fsync >= {bound:g}x GlusterFS", "seq_write_fsync", "g", 2.0, 2.0),
    *both("{mode} 4 KiB files >= {bound:g}x GlusterFS", "small_files", "g", 3.0, 3.0),
    ("interception sequential write >= 0.25 of plain", "seq_write_fsync", "b", "a", ">=", 0.25)]
ISSUE16: list[Target] = [
    *both("pgbench: {mode} >= {bound:g}x GlusterFS ({cols})", "pgbench_tps", "g", 1.5, 1.3),
    *both("4 KiB files: {mode} >= {bound:g}x GlusterFS ({cols})", "small_files", "g", 3.0, 2.5),
    *both("SQLite (WAL, FULL): {mode} >= {bound:g}x GlusterFS ({cols})", "sqlite_txn", "g", 3.0, 2.0),
    *both("1 GiB + fsync: {mode} >= {bound:.2f} of the two-copy ceiling ({cols})", "seq_write_fsync", CEILING,
          0.85, 0.70),
    ("4 KiB write+fsync p50: sync no slower than GlusterFS (c/g)", "fsync4k_p50", "c", "g", "<=", 1.0),
    ("interception >= 0.9 of plain on 1 GiB + fsync (b/a)", "seq_write_fsync", "b", "a", ">=", 0.9),
    ("interception >= 0.5 of plain on 4 KiB files (b/a)", "small_files", "b", "a", ">=", 0.5)]
# The sizes issue 16's ratios are to be measured at (and at least 2 interleaved repetitions).
ISSUE16_SIZES = {"size_mib": 1024, "files": 5000, "txns": 3000, "pgbench_seconds": 15, "pgbench_clients": 4}

# What one operation is, per workload (CPU per operation is CPU seconds / operations).
OPERATION = {"seq": "MiB", "small": "file", "sqlite": "txn", "lat": "fsync", "pgbench": "txn"}


def add_ceiling(med: dict[str, dict[str, float]]) -> None:
    """Column k: half of the plain directory's sequential rate in this run (nothing without a)."""
    plain = med.get(CEILING_BASE, {}).get(CEILING_METRIC)
    if plain is not None and plain == plain:
        med[CEILING] = {CEILING_METRIC: plain / 2}


def ceiling_caveat(med: dict[str, dict[str, float]]) -> str | None:
    """A warning for the reader, or None: the plain directory wrote its file + fsync slower than the
    interception mount beside it. The two-copy ceiling (plain / 2) then understates what two copies
    can reach on this disk, and the replicated columns' ratios to it overstate; their ratios to
    half of the interception column are given beside. Seen since both copies allocate a large
    write's blocks ahead of it, which the plain directory's application does not
    (docs/performance.md, "The fifteenth session's run"). No verdict changes: the issue sets k."""
    def measured(column: str) -> float | None:   # a median of no run is NaN
        value = med.get(column, {}).get(CEILING_METRIC)
        return value if value and value == value else None

    plain, intercept = measured(CEILING_BASE), measured("b")
    if plain is None or intercept is None or intercept <= plain:
        return None
    beside = ", ".join(f"{k}/(b/2) {measured(k) / (intercept / 2):.2f}" for k in ("c", "d", "e") if measured(k))
    return (f"the plain directory wrote its file + fsync slower than the interception mount (b/a "
            f"{intercept / plain:.2f}): the two-copy ceiling (a / 2) understates what two copies reach "
            f"here; against half of the interception column: {beside or 'no replicated column'}")


def unsteady(runs: dict[str, dict[str, list[float]]], metric: str, columns: tuple[str, ...]) -> str | None:
    """Why a ratio of these columns is not a result, or None: one of them measured different things
    in different repetitions (its fastest more than SPREAD_LIMIT times its slowest). Seen on this
    VM: plain's 4 KiB files at 40,194 then 2,096 files/s when ext4's inode allocator scanned a
    group that a clean-up had just freed (docs/performance.md, "The FUSE ceiling"), despite
    ``--spread``. The median of three is then one repetition's accident, and a verdict on it is not
    a PASS or a MISS."""
    reasons = []
    for column in dict.fromkeys(CEILING_BASE if c == CEILING else c for c in columns):
        values = [v for v in runs.get(column, {}).get(metric, []) if v == v and v > 0]
        if len(values) >= 2 and max(values) > SPREAD_LIMIT * min(values):
            reasons.append(f"{column}'s repetitions {min(values):,.0f}-{max(values):,.0f}")
    return "; ".join(reasons) or None


def verdicts(targets: list[Target], ratio, runs: dict[str, dict[str, list[float]]] | None = None) -> list[dict]:
    """Each target with the ratio of this run (``ratio(metric, num, den)``, None if not measured);
    with ``runs`` (each column's repetitions), UNSURE where :func:`unsteady` says why."""
    out = []
    for label, metric, num, den, op, bound in targets:
        value = ratio(metric, num, den)
        ok = value is not None and (value >= bound if op == ">=" else value <= bound)
        why = unsteady(runs, metric, (num, den)) if runs is not None and value is not None else None
        out.append({"target": label, "metric": metric, "ratio": value, "op": op,
                    "minimum" if op == ">=" else "maximum": bound,
                    "result": "n/a" if value is None else "UNSURE" if why else ("PASS" if ok else "MISS"),
                    **({"unsteady": why} if why else {})})
    return out


def shown(verdict: dict) -> str:
    """The verdict as the report prints it: UNSURE says which column's repetitions disagree."""
    return f"{verdict['result']} ({verdict['unsteady']})" if verdict.get("unsteady") else verdict["result"]


def need(target: dict) -> str:
    """">= 0.85" or "<= 1.00"; saved runs from before issue 16 only have ``minimum``."""
    if "maximum" in target:
        return f"<= {target['maximum']:.2f}"
    return f">= {target['minimum']:.2f}"


def size_check(params: dict) -> str:
    """Whether this run is at issue 16's sizes: only such a run's verdicts are a result."""
    off = [f"{k}={params.get(k)} (issue: {v})" for k, v in ISSUE16_SIZES.items() if params.get(k) != v]
    if (params.get("reps") or 0) < 2:
        off.append(f"reps={params.get('reps')} (issue: 2 or more)")
    if not off:
        return "this run is at issue 16's sizes (1 GiB, 5,000 files, 3,000 txns, pgbench 4 clients 15 s, reps >= 2)"
    return "NOT at issue 16's sizes, a smoke check and not a result: " + ", ".join(off)


def cpu_medians(raw: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """raw[config][workload][process] = ms per operation of each repetition -> their medians."""
    return {key: {job: {label: statistics.median(v) for label, v in per.items() if v}
                  for job, per in jobs.items()} for key, jobs in raw.items()}


def cpu_lines(summary: dict, markdown: bool = False) -> list[str]:
    """The CPU table: per workload and column, the total and each process, ms per operation."""
    cpu = summary.get("cpu", {}).get("median")
    if not cpu:
        return []
    names = summary["configs"]
    reps = summary["parameters"]["reps"]
    if markdown:
        lines = ["| workload, ms of CPU per | column | total | per process |", "|---|---|---|---|"]
    else:
        lines = [f"CPU per operation, ms (user+sys from /proc of each process over the timed part; "
                 f"median of {reps} runs):"]
    for job, unit in OPERATION.items():
        for key in names:
            per = cpu.get(key, {}).get(job)
            if not per:
                continue
            parts = [f"{label} {ms:.3f}" for label, ms in per.items() if label != "total"]
            if markdown:
                lines.append(f"| {job}, {unit} | {key} {names[key]} | {per.get('total', 0):.3f} | {', '.join(parts)} |")
            else:
                lines.append(f"  {job + ' per ' + unit:22}{key + ' ' + names[key]:13}{per.get('total', 0):9.3f} = "
                             + " + ".join(parts))
    return lines
