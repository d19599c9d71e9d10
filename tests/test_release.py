"""The release: one version, a changelog entry for it, pinned dependencies within the package's
ranges, and the server files inside the package (the wheel itself is built by scripts/release.sh,
which installs it in a scratch virtualenv and runs hamirror install from it)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata, resources

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import hamirror
from hamirror import shipped
from tests.conftest import REPO


def pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as stream:
        return tomllib.load(stream)


def test_hamirror_version_prints_the_single_version():
    result = subprocess.run([sys.executable, "-m", "hamirror", "--version"], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert (result.returncode, result.stdout) == (0, f"hamirror {hamirror.__version__}\n")
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hamirror.__version__"}


def test_the_changelog_opens_with_this_version():
    with open(os.path.join(REPO, "CHANGELOG.md"), encoding="utf-8") as stream:
        releases = re.findall(r"^## \[([^\]]+)\]", stream.read(), re.M)
    assert releases[:2] == ["Unreleased", hamirror.__version__]


def constraints() -> dict[str, str]:
    pins = {}
    with open(os.path.join(REPO, "constraints.txt"), encoding="utf-8") as stream:
        for line in stream:
            if line.strip() and not line.startswith("#"):
                name, _, version = line.strip().partition("==")
                pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_pinned_within_the_packages_range():
    """The metadata keeps compatible ranges; constraints.txt pins one version inside each."""
    pins = constraints()
    for text in pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        assert "<" in str(requirement.specifier), f"{text}: no upper bound"
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(pinned), f"{requirement.name}=={pinned} is outside {text}"


def test_the_tests_run_with_the_pinned_versions():
    """constraints.txt is what this environment has (scripts/setup.sh installs with -c constraints.txt)."""
    assert {name: metadata.version(name) for name in constraints()} == constraints()


def test_every_shipped_file_is_package_data_and_readable_from_the_package():
    patterns = pyproject()["tool"]["setuptools"]["package-data"]["hamirror.shipped"]
    folder = resources.files("hamirror.shipped")
    names = {entry.name for entry in folder.iterdir() if entry.is_file() and not entry.name.endswith((".py", ".pyc"))}
    assert names == {item.name for item in shipped.FILES}
    for item in shipped.FILES:
        assert any(fnmatch.fnmatch(item.name, pattern) for pattern in patterns), item.name
        assert shipped.read(item.name).strip()
    assert {os.path.basename(item.target) for item in shipped.FILES if "systemd" in item.target} == {
        "hamirror.service", "hamirror-witness.service"}


def test_the_scripts_unit_is_the_shipped_one():
    """One agent unit: scripts/hamirror.service (the tests', vagrant's) is a link to the package's."""
    assert os.path.realpath(os.path.join(REPO, "scripts", "hamirror.service")) == os.path.realpath(
        os.path.join(REPO, "hamirror", "shipped", "hamirror.service"))


def test_the_documentation_the_units_name_is_in_the_wheel():
    """Documentation= points into the virtualenv's share/doc/hamirror, where data-files puts docs/*.md."""
    patterns = pyproject()["tool"]["setuptools"]["data-files"]["share/doc/hamirror"]
    for name in ("hamirror.service", "hamirror-witness.service"):
        links = [line.split("=", 1)[1] for line in shipped.read(name).splitlines() if line.startswith("Documentation=")]
        for link in " ".join(links).split():
            prefix = "file:///opt/hamirror/share/doc/hamirror/"
            assert link.startswith(prefix), link
            source = link[len(prefix):]
            assert any(fnmatch.fnmatch(f"docs/{source}", p) or p == source for p in patterns), link
            assert os.path.isfile(os.path.join(REPO, "docs", source)) or os.path.isfile(os.path.join(REPO, source))


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_accepts_the_file_and_never_names_the_activity_log(tmp_path):
    text = shipped.read("hamirror.logrotate")
    paths = [line for line in text.splitlines() if line.startswith("/")]
    assert paths and all(not fnmatch.fnmatch("/var/lib/hamirror/modules/db/0/activity.log", p) for p in paths)
    assert "copytruncate" in text.split()
    conf = tmp_path / "hamirror"
    conf.write_text(text)
    result = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr


def test_the_admin_guides_install_commands_name_this_release():
    with open(os.path.join(REPO, "docs", "admin-guide.md"), encoding="utf-8") as stream:
        guide = stream.read()
    named = set(re.findall(r"hamirror-(\d+\.\d+\.\d+)-(?:cp311-cp311-linux_x86_64\.whl|constraints\.txt)", guide))
    assert named == {hamirror.__version__}
    assert "/opt/hamirror/bin/hamirror install" in guide
