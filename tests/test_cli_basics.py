import re

from hamirror import __version__
from tests.conftest import run_cli


def test_version_prints_package_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hamirror {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_keygen_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    keys = tmp_path / "keys"
    first = run_cli("keygen", "--keys", str(keys), "--name", "node1")
    assert first.returncode == 0, first.stderr
    assert (keys / "node1.key").exists()
    secret = keys / "node1.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    again = run_cli("keygen", "--keys", str(keys), "--name", "node1")
    assert again.returncode == 1
    assert "a key pair named 'node1' exists already" in again.stderr


def test_the_data_path_daemons_load_only_the_mirror_commands():
    """``mirror mount`` and ``mirror receive`` start on the critical path of a failover and a swap:
    they must not pay for loading the lab, the agent or the configuration loader."""
    import subprocess
    import sys
    probe = ("import sys\nfrom hamirror.cli.main import main\ntry:\n    main(['mirror', 'receive', '--help'])\n"
             "except SystemExit:\n    pass\nprint(sorted(m for m in ('hamirror.lab.control', 'hamirror.config.loader', "
             "'hamirror.agent.runtime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert "mirror" in run_cli("--help").stdout and "lab" in run_cli("--help").stdout


def test_each_command_word_loads_the_group_that_registers_it():
    """main() builds its parser from GROUP_OF[first word] alone: each group's words must map to
    it, or a command would be unknown (or loaded from the wrong group) when called on its own."""
    import argparse
    import importlib

    from hamirror.cli.main import COMMAND_GROUPS, GROUP_OF

    registered = {}
    for group in COMMAND_GROUPS:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(group).register(subparsers)
        registered.update(dict.fromkeys(subparsers.choices, group))
    assert GROUP_OF == registered
    status = run_cli("status", "--help")
    assert status.returncode == 0 and "usage: hamirror status" in status.stdout
    assert run_cli("lab", "exec", "--help").returncode == 0
    unknown = run_cli("statu")
    assert unknown.returncode == 2 and "invalid choice: 'statu'" in unknown.stderr and "lab" in unknown.stderr
