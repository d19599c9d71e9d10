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
    said = {page: " ".join(read("docs", page).split()) for page in ("configuration.md", "module-guide.md")}
    assert "one per line on stderr, and exits 2 (a configuration error" in said["configuration.md"]
    assert "exit 2 on any error" in said["module-guide.md"]


def docs() -> dict[str, str]:
    """Every page an operator reads: docs/*.md, the README and the unit file."""
    pages = {name: read("docs", name) for name in os.listdir(os.path.join(REPO, "docs")) if name.endswith(".md")}
    return {**pages, "README.md": read("README.md"), "hamirror.service": read("scripts", "hamirror.service")}


def test_no_page_cites_a_path_of_a_development_machine():
    """Finding (issue 17): architecture.md cited /work/shared/measurements.md, which no reader has."""
    found = {name: re.findall(r"(?<![\w.$])/(?:work|home|Users)/[\w./-]*", text) for name, text in docs().items()}
    assert {name: paths for name, paths in found.items() if paths} == {}


def test_the_units_documentation_is_where_the_guide_installs_the_package():
    """Finding (issue 17): Documentation= named /usr/share/doc/hamirror/configuration.md, which
    nothing installed. The guide makes the virtualenv /opt/hamirror, and the wheel puts docs/*.md
    in its share/doc/hamirror."""
    links = " ".join(settings()["Documentation"]).split()
    assert links and "python3 -m venv /opt/hamirror " in read("docs", "admin-guide.md")
    prefix = "file:///opt/hamirror/share/doc/hamirror/"
    for link in links:
        assert link.startswith(prefix), link
        assert os.path.isfile(os.path.join(REPO, "docs", link[len(prefix):])), link


def test_no_server_instruction_runs_the_test_machine_installer():
    """Finding (issue 17): the guide installed servers with scripts/setup.sh, which installs
    Chromium, MariaDB and nginx and disables the host's database and web servers."""
    for page in ("admin-guide.md", "configuration.md", "module-guide.md"):
        text = " ".join(read("docs", page).split())
        for found in re.finditer(r"setup\.sh", text):
            before = text[max(0, found.start() - 80):found.start()]
            assert "test" in before or "lab" in before, (page, before)
    header = read("scripts", "setup.sh").split("set -euo pipefail")[0]
    assert "FOR TEST AND LAB MACHINES ONLY" in header and "NEVER RUN THIS ON A SERVER" in header


def test_the_unit_does_not_promise_a_handover_on_sigterm():
    """Finding (issue 17): the unit said the agent 'hands over' on SIGTERM; it stops its heartbeats
    and control socket and leaves every module as it is."""
    from hamirror.agent.runtime import Agent
    assert "hand over before" not in read("scripts", "hamirror.service")
    assert "It hands nothing over" in read("scripts", "hamirror.service")
    assert "modules keep their state" in (Agent.shutdown.__doc__ or "") + read("hamirror", "agent", "runtime.py")


def test_split_brain_texts_put_the_losers_files_inside_the_directory():
    """Finding (issue 17): status and 'mirror resync --help' said the loser's files go to a folder
    'beside' the directory; they go inside it, into .hamirror-conflicts (a rename cannot cross
    filesystems)."""
    from hamirror.agent.status import render_table
    from hamirror.link.protocol import CONFLICT_DIR
    from tests.conftest import run_cli
    doc = {"node": "n2", "cluster": "lab", "peer": {"name": "n1", "alive": True},
           "modules": [{"name": "m", "state": "WAIT", "relation": "diverged", "generation": "a", "uptodate": False,
                        "peer_generation": "b", "changed_paths": 1, "warnings": [], "error": None}]}
    wide = {**os.environ, "COLUMNS": "400"}           # argparse would break the name at its '-'
    texts = {"status": render_table(doc), "resync --help": run_cli("mirror", "resync", "--help", env=wide).stdout,
             "admin guide": read("docs", "admin-guide.md").split("## 8. Split brain", 1)[1].split("\n### ", 1)[0]}
    for where, text in texts.items():
        text = " ".join(text.split())
        assert CONFLICT_DIR.decode() in text and "beside" not in text.replace("not beside", ""), where


def test_peer_timeout_is_documented_as_fenced_not_alone():
    """Finding (issue 17): 'peer_timeout -> ALONE'; the agent's mounts fence (--fence): on
    peer_timeout writes wait for the agent's verdict."""
    assert '"--fence"' in read("hamirror", "agent", "datapath.py")
    for name, text in docs().items():
        for line in text.splitlines():
            if "peer_timeout" in line:
                assert not re.search(r"goes ALONE|-> ?ALONE", line), (name, line)
    lines = read("docs", "configuration.md").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("peer_timeout"))
    assert "FENCED" in " ".join(lines[start:start + 3])


def test_the_guide_does_not_show_the_mirror_state_in_the_human_status():
    """Finding (issue 17): the acceptance test looked for 'mirror streaming' in 'hamirror status',
    whose table has no such column (it is in --json)."""
    from hamirror.agent.status import render_table
    header = render_table({"node": "n", "peer": {}, "modules": []}).splitlines()[1]
    for line in read("docs", "admin-guide.md").splitlines():
        if "streaming" in line and "hamirror status" in line:
            assert "MIRROR" in header or "--json" in line, line


def test_the_configuration_reference_says_one_port_per_directory():
    text = " ".join(read("docs", "configuration.md").split())
    assert "replication_port + N - 1" in text and "ports are unique" not in text


def test_the_quick_starts_module_command_works_on_a_fresh_install(tmp_path):
    """Finding (issue 17): the quick start's 'module new' failed (no /etc/hamirror/modules), used
    eth0 (Debian 12 names interfaces ens*/enp*), gave a pg_hba.conf that let in the lab's network
    rather than the VIP's, and no step made the role the acceptance test logs in with."""
    import shlex

    from tests.conftest import run_cli
    from tests.configfiles import write_cluster
    guide = " ".join(read("docs", "admin-guide.md").split("## 1. Install", 1)[0].split())
    command = re.search(r"`hamirror module new ([^`]*)`", guide)
    assert command is not None and "eth0" not in command[1] and "ip -br addr" in guide
    cluster = write_cluster(tmp_path)
    os.rmdir(tmp_path / "modules")                       # a fresh install: nothing made it yet
    result = run_cli("module", "new", *shlex.split(command[1]), "-c", cluster)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "modules" / "postgresql"
    vip = re.search(r"--vip (\S+)", command[1])[1]
    network = re.search(r"lets in the VIP's network, (\S+),", guide)[1]
    assert f'address = "{vip}"' in (folder / "module.toml").read_text()
    assert re.search(rf"^host\s+all\s+all\s+{re.escape(network)}\s+scram-sha-256$",
                     (folder / "pg_hba.conf").read_text(), re.M)
    role = re.search(r'CREATE ROLE (\w+) LOGIN PASSWORD .*?CREATE DATABASE (\w+) OWNER \1', guide)
    assert role is not None and f'psql "host={vip.split("/")[0]} user={role[1]} dbname={role[2]}"' in guide


def test_the_admin_guides_metrics_table_names_every_family_the_agent_exports():
    """Review (issue 15): hamirror_module_mirror and hamirror_module_fenced, which the shipped
    alert rules use, were missing from the table."""
    from hamirror.agent.http import render_metrics
    exported = set(re.findall(r"^# TYPE (\S+) ", render_metrics({"modules": []}), re.M))
    table = read("docs", "admin-guide.md").split("**Metrics**", 1)[1].split("**Alerts.**", 1)[0]
    documented = set(re.findall(r"`(hamirror_\w+)`", table))
    assert exported - documented == set() and exported
