"""Write the exact versions of hamirror's runtime dependencies in this environment, for pip -c.

Run with the test environment's Python (.venv/bin/python scripts/lockdeps.py > constraints.txt):
the pins are then what the tests ran with. Only what the package needs at run time is listed
(its requirements and theirs, markers evaluated here, extras left out), never the test tools.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def runtime_closure(root: str) -> dict[str, str]:
    """Canonical name -> installed version, for every distribution ``root`` needs at run time."""
    found: dict[str, str] = {}
    pending = [root]
    while pending:
        dist = metadata.distribution(pending.pop())
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(req.name)
            if name not in found:
                found[name] = metadata.version(req.name)
                pending.append(req.name)
    return found


def main() -> int:
    pins = runtime_closure(sys.argv[1] if len(sys.argv) > 1 else "hamirror")
    print(f"# hamirror's runtime dependencies as the tests ran them (Python "
          f"{sys.version_info.major}.{sys.version_info.minor}); made by scripts/lockdeps.py.")
    print("# pip install hamirror-VERSION-cp311-cp311-linux_x86_64.whl -c constraints.txt")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
