"""The campaign's quorum-service faults (``hamirror/lab/chaos_etcd.py``, issue 18): which options
allow them, the leader found in real ``etcdctl`` output, the minority partition's two sides, and
(root) the faults and their undoing on a real etcd lab without agents."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import random
import subprocess
import time

import pytest

from hamirror.lab import chaos_etcd, control, etcdlab
from hamirror.lab.chaos_double import CampaignInjector
from hamirror.lab.chaos_faults import Event
from hamirror.lab.naming import ADDRESSES, CLIENT, ETCD_CLIENT_PORT, ETCD_PEER_PORT, NODES
from hamirror.lab.testing import temporary_lab, unavailable
from tests.conftest import REPO
from tests.etcd_cluster import etcd_cluster, needs_etcd  # noqa: F401 - the fixture


def _chaos_script():
    spec = importlib.util.spec_from_file_location("chaos_script", os.path.join(REPO, "scripts", "chaos.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_fault_of_the_campaign_has_its_method():
    chaos = _chaos_script()
    missing = [f for f in chaos.ALL if not callable(getattr(CampaignInjector, "_" + f.replace("-", "_"), None))]
    assert missing == []


def test_the_quorum_service_faults_need_etcd(capsys):
    chaos = _chaos_script()
    plan = ",".join(chaos_etcd.ETCD)
    args = chaos.parse_args(["--etcd", "--plan", plan])
    assert args.plan == list(chaos_etcd.ETCD) and set(chaos_etcd.ETCD) <= set(args.faults)
    assert set(chaos_etcd.ETCD) & set(chaos.parse_args(["--witness", "--partitions"]).faults) == set()
    for without in (["--plan", "etcd-member"], ["--witness", "--faults", "part-primary-minority,freeze"]):
        with pytest.raises(SystemExit):
            chaos.parse_args(without)
        err = capsys.readouterr().err
        assert "need options not given" in err and "--etcd" in err
    args = chaos.parse_args(["--etcd", "--partitions", "--faults", "etcd-down,part-peers,part-primary-minority"])
    assert args.faults == ["etcd-down", "part-peers", "part-primary-minority"]


@pytest.mark.parametrize("primary, kept", list(itertools.product(NODES, etcdlab.HOSTS)))
def test_the_minority_partition_cuts_exactly_between_its_two_sides(primary, kept):
    secondary = next(n for n in NODES if n != primary)
    cuts = chaos_etcd.minority_cuts(primary, secondary, kept)
    minority = {primary, kept}
    majority = {secondary} | (set(etcdlab.HOSTS) - {kept})
    assert sorted(map(frozenset, cuts), key=sorted) == sorted((frozenset({a, b}) for a in minority for b in majority),
                                                              key=sorted)
    assert len(cuts) == len(set(map(frozenset, cuts))) and CLIENT not in {h for c in cuts for h in c}
    # the etcd side first: the primary never has its peer cut while it still reaches a quorum
    assert cuts[-1] == (primary, secondary)


@needs_etcd
@pytest.mark.timeout(60)
def test_the_leader_is_read_from_real_etcdctl_output_with_a_member_down(etcd_cluster):
    urls = {url: f"m{i}" for i, url in enumerate(etcd_cluster.urls)}

    def status() -> str:
        return subprocess.run(["etcdctl", f"--endpoints={','.join(etcd_cluster.urls)}", "--command-timeout=2s",
                               "endpoint", "status", "-w", "json"], capture_output=True, text=True, timeout=30).stdout

    leader = etcd_cluster.wait_leader()
    assert etcdlab.leader_in(status(), urls) == f"m{leader}"
    follower = next(i for i in range(3) if i != leader)
    etcd_cluster.kill(follower)                  # etcdctl exits 1 and prints the members that answered
    assert etcdlab.leader_in(status(), urls) == f"m{leader}"
    etcd_cluster.kill(leader)                    # one member left: it leads nothing
    assert etcdlab.leader_in(status(), urls) is None
    assert etcdlab.leader_in("", urls) is None and etcdlab.leader_in("not json", urls) is None


def _leader_and_term(lab, host: str) -> tuple[str | None, int | None]:
    """(the leading member, its raft term) as the members that host reaches report them."""
    result = lab.exec(host, "etcdctl", f"--endpoints={','.join(etcdlab.client_url(h) for h in etcdlab.HOSTS)}",
                      "--command-timeout=1s", "endpoint", "status", "-w", "json")
    leader = etcdlab.leader_in(result.stdout)
    terms = {e["Endpoint"]: e["Status"]["raftTerm"] for e in json.loads(result.stdout or "[]")}
    return leader, terms.get(etcdlab.client_url(leader)) if leader else None


def _reach(lab, host: str, target: str, port: int) -> str:
    return lab.probe(host, ADDRESSES[target], port, timeout=1.0)


@pytest.mark.root
@needs_etcd
@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
@pytest.mark.timeout(240)
def test_etcd_faults_and_their_undoing_on_a_real_etcd_lab(tmp_path):
    """The leader kill hits the member etcdctl names and ends with all three healthy; members left
    down are booted by the restore; the minority partition leaves the kept member (the leader)
    without a quorum while the majority side elects one, which stays leader after the heal."""
    with temporary_lab(str(tmp_path / "lab"), "--etcd") as lab:
        injector = chaos_etcd.EtcdInjector(lab.paths, random.Random(5), lambda: None, print)
        before = etcdlab.leader(lab.paths)
        ev = injector.inject(Event(1, 1, "etcd-leader"))
        assert (ev.node, ev.skipped, ev.error) == (before, None, None) and before in etcdlab.HOSTS
        assert "etcd healthy" in ev.detail[0], ev.detail
        assert etcdlab.down(lab.paths) == [] and etcdlab.leader(lab.paths) in etcdlab.HOSTS

        for host in ("etcd2", "etcd3"):
            control.kill(lab.paths, host)
        assert etcdlab.down(lab.paths) == ["etcd2", "etcd3"]
        assert injector.boot_etcd(etcdlab.down(lab.paths)) + injector.etcd_healthy() == ["booted etcd2",
                                                                                         "booted etcd3"]
        assert etcdlab.down(lab.paths) == []

        kept = etcdlab.leader(lab.paths)          # the leader cut off with the primary: the hardest case
        majority = [h for h in etcdlab.HOSTS if h != kept]
        for a, b in chaos_etcd.minority_cuts("node1", "node2", kept):
            control.cut(lab.paths, a, b)
        try:
            assert [_reach(lab, "node1", kept, ETCD_CLIENT_PORT), _reach(lab, "node1", majority[0], ETCD_CLIENT_PORT),
                    _reach(lab, "node1", "node2", 9), _reach(lab, kept, majority[1], ETCD_PEER_PORT),
                    _reach(lab, "node2", majority[0], ETCD_CLIENT_PORT)] == ["reachable", "cut", "cut", "cut", "reachable"]
            alone = lab.exec(kept, "etcdctl", f"--endpoints={etcdlab.client_url(kept)}",
                             "--command-timeout=3s", "endpoint", "health")
            assert alone.returncode != 0, alone.stdout      # no quorum: a read that needs a leader fails
            time.sleep(3)                                   # a few election timeouts alone
            before = _leader_and_term(lab, majority[0])
            assert before[0] in majority
        finally:
            control.heal(lab.paths)
        # The member that comes back does not depose the majority's leader (etcd's pre-vote): without
        # it, it had raised its term alone and the cluster had no leader for seconds after the heal.
        seen = []
        for _ in range(8):
            time.sleep(0.5)
            seen.append(_leader_and_term(lab, majority[0]))
        assert set(seen) == {before}, seen
        assert injector.etcd_healthy() == []
