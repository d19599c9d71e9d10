"""What the docs tell an operator to type agrees with what the project ships."""

from __future__ import annotations

import os
import re

from tests.conftest import REPO
from tests.test_systemd_unit import settings


def read(*parts: str) -> str:
    with open(os.path.join(REPO, *parts), encoding="utf-8") as stream:
        return stream.read()


def test_readme_opens_with_the_demo_and_the_test_suite_runnable_as_root_without_sudo():
    """Finding: both started with sudo, which a minimal Debian image run as root does not have."""
    first_block = re.search(r"```sh\n(.*?)```", read("README.md"), re.S)
    assert first_block is not None and read("README.md").index("```sh") < read("README.md").index("\n## ")
    commands = [line.split("#", 1)[0].strip() for line in first_block[1].splitlines() if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]


def test_the_admin_guide_states_the_units_restart_delay():
    """Finding: the guide said RestartSec=2 while the unit says 0.5."""
    said = set(re.findall(r"RestartSec=([0-9.]+)", read("docs", "admin-guide.md")))
    assert said == set(settings()["RestartSec"])


def test_the_admin_guide_makes_a_cluster_key_the_agent_accepts():
    guide = read("docs", "admin-guide.md")
    assert "(umask 077 && head -c 32 /dev/urandom > /etc/hamirror/cluster.key)" in guide
    assert "every byte of the file" in guide


def test_the_admin_guide_lists_the_exit_codes_the_cli_uses():
    """Finding (issue 17): every failure exited 1; the table and hamirror.cli.common must agree."""
    from hamirror.cli import common
    section = read("docs", "admin-guide.md").split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)}
    used = {value for name, value in vars(common).items() if name.isupper() and isinstance(value, int)}
    assert documented == used
