"""The human status names a split brain, both generations, and the command that resolves it."""

from hamirror.agent.status import render_table


def test_split_brain_is_spelled_out_with_both_generations():
    doc = {"node": "node2", "cluster": "lab", "peer": {"name": "node1", "alive": True},
           "modules": [{"name": "demo", "state": "WAIT", "peer_state": "ALONE", "uptodate": False,
                        "resync": None, "relation": "diverged", "generation": "aaaa,cccc",
                        "peer_generation": "bbbb,cccc", "changed_paths": 7, "warnings": [], "error": None}]}
    text = render_table(doc)
    assert ("demo: SPLIT BRAIN: both nodes changed the data on their own. Here: generation aaaa, "
            "7 path(s) changed; peer: generation bbbb. Nothing is copied until you choose: run "
            "'hamirror second demo' on the node whose changes are to be set aside") in text


def test_no_split_brain_line_when_histories_agree():
    doc = {"node": "node1", "cluster": "lab", "peer": {"name": "node2", "alive": True},
           "modules": [{"name": "demo", "state": "PRIM", "peer_state": "SECOND", "uptodate": True,
                        "resync": None, "relation": "same", "warnings": [], "error": None}]}
    assert "SPLIT BRAIN" not in render_table(doc)


def test_a_running_task_shows_where_it_leads():
    doc = {"node": "node1", "cluster": "lab", "peer": {"name": "node2", "alive": True},
           "modules": [{"name": "demo", "state": "PRIM", "target": "SECOND", "busy": True, "peer_state": "SECOND",
                        "uptodate": True, "resync": None},
                       {"name": "db", "state": "PRIM", "target": "PRIM", "busy": True, "peer_state": "SECOND",
                        "uptodate": True, "resync": None}]}
    rows = render_table(doc).splitlines()[2:]
    assert [row[8:24].strip() for row in rows] == ["PRIM -> SECOND", "PRIM (busy)"]


def test_a_resync_failing_the_same_way_three_times_is_an_alarm_with_its_text():
    doc = {"node": "node1", "cluster": "lab", "peer": {"name": "node2", "alive": True},
           "modules": [{"name": "demo", "state": "ALONE", "peer_state": "WAIT", "uptodate": True, "resync": None,
                        "resync_failures": {"count": 3, "alarm": True, "error": "peer refused operation 12: "
                                            "[Errno 28] No space left on device"}}]}
    assert ("demo: ALARM: the resync to the peer failed 3 times in a row the same way, the peer has no "
            "up-to-date copy: peer refused operation 12: [Errno 28] No space left on device") in render_table(doc)
    doc["modules"][0]["resync_failures"] = {"count": 2, "alarm": False, "error": "x"}
    assert "ALARM" not in render_table(doc)


def test_the_status_takes_the_failures_from_the_mounts_and_sets_the_alarm():
    from types import SimpleNamespace

    from hamirror.agent.module_runner import Observation
    from hamirror.agent.status import resync_failures
    from hamirror.journal.generations import GenerationHistory
    failing = {"count": 3, "error": "peer refused operation 4: WRITE b'big': No space left on device",
               "since": 1.0, "last": 2.0}
    mounts = ({"state": "ALONE", "resync_failures": {"count": 1, "error": "x"}}, {"state": "ALONE",
                                                                                  "resync_failures": failing})
    runner = SimpleNamespace(obs=Observation(GenerationHistory(), True, mounts, (), False))
    assert resync_failures(runner) == {**failing, "alarm": True}
    runner.obs = Observation(GenerationHistory(), True, ({"state": "PRIM", "resync_failures": None},), (), False)
    assert resync_failures(runner) is None
