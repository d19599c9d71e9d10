"""Shell completion and the manual page (issue 17, CLI conventions): generated from the parser,
so every command is in both, and ``hamirror install`` puts them where bash and man look."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hamirror.cli.install import install
from hamirror.cli.main import build_parser
from tests.conftest import run_cli


def commands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_command_is_in_the_bash_completion_and_the_manual_page():
    bash, man = run_cli("completion", "bash"), run_cli("manpage")
    assert bash.returncode == man.returncode == 0
    top = next(line for line in bash.stdout.splitlines() if line.startswith("_shtab_hamirror_subparsers="))
    assert sorted(top.split("=(", 1)[1].rstrip(")").split()) == commands()
    for name in commands():
        assert f"\\fBhamirror {name}\\fR" in man.stdout or f"hamirror\\fR \\fI\\,{name}" in man.stdout, name
    assert run_cli("completion", "fish").returncode == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_the_bash_completion_loads_and_completes_a_command(tmp_path):
    script = tmp_path / "hamirror.bash"
    script.write_text(run_cli("completion", "bash").stdout)
    probe = (f"source {script}; COMP_WORDS=(hamirror sw); COMP_CWORD=1; COMP_LINE='hamirror sw'; "
             "COMP_POINT=${#COMP_LINE}; _shtab_hamirror hamirror sw hamirror; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert "swap" in done.stdout.split(), done.stdout + done.stderr


def test_install_puts_both_in_place_and_keeps_a_file_it_did_not_write(tmp_path):
    steps = {step.path: step.action for step in install(str(tmp_path), dry_run=False)}
    completion = tmp_path / "usr/share/bash-completion/completions/hamirror"
    manual = tmp_path / "usr/local/share/man/man1/hamirror.1"
    assert steps[str(completion)] == steps[str(manual)] == "installed"
    assert manual.read_text().startswith('.\\" # Installed by hamirror install')
    assert ".TH HAMIRROR" in manual.read_text()
    again = {step.path: step.action for step in install(str(tmp_path), dry_run=False)}
    assert again[str(completion)] == again[str(manual)] == "unchanged"
    completion.write_text("# a completion of the operator's own\n")
    assert {s.path: s.action for s in install(str(tmp_path), dry_run=False)}[str(completion)] == "kept"
