"""The verify's pure parts: ranges from block sums, the refusal's exact words, the outcome of
several directories, and how status and metrics show it (no processes; see test_verify_mirror.py
and test_verify_lab.py for the real thing)."""

from __future__ import annotations

from types import SimpleNamespace

from hamirror.agent import verify
from hamirror.agent.http import render_metrics
from hamirror.agent.status import render_table
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import MirrorHealth, PeerView
from hamirror.resync.verify import Difference, differing_ranges, summary


def test_differing_blocks_become_ranges_clipped_to_the_larger_size():
    ours, theirs = [1, 2, 3, 4, 5], [1, 9, 9, 4]
    # blocks 1-2 differ (one range), block 4 only here (clipped at 4 * 4096 + 10)
    assert differing_ranges(8192, ours, theirs, 4096, 8192 + 4 * 4096 + 10) == [(12288, 8192), (8192 + 16384, 10)]
    assert differing_ranges(0, [7], [7], 4096, 5) == []
    assert differing_ranges(0, [], [3], 4096, 100) == [(0, 100)]


def test_summary_counts_bytes_of_content_and_whole_entries_not_of_modes():
    found = [Difference("a", "content", 4096, 4096), Difference("b", "mode", detail="600 here, 644 on the peer"),
             Difference("c", "missing", 0, 10)]
    doc = summary(found, None, None, 1.5)
    assert (doc["result"], doc["out_of_sync_bytes"], doc["remaining_bytes"]) == ("differences", 4106, 4106)
    repaired = summary(found, found, [], 2.0)
    assert (repaired["result"], repaired["remaining"], repaired["repaired"]) == ("repaired", [], True)
    assert summary([], None, None, 0.1)["result"] == "clean"
    many = summary([Difference("f", "content", i * 8192, 4096) for i in range(1001)], None, None, 1.0)
    assert (len(many["differences"]), many["difference_count"], many["out_of_sync_bytes"]) == (1000, 1001, 1001 * 4096)


def runner(state: NodeState, peer_state: NodeState | None, uptodate: bool = True,
           mirror: MirrorHealth = MirrorHealth.STREAMING) -> SimpleNamespace:
    return SimpleNamespace(name="db", state=state, peer=PeerView(alive=peer_state is not None, state=peer_state,
                                                                uptodate=uptodate),
                           obs=SimpleNamespace(mirror=mirror))


def test_the_refusal_says_what_each_node_is():
    assert verify.refusal(runner(NodeState.PRIM, NodeState.SECOND)) is None
    head = "verify needs db PRIM on one node and SECOND up to date on the other: "
    assert verify.refusal(runner(NodeState.PRIM, NodeState.SECOND, uptodate=False, mirror=MirrorHealth.SYNCING)) == \
        head + "it is PRIM here and SECOND (not up to date) on the peer; its mirror is syncing; nothing was compared"
    assert verify.refusal(runner(NodeState.ALONE, None, mirror=MirrorHealth.ALONE)) == \
        head + "it is ALONE here and not heard on the peer; nothing was compared"
    assert verify.refusal(runner(NodeState.WAIT, NodeState.ALONE)) == \
        head + "it is WAIT here and ALONE on the peer; nothing was compared"


def test_several_directories_make_one_outcome_with_each_path_under_its_directory():
    one = summary([Difference("x", "content", 0, 4096)], None, None, 1.0)
    two = summary([], None, None, 3.0)
    merged = verify.merge([one, two], ["/srv/a", "/srv/b"])
    assert merged["result"] == "differences" and merged["seconds"] == 3.0
    assert merged["differences"] == [{"path": "x", "kind": "content", "offset": 0, "length": 4096, "detail": "",
                                      "dir": "/srv/a"}]
    assert verify.merge([None, None], ["/a", "/b"]) is None
    failed = {**two, "result": "failed", "error": "the peer was lost during the verify: gone"}
    assert verify.merge([one, failed], ["/a", "/b"])["error"] == "/b: the peer was lost during the verify: gone"


def document(last: dict | None) -> dict:
    return {"node": "n1", "cluster": "c", "peer": {"name": "n2", "alive": True},
            "modules": [{"name": "db", "state": "PRIM", "peer_state": "SECOND", "uptodate": True, "last_verify": last}]}


def test_status_and_metrics_show_the_last_verify():
    last = verify.merge([summary([Difference("x", "content", 8192, 4096)], None, None, 0.4)], ["/srv/db"])
    text = render_metrics(document(last))
    assert 'hamirror_verify_out_of_sync_bytes{module="db"} 4096' in text
    assert 'hamirror_verify_remaining_bytes{module="db"} 4096' in text
    assert 'hamirror_verify_differences{module="db"} 1' in text
    assert 'hamirror_verify_failed{module="db"} 0' in text
    assert f'hamirror_verify_last_timestamp_seconds{{module="db"}} {int(last["finished_at"])}' in text
    table = render_table(document(last))
    assert "db: last verify " in table and ": 1 difference(s), 4096 byte(s) out of sync" in table
    never = render_metrics(document(None))
    assert 'hamirror_verify_last_timestamp_seconds{module="db"} 0' in never


def test_from_the_secondary_without_the_http_api_the_answer_says_where_to_run_it():
    import asyncio

    agent = SimpleNamespace(cluster=SimpleNamespace(http=None), peer_node=SimpleNamespace(name="node1"))
    answer = asyncio.run(verify.forward(agent, "db", False, 10.0))
    assert answer == {"ok": False, "error": "db is primary on node1: run 'hamirror verify db' there (to run it "
                                            "from either node, give both nodes [http] with a listen address on the "
                                            "cluster network, token_file and console_actions = true)"}


def test_status_shows_a_running_verify():
    doc = document(None)
    doc["modules"][0]["verify"] = {"done_files": 12, "done_bytes": 4096}
    assert "db: verify running: 12 file(s), 4096 byte(s) compared so far" in render_table(doc)


def test_a_damaged_last_verify_in_the_journal_starts_the_ids_over():
    """A journal value is never trusted: a damaged id must not crash the mount at start."""
    import json

    from hamirror.resync.verify import LAST_KEY, VerifyJob

    for damaged in ({"id": "7"}, {"id": [1]}, {"id": None}, {"id": 4}):
        journal = SimpleNamespace(get_state=lambda key, d=damaged: json.dumps(d) if key == LAST_KEY else None)
        job = VerifyJob(0, SimpleNamespace(), journal)
        assert job.runs == (4 if damaged == {"id": 4} else 0)
