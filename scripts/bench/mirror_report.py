"""Medians, ratios and target verdicts of one mirror benchmark run, as JSON data and as a table.

Why apart from mirror.py: the run collects raw figures; this turns them into what an issue's
targets are checked against, and only ever compares columns measured in the same run.
"""

from __future__ import annotations

import mirror_targets as t
import workloads as w

# (metric, unit, higher is better, label)
METRICS = [("seq_write_fsync", "MB/s", True, "sequential write + fsync"),
           ("small_files", "files/s", True, "4 KiB files (create, write, close)"),
           ("sqlite_txn", "txn/s", True, "SQLite txn (WAL, FULL)"),
           ("pgbench_tps", "tps", True, "PostgreSQL pgbench"),
           ("fsync4k_p50", "ms", False, "4 KiB write+fsync p50"),
           ("fsync4k_p99", "ms", False, "4 KiB write+fsync p99")]
# Against the baseline measured in the same run (b: interception only), then against GlusterFS,
# then the replicated columns against the two-copy ceiling (k = a / 2, sequential write only).
# f and w (libfuse's C passthrough, without and with writeback cache) against plain: b's ceiling.
RATIOS = [("b", "a"), ("f", "a"), ("w", "a"), ("b", "f"), ("c", "b"), ("d", "b"), ("e", "b"), ("c", "g"), ("d", "g"), ("e", "g"),
          ("c", t.CEILING), ("d", t.CEILING), ("e", t.CEILING), ("g", t.CEILING)]


def summarize(params: dict, raw: dict[str, dict[str, list[float]]], notes: list[str],
              configs: dict[str, str], cpu: dict | None = None) -> dict:
    """Medians, ratios and verdicts; ``configs`` (letter: name) goes along so a saved run renders alone.

    ``cpu`` is raw[config][workload][process] = ms of CPU per operation of each repetition."""
    med = {k: {m: w.median(v) for m, v in per.items()} for k, per in raw.items()}
    t.add_ceiling(med)
    ratio = ratio_of(med)
    ratios = {f"{n}/{d}": {m: ratio(m, n, d) for m, *_ in METRICS} for n, d in RATIOS}
    summary = {"environment": w.environment(), "parameters": params, "configs": {**configs, t.CEILING: t.CEILING_NAME},
               "median": med, "runs": raw, "ratios": ratios, "targets": t.verdicts(t.ISSUE10, ratio, raw),
               "done_when": t.verdicts(t.ISSUE16, ratio, raw), "notes": notes}
    if cpu:
        summary["cpu"] = {"unit": "ms of CPU (user+sys) per operation", "operation": t.OPERATION,
                          "median": t.cpu_medians(cpu), "runs": cpu}
    return summary


def ratio_of(med: dict[str, dict[str, float]]):
    """``ratio(metric, num, den)`` over these medians: None where either is missing."""
    def ratio(metric: str, num: str, den: str) -> float | None:
        try:
            return med[num][metric] / med[den][metric]
        except (KeyError, ZeroDivisionError):
            return None
    return ratio


def recheck(saved: dict) -> dict:
    """A saved run's verdicts computed again from its medians and repetitions with today's rules
    (a run saved before the UNSURE rule said PASS where its repetitions disagreed)."""
    ratio = ratio_of(saved["median"])
    again = {"targets": t.verdicts(t.ISSUE10, ratio, saved.get("runs"))}
    if "done_when" in saved:
        again["done_when"] = t.verdicts(t.ISSUE16, ratio, saved.get("runs"))
    return {**saved, **again}


def _cell(value: float | None, width: int) -> str:
    return f"{value:{width}.2f}" if value is not None and value == value else f"{'-':>{width}}"


def render(summary: dict) -> str:
    med, names = summary["median"], summary["configs"]
    keys = [k for k in names if med.get(k)]
    env, par = summary["environment"], summary["parameters"]
    changed = env.get("files_changed_since_commit")
    tree = f"{env.get('commit')}" + (f" with {changed} files changed" if changed else "")
    lines = [f"hamirror mirror benchmark  {env['date']}  nproc={env['nproc']} kernel={env['kernel']} "
             f"disk={env['disk']} tree={tree}",
             f"size={par['size_mib']} MiB, files={par['files']}, txns={par['txns']}, "
             f"latency samples={par['samples']}, pgbench {par['pgbench_clients']} clients scale "
             f"{par['pgbench_scale']} {par['pgbench_seconds']} s, median of {par['reps']} interleaved runs, "
             f"link engine {par.get('engine') or 'not recorded'}"
             + (", each run's directory in a block group of its own (--spread)" if par.get("spread") else "")
             + (f"; {par['guest_memory']}" if par.get("guest_memory") else ""), ""]
    ratio_keys = [r for r in summary["ratios"] if all(c in keys for c in r.split("/"))]
    head = f"{'metric':18}{'unit':8}" + "".join(f"{k + ' ' + names[k]:>13}" for k in keys)
    lines.append(head + "".join(f"{r:>7}" for r in ratio_keys))
    for metric, unit, *_ in METRICS:
        if not any(metric in med[k] for k in keys):
            continue
        row = f"{metric:18}{unit:8}" + "".join(_cell(med[k].get(metric), 13) for k in keys)
        lines.append(row + "".join(_cell(summary["ratios"][r][metric], 7) for r in ratio_keys))
    lines.append("(b = baseline: interception only; x/g = against GlusterFS replica 2; k = two-copy ceiling, "
                 "plain / 2 of this run, sequential only; f/w = libfuse's C passthrough without/with writeback "
                 "cache; latency ratios: higher is worse)")
    cpu = t.cpu_lines(summary)
    lines.extend([""] + cpu if cpu else [])
    lines.append("")
    lines.extend(_verdict_lines(summary["targets"]))
    if summary["notes"]:
        lines.append("")
        lines.extend(f"note: {n}" for n in summary["notes"])
    if "done_when" in summary:
        lines += ["", f"issue 16, Done when: {t.size_check(par)}"]
        lines.extend(_verdict_lines(summary["done_when"]))
    caveat = t.ceiling_caveat(med)
    if caveat:
        lines.append(f"caveat: {caveat}")
    return "\n".join(lines)


def _verdict_lines(targets: list[dict]) -> list[str]:
    return [f"{t.shown(v):5} {v['target']}: {'-' if v['ratio'] is None else format(v['ratio'], '.2f')} "
            f"(need {t.need(v)})" for v in targets]


def _md(value: float | None, digits: int) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def render_markdown(summary: dict) -> str:
    """The same figures as a Markdown table (for docs/performance.md) and the target verdicts."""
    med, names = summary["median"], summary["configs"]
    keys = [k for k in names if med.get(k)]
    ratio_keys = [r for r in summary["ratios"] if all(c in keys for c in r.split("/"))]
    lines = ["| metric | " + " | ".join(f"{k} {names[k]}" for k in keys) + " | " + " | ".join(ratio_keys) + " |",
             "|---" * (1 + len(keys) + len(ratio_keys)) + "|"]
    for metric, unit, _, label in METRICS:
        if not any(metric in med[k] for k in keys):
            continue
        digits = 2 if unit == "ms" else 0
        cells = [_md(med[k].get(metric), digits) for k in keys]
        cells += [_md(summary["ratios"][r][metric], 2) for r in ratio_keys]
        lines.append(f"| {label}, {unit} | " + " | ".join(cells) + " |")
    cpu = t.cpu_lines(summary, markdown=True)
    lines.extend([""] + cpu if cpu else [])
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for v in summary["targets"]:
        if v["ratio"] is not None:
            lines.append(f"| {v['target']} | {v['ratio']:.2f} | {t.shown(v)} |")
    if "done_when" in summary:
        lines += ["", f"Issue 16, Done when ({t.size_check(summary['parameters'])}):", "",
                  "| target | measured | need | verdict |", "|---|---|---|---|"]
        for v in summary["done_when"]:
            shown = "-" if v["ratio"] is None else f"{v['ratio']:.2f}"
            lines.append(f"| {v['target']} | {shown} | {t.need(v)} | {t.shown(v)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    # mirror_report.py RESULT.json [--markdown]: render a saved ``mirror.py --json`` run again.
    with open(sys.argv[1], encoding="utf-8") as f:
        saved = json.load(f)
    print(render_markdown(recheck(saved)) if "--markdown" in sys.argv[2:] else render(recheck(saved)))
