"""The mirror benchmark's report (ratios, two-copy ceiling, targets, CPU per operation), its resilience
to a failing column, its CPU probe, its GlusterFS column's cleanup, and its C passthrough columns."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, "scripts", "bench"))

import cpassthrough  # noqa: E402
import cputime  # noqa: E402
import gluster  # noqa: E402
import mirror  # noqa: E402
import mirror_report  # noqa: E402
import mirror_targets  # noqa: E402
import workloads  # noqa: E402
from columns import Column  # noqa: E402

# The benchmark's pieces, its CPU probe and a GlusterFS pair (two glusterd): alone, after the
# parallel step (scripts/test.sh).
pytestmark = pytest.mark.serial

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
    assert "note: skipped: d async: test" in text.splitlines()
    markdown = mirror_report.render_markdown(summary).splitlines()
    assert markdown[2] == "| sequential write + fsync, MB/s | 200 | 50 | 70 | 35 | 0.25 | 0.35 | 1.43 | 2.00 |"
    assert "| barrier sequential write + fsync >= 2x GlusterFS | 2.00 | PASS |" in markdown


def test_the_link_engine_is_chosen_shown_and_stored(monkeypatch):
    """Stream by default (what a new cluster runs), $HAMIRROR_LINK_ENGINE still works, --engine wins;
    the header line and the JSON's parameters say which one a result used."""
    monkeypatch.delenv("HAMIRROR_LINK_ENGINE", raising=False)
    assert mirror.parse_args([]).engine == "stream"
    monkeypatch.setenv("HAMIRROR_LINK_ENGINE", "curve")
    assert mirror.parse_args([]).engine == "curve"
    assert mirror.parse_args(["--engine", "aead"]).engine == "aead"
    summary = mirror_report.summarize({**PARAMS, "engine": "stream"}, {"b": {"small_files": [1.0]}}, [], mirror.CONFIGS)
    assert summary["parameters"]["engine"] == "stream"
    assert mirror_report.render(summary).splitlines()[1].endswith("median of 2 interleaved runs, link engine stream")
    assert mirror_report.render(mirror_report.summarize(PARAMS, {}, [], mirror.CONFIGS)).splitlines()[1].endswith(
        "link engine not recorded")       # a result saved before the engine was


def test_small_files_runs_are_kept_until_the_bench_ends(tmp_path):
    """A bench of several runs removes no run's many files between runs (workloads.py, above
    ``_cleanup``: ext4 without a journal slows allocations in a group that freed inodes in the last
    60 s); a caller that does not keep them gets its directory back empty."""
    kept, removed = tmp_path / "kept", tmp_path / "removed"
    kept.mkdir()
    removed.mkdir()
    workloads.small_files(str(kept), 7, keep=True)
    workloads.small_files(str(removed), 7)
    assert [len(files) for _, _, files in os.walk(kept)] == [0, 7]
    assert list(removed.iterdir()) == []


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
    assert sorted(bench.cpu) == ["a"]                      # CPU per operation of the runs that ran
    assert {job: sorted(per) for job, per in bench.cpu["a"].items()} == \
        {"seq": ["application", "total"], "small": ["application", "total"]}
    assert all(len(v) == 2 for per in bench.cpu["a"].values() for v in per.values())
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


def test_two_copy_ceiling_and_issue16_verdicts_come_from_the_run():
    raw = {"a": {"seq_write_fsync": [400.0, 800.0], "small_files": [4000.0, 4000.0]},
           "b": {"seq_write_fsync": [560.0, 560.0], "small_files": [2400.0, 2000.0]},
           "c": {"seq_write_fsync": [210.0, 210.0], "small_files": [720.0, 720.0], "fsync4k_p50": [1.0, 1.2]},
           "e": {"seq_write_fsync": [255.0, 255.0], "small_files": [900.0, 900.0], "pgbench_tps": [1500.0, 1500.0]},
           "g": {"seq_write_fsync": [240.0, 240.0], "small_files": [300.0, 300.0], "fsync4k_p50": [1.1, 1.1],
                 "pgbench_tps": [1000.0, 1000.0]}}
    params = dict(PARAMS, size_mib=1024, files=5000, txns=3000, pgbench_seconds=15)
    summary = mirror_report.summarize(params, raw, [], mirror.CONFIGS)
    assert summary["median"]["k"] == {"seq_write_fsync": 300.0}          # plain's median 600 / 2
    assert summary["ratios"]["e/k"]["seq_write_fsync"] == 0.85
    assert summary["ratios"]["g/k"]["seq_write_fsync"] == 0.8
    assert summary["ratios"]["e/k"]["small_files"] is None               # the ceiling is sequential only
    done = {v["target"].split(" (")[0]: (v["result"], v["ratio"]) for v in summary["done_when"]}
    assert done["1 GiB + fsync: barrier >= 0.85 of the two-copy ceiling"] == ("PASS", 0.85)
    assert done["1 GiB + fsync: sync >= 0.70 of the two-copy ceiling"] == ("PASS", 0.7)
    assert done["pgbench: barrier >= 1.5x GlusterFS"] == ("PASS", 1.5)
    assert done["pgbench: sync >= 1.3x GlusterFS"] == ("n/a", None)
    assert done["4 KiB files: barrier >= 3x GlusterFS"] == ("PASS", 3.0)
    assert done["4 KiB files: sync >= 2.5x GlusterFS"] == ("MISS", 2.4)
    assert done["4 KiB write+fsync p50: sync no slower than GlusterFS"] == ("PASS", 1.0)   # 1.1 / 1.1
    assert done["interception >= 0.9 of plain on 1 GiB + fsync"] == ("PASS", 560 / 600)
    assert done["interception >= 0.5 of plain on 4 KiB files"] == ("PASS", 0.55)
    text = mirror_report.render(summary).splitlines()
    assert "k ceiling" in text[3] and "   e/k" in text[3]
    assert text[-12] == ("issue 16, Done when: this run is at issue 16's sizes "
                         "(1 GiB, 5,000 files, 3,000 txns, pgbench 4 clients 15 s, reps >= 2)")
    assert text[-3] == "PASS  4 KiB write+fsync p50: sync no slower than GlusterFS (c/g): 1.00 (need <= 1.00)"
    assert text[-1] == "PASS  interception >= 0.5 of plain on 4 KiB files (b/a): 0.55 (need >= 0.50)"
    raw["c"]["fsync4k_p50"] = [1.2, 1.2]
    slower = mirror_report.summarize(dict(params, files=1000), raw, [], mirror.CONFIGS)
    assert slower["done_when"][8]["result"] == "MISS"
    last = mirror_report.render(slower).splitlines()
    assert last[-12].startswith("issue 16, Done when: NOT at issue 16's sizes, a smoke check and not a result: "
                                "files=1000 (issue: 5000)")
    assert "| 1 GiB + fsync: barrier >= 0.85 of the two-copy ceiling (e/k) | 0.85 | >= 0.85 | PASS |" in \
        mirror_report.render_markdown(slower)


def test_cpu_per_operation_is_reported_per_process_and_workload():
    cpu = {"c": {"small": {"application": [0.2, 0.4, 0.3], "mount": [0.5, 0.7, 0.6], "total": [0.7, 1.1, 0.9]}},
           "a": {"small": {"application": [0.1, 0.1, 0.1], "total": [0.1, 0.1, 0.1]}}}
    summary = mirror_report.summarize(dict(PARAMS, reps=3), {"a": {"small_files": [1.0] * 3}}, [], mirror.CONFIGS, cpu)
    assert summary["cpu"]["median"]["c"]["small"] == {"application": 0.3, "mount": 0.6, "total": 0.9}
    assert summary["cpu"]["runs"] is cpu
    text = mirror_report.render(summary).splitlines()
    start = text.index("CPU per operation, ms (user+sys from /proc of each process over the timed part; "
                       "median of 3 runs):")
    assert text[start + 1:start + 3] == [
        "  small per file        a plain          0.100 = application 0.100",
        "  small per file        c sync           0.900 = application 0.300 + mount 0.600"]
    assert "| small, file | c sync | 0.900 | application 0.300, mount 0.600 |" in \
        mirror_report.render_markdown(summary).splitlines()


BURNER = """
import subprocess, sys
for _ in sys.stdin:      # each line: run a child that burns 0.3 s of CPU, wait for it, say so
    subprocess.run([sys.executable, "-c", "import time\\nwhile time.process_time() < 0.3: pass"])
    print("done", flush=True)
"""


def test_probe_counts_a_process_and_the_children_it_waited_for():
    daemon = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        probe = cputime.Probe(lambda: [("daemon", daemon.pid)])
        probe.begin()
        daemon.stdin.write("go\n")
        daemon.stdin.flush()
        assert daemon.stdout.readline() == "done\n"
        seconds = probe.end()
    finally:
        daemon.kill()
        daemon.wait()
    assert seconds["daemon"] >= 0.29                       # the waited-for child's 0.3 s, in 10 ms ticks
    assert seconds["application"] < 0.2                   # this process only waited


def test_a_root_is_not_counted_in_another_roots_tree():
    procs = {1: cputime.Proc(0, "glusterd", 1.0, 0.5), 2: cputime.Proc(1, "glusterfsd", 3.0, 0.0),
             3: cputime.Proc(1, "helper", 0.25, 0.0)}
    children = cputime.children_of(procs)
    assert cputime.tree_seconds(procs, children, 1, {1, 2}) == 1.75
    assert cputime.tree_seconds(procs, children, 2, {1, 2}) == 3.0
    assert cputime.tree_seconds(procs, children, 9, {1, 9}) is None


def test_glusterfs_processes_are_named_per_node():
    seen = [(1, 10, "glusterd"), (1, 11, "glusterfsd"), (1, 12, "glusterfs"), (1, 13, "glusterfs"),
            (2, 20, "glusterd"), (2, 21, "glusterfsd"), (2, 22, "glusterfs"), (2, 23, "glusterfsd")]
    assert gluster.name_processes(12, seen) == [
        ("glusterfs client", 12), ("glusterd n1", 10), ("brick n1", 11), ("self-heal n1", 13),
        ("glusterd n2", 20), ("brick n2", 21), ("self-heal n2", 22), ("brick n2 23", 23)]


def test_the_c_passthrough_columns_run_only_when_named_and_are_put_against_plain():
    assert mirror.parse_args([]).configs == "abcdeg"
    assert mirror.parse_args(["--configs", "wfba"]).configs == "abfw"
    raw = {"a": {"small_files": [20000.0, 20000.0]}, "b": {"small_files": [2000.0, 2000.0]},
           "f": {"small_files": [4000.0, 4000.0]}, "w": {"small_files": [5000.0, 5000.0]}}
    summary = mirror_report.summarize(PARAMS, raw, [], mirror.CONFIGS)
    assert {r: summary["ratios"][r]["small_files"] for r in ("b/a", "f/a", "w/a", "b/f")} == \
        {"b/a": 0.1, "f/a": 0.2, "w/a": 0.25, "b/f": 0.5}
    text = mirror_report.render(summary).splitlines()
    assert text[3].split() == ["metric", "unit", "a", "plain", "b", "intercept", "f", "passthru", "w", "passthr-wb",
                               "b/a", "f/a", "w/a", "b/f"]
    assert text[4].split()[-4:] == ["0.10", "0.20", "0.25", "0.50"]


@pytest.mark.skipif(os.geteuid() != 0 or cpassthrough.available() is not None,
                    reason="needs root, cc and libfuse3-dev")
@pytest.mark.parametrize("key", ["f", "w"])
def test_c_passthrough_column_passes_files_through_and_leaves_nothing_behind(tmp_path, key):
    """The column compiles libfuse's example, mounts it over a fresh directory and ends it by PID."""
    column = Column(str(tmp_path), key)
    try:
        column.start()
        pids = column.pids()
        with open(os.path.join(column.directory, "f"), "wb") as f:
            f.write(b"x" * 5000)
        assert column.dead() is None
        with open(os.path.join(column.base, "source", "f"), "rb") as f:
            landed = f.read()
        os.unlink(os.path.join(column.directory, "f"))
        left = os.listdir(os.path.join(column.base, "source"))
    finally:
        column.stop()
    assert landed == b"x" * 5000
    assert left == []
    assert [name for name, _ in column.processes()] == ["passthrough_ll"]
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    with open("/proc/self/mounts") as f:
        assert column.directory not in f.read()


def _topdir(path: str) -> bool:
    flags = bytearray(8)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, workloads.FS_IOC_GETFLAGS, flags, True)
    finally:
        os.close(fd)
    return bool(int.from_bytes(flags[:4], "little") & workloads.FS_TOPDIR_FL)


@pytest.mark.skipif(os.geteuid() != 0 or cpassthrough.available() is not None,
                    reason="needs root, cc and libfuse3-dev")
def test_spread_marks_the_directories_the_runs_are_made_in(tmp_path):
    """--spread: ext4's +T on the plain directory and under the passthrough's mount, none without it;
    a file system that cannot keep the flag stops the column instead of measuring it unspread."""
    if not workloads.spread(str(tmp_path)):
        pytest.skip("the temporary directory's file system has no +T")
    assert mirror.parse_args(["--spread"]).spread and not mirror.parse_args([]).spread
    plain, bare = Column(str(tmp_path), "a", spread=True), Column(str(tmp_path / "x"), "a")
    plain.start()
    bare.start()
    passthrough = Column(str(tmp_path), "f", spread=True)
    try:
        passthrough.start()
        spread_source = _topdir(passthrough.passthrough.source)
    finally:
        passthrough.stop()
    assert (_topdir(plain.directory), _topdir(bare.directory), spread_source) == (True, False, True)
    shm = tempfile.mkdtemp(dir="/dev/shm")
    try:
        with pytest.raises(RuntimeError, match=f"cannot set ext4's \\+T on {shm}/a-plain/primary"):
            Column(shm, "a", spread=True).start()
    finally:
        shutil.rmtree(shm)


def test_the_page_cache_warm_up_reads_holes_and_leaves_nothing(tmp_path):
    """The warm-up before each sequential run fills the page cache by reading a sparse file
    (holes: no disk I/O, nothing dirty, nothing for the flusher) and deletes it: it reads the
    whole size, writes nothing, and the directory is as it was."""
    before = os.listdir(tmp_path)
    io = _io()
    workloads.warm_page_cache(str(tmp_path), 64)
    after = _io()
    assert after["rchar"] - io["rchar"] >= 64 << 20
    assert after["wchar"] - io["wchar"] < 1 << 20, "the warm-up wrote its pages (it must read holes)"
    assert os.listdir(tmp_path) == before


def _io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {key: int(value) for key, value in (line.split(": ") for line in f)}


def test_a_ratio_whose_column_measured_different_things_is_unsure_not_pass(tmp_path):
    """The second issue-size run of 2026-12-06: plain's 4 KiB files at 40,194, 2,096 and 7,930 files/s
    (ext4's inode allocator after a clean-up) made interception 0.54 of plain, a PASS on paper. A
    column whose fastest repetition is more than twice its slowest makes its ratios UNSURE, named,
    in the table, the Markdown and a saved run rendered again; steady columns keep their verdict."""
    raw = {"a": {"seq_write_fsync": [1499.0, 1522.0, 1521.0], "small_files": [40194.0, 2096.0, 7930.0]},
           "b": {"seq_write_fsync": [1477.0, 1303.0, 1119.0], "small_files": [4247.0, 4400.0, 4300.0]},
           "e": {"seq_write_fsync": [610.0, 611.0, 579.0]}}
    params = dict(PARAMS, size_mib=1024, files=5000, txns=3000, pgbench_seconds=15, reps=3)
    summary = mirror_report.summarize(params, raw, [], mirror.CONFIGS)
    done = {v["target"].split(" (")[0]: v for v in summary["done_when"]}
    small = done["interception >= 0.5 of plain on 4 KiB files"]
    assert (small["result"], small["unsteady"]) == ("UNSURE", "a's repetitions 2,096-40,194")
    assert done["interception >= 0.9 of plain on 1 GiB + fsync"]["result"] == "MISS"   # 1303 / 1521: steady
    assert done["1 GiB + fsync: barrier >= 0.85 of the two-copy ceiling"]["result"] == "MISS"   # k from a's seq
    assert "UNSURE (a's repetitions 2,096-40,194) interception >= 0.5 of plain on 4 KiB files (b/a): 0.54 " \
           "(need >= 0.50)" in mirror_report.render(summary).splitlines()
    assert "| interception >= 0.5 of plain on 4 KiB files (b/a) | 0.54 | >= 0.50 | UNSURE (a's repetitions " \
           "2,096-40,194) |" in mirror_report.render_markdown(summary)
    saved = dict(summary, done_when=[dict(v, result="PASS") for v in summary["done_when"]])   # as saved before
    for v in saved["done_when"]:
        v.pop("unsteady", None)
    assert mirror_report.recheck(saved)["done_when"] == summary["done_when"]
    raw["b"]["seq_write_fsync"] = [1477.0, 700.0, 1400.0]   # the numerator unsteady: named as well
    again = {v["target"].split(" (")[0]: v for v in mirror_report.summarize(params, raw, [], mirror.CONFIGS)["done_when"]}
    assert again["interception >= 0.9 of plain on 1 GiB + fsync"]["unsteady"] == "b's repetitions 700-1,477"


def test_trees_refuses_a_column_that_does_not_run_its_own_tree_or_engine(monkeypatch):
    """scripts/bench/trees.py: a column whose processes loaded another tree's extensions (the trap
    of ``python -m hamirror`` run from inside a tree) is refused, naming the process and the tree;
    so is one that does not run the link engine asked for (without $HAMIRROR_LINK_ENGINE a mount
    runs curve, not the stream engine a new cluster runs)."""
    import trees
    from hamirror.fs import _lowlevel   # noqa: F401  (this process then maps REPO/hamirror/fs/...)
    from hamirror.link import session

    assert trees.parse_args(["old", "new"]).engine == os.environ.get(session.ENGINE_ENV, session.STREAM)
    assert trees.parse_args(["old", "new", "--engine", "curve"]).engine == session.CURVE

    class Fake:
        base = "/srv/x/old/e-barrier"

        def processes(self):
            return [("mount", os.getpid())]

    running = os.environ.get(session.ENGINE_ENV)   # /proc/self/environ: as this process started
    if running is not None:
        trees.check_tree(Fake(), REPO, running)   # this process runs REPO's extension
    with pytest.raises(SystemExit, match=r"^mount of /srv/x/old/e-barrier does not run from /nonexistent "):
        trees.check_tree(Fake(), "/nonexistent", session.STREAM)
    other = session.AEAD if running != session.AEAD else session.STREAM
    with pytest.raises(SystemExit, match=rf"^mount of /srv/x/old/e-barrier does not run the {other} link engine$"):
        trees.check_tree(Fake(), REPO, other)


def test_freed_memory_is_held_only_for_the_run_and_the_settings_go_back(tmp_path):
    """scripts/bench/guestmem.py: the VM's free page reporting is held during a run (its sequential
    figures doubled with it) and the values found are written back, also when the run fails; where
    the knobs are absent or cannot be written nothing changes, and the report says which."""
    import guestmem
    (tmp_path / "min_free_ms").write_text("0\n")
    (tmp_path / "max_waiting_mib").write_text("1024\n")
    found = {"min_free_ms": "0", "max_waiting_mib": "1024"}

    def knobs() -> dict[str, str]:
        return {name: (tmp_path / name).read_text() for name in found}

    with guestmem.freed_memory_held(True, str(tmp_path)) as said:
        assert knobs() == {"min_free_ms": "300000", "max_waiting_mib": "16384"}
    assert said == ("freed memory held in the guest (min_free_ms 300000, max_waiting_mib 16384 during the run; "
                    "min_free_ms 0, max_waiting_mib 1024 before and after)")
    assert knobs() == found
    with pytest.raises(KeyboardInterrupt):
        with guestmem.freed_memory_held(True, str(tmp_path)):
            raise KeyboardInterrupt
    assert knobs() == found
    with guestmem.freed_memory_held(False, str(tmp_path)) as said:
        assert knobs() == found
    assert said == "free page reporting as found (min_free_ms 0, max_waiting_mib 1024)"
    (tmp_path / "max_waiting_mib").unlink()
    with guestmem.freed_memory_held(True, str(tmp_path)) as said:
        pass
    assert said == "no free page reporting here (nothing changed)"
    assert (tmp_path / "min_free_ms").read_text() == "0"
    os.symlink("/proc/version", tmp_path / "max_waiting_mib")   # readable, never writable, even by root
    with guestmem.freed_memory_held(True, str(tmp_path)) as said:
        pass
    assert said.endswith("; could not write max_waiting_mib)")
    assert (tmp_path / "min_free_ms").read_text() == "0"       # the one written is given back
    import trees
    assert mirror.parse_args([]).free_pages == trees.parse_args(["old", "new"]).free_pages == "hold"


def test_a_plain_directory_slower_than_interception_gets_a_caveat_beside_the_ceiling():
    """The ceiling is half of the plain directory (the issue's); when the interception mount wrote
    faster than that directory, the report says so and gives the replicated columns against half of
    the interception column too, without changing a verdict."""
    raw = {"a": {"seq_write_fsync": [1400.0, 1500.0]}, "b": {"seq_write_fsync": [2000.0, 2000.0]},
           "e": {"seq_write_fsync": [850.0, 850.0]}}
    summary = mirror_report.summarize(PARAMS, raw, [], mirror.CONFIGS)
    last = mirror_report.render(summary).splitlines()[-1]
    assert last == ("caveat: the plain directory wrote its file + fsync slower than the interception mount "
                    "(b/a 1.38): the two-copy ceiling (a / 2) understates what two copies reach here; "
                    "against half of the interception column: e/(b/2) 0.85")
    verdicts = {v["target"]: v["result"] for v in summary["done_when"]}
    assert verdicts["1 GiB + fsync: barrier >= 0.85 of the two-copy ceiling (e/k)"] == "PASS"   # 850 / 725
    raw["b"]["seq_write_fsync"] = [1300.0, 1300.0]
    assert "caveat" not in mirror_report.render(mirror_report.summarize(PARAMS, raw, [], mirror.CONFIGS))


def test_a_column_with_no_run_neither_makes_nor_enters_the_caveat():
    """A median of no repetition is NaN: no caveat on a NaN plain or interception column, and a NaN
    replicated column is left out of the comparison rather than printed as nan."""
    nan = float("nan")
    assert mirror_targets.ceiling_caveat({"a": {"seq_write_fsync": nan}, "b": {"seq_write_fsync": 2000.0}}) is None
    assert mirror_targets.ceiling_caveat({"a": {"seq_write_fsync": 1400.0}, "b": {"seq_write_fsync": nan}}) is None
    said = mirror_targets.ceiling_caveat({"a": {"seq_write_fsync": 1400.0}, "b": {"seq_write_fsync": 2000.0},
                                          "c": {"seq_write_fsync": nan}, "e": {"seq_write_fsync": 850.0}})
    assert said is not None and said.endswith("against half of the interception column: e/(b/2) 0.85")
