"""The mirror benchmark's report, its resilience to a failing column, and its GlusterFS column's cleanup."""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, "scripts", "bench"))

import gluster  # noqa: E402
import mirror  # noqa: E402
import mirror_report  # noqa: E402
from columns import Column  # noqa: E402

PARAMS = dict(size_mib=1, files=1, txns=1, samples=1, pgbench_seconds=1, reps=2, quick=False,
              pgbench_clients=4, pgbench_scale=5)


def test_ratios_are_against_the_baseline_and_glusterfs_of_the_same_run():
    raw = {"b": {"seq_write_fsync": [100.0, 300.0], "small_files": [1000.0, 1000.0]},
           "c": {"seq_write_fsync": [50.0, 50.0], "small_files": [400.0, 420.0]},
           "e": {"seq_write_fsync": [80.0, 60.0], "small_files": [600.0, 600.0]},
           "g": {"seq_write_fsync": [35.0, 35.0], "small_files": [150.0, 150.0]}}
    summary = mirror_report.summarize(PARAMS, raw, ["skipped: d async: test"], mirror.CONFIGS)
    assert summary["ratios"]["c/b"]["seq_write_fsync"] == 0.25           # medians 50 / 200
    assert summary["ratios"]["e/g"]["small_files"] == 4.0
    assert summary["ratios"]["d/b"]["seq_write_fsync"] is None
    verdicts = {t["target"]: (t["result"], t["ratio"]) for t in summary["targets"]}
    assert verdicts["barrier sequential write + fsync >= 2x GlusterFS"] == ("PASS", 2.0)
    assert verdicts["sync 4 KiB files >= 3x GlusterFS"][0] == "MISS"
    assert verdicts["barrier pgbench >= 0.60 of interception"] == ("n/a", None)
    text = mirror_report.render(summary)
    assert "g glusterfs" in text and "d async" not in text.splitlines()[3]
    assert "   e/g" in text and "d/b" not in text
    assert text.splitlines()[-1] == "note: skipped: d async: test"
    markdown = mirror_report.render_markdown(summary).splitlines()
    assert markdown[2] == "| sequential write + fsync, MB/s | 200 | 50 | 70 | 35 | 0.25 | 0.35 | 1.43 | 2.00 |"
    assert "| barrier sequential write + fsync >= 2x GlusterFS | 2.00 | PASS |" in markdown


def test_a_failing_column_is_reported_and_the_others_figures_kept(tmp_path):
    args = mirror.parse_args(["--configs", "a", "--workloads", "seq,small", "--size-mib", "1", "--files", "3",
                              "--reps", "2", "--workdir", str(tmp_path)])
    bench = mirror.Bench(args)
    broken = Column(bench.root, "b")              # never started: its directory is missing
    broken.directory = os.path.join(bench.root, "missing")
    bench.columns.append(broken)
    results: dict = {}
    bench.setup()
    try:
        bench.run(results)
    finally:
        bench.teardown()
    assert sorted(results) == ["a"]
    assert [len(results["a"][m]) for m in ("seq_write_fsync", "small_files")] == [2, 2]
    failures = [n for n in bench.notes if n.startswith("b intercept")]
    assert [n.split(" failed")[0] for n in failures] == ["b intercept seq", "b intercept small"]


@pytest.mark.skipif(os.geteuid() != 0 or gluster.available() is not None,
                    reason="needs root and glusterfs-server")
def test_glusterfs_volume_replicates_and_leaves_nothing_behind(tmp_path):
    volume = gluster.GlusterVolume(str(tmp_path))
    try:
        volume.start()
        pids = volume.pids()
        with open(os.path.join(volume.mountpoint, "f"), "wb") as f:
            f.write(b"x" * 5000)
        bricks = [open(os.path.join(tmp_path, f"node{i}", "brick", "f"), "rb").read() for i in (1, 2)]
    finally:
        volume.stop()
    assert bricks == [b"x" * 5000] * 2
    assert not any(os.path.exists(f"/run/netns/{ns}") for ns in volume.namespaces)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    with open("/proc/self/mounts") as f:
        assert volume.mountpoint not in f.read()
