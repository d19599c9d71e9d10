"""Per-node persistent mount namespaces: the same configured paths mean a different disk per node.

A node's namespace lives in ``ROOT/ns/NODE.mnt`` (``unshare --mount=FILE``; ROOT/ns is bound on
itself with private propagation, as a persistent mount namespace file requires). Inside it the
node's directories are bound over the fixed paths in ``NODE_MOUNTS``. Mounts made inside never
reach the host (private propagation), and a reboot is modelled by detaching the old namespace and
making a fresh one.
"""

from __future__ import annotations

import os

from hamirror.lab.naming import NODE_MOUNTS, LabPaths
from hamirror.lab.shell import LabError, run


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mounts(text: str) -> list[tuple[str, str, str]]:
    """(source, target, fstype) of every line of a /proc/*/mounts text."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            rows.append((_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return rows


def host_mounts() -> list[tuple[str, str, str]]:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return parse_mounts(f.read())


def mounts_under(root: str) -> list[str]:
    """Host mount targets at or below root, deepest first (the order to unmount them)."""
    prefix = root.rstrip("/") + "/"
    targets = [t for _, t, _ in host_mounts() if t == root or t.startswith(prefix)]
    return sorted(set(targets), key=len, reverse=True)


def is_mounted(path: str) -> bool:
    return any(t == path for _, t, _ in host_mounts())


def _enter(paths: LabPaths, node: str, *cmd: str) -> list[str]:
    return ["nsenter", f"--mount={paths.mntns_file(node)}", "--", *cmd]


def prepare(paths: LabPaths) -> None:
    """Make ROOT/ns a private mount so namespace files can be bound into it."""
    os.makedirs(paths.ns_dir, exist_ok=True)
    if not is_mounted(paths.ns_dir):
        run(["mount", "--bind", paths.ns_dir, paths.ns_dir])
    run(["mount", "--make-private", paths.ns_dir])


def exists(paths: LabPaths, node: str) -> bool:
    return is_mounted(paths.mntns_file(node))


def namespace_id(paths: LabPaths, node: str) -> int | None:
    """Inode of the node's mount namespace: changes when the node reboots."""
    if not exists(paths, node):
        return None
    return os.stat(paths.mntns_file(node)).st_ino


def inside_mounts(paths: LabPaths, node: str) -> list[tuple[str, str, str]]:
    """The mount table as the node sees it."""
    if not exists(paths, node):
        return []
    return parse_mounts(run(_enter(paths, node, "cat", "/proc/self/mounts")).stdout)


def create(paths: LabPaths, node: str) -> None:
    """A fresh mount namespace for node with its own /etc/hamirror, /var/lib/hamirror, /run/hamirror, /srv."""
    if exists(paths, node):
        raise LabError(f"{paths.mntns_file(node)}: the node's mount namespace exists already")
    for sub, target in NODE_MOUNTS.items():
        os.makedirs(paths.node_dir(node, sub), exist_ok=True)
        # The mount point must exist in the shared filesystem; an empty directory is all we add.
        os.makedirs(target, exist_ok=True)
    os.makedirs(paths.node_dir(node, "log"), exist_ok=True)
    ns_file = paths.mntns_file(node)
    open(ns_file, "a").close()
    run(["unshare", f"--mount={ns_file}", "--propagation", "private", "true"])
    try:
        _drop_namespace_references(paths, node)
        for sub, target in NODE_MOUNTS.items():
            run(_enter(paths, node, "mount", "--bind", paths.node_dir(node, sub), target))
    except LabError:
        release(paths, node)
        raise


def _drop_namespace_references(paths: LabPaths, node: str) -> None:
    """Detach the namespace files (nsfs) and FUSE mounts the new namespace copied from the host.

    Left in place, namespace files would keep other nodes' and other labs' namespaces alive after
    those are deleted or rebooted; a copied FUSE mount would keep someone else's FUSE connection
    alive after they unmount it on the host, so their daemon never learns it is done. A booted
    node starts with no FUSE mount anyway.
    """
    targets = [t for _, t, fstype in inside_mounts(paths, node) if fstype == "nsfs" or fstype.startswith("fuse")]
    if targets:
        # Another lab may delete its namespaces between the listing and the umount ("not
        # mounted", exit 32: seen in CI with two labs up at once): what counts is that none of
        # the targets is left mounted afterwards.
        run(_enter(paths, node, "umount", "-l", *sorted(targets, key=len, reverse=True)), check=False)
        left = sorted({t for _, t, _ in inside_mounts(paths, node)} & set(targets))
        if left:
            raise LabError(f"{node}: still mounted in its namespace after umount: {', '.join(left)}")


def release(paths: LabPaths, node: str) -> None:
    """Drop the node's mount namespace (power loss / reboot / down); missing is fine.

    FUSE mounts inside (possibly dead after a kill) are lazily unmounted first so their
    connections go away now rather than whenever the last reference to the namespace does.
    """
    ns_file = paths.mntns_file(node)
    if exists(paths, node):
        fuse = [t for _, t, fstype in inside_mounts(paths, node) if fstype.startswith("fuse")]
        if fuse:
            run(_enter(paths, node, "umount", "-l", *sorted(fuse, key=len, reverse=True)), check=False)
        run(["umount", "-l", ns_file])
    if os.path.exists(ns_file) and not is_mounted(ns_file):
        os.unlink(ns_file)


def release_all(paths: LabPaths, nodes: tuple[str, ...] | list[str]) -> None:
    """Release every node namespace, then any host mount left under the lab root."""
    for node in nodes:
        release(paths, node)
    for target in mounts_under(paths.root):
        run(["umount", "-l", target], check=False)
