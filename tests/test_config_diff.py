"""What ``hamirror reload`` sees as changed, and what it may apply live (pure: configurations in, a plan out)."""

from __future__ import annotations

import dataclasses

from hamirror.config import load_cluster, load_modules
from hamirror.config.diff import AGENT, DATA_PATH, Change, applied, plan
from hamirror.config.module import CheckerConfig, DirectoryConfig, VipConfig
from tests.configfiles import write_cluster, write_module


def configs(tmp_path):
    cluster = load_cluster(write_cluster(tmp_path))
    write_module(tmp_path)
    return cluster, load_modules(cluster)[0]


def test_the_same_configuration_is_an_empty_plan(tmp_path):
    cluster, module = configs(tmp_path)
    assert plan(cluster, [module], cluster, [dataclasses.replace(module)]).empty


def test_modules_added_and_removed_by_name(tmp_path):
    cluster, module = configs(tmp_path)
    other = dataclasses.replace(module, name="other")
    result = plan(cluster, [module], cluster, [other])
    assert (result.added, result.removed, dict(result.changed)) == (("other",), ("app",), {})


def test_vip_checkers_timeouts_vars_and_default_primary_are_live(tmp_path):
    cluster, module = configs(tmp_path)
    new = dataclasses.replace(
        module, vip=VipConfig("198.18.0.101/24", "eth0"), default_primary="node2",
        scripts=dataclasses.replace(module.scripts, timeout=60.0), vars={"port": 8081},
        restart=dataclasses.replace(module.restart, window=60.0),
        checkers=(CheckerConfig("tcp", "port", host="{{ vip_ip }}", port=8081),))
    result = plan(cluster, [module], cluster, [new])
    assert [(c.key, c.live) for c in result.changed["app"]] == [
        ("module.default_primary", True), ("vip.address", True), ("scripts.timeout", True),
        ("restart.window", True), ("checkers", True), ("vars", True)]
    assert result.pending("app") == ()
    assert result.changed["app"][1].text() == "vip.address: '198.18.0.100/24' -> '198.18.0.101/24'"
    assert result.changed["app"][4].text() == "checkers: changed"


def test_a_vip_added_or_removed_is_one_live_key(tmp_path):
    cluster, module = configs(tmp_path)
    gone = plan(cluster, [module], cluster, [dataclasses.replace(module, vip=None)])
    assert gone.changed["app"] == (Change("vip", "198.18.0.100/24", None),)
    assert gone.changed["app"][0].text() == "vip: '198.18.0.100/24' -> (none)"


def test_data_path_keys_need_a_data_path_restart(tmp_path):
    cluster, module = configs(tmp_path)
    new = dataclasses.replace(module, replication_port=7420, mode="barrier", peer_timeout=5.0,
                              directories=(DirectoryConfig("/srv/elsewhere"),))
    result = plan(cluster, [module], cluster, [new])
    assert [(c.key, c.needs) for c in result.pending("app")] == [
        ("module.mode", DATA_PATH), ("module.replication_port", DATA_PATH), ("module.peer_timeout", DATA_PATH),
        ("directories", DATA_PATH)]
    assert result.live("app") == ()
    # What runs after the reload: the new values, the data path's as the mount has them.
    kept = applied(module, dataclasses.replace(new, default_primary="node2"))
    assert (kept.replication_port, kept.mode, kept.peer_timeout, kept.directories, kept.default_primary) == (
        7410, module.mode, module.peer_timeout, module.directories, "node2")


def test_cluster_file_keys_need_an_agent_restart(tmp_path):
    cluster, module = configs(tmp_path)
    new = dataclasses.replace(cluster, heartbeat=dataclasses.replace(cluster.heartbeat, timeout=3.0),
                              fence=dataclasses.replace(cluster.fence, script="/bin/true"))
    result = plan(cluster, [module], new, [module])
    assert [(c.key, c.needs) for c in result.cluster] == [("heartbeat.timeout", AGENT), ("fence.script", AGENT)]
    assert result.cluster[0].text() == "heartbeat.timeout: 2.0 -> 3.0"
    assert dict(result.changed) == {}


def test_every_key_of_both_files_is_compared():
    from hamirror.config.cluster import ClusterConfig
    from hamirror.config.diff import _CLUSTER_FIELDS, _MODULE_FIELDS
    from hamirror.config.module import ModuleConfig
    assert set(_MODULE_FIELDS) == {f.name for f in dataclasses.fields(ModuleConfig)} - {"folder", "name"}
    assert set(_CLUSTER_FIELDS) == {f.name for f in dataclasses.fields(ClusterConfig)} - {"path"}
    assert (_CLUSTER_FIELDS["modules_dir"], _CLUSTER_FIELDS["heartbeat"], _CLUSTER_FIELDS["nodes"]) == (
        "cluster.modules_dir", "heartbeat", "nodes")
