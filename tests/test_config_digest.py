"""One configuration for both nodes: the digests (what counts, what does not) and the agreement
that turns the peer's digests into status, events (once per change) and metrics."""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

import pytest

from hamirror import versions
from hamirror.agent import agreement
from hamirror.agent.agreement import Agreement, metric_families, status_lines
from hamirror.agent.http import render_metrics
from hamirror.agent.status import render_table
from hamirror.cluster.heartbeat import Heartbeat, ModuleInfo, NewerProtocol
from hamirror.cluster.states import NodeState
from hamirror.config.digest import (
    CLUSTER_SECTIONS, MODULE_SECTIONS, ConfigDigests, cluster_digest, differences, module_digest, valid,
)
from tests.configfiles import CLUSTER, write_cluster, write_module

KEY = b"k" * 32
COUNTER = itertools.count(1)         # the peer's heartbeat counter: each one a new heartbeat


def _twin(tmp_path: Path, cluster_edit: dict | None = None, module_edit: dict | None = None,
          scripts: dict | None = None) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two nodes' configurations: node1's as written, node2's with the edits; (cluster digest,
    module digest) for each."""
    digests = []
    for root, c_edit, m_edit, s in ((tmp_path / "a", None, None, None),
                                    (tmp_path / "b", cluster_edit, module_edit, scripts)):
        path = write_cluster(root, c_edit)
        folder = write_module(root, replace=m_edit, scripts=s)
        digests.append((cluster_digest(path, KEY), module_digest(str(folder), KEY)))
    return digests[0], digests[1]


@pytest.mark.parametrize("cluster_edit", [
    {'node = "node1"': 'node = "node2"'},                                  # the local node's name
    {'state_dir = "state"': 'state_dir = "/var/lib/elsewhere"', 'keys_dir = "keys"': 'keys_dir = "/k"'},
    {"timeout = 2.0": "timeout = 2"},                                      # the same number
    {"[heartbeat]": "# a comment\n[heartbeat]  # and another"},
    {"[heartbeat]": '[http]\nlisten = "127.0.0.1:9999"\n\n[heartbeat]'},   # per node: the status API
])
def test_what_may_differ_between_the_nodes_does_not_count(tmp_path, cluster_edit) -> None:
    ours, theirs = _twin(tmp_path, cluster_edit)
    assert ours == theirs


def test_the_fence_script_counts_by_presence_only(tmp_path) -> None:
    for root, script in ((tmp_path / "a", "/usr/local/sbin/fence-node2"), (tmp_path / "b", "/opt/fence-node1"),
                         (tmp_path / "c", None)):
        fence = f'\n[fence]\ntimeout = 10.0\n{"script = " + repr(script) if script else ""}\n'
        (root / "modules").mkdir(parents=True)
        (root / "hamirror.toml").write_text(CLUSTER + fence)
    a, b, c = (cluster_digest(str(tmp_path / n / "hamirror.toml"), KEY) for n in "abc")
    assert a == b and differences(a, c, CLUSTER_SECTIONS) == ("fence",)


@pytest.mark.parametrize("cluster_edit,sections", [
    ({"timeout = 2.0": "timeout = 3.0"}, ("heartbeat",)),
    ({'addresses = ["198.18.0.2"]': 'addresses = ["198.18.0.22"]'}, ("nodes",)),
    ({'name = "lab"': 'name = "lab2"', "interval = 0.3": "interval = 0.5"}, ("cluster", "heartbeat")),
    ({"[heartbeat]": '[quorum]\nwitness = "198.18.0.254:7402"\n\n[heartbeat]'}, ("quorum",)),
    ({"[heartbeat]": '[link]\nengine = "stream"\n\n[heartbeat]'}, ("link",)),     # both ends need one engine
])
def test_a_shared_cluster_setting_differs_by_section(tmp_path, cluster_edit, sections) -> None:
    (ours, _), (theirs, _) = _twin(tmp_path, cluster_edit)
    assert differences(ours, theirs, CLUSTER_SECTIONS) == sections


def test_a_link_engine_difference_is_a_status_warning(tmp_path) -> None:
    """One node switched to stream, the other not yet: its link would not connect; the status says
    which section to compare."""
    ours = _digests(tmp_path)
    other = write_cluster(tmp_path / "c", {"[heartbeat]": '[link]\nengine = "stream"\n\n[heartbeat]'})
    agree = Agreement("node1", "node2", ours, Timeline().add)
    agree.heard(_peer_hb(ConfigDigests(cluster_digest(other, KEY), ours.modules), modules=("app",)))
    assert "warning: the cluster file differs from node2's: [link] (compare the two hamirror.toml: " \
           "docs/configuration.md)" in status_lines(_doc(agree))


def test_etcd_credentials_count_by_presence_only(tmp_path) -> None:
    """Each node may reach etcd with its own certificate or user; the endpoints and TTL are shared."""
    for root, user, ttl in ((tmp_path / "a", "hamirror-node1", 10), (tmp_path / "b", "hamirror-node2", 10),
                            (tmp_path / "c", "hamirror-node1", 6)):
        quorum = (f'\n[quorum]\netcd = ["https://192.0.2.21:2379"]\netcd_ttl = {ttl}\netcd_user = "{user}"\n'
                  f'etcd_password_file = "/etc/hamirror/{user}.password"\n')
        (root / "modules").mkdir(parents=True)
        (root / "hamirror.toml").write_text(CLUSTER + quorum)
    a, b, c = (cluster_digest(str(tmp_path / n / "hamirror.toml"), KEY) for n in "abc")
    assert a == b and differences(a, c, CLUSTER_SECTIONS) == ("quorum",)


@pytest.mark.parametrize("module_edit,scripts,sections", [
    ({"port = 8080\n\n[vars]": "port = 8080\ntimeout = 3.0\n\n[vars]"}, None, ("checkers",)),
    ({'interface = "eth0"': 'interface = "ens3"'}, None, ("vip",)),
    ({"[vars]\nport = 8080": "[vars]\nport = 8081"}, None, ("vars",)),
    ({}, {"start_prim": "#!/bin/sh\necho changed\n"}, ("files",)),
    ({"replication_port = 7410": "replication_port = 7410\npeer_timeout = 3.0"}, None,
     ("module",)),                                    # written on one node, the default on the other
])
def test_a_module_setting_differs_by_section(tmp_path, module_edit, scripts, sections) -> None:
    (_, ours), (_, theirs) = _twin(tmp_path, module_edit=module_edit, scripts=scripts)
    assert differences(ours, theirs, MODULE_SECTIONS) == sections


def test_digests_are_keyed_with_the_cluster_key(tmp_path) -> None:
    """Heartbeats are not encrypted: without the key a digest confirms no guess of a setting."""
    folder = write_module(tmp_path)
    assert module_digest(str(folder), KEY) != module_digest(str(folder), b"o" * 32)


def test_every_file_of_the_module_folder_counts_but_python_caches(tmp_path) -> None:
    folder = write_module(tmp_path)
    before = module_digest(str(folder), KEY)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "kv.cpython-311.pyc").write_bytes(b"\0cache")
    (folder / ".swp").write_text("editor")
    assert module_digest(str(folder), KEY) == before
    os.chmod(folder / "start_prim", 0o644)                       # not executable any more
    assert differences(before, module_digest(str(folder), KEY), MODULE_SECTIONS) == ("files",)
    os.chmod(folder / "start_prim", 0o755)
    (folder / "settings.sh").write_text("PORT=1\n")
    assert differences(before, module_digest(str(folder), KEY), MODULE_SECTIONS) == ("files",)


def test_unreadable_configuration_has_no_digest(tmp_path) -> None:
    assert cluster_digest(str(tmp_path / "missing.toml"), KEY) is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "module.toml").write_text("[module\n")
    assert module_digest(str(tmp_path / "bad"), KEY) is None


@pytest.mark.parametrize("value", [None, 5, "", "zz", "A" * 12 + "/", "0" * 12, "0" * 12 + "/000",
                                   "0" * 12 + "/" + "0" * 4 * 33, ["0" * 12 + "/"], "0" * 12 + "/\n"])
def test_hostile_digests_are_not_digests(value) -> None:
    assert valid(value) is None


def test_digests_of_other_section_lists_compare_what_both_know() -> None:
    ours, longer = "a" * 12 + "/" + "1111" * 5, "b" * 12 + "/" + "1111" * 4 + "2222" + "3333"
    assert differences(ours, longer, CLUSTER_SECTIONS) == ("fence",)
    assert differences(ours, "b" * 12 + "/", CLUSTER_SECTIONS) == ()
    assert differences(ours, "a" * 12 + "/" + "9999" * 5, CLUSTER_SECTIONS) is None


# The agreement --------------------------------------------------------------------------------

def _digests(tmp_path: Path, module_edit: dict | None = None) -> ConfigDigests:
    root = tmp_path / ("b" if module_edit else "a")
    path = write_cluster(root)
    folder = write_module(root, replace=module_edit)
    return ConfigDigests(cluster_digest(path, KEY), {"app": module_digest(str(folder), KEY)})


def _peer_hb(digests: ConfigDigests | None, modules=("app",), software: str | None = versions.SOFTWARE) -> Heartbeat:
    infos = {name: ModuleInfo(NodeState.SECOND, True, "g") for name in modules}
    return Heartbeat("lab", "node2", "boot", next(COUNTER), 0.0, infos, software=software,
                     config=digests.cluster if digests else None,
                     module_config={k: v for k, v in digests.modules.items() if v} if digests else {})


class Timeline:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []
        self.fields: list[dict] = []

    def add(self, kind: str, text: str, module: str | None = None, **fields) -> dict:
        self.events.append((kind, text, module))
        self.fields.append(fields)
        return {}


def _doc(agree: Agreement) -> dict:
    return agree.annotate({"node": "node1", "cluster": "lab", "peer": {"name": "node2", "alive": True},
                           "modules": [{"name": "app", "state": "PRIM"}]})


def test_a_module_difference_is_one_event_a_status_warning_and_a_metric(tmp_path) -> None:
    ours = _digests(tmp_path)
    theirs = _digests(tmp_path, {"port = 8080\n\n[vars]": "port = 8080\ntimeout = 3.0\n\n[vars]"})
    timeline = Timeline()
    agree = Agreement("node1", "node2", ours, timeline.add)
    for counter in range(1, 6):             # every heartbeat: one event, not five
        agree.heard(dataclasses.replace(_peer_hb(theirs), counter=counter, network=0))
        agree.heard(dataclasses.replace(_peer_hb(theirs), counter=counter, network=1))   # the same, by network 1
    assert agree.count == 5
    assert timeline.events == [("config-differs", "configuration differs from node2's: [checkers] (the module "
                                "folder must be the same on both nodes)", "app")]
    assert timeline.fields == [{"peer_boot": "boot", "peer_counter": 1, "heard": 1}]   # which heartbeat told
    doc = _doc(agree)
    entry = doc["modules"][0]["config"]
    assert entry["differs"] == ["checkers"] and entry["digest"] == ours.modules["app"]
    assert entry["peer_digest"] == theirs.modules["app"]
    assert doc["config"]["differs"] is None and doc["config"]["digest"] == ours.cluster
    assert "app: warning: configuration differs from node2's: [checkers]" in render_table(doc)
    assert 'hamirror_config_differs{scope="module",module="app"} 1' in render_metrics(doc)
    assert 'hamirror_config_differs{scope="cluster",module=""} 0' in render_metrics(doc)
    agree.heard(dataclasses.replace(_peer_hb(ours), counter=6))    # the peer's folder fixed and reloaded
    agree.heard(dataclasses.replace(_peer_hb(ours), counter=7))
    assert timeline.events[1:] == [("config-same", "the module's configuration is the same as node2's again", "app")]
    assert _doc(agree)["modules"][0]["config"]["differs"] is None
    assert not [line for line in status_lines(_doc(agree)) if "warning" in line]


def test_a_cluster_file_difference_and_a_module_on_one_node_only(tmp_path) -> None:
    ours = _digests(tmp_path)
    other = write_cluster(tmp_path / "c", {"timeout = 2.0": "timeout = 4.0"})
    theirs = ConfigDigests(cluster_digest(other, KEY), {"app": ours.modules["app"], "extra": ours.modules["app"]})
    timeline = Timeline()
    agree = Agreement("node1", "node2", ours, timeline.add)
    agree.heard(_peer_hb(theirs, modules=("app", "extra")))
    doc = _doc(agree)
    assert doc["config"]["differs"] == ["heartbeat"] and doc["config"]["only_peer"] == ["extra"]
    lines = status_lines(doc)
    assert "warning: the cluster file differs from node2's: [heartbeat] (compare the two hamirror.toml: " \
           "docs/configuration.md)" in lines
    assert "warning: module(s) configured on the peer only: extra" in lines
    assert [(kind, module) for kind, _, module in timeline.events] == [("config-differs", None)] * 2
    agree.heard(_peer_hb(theirs, modules=("extra",)))    # node2 no longer configures app
    assert _doc(agree)["modules"][0]["config"]["warning"] == "module not configured on node2"
    agree.heard(_peer_hb(ConfigDigests(theirs.cluster, {}), modules=()))    # nor any module
    assert _doc(agree)["modules"][0]["config"]["warning"] == "module not configured on node2"


def test_a_020_peer_is_compared_on_nothing_and_named_as_020(tmp_path) -> None:
    timeline = Timeline()
    agree = Agreement("node1", "node2", _digests(tmp_path), timeline.add)
    agree.heard(_peer_hb(None, software=None))
    doc = _doc(agree)
    assert doc["versions"]["peer_software"] == "0.2.0" and doc["versions"]["peer_software_assumed"]
    assert doc["config"]["differs"] is None and doc["modules"][0]["config"]["differs"] is None
    assert not any(kind == "config-differs" for kind, _, _ in timeline.events)


def test_a_peer_on_the_previous_minor_release_is_noted_once(tmp_path) -> None:
    timeline = Timeline()
    agree = Agreement("node1", "node2", _digests(tmp_path), timeline.add)
    mine = versions.parse(versions.SOFTWARE)
    previous = f"{mine[0]}.{mine[1] - 1}.0" if mine[1] else f"{mine[0] - 1}.9.0"
    for _ in range(3):
        agree.heard(_peer_hb(None, software=previous))
    note = _doc(agree)["versions"]["note"]
    assert timeline.events == [("peer-version", note, None)]
    assert (previous in note) and ("a supported pair" in note) == bool(mine[1])
    assert f"peer: {note}" in status_lines(_doc(agree))


def test_a_newer_protocol_is_an_incompatible_peer_until_understood(tmp_path) -> None:
    timeline = Timeline()
    agree = Agreement("node1", "node2", _digests(tmp_path), timeline.add)
    refusal = NewerProtocol(2, "1.0.0", "node2")
    agree.refused(refusal)
    agree.refused(refusal)
    doc = _doc(agree)
    assert "heartbeat protocol 2" in doc["versions"]["incompatible"]
    assert status_lines(doc)[0].startswith("PEER INCOMPATIBLE: the peer (hamirror 1.0.0) speaks heartbeat protocol 2")
    assert "hamirror_peer_incompatible 1" in render_metrics(doc)
    agree.heard(_peer_hb(None))
    agree.refused(None)                 # the next tick: the validator forgot the refusal
    assert [kind for kind, _, _ in timeline.events][:2] == ["peer-incompatible", "peer-compatible"]
    assert _doc(agree)["versions"]["incompatible"] is None


def test_metric_families_without_any_peer(tmp_path) -> None:
    agree = Agreement("node1", "node2", _digests(tmp_path), Timeline().add)
    names = [family[0] for family in metric_families(_doc(agree))]
    assert names == ["hamirror_config_differs", "hamirror_peer_incompatible", "hamirror_version_info"]
    assert agreement.compare(None, "x", MODULE_SECTIONS) is None


def test_the_console_shows_a_module_whose_configuration_differs_as_degraded() -> None:
    from hamirror.agent.console.view import health

    healthy = {"state": "PRIM", "peer_state": "SECOND", "mirror": "streaming", "uptodate": True,
               "config": {"differs": None, "warning": None}}
    assert health(healthy)[0] == "healthy"
    warning = "configuration differs from node2's: [checkers] (the module folder must be the same on both nodes)"
    assert health({**healthy, "config": {"differs": ["checkers"], "warning": warning}}) == ("degraded", warning)


def test_the_console_node_card_shows_a_cluster_file_difference_and_an_incompatible_peer() -> None:
    from hamirror.agent.console import render

    status = {"node": "node1", "cluster": "lab", "peer": {"name": "node2", "alive": True}, "modules": [],
              "witness": None, "versions": {"incompatible": "the peer (hamirror 1.0.0) speaks heartbeat protocol 2",
                                            "note": None},
              "config": {"warning": "the cluster file differs from node2's: [heartbeat]", "only_peer": ["extra"]}}
    html = render.view({"node": "node1", "status": status}, "node2", None, "not fetched", None)
    assert "PEER INCOMPATIBLE: the peer (hamirror 1.0.0) speaks heartbeat protocol 2" in html
    assert "the cluster file differs from node2&#39;s: [heartbeat]" in html
    assert "module(s) configured on the peer only: extra" in html


def test_a_reloaded_configuration_is_compared_from_the_next_heartbeat(tmp_path) -> None:
    """For ``hamirror reload``: new digests, the same timeline (a standing difference is not told twice)."""
    ours = _digests(tmp_path)
    theirs = _digests(tmp_path, {"port = 8080\n\n[vars]": "port = 8080\ntimeout = 3.0\n\n[vars]"})
    timeline = Timeline()
    agree = Agreement("node1", "node2", ours, timeline.add)
    agree.heard(_peer_hb(theirs))
    agree.update(ConfigDigests(ours.cluster, {"app": ours.modules["app"], "new": theirs.modules["app"]}))
    agree.heard(_peer_hb(theirs, modules=("app",)))
    assert [(kind, module) for kind, _, module in timeline.events] == [("config-differs", "app"),
                                                                       ("config-differs", "new")]
    agree.update(theirs)                   # this node now has the peer's folder, and no module "new"
    agree.heard(_peer_hb(theirs))
    assert timeline.events[-1][0::2] == ("config-same", "app") and len(timeline.events) == 3
    assert [m["name"] for m in _doc(agree)["modules"]] == ["app"]
