"""The package layering of docs/architecture.md ("Layers and imports"), enforced.

Every module's imports of the package are read with ``ast`` (module level, inside functions and
under ``TYPE_CHECKING`` alike) and each one must go to the same layer or a lower one. A cycle
between packages is then impossible, whatever imports a refactoring moves around.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hamirror"

# Lowest first; a module may import its own layer and the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("hamirror", "hamirror.versions", "hamirror.audit", "hamirror.durablefile",
              "hamirror.secretfile", "hamirror.localsock", "hamirror.syscalls", "hamirror.processes",
              "hamirror.heaptrim")),
    ("link", ("hamirror.link",)),
    ("mirror", ("hamirror.mirror",)),
    ("journal", ("hamirror.journal",)),
    ("resync", ("hamirror.resync",)),
    ("daemons", ("hamirror.fs", "hamirror.replica")),
    ("config", ("hamirror.config",)),
    ("cluster", ("hamirror.cluster",)),
    ("actions", ("hamirror.actions",)),
    ("agent", ("hamirror.agent",)),
    ("modkit", ("hamirror.modkit",)),
    ("lab", ("hamirror.lab",)),
    ("cli", ("hamirror.cli", "hamirror.shipped", "hamirror.__main__")),
)

# Packages of one layer that never import each other: the primary's mount daemon and the
# secondary's receiver are peers over the link, not parts of one another.
APART = (("hamirror.fs", "hamirror.replica"),)

# Leaf modules: they import nothing of the package, so every layer can name their states.
LEAVES = ("hamirror.cluster.states", "hamirror.mirror.states")

RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    best, length = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                # "hamirror" itself is base, not a prefix of every module
                if prefix == "hamirror" and module != "hamirror":
                    continue
                best, length = name, len(prefix)
    if best is None:
        raise AssertionError(f"{module}: in no layer of tests/test_layering.py (add it, and to docs/architecture.md)")
    return best


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str, path: pathlib.Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module of the package) for every import statement, wherever it stands."""
    found = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:   # "from hamirror.link import client" imports the module
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
    ours = [(line, name) for line, name in found if name == "hamirror" or name.startswith("hamirror.")]
    return sorted(set(ours))


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def apart(module: str, target: str) -> bool:
    """True when module and target are in two packages of one layer that must not meet."""
    ours, theirs = package_of(module), package_of(target)
    return ours != theirs and any(ours in group and theirs in group for group in APART)


def violations() -> list[str]:
    found = modules()
    known = set(found)
    bad = []
    for module, path in found.items():
        own = layer_of(module)
        for line, target in imports(module, path, known):
            theirs = layer_of(target)
            where = f"{path.relative_to(ROOT)}:{line}: {module} ({own}) imports {target} ({theirs})"
            if module in LEAVES and target != module:
                bad.append(where + ": a leaf imports nothing of the package")
            elif RANK[theirs] > RANK[own]:
                bad.append(where + ": a higher layer")
            elif apart(module, target):
                bad.append(where + ": two daemons of one layer, kept apart")
    return bad


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_import_goes_up_a_layer() -> None:
    bad = violations()
    assert not bad, f"{len(bad)} import(s) against docs/architecture.md's order:\n" + "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path) -> None:
    """The reader finds a function-level and a relative import (what a cycle hides behind)."""
    src = tmp_path / "hamirror" / "journal" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("def f():\n    from hamirror.fs import mount\n    from ..cli import main\n")
    known = {"hamirror.fs.mount", "hamirror.cli.main"}
    assert imports("hamirror.journal.x", src, known) == [(2, "hamirror.fs.mount"), (3, "hamirror.cli.main")]


@pytest.mark.parametrize("module,layer", [("hamirror.link.client", "link"), ("hamirror.link.apply", "link"),
                                          ("hamirror.fs.mount", "daemons"), ("hamirror.replica.receiver", "daemons"),
                                          ("hamirror", "base"), ("hamirror.versions", "base")])
def test_layer_of(module: str, layer: str) -> None:
    assert layer_of(module) == layer


def test_the_two_daemons_are_kept_apart() -> None:
    """A mount importing the receiver (or the reverse) is refused though both are layer 5."""
    assert apart("hamirror.fs.mount", "hamirror.replica.receiver")
    assert apart("hamirror.replica.receiver", "hamirror.fs.control")
    assert not apart("hamirror.fs.mount", "hamirror.fs.operations")
    assert not apart("hamirror.replica.receiver", "hamirror.resync.answers")


# The mount's only FUSE engine is the native request loop; mfusepy and pyfuse3 live on only in
# the bindings benchmark (docs/performance.md, section 2), run from a throwaway venv.
BINDING_BENCH = {"scripts/bench/binding.py", "scripts/bench/pt_mfusepy.py", "scripts/bench/pt_pyfuse3.py"}
RETIRED = ("mfusepy", "pyfuse3", "binding", "pt_mfusepy", "pt_pyfuse3", "scripts.bench.binding",
           "scripts.bench.pt_mfusepy", "scripts.bench.pt_pyfuse3", "hamirror.fs.highlevel", "hamirror.fs.links")


def test_nothing_imports_a_python_fuse_binding_or_the_bindings_benchmark() -> None:
    bad = []
    for path in sorted(p for top in ("hamirror", "tests", "scripts") for p in (ROOT / top).rglob("*.py")):
        if str(path.relative_to(ROOT)) in BINDING_BENCH:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]   # from x import y
            else:
                continue
            hits = [n for n in names if any(n == r or n.startswith(r + ".") for r in RETIRED)]
            if hits:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {hits[0]}")
    assert not bad, "\n".join(bad)
