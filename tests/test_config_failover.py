"""``[failover]`` in module.toml (flap damping, issue 9): defaults and exact errors."""

from __future__ import annotations

from hamirror.config import check, load_cluster, load_modules
from tests.configfiles import messages, write_cluster, write_module


def test_failover_defaults_to_no_damping(tmp_path):
    path = write_cluster(tmp_path)
    write_module(tmp_path)
    [module] = load_modules(load_cluster(path))
    assert (module.failover.max, module.failover.window) == (0, 600.0)


def test_failover_values_are_checked(tmp_path):
    path = write_cluster(tmp_path)
    write_module(tmp_path, replace={"[vars]": "[failover]\nmax = -1\nwindow = 0\nburst = 2\n\n[vars]"})
    toml = f"{tmp_path}/modules/app/module.toml"
    assert sorted(messages(check(path))) == sorted([
        f"{toml}: failover.max: must be an integer from 0 to 1000 (got -1)",
        f"{toml}: failover.window: must be a number greater than 0",
        f"{toml}: failover.burst: unknown key (expected one of: max, window)",
    ])
