"""Script templates: every documented variable, as seen from each node."""

from __future__ import annotations

import sys

import pytest

from hamirror.config import ConfigError, load_cluster, load_modules, render_script
from tests.configfiles import write_cluster, write_module

EVERY_VARIABLE = """\
{{ module }}|{{ node }}|{{ peer }}|{{ node_address }}|{{ peer_address }}|{{ dirs | join(',') }}|{{ vip }}|\
{{ vip_ip }}|{{ interface }}|{{ module_dir }}|{{ run_dir }}|{{ state_dir }}|{{ python }}|{{ state }}|{{ port }}|\
{{ module_dir | quote }}|{{ "it's" | quote }}
"""


def loaded(tmp_path, **module):
    cluster = load_cluster(write_cluster(tmp_path))
    write_module(tmp_path, **module)
    return cluster, load_modules(cluster)[0]


def test_render_script_with_every_variable(tmp_path):
    cluster, module = loaded(tmp_path, scripts={"start_prim": EVERY_VARIABLE})
    folder = f"{tmp_path}/modules/app"
    assert render_script(module, cluster, "start_prim", "PRIM") == (
        f"app|node1|node2|198.18.0.1|198.18.0.2|/srv/app|198.18.0.100/24|198.18.0.100|eth0|{folder}|"
        f"{tmp_path}/run/modules/app|{tmp_path}/state/modules/app|{sys.executable}|PRIM|8080|"
        f"{folder}|'it'\"'\"'s'\n")
    seen_from_node2 = render_script(module, cluster, "start_prim", "ALONE", node=cluster.nodes[1])
    assert seen_from_node2.startswith("app|node2|node1|198.18.0.2|198.18.0.1|")
    assert "|ALONE|" in seen_from_node2


def test_without_vip_the_vip_variables_are_empty(tmp_path):
    cluster, module = loaded(tmp_path, replace={'[vip]\naddress = "198.18.0.100/24"\ninterface = "eth0"\n': ""},
                             scripts={"stop_prim": "[{{ vip }}][{{ vip_ip }}][{{ interface }}]"})
    assert module.vip is None
    assert render_script(module, cluster, "stop_prim", "STOP") == "[][][]"


def test_render_error_names_script_and_line(tmp_path):
    cluster, module = loaded(tmp_path)
    (tmp_path / "modules" / "app" / "start_prim").write_text("#!/bin/sh\n{{ nod }}\n")
    with pytest.raises(ConfigError) as raised:
        render_script(module, cluster, "start_prim", "PRIM")
    assert str(raised.value) == f"{tmp_path}/modules/app/start_prim: line 2: cannot render: 'nod' is undefined"
