"""The campaign's figures per fault type and its summary table (``scripts/chaos.py``).

A lost key or a dual-serving sample is charged to the last fault that started before it (the
key's acknowledgement, the sample's time), or to the first fault when none did: with several faults
in a trial that is the most likely culprit, not a proof.
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import asdict

from hamirror.lab.chaos_faults import Event
from hamirror.lab.chaos_watch import Sample

NONE = "(before any fault)"


def culprit(events: list[Event], t: float) -> str:
    """The fault type of the last event started at or before t (else the first event)."""
    hit = sorted((e for e in events if e.start and not e.skipped), key=lambda e: e.start)
    if not hit:
        return NONE
    i = bisect.bisect_right([e.start for e in hit], t)
    return hit[max(i - 1, 0)].kind


def per_fault(events: list[Event], lost_at: list[float], samples: list[Sample]) -> dict[str, dict]:
    """{fault: count, skipped, errors, recovery and interruption median/max, not recovered, lost,
    dual, dual_frozen, operator}."""
    out: dict[str, dict] = {}

    def row(name: str) -> dict:
        return out.setdefault(name, {"count": 0, "skipped": 0, "errors": 0, "recovery": [], "interruption": [],
                                     "not_recovered": 0, "lost": 0, "dual": 0, "dual_frozen": 0,
                                     "operator_actions": 0})
    for e in events:
        r = row(e.kind)
        if e.skipped:
            r["skipped"] += 1
            continue
        r["count"] += 1
        r["errors"] += e.error is not None
        r["not_recovered"] += e.interruption_s is None
        r["recovery"] += [] if e.recovery_s is None else [e.recovery_s]
        r["interruption"] += [] if e.interruption_s is None else [e.interruption_s]
    for t in lost_at:
        row(culprit(events, t))["lost"] += 1
    for s in samples:
        row(culprit(events, s.t))["dual" if s.dual else "dual_frozen"] += 1
    for r in out.values():
        for name in ("recovery", "interruption"):
            times = r.pop(name)
            r[f"{name}_median_s"] = round(statistics.median(times), 3) if times else None
            r[f"{name}_max_s"] = round(max(times), 3) if times else None
    return out


def event_dict(e: Event, origin: float) -> dict:
    """An event for the JSON file, times relative to the campaign's start."""
    d = asdict(e)
    d["kind"] = e.kind
    d["start"] = round(e.start - origin, 3) if e.start else None
    d["end"] = round(e.end - origin, 3) if e.end else None
    for name in ("recovery_s", "interruption_s"):
        d[name] = None if d[name] is None else round(d[name], 3)
    return d


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(stats: dict[str, dict]) -> str:
    """The summary table, one line per fault type and a total line."""
    head = ("fault", "n", "skip", "err", "recov med s", "recov max s", "gap med s", "gap max s", "no recov", "lost",
            "dual", "dual(frozen)", "oper")
    rows = [head]
    for name in sorted(stats):
        r = stats[name]
        rows.append((name, str(r["count"]), str(r["skipped"]), str(r["errors"]), _fmt(r["recovery_median_s"]),
                     _fmt(r["recovery_max_s"]), _fmt(r["interruption_median_s"]), _fmt(r["interruption_max_s"]),
                     str(r["not_recovered"]), str(r["lost"]), str(r["dual"]), str(r["dual_frozen"]),
                     str(r["operator_actions"])))
    total = {k: sum(r[k] for r in stats.values()) for k in ("count", "skipped", "errors", "not_recovered", "lost",
                                                            "dual", "dual_frozen", "operator_actions")}
    rows.append(("TOTAL", str(total["count"]), str(total["skipped"]), str(total["errors"]), "", "", "", "",
                 str(total["not_recovered"]), str(total["lost"]), str(total["dual"]), str(total["dual_frozen"]),
                 str(total["operator_actions"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)
