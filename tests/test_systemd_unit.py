"""The shipped units (hamirror/shipped/, linked from scripts/hamirror.service): the settings the
cluster depends on, and systemd's own verdict on the files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

UNIT = os.path.join(REPO, "scripts", "hamirror.service")
WITNESS_UNIT = os.path.join(REPO, "hamirror", "shipped", "hamirror-witness.service")
INSTALLED = "/usr/local/bin/hamirror"
# Any of these gives the service a private mount namespace, hiding its FUSE mounts from the host.
MOUNT_NAMESPACE_OPTIONS = ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ReadWritePaths",
                           "ReadOnlyPaths", "InaccessiblePaths", "ProtectKernelTunables", "ProtectKernelModules",
                           "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "PrivateMounts",
                           "TemporaryFileSystem", "BindPaths", "DevicePolicy", "NoNewPrivileges")


def settings(unit: str = UNIT) -> dict[str, list[str]]:
    """KEY -> every value it is given in the unit (comments and section headers dropped)."""
    found: dict[str, list[str]] = {}
    with open(unit) as stream:
        for line in stream:
            line = line.strip()
            if line and not line.startswith(("#", "[")):
                key, _, value = line.partition("=")
                found.setdefault(key, []).append(value)
    return found


def test_unit_keeps_applications_and_mounts_alive_across_agent_restarts():
    unit = settings()
    assert unit["ExecStart"] == [f"{INSTALLED} agent"]
    # A configuration typo is refused before the agent starts, with every problem in the journal;
    # `systemctl reload` checks, then applies live, and fails when the reload fails (issue 17).
    assert unit["ExecStartPre"] == [f"{INSTALLED} config check"]
    assert unit["ExecReload"] == [f"{INSTALLED} reload"]
    assert unit["Type"] == ["simple"]
    assert unit["Restart"] == ["always"]
    assert unit["KillMode"] == ["process"]
    assert "network-online.target" in unit["After"][0].split()
    assert "network-online.target" in unit["Wants"][0].split()
    assert unit["RuntimeDirectoryPreserve"] == ["yes"]
    assert [key for key in MOUNT_NAMESPACE_OPTIONS if key in unit] == []
    families = unit["RestrictAddressFamilies"][0].split()
    assert {"AF_NETLINK", "AF_PACKET", "AF_UNIX", "AF_INET"} <= set(families)


# systemd.service(5), Restart=: which ends of the main process each setting restarts. A death by
# SIGHUP, SIGINT, SIGTERM or SIGPIPE is a "clean signal" there, like exit code 0.
RESTARTS = {
    "no": set(),
    "on-success": {"clean exit", "clean signal"},
    "on-failure": {"unclean exit", "unclean signal", "timeout", "watchdog"},
    "on-abnormal": {"unclean signal", "timeout", "watchdog"},
    "on-watchdog": {"watchdog"},
    "on-abort": {"unclean signal"},
    "always": {"clean exit", "unclean exit", "clean signal", "unclean signal", "timeout", "watchdog"},
}


@pytest.mark.parametrize("unit", [UNIT, WITNESS_UNIT], ids=["agent", "witness"])
def test_a_kill_hup_or_term_outside_systemctl_is_restarted(unit):
    """Finding (issue 17): `kill -HUP` ended the agent (it has no SIGHUP handler: Python's default
    ends the process) and Restart=on-failure counts that as a clean exit, so nothing restarted it."""
    restart = settings(unit)["Restart"]
    assert len(restart) == 1 and {"clean signal", "clean exit", "unclean signal"} <= RESTARTS[restart[0]]
    assert 0 < float(settings(unit)["RestartSec"][0]) <= 1


def test_the_witness_unit_runs_the_witness_command(tmp_path):
    from hamirror.cli.witness import load_witness_cluster
    from tests.configfiles import CLUSTER

    unit = settings(WITNESS_UNIT)
    assert unit["ExecStart"] == [f"{INSTALLED} witness --bind ${{HAMIRROR_WITNESS_BIND}}"]
    assert unit["Environment"] == ["HAMIRROR_WITNESS_BIND=0.0.0.0:7402"]
    assert unit["EnvironmentFile"] == ["-/etc/hamirror/witness.env"]
    # ProtectSystem=strict makes /var read-only: the lease file (default in state_dir) needs the
    # StateDirectory, which is the default state_dir.
    assert unit["ProtectSystem"] == ["strict"] and unit["StateDirectory"] == ["hamirror"]
    (tmp_path / "hamirror.toml").write_text(CLUSTER.replace('state_dir = "state"\n', ""))
    assert load_witness_cluster(str(tmp_path / "hamirror.toml")).state_dir == "/var/lib/hamirror"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", [UNIT, WITNESS_UNIT], ids=["agent", "witness"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, unit):
    # verify checks that ExecStart's program exists; where hamirror is not installed in
    # /usr/local/bin, point the copy at this virtualenv's entry point (the only change made).
    with open(unit) as stream:
        text = stream.read()
    if not os.access(INSTALLED, os.X_OK):
        text = text.replace(f"={INSTALLED} ", f"={os.path.dirname(sys.executable)}/hamirror ")
    copy = tmp_path / os.path.basename(unit)
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
