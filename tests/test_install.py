"""hamirror install into a temporary root: what it writes, that a second run changes nothing,
that --dry-run changes nothing, and that files it did not write are never touched."""

from __future__ import annotations

import json
import os
import stat

import pytest

from hamirror import __version__, shipped
from hamirror.cli import install
from hamirror.cli.main import main

UNIT = "etc/systemd/system/hamirror.service"
TARGETS = [item.target for item in shipped.FILES]


def run(capsys, root, *extra: str) -> tuple[int, list[str]]:
    code = main(["install", "--root", str(root), *extra])
    captured = capsys.readouterr()
    assert captured.err == ""
    return code, captured.out.splitlines()


def snapshot(root) -> dict[str, tuple]:
    """Every path below root with its type, mode, inode, mtime and content (or link target)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            body = os.readlink(path) if stat.S_ISLNK(st.st_mode) else (
                open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None)
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_ino, st.st_mtime_ns, body)
    return found


def test_a_fresh_root_gets_every_file_the_directories_and_the_command_link(capsys, tmp_path):
    code, lines = run(capsys, tmp_path)
    assert code == 0
    for item in shipped.FILES:
        path = tmp_path / item.target
        text = path.read_text()
        assert text.startswith(f"# Installed by hamirror install (hamirror {__version__});")
        assert text.split("\n", 1)[1] == shipped.read(item.name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert f"installed     {path}" in lines
    modes = {rel: stat.S_IMODE(os.stat(tmp_path / rel).st_mode) for rel, _ in shipped.DIRECTORIES}
    assert modes == dict(shipped.DIRECTORIES)
    assert modes["etc/hamirror/keys"] == 0o700
    link = tmp_path / shipped.COMMAND_LINK
    assert os.readlink(link) == install.command_path() and os.access(link, os.X_OK)
    assert not any("daemon-reload" in line for line in lines)     # never a daemon-reload below --root
    assert "Nothing is enabled or started" in lines[-1]


def test_a_second_run_changes_nothing(capsys, tmp_path):
    run(capsys, tmp_path)
    before = snapshot(tmp_path)
    code, lines = run(capsys, tmp_path)
    assert code == 0 and snapshot(tmp_path) == before
    actions = {line.split()[0] for line in lines[:-1]}
    assert actions == {"exists", "unchanged"}


def test_dry_run_changes_nothing_and_says_what_it_would_do(capsys, tmp_path):
    code, lines = run(capsys, tmp_path, "--dry-run")
    assert code == 0 and os.listdir(tmp_path) == []
    for target in TARGETS:
        assert f"would install {tmp_path / target}" in lines
    assert f"would create  {tmp_path / 'etc/hamirror/keys'} (mode 0700)" in lines
    assert any(line.startswith(f"would link    {tmp_path / shipped.COMMAND_LINK}") for line in lines)


def test_files_it_did_not_write_are_never_touched(capsys, tmp_path):
    """A unit copied by hand (the old guide's cp), a symlinked one, a foreign hamirror command."""
    unit = tmp_path / UNIT
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/srv/my/hamirror agent\n")
    unit.chmod(0o600)
    witness = tmp_path / "etc/systemd/system/hamirror-witness.service"
    (tmp_path / "mine.service").write_text("mine\n")
    witness.symlink_to(tmp_path / "mine.service")
    command = tmp_path / shipped.COMMAND_LINK
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    keys = tmp_path / "etc/hamirror/keys"
    keys.mkdir(parents=True, mode=0o755)
    keys.chmod(0o755)
    before = {p: snapshot(tmp_path)[p] for p in (UNIT, "mine.service", shipped.COMMAND_LINK, "etc/hamirror/keys")}
    before_link = os.readlink(witness)

    code, lines = run(capsys, tmp_path)
    after = snapshot(tmp_path)
    assert code == 0
    assert {p: after[p] for p in before} == before and os.readlink(witness) == before_link
    kept = [line.split()[1] for line in lines if line.startswith("kept")]
    assert kept == [str(unit), str(witness), str(command)]
    assert (tmp_path / "etc/logrotate.d/hamirror").is_file()   # the others are installed all the same


def test_an_older_install_is_updated_in_place(capsys, tmp_path):
    unit = tmp_path / UNIT
    unit.parent.mkdir(parents=True)
    unit.write_text("# Installed by hamirror install (hamirror 0.1.0); ...\n[Service]\nRestart=on-failure\n")
    code, lines = run(capsys, tmp_path)
    assert code == 0 and f"updated       {unit}" in lines
    assert unit.read_text().split("\n", 1)[1] == shipped.read("hamirror.service")


def test_json_lists_every_step(capsys, tmp_path):
    assert main(["install", "--root", str(tmp_path), "--json", "--dry-run"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == __version__ and doc["dry_run"] is True
    paths = {step["path"]: step["action"] for step in doc["steps"]}
    assert {paths[str(tmp_path / t)] for t in TARGETS} == {"installed"}


def test_a_file_where_a_directory_belongs_is_a_one_line_error(capsys, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hamirror").write_text("not a directory\n")
    assert main(["install", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"hamirror: {tmp_path / 'etc/hamirror'} exists and is not a directory; nothing was installed after it\n"


@pytest.mark.parametrize("root", ["/nonexistent-root-for-install"])
def test_a_missing_root_is_a_usage_error(capsys, root):
    assert main(["install", "--root", root]) == 2
    assert capsys.readouterr().err == f"hamirror: --root {root}: not a directory\n"
