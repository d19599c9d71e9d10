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
    assert unit["Type"] == ["simple"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["KillMode"] == ["process"]
    assert "network-online.target" in unit["After"][0].split()
    assert "network-online.target" in unit["Wants"][0].split()
    assert unit["RuntimeDirectoryPreserve"] == ["yes"]
    assert [key for key in MOUNT_NAMESPACE_OPTIONS if key in unit] == []
    families = unit["RestrictAddressFamilies"][0].split()
    assert {"AF_NETLINK", "AF_PACKET", "AF_UNIX", "AF_INET"} <= set(families)


def test_the_witness_unit_runs_the_witness_command():
    unit = settings(WITNESS_UNIT)
    assert unit["ExecStart"] == [f"{INSTALLED} witness --bind ${{HAMIRROR_WITNESS_BIND}}"]
    assert unit["Environment"] == ["HAMIRROR_WITNESS_BIND=0.0.0.0:7402"]
    assert unit["EnvironmentFile"] == ["-/etc/hamirror/witness.env"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", [UNIT, WITNESS_UNIT], ids=["agent", "witness"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, unit):
    # verify checks that ExecStart's program exists; where hamirror is not installed in
    # /usr/local/bin, point the copy at this virtualenv's entry point (the only change made).
    with open(unit) as stream:
        text = stream.read()
    if not os.access(INSTALLED, os.X_OK):
        text = text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={os.path.dirname(sys.executable)}/hamirror ")
    copy = tmp_path / os.path.basename(unit)
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
