"""Real tools writing through the replicated mount: git, tar, cp -a, rsync -a.

Each leaves both trees equal (bytes, modes, owners, mtimes to the ns, symlinks, hard links,
xattrs, empty directories), with nothing excluded. One mount serves the whole module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import needs_root
from tests.mirror_fixtures import MirrorPair, diff_snapshots, tree_snapshot

pytestmark = needs_root


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    pair = MirrorPair(str(tmp_path_factory.mktemp("tools")))
    try:
        yield pair.start()
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A plain directory with what tools must carry: symlinks, hard links, modes, owners, xattrs."""
    root = tmp_path_factory.mktemp("source") / "src"
    root.mkdir()
    (root / "bin").mkdir(mode=0o750)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o4755)
    (root / "secret").write_bytes(os.urandom(70_000))
    os.chmod(root / "secret", 0o600)
    os.chown(root / "secret", 1234, 5678)
    (root / "big").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    os.link(root / "big", root / "big.hardlink")
    os.symlink("bin/tool", root / "tool-link")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    (root / "empty-file").touch()
    os.setxattr(root / "secret", "user.kind", b"confidential")
    (root / "sparse").write_bytes(b"")
    with open(root / "sparse", "r+b") as f:
        f.seek(1_000_000)
        f.write(b"end")
    os.utime(root / "secret", ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    os.utime(root / "bin", ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_002))
    return str(root)


def run(*args: str, cwd: str | None = None) -> None:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args}: {result.stderr[-2000:]}"


# libfuse's high-level API gives each name of a hard link its own kernel node; the mount keeps
# the other names' caches coherent (hamirror/fs/links.py, tests/test_mirror_hardlinks.py), so no
# lag is expected any more. The retry stays as a margin for kernel caches we do not control.
ATTR_SETTLE = 1.5


def settled(check) -> list:
    """``check()``'s problems, retried until the primary's attribute cache can have expired. A
    tree that changes under the walk (a name listed, then gone: the async secondary still
    applying the last changes, which only a close or an fsync waits for) is not settled yet."""
    def problems_of() -> list:
        try:
            return check()
        except FileNotFoundError as exc:
            return [f"changed during the comparison: {exc}"]

    problems = problems_of()
    deadline = time.monotonic() + ATTR_SETTLE
    while problems and time.monotonic() < deadline:
        time.sleep(0.2)
        problems = problems_of()
    return problems


def assert_same(pair: MirrorPair) -> None:
    assert settled(lambda: diff_snapshots(tree_snapshot(pair.primary), tree_snapshot(pair.secondary))) == []


def assert_copied(source: str, copy: str) -> None:
    """The tool did its job on the primary too (so the comparison covers real content)."""
    def check() -> list:
        a, b = tree_snapshot(source), tree_snapshot(copy)
        problems = [] if set(a["entries"]) == set(b["entries"]) else [set(a["entries"]) ^ set(b["entries"])]
        problems += [] if a["links"] == b["links"] else [(a["links"], b["links"])]
        return problems + [key for key, entry in a["entries"].items()
                           if key in b["entries"] and b["entries"][key][5] != entry[5]]
    assert settled(check) == []


def test_git_clone_commit_and_gc(pair, tmp_path):
    origin = str(tmp_path / "origin")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"]
    run("git", *env, "init", "-q", origin)
    for i in range(3):
        os.makedirs(f"{origin}/pkg/sub{i}", exist_ok=True)
        with open(f"{origin}/pkg/sub{i}/mod.py", "w") as f:
            f.write(f"VALUE = {i}\n" * (i + 1) * 100)
        with open(f"{origin}/README", "a") as f:
            f.write(f"release {i}\n")
        run("git", *env, "add", "-A", cwd=origin)
        run("git", *env, "commit", "-q", "-m", f"commit {i}", cwd=origin)
    os.symlink("pkg/sub0/mod.py", f"{origin}/link")
    os.chmod(f"{origin}/README", 0o755)
    run("git", *env, "add", "-A", cwd=origin)
    run("git", *env, "commit", "-q", "-m", "link and mode", cwd=origin)
    clone = f"{pair.primary}/clone"
    run("git", "clone", "-q", "--no-hardlinks", origin, clone)
    with open(f"{clone}/new.txt", "w") as f:
        f.write("work in the clone\n")
    run("git", *env, "add", "new.txt", cwd=clone)
    run("git", *env, "commit", "-q", "-m", "in the mount", cwd=clone)
    run("git", *env, "gc", "-q", "--aggressive", "--prune=now", cwd=clone)
    run("git", "fsck", "--strict", cwd=clone)
    assert_same(pair)
    run("git", "-C", f"{pair.secondary}/clone", "fsck", "--strict")       # the copy is a valid repository
    log = subprocess.run(["git", "-C", f"{pair.secondary}/clone", "log", "--oneline"], capture_output=True,
                         text=True, check=True).stdout
    assert len(log.splitlines()) == 5


def test_tar_extract_keeps_links_modes_owners_xattrs(pair, source, tmp_path):
    tarball = str(tmp_path / "src.tar")
    run("tar", "--xattrs", "--xattrs-include=user.*", "-cpf", tarball, "-C", os.path.dirname(source), "src")
    dest = f"{pair.primary}/tar"
    os.mkdir(dest)
    run("tar", "--xattrs", "--xattrs-include=user.*", "--same-owner", "-xpf", tarball, "-C", dest)
    assert_copied(source, f"{dest}/src")
    assert os.stat(f"{pair.secondary}/tar/src/bin/tool").st_mode & 0o7777 == 0o4755
    assert os.getxattr(f"{pair.secondary}/tar/src/secret", "user.kind") == b"confidential"
    assert_same(pair)


def test_cp_archive(pair, source):
    run("cp", "-a", source, f"{pair.primary}/cp")
    assert_copied(source, f"{pair.primary}/cp")
    st = os.lstat(f"{pair.secondary}/cp/secret")
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1234, 5678, 1_600_000_000_987_654_321)
    assert_same(pair)


def test_rsync_archive_then_an_incremental_rsync(pair, source, tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (scripts/setup.sh installs it)")
    dest = f"{pair.primary}/rsync/"
    run("rsync", "-aHAX", "--sparse", source + "/", dest)
    assert_copied(source, dest)
    assert_same(pair)
    # change the source, then rsync again: temp files + renames over existing files, deletions
    changed = str(tmp_path / "changed")
    shutil.copytree(source, changed, symlinks=True)
    with open(f"{changed}/secret", "r+b") as f:
        f.seek(30_000)
        f.write(b"patched")
    os.unlink(f"{changed}/empty-file")
    os.rmdir(f"{changed}/empty-dir/nested-empty")
    os.symlink("secret", f"{changed}/new-link")
    run("rsync", "-aHAX", "--delete", changed + "/", dest)
    run("rsync", "-aHAX", "--delete", "--inplace", "--no-whole-file", changed + "/", dest)
    assert_same(pair)
    assert not os.path.exists(f"{pair.secondary}/rsync/empty-file")
